"""LIF / DLIF neurons against hand-computed values (docs/method.md §2, §5), on both engines."""

from __future__ import annotations

import pytest
import torch

from robench.errors import BadSpec
from robench.snn.neurons import ENGINES, GradMode, SpikingNeuron, rate_slope, set_engine
from robench.snn.surrogates import triangle_backward


def _neuron(engine: str, T: int, tau: float, stable: bool = False, mode: str = "bptt") -> SpikingNeuron:
    n = SpikingNeuron(T=T, tau=tau, v_th=1.0, gamma=1.0, stable=stable)
    set_engine(n, engine)
    n.grad_mode = GradMode(mode)
    n.record = True
    return n


def _col(*values: float) -> torch.Tensor:
    """One element over time: shape [T, B=1, 1], float64 so hand values compare exactly."""
    return torch.tensor(values, dtype=torch.float64).view(-1, 1, 1)


# ------------------------------------------------------------------------------------------- forward
@pytest.mark.parametrize("engine", ENGINES)
def test_lif_tau_half_spikes_and_membrane(engine):
    # tau = 0.5, I = 0.6, 0.8, 0.3, 1.2:
    # h1 = 0.6 (no spike, u = 0.6); h2 = 0.3 + 0.8 = 1.1 (spike, reset u = 0);
    # h3 = 0.3 (no spike, u = 0.3); h4 = 0.15 + 1.2 = 1.35 (spike)
    n = _neuron(engine, T=4, tau=0.5)
    current = _col(0.6, 0.8, 0.3, 1.2)
    s = n(current)
    assert s.flatten().tolist() == [0.0, 1.0, 0.0, 1.0]
    assert torch.allclose(n.last_membrane.flatten(), torch.tensor([0.6, 1.1, 0.3, 1.35], dtype=torch.float64))
    assert torch.equal(n.recorded, current)  # LIF: the charge current is the input itself


@pytest.mark.parametrize("engine", ENGINES)
def test_lif_spikes_exactly_at_threshold(engine):
    # tau = 0.5, I = 0.5, 0.75: h2 = 0.25 + 0.75 = 1.0 exactly -> a spike (h >= v_th)
    # second element: I = 1.0 at t = 1 fires at once, then h2 = 0 + 0.5 = 0.5 (hard reset) -> no spike
    n = _neuron(engine, T=2, tau=0.5)
    current = torch.tensor([[[0.5, 1.0]], [[0.75, 0.5]]], dtype=torch.float64)  # [T=2, B=1, 2]
    s = n(current)
    assert s[:, 0].tolist() == [[0.0, 1.0], [1.0, 0.0]]
    assert n.last_membrane[:, 0].tolist() == [[0.5, 1.0], [1.0, 0.5]]


@pytest.mark.parametrize("engine", ENGINES)
def test_lif_tau_099_trace(engine):
    # tau = 0.99, I = 0.5 each step: h = 0.5, 0.495 + 0.5 = 0.995, 0.98505 + 0.5 = 1.48505 (spike), then 0.5
    n = _neuron(engine, T=4, tau=0.99)
    s = n(_col(0.5, 0.5, 0.5, 0.5))
    assert s.flatten().tolist() == [0.0, 0.0, 1.0, 0.0]
    expect = torch.tensor([0.5, 0.995, 1.48505, 0.5], dtype=torch.float64)
    assert torch.allclose(n.last_membrane.flatten(), expect, atol=1e-12)


def test_wrong_number_of_steps_is_refused():
    with pytest.raises(BadSpec, match="3 time steps"):
        SpikingNeuron(T=3)(torch.zeros(2, 1, 4))


# ----------------------------------------------------------------------------------------- surrogate
@pytest.mark.parametrize(
    "x, gamma, expect",
    [
        (0.0, 1.0, 1.0), (0.5, 1.0, 0.5), (-0.25, 1.0, 0.75), (1.0, 1.0, 0.0), (-1.5, 1.0, 0.0),
        (0.0, 0.5, 2.0), (0.25, 0.5, 1.0), (-0.5, 0.5, 0.0),  # max(0, 0.5 - |x|) / 0.25
        (0.0, 2.0, 0.5), (1.0, 2.0, 0.25), (-3.0, 2.0, 0.0),  # max(0, 2 - |x|) / 4
    ],
)
def test_triangle_surrogate_values(x, gamma, expect):
    got = triangle_backward(torch.tensor([3.0], dtype=torch.float64), torch.tensor([x], dtype=torch.float64), gamma)
    assert got.item() == pytest.approx(3.0 * expect)


# ------------------------------------------------------------------------------------------ BPTT grad
@pytest.mark.parametrize("engine", ENGINES)
def test_bptt_input_gradient_by_hand(engine):
    """L = s1 + 2*s2, tau = 0.5, gamma = 1, v_th = 1; sg(h) = max(0, 1 - |h - 1|), du1/dh1 = (1 - s1) - h1*sg1.

    Element A, I = (0.6, 0.8): h1 = 0.6, s1 = 0, sg1 = 0.6, du1/dh1 = 1 - 0.36 = 0.64; h2 = 1.1, sg2 = 0.9.
        dL/dI2 = 2 * 0.9 = 1.8 ; dL/dI1 = 0.6 + 2 * 0.9 * 0.5 * 0.64 = 1.176
    Element B, I = (1.2, 0.5): h1 = 1.2, s1 = 1, sg1 = 0.8, du1/dh1 = 0 - 1.2 * 0.8 = -0.96; h2 = 0.5, sg2 = 0.5.
        dL/dI2 = 2 * 0.5 = 1.0 ; dL/dI1 = 0.8 + 2 * 0.5 * 0.5 * (-0.96) = 0.32
    """
    n = _neuron(engine, T=2, tau=0.5)
    x = torch.tensor([[[0.6, 1.2]], [[0.8, 0.5]]], dtype=torch.float64, requires_grad=True)
    s = n(x)
    (s[0].sum() + 2 * s[1].sum()).backward()
    expect = torch.tensor([[[1.176, 0.32]], [[1.8, 1.0]]], dtype=torch.float64)
    assert torch.allclose(x.grad, expect, atol=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_bptt_three_steps_through_time(engine):
    """Only s3 in the loss, tau = 0.5, I = (0.2, 0.2, 0.9): no spikes before t = 3.

    h = 0.2, 0.3, 1.05; sg = 0.2, 0.3, 0.95; du/dh = 1 - h*sg = 0.96, 0.91.
    dL/dI3 = 0.95 ; dL/dI2 = 0.95 * 0.5 * 0.91 = 0.432250 ; dL/dI1 = 0.432250 * 0.5 * 0.96 = 0.20748
    """
    n = _neuron(engine, T=3, tau=0.5)
    x = _col(0.2, 0.2, 0.9).requires_grad_(True)
    n(x)[2].sum().backward()
    assert torch.allclose(x.grad.flatten(), torch.tensor([0.20748, 0.43225, 0.95], dtype=torch.float64))


# ------------------------------------------------------------------------------------------ rate grad
# the slope between the leak region and saturation (tau = 0.99), as rate_slope gives it at a mean current of 1;
# test_rate_slope_regions_and_boundaries checks it is one slope over the whole region, and
# test_rate_slope_is_the_slope_of_a_rate_reaching_one_spike_per_step_at_two what its value must be
MID = rate_slope(torch.tensor([1.0], dtype=torch.float64), tau=0.99).item()


@pytest.mark.parametrize(
    "ibar, expect",
    [
        (-0.5, 0.0), (-1e-9, 0.0),  # below 0: silent
        (0.0, 0.2), (0.005, 0.2), (0.0099, 0.2),  # 0 <= ibar < 1 - tau: leak region, slope gamma
        (1 - 0.99, MID), (0.0101, MID), (1.0, MID), (2.0, MID),  # 1 - tau <= ibar <= 2
        (2.0 + 1e-9, 0.0), (3.0, 0.0),  # above 2: saturated
    ],
)
def test_rate_slope_regions_and_boundaries(ibar, expect):
    got = rate_slope(torch.tensor([ibar], dtype=torch.float64), tau=0.99, v_th=1.0, gamma=0.2)
    assert got.item() == pytest.approx(expect, abs=1e-15)


@pytest.mark.parametrize("tau, v_th", [(0.99, 1.0), (0.5, 1.0), (0.9, 2.0)])
def test_rate_slope_is_the_slope_of_a_rate_reaching_one_spike_per_step_at_two(tau, v_th):
    """The rate function (docs/method.md §5) is continuous and piecewise linear in z = ibar / v_th: 0 below 0,
    slope gamma_r = 0.2 up to z = 1 - tau, then straight to one spike per step at z = 2, flat after. Its slope,
    integrated (midpoint rule), must rebuild that rate, whatever tau and v_th."""
    n, top = 2**20, 3.0  # z in [0, 3]
    z = (torch.arange(n, dtype=torch.float64) + 0.5) * (top / n)
    rate = torch.cumsum(rate_slope(z * v_th, tau=tau, v_th=v_th), 0) * (top * v_th / n)

    def rate_at(zz: float) -> float:
        return rate[round(zz / top * n) - 1].item()

    assert rate_at(1 - tau) == pytest.approx(0.2 * (1 - tau), abs=1e-5)
    assert rate_at(2.0) == pytest.approx(1.0, abs=1e-5)
    assert rate_at(top) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("engine", ENGINES)
def test_rate_gradient_is_the_slope_of_the_mean_current(engine):
    """Each element's gradient at every step = incoming gradient * rate_slope(mean_t I), nothing through time."""
    n = _neuron(engine, T=4, tau=0.99, mode="rate")
    # per element the mean current is -0.1 | 0.005 | 0.5 | 1.0 | 2.5 (one in each region, incl. both zero ones)
    cols = [(-0.4, 0.0, 0.0, 0.0), (0.02, 0.0, 0.0, 0.0), (0.2, 0.8, 0.5, 0.5), (1.5, 0.5, 1.0, 1.0),
            (2.5, 2.5, 2.5, 2.5)]
    x = torch.tensor(cols, dtype=torch.float64).T.reshape(4, 1, 5).requires_grad_(True)
    w = torch.tensor([1.0, -2.0, 3.0, 0.5], dtype=torch.float64).view(4, 1, 1)
    (n(x) * w).sum().backward()
    slopes = torch.tensor([0.0, 0.2, MID, MID, 0.0], dtype=torch.float64).view(1, 1, 5)
    assert torch.allclose(x.grad, w * slopes, atol=1e-15)


@pytest.mark.parametrize("engine", ENGINES)
def test_rate_gradient_has_no_temporal_recursion(engine):
    n = _neuron(engine, T=3, tau=0.99, mode="rate")
    x = _col(0.3, 0.4, 0.5).requires_grad_(True)
    n(x)[2].sum().backward()  # only the last step's spike in the loss
    assert x.grad.flatten().tolist() == [0.0, 0.0, pytest.approx(MID)]


@pytest.mark.parametrize("engine", ENGINES)
def test_rate_mode_forward_is_the_exact_snn(engine):
    x = torch.rand(4, 3, 7, dtype=torch.float64) * 1.5
    a, b = _neuron(engine, 4, 0.99), _neuron(engine, 4, 0.99, mode="rate")
    assert torch.equal(a(x), b(x))


# ---------------------------------------------------------------------------------------------- DLIF
@pytest.mark.parametrize("engine", ENGINES)
def test_dlif_gains_scale_the_charge(engine):
    # gains p = (2, 0.5), tau = 0.5, I = (0.6, 0.8): charge 1.2, 0.4; h1 = 1.2 (spike, reset); h2 = 0.4
    # the same input through a LIF: h1 = 0.6, h2 = 0.3 + 0.8 = 1.1 (spike)
    n = _neuron(engine, T=2, tau=0.5, stable=True)
    with torch.no_grad():
        n.gains.copy_(torch.tensor([2.0, 0.5]))
    x = _col(0.6, 0.8)
    s = n(x)
    assert torch.allclose(n.recorded.flatten(), torch.tensor([1.2, 0.4], dtype=torch.float64))
    assert torch.allclose(n.last_membrane.flatten(), torch.tensor([1.2, 0.4], dtype=torch.float64))
    assert s.flatten().tolist() == [1.0, 0.0]
    assert _neuron(engine, T=2, tau=0.5)(x).flatten().tolist() == [0.0, 1.0]


@pytest.mark.parametrize("engine", ENGINES)
def test_dlif_gains_start_at_one_and_receive_gradients(engine):
    """p = (1, 1), I = (0.6, 0.8), tau = 0.5, L = s1 + s2: dL/dcharge = (0.6 + 0.9*0.5*0.64, 0.9) = (0.888, 0.9),
    so dL/dp = dL/dcharge * I = (0.5328, 0.72) and dL/dI = dL/dcharge * p."""
    n = _neuron(engine, T=2, tau=0.5, stable=True)
    assert n.gains.tolist() == [1.0, 1.0] and n.gains.requires_grad
    n.double()
    x = _col(0.6, 0.8).requires_grad_(True)
    n(x).sum().backward()
    assert torch.allclose(n.gains.grad, torch.tensor([0.5328, 0.72], dtype=torch.float64))
    assert torch.allclose(x.grad.flatten(), torch.tensor([0.888, 0.9], dtype=torch.float64))


@pytest.mark.parametrize("engine", ENGINES)
def test_dlif_rate_gradient_uses_the_charge_current(engine):
    # p = (2, 0.5), I = (0.6, 0.8): mean charge (1.2 + 0.4) / 2 = 0.8 -> MID; dL/dI[t] = w[t] * MID * p[t]
    n = _neuron(engine, T=2, tau=0.99, stable=True, mode="rate").double()
    with torch.no_grad():
        n.gains.copy_(torch.tensor([2.0, 0.5]))
    x = _col(0.6, 0.8).requires_grad_(True)
    (n(x).flatten() * torch.tensor([1.0, 3.0], dtype=torch.float64)).sum().backward()
    assert torch.allclose(x.grad.flatten(), torch.tensor([2 * MID, 1.5 * MID], dtype=torch.float64))
    assert torch.allclose(n.gains.grad, torch.tensor([0.6 * MID, 3 * 0.8 * MID], dtype=torch.float64))


# ------------------------------------------------------------------------------------ engine agreement
@pytest.mark.parametrize("stable", [False, True])
@pytest.mark.parametrize("mode", ["bptt", "rate"])
@pytest.mark.parametrize("tau", [0.5, 0.99])
def test_engines_agree_on_outputs_and_gradients(stable, mode, tau):
    torch.manual_seed(0)
    x0 = torch.rand(5, 3, 11, dtype=torch.float64) * 1.2 - 0.1  # currents around the threshold region
    w = torch.randn(5, 3, 11, dtype=torch.float64)
    outs = {}
    for engine in ENGINES:
        n = _neuron(engine, T=5, tau=tau, stable=stable, mode=mode).double()
        if stable:
            with torch.no_grad():
                n.gains.copy_(torch.tensor([1.5, 0.5, 1.0, 2.0, 0.8]))
        x = x0.clone().requires_grad_(True)
        s = n(x)
        (s * w).sum().backward()
        outs[engine] = (s.detach(), x.grad, n.gains.grad if stable else None, n.last_membrane.detach())
    (sf, gf, pf, hf), (sr, gr, pr, hr) = outs["fused"], outs["reference"]
    assert torch.equal(sf, sr)
    assert torch.allclose(hf, hr, atol=1e-12)
    assert torch.allclose(gf, gr, atol=1e-12)
    assert gf.abs().sum() > 0  # the comparison is not between two zero gradients
    if stable:
        assert torch.allclose(pf, pr, atol=1e-12)


def test_unknown_engine_lists_the_choices():
    with pytest.raises(BadSpec, match="fused, reference"):
        set_engine(SpikingNeuron(T=2), "turbo")
