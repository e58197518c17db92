"""Adapters that make a SpikingJelly, snnTorch or plain PyTorch model honour robench's model contract.

The contract (docs/evaluation.md, "The model contract"): ``model(x)`` takes images ``[B, C, H, W]`` in
``[0, 1]`` and returns logits ``[B, K]``; no state survives between calls; eval is deterministic.
:class:`ForeignModel` wraps the user's network without editing it:

- state is reset inside every forward (before and after), by walking every module, nested ones included (snnTorch
  1.0's ``utils.reset`` misses neurons inside containers);
- direct encoding: the image is repeated over T; a ``multi``-step network gets ``[T, B, C, H, W]`` and returns
  ``[T, B, K]``, a ``single``-step one gets ``[B, C, H, W]`` once per step and returns ``[B, K]``; the output is
  averaged over T;
- every foreign neuron whose dynamics are robench's :class:`SpikingNeuron` (SpikingJelly ``IFNode``, ``LIFNode``
  with hard reset to 0; snnTorch ``Leaky`` with ``reset_mechanism="zero"``) is replaced by an equivalent robench
  neuron that keeps the model's own surrogate, so every gradient path applies (``bptt`` with that surrogate,
  ``rate``, ...); a single-step network whose neurons were all replaced runs once on the T steps folded into the
  batch;
- neurons that do not map stay as they are, in train mode while the rest (batch norm, dropout) is in eval, and a
  later ``model.eval()`` cannot undo it: SpikingJelly neurons that use a plain step function in eval mode (the
  eval-mode trap: every input gradient zero) keep their surrogate. ``bptt`` runs through their own surrogate; a
  surrogate path (``sigmoid:k=16``, ``arctan:a=8``, ``triangle:w=..``, ``rectangle:w=..``, ``assg``) swaps the
  framework's spike function (SpikingJelly ``surrogate_function``, snnTorch ``spike_grad``) for one with the same
  forward spikes and robench's backward for the attack (:mod:`robench.snn.swap`), and puts it back after. ``rate``
  needs the neuron's dynamics (its slope is derived from robench's LIF equations), so it does not apply to them;
  :meth:`ForeignModel.check_grad_mode` refuses it, and any path a neuron cannot take, in one line saying why.
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
from ..snn.pathkeys import GradPath
from ..snn.paths import PATHS
from ..snn.swap import SwappedSpike, swapped

STEP_MODES = ("multi", "single")
KEPT_PATHS = ("bptt",)  # the gradient paths that apply to every foreign neuron kept as it is
SWAP_PATHS = tuple(n for n in PATHS.names() if n not in ("bptt", "rate"))  # ... when its surrogate can be swapped
RATE_WHY = "rate needs the neuron's dynamics (its slope comes from robench's LIF equations)"
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


# ------------------------------------------------------------------------------------------------- adapter
def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def _plan(net: nn.Module, fw: Framework, T: int, step_mode: str) -> tuple[dict, list[tuple[str, str, str]]]:
    """Which neurons are replaced (``{name: SpikingNeuron}``) and which are kept (``(name, class, why)``)."""
    types, mappers = fw.neuron_types(), fw.mappers()
    mapped, kept = {}, []
    for name, m in net.named_modules():
        if not name or not isinstance(m, types):
            continue
        mapper = mappers.get(type(m))  # the exact class: a subclass (e.g. a LIF variant) may change the dynamics
        got = mapper(m, T, step_mode) if mapper else "no exact mapping onto robench's neuron is known"
        if isinstance(got, str):
            kept.append((name, type(m).__name__, got))
        else:
            mapped[name] = got
    if step_mode == "single" and kept and mapped:  # a looped single-step net cannot hold multi-step neurons
        why = f"kept with {kept[0][0]!r}: a single-step model is replaced whole or not at all"
        kept += [(n, type(net.get_submodule(n)).__name__, why) for n in mapped]
        mapped = {}
    return mapped, kept


class OutputError(BadSpec):
    """What the network returns is not one tensor of logits as asked (a tuple or dict without ``--output``)."""


def output_of(out: object, output: str = "") -> Tensor:
    """The logits in what the network returned: the tensor itself (``output`` ""), element ``int(output)`` of a
    tuple or list (snnTorch's ``(spk, mem)``: ``"1"``), or key ``output`` of a dict. An ambiguous or missing
    output raises one line naming ``--output``."""
    if isinstance(out, (tuple, list, dict)):
        kind = type(out).__name__
        shapes = {k: list(v.shape) if isinstance(v, Tensor) else type(v).__name__
                  for k, v in (out.items() if isinstance(out, dict) else enumerate(out))}
        if not output:
            pick = (f"--output KEY ({', '.join(map(str, shapes))})" if isinstance(out, dict)
                    else f"--output INDEX (0..{len(out) - 1})")
            parts = "; ".join(f"{k}: {v}" for k, v in shapes.items())
            raise OutputError(f"the model returns a {kind} of {len(out)} ({parts}), not one tensor of logits; pick "
                              f"the logits with {pick}")
        key: object = output if isinstance(out, dict) else _index(output, kind)
        if key not in shapes:
            raise OutputError(f"--output {output!r}: the model returns a {kind} with "
                          f"{'keys' if isinstance(out, dict) else 'indices'} {', '.join(map(str, shapes))}")
        out = out[key]  # type: ignore[index]
    elif output:
        raise OutputError(f"--output {output!r}: the model returns a {type(out).__name__}, not a tuple or dict; "
                      "leave --output out")
    if not isinstance(out, Tensor):
        raise OutputError(f"the model returned a {type(out).__name__}; it must return a tensor of logits or spikes")
    return out


def _index(output: str, kind: str) -> int:
    try:
        return int(output)
    except ValueError:
        raise OutputError(f"--output {output!r}: the model returns a {kind}; give an index such as --output 1"
                          ) from None


class ForeignModel(nn.Module):
    """A user's network under robench's model contract (see the module docstring).

    Arguments:
        net: the user's network, weights loaded (its neurons are replaced in place when ``map_neurons``).
        framework: ``spikingjelly``, ``snntorch`` or ``torch``.
        T: time steps; step_mode: ``multi`` or ``single``; map_neurons: replace the neurons that map exactly
        (False keeps every neuron: the original model, for comparison).
        output: which part of a tuple (index) or dict (key) the network returns holds the logits ("" = it
        returns one tensor); see :func:`output_of`.
        stochastic: the network's forward samples (declared with encoding ``poisson``; evaluated with averaged
        draws).

    Shape:
        input ``[B, C, H, W]`` in ``[0, 1]``; output logits ``[B, K]`` (the network's output averaged over T).

    Examples:
        >>> model = ForeignModel(build_vgg(), "spikingjelly", T=4, step_mode="multi")
        >>> with grad_mode(model, "rate"):
        ...     logits = model(x)
    """

    def __init__(self, net: nn.Module, framework: str, T: int, step_mode: str, map_neurons: bool = True,
                 output: str = "", stochastic: bool = False) -> None:
        super().__init__()
        self.stochastic = bool(stochastic)  # declared at import: the network samples (robench.snn.encoding)
        if step_mode not in STEP_MODES:
            raise BadSpec(f"step mode {step_mode!r}; choose from: {', '.join(STEP_MODES)}")
        self.fw = FRAMEWORKS.get(framework)
        self.fw.require()
        self.T, self.step_mode, self.net, self.output = int(T), step_mode, net, str(output)
        mapped, self.kept = _plan(net, self.fw, self.T, step_mode)
        if not map_neurons:
            self.kept += [(n, type(net.get_submodule(n)).__name__, "not mapped (the original model)") for n in mapped]
            mapped = {}
        for name, neuron in mapped.items():
            _set_module(net, name, FoldedNeuron(neuron) if step_mode == "single" else neuron)
        self.mapped = list(mapped)
        self.folded = step_mode == "single" and bool(mapped)
        # why the spike function of each kept neuron cannot be swapped at attack time (None: it can)
        self.swap_why = {n: (self.fw.swap_why(net.get_submodule(n)) if self.fw.surrogate_attr
                             else f"{self.fw.name} exposes no surrogate") for n, _, _ in self.kept}
        self.eval()

    def train(self, mode: bool = True) -> ForeignModel:
        """Batch norm and dropout follow ``mode``; kept foreign neurons stay in train mode (their surrogate)."""
        super().train(mode)
        for name, _, _ in self.kept:
            self.net.get_submodule(name).train(True)
        return self

    def reset_state(self) -> None:
        self.fw.reset(self.net)

    def surrogate_slots(self) -> list[tuple[nn.Module, str]]:
        """The kept neurons whose spike function a surrogate path swaps (:mod:`robench.snn.swap`)."""
        return [(self.net.get_submodule(n), self.fw.surrogate_attr) for n, _, _ in self.kept
                if self.swap_why[n] is None]

    def forward(self, x: Tensor) -> Tensor:
        self.reset_state()
        swaps = swapped(self)
        for f in swaps:
            f.begin_forward()
        try:
            out = self._run(x)
        finally:
            self.reset_state()  # no state, and no autograd graph, survives the call
        unused = [f for f in swaps if f.calls == 0]
        if unused and torch.is_grad_enabled() and x.requires_grad:  # the swap must be what the neuron fired through
            raise BadSpec(f"gradient path {unused[0].path.key!r}: a {self.fw.name} neuron never called its swapped "
                          f"{self.fw.surrogate_attr}, so the path cannot apply to it; paths for it: "
                          f"{', '.join(KEPT_PATHS)}")
        return out.mean(0)  # [T, B, K] -> [B, K]

    def _run(self, x: Tensor) -> Tensor:
        T, B = self.T, x.shape[0]
        seq = x.unsqueeze(0).expand(T, *x.shape)  # direct encoding: [B, C, H, W] -> [T, B, C, H, W]
        if self.step_mode == "multi":
            out = output_of(self.net(seq), self.output)
        elif self.folded:  # [T*B, C, H, W] -> [T*B, K] -> [T, B, K]
            out = output_of(self.net(seq.reshape(T * B, *x.shape[1:])), self.output)
            out = out.reshape(T, B, *out.shape[1:])
        else:
            out = torch.stack([output_of(self.net(seq[t]), self.output) for t in range(T)])  # T x [B, K] -> [T, B, K]
        if out.dim() != 3 or out.shape[:2] != (T, B):
            raise BadSpec(f"the {self.step_mode}-step model returned shape {list(out.shape)} per forward; "
                          f"expected [T={T}, B={B}, K] over the T steps")
        return out

    def paths_for(self, name: str) -> list[str]:
        """The gradient paths (registry names) that apply to kept neuron ``name``."""
        return [*KEPT_PATHS, *(SWAP_PATHS if self.swap_why[name] is None else ())]

    def why_not(self, name: str, why: str, path: str) -> str | None:
        """Why path ``path`` (a registry name) does not apply to kept neuron ``name`` (kept because ``why``)."""
        if path in self.paths_for(name):
            return None
        if path == "rate":
            return f"{RATE_WHY}, and it is not mapped onto robench's neuron: {why}"
        return f"its spike function cannot be swapped: {self.swap_why[name]}; and it is not mapped: {why}"

    def check_grad_mode(self, mode: str) -> None:
        """One line (BadSpec) when gradient path ``mode`` (a canonical key) does not apply to every spiking neuron
        of the model, saying why and which paths do."""
        if mode in KEPT_PATHS:
            return
        path = GradPath.from_key(mode).name
        for name, cls, why in self.kept:
            reason = self.why_not(name, why, path)
            if reason:
                raise BadSpec(f"gradient path {mode!r} does not apply to {self.fw.name} {cls} {name!r} ({reason}); "
                              f"paths for it: {', '.join(self.paths_for(name))}")
        if not self.kept and not any(isinstance(m, SpikingNeuron) for m in self.net.modules()):
            raise BadSpec(f"gradient path {mode!r} needs spiking neurons; this {self.fw.name} model has none robench "
                          f"knows; paths for it: {', '.join(KEPT_PATHS)}")

    def applicable_paths(self) -> list[str]:
        """The gradient paths (registry names) that apply to the whole model."""
        if not self.kept and not self.mapped:
            return list(KEPT_PATHS)
        return [p for p in PATHS.names() if all(p in self.paths_for(n) for n, _, _ in self.kept)]

    def describe(self) -> str:
        """One line: which neurons were replaced, which kept, and which gradient paths apply (and why not)."""
        out = f"{len(self.mapped)} neuron layer(s) mapped onto robench's"
        if self.kept:
            kept = "; ".join(f"{n} ({c}: {w})" for n, c, w in self.kept[:3]) + (" ..." if len(self.kept) > 3 else "")
            out += f", {len(self.kept)} kept with their own dynamics: {kept}"
        elif not self.mapped:
            return out + "; no spiking neuron robench knows: gradient paths: bptt only (the model's own gradient)"
        paths = self.applicable_paths()
        out += f"; gradient paths: {', '.join(paths)}"
        if any(self.swap_why[n] is None for n, _, _ in self.kept):
            out += f" (a kept neuron's {self.fw.surrogate_attr} swapped at attack time)"
        reasons = []
        for p in (p for p in PATHS.names() if p not in paths):
            name, _, why = next(k for k in self.kept if self.why_not(k[0], k[2], p))
            reasons.append(f"not {p}: " + (RATE_WHY if p == "rate" else f"{name!r}: {self.swap_why[name]}"))
        return out + "".join(f"; {r}" for r in dict.fromkeys(reasons))
