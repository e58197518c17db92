"""Every registered architecture at a tiny width: shapes, statelessness, T, and ModelConfig checks."""

from __future__ import annotations

import pytest
import torch

from robench.errors import BadSpec, UnknownName
from robench.snn.models import ARCHS, ModelConfig, accuracy, build_model, predict
from robench.snn.neurons import spiking_neurons

SHAPES = {"gray28": (1, 28, 10), "rgb32": (3, 32, 10)}


def _tiny(arch: str, shape: str, T: int = 2, neuron: str = "lif") -> torch.nn.Module:
    c, size, k = SHAPES[shape]
    cfg = ModelConfig(arch=arch, neuron=neuron, T=T, width=1 / 16, fc=8, in_channels=c, image_size=size,
                      num_classes=k, mean=(0.5,) * c, std=(0.25,) * c)
    torch.manual_seed(0)
    return build_model(cfg)


def test_registry_has_the_paper_archs():
    assert set(ARCHS.names()) >= {"vgg5", "vgg11", "wrn16"}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("arch", ARCHS.names())
def test_builds_and_returns_logits(arch, shape):
    c, size, k = SHAPES[shape]
    model = _tiny(arch, shape, neuron="stable").eval()
    x = torch.rand(3, c, size, size)
    out = model(x)
    assert out.shape == (3, k) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert model.config.arch == arch and len(spiking_neurons(model)) >= 2


@pytest.mark.parametrize("arch", ARCHS.names())
def test_stateless_and_deterministic(arch):
    model = _tiny(arch, "gray28").eval()
    x, other = torch.rand(2, 1, 28, 28), torch.rand(2, 1, 28, 28) * 3
    a = model(x)
    model(other)  # a call in between must leave nothing behind (membranes start at rest)
    b = model(x)
    assert torch.equal(a, b)
    assert torch.equal(model(x[:1]), a[:1])  # each sample is independent of the batch in eval mode


@pytest.mark.parametrize("T", [1, 3])
@pytest.mark.parametrize("arch", ARCHS.names())
def test_T_is_honoured(arch, T):
    model = _tiny(arch, "rgb32", T=T, neuron="stable").eval()
    seen = []
    model.head.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0]))
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert seen == [T]  # the output layer sees T steps, and the logits are their mean
    for n in spiking_neurons(model):
        assert n.T == T and n.gains.shape == (T,)


def test_logits_are_the_mean_over_time_of_the_output_layer():
    model = _tiny("vgg5", "gray28", T=3).eval()
    outs = []
    model.head.register_forward_hook(lambda m, inp, out: outs.append(out))
    logits = model(torch.rand(2, 1, 28, 28))
    assert torch.allclose(logits, outs[0].mean(0))


def test_predict_and_accuracy_leave_the_mode_alone():
    model = _tiny("vgg5", "gray28").train()
    x = torch.rand(5, 1, 28, 28)
    p = predict(model, x, batch_size=2)
    assert p.shape == (5,) and p.dtype == torch.long and model.training
    assert accuracy(model, x, p) == 1.0


@pytest.mark.parametrize(
    "kw, err, match",
    [
        (dict(T=0), BadSpec, "-T 0; must be an integer >= 1"),
        (dict(T=-2), BadSpec, "-T -2"),
        (dict(arch="resnet18"), UnknownName, "unknown arch 'resnet18'; choose from: vgg5, vgg11, wrn16"),
        (dict(width=0.0), BadSpec, "--width 0.0; must be > 0"),
        (dict(width=-1.0), BadSpec, "--width"),
        (dict(neuron="izhikevich"), BadSpec, "lif, stable"),
        (dict(tau=1.5), BadSpec, "--tau"),
        (dict(fc=0), BadSpec, "--fc"),
        (dict(in_channels=3), BadSpec, "mean/std"),
    ],
)
def test_model_config_rejects_bad_values(kw, err, match):
    with pytest.raises(err, match=match):
        ModelConfig(**kw)


def test_model_config_round_trip():
    cfg = ModelConfig(arch="wrn16", neuron="stable", T=3, width=0.5, in_channels=3, image_size=32,
                      mean=(0.1, 0.2, 0.3), std=(1.0, 1.0, 1.0))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(BadSpec, match="unknown model config keys"):
        ModelConfig.from_dict({**cfg.to_dict(), "depth": 28})
