"""The headline table a paper prints: per model, clean accuracy and the pointwise worst case per budget (with its
Wilson 95% interval), as a narrow booktabs LaTeX table with a caption saying what the numbers are. pandas only,
never torch.

Examples:
    >>> Path("table.tex").write_text(headline_latex(df))
"""

from __future__ import annotations

import pandas as pd

from ..attack_meta import NOISE
from .labels import attack_labels, tex_escape
from .stats import wilson
from .worstcase import worst_cases


def headline_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Per model: clean accuracy and the pointwise worst case per budget on its largest set of images, with
    Wilson intervals (fractions) and the number of cells behind each. For a model none of whose cells has a
    per-image mask (older results), the lowest robust accuracy of any single cell stands in (``pointwise``
    False)."""
    rows = [{"model": c.model, "dataset": c.dataset, "n": c.n, "eps_str": c.eps_str, "eps": c.eps,
             "clean": c.clean_count / c.n, "count": c.robust_count, "cells": len(c.cells), "pointwise": True}
            for c in worst_cases(df, attack_labels(df))]
    done = {(r["model"], r["dataset"], r["n"], r["eps"]) for r in rows}
    plain = df[~df["attack"].isin(NOISE) & (df["eps"] > 0)].sort_values("robust_acc", kind="stable")
    for key, g in plain.groupby(["model", "dataset", "n", "eps"], sort=True):
        if key not in done:
            r = g.iloc[0]
            rows.append({"model": key[0], "dataset": key[1], "n": int(key[2]), "eps_str": str(r["eps_str"]),
                         "eps": float(key[3]), "clean": float(r["clean_acc"]), "count": int(r["robust_count"]),
                         "cells": len(g), "pointwise": False})
    out = pd.DataFrame(rows, columns=["model", "dataset", "n", "eps_str", "eps", "clean", "count", "cells",
                                      "pointwise"])
    bounds = [wilson(int(k), int(n)) for k, n in zip(out["count"], out["n"], strict=True)]
    out = out.assign(robust=out["count"] / out["n"].clip(lower=1), lo=[b[0] for b in bounds],
                     hi=[b[1] for b in bounds])
    # per model: its worst cases when it has any (on their largest n), else its single cells (largest n)
    out = out[out["pointwise"] == out.groupby("model")["pointwise"].transform("max")]
    return out[out["n"] == out.groupby("model")["n"].transform("max")].sort_values(["model", "eps"],
                                                                                ignore_index=True)


def headline_latex(df: pd.DataFrame, caption: str | None = None, label: str = "tab:robench",
                   intervals: bool = True) -> str:
    """A narrow ``table`` (booktabs): model, n, clean, and the worst case per budget (with its 95% interval when
    ``intervals``), percent with one decimal, and a caption saying what the numbers are."""
    h = headline_rows(df)
    budgets = list(dict.fromkeys(h.sort_values("eps")["eps_str"]))
    cols = ["Model", "$n$", "Clean"] + [f"Robust @ {tex_escape(e)}" for e in budgets]
    lines = ["% robench report: needs \\usepackage{booktabs}", "\\begin{table}[t]", "\\centering", "\\small",
             "\\caption{" + tex_escape(caption or _caption(h, intervals)) + "}", f"\\label{{{label}}}",
             "\\begin{tabular}{lr" + "r" * (1 + len(budgets)) + "}", "\\toprule", " & ".join(cols) + " \\\\",
             "\\midrule"]
    for model, g in h.groupby("model", sort=True):
        by = g.set_index("eps_str")
        cells = [tex_escape(model), str(int(g["n"].iloc[0])), f"{100 * g['clean'].iloc[0]:.1f}"]
        for e in budgets:
            if e not in by.index:
                cells.append("--")
                continue
            r = by.loc[e]
            ci = f" {{\\scriptsize [{100 * r['lo']:.1f}, {100 * r['hi']:.1f}]}}" if intervals else ""
            cells.append(f"{100 * r['robust']:.1f}" + ("" if r["pointwise"] else "$^\\dagger$") + ci)
        lines.append(" & ".join(cells) + " \\\\")
    return "\n".join([*lines, "\\bottomrule", "\\end{tabular}", "\\end{table}", ""])


def _caption(h: pd.DataFrame, intervals: bool) -> str:
    data = ", ".join(sorted(h["dataset"].unique()))
    iv = "; 95% Wilson intervals in brackets" if intervals else ""
    single = "" if h["pointwise"].all() else ("; marked with a dagger: no per-image masks were stored, the lowest "
                                               "accuracy of a single attack")
    return (f"Clean and robust accuracy (%) on {data} (the first n test images). Robust: the per-image worst "
            f"case over every attack and gradient path run on the same images (L-inf budget){iv}{single}.")
