"""`robench report` and `robench results merge`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import NAME_RE, Format, FormatOpt, app, console, print_json, results_app


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
    readme: Annotated[Path | None, typer.Option(help="Also write the Markdown table (with --compare: the paired "
                                                "comparison) into this file, between "
                                                "its '<!-- robench report: start/end -->' markers.")] = None,
    readme_block: Annotated[str, typer.Option(help="Use the markers '<!-- robench report NAME: start/end -->'.")]
    = "",
    headline: Annotated[bool, typer.Option("--headline", help="Print (and put in --readme) only clean, the "
                                           "pointwise worst case and each attack's worst case over its paths.")]
    = False,
    by_cell: Annotated[bool, typer.Option("--by-cell", help="Print (and put in --readme) the table transposed: one "
                                          "row per attack x path, one column per model.")] = False,
    seeds_compare: Annotated[tuple[str, str] | None, typer.Option(help="Compare two recipes (ids without -s<k>) "
                                                                  "seed by seed and over seeds, into seeds.md "
                                                                  "(with --readme: into the block).")]
    = None,
    compare: Annotated[tuple[str, str] | None, typer.Option(
        "--compare", help="Two model ids: the paired difference of their worst cases on the same images, with a "
        "95% interval and the counts robust for only one (also written to compare.md).")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Comparison tables (md, csv, tex), the pointwise worst case and its breakdown, and robustness curves (png)."""
    from ..errors import UsageError
    from ..eval.checks import check_records, stored_flags
    from ..results.report import (
        compare_models,
        comparison,
        headline_view,
        inject_markdown,
        masking_findings,
        select,
        to_markdown,
        write_compare,
        write_report,
    )
    from ..results.store import ResultsStore, read_dir

    if out.resolve() == results.resolve():
        raise UsageError(f"--out {str(out)!r} must differ from --results (the report's CSV would mix with results)")
    df = ResultsStore(results).read() if results.is_file() else read_dir(results)
    df = select(df, model, attacks, dataset, eps, grad, n)
    masked = masking_findings(df)  # computed from the masks: also across files and runs
    findings = [*(f for f in stored_flags(df) if f.name != "gradient-masking" or f.model not in
                  {m.model for m in masked}), *check_records(df), *masked]
    # check the markers and the models to compare before writing anything
    doc = inject_markdown(readme.read_text(), "", str(readme), readme_block) if readme else None
    compared = compare_models(df, *compare) if compare else None
    paths = write_report(df, out, findings, seeds_compare if seeds_compare and all(seeds_compare) else None)
    c = comparison(df)
    shown = headline_view(c) if headline else c
    table_md = to_markdown(shown.table, shown, transpose=by_cell)
    if readme and doc is not None:  # with --compare (--seeds-compare) the block gets that comparison, untitled
        block = (_untitled(compared) if compared is not None else
                 _untitled(paths["seeds"].read_text()) if seeds_compare and "seeds" in paths else table_md)
        readme.write_text(inject_markdown(readme.read_text(), block, str(readme), readme_block))
        paths["readme"] = readme
    if compared is not None:
        paths["compare"] = write_compare(compared, out)
    notes = [c.note] if c.note else []
    if fmt == Format.json:
        from ..results.export import compare_json, comparison_json, dumps, findings_json, worst_cases_json

        print_json(dumps({"table": comparison_json(shown), "worst_cases": worst_cases_json(c.cases),
                          "compare": compare_json(df, *compare) if compare else None,
                          "findings": findings_json(findings), "notes": findings_json(notes),
                          "files": {k: str(p) for k, p in paths.items()}}))
        return
    console.print(table_md, markup=False, highlight=False, soft_wrap=True)
    if "seeds" in paths:
        console.print(paths["seeds"].read_text(), markup=False, highlight=False, soft_wrap=True)
    if compared is not None:
        console.print(compared, markup=False, highlight=False, soft_wrap=True)
    for f in [*findings, *notes]:
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
    from ..results.shards import find_shards, merge
    from ..results.store import ResultsStore

    if not re.fullmatch(NAME_RE, name):
        raise BadSpec(f"--name {name!r}; use letters, digits, '.', '_' and '-'")
    store = ResultsStore(out / f"{name}.csv")
    store.check_writable()
    done = merge(files or find_shards(out, name), store, force=force)
    console.print(f"merged {done.count} shards: {len(done.rows)} new rows -> {store.path}; {done.skipped} cells "
                  "already there (--force replaces them)", highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------------------------------------- zoo


def _untitled(markdown: str) -> str:
    """A Markdown document without its leading ``# title`` line and the blank line after it, its ``## section``
    titles in bold (a README block must not add headings to the document around it)."""
    lines = markdown.strip("\n").splitlines()
    lines = lines[2:] if lines and lines[0].startswith("# ") else lines
    return "\n".join(f"**{ln[3:]}**" if ln.startswith("## ") else ln for ln in lines)
