"""The per-model path probe and the choice of path for each stage (docs/protocol.md, "The probe").

The best surrogate family and sharpness differ from model to model, so a protocol may rank the gradient paths for
the model at hand before its stages run: a few iterations of one attack (the protocol's ``[probe]``) through every
listed path that applies to the model, on the first few dozen images. Each path's outcome is a results row of its
own (``params.stage = "probe"``), so a rerun reads the ranking back instead of probing again. The paths are ranked
by how many images each broke; ties keep the order of the protocol's list. A stage whose ``grad`` is ``probe:K``
runs through the K-th best.

A stage whose path does not apply to the model (a surrogate path on a network robench cannot see into) never runs
under that path's name: it runs through the strongest substitute that applies (the probe's best, else ``bptt``,
the model's own gradient), and its row says so (``params.path_requested``).

Examples:
    >>> ranking = rank({"bptt": 3, "rate": 5, "arctan:a=4": 5}, ["bptt", "rate", "arctan:a=4"])   # any keys
    >>> ranking
    ['rate', 'arctan:a=4', 'bptt']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from ..snn.pathkeys import BPTT, GradPath
from ..snn.paths import applicable, path_applies
from .stagelist import Stage

FALLBACK = BPTT  # the model's own gradient: applies to every model


def rank(broke: Mapping[GradPath, int], order: Sequence[GradPath]) -> list[GradPath]:
    """The probed paths, most images broken first; ties in the order of ``order``."""
    pos = {p: i for i, p in enumerate(order)}
    return sorted(broke, key=lambda p: (-broke[p], pos.get(p, len(pos))))


def probe_paths(model: nn.Module, paths: Sequence[GradPath]) -> list[GradPath]:
    """The probe's paths that apply to ``model`` (``bptt`` always does)."""
    return applicable(model, paths)


def resolve(stage: Stage, ranking: Sequence[GradPath], model: nn.Module
            ) -> tuple[GradPath | str, GradPath | str | None]:
    """The path a stage really runs through and, when it differs from what the stage names, the name it asked for.

    ``probe:K`` takes the K-th best path of ``ranking`` (the best when fewer paths applied); a path that does not
    apply to ``model`` takes the strongest substitute that does: the probe's best path, else ``bptt``.
    """
    if stage.grad == "none":
        return "none", None
    k = stage.probe_rank
    if k is not None:
        if not ranking:
            return FALLBACK, stage.grad
        return ranking[min(k, len(ranking)) - 1], stage.grad
    if path_applies(model, stage.grad) is None:
        return stage.grad, None
    return (ranking[0] if ranking else FALLBACK), stage.grad
