"""One model's runs of a cascade: the row each run writes (or reads back on a resume) and its examples.

A run is one attack of one stage (its first try, ``stage = k``, or a restart, ``"k+r"``) on the images still robust.
:class:`ModelRuns` runs it through :func:`robench.eval.sweep.attack_cell`, or, when its row is already stored,
reads the mask back, so a resumed cascade replays every decision it made before; it stores each row at once, and
with ``--save-adv`` writes the verified examples of every image broken so far beside each row
(:mod:`robench.eval.adversarial`). On a stochastic model (one that samples in its forward pass, e.g. Poisson
coding) every run is an EOT run (:mod:`robench.eval.stochastic`): each gradient step averages K draws, every verdict
re-classifies with M fresh draws the attack never used, and K, M and the sampler are part of every row's
``params``. :func:`stage_params` and :func:`whole_params` are the rows' ``params``, the
part of their key that names the protocol, its version and the run.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..dist import Part
from ..errors import BadSpec, RobenchError
from ..results.stats import decode_mask
from ..results.store import ResultsStore
from ..snn.pathkeys import GradPath
from .adversarial import AdvExamples, file_name, read_adv, write_adv
from .cell import CellOutcome, attack_cell
from .stagelist import Protocol, Stage
from .stochastic import stochastic_spec
from .sweep import Cell, Data, Target, invalid_finding, keep_rows, make_row, row_flags

SUITE = "reliable"


@dataclass(frozen=True)
class RunLabel:
    """What a results row needs of an attack (name, budget, parameters): a cascade run's or the whole's."""

    name: str
    eps: float
    eps_str: str
    extra: Mapping = field(default_factory=dict)

    def params_json(self) -> str:
        return json.dumps(dict(self.extra), sort_keys=True)


def stage_seed(seed: int, model_sha: str, k: int | str, restart: int, suite: str = SUITE, version: int = 1) -> int:
    """A run's seed from the run's seed, the model, the protocol and the stage (never the batch or the process)."""
    h = hashlib.sha256(f"{seed}:{model_sha}:{suite}:{version}:{k}:{restart}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def protocol_head(p: Protocol) -> dict:
    return {"suite": p.name, "version": p.version, **({"digest": p.digest()} if p.version >= 2 else {})}


def stage_params(p: Protocol, k: int, stage: Stage, restart: int = 0, asked: GradPath | str | None = None) -> dict:
    """The ``params`` of a stage's row: run ``k`` (``"k+r"`` for restart r), the attack's parameters, and the path
    the stage asked for when another ran (``path_requested``)."""
    return {**protocol_head(p), "stage": k if restart == 0 else f"{k}+{restart}", "attack": stage.spec.name,
            "stage_restarts": stage.restarts, **stage.spec.params(),
            **({"path_requested": str(asked)} if asked else {})}


def whole_params(p: Protocol) -> dict:
    """The ``params`` of the cascade's result row (``grad = worst``)."""
    mb = p.stages[0].spec.min_batches
    return {**protocol_head(p), "stage": "all", "stages": len(p.stages), **({"min_batches": mb} if mb > 1 else {})}


# ------------------------------------------------------------------------------------------------ one model
@dataclass
class Run:
    """One finished run of a stage: its label (``3``, ``3+1``), how many it broke, the robust count after it."""

    label: str
    stage: Stage
    broke: int
    after: int
    secs: float


@dataclass
class ModelRuns:
    """Everything one model's cascade needs, and what it has done so far."""

    t: Target
    d: Data
    p: Protocol
    stored: dict
    store: ResultsStore | None
    seed: int
    bs: int
    dev: torch.device
    emit: Callable[[dict], None]
    force: bool
    part: Part
    clean: torch.Tensor  # bool [n] on the CPU
    save_adv: Path | None = None
    keep_adv: bool = False  # keep the verified examples (in adv): with save_adv, or for return_adv
    draws: tuple | None = None  # a stochastic model: (eot, draws, sampler) as given (None each: the defaults)
    rows: list = field(default_factory=list)
    runs: list = field(default_factory=list)
    bad: list = field(default_factory=list)
    keys: list = field(default_factory=list)  # every row this run produced or read back, in run order
    adv: dict = field(default_factory=dict)  # image index -> (x_adv [C, H, W], run label), with --save-adv
    adv_from: dict | None = None  # the last resumed run's cell, whose file holds the examples so far
    ranking: list | None = None  # the probe's ranking, once probed
    probe_secs: float = 0.0

    @property
    def n(self) -> int:
        return len(self.d.x)

    def staged(self, stage: Stage) -> Stage:
        """The stage as it runs on this model: with EOT (K draws per step, M fresh draws per verdict) on a
        stochastic one, unchanged otherwise."""
        return stage if self.draws is None else replace(stage, spec=stochastic_spec(stage.spec, *self.draws))

    def whole_params(self) -> dict:
        """The cascade's result row's ``params``: the protocol's, and K, M and the sampler on a stochastic model."""
        s = self.staged(self.p.stages[0]).spec
        return {**whole_params(self.p), **({"eot": s.eot, "draws": s.draws, "sampler": s.sampler}
                                          if self.draws is not None else {})}

    def cell(self, params: dict, grad: GradPath | str) -> Cell:
        eps, eps_str = self.p.eps
        return Cell(self.t.id, self.t.sha256, self.d.name, self.n, RunLabel(self.p.name, eps, eps_str, params), grad,
                    self.seed, self.t.config)

    def attack(self, params: dict, stage: Stage, grad: GradPath | str, seed: int, robust: torch.Tensor,
               todo: torch.Tensor, flags: Callable[[int], list[str]] = lambda broke: [], cumulative: bool = True
               ) -> torch.Tensor:
        """Attack images ``todo`` (still robust in ``robust``) once, or read the stored row; store the row; return
        the new robust mask (bool [n], CPU). ``flags(broke)``: extra flags for the row."""
        cell = self.cell(params, grad)
        self.keys.append(cell.key)
        old = None if self.force else self.stored.get(cell.key)
        if old is not None and old.get("robust_mask"):
            if cumulative and self.keep_adv and self.save_adv is None:
                raise BadSpec(f"return_adv: the results file already holds runs of {self.t.id}'s cascade, whose "
                              "examples were not kept; give save_adv=DIR with the results file (a resumed call "
                              "reads them back from there), or a new results file")
            after = torch.from_numpy(decode_mask(old["robust_mask"], self.n, int(old["robust_count"])).copy())
            self._done(params, stage, grad, int(robust.sum()) - int(after.sum()), after, float(old["seconds"]),
                       True, cumulative)
            if cumulative:
                self.adv_from = {**cell.stub(), "params": cell.spec.params_json(), "config": old.get("config", "")}
            return after
        t0 = time.perf_counter()
        after = robust.clone()
        invalid = 0
        self.emit({"kind": "batch", "model": self.t.id, "stage": params["stage"], "restart": 0, "todo": len(todo)})
        if len(todo):
            out = attack_cell(self.t.model, stage.spec, grad, self.d.x[todo.to(self.dev)], self.d.y[todo.to(self.dev)],
                              seed, self.bs, self.dev, torch.ones(len(todo), dtype=torch.bool),
                              keep_adv=self.keep_adv, part=self.part)
            after[todo[~out.correct]] = False
            invalid = out.invalid
            if out.x_adv is not None:
                self._keep_adv(todo[out.index], out.x_adv, str(params["stage"]), cumulative)
        secs = time.perf_counter() - t0
        broke = int(robust.sum()) - int(after.sum())
        if invalid:
            self.bad.append(invalid_finding(cell, invalid))
        row = make_row(cell, after, self.clean, secs, self.dev, ";".join(f for f in [*flags(broke),
                                                                                row_flags([], grad, invalid)] if f))
        self.write(row, after, cumulative)
        self._done(params, stage, grad, broke, after, secs, False, cumulative)
        if not cumulative:
            self.probe_secs += secs
        return after

    def _done(self, params: dict, stage: Stage, grad: GradPath | str, broke: int, after: torch.Tensor, secs: float,
              resumed: bool, cumulative: bool) -> None:
        if cumulative:
            self.runs.append(Run(str(params["stage"]), stage, broke, int(after.sum()), secs))
        self.emit({"kind": "stage", "model": self.t.id, "stage": params["stage"], "of": len(self.p.stages),
                   "attack": stage.spec.name, "grad": str(grad), "robust_acc": float(after.float().mean()),
                   "resumed": resumed})

    def _keep_adv(self, index: torch.Tensor, x_adv: torch.Tensor, label: str, cumulative: bool) -> None:
        if cumulative:
            self._load_adv()
            for i, x in zip(index.tolist(), x_adv, strict=True):
                self.adv[i] = (x, label)

    def _load_adv(self) -> None:
        """Resuming with --save-adv: the examples of the runs before come from the last resumed run's file."""
        if self.adv_from is None:
            return
        row, self.adv_from = self.adv_from, None
        try:
            f = read_adv(self.save_adv / file_name(row))
        except RobenchError:
            raise BadSpec(f"--save-adv {str(self.save_adv)!r} lacks the examples of the stored runs of {self.t.id}; "
                          "rerun with --force to redo its cascade (or without --save-adv)") from None
        labels = f.meta.get("stage", ["?"] * len(f.index))
        self.adv = {int(i): (x, str(s)) for i, x, s in zip(f.index.tolist(), f.x_adv, labels, strict=True)}

    def examples(self) -> AdvExamples:
        """The verified examples of every image the cascade broke so far, in image order."""
        self._load_adv()
        idx = sorted(self.adv)
        x = torch.stack([self.adv[i][0] for i in idx]) if idx else torch.zeros(0, *self.d.x.shape[1:])
        return AdvExamples(x.float().cpu(), torch.tensor(idx, dtype=torch.long), tuple(self.adv[i][1] for i in idx))

    def write(self, row: dict, after: torch.Tensor, cumulative: bool) -> None:
        self.rows += keep_rows([row], self.store, set(self.stored), self.force)
        if self.save_adv is None or not self.part.writer:
            return
        if cumulative:
            ex = self.examples()
            write_adv(self.save_adv, row, CellOutcome(after, x_adv=ex.x_adv, index=ex.index), {"stage": list(ex.stage)})
