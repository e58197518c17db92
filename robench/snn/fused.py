"""The fused engine of :mod:`robench.snn.neurons`: all T steps of a spiking layer in one autograd function, and the
one BPTT backward recursion that every surrogate path shares.

The forward is the exact neuron (charge, fire, hard reset; see :mod:`robench.snn.neurons`), computed in place on
preallocated buffers, bit-identical to the reference loop. Under autograd a gradient path is one *rule*, resolved
from its :class:`~robench.snn.pathkeys.GradPath` once per forward by the neuron:

- :data:`RATE` (the ``rate`` path): the backward multiplies the gradient at every step by the rate slope of the
  mean current (:func:`rate_slope`), no temporal recursion; saves only that slope;
- any other rule is BPTT through a surrogate (the neuron's own training ``Triangle`` for ``bptt``, a
  :class:`~robench.snn.surrogates.Surrogate`, or a layer's :class:`~robench.snn.surrogates.AssgState`): the same
  recursion (:func:`bptt_backward`) with the rule's derivative at each step. A rule offers three hooks:
  ``prepare(h, v_th)`` after the forward (what it saves), ``derivative_at(t, x, saved)`` (its derivative over the
  scratch ``x = h[t] - v_th``), and ``step_fn(t, x_t, T)`` for the reference engine.

``set_compile(True)`` (or ROBENCH_COMPILE=1) swaps in ``torch.compile``d kernels: the forward, and the backward of
the training triangle (``bptt``); off by default.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from .surrogates import Triangle


class Rule(Protocol):
    """A BPTT rule: the surrogate derivative the backward recursion uses at each step (see the module text)."""

    def prepare(self, h: Tensor, v_th: float) -> tuple[Tensor, ...]: ...

    def derivative_at(self, t: int, x: Tensor, saved: tuple[Tensor, ...]) -> Tensor: ...

    def step_fn(self, t: int, x_t: Tensor, T: int) -> Callable[[Tensor], Tensor]: ...


class Rate:
    """The ``rate`` path's rule: exact spikes forward, the rate slope of the mean current backward."""

    def __repr__(self) -> str:
        return "Rate()"


RATE = Rate()


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


# -------------------------------------------------------------------------------------------- kernels
# The kernels write into preallocated [T, ...] buffers through ``out=`` and in-place ops, with a few one-step
# scratch tensors; every op is a plain torch op, so the same code runs on CPU and CUDA. The forward is
# bit-identical to the reference: ``addcmul(I, h, keep, value=tau)`` computes ``(tau * h) * keep + I`` and
# ``keep`` is 0 or 1, exactly the reference's ``tau * (h * (1 - s)) + I``.
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


def bptt_backward(h: Tensor, grad_s: Tensor, tau: float, v_th: float, rule: Rule,
                  saved: tuple[Tensor, ...] = ()) -> Tensor:
    """Exact BPTT of the reference loop, reset path included, from the saved pre-spike membrane, with the
    surrogate derivative ``sg = rule.derivative_at(t, h[t] - v_th, saved)`` (written over a scratch tensor).

    With ``keep = 1 - s`` and ``g[t+1]`` the gradient w.r.t. ``I[t+1]``:
    ``g[t] = sg * (grad_s[t] - tau * g[t+1] * h[t]) + tau * g[t+1] * keep[t]``, since
    ``du[t]/dh[t] = keep[t] - h[t] * sg[t]`` and ``dh[t+1]/du[t] = tau``. Shape: ``[T, ...]`` in and out.
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
    """Functional twin of :func:`bptt_backward` with the training triangle of half-width ``gamma``: what
    ``torch.compile`` fuses."""
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


def run_forward(current: Tensor, tau: float, v_th: float, keep_h: bool) -> tuple[Tensor, Tensor | None]:
    """The exact forward without autograd (compiled when switched on): spikes and, with ``keep_h``, ``h``."""
    if not compile_enabled():
        return _forward_loop(current, tau, v_th, keep_h)
    flat, order = _flat(current)
    spikes, h = _COMPILED["forward"](flat, tau, v_th, keep_h)
    return _unflat(spikes, current.shape, order), (None if h is None else _unflat(h, current.shape, order))


def _run_backward(h: Tensor, grad_s: Tensor, tau: float, v_th: float, rule: Rule,
                  saved: tuple[Tensor, ...]) -> Tensor:
    """:func:`bptt_backward`, or its compiled twin for the training triangle when compiling is on."""
    if not (type(rule) is Triangle and compile_enabled()):
        return bptt_backward(h, grad_s, tau, v_th, rule, saved)
    flat_h, order = _flat(h)
    grad_in = _COMPILED["backward"](flat_h, _flat(grad_s, order)[0], tau, v_th, rule.gamma)
    return _unflat(grad_in, h.shape, order)


# ------------------------------------------------------------------------------------ autograd functions
class _FusedBPTT(torch.autograd.Function):
    """BPTT over all T steps in one function with any surrogate ``rule`` (whose ``prepare`` runs here, once per
    forward: ASSG folds its statistics in); saves the pre-spike membrane ``h`` (in the input's dtype) and what
    the rule needs (ASSG: the sharpness ``[T, ...]``)."""

    @staticmethod
    def forward(ctx, current: Tensor, tau: float, v_th: float, rule: Rule):  # type: ignore[override]
        spikes, h = run_forward(current, tau, v_th, True)
        saved = rule.prepare(h, v_th)
        ctx.save_for_backward(h, *saved)
        ctx.cfg = (tau, v_th, rule)
        ctx.mark_non_differentiable(h)
        ctx.set_materialize_grads(False)  # no zero-filled [T, ...] gradient for the membrane output
        return spikes, h

    @staticmethod
    def backward(ctx, grad_s: Tensor | None, _grad_h: Tensor | None):  # type: ignore[override]
        if grad_s is None:
            return None, None, None, None
        h, *saved = ctx.saved_tensors
        return _run_backward(h, grad_s, *ctx.cfg, tuple(saved)), None, None, None


class _FusedRate(torch.autograd.Function):
    """Exact forward; backward multiplies the gradient at every step by the rate slope of the mean current.

    Saves only the slope ``[...]`` (T times smaller than the input); ``h`` is returned only when asked for.
    """

    @staticmethod
    def forward(ctx, current: Tensor, tau: float, v_th: float, keep_h: bool):  # type: ignore[override]
        spikes, h = run_forward(current, tau, v_th, keep_h)
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


def fused(current: Tensor, tau: float, v_th: float, keep_h: bool, rule: Rule | Rate
          ) -> tuple[Tensor, Tensor | None]:
    """Spikes ``[T, ...]`` and (BPTT always, rate with ``keep_h``) the membrane ``h``, with ``rule``'s gradient;
    no autograd at all when no gradient is needed (inference, clean predictions)."""
    if not (torch.is_grad_enabled() and current.requires_grad):
        return run_forward(current, tau, v_th, keep_h)
    if isinstance(rule, Rate):
        out = _FusedRate.apply(current, tau, v_th, keep_h)
        return out if keep_h else (out, None)
    return _FusedBPTT.apply(current, tau, v_th, rule)
