"""The ``robench`` command line: parse flags, call one library function, render the result.

Every :class:`~robench.errors.RobenchError` and every usage error becomes one line ``Error: ...`` on stderr with
exit code 2 (usage) or 1 (runtime); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import RobenchError

app = typer.Typer(
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
    no_args_is_help=True,
    help="Adversarial robustness benchmark for spiking neural networks.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
zoo_app = typer.Typer(no_args_is_help=True, help="List, show, verify, import and build zoo entries.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: where they are, and the shipped test subset.")
results_app = typer.Typer(no_args_is_help=True, help="Results files: merge the shards of `attack --shard`.")
app.add_typer(zoo_app, name="zoo")
app.add_typer(data_app, name="data")
app.add_typer(results_app, name="results")

console = Console()
err_console = Console(stderr=True)
STATE = {"debug": False}

ZooOpt = Annotated[Path, typer.Option("--zoo", help="Zoo folder.")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Folder holding the dataset files.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
TrustOpt = Annotated[bool, typer.Option("--trust-code", help="Let foreign zoo entries (SpikingJelly, snnTorch, "
                                        "PyTorch) run their code file; also needs ROBENCH_TRUST_CODE=1.")]


class Neuron(str, Enum):
    lif = "lif"
    stable = "stable"


class Format(str, Enum):
    table = "table"
    json = "json"


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
) -> None:
    STATE["debug"] = debug


def make_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=err_console, transient=False,
    )


@contextmanager
def lazy_progress() -> Iterator[Progress]:
    """A progress bar that appears on its first "start" event, so an early error leaves stderr one line."""
    bar = make_progress()
    try:
        yield bar
    finally:
        if bar.live.is_started:  # stopping a bar never shown would still print an empty line
            bar.stop()


def _command_line() -> str:
    return "robench " + " ".join(shlex.quote(a) for a in sys.argv[1:])


# ------------------------------------------------------------------------------------------------- train
@app.command()
def train(
    arch: Annotated[str, typer.Option(help="Architecture: vgg5, vgg11, wrn16.")] = "vgg5",
    neuron: Annotated[Neuron, typer.Option(help="lif, or stable (DLIF with learnable gains).")] = Neuron.lif,
    recipe: Annotated[str, typer.Option(help="clean, gaussian (gn), fgsm-at (at), pgd-at, rat.")] = "clean",
    dataset: Annotated[str, typer.Option(help="fashion-mnist, cifar10, cifar100.")] = "fashion-mnist",
    data_dir: DataDirOpt = None,
    download: Annotated[bool, typer.Option(help="Download CIFAR into --data-dir with torchvision (online).")] = False,
    T: Annotated[int, typer.Option("--T", "-T", "--timesteps", help="Time steps.")] = 4,
    width: Annotated[float, typer.Option(help="Channel width multiplier.")] = 1.0,
    fc: Annotated[int | None, typer.Option(help="Classifier width (default: the arch's).")] = None,
    tau: Annotated[float, typer.Option(help="Membrane leak.")] = 0.99,
    v_th: Annotated[float, typer.Option("--v-th", help="Threshold.")] = 1.0,
    alpha: Annotated[float, typer.Option(help="MPPD regulariser weight (0 = off).")] = 0.0,
    kappa: Annotated[float, typer.Option(help="Weight of the clean CE term.")] = 0.5,
    sigma: Annotated[str, typer.Option(help="Gaussian-noise std for --recipe gaussian.")] = "8/255",
    eps: Annotated[str, typer.Option(help="L-inf budget for fgsm-at / pgd-at.")] = "4/255",
    pgd_steps: Annotated[int, typer.Option(help="PGD-AT steps.")] = 3,
    epochs: Annotated[int, typer.Option(help="Epochs.")] = 1,
    lr: Annotated[float, typer.Option(help="SGD learning rate (cosine to 0).")] = 0.1,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 64,
    weight_decay: Annotated[float | None, typer.Option(help="Weight decay (default 5e-4; 0 with rat).")] = None,
    rat_beta: Annotated[float | None, typer.Option(help="Orthogonality strength of --recipe rat (default 0.001; "
                                                   "0.004 for wrn16).")] = None,
    augment: Annotated[bool | None, typer.Option(help="Random crop + flip (default: on for CIFAR).")] = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    limit: Annotated[int | None, typer.Option(help="Use only the first N training images.")] = None,
    ckpt_every: Annotated[int, typer.Option(help="Also checkpoint every N steps (0: per epoch).")] = 0,
    entry_id: Annotated[str | None, typer.Option("--id", help="Zoo id (default: derived).")] = None,
    zoo: ZooOpt = Path("zoo"),
    runs: Annotated[Path, typer.Option(help="Folder for resumable run state.")] = Path("runs"),
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run with the same options.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing zoo entry.")] = False,
    sync_bn: Annotated[bool, typer.Option(help="Under torchrun: synchronise batch norm across GPUs.")] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Train an SNN with a recipe and write it into the zoo.

    Under `torchrun --nproc_per_node K -m -- robench train ...`: DistributedDataParallel, global batch K x
    --batch-size; rank 0 writes checkpoints and the entry.
    """
    from ..dist import env_rank
    from ..train import job_from_options, run_job

    opts = dict(arch=arch, neuron=neuron.value, recipe=recipe, dataset=dataset, data_dir=data_dir, T=T,
                width=width, fc=fc, tau=tau, v_th=v_th, alpha=alpha, kappa=kappa, sigma=sigma, eps=eps,
                pgd_steps=pgd_steps, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                augment=augment, seed=seed, limit=limit, ckpt_every=ckpt_every, id=entry_id, device=device,
                download=download, rat_beta=rat_beta, sync_bn=sync_bn)
    job = job_from_options(opts, _command_line())
    with lazy_progress() as bar:
        card = run_job(job, zoo, runs, resume=resume, overwrite=overwrite,
                       progress=_train_progress(bar) if env_rank() == 0 else None)
    if card is not None:  # None on torchrun ranks > 0
        _print_saved(card, zoo)


def _train_progress(bar: Progress, label: str = "train"):
    task = bar.add_task(label, total=None, info="")

    def progress(ev: dict) -> None:
        if ev["kind"] == "start":
            bar.start()
            bar.update(task, total=ev["total"], completed=ev["done"])
        elif ev["kind"] == "step":
            info_s = f"ep {ev['epoch']} loss {ev['loss']:.3f} acc {100 * ev['acc']:.1f}%"
            bar.update(task, advance=1, info=info_s)

    return progress


def _print_saved(card, zoo: Path) -> None:
    acc = card.clean_acc or 0.0
    console.print(f"[green]saved[/] {card.id} -> {zoo}/{card.id}.safetensors  clean acc "
                  f"{100 * acc:.2f}% on {card.metrics['n_test']} test images  sha256 {card.sha256[:12]}")


# ------------------------------------------------------------------------------------------------- attack
NAME_RE = r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}"


@app.command()
def attack(
    model: Annotated[list[str], typer.Option("--model", "-m", help="Zoo id, unique prefix, or arch (then every "
                                             "entry of that arch, side by side); repeatable.")],
    attacks: Annotated[list[str] | None, typer.Option(
        "--attack", "-a", help="fgsm, pgd, bim (final iterate), pgd-best, sa-pgd (best iterate), apgd-ce, "
        "apgd-dlr, apgd-t, square, autoattack, gaussian; repeatable or a,b (default fgsm,pgd).")] = None,
    suite: Annotated[str | None, typer.Option(help="Preset attack list: paper, quick, pgd-sweep, autoattack, "
                                              "noise; or the cascade reliable (the strongest honest number: "
                                              "each stage attacks only what is still robust).")] = None,
    eps: Annotated[str | None, typer.Option(help="Budgets: 8/255, 0.03, lists a,b, ranges start:stop:step "
                                            "(default 8/255, or the suite's own). For gaussian: sigma.")] = None,
    grad: Annotated[str, typer.Option(help="Gradient paths, comma-separated: bptt, rate, both (= bptt,rate), "
                                      "triangle:w=W, sigmoid:k=K, arctan:a=A, rectangle:w=W, assg[:A=0.425], sweep "
                                      "(triangle w 0.5|2, sigmoid k 2|8, arctan a 1|4); a value list "
                                      "'triangle:w=0.5|1|2' (quoted) is a sweep. Several also record the "
                                      "per-sample worst case.")] = "both",
    n: Annotated[int, typer.Option("--n", help="Number of test images (the first n).")] = 1000,
    batch_size: Annotated[str, typer.Option(help="Images per batch, or auto (fits the device's memory).")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed (random starts, noise).")] = 0,
    steps: Annotated[int | None, typer.Option(help="Iterations of pgd, bim (default 10), pgd-best (50), sa-pgd, "
                                              "apgd-* (100).")] = None,
    step_size: Annotated[str | None, typer.Option(help="Step size of pgd, bim, pgd-best (default 2/255).")] = None,
    restarts: Annotated[int | None, typer.Option(help="Restarts of pgd, pgd-best, sa-pgd, apgd-*, square "
                                                 "(default 1; only samples still robust are re-attacked).")] = None,
    random_start: Annotated[bool | None, typer.Option(help="Random start of pgd, pgd-best (default on).")] = None,
    queries: Annotated[int | None, typer.Option(help="Queries of square (default 5000).")] = None,
    aa_version: Annotated[str | None, typer.Option(help="autoattack version: standard, rand, or custom "
                                                   "(APGD-CE + APGD-T with --steps).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset (default: the model's; its test split, or the "
                                                "shipped subset when missing).")] = None,
    split: Annotated[str, typer.Option(help="test, or subset (the shipped balanced 1,000-image test subset).")]
    = "test",
    data_dir: DataDirOpt = None,
    out: Annotated[Path, typer.Option(help="Results folder.")] = Path("results"),
    name: Annotated[str, typer.Option(help="Results file name in --out (NAME.csv).")] = "results",
    force: Annotated[bool, typer.Option(help="Rerun cells already in the results (their rows are replaced).")] = False,
    shard: Annotated[str | None, typer.Option(help="Run part I of K of every cell (I/K, e.g. 0/4) as an ordinary "
                                              "process (job arrays); rows go to OUT/shards/NAME.shard-I-of-K.jsonl "
                                              "for `robench results merge`. Needs --batch-size N.")] = None,
    zoo: ZooOpt = Path("zoo"),
    device: DeviceOpt = "auto",
    save_adv: Annotated[Path | None, typer.Option("--save-adv", help="Also write each cell run's verified "
                                                  "adversarial examples (safetensors) into this folder.")] = None,
    trust_code: TrustOpt = False,
) -> None:
    """Attack zoo models: every attack x eps x gradient mode, appended to a results CSV; reruns skip done cells.

    Under `torchrun --nproc_per_node K -m robench attack ...` the ranks split every cell's images; rank 0 writes.
    """
    import re

    from ..attacks import SUITES, specs_from
    from ..dist import device_for, env_rank, parse_shard, session
    from ..eps import parse_one
    from ..errors import BadSpec
    from ..evaluate import evaluate, load_data, load_targets, parse_grads
    from ..protocol import CASCADES
    from ..results import ResultsStore
    from ..runtime import resolve_device
    from ..shards import ShardFile, shard_path
    from ..zoo import select

    if suite is not None and suite not in SUITES and suite not in CASCADES:
        raise BadSpec(f"unknown suite {suite!r}; choose from: {', '.join([*SUITES, *CASCADES])}")
    if suite in CASCADES:
        _check_cascade_options(suite, attacks, steps, step_size, restarts, random_start, aa_version, queries)
    step = parse_one(step_size, "--step-size") if step_size else None
    specs = [] if suite in CASCADES else specs_from(attacks, suite, eps, steps=steps, restarts=restarts,
                                                    random_start=random_start, version=aa_version,
                                                    queries=queries, step_size=step)
    grads = parse_grads(grad)
    if n < 1:
        raise BadSpec(f"--n {n}; must be an integer >= 1")
    if not 0 <= seed < 2**32:  # torch seeds overflow past 64 bits; the same range as `train --seed`
        raise BadSpec(f"--seed {seed}; must be in 0..{2**32 - 1}")
    bs = _batch_size(batch_size)
    if not re.fullmatch(NAME_RE, name):
        raise BadSpec(f"--name {name!r}; use letters, digits, '.', '_' and '-'")
    part = parse_shard(shard)
    if part.is_shard and bs is None:
        raise BadSpec("--shard needs --batch-size N (not auto): the batches define the random draws, and every "
                      "shard, like the single run it reproduces, must cut the same ones")
    if part.is_shard and (suite in CASCADES or save_adv is not None):
        raise BadSpec(f"--shard does not apply to {'--suite ' + suite if suite in CASCADES else '--save-adv'}: its "
                      "stages re-split the still-robust images (or its files name whole cells); use torchrun")
    dev = device_for(resolve_device(device))
    cards = list({c.id: c for q in model for c in select(q, zoo)}.values())
    store = ShardFile(shard_path(out, name, part.index, part.count)) if part.is_shard else \
        ResultsStore(out / f"{name}.csv")
    store.check_writable()  # a results file that is not ours is refused before any work
    if save_adv is not None:
        from ..adversarial import check_adv_dir

        check_adv_dir(save_adv)
    targets = load_targets(cards, zoo, dataset, trust_code=trust_code)
    data = {}
    for ds in dict.fromkeys(t.dataset for t in targets):
        data[ds], note = load_data(ds, data_dir, n, split)
        if note and env_rank() == 0:
            err_console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    with session(dev, part) as part, lazy_progress() as bar:
        if suite in CASCADES:
            ev = _run_cascade(suite, eps, targets, data, store, bar, force, seed, bs, dev, part)
        else:
            ev = evaluate(targets, specs, grads, data, store, progress=_attack_progress(bar) if part.writer else None,
                          force=force, seed=seed, batch_size=bs, device=dev, save_adv=save_adv, part=part)
    if not part.writer:
        return
    _print_results(ev, store)
    if part.is_shard:
        console.print(f"shard {part.label}: robust counts cover this shard's images only; when all {part.count} "
                      f"have run: robench results merge --out {out} --name {name}", highlight=False, soft_wrap=True)
    if save_adv is not None:
        console.print(f"verified adversarial examples of {ev.ran} cell(s) -> {save_adv}", highlight=False,
                      soft_wrap=True)


@app.command("verify-adv")
def verify_adv(
    file: Annotated[Path, typer.Argument(help="A file written by 'robench attack --save-adv'.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Zoo id (default: the one the file "
                                              "names); its weights must have the file's sha256.")] = None,
    zoo: ZooOpt = Path("zoo"),
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Re-check saved adversarial examples against a zoo model and print the robust accuracy they imply."""
    from ..adversarial import recheck
    from ..runtime import resolve_device

    r = recheck(file, zoo, data_dir, model, resolve_device(device))
    console.print(f"{r.model} on the first {r.n} images of {r.dataset}, eps {r.eps_str}: {r.checked} examples, "
                  f"{r.broken} verified broken, {r.invalid} invalid", highlight=False, soft_wrap=True)
    console.print(f"robust accuracy implied: {100 * r.robust_count / r.n:.1f}% ({r.clean_count} clean-correct - "
                  f"{r.broken} broken = {r.robust_count} of {r.n}); the results row claimed "
                  f"{100 * r.claimed / r.n:.1f}% ({r.claimed})", highlight=False, soft_wrap=True)


def _check_cascade_options(suite: str, *given) -> None:
    from ..errors import BadSpec

    if any(v is not None and v != [] for v in given):
        raise BadSpec(f"--suite {suite} fixes every attack, path and parameter; drop --attack, --steps, "
                      "--step-size, --restarts, --random-start, --aa-version and --queries")


def _run_cascade(suite, eps, targets, data, store, bar, force, seed, bs, dev, part):
    """Each budget of ``--eps`` (default: the cascade's own 8/255) runs the whole cascade, resumably."""
    import pandas as pd

    from ..eps import parse_eps
    from ..protocol import cascade, retarget, run_reliable

    stages = cascade(suite)
    budgets = parse_eps(eps) if eps is not None else [(stages[0].spec.eps, stages[0].spec.eps_str)]
    evs = [run_reliable(targets, data, store, retarget(stages, v, t), seed=seed, batch_size=bs, device=dev,
                        progress=_cascade_progress(bar) if part.writer else None, force=force, part=part)
           for v, t in budgets]
    ev = evs[0]
    for other in evs[1:]:
        ev.records = pd.concat([ev.records, other.records], ignore_index=True)
        ev.new |= other.new
        ev.findings += other.findings
        ev.skipped += other.skipped
    return ev


def _cascade_progress(bar: Progress):
    """One bar per stage, over the samples it attacks; the overall bar counts stages."""
    overall = bar.add_task("reliable", total=None, info="")
    current: dict = {}

    def progress(ev: dict) -> None:
        if ev["kind"] == "start":
            bar.start()
            bar.update(overall, total=ev["total"], completed=0)
        elif ev["kind"] == "batch":
            if ev["restart"] == 0:
                current["task"] = bar.add_task(f"stage {ev['stage']}", total=1, info=f"{ev['todo']} samples")
        elif ev["kind"] == "stage":
            if "task" in current:
                bar.update(current.pop("task"), completed=1)
            bar.update(overall, advance=1, info=f"{ev['model']} stage {ev['stage']}/{ev['of']} {ev['attack']} "
                                                f"({ev['grad']}) {100 * ev['robust_acc']:.1f}%")

    return progress


def _batch_size(text: str) -> int | None:
    from ..errors import BadSpec

    if text == "auto":
        return None
    if not (text.isascii() and text.isdigit()) or int(text) < 1:  # "²".isdigit() is True, int("²") fails
        raise BadSpec(f"--batch-size {text!r}; accepted: an integer >= 1 or auto")
    return int(text)


def _attack_progress(bar: Progress):
    task = bar.add_task("attack", total=None, info="")

    def progress(ev: dict) -> None:
        if ev["kind"] == "start" and ev["total"]:
            bar.start()
            bar.update(task, total=ev["total"], completed=0)
        elif ev["kind"] == "cell":
            bar.update(task, advance=1, info=f"{ev['model']} {ev['attack']} {ev['eps_str']} {ev['grad']} "
                                             f"{100 * ev['robust_acc']:.1f}%")

    return progress


def _print_results(ev, store) -> None:
    from ..checks import check_records
    from ..report import attack_labels
    from ..results import row_key

    df = ev.records
    t = Table(title=f"robust accuracy (%) on {', '.join(df['dataset'].unique())}, n = "
                    f"{', '.join(map(str, df['n'].unique()))}")
    for col in ("model", "attack", "eps", "grad", "clean", "robust", "s"):
        t.add_column(col, justify="right" if col in ("eps", "clean", "robust", "s") else "left",
                     no_wrap=True)  # never cut an id
    labels = attack_labels(df) if len(df) else []
    for r, label in zip(df.to_dict("records"), labels, strict=True):
        t.add_row(r["model"], label, r["eps_str"], r["grad"], f"{100 * r['clean_acc']:.1f}",
                  f"{100 * r['robust_acc']:.1f}", f"{r['seconds']:.1f}",
                  style=None if row_key(r) in ev.new else "dim")  # dim: already in the results file
    console.print(t)
    for f in [*ev.findings, *check_records(df)]:
        console.print(f"[yellow]check[/] {f.line()}", highlight=False, soft_wrap=True)
    console.print(f"{len(ev.new)} new rows -> {store.path}; {ev.skipped} cells already there (dimmed; --force "
                  "reruns them)",
                  highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------------------- report
@app.command()
def report(
    results: Annotated[Path, typer.Option(help="Results folder (every CSV in it), or one results CSV.")] = Path(
        "results"),
    out: Annotated[Path, typer.Option(help="Report folder.")] = Path("results/report"),
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Only these models (id, prefix or "
                                                    "glob); repeatable or a,b.")] = None,
    attacks: Annotated[list[str] | None, typer.Option("--attack", "-a", help="Only these attacks.")] = None,
    dataset: Annotated[list[str] | None, typer.Option(help="Only these datasets.")] = None,
    eps: Annotated[list[str] | None, typer.Option(help="Only these budgets, as stored (8/255); a,b.")] = None,
    grad: Annotated[list[str] | None, typer.Option(help="Only these gradient paths, as stored (bptt, rate, "
                                                  "sigmoid:k=4, ..., worst, none).")]
    = None,
    n: Annotated[int | None, typer.Option("--n", help="Only rows measured on this many images.")] = None,
    readme: Annotated[Path | None, typer.Option(help="Also write the Markdown table into this file, between "
                                                "its '<!-- robench report: start/end -->' markers.")] = None,
    readme_block: Annotated[str, typer.Option(help="Use the markers '<!-- robench report NAME: start/end -->'.")]
    = "",
    by_cell: Annotated[bool, typer.Option("--by-cell", help="Print (and put in --readme) the table transposed: one "
                                          "row per attack x path, one column per model.")] = False,
    seeds_compare: Annotated[tuple[str, str] | None, typer.Option(help="Compare two recipes (ids without -s<k>) "
                                                                  "seed by seed and over seeds, into seeds.md.")]
    = None,
    compare: Annotated[tuple[str, str] | None, typer.Option(
        "--compare", help="Two model ids: the paired difference of their worst cases on the same images, with a "
        "95% interval and the counts robust for only one (also written to compare.md).")] = None,
) -> None:
    """Comparison tables (md, csv, tex), the pointwise worst case and its breakdown, and robustness curves (png)."""
    from ..checks import check_records, stored_flags
    from ..errors import UsageError
    from ..report import compare_models, comparison, inject_markdown, select, to_markdown, write_compare, write_report
    from ..results import ResultsStore, read_dir

    if out.resolve() == results.resolve():
        raise UsageError(f"--out {str(out)!r} must differ from --results (the report's CSV would mix with results)")
    df = ResultsStore(results).read() if results.is_file() else read_dir(results)
    df = select(df, model, attacks, dataset, eps, grad, n)
    findings = [*stored_flags(df), *check_records(df)]
    # check the markers and the models to compare before writing anything
    doc = inject_markdown(readme.read_text(), "", str(readme), readme_block) if readme else None
    compared = compare_models(df, *compare) if compare else None
    paths = write_report(df, out, findings, seeds_compare if seeds_compare and all(seeds_compare) else None)
    c = comparison(df)
    table_md = to_markdown(c.table, c, transpose=by_cell)
    console.print(table_md, markup=False, highlight=False, soft_wrap=True)
    if "seeds" in paths:
        console.print(paths["seeds"].read_text(), markup=False, highlight=False, soft_wrap=True)
    if readme and doc is not None:
        readme.write_text(inject_markdown(readme.read_text(), table_md, str(readme), readme_block))
        paths["readme"] = readme
    if compared is not None:
        console.print(compared, markup=False, highlight=False, soft_wrap=True)
        paths["compare"] = write_compare(compared, out)
    for f in [*findings, *([c.note] if c.note else [])]:
        console.print(f"[yellow]{'note' if f is c.note else 'check'}[/] {f.line()}", highlight=False,
                      soft_wrap=True)
    console.print(f"wrote {', '.join(str(p) for p in paths.values())}", highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------------------ results
@results_app.command("merge")
def results_merge(
    files: Annotated[list[Path] | None, typer.Argument(help="Shard files (default: OUT/shards/NAME.shard-*.jsonl)."
                                                      )] = None,
    out: Annotated[Path, typer.Option(help="Results folder.")] = Path("results"),
    name: Annotated[str, typer.Option(help="Results file name in --out (NAME.csv).")] = "results",
    force: Annotated[bool, typer.Option(help="Replace merged cells already in the results.")] = False,
) -> None:
    """Join the K shards of every cell (`attack --shard I/K`) into the rows one run would have written."""
    import re

    from ..errors import BadSpec
    from ..results import ResultsStore
    from ..shards import find_shards, merge

    if not re.fullmatch(NAME_RE, name):
        raise BadSpec(f"--name {name!r}; use letters, digits, '.', '_' and '-'")
    store = ResultsStore(out / f"{name}.csv")
    store.check_writable()
    done = merge(files or find_shards(out, name), store, force=force)
    console.print(f"merged {done.count} shards: {len(done.rows)} new rows -> {store.path}; {done.skipped} cells "
                  "already there (--force replaces them)", highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------------------------------------- zoo
def _fmt_acc(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


@zoo_app.command("list")
def zoo_list(zoo: ZooOpt = Path("zoo"), fmt: Annotated[Format, typer.Option("--format")] = Format.table):
    """List zoo entries."""
    from ..zoo import list_cards

    cards, problems = list_cards(zoo)
    rows = [c.summary() for c in cards]
    if fmt == Format.json:
        console.print_json(json.dumps(rows))
    else:
        t = Table(title=f"zoo: {zoo} ({len(rows)} entries)")
        cols = ("id", "arch", "dataset", "neuron", "T", "width", "recipe", "alpha", "epochs", "clean_acc",
                "sha256")
        for col in cols:
            t.add_column(col, justify="right" if col in ("T", "width", "alpha", "epochs", "clean_acc") else "left",
                         no_wrap=col in ("id", "clean_acc"))  # never cut the id (other commands take it)
        for r in rows:
            t.add_row(*[_fmt_acc(r[k]) if k == "clean_acc" else str(r[k]) for k in cols])
        console.print(t)
    for p in problems:
        err_console.print(f"[yellow]warning:[/] {p}")


@zoo_app.command("show")
def zoo_show(entry: Annotated[str, typer.Argument(help="Id or unique prefix.")], zoo: ZooOpt = Path("zoo")):
    """Show one entry's card."""
    from ..zoo import select

    cards = select(entry, zoo)
    for c in cards:
        console.print_json(c.to_json())


@zoo_app.command("verify")
def zoo_verify(entry: Annotated[str | None, typer.Argument(help="Id, prefix or arch (default: all).")] = None,
               zoo: ZooOpt = Path("zoo"),
               check_accuracy: Annotated[bool, typer.Option("--accuracy", help="Also re-measure clean test "
                                                            "accuracy; it must match the card within 0.1 pt.")]
               = False,
               data_dir: DataDirOpt = None, trust_code: TrustOpt = False):
    """Check every entry's card, sha256 and shapes (and, with --accuracy, its clean test accuracy); a foreign
    entry's code file is hash-checked, and run only with --trust-code."""
    from functools import cache

    from ..data import load
    from ..zoo import verify

    test_data = cache(lambda ds: load(ds, "test", data_dir)) if check_accuracy else None
    results = verify(zoo, entry, test_data, trust_code=trust_code)
    for i, ok, msg in results:
        console.print(f"{'[green]ok[/]  ' if ok else '[red]FAIL[/]'} {i}: {msg}")
    if not results:
        raise RobenchError(f"no zoo entries in {str(zoo)!r}")
    if not all(ok for _, ok, _ in results):
        raise RobenchError(f"{sum(not ok for _, ok, _ in results)} of {len(results)} entries failed verification")


@zoo_app.command("import")
def zoo_import(
    file: Annotated[Path, typer.Argument(help="A PyTorch state dict (.pt/.pth; tensors only) or .safetensors.")],
    entry_id: Annotated[str, typer.Option("--id", help="Zoo id for the new entry.")],
    arch: Annotated[str, typer.Option(help="Architecture: vgg5, vgg11, wrn16.")] = "vgg5",
    neuron: Annotated[Neuron, typer.Option(help="lif, or stable (DLIF with learnable gains).")] = Neuron.lif,
    dataset: Annotated[str, typer.Option(help="fashion-mnist, cifar10, cifar100.")] = "fashion-mnist",
    T: Annotated[int, typer.Option("--T", "-T", "--timesteps", help="Time steps.")] = 4,
    width: Annotated[float, typer.Option(help="Channel width multiplier.")] = 1.0,
    fc: Annotated[int | None, typer.Option(help="Classifier width (default: the arch's).")] = None,
    tau: Annotated[float, typer.Option(help="Membrane leak.")] = 0.99,
    v_th: Annotated[float, typer.Option("--v-th", help="Threshold.")] = 1.0,
    framework: Annotated[str | None, typer.Option(help="Your own model: spikingjelly, snntorch or torch (then "
                                                  "--entry builds it; --arch and the neuron options are unused).")]
    = None,
    entry: Annotated[str | None, typer.Option(help="package.module:function that returns your model.")] = None,
    kwargs: Annotated[str | None, typer.Option(help="Keyword arguments of --entry, a JSON object.")] = None,
    code_path: Annotated[Path | None, typer.Option(help="Folder holding --entry's package (default: installed).")]
    = None,
    step_mode: Annotated[str, typer.Option(help="multi: the model takes [T, B, C, H, W] and returns [T, B, K]; "
                                           "single: [B, C, H, W] -> [B, K] once per step.")] = "multi",
    n: Annotated[int, typer.Option("--n", help="Test images for the import checks and the clean accuracy.")] = 500,
    data_dir: DataDirOpt = None,
    trust_code: TrustOpt = False,
    zoo: ZooOpt = Path("zoo"),
    overwrite: Annotated[bool, typer.Option(help="Replace an existing zoo entry.")] = False,
):
    """Import your own weights (never runs code from the weights file); shapes must fit the model exactly. With
    --framework, the model is built by your code (--entry), checked and adapted (see README, "Your own models")."""
    from ..data import DATASETS
    from ..snn.models import ModelConfig

    if framework is not None or entry is not None:
        return _import_foreign(file, entry_id, framework, entry, kwargs, code_path, step_mode, dataset, T, n,
                               data_dir, trust_code, zoo, overwrite)
    from ..zoo.importing import import_state_dict

    opts = dict(arch=arch, neuron=neuron.value, T=T, width=width, fc=fc, tau=tau, v_th=v_th)
    cfg = ModelConfig(**{k: v for k, v in opts.items() if v is not None}, **DATASETS.get(dataset).model_kwargs())
    card = import_state_dict(file, cfg, dataset, entry_id, zoo, overwrite=overwrite, command=_command_line())
    console.print(f"[green]imported[/] {file} -> {zoo}/{card.id}.safetensors  sha256 {card.sha256[:12]}")


def _import_foreign(file, entry_id, framework, entry, kwargs, code_path, step_mode, dataset, T, n, data_dir,
                    trust_code, zoo, overwrite) -> None:
    from ..errors import UsageError
    from ..evaluate import load_data
    from ..zoo import check_new
    from ..zoo.importing import import_foreign, parse_kwargs

    if framework is None or entry is None:
        raise UsageError("--framework and --entry go together: --framework spikingjelly|snntorch|torch "
                         "--entry package.module:function")
    args = parse_kwargs(kwargs)
    check_new(zoo, entry_id, overwrite)
    data, note = load_data(dataset, data_dir, n)
    card = import_foreign(file, framework, entry, data.x, data.y, dataset, entry_id, zoo, T, args, step_mode,
                          code_path, trust_code, overwrite, _command_line())
    if note:  # after the import: a refused one prints its one line only
        err_console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    console.print(f"[green]imported[/] {file} -> {zoo}/{card.id}.safetensors  sha256 {card.sha256[:12]}  clean acc "
                  f"{_fmt_acc(card.clean_acc)} on {card.metrics['n_test']}\n{card.notes}", soft_wrap=True)


@zoo_app.command("build")
def zoo_build(
    ids: Annotated[list[str] | None, typer.Argument(help="Recipe ids (default: all).")] = None,
    recipes: Annotated[Path, typer.Option(help="Recipes file.")] = Path("zoo/recipes.toml"),
    zoo: ZooOpt = Path("zoo"),
    runs: Annotated[Path, typer.Option(help="Folder for resumable run state.")] = Path("runs"),
    data_dir: DataDirOpt = None,
    force: Annotated[bool, typer.Option(help="Retrain entries already in the zoo.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print the training commands only.")] = False,
    device: DeviceOpt = "auto",
):
    """Retrain the shipped zoo (or some entries) from its recipes file; resumable."""
    from ..recipes import load_recipes, pick
    from ..train import job_from_options, run_job
    from ..zoo import entry_ids

    chosen = pick(load_recipes(recipes), ids or [])
    jobs = []
    for r in chosen:  # check every recipe before training any
        opts = {**r.options, "device": device, **({"data_dir": data_dir} if data_dir else {})}
        jobs.append((r, job_from_options(opts, r.command())))
    for r, job in jobs:
        if dry_run:
            console.print(r.command(), soft_wrap=True)
            continue
        if r.id in entry_ids(zoo) and not force:
            console.print(f"[dim]skip[/] {r.id}: already in {zoo} (--force retrains)")
            continue
        with lazy_progress() as bar:
            card = run_job(job, zoo, runs, resume=True, overwrite=force, progress=_train_progress(bar, r.id))
        if card is not None:
            _print_saved(card, zoo)


# --------------------------------------------------------------------------------------------------- data
@data_app.command("subset")
def data_subset(data_dir: DataDirOpt = None,
                per_class: Annotated[int, typer.Option(help="Images per class.")] = 100,
                out: Annotated[Path | None, typer.Option(help="Output file (default: the package's).")] = None):
    """(Re)build the shipped balanced Fashion-MNIST test subset (first N test images of each class)."""
    from ..data import SUBSET_FILE, make_subset
    from ..errors import BadSpec

    if per_class < 1 or per_class > 1000:
        raise BadSpec(f"--per-class {per_class}; must be in 1..1000")
    path = make_subset(data_dir, per_class, out or SUBSET_FILE)
    console.print(f"wrote {path} ({per_class * 10} images, {path.stat().st_size // 1024} KiB)")


@data_app.command("info")
def data_info(data_dir: DataDirOpt = None):
    """Show which datasets are available and where they were found."""
    from ..data import DATASETS, load
    from ..errors import RobenchError as _E

    t = Table(title="datasets")
    for col in ("dataset", "split", "images", "status"):
        t.add_column(col)
    for name in DATASETS:
        for split in ("train", "test", "subset") if name == "fashion-mnist" else ("train", "test"):
            try:
                x, _ = load(name, split, data_dir)
                t.add_row(name, split, str(len(x)), "ok")
            except _E as e:
                t.add_row(name, split, "-", str(e)[:90])
    console.print(t)


# --------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning errors into one line and an exit code."""
    if os.environ.get("ROBENCH_THREADS"):  # torch is imported only when a command needs it (not by `report`)
        from ..runtime import configure_threads

        configure_threads()
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args[: next((i for i, a in enumerate(args) if not a.startswith("-")), len(args))]
    cmd = typer.main.get_command(app)
    try:
        code = cmd.main(args=args, prog_name="robench", standalone_mode=False)
        if code == 130 and not _rank_tag():  # typer turns Ctrl-C into a silent 130 (no command returns one)
            err_console.print("[red]Error:[/] interrupted; finished work was kept", highlight=False)
        sys.exit(code if isinstance(code, int) else 0)
    except RobenchError as e:
        if debug:
            raise
        if not _rank_prints(e):
            sys.exit(e.exit_code)
        from rich.markup import escape  # messages may quote paths in brackets (gloo's '[.../pair.cc:545]')

        err_console.print(f"[red]Error{_rank_tag()}:[/] {escape(' '.join(str(e).split()))}", highlight=False,
                          soft_wrap=True)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err_console.print("[red]Error:[/] aborted", highlight=False)
        sys.exit(130)
    except KeyboardInterrupt:  # torchrun passes Ctrl-C to every rank: rank 0 says it
        if not _rank_tag():
            err_console.print("[red]Error:[/] interrupted; finished work was kept", highlight=False)
        sys.exit(130)
    except typer.TyperException as e:  # usage errors of the bundled click: bad option, bad value, ...
        if debug:
            raise
        if _rank_tag():  # every rank parses the same line: rank 0 says it once
            sys.exit(getattr(e, "exit_code", 2))
        msg = e.format_message() if hasattr(e, "format_message") else str(e)
        ctx = getattr(e, "ctx", None)
        where = f" ({ctx.command_path})" if ctx is not None else ""
        err_console.print(f"[red]Error{where}:[/] {' '.join(msg.split())}", highlight=False, soft_wrap=True)
        sys.exit(getattr(e, "exit_code", 2))
    except OSError as e:
        if debug:
            raise
        err_console.print(f"[red]Error:[/] {e.strerror or e}: {e.filename or ''}", highlight=False)
        sys.exit(1)
    except Exception as e:  # a failure nobody foresaw (a bug, memory): still one line; --debug shows where
        if debug:
            raise
        first = (str(e).strip().splitlines() or [""])[0][:300]
        err_console.print(f"[red]Error{_rank_tag()}:[/] unexpected {type(e).__name__}: {first} (rerun with --debug "
                          "for the traceback)", highlight=False, soft_wrap=True)
        sys.exit(1)


def _rank_tag() -> str:
    """`` (rank k)`` in a torchrun rank k > 0 (torchrun sets RANK and MASTER_ADDR), else empty."""
    rank = os.environ.get("RANK", "0") if "MASTER_ADDR" in os.environ else "0"
    return f" (rank {rank})" if rank not in ("", "0") else ""


def _rank_prints(e: RobenchError) -> bool:
    """Rank 0 prints every error; another rank only its own failures inside the job (errors before it, usage
    errors and a lost peer are the same on every rank, and rank 0 reports them)."""
    from ..errors import UsageError

    if not _rank_tag():
        return True
    return getattr(e, "rank", None) is not None and not isinstance(e, UsageError) and type(e).__name__ != "RankFailed"


if __name__ == "__main__":  # pragma: no cover
    main()
