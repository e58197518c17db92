"""Benchmark the fused neuron engine against the per-step reference loop (issue 5), side by side.

One command: ``make bench`` (= ``.venv/bin/python benchmarks/bench_engine.py``); ``--quick`` for a short run.
The model is the shipped zoo's: ``vgg11`` at width 0.125, fc 128, 1x28x28 inputs, 10 classes. Measured:

(a) training throughput (images/s, one SGD step of cross-entropy) at T = 4 and 8;
(b) PGD-10 throughput (``torchattacks.PGD`` inside ``robench.snn.paths.grad_mode``), BPTT and rate, and the
    cost of one PGD iteration relative to one training step;
(c) activation memory of one training step: bytes of the tensors autograd saves for backward (deduplicated
    by storage, parameters excluded; deterministic) and the peak-RSS growth of the step in a fresh process;
(d) how the step time grows with T (2, 4, 8, 16) and with the batch size;
(e) PGD-10 throughput per gradient path (``robench.snn.paths``: bptt, rate, each attack-time surrogate, assg)
    with the fused engine at T = 8, and its ratio to bptt (``--only paths`` runs this part alone and only prints).

Engines are timed interleaved (one sample of each in turn, after a warm-up), and medians are reported, so
load from other processes hits both alike. The models run channels-last by default (``SNN.channels_last``);
the reference loop is timed in both layouts (``reference`` = NCHW, ``reference+cl``) and every speedup is
taken against the faster of the two, so a layout change alone cannot pass for an engine gain.
``fused+compile`` is the fused engine with the opt-in ``torch.compile`` kernels (``neurons.set_compile``), timed
at T = 8 where a C++ compiler is found (``--no-compile`` skips it); its first calls compile. ``floor``
replaces every neuron by a plain threshold with an identity gradient: the cost of the shared layers alone,
i.e. the most any neuron engine could reach.
The script writes its report (with the command that made it) to ``--out``; it asserts no target.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robench.snn import neurons  # noqa: E402
from robench.snn.models import ModelConfig, build_model  # noqa: E402
from robench.snn.paths import grad_mode, parse_paths  # noqa: E402

ZOO = dict(arch="vgg11", width=0.125, fc=128, in_channels=1, image_size=28, num_classes=10)
TARGETS = {"speedup": 2.0, "memory": 0.6, "pgd_iter": 1.2, "path": 0.9}
PATH_KEYS = "bptt,rate,triangle:w=0.5,sigmoid:k=4,arctan:a=2,rectangle:w=1,assg"  # one of each registered path


# ------------------------------------------------------------------------------------------- helpers
class _Threshold(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return (x >= 1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return g


class _Floor(nn.Module):
    """Stand-in neuron for the ``floor`` row: threshold forward, identity backward, no dynamics."""

    def __init__(self, neuron: neurons.SpikingNeuron) -> None:
        super().__init__()
        self.neuron = neuron

    def forward(self, x):
        return _Threshold.apply(self.neuron.input_current(x))


def floor_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose spiking neurons are replaced by ``_Floor`` (same weights)."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, neurons.SpikingNeuron):
                setattr(parent, name, _Floor(child))
    return model


REFERENCES = ("reference", "reference+cl")  # the per-step loop, NCHW and channels-last: the baseline is the faster
NCHW = ("reference", "fused+nchw")  # variants run in the plain NCHW layout; all others channels-last


class Variant:
    """One engine under test: a model plus how to switch it on (engine, layout, compiled kernels or floor)."""

    def __init__(self, name: str, model: nn.Module) -> None:
        self.name = name
        self.model = floor_model(model) if name == "floor" else model

    def activate(self) -> nn.Module:
        if self.name != "floor":
            neurons.set_engine(self.model, "reference" if self.name in REFERENCES else "fused")
        self.model.channels_last = self.name not in NCHW
        neurons.set_compile(self.name == "fused+compile")
        return self.model


def make_model(T: int) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(T=T, **ZOO))


def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def pgd_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mode: str, steps: int) -> Callable[[], None]:
    import torchattacks

    attack = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=steps, random_start=True)

    def run() -> None:
        model.eval()
        with grad_mode(model, mode):
            attack(x, y)

    return run


class Times(NamedTuple):
    """Medians per variant: wall-clock seconds and process CPU seconds of one call."""

    wall: dict[str, float]
    cpu: dict[str, float]


def timed(variants: list[Variant], make: Callable[[nn.Module], Callable[[], None]], repeats: int,
          warmup: int = 1) -> Times:
    """Time one call per variant; samples interleaved across variants, after ``warmup`` calls of each."""
    fns = {v.name: make(v.model) for v in variants}
    wall: dict[str, list[float]] = {v.name: [] for v in variants}
    cpu: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(warmup + repeats):
        for v in variants:
            v.activate()
            w0, c0 = time.perf_counter(), time.process_time()
            fns[v.name]()
            if r >= warmup:
                wall[v.name].append(time.perf_counter() - w0)
                cpu[v.name].append(time.process_time() - c0)
    neurons.set_compile(False)
    med = statistics.median
    return Times({k: med(s) for k, s in wall.items()}, {k: med(s) for k, s in cpu.items()})


def saved_bytes(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes autograd holds for the backward of one training step when the forward ends.

    Every tensor packed by ``saved_tensors_hooks`` is tracked by a weak reference; those still alive when the
    loss is computed are summed, deduplicated by storage, parameters and buffers excluded (a graph branch
    that dies during the forward, like the reference's unused last reset, frees what it saved).
    """
    skip = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    refs: list[weakref.ref] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        refs.append(weakref.ref(t))
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(x), y)
    gc.collect()
    alive = [t for t in (r() for r in refs) if t is not None]
    sizes = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in alive}
    del alive
    loss.backward()
    return sum(n for ptr, n in sizes.items() if ptr not in skip)


def _status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (Linux), e.g. VmRSS or VmHWM (peak RSS of this process image)."""
    try:
        return int(Path("/proc/self/status").read_text().split(field + ":")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None


def rss_child(engine: str, T: int, n: int, threads: int) -> None:
    """Run in a fresh process: print the peak-RSS growth (bytes) of one training step as JSON.

    Uses VmHWM, reset to the current RSS just before the step; ``ru_maxrss`` would not do, as a child
    started by the (large) benchmark process inherits its parent's peak on Linux.
    """
    torch.set_num_threads(threads)
    model = make_model(T)
    neurons.set_engine(model, engine)
    x, y = batch(n)
    step = train_step(model, x, y)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark to the current RSS
    except OSError:
        pass
    before = _status_kib("VmRSS")
    step()
    after = _status_kib("VmHWM")
    delta = None if before is None or after is None else (after - before) * 1024
    print(json.dumps({"rss_delta": delta}))


def rss_delta(engine: str, T: int, n: int, threads: int) -> int | None:
    cmd = [sys.executable, __file__, "--rss-child", engine, str(T), str(n), str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    try:
        return int(json.loads(out.stdout.strip().splitlines()[-1])["rss_delta"])
    except (ValueError, IndexError, KeyError, TypeError):
        return None


def machine(threads: int) -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return {"CPU": cpu, "cores": str(os.cpu_count()), "torch threads": str(threads),
            "torch": torch.__version__, "python": platform.python_version(),
            "load average at start": " ".join(f"{v:.2f}" for v in load)}


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares exponent k of ``y ~ x^k`` (1.0: linear)."""
    lx, ly = [math.log(v) for v in xs], [math.log(v) for v in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


def table(head: list[str], rows: list[list]) -> list[str]:
    fmt = [" | ".join(f"{c:.3g}" if isinstance(c, float) else str(c) for c in r) for r in rows]
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *[f"| {r} |" for r in fmt]]


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


# --------------------------------------------------------------------------------------------- sections
EXTRA = ("fused+nchw", "floor")  # also timed for training: the fused engine in NCHW, and the no-neuron floor


def time_training(T: int, n: int, names: list[str], repeats: int, warmup: int) -> Times:
    """Medians of one training step of the zoo model at T steps and batch ``n``, per variant."""
    model, (x, y) = make_model(T), batch(n)
    return timed([Variant(v, model) for v in names], lambda m: train_step(m, x, y), repeats, warmup)


def baseline(t: Times) -> str:
    """The faster layout of the reference loop in this measurement (by wall-clock median)."""
    return min((n for n in REFERENCES if n in t.wall), key=lambda n: t.wall[n])


def speedups(t: Times, variant: str = "fused") -> list[float]:
    """Time of the faster reference layout over the variant's time, wall-clock and CPU."""
    ref = baseline(t)
    return [t.wall[ref] / t.wall[variant], t.cpu[ref] / t.cpu[variant]]


def bench_training(p: argparse.Namespace) -> tuple[list[str], dict[int, Times]]:
    rows, out = [], {}
    for T in (4, 8):
        names = [*REFERENCES, "fused", *EXTRA] + (["fused+compile"] if p.compile and T == 8 else [])
        out[T] = t = time_training(T, p.batch, names, p.repeats, p.warmup)
        extra = [p.batch / t.wall[n] if n in t.wall else "" for n in [*EXTRA, "fused+compile"][: 2 + p.compile]]
        rows.append([T, p.batch, *[p.batch / t.wall[n] for n in (*REFERENCES, "fused")], *speedups(t), *extra])
    head = ["T", "batch", *[f"{n} img/s" for n in (*REFERENCES, "fused")], "speedup (wall)", "speedup (CPU time)"]
    return table(head + [f"{n} img/s" for n in [*EXTRA, "fused+compile"][: 2 + p.compile]], rows), out


def bench_pgd(p: argparse.Namespace, train: Times) -> tuple[list[str], dict[str, tuple[Times, dict]]]:
    rows, out, T = [], {}, 8
    names = [*REFERENCES, "fused"] + (["fused+compile"] if p.compile else [])
    model, (x, y) = make_model(T), batch(p.batch)
    for mode in ("bptt", "rate"):
        t = timed([Variant(n, model) for n in names], lambda m, mode=mode: pgd_run(m, x, y, mode, 10),
                  p.pgd_repeats, p.warmup)
        per_iter = {n: t.wall[n] / 10 / train.wall[n] for n in names}
        out[mode] = (t, per_iter)
        extra = [p.batch / t.wall["fused+compile"]] if p.compile else []
        rows.append([mode, T, p.batch, *[p.batch / t.wall[n] for n in (*REFERENCES, "fused")], *speedups(t),
                     per_iter[baseline(t)], per_iter["fused"], *extra])
    head = ["mode", "T", "batch", *[f"{n} img/s" for n in (*REFERENCES, "fused")], "speedup (wall)",
            "speedup (CPU time)", "PGD iter / train step (faster ref)", "PGD iter / train step (fused)"]
    return table(head + (["fused+compile img/s"] if p.compile else []), rows), out


def bench_memory(p: argparse.Namespace) -> tuple[list[str], dict[int, float]]:
    rows, out, mb = [], {}, 2**20
    for T in (4, 8):
        model, (x, y) = make_model(T), batch(p.batch)
        sb = {}
        for engine in ("reference", "fused"):
            neurons.set_engine(model, engine)
            sb[engine] = saved_bytes(model, x, y)
        out[T] = sb["fused"] / sb["reference"]
        rss = {e: rss_delta(e, T, p.batch, p.threads) for e in ("reference", "fused")} if not p.quick else {}
        cells = ["skipped (--quick)"] * 3 if p.quick else ["n/a"] * 3 if None in rss.values() else [
            rss["reference"] / mb, rss["fused"] / mb, rss["fused"] / max(rss["reference"], 1)]
        rows.append([T, p.batch, sb["reference"] / mb, sb["fused"] / mb, out[T], *cells])
    head = ["T", "batch", "reference saved MiB", "fused saved MiB", "ratio (fused/ref)",
            "reference peak-RSS growth MiB", "fused peak-RSS growth MiB", "ratio"]
    return table(head, rows), out


def growth(label: str, xs: tuple[int, ...], by: dict[int, Times], n_img: dict[int, int]) -> tuple[list[str], dict]:
    """Rows of step time against ``xs`` (T or batch), the ratio per doubling and the fitted exponent; the
    reference column is the faster of its two layouts at each size."""
    def wall(v: int, n: str, clock: str = "wall") -> float:
        """Median seconds of variant ``n`` at size ``v``; ``reference`` is its faster layout there (by wall)."""
        return getattr(by[v], clock)[baseline(by[v]) if n == "reference" else n]

    names, rows = ("reference", "fused"), []
    for i, v in enumerate(xs):
        dbl = [wall(v, n) / wall(xs[i - 1], n) if i else "" for n in names]
        rows.append([v, wall(v, "reference"), wall(v, "fused"), *speedups(by[v]), n_img[v] / wall(v, "fused"), *dbl])
    head = [label, "reference s/step", "fused s/step", "speedup (wall)", "speedup (CPU time)", "fused img/s",
            f"reference t({label})/t({label}/2)", f"fused t({label})/t({label}/2)"]
    k = {n: slope(list(xs), [wall(v, n) for v in xs]) for n in names}
    kc = {n: slope(list(xs), [wall(v, n, "cpu") for v in xs]) for n in names}
    note = (f"Fitted exponent k of step time ~ {label}^k (1.0 = linear): reference {k['reference']:.2f}, fused "
            f"{k['fused']:.2f} (wall); reference {kc['reference']:.2f}, fused {kc['fused']:.2f} (CPU time).")
    return [*table(head, rows), "", note], {"wall": k, "cpu": kc}


def bench_scaling(p: argparse.Namespace) -> tuple[list[str], dict]:
    names = [*REFERENCES, "fused"]
    by_T = {T: time_training(T, p.batch, names, p.scale_repeats, p.warmup) for T in p.scale_Ts}
    lines_T, k = growth("T", p.scale_Ts, by_T, dict.fromkeys(p.scale_Ts, p.batch))
    by_B = {b: time_training(8, b, names, p.scale_repeats, p.warmup) for b in p.batches}
    lines_B, _ = growth("batch", p.batches, by_B, {b: b for b in p.batches})
    return [f"Batch {p.batch}, T varies:", "", *lines_T, "", "T = 8, batch varies:", "", *lines_B], k


def bench_paths(p: argparse.Namespace) -> tuple[list[str], dict[str, float]]:
    """PGD-10 throughput per gradient path (fused engine, T = 8), interleaved; ratio = bptt time / path time."""
    T, keys = 8, [q.key for q in parse_paths(PATH_KEYS)]
    model, (x, y) = make_model(T), batch(p.batch)
    neurons.set_engine(model, "fused")
    runs = {k: pgd_run(model, x, y, k, 10) for k in keys}
    wall: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(p.warmup + p.pgd_repeats):
        for k in keys:
            w0 = time.perf_counter()
            runs[k]()
            if r >= p.warmup:
                wall[k].append(time.perf_counter() - w0)
    med = {k: statistics.median(v) for k, v in wall.items()}
    ratio = {k: med["bptt"] / med[k] for k in keys}
    rows = [[k, T, p.batch, p.batch / med[k], ratio[k]] for k in keys]
    return table(["path", "T", "batch", "fused img/s", "throughput / bptt"], rows), ratio


# ------------------------------------------------------------------------------------------------ main
def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small batch, fewer sizes, no RSS (for development)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results.md"), help="report file to write")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="also time the opt-in torch.compile kernels (default: when a C++ compiler is found)")
    ap.add_argument("--only", choices=["paths"], help="run one section alone and print it (nothing written)")
    ap.add_argument("--pgd-repeats", type=int, dest="pgd_repeats_arg",
                    help="timed PGD repeats per variant or path (default 3)")
    ap.add_argument("--rss-child", nargs=4, help=argparse.SUPPRESS)
    p = ap.parse_args(argv)
    if p.compile is None:  # inductor's CPU backend builds C++ kernels
        p.compile = neurons.compiler_found()
    full = not p.quick
    p.batch = 64 if full else 16
    p.repeats, p.pgd_repeats, p.scale_repeats, p.warmup = (5, 3, 3, 1) if full else (3, 3, 3, 1)
    p.pgd_repeats = p.pgd_repeats_arg if p.pgd_repeats_arg else p.pgd_repeats
    p.warmup += 1 if p.compile else 0  # the first compiled call compiles; the second may recompile dynamic
    p.scale_Ts = (2, 4, 8, 16) if full else (2, 4, 8)
    p.batches = (16, 32, 64, 128) if full else (8, 16, 32)
    return p


def command(argv: list[str]) -> str:
    exe = Path(sys.executable)
    try:
        exe = exe.relative_to(ROOT)
    except ValueError:
        exe = Path(exe.name)
    return " ".join([str(exe), "benchmarks/bench_engine.py", *argv])


def targets(train: dict[int, Times], pgd: dict, mem: dict[int, float], k: dict, ratio: dict[str, float]
            ) -> list[list[str]]:
    """The issue's targets against the measured figures: [target, measured (wall; CPU), verdict]."""
    def speed(label: str, t: Times) -> list[str]:
        w, c = speedups(t)
        return [f"{label} >= {TARGETS['speedup']}x the reference", f"{w:.2f}x (CPU time {c:.2f}x)",
                verdict(w >= TARGETS["speedup"])]

    rows = [speed("training throughput at T=8", train[8]),
            *[speed(f"PGD-10 ({m}) throughput at T=8", pgd[m][0]) for m in ("bptt", "rate")],
            [f"saved activation memory of a training step (T=8) <= {TARGETS['memory']}x the reference",
             f"{mem[8]:.2f}x", verdict(mem[8] <= TARGETS["memory"])]]
    for m in ("bptt", "rate"):
        r = pgd[m][1]["fused"]
        rows.append([f"one PGD iteration ({m}, fused, eval mode) <= {TARGETS['pgd_iter']}x one training step",
                     f"{r:.2f}x", verdict(r <= TARGETS["pgd_iter"])])
    if "fused+compile" in train[8].wall:  # opt-in kernels, reported beside the default engine
        for label, t in [("training", train[8]), *[(f"PGD-10 ({m})", pgd[m][0]) for m in ("bptt", "rate")]]:
            w = speedups(t, "fused+compile")[0]
            rows.append([f"(opt-in `set_compile(True)`) {label} throughput at T=8 >= {TARGETS['speedup']}x",
                         f"{w:.2f}x", verdict(w >= TARGETS["speedup"])])
    for key, r in ratio.items():
        if key == "bptt":
            continue
        ok = "(ASSG: stated, no target)" if key.startswith("assg") else verdict(r >= TARGETS["path"])
        rows.append([f"PGD-10 throughput with path {key} >= {TARGETS['path']}x bptt", f"{r:.2f}x", ok])
    kw, kc = k["wall"]["fused"], k["cpu"]["fused"]
    rows.append(["fused step time linear in T (fitted exponent <= 1.1)", f"k = {kw:.2f} (CPU time {kc:.2f})",
                 verdict(kw <= 1.1)])
    return rows


def render(p: argparse.Namespace, argv: list[str], info: dict, checks: list, sections: list[list[str]]) -> str:
    a, b, c, d, e = sections
    how = f"{p.repeats} for training, {p.pgd_repeats} for PGD, {p.scale_repeats} for scaling"
    lines = [
        "# Engine benchmark: fused vs reference", "",
        f"Made by `{command(argv)}`" + (" (= `make bench`)" if not argv else "") + f" on {time.strftime('%Y-%m-%d')}.",
        "Model: the zoo's vgg11 (width 0.125, fc 128, 1x28x28, 10 classes); one training step = SGD on "
        f"cross-entropy in train mode. Times are medians of interleaved repeats after a warm-up ({how})"
        + (" -- **quick mode: small batch, indicative only**." if p.quick else "."),
        "Models run channels-last (the default) except the `reference` (NCHW) and `fused+nchw` variants; "
        "speedup = time of the faster reference layout / fused time, from wall-clock medians (throughput) and "
        "from process CPU time (less sensitive to other processes on a shared machine). `floor` = every neuron "
        "replaced by a plain threshold with an identity gradient: the shared layers alone, the most any neuron "
        "engine could reach.",
        "", "## Machine", "", *table(["", ""], [[k_, v] for k_, v in info.items()]), "",
        "## Targets (measured, not asserted)", "", *table(["target", "measured", ""], checks), "",
        "## (a) Training throughput", "", *a, "",
        "## (b) PGD-10 throughput (torchattacks.PGD, eps 8/255, step 2/255, random start)", "", *b, "",
        "## (c) Activation memory of one training step (BPTT)", "",
        "Saved = bytes of the tensors autograd saves for backward, deduplicated by storage, parameters excluded "
        "(deterministic), both engines channels-last. Peak-RSS growth = rise of the process's peak resident set "
        "over its first training step, in a fresh process per engine.", "", *c, "",
        "## (d) Scaling of the training step", "", *d, "",
        "## (e) PGD-10 throughput per gradient path (fused engine)", "", *e, "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    p = parse(argv)
    if p.rss_child:
        e, T, n, th = p.rss_child
        return rss_child(e, int(T), int(n), int(th))
    torch.set_num_threads(p.threads)
    if p.only == "paths":
        print("\n".join(bench_paths(p)[0]))
        return None
    t_start, info = time.perf_counter(), machine(p.threads)
    sec_a, train = bench_training(p)
    sec_b, pgd = bench_pgd(p, train[8])
    sec_c, mem = bench_memory(p)
    sec_d, k = bench_scaling(p)
    sec_e, ratio = bench_paths(p)
    info["load average at end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    info["wall time of this run"] = f"{time.perf_counter() - t_start:.0f} s"
    report = render(p, argv, info, targets(train, pgd, mem, k, ratio),
                    [sec_a, sec_b, sec_c, sec_d, sec_e])
    Path(p.out).parent.mkdir(parents=True, exist_ok=True)
    Path(p.out).write_text(report)
    print(report)


if __name__ == "__main__":
    main(sys.argv[1:])
