"""`robench data subset|info`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .common import DataDirOpt, console, data_app, print_table


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
    print_table(t)


# --------------------------------------------------------------------------------------------------- main
