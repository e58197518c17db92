"""The leaderboard's data: one entry per model and threat model, ranked by the ``reliable`` protocol's worst case.

An entry is a model evaluated on one dataset under one threat model (norm and budget). Its headline is the
robust accuracy of the newest ``reliable`` protocol version in the results (the cascade's ``stage = all`` row:
a sample counts only if it survived every stage), with its Wilson 95% interval; older protocol versions get a
column each (``reliable-v1``), AutoAttack standard another (its worst case over gradient paths). Where several
runs compete, the one on the most images wins, then the newest; a stochastic model's single-draw rows (``draws =
1``) are shown on its page, never as its headline. Several training seeds of one recipe
(``<id>-s<k>``, :mod:`robench.results.seeds`) add the mean and sample standard deviation of their headlines.
Cards come from the zoo folder's ``<id>.json`` files, read as plain JSON; adversarial-example files (``attack
--save-adv``) are matched to their rows through the cell key in their safetensors metadata. Pandas and the standard
library only, never torch.

Examples:
    >>> board = make_board(read_dir("results"), read_cards("zoo"), find_adv(["adv"]))
    >>> [(e.model, e.robust.acc) for e in board.entries if e.rank == 1]
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..attack_meta import NOISE
from ..errors import DataNotFound, IntegrityError
from ..io import header_metadata
from .seeds import split_seed
from .stats import wilson
from .store import row_key

ADV_FORMAT = "robench-adversarial/1"  # the format tag ``attack --save-adv`` writes into its files' metadata
DEFAULT_NORM = "Linf"  # rows written before the norm was recorded are L-inf


@dataclass(frozen=True)
class Acc:
    """``count`` of ``n`` images, as a fraction with its Wilson 95% interval; ``note`` says where it comes from."""

    count: int
    n: int
    note: str = ""

    @property
    def acc(self) -> float:
        return self.count / self.n if self.n else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.count, self.n)


@dataclass
class Cascade:
    """One run of a cascade protocol on one model: its ``summary`` row (``stage = all``; None while unfinished)
    and its ``stages`` rows in stage order."""

    suite: str
    version: str
    model: str
    dataset: str
    norm: str
    n: int
    eps: float
    eps_str: str
    seed: int
    summary: dict | None
    stages: list[dict] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.suite} v{self.version}"


@dataclass
class Entry:
    """One row of the index: ``model`` on ``dataset`` under ``norm`` at ``eps``."""

    model: str
    dataset: str
    norm: str
    eps: float
    eps_str: str
    n: int
    clean: Acc | None
    robust: Acc | None  # the newest protocol version
    older: dict[str, Acc]  # older version -> its result
    autoattack: Acc | None
    flags: str
    date: str
    card: dict | None
    rank: int | None = None
    seeds: tuple[float, float, int] | None = None  # mean, sd (percent) and count over the recipe's seeds

    @property
    def threat(self) -> tuple[str, str, float]:
        return self.dataset, self.norm, self.eps


@dataclass
class Board:
    """Everything the site shows: ``entries`` (ranked within each threat model), ``versions`` (every protocol
    version, the newest first), every model's ``rows`` and ``cascades``, the ``cards``, the ``adv`` files and
    ``newest``: per norm, the version its entries are ranked by (the newest that ran in that norm: the lists are
    per norm, so the newest L2 list is not a newer version of the L-inf one)."""

    entries: list[Entry]
    versions: list[str]
    rows: dict[str, pd.DataFrame]
    cascades: dict[str, list[Cascade]]
    cards: dict[str, dict]
    adv: dict[tuple, Path]
    newest: dict[str, str] = field(default_factory=dict)

    @property
    def older(self) -> list[str]:
        """The versions no norm is ranked by (a column each), newest first."""
        return [v for v in self.versions if v not in self.newest.values()]

    def headline(self) -> str:
        """What the robust column holds, e.g. ``v3 (Linf), v4 (L2)``."""
        return ", ".join(f"v{v} ({n})" for n, v in sorted(self.newest.items())) or "?"


# ---------------------------------------------------------------------------------------------------- inputs
def read_cards(zoo_dir: str | Path) -> dict[str, dict]:
    """Every card (``<id>.json``) in ``zoo_dir`` as a dict, keyed by its id; a card that is not JSON is refused."""
    d = Path(zoo_dir)
    if not d.is_dir():
        raise DataNotFound(f"zoo folder {str(d)!r} does not exist; pass --zoo DIR")
    cards = {}
    for p in sorted(d.glob("*.json")):
        try:
            card = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise IntegrityError(f"zoo card {str(p)!r} is not JSON ({type(e).__name__})") from None
        if isinstance(card, dict) and isinstance(card.get("id"), str):
            cards[card["id"]] = card
    return cards


def find_adv(folders: Iterable[str | Path]) -> dict[tuple, Path]:
    """Cell key -> file, for every adversarial-example file (``*.safetensors`` written by ``attack --save-adv``)
    in ``folders``; other safetensors files are passed over, a missing folder is an error."""
    found: dict[tuple, Path] = {}
    for folder in folders:
        d = Path(folder)
        if not d.is_dir():
            raise DataNotFound(f"--adv {str(d)!r} is not a folder of adversarial-example files")
        for p in sorted(d.glob("*.safetensors")):
            try:
                with open(p, "rb") as f:
                    size = f.read(8)
                    meta = header_metadata(size + f.read(min(int.from_bytes(size, "little"), 1 << 24)))
                if isinstance(meta, dict) and meta.get("format") == ADV_FORMAT:
                    found[row_key(meta)] = p
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not ours, or truncated: nothing to link
    return found


# ----------------------------------------------------------------------------------------------------- rows
def _params(df: pd.DataFrame) -> pd.Series:
    return df["params"].map(json.loads)


def single_draw(params: Mapping) -> bool:
    """A stochastic model's single-draw row (``draws = 1``): the naive number stored beside the averaged one."""
    return params.get("draws") == 1


def sort_version(v: str) -> tuple:
    return (0, int(v), "") if v.isdigit() else (1, 0, v)


def cascades(df: pd.DataFrame) -> list[Cascade]:
    """Every cascade run in ``df`` (rows whose params name a ``suite``), grouped by model, images, budget, seed
    and protocol version; the norm of a summary row without one is its stages'."""
    params = _params(df)
    runs: dict[tuple, Cascade] = {}
    for (i, r), p in zip(df.iterrows(), params, strict=True):
        if "suite" not in p or r["attack"] != p["suite"] or single_draw(p):
            continue
        key = (r["model"], r["sha256"], r["dataset"], int(r["n"]), float(r["eps"]), int(r["seed"]),
               p["suite"], str(p.get("version", "1")))
        c = runs.setdefault(key, Cascade(p["suite"], key[7], r["model"], r["dataset"], DEFAULT_NORM, key[3],
                                         key[4], r["eps_str"], key[5], None))
        if p.get("stage") == "all":
            c.summary = {**r, "row": i}
        else:
            c.stages.append({**r, "stage": p.get("stage"), "row": i})  # row: its index in df
        if "norm" in p:
            c.norm = str(p["norm"])
    for c in runs.values():
        c.stages.sort(key=lambda s: (not str(s["stage"]).isdigit(), int(s["stage"]) if str(s["stage"]).isdigit()
                                     else 0, str(s["stage"])))
    return sorted(runs.values(), key=lambda c: (c.model, c.dataset, c.eps, sort_version(c.version), c.n))


def _best(runs: list[Cascade]) -> Cascade | None:
    """The finished run on the most images, then the newest."""
    done = [c for c in runs if c.summary is not None]
    return max(done, key=lambda c: (c.n, c.summary["timestamp"])) if done else None


def _acc(row: Mapping, note: str = "") -> Acc:
    return Acc(int(row["robust_count"]), int(row["n"]), note)


def _autoattack(rows: pd.DataFrame) -> Acc | None:
    """AutoAttack standard on the most images: its worst case over paths when stored, else its single path,
    else the lowest of its paths (an upper bound of their worst case, said in the note)."""
    p = _params(rows) if len(rows) else pd.Series(dtype=object)
    standard = p.map(lambda d: d.get("version") == "standard" and not single_draw(d)).astype(bool)
    aa = rows[(rows["attack"] == "autoattack") & standard]
    if aa.empty:
        return None
    aa = aa[aa["n"] == aa["n"].max()]
    worst = aa[aa["grad"] == "worst"]
    if len(worst):
        return _acc(worst.iloc[-1], "worst case over " + ", ".join(sorted(set(aa["grad"]) - {"worst"})))
    low = aa.loc[aa["robust_count"].idxmin()]
    return _acc(low, f"path {low['grad']}" + (" (lowest of its paths)" if aa["grad"].nunique() > 1 else ""))


def _norms(df: pd.DataFrame) -> pd.Series:
    return _params(df).map(lambda p: str(p.get("norm", DEFAULT_NORM)))


# ---------------------------------------------------------------------------------------------------- board
def make_board(df: pd.DataFrame, cards: Mapping[str, dict], adv: Mapping[tuple, Path] | None = None) -> Board:
    """The ranked entries of every model with adversarial results (Gaussian-noise rows have no threat model)."""
    runs = cascades(df)
    versions = sorted({c.version for c in runs if c.summary is not None}, key=sort_version, reverse=True)
    attacked = df[~df["attack"].isin(NOISE)]
    attacked = attacked.assign(_base=attacked["dataset"].str.split(":").str[0], _norm=_norms(attacked))
    threats = {(c.dataset.split(":")[0], c.norm, c.eps) for c in runs if c.summary is not None}
    newest: dict[str, str] = {}  # each norm ranks by the newest version that ran in it
    for c in runs:
        if c.summary is not None and (c.norm not in newest or sort_version(c.version) > sort_version(newest[c.norm])):
            newest[c.norm] = c.version
    entries = []
    for (model, base, norm, eps), rows in attacked.groupby(["model", "_base", "_norm", "eps"], sort=True):
        if threats and (base, norm, eps) not in threats:  # a budget only a sweep reached: on the model's page
            continue
        mine = [c for c in runs if (c.model, c.dataset.split(":")[0], c.norm, c.eps) == (model, base, norm, eps)]
        best = {v: _best([c for c in mine if c.version == v]) for v in versions}
        head = best.get(newest[norm]) if norm in newest else None
        if not any(best.values()) and not (rows["grad"] != "none").any():
            continue
        first = next((c for c in best.values() if c is not None), None)
        ref = first.summary if first is not None else rows.loc[rows["n"].idxmax()]
        entries.append(Entry(
            model, base, norm, float(eps), str(ref["eps_str"]), int(ref["n"]),
            Acc(int(ref["clean_count"]), int(ref["n"])), _acc(head.summary) if head else None,
            {v: _acc(c.summary) for v, c in best.items() if c is not None and c is not head},
            _autoattack(rows), str(head.summary["flags"]) if head else "",
            str((head.summary if head else rows.loc[rows["timestamp"].idxmax()])["timestamp"])[:10],
            cards.get(model)))
    _rank(entries, versions)
    _seed_spread(entries)
    rows_by_model = {m: g.drop(columns=[c for c in g.columns if c.startswith("_")]) for m, g in df.groupby("model")}
    by_model: dict[str, list[Cascade]] = {}
    for c in runs:
        by_model.setdefault(c.model, []).append(c)
    return Board(entries, versions, rows_by_model, by_model, dict(cards), dict(adv or {}), newest)


def _rank(entries: list[Entry], versions: list[str]) -> None:
    """Rank within each threat model by the headline (higher robust accuracy first, then higher clean); entries
    without a headline keep no rank and sort after the ranked ones, by their newest older version, then by id."""

    def older(e: Entry) -> float:
        return next((-e.older[v].acc for v in versions if v in e.older), 1.0)

    entries.sort(key=lambda e: (e.threat, e.robust is None, -(e.robust.acc if e.robust else 0), older(e),
                                -(e.clean.acc if e.clean else 0), e.model))
    k, last = 0, None
    for e in entries:
        if e.threat != last:
            k, last = 0, e.threat
        if e.robust is not None:
            k += 1
            e.rank = k


def _seed_spread(entries: list[Entry]) -> None:
    """Mean and sample sd of the headline (percent) over the seeds of each recipe, on every seed's entry."""
    groups: dict[tuple, list[Entry]] = {}
    for e in entries:
        if e.robust is not None:
            groups.setdefault((split_seed(e.model)[0], *e.threat), []).append(e)
    for group in groups.values():
        if len(group) < 2:
            continue
        vals = pd.Series([100 * e.robust.acc for e in group])
        for e in group:
            e.seeds = (float(vals.mean()), float(vals.std(ddof=1)), len(group))


def describe(card: Mapping | None) -> dict[str, str]:
    """The card's columns for the index: architecture, neuron, recipe (with the MPPD weight), framework, T."""
    if not card:
        return dict.fromkeys(("arch", "neuron", "recipe", "framework", "T"), "")
    model, recipe = card.get("model") or {}, card.get("recipe") or {}
    arch = str(card.get("arch", ""))
    if arch == "foreign":
        arch = str(model.get("entry", "foreign"))
    name = str(recipe.get("recipe", ""))
    alpha = recipe.get("alpha")
    if name and name != "clean" and alpha is not None:
        name += f" α={alpha:g}" if isinstance(alpha, int | float) else f" α={alpha}"
    return {"arch": arch, "neuron": str(model.get("neuron", "")), "recipe": name,
            "framework": str(model.get("framework", "robench")), "T": str(model.get("T", ""))}
