"""Choosing the reliable protocol's stages from an evidence matrix, and proving the choice on held-out images.

The evidence matrix is a results file whose rows are cells (attack + parameters + gradient path) run on the
first ``n`` test images of many models, each with its per-sample ``robust_mask``. The images are cut in two
splits: the *selection* split (the first half) is the only one the choice looks at; the *validation* split (the
second half) proves it. Selection is greedy (:func:`select`): start from the images that some cell left robust,
and repeatedly take the candidate stage that breaks the most still-robust selection images per unit of cost (its
cost scaled by the share of images still robust when it would run), until no candidate breaks more than
``threshold`` of the split on any model. A probe stage wins over a fixed path that scores less than 1/0.8 times
better, because it carries over to models the matrix never saw.

The cost of a cell is counted in gradient evaluations per image (:func:`work`: steps x restarts, APGD-T x its
target classes, Square's queries as forwards at a third of a gradient each), not in measured seconds, because the
matrix's cells run on a shared machine whose load varies: a count is reproducible, a timing of a busy machine is
not. Candidates are the matrix's cells and, for every attack, the *probe* stages ``probe:K`` (the attack through
the K-th best path of the model's own probe, which the cascade measures at run time; here the probe is simulated
by ranking the paths by what the probe attack broke on the first ``probe_images`` images of the split). The
black-box cell (Square) is kept last as the masking check.

:func:`greedy_by_time` is the first, simpler ordering (how version 1's stages and the L2 stages were chosen): cells
measured on every model given, costed in their measured seconds, no probe, until no cell breaks anything more.

:func:`evaluate_choice` replays a stage list on either split (the AND of its cells' masks: a cascade attacks only
the images still robust, so a stage breaks exactly the still-robust images its cell breaks, up to the attacks'
randomness) next to the worst case over the whole matrix. This module needs numpy and pandas only (never torch).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .stats import decode_mask

PROBE = "probe"
# in the matrix's worst case, never a stage: AutoAttack is a suite of stages, and final-iterate PGD and BIM are
# kept for comparison with papers only (best-iterate PGD finds every image they do)
NOT_STAGES = ("autoattack", "pgd", "bim")
SQUARE_QUERIES = 5000  # the black-box check's budget when the matrix has no Square cell to choose from


@dataclass(frozen=True)
class Choice:
    """One candidate stage: an attack with its parameters through a path (a path key, ``none`` for black box,
    or ``probe:K``)."""

    attack: str
    params: str  # canonical JSON of the attack's parameters (the results' ``params`` column)
    grad: str

    @property
    def white_box(self) -> bool:
        return self.grad != "none"

    def label(self) -> str:
        p = json.loads(self.params)
        bits = [f"{k}={p[k]}" for k in ("steps", "restarts", "queries") if k in p and p[k] is not None]
        return f"{self.attack}({', '.join(bits)}) via {self.grad}"


@dataclass
class Matrix:
    """``masks[model][(attack, params, grad)] = bool[n]``: every cell's per-image outcome."""

    n: int
    masks: dict[str, dict[tuple[str, str, str], np.ndarray]] = field(default_factory=dict)

    @property
    def models(self) -> list[str]:
        return sorted(self.masks)

    def worst(self, model: str, idx: np.ndarray) -> np.ndarray:
        """The per-image AND over every cell of ``model``, on the images ``idx``."""
        return np.logical_and.reduce([m[idx] for m in self.masks[model].values()])

    def alive(self, model: str, idx: np.ndarray) -> np.ndarray:
        """The images some cell left robust (so clean-correct); those every cell breaks tell nothing apart."""
        return np.logical_or.reduce([m[idx] for m in self.masks[model].values()])


FORWARD_SHARE = 1 / 3  # a forward pass costs about a third of a forward + backward
TARGETS = 9  # APGD-T's target classes on ten-class data


def work(attack: str, params: str) -> float:
    """Gradient evaluations per image of one cell (the selection's unit of cost)."""
    p = json.loads(params)
    restarts = int(p.get("restarts") or 1)
    if attack == "square":
        return int(p.get("queries") or 5000) * restarts * FORWARD_SHARE
    if attack in ("fgsm", "gaussian"):
        return 1.0
    steps = int(p.get("steps") or 10)
    return steps * restarts * (TARGETS if attack == "apgd-t" else 1)


def canonical_params(text: str) -> str:
    return json.dumps(json.loads(text), sort_keys=True)


def read_matrix(df: pd.DataFrame, n: int, eps_str: str = "8/255", models: Sequence[str] | None = None,
                skip_attacks: Iterable[str] = ("reliable",)) -> Matrix:
    """The cells of ``df`` run on exactly ``n`` images at ``eps_str`` with a mask (per-path rows only)."""
    df = df[(df["eps_str"] == eps_str) & (df["n"].astype(int) == n) & (df["robust_mask"] != "")
            & (df["grad"] != "worst") & ~df["attack"].isin(list(skip_attacks))]
    if models:
        df = df[df["model"].isin(list(models))]
    mx = Matrix(n)
    for r in df.to_dict("records"):
        key = (str(r["attack"]), canonical_params(r["params"]), str(r["grad"]))
        mask = decode_mask(r["robust_mask"], n, int(r["robust_count"]))
        mx.masks.setdefault(r["model"], {})[key] = mask
    return mx


def probe_ranking(mx: Matrix, model: str, idx: np.ndarray, probe: tuple[str, str], order: Sequence[str],
                  images: int) -> list[str]:
    """The paths of ``order`` ranked for ``model`` by how many of the first ``images`` images of ``idx`` the
    probe attack ``probe`` (attack, params) broke through each (most first; ties keep ``order``)."""
    first = idx[:images]
    cells = mx.masks[model]
    scored = [(-(~cells[(probe[0], probe[1], g)][first]).sum(), i, g) for i, g in enumerate(order)
              if (probe[0], probe[1], g) in cells]
    return [g for _, _, g in sorted(scored)]


def resolve(mx: Matrix, model: str, choice: Choice, ranking: Sequence[str]) -> tuple[str, str, str] | None:
    """The matrix cell a choice runs as on ``model``: ``probe:K`` becomes the K-th best ranked path, as the
    cascade's run-time probe resolves it (the best one when fewer paths were ranked). ``None`` when the matrix has
    no cell for that attack through that path: the stage then counts as breaking nothing. (Skipping to the next
    ranked path that has a cell would credit the stage with a path the real cascade does not run.)"""
    if not choice.grad.startswith(PROBE + ":"):
        key = (choice.attack, choice.params, choice.grad)
        if key in mx.masks[model] or choice.white_box:
            return key if key in mx.masks[model] else None
        return _same_black_box(mx, model, choice)
    if not ranking:
        return None
    k = int(choice.grad.split(":")[1])
    key = (choice.attack, choice.params, ranking[min(k, len(ranking)) - 1])
    return key if key in mx.masks[model] else None


def _same_black_box(mx: Matrix, model: str, choice: Choice) -> tuple[str, str, str] | None:
    """A black-box cell of ``model`` with the choice's attack and budget (queries, restarts) whatever its other
    recorded parameters (the rule-kept Square check names only its queries)."""
    want = json.loads(choice.params)
    for key in mx.masks[model]:
        if key[0] == choice.attack and key[2] == choice.grad:
            have = json.loads(key[1])
            if all(int(have.get(k) or 1) == int(want.get(k) or 1) for k in ("queries", "restarts")):
                return key
    return None


@dataclass
class Selected:
    """The greedy order: per pick, the images it newly broke per model and its estimated cost (gradient
    evaluations per image of the split, summed over models)."""

    stages: list[Choice]
    gains: list[dict[str, int]]
    cost: list[float]


def candidates(mx: Matrix, models: Sequence[str], probe_ks: Sequence[int] = (1, 2, 3), min_models: int = 2
               ) -> list[Choice]:
    """Every cell present on at least ``min_models`` models (on the others it counts as breaking nothing: the
    choice never credits a stage with breaks it was not measured to make), plus ``probe:K`` choices for every
    attack with two or more paths."""
    seen: dict[tuple[str, str, str], int] = {}
    for m in models:
        for k in mx.masks[m]:
            seen[k] = seen.get(k, 0) + 1
    common = {k for k, c in seen.items() if c >= min(min_models, len(models)) and k[0] not in NOT_STAGES}
    out = [Choice(*k) for k in sorted(common)]
    families = sorted({(a, p) for a, p, g in common if g != "none"})
    for a, p in families:
        if len({g for a2, p2, g in common if (a2, p2) == (a, p)}) >= 2:
            out += [Choice(a, p, f"{PROBE}:{k}") for k in probe_ks]
    return out


def select(mx: Matrix, idx: np.ndarray, probe: tuple[str, str], order: Sequence[str], probe_images: int = 32,
           threshold: float = 0.005, models: Sequence[str] | None = None, max_stages: int = 12,
           prefer_probe: float = 0.8) -> Selected:
    """Greedy choice on the images ``idx`` (the selection split) of ``models`` (default: all)."""
    models = list(models or mx.models)
    cands = candidates(mx, models)
    rank = {m: probe_ranking(mx, m, idx, probe, order, probe_images) for m in models}
    alive = {m: mx.alive(m, idx) for m in models}
    black = [c for c in cands if not c.white_box]
    white = [c for c in cands if c.white_box]
    chosen, gains, costs = [], [], []
    while len(chosen) < max_stages:
        best, best_score = None, 0.0
        for c in white:
            if c in chosen:
                continue
            keys = {m: resolve(mx, m, c, rank[m]) for m in models}
            gain = {m: int((alive[m] & ~mx.masks[m][k][idx]).sum()) if k else 0 for m, k in keys.items()}
            if max(gain.values()) <= threshold * len(idx):
                continue
            cost = sum(work(c.attack, c.params) * alive[m].sum() / len(idx) for m in models)
            score = sum(g / len(idx) for g in gain.values()) / max(cost, 1e-9)
            # a probe stage transfers to models the matrix has not seen (it measures the path on the model at
            # hand), so it is preferred to a fixed path unless the fixed one scores more than 1/prefer_probe better
            eff = score / prefer_probe if c.grad.startswith(PROBE + ":") else score
            if eff > best_score:
                best, best_score, best_gain, best_cost, best_keys = c, eff, gain, cost, keys
        if best is None:
            break
        for m, k in best_keys.items():
            if k is not None:
                alive[m] &= mx.masks[m][k][idx]
        chosen.append(best)
        gains.append(best_gain)
        costs.append(best_cost)
    for c in black[:1]:  # the black-box check stays last, whatever it adds here
        key = (c.attack, c.params, c.grad)
        chosen.append(c)
        gains.append({m: int((alive[m] & ~mx.masks[m][key][idx]).sum()) if key in mx.masks[m] else 0
                      for m in models})
        costs.append(sum(work(c.attack, c.params) * alive[m].sum() / len(idx) for m in models))
    if not black:  # no black-box cell measured: the masking check is kept by rule, with nothing credited to it
        chosen.append(Choice("square", json.dumps({"queries": SQUARE_QUERIES}), "none"))
        gains.append(dict.fromkeys(models, 0))
        costs.append(sum(work("square", chosen[-1].params) * alive[m].sum() / len(idx) for m in models))
    return Selected(chosen, gains, costs)


def evaluate_choice(mx: Matrix, stages: Sequence[Choice], idx: np.ndarray, probe: tuple[str, str],
                    order: Sequence[str], probe_images: int = 32,
                    real: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> pd.DataFrame:
    """Per model on the images ``idx``: the stage list replayed (robust %), the matrix worst case, the gap, the
    estimated cost of the stages against the whole matrix's, and the real cascades' rows and their gaps to the
    matrix worst case: ``real`` maps a label (``v1``, ``v2``, ...) to per-model masks, a column pair each."""
    out = []
    for m in mx.models:
        rank = probe_ranking(mx, m, idx, probe, order, probe_images)
        alive = mx.alive(m, idx)
        robust, cost, missing = alive.copy(), 0.0, []
        for c in stages:
            key = resolve(mx, m, c, rank)
            if key is None:
                missing.append(c.label())
                continue
            cost += work(c.attack, c.params) * robust.sum() / len(idx)
            robust &= mx.masks[m][key][idx]
        worst = mx.worst(m, idx)
        row = {"model": m, "images": f"{idx[0]}-{idx[-1]}", "stages robust %": 100 * robust.mean(),
               "matrix worst %": 100 * worst.mean(), "gap pt": 100 * (robust.mean() - worst.mean()),
               "stages cost": cost, "matrix cost": sum(work(a, p) for a, p, _ in mx.masks[m]),
               "cells": len(mx.masks[m]),
               "probe top 3": ", ".join(rank[:3]), "stages missing": len(missing)}
        for name, got in (real or {}).items():
            if m in got and len(got[m]) > idx[-1]:
                row[f"{name} cascade %"] = 100 * got[m][idx].mean()
                row[f"{name} gap pt"] = 100 * (got[m][idx].mean() - worst.mean())
        out.append(row)
    df = pd.DataFrame(out)
    real_cols = [c for name in (real or {}) for c in (f"{name} cascade %", f"{name} gap pt") if c in df]
    return df[[c for c in df if c not in real_cols] + real_cols]


def cascade_masks(df: pd.DataFrame, n_min: int, eps_str: str = "8/255", version: int = 1,
                  digest: str | None = None) -> dict[str, np.ndarray]:
    """The masks of the reliable cascade's result rows (``grad = worst``, ``stage = all``) of one protocol version
    (and, given ``digest``, of that stage list only), run on at least ``n_min`` images (rows without a version are
    version 1); of several rows of one model, the last one written."""
    df = df[(df["attack"] == "reliable") & (df["grad"] == "worst") & (df["eps_str"] == eps_str)
            & (df["n"].astype(int) >= n_min) & (df["robust_mask"] != "")]
    out: dict[str, np.ndarray] = {}
    for r in df.to_dict("records"):
        p = json.loads(r["params"])
        if int(p.get("version", 1)) != version or p.get("stage") != "all" or digest not in (None, p.get("digest")):
            continue
        out[r["model"]] = decode_mask(r["robust_mask"], int(r["n"]), int(r["robust_count"]))
    return out


def v1_masks(df: pd.DataFrame, n_min: int, eps_str: str = "8/255") -> dict[str, np.ndarray]:
    """The masks of version-1 reliable rows run on at least ``n_min`` images."""
    return cascade_masks(df, n_min, eps_str, 1)


# ------------------------------------------------------------------------------------ ordering by seconds
@dataclass
class TimedCell:
    """One cell on every model: ``(mask over the images used, seconds scaled to them, clean count scaled)``."""

    key: tuple[str, str, str]  # (attack, params as stored, grad)
    by_model: dict[str, tuple[np.ndarray, float, int]]


@dataclass
class TimedPick:
    """One pick of :func:`greedy_by_time`: the cell, the images it newly broke per model, the robust fraction
    after it per model, and its estimated cost in seconds."""

    key: tuple[str, str, str]
    gains: dict[str, int]
    robust: dict[str, float]
    cost: float


def read_timed(df: pd.DataFrame, eps_str: str = "8/255", models: Sequence[str] | None = None,
               first: int | None = None) -> tuple[list[str], list[TimedCell]]:
    """The models and the white-box per-path cells of ``df`` at ``eps_str`` that have a mask on every model (of
    ``models``, default all); ``first``: only the first N images (a selection split), seconds and clean counts
    scaled to them."""
    df = df[(df["eps_str"] == eps_str) & ~df["grad"].isin(["worst", "none"]) & (df["robust_mask"] != "")]
    if models:
        df = df[df["model"].isin(list(models))]
    names = sorted(df["model"].unique())
    cells: dict[tuple, dict] = {}
    for r in df.to_dict("records"):
        mask = decode_mask(r["robust_mask"], int(r["n"]), int(r["robust_count"]))
        share = min(first, len(mask)) / len(mask) if first else 1.0  # the cost of the selection images
        cells.setdefault((r["attack"], r["params"], r["grad"]), {})[r["model"]] = (
            mask[:first] if first else mask, float(r["seconds"]) * share, int(r["clean_count"] * share))
    return names, [TimedCell(k, v) for k, v in cells.items() if set(v) == set(names)]


def greedy_by_time(models: Sequence[str], cells: Sequence[TimedCell]) -> list[TimedPick]:
    """Repeatedly take the cell that breaks the most still-robust images (summed over ``models``) per second of
    estimated cascade cost (its seconds scaled by the share of clean-correct images still robust when it would
    run), until none breaks anything more. It starts from the images some cell left robust: those every cell
    breaks add the same to each (no signal)."""
    alive = {m: np.logical_or.reduce([c.by_model[m][0] for c in cells]) for m in models}

    def cost(c: TimedCell) -> float:
        return sum(c.by_model[m][1] * alive[m].sum() / max(c.by_model[m][2], 1) for m in models)

    picks: list[TimedPick] = []
    while True:
        best, best_rate = None, 0.0
        for c in cells:
            if any(p.key == c.key for p in picks):
                continue
            gain = sum(int((alive[m] & ~c.by_model[m][0]).sum()) for m in models)
            rate = gain / max(cost(c), 1e-9)
            if gain > 0 and rate > best_rate:
                best, best_rate = c, rate
        if best is None:
            return picks
        gains = {m: int((alive[m] & ~best.by_model[m][0]).sum()) for m in models}
        spent = cost(best)
        for m in models:
            alive[m] &= best.by_model[m][0]
        picks.append(TimedPick(best.key, gains, {m: float(alive[m].mean()) for m in models}, spent))
