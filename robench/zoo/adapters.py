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

What each framework's neurons map onto, and how its state is reset, is :mod:`robench.zoo.frameworks`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import BadSpec
from ..snn.neurons import SpikingNeuron
from ..snn.pathkeys import GradPath
from ..snn.paths import PATHS
from ..snn.swap import swapped
from .frameworks import FRAMEWORKS, FoldedNeuron, Framework  # noqa: F401  (FRAMEWORKS: importable from here too)

STEP_MODES = ("multi", "single")
# one path per registered name, its parameters left out: whether a kept neuron takes a path depends only on the
# path's kind (GradPath.is_own, .is_rate, .swaps_surrogate), which its name fixes
_KINDS = tuple(GradPath(n) for n in PATHS.names())
KEPT_PATHS = tuple(p.name for p in _KINDS if p.is_own)  # the gradient paths that apply to every foreign neuron kept
SWAP_PATHS = tuple(p.name for p in _KINDS if p.swaps_surrogate)  # ... when its surrogate can be swapped
RATE_WHY = "rate needs the neuron's dynamics (its slope comes from robench's LIF equations)"


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

    def takes(self, name: str, path: GradPath) -> bool:
        """Whether kept neuron ``name`` takes gradient path ``path``: its own surrogate always, a surrogate chosen at
        attack time when its spike function can be swapped."""
        return path.is_own or (path.swaps_surrogate and self.swap_why[name] is None)

    def why_not(self, name: str, why: str, path: GradPath) -> str | None:
        """Why gradient path ``path`` does not apply to kept neuron ``name`` (kept because ``why``)."""
        if self.takes(name, path):
            return None
        if path.is_rate:
            return f"{RATE_WHY}, and it is not mapped onto robench's neuron: {why}"
        return f"its spike function cannot be swapped: {self.swap_why[name]}; and it is not mapped: {why}"

    def check_grad_mode(self, path: GradPath) -> None:
        """One line (BadSpec) when gradient path ``path`` (parsed: :func:`robench.snn.paths.parse_path`) does not
        apply to every spiking neuron of the model, saying why and which paths do."""
        if path.is_own:
            return
        for name, cls, why in self.kept:
            reason = self.why_not(name, why, path)
            if reason:
                raise BadSpec(f"gradient path {path.key!r} does not apply to {self.fw.name} {cls} {name!r} ({reason}); "
                              f"paths for it: {', '.join(self.paths_for(name))}")
        if not self.kept and not any(isinstance(m, SpikingNeuron) for m in self.net.modules()):
            raise BadSpec(f"gradient path {path.key!r} needs spiking neurons; this {self.fw.name} model has none "
                          f"robench knows; paths for it: {', '.join(KEPT_PATHS)}")

    def applicable_paths(self) -> list[str]:
        """The gradient paths (registry names) that apply to the whole model."""
        if not self.kept and not self.mapped:
            return list(KEPT_PATHS)
        return [p.name for p in _KINDS if all(self.takes(n, p) for n, _, _ in self.kept)]

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
        for p in (p for p in _KINDS if p.name not in paths):
            name, _, why = next(k for k in self.kept if self.why_not(k[0], k[2], p))
            reasons.append(f"not {p.name}: " + (RATE_WHY if p.is_rate else f"{name!r}: {self.swap_why[name]}"))
        return out + "".join(f"; {r}" for r in dict.fromkeys(reasons))
