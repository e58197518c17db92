"""Order attack x path cells into a cascade from measured per-sample masks (how RELIABLE's stages were chosen).

Reads a results CSV whose rows carry ``robust_mask`` (e.g. the evidence run of README, "The reliable protocol"),
and, for the models given, greedily picks the cell (attack + parameters + gradient path, the same for every model)
that breaks the most samples not yet broken per second of estimated cascade cost (its measured seconds scaled by
the share of samples still robust when it would run), until no cell breaks anything more
(:func:`robench.results.selection.greedy_by_time`). Prints one line per pick: newly broken per model, cumulative
robust accuracy per model, and the estimated cost.

    .venv/bin/python scripts/choose_stages.py results/evidence.csv --eps 8/255
    .venv/bin/python scripts/choose_stages.py results/evidence-l2.csv --eps 0.5 --first 100   # L2, selection split
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robench.results import ResultsStore  # noqa: E402
from robench.results.selection import greedy_by_time, read_timed  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results")
    p.add_argument("--eps", default="8/255")
    p.add_argument("--model", action="append")
    p.add_argument("--first", type=int, default=None, help="choose on the first N images only (a selection split)")
    a = p.parse_args()
    models, cells = read_timed(ResultsStore(a.results).read(), a.eps, a.model, a.first)
    for i, pick in enumerate(greedy_by_time(models, cells), 1):
        accs = ", ".join(f"{m}: -{pick.gains[m]} -> {100 * pick.robust[m]:.1f}%" for m in models)
        print(f"{i}. {pick.key[0]} {pick.key[1]} grad={pick.key[2]}  est. {pick.cost:.0f} s  |  {accs}")


if __name__ == "__main__":
    main()
