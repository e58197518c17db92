"""The fused engine against the per-step reference (the executable specification) and against itself.

Everything the fused engine returns must match the reference loop: spikes exactly (the fused forward is
bit-identical, so even currents that land on the threshold agree), membranes, input gradients and DLIF gain
gradients to float tolerance, in both gradient modes, for both neuron types, several T and random shapes.
"""

from __future__ import annotations

import os

import pytest
import torch

from robench.snn import fused, neurons
from robench.snn.models import build_model
from robench.snn.neurons import ENGINES, GradMode, SpikingNeuron, Triangle, set_engine
from robench.snn.paths import grad_mode
from robench.snn.surrogates import AssgState

TS = (1, 2, 4, 8)


def _neuron(engine: str, T: int, stable: bool, mode: str, tau: float = 0.99, gamma: float = 1.0,
            dtype: torch.dtype = torch.float64) -> SpikingNeuron:
    n = SpikingNeuron(T=T, tau=tau, v_th=1.0, gamma=gamma, stable=stable).to(dtype)
    set_engine(n, engine)
    n.grad_mode, n.record = GradMode(mode), True
    if stable:
        with torch.no_grad():
            n.gains.copy_(torch.linspace(0.5, 1.5, T, dtype=dtype))
    return n


def _currents(T: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Random ``[T, B, ...]`` currents of a random shape; a third of them sit on or next to the threshold."""
    g = torch.Generator().manual_seed(seed)
    shape = (T, *torch.randint(1, 5, (int(torch.randint(1, 4, (1,), generator=g)),), generator=g).tolist(), 7)
    x = torch.rand(shape, generator=g, dtype=dtype) * 1.6 - 0.2
    near = torch.rand(shape, generator=g) < 1 / 3
    ulps = torch.randint(-2, 3, shape, generator=g).to(dtype) * torch.finfo(dtype).eps
    return torch.where(near, 1.0 + ulps, x)


def _run(n: SpikingNeuron, x0: torch.Tensor, w: torch.Tensor):
    """Spikes, membrane, input gradient and gain gradient of ``sum(w * n(x))``."""
    x = x0.clone().requires_grad_(True)
    s = n(x)
    (s * w).sum().backward()
    return s.detach(), n.last_membrane.detach(), x.grad, None if n.gains is None else n.gains.grad


@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("stable", [False, True], ids=["lif", "dlif"])
@pytest.mark.parametrize("mode", ["bptt", "rate"])
@pytest.mark.parametrize("seed", [0, 1])
def test_fused_matches_reference_on_random_inputs(T, stable, mode, seed):
    x0 = _currents(T, seed)
    w = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + 100), dtype=x0.dtype)
    fused = _run(_neuron("fused", T, stable, mode), x0, w)
    ref = _run(_neuron("reference", T, stable, mode), x0, w)
    assert torch.equal(fused[0], ref[0])  # spikes: exactly, threshold cases included
    assert torch.equal(fused[1], ref[1])  # membrane: the same arithmetic, bit for bit
    torch.testing.assert_close(fused[2], ref[2], rtol=1e-12, atol=1e-12)
    assert fused[2].abs().sum() > 0  # not two zero gradients
    if stable:
        torch.testing.assert_close(fused[3], ref[3], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["bptt", "rate"])
@pytest.mark.parametrize("tau, gamma", [(0.5, 0.5), (0.0, 1.0), (1.0, 2.0)])
def test_fused_matches_reference_in_float32_and_other_constants(mode, tau, gamma):
    x0 = _currents(4, 7, torch.float32)
    w = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    fused = _run(_neuron("fused", 4, True, mode, tau, gamma, torch.float32), x0, w)
    ref = _run(_neuron("reference", 4, True, mode, tau, gamma, torch.float32), x0, w)
    assert torch.equal(fused[0], ref[0]) and torch.equal(fused[1], ref[1])
    torch.testing.assert_close(fused[2], ref[2], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused[3], ref[3], rtol=1e-5, atol=1e-5)


def test_expanded_input_and_noncontiguous_gradient():
    """The first layer gets the stem output expanded over T (stride 0); a gradient may come transposed."""
    base = _currents(1, 5)[0]
    out = {}
    for engine in ENGINES:
        x = base.clone().requires_grad_(True)
        s = _neuron(engine, 4, False, "bptt")(x.unsqueeze(0).expand(4, *x.shape))
        w = torch.randn(s.shape[::-1], generator=torch.Generator().manual_seed(1), dtype=s.dtype)
        (s * w.permute(*range(s.dim() - 1, -1, -1))).sum().backward()  # a non-contiguous dL/ds
        out[engine] = (s, x.grad)
    torch.testing.assert_close(out["fused"], out["reference"], rtol=1e-12, atol=1e-12)
    assert out["fused"][1].abs().sum() > 0


# -------------------------------------------------------------------------------------------- whole model
@pytest.mark.parametrize("neuron", ["lif", "stable"])
@pytest.mark.parametrize("mode", ["bptt", "rate"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_tiny_model_same_logits_and_input_gradients(tiny_cfg, tiny_data, neuron, mode, train):
    torch.manual_seed(0)
    model = build_model(tiny_cfg, neuron=neuron, T=4)
    x0, y = tiny_data[0][:16], tiny_data[1][:16]
    for m in model.modules():  # BN running statistics of real activity, so the eval-mode model fires too
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    with torch.no_grad():
        model.train()(tiny_data[0])
    model.train(train)
    out = {}
    for engine in ENGINES:
        set_engine(model, engine)
        x = x0.clone().requires_grad_(True)
        with grad_mode(model, mode):
            logits = model(x)
            torch.nn.functional.cross_entropy(logits, y).backward()
        out[engine] = (logits.detach(), x.grad)
    torch.testing.assert_close(out["fused"][0], out["reference"][0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out["fused"][1], out["reference"][1], rtol=1e-4, atol=1e-7)
    assert out["fused"][1].abs().sum() > 0


def test_tiny_model_inference_path_gives_the_same_logits(tiny_model, tiny_data):
    """Without autograd the fused engine skips the autograd function: the logits must not change."""
    x = tiny_data[0][:8]
    with torch.no_grad():
        a = tiny_model(x)
    with torch.inference_mode():
        b = tiny_model(x)
    c = tiny_model(x.clone().requires_grad_(True)).detach()
    assert torch.equal(a, b) and torch.equal(a, c)


# ------------------------------------------------------------------------------------- what gets saved
def _saved(fn):
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = fn()
    return out, saved


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bptt_saves_only_the_membrane_in_the_input_dtype(dtype):
    x = _currents(4, 2, dtype).requires_grad_(True)
    n = _neuron("fused", 4, False, "bptt", dtype=dtype)
    n.record = False
    _, saved = _saved(lambda: n(x))
    assert len(saved) == 1 and saved[0].shape == x.shape and saved[0].dtype == dtype


def test_rate_saves_only_the_slope_and_no_membrane_unless_recorded():
    x = _currents(8, 2).requires_grad_(True)
    n = _neuron("fused", 8, False, "rate")
    n.record = False
    _, saved = _saved(lambda: n(x))
    assert [t.shape for t in saved] == [x.shape[1:]]  # T times smaller than the input
    assert n.last_membrane is None


def test_record_keeps_the_membrane_in_every_path():
    x = _currents(4, 3)
    want = _neuron("reference", 4, True, "bptt")
    want(x)
    for mode in ("bptt", "rate"):
        for grad in (True, False):
            n = _neuron("fused", 4, True, mode)
            with torch.set_grad_enabled(grad):
                n(x.clone().requires_grad_(grad))
            assert torch.equal(n.last_membrane, want.last_membrane)
            assert torch.equal(n.recorded.detach(), want.recorded.detach())


# ------------------------------------------------------------------------------ backward is linear in dL/ds
@pytest.mark.parametrize("mode", ["bptt", "rate"])
def test_backward_is_linear_in_the_incoming_gradient(mode):
    """Finite difference of the backward map along a direction d equals the backward of d (both modes)."""
    x0 = _currents(8, 4)
    g = torch.Generator().manual_seed(9)
    g1, d = torch.randn(x0.shape, generator=g, dtype=x0.dtype), torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    n = _neuron("fused", 8, True, mode)

    def vjp(w):
        n.gains.grad = None
        return _run(n, x0, w)[2:]

    eps = 1e-3
    (a, pa), (b, pb), (c, pc) = vjp(g1 + eps * d), vjp(g1), vjp(d)
    torch.testing.assert_close((a - b) / eps, c, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close((pa - pb) / eps, pc, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(vjp(2 * g1 - 3 * d)[0], 2 * b - 3 * c, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------ one backward recursion
@pytest.mark.parametrize("key", ["bptt", "triangle:w=0.5", "sigmoid:k=4", "arctan:a=2", "rectangle:w=1", "assg"])
@pytest.mark.parametrize("gamma", [1.0, 0.5])
def test_every_surrogate_path_is_the_one_bptt_recursion_with_its_rule(monkeypatch, key, gamma):
    """Each path resolves to one rule object (bptt: the neuron's own Triangle, no string matching at run time),
    and the fused input gradient is exactly :func:`fused.bptt_backward` with that rule, bit for bit."""
    calls = []
    real = fused.bptt_backward
    monkeypatch.setattr(fused, "bptt_backward", lambda *a: calls.append(a[4]) or real(*a))
    x0 = _currents(6, 3)
    g = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4), dtype=x0.dtype)
    n = SpikingNeuron(T=6, gamma=gamma).to(torch.float64)
    n.record = True
    with grad_mode(n, key):
        rule = n.path_rule()
        assert rule is n.path_rule() and (rule is n.surrogate) == (key == "bptt")
        x = x0.clone().requires_grad_(True)
        n(x).backward(g)
        h = n.last_membrane
        saved = AssgState(rule.A).prepare(h, n.v_th) if key == "assg" else ()  # ASSG's first fold, afresh
    assert calls == [rule] and torch.equal(x.grad, real(h, g, n.tau, n.v_th, rule, saved))
    assert x.grad.abs().sum() > 0


def test_rate_path_resolves_to_the_rate_rule_and_never_runs_the_recursion(monkeypatch):
    monkeypatch.setattr(fused, "bptt_backward", lambda *a: pytest.fail("rate ran the BPTT recursion"))
    n = SpikingNeuron(T=4).to(torch.float64)
    with grad_mode(n, "rate"):
        assert n.path_rule() is fused.RATE
        x = _currents(4, 5).requires_grad_(True)
        n(x).sum().backward()
    assert x.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- the optional compile path
def test_compile_twins_compute_what_the_eager_kernels_compute():
    """The functional kernels that torch.compile fuses (opt-in) equal the default in-place kernels."""
    x = _currents(8, 6)
    s, h = fused._forward_loop(x, 0.99, 1.0)
    s2, h2 = fused._forward_fn(x, 0.99, 1.0, True)
    assert torch.equal(s, s2) and torch.equal(h, h2)
    assert torch.equal(fused._forward_loop(x, 0.99, 1.0, keep_h=False)[0], s)
    gs = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=x.dtype)
    for gamma in (1.0, 0.5):
        torch.testing.assert_close(fused.bptt_backward(h, gs, 0.99, 1.0, Triangle(gamma)),
                                   fused._bptt_backward_fn(h, gs, 0.99, 1.0, gamma), rtol=1e-12, atol=1e-12)
    assert neurons.compile_enabled() == (os.environ.get("ROBENCH_COMPILE") == "1")  # off unless asked for


def test_flat_views_round_trip_every_layout():
    """The compiled kernels see each layer as a dense ``[T, M]`` block in its memory order, and hand it back."""
    x = _cl_steps(3, 1)
    for t in (x, x.contiguous(), x[0].unsqueeze(0).expand(3, *x.shape[1:]), x.transpose(2, 4)):
        flat, order = fused._flat(t)
        assert flat.shape == (3, t[0].numel()) and flat.is_contiguous()
        assert torch.equal(fused._unflat(flat, t.shape, order), t)
    flat, order = fused._flat(x)
    assert flat.data_ptr() == x.data_ptr()  # channels-last steps: a view, no copy
    assert fused._unflat(flat, x.shape, order).stride() == x.stride()
    g = x.contiguous()  # a gradient in another layout is laid out like the membrane it meets
    assert torch.equal(fused._flat(g, order)[0], flat)


@pytest.mark.slow
@pytest.mark.skipif(not neurons.compiler_found(), reason="torch.compile's CPU backend needs a C++ compiler")
@pytest.mark.parametrize("layout", ["cl", "nchw", "expanded"])
def test_compiled_kernels_match_the_reference(layout):
    """The opt-in compiled engine: spikes bit for bit, membranes and gradients to float tolerance."""
    T = 4
    x0 = _cl_steps(T, 5)
    x0 = {"cl": x0, "nchw": x0.contiguous(), "expanded": x0[0].unsqueeze(0).expand(T, *x0.shape[1:])}[layout]
    w = torch.randn(x0.shape, generator=torch.Generator().manual_seed(6), dtype=x0.dtype)
    for stable in (False, True):
        for mode in ("bptt", "rate"):
            ref = _run(_neuron("reference", T, stable, mode), x0, w)
            neurons.set_compile(True)
            try:
                got = _run(_neuron("fused", T, stable, mode), x0, w)
            finally:
                neurons.set_compile(os.environ.get("ROBENCH_COMPILE") == "1")
            assert torch.equal(got[0], ref[0])
            for a, b in zip(got[1:], ref[1:], strict=True):
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
            assert got[2].abs().sum() > 0


# ----------------------------------------------------------------------------------- model-level pooling
@pytest.mark.parametrize("size", [(8, 8), (7, 7), (6, 10), (5, 4)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "cl"])
def test_avgpool_matches_torch_and_saves_no_activation(size, layout):
    from robench.snn.models import AvgPool

    x = torch.rand(3, 4, *size, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_(True)
    w = torch.randn(3, 4, size[0] // 2, size[1] // 2, dtype=torch.float64).contiguous(memory_format=layout)
    (out, saved) = _saved(lambda: AvgPool()(x))
    (out * w).sum().backward()
    want = torch.nn.functional.avg_pool2d(x, 2)
    assert torch.equal(out, want) and saved == []
    g = x.grad.clone()
    x.grad = None
    (want * w).sum().backward()
    assert torch.equal(g, x.grad)  # bit for bit, odd sizes included (the dropped row/column gets 0)
    assert g.is_contiguous(memory_format=layout)  # the gradient keeps the input's layout


# ---------------------------------------------------------------------------------------- memory layout
def _cl_steps(T: int, seed: int) -> torch.Tensor:
    """Random ``[T, B, C, H, W]`` currents whose steps are channels-last (as SeqFold hands them over)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(T * 2, 3, 4, 5, generator=g, dtype=torch.float64) * 1.6 - 0.2
    x[:, 1, 2] = 1.0  # some currents exactly on the threshold
    return x.contiguous(memory_format=torch.channels_last).view(T, 2, 3, 4, 5)


@pytest.mark.parametrize("stable", [False, True], ids=["lif", "dlif"])
@pytest.mark.parametrize("mode", ["bptt", "rate"])
@pytest.mark.parametrize("expanded", [False, True], ids=["steps", "expanded"])
def test_fused_keeps_channels_last_and_matches_reference(stable, mode, expanded):
    T = 4
    x0 = _cl_steps(T, 3)
    if expanded:  # the first layer: one channels-last step expanded over T (stride 0)
        x0 = x0[0].unsqueeze(0).expand(T, *x0.shape[1:])
    w = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4), dtype=x0.dtype)
    fused = _run(_neuron("fused", T, stable, mode), x0, w)
    ref = _run(_neuron("reference", T, stable, mode), x0, w)
    assert torch.equal(fused[0], ref[0])
    for a, b in zip(fused[1:], ref[1:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for t in (fused[0], fused[1]):  # spikes and membrane: every step stays channels-last
        assert t[0].is_contiguous(memory_format=torch.channels_last) and not t[0].is_contiguous()
    assert fused[2].abs().sum() > 0


def test_model_runs_channels_last_and_nchw_gives_the_same_predictions(tiny_model, tiny_data):
    """Channels-last is a layout, not a model change: same predictions, logits equal to float rounding."""
    from robench.snn.models import is_channels_last

    seen = []
    hook = tiny_model.body[1].register_forward_hook(lambda m, i, o: seen.append(is_channels_last(i[0][0])))
    x = tiny_data[0][:32]
    with torch.inference_mode():
        a = tiny_model(x)
        tiny_model.channels_last = False
        b = tiny_model(x)
        tiny_model.channels_last = True
    hook.remove()
    assert seen == [True, False]
    assert torch.equal(a.argmax(1), b.argmax(1))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
