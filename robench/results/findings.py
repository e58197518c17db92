"""The one findings type: what a sanity check (:mod:`robench.results.checks`, :mod:`robench.eval.checks`) or a
report note found, as a name and a one-line message; its ``name`` is what a results row's ``flags`` column records.
Standard library only."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Finding:
    """A named sanity-check result: a one-line message and the offending cells (dicts of column values)."""

    name: str
    message: str
    cells: tuple[dict, ...] = field(default=(), compare=False)
    model: str = ""
    grads: tuple[str, ...] = ()

    def line(self) -> str:
        return f"{self.name}: {self.message}"
