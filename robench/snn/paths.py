"""Gradient paths (docs/evaluation.md §2): how the input gradient crosses every spiking layer, switchable on any
robench model without rebuilding it. The forward pass is always the exact SNN.

Registered paths (:data:`PATHS`), written ``name`` or ``name:param=value``:

- ``bptt``: BPTT with the model's own training surrogate (triangle, half-width ``gamma``);
- ``rate``: the rate-gradient approximation of docs/method.md §5;
- ``triangle:w=W``, ``sigmoid:k=K``, ``arctan:a=A``, ``rectangle:w=W``: BPTT with another surrogate at attack
  time (:mod:`robench.snn.surrogates`), its width or sharpness required;
- ``assg[:A=0.425]``: the adaptive arctan surrogate (ASSG), A in [0.35, 0.49].

:func:`parse_paths` reads a comma-separated list; ``both`` = ``bptt,rate``; ``sweep`` = the fixed width sweep
:data:`PRESETS` ``["sweep"]``; one parameter may list values, ``triangle:w=0.5|1|2`` (quote it in a shell: ``|``
is a pipe). Every path has one canonical key (``GradPath.key``), what the results' ``grad`` column stores.

The path is held by every spiking neuron and set with a context manager on the model, separate from
train/eval, because attack libraries call ``model.eval()`` inside every attack::

    with grad_mode(model, "sigmoid:k=4"):
        x_adv = attack(x, y)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from torch import nn

from ..errors import BadSpec
from ..registry import Registry
from .neurons import GradMode, as_mode, rate_slope, spiking_neurons
from .pathkeys import GradPath
from .surrogates import ASSG_A_RANGE, SURROGATES, AssgState
from .swap import restore_surrogates, slot_paths, swap_surrogates, swapped

__all__ = ["GradMode", "GradPath", "PATHS", "PRESETS", "grad_mode", "set_grad_mode", "get_grad_mode",
           "parse_grad_mode", "parse_path", "parse_paths", "reset_path_state", "rate_slope", "path_applies",
           "applicable"]


@dataclass(frozen=True)
class PathKind:
    """A registered path: its parameter (name and default, None = required), what builds its backward rule from
    a value (and so checks it), and the values it accepts, in words."""

    name: str
    param: str | None = None
    default: float | None = None
    help: str = ""
    make: Callable[[float], object] | None = None
    accepts: str = "a finite number > 0"

    def check(self, value: float) -> None:
        """Raise :class:`BadSpec` for a value the path does not accept."""
        if self.make is not None:
            self.make(value)

    @property
    def syntax(self) -> str:
        if self.param is None:
            return self.name
        if self.default is not None:
            return f"{self.name}[:{self.param}={self.default}]"
        return f"{self.name}:{self.param}={self.param.upper()}"


PATHS: Registry[PathKind] = Registry("gradient path")
PATHS.add("bptt", PathKind("bptt", help="the model's own training surrogate"))
PATHS.add("rate", PathKind("rate", help="rate gradient (docs/method.md §5)"))
for _name in SURROGATES:
    _cls = SURROGATES.get(_name)
    PATHS.add(_name, PathKind(_name, _cls.param, help=f"{_name} surrogate", make=_cls))
PATHS.add("assg", PathKind("assg", "A", 0.425, help=f"adaptive arctan, A in {list(ASSG_A_RANGE)}", make=AssgState,
                           accepts=f"in [{ASSG_A_RANGE[0]}, {ASSG_A_RANGE[1]}]"))

PRESETS: dict[str, tuple[str, ...]] = {
    "both": ("bptt", "rate"),
    # two widths either side of the training surrogate for three shapes (triangle w=1, sigmoid k=4, arctan a=2
    # have the same peak): narrower and wider
    "sweep": ("triangle:w=0.5", "triangle:w=2", "sigmoid:k=2", "sigmoid:k=8", "arctan:a=1", "arctan:a=4"),
}


def choices() -> str:
    return ", ".join([*PATHS.names()[:2], *PRESETS, *(PATHS.get(n).syntax for n in PATHS.names()[2:])])


def _number(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def check_supported(model: nn.Module, path: GradPath) -> None:
    """Raise a one-line BadSpec when ``path`` does not apply to ``model``. A model holding neurons of its own (an
    adapted SpikingJelly or snnTorch model) says so through its ``check_grad_mode(path)`` method; a model with no
    spiking neuron robench can see into (a plain CNN, a plain-torch SNN) takes ``bptt`` only, its own gradient:
    any other path would silently be that same gradient under another name."""
    check = getattr(model, "check_grad_mode", None)
    if callable(check):
        check(path)
        return
    slots = getattr(model, "surrogate_slots", None)
    if not path.is_own and not spiking_neurons(model) and not (callable(slots) and slots()):
        raise BadSpec(f"gradient path {path.key!r} needs spiking neurons robench can see into; this "
                      f"{type(model).__name__} has none, so only bptt (its own gradient) applies; paths for it: bptt")


def path_applies(model: nn.Module, path: str | GradPath) -> str | None:
    """None when gradient path ``path`` applies to every spiking neuron of ``model``, else the reason (one line)."""
    try:
        check_supported(model, _as_path(path))
    except BadSpec as e:
        return str(e)
    return None


def applicable(model: nn.Module, paths: Sequence[str | GradPath]) -> list[GradPath]:
    """The paths of ``paths`` that apply to ``model``, in order."""
    return [p for p in map(_as_path, paths) if path_applies(model, p) is None]


def _expand(item: str, label: str) -> list[GradPath]:
    """One comma-free item -> its paths (several when a value list ``v1|v2`` is given)."""
    bad = f"{label} {item!r}; choose from: {choices()}"
    name, sep, rest = item.strip().partition(":")
    if name not in PATHS:
        raise BadSpec(bad)
    kind = PATHS.get(name)
    if kind.param is None:
        if sep:
            raise BadSpec(f"{label} {item!r}: {name} takes no parameter; choose from: {choices()}")
        return [GradPath(name)]
    if not sep:
        if kind.default is None:
            raise BadSpec(f"{label} {item!r}: {name} needs {kind.param}=VALUE ({kind.syntax})")
        return [GradPath(name, ((kind.param, kind.default),))]
    param, eq, values = rest.partition("=")
    if param != kind.param or not eq:
        raise BadSpec(f"{label} {item!r}: {name} takes {kind.param}=VALUE ({kind.syntax})")
    out = []
    for text in values.split("|"):
        v = _number(text)
        if v is None:
            raise BadSpec(f"{label} {item!r}: {kind.param}={text!r} is not a finite number ({kind.syntax})")
        try:
            kind.check(v)
        except BadSpec:
            raise BadSpec(f"{label} {item!r}: {kind.param} must be {kind.accepts} ({kind.syntax})") from None
        out.append(GradPath(name, ((kind.param, v),)))
    return out


def parse_paths(paths: str | GradPath | Sequence[str | GradPath], label: str = "unknown gradient path"
                ) -> list[GradPath]:
    """Comma-separated paths (or a list of them) -> the distinct paths, in order; presets expanded.

    ``label`` starts every error message (the CLI passes ``--grad``). Unknown names, a missing, misspelt or
    out-of-range parameter raise :class:`BadSpec` naming the value and listing the choices.

    Examples:
        >>> [p.key for p in parse_paths("both,triangle:w=0.50|2")]
        ['bptt', 'rate', 'triangle:w=0.5', 'triangle:w=2']
    """
    items = [paths] if isinstance(paths, (str, GradPath)) else list(paths)
    out: list[GradPath] = []
    for item in items:
        if isinstance(item, GradPath):
            out.append(_checked(item, label))  # a hand-made GradPath must be valid too
            continue
        for part in str(item).split(","):
            part = part.strip()
            out += _expand_preset(part, label) if part in PRESETS else _expand(part, label)
    if not out:
        raise BadSpec(f"{label} {paths!r}; choose from: {choices()}")
    return list(dict.fromkeys(out))


@functools.lru_cache(maxsize=256)
def _checked(path: GradPath, label: str) -> GradPath:
    """``path`` when its key parses back to it (checked once per path: attacks set it at every batch)."""
    (out,) = _expand(path.key, label)
    return out


def _expand_preset(name: str, label: str) -> list[GradPath]:
    return [p for item in PRESETS[name] for p in _expand(item, label)]


def parse_path(path: str | GradPath, label: str = "unknown gradient mode") -> GradPath:
    """Exactly one path (no list, no preset)."""
    out = parse_paths(path, label)
    if len(out) != 1 or (isinstance(path, str) and path.strip() in PRESETS):
        raise BadSpec(f"{label} {path!r}: one path expected; choose from: {choices()}")
    return out[0]


def parse_grad_mode(mode: str | GradMode | GradPath) -> GradMode | GradPath:
    """One path: a :class:`GradMode` for ``bptt`` and ``rate`` (as before paths existed), else its
    :class:`GradPath`."""
    return mode if isinstance(mode, GradMode) else as_mode(parse_path(mode))


def _as_path(mode: str | GradMode | GradPath) -> GradPath:
    """A path given as text is parsed; one given as a :class:`GradPath` is only checked (once per path)."""
    if isinstance(mode, GradPath):
        return _checked(mode, "unknown gradient mode")
    return parse_path(mode.value if isinstance(mode, GradMode) else mode)


def set_grad_mode(model: nn.Module, mode: str | GradMode | GradPath) -> None:
    """Set the gradient path on every spiking neuron of ``model``, and swap the surrogate of every foreign neuron
    that offers it (:mod:`robench.snn.swap`; ``bptt`` puts the framework's own back). A model without neurons takes
    ``bptt`` only (its own gradient); any other path is refused (:func:`check_supported`)."""
    path = _as_path(mode)
    check_supported(model, path)
    swap_surrogates(model, path, [])
    for n in spiking_neurons(model):
        n.path = path


def get_grad_mode(model: nn.Module) -> GradMode | GradPath | None:
    """The path shared by every neuron, swapped foreign ones included (a :class:`GradMode` for bptt and rate), or
    None when they differ."""
    paths = {n.path for n in spiking_neurons(model)} | slot_paths(model)
    if len(paths) != 1:
        return None
    return as_mode(paths.pop())


def reset_path_state(model: nn.Module) -> None:
    """Forget every neuron's path state (ASSG statistics): attacks call it at each restart."""
    for n in spiking_neurons(model):
        if n.path_state is not None:
            n.path_state.reset()
    for f in swapped(model):
        f.reset_statistics()


@contextmanager
def grad_mode(model: nn.Module, mode: str | GradMode | GradPath) -> Iterator[nn.Module]:
    """Use gradient path ``mode`` on every neuron of ``model`` inside the block; restore each neuron's path
    after. A foreign neuron that robench does not simulate gets the path's surrogate swapped into its framework's
    slot (:mod:`robench.snn.swap`), and its own surrogate back on exit, even when the block raises. Path state
    (ASSG statistics) starts fresh on entry and is dropped on exit."""
    path = _as_path(mode)
    check_supported(model, path)
    neurons = spiking_neurons(model)
    saved = [n.path for n in neurons]
    surrogates: list = []
    try:
        swap_surrogates(model, path, surrogates)
        for n in neurons:
            n.path = path
        reset_path_state(model)
        yield model
    finally:
        reset_path_state(model)  # frees ASSG's [T, B, ...] statistics: inert outside the block
        restore_surrogates(surrogates)
        for n, p in zip(neurons, saved, strict=True):
            n.path = p
