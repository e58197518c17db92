"""How results rows are named and shown: attack labels (``pgd-10 (final)``, ``reliable 3: sa-pgd-100``), their
order in tables and figures, budgets as ``k/255``, and LaTeX escaping. Shared by the report and the figures;
pandas only.

Examples:
    >>> attack_labels(df).tolist()
    ['fgsm', 'pgd-10 (final)', 'reliable 1: pgd-best-50', 'reliable']
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from ..attack_meta import FINAL_ITERATE, REPORT_ORDER

GRAD_ORDER = ("bptt", "rate", "worst", "none")
# the protocol files (data, never imported): a cascade's rows of its newest version are labelled by its bare name
PROTOCOL_DIR = Path(__file__).resolve().parents[1] / "eval" / "protocols"
UNLABELLED = ("path_requested",)  # params a label never shows: the grad column says which path ran


def k255(v: float) -> str:
    """A budget as ``k/255`` where exact (two decimals of k), else four significant digits."""
    k = v * 255
    return f"{round(k, 2):g}/255" if abs(k - round(k, 2)) < 1e-9 else f"{v:.4g}"


def attack_labels(df: pd.DataFrame) -> pd.Series:
    """A short label per row: ``pgd-10 (final)`` (final-iterate attacks say so), ``pgd-best-50``, ``apgd-ce-10``,
    ``square-5000``, ``autoattack-standard``; parameters that still differ between rows of the same label are
    appended (``pgd-10 (final) step=1/255``)."""
    params = df["params"].map(lambda t: {k: v for k, v in json.loads(t).items() if k not in UNLABELLED})

    def base(attack: str, p: dict) -> str:
        if "suite" in p:  # a cascade's stage row (``reliable 1: pgd-best-50``) or its whole (``reliable``)
            suite = suite_label(p["suite"], p.get("version"))
            if p.get("stage") == "all":
                return suite
            inner = {k: v for k, v in p.items() if k not in ("suite", "stage", "attack")}
            return f"{suite} {p['stage']}: {base(p['attack'], inner)}"
        if attack == "autoattack":
            return f"autoattack-{p.get('version', '?')}" + (f"-{p['steps']}" if "steps" in p else "")
        label = f"{attack}-{p['steps']}" if "steps" in p else (f"{attack}-{p['queries']}" if "queries" in p
                                                                  else attack)
        return f"{label} (final)" if attack in FINAL_ITERATE else label

    labels = pd.Series([base(a, p) for a, p in zip(df["attack"], params, strict=True)], index=df.index)
    for label in labels.unique():
        rows = labels[labels == label].index
        distinct = {json.dumps(params[i], sort_keys=True) for i in rows}
        if len(distinct) < 2:
            continue
        keys = sorted({k for i in rows for k in params[i]})
        varying = [k for k in keys if len({json.dumps(params[i].get(k)) for i in rows}) > 1]
        ratio = _step_ratio(df, params, rows) if varying == ["step_size"] else None
        if ratio is not None:  # a sweep whose step follows the budget (PGD-10, step eps/4): one curve
            labels[rows] = f"{label} step=eps/{ratio:g}"
            continue
        for i in rows:
            extra = " ".join(f"{'step' if k == 'step_size' else k}="
                             f"{k255(params[i][k]) if k == 'step_size' else params[i].get(k)}" for k in varying)
            labels[i] = f"{label} {extra}"
    return labels


def newest_version(suite: str, folder: Path = PROTOCOL_DIR) -> int | None:
    """The newest shipped version of protocol ``suite`` (from its files' names), None when none ships."""
    return max(version_norms(suite, folder), default=None)


_NORMS: dict[tuple[str, Path], dict[int, str]] = {}  # (suite, folder) -> version_norms, read once per process


def version_norms(suite: str, folder: Path = PROTOCOL_DIR) -> dict[int, str]:
    """Every shipped version of ``suite`` and the threat model (norm) its list declares (the files are read once
    per process: :func:`suite_label` asks for every cascade row, and the shipped lists do not change meanwhile)."""
    key = (suite, Path(folder))
    if key not in _NORMS:
        found = {}
        for f in key[1].glob(f"{suite}-v*.toml"):
            v = f.stem.rsplit("-v", 1)[1]
            if v.isdigit():
                m = re.search(r'^norm\s*=\s*"([^"]+)"', f.read_text(), re.M)
                found[int(v)] = m[1] if m else "Linf"
        _NORMS[key] = found
    return dict(_NORMS[key])


def suite_label(suite: str, version: object) -> str:
    """A cascade's label: ``reliable`` for rows of the newest version for their norm (the lists are per norm:
    the newest L2 list does not make the newest L-inf one old), ``reliable-v1`` for an older one."""
    norms = version_norms(suite)
    if not norms or version is None:
        return suite
    v = int(version)
    same = [k for k, n in norms.items() if n == norms.get(v)] if v in norms else list(norms)
    return suite if v == max(same) else f"{suite}-v{v}"


def _step_ratio(df: pd.DataFrame, params: pd.Series, rows: pd.Index) -> float | None:
    """``k`` when every row with eps > 0 has step = eps / k (rows at eps = 0 move nothing), else None."""
    ratios = {round(df.at[i, "eps"] / params[i]["step_size"], 6) for i in rows if df.at[i, "eps"] > 0}
    return ratios.pop() if len(ratios) == 1 else None


def attack_order(label: str) -> tuple:
    """Sort key of a label: its family in :data:`REPORT_ORDER`, then its step count, then the label."""
    name = label.split(" ")[0]
    fams = [(len(a), i) for i, a in enumerate(REPORT_ORDER) if name == a or name.startswith(a + "-")]
    fam = max(fams)[1] if fams else len(REPORT_ORDER)  # the longest match: pgd-best-50 is pgd-best, not pgd
    digits = "".join(c for c in name.rsplit("-", 1)[-1] if c.isdigit())
    return fam, int(digits) if digits else 0, label


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
        "$": r"\$", "~": r"\~{}", "^": r"\^{}", "–": "--"}


def tex_escape(s: str) -> str:
    """``s`` with LaTeX's special characters escaped (and an en dash as ``--``)."""
    return "".join(_TEX.get(c, c) for c in s)
