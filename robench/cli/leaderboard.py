"""`robench leaderboard`: the static leaderboard site."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import app, console


@app.command()
def leaderboard(
    out: Annotated[Path, typer.Option(help="Site folder: new, empty, or a site written earlier (replaced).")] = Path(
        "leaderboard"),
    results: Annotated[Path, typer.Option(help="Results folder (every CSV in it), or one results CSV.")] = Path(
        "results"),
    zoo: Annotated[Path, typer.Option("--zoo", help="Zoo folder whose cards describe the models.")] = Path("zoo"),
    adv: Annotated[list[Path] | None, typer.Option("--adv", help="Folders of adversarial-example files (`attack "
                                                   "--save-adv`) to link from the model pages; repeatable.")] = None,
) -> None:
    """A static leaderboard site (index ranked by the reliable protocol, one page per model) viewable from file://."""
    from ..results.site import build_site

    site = build_site(results, zoo, out, adv or [])
    console.print(f"wrote {site.index} ({site.entries} ranked entries) and {len(site.pages)} model pages; open "
                  f"{site.index.resolve().as_uri()}", highlight=False, soft_wrap=True)
