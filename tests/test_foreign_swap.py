"""Attack-time surrogates on foreign neurons robench keeps (robench.snn.swap): a SpikingJelly ParametricLIFNode and
an snnTorch Leaky with subtract reset get robench's surrogate paths by a swap of their framework's spike function,
which is put back after, also when the block raises; rate is refused with its reason; the import says which
paths apply."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("spikingjelly")
pytest.importorskip("snntorch")

from robench.errors import BadSpec  # noqa: E402
from robench.snn import paths  # noqa: E402
from robench.snn.neurons import SpikingNeuron  # noqa: E402
from robench.snn.swap import SwappedSpike, swapped  # noqa: E402
from robench.zoo import load  # noqa: E402
from robench.zoo.adapters import ForeignModel  # noqa: E402
from robench.zoo.foreign import run_code  # noqa: E402
from robench.zoo.importing import import_foreign  # noqa: E402

NETS = Path(__file__).with_name("foreign_nets.py")
SWAP = ["triangle:w=0.5", "sigmoid:k=16", "arctan:a=16", "rectangle:w=0.5", "assg"]


@pytest.fixture(scope="module")
def mod(tmp_path_factory):
    root = tmp_path_factory.mktemp("code")
    shutil.copy(NETS, root / "tinynets.py")
    return run_code(root / "tinynets.py", "tinynets", root)[0]


def firing(net):
    """Scale the conv weights up so that the neurons fire on random images."""
    torch.manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(4)
    return net


def models(mod):
    """(model, its kept neuron, the attribute holding its spike function) for each framework."""
    sj = ForeignModel(firing(mod.sj(kind="plif")).eval(), "spikingjelly", 3, "multi")
    st = ForeignModel(firing(mod.snn_subtract()).eval(), "snntorch", 3, "single")
    return {"sj-plif": (sj, sj.net[3], "surrogate_function"), "snntorch-subtract": (st, st.net[3], "spike_grad")}


def images(n=16):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10


def input_grad(model, path, x, y):
    xg = x.clone().requires_grad_(True)
    with paths.grad_mode(model, path):
        logits = model(xg)
        (g,) = torch.autograd.grad(F.cross_entropy(logits, y), xg)
    return g, logits.detach()


@pytest.mark.parametrize("case", ["sj-plif", "snntorch-subtract"])
def test_surrogate_paths_apply_to_kept_neurons_and_the_original_comes_back(mod, case):
    model, neuron, attr = models(mod)[case]
    assert model.kept and not model.mapped and not any(isinstance(m, SpikingNeuron) for m in model.modules())
    original = getattr(neuron, attr)
    x, y = images()
    g_bptt, out_bptt = input_grad(model, "bptt", x, y)
    g_sig, out_sig = input_grad(model, "sigmoid:k=16", x, y)
    assert torch.equal(out_sig, out_bptt)  # the same forward spikes
    assert not torch.allclose(g_sig, g_bptt)  # robench's backward, not the framework's
    assert getattr(neuron, attr) is original
    for path in SWAP:
        g, _ = input_grad(model, path, x, y)
        assert torch.isfinite(g).all() and (g.flatten(1) != 0).any(1).float().mean() > 0.5, path
        assert getattr(neuron, attr) is original, path
    with pytest.raises(RuntimeError, match="inside"), paths.grad_mode(model, "arctan:a=8"):
        assert isinstance(getattr(neuron, attr), SwappedSpike) and getattr(neuron, attr).path.key == "arctan:a=8"
        raise RuntimeError("inside the block")
    assert getattr(neuron, attr) is original and not swapped(model)


def test_the_swapped_backward_is_robench_s_surrogate(mod):
    """One step of a kept neuron: d spike / d x under ``sigmoid:k=16`` is k s (1 - s) at x = v - v_th."""
    neuron = models(mod)["sj-plif"][1]
    x = torch.linspace(-0.5, 0.5, 11, requires_grad=True)
    f = SwappedSpike(neuron.surrogate_function, paths.parse_path("sigmoid:k=16"))
    s = f(x)
    (g,) = torch.autograd.grad(s.sum(), x)
    assert torch.equal(s, (x >= 0).float())  # SpikingJelly's own Heaviside (H(0) = 1)
    k = torch.sigmoid(16 * x.detach())
    torch.testing.assert_close(g, 16 * k * (1 - k))


def test_assg_keeps_statistics_per_call_and_restarts_reset_them(mod):
    model, neuron, attr = models(mod)["snntorch-subtract"]
    x, y = images(4)
    with paths.grad_mode(model, "assg"):
        for _ in range(2):
            xg = x.clone().requires_grad_(True)
            F.cross_entropy(model(xg), y).backward()
        (f,) = swapped(model)
        assert f.calls == 2 * 3  # snnTorch calls spike_grad twice a step (reset and fire), T = 3
        # the first call (the reset at step 1) sees the resting membrane, which carries no gradient
        assert [s.forwards for s in f.assg] == [0, 2, 2, 2, 2, 2]
        paths.reset_path_state(model)
        assert f.assg == []
    assert getattr(neuron, attr) is not f


def test_rate_is_refused_with_its_reason_and_set_grad_mode_swaps_until_bptt(mod):
    model, neuron, attr = models(mod)["sj-plif"]
    original = getattr(neuron, attr)
    with pytest.raises(BadSpec, match=r"'rate' does not apply to spikingjelly ParametricLIFNode '3' \(rate needs "
                       r"the neuron's dynamics.*paths for it: bptt, triangle, sigmoid, arctan, rectangle, assg"):
        paths.set_grad_mode(model, "rate")
    assert getattr(neuron, attr) is original
    paths.set_grad_mode(model, "arctan:a=4")
    assert paths.get_grad_mode(model).key == "arctan:a=4" and getattr(neuron, attr).original is original
    paths.set_grad_mode(model, "bptt")
    assert getattr(neuron, attr) is original and paths.get_grad_mode(model) == paths.GradMode.bptt


def test_a_neuron_that_never_calls_its_surrogate_is_caught(mod):
    model = ForeignModel(mod.sj(kind="nofire"), "spikingjelly", 2, "multi")
    x, y = images(2)
    input_grad(model, "bptt", x, y)  # its own gradient: fine
    with pytest.raises(BadSpec, match="never called its swapped surrogate_function"):
        input_grad(model, "sigmoid:k=4", x, y)


def test_sharp_and_narrow_surrogates_are_accepted_and_finite(mod):
    keys = [p.key for p in paths.parse_paths("arctan:a=16|32,sigmoid:k=32|64,triangle:w=0.05,rectangle:w=0.05")]
    assert keys == ["arctan:a=16", "arctan:a=32", "sigmoid:k=32", "sigmoid:k=64", "triangle:w=0.05",
                    "rectangle:w=0.05"]
    model = models(mod)["sj-plif"][0]
    x, y = images(4)
    for key in keys:
        assert torch.isfinite(input_grad(model, key, x, y)[0]).all(), key


def test_the_import_says_which_paths_apply(mod, tmp_path, monkeypatch):
    net = firing(mod.sj(kind="plif"))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    monkeypatch.setenv("ROBENCH_TRUST_CODE", "1")
    x, y = images()
    card = import_foreign(tmp_path / "w.pt", "spikingjelly", "tinynets:sj", x, y, "fashion-mnist", "e1",
                          tmp_path / "zoo", T=3, kwargs={"kind": "plif"}, code_path=Path(mod.__file__).parent,
                          trust_code=True)
    assert "0 neuron layer(s) mapped" in card.notes and "ParametricLIFNode" in card.notes
    assert "gradient paths: bptt, triangle, sigmoid, arctan, rectangle, assg" in card.notes
    assert "not rate: rate needs the neuron's dynamics" in card.notes
    model, _ = load("e1", tmp_path / "zoo", trust_code=True)
    g_bptt, _ = input_grad(model, "bptt", x, y)
    assert not torch.allclose(input_grad(model, "sigmoid:k=16", x, y)[0], g_bptt)


def test_a_rare_spike_flip_at_the_threshold_is_accepted_and_said_more_is_refused():
    from robench.errors import IntegrityError
    from robench.zoo.checks_foreign import _match

    orig = torch.randn(2000, 10)
    adapted = orig.clone()
    adapted[7, 3] += 0.15  # one image: a spike flipped
    adapted[9] += 1e-6  # another: float rounding
    model = type("M", (), {"describe": lambda self: "mapped"})()
    assert "on 1999 of 2000 images; 1 differ by up to 0.15" in _match(orig, adapted, model)
    adapted[100:103, 0] += 0.15  # 4 of 2000 > 0.1 %
    with pytest.raises(IntegrityError, match="on 4 of 2000 images: the neuron mapping is not exact"):
        _match(orig, adapted, model)
