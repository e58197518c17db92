"""What a sweep is made of: the data, the models (:class:`Target`), the cells (one attack x gradient path x eps x
seed on one model and data) and the results row a cell writes, and what a sweep returns (:class:`Evaluation`).

:mod:`robench.eval.sweep` plans and runs the cells; :mod:`robench.eval.cascade` runs the protocol's runs as
rows of the same form.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor, nn

from ..attacks import AttackSpec
from ..results.findings import Finding
from ..results.stats import encode_mask
from ..results.store import Key, row_key
from ..runtime import now, versions
from ..snn.pathkeys import GradPath


@dataclass(frozen=True)
class Data:
    """Evaluation data: ``name`` (the results' dataset column, e.g. ``fashion-mnist:test``), images ``x``
    ``[N, C, H, W]`` in ``[0, 1]`` and labels ``y`` ``[N]``."""

    name: str
    x: Tensor
    y: Tensor


@dataclass
class Target:
    """A model to evaluate, with the id, weights hash and config digest (:func:`robench.zoo.config_digest`: what
    defines the network besides its weights) that go into its rows, and its dataset's name."""

    id: str
    sha256: str
    model: nn.Module
    dataset: str
    config: str = ""


Grad = GradPath | str  # a gradient path, or the label "none" (gradient-free) or "worst" (over the paths)


@dataclass(frozen=True)
class Cell:
    """One cell: a model (id, sha256, config digest) on data (dataset, n), one attack at one eps, one gradient
    mode, one seed."""

    model: str
    sha256: str
    dataset: str
    n: int
    spec: AttackSpec
    grad: Grad  # its key goes into the row
    seed: int
    config: str = ""

    def stub(self) -> dict:
        return {"model": self.model, "sha256": self.sha256, "config": self.config, "dataset": self.dataset,
                "n": self.n, "attack": self.spec.name, "params": self.spec.params_json(), "grad": str(self.grad),
                "eps": self.spec.eps, "eps_str": self.spec.eps_str, "seed": self.seed}

    @property
    def key(self) -> Key:
        return row_key(self.stub())


@dataclass
class Evaluation:
    """What :func:`evaluate` returns: the rows of every requested cell (new and already stored), how many
    cells ran and were skipped, and the model checks' findings; a cascade run with ``return_adv`` also gives
    ``adv``: per model id, the verified adversarial examples of every image it broke
    (:class:`robench.eval.adversarial.AdvExamples`)."""

    records: pd.DataFrame
    ran: int = 0
    skipped: int = 0
    findings: list[Finding] = field(default_factory=list)
    new: set[Key] = field(default_factory=set)
    adv: dict = field(default_factory=dict)


def make_row(cell: Cell, correct: Tensor, clean: Tensor, seconds: float, device: torch.device, flags: str) -> dict:
    n = max(len(clean), 1)  # fractions in float64: exact counts / n
    return {**cell.stub(), "params": cell.spec.params_json(), "clean_acc": int(clean.sum()) / n,
            "robust_acc": int(correct.sum()) / n, "clean_count": int(clean.sum()),
            "robust_count": int(correct.sum()), "seconds": round(seconds, 3), "device": str(device),
            "versions": json.dumps(versions(), sort_keys=True), "timestamp": now(), "flags": flags,
            "robust_mask": encode_mask(correct.cpu().numpy())}


def row_flags(findings: Sequence[Finding], grad: Grad, invalid: int = 0) -> str:
    key = str(grad)
    names = [f.name for f in findings if not f.grads or key in f.grads or key == "worst"]
    return ";".join(dict.fromkeys(names + ([f"invalid-adv={invalid}"] if invalid else [])))


def invalid_finding(cell: Cell, invalid: int) -> Finding:
    return Finding("invalid-adv", f"{cell.model} {cell.spec.name} eps={cell.spec.eps_str} grad={cell.grad}: "
                   f"{invalid} adversarial example(s) failed verification (not finite, outside [0, 1] or the "
                   "eps-ball) and were counted robust", model=cell.model, grads=(str(cell.grad),))
