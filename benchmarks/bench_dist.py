"""Benchmark sharded attacks (issue 14): one rank vs two ranks under torchrun, one thread each, side by side.

``python benchmarks/bench_dist.py [--model ID] [--images 200] [--batch-size 32] [--out FILE]`` runs, for K = 1
and K = 2, ``torchrun --nproc_per_node K -- benchmarks/bench_dist.py`` as workers (gloo, CPU): each rank loads
the shipped zoo model, computes clean predictions and one PGD-10 cell (BPTT, 8/255) on its share of the first
``--images`` Fashion-MNIST test images, through the same :func:`robench.evaluate.run_cell` that ``robench attack``
uses, and rank 0 writes the gathered per-sample vector and the time between two barriers (the attack phase,
without process start-up). The report gives both times, the speed-up, the end-to-end wall time of each torchrun
command, and whether the two vectors are identical bit for bit. It asserts no target; the load average is
recorded, since the machine is shared. Worker settings travel in the environment (``BENCH_DIST``), so no
option of this script can be taken by torchrun's own parser for an abbreviation of one of its options.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(cfg: dict) -> None:
    import torch

    torch.set_num_threads(1)
    from robench.attacks import AttackSpec
    from robench.dist import barrier, session
    from robench.evaluate import clean_correct, load_data, load_targets, run_cell
    from robench.stats import encode_mask
    from robench.zoo import select

    dev = torch.device("cpu")
    target = load_targets(select(cfg["model"], cfg["zoo"]), cfg["zoo"])[0]
    data, _ = load_data(target.dataset, cfg.get("data_dir"), cfg["images"])
    spec = AttackSpec("pgd", eps=8 / 255, eps_str="8/255", steps=10, step_size=2 / 255)
    with session(dev) as part:
        model = target.model.to(dev).eval()
        barrier(part)
        t0 = time.perf_counter()
        clean = clean_correct(model, data.x, data.y, cfg["batch_size"], part)
        correct = run_cell(model, spec, "bptt", data.x, data.y, seed=0, batch_size=cfg["batch_size"], device=dev,
                           clean=clean, part=part)
        barrier(part)
        seconds = time.perf_counter() - t0
        if part.index == 0:
            Path(cfg["result"]).write_text(json.dumps({
                "ranks": part.count, "seconds": seconds, "n": len(correct), "clean": int(clean.sum()),
                "robust": int(correct.sum()), "mask": encode_mask(correct.numpy()), "dataset": data.name}))


def run(k: int, cfg: dict, folder: Path) -> dict:
    result = folder / f"bench-dist-k{k}.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "BENCH_DIST": json.dumps({**cfg, "result": str(result)})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(k), "--", __file__]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"torchrun with {k} ranks failed:\n{done.stderr[-3000:]}")
    return {**json.loads(result.read_text()), "wall": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="fmnist-vgg11-lif-gn")
    ap.add_argument("--zoo", default=str(ROOT / "zoo"))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "dist.md"))
    a = ap.parse_args()
    cfg = {"model": a.model, "zoo": a.zoo, "data_dir": a.data_dir, "images": a.images, "batch_size": a.batch_size}
    folder = Path(a.out).parent
    load0, t0 = os.getloadavg(), time.perf_counter()
    one, two = run(1, cfg, folder), run(2, cfg, folder)
    load1 = os.getloadavg()
    report = render(a, one, two, load0, load1, time.perf_counter() - t0)
    Path(a.out).write_text(report)
    for k in (1, 2):
        (folder / f"bench-dist-k{k}.json").unlink(missing_ok=True)
    print(report)


def render(a, one: dict, two: dict, load0, load1, wall: float) -> str:
    import torch

    same = one["mask"] == two["mask"]
    rows = [f"| {r['ranks']} | {r['seconds']:.1f} | {r['wall']:.1f} | {r['clean']} | {r['robust']} |"
            for r in (one, two)]
    return "\n".join([
        "# Sharded attacks: 1 rank vs 2 ranks (torchrun, gloo, CPU)", "",
        f"Made by `python benchmarks/bench_dist.py --model {a.model} --images {a.images} --batch-size "
        f"{a.batch_size}` on {time.strftime('%Y-%m-%d')}.",
        f"Cell: PGD-10 (torchattacks, step 2/255, random start), eps 8/255, BPTT, seed 0, on the first {one['n']} "
        f"images of {one['dataset']}; batches of {a.batch_size}; one torch thread per rank.", "",
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}; "
        f"load average at start {' '.join(f'{v:.2f}' for v in load0)}, at end "
        f"{' '.join(f'{v:.2f}' for v in load1)}; wall time of this run {wall:.0f} s.", "",
        "| ranks | attack phase (s) | torchrun command (s) | clean | robust |", "|---|---|---|---|---|", *rows, "",
        f"- speed-up of the attack phase: **{one['seconds'] / two['seconds']:.2f}x** (target >= 1.7x); "
        f"end to end: {one['wall'] / two['wall']:.2f}x",
        f"- per-sample masks of 1 and 2 ranks identical: **{'yes' if same else 'NO'}** (hex packbits, "
        f"{len(one['mask']) // 2} bytes)", ""])


if __name__ == "__main__":
    if "BENCH_DIST" in os.environ:
        worker(json.loads(os.environ["BENCH_DIST"]))
    else:
        main()
