"""Order attack x path cells into a cascade from measured per-sample masks (how RELIABLE's stages were chosen).

Reads a results CSV whose rows carry ``robust_mask`` (e.g. the evidence run of README, "The reliable protocol"),
and, for the models given, greedily picks the cell (attack + parameters + gradient path, the same for every model)
that breaks the most samples not yet broken per second of estimated cascade cost (its measured seconds scaled by
the share of samples still robust when it would run), until no cell breaks anything more. Prints one line per
pick: newly broken per model, cumulative robust accuracy per model, and the estimated cost.

    .venv/bin/python scripts/choose_stages.py results/evidence.csv --eps 8/255
    .venv/bin/python scripts/choose_stages.py results/evidence-l2.csv --eps 0.5 --first 100   # L2, selection split
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robench.results import ResultsStore  # noqa: E402
from robench.results.stats import decode_mask  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results")
    p.add_argument("--eps", default="8/255")
    p.add_argument("--model", action="append")
    p.add_argument("--first", type=int, default=None, help="choose on the first N images only (a selection split)")
    a = p.parse_args()
    df = ResultsStore(a.results).read()
    df = df[(df["eps_str"] == a.eps) & ~df["grad"].isin(["worst", "none"]) & (df["robust_mask"] != "")]
    if a.model:
        df = df[df["model"].isin(a.model)]
    models = sorted(df["model"].unique())
    cells: dict[tuple, dict] = {}
    for r in df.to_dict("records"):
        mask = decode_mask(r["robust_mask"], int(r["n"]), int(r["robust_count"]))
        share = min(a.first, len(mask)) / len(mask) if a.first else 1.0  # the cost of the selection images
        cells.setdefault((r["attack"], r["params"], r["grad"]), {})[r["model"]] = (
            mask[: a.first] if a.first else mask, float(r["seconds"]) * share, int(r["clean_count"] * share))
    cells = {k: v for k, v in cells.items() if set(v) == set(models)}
    # start from the samples some cell left robust: those every cell breaks add the same to each (no signal)
    alive = {m: np.logical_or.reduce([v[m][0] for v in cells.values()]) for m in models}
    order = []
    while True:
        best, best_rate = None, 0.0
        for key, v in cells.items():
            if key in order:
                continue
            gain = sum(int((alive[m] & ~v[m][0]).sum()) for m in models)
            cost = sum(v[m][1] * alive[m].sum() / max(v[m][2], 1) for m in models)
            rate = gain / max(cost, 1e-9)
            if gain > 0 and rate > best_rate:
                best, best_rate = key, rate
        if best is None:
            break
        order.append(best)
        gains = {m: int((alive[m] & ~cells[best][m][0]).sum()) for m in models}
        cost = sum(cells[best][m][1] * alive[m].sum() / max(cells[best][m][2], 1) for m in models)
        for m in models:
            alive[m] &= cells[best][m][0]
        accs = ", ".join(f"{m}: -{gains[m]} -> {100 * alive[m].mean():.1f}%" for m in models)
        print(f"{len(order)}. {best[0]} {best[1]} grad={best[2]}  est. {cost:.0f} s  |  {accs}")


if __name__ == "__main__":
    main()
