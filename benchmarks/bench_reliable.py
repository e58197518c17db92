"""Cost and strength of ``--suite reliable`` (the newest version) against AutoAttack standard and an older version.

For each zoo model, on the same first ``--n`` test images at eps = 8/255, in one process with the same thread
count: AutoAttack standard (pyautoattack, every parameter fixed; BPTT gradient, the model's own), the newest
reliable protocol (its probe and adaptive part included) and an older version (``--against``, default the one
before the newest). Reports robust accuracy, the images only one side broke (the newest version against each of the
others), wall time and process CPU time, and the ratios to AutoAttack. Target: newest robust accuracy <= AutoAttack's,
no image broken only by AutoAttack, wall time <= 1.0x AutoAttack's. The script asserts nothing; it writes its report
to ``--out`` after every model.

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
from robench.eval.cascade import protocol, run_reliable  # noqa: E402
from robench.eval.cell import clean_correct, run_cell  # noqa: E402
from robench.eval.sweep import Target, load_data  # noqa: E402
from robench.results.stats import decode_mask  # noqa: E402
from robench.zoo import config_digest, load  # noqa: E402

SIDES = ("aa", "new", "old")


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def cascade_mask(records, n: int) -> torch.Tensor:
    whole = records[records["grad"] == "worst"].iloc[0]
    return torch.from_numpy(decode_mask(whole["robust_mask"], n, int(whole["robust_count"])).copy())


def measure(model_id: str, zoo: str, n: int, batch_size: int, seed: int, trust_code: bool, against: str) -> dict:
    model, card = load(model_id, zoo, trust_code=trust_code)
    data, _ = load_data(card.dataset, None, n)
    model.eval()
    clean = clean_correct(model, data.x, data.y, batch_size)
    target = Target(card.id, card.sha256, model, card.dataset, config_digest(card))
    aa_spec = AttackSpec("autoattack", eps=8 / 255, eps_str="8/255", version="standard")
    out = {"model": model_id, "n": len(data.x), "clean": int(clean.sum())}
    masks = {}
    masks["aa"], out["aa_wall"], out["aa_cpu"] = timed(
        lambda: run_cell(model, aa_spec, "bptt", data.x, data.y, seed, batch_size, clean=clean))
    for side, name in (("new", "reliable"), ("old", against)):
        ev, out[f"{side}_wall"], out[f"{side}_cpu"] = timed(
            lambda name=name: run_reliable([target], data, None, protocol(name), seed=seed, batch_size=batch_size,
                                           device="cpu"))
        masks[side] = cascade_mask(ev.records, len(data.x))
        if side == "new":
            out["flags"] = str(ev.records[ev.records["grad"] == "worst"]["flags"].iloc[0])
    for side in SIDES:
        out[side] = int(masks[side].sum())
    for other in ("aa", "old"):  # images robust under the newest but broken by the other, and the reverse
        out[f"only_{other}"] = int((masks["new"] & ~masks[other]).sum())
        out[f"only_new_vs_{other}"] = int((masks[other] & ~masks["new"]).sum())
    return out


def report(rows: list[dict], argv: list[str], against: str) -> str:
    new, old = protocol("reliable"), protocol(against)
    o = f"v{old.version}"
    pct = lambda r, k: f"{100 * r[k] / r['n']:.1f}"  # noqa: E731
    lines = [f"# Cost and strength of the reliable protocol against AutoAttack standard and version {old.version}", "",
             f"Made by `.venv/bin/python benchmarks/bench_reliable.py {' '.join(argv)}` on "
             f"{time.strftime('%Y-%m-%d')}; torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
             f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.2f}.",
             f"eps = 8/255, the same first n test images for all three; `reliable` is version {new.version} "
             f"({len(new.stages)} stages, probe and adaptive part included), `{against}` version {old.version}; "
             "AutoAttack standard uses the BPTT gradient (the model's own surrogate). \"Only AA\" counts images "
             f"AutoAttack broke and reliable did not; \"only rel.\" the reverse (likewise against {o}).", "",
             f"| model | n | clean | AA standard | reliable | {against} | only AA | only rel. (vs AA) | only {o} | "
             f"only rel. (vs {o}) | AA wall s | rel. wall s | {o} wall s | rel./AA wall | AA CPU s | rel. CPU s | "
             f"{o} CPU s | rel./AA CPU | flags | target met |", "|" + "---|" * 20]
    for r in rows:
        met = r["new"] <= r["aa"] and r["only_aa"] == 0 and r["new_wall"] <= r["aa_wall"]
        lines.append(
            f"| {r['model']} | {r['n']} | {pct(r, 'clean')} | {pct(r, 'aa')} | {pct(r, 'new')} | {pct(r, 'old')} | "
            f"{r['only_aa']} | {r['only_new_vs_aa']} | {r['only_old']} | {r['only_new_vs_old']} | "
            f"{r['aa_wall']:.0f} | {r['new_wall']:.0f} | {r['old_wall']:.0f} | {r['new_wall'] / r['aa_wall']:.2f}x | "
            f"{r['aa_cpu']:.0f} | {r['new_cpu']:.0f} | {r['old_cpu']:.0f} | {r['new_cpu'] / r['aa_cpu']:.2f}x | "
            f"{r['flags'] if r['flags'] not in ('', 'nan') else '–'} | {'yes' if met else '**no**'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True)
    p.add_argument("--zoo", default=str(ROOT / "zoo"))
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trust-code", action="store_true", help="let foreign zoo entries run their code")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "reliable.md"))
    p.add_argument("--against", help="the older version measured beside the newest (default: the one before it)")
    a = p.parse_args(argv)
    a.against = a.against or f"reliable-v{protocol('reliable').version - 1}"
    if os.environ.get("ROBENCH_THREADS"):
        torch.set_num_threads(int(os.environ["ROBENCH_THREADS"]))
    rows = []
    for m in a.model:
        rows.append(measure(m, a.zoo, a.n, a.batch_size, a.seed, a.trust_code, a.against))
        text = report(rows, argv, a.against)
        Path(a.out).write_text(text)
        print(text, flush=True)


if __name__ == "__main__":
    main()
