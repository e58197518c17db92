"""The record checks: pure functions from a results table to findings (pandas only, never torch), how users spot
gradient masking and broken evaluations in stored rows:

- ``eps0-not-clean``: at eps = 0 robust accuracy must equal clean accuracy;
- ``robust-above-clean``: robust accuracy may not exceed clean accuracy;
- ``not-monotone``: within one attack (model, parameters, grad mode), accuracy must not rise with eps (two
  measurements of one eps, say from two files, are compared with neither: each eps with the one below it);

Every check compares only cells of one run key (:data:`CELL`): the model's identity (id, weights sha256 and, in
rows that have it, the config digest), the dataset, n and the attack's seed.
- ``iterative-above-fgsm``: an iterative attack (PGD, BIM, PGD-best, SA-PGD, APGD, AutoAttack) must do at least
  as well as FGSM at the same eps;
- ``grad-gap``: a gradient path (rate, another surrogate, ASSG) and BPTT give robust accuracies further apart
  than a threshold (10 pt): the weaker one overstates robustness, a sign of gradient masking;
- ``eot-masking``: on a stochastic model, the same attack averaging more draws per gradient step (EOT, larger K)
  lowers robust accuracy by more than a threshold (5 pt): robustness measured with fewer draws was masking by
  randomness.

Cells of different threat models (the ``norm`` in ``params``; rows without one are L-inf) are never compared.
"""

from __future__ import annotations

import json

import pandas as pd

from ..attack_meta import ITERATIVE, SINGLE_STEP
from .findings import Finding

CELL = ("model", "sha256", "config", "dataset", "n", "seed")  # "config": absent from rows written before it
SHOWN = 3  # offending cells named in a message


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _cell(df: pd.DataFrame) -> list[str]:
    return [c for c in CELL if c in df.columns]


def _where(r: dict) -> str:
    return f"{r['model']} {r['attack']} eps={r['eps_str']} grad={r['grad']}"


def _finding(name: str, what: str, bad: list[dict], describe) -> list[Finding]:
    if not bad:
        return []
    shown = "; ".join(describe(r) for r in bad[:SHOWN])
    more = f"; and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
    return [Finding(name, f"{len(bad)} cell(s) {what}: {shown}{more}", tuple(bad))]


# ---------------------------------------------------------------------------------------- record checks
def eps_zero(df: pd.DataFrame) -> list[Finding]:
    bad = df[(df["eps"] == 0) & (df["robust_acc"] != df["clean_acc"])].to_dict("records")
    return _finding("eps0-not-clean", "at eps=0 differ from clean accuracy", bad,
                    lambda r: f"{_where(r)} robust {_pct(r['robust_acc'])} vs clean {_pct(r['clean_acc'])}")


def robust_le_clean(df: pd.DataFrame, tol: float = 1e-9) -> list[Finding]:
    bad = df[df["robust_acc"] > df["clean_acc"] + tol].to_dict("records")
    return _finding("robust-above-clean", "exceed clean accuracy", bad,
                    lambda r: f"{_where(r)} robust {_pct(r['robust_acc'])} > clean {_pct(r['clean_acc'])}")


def monotone_in_eps(df: pd.DataFrame, tol: float = 0.0) -> list[Finding]:
    bad = []
    for _, g in df.groupby([*_cell(df), "attack", "params", "grad"], sort=False):
        levels = [lv.to_dict("records") for _, lv in g.groupby("eps", sort=True)]
        for below, here in zip(levels, levels[1:], strict=False):
            top = max(below, key=lambda r: r["robust_acc"])  # a rise above every measurement of the eps below
            bad += [dict(b, prev_eps_str=top["eps_str"], prev_acc=top["robust_acc"])
                    for b in here if b["robust_acc"] > top["robust_acc"] + tol]
    return _finding("not-monotone", "rise with eps", bad,
                    lambda r: f"{_where(r)} {_pct(r['robust_acc'])} > {_pct(r['prev_acc'])} at {r['prev_eps_str']}")


def norm_of(params: object) -> str:
    """The threat model of a row's ``params`` (JSON text or dict): its ``norm``, ``Linf`` when absent."""
    p = json.loads(params) if isinstance(params, str) else dict(params or {})
    return str(p.get("norm", "Linf"))


def _with_norm(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(norm=df["params"].map(norm_of)) if len(df) else df.assign(norm=pd.Series(dtype=str))


def iterative_le_single_step(df: pd.DataFrame, tol: float = 0.0) -> list[Finding]:
    bad = []
    for _, g in _with_norm(df).groupby([*_cell(df), "grad", "eps", "norm"], sort=False):
        single = g[g["attack"].isin(SINGLE_STEP)]["robust_acc"]
        if single.empty:
            continue
        best = float(single.min())
        bad += [dict(r, fgsm_acc=best) for r in g[g["attack"].isin(ITERATIVE)].to_dict("records")
                if r["robust_acc"] > best + tol]
    return _finding("iterative-above-fgsm", "of an iterative attack do worse than FGSM", bad,
                    lambda r: f"{_where(r)} {_pct(r['robust_acc'])} > FGSM {_pct(r['fgsm_acc'])}")


def grad_gap(df: pd.DataFrame, threshold: float = 0.10) -> list[Finding]:
    """Each gradient path against ``bptt`` on the same cell: a gap above ``threshold`` flags the weaker one."""
    bad = []
    paths = df[~df["grad"].isin(("worst", "none"))]
    for _, g in paths.groupby([*_cell(paths), "attack", "params", "eps"], sort=False):
        acc = dict(zip(g["grad"], g["robust_acc"], strict=False))
        if "bptt" not in acc:
            continue
        r = g.iloc[0].to_dict()
        for path, a in acc.items():
            if path != "bptt" and abs(a - acc["bptt"]) > threshold:
                strong, weak = (path, "bptt") if a < acc["bptt"] else ("bptt", path)
                bad.append(dict(r, grad=weak, strong=strong, gap=acc[weak] - acc[strong]))
    return _finding("grad-gap", f"where a gradient path and bptt differ by more than "
                    f"{100 * threshold:.0f} pt", bad,
                    lambda r: f"{r['model']} {r['attack']} eps={r['eps_str']}: {r['strong']} gradient is "
                              f"{100 * r['gap']:.1f} pt stronger than {r['grad']}")


def eot_masking(df: pd.DataFrame, threshold: float = 0.05) -> list[Finding]:
    """Each stochastic cell (``params`` with ``eot``) against the same cell with the largest K: a drop of robust
    accuracy above ``threshold`` flags the smaller K (its robustness was partly masking by randomness)."""
    bad = []
    rows = [dict(r, _p=json.loads(r["params"])) for r in df.to_dict("records")]
    rows = [r for r in rows if "eot" in r["_p"]]
    groups: dict = {}
    for r in rows:
        rest = json.dumps({k: v for k, v in r["_p"].items() if k != "eot"}, sort_keys=True)
        groups.setdefault((*(r.get(c, "") for c in CELL), r["attack"], rest, r["grad"], r["eps"]), []).append(r)
    for g in groups.values():
        top = max(g, key=lambda r: r["_p"]["eot"])
        bad += [dict(r, top_k=top["_p"]["eot"], top_acc=top["robust_acc"]) for r in g
                if r["_p"]["eot"] < top["_p"]["eot"] and r["robust_acc"] - top["robust_acc"] > threshold]
    return _finding("eot-masking", f"lose more than {100 * threshold:.0f} pt when the attack averages more draws "
                    "(EOT): masking by randomness", bad,
                    lambda r: f"{_where(r)} K={r['_p']['eot']} {_pct(r['robust_acc'])} -> K={r['top_k']} "
                              f"{_pct(r['top_acc'])}")


def check_records(df: pd.DataFrame, gap: float = 0.10, tol: float = 0.0) -> list[Finding]:
    """Every record check on a results table (rows as written by :mod:`robench.results`)."""
    if df.empty:
        return []
    return [*eps_zero(df), *robust_le_clean(df), *monotone_in_eps(df, tol), *iterative_le_single_step(df, tol),
            *grad_gap(df, gap), *eot_masking(df)]


def stored_flags(df: pd.DataFrame) -> list[Finding]:
    """The findings kept in the rows' ``flags`` column: one per (flag, model) for the model checks, and one per
    cell for counted flags such as ``invalid-adv=3`` (adversarial examples that failed verification)."""
    out = []
    flagged = df[df["flags"].astype(str) != ""]
    for (flag_text, model), g in flagged.groupby(["flags", "model"], sort=True):
        for name in str(flag_text).split(";"):
            if "=" in name:
                out += _counted(name, g)
                continue
            grads = ", ".join(sorted(set(g["grad"]) - {"worst"}))
            r = g.iloc[0]  # a cascade flags its worst-case row only: name the cascade, its budget and n
            where = f"grad modes {grads}" if grads else f"{r['attack']} worst case at {r['eps_str']}, n={r['n']}"
            out.append(Finding(name, f"{model}: stored by the evaluation ({where}); "
                               f"{DOC.get(name, '')}".rstrip("; "), tuple(g.to_dict("records")), model=model))
    return list({(f.name, f.model, f.message if f.name in COUNTED else ""): f for f in out}.values())


COUNTED = frozenset({"invalid-adv"})  # flags stored as name=count, one finding per cell


def _counted(flag: str, g: pd.DataFrame) -> list[Finding]:
    name, _, count = flag.partition("=")
    rows = [r for r in g.to_dict("records") if r["grad"] != "worst"] or g.to_dict("records")
    return [Finding(name, f"{_where(r)}: {count} {DOC.get(name, 'flagged')}", (r,), model=str(r["model"]))
            for r in rows]


DOC = {
    "nondeterministic": "two evaluations of the same input differed",
    "probabilities": "the model outputs probabilities, not logits",
    "zero-grad": "many samples had an all-zero input gradient (gradient masking)",
    "invalid-adv": "adversarial example(s) failed verification (not finite, outside [0, 1] or the eps-ball) and "
                   "were counted robust",
    "gradient-masking": "a black-box attack (Square) broke samples that every white-box attack missed (the "
                        "gradients are partly masked there; the worst case counts them broken)",
    "eot-masking": "robust accuracy fell by more than 5 points when the attack averaged more draws per step "
                   "(masking by randomness)",
    "not-converged": "the cascade stopped while still breaking samples (reliable v2 and later: the cap on extra "
                     "restarts stopped a run that broke more than the threshold; v1: the last stage or restart lowered "
                     "robust accuracy by more than 1 point): a longer attack may go lower",
}
