"""Several training seeds of one recipe: the summary of each table column, and paired comparisons of two recipes.

Zoo ids that differ only by a ``-s<k>`` suffix are seeds of one recipe (``zoo/recipes.toml``: seed 0 keeps the
id, seed k is ``<id>-s<k>``). For every recipe with two or more seeds in the results, each accuracy column of the
comparison table (not the counts of cells or seeds) gets its mean, sample standard deviation and range over seeds.
Two recipes A and B are compared per seed on the same images with the paired interval of docs/evaluation.md §7
(:func:`robench.results.stats.paired`, from the per-sample ``robust_mask`` column), and over seeds with the mean
difference and a Student-t 95% interval across the per-seed differences. Needs pandas, numpy and scipy only
(never torch).

Examples:
    >>> split_seed("fmnist-vgg11-lif-gn-s2")
    ('fmnist-vgg11-lif-gn', 2)
    >>> per_seed = compare_seeds(df, "fmnist-vgg11-stable-gn", "fmnist-vgg11-lif-gn")
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..errors import DataNotFound, UsageError
from .stats import decode_mask, paired

SEED = re.compile(r"^(?P<base>\S+?)-s(?P<seed>\d+)(?P<rest>(?: \[.*\])?)$")  # rest: report's " [dataset, n=...]"
KEY = ("label", "eps_str", "grad", "dataset", "n", "seed")  # one cell of one model; seed = the attack's seed
COUNTS = ("seeds", "cells")  # table columns that count something (their names may carry a suffix)


def split_seed(label: str) -> tuple[str, int]:
    """``"<id>-s<k>"`` -> ``("<id>", k)``; any other id is seed 0 of itself. A report row label's
    ``" [dataset, n=...]"`` tail stays on the recipe."""
    m = SEED.match(label)
    return (m["base"] + m["rest"], int(m["seed"])) if m else (label, 0)


def seed_groups(labels: Sequence[str]) -> dict[str, dict[int, str]]:
    """Recipe -> {seed: label} over ``labels``."""
    out: dict[str, dict[int, str]] = {}
    for lab in labels:
        base, k = split_seed(lab)
        out.setdefault(base, {})[k] = lab
    return out


def has_seeds(models: Sequence[str]) -> bool:
    """True when some recipe has two or more seeds among ``models``."""
    return any(len(g) > 1 for g in seed_groups(list(models)).values())


# ------------------------------------------------------------------------------------------------ summary
def seed_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Long rows (recipe, column, seeds, mean, sd, min, max) for every recipe with two or more seeds among the
    rows of ``table`` (a comparison table: rows are models, columns accuracies in percent). ``sd`` is the sample
    standard deviation (ddof 1); a seed without a value in a column is left out of that column."""
    rows = []
    for base, seeds in seed_groups(list(table.index)).items():
        if len(seeds) < 2:
            continue
        for col in table.columns:
            if str(col).startswith(COUNTS):  # counts of cells or seeds, not accuracies: no mean or sd
                continue
            vals = {k: float(table.at[lab, col]) for k, lab in sorted(seeds.items())}
            vals = {k: v for k, v in vals.items() if not math.isnan(v)}
            if not vals:
                continue
            v = np.array(list(vals.values()))
            rows.append({"recipe": base, "column": col, "seeds": ",".join(map(str, vals)), "mean": v.mean(),
                         "sd": v.std(ddof=1) if len(v) > 1 else math.nan, "min": v.min(), "max": v.max()})
    return pd.DataFrame(rows, columns=["recipe", "column", "seeds", "mean", "sd", "min", "max"])


# ------------------------------------------------------------------------------------------ comparisons
def _cells(df: pd.DataFrame, model: str, labels: pd.Series) -> dict[tuple, pd.Series]:
    d = df[df["model"] == model].assign(label=labels)
    if "robust_mask" not in d.columns:
        return {}
    d = d[d["robust_mask"].fillna("").astype(str) != ""]
    return {tuple(r[k] for k in KEY): r for _, r in d.iterrows()}


def compare_seeds(df: pd.DataFrame, a: str, b: str, labels: pd.Series | None = None) -> pd.DataFrame:
    """Recipe ``a`` against ``b`` (base ids), seed by seed, on every cell both have with per-sample masks on the
    same images. One row per (cell, seed): column, dataset, n, seed, acc_a, acc_b, diff = acc_a - acc_b with its
    paired 95% interval (lo, hi), only_a, only_b, p_value (exact McNemar). Fractions in [0, 1]."""
    labels = df["attack"] if labels is None else labels
    groups = seed_groups(list(df["model"].unique()))
    for name in (a, b):
        if name not in groups:
            raise UsageError(f"--seeds-compare {name!r}: no results for it; recipes: {', '.join(sorted(groups))}")
    if a == b:
        raise UsageError(f"--seeds-compare needs two different recipes; got {a!r} twice")
    rows = []
    for k in sorted(set(groups[a]) & set(groups[b])):
        ca, cb = _cells(df, groups[a][k], labels), _cells(df, groups[b][k], labels)
        for key in sorted(set(ca) & set(cb), key=str):
            ra, rb = ca[key], cb[key]
            ma = decode_mask(ra["robust_mask"], int(ra["n"]), int(ra["robust_count"]), f"{ra['model']} robust_mask")
            mb = decode_mask(rb["robust_mask"], int(rb["n"]), int(rb["robust_count"]), f"{rb['model']} robust_mask")
            p = paired(ma, mb)
            rows.append({"column": f"{key[0]} @ {key[1]} ({key[2]})", "dataset": key[3], "n": int(key[4]),
                         "seed": k, "acc_a": p.acc_a, "acc_b": p.acc_b, "diff": p.diff, "lo": p.lo, "hi": p.hi,
                         "only_a": p.only_a, "only_b": p.only_b, "p_value": p.p_value})
    if not rows:
        raise DataNotFound(f"--seeds-compare {a} {b}: no seed of both has per-sample masks (robust_mask) on the "
                           "same cells; evaluate both with a robench that records them")
    # one row per (column, dataset, seed): where a seed was measured on several n, the largest n
    out = pd.DataFrame(rows).sort_values(["column", "dataset", "seed", "n"], kind="stable")
    return out.drop_duplicates(["column", "dataset", "seed"], keep="last").reset_index(drop=True)


def over_seeds(per_seed: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per (column, dataset): the number of seeds, the mean of the per-seed differences, their sd and a
    Student-t interval across seeds (NaN with one seed). Each seed's difference estimates the same population
    difference, so seeds measured on different n (say the first 1,000 images for seed 0 and 500 for the
    others) still pool; ``n`` lists each seed's n in seed order."""
    from scipy.stats import t as student_t

    rows = []
    for (col, ds), g in per_seed.groupby(["column", "dataset"], sort=False):
        d = g["diff"].to_numpy(dtype=float)
        k, mean = len(d), float(d.mean())
        sd = float(d.std(ddof=1)) if k > 1 else math.nan
        half = float(student_t.ppf(0.5 + level / 2, k - 1)) * sd / math.sqrt(k) if k > 1 else math.nan
        ns = ",".join(str(int(v)) for v in g.sort_values("seed")["n"])
        rows.append({"column": col, "dataset": ds, "n": ns, "seeds": k, "mean_diff": mean, "sd": sd,
                     "lo": mean - half, "hi": mean + half})
    return pd.DataFrame(rows, columns=["column", "dataset", "n", "seeds", "mean_diff", "sd", "lo", "hi"])


# ------------------------------------------------------------------------------------------------ rendering
def _num(v: float, fmt: str = ".1f") -> str:
    return "–" if math.isnan(v) else format(v, fmt)


def _iv(d: float, lo: float, hi: float) -> str:
    """Percentage points with sign: ``+3.1 [-0.5, +6.7]``."""
    return "–" if math.isnan(d) else f"{100 * d:+.1f} [{_num(100 * lo, '+.1f')}, {_num(100 * hi, '+.1f')}]"


def summary_markdown(summary: pd.DataFrame) -> str:
    """The seed summary as a Markdown table; accuracies in percent."""
    t = summary.assign(**{c: summary[c].map(_num) for c in ("mean", "sd", "min", "max")})
    body = t.to_markdown(index=False, colalign=("left", "left", "left", "right", "right", "right", "right"),
                         disable_numparse=True)
    return "## Seeds of one recipe: mean, sd and range over seeds (%)\n\n" + body


def comparison_markdown(a: str, b: str, per_seed: pd.DataFrame, overall: pd.DataFrame) -> str:
    """A - B in percentage points: each seed's paired 95% interval, then the mean over seeds with its t-interval."""
    many = per_seed["dataset"].nunique() > 1
    name = (lambda r: f"{r['column']} [{r['dataset']}]") if many else (lambda r: r["column"])
    rows: dict[str, dict[str, str]] = {}
    for _, r in per_seed.iterrows():
        rows.setdefault(name(r), {})[f"seed {r['seed']}"] = _iv(r["diff"], r["lo"], r["hi"]) + f" n={r['n']}"
    for _, r in overall.iterrows():
        rows[name(r)]["over seeds (t 95%)"] = _iv(r["mean_diff"], r["lo"], r["hi"]) + f" sd {_num(100 * r['sd'])}"
    t = pd.DataFrame.from_dict(rows, orient="index").fillna("–")
    t.index.name = "column"
    cols = sorted((c for c in t.columns if c.startswith("seed ")), key=lambda c: int(c.split()[1]))
    t = t[[*cols, "over seeds (t 95%)"]]
    head = (f"## {a} minus {b} (percentage points)\n\nPer seed: the paired difference on the same images with its "
            "95% interval (docs/evaluation.md §7); over seeds: the mean of the per-seed differences with a "
            "Student-t 95% interval across seeds.")
    return head + "\n\n" + t.to_markdown(colalign=("left", *("right",) * len(t.columns)), disable_numparse=True)


def seeds_markdown(df: pd.DataFrame, table: pd.DataFrame, compare: Sequence[str] | None = None,
                   labels: pd.Series | None = None) -> str | None:
    """``seeds.md``: the summary when ``table`` holds several seeds of a recipe, and the comparison of the two
    recipes in ``compare`` when given; None when there is neither."""
    parts = []
    summary = seed_summary(table)
    if not summary.empty:
        parts.append(summary_markdown(summary))
    if compare:
        a, b = compare
        per_seed = compare_seeds(df, a, b, labels)
        parts.append(comparison_markdown(a, b, per_seed, over_seeds(per_seed)))
    return "# Across training seeds\n\n" + "\n\n".join(parts) + "\n" if parts else None
