"""Gradient-path keys: the torch-free syntax shared by the path registry and the results schema.

A gradient path is written ``name`` or ``name:param=value`` (docs/evaluation.md §2), e.g. ``bptt``, ``rate``,
``triangle:w=0.5``, ``sigmoid:k=4``, ``arctan:a=2``, ``rectangle:w=1``, ``assg:A=0.425``. Its canonical *key*
(what the results' ``grad`` column stores) writes every parameter out, numbers in their shortest exact form
(``repr`` of the float, ``4.0`` as ``4``), so the same path always has the same key. This module imports
nothing from torch, so :mod:`robench.results` can check keys without loading it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# name -> its parameter names (in key order): the syntax of every registered path (robench.snn.paths checks
# at import that its registry and this table agree)
PATH_PARAMS: dict[str, tuple[str, ...]] = {
    "bptt": (), "rate": (), "triangle": ("w",), "sigmoid": ("k",), "arctan": ("a",), "rectangle": ("w",),
    "assg": ("A",),
}
_NUM = r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?"


def _key_re() -> re.Pattern[str]:
    alts = [re.escape(n) + "".join((":" if i == 0 else ";") + re.escape(p) + "=" + _NUM for i, p in enumerate(ps))
            for n, ps in PATH_PARAMS.items()]
    return re.compile("(?:" + "|".join(alts) + ")")


KEY_RE = _key_re()


def format_value(v: float) -> str:
    """The canonical text of a parameter value: ``repr`` of the float without a trailing ``.0`` (``4``,
    ``0.5``, ``1e-05``)."""
    s = repr(float(v))
    return s[:-2] if s.endswith(".0") else s


def is_path_key(s: object) -> bool:
    """True when ``s`` is the canonical key of a known gradient path (syntax and canonical numbers only)."""
    if not isinstance(s, str) or not KEY_RE.fullmatch(s):
        return False
    _, _, rest = s.partition(":")
    values = [kv.split("=", 1)[1] for kv in rest.split(";")] if rest else []
    return all(math.isfinite(float(v)) and format_value(float(v)) == v for v in values)


@dataclass(frozen=True)
class GradPath:
    """One gradient path: a registered ``name`` and its parameters ``((param, value), ...)`` in key order.

    Examples:
        >>> GradPath("triangle", (("w", 0.5),)).key
        'triangle:w=0.5'
    """

    name: str
    params: tuple[tuple[str, float], ...] = ()

    @property
    def key(self) -> str:
        """The canonical string stored in the results' ``grad`` column."""
        if not self.params:
            return self.name
        return self.name + ":" + ";".join(f"{p}={format_value(v)}" for p, v in self.params)

    def value(self, param: str) -> float:
        return dict(self.params)[param]

    # What kind of path this is: what the neurons, the surrogate swap and the foreign adapter decide by (the name
    # alone fixes it; the parameters only tune the backward).
    @property
    def is_own(self) -> bool:
        """``bptt``: the model's own training surrogate (a foreign neuron's own spike function, nothing swapped)."""
        return self.name == "bptt"

    @property
    def is_rate(self) -> bool:
        """``rate``: the rate gradient, derived from robench's LIF dynamics (so it needs robench's neuron)."""
        return self.name == "rate"

    @property
    def is_adaptive(self) -> bool:
        """``assg``: a surrogate that adapts to running statistics of the membrane, one state per time step."""
        return self.name == "assg"

    @property
    def swaps_surrogate(self) -> bool:
        """BPTT through a surrogate chosen at attack time (every registered path but ``bptt`` and ``rate``): what a
        foreign neuron's spike-function slot can be given (:mod:`robench.snn.swap`)."""
        return self.name in PATH_PARAMS and not (self.is_own or self.is_rate)

    def __str__(self) -> str:
        return self.key

    @classmethod
    def from_key(cls, key: str) -> GradPath:
        """The path of a canonical key (as :func:`is_path_key` accepts); ``ValueError`` otherwise."""
        if not is_path_key(key):
            raise ValueError(f"not a gradient path key: {key!r}")
        name, _, rest = key.partition(":")
        params = tuple((kv.split("=")[0], float(kv.split("=")[1])) for kv in rest.split(";")) if rest else ()
        return cls(name, params)


BPTT, RATE = GradPath("bptt"), GradPath("rate")
