"""`robench zoo list|show|verify|import|build`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import RobenchError, UsageError
from .common import (
    DataDirOpt,
    DeviceOpt,
    Format,
    FormatOpt,
    Neuron,
    TrustOpt,
    ZooOpt,
    command_line,
    console,
    err_console,
    lazy_progress,
    print_json,
    print_saved,
    print_table,
    train_progress,
    zoo_app,
)


def _fmt_acc(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _cell(v: object) -> str:
    """A table cell: "-" for a value the entry does not have (an imported model has no width, epochs, recipe)."""
    return "-" if v is None or v == "" else str(v)


@zoo_app.command("list")
def zoo_list(zoo: ZooOpt = Path("zoo"), fmt: FormatOpt = Format.table):
    """List zoo entries."""
    from ..zoo import list_cards

    cards, problems = list_cards(zoo)
    rows = [c.summary() for c in cards]
    if fmt == Format.json:
        print_json(json.dumps(rows, indent=2))
    else:
        t = Table(title=f"zoo: {zoo} ({len(rows)} entries)")
        cols = ("id", "arch", "dataset", "neuron", "T", "width", "recipe", "alpha", "epochs", "clean_acc",
                "sha256")
        for col in cols:
            t.add_column(col, justify="right" if col in ("T", "width", "alpha", "epochs", "clean_acc") else "left",
                         no_wrap=col in ("id", "clean_acc"))  # never cut the id (other commands take it)
        for r in rows:
            t.add_row(*[_fmt_acc(r[k]) if k == "clean_acc" else _cell(r[k]) for k in cols])
        print_table(t)
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
               data_dir: DataDirOpt = None, trust_code: TrustOpt = False, fmt: FormatOpt = Format.table):
    """Check every entry's card, sha256 and shapes (and, with --accuracy, its clean test accuracy); a foreign
    entry's code file is hash-checked, and run only with --trust-code."""
    from functools import cache

    from ..data import load
    from ..zoo import verify

    test_data = cache(lambda ds: load(ds, "test", data_dir)) if check_accuracy else None
    results = verify(zoo, entry, test_data, trust_code=trust_code)
    if fmt == Format.json:  # the failures still end in one Error: line on stderr and a non-zero exit
        print_json(json.dumps([{"id": i, "ok": ok, "message": msg} for i, ok, msg in results], indent=2))
    else:
        for i, ok, msg in results:
            console.print(f"{'[green]ok[/]  ' if ok else '[red]FAIL[/]'} {i}: {msg}", highlight=False, soft_wrap=True)
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
    output: Annotated[str | None, typer.Option(help="When your model returns a tuple or dict: the index or key of "
                                               "its logits (e.g. 1 for snnTorch's (spk, mem)).")] = None,
    encoding: Annotated[str, typer.Option(help="direct (the image at every step), or poisson: declare that the "
                                          "model's forward samples (rate-coded spikes from torch's generator; "
                                          "evaluated with averaged draws).")] = "direct",
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
                               data_dir, trust_code, zoo, overwrite, output, encoding)
    from ..eval.sweep import load_data
    from ..zoo import check_new
    from ..zoo.importing import import_state_dict

    if output is not None:
        raise UsageError("--output picks the logits of your own model's output: it goes with --framework and --entry")
    opts = dict(arch=arch, neuron=neuron.value, T=T, width=width, fc=fc, tau=tau, v_th=v_th, encoding=encoding)
    cfg = ModelConfig(**{k: v for k, v in opts.items() if v is not None}, **DATASETS.get(dataset).model_kwargs())
    check_new(zoo, entry_id, overwrite)
    data, note = load_data(dataset, data_dir, n)
    card = import_state_dict(file, cfg, dataset, entry_id, zoo, overwrite=overwrite, command=command_line(),
                             x=data.x, y=data.y)
    if note:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    console.print(f"[green]imported[/] {file} -> {zoo}/{card.id}.safetensors  sha256 {card.sha256[:12]}  clean acc "
                  f"{_fmt_acc(card.clean_acc)}% on {card.metrics['n_test']} test images", soft_wrap=True)


def _import_foreign(file, entry_id, framework, entry, kwargs, code_path, step_mode, dataset, T, n, data_dir,
                    trust_code, zoo, overwrite, output, encoding="direct") -> None:
    from ..eval.sweep import load_data
    from ..zoo import check_new
    from ..zoo.foreign import ENCODINGS
    from ..zoo.importing import import_foreign, parse_kwargs

    if framework is None or entry is None:
        raise UsageError("--framework and --entry go together: --framework spikingjelly|snntorch|torch "
                         "--entry package.module:function")
    if encoding not in ENCODINGS:
        raise UsageError(f"--encoding {encoding!r}; choose from: {', '.join(ENCODINGS)}")
    args = parse_kwargs(kwargs)
    check_new(zoo, entry_id, overwrite)
    data, note = load_data(dataset, data_dir, n)
    card = import_foreign(file, framework, entry, data.x, data.y, dataset, entry_id, zoo, T, args, step_mode,
                          code_path, trust_code, overwrite, command_line(), output or "", encoding)
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
    dry_run: Annotated[bool, typer.Option(help="Print the training commands only; entries already in the zoo are "
                                          "marked present.")] = False,
    device: DeviceOpt = "auto",
):
    """Retrain the shipped zoo (or some entries) from its recipes file; resumable."""
    from ..train.job import job_from_options, run_job
    from ..train.loop import STATE_FILE
    from ..zoo import entry_ids
    from ..zoo.buildlist import load_recipes, pick

    chosen = pick(load_recipes(recipes), ids or [])
    jobs = []
    for r in chosen:  # check every recipe before training any
        opts = {**r.options, "device": device, **({"data_dir": data_dir} if data_dir else {})}
        jobs.append((r, job_from_options(opts, r.command())))
    for r, job in jobs:
        if r.id in entry_ids(zoo) and not force:
            console.print(f"[dim]{'present' if dry_run else 'skip'}[/] {r.id}: already in {zoo} (--force retrains)")
            continue
        if dry_run:
            console.print(r.command(), soft_wrap=True)
            continue
        with lazy_progress() as bar:
            resume = (runs / r.id / STATE_FILE).exists() and not force  # an interrupted build goes on
            card = run_job(job, zoo, runs, resume=resume, overwrite=force, progress=train_progress(bar, r.id))
        if card is not None:
            print_saved(card, zoo)


# --------------------------------------------------------------------------------------------------- data
