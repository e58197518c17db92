"""Adversarial-example files: a cell's verified examples, written so anyone can re-check a claim.

``robench attack --save-adv DIR`` writes one safetensors file per cell run (docs/evaluation.md §5), holding

- ``x_adv`` ``[m, C, H, W]`` float32 in [0, 1]: the verified adversarial examples of the m broken samples;
- ``index`` ``[m]`` int64: their indices into the first ``n`` images of the dataset;
- metadata ``robench``: JSON with the format tag, the cell key (model, sha256, config, dataset, n, attack, params,
  grad, eps, seed; files written before ``config`` existed lack it), ``eps_str`` and the counts the row claims
  (``clean_count``, ``robust_count``).

:func:`read_adv` refuses, with one line (:class:`~robench.errors.IntegrityError`), a file that is not ours, is
truncated or does not match its own metadata; :func:`robench.eval.recheck.recheck` verifies its examples again.

Examples:
    >>> f = read_adv("adv/fmnist-vgg11-lif-clean_pgd_bptt_8-255_s0_1a2b3c4d5e.safetensors")
    >>> f.x_adv.shape, f.index.shape, f.meta["robust_count"]
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from ..errors import IntegrityError, UsageError
from ..io import atomic_write, existing_base, header_metadata, unwritable
from ..results.store import KEY

FORMAT = "robench-adversarial/1"


@dataclass(frozen=True)
class AdvExamples:
    """Verified adversarial examples held in memory (what ``robench.evaluate(..., return_adv=True)`` gives):
    ``x_adv`` ``[m, C, H, W]`` float32 in [0, 1], ``index`` ``[m]`` int64 (ascending) into the evaluated images,
    ``stage`` the cascade run that broke each (``"2"``, ``"3+1"``). Every one was re-classified wrongly by a fresh
    forward of the model and lies within the budget in the run's norm."""

    x_adv: Tensor
    index: Tensor
    stage: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.index)


@dataclass(frozen=True)
class AdvFile:
    """A read adversarial-example file: ``x_adv`` ``[m, C, H, W]``, ``index`` ``[m]`` and its ``meta`` dict."""

    x_adv: Tensor
    index: Tensor
    meta: dict


def check_adv_dir(folder: str | Path) -> Path:
    """Refuse, before any work and writing nothing, a ``--save-adv`` folder that cannot be created or written."""
    d = Path(folder)
    if unwritable(d):
        base = existing_base(d)
        raise UsageError(f"--save-adv {str(d)!r}: {str(base)!r} is not a writable folder")
    return d


def file_name(row: dict) -> str:
    """A safe, unique file name for a cell: readable parts plus a hash of the whole key (a row without a config
    digest, written before it existed, keeps the name it had then)."""
    key = json.dumps({k: row.get(k, "") for k in KEY if k != "config" or row.get("config")}, sort_keys=True,
                     default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    parts = f"{row['model']}_{row['attack']}_{row['grad']}_{row['eps_str']}_s{row['seed']}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", parts)[:150] + f"_{digest}.safetensors"


def write_adv(folder: str | Path, row: dict, outcome, extra: dict | None = None) -> Path:
    """Write ``outcome.x_adv`` / ``outcome.index`` (a :class:`robench.eval.cell.CellOutcome` run with
    ``keep_adv``) and the cell ``row``'s key and counts into ``folder``; atomic (temporary file + rename).
    ``extra``: more metadata (the reliable cascade adds ``stage``: the run that broke each image, aligned with
    ``index``)."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, **(extra or {}), **{k: row.get(k, "") for k in KEY}, "eps_str": row["eps_str"],
            "clean_count": int(row["clean_count"]), "robust_count": int(row["robust_count"])}
    tensors = {"x_adv": outcome.x_adv.float().contiguous(), "index": outcome.index.long().contiguous()}
    blob = st_save(tensors, metadata={"robench": json.dumps(meta, sort_keys=True, default=str)})
    path = d / file_name(row)
    atomic_write(path, blob)
    return path


def read_adv(path: str | Path) -> AdvFile:
    """Read and check a file written by :func:`write_adv`; anything else is one IntegrityError line."""
    p = Path(path)
    if not p.is_file():
        raise IntegrityError(f"{str(p)!r} is not a file")
    blob = p.read_bytes()
    bad = f"{str(p)!r} is not a robench adversarial-example file"
    try:
        meta = header_metadata(blob)
        tensors = st_load(blob)
    except Exception as e:  # truncated, foreign or corrupt: the safetensors and JSON errors vary
        raise IntegrityError(f"{bad} ({type(e).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or any(k not in meta for k in KEY if k != "config"):
        raise IntegrityError(f"{bad} (metadata lacks the {FORMAT} cell key)")
    x_adv, index = tensors.get("x_adv"), tensors.get("index")
    if x_adv is None or index is None or set(tensors) != {"x_adv", "index"}:
        raise IntegrityError(f"{bad} (tensors {sorted(tensors)}, expected index and x_adv)")
    n = int(meta["n"])
    if (x_adv.dtype != torch.float32 or index.dtype != torch.int64 or x_adv.dim() != 4 or index.dim() != 1
            or len(index) != len(x_adv)):
        raise IntegrityError(f"{bad} (x_adv {tuple(x_adv.shape)} {x_adv.dtype}, index {tuple(index.shape)} "
                             f"{index.dtype}; expected float32 [m, C, H, W] and int64 [m])")
    if len(index) and (int(index.min()) < 0 or int(index.max()) >= n or len(index.unique()) != len(index)):
        raise IntegrityError(f"{str(p)!r}: index holds values outside 0..{n - 1} or repeats")
    return AdvFile(x_adv, index, meta)
