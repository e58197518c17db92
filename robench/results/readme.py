"""A report's Markdown inside another document (a README): the block between two ``robench report`` markers, and
a document made fit to go into one (no title, sections in bold). Standard library only."""

from __future__ import annotations

from ..errors import UsageError

README_START, README_END = "<!-- robench report: start -->", "<!-- robench report: end -->"


def inject_markdown(document: str, markdown: str, where: str = "document", block: str = "") -> str:
    """Replace the block between the two ``robench report`` markers of ``document`` by ``markdown``; a named
    ``block`` uses the markers ``<!-- robench report NAME: start -->`` and ``... NAME: end -->``."""
    start, end = (README_START, README_END) if not block else (
        README_START.replace(":", f" {block}:"), README_END.replace(":", f" {block}:"))
    a, b = document.find(start), document.find(end)
    if a < 0 or b < a:
        raise UsageError(f"{where} has no block between {start!r} and {end!r}")
    return document[: a + len(start)] + "\n" + markdown.rstrip() + "\n" + document[b:]


def untitled(markdown: str) -> str:
    """A Markdown document without its leading ``# title`` line and the blank line after it, its ``## section``
    titles in bold (a README block must not add headings to the document around it)."""
    lines = markdown.strip("\n").splitlines()
    lines = lines[2:] if lines and lines[0].startswith("# ") else lines
    return "\n".join(f"**{ln[3:]}**" if ln.startswith("## ") else ln for ln in lines)
