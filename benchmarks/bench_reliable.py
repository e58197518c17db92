"""Cost of ``--suite reliable`` against AutoAttack standard, side by side (issue 12, item 5).

For each zoo model, on the same first ``--n`` test images at eps = 8/255, in one process with the same thread
count: AutoAttack standard (pyautoattack, every parameter fixed; BPTT gradient, the model's own) and the reliable
cascade (robench.eval.cascade.RELIABLE). Reports robust accuracy (with the per-sample overlap: samples only one of
them broke), wall time and process CPU time, and their ratios. Target: reliable robust accuracy <= AutoAttack's
and wall time <= 1.0x AutoAttack's. The script asserts nothing; it writes its report to ``--out``.

    .venv/bin/python benchmarks/bench_reliable.py --model fmnist-vgg11-lif-gn --model fmnist-vgg11-stable-gn --n 100
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robench.attacks import AttackSpec  # noqa: E402
from robench.eval.cascade import RELIABLE, run_reliable  # noqa: E402
from robench.eval.cell import clean_correct, run_cell  # noqa: E402
from robench.eval.sweep import Target, load_data  # noqa: E402
from robench.zoo import load  # noqa: E402


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def measure(model_id: str, zoo: str, n: int, batch_size: int, seed: int) -> dict:
    model, card = load(model_id, zoo)
    data, _ = load_data(card.dataset, None, n)
    model.eval()
    clean = clean_correct(model, data.x, data.y, batch_size)
    aa_spec = AttackSpec("autoattack", eps=8 / 255, eps_str="8/255", version="standard")
    aa, aa_wall, aa_cpu = timed(lambda: run_cell(model, aa_spec, "bptt", data.x, data.y, seed, batch_size,
                                                 clean=clean))
    target = Target(card.id, card.sha256, model, card.dataset)
    ev, rel_wall, rel_cpu = timed(lambda: run_reliable([target], data, None, seed=seed, batch_size=batch_size,
                                                       device="cpu"))
    worst = ev.records[ev.records["grad"] == "worst"].iloc[0]
    from robench.results.stats import decode_mask

    rel = torch.from_numpy(decode_mask(worst["robust_mask"], n, int(worst["robust_count"])).copy())
    return {"model": model_id, "n": n, "clean": int(clean.sum()), "aa": int(aa.sum()), "rel": int(rel.sum()),
            "only_aa_broke": int((rel & ~aa).sum()), "only_rel_broke": int((aa & ~rel).sum()),
            "aa_wall": aa_wall, "aa_cpu": aa_cpu, "rel_wall": rel_wall, "rel_cpu": rel_cpu}


def report(rows: list[dict], argv: list[str]) -> str:
    lines = ["# Cost of the reliable protocol against AutoAttack standard", "",
             f"Made by `.venv/bin/python benchmarks/bench_reliable.py {' '.join(argv)}` on "
             f"{time.strftime('%Y-%m-%d')}; torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
             f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.2f}.",
             f"eps = 8/255, the first n test images; the reliable cascade has {len(RELIABLE)} stages; AutoAttack "
             "standard uses the BPTT gradient (the model's own surrogate).", "",
             "| model | n | clean | AA standard robust | reliable robust | broken only by AA | broken only by "
             "reliable | AA wall s | reliable wall s | wall ratio | AA CPU s | reliable CPU s | CPU ratio | "
             "target met |", "|" + "---|" * 14]
    for r in rows:
        met = r["rel"] <= r["aa"] and r["rel_wall"] <= r["aa_wall"]
        lines.append(f"| {r['model']} | {r['n']} | {100 * r['clean'] / r['n']:.1f} | {100 * r['aa'] / r['n']:.1f} | "
                     f"{100 * r['rel'] / r['n']:.1f} | {r['only_aa_broke']} | {r['only_rel_broke']} | "
                     f"{r['aa_wall']:.0f} | {r['rel_wall']:.0f} | {r['rel_wall'] / r['aa_wall']:.2f}x | "
                     f"{r['aa_cpu']:.0f} | {r['rel_cpu']:.0f} | {r['rel_cpu'] / r['aa_cpu']:.2f}x | "
                     f"{'yes' if met else '**no**'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True)
    p.add_argument("--zoo", default=str(ROOT / "zoo"))
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "reliable.md"))
    a = p.parse_args(argv)
    if os.environ.get("ROBENCH_THREADS"):
        torch.set_num_threads(int(os.environ["ROBENCH_THREADS"]))
    rows = []
    for m in a.model:
        rows.append(measure(m, a.zoo, a.n, a.batch_size, a.seed))
        text = report(rows, argv)
        Path(a.out).write_text(text)
        print(text, flush=True)


if __name__ == "__main__":
    main()
