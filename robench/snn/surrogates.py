"""Surrogate derivatives of the Heaviside spike, chosen at attack time (docs/evaluation.md §2), and the adaptive
ASSG statistics.

Each surrogate is a pure backward function of ``x = h - v_th`` with one shape parameter, and a small frozen
class holding that parameter (registered in :data:`SURROGATES`)::

    triangle   max(0, w - |x|) / w^2                 (w = gamma = 1: the training surrogate, docs/method.md §2)
    sigmoid    k s(kx) (1 - s(kx))                   (s the logistic function)
    arctan     (a / 2) / (1 + (pi a x / 2)^2)
    rectangle  1[|x| < w / 2] / w

Each integrates to 1 over x, and each class also has the primitive (the smooth step it differentiates), used
by the float64 finite-difference tests. :class:`AssgState` holds the per-element running statistics of the
adaptive arctan surrogate (ASSG, docs/evaluation.md §2). :class:`Triangle` is a neuron's own training surrogate
(an ``nn.Module``), and the backward rule of the ``bptt`` path.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..errors import BadSpec
from ..registry import Registry


# ---------------------------------------------------------------------------------- pure backward functions
def triangle_derivative(x: Tensor, w: float = 1.0) -> Tensor:
    """``max(0, w - |x|) / w^2``: the triangle ("ZIF") surrogate of half-width ``w``."""
    return (w - x.abs()).clamp_min(0) / (w * w)


def sigmoid_derivative(x: Tensor, k: float = 4.0) -> Tensor:
    """``k s(kx) (1 - s(kx))``: the derivative of the logistic step of sharpness ``k``."""
    s = torch.sigmoid(k * x)
    return (1 - s).mul_(s).mul_(k)


def arctan_derivative(x: Tensor, a: float | Tensor = 2.0) -> Tensor:
    """``(a / 2) / (1 + (pi a x / 2)^2)``; ``a`` may be a tensor broadcast against ``x`` (ASSG)."""
    return (a / 2) / (1 + (math.pi / 2 * a * x) ** 2)


def rectangle_derivative(x: Tensor, w: float = 1.0) -> Tensor:
    """``1[|x| < w / 2] / w``: a straight-through window of width ``w``."""
    return (x.abs() < w / 2).to(x.dtype).div_(w)


def triangle_backward(grad: Tensor, x: Tensor, w: float = 1.0) -> Tensor:
    """``grad * max(0, w - |x|) / w^2`` (the training surrogate with ``w = gamma``)."""
    return grad * (w - x.abs()).clamp_min(0) / (w * w)


def sigmoid_backward(grad: Tensor, x: Tensor, k: float = 4.0) -> Tensor:
    return grad * sigmoid_derivative(x, k)


def arctan_backward(grad: Tensor, x: Tensor, a: float | Tensor = 2.0) -> Tensor:
    return grad * arctan_derivative(x, a)


def rectangle_backward(grad: Tensor, x: Tensor, w: float = 1.0) -> Tensor:
    return grad * rectangle_derivative(x, w)


# ------------------------------------------------------------------------------------- training surrogate
class SurrogateSpike(torch.autograd.Function):
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
    """Heaviside forward, triangle surrogate backward with half-width ``gamma`` (docs/method.md §2): a neuron's
    training surrogate, and (with the hooks of :class:`Surrogate`) the rule of the ``bptt`` path."""

    def __init__(self, gamma: float = 1.0) -> None:
        super().__init__()
        self.gamma = float(gamma)

    def forward(self, x: Tensor) -> Tensor:
        return SurrogateSpike.apply(x, self.step_fn(0, x, 1))

    def prepare(self, h: Tensor, v_th: float) -> tuple[Tensor, ...]:
        return ()

    def derivative_at(self, t: int, x: Tensor, saved: tuple[Tensor, ...]) -> Tensor:
        """``max(0, gamma - |x|) / gamma^2`` over the scratch ``x``, times ``1 / gamma^2`` (skipped at 1)."""
        sg = x.abs_().neg_().add_(self.gamma).clamp_min_(0)
        return sg if self.gamma == 1.0 else sg.mul_(1.0 / (self.gamma * self.gamma))

    def step_fn(self, t: int, x_t: Tensor, T: int) -> Callable[[Tensor], Tensor]:
        return functools.partial(triangle_derivative, w=self.gamma)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"


# ------------------------------------------------------------------------------------------ classes
SURROGATES: Registry[type[Surrogate]] = Registry("surrogate")


@dataclass(frozen=True)
class Surrogate:
    """Base of the registered surrogates: ``param`` names the one shape parameter, ``value`` holds it.

    Subclasses set ``name``, ``param`` and the pure function ``fn(x, value)``, the derivative. A value that is not a
    finite number > 0 raises :class:`BadSpec`.

    Shape: ``derivative(x)`` and ``primitive(x)`` keep the shape of ``x`` (any).
    """

    value: float
    name: ClassVar[str] = ""
    param: ClassVar[str] = ""
    fn: ClassVar[Callable[..., Tensor]]

    def __post_init__(self) -> None:
        v = self.value
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise BadSpec(f"{self.name} {self.param}={v!r}: must be a finite number > 0")
        object.__setattr__(self, "value", float(v))

    def derivative(self, x: Tensor) -> Tensor:
        return type(self).fn(x, self.value)

    def backward(self, grad: Tensor, x: Tensor) -> Tensor:
        return grad * self.derivative(x)

    def derivative_(self, x: Tensor) -> Tensor:
        """``derivative(x)`` written over ``x`` (a scratch buffer): no temporaries in the fused backward."""
        return x.copy_(self.derivative(x))

    def derivative_at(self, t: int, x: Tensor, saved: tuple[Tensor, ...]) -> Tensor:
        """The fused engine's hook: derivative at step ``t``, over the scratch ``x`` (a fixed surrogate ignores
        ``t`` and ``saved``)."""
        return self.derivative_(x)

    def prepare(self, h: Tensor, v_th: float) -> tuple[Tensor, ...]:
        """The fused engine's hook after the forward (membrane ``h``): nothing to save for a fixed surrogate."""
        return ()

    def step_fn(self, t: int, x_t: Tensor, T: int) -> Callable[[Tensor], Tensor]:
        """The reference engine's hook: the derivative used at step ``t``."""
        return self.derivative

    def primitive(self, x: Tensor) -> Tensor:
        raise NotImplementedError


def _register(cls: type[Surrogate]) -> type[Surrogate]:
    return SURROGATES.add(cls.name, cls)


@_register
@dataclass(frozen=True)
class TriangleSurrogate(Surrogate):
    name: ClassVar[str] = "triangle"
    param: ClassVar[str] = "w"
    fn = staticmethod(triangle_derivative)

    def derivative_(self, x: Tensor) -> Tensor:
        return x.abs_().neg_().add_(self.value).clamp_min_(0).div_(self.value * self.value)

    def primitive(self, x: Tensor) -> Tensor:
        w, z = self.value, x.clamp(-self.value, self.value)
        return 0.5 + z / w - z * z.abs() / (2 * w * w)  # piecewise quadratic, 0 below -w, 1 above w


@_register
@dataclass(frozen=True)
class SigmoidSurrogate(Surrogate):
    name: ClassVar[str] = "sigmoid"
    param: ClassVar[str] = "k"
    fn = staticmethod(sigmoid_derivative)

    def derivative_(self, x: Tensor) -> Tensor:
        s = x.mul_(self.value).sigmoid_()
        return s.addcmul_(s, s, value=-1).mul_(self.value)  # k (s - s^2)

    def primitive(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.value * x)


@_register
@dataclass(frozen=True)
class ArctanSurrogate(Surrogate):
    name: ClassVar[str] = "arctan"
    param: ClassVar[str] = "a"
    fn = staticmethod(arctan_derivative)

    def derivative_(self, x: Tensor) -> Tensor:
        a = self.value
        return x.mul_(math.pi / 2 * a).square_().add_(1).reciprocal_().mul_(a / 2)

    def primitive(self, x: Tensor) -> Tensor:
        return 0.5 + torch.atan(math.pi / 2 * self.value * x) / math.pi


@_register
@dataclass(frozen=True)
class RectangleSurrogate(Surrogate):
    name: ClassVar[str] = "rectangle"
    param: ClassVar[str] = "w"
    fn = staticmethod(rectangle_derivative)

    def derivative_(self, x: Tensor) -> Tensor:
        return torch.lt(x.abs_(), self.value / 2, out=x).div_(self.value)

    def primitive(self, x: Tensor) -> Tensor:
        return ((x + self.value / 2) / self.value).clamp(0, 1)


# --------------------------------------------------------------------------------------------- ASSG
ASSG_A_RANGE = (0.35, 0.49)
ASSG_BETA, ASSG_R, ASSG_EPS = 0.9, 1.5, 1e-4


@dataclass(eq=False)
class AssgState:
    """Adaptive arctan surrogate (ASSG) of one spiking layer: running statistics of ``d = |h - v_th|``.

    Per layer, time step, sample and neuron, over the gradient-needing forwards of one attack run::

        M <- b M + (1 - b) d,   then   D <- b D + (1 - b) |d - M|       (b = 0.9; M starts at 1, D at 0)
        a = c / (M + r D + 1e-4),   c = (2 / pi) tan(pi A),  r = 1.5    (arctan sharpness per element)

    so a share ``2A`` of the arctan surrogate's mass lies within the element's typical distance to threshold.
    The statistics restart when the input shape, dtype or device changes; ``reset()`` restarts them.

    Shape: ``M``, ``D``: ``[T, B, ...]``, the layer's membrane shape, detached.
    """

    A: float = 0.425
    M: Tensor | None = field(default=None, repr=False)
    D: Tensor | None = field(default=None, repr=False)
    forwards: int = 0  # forwards folded into the statistics since the last reset

    def __post_init__(self) -> None:
        lo, hi = ASSG_A_RANGE
        if isinstance(self.A, bool) or not isinstance(self.A, (int, float)) or not lo <= self.A <= hi:
            raise BadSpec(f"assg A={self.A!r}: must be in [{lo}, {hi}]")
        self.c = 2 / math.pi * math.tan(math.pi * self.A)

    def reset(self) -> None:
        self.M = self.D = None
        self.forwards = 0

    def begin(self, like: Tensor) -> None:
        """Start fresh statistics unless they already match ``like`` ``[T, B, ...]`` (shape, dtype, device)."""
        M = self.M
        if M is None or M.shape != like.shape or M.dtype != like.dtype or M.device != like.device:
            self.M, self.D = torch.ones_like(like), torch.zeros_like(like)
            self.forwards = 0

    def _fold(self, M: Tensor, D: Tensor, x: Tensor) -> Tensor:
        """Update ``M``, ``D`` in place with ``d = |x|``; return the sharpness ``a`` (new tensor)."""
        d = x.abs()
        M.mul_(ASSG_BETA).add_(d, alpha=1 - ASSG_BETA)
        D.mul_(ASSG_BETA).add_(d.sub_(M).abs_(), alpha=1 - ASSG_BETA)
        return torch.add(M, D, alpha=ASSG_R).add_(ASSG_EPS).reciprocal_().mul_(self.c)

    def prepare(self, h: Tensor, v_th: float) -> tuple[Tensor, ...]:
        """Fused engine: fold ``h - v_th`` ``[T, B, ...]`` (all steps) in; save the sharpness ``[T, B, ...]``."""
        self.begin(h)
        self.forwards += 1
        return (self._fold(self.M, self.D, torch.sub(h.detach(), v_th)),)

    def derivative_at(self, t: int, x: Tensor, saved: tuple[Tensor, ...]) -> Tensor:
        """The arctan derivative at step ``t`` with the saved per-element sharpness, over the scratch ``x``."""
        a = saved[0][t]
        return x.mul_(a).mul_(math.pi / 2).square_().add_(1).reciprocal_().mul_(a).mul_(0.5)

    def step_fn(self, t: int, x_t: Tensor, T: int) -> Callable[[Tensor], Tensor]:
        """Reference engine: fold step ``t`` in (statistics of ``[T, *x_t.shape]``); its derivative."""
        if t == 0:
            self.begin(x_t.detach().expand(T, *x_t.shape))
            self.forwards += 1
        a_t = self._fold(self.M[t], self.D[t], x_t.detach())
        return lambda x: arctan_derivative(x, a_t)
