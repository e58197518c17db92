"""Results tables -> comparison tables (Markdown, CSV, LaTeX) and robustness curves (PNG).

Rows of a table are models; columns are clean accuracy, the headline ``worst case`` (the pointwise worst case over
every masked cell on the same images, :mod:`robench.results.worstcase`) with the number of ``cells`` it combines, then
``attack @ eps (grad)`` for every attack, budget and gradient mode in the results, the worst case over modes
included. Every accuracy carries a Wilson 95% interval (``45.0 [38.2, 51.9]``; CSV: ``lo``/``hi`` columns).
Percentages carry one decimal; budgets are shown as stored (``8/255``). Curves plot accuracy against eps, one line
per model, one panel per attack x gradient mode, with clean accuracy at eps = 0. This module imports only
:mod:`robench.results.store`, :mod:`robench.results.stats`, :mod:`robench.results.worstcase`, pandas and matplotlib
(figures without pyplot: no backend chosen, no global state): it never needs torch, so it is fast and testable on
CSV files.

Examples:
    >>> df = select(read_dir("results"), model="fmnist-vgg11")
    >>> paths = write_report(df, "results/report")   # table.*, curves.png, findings.md, breakdown.*
    >>> write_compare(compare_models(df, "fmnist-vgg11-lif-gn", "fmnist-vgg11-stable-gn"), "results/report")
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure  # no pyplot: no backend, no global state

from ..attack_meta import FINAL_ITERATE, REPORT_ORDER
from ..errors import DataNotFound, UsageError
from .findings import Finding
from .seeds import seeds_markdown
from .stats import wilson
from .store import read_dir
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
    plot_breakdown,
    worst_cases,
)

__all__ = ["read_dir", "select", "comparison", "comparison_table", "to_markdown", "to_latex", "plot_curves",
           "write_report", "compare_models", "write_compare"]

GRAD_ORDER = ("bptt", "rate", "worst", "none")
# the protocol files (data, never imported): a cascade's rows of its newest version are labelled by its bare name
PROTOCOL_DIR = Path(__file__).resolve().parents[1] / "eval" / "protocols"
UNLABELLED = ("path_requested",)  # params a label never shows: the grad column says which path ran
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


# ------------------------------------------------------------------------------------------------ labels
def _k255(v: float) -> str:
    k = v * 255
    return f"{round(k, 2):g}/255" if abs(k - round(k, 2)) < 1e-9 else f"{v:.4g}"


def attack_labels(df: pd.DataFrame) -> pd.Series:
    """A short label per row: ``pgd-10 (final)`` (final-iterate attacks say so), ``pgd-best-50``, ``apgd-ce-10``,
    ``square-5000``, ``autoattack-standard``; parameters that still differ between rows of the same label are
    appended (``pgd-10 (final) step=1/255``)."""
    params = df["params"].map(lambda t: {k: v for k, v in json.loads(t).items() if k not in UNLABELLED})

    def base(attack: str, p: dict) -> str:
        if "suite" in p:  # a cascade's stage row (``reliable 1: pgd-best-50``) or its whole (``reliable``)
            suite = suite_label(p["suite"], p.get("version"))
            if p.get("stage") == "all":
                return suite
            inner = {k: v for k, v in p.items() if k not in ("suite", "stage", "attack")}
            return f"{suite} {p['stage']}: {base(p['attack'], inner)}"
        if attack == "autoattack":
            return f"autoattack-{p.get('version', '?')}" + (f"-{p['steps']}" if "steps" in p else "")
        label = f"{attack}-{p['steps']}" if "steps" in p else (f"{attack}-{p['queries']}" if "queries" in p
                                                                  else attack)
        return f"{label} (final)" if attack in FINAL_ITERATE else label

    labels = pd.Series([base(a, p) for a, p in zip(df["attack"], params, strict=True)], index=df.index)
    for label in labels.unique():
        rows = labels[labels == label].index
        distinct = {json.dumps(params[i], sort_keys=True) for i in rows}
        if len(distinct) < 2:
            continue
        keys = sorted({k for i in rows for k in params[i]})
        varying = [k for k in keys if len({json.dumps(params[i].get(k)) for i in rows}) > 1]
        ratio = _step_ratio(df, params, rows) if varying == ["step_size"] else None
        if ratio is not None:  # a sweep whose step follows the budget (PGD-10, step eps/4): one curve
            labels[rows] = f"{label} step=eps/{ratio:g}"
            continue
        for i in rows:
            extra = " ".join(f"{'step' if k == 'step_size' else k}="
                             f"{_k255(params[i][k]) if k == 'step_size' else params[i].get(k)}" for k in varying)
            labels[i] = f"{label} {extra}"
    return labels


def newest_version(suite: str, folder: Path = PROTOCOL_DIR) -> int | None:
    """The newest shipped version of protocol ``suite`` (from its files' names), None when none ships."""
    found = [int(f.stem.rsplit("-v", 1)[1]) for f in folder.glob(f"{suite}-v*.toml")
             if f.stem.rsplit("-v", 1)[1].isdigit()]
    return max(found, default=None)


def suite_label(suite: str, version: object) -> str:
    """A cascade's label: ``reliable`` for rows of its newest version, ``reliable-v1`` for an older one."""
    newest = newest_version(suite)
    if newest is None or version is None or int(version) == newest:
        return suite
    return f"{suite}-v{version}"


def _step_ratio(df: pd.DataFrame, params: pd.Series, rows: pd.Index) -> float | None:
    """``k`` when every row with eps > 0 has step = eps / k (rows at eps = 0 move nothing), else None."""
    ratios = {round(df.at[i, "eps"] / params[i]["step_size"], 6) for i in rows if df.at[i, "eps"] > 0}
    return ratios.pop() if len(ratios) == 1 else None


def _row_labels(df: pd.DataFrame) -> pd.Series:
    per_model = df.groupby("model")[["dataset", "n"]].nunique()
    plain = set(per_model.index[(per_model["dataset"] == 1) & (per_model["n"] == 1)])
    return df.apply(lambda r: r["model"] if r["model"] in plain else f"{r['model']} [{r['dataset']}, n={r['n']}]",
                    axis=1)


def _attack_order(label: str) -> tuple:
    name = label.split(" ")[0]
    fams = [(len(a), i) for i, a in enumerate(REPORT_ORDER) if name == a or name.startswith(a + "-")]
    fam = max(fams)[1] if fams else len(REPORT_ORDER)  # the longest match: pgd-best-50 is pgd-best, not pgd
    digits = "".join(c for c in name.rsplit("-", 1)[-1] if c.isdigit())
    return fam, int(digits) if digits else 0, label


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
    cols["order"] = [(_attack_order(lab), eps, GRAD_ORDER.index(g) if g in GRAD_ORDER else 9)
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
    attack its worst case over gradient paths (``(worst)`` columns, a cascade's result among them); single-path
    columns and a cascade's stage columns are left out."""
    keep = [col for col in c.table.columns if col == "clean" or col.startswith(("worst case", "cells", "seeds"))
            or (col.endswith("(worst)") and not _is_cascade(col))]
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


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
        "$": r"\$", "~": r"\~{}", "^": r"\^{}", "–": "--"}


def _tex(s: str) -> str:
    return "".join(_TEX.get(c, c) for c in s)


def to_latex(table: pd.DataFrame, ci: Comparison | None = None) -> str:
    """A booktabs ``tabular`` (needs ``\\usepackage{booktabs}``); accuracies in percent (with ``ci``: and their
    95% intervals)."""
    cols = [table.index.name or "model", *table.columns]
    lines = ["% robench report: accuracy in percent; needs \\usepackage{booktabs}",
             "\\begin{tabular}{l" + "r" * len(table.columns) + "}", "\\toprule",
             " & ".join(_tex(str(c)) for c in cols) + " \\\\", "\\midrule"]
    for idx, row in _with_ci(ci, table).iterrows():
        lines.append(" & ".join([_tex(str(idx)), *(_tex(v) for v in row)]) + " \\\\")
    return "\n".join([*lines, "\\bottomrule", "\\end{tabular}", ""])


# ------------------------------------------------------------------------------------------------ curves
def plot_curves(df: pd.DataFrame, path: str | Path) -> Path:
    """Accuracy (%) vs eps, one line per model, one panel per attack x gradient mode; clean accuracy at eps = 0."""
    d = df.assign(row=_row_labels(df), label=attack_labels(df))
    panels = sorted({(lab, g) for lab, g in zip(d["label"], d["grad"], strict=True)},
                    key=lambda p: (_attack_order(p[0]), GRAD_ORDER.index(p[1]) if p[1] in GRAD_ORDER else 9, p))
    rows_ = sorted(d["row"].unique())
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    legend_rows = math.ceil(len(rows_) / 3)
    height = 3.4 * nrows + 0.6 + 0.3 * legend_rows  # inches: panels, title, legend
    fig = Figure(figsize=(4.6 * ncols, height))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    colors = colormaps["tab10"]
    for ax, (lab, grad) in zip(axes.flat, panels, strict=False):
        sub = d[(d["label"] == lab) & (d["grad"] == grad)]
        ticks: dict[float, str] = {0.0: "0"}
        for i, r in enumerate(rows_):
            m = sub[sub["row"] == r]
            if m.empty:
                continue
            pts = m.groupby(["eps", "eps_str"])["robust_acc"].mean().reset_index()
            clean = float(m["clean_acc"].mean())
            if not (pts["eps"] == 0).any():
                pts = pd.concat([pd.DataFrame({"eps": [0.0], "eps_str": ["0"], "robust_acc": [clean]}), pts])
            pts = pts.sort_values("eps")
            ticks.update(zip(pts["eps"], pts["eps_str"], strict=True))
            ax.plot(pts["eps"], 100 * pts["robust_acc"], marker="o", color=colors(i % 10), label=r)
        _ticks(ax, ticks)
        ax.set_title(f"{lab} · {grad}", fontsize=10)
        ax.set_xlabel("sigma" if lab.startswith("gaussian") else "eps (L-inf)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (%)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)) or 1, fontsize=9, frameon=False)
    data = ", ".join(f"{ds} (n={n})" for ds, n in sorted(set(zip(d["dataset"], d["n"], strict=True))))
    fig.suptitle(f"Accuracy under attack vs budget; eps 0 = clean accuracy; {data}", fontsize=11)
    fig.tight_layout(rect=(0, (0.15 + 0.3 * legend_rows) / height, 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def _ticks(ax, ticks: dict[float, str]) -> None:
    """Label eps ticks as stored (k/255); thin them out when they would overlap."""
    xs = sorted(ticks)
    step = max(1, math.ceil(len(xs) / 6))
    shown = xs[::step] if xs[-1] in xs[::step] else [*xs[::step], xs[-1]]
    ax.set_xticks(shown)
    ax.set_xticklabels([ticks[x] for x in shown], fontsize=8)


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
    """Write ``table.md``, ``table.csv``, ``table.tex``, ``curves.png`` and ``findings.md`` into ``out_dir``;
    ``breakdown.md``, ``breakdown.csv``, ``breakdown.png`` when the results hold per-sample masks; and ``seeds.md``
    when they hold several training seeds of a recipe or ``seeds_compare`` names two recipes
    (:mod:`robench.results.seeds`)."""
    c = comparison(df)
    seeds_md = seeds_markdown(df, c.table, seeds_compare, attack_labels(df))  # its errors come before any write
    out = _out_dir(df, out_dir)
    if seeds_md is not None:
        (out / "seeds.md").write_text(seeds_md)
    paths = {k: out / f for k, f in (("md", "table.md"), ("csv", "table.csv"), ("tex", "table.tex"),
                                      ("png", "curves.png"), ("findings", "findings.md"))}
    paths["md"].write_text(to_markdown(c.table, c) + "\n")
    to_csv_frame(c).to_csv(paths["csv"])
    paths["tex"].write_text(to_latex(c.table, c))
    plot_curves(df, paths["png"])
    paths["findings"].write_text(findings_markdown(findings, [c.note] if c.note else []))
    if c.cases:
        frame = breakdown_frame(c.cases)
        paths["breakdown_md"], paths["breakdown_csv"] = out / "breakdown.md", out / "breakdown.csv"
        paths["breakdown_md"].write_text(breakdown_markdown(frame))
        frame.to_csv(paths["breakdown_csv"], index=False)
        paths["breakdown_png"] = plot_breakdown(c.cases, out / "breakdown.png")
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
