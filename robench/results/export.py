"""Results as JSON: what ``--format json`` prints and what other tools (a leaderboard, a notebook) read.

Plain JSON types only: fractions in [0, 1] (never percent strings), ``null`` for a missing value, the JSON
columns (``params``, ``versions``) parsed, ``flags`` as a list, and every accuracy with its Wilson 95% interval
(``robust_ci``). pandas only, never torch.

Examples:
    >>> print(dumps({"rows": rows_json(df), "findings": findings_json(found)}))
    >>> comparison_json(comparison(df))["models"][0]["columns"]["worst case"]
    {'acc': 0.45, 'lo': 0.382, 'hi': 0.519}
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .labels import attack_labels
from .report import Comparison
from .stats import wilson
from .worstcase import WorstCase, compare, worst_cases

JSON_COLUMNS = ("params", "versions")


def plain(v: object) -> object:
    """A JSON value for ``v``: numpy scalars as Python numbers, NaN as None, tuples as lists."""
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if math.isnan(v) else float(v)
    if isinstance(v, (tuple, list)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    return v


def dumps(obj: object) -> str:
    """Indented JSON text (strict: no NaN) with a final newline."""
    return json.dumps(plain(obj), indent=2, allow_nan=False) + "\n"


def rows_json(df: pd.DataFrame) -> list[dict]:
    """Each results row as a dict: its columns, ``params`` and ``versions`` parsed, ``flags`` a list, and
    ``robust_ci`` = the Wilson 95% interval of ``robust_count`` over ``n``."""
    out = []
    for r in df.to_dict("records"):
        d = {k: plain(v) for k, v in r.items()}
        for c in JSON_COLUMNS:
            if isinstance(d.get(c), str) and d[c]:
                d[c] = json.loads(d[c])
        d["flags"] = [f for f in str(r.get("flags") or "").split(";") if f]
        d["robust_ci"] = list(wilson(int(r["robust_count"]), int(r["n"])))
        out.append(d)
    return out


def findings_json(findings: Sequence[object]) -> list[dict]:
    """Findings (or notes) as ``{"name", "message", "model"}``."""
    return [{"name": f.name, "message": f.message, "model": getattr(f, "model", "") or None} for f in findings]


def comparison_json(c: Comparison) -> dict:
    """The comparison table: ``columns`` in order, and per model (row) each column as ``{"acc", "lo", "hi"}``
    (fractions) for an accuracy, or the plain value (``cells``, ``seeds``); a missing cell is left out."""
    models = []
    for row in c.table.index:
        cols = {}
        for col in c.table.columns:
            v = c.table.at[row, col]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            lo = c.lo.at[row, col]
            if isinstance(lo, float) and not math.isnan(lo):
                cols[col] = {"acc": round(float(v) / 100, 6), "lo": round(lo / 100, 6),
                             "hi": round(float(c.hi.at[row, col]) / 100, 6)}
            else:
                cols[col] = plain(v)
        models.append({"model": str(row), "columns": cols})
    return {"columns": [str(c) for c in c.table.columns], "models": models}


def worst_cases_json(cases: Sequence[WorstCase]) -> list[dict]:
    """Each pointwise worst case: model, dataset, n, budget, counts, accuracy with its interval, the cells it
    combines and how many images each broke first."""
    return [{"model": c.model, "dataset": c.dataset, "n": c.n, "eps": c.eps, "eps_str": c.eps_str,
             "clean_count": c.clean_count, "robust_count": c.robust_count, "robust_acc": c.acc,
             "robust_ci": list(c.interval()), "cells": list(c.cells), "added": [int(a) for a in c.added]}
            for c in cases]


def compare_json(df: pd.DataFrame, a: str, b: str) -> list[dict]:
    """The paired comparison of models ``a`` and ``b`` (``robench report --compare``) on every shared (dataset,
    n, eps): both worst cases, the difference a - b with its 95% interval, the discordant counts, McNemar's p."""
    out = []
    for ca, _, p in compare(worst_cases(df, attack_labels(df)), a, b):
        out.append({"dataset": ca.dataset, "n": p.n, "eps": ca.eps, "eps_str": ca.eps_str, "a": a, "b": b,
                    "acc_a": p.acc_a, "acc_b": p.acc_b, "diff": p.diff, "diff_ci": [p.lo, p.hi],
                    "only_a": p.only_a, "only_b": p.only_b, "mcnemar_p": p.p_value})
    return out
