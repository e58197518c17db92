"""Shard files of ``robench attack --shard i/K`` and ``robench results merge``, which joins them into the rows and
masks a single run writes.

A shard (:mod:`robench.dist`) attacks the global batches ``j`` with ``j % K == i`` of every cell and writes one
JSON line per cell into ``OUT/shards/NAME.shard-i-of-K.jsonl`` (a subfolder, so ``robench report`` never reads
a partial row): the usual results columns (its ``robust_count`` counts its own images only) plus ``shard``
(``"i/K"``), ``batch_size`` (the batches define the random draws), ``clean_mask`` (hex, all n images) and
``shard_mask`` (hex, the images it attacked that stayed robust; bits of other shards' images are 0). Merging
checks that every cell has each of the K shards exactly once, from the same model hash, data, options and batch
size, and that each shard set bits only on its own images; the merged row's vector is the OR of the shards'.
This module needs numpy and pandas only (never torch).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataNotFound, IntegrityError
from ..io import atomic_write, check_name, folder_lock
from ..parts import Part, batch_bounds
from .stats import decode_mask, encode_mask
from .store import COLUMNS, KEY, OPTIONAL_COLUMNS, Key, ResultsStore, row_key

SHARD_COLUMNS = ("shard", "batch_size", "clean_mask", "shard_mask")
FILE_RE = re.compile(r"(?P<name>.+)\.shard-(?P<i>\d+)-of-(?P<k>\d+)\.jsonl")


def shard_path(out: str | Path, name: str, index: int, count: int) -> Path:
    return Path(out) / "shards" / f"{name}.shard-{index}-of-{count}.jsonl"


def shard_fields(part, correct, clean, batch_size: int) -> dict:
    """The extra columns of a shard's row (none for a whole run or a torchrun rank)."""
    if not part.is_shard:
        return {}
    return {"shard": part.label, "batch_size": int(batch_size), "clean_mask": encode_mask(clean.cpu().numpy()),
            "shard_mask": encode_mask(correct.cpu().numpy())}


def owned(clean: np.ndarray, batch_size: int, index: int, count: int, min_batches: int = 1) -> np.ndarray:
    """``bool [n]``: the images shard ``index`` of ``count`` attacks (the global batches of
    :func:`robench.dist.split` over the initially correct images)."""
    todo, part = np.flatnonzero(clean), Part(index, count)
    out = np.zeros(len(clean), dtype=bool)
    for j, (a, b) in enumerate(batch_bounds(len(todo), batch_size, min_batches)):
        if part.mine(j):
            out[todo[a:b]] = True
    return out


def _min_batches(row: Mapping) -> int:
    try:
        return int(json.loads(row.get("params") or "{}").get("min_batches", 1))
    except (TypeError, ValueError, AttributeError):
        return 1


class ShardFile:
    """One shard's rows (JSON lines), with the store interface :func:`robench.eval.sweep.evaluate` uses."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"ShardFile({str(self.path)!r})"

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        for i, line in enumerate(self.path.read_text().splitlines(), 1):
            try:
                r = json.loads(line)
            except ValueError:
                raise IntegrityError(f"{str(self.path)!r} line {i} is not JSON: not a robench shard file") from None
            missing = [c for c in (*COLUMNS, *SHARD_COLUMNS) if c not in OPTIONAL_COLUMNS
                       and (not isinstance(r, dict) or c not in r)]
            if missing:
                raise IntegrityError(f"{str(self.path)!r} line {i} lacks {', '.join(missing)}: not a robench "
                                     "shard file")
            out.append(r)
        return out

    def read(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows(), columns=[*COLUMNS, *SHARD_COLUMNS])

    def keys_done(self) -> set[Key]:
        return {row_key(r) for r in self.rows()}

    def check_writable(self) -> None:
        self.rows()
        ResultsStore(self.path.with_suffix(".csv")).check_writable()

    def append(self, rows: Iterable[Mapping], replace: bool = False) -> None:
        new = [dict(r) for r in rows]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with folder_lock(self.path.parent):
            keys = {row_key(r) for r in new}
            old = [r for r in self.rows() if not (replace and row_key(r) in keys)]
            done = {row_key(r) for r in old}
            text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in [*old, *(r for r in new if row_key(r)
                                                                                  not in done)])
            atomic_write(self.path, text)


# ------------------------------------------------------------------------------------------------- merge
@dataclass
class Merged:
    """What :func:`merge` did: the merged rows written, cells already in the results, shards per cell."""

    rows: list[dict]
    skipped: int
    count: int
    path: Path | None = None  # the results file they went into


def find_shards(out: str | Path, name: str) -> list[Path]:
    files = sorted((Path(out) / "shards").glob(f"{name}.shard-*-of-*.jsonl"))
    if not files:
        raise DataNotFound(f"no shard files {name}.shard-I-of-K.jsonl in {str(Path(out) / 'shards')!r}; run "
                           f"`robench attack --shard I/K --out {out} --name {name} ...` first")
    return files


def merge(files: Sequence[str | Path], store: ResultsStore, force: bool = False) -> Merged:
    """Join the shard ``files`` of every cell into one row each and append them to ``store`` (cells already
    there are skipped unless ``force``). A missing, duplicated or mismatched shard is refused before writing."""
    by_label = _load(files)
    count = _count(by_label)
    keys = {k: None for rows in by_label.values() for k in rows}
    merged = [_merge_cell(key, by_label, count) for key in keys]
    done = set() if force else store.keys_done()
    new = [r for r in merged if force or row_key(r) not in done]
    if new:
        store.append(new, replace=force)
    return Merged(new, len(merged) - len(new), count)


def merge_results(out: str | Path = "results", name: str = "results", files: Sequence[str | Path] | None = None,
                  force: bool = False) -> Merged:
    """``robench results merge``: join ``files`` (default: every ``OUT/shards/NAME.shard-*.jsonl``) into
    ``OUT/NAME.csv`` (:func:`merge`); a bad name or a results file that cannot be written is refused first."""
    check_name(name)
    store = ResultsStore(Path(out) / f"{name}.csv")
    store.check_writable()
    done = merge(files or find_shards(out, name), store, force=force)
    done.path = store.path
    return done


def _load(files: Sequence[str | Path]) -> dict[tuple[int, int], dict[Key, dict]]:
    """``{(i, K): {key: row}}``; each file must hold one shard, and no shard may come twice."""
    by_label: dict[tuple[int, int], dict[Key, dict]] = {}
    where: dict[tuple[int, int], Path] = {}
    for f in map(Path, files):
        if not f.is_file():
            raise DataNotFound(f"shard file {str(f)!r} does not exist")
        rows = ShardFile(f).rows()
        labels = {r["shard"] for r in rows}
        if len(labels) != 1:
            raise IntegrityError(f"shard file {str(f)!r} holds {'no rows' if not labels else 'several shards'}")
        i, _, k = labels.pop().partition("/")
        label = (int(i), int(k))
        if label in by_label:
            raise IntegrityError(f"shard {i}/{k} appears twice: {str(where[label])!r} and {str(f)!r}")
        by_label[label], where[label] = {row_key(r): {**r, "_file": str(f)} for r in rows}, f
    return by_label


def _count(by_label: dict) -> int:
    counts = sorted({k for _, k in by_label})
    if len(counts) != 1:
        raise IntegrityError(f"shards of different splits: {', '.join(f'{i}/{k}' for i, k in sorted(by_label))}")
    k = counts[0]
    missing = [f"{i}/{k}" for i in range(k) if (i, k) not in by_label]
    if missing:
        have = ", ".join(f"{i}/{k}" for i, _ in sorted(by_label))
        raise IntegrityError(f"shard {', '.join(missing)} missing (have {have})")
    return k


def _merge_cell(key: Key, by_label: dict, count: int) -> dict:
    parts = []
    for i in range(count):
        rows = by_label[(i, count)]
        if key not in rows:
            raise IntegrityError(_why_missing(key, i, count, rows))
        parts.append(rows[key])
    first = parts[0]
    n = int(first["n"])
    clean = decode_mask(first["clean_mask"], n, first["clean_count"], f"{first['_file']}: clean_mask")
    correct = np.zeros(n, dtype=bool)
    for i, r in enumerate(parts):
        for col in ("batch_size", "clean_mask"):
            if r[col] != first[col]:
                raise IntegrityError(f"shard {i}/{count} ({r['_file']}) differs from shard 0/{count} in {col} "
                                     f"({r[col]!r:.40} vs {first[col]!r:.40}): other batch size, weights or data")
        mine = decode_mask(r["shard_mask"], n, r["robust_count"], f"{r['_file']}: shard_mask")
        if (mine & ~owned(clean, int(r["batch_size"]), i, count, _min_batches(r))).any():
            raise IntegrityError(f"shard {i}/{count} ({r['_file']}) has robust bits outside its own images")
        correct |= mine
    out = {c: first.get(c, "") for c in COLUMNS}
    k, m = int(clean.sum()), int(correct.sum())
    out.update(clean_count=k, clean_acc=k / max(n, 1), robust_count=m, robust_acc=m / max(n, 1),
               seconds=round(sum(float(r["seconds"]) for r in parts), 3),
               device=",".join(dict.fromkeys(str(r["device"]) for r in parts)),
               flags=_merge_flags(str(r["flags"]) for r in parts))
    if "robust_mask" in COLUMNS:  # the per-sample mask column of docs/evaluation.md §5, when the schema has it
        out["robust_mask"] = encode_mask(correct)
    return out


def _merge_flags(flags: Iterable[str]) -> str:
    """The union of the shards' flags, with the counts of ``invalid-adv=N`` added up."""
    names, invalid = [], 0
    for f in (f for text in flags for f in text.split(";") if f):
        if f.startswith("invalid-adv="):
            invalid += int(f.split("=", 1)[1])
        else:
            names.append(f)
    return ";".join(dict.fromkeys(names + ([f"invalid-adv={invalid}"] if invalid else [])))


def _why_missing(key: Key, index: int, count: int, rows: dict[Key, dict]) -> str:
    """Name the shard that lacks a cell, and the fields in which its nearest cell differs, if it has one."""
    cell = dict(zip(KEY, key, strict=True))
    desc = f"{cell['model']} {cell['attack']} eps {cell['eps']} grad {cell['grad']}"
    best, diff = None, None
    for other in rows:
        d = [f for f, a, b in zip(KEY, key, other, strict=True) if a != b]
        if diff is None or len(d) < len(diff):
            best, diff = other, d
    identity = {"sha256", "config", "dataset", "n", "params", "seed"}
    if best is not None and diff and len(diff) <= 3 and set(diff) & identity:
        o = dict(zip(KEY, best, strict=True))
        what = ", ".join(f"{f} {o[f][:16]!r} vs {cell[f][:16]!r}" for f in diff)
        return f"shard {index}/{count} was run with another model hash or other options ({what}); refused"
    return f"cell {desc}: shard {index}/{count} missing (its file has no row for it; rerun that shard)"
