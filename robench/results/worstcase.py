"""The pointwise worst case over every stored cell, its breakdown by attack, and paired model comparisons.

Per model x dataset x n x budget, a sample is robust only if it stayed robust in *every* cell run on the same
images (all attacks, all gradient paths): the AND of their ``robust_mask`` columns (docs/evaluation.md §5). A budget is
eps in one threat model (:func:`budget_label`: the ``norm`` in ``params``, L-inf when absent, and for a stochastic
model the number of ``draws`` that decide a verdict): an L2 cell never joins an L-inf one. Left out: rows
with ``grad = worst`` (already ANDs), ``grad = none`` (gradient-free noise, whose eps is a sigma), and rows
without a mask (written before the column existed; :func:`mask_note` says how many). The breakdown orders the
cells by ``timestamp`` (the order they ran; ties keep file order) and counts the samples each one broke first;
clean errors come first, so ``clean errors + sum(added) + robust = n``. Every accuracy has a Wilson 95%
interval; two models on the same images compare pairwise (:func:`robench.results.stats.paired`). Pandas and numpy
only, never torch (the figure is :func:`robench.results.figures.plot_breakdown`).

Examples:
    >>> cases = worst_cases(df, labels)          # labels: one "attack (grad)" string per row of df
    >>> breakdown_frame(cases); compare(cases, "fmnist-vgg11-lif-gn", "fmnist-vgg11-stable-gn")
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ..attack_meta import NOISE
from ..errors import DataNotFound
from .findings import Finding
from .stats import Paired, paired, wilson
from .store import masks, resolve_legacy

SKIP_GRADS = ("worst",)  # ANDs of other cells already
# NOISE: attacks whose eps is a noise sigma, not an L-inf budget (square, also grad none, counts)
GROUP = ["model", "sha256", "config", "dataset", "n", "eps", "_budget"]  # one model identity, images, budget


def budget_label(params: object, eps_str: str) -> str:
    """How a budget is shown and grouped: ``eps_str`` for L-inf (``8/255``), prefixed by any other norm
    (``L2 1``), and suffixed by the draws of a stochastic model's verdicts (``8/255, 16 draws``)."""
    p = json.loads(params) if isinstance(params, str) else dict(params or {})
    norm, draws = p.get("norm", "Linf"), p.get("draws")
    text = eps_str if norm == "Linf" else f"{norm} {eps_str}"
    return f"{text}, {draws} draw{'s' if draws != 1 else ''}" if draws else text


@dataclass
class WorstCase:
    """The worst case of one model on one set of images at one eps: ``mask`` ``bool [n]`` (robust in every
    cell), the ``cells`` combined in run order and the samples each ``added`` (broke first)."""

    model: str
    dataset: str
    n: int
    eps: float
    eps_str: str
    clean_count: int
    mask: np.ndarray
    cells: list[str] = field(default_factory=list)
    added: list[int] = field(default_factory=list)

    @property
    def robust_count(self) -> int:
        return int(self.mask.sum())

    @property
    def acc(self) -> float:
        return self.robust_count / self.n

    def interval(self) -> tuple[float, float]:
        return wilson(self.robust_count, self.n)


def _eligible(df: pd.DataFrame) -> pd.DataFrame:
    return df[~df["grad"].isin(SKIP_GRADS) & ~df["attack"].isin(NOISE)]


def mask_note(df: pd.DataFrame) -> Finding | None:
    """One note when some cells that could join a worst case have no mask (older results files)."""
    k = int((_eligible(df)["robust_mask"].astype(str) == "").sum()) if "robust_mask" in df else len(_eligible(df))
    if not k:
        return None
    return Finding("no-mask", f"{k} cell(s) have no per-sample robust_mask (written before it existed): they are "
                "left out of the pointwise worst case; rerun them with --force to include them")


def worst_cases(df: pd.DataFrame, labels: pd.Series) -> list[WorstCase]:
    """The worst case of every model identity (id, weights sha256, config digest) x dataset x n x eps with at
    least one masked cell; ``labels`` names each row's attack and path (aligned with ``df``'s index). Rows written
    before the config column existed join the one config their weights were run with (:func:`resolve_legacy`)."""
    d = _eligible(resolve_legacy(df.assign(config="") if "config" not in df.columns else df))
    d = d[d["robust_mask"].astype(str) != ""] if "robust_mask" in d else d.iloc[0:0]
    if d.empty:
        return []
    d = d.assign(_label=labels.reindex(d.index), _pos=np.arange(len(d)),
                 _budget=[budget_label(p, e) for p, e in zip(d["params"], d["eps_str"], strict=True)])
    out = []
    for key, g in d.groupby(GROUP, sort=True):
        g = g.sort_values(["timestamp", "_pos"], kind="stable")
        model, dataset, n, eps = str(key[0]), str(key[3]), int(key[4]), float(key[5])
        clean_count = int(g["clean_count"].iloc[0])
        alive, added = np.ones(n, dtype=bool), []
        for m in masks(g):
            added.append(int((alive & ~m).sum()))
            alive &= m
        added[0] -= n - clean_count  # the first cell's losses include the clean errors
        out.append(WorstCase(model, dataset, n, eps, str(key[6]), clean_count,
                             alive, [f"{lab} ({gr})" for lab, gr in zip(g["_label"], g["grad"], strict=True)],
                             added))
    return out


@dataclass(frozen=True)
class Masked:
    """A gradient-free cell (``grad = none``, e.g. Square) that broke ``count`` images every white-box cell on the
    same images left robust: row ``index`` of the table, for model ``model`` at ``eps_str`` over ``n`` images."""

    index: object
    model: str
    attack: str
    eps_str: str
    n: int
    count: int
    white: int  # how many white-box cells it was compared with

    @property
    def name(self) -> str:
        return "gradient-masking"

    @property
    def message(self) -> str:
        return (f"{self.model}: {self.attack} (black box) broke {self.count} of {self.n} images at eps "
                f"{self.eps_str} that every one of the {self.white} white-box cell(s) on the same images missed: the "
                "gradients are partly masked there, and gradient attacks alone overstate robustness")

    def line(self) -> str:
        return f"{self.name}: {self.message}"


def masking(df: pd.DataFrame, labels: pd.Series | None = None) -> list[Masked]:
    """Every gradient-free cell that broke images every white-box cell missed, per model x images x eps: the
    per-sample AND of the white-box cells' masks against the black-box cell's (noise and rows without a mask are
    left out). ``labels`` names each row's attack (default: the ``attack`` column)."""
    d = _eligible(df)
    d = d[d["robust_mask"].astype(str) != ""] if "robust_mask" in d else d.iloc[0:0]
    d = d.assign(_budget=[budget_label(p, e) for p, e in zip(d["params"], d["eps_str"], strict=True)])
    out = []
    for key, g in d.groupby(GROUP, sort=True):
        black = g["grad"] == "none"
        if not black.any() or black.all():
            continue
        white = np.logical_and.reduce(masks(g[~black]))
        for i, m in zip(g.index[black], masks(g[black]), strict=True):
            k = int((white & ~m).sum())
            if k:
                r = g.loc[i]
                name = str(labels.loc[i]) if labels is not None else str(r["attack"])
                out.append(Masked(i, str(r["model"]), name, str(key[5]), int(r["n"]), k, int((~black).sum())))
    return out


def _pct(v: float) -> float:
    return round(100 * v, 1)


def breakdown_frame(cases: list[WorstCase]) -> pd.DataFrame:
    """One row per (worst case, cell in run order): the samples it broke first and what stays robust after it,
    in percent with Wilson 95% intervals."""
    rows = []
    for c in cases:
        left = c.clean_count
        steps = [("clean errors", c.n - c.clean_count)] + list(zip(c.cells, c.added, strict=True))
        for i, (cell, k) in enumerate(steps):
            left = left - k if i else left
            lo, hi = wilson(left, c.n)
            rows.append({"model": c.model, "dataset": c.dataset, "n": c.n, "eps": c.eps_str, "step": i,
                         "cell": cell, "added": k, "robust": _pct(left / c.n), "robust lo": _pct(lo),
                         "robust hi": _pct(hi)})
    return pd.DataFrame(rows)


def breakdown_markdown(frame: pd.DataFrame) -> str:
    """The breakdown as Markdown: ``robust`` shown as ``45.0 [38.2, 51.9]``."""
    shown = frame.drop(columns=["robust lo", "robust hi"]).astype(object)
    shown["robust"] = [f"{a:.1f} [{lo:.1f}, {hi:.1f}]" for a, lo, hi in
                       zip(frame["robust"], frame["robust lo"], frame["robust hi"], strict=True)]
    shown = shown.rename(columns={"added": "broke first", "robust": "robust after (%) [95% CI]"})
    head = "# Which attack and path broke each sample first\n\nCells in the order they ran; step 0 = clean errors.\n\n"
    return head + shown.to_markdown(index=False, disable_numparse=True) + "\n"


def compare(cases: list[WorstCase], a: str, b: str) -> list[tuple[WorstCase, WorstCase, Paired]]:
    """The paired comparison of models ``a`` and ``b``'s worst cases on every shared (dataset, n, eps)."""
    by = {(c.model, c.dataset, c.n, c.eps, c.eps_str): c for c in cases}
    have = sorted({c.model for c in cases})
    for m in (a, b):
        if m not in have:
            raise DataNotFound(f"--compare {m!r}: no masked cells for it; models with a worst case: "
                               f"{', '.join(have) or 'none'}")
    out = [(ca, by[(b, *k[1:])], paired(ca.mask, by[(b, *k[1:])].mask))
           for k, ca in by.items() if k[0] == a and (b, *k[1:]) in by]
    if not out:  # masks cover the first n images: models run on different n share the first min(n) of them
        for ca in (c for c in cases if c.model == a):
            cb = max((c for c in cases if c.model == b and c.dataset == ca.dataset and c.eps == ca.eps
                      and c.eps_str == ca.eps_str),
                     key=lambda c: c.n, default=None)
            if cb is not None:
                m = min(ca.n, cb.n)
                ca, cb = _first(ca, m), _first(cb, m)
                out.append((ca, cb, paired(ca.mask, cb.mask)))
    if not out:
        raise DataNotFound(f"--compare {a} {b}: the two models share no images (same dataset and eps)")
    return out


def _first(c: WorstCase, n: int) -> WorstCase:
    """``c`` restricted to its first ``n`` images (masks cover the first n test images, in order)."""
    if n == c.n:
        return c
    return replace(c, n=n, mask=c.mask[:n], clean_count=-1, cells=list(c.cells), added=[])


def compare_markdown(pairs: list[tuple[WorstCase, WorstCase, Paired]]) -> str:
    """Paired differences (percentage points, a - b) with 95% intervals, discordant counts and McNemar's p."""
    a, b = pairs[0][0].model, pairs[0][1].model
    lines = [f"# Paired comparison of the worst cases: {a} (A) vs {b} (B)", "",
             "| dataset | n | eps | A (%) | B (%) | A - B (pt) [95% CI] | only A | only B | McNemar p |",
             "|:--|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for ca, cb, p in pairs:
        ia, ib = ca.interval(), cb.interval()
        lines.append(f"| {ca.dataset} | {ca.n} | {ca.eps_str} | {_ci(ca.acc, *ia)} | {_ci(cb.acc, *ib)} | "
                     f"{100 * p.diff:+.1f} [{100 * p.lo:+.1f}, {100 * p.hi:+.1f}] | {p.only_a} | {p.only_b} | "
                     f"{p.p_value:.3g} |")
    return "\n".join(lines) + "\n"


def _ci(v: float, lo: float, hi: float) -> str:
    return f"{100 * v:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
