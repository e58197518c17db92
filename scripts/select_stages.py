"""Choose the reliable protocol's stages from the evidence matrix and prove them on held-out images.

Reads the evidence matrix (scripts/evidence_v2.sh writes results/evidence-v2.csv: attacks x gradient paths on the
first 200 test images of many models, with per-sample masks), chooses the stages greedily on the selection split
(images 0-99) and replays them on the validation split (images 100-199), which the choice never sees. Writes the
selection table (benchmarks/selection-v<N>.md; version 2's is benchmarks/selection.md) and, with --write, the
stage list of the protocol (robench/eval/protocols/reliable-v<N>.toml), which the cascade reads.

    .venv/bin/python scripts/select_stages.py results/evidence-v2.csv --v1 results/reliable.csv --write
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robench.eval.stagelist import load as load_protocol  # noqa: E402
from robench.eval.stagelist import versions  # noqa: E402
from robench.results.selection import (  # noqa: E402
    Choice,
    cascade_masks,
    evaluate_choice,
    read_matrix,
    select,
)
from robench.results.store import ResultsStore  # noqa: E402

# the probe: best-iterate PGD-50 (the matrix's cheap wide sweep) over these paths, in this tie-break order
PROBE_PATHS = ["bptt", "arctan:a=4", "assg:A=0.425", "triangle:w=0.5", "arctan:a=8", "sigmoid:k=16", "rate",
               "triangle:w=0.25", "triangle:w=2", "rectangle:w=0.5", "assg:A=0.35", "assg:A=0.49", "arctan:a=16",
               "sigmoid:k=32"]
PROBE_ATTACK = "pgd-best"
PROBE_PARAMS = {"norm": "Linf", "random_start": True, "restarts": 1, "step_size": 2 / 255, "steps": 50}


def probe_params(norm: str, eps: str) -> dict:
    """The probe attack's parameters as the matrix stores them: L-inf steps of 2/255, L2 steps of eps/4 (the
    defaults of `robench attack`)."""
    if norm == "Linf":
        return PROBE_PARAMS
    return {**PROBE_PARAMS, "norm": norm, "step_size": float(Fraction(eps)) / 4}
SPEC_KEYS = ("steps", "restarts", "step_size", "queries", "random_start")


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def _fraction(v: float) -> str:
    """A step size as "k/255" where it is one (how the budgets are written everywhere), else the number."""
    k = round(v * 255)
    return f'"{k}/255"' if abs(v * 255 - k) < 1e-9 else repr(v)


def stage_toml(stages: list[Choice], probe: dict, probe_paths: list[str], probe_images: int, why: str,
               version: int = 2, norm: str = "Linf", eps: str = "8/255") -> str:
    lines = [f"# {line}" if line else "#" for line in why.splitlines()]
    lines += ['name = "reliable"', f"version = {version}",
              f'norm = "{norm}"   # the threat model these stages were chosen for', f'eps = "{eps}"', ""]
    if any(c.grad.startswith("probe:") for c in stages):
        lines += ["[probe]", "paths = [" + ",\n         ".join(_toml_value(g) for g in probe_paths) + "]",
                  f'attack = "{PROBE_ATTACK}"', f"steps = {probe['steps']}",
                  f"step_size = {_fraction(probe['step_size'])}", f"images = {probe_images}", ""]
    lines += ["[adaptive]", "threshold = 0.005", "cap = 4", "square_queries = [10000, 20000]", ""]
    for c in stages:
        p = json.loads(c.params)
        lines += ["[[stage]]", f'attack = "{c.attack}"'] + ([f'grad = "{c.grad}"'] if c.white_box else [])
        lines += [f"{k} = {_fraction(p[k]) if k == 'step_size' else _toml_value(p[k])}" for k in SPEC_KEYS
                  if p.get(k) is not None]
        lines += [f"white_box = {_toml_value(c.white_box)}", ""]
    return "\n".join(lines)


def replay_stages(path: Path) -> list[Choice]:
    """The stages of a shipped stage-list file as matrix choices (its budgets at the matrix's eps and norm)."""
    from robench.eval.stagelist import tomllib

    out = []
    data = tomllib.loads(path.read_text())
    for st in data["stage"]:
        p = {"norm": data.get("norm", "Linf")}
        for k in SPEC_KEYS:
            if k in st:
                v = st[k]
                p[k] = float(Fraction(v)) if k == "step_size" and isinstance(v, str) else v
        if st["attack"] == "square":
            p.setdefault("restarts", 1)
        out.append(Choice(st["attack"], json.dumps(p, sort_keys=True), st.get("grad", "none")))
    return out


def real_cascades(path: str | None, n: int, eps: str, norm: str = "Linf") -> dict[str, dict]:
    """The real cascades' masks in a results file, per shipped version for ``norm`` (``v1``, ``v2``, ...; a
    version of 2 or more only from rows of exactly the shipped stage list)."""
    if not path:
        return {}
    rel = ResultsStore(path).read()
    out = {}
    for v in versions("reliable"):
        proto = load_protocol(f"reliable-v{v}")
        if proto.norm != norm:
            continue
        got = cascade_masks(rel, n, eps, v, proto.digest() if v >= 2 else None)
        if got:
            out[f"v{v}"] = got
    return out


def _md(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, floatfmt=".1f")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("evidence")
    ap.add_argument("--v1", "--real", dest="v1",
                    help="results file with real reliable rows (every shipped version; their first n images compared)")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--eps", default="8/255")
    ap.add_argument("--norm", default="Linf", choices=["Linf", "L2", "L1"], help="the threat model of the matrix")
    ap.add_argument("--probe-images", type=int, default=64)
    ap.add_argument("--threshold", type=float, default=0.005)
    ap.add_argument("--model", action="append", help="choose on these models only (default: every model)")
    ap.add_argument("--write", action="store_true",
                    help="write the choice as robench/eval/protocols/reliable-v<--version>.toml")
    ap.add_argument("--version", type=int, default=2, help="the protocol version the choice is written as")
    ap.add_argument("--table", default=str(ROOT / "benchmarks" / "selection.md"))
    ap.add_argument("--replay", metavar="FILE.toml",
                    help="replay this stage list on both splits instead of choosing (no --write)")
    a = ap.parse_args()
    if a.replay and a.write:
        ap.error("--replay and --write exclude each other")
    mx = read_matrix(ResultsStore(a.evidence).read(), a.n, a.eps)
    half = a.n // 2
    sel, val = np.arange(0, half), np.arange(half, a.n)
    pp = probe_params(a.norm, a.eps)
    probe = (PROBE_ATTACK, json.dumps(pp, sort_keys=True))
    paths = [g for g in PROBE_PATHS if any((*probe, g) in cells for cells in mx.masks.values())]
    if a.replay:
        replay(a, mx, sel, val, probe, paths)
        return
    chosen = select(mx, sel, probe, paths, a.probe_images, a.threshold, a.model)
    real = real_cascades(a.v1, a.n, a.eps, a.norm)
    picks = pd.DataFrame([{"#": i + 1, "stage": c.label(), "est. cost": cost,
                           **{m.removeprefix("fmnist-"): g for m, g in gain.items()}}
                          for i, (c, gain, cost) in enumerate(zip(chosen.stages, chosen.gains, chosen.cost,
                                                                  strict=True))])
    tables = [evaluate_choice(mx, chosen.stages, idx, probe, paths, a.probe_images, real)
              for idx in (sel, val)]
    cmd = "scripts/select_stages.py " + " ".join(sys.argv[1:])
    out = [f"# Choosing the reliable protocol's stages (version {a.version})", "",
           f"Made by `.venv/bin/python {cmd}` on {date.today()}, from {a.evidence} "
           f"({len(mx.models)} models, {a.norm} eps {a.eps}, the first {a.n} test images).",
           f"Selection split: images 0-{half - 1}; validation split: images {half}-{a.n - 1} (never seen by the "
           "choice). Greedy: the stage that breaks the most still-robust selection images per unit of cost "
           "(gradient evaluations per image, scaled by the share of images still robust when it runs), "
           f"until none breaks more than {100 * a.threshold:.1f} % of the split on any model; Square last.",
           "A cell measured on only some models counts as breaking nothing on the others.", "",
           "## The chosen stages (images newly broken on the selection split, per model)", "", _md(picks), "",
           "## Selection split", "", _md(tables[0]), "", "## Validation split (held out)", "", _md(tables[1]), ""]
    Path(a.table).write_text("\n".join(out))
    print("\n".join(out))
    if a.write:
        table = Path(a.table).resolve()
        table = table.relative_to(ROOT) if table.is_relative_to(ROOT) else table
        why = (f"The reliable protocol, version {a.version}: stages chosen by scripts/select_stages.py on the "
               f"evidence matrix\n({a.evidence}, images 0-{half - 1} of {len(mx.models)} models) and proven on "
               f"images {half}-{a.n - 1};\nthe table is {table}. probe:K = the K-th best path of this model's probe.")
        dest = ROOT / "robench" / "eval" / "protocols" / f"reliable-v{a.version}.toml"
        dest.write_text(stage_toml(chosen.stages, pp, paths, a.probe_images, why, a.version, a.norm, a.eps))
        print(f"-> {dest}")


def replay(a: argparse.Namespace, mx, sel: np.ndarray, val: np.ndarray, probe: tuple[str, str],
           paths: list[str]) -> None:
    """The tables of ``main`` for a stage list fixed in advance: how it does on models it was not chosen on."""
    stages = replay_stages(Path(a.replay))
    real = real_cascades(a.v1, a.n, a.eps, a.norm)
    tables = [evaluate_choice(mx, stages, idx, probe, paths, a.probe_images, real) for idx in (sel, val)]
    cmd = "scripts/select_stages.py " + " ".join(sys.argv[1:])
    out = [f"# Replaying the stage list {Path(a.replay).name} on the evidence matrix", "",
           f"Made by `.venv/bin/python {cmd}` on {date.today()}, from {a.evidence} "
           f"({len(mx.models)} models, eps {a.eps}, the first {a.n} test images). Each model's probe ranking is "
           f"simulated from its best-iterate PGD-50 cells on its first {a.probe_images} images of each split, each "
           "stage's mask is the matrix cell with the same attack, budget and (ranked) path, and `stages missing` "
           "counts the stages the matrix has no cell for on that model (they break nothing here, so the gap is an "
           "upper bound).", "",
           "Stages: " + "; ".join(c.label() for c in stages) + ".", "",
           "## Images 0-" + str(sel[-1]), "", _md(tables[0]), "", f"## Images {val[0]}-{val[-1]}", "",
           _md(tables[1]), ""]
    Path(a.table).write_text("\n".join(out))
    print("\n".join(out))


if __name__ == "__main__":
    main()
