"""Results tables -> comparison tables (Markdown, CSV, LaTeX) and robustness curves (PNG).

Rows of a table are models; columns are clean accuracy, the headline ``worst case`` (the pointwise worst case over
every masked cell on the same images, :mod:`robench.results.worstcase`) with the number of ``cells`` it combines, then
``attack @ eps (grad)`` for every attack, budget and gradient mode in the results, the worst case over modes
included. Every accuracy carries a Wilson 95% interval (``45.0 [38.2, 51.9]``; CSV: ``lo``/``hi`` columns).
Percentages carry one decimal; budgets are shown as stored (``8/255``). The figures (PNG, PDF, SVG) and the
narrow LaTeX table come from :mod:`robench.results.figures`. This module imports only the other modules of
:mod:`robench.results` and pandas: it never needs torch, so it is fast and testable on CSV files.

Examples:
    >>> df = select(read_dir("results"), model="fmnist-vgg11")
    >>> paths = write_report(df, "results/report")   # table.*, curves.*, stages.*, findings.md, breakdown.*
    >>> write_compare(compare_models(df, "fmnist-vgg11-lif-gn", "fmnist-vgg11-stable-gn"), "results/report")
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from ..errors import DataNotFound, UsageError
from .checks import check_records, stored_flags
from .figures import plot_breakdown, plot_curves, plot_seeds, plot_stages
from .findings import Finding
from .headline import headline_latex
from .labels import GRAD_ORDER, attack_labels, attack_order, tex_escape
from .readme import README_END, README_START, inject_markdown, untitled
from .seeds import seeds_markdown
from .stats import wilson
from .store import ResultsStore, read_dir
from .worstcase import (
    Masked,
    WorstCase,
    breakdown_frame,
    breakdown_markdown,
    budget_label,
    compare,
    compare_markdown,
    mask_note,
    masking,
    worst_cases,
)

__all__ = ["read_dir", "select", "comparison", "comparison_table", "to_markdown", "to_latex", "write_report",
           "compare_models", "write_compare", "make_report", "Report", "inject_markdown", "README_START",
           "README_END"]

ROW = ("model", "dataset", "n")


def _split(values: str | Sequence[str] | None) -> list[str]:
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    return [v.strip() for item in items for v in item.split(",") if v.strip()]


def select(df: pd.DataFrame, model: str | Sequence[str] | None = None, attack: str | Sequence[str] | None = None,
           dataset: str | Sequence[str] | None = None, eps: str | Sequence[str] | None = None,
           grad: str | Sequence[str] | None = None, n: int | None = None) -> pd.DataFrame:
    """Rows whose model is an id (only itself, when the results hold it: ``m-gn`` does not take ``m-gn-s1``) or
    matches a prefix or glob; attack a name; dataset a name (``fashion-mnist`` matches ``fashion-mnist:test`` and
    ``fashion-mnist:subset``); eps a budget as stored (``8/255``); grad a mode. Nothing left is an error naming
    the filter."""
    keep = pd.Series(True, index=df.index)
    models, attacks, datasets = _split(model), _split(attack), _split(dataset)
    budgets, grads = _split(eps), _split(grad)
    if budgets:
        keep &= df["eps_str"].astype(str).isin(budgets)
    if grads:
        keep &= df["grad"].isin(grads)
    if n is not None:
        keep &= df["n"] == n
    if models:  # an id the results hold matches itself only; other queries are prefixes or globs
        exact = set(df["model"].unique())
        keep &= df["model"].map(lambda m: any(m == q if q in exact else (m.startswith(q) or fnmatch.fnmatchcase(m, q))
                                              for q in models))
    if attacks:
        keep &= df["attack"].isin(attacks)
    if datasets:
        keep &= df["dataset"].map(lambda d: d in datasets or d.split(":")[0] in datasets)
    out = df[keep]
    if out.empty:
        given = ", ".join(f"--{k} {','.join(v)}" for k, v in (("model", models), ("attack", attacks),
                                                              ("dataset", datasets), ("eps", budgets),
                                                              ("grad", grads), ("n", [str(n)] if n else []))
                          if v)
        have = f"models: {', '.join(sorted(df['model'].unique()))}; attacks: {', '.join(sorted(df['attack'].unique()))}"
        raise DataNotFound(f"no results match {given}; the results hold {have}")
    return out


def _row_labels(df: pd.DataFrame) -> pd.Series:
    per_model = df.groupby("model")[["dataset", "n"]].nunique()
    plain = set(per_model.index[(per_model["dataset"] == 1) & (per_model["n"] == 1)])
    return df.apply(lambda r: r["model"] if r["model"] in plain else f"{r['model']} [{r['dataset']}, n={r['n']}]",
                    axis=1)


# ------------------------------------------------------------------------------------------------ tables
@dataclass
class Comparison:
    """The comparison table (percent, one decimal), its Wilson 95% bounds ``lo`` / ``hi`` (same shape, NaN where
    a column is not an accuracy), the worst cases behind its ``worst case`` columns, and the missing-mask note."""

    table: pd.DataFrame
    lo: pd.DataFrame
    hi: pd.DataFrame
    cases: list[WorstCase]
    note: Finding | None


def comparison(df: pd.DataFrame) -> Comparison:
    """Models x (clean, worst case, cells, attack @ eps (grad)); means over seeds when several, intervals over
    the pooled counts."""
    d = df.assign(row=_row_labels(df), label=attack_labels(df),
                  eps_str=[budget_label(p, e) for p, e in zip(df["params"], df["eps_str"], strict=True)])
    rows = sorted(d["row"].unique())
    table, lo, hi = (pd.DataFrame(index=pd.Index(rows, name="model")) for _ in range(3))
    per_seed = d.groupby(["row", "seed"])[["clean_acc", "clean_count", "n"]].first()
    _put(table, lo, hi, "clean", per_seed["clean_acc"].groupby("row").mean(),
         per_seed.groupby("row")[["clean_count", "n"]].sum())
    cases = worst_cases(df, d["label"])
    row_of = dict(zip(zip(d["model"], d["dataset"], d["n"], strict=True), d["row"], strict=True))
    budgets = sorted({(c.eps, c.eps_str) for c in cases})
    for eps, eps_str in budgets:
        suffix = f" @ {eps_str}" if len(budgets) > 1 else ""
        mine = {row_of[(c.model, c.dataset, c.n)]: c for c in cases if c.eps == eps and c.eps_str == eps_str}
        _put(table, lo, hi, f"worst case{suffix}", pd.Series({r: c.acc for r, c in mine.items()}, dtype=float),
             pd.DataFrame({"count": {r: c.robust_count for r, c in mine.items()}, "n": {r: c.n for r, c in
                                                                                          mine.items()}}))
        table[f"cells{suffix}"] = pd.Series([len(mine[r].cells) if r in mine else math.nan for r in rows],
                                            index=table.index, dtype=object)
    cols = d.groupby(["label", "eps", "eps_str", "grad"])["robust_acc"].count().reset_index()
    cols["order"] = [(attack_order(lab), eps, GRAD_ORDER.index(g) if g in GRAD_ORDER else 9)
                     for lab, eps, g in zip(cols["label"], cols["eps"], cols["grad"], strict=True)]
    acc = d.groupby(["label", "eps", "eps_str", "grad", "row"])["robust_acc"].mean()
    counts = d.groupby(["label", "eps", "eps_str", "grad", "row"])[["robust_count", "n"]].sum()
    for lab, eps, eps_str, grad in cols.sort_values("order")[["label", "eps", "eps_str", "grad"]].itertuples(
            index=False):
        key = (lab, eps, eps_str, grad)
        _put(table, lo, hi, f"{lab} @ {eps_str} ({grad})", acc.loc[key], counts.loc[key])
    seeds = d.groupby("row")["seed"].nunique()
    if (seeds > 1).any():
        table["seeds"] = seeds.reindex(table.index)
    return Comparison(table, lo.reindex(columns=table.columns), hi.reindex(columns=table.columns), cases,
                      mask_note(df))


def _put(table: pd.DataFrame, lo: pd.DataFrame, hi: pd.DataFrame, name: str, acc: pd.Series,
         counts: pd.DataFrame) -> None:
    """Column ``name``: accuracy per row in percent, and its Wilson bounds from (count, n) per row."""
    table[name] = [round(100 * acc[r], 1) if r in acc.index else math.nan for r in table.index]
    bounds = [wilson(int(counts.loc[r].iloc[0]), int(counts.loc[r].iloc[1])) if r in counts.index else
              (math.nan, math.nan) for r in table.index]
    lo[name] = [round(100 * b[0], 1) for b in bounds]
    hi[name] = [round(100 * b[1], 1) for b in bounds]


def headline_view(c: Comparison) -> Comparison:
    """``c`` with only the columns a headline needs: clean, the pointwise worst case (and its cell count), and per
    attack its worst case over gradient paths (``(worst)`` columns, a cascade's result among them) or, for a
    gradient-free attack (Square, noise), its only column (``(none)``); single-path columns of gradient attacks and
    a cascade's stage columns are left out."""
    keep = [col for col in c.table.columns if col == "clean" or col.startswith(("worst case", "cells", "seeds"))
            or (col.endswith(("(worst)", "(none)")) and not _is_cascade(col))]
    keep = [col for col in keep if not _is_stage(col)]
    return replace(c, table=c.table[keep], lo=c.lo[keep], hi=c.hi[keep])


CASCADE_LABELS = ("reliable",)


def _is_cascade(col: str) -> bool:
    """A column of a cascade, any version (``reliable ...``, ``reliable-v1 ...``)."""
    head = col.split(" ", 1)[0]
    return any(head == s or head.startswith(f"{s}-v") for s in CASCADE_LABELS)


def _is_stage(col: str) -> bool:
    """A cascade stage's column (``reliable 3: sa-pgd-100 @ ...``, ``reliable-v1 3: ...``), not the cascade's result
    (``reliable @ ...``, ``reliable-v1 @ ...``)."""
    return _is_cascade(col) and not col.startswith(f"{col.split(' ', 1)[0]} @")


def comparison_table(df: pd.DataFrame) -> pd.DataFrame:
    """Models x (clean, worst case, cells, attack @ eps (grad)) in percent with one decimal (no intervals)."""
    return comparison(df).table


def _cell(v: object) -> str:
    return "–" if isinstance(v, float) and math.isnan(v) else (f"{v:.1f}" if isinstance(v, float) else str(v))


def _with_ci(c: Comparison | None, table: pd.DataFrame) -> pd.DataFrame:
    """Cells as text; with ``c``, accuracies as ``45.0 [38.2, 51.9]``."""
    text = table.map(_cell)
    if c is None:
        return text
    for col in table.columns:
        for r in table.index:
            lo, hi = c.lo.at[r, col], c.hi.at[r, col]
            if not (isinstance(lo, float) and math.isnan(lo)) and text.at[r, col] != "–":
                text.at[r, col] = f"{text.at[r, col]} [{lo:.1f}, {hi:.1f}]"
    return text


def to_markdown(table: pd.DataFrame, ci: Comparison | None = None, transpose: bool = False) -> str:
    """The table as Markdown; with ``ci`` (the :class:`Comparison` behind it) every accuracy has its interval.
    ``transpose``: one row per column of the comparison (clean, worst case, each attack x path), one column per
    model: the readable layout when many attacks and paths meet few models."""
    text = _with_ci(ci, table)
    if transpose:
        text = text.T
        text.index.name = "attack @ eps (path)"
    align = ("left", *("right",) * len(text.columns))
    return text.to_markdown(colalign=align, disable_numparse=True)


def to_csv_frame(c: Comparison) -> pd.DataFrame:
    """The table as text with ``<column> lo`` / ``<column> hi`` beside every accuracy column."""
    out = c.table.map(_cell)
    for col in [col for col in c.table.columns if c.lo[col].notna().any()]:
        at = list(out.columns).index(col) + 1
        out.insert(at, f"{col} lo", c.lo[col].map(_cell))
        out.insert(at + 1, f"{col} hi", c.hi[col].map(_cell))
    return out


def to_latex(table: pd.DataFrame, ci: Comparison | None = None) -> str:
    """A booktabs ``tabular`` (needs ``\\usepackage{booktabs}``); accuracies in percent (with ``ci``: and their
    95% intervals)."""
    cols = [table.index.name or "model", *table.columns]
    lines = ["% robench report: accuracy in percent; needs \\usepackage{booktabs}",
             "\\begin{tabular}{l" + "r" * len(table.columns) + "}", "\\toprule",
             " & ".join(tex_escape(str(c)) for c in cols) + " \\\\", "\\midrule"]
    for idx, row in _with_ci(ci, table).iterrows():
        lines.append(" & ".join([tex_escape(str(idx)), *(tex_escape(v) for v in row)]) + " \\\\")
    return "\n".join([*lines, "\\bottomrule", "\\end{tabular}", ""])


# ------------------------------------------------------------------------------------------------- files
def findings_markdown(findings: Sequence[object], notes: Sequence[object] = ()) -> str:
    """``findings`` (:class:`robench.results.findings.Finding`, or any object with ``name`` and ``message``) as
    Markdown, then ``notes`` on what the report could not include (e.g. cells without per-sample masks)."""
    lines = ["# Sanity findings", ""]
    lines += [f"- **{f.name}**: {f.message}" for f in findings] or ["No findings: every sanity check passed."]
    if notes:
        lines += ["", "## Notes", "", *(f"- **{f.name}**: {f.message}" for f in notes)]
    return "\n".join(lines) + "\n"


def write_report(df: pd.DataFrame, out_dir: str | Path, findings: Sequence[object] = (),
                 seeds_compare: Sequence[str] | None = None) -> dict[str, Path]:
    """Write into ``out_dir``: ``table.md``, ``table.csv`` (every column, with intervals), ``table.tex`` (the
    narrow headline table with a caption), ``table-full.tex`` (every column), ``curves.png/.pdf/.svg`` (accuracy
    vs budget per attack family with the worst case) and ``findings.md``; ``breakdown.md``, ``breakdown.csv`` and
    ``breakdown.*`` when the results hold per-sample masks; ``stages.*`` when they hold a cascade; ``seeds.md``
    and ``seeds.*`` when they hold several training seeds of a recipe (or ``seeds_compare`` names two
    recipes, :mod:`robench.results.seeds`)."""
    c = comparison(df)
    seeds_md = seeds_markdown(df, c.table, seeds_compare, attack_labels(df))  # its errors come before any write
    out = _out_dir(df, out_dir)
    if seeds_md is not None:
        (out / "seeds.md").write_text(seeds_md)
    paths = {k: out / f for k, f in (("md", "table.md"), ("csv", "table.csv"), ("tex", "table.tex"),
                                      ("tex_full", "table-full.tex"), ("findings", "findings.md"))}
    paths["md"].write_text(to_markdown(c.table, c) + "\n")
    to_csv_frame(c).to_csv(paths["csv"])
    paths["tex"].write_text(headline_latex(df))
    paths["tex_full"].write_text(to_latex(c.table, c))
    paths.update(zip(("png", "pdf", "svg"), plot_curves(df, out / "curves"), strict=True))
    paths["findings"].write_text(findings_markdown(findings, [c.note] if c.note else []))
    for name, plot in (("stages", plot_stages), ("seeds_fig", plot_seeds)):
        files = plot(df, out / name.removesuffix("_fig"))
        paths.update({f"{name}_{p.suffix[1:]}": p for p in files or []})
    if c.cases:
        frame = breakdown_frame(c.cases)
        paths["breakdown_md"], paths["breakdown_csv"] = out / "breakdown.md", out / "breakdown.csv"
        paths["breakdown_md"].write_text(breakdown_markdown(frame))
        frame.to_csv(paths["breakdown_csv"], index=False)
        paths.update(zip(("breakdown_png", "breakdown_pdf", "breakdown_svg"),
                         plot_breakdown(c.cases, out / "breakdown"), strict=True))
    if seeds_md is not None:
        paths["seeds"] = out / "seeds.md"
    return paths


def masking_findings(df: pd.DataFrame) -> list[Masked]:
    """``gradient-masking`` for every gradient-free cell (Square) that broke images every white-box cell on the
    same images missed (:func:`robench.results.worstcase.masking`), in any kind of run."""
    return masking(df, attack_labels(df)) if len(df) else []


def compare_models(df: pd.DataFrame, a: str, b: str) -> str:
    """The paired comparison of models ``a`` and ``b``'s worst cases on every shared (dataset, n, eps), as
    Markdown; models without masked cells on shared images, or a model compared with itself, are a one-line
    error."""
    if a == b:
        raise UsageError(f"--compare {a} {b}: give two different models (a model compared with itself differs by 0)")
    d = df.assign(label=attack_labels(df))
    return compare_markdown(compare(worst_cases(d, d["label"]), a, b))


def write_compare(text: str, out_dir: str | Path) -> Path:
    """Write :func:`compare_models`' Markdown to ``compare.md`` in ``out_dir``."""
    path = Path(out_dir) / "compare.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _out_dir(df: pd.DataFrame, out_dir: str | Path) -> Path:
    if df.empty:
        raise DataNotFound("no results to report")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file; pass a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


# ------------------------------------------------------------------------------------------ robench report
@dataclass
class Report:
    """What :func:`make_report` read, found and wrote: the selected rows, their comparison (and the view shown:
    the headline columns or all), its Markdown, the findings and notes, the paired comparison, the files."""

    df: pd.DataFrame
    comparison: Comparison
    shown: Comparison
    markdown: str
    findings: list
    notes: list
    paths: dict[str, Path]
    compared: str | None = None


def make_report(results: str | Path = "results", out: str | Path = "results/report", model=None, attack=None,
                dataset=None, eps=None, grad=None, n: int | None = None, readme: str | Path | None = None,
                readme_block: str = "", headline: bool = False, by_cell: bool = False,
                seeds_compare: Sequence[str] | None = None, compare: Sequence[str] | None = None) -> Report:
    """``robench report``: read ``results`` (a folder's CSVs or one CSV), keep the rows :func:`select` keeps,
    check them, and write the report into ``out`` (:func:`write_report`); ``compare``: two model ids, their paired
    comparison (``compare.md``); ``readme``: a document whose marked block (:func:`inject_markdown`, ``readme_block``)
    gets the table (``headline``: its headline columns; ``by_cell``: transposed), or the comparison of ``compare``
    or ``seeds_compare``. Every option is checked before anything is written."""
    results, out = Path(results), Path(out)
    if out.resolve() == results.resolve():
        raise UsageError(f"--out {str(out)!r} must differ from --results (the report's CSV would mix with results)")
    df = ResultsStore(results).read() if results.is_file() else read_dir(results)
    df = select(df, model, attack, dataset, eps, grad, n)
    masked = masking_findings(df)  # computed from the masks: also across files and runs
    findings = [*(f for f in stored_flags(df) if f.name != "gradient-masking" or f.model not in
                  {m.model for m in masked}), *check_records(df), *masked]
    # check the markers and the models to compare before writing anything
    readme = Path(readme) if readme else None
    doc = inject_markdown(readme.read_text(), "", str(readme), readme_block) if readme else None
    compared = compare_models(df, *compare) if compare else None
    paths = write_report(df, out, findings, seeds_compare if seeds_compare and all(seeds_compare) else None)
    c = comparison(df)
    shown = headline_view(c) if headline else c
    table_md = to_markdown(shown.table, shown, transpose=by_cell)
    if readme and doc is not None:  # with --compare (--seeds-compare) the block gets that comparison, untitled
        block = (untitled(compared) if compared is not None else
                 untitled(paths["seeds"].read_text()) if seeds_compare and "seeds" in paths else table_md)
        readme.write_text(inject_markdown(readme.read_text(), block, str(readme), readme_block))
        paths["readme"] = readme
    if compared is not None:
        paths["compare"] = write_compare(compared, out)
    return Report(df, c, shown, table_md, findings, [c.note] if c.note else [], paths, compared)
