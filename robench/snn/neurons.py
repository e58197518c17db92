"""Spiking neurons over T time steps: LIF and the stable DLIF neuron (docs/method.md §2), their training surrogate,
and the engines behind every gradient path (``bptt``, ``rate`` of docs/method.md §5, the attack-time surrogates and
ASSG of docs/evaluation.md §2; the registry and syntax live in :mod:`robench.snn.paths`).

A neuron takes the multi-step input current ``I`` of shape ``[T, B, ...]`` and returns spikes of the same
shape. Per element, for t = 1..T, starting from rest (u = 0) on every call::

    charge:  h[t] = tau * u[t-1] + p[t] * I[t]          (p = 1 for LIF; learnable gains for DLIF)
    fire:    s[t] = H(h[t] - v_th)                      (H(0) = 1: a spike when h >= v_th)
    reset:   u[t] = h[t] * (1 - s[t])                   (hard reset to 0)

A neuron's gradient path (a :class:`~robench.snn.pathkeys.GradPath`) resolves, at each forward, to one backward
*rule*: the neuron's own training :class:`Triangle` (``bptt``), a :class:`~robench.snn.surrogates.Surrogate`, the
layer's :class:`~robench.snn.surrogates.AssgState`, or :data:`~robench.snn.fused.RATE`. Two engines compute the same
thing with that rule: ``fused`` (:mod:`robench.snn.fused`: one autograd function over all T steps, in place on
preallocated buffers, one BPTT recursion for every surrogate, no autograd at all when no gradient is needed) and
``reference`` (a plain per-step loop under autograd, kept as the executable specification the tests compare
against). The fused forward is bit-identical to the reference; ``set_compile(True)`` (or ROBENCH_COMPILE=1) swaps
in ``torch.compile``d kernels (forward, and the bptt backward), off by default.
"""

from __future__ import annotations

import functools
from enum import Enum

import torch
from torch import Tensor, nn

from ..errors import BadSpec
from . import fused as engine
from .fused import (  # noqa: F401 (the engine's public names, re-exported: their import path before the split)
    RATE,
    Rate,
    Rule,
    bptt_backward,
    compile_enabled,
    compiler_found,
    rate_slope,
    set_compile,
)
from .pathkeys import BPTT, GradPath
from .surrogates import SURROGATES, AssgState, Surrogate, SurrogateSpike, Triangle


class GradMode(str, Enum):
    """How the input gradient flows through spiking layers; the forward pass is the exact SNN in both."""

    bptt = "bptt"  # surrogate gradient through space and time
    rate = "rate"  # piecewise-linear rate slope of the mean current, no temporal recursion


ENGINES = ("fused", "reference")


def as_mode(path: GradPath) -> GradMode | GradPath:
    """``path`` as the public API has always shown it: a :class:`GradMode` for ``bptt`` and ``rate``, else itself."""
    return GradMode(path.name) if path.is_own or path.is_rate else path


# ------------------------------------------------------------------------------------------- engines
def _fused(current: Tensor, neuron: SpikingNeuron) -> tuple[Tensor, Tensor | None]:
    """The fused engine (:func:`robench.snn.fused.fused`) with the neuron's rule."""
    return engine.fused(current, neuron.tau, neuron.v_th, neuron.record, neuron.path_rule())


def _reference(current: Tensor, neuron: SpikingNeuron) -> tuple[Tensor, Tensor]:
    """Per-step loop under autograd: the executable specification of every gradient path."""
    rule, T = neuron.path_rule(), current.shape[0]
    rate = isinstance(rule, Rate)
    slope = rate_slope(current.mean(0), neuron.tau, neuron.v_th).detach() if rate else None
    needs = torch.is_grad_enabled() and current.requires_grad  # ASSG statistics move only when a gradient is due
    own = rule is neuron.surrogate or not needs  # bptt (or no gradient due): the neuron's own fire
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
            s = neuron.fire(h) if own else SurrogateSpike.apply(x, rule.step_fn(t, x, T))
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
        return as_mode(self.path)

    @grad_mode.setter
    def grad_mode(self, mode: str | GradMode | GradPath) -> None:
        self.path = mode if isinstance(mode, GradPath) else GradPath.from_key(getattr(mode, "value", mode))

    def path_rule(self) -> Rule | Rate:
        """The backward rule of this neuron's path: its own surrogate (``bptt``), :data:`RATE`, a
        :class:`Surrogate`, or this layer's ASSG statistics (kept while the path's A stays the same)."""
        path = self.path
        if path.is_own:
            return self.surrogate
        if path.is_rate:
            return RATE
        return self.assg_state(path) if path.is_adaptive else _surrogate_of(path)

    def assg_state(self, path: GradPath) -> AssgState:
        A = path.value("A")
        if self.path_state is None or self.path_state.A != A:
            self.path_state = AssgState(A)
        return self.path_state

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
