"""Foreign models (issue 13): exact neuron mappings, the adapter's contract, import into a zoo and every gradient
path that applies, the SpikingJelly eval-mode trap."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("spikingjelly")
pytest.importorskip("snntorch")

import snntorch as snn  # noqa: E402
from spikingjelly.activation_based import functional, neuron, surrogate  # noqa: E402

from robench.errors import BadSpec  # noqa: E402
from robench.snn import paths  # noqa: E402
from robench.zoo import load  # noqa: E402
from robench.zoo.adapters import FRAMEWORKS, ForeignModel  # noqa: E402
from robench.zoo.foreign import run_code  # noqa: E402
from robench.zoo.importing import import_foreign  # noqa: E402

NETS = Path(__file__).with_name("foreign_nets.py")


def path_names() -> list[str]:
    """One path of every kind robench has (bptt, rate, each surrogate at a width, assg), as canonical keys."""
    return [p.key for p in paths.parse_paths("both,sweep,rectangle:w=1,assg")]


def mapped(module, T: int, step: str = "multi"):
    fw = FRAMEWORKS.get("snntorch" if isinstance(module, snn.SpikingNeuron) else "spikingjelly")
    return fw.mappers()[type(module)](module, T, step)


def run_both(foreign_step, ours, current):
    """Spikes and input-current gradients of a foreign neuron (``foreign_step``: [T, ...] -> [T, ...]) and of its
    robench twin, for the same loss."""
    out = []
    for f in (foreign_step, ours):
        c = current.clone().requires_grad_(True)
        s = f(c)
        (s * torch.linspace(-1, 1, s.shape[-1])).sum().backward()
        out.append((s.detach(), c.grad))
    return out


@pytest.mark.parametrize("make", [
    lambda: neuron.IFNode(step_mode="m"),
    lambda: neuron.IFNode(surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m"),
    lambda: neuron.LIFNode(tau=2.0, step_mode="m"),
    lambda: neuron.LIFNode(tau=3.0, decay_input=False, v_threshold=0.5, step_mode="m"),
    lambda: neuron.LIFNode(tau=1.5, detach_reset=True, surrogate_function=surrogate.PiecewiseQuadratic(),
                           step_mode="m"),
], ids=["if", "if-atan-detach", "lif", "lif-no-decay-input", "lif-detach-pq"])
def test_spikingjelly_neurons_map_exactly(make):
    torch.manual_seed(0)
    sj = make()
    current = torch.rand(6, 8, 20) * 1.5

    def sj_step(c):
        functional.reset_net(sj)
        return sj(c)

    (s1, g1), (s2, g2) = run_both(sj_step, mapped(sj, 6), current)
    assert torch.equal(s1, s2) and s1.sum() > 0
    torch.testing.assert_close(g1, g2)  # bptt through the model's own surrogate, reset path included


@pytest.mark.parametrize("beta", [0.5, 0.9, 1.0])
def test_snntorch_leaky_maps_exactly(beta):
    torch.manual_seed(0)
    leaky = snn.Leaky(beta=beta, init_hidden=True, reset_mechanism="zero")
    current = torch.rand(6, 8, 20) * 1.5

    def loop(c):  # snnTorch's own single-step use: reset, then one call per step
        leaky.reset_mem()
        return torch.stack([leaky(c[t]) for t in range(len(c))])

    (s1, g1), (s2, g2) = run_both(loop, mapped(leaky, 6, "single"), current)
    assert torch.equal(s1, s2) and s1.sum() > 0
    torch.testing.assert_close(g1, g2)


def test_neurons_that_do_not_map_say_why():
    assert "soft reset" in mapped(neuron.IFNode(v_reset=None, step_mode="m"), 4)
    assert "v_reset=0.5" in mapped(neuron.LIFNode(v_reset=0.5, step_mode="m"), 4)
    assert "reset_mechanism='subtract'" in mapped(snn.Leaky(beta=0.9, init_hidden=True), 4, "single")
    assert "membrane in and out" in mapped(snn.Leaky(beta=0.9, reset_mechanism="zero"), 4, "single")


# --------------------------------------------------------------------------------------------- the zoo path
@pytest.fixture
def code(tmp_path):
    """A code folder holding the tiny nets as module ``tinynets``, and that module."""
    root = tmp_path / "code"
    root.mkdir()
    shutil.copy(NETS, root / "tinynets.py")
    mod, _ = run_code(root / "tinynets.py", "tinynets", root)
    return root, mod


def weights(tmp_path, net, seed: int = 0) -> Path:
    """Save ``net``'s weights after making its neurons fire (conv weights scaled up)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(4)
    path = tmp_path / "w.pt"
    torch.save(net.state_dict(), path)
    return path


def images(n: int = 16):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10


CASES = {  # id: (function, kwargs, framework, step mode)
    "sj-lif-multi": ("sj", {"kind": "lif"}, "spikingjelly", "multi"),
    "sj-if-single": ("sj", {"kind": "if", "step": "s", "detach_reset": True}, "spikingjelly", "single"),
    "sj-lif-no-decay": ("sj", {"kind": "lif", "decay_input": False}, "spikingjelly", "multi"),
    "snntorch-leaky": ("snn_net", {}, "snntorch", "single"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_import_load_and_every_gradient_path(case, code, tmp_path, monkeypatch):
    fn, kwargs, framework, step = CASES[case]
    root, mod = code
    net = getattr(mod, fn)(**kwargs)
    w = weights(tmp_path, net)
    x, y = images()
    monkeypatch.setenv("ROBENCH_TRUST_CODE", "1")
    zoo = tmp_path / "zoo"
    card = import_foreign(w, framework, f"tinynets:{fn}", x, y, "fashion-mnist", "e1", zoo, T=3, kwargs=kwargs,
                          step_mode=step, code_path=root, trust_code=True)
    assert "logits equal to the original's bitwise" in card.notes or "float rounding" in card.notes
    assert card.model["code_sha256"] and card.model["framework_version"] and card.metrics["n_test"] == 16
    model, _ = load("e1", zoo, trust_code=True)
    net.load_state_dict(torch.load(w, weights_only=True))
    original = ForeignModel(net.eval(), framework, 3, step, map_neurons=False)
    with torch.no_grad():
        torch.testing.assert_close(model(x), original(x), rtol=1e-5, atol=1e-5)
        assert torch.equal(model(x), model(x))  # no state between calls
    assert model.mapped and not model.kept
    for name in path_names():
        xg = x.clone().requires_grad_(True)
        with paths.grad_mode(model, name):
            (g,) = torch.autograd.grad(F.cross_entropy(model(xg), y), xg)
        assert (g.flatten(1) != 0).any(1).float().mean() > 0.5, name


def test_eval_mode_trap_without_and_with_the_adapter(code, tmp_path):
    _, mod = code
    net = mod.sj(kind="clif")
    net.load_state_dict(torch.load(weights(tmp_path, net), weights_only=True))
    x, y = images(8)
    net.eval()  # what an attack library does: SpikingJelly's CLIF then fires through a plain step
    xs = x.clone().requires_grad_(True)
    functional.reset_net(net)
    out = net(xs.unsqueeze(0).expand(3, *x.shape)).mean(0)
    (g,) = torch.autograd.grad(F.cross_entropy(out, y), xs, allow_unused=True)
    assert g is None or not g.any()  # no gradient at all: attacks would be blind
    model = ForeignModel(net, "spikingjelly", 3, "multi")
    model.eval()  # cannot undo it: the neurons stay in train mode, batch norm in eval
    assert not model.training and model.net[3].training and not model.net[2].training
    xs = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xs), y), xs)
    assert (g.flatten(1) != 0).any(1).all()
    assert model.kept and "ComplementaryLIFNode" in model.kept[0][1]
    with pytest.raises(BadSpec, match=r"'rate' does not apply to spikingjelly ComplementaryLIFNode.*paths for it: "
                       r"bptt"):
        with paths.grad_mode(model, "rate"):
            pass


def test_kept_neurons_refuse_other_paths_and_a_single_step_model_is_replaced_whole(code):
    _, mod = code
    model = ForeignModel(mod.sj(kind="soft", step="s"), "spikingjelly", 2, "single")
    assert not model.mapped and not model.folded
    with pytest.raises(BadSpec, match="soft reset"):
        paths.set_grad_mode(model, "rate")
    with pytest.raises(BadSpec, match="none robench knows"):
        paths.set_grad_mode(ForeignModel(mod.plain(), "torch", 2, "single"), "rate")
