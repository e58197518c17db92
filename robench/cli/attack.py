"""`robench attack` and `robench verify-adv`: sweeps, the reliable cascade, verified examples."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from ..attack_meta import help_text
from .common import (
    DataDirOpt,
    DeviceOpt,
    Format,
    FormatOpt,
    TrustOpt,
    ZooOpt,
    app,
    console,
    err_console,
    lazy_progress,
    print_json,
    print_table,
)


@app.command()
def attack(
    model: Annotated[list[str], typer.Option("--model", "-m", help="Zoo id, unique prefix, or arch (then every "
                                             "entry of that arch, side by side); repeatable.")],
    attacks: Annotated[list[str] | None, typer.Option(
        "--attack", "-a", help=f"{help_text()}; repeatable or a,b (default fgsm,pgd).")] = None,
    suite: Annotated[str | None, typer.Option(help="Preset attack list: paper, quick, pgd-sweep, autoattack, "
                                              "noise; or the cascade reliable (the strongest honest number: "
                                              "each stage attacks only what is still robust; its newest stage "
                                              "list for --norm), reliable-v1 (an older version), or a protocol "
                                              "file FILE.toml.")]
    = None,
    eps: Annotated[str | None, typer.Option(help="Budgets: 8/255, 0.03, lists a,b, ranges start:stop:step "
                                            "(default 8/255 in Linf, 1.0 in L2, 10 in L1, or the suite's own). "
                                            "For gaussian: sigma.")] = None,
    norm: Annotated[str, typer.Option(help="Threat model: Linf, L2, or L1 (official APGD, Square and "
                                      "AutoAttack only); part of every row's params.")] = "Linf",
    eot: Annotated[int | None, typer.Option(help="Stochastic models (Poisson coding): draws averaged per gradient "
                                            "step, EOT (default 8); --suite reliable runs every stage so.")] = None,
    draws: Annotated[int | None, typer.Option(help="Stochastic models: fresh draws averaged by every verdict "
                                              "(default 16); a sweep also stores a single-draw row.")] = None,
    sampler: Annotated[str | None, typer.Option(help="Stochastic models: the gradient through the draws, rate "
                                                "(the expectation, default) or ste (straight-through).")] = None,
    encoding: Annotated[str | None, typer.Option(help="Input coding: direct or poisson (default: each model's "
                                                 "own; robench's models can be run either way, a foreign model "
                                                 "only as imported).")] = None,
    grad: Annotated[str | None, typer.Option(help="Gradient paths, comma-separated: bptt, rate, both (= bptt,rate), "
                                      "triangle:w=W, sigmoid:k=K, arctan:a=A, rectangle:w=W, assg[:A=0.425], sweep "
                                      "(triangle w 0.5|2, sigmoid k 2|8, arctan a 1|4); a value list "
                                      "'triangle:w=0.5|1|2' (quoted) is a sweep. Several also record the "
                                      "per-sample worst case. Default: both.")] = None,
    n: Annotated[int, typer.Option("--n", help="Number of test images (the first n).")] = 1000,
    batch_size: Annotated[str, typer.Option(help="Images per batch, or auto (fits the device's memory).")] = "auto",
    min_batches: Annotated[int, typer.Option(help="Cut every cell's (every cascade stage's) images into at least "
                                             "this many equal batches (none much below 16 images): under torchrun, "
                                             "a multiple of the rank count gives every rank the same work. "
                                             "Recorded when > 1; numbers never depend on the rank count.")] = 1,
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
    fmt: FormatOpt = Format.table,
) -> None:
    """Attack zoo models: every attack x eps x gradient mode, appended to a results CSV; reruns skip done cells.

    Under `torchrun --nproc_per_node K -m robench attack ...` the ranks split every cell's images; rank 0 writes.
    """
    from ..eval.job import AttackOptions, prepare_attack

    opts = AttackOptions(model=model, attacks=attacks, suite=suite, eps=eps, norm=norm, eot=eot, draws=draws,
                         sampler=sampler, encoding=encoding, grad=grad, n=n, batch_size=batch_size,
                         min_batches=min_batches, seed=seed, steps=steps, step_size=step_size, restarts=restarts,
                         random_start=random_start, queries=queries, aa_version=aa_version, dataset=dataset,
                         split=split, data_dir=data_dir, out=out, name=name, force=force, shard=shard, zoo=zoo,
                         device=device, save_adv=save_adv, trust_code=trust_code)
    job = prepare_attack(opts, note=lambda text: err_console.print(f"[yellow]note:[/] {text}", highlight=False,
                                                                  soft_wrap=True))
    with lazy_progress() as bar:
        res = job.run(_cascade_progress(bar) if job.cascade is not None else _attack_progress(bar))
    if not res.part.writer:
        return
    _render(res, fmt, out, name, save_adv)


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
    from ..eval.recheck import recheck
    from ..runtime import resolve_device

    r = recheck(file, zoo, data_dir, model, resolve_device(device))
    console.print(f"{r.model} on the first {r.n} images of {r.dataset}, eps {r.eps_str}: {r.checked} examples, "
                  f"{r.broken} verified broken, {r.invalid} invalid", highlight=False, soft_wrap=True)
    console.print(f"robust accuracy implied: {100 * r.robust_count / r.n:.1f}% ({r.clean_count} clean-correct - "
                  f"{r.broken} broken = {r.robust_count} of {r.n}); the results row claimed "
                  f"{100 * r.claimed / r.n:.1f}% ({r.claimed})", highlight=False, soft_wrap=True)


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


def _render(res, fmt: Format, out: Path, name: str, save_adv: Path | None) -> None:
    """The rows as a table (or one JSON document), then what a shard or ``--save-adv`` left where."""
    ev, part = res.evaluation, res.part
    say = err_console if fmt == Format.json else console  # JSON mode: stdout holds the JSON document only
    if fmt == Format.json:
        _print_json(res)
    else:
        _print_results(res)
    if part.is_shard:
        say.print(f"shard {part.label}: robust counts cover this shard's images only; when all {part.count} "
                  f"have run: robench results merge --out {out} --name {name}", highlight=False, soft_wrap=True)
    if save_adv is not None:
        what = ("every run of the cascade, cumulative (the cascade's own file: grad worst)" if res.cascade
                else f"{ev.ran} cell(s)")
        say.print(f"verified adversarial examples of {what} -> {save_adv}", highlight=False, soft_wrap=True)


def _print_results(res) -> None:
    from ..results.labels import attack_labels
    from ..results.store import row_key

    ev = res.evaluation
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
    print_table(t)
    for f in res.findings:
        console.print(f"[yellow]check[/] {f.line()}", highlight=False, soft_wrap=True)
    console.print(f"{len(ev.new)} new rows -> {res.store.path}; {ev.skipped} cells already there (dimmed; --force "
                  "reruns them)",
                  highlight=False, soft_wrap=True)


def _print_json(res) -> None:
    """One JSON document: every requested cell's row (new and already stored), the findings, and the counts."""
    from ..results.export import dumps, findings_json, rows_json
    from ..results.store import row_key

    ev = res.evaluation
    rows = rows_json(ev.records)
    for r, raw in zip(rows, ev.records.to_dict("records"), strict=True):
        r["new"] = row_key(raw) in ev.new
    print_json(dumps({"results": str(res.store.path), "new_rows": len(ev.new), "skipped": ev.skipped, "rows": rows,
                      "findings": findings_json(res.findings)}))


# ------------------------------------------------------------------------------------------------- report
