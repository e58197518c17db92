"""What every command module shares: the Typer apps, consoles, option types and progress bars."""

from __future__ import annotations

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

from ..errors import RobenchError  # noqa: F401  (re-exported for the command modules)
from ..io import NAME_RE  # noqa: F401  (a results --name; kept importable from robench.cli)

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


FormatOpt = Annotated[Format, typer.Option("--format", help="table (for people) or json (for scripts: one JSON "
                                           "document on stdout; notes and progress go to stderr).")]


def _version(value: bool) -> None:
    if value:
        import robench

        console.print(f"robench {robench.__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print robench's version and exit.")] = False,
) -> None:
    STATE["debug"] = debug


def print_table(table: Table) -> None:
    """A table on stdout: in a terminal as wide as the terminal allows; elsewhere (a log file, a pipe, a batch
    job) whole, at its natural width, so no cell is ever cut to ``cle…``."""
    if console.is_terminal:
        console.print(table)
        return
    width = Console(file=console.file, width=100_000).measure(table).maximum
    Console(file=console.file, width=max(width, 1), highlight=False).print(table)


def print_json(text: str) -> None:
    """JSON text on stdout exactly as given (no colours, no wrapping), one document per call."""
    console.file.write(text if text.endswith("\n") else text + "\n")
    console.file.flush()


def make_progress() -> Progress:
    """Progress bars on stderr; outside a terminal (a log) drawn once at the end, whole rather than cut to 80
    columns."""
    wide = err_console if err_console.is_terminal else Console(stderr=True, width=1000, highlight=False)
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=wide, transient=False,
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


def command_line() -> str:
    """The command as typed (``robench ...``), for the cards' ``command`` field."""
    return "robench " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def train_progress(bar: Progress, label: str = "train"):
    """A training job's progress callback drawing on ``bar``."""
    task = bar.add_task(label, total=None, info="")

    def progress(ev: dict) -> None:
        if ev["kind"] == "start":
            bar.start()
            bar.update(task, total=ev["total"], completed=ev["done"])
        elif ev["kind"] == "step":
            info_s = f"ep {ev['epoch']} loss {ev['loss']:.3f} acc {100 * ev['acc']:.1f}%"
            bar.update(task, advance=1, info=info_s)

    return progress


def print_saved(card, zoo: Path) -> None:
    """One line for a zoo entry just written."""
    acc = card.clean_acc or 0.0
    console.print(f"[green]saved[/] {card.id} -> {zoo}/{card.id}.safetensors  clean acc "
                  f"{100 * acc:.2f}% on {card.metrics['n_test']} test images  sha256 {card.sha256[:12]}")


