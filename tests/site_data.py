"""Synthetic results, zoo cards and an adversarial-example file for the leaderboard tests; and an HTML reader.

Models (n = 20 images, clean 18): ``m-a`` has a v1 and a v2 cascade at L-inf 8/255 (25 % and 20 %), a v2 cascade
at L2 0.5 and AutoAttack standard; ``m-b`` (40 %) and its seed ``m-b-s1`` (30 %) a v2 cascade; ``m-c`` only PGD;
``m-d`` only Gaussian noise (no threat model, so no index row); ``m-e`` only a v1 cascade (50 %). Cards exist for
``m-a``, ``m-b`` and ``m-z`` (no results). The v2 ranking at L-inf: m-b, m-b-s1, m-a; then, unranked, m-e (it has
a v1 result) and m-c.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from robench.results import KEY, ResultsStore
from robench.results.stats import encode_mask

N, CLEAN = 20, 18


def row(model: str, attack: str, params: dict, grad: str, robust: int, eps: float = 8 / 255, eps_str: str = "8/255",
        ts: str = "2026-01-02T00:00:00+00:00", flags: str = "") -> dict:
    mask = np.arange(N) < robust
    return {"model": model, "sha256": "ab" * 32, "dataset": "fashion-mnist:test", "n": N, "attack": attack,
            "params": json.dumps(params, sort_keys=True), "grad": grad, "eps": eps, "eps_str": eps_str,
            "clean_acc": CLEAN / N, "robust_acc": robust / N, "clean_count": CLEAN, "robust_count": robust,
            "seconds": 2.0, "device": "cpu", "seed": 0, "versions": "{}", "timestamp": ts, "flags": flags,
            "robust_mask": encode_mask(mask)}


def cascade(model: str, version: int, robust: int, norm: str = "Linf", eps: float = 8 / 255, eps_str: str = "8/255",
            flags: str = "") -> list[dict]:
    """A two-stage cascade run: stage 1 leaves robust + 3, stage 2 robust, then its ``stage = all`` row."""
    base = {"suite": "reliable", "version": version}
    ts = f"2026-01-0{version}T00:00:00+00:00"
    return [row(model, "reliable", {**base, "stage": 1, "attack": "pgd-best", "norm": norm, "steps": 50},
                "arctan:a=4", robust + 3, eps, eps_str, ts),
            row(model, "reliable", {**base, "stage": 2, "attack": "square", "norm": norm, "queries": 1000}, "none",
                robust, eps, eps_str, ts),
            row(model, "reliable", {**base, "stage": "all", "stages": 2}, "worst", robust, eps, eps_str, ts, flags)]


def make_inputs(root: Path) -> tuple[Path, Path, Path]:
    """Write results/, zoo/ and adv/ under ``root``; returns the three folders."""
    aa = {"norm": "Linf", "version": "standard"}
    rows = [*cascade("m-a", 1, 5), *cascade("m-a", 2, 4, flags="gradient-masking"),
            *cascade("m-a", 2, 9, norm="L2", eps=0.5, eps_str="0.5"),
            row("m-a", "autoattack", aa, "bptt", 7), row("m-a", "autoattack", aa, "rate", 8),
            row("m-a", "autoattack", aa, "worst", 6),
            *cascade("m-b", 2, 8), *cascade("m-b-s1", 2, 6), *cascade("m-e", 1, 10),
            row("m-c", "pgd", {"norm": "Linf", "steps": 10}, "bptt", 11),
            row("m-c", "pgd", {"norm": "Linf", "steps": 10}, "bptt", 15, 2 / 255, "2/255"),
            row("m-d", "gaussian", {}, "none", 16, 0.1, "0.1")]
    results = root / "results"
    ResultsStore(results / "run.csv").append(rows)
    zoo = root / "zoo"
    zoo.mkdir()
    for mid, neuron, recipe in (("m-a", "lif", "gaussian"), ("m-b", "stable", "fgsm-at"), ("m-z", "lif", "clean")):
        card = {"id": mid, "arch": "vgg5", "model": {"arch": "vgg5", "neuron": neuron, "T": 2}, "dataset":
                "fashion-mnist", "recipe": {"recipe": recipe, "alpha": 1.0, "seed": 0}, "metrics": {"clean_acc": 0.9},
                "sha256": "ab" * 32, "created": "2026-01-01T00:00:00+00:00", "command": f"robench train --id {mid}"}
        (zoo / f"{mid}.json").write_text(json.dumps(card))
    adv = root / "adv"
    adv.mkdir()
    stage = rows[0]  # m-a's v1 stage 1
    meta = {"format": "robench-adversarial/1", **{k: stage.get(k, "") for k in KEY}, "eps_str": stage["eps_str"],
            "clean_count": CLEAN, "robust_count": stage["robust_count"]}
    save_file({"x_adv": np.zeros((2, 1, 4, 4), np.float32), "index": np.array([0, 1], np.int64)},
              str(adv / "m-a_reliable_stage1.safetensors"), metadata={"robench": json.dumps(meta)})
    (adv / "other.safetensors").write_bytes(b"not a safetensors file")
    return results, zoo, adv


class Page(HTMLParser):
    """What the tests read from a page: the board's header keys and rows, every link, every script."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.heads: list[dict] = []
        self.rows: list[dict] = []  # attributes of each board row, plus "cells": {data-key: data-sort}
        self.links: list[str] = []
        self.scripts: list[dict] = []
        self.stylesheets: list[dict] = []
        self._in_board = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "table":
            self._in_board = a.get("id") == "board"
        elif self._in_board and tag == "th":
            self.heads.append(a)
        elif self._in_board and tag == "tr" and "data-model" in a:
            self.rows.append({**a, "cells": {}})
        elif self._in_board and tag == "td" and self.rows and "data-key" in a:
            self.rows[-1]["cells"][a["data-key"]] = a.get("data-sort")
        if tag == "script":
            self.scripts.append(a)
        if tag == "link":
            self.stylesheets.append(a)
        for k in ("href", "src"):
            if a.get(k):
                self.links.append(a[k])

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_board = False
