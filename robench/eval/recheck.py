"""Re-verifying an adversarial-example file (:mod:`robench.eval.adversarial`) against the model it names.

:func:`recheck` loads the zoo model the file names (its weights' sha256 and config digest must match), the images
it names, checks every example again (:mod:`robench.eval.verify`) and returns the robust accuracy the file
implies: clean-correct samples minus verified broken ones, over n. A file that is not ours, is truncated or does
not match its own metadata is refused with one line (:class:`~robench.errors.IntegrityError`).

Examples:
    >>> r = recheck("adv/fmnist-vgg11-lif-clean_pgd_bptt_8-255_s0_1a2b3c4d5e.safetensors", "zoo")
    >>> r.robust_count / r.n                                     # the robust accuracy the file implies
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..attack_meta import NOISE
from ..errors import IntegrityError, UsageError
from .adversarial import read_adv
from .sweep import clean_correct, load_data
from .verify import check_examples

BATCH = 256


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


def recheck(path: str | Path, zoo_dir: str | Path, data_dir: str | Path | None = None, model: str | None = None,
            device: str | torch.device = "cpu") -> Recheck:
    """Re-verify an adversarial-example file against the zoo model it names (or ``model``, whose weights must
    have the file's sha256) on the first n images of the dataset it names; see :class:`Recheck`."""
    from ..zoo import config_digest, load_weights, model_from, select

    f = read_adv(path)
    m = f.meta
    cards = select(model or str(m["model"]), zoo_dir)
    if len(cards) != 1:
        raise UsageError(f"--model {model or m['model']!r} names {len(cards)} zoo entries; give one id")
    card = cards[0]
    if card.sha256 != m["sha256"]:
        raise IntegrityError(f"{str(path)!r} was made with weights sha256 {str(m['sha256'])[:12]}…, zoo entry "
                             f"{card.id!r} has {card.sha256[:12]}…; not the same model")
    if m.get("config") and m["config"] != config_digest(card):
        raise IntegrityError(f"{str(path)!r} was made with model config {str(m['config'])[:12]}…, zoo entry "
                             f"{card.id!r} has {config_digest(card)[:12]}… (T, tau, v_th, ...); not the same model")
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
    ball = str(m["attack"]) not in NOISE  # noise: no eps-ball
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
