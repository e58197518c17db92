"""Spiking neurons over T time steps: LIF and the stable DLIF neuron (PAPER.md §1), their surrogate and the
two input-gradient modes of PAPER.md §4.

A neuron takes the multi-step input current ``I`` of shape ``[T, B, ...]`` and returns spikes of the same
shape. Per element, for t = 1..T, starting from rest (u = 0) on every call::

    charge:  h[t] = tau * u[t-1] + p[t] * I[t]          (p = 1 for LIF; learnable gains for DLIF)
    fire:    s[t] = H(h[t] - v_th)                      (H(0) = 1: a spike when h >= v_th)
    reset:   u[t] = h[t] * (1 - s[t])                   (hard reset to 0)

Two engines compute the same thing: ``fused`` (one autograd function over all T steps, saving only the
pre-spike membrane ``h`` for BPTT or the mean current for the rate gradient) and ``reference`` (a plain
per-step loop under autograd, kept as the executable specification the tests compare against).
"""

from __future__ import annotations

from enum import Enum

import torch
from torch import Tensor, nn

from .errors import BadSpec


class GradMode(str, Enum):
    """How the input gradient flows through spiking layers; the forward pass is the exact SNN in both."""

    bptt = "bptt"  # surrogate gradient through space and time
    rate = "rate"  # piecewise-linear rate slope of the mean current, no temporal recursion


ENGINES = ("fused", "reference")


# ---------------------------------------------------------------------------------------------- surrogate
def triangle_backward(grad: Tensor, x: Tensor, gamma: float = 1.0) -> Tensor:
    """Triangle ("ZIF") surrogate derivative of the Heaviside step: ``grad * max(0, gamma - |x|) / gamma^2``."""
    return grad * (gamma - x.abs()).clamp_min(0) / (gamma * gamma)


class _TriangleSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, gamma: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.gamma = gamma
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return triangle_backward(grad, x, ctx.gamma), None


class Triangle(nn.Module):
    """Heaviside forward, triangle surrogate backward with half-width ``gamma`` (PAPER.md §1)."""

    def __init__(self, gamma: float = 1.0) -> None:
        super().__init__()
        self.gamma = float(gamma)

    def forward(self, x: Tensor) -> Tensor:
        return _TriangleSpike.apply(x, self.gamma)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"


# ------------------------------------------------------------------------------------------- rate slope
def rate_slope(ibar: Tensor, tau: float, v_th: float = 1.0, gamma: float = 0.2) -> Tensor:
    """Slope of the piecewise-linear rate function of the mean input current (PAPER.md §4).

    With ``x = ibar / v_th``: ``gamma`` for ``0 <= x < 1 - tau``; ``(1 - gamma + gamma*tau) / (tau + 1)`` for
    ``1 - tau <= x <= 2``; 0 elsewhere; divided by ``v_th`` (the rate is per unit of threshold).
    """
    x = ibar / v_th
    low = (x >= 0) & (x < 1 - tau)
    mid = (x >= 1 - tau) & (x <= 2)
    mid_slope = (1 - gamma + gamma * tau) / (tau + 1)
    return (low.to(ibar.dtype) * gamma + mid.to(ibar.dtype) * mid_slope) / v_th


# -------------------------------------------------------------------------------------------- engines
def _forward_loop(current: Tensor, tau: float, v_th: float) -> tuple[Tensor, Tensor]:
    """Exact forward over T steps without autograd. Returns (spikes, pre-spike membrane h), both [T, ...]."""
    spikes = torch.empty_like(current)
    h_all = torch.empty_like(current)
    u = torch.zeros_like(current[0])
    for t in range(current.shape[0]):
        h = torch.add(current[t], u, alpha=tau) if tau != 0 else current[t].clone()
        h_all[t] = h
        s = h >= v_th
        spikes[t] = s
        u = h.masked_fill_(s, 0.0)  # hard reset; h is stored above, so it may be overwritten in place
    return spikes, h_all


class _FusedBPTT(torch.autograd.Function):
    """All T steps in one function; backward is the exact BPTT of the reference loop (reset path included)."""

    @staticmethod
    def forward(ctx, current: Tensor, tau: float, v_th: float, gamma: float):  # type: ignore[override]
        spikes, h = _forward_loop(current, tau, v_th)
        ctx.save_for_backward(h)
        ctx.cfg = (tau, v_th, gamma)
        ctx.mark_non_differentiable(h)
        return spikes, h

    @staticmethod
    def backward(ctx, grad_s: Tensor, _grad_h: Tensor | None):  # type: ignore[override]
        (h,) = ctx.saved_tensors
        tau, v_th, gamma = ctx.cfg
        grad_in = torch.empty_like(h)
        grad_u = torch.zeros_like(h[0])  # dL/du[t] flowing back from step t+1
        for t in range(h.shape[0] - 1, -1, -1):
            x = h[t] - v_th
            sg = (gamma - x.abs()).clamp_min_(0).div_(gamma * gamma)  # surrogate dH/dh
            not_fired = (x < 0).to(h.dtype)
            # u = h * (1 - s): du/dh = (1 - s) - h * sg ; s: ds/dh = sg
            g = grad_u * (not_fired - h[t] * sg) + grad_s[t] * sg
            grad_in[t] = g
            grad_u = g * tau
        return grad_in, None, None, None


class _FusedRate(torch.autograd.Function):
    """Exact forward; backward multiplies the gradient at every step by the rate slope of the mean current."""

    @staticmethod
    def forward(ctx, current: Tensor, tau: float, v_th: float, gamma: float):  # type: ignore[override]
        spikes, h = _forward_loop(current, tau, v_th)
        ctx.save_for_backward(rate_slope(current.mean(0), tau, v_th))
        ctx.mark_non_differentiable(h)
        return spikes, h

    @staticmethod
    def backward(ctx, grad_s: Tensor, _grad_h: Tensor | None):  # type: ignore[override]
        (slope,) = ctx.saved_tensors
        return grad_s * slope, None, None, None


def _reference(current: Tensor, neuron: SpikingNeuron) -> tuple[Tensor, Tensor]:
    """Per-step loop under autograd: the executable specification of both gradient modes."""
    rate = neuron.grad_mode == GradMode.rate
    slope = rate_slope(current.mean(0), neuron.tau, neuron.v_th).detach() if rate else None
    u = torch.zeros_like(current[0])
    spikes, hs = [], []
    for t in range(current.shape[0]):
        h = neuron.charge(u, current[t])
        if rate:  # exact spikes forward, gradient d s[t] / d I[t] = slope, nothing through time
            h = h.detach()
            s = neuron.fire(h).detach() + slope * (current[t] - current[t].detach())
            u = neuron.reset(h, s.detach())
        else:
            s = neuron.fire(h)
            u = neuron.reset(h, s)
        spikes.append(s)
        hs.append(h)
    return torch.stack(spikes), torch.stack(hs)


# -------------------------------------------------------------------------------------------- neuron
class SpikingNeuron(nn.Module):
    """Multi-step LIF neuron (``stable=False``) or stable DLIF neuron (``stable=True``), PAPER.md §1.

    Arguments:
        T: number of time steps (the length of the gains of a DLIF neuron).
        tau: membrane leak (0.99 by default, close to integrate-and-fire).
        v_th: firing threshold.
        gamma: half-width of the triangle surrogate used by BPTT.
        stable: learnable per-time-step input gains ``p[1..T]`` (initialised to 1, shared across the layer).

    Shape:
        input: ``[T, B, ...]`` input currents; output: ``[T, B, ...]`` spikes in {0, 1}.

    Examples:
        >>> n = SpikingNeuron(T=4, stable=True)
        >>> s = n(torch.rand(4, 2, 8))
    """

    def __init__(
        self, T: int, tau: float = 0.99, v_th: float = 1.0, gamma: float = 1.0, stable: bool = False
    ) -> None:
        super().__init__()
        self.T, self.tau, self.v_th, self.stable = int(T), float(tau), float(v_th), bool(stable)
        self.surrogate = Triangle(gamma)
        self.gains = nn.Parameter(torch.ones(self.T)) if stable else None
        self.grad_mode: GradMode = GradMode.bptt
        self.engine = "fused"
        self.record = False  # when True, the charge current of the last call is kept in `recorded`
        self.recorded: Tensor | None = None
        self.last_membrane: Tensor | None = None  # pre-spike membrane h, kept only when `record` is True

    # charge / fire / reset: one step each (the reference engine and the docs use them)
    def charge(self, u: Tensor, current_t: Tensor) -> Tensor:
        return self.tau * u + current_t

    def fire(self, h: Tensor) -> Tensor:
        return self.surrogate(h - self.v_th)

    def reset(self, h: Tensor, s: Tensor) -> Tensor:
        return h * (1 - s)

    def input_current(self, x: Tensor) -> Tensor:
        """The charge current ``p[t] * I[t]`` that enters the membrane: ``[T, B, ...]``."""
        if x.shape[0] != self.T:
            raise BadSpec(f"neuron expects {self.T} time steps, got input with {x.shape[0]}")
        if self.gains is None:
            return x
        return x * self.gains.view(-1, *([1] * (x.dim() - 1)))

    def forward(self, x: Tensor) -> Tensor:
        current = self.input_current(x)
        if self.engine == "reference":
            spikes, h = _reference(current, self)
        else:
            fn = _FusedRate if self.grad_mode == GradMode.rate else _FusedBPTT
            spikes, h = fn.apply(current, self.tau, self.v_th, self.surrogate.gamma)
        if self.record:
            self.recorded, self.last_membrane = current, h
        return spikes

    def extra_repr(self) -> str:
        kind = "DLIF" if self.stable else "LIF"
        return f"{kind}, T={self.T}, tau={self.tau}, v_th={self.v_th}, grad={self.grad_mode.value}"


def spiking_neurons(model: nn.Module) -> list[SpikingNeuron]:
    """All spiking neurons of a model, in forward (registration) order."""
    return [m for m in model.modules() if isinstance(m, SpikingNeuron)]


def set_engine(model: nn.Module, engine: str) -> None:
    """Select the ``fused`` or ``reference`` engine on every neuron of ``model``."""
    if engine not in ENGINES:
        raise BadSpec(f"unknown engine {engine!r}; choose from: {', '.join(ENGINES)}")
    for n in spiking_neurons(model):
        n.engine = engine
