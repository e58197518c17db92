"""Adversarial-example files: a cell's verified examples, written so anyone can re-check a claim.

``robench attack --save-adv DIR`` writes one safetensors file per cell run (EVALUATION.md §5), holding

- ``x_adv`` ``[m, C, H, W]`` float32 in [0, 1]: the verified adversarial examples of the m broken samples;
- ``index`` ``[m]`` int64: their indices into the first ``n`` images of the dataset;
- metadata ``robench``: JSON with the format tag, the cell key (model, sha256, dataset, n, attack, params, grad,
  eps, seed), ``eps_str`` and the counts the row claims (``clean_count``, ``robust_count``).

:func:`recheck` loads the zoo model the file names (its weights' sha256 must match), the images it names, checks
every example again (:mod:`robench.eval.verify`) and returns the robust accuracy the file implies: clean-correct
samples minus verified broken ones, over n. A file that is not ours, is truncated or does not match its own
metadata is refused with one line (:class:`~robench.errors.IntegrityError`).

Examples:
    >>> r = recheck("adv/fmnist-vgg11-lif-clean_pgd_bptt_8-255_s0_1a2b3c4d5e.safetensors", "zoo")
    >>> r.robust_count / r.n                                     # the robust accuracy the file implies
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from ..errors import IntegrityError, UsageError
from ..results.store import KEY, NOISE, atomic_write
from .verify import check_examples

FORMAT = "robench-adversarial/1"
GRADIENT_FREE = NOISE  # attacks whose eps is a noise sigma: no eps-ball check
BATCH = 256


@dataclass(frozen=True)
class AdvFile:
    """A read adversarial-example file: ``x_adv`` ``[m, C, H, W]``, ``index`` ``[m]`` and its ``meta`` dict."""

    x_adv: Tensor
    index: Tensor
    meta: dict


@dataclass(frozen=True)
class Recheck:
    """What :func:`recheck` found: over ``n`` images, ``clean_count`` correct clean, ``checked`` examples of
    which ``broken`` verified (valid, misclassified, clean-correct) and ``invalid`` failed a check;
    ``robust_count`` = clean_count - broken, and the count the row claimed."""

    model: str
    dataset: str
    n: int
    eps_str: str
    clean_count: int
    checked: int
    broken: int
    invalid: int
    robust_count: int
    claimed: int


def check_adv_dir(folder: str | Path) -> Path:
    """Refuse, before any work and writing nothing, a ``--save-adv`` folder that cannot be created or written."""
    d = Path(folder)
    base = next((p for p in (d, *d.parents) if p.exists()), Path("."))
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        raise UsageError(f"--save-adv {str(d)!r}: {str(base)!r} is not a writable folder")
    return d


def file_name(row: dict) -> str:
    """A safe, unique file name for a cell: readable parts plus a hash of the whole key."""
    key = json.dumps({k: row[k] for k in KEY}, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    parts = f"{row['model']}_{row['attack']}_{row['grad']}_{row['eps_str']}_s{row['seed']}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", parts)[:150] + f"_{digest}.safetensors"


def write_adv(folder: str | Path, row: dict, outcome) -> Path:
    """Write ``outcome.x_adv`` / ``outcome.index`` (a :class:`robench.eval.sweep.CellOutcome` run with
    ``keep_adv``) and the cell ``row``'s key and counts into ``folder``; atomic (temporary file + rename)."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, **{k: row[k] for k in KEY}, "eps_str": row["eps_str"],
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
        size = int.from_bytes(blob[:8], "little")
        meta = json.loads(json.loads(blob[8 : 8 + size])["__metadata__"]["robench"])
        tensors = st_load(blob)
    except Exception as e:  # truncated, foreign or corrupt: the safetensors and JSON errors vary
        raise IntegrityError(f"{bad} ({type(e).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or any(k not in meta for k in KEY):
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


def recheck(path: str | Path, zoo_dir: str | Path, data_dir: str | Path | None = None, model: str | None = None,
            device: str | torch.device = "cpu") -> Recheck:
    """Re-verify an adversarial-example file against the zoo model it names (or ``model``, whose weights must
    have the file's sha256) on the first n images of the dataset it names; see :class:`Recheck`."""
    from ..zoo import load_weights, model_from, select
    from .sweep import clean_correct, load_data

    f = read_adv(path)
    m = f.meta
    cards = select(model or str(m["model"]), zoo_dir)
    if len(cards) != 1:
        raise UsageError(f"--model {model or m['model']!r} names {len(cards)} zoo entries; give one id")
    card = cards[0]
    if card.sha256 != m["sha256"]:
        raise IntegrityError(f"{str(path)!r} was made with weights sha256 {str(m['sha256'])[:12]}…, zoo entry "
                             f"{card.id!r} has {card.sha256[:12]}…; not the same model")
    dataset, _, split = str(m["dataset"]).partition(":")
    n = int(m["n"])
    data, _ = load_data(dataset, data_dir, n, split or "test")
    if data.name != m["dataset"] or len(data.x) != n:
        raise IntegrityError(f"{str(path)!r} names the first {n} images of {m['dataset']}; found {len(data.x)} of "
                             f"{data.name} (pass --data-dir)")
    if tuple(f.x_adv.shape[1:]) != tuple(data.x.shape[1:]):
        raise IntegrityError(f"{str(path)!r}: examples {tuple(f.x_adv.shape[1:])} do not fit {m['dataset']} "
                             f"images {tuple(data.x.shape[1:])}")
    net = model_from(card, load_weights(zoo_dir, card)).to(device).eval()
    x, y = data.x.to(device), data.y.to(device)
    clean = clean_correct(net, x, y, BATCH)
    broken = invalid = 0
    ball = str(m["attack"]) not in GRADIENT_FREE
    params = json.loads(m["params"]) if isinstance(m["params"], str) else dict(m["params"])
    if "draws" in params:
        raise UsageError(f"{str(path)!r} holds examples of a stochastic model (averaged over random draws); "
                         "verify-adv re-checks deterministic models only")
    norm = str(params.get("norm", "Linf"))  # the threat model the row claims (files before norms: L-inf)
    for i in range(0, len(f.index), BATCH):
        idx = f.index[i : i + BATCH].to(device)
        v = check_examples(net, x[idx], y[idx], f.x_adv[i : i + BATCH].to(device), float(m["eps"]), ball,
                           str(m["attack"]), norm)
        broken += int((v.broken & clean[idx]).sum())
        invalid += int(v.invalid.sum())
    cc = int(clean.sum())
    return Recheck(card.id, data.name, n, str(m["eps_str"]), cc, len(f.index), broken, invalid, cc - broken,
                   int(m["robust_count"]))
