"""`robench report` and `robench results merge`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import Format, FormatOpt, app, console, print_json, results_app


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
    from ..results.report import make_report

    r = make_report(results, out, model, attacks, dataset, eps, grad, n, readme, readme_block, headline, by_cell,
                    seeds_compare, compare)
    if fmt == Format.json:
        from ..results.export import compare_json, comparison_json, dumps, findings_json, worst_cases_json

        print_json(dumps({"table": comparison_json(r.shown), "worst_cases": worst_cases_json(r.comparison.cases),
                          "compare": compare_json(r.df, *compare) if compare else None,
                          "findings": findings_json(r.findings), "notes": findings_json(r.notes),
                          "files": {k: str(p) for k, p in r.paths.items()}}))
        return
    console.print(r.markdown, markup=False, highlight=False, soft_wrap=True)
    if "seeds" in r.paths:
        console.print(r.paths["seeds"].read_text(), markup=False, highlight=False, soft_wrap=True)
    if r.compared is not None:
        console.print(r.compared, markup=False, highlight=False, soft_wrap=True)
    for f in [*r.findings, *r.notes]:
        console.print(f"[yellow]{'note' if f is r.comparison.note else 'check'}[/] {f.line()}", highlight=False,
                      soft_wrap=True)
    console.print(f"wrote {', '.join(str(p) for p in r.paths.values())}", highlight=False, soft_wrap=True)


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
    from ..results.shards import merge_results

    done = merge_results(out, name, files, force)
    console.print(f"merged {done.count} shards: {len(done.rows)} new rows -> {done.path}; {done.skipped} cells "
                  "already there (--force replaces them)", highlight=False, soft_wrap=True)
