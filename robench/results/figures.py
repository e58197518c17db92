"""Figures a paper can use: one question per figure, every plotted model in the legend, PNG + PDF + SVG.

- :func:`plot_curves` (``curves.*``): how does accuracy fall with the budget? One panel per attack family (the
  strongest configuration and gradient path of that family at each budget), the first panel the pointwise worst
  case over every attack and path; each model a line with its Wilson 95% band; clean accuracy at eps = 0.
- :func:`plot_stages` (``stages.*``): what does each stage of the reliable cascade add? Robust accuracy after
  each stage, one line per model, one panel per cascade (version, budget, n).
- :func:`plot_seeds` (``seeds.*``): how far apart are training seeds? Each seed's worst-case robust accuracy with
  its interval, the mean over seeds, one column per recipe.
- :func:`headline_latex` (:mod:`robench.results.headline`, re-exported here): a narrow LaTeX table (model, n,
  clean, worst case with its interval) with a caption.

Sizes fit a two-column paper: :data:`COLUMN` (3.5 in) for one panel, :data:`PAGE` (7 in) for more; fonts 7-8 pt.
Every model keeps its colour and marker in every figure (:func:`model_styles`: 20 colours x 8 markers x 4 line
styles, distinct pairs for 40 models, distinct triples for 160). Files are reproducible (no dates in PDF/SVG).
pandas and matplotlib only (Figure objects, no pyplot: no backend chosen, no global state), never torch.

Examples:
    >>> paths = plot_curves(df, "results/report/curves")      # curves.png, curves.pdf, curves.svg
    >>> Path("table.tex").write_text(headline_latex(df))
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib import colormaps, rc_context
from matplotlib.figure import Figure  # no pyplot: no backend, no global state
from matplotlib.lines import Line2D

from .headline import headline_latex, headline_rows  # noqa: F401  (importable from here as before)
from .labels import REPORT_ORDER, attack_labels, suite_label
from .seeds import seed_groups
from .stats import wilson
from .worstcase import WorstCase, worst_cases

COLUMN, PAGE = 3.5, 7.0  # inches: one column and the full width of a two-column paper
FORMATS = ("png", "pdf", "svg")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINES = ("-", "--", "-.", ":")
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7,
         "ytick.labelsize": 7, "lines.linewidth": 1.2, "lines.markersize": 4, "pdf.fonttype": 42,
         "svg.fonttype": "none", "svg.hashsalt": "robench", "axes.grid": True, "grid.alpha": 0.3}
WORST = "worst case (every attack and path)"


def colors() -> list:
    """20 colours: tab20's dark shades first, then its light ones, so the first ten models differ most."""
    cmap = colormaps["tab20"]
    return [cmap(i) for i in range(0, 20, 2)] + [cmap(i) for i in range(1, 20, 2)]


def model_styles(models: Sequence[str]) -> dict[str, dict]:
    """Colour, marker and line style per model (sorted), as ``plot`` keyword arguments: no two models alike."""
    palette = colors()
    return {m: {"color": palette[i % 20], "marker": MARKERS[i % len(MARKERS)],
                "linestyle": LINES[(i // 40) % len(LINES)]} for i, m in enumerate(sorted(models))}


def save(fig, stem: str | Path, dpi: int = 200) -> list[Path]:
    """Write ``stem.png``, ``stem.pdf`` and ``stem.svg`` (no dates: the same figure gives the same files)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    meta = {"pdf": {"CreationDate": None, "ModDate": None}, "svg": {"Date": None}, "png": {}}
    out = []
    for fmt in FORMATS:
        path = stem.with_name(f"{stem.name}.{fmt}")
        fig.savefig(path, format=fmt, dpi=dpi, bbox_inches="tight", metadata=meta[fmt])
        out.append(path)
    return out


def _legend(fig, styles: dict[str, dict], shown: Sequence[str], top: float) -> None:
    """One legend under the panels listing every plotted model."""
    handles = [Line2D([], [], label=m, **styles[m]) for m in sorted(shown)]
    ncol = max(1, min(6, 100 // (max((len(m) for m in shown), default=10) + 8)))  # a page holds ~100 characters
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, top), ncol=ncol, frameon=False,
               handlelength=2.6)


def _grid(panels: int, ncols: int, width: float, height: float):
    ncols = max(1, min(ncols, panels))
    nrows = math.ceil(panels / ncols)
    fig = Figure(figsize=(width, height * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[panels:]:
        ax.axis("off")
    return fig, axes


# ------------------------------------------------------------------------------------------- accuracy vs eps
def threat(params: str | dict) -> str:
    """The threat model of a row beyond L-inf with deterministic inputs, for panel titles: its norm (``L2``) and
    the draws that decide a stochastic model's verdict (``16 draws``); empty for L-inf."""
    p = json.loads(params) if isinstance(params, str) and params else dict(params or {})
    parts = [str(p["norm"])] if p.get("norm", "Linf") != "Linf" else []
    return ", ".join(parts + ([f"{p['draws']} draws"] if p.get("draws") else []))


def family(attack: str, params: str) -> str | None:
    """The family a row belongs to in the curves: the attack's name (``pgd`` and ``bim`` say they keep the final
    iterate); a cascade's whole (``reliable``); None for a cascade's single stage. Another threat model is
    another family (``pgd-best · L2``): budgets of different norms never share an axis."""
    p = json.loads(params) if params else {}
    if "suite" in p:
        if p.get("stage") != "all":
            return None
        name = suite_label(str(p["suite"]), p.get("version"))  # reliable-v1 once a newer version ships
    else:
        name = f"{attack} (final iterate)" if attack in ("pgd", "bim") else attack
    return f"{name} · {threat(p)}" if threat(p) else name


def _worst_panel(budget: str, eps: float) -> tuple[str, str]:
    """A worst case's panel and tick label from its budget label (``8/255``, ``L2 0.5``, ``8/255, 16 draws``)."""
    head, _, draws = budget.partition(", ")
    norm, _, raw = head.rpartition(" ")
    extra = ", ".join(x for x in (norm, draws) if x)
    return (f"{WORST} · {extra}" if extra else WORST), raw or f"{eps:g}"


def _family_order(name: str) -> tuple:
    base = name.split(" ")[0]
    return (REPORT_ORDER.index(base) if base in REPORT_ORDER else len(REPORT_ORDER), name)


def _series(df: pd.DataFrame) -> pd.Series:
    """The legend name of each row: its model, with the dataset when a model was run on several."""
    several = df.groupby("model")["dataset"].nunique()
    return pd.Series([m if several[m] == 1 else f"{m} [{d}]" for m, d in zip(df["model"], df["dataset"],
                                                                           strict=True)], index=df.index)


def curve_points(df: pd.DataFrame) -> pd.DataFrame:
    """Long table of the curves: ``panel, row, eps, eps_str, count, n, acc, lo, hi`` (fractions). Per family,
    model and budget the lowest robust accuracy over the family's configurations and gradient paths; the panel
    :data:`WORST` is the pointwise worst case over every masked cell; eps = 0 is clean accuracy. A model run on
    several numbers of images shows, at each budget, its largest n (the narrowest interval)."""
    fams = [family(a, p) for a, p in zip(df["attack"], df["params"], strict=True)]
    full = df.assign(row=_series(df), fam=fams)
    # every model's legend name and clean accuracy, also of a model whose only masked rows belong to no family (a
    # cascade that has not finished yet: its probe and stage rows still count in the pointwise worst case)
    rows = dict(zip(zip(full["model"], full["dataset"], strict=True), full["row"], strict=True))
    d = full[full["fam"].notna()]
    best = d.sort_values("robust_acc", kind="stable").groupby(["fam", "row", "n", "eps"], sort=False).head(1)
    pts = [{"panel": r["fam"], "row": r["row"], "eps": float(r["eps"]), "eps_str": str(r["eps_str"]),
            "count": int(r["robust_count"]), "n": int(r["n"])} for r in best.to_dict("records")]
    for c in worst_cases(df, attack_labels(df)):
        panel, tick = _worst_panel(c.eps_str, c.eps)
        pts.append({"panel": panel, "row": rows[(c.model, c.dataset)], "eps": c.eps, "eps_str": tick,
                    "count": c.robust_count, "n": c.n})
    out = pd.DataFrame(pts, columns=["panel", "row", "eps", "eps_str", "count", "n"])
    out = out[out["n"] == out.groupby(["panel", "row", "eps"])["n"].transform("max")]
    clean = full.sort_values("n").groupby("row")[["clean_count", "n"]].last()  # the largest n's clean accuracy
    zero = [{"panel": panel, "row": row, "eps": 0.0, "eps_str": "0", "count": int(clean.at[row, "clean_count"]),
             "n": int(clean.at[row, "n"])} for panel, row in set(zip(out["panel"], out["row"], strict=True))
            if not ((out["panel"] == panel) & (out["row"] == row) & (out["eps"] == 0)).any()]
    out = pd.concat([out, pd.DataFrame(zero, columns=out.columns)], ignore_index=True)
    out = out.astype({"eps": float, "count": int, "n": int})
    bounds = [wilson(int(k), int(n)) for k, n in zip(out["count"], out["n"], strict=True)]
    return out.assign(acc=out["count"] / out["n"].clip(lower=1), lo=[b[0] for b in bounds],
                      hi=[b[1] for b in bounds]).sort_values(["panel", "row", "eps"], ignore_index=True)


def plot_curves(df: pd.DataFrame, stem: str | Path, ncols: int = 3) -> list[Path]:
    """Accuracy (%) vs budget per attack family, the worst case first, Wilson 95% bands; page wide."""
    pts = curve_points(df)
    panels = sorted(set(pts["panel"]), key=lambda p: (not p.startswith(WORST), _family_order(p)))  # worst first
    styles = model_styles(pts["row"].unique())
    with rc_context(STYLE):
        fig, axes = _grid(len(panels), ncols, PAGE, 1.9)
        for ax, panel in zip(axes.flat, panels, strict=False):
            sub = pts[pts["panel"] == panel]
            alpha = 0.15 if sub["row"].nunique() <= 6 else 0.07  # many bands: lighter, so the lines stay readable
            for row, g in sub.groupby("row", sort=True):
                st = styles[row]
                ax.fill_between(g["eps"], 100 * g["lo"], 100 * g["hi"], color=st["color"], alpha=alpha, lw=0)
                ax.plot(g["eps"], 100 * g["acc"], **st)
            _eps_ticks(ax, dict(zip(sub["eps"], sub["eps_str"], strict=True)))
            ax.set_title(panel, fontweight="bold" if panel.startswith(WORST) else None)
            norm = next((n for n in ("L2", "L1") if f"· {n}" in panel), "L-inf")
            ax.set_xlabel("sigma (noise std)" if panel.startswith("gaussian") else f"eps ({norm})")
            ax.set_ylim(-2, 102)
        for ax in axes[:, 0]:
            ax.set_ylabel("accuracy (%)")
        fig.tight_layout(h_pad=1.0)
        _legend(fig, styles, list(styles), top=0.0)
        return save(fig, stem)


def _eps_ticks(ax, ticks: dict[float, str]) -> None:
    """Budgets as stored (``8/255``); a tick too close to the previous one (under 18% of the range) is left out,
    the largest always shown."""
    xs = sorted(ticks)
    gap = 0.18 * (xs[-1] - xs[0] or 1)
    shown = [xs[0]]
    for x in xs[1:]:
        if x - shown[-1] >= gap:
            shown.append(x)
    if shown[-1] != xs[-1]:
        shown[-1] = xs[-1]
    ax.set_xticks(shown)
    ax.set_xticklabels([ticks[x] for x in shown])


# ---------------------------------------------------------------------------------------------- the cascade
def stage_points(df: pd.DataFrame) -> pd.DataFrame:
    """Long table of the cascade: ``panel, row, eps, n, stage, label, acc`` (stage 0 = clean), one panel per
    cascade suite, version, budget and n. Of a model's runs of one version under several stage lists (an edited
    list has another digest), only the last list's are kept. A stage's label names its attack and the path it
    asked for (``probe:2`` runs through a different path on each model, so it is not labelled by any one of them);
    a further restart of a stage is a point without a label of its own."""
    out = []
    d = df.assign(row=_series(df))
    recs = [(r, json.loads(r["params"]) if r["params"] else {}) for r in d.to_dict("records")]
    run = lambda r, p: (r["row"], p["suite"], p.get("version", 1), r["eps_str"], int(r["n"]))  # noqa: E731
    last = {run(r, p): p.get("digest") for r, p in recs if "suite" in p}  # each run's last stage list
    for r, p in recs:
        if "suite" not in p or p.get("stage") == "all" or p.get("digest") != last[run(r, p)]:
            continue
        more = f" ({threat(p)})" if threat(p) else ""
        panel = f"{p['suite']} v{p.get('version', 1)} @ {r['eps_str']}{more}, n = {r['n']}"
        k, _, restart = str(p["stage"]).partition("+")  # "3+1": stage 3's first extra restart; "probe": no stage
        label = "" if restart else f"{k}: {p.get('attack', r['attack'])}\n{p.get('path_requested') or r['grad']}"
        at = {"panel": panel, "row": r["row"], "eps": float(r["eps"]), "n": int(r["n"])}
        if not k.isdigit():
            continue
        out += [{**at, "stage": int(k) + 0.3 * int(restart or 0), "label": label, "acc": float(r["robust_acc"])},
                {**at, "stage": 0, "label": "clean", "acc": float(r["clean_acc"])}]
    cols = ["panel", "row", "eps", "n", "stage", "label", "acc"]
    return pd.DataFrame(out, columns=cols).drop_duplicates(["panel", "row", "stage"]).sort_values(
        ["row", "stage"], ignore_index=True, kind="stable")


def plot_stages(df: pd.DataFrame, stem: str | Path) -> list[Path] | None:
    """Robust accuracy after each stage of the cascade, one line per model (None when no cascade was run)."""
    pts = stage_points(df)
    if pts.empty:
        return None
    panels = list(pts.sort_values(["eps", "n"], kind="stable")["panel"].unique())
    styles = model_styles(pts["row"].unique())
    with rc_context(STYLE):
        fig, axes = _grid(len(panels), 2, PAGE if len(panels) > 1 else COLUMN, 2.6)
        for ax, panel in zip(axes.flat, panels, strict=False):
            sub = pts[pts["panel"] == panel]
            for row, g in sub.groupby("row", sort=True):
                ax.plot(g["stage"], 100 * g["acc"], **styles[row])
            labels = sub.drop_duplicates("stage").set_index("stage")["label"].sort_index()
            ax.set_xticks(list(labels.index))
            ax.set_xticklabels(list(labels), rotation=60, ha="right", fontsize=6)
            ax.set_title(panel)
            ax.set_ylabel("robust accuracy (%)")
        fig.tight_layout()
        _legend(fig, styles, list(styles), top=0.0)
        return save(fig, stem)


# ------------------------------------------------------------------------------------------ the breakdown
def breakdown_series(cases: Sequence[WorstCase], shown: int = 9) -> list[tuple[str, list[int], object]]:
    """The segments of :func:`plot_breakdown` as ``(label, count per case, colour)``: robust in every cell, clean
    errors, the ``shown`` cells that broke the most images overall, and the rest as "other cells"; each case's
    counts add up to its n."""
    total: dict[str, int] = {}
    for c in cases:
        for cell, k in zip(c.cells, c.added, strict=True):
            total[cell] = total.get(cell, 0) + max(k, 0)
    top = sorted(total, key=lambda cell: -total[cell])[:shown]
    palette = [col for i, col in enumerate(colors()) if i not in (2, 7)]  # green and grey mean robust, clean

    def added(c: WorstCase, cell: str) -> int:  # a label can name two cells (the same attack from two runs)
        return sum(k for name, k in zip(c.cells, c.added, strict=True) if name == cell)

    series = [("robust in every cell", [c.robust_count for c in cases], "#2ca02c"),
              ("clean errors", [c.n - c.clean_count for c in cases], "#7f7f7f")]
    series += [(cell, [added(c, cell) for c in cases], palette[i % len(palette)]) for i, cell in enumerate(top)]
    rest = [sum(k for cell, k in zip(c.cells, c.added, strict=True) if cell not in top) for c in cases]
    if any(rest):
        series.append((f"other cells ({len(total) - len(top)})", rest, "#d9d9d9"))
    return series


def plot_breakdown(cases: Sequence[WorstCase], stem: str | Path, shown: int = 9) -> list[Path]:
    """Which attack and path broke each image first: a horizontal bar per model (and n and budget, when a model
    has several) split as :func:`breakdown_series` says, in percent of n."""
    several = {c.model for c in cases if sum(d.model == c.model for d in cases) > 1}
    names = [f"{c.model} (n = {c.n}, {c.eps_str})" if c.model in several else c.model for c in cases]
    with rc_context(STYLE):
        fig = Figure(figsize=(PAGE - 1.4, 0.9 + 0.2 * len(cases)))  # the model names take the rest
        ax = fig.subplots()
        left = [0.0] * len(cases)
        for label, counts, color in breakdown_series(cases, shown):
            pct = [100 * k / c.n for k, c in zip(counts, cases, strict=True)]
            ax.barh(range(len(cases)), pct, left=left, color=color, label=label, height=0.7)
            left = [a + b for a, b in zip(left, pct, strict=True)]
        ax.set_yticks(range(len(cases)))
        ax.set_yticklabels(names)
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("% of the n images")
        ax.grid(axis="y", visible=False)
        ax.set_title("Pointwise worst case: the attack and path that broke each image first")
        ax.legend(loc="upper left", bbox_to_anchor=(-0.35, -0.6 / (0.9 + 0.2 * len(cases)) - 0.02), ncol=2,
                  frameon=False)
        return save(fig, stem)


# ---------------------------------------------------------------------------------------------------- seeds
def seed_points(df: pd.DataFrame) -> pd.DataFrame:
    """Per recipe with two or more seeds: each seed's pointwise worst case (largest n, at the budget most models
    share) as ``recipe, seed, model, eps_str, n, acc, lo, hi``."""
    cases = worst_cases(df, attack_labels(df))
    if not cases:
        return pd.DataFrame(columns=["recipe", "seed", "model", "eps_str", "n", "acc", "lo", "hi"])
    eps = pd.Series([c.eps for c in cases]).value_counts().sort_index(ascending=False).idxmax()
    best: dict[str, WorstCase] = {}
    for c in cases:
        if c.eps == eps and (c.model not in best or c.n > best[c.model].n):
            best[c.model] = c
    rows = []
    for recipe, seeds in seed_groups(list(best)).items():
        if len(seeds) < 2:
            continue
        for k, model in sorted(seeds.items()):
            c = best[model]
            lo, hi = c.interval()
            rows.append({"recipe": recipe, "seed": k, "model": model, "eps_str": c.eps_str, "n": c.n,
                         "acc": c.acc, "lo": lo, "hi": hi})
    return pd.DataFrame(rows, columns=["recipe", "seed", "model", "eps_str", "n", "acc", "lo", "hi"])


def plot_seeds(df: pd.DataFrame, stem: str | Path) -> list[Path] | None:
    """Each seed's worst-case robust accuracy with its interval, and the mean over seeds, per recipe (None when
    no recipe has two seeds in the results)."""
    pts = seed_points(df)
    if pts.empty:
        return None
    recipes = sorted(pts["recipe"].unique())
    seeds = sorted(pts["seed"].unique())
    palette = colors()
    with rc_context(STYLE):
        fig = Figure(figsize=(max(COLUMN, 0.55 * len(recipes) + 1.2), 2.8))
        ax = fig.subplots()
        for i, recipe in enumerate(recipes):
            g = pts[pts["recipe"] == recipe]
            mean = 100 * g["acc"].mean()
            ax.hlines(mean, i - 0.3, i + 0.3, color="black", lw=1.5, zorder=3)
            for j, s in enumerate(g.to_dict("records")):
                x = i + (j - (len(g) - 1) / 2) * 0.12
                k = seeds.index(s["seed"])
                # at 0 % or 100 % the interval's bound can round past the point: never a negative error bar
                err = [[max(0.0, 100 * (s["acc"] - s["lo"]))], [max(0.0, 100 * (s["hi"] - s["acc"]))]]
                ax.errorbar(x, 100 * s["acc"], yerr=err,
                            fmt=MARKERS[k % len(MARKERS)], color=palette[k % 20], ms=4, capsize=2, lw=0.8)
        prefix = _common_prefix(recipes)
        ax.set_xticks(range(len(recipes)))
        ax.set_xticklabels([r[len(prefix):] for r in recipes], rotation=30 if len(recipes) > 4 else 0,
                           ha="right" if len(recipes) > 4 else "center")
        ax.set_xlabel(f"recipe ({prefix}...)" if prefix else "recipe")
        ns = sorted(set(pts["n"]))
        ax.set_ylabel("worst-case accuracy (%)")
        ax.set_title(f"Worst case over training seeds\neps {', '.join(sorted(set(pts['eps_str'])))}, n = "
                     f"{' or '.join(map(str, ns))}; bars: 95% intervals")
        handles = [Line2D([], [], color=palette[k % 20], marker=MARKERS[k % len(MARKERS)], ls="", label=f"seed {s}")
                   for k, s in enumerate(seeds)] + [Line2D([], [], color="black", lw=1.5, label="mean over seeds")]
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=min(4, len(handles)),
                  frameon=False)
        fig.tight_layout()
        return save(fig, stem)


def _common_prefix(names: Sequence[str]) -> str:
    """The longest common prefix of ``names`` that ends at a ``-`` (empty for one name)."""
    if len(names) < 2:
        return ""
    first, last = min(names), max(names)
    i = 0
    while i < min(len(first), len(last)) and first[i] == last[i]:
        i += 1
    return first[: first.rfind("-", 0, i) + 1] if i else ""
