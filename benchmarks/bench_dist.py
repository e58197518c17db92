"""Benchmark sharded attacks (issue 14): one rank vs two ranks under torchrun, one thread each, side by side.

``python benchmarks/bench_dist.py [--model ID] [--images 200] [--reliable-images 100] [--batch-size 32]
[--out FILE]`` runs, for K = 1 and K = 2, ``torchrun --nproc_per_node K -- benchmarks/bench_dist.py`` as
workers (gloo, CPU): each rank loads the shipped zoo model and, on its share of the first ``--images``
Fashion-MNIST test images, computes clean predictions and one PGD-10 cell (BPTT, 8/255) through the same
:func:`robench.eval.cell.run_cell` that ``robench attack`` uses; then the whole reliable cascade
(:func:`robench.eval.cascade.run_reliable`, every stage re-split over the ranks) on the first ``--reliable-images``
(0 skips it). Rank 0 writes each gathered per-sample vector and the time between two barriers (the attack
phase, without process start-up). The report gives both times, the speed-up, the end-to-end wall time of each torchrun
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
    from robench.eval.cascade import run_reliable
    from robench.eval.cell import clean_correct, run_cell
    from robench.eval.sweep import Data, load_data, load_targets
    from robench.results.stats import encode_mask
    from robench.zoo import select

    dev = torch.device("cpu")
    target = load_targets(select(cfg["model"], cfg["zoo"]), cfg["zoo"])[0]
    data, _ = load_data(target.dataset, cfg.get("data_dir"), cfg["images"])
    mb = cfg["min_batches"]
    spec = AttackSpec("pgd", eps=8 / 255, eps_str="8/255", steps=10, step_size=2 / 255, min_batches=mb)
    with session(dev) as part:
        model = target.model.to(dev).eval()
        barrier(part)
        t0 = time.perf_counter()
        clean = clean_correct(model, data.x, data.y, cfg["batch_size"], part)
        correct = run_cell(model, spec, "bptt", data.x, data.y, seed=0, batch_size=cfg["batch_size"], device=dev,
                           clean=clean, part=part)
        barrier(part)
        seconds = time.perf_counter() - t0
        out = {"ranks": part.count, "seconds": seconds, "n": len(correct), "clean": int(clean.sum()),
               "robust": int(correct.sum()), "mask": encode_mask(correct.numpy()), "dataset": data.name}
        if cfg["reliable_images"]:
            sub = Data(data.name, data.x[:cfg["reliable_images"]], data.y[:cfg["reliable_images"]])
            barrier(part)
            t0 = time.perf_counter()
            ev = run_reliable([target], sub, batch_size=cfg["batch_size"], device=dev, part=part, min_batches=mb)
            barrier(part)
            worst = ev.records[ev.records["grad"] == "worst"].iloc[0]
            out["reliable"] = {"seconds": time.perf_counter() - t0, "n": int(worst["n"]),
                               "clean": int(worst["clean_count"]), "robust": int(worst["robust_count"]),
                               "mask": worst["robust_mask"]}
        if part.index == 0:
            Path(cfg["result"]).write_text(json.dumps(out))


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
    ap.add_argument("--reliable-images", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--min-batches", type=int, default=2, help="robench attack --min-batches (also run with 1 on "
                    "one rank, for its cost)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "dist.md"))
    a = ap.parse_args()
    if not 0 <= a.reliable_images <= a.images:
        sys.exit(f"--reliable-images {a.reliable_images}: must be between 0 and --images ({a.images})")
    cfg = {"model": a.model, "zoo": a.zoo, "data_dir": a.data_dir, "images": a.images, "batch_size": a.batch_size,
           "reliable_images": a.reliable_images, "min_batches": a.min_batches}
    folder = Path(a.out).parent
    load0, t0 = os.getloadavg(), time.perf_counter()
    one, two = run(1, cfg, folder), run(2, cfg, folder)
    base = run(1, {**cfg, "min_batches": 1}, folder) if a.min_batches > 1 else None
    load1 = os.getloadavg()
    report = render(a, one, two, load0, load1, time.perf_counter() - t0, base)
    Path(a.out).write_text(report)
    for k in (1, 2):
        (folder / f"bench-dist-k{k}.json").unlink(missing_ok=True)
    print(report)


def render(a, one: dict, two: dict, load0, load1, wall: float, base: dict | None = None) -> str:
    import torch

    same = one["mask"] == two["mask"]
    rows = [f"| {r['ranks']} | {r['seconds']:.1f} | {r['wall']:.1f} | {r['clean']} | {r['robust']} |"
            for r in (one, two)]
    return "\n".join([
        "# Sharded attacks: 1 rank vs 2 ranks (torchrun, gloo, CPU)", "",
        f"Made by `python benchmarks/bench_dist.py --model {a.model} --images {a.images} --reliable-images "
        f"{a.reliable_images} --batch-size {a.batch_size} --min-batches {a.min_batches}` on "
        f"{time.strftime('%Y-%m-%d')}.",
        f"Cell: PGD-10 (torchattacks, step 2/255, random start), eps 8/255, BPTT, seed 0, on the first {one['n']} "
        f"images of {one['dataset']}; batches of {a.batch_size}, and at least {a.min_batches} per cell and stage "
        "(`--min-batches`); one torch thread per rank.", "",
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}; "
        f"load average at start {' '.join(f'{v:.2f}' for v in load0)}, at end "
        f"{' '.join(f'{v:.2f}' for v in load1)}; wall time of this run {wall:.0f} s.", "",
        "| ranks | attack phase (s) | torchrun command (s) | clean | robust |", "|---|---|---|---|---|", *rows, "",
        f"- speed-up of the attack phase: **{one['seconds'] / two['seconds']:.2f}x** (target >= 1.7x); "
        f"end to end: {one['wall'] / two['wall']:.2f}x",
        f"- per-sample masks of 1 and 2 ranks identical: **{'yes' if same else 'NO'}** (hex packbits, "
        f"{len(one['mask']) // 2} bytes)", *_base(one, two, base, "seconds"), "",
        *_reliable(one, two, base)])


def _base(one: dict, two: dict, base: dict | None, key: str) -> list[str]:
    """What the smaller batches cost one rank (its time with --min-batches 1, the largest batches), and the
    speed-up of 2 ranks over the faster of the two one-rank runs."""
    if base is None:
        return []
    return [f"- one rank with `--min-batches 1` (batches as large as --batch-size): {base[key]:.1f} s, so the "
            f"smaller batches cost one rank {one[key] / base[key]:.2f}x; 2 ranks against the faster one-rank run: "
            f"**{min(one[key], base[key]) / two[key]:.2f}x**"]


def _reliable(one: dict, two: dict, base: dict | None = None) -> list[str]:
    if "reliable" not in one:
        return []
    r1, r2 = one["reliable"], two["reliable"]
    same = r1["mask"] == r2["mask"]
    return [
        f"## The reliable cascade (`--suite reliable`, 7 stages), first {r1['n']} images", "",
        "Each stage attacks only the images still robust, re-split over the ranks in equal batches.", "",
        "| ranks | attack phase (s) | clean | robust (worst case) |", "|---|---|---|---|",
        *(f"| {k} | {r['seconds']:.1f} | {r['clean']} | {r['robust']} |" for k, r in ((1, r1), (2, r2))), "",
        f"- speed-up: **{r1['seconds'] / r2['seconds']:.2f}x** (target >= 1.7x)",
        f"- worst-case masks of 1 and 2 ranks identical: **{'yes' if same else 'NO'}**",
        *_base(r1, r2, base["reliable"] if base else None, "seconds"), ""]


if __name__ == "__main__":
    if "BENCH_DIST" in os.environ:
        worker(json.loads(os.environ["BENCH_DIST"]))
    else:
        main()
