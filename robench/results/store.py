"""The one results schema and its store: tidy rows, one per (model, attack, gradient mode, eps, seed) cell.

A results file is a CSV with at least :data:`COLUMNS`. Accuracies are fractions in [0, 1] (formatted only when
rendered); ``params`` and ``versions`` are JSON with sorted keys; ``grad`` is a gradient path's canonical key
(``bptt``, ``rate``, ``sigmoid:k=4``, ... see :mod:`robench.snn.pathkeys`), ``worst`` (the per-sample AND over the
paths run) or ``none`` (gradient-free attacks). ``robust_mask`` is the per-sample outcome (docs/evaluation.md §5;
:func:`robench.results.stats.decode_mask`): lowercase hex of ``packbits(mask, bitorder="little")`` over the first n
images, its set bits = ``robust_count``; files written before it existed read with ``""`` there ("no mask"), and a
mask that does not match its row's n or count is refused. A row's :data:`KEY` identifies its cell; a rerun skips
keys already present. Appends rewrite the whole file to a temporary file in the same folder and rename it over the
old one under a lock on the folder (:func:`robench.io.folder_lock`: no lock file is left behind), so a crash never
leaves a half-written file and two processes never interleave. This module imports pandas only (never torch), so
reports stay light.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from ..errors import DataNotFound, IntegrityError
from ..io import atomic_write, existing_base, folder_lock, unwritable
from ..snn.pathkeys import is_path_key
from .stats import decode_mask

COLUMNS = ("model", "sha256", "dataset", "n", "attack", "params", "grad", "eps", "eps_str", "clean_acc",
           "robust_acc", "clean_count", "robust_count", "seconds", "device", "seed", "versions", "timestamp",
           "flags", "robust_mask", "config")
OPTIONAL_COLUMNS = ("robust_mask", "config")  # absent from files written before they existed; read as ""
# a model's identity is its weights (sha256) and its config digest (robench.zoo.config_digest: T, tau, v_th,
# encoding, entry point, code hash, ...), so a changed network never reuses another one's rows
KEY = ("model", "sha256", "config", "dataset", "n", "attack", "params", "grad", "eps", "seed")
INT_COLUMNS = ("n", "clean_count", "robust_count", "seed")
FLOAT_COLUMNS = ("eps", "clean_acc", "robust_acc", "seconds")
GRADS = ("worst", "none")  # besides every gradient path key (robench.snn.pathkeys.is_path_key)
JSON_COLUMNS = ("params", "versions")

Key = tuple[str, ...]


def _canon_json(text: object) -> str:
    return json.dumps(json.loads(text) if isinstance(text, str) else text, sort_keys=True)


def row_key(row: Mapping) -> Key:
    """The cell key of a row, normalised so a row read back from CSV gives the key it was written with."""
    return (str(row["model"]), str(row["sha256"]), str(row.get("config") or ""), str(row["dataset"]),
            str(int(row["n"])), str(row["attack"]), _canon_json(row["params"]), str(row["grad"]),
            repr(float(row["eps"])), str(int(row["seed"])))


def legacy_key(key: Key) -> Key:
    """``key`` as a row written before the config column existed has it (config ``""``)."""
    return (*key[:2], "", *key[3:])


class ByKey(dict):
    """Stored rows (or their outcomes) by cell key. A key that carries a config digest also finds the row of its
    cell written before the config column existed (config ``""``): such rows were keyed by the weights' sha256
    alone, and the zoo refuses a card whose defining fields changed since it was saved, so they belong to it."""

    def _find(self, key: Key) -> Key | None:
        if dict.__contains__(self, key):
            return key
        old = legacy_key(key)
        return old if key[2] and dict.__contains__(self, old) else None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and self._find(key) is not None

    def get(self, key: Key, default=None):
        found = self._find(key)
        return dict.__getitem__(self, found) if found is not None else default


def resolve_legacy(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose rows without a config digest (written before the column existed) take the one
    digest that the rows of the same model id and weights carry, when there is exactly one: for grouping cells
    of one model identity (worst cases); ambiguous ones keep ``""``."""
    if "config" not in df.columns or df.empty:
        return df
    cfg = df["config"].astype(str)
    known = df[cfg != ""].groupby(["model", "sha256"])["config"].agg(lambda s: set(s))
    one = {k: next(iter(v)) for k, v in known.items() if len(v) == 1}
    filled = [one.get((m, h), "") if c == "" else c for m, h, c in zip(df["model"], df["sha256"], cfg, strict=True)]
    return df.assign(config=filled)


def empty() -> pd.DataFrame:
    return _typed(pd.DataFrame({c: pd.Series(dtype=str) for c in COLUMNS}), "empty")


def _typed(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """String columns as read, numbers parsed exactly (Python's float round-trips what repr wrote)."""
    df = df.copy()
    for cols, conv in ((INT_COLUMNS, int), (FLOAT_COLUMNS, float)):
        for c in cols:
            try:
                df[c] = df[c].map(conv).astype("int64" if conv is int else "float64")
            except (ValueError, TypeError) as e:
                raise IntegrityError(f"{where}: column {c!r} holds a value that is not a number ({e})") from None
    return df


def check_complete(text: str, where: str) -> None:
    """Refuse a results file with a partial or malformed row (a crash, a full disk or a bad copy cut it): every
    row must end with an end of line and have as many fields as the header; the message names the line."""
    if not text:
        return
    if not text.endswith("\n"):
        raise IntegrityError(f"{where}: line {text.count(chr(10)) + 1} is cut short (it has no end of line): a "
                             "partial row; refusing the file, nothing was written; repair or remove that line")
    reader = csv.reader(io.StringIO(text))
    width = len(next(reader, []))
    for fields_ in reader:
        if fields_ and len(fields_) != width:
            raise IntegrityError(f"{where}: line {reader.line_num} has {len(fields_)} of the header's {width} "
                                 "fields: a partial or malformed row; refusing the file, nothing was written; "
                                 "repair or remove that line")


def validate(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """Refuse a table that is not a robench results table: missing columns, bad numbers or JSON, bad grads."""
    missing = [c for c in COLUMNS if c not in df.columns and c not in OPTIONAL_COLUMNS]
    if missing:
        raise IntegrityError(f"{where} is not a robench results file: missing columns {', '.join(missing)}")
    df = _typed(df.assign(**{c: "" for c in OPTIONAL_COLUMNS if c not in df.columns}), where)
    bad_acc = ~df["robust_acc"].between(0, 1) | ~df["clean_acc"].between(0, 1)
    bad_grad = ~df["grad"].map(lambda g: g in GRADS or is_path_key(g)).astype(bool)
    if bad_acc.any() or bad_grad.any():
        i = int((bad_acc | bad_grad).to_numpy().nonzero()[0][0])
        raise IntegrityError(f"{where}: row {i + 2} has an accuracy outside [0, 1] or a grad that is not a "
                              f"gradient path key nor one of {GRADS}")
    for c in JSON_COLUMNS:
        for i, v in enumerate(df[c]):
            try:
                json.loads(v)
            except (TypeError, ValueError):
                raise IntegrityError(f"{where}: row {i + 2} column {c!r} is not JSON") from None
    _check_masks(df, where)
    return df


def _check_masks(df: pd.DataFrame, where: str) -> None:
    """Every non-empty ``robust_mask`` must decode to ``n`` bits whose set bits are ``robust_count``."""
    df["robust_mask"] = df["robust_mask"].astype(str)
    for i, (text, n, count) in enumerate(zip(df["robust_mask"], df["n"], df["robust_count"], strict=True)):
        if text:
            decode_mask(text, int(n), int(count), where=f"{where}: row {i + 2} robust_mask")


def masks(df: pd.DataFrame):
    """The ``bool [n]`` mask of every row (None where the row has none), in row order."""
    return [decode_mask(t, int(n)) if t else None for t, n in zip(df["robust_mask"], df["n"], strict=True)]


def to_frame(rows: Iterable[Mapping]) -> pd.DataFrame:
    rows = [{**dict.fromkeys(OPTIONAL_COLUMNS, ""), **r} for r in rows]
    for r in rows:
        missing = [c for c in COLUMNS if c not in r]
        if missing:
            raise ValueError(f"a results row lacks columns {missing}")
    df = pd.DataFrame([{c: r[c] for c in COLUMNS} for r in rows], columns=list(COLUMNS))
    for c in JSON_COLUMNS:
        df[c] = df[c].map(_canon_json)
    return validate(df.astype({c: str for c in COLUMNS if c not in INT_COLUMNS + FLOAT_COLUMNS}), "new rows")


class ResultsStore:
    """One results CSV: ``read()``, ``keys_done()``, ``append(rows)`` (under :func:`robench.io.folder_lock`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    def read(self) -> pd.DataFrame:
        """All rows (an empty table when the file does not exist yet); a file that is not ours is refused."""
        if not self.path.exists():
            return empty()
        if not self.path.is_file():
            raise IntegrityError(f"results file {str(self.path)!r} is not a file")
        try:
            text = self.path.read_text()
            check_complete(text, repr(str(self.path)))
            df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[])
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
            first = (str(e).strip().splitlines() or [""])[0][:120]
            raise IntegrityError(f"{str(self.path)!r} is not a robench results file ({first})") from None
        return validate(df, repr(str(self.path)))

    def keys_done(self) -> set[Key]:
        return {row_key(r) for r in self.read().to_dict("records")}

    def check_writable(self) -> None:
        """Refuse early a results file that is not ours or a folder that cannot be written; writes nothing."""
        self.read()
        if unwritable(self.path.parent):
            base = existing_base(self.path.parent)
            raise IntegrityError(f"cannot write results to {str(self.path.parent)!r} ({str(base)!r} is not a "
                                 "writable folder); pass --out DIR")

    def append(self, rows: Iterable[Mapping], replace: bool = False) -> pd.DataFrame:
        """Add ``rows`` (``replace``: drop old rows with the same keys first; otherwise a row whose cell is already
        stored, e.g. by a concurrent run, is dropped); returns the whole new table."""
        new = to_frame(rows)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with folder_lock(self.path.parent):
            old = self.read()
            if replace and len(old):  # the same cells, and rows of them written before the config column
                keys = {k for r in new.to_dict("records") for k in (row_key(r), legacy_key(row_key(r)))}
                old = old[[row_key(r) not in keys for r in old.to_dict("records")]]
            elif len(old):  # another process may have stored the same cell since we looked: keep one row per cell
                keys = {row_key(r) for r in old.to_dict("records")}
                new = new[[row_key(r) not in keys for r in new.to_dict("records")]]
            df = pd.concat([old, new], ignore_index=True) if len(old) else new
            self._write(df)
        return df

    def _write(self, df: pd.DataFrame) -> None:
        out = df.copy()
        for c in FLOAT_COLUMNS:
            out[c] = out[c].map(repr)  # exact round trip
        atomic_write(self.path, out.to_csv(index=False))


def read_dir(folder: str | Path) -> pd.DataFrame:
    """Every results CSV in ``folder`` (not its subfolders) as one table; a CSV that is not ours is refused."""
    d = Path(folder)
    if not d.is_dir():
        raise DataNotFound(f"results folder {str(d)!r} does not exist; run `robench attack --out {d}` first")
    files = sorted(p for p in d.glob("*.csv") if p.is_file())
    if not files:
        raise DataNotFound(f"no results CSV in {str(d)!r}; run `robench attack --out {d}` first")
    frames = [ResultsStore(p).read() for p in files]
    df = pd.concat(frames, ignore_index=True)
    if df.empty:
        raise DataNotFound(f"the results files in {str(d)!r} hold no rows")
    return df
