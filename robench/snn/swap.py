"""Attack-time surrogates for spiking neurons that robench does not simulate itself (docs/evaluation.md §2).

A SpikingJelly or snnTorch neuron that does not map onto robench's :class:`~robench.snn.neurons.SpikingNeuron`
keeps its own dynamics, but its framework exposes the spike function it fires through: SpikingJelly's
``surrogate_function`` (a module with ``alpha``), snnTorch's ``spike_grad`` (a function). For a surrogate path
(``sigmoid:k=16``, ``arctan:a=8``, ``triangle:w=0.5``, ``rectangle:w=0.5``, ``assg``), :func:`swap_surrogates` puts a
:class:`SwappedSpike` in that slot: the same forward spikes (the framework's own function, run on the detached
input, so even its ``x > 0`` versus ``x >= 0`` is kept) and robench's backward, ``grad * derivative(x)`` with
``x = v - v_th`` as the framework passes it. :func:`restore_surrogates` puts the originals back.

A model offers its slots through a ``surrogate_slots()`` method returning ``[(module, attribute), ...]`` (the
adapter of :mod:`robench.zoo.adapters` does); :func:`robench.snn.paths.grad_mode` swaps and restores them around
the block, even when the block raises.

ASSG keeps running statistics per call of the spike function within one forward (call ``k`` of every forward
shares them), since such a neuron is called once per time step (twice in snnTorch, whose reset calls it again on
the detached membrane): the statistics of every call are those of one time step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .pathkeys import BPTT, GradPath
from .surrogates import SURROGATES, AssgState

Slot = tuple[nn.Module, str]  # (the framework's neuron, the attribute holding its spike function)
Saved = list[tuple[nn.Module, str, Any]]  # what restore_surrogates puts back


class _SwappedFn(torch.autograd.Function):
    """Forward: the framework's own spikes of ``x``; backward: ``grad * derivative(x)``."""

    @staticmethod
    def forward(ctx, x: Tensor, spike: Callable[[Tensor], Tensor],  # type: ignore[override]
                derivative: Callable[[Tensor], Tensor]) -> Tensor:
        ctx.save_for_backward(x)
        ctx.derivative = derivative
        return spike(x).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * ctx.derivative(x), None, None


class SwappedSpike(nn.Module):
    """A framework's spike function ``original`` with the backward of surrogate path ``path``.

    Arguments:
        original: the framework's spike function (SpikingJelly ``surrogate_function``, snnTorch ``spike_grad``).
        path: a surrogate path (``triangle``, ``sigmoid``, ``arctan``, ``rectangle``) or ``assg``.

    Shape: any; ``x = v - v_th``, spikes of the same shape out.
    """

    def __init__(self, original: Callable[[Tensor], Tensor], path: GradPath) -> None:
        super().__init__()
        if not path.swaps_surrogate:
            raise ValueError(f"path {path.key!r} has no surrogate to swap in")
        self.original, self.path = original, path
        self.spiking = True  # what SpikingJelly reads off a surrogate_function
        self.alpha = path.params[0][1] if path.params else None
        self.rule = None if path.is_adaptive else SURROGATES.get(path.name)(path.params[0][1])
        self.assg: list[AssgState] = []  # ASSG statistics per call within a forward
        self.calls = 0  # calls since the last begin_forward()

    def begin_forward(self) -> None:
        self.calls = 0

    def reset_statistics(self) -> None:
        """Forget the ASSG statistics (a new attack or restart)."""
        self.assg = []

    def _derivative(self, x: Tensor) -> Callable[[Tensor], Tensor]:
        if self.rule is not None:
            return self.rule.derivative
        k = self.calls - 1
        while len(self.assg) <= k:
            self.assg.append(AssgState(self.path.value("A")))
        return self.assg[k].step_fn(0, x, 1)  # one call = one step of its own statistics

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        if not (torch.is_grad_enabled() and x.requires_grad):
            return self.original(x)  # no gradient due: the framework's own function, statistics untouched
        return _SwappedFn.apply(x, self._spikes, self._derivative(x))

    def _spikes(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.original(x.detach())

    def extra_repr(self) -> str:
        return f"{self.path.key}, forward {getattr(self.original, '__qualname__', type(self.original).__name__)}"


def surrogate_slots(model: nn.Module) -> list[Slot]:
    """Every slot offered by a module of ``model`` (through its ``surrogate_slots()`` method)."""
    out: list[Slot] = []
    for m in model.modules():
        fn = getattr(m, "surrogate_slots", None)
        if callable(fn):
            out += fn()
    return out


def _put(module: nn.Module, attr: str, value: Any) -> None:
    """Set ``module.attr`` whether it is a child module or a plain attribute (snnTorch keeps a function)."""
    if hasattr(module, attr):
        delattr(module, attr)
    setattr(module, attr, value)


def original_of(fn: Any) -> Any:
    return fn.original if isinstance(fn, SwappedSpike) else fn


def swap_surrogates(model: nn.Module, path: GradPath, saved: Saved) -> None:
    """Give every slot of ``model`` path ``path``: a :class:`SwappedSpike` for a surrogate path, the framework's
    own function for ``bptt``. What each slot held is appended to ``saved`` before it changes, so that
    :func:`restore_surrogates` undoes a swap that stopped half-way."""
    for module, attr in surrogate_slots(model):
        current = getattr(module, attr)
        saved.append((module, attr, current))
        original = original_of(current)
        _put(module, attr, original if path.is_own else SwappedSpike(original, path))


def restore_surrogates(saved: Saved) -> None:
    """Put back what :func:`swap_surrogates` recorded, last first."""
    for module, attr, value in reversed(saved):
        _put(module, attr, value)
    saved.clear()


def swapped(model: nn.Module) -> list[SwappedSpike]:
    """The :class:`SwappedSpike` now in ``model``'s slots."""
    return [f for m, a in surrogate_slots(model) if isinstance(f := getattr(m, a), SwappedSpike)]


def slot_paths(model: nn.Module) -> set[GradPath]:
    """The path each slot of ``model`` now gives (``bptt`` for the framework's own function)."""
    return {f.path if isinstance(f, SwappedSpike) else BPTT
            for m, a in surrogate_slots(model) for f in [getattr(m, a)]}
