"""The leaderboard site: static HTML written from results and zoo cards, viewable from ``file://``.

``index.html`` ranks every model by the newest ``reliable`` protocol's worst case (:mod:`robench.results.board`),
sortable by any column and filterable by dataset and threat model with a small inline script; ``models/<id>.html``
shows a model's card, the per-stage breakdown of its cascades, its accuracy-vs-eps curves (SVG) and every results
row, with links to ``models/<id>.csv`` (those rows) and to its adversarial-example files (copied to ``adv/``).
No page loads anything from outside the site. The site is built in a temporary folder beside ``out`` and moved
into place at the end, so a failure leaves nothing behind and an older site stays whole; ``out`` must be new,
empty, or a site written earlier. Torch-free.

Examples:
    >>> site = build_site("results", "zoo", "docs/leaderboard")
    >>> site.index, len(site.pages)
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import DataNotFound, UsageError
from ..io import existing_base, unwritable
from .board import Acc, Board, Cascade, Entry, describe, find_adv, make_board, read_cards, sort_version
from .report import attack_labels
from .seeds import split_seed
from .site_curves import plot_curves
from .site_static import CSS, JS
from .store import ResultsStore, read_dir, row_key

GENERATOR = "robench leaderboard"
_SAFE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,100}\Z")


@dataclass(frozen=True)
class Site:
    """What :func:`build_site` wrote: the ``index``, one page per model, and the number of ranked ``entries``."""

    out: Path
    index: Path
    pages: list[Path]
    entries: int


# ------------------------------------------------------------------------------------------------ the folder
def check_out(out: str | Path) -> Path:
    """Refuse, writing nothing, an ``out`` that is a file, a folder holding something other than a site written
    earlier, or a place where no folder can be created."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise UsageError(f"--out {str(out)!r} is not a folder; pass a new or empty folder")
        index = out / "index.html"
        if any(out.iterdir()) and not (index.is_file() and GENERATOR in index.read_text(errors="replace")[:2000]):
            raise UsageError(f"--out {str(out)!r} holds files that are not a robench leaderboard; pass a new or "
                             "empty folder")
    why = unwritable(out.parent)  # the new site is built beside out, then renamed into its place
    if why:
        raise UsageError(f"--out {str(out)!r}: {str(existing_base(out.parent))!r} is not a writable folder ({why}); "
                         "pass a folder you can write")
    return out


def _swap(tmp: Path, out: Path) -> None:
    """Put the finished site ``tmp`` in ``out``'s place; the old site goes only once the new one is there."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "site")
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old)


def slug(model: str) -> str:
    """A file name for ``model``'s page: the id itself when it is a safe name, else a cleaned one plus a hash."""
    if _SAFE.match(model):
        return model
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model)[:60].strip("-.") + "-" + hashlib.sha1(model.encode()).hexdigest()[:8]


# --------------------------------------------------------------------------------------------------- building
def build_site(results: str | Path, zoo_dir: str | Path, out: str | Path, adv_dirs: Sequence[str | Path] = ()
               ) -> Site:
    """Read ``results`` (a folder of results CSVs, or one CSV), the cards in ``zoo_dir`` and the adversarial
    files in ``adv_dirs``, and write the site into ``out`` (see the module docstring)."""
    out = check_out(out)
    results = Path(results)
    df = ResultsStore(results).read() if results.is_file() else read_dir(results)
    board = make_board(df, read_cards(zoo_dir), find_adv(adv_dirs))
    if not board.entries:
        raise DataNotFound(f"the results in {str(results)!r} hold no adversarial rows to rank")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)
        (tmp / "models").mkdir()
        models = sorted(set(board.rows) | set(board.cards))
        pages = [_write_model(board, m, tmp) for m in models]
        (tmp / "index.html").write_text(index_html(board, df))
        _swap(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Site(out, out / "index.html", [out / p.relative_to(tmp) for p in pages],
                sum(e.rank is not None for e in board.entries))


def _write_model(board: Board, model: str, root: Path) -> Path:
    name = slug(model)
    rows = board.rows.get(model)
    files = {}
    if rows is not None:
        rows.to_csv(root / "models" / f"{name}.csv", index=False)
        files["csv"] = f"{name}.csv"
        if plot_curves(rows, root / "models" / f"{name}-curves.svg"):
            files["svg"] = f"{name}-curves.svg"
        adv = {}
        for r in rows.to_dict("records"):
            src = board.adv.get(row_key(r))
            if src is not None:
                (root / "adv").mkdir(exist_ok=True)
                shutil.copyfile(src, root / "adv" / src.name)
                adv[row_key(r)] = f"../adv/{src.name}"
        files["adv"] = adv
    page = root / "models" / f"{name}.html"
    page.write_text(model_html(board, model, files))
    return page


# ------------------------------------------------------------------------------------------------- rendering
def _e(v: object) -> str:
    return html.escape(str(v), quote=True)


def _page(title: str, body: str, root: str) -> str:
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n<meta name="generator" '
            f'content="{GENERATOR}">\n<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_e(title)}</title>\n<style>{CSS}</style></head>\n<body>\n{body}\n"
            f'<p class="muted">Written by <code>robench leaderboard</code>. <a href="{root}index.html">Leaderboard'
            "</a></p>\n</body></html>\n")


def _acc_cell(key: str, a: Acc | None, flags: str = "") -> str:
    if a is None or not a.n:
        return f'<td class="num" data-key="{key}" data-sort="">–</td>'
    lo, hi = a.interval
    tags = "".join(f'<span class="flag" title="{_e(_FLAG_HELP.get(f, f))}">{_e(f)}</span>'
                   for f in flags.split(",") if f.strip())
    title = f' title="{_e(a.note)}; n = {a.n}"' if a.note else f' title="{a.count} of {a.n} images"'
    return (f'<td class="num" data-key="{key}" data-sort="{100 * a.acc:.4f}"{title}>{100 * a.acc:.1f} '
            f'<span class="ci">[{100 * lo:.1f}, {100 * hi:.1f}]</span>{tags}</td>')


_FLAG_HELP = {"gradient-masking": "the black-box stage broke images every white-box stage missed",
              "not-converged": "the last stage or restart still lowered robust accuracy by more than 1 point"}


def _text_cell(key: str, text: str, sort: str | None = None, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<td{c} data-key="{key}" data-sort="{_e(text if sort is None else sort)}">{_e(text) or "–"}</td>'


def index_columns(board: Board) -> list[tuple[str, str, str, str]]:
    """(key, header, type, tooltip) of every index column, in order."""
    cols = [("rank", "#", "num", "rank within the dataset and threat model"), ("model", "model", "text", ""),
            ("dataset", "dataset", "text", ""), ("norm", "threat", "text", "norm of the perturbation budget"),
            ("eps", "eps", "num", "budget"), ("n", "n", "num", "images of the headline run"),
            ("clean", "clean %", "num", "clean accuracy on the same images"),
            ("robust", "robust % (reliable)", "num",
             "robust accuracy under the newest reliable protocol for the norm, " + board.headline()
             + " (worst case over its cascade) [Wilson 95% interval]")]
    cols += [(f"reliable-v{v}", f"reliable-v{v} %", "num", f"the older protocol version {v}")
             for v in board.older]
    if any(e.autoattack for e in board.entries):
        cols.append(("autoattack", "AutoAttack %", "num", "AutoAttack standard, worst case over gradient paths"))
    cols += [("seeds", "seeds: mean ± sd", "num", "the headline over the recipe's training seeds"),
             ("arch", "architecture", "text", ""), ("neuron", "neuron", "text", ""), ("recipe", "recipe", "text", ""),
             ("framework", "framework", "text", ""), ("T", "T", "num", "time steps"),
             ("date", "date", "text", "date of the headline run")]
    return cols


def _entry_row(board: Board, e: Entry) -> str:
    d = describe(e.card)
    cells = [_text_cell("rank", str(e.rank or ""), cls="num"),
             f'<td data-key="model" data-sort="{_e(e.model)}"><a href="models/{_e(slug(e.model))}.html">'
             f"{_e(e.model)}</a></td>",
             _text_cell("dataset", e.dataset), _text_cell("norm", e.norm),
             _text_cell("eps", e.eps_str, f"{e.eps:.6g}", "num"), _text_cell("n", str(e.n), cls="num"),
             _acc_cell("clean", e.clean), _acc_cell("robust", e.robust, e.flags)]
    cells += [_acc_cell(f"reliable-v{v}", e.older.get(v)) for v in board.older]
    if any(x.autoattack for x in board.entries):
        cells.append(_acc_cell("autoattack", e.autoattack))
    if e.seeds:
        mean, sd, k = e.seeds
        cells.append(f'<td class="num" data-key="seeds" data-sort="{mean:.4f}" title="{k} seeds of '
                     f'{_e(split_seed(e.model)[0])}">{mean:.1f} ± {sd:.1f} <span class="ci">({k})</span></td>')
    else:
        cells.append(_text_cell("seeds", "", cls="num"))
    cells += [_text_cell(k, d[k], cls="num" if k == "T" else "") for k in ("arch", "neuron", "recipe", "framework",
                                                                             "T")]
    cells.append(_text_cell("date", e.date))
    attrs = f'data-model="{_e(e.model)}" data-dataset="{_e(e.dataset)}" data-norm="{_e(e.norm)}"'
    return f"<tr {attrs}>" + "".join(cells) + "</tr>"


def _select(field: str, label: str, values: Iterable[str]) -> str:
    opts = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in sorted(set(values)))
    return f'<label>{label} <select id="f-{field}" data-filter="{field}"><option value="">all</option>{opts}</select>' \
           "</label>"


def index_html(board: Board, df: pd.DataFrame) -> str:
    """The index page: the ranking, its filters, and what the numbers mean."""
    cols = index_columns(board)
    head = "".join(f'<th data-key="{k}" data-type="{t}"' + (' data-first="asc"' if k == "rank" else "")
                   + (' class="num"' if t == "num" else "") + (f' title="{_e(tip)}"' if tip else "")
                   + f">{_e(h)}</th>" for k, h, t, tip in cols)
    body = "\n".join(_entry_row(board, e) for e in board.entries)
    unevaluated = sorted((set(board.cards) | set(board.rows)) - {e.model for e in board.entries})
    extra = ("<h2>Other models (no adversarial result to rank)</h2><p>" + ", ".join(
        f'<a href="models/{_e(slug(m))}.html">{_e(m)}</a>' for m in unevaluated) + "</p>") if unevaluated else ""
    version = board.headline()
    newest = str(df["timestamp"].max())[:10]
    text = (f"<h1>robench leaderboard</h1>\n<p class=\"lead\">Spiking neural networks ranked by their robust "
            f"accuracy under robench's <em>reliable</em> protocol (the newest version for each norm: {_e(version)}): "
            "a cascade of attacks and "
            "gradient paths in which an image counts as robust only if it survived every stage, each adversarial "
            "example verified. Brackets hold Wilson 95% intervals. Click a column header to sort; a model's page "
            "shows its card, the per-stage breakdown, curves and its results rows.</p>\n"
            f'<div class="filters">{_select("dataset", "Dataset", (e.dataset for e in board.entries))}'
            f'{_select("norm", "Threat model", (e.norm for e in board.entries))}<span id="shown" class="muted">'
            f"{len(board.entries)} entries</span></div>\n"
            f'<div class="scroll"><table id="board" data-sorted="rank"><thead><tr>{head}</tr></thead>\n<tbody>\n'
            f"{body}\n</tbody></table></div>\n{extra}\n"
            f'<p class="muted">From {len(df)} results rows (newest {_e(newest)}) and {len(board.cards)} zoo cards. '
            "Rank is within a dataset, threat model and budget. A <span class=\"flag\">gradient-masking</span> flag "
            "means the black-box stage broke images every white-box stage missed.</p>\n"
            f"<script>{JS}</script>")
    return _page("robench leaderboard", text, "")


def _card_html(card: dict | None) -> str:
    if not card:
        return "<p class=\"muted\">No zoo card for this model in the zoo folder.</p>"
    model, recipe, metrics = card.get("model") or {}, card.get("recipe") or {}, card.get("metrics") or {}
    items = [("dataset", card.get("dataset")), ("architecture", describe(card)["arch"]),
             *((k, model.get(k)) for k in ("neuron", "T", "width", "fc", "tau", "v_th", "framework", "step_mode")
               if k in model),
             *((f"recipe {k}" if k != "recipe" else k, _budget(recipe.get(k)) if k in ("sigma", "eps") else
                recipe.get(k)) for k in ("recipe", "alpha", "kappa", "sigma", "eps", "epochs", "seed", "rat_beta")
               if k in recipe),
             ("clean accuracy at training", _clean_at_training(metrics)),
             ("weights sha256", card.get("sha256")), ("created", card.get("created")), ("notes", card.get("notes"))]
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items if v not in (None, ""))
    cmd = f"<p>Trained with <code>{_e(card['command'])}</code></p>" if card.get("command") else ""
    return (f'<dl class="card">{dl}</dl>{cmd}<details><summary>The whole card (JSON)</summary><pre>'
            f"{_e(json.dumps(card, indent=2))}</pre></details>")


def _budget(v: object) -> object:
    """A budget as ``k/255`` where it is one (cards store floats)."""
    if isinstance(v, int | float) and v > 0 and abs(v * 255 - round(v * 255)) < 1e-6:
        return f"{round(v * 255)}/255"
    return v


def _clean_at_training(metrics: dict) -> str | None:
    acc, n = metrics.get("clean_acc"), metrics.get("n_test")
    if not isinstance(acc, int | float):
        return None
    return f"{100 * acc:.2f} %" + (f" on {n} test images" if n else "")


def _cascade_html(c: Cascade) -> str:
    """The per-stage breakdown of one cascade run: what each stage broke first and what stays robust."""
    clean = int((c.summary or c.stages[0])["clean_count"]) if (c.summary or c.stages) else 0
    rows = [f"<tr><td>0</td><td>clean errors</td><td></td><td class=\"num\">{c.n - clean}</td>"
            f"{_acc_cell('after', Acc(clean, c.n))}<td></td></tr>"]
    left = clean
    for s in c.stages:
        count = int(s["robust_count"])
        label = str(attack_labels(pd.DataFrame([s])).iloc[0]).split(": ", 1)[-1]  # "reliable 3: sa-pgd-100"
        rows.append(f"<tr><td>{_e(s['stage'])}</td><td>{_e(label)}</td><td>{_e(s['grad'])}</td>"
                    f'<td class="num">{left - count}</td>{_acc_cell("after", Acc(count, c.n))}'
                    f'<td class="num">{float(s["seconds"]):.0f}</td></tr>')
        left = count
    result = ""
    if c.summary is not None:
        flags = str(c.summary["flags"])
        result = (f"<p>Result: <strong>{100 * int(c.summary['robust_count']) / c.n:.1f} %</strong> robust "
                  f"({c.summary['robust_count']} of {c.n})" + (f", flags: {_e(flags)}" if flags else "")
                  + f", {float(c.summary['seconds']):.0f} s in all.</p>")
    else:
        result = "<p class=\"muted\">Unfinished: no result row yet.</p>"
    return (f"<h3>{_e(c.label)} on {_e(c.dataset)}, n = {c.n}, {_e(c.norm)} eps = {_e(c.eps_str)}, seed {c.seed}</h3>"
            "<table><thead><tr><th>stage</th><th>attack</th><th>gradient path</th><th class=\"num\">broke first"
            "</th><th class=\"num\">robust after % [95% CI]</th><th class=\"num\">seconds</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>" + result)


def _rows_html(rows: pd.DataFrame, labels: pd.Series, adv: dict) -> str:
    out = []
    for i, r in rows.iterrows():
        link = adv.get(row_key(r))
        out.append(f"<tr><td>{_e(labels[i])}</td><td>{_e(r['grad'])}</td><td>{_e(r['dataset'])}</td>"
                   f'<td class="num">{r["n"]}</td><td class="num">{_e(r["eps_str"])}</td>'
                   f"{_acc_cell('clean', Acc(int(r['clean_count']), int(r['n'])))}"
                   f"{_acc_cell('robust', Acc(int(r['robust_count']), int(r['n'])), str(r['flags']))}"
                   f'<td class="num">{float(r["seconds"]):.0f}</td><td>{_e(str(r["timestamp"])[:10])}</td>'
                   + (f'<td><a href="{_e(link)}">examples</a></td>' if link else "<td></td>") + "</tr>")
    return ("<table><thead><tr><th>attack</th><th>gradient path</th><th>dataset</th><th class=\"num\">n</th>"
            "<th class=\"num\">eps</th><th class=\"num\">clean %</th><th class=\"num\">robust % [95% CI]</th>"
            "<th class=\"num\">seconds</th><th>date</th><th>adversarial</th></tr></thead><tbody>"
            + "".join(out) + "</tbody></table>")


def model_html(board: Board, model: str, files: dict) -> str:
    """A model's page: headline, card, seeds, cascades, curves and every results row."""
    entries = [e for e in board.entries if e.model == model]
    parts = [f'<p><a href="../index.html">← leaderboard</a></p><h1>{_e(model)}</h1>']
    if entries:
        head = f"robust % (reliable {board.headline()})" if board.versions else "robust %"
        heads = "".join(f"<th class=\"num\">{h}</th>" for h in ("n", "clean %", head))
        older = "".join(f"<th class=\"num\">reliable-v{v} %</th>" for v in board.older)
        body = "".join(f"<tr><td>{_e(e.dataset)}</td><td>{_e(e.norm)} {_e(e.eps_str)}</td><td class=\"num\">{e.n}"
                       f"</td>{_acc_cell('clean', e.clean)}{_acc_cell('robust', e.robust, e.flags)}"
                       + "".join(_acc_cell('older', e.older.get(v)) for v in board.older)
                       + f"<td class=\"num\">{e.rank or '–'}</td></tr>" for e in entries)
        parts.append(f"<table><thead><tr><th>dataset</th><th>threat</th>{heads}{older}<th class=\"num\">rank</th>"
                     f"</tr></thead><tbody>{body}</tbody></table>")
    parts += ["<h2>Card</h2>", _card_html(board.cards.get(model))]
    base = split_seed(model)[0]
    sibs = sorted(m for m in set(board.rows) | set(board.cards) if split_seed(m)[0] == base and m != model)
    if sibs:
        parts.append("<p>Other training seeds of this recipe: " + ", ".join(
            f'<a href="{_e(slug(m))}.html">{_e(m)}</a>' for m in sibs) + "</p>")
    rows = board.rows.get(model)
    if rows is not None:
        labels = attack_labels(rows)
        runs = sorted(board.cascades.get(model, []), key=lambda c: (sort_version(c.version), c.n), reverse=True)
        parts += ["<h2>Per-stage breakdown of the cascade</h2>", *(_cascade_html(c) for c in runs)] if runs \
            else []
        if "svg" in files:
            parts += ["<h2>Accuracy vs budget</h2><p class=\"muted\">Per attack, its worst case over the gradient "
                      "paths it ran where that is stored (else its strongest path), on the most images it ran on; "
                      "clean accuracy at eps 0; bars are Wilson 95% intervals. The cascade's stages are in the "
                      "breakdown above.</p>", f'<img class="curves" src="{_e(files["svg"])}" alt="accuracy vs eps '
                      f'for {_e(model)}">']
        table = _rows_html(rows, labels, files["adv"])
        parts += [f'<h2>Results rows</h2><p><a href="{_e(files["csv"])}">These {len(rows)} rows as CSV</a> (every '
                  "column, per-sample masks included).</p>", f'<div class="scroll">{table}</div>']
    return _page(f"{model} · robench leaderboard", "\n".join(parts), "../")
