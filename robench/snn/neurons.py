"""Spiking neurons over T time steps: LIF and the stable DLIF neuron (docs/method.md §2), their training surrogate,
and the engines behind every gradient path (``bptt``, ``rate`` of docs/method.md §5, the attack-time surrogates and
ASSG of docs/evaluation.md §2; the registry and syntax live in :mod:`robench.snn.paths`).

A neuron takes the multi-step input current ``I`` of shape ``[T, B, ...]`` and returns spikes of the same
shape. Per element, for t = 1..T, starting from rest (u = 0) on every call::

    charge:  h[t] = tau * u[t-1] + p[t] * I[t]          (p = 1 for LIF; learnable gains for DLIF)
    fire:    s[t] = H(h[t] - v_th)                      (H(0) = 1: a spike when h >= v_th)
    reset:   u[t] = h[t] * (1 - s[t])                   (hard reset to 0)

Two engines compute the same thing: ``fused`` (one autograd function over all T steps, in place on
preallocated buffers, saving only the pre-spike membrane ``h`` for BPTT (plus ASSG's per-element sharpness)
or the rate slope of the mean current for the rate gradient, and no autograd at all when no gradient is
needed) and ``reference`` (a plain per-step loop under autograd, kept as the executable specification the tests
compare against). The fused forward is bit-identical to the reference; ``set_compile(True)`` (or
ROBENCH_COMPILE=1) swaps in ``torch.compile``d kernels (forward, and the bptt backward), off by default.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable
from enum import Enum

import torch
from torch import Tensor, nn

from ..errors import BadSpec
from .pathkeys import BPTT, GradPath
from .surrogates import SURROGATES, AssgState, Surrogate, triangle_derivative


class GradMode(str, Enum):
    """How the input gradient flows through spiking layers; the forward pass is the exact SNN in both."""

    bptt = "bptt"  # surrogate gradient through space and time
    rate = "rate"  # piecewise-linear rate slope of the mean current, no temporal recursion


ENGINES = ("fused", "reference")


# ---------------------------------------------------------------------------------------------- surrogate
class _SurrogateSpike(torch.autograd.Function):
    """Heaviside forward; backward ``grad * derivative(x)``: the training surrogate and the reference engine's spike."""

    @staticmethod
    def forward(ctx, x: Tensor, derivative: Callable[[Tensor], Tensor]) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.derivative = derivative
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * ctx.derivative(x), None


class Triangle(nn.Module):
    """Heaviside forward, triangle surrogate backward with half-width ``gamma`` (docs/method.md §2)."""

    def __init__(self, gamma: float = 1.0) -> None:
        super().__init__()
        self.gamma = float(gamma)

    def forward(self, x: Tensor) -> Tensor:
        return _SurrogateSpike.apply(x, functools.partial(triangle_derivative, w=self.gamma))

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"


# ------------------------------------------------------------------------------------------- rate slope
def rate_slope(ibar: Tensor, tau: float, v_th: float = 1.0, gamma: float = 0.2) -> Tensor:
    """Slope of the piecewise-linear rate function of the mean input current (docs/method.md §5).

    With ``x = ibar / v_th``: ``gamma`` for ``0 <= x < 1 - tau``; ``(1 - gamma + gamma*tau) / (tau + 1)`` for
    ``1 - tau <= x <= 2``; 0 elsewhere; divided by ``v_th`` (the rate is per unit of threshold).
    """
    x = ibar / v_th
    low = (x >= 0) & (x < 1 - tau)
    mid = (x >= 1 - tau) & (x <= 2)
    mid_slope = (1 - gamma + gamma * tau) / (tau + 1)
    return (low.to(ibar.dtype) * gamma + mid.to(ibar.dtype) * mid_slope) / v_th


# -------------------------------------------------------------------------------------------- engines
# The fused engine writes into preallocated [T, ...] buffers through ``out=`` and in-place ops, with a few
# one-step scratch tensors; every op is a plain torch op, so the same code runs on CPU and CUDA. The forward
# is bit-identical to the reference: ``addcmul(I, h, keep, value=tau)`` computes ``(tau * h) * keep + I``
# and ``keep`` is 0 or 1, exactly the reference's ``tau * (h * (1 - s)) + I``.
def _buffer(x: Tensor) -> Tensor:
    """An uninitialised ``[T, ...]`` buffer whose steps have the memory layout of ``x[0]`` (e.g. channels-last),
    dense even where ``x`` is not (an input expanded over T)."""
    step = torch.empty_like(x[0])  # keeps x[0]'s strides when dense, else the default layout
    size, stride = (x.shape[0], *step.shape), (step.numel(), *step.stride())
    return torch.empty_strided(size, stride, dtype=x.dtype, device=x.device)


def _forward_loop(current: Tensor, tau: float, v_th: float, keep_h: bool = True) -> tuple[Tensor, Tensor | None]:
    """Exact forward over T steps without autograd.

    Shape: ``current`` ``[T, ...]`` (any strides, e.g. expanded over T). Returns spikes ``[T, ...]`` in {0, 1}
    and, when ``keep_h``, the pre-spike membrane ``h`` ``[T, ...]`` (else None). Per step: one comparison into
    a scratch mask, one ``addcmul`` and the previous step's spikes, each while that step is still in cache.
    """
    T = current.shape[0]
    h = _buffer(current)
    spikes = torch.empty_like(h)
    keep = torch.empty_like(h[0])  # 1 - s[t-1]: the hard-reset mask of the previous step
    h[0].copy_(current[0])  # u = 0 at rest: h[1] = I[1]
    for t in range(1, T):
        torch.lt(h[t - 1], v_th, out=keep)
        torch.addcmul(current[t], h[t - 1], keep, value=tau, out=h[t])  # tau * u[t-1] + I[t]
        torch.ge(h[t - 1], v_th, out=spikes[t - 1])  # s = H(h - v_th), written straight as 0/1 floats
    torch.ge(h[T - 1], v_th, out=spikes[T - 1])
    return spikes, (h if keep_h else None)


def _bptt_backward(h: Tensor, grad_s: Tensor, tau: float, v_th: float, gamma: float) -> Tensor:
    """Exact BPTT of the reference loop, reset path included, from the saved pre-spike membrane.

    With ``sg = max(0, gamma - |h - v_th|) / gamma^2``, ``keep = 1 - s`` and ``g[t+1]`` the gradient w.r.t.
    ``I[t+1]``: ``g[t] = sg * (grad_s[t] - tau * g[t+1] * h[t]) + tau * g[t+1] * keep[t]``, since
    ``du[t]/dh[t] = keep[t] - h[t] * sg[t]`` and ``dh[t+1]/du[t] = tau``. Shape: ``[T, ...]`` in and out.
    """
    T = h.shape[0]
    grad_in = torch.empty_like(h)
    sg, tmp, keep = (torch.empty_like(h[0]) for _ in range(3))
    for t in range(T - 1, -1, -1):
        torch.sub(h[t], v_th, out=sg).abs_().neg_().add_(gamma).clamp_min_(0)
        if gamma != 1.0:
            sg.mul_(1.0 / (gamma * gamma))
        if t == T - 1:
            torch.mul(grad_s[t], sg, out=grad_in[t])
            continue
        torch.addcmul(grad_s[t], grad_in[t + 1], h[t], value=-tau, out=tmp)
        torch.lt(h[t], v_th, out=keep)
        torch.mul(sg, tmp, out=grad_in[t]).addcmul_(grad_in[t + 1], keep, value=tau)
    return grad_in


def _surrogate_backward(h: Tensor, grad_s: Tensor, tau: float, v_th: float, rule: Surrogate | AssgState,
                        saved: tuple[Tensor, ...]) -> Tensor:
    """``_bptt_backward`` with any surrogate: ``sg = rule.derivative_at(t, h[t] - v_th, saved)``, same recursion.

    A separate branch so the default triangle path keeps its allocation-free kernel. Shape: ``[T, ...]``.
    """
    T = h.shape[0]
    grad_in = torch.empty_like(h)
    x, tmp, keep = (torch.empty_like(h[0]) for _ in range(3))
    for t in range(T - 1, -1, -1):
        sg = rule.derivative_at(t, torch.sub(h[t], v_th, out=x), saved)
        if t == T - 1:
            torch.mul(grad_s[t], sg, out=grad_in[t])
            continue
        torch.addcmul(grad_s[t], grad_in[t + 1], h[t], value=-tau, out=tmp)
        torch.lt(h[t], v_th, out=keep)
        torch.mul(sg, tmp, out=grad_in[t]).addcmul_(grad_in[t + 1], keep, value=tau)
    return grad_in


# Optional torch.compile path (off by default, never required): the same math written functionally, which
# inductor fuses into one kernel per layer that reads each input once. Turn on with ``set_compile(True)`` or
# the environment variable ROBENCH_COMPILE=1; the first call per T pays the compile time. The kernels see
# every layer as a dense ``[T, M]`` block in its own memory order (``_flat``), with M dynamic: one kernel for
# every layer and batch size, no recompiling, and no gathering a channels-last step through NCHW indices
# (which made the compiled forward slower than the eager one).
def _forward_fn(current: Tensor, tau: float, v_th: float, keep_h: bool) -> tuple[Tensor, Tensor | None]:
    """Functional twin of ``_forward_loop`` (same values, bit for bit): what ``torch.compile`` fuses."""
    hs, ss = [], []
    u = torch.zeros_like(current[0])
    for t in range(current.shape[0]):
        h = tau * u + current[t]
        s = (h >= v_th).to(current.dtype)
        u = h * (h < v_th).to(current.dtype)
        hs.append(h)
        ss.append(s)
    return torch.stack(ss), (torch.stack(hs) if keep_h else None)


def _bptt_backward_fn(h: Tensor, grad_s: Tensor, tau: float, v_th: float, gamma: float) -> Tensor:
    """Functional twin of ``_bptt_backward``: what ``torch.compile`` fuses."""
    out: list[Tensor] = []
    g_next: Tensor | None = None
    for t in range(h.shape[0] - 1, -1, -1):
        sg = (gamma - (h[t] - v_th).abs()).clamp_min(0) / (gamma * gamma)
        g = grad_s[t] * sg
        if g_next is not None:
            g = g + tau * g_next * ((h[t] < v_th).to(h.dtype) - h[t] * sg)
        out.append(g)
        g_next = g
    return torch.stack(out[::-1])


_COMPILED: dict[str, Callable] = {}  # built on the first set_compile(True), then kept: no recompiling on toggles
_USE_COMPILED: list[bool | None] = [None]  # None: not chosen yet; the setting ROBENCH_COMPILE=1 decides on first use


def set_compile(on: bool = True) -> None:
    """Use ``torch.compile``d kernels in the fused engine (``on``) or the eager in-place ones (the default)."""
    if on and not _COMPILED:
        _COMPILED["forward"] = torch.compile(_forward_fn, dynamic=True)
        _COMPILED["backward"] = torch.compile(_bptt_backward_fn, dynamic=True)
    _USE_COMPILED[0] = bool(on)


def compile_enabled() -> bool:
    """Whether the fused engine uses the compiled kernels: as set by :func:`set_compile`, else as the environment
    setting ``ROBENCH_COMPILE=1`` asks, read when a neuron first runs (never at import)."""
    if _USE_COMPILED[0] is None:
        set_compile(os.environ.get("ROBENCH_COMPILE", "") == "1")
    return bool(_USE_COMPILED[0])


def compiler_found() -> bool:
    """True when a C++ compiler is on the PATH: what ``torch.compile``'s CPU backend builds its kernels with."""
    return any(shutil.which(c) for c in ("c++", "g++", "clang++"))


def _flat(x: Tensor, order: list[int] | None = None) -> tuple[Tensor, list[int]]:
    """``x`` ``[T, ...]`` as a dense ``[T, M]`` tensor whose rows are its steps in memory order (a view when the
    steps are dense, e.g. channels-last; a copy otherwise, e.g. an input expanded over T), and that order of
    its dims (``order``: given, to lay a gradient out like the membrane it meets)."""
    if order is None:
        order = sorted(range(1, x.dim()), key=lambda d: -x.stride(d))
    return x.permute(0, *order).contiguous().view(x.shape[0], -1), order


def _unflat(y: Tensor, shape: torch.Size, order: list[int]) -> Tensor:
    """Undo ``_flat``: ``[T, M]`` -> ``shape``, as a view in the original memory order."""
    dense = y.view(shape[0], *(shape[d] for d in order))
    return dense.permute(0, *(1 + order.index(d) for d in range(1, len(shape))))


def _run_forward(current: Tensor, tau: float, v_th: float, keep_h: bool) -> tuple[Tensor, Tensor | None]:
    if not compile_enabled():
        return _forward_loop(current, tau, v_th, keep_h)
    flat, order = _flat(current)
    spikes, h = _COMPILED["forward"](flat, tau, v_th, keep_h)
    return _unflat(spikes, current.shape, order), (None if h is None else _unflat(h, current.shape, order))


def _run_backward(h: Tensor, grad_s: Tensor, tau: float, v_th: float, gamma: float) -> Tensor:
    if not compile_enabled():
        return _bptt_backward(h, grad_s, tau, v_th, gamma)
    flat_h, order = _flat(h)
    grad_in = _COMPILED["backward"](flat_h, _flat(grad_s, order)[0], tau, v_th, gamma)
    return _unflat(grad_in, h.shape, order)


class _FusedBPTT(torch.autograd.Function):
    """All T steps in one function; saves only the pre-spike membrane ``h`` (in the input's dtype)."""

    @staticmethod
    def forward(ctx, current: Tensor, tau: float, v_th: float, gamma: float):  # type: ignore[override]
        spikes, h = _run_forward(current, tau, v_th, True)
        ctx.save_for_backward(h)
        ctx.cfg = (tau, v_th, gamma)
        ctx.mark_non_differentiable(h)
        ctx.set_materialize_grads(False)  # no zero-filled [T, ...] gradient for the membrane output
        return spikes, h

    @staticmethod
    def backward(ctx, grad_s: Tensor | None, _grad_h: Tensor | None):  # type: ignore[override]
        if grad_s is None:
            return None, None, None, None
        (h,) = ctx.saved_tensors
        return _run_backward(h, grad_s, *ctx.cfg), None, None, None


class _FusedSurrogate(torch.autograd.Function):
    """BPTT with a surrogate chosen at attack time (a fixed shape, or ASSG whose statistics ``rule.prepare``
    updates here, once per forward); saves ``h`` and what the rule needs (ASSG: the sharpness ``[T, ...]``).
    Eager kernels only (the compiled twins cover the default triangle)."""

    @staticmethod
    def forward(ctx, current: Tensor, tau: float, v_th: float, rule: Surrogate | AssgState):  # type: ignore[override]
        spikes, h = _run_forward(current, tau, v_th, True)
        saved = rule.prepare(h, v_th)
        ctx.save_for_backward(h, *saved)
        ctx.cfg = (tau, v_th, rule)
        ctx.mark_non_differentiable(h)
        ctx.set_materialize_grads(False)
        return spikes, h

    @staticmethod
    def backward(ctx, grad_s: Tensor | None, _grad_h: Tensor | None):  # type: ignore[override]
        if grad_s is None:
            return None, None, None, None
        h, *saved = ctx.saved_tensors
        return _surrogate_backward(h, grad_s, *ctx.cfg, tuple(saved)), None, None, None


class _FusedRate(torch.autograd.Function):
    """Exact forward; backward multiplies the gradient at every step by the rate slope of the mean current.

    Saves only the slope ``[...]`` (T times smaller than the input); ``h`` is returned only when asked for.
    """

    @staticmethod
    def forward(ctx, current: Tensor, tau: float, v_th: float, keep_h: bool):  # type: ignore[override]
        spikes, h = _run_forward(current, tau, v_th, keep_h)
        ibar = torch.mean(current, 0, out=torch.empty_like(current[0]))  # in the layout of one step, like grad_s
        ctx.save_for_backward(rate_slope(ibar, tau, v_th))
        if h is None:
            return spikes
        ctx.mark_non_differentiable(h)
        ctx.set_materialize_grads(False)
        return spikes, h

    @staticmethod
    def backward(ctx, grad_s: Tensor | None, *_grad_h: Tensor | None):  # type: ignore[override]
        if grad_s is None:
            return None, None, None, None
        (slope,) = ctx.saved_tensors
        return grad_s * slope, None, None, None


def _fused(current: Tensor, neuron: SpikingNeuron) -> tuple[Tensor, Tensor | None]:
    """The fused engine: skip autograd entirely when no gradient is needed (inference, clean predictions)."""
    tau, v_th, keep_h = neuron.tau, neuron.v_th, neuron.record
    if not (torch.is_grad_enabled() and current.requires_grad):
        return _run_forward(current, tau, v_th, keep_h)
    name = neuron.path.name
    if name == "rate":
        out = _FusedRate.apply(current, tau, v_th, keep_h)
        return out if keep_h else (out, None)
    if name == "bptt":
        return _FusedBPTT.apply(current, tau, v_th, neuron.surrogate.gamma)
    return _FusedSurrogate.apply(current, tau, v_th, neuron.path_rule())


def _reference(current: Tensor, neuron: SpikingNeuron) -> tuple[Tensor, Tensor]:
    """Per-step loop under autograd: the executable specification of every gradient path."""
    name, T = neuron.path.name, current.shape[0]
    rate = name == "rate"
    slope = rate_slope(current.mean(0), neuron.tau, neuron.v_th).detach() if rate else None
    needs = torch.is_grad_enabled() and current.requires_grad  # ASSG statistics move only when a gradient is due
    rule = neuron.path_rule() if name not in ("bptt", "rate") and needs else None
    u = torch.zeros_like(current[0])
    spikes, hs = [], []
    for t in range(T):
        h = neuron.charge(u, current[t])
        if rate:  # exact spikes forward, gradient d s[t] / d I[t] = slope, nothing through time
            h = h.detach()
            s = neuron.fire(h).detach() + slope * (current[t] - current[t].detach())
            u = neuron.reset(h, s.detach())
        else:
            x = h - neuron.v_th
            s = neuron.fire(h) if rule is None else _SurrogateSpike.apply(x, rule.step_fn(t, x, T))
            u = neuron.reset(h, s)
        spikes.append(s)
        hs.append(h)
    return torch.stack(spikes), torch.stack(hs)


# -------------------------------------------------------------------------------------------- neuron
class SpikingNeuron(nn.Module):
    """Multi-step LIF neuron (``stable=False``) or stable DLIF neuron (``stable=True``), docs/method.md §2.

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
        self.path: GradPath = BPTT  # the gradient path (robench.snn.paths); set with grad_mode(model, path)
        self.path_state: AssgState | None = None  # ASSG statistics, kept across the forwards of one attack
        self.engine = "fused"
        self.input_scale = 1.0  # fixed factor on the input current (1/tau of a SpikingJelly LIF with decay_input)
        self.detach_reset = False  # no gradient through the reset's spike (SpikingJelly detach_reset, snnTorch)
        self.record = False  # when True, the charge current of the last call is kept in `recorded`
        self.recorded: Tensor | None = None
        self.last_membrane: Tensor | None = None  # pre-spike membrane h, kept only when `record` is True

    @property
    def grad_mode(self) -> GradMode | GradPath:
        """The gradient path: a :class:`GradMode` for ``bptt`` and ``rate``, else the :class:`GradPath`."""
        return GradMode(self.path.name) if self.path.name in GradMode.__members__ else self.path

    @grad_mode.setter
    def grad_mode(self, mode: str | GradMode | GradPath) -> None:
        self.path = mode if isinstance(mode, GradPath) else GradPath.from_key(getattr(mode, "value", mode))

    def path_rule(self) -> Surrogate | AssgState:
        """The backward rule of a surrogate path: a :class:`Surrogate`, or this layer's ASSG statistics."""
        if self.path.name == "assg":
            A = self.path.value("A")
            if self.path_state is None or self.path_state.A != A:
                self.path_state = AssgState(A)
            return self.path_state
        return _surrogate_of(self.path)

    # charge / fire / reset: one step each (the reference engine and the docs use them)
    def charge(self, u: Tensor, current_t: Tensor) -> Tensor:
        return self.tau * u + current_t

    def fire(self, h: Tensor) -> Tensor:
        return self.surrogate(h - self.v_th)

    def reset(self, h: Tensor, s: Tensor) -> Tensor:
        return h * (1 - (s.detach() if self.detach_reset else s))

    def input_current(self, x: Tensor) -> Tensor:
        """The charge current ``p[t] * I[t]`` (times ``input_scale`` when set) that enters the membrane:
        ``[T, B, ...]``."""
        if x.shape[0] != self.T:
            raise BadSpec(f"neuron expects {self.T} time steps, got input with {x.shape[0]}")
        if self.input_scale != 1.0:
            x = x * self.input_scale
        if self.gains is None:
            return x
        return x * self.gains.view(-1, *([1] * (x.dim() - 1)))

    def forward(self, x: Tensor) -> Tensor:
        current = self.input_current(x)
        spikes, h = (_reference if self.engine == "reference" or not self.fusable() else _fused)(current, self)
        if self.record:
            self.recorded, self.last_membrane = current, h
        return spikes

    def fusable(self) -> bool:
        """Whether the fused engine computes this neuron: its own triangle surrogate and the reset's gradient.
        A neuron given another surrogate (e.g. a SpikingJelly model's own) or ``detach_reset`` runs the
        reference loop, whose ``fire`` and ``reset`` use them, forward and backward."""
        return type(self.surrogate) is Triangle and not self.detach_reset

    def extra_repr(self) -> str:
        kind = "DLIF" if self.stable else "LIF"
        return f"{kind}, T={self.T}, tau={self.tau}, v_th={self.v_th}, grad={self.path.key}"


@functools.lru_cache(maxsize=64)
def _surrogate_of(path: GradPath) -> Surrogate:
    return SURROGATES.get(path.name)(*(v for _, v in path.params))


def spiking_neurons(model: nn.Module) -> list[SpikingNeuron]:
    """All spiking neurons of a model, in forward (registration) order."""
    return [m for m in model.modules() if isinstance(m, SpikingNeuron)]


def set_engine(model: nn.Module, engine: str) -> None:
    """Select the ``fused`` or ``reference`` engine on every neuron of ``model``."""
    if engine not in ENGINES:
        raise BadSpec(f"unknown engine {engine!r}; choose from: {', '.join(ENGINES)}")
    for n in spiking_neurons(model):
        n.engine = engine
