"""What the foreign-model adapter (:mod:`robench.zoo.adapters`) knows of each framework: its neuron classes, the
exact mappings of those neurons onto robench's :class:`~robench.snn.neurons.SpikingNeuron`, its state reset, and
which spike function robench may swap (:data:`FRAMEWORKS`: ``spikingjelly``, ``snntorch``, ``torch``).

A mapper returns the equivalent robench neuron, keeping the model's own surrogate, or a line saying why the
neuron does not map (it is then kept as it is).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import BadSpec
from ..registry import Registry
from ..snn.neurons import SpikingNeuron
from ..snn.swap import SwappedSpike

Mapper = Callable[[nn.Module, int, str], "SpikingNeuron | str"]  # (module, T, step mode) -> neuron, or why not


@dataclass(frozen=True)
class Framework:
    """What the adapter knows of one framework: its neuron classes, the exact mappings, and its state reset."""

    name: str
    package: str  # the import name, for its version and the install hint
    neuron_types: Callable[[], tuple[type, ...]]
    mappers: Callable[[], dict[type, Mapper]]
    reset: Callable[[nn.Module], None]
    surrogate_attr: str = ""  # the neuron attribute holding its spike function ("" = none robench can swap)
    swap_why: Callable[[nn.Module], str | None] = lambda m: None  # why that function cannot be swapped, or None

    def require(self) -> None:
        try:
            importlib.import_module(self.package)
        except ImportError:
            raise BadSpec(f"framework {self.name!r} needs the {self.package} package: "
                          f"pip install 'robench[{self.name}]'") from None

    def version(self) -> str:
        self.require()
        if self.package == "torch":
            return torch.__version__
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(self.package)
        except PackageNotFoundError:
            return getattr(importlib.import_module(self.package), "__version__", "unknown")


FRAMEWORKS: Registry[Framework] = Registry("framework")


class ForeignSurrogate(nn.Module):
    """A framework's spike function ``fn(x) -> spikes`` (Heaviside forward, its surrogate backward) as a module,
    e.g. snnTorch's ``spike_grad``; a replaced neuron fires through it, forward and backward."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return getattr(self.fn, "__qualname__", type(self.fn).__name__)


class FoldedNeuron(nn.Module):
    """A robench neuron inside a single-step network run once on its T steps folded into the batch.

    Shape: ``[T * B, ...]`` (step-major) in and out; the neuron sees ``[T, B, ...]``.
    """

    def __init__(self, neuron: SpikingNeuron) -> None:
        super().__init__()
        self.neuron = neuron

    def forward(self, x: Tensor) -> Tensor:
        s = self.neuron(x.reshape(self.neuron.T, -1, *x.shape[1:]))  # [T*B, ...] -> [T, B, ...]
        return s.flatten(0, 1)  # [T, B, ...] -> [T*B, ...]


# --------------------------------------------------------------------------------------------- SpikingJelly
def _sj_neuron(m: nn.Module, T: int, step_mode: str, tau: float, scale: float) -> SpikingNeuron | str:
    """A robench neuron with ``h = tau * u + scale * x``, SpikingJelly's threshold, surrogate and detach_reset."""
    if m.v_reset is None:
        return "soft reset (v_reset=None) does not map onto robench's hard reset"
    if float(m.v_reset) != 0.0:
        return f"hard reset to v_reset={m.v_reset}, robench resets to 0"
    if not getattr(m.surrogate_function, "spiking", True):
        return "its surrogate_function has spiking=False (no spikes forward)"
    if getattr(m, "_neuron_precision", None) is not None:
        return "a reduced neuron precision is set"
    if getattr(m, "step_mode", "s") != {"multi": "m", "single": "s"}[step_mode]:
        return f"step_mode {m.step_mode!r} in a {step_mode}-step model"
    n = SpikingNeuron(T, tau=tau, v_th=float(m.v_threshold))
    n.input_scale, n.detach_reset = scale, bool(m.detach_reset)
    n.surrogate = m.surrogate_function  # the model's own surrogate: bptt uses it
    return n


def _sj_if(m: nn.Module, T: int, step_mode: str) -> SpikingNeuron | str:
    return _sj_neuron(m, T, step_mode, 1.0, 1.0)  # h = v + x


def _sj_lif(m: nn.Module, T: int, step_mode: str) -> SpikingNeuron | str:
    # decay_input: h = v + (x - v) / tau = (1 - 1/tau) v + x / tau; else h = v - v / tau + x = (1 - 1/tau) v + x
    k = 1.0 / float(m.tau)
    return _sj_neuron(m, T, step_mode, 1.0 - k, k if m.decay_input else 1.0)


def _sj_types() -> tuple[type, ...]:
    from spikingjelly.activation_based import neuron

    return tuple(getattr(neuron, n) for n in ("BaseNode", "SimpleBaseNode") if hasattr(neuron, n))


def _sj_swap_why(m: nn.Module) -> str | None:
    fn = getattr(m, "surrogate_function", None)
    if not callable(fn):
        return "it has no surrogate_function"
    if not getattr(fn, "spiking", True):
        return "its surrogate_function has spiking=False (no spikes forward)"
    if getattr(m, "_neuron_precision", None) is not None:
        return "a reduced neuron precision is set (SpikingJelly then needs its own surrogate types)"
    return None


def _sj_mappers() -> dict[type, Mapper]:
    from spikingjelly.activation_based import neuron

    return {neuron.IFNode: _sj_if, neuron.LIFNode: _sj_lif}


def _reset_modules(net: nn.Module) -> None:
    """``m.reset()`` on every module that has one (SpikingJelly's ``reset_net``), robench neurons excepted."""
    for m in net.modules():
        ours = isinstance(m, (SpikingNeuron, FoldedNeuron, ForeignSurrogate, SwappedSpike))
        if not ours and callable(getattr(m, "reset", None)):
            m.reset()


# ------------------------------------------------------------------------------------------------- snnTorch
def _snntorch_leaky(m: nn.Module, T: int, step_mode: str) -> SpikingNeuron | str:
    """snnTorch ``Leaky`` (reset_delay): ``mem[t] = beta * (1 - H(mem[t-1] - thr)) * mem[t-1] + x[t]``, the reset
    detached, ``spk[t] = spike_grad(mem[t] - thr)``: robench's ``h`` with ``tau = beta`` and ``detach_reset``."""
    checks = [
        (m.reset_mechanism == "zero", f"reset_mechanism={m.reset_mechanism!r} (only 'zero' maps)"),
        (m.init_hidden and not m.output, "it passes its membrane in and out (use init_hidden=True, output=False)"),
        (not m.inhibition and not m.state_quant, "inhibition or state_quant is set"),
        (getattr(m, "reset_delay", True), "reset_delay=False"),
        (m.beta.numel() == 1 and m.threshold.numel() == 1, "beta or threshold is per neuron"),
        (float(m.graded_spikes_factor) == 1.0, "graded spikes"),
        (step_mode == "single", "snnTorch neurons are single-step"),
    ]
    for ok, why in checks:
        if not ok:
            return why
    n = SpikingNeuron(T, tau=float(m.beta.detach().clamp(0, 1)), v_th=float(m.threshold))
    n.detach_reset = True
    n.surrogate = ForeignSurrogate(m.spike_grad)
    return n


def _snntorch_swap_why(m: nn.Module) -> str | None:
    if getattr(m, "surrogate_disable", False):
        return "surrogate_disable=True"
    return None if callable(getattr(m, "spike_grad", None)) else "it has no spike_grad"


def _snntorch_types() -> tuple[type, ...]:
    from snntorch._neurons.neurons import SpikingNeuron as SnnNeuron

    return (SnnNeuron,)


def _snntorch_mappers() -> dict[type, Mapper]:
    import snntorch

    return {snntorch.Leaky: _snntorch_leaky}


def _snntorch_reset(net: nn.Module) -> None:
    types = _snntorch_types()
    for m in net.modules():  # every module, nested ones included
        if isinstance(m, types) and callable(getattr(m, "reset_mem", None)):
            m.reset_mem()


FRAMEWORKS.add("spikingjelly", Framework("spikingjelly", "spikingjelly", _sj_types, _sj_mappers, _reset_modules,
                                          "surrogate_function", _sj_swap_why))
FRAMEWORKS.add("snntorch", Framework("snntorch", "snntorch", _snntorch_types, _snntorch_mappers, _snntorch_reset,
                                     "spike_grad", _snntorch_swap_why))
FRAMEWORKS.add("torch", Framework("torch", "torch", tuple, dict, _reset_modules))
