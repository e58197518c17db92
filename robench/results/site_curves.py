"""A model's accuracy-vs-budget curves for its leaderboard page (SVG): one line per attack, Wilson 95% bars.

Per attack and budget the point is the attack's worst case over the gradient paths it ran where that row is stored
(else its strongest path), on the most images it ran on; a cascade is one line per protocol version (the newest
bold black, older ones grey and dashed); clean accuracy sits at eps = 0. One panel per norm, one for Gaussian
noise. The same rows give the same file (fixed SVG ids, no date). pandas and matplotlib only, never torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from matplotlib import colormaps, rc_context
from matplotlib.figure import Figure  # no pyplot: no backend, no global state

from ..attack_meta import NOISE
from .board import DEFAULT_NORM, Acc, cascades, sort_version
from .report import attack_labels

SVG = {"svg.hashsalt": "robench", "svg.fonttype": "none"}  # stable ids, text as text: the same rows, the same file


def _series(rows: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """(panel, line label) -> points (eps, eps_str, count, n): per attack and budget, the worst case over paths
    where stored (else the lowest path), on the most images; a cascade as one line per protocol version."""
    params = rows["params"].map(json.loads)
    labels = attack_labels(rows)
    norms = {c.summary["row"]: c.norm for c in cascades(rows) if c.summary is not None}  # a summary row has none
    keep = []
    for i, r in rows.iterrows():
        p = params[i]
        version = str(p.get("version", "1")) if "suite" in p else ""
        if "suite" in p and p.get("stage") != "all":
            continue  # a cascade's stages: on the breakdown table
        label = f"{p['suite']} v{version}" if version else labels[i]
        panel = "noise" if r["attack"] in NOISE else str(p.get("norm", norms.get(i, DEFAULT_NORM)))
        keep.append({"panel": panel, "label": label, "version": version, "eps": float(r["eps"]),
                     "eps_str": r["eps_str"], "worst": r["grad"] in ("worst", "none") or "suite" in p, "n": int(r["n"]),
                     "count": int(r["robust_count"]), "clean": int(r["clean_count"])})
    pts = pd.DataFrame(keep)
    if pts.empty:
        return {}
    pts = pts.sort_values(["worst", "n", "count"], ascending=[False, False, True], kind="stable")
    pts = pts.drop_duplicates(["panel", "label", "eps"], keep="first").sort_values("eps")
    return dict(list(pts.groupby(["panel", "label"], sort=True)))


def plot_curves(rows: pd.DataFrame, path: str | Path) -> Path | None:
    """Accuracy (%) vs budget for one model's rows, one line per attack with Wilson 95% error bars and clean
    accuracy at eps = 0; one panel per norm, one for Gaussian noise. None (nothing written) without points."""
    series = _series(rows)
    if not series:
        return None
    panels = sorted({p for p, _ in series}, key=lambda p: (p == "noise", p))
    fig = Figure(figsize=(4.4 * len(panels) + 2.6, 3.6))
    axes = fig.subplots(1, len(panels), squeeze=False)
    colors, markers = colormaps["tab20"], "os^Dv<>pPX*h"
    for ax, panel in zip(axes[0], panels, strict=True):
        for i, ((_, label), g) in enumerate((k, g) for k, g in series.items() if k[0] == panel):
            eps, acc = [0.0, *g["eps"]], [g["clean"].iloc[0] / g["n"].iloc[0], *(g["count"] / g["n"])]
            ivs = [Acc(int(g["clean"].iloc[0]), int(g["n"].iloc[0])).interval,
                   *(Acc(c, n).interval for c, n in zip(g["count"], g["n"], strict=True))]
            y = [100 * a for a in acc]
            err = [[max(0.0, y[j] - 100 * lo) for j, (lo, _) in enumerate(ivs)],  # max: float rounding at 0 and 1
                   [max(0.0, 100 * hi - y[j]) for j, (_, hi) in enumerate(ivs)]]
            style = dict(color=colors(i % 20), lw=1.2, ls="-")
            if g["version"].iloc[0]:  # a cascade: the newest protocol version bold black, older ones grey, dashed
                newest = g["version"].iloc[0] == max((v for (p, _), h in series.items() if p == panel
                                                      for v in h["version"] if v), key=sort_version)
                style = dict(color="black", lw=2.2, ls="-", zorder=5) if newest else dict(color="0.45", lw=1.6,
                                                                                          ls="--", zorder=4)
            ax.errorbar(eps, y, yerr=err, label=label, marker=markers[i % len(markers)], ms=4, capsize=2, **style)
        ticks = dict(zip([0.0, *(e for (p, _), g in series.items() if p == panel for e in g["eps"])],
                         ["0", *(s for (p, _), g in series.items() if p == panel for s in g["eps_str"])],
                         strict=True))
        positive = [e for e in ticks if e > 0]
        if positive and max(positive) / min(positive) > 8:  # budgets that double: evenly spaced, 0 still shown
            ax.set_xscale("symlog", linthresh=min(positive), linscale=0.5)
        ax.set_xticks(list(ticks))
        ax.minorticks_off()
        ax.set_xticklabels(list(ticks.values()), fontsize=7, rotation=45)
        ax.set_xlabel("Gaussian noise sigma" if panel == "noise" else f"eps ({panel})")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    path = Path(path)
    with rc_context(SVG):
        fig.savefig(path, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return path
