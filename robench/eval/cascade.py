"""The ``reliable`` protocol (EVALUATION.md §6): an AutoAttack-style cascade of attacks x gradient paths.

Every stage is data (:class:`Stage`: an :class:`AttackSpec` with every parameter fixed, a gradient path and a
number of restarts). The cascade starts from the clean-correct samples; each stage attacks only the samples that
are still robust, and a sample it breaks (with a verified adversarial example, see :func:`robench.eval.cell.run_cell`)
stays broken. Each finished stage is stored at once as its own row: ``attack = reliable``, ``grad`` = the stage's
path, ``params`` = the stage number and the stage's attack parameters, and the per-sample mask of the samples
robust after stages 1..k. The last row (``grad = worst``, ``params.stage = "all"``) is the cascade's result.
A rerun resumes from the first stage without a row (Ctrl-C or SIGKILL keep every finished stage).

Findings (kept in the rows' ``flags`` and returned): ``not-converged`` when the last white-box stage or the last
restart of a stage still lowered robust accuracy by more than 1 point; ``gradient-masking`` when the black-box
check (Square, last) broke a sample that every white-box stage missed.

Examples:
    >>> ev = run_reliable(targets, data, ResultsStore("results/reliable.csv"), seed=0)
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch

from ..attacks import AttackSpec
from ..dist import WHOLE, Part, agree_min, share
from ..errors import BadSpec
from ..results.findings import Finding
from ..results.store import ResultsStore, row_key
from ..runtime import resolve_device
from .sweep import (
    Cell,
    Data,
    Evaluation,
    Target,
    attack_cell,
    auto_batch_size,
    check_fits,
    collect_records,
    invalid_finding,
    keep_rows,
    make_row,
    row_flags,
)
from .sweep import clean_correct as _clean_correct

SUITE = "reliable"
VERSION = 1  # bump when the stages change: rows of another version are other cells
CONVERGED_PT = 0.01  # a last stage or restart that still breaks more than 1 point of n: not converged


@dataclass(frozen=True)
class Stage:
    """One stage of a cascade: ``spec`` through gradient path ``grad``, ``restarts`` times (each restart a new
    seed, on the samples still robust). ``white_box = False`` marks the black-box masking check."""

    spec: AttackSpec
    grad: str
    restarts: int = 1
    white_box: bool = True

    def params(self, k: int) -> dict:
        return {"suite": SUITE, "version": VERSION, "stage": k, "attack": self.spec.name,
                "stage_restarts": self.restarts, **self.spec.params()}


def _e8(name: str, **kw) -> AttackSpec:
    return AttackSpec(name, eps=8 / 255, eps_str="8/255", **kw)


# The stages, cheapest strong first, each breaking samples the earlier ones missed on the shipped zoo (README,
# "The reliable protocol", from results/evidence.csv via scripts/choose_stages.py): best-iterate PGD through a
# sharp arctan surrogate breaks most; SA-PGD through sharp triangle and arctan surrogates, best-iterate PGD through
# ASSG and the rate gradient, and SA-PGD through the training surrogate add what the first one missed; Square
# (black box) last is the gradient-masking check.
RELIABLE: list[Stage] = [
    Stage(_e8("pgd-best", steps=50, step_size=2 / 255), "arctan:a=4"),
    Stage(_e8("sa-pgd", steps=100), "triangle:w=0.5"),
    Stage(_e8("sa-pgd", steps=100), "arctan:a=4"),
    Stage(_e8("pgd-best", steps=50, step_size=2 / 255), "assg:A=0.425"),
    Stage(_e8("pgd-best", steps=50, step_size=2 / 255), "rate"),
    Stage(_e8("sa-pgd", steps=100), "bptt"),
    Stage(_e8("square", queries=1000), "none", white_box=False),
]
CASCADES: dict[str, list[Stage]] = {SUITE: RELIABLE}


@dataclass(frozen=True)
class _Label:
    """What a results row needs of an attack (name, budget, parameters): a cascade stage's or the whole's."""

    name: str
    eps: float
    eps_str: str
    extra: Mapping = field(default_factory=dict)

    def params_json(self) -> str:
        return json.dumps(dict(self.extra), sort_keys=True)


def cascade(name: str) -> list[Stage]:
    if name not in CASCADES:
        raise BadSpec(f"unknown cascade {name!r}; choose from: {', '.join(CASCADES)}")
    return list(CASCADES[name])


def retarget(stages: Sequence[Stage], eps: float, eps_str: str) -> list[Stage]:
    """The same stages at another budget (step sizes given in absolute units scale with it)."""
    out = []
    for s in stages:
        step = None if s.spec.step_size is None else s.spec.step_size * eps / s.spec.eps
        out.append(replace(s, spec=replace(s.spec, eps=eps, eps_str=eps_str, step_size=step)))
    return out


def stage_seed(seed: int, model_sha: str, k: int, restart: int) -> int:
    """A stage's seed from the run's seed, the model and the stage (never from the batch or the process)."""
    h = hashlib.sha256(f"{seed}:{model_sha}:{SUITE}:{VERSION}:{k}:{restart}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def _cells(t: Target, d: Data, stages: Sequence[Stage], seed: int) -> list[Cell]:
    eps, eps_str = stages[0].spec.eps, stages[0].spec.eps_str
    cells = [Cell(t.id, t.sha256, d.name, len(d.x), _Label(SUITE, eps, eps_str, s.params(k)), s.grad, seed)
             for k, s in enumerate(stages, 1)]
    whole = {"suite": SUITE, "version": VERSION, "stage": "all", "stages": len(stages),
             **({"min_batches": mb} if (mb := stages[0].spec.min_batches) > 1 else {})}
    return cells + [Cell(t.id, t.sha256, d.name, len(d.x), _Label(SUITE, eps, eps_str, whole), "worst", seed)]


def _stored_mask(row: dict, n: int) -> torch.Tensor:
    from ..results.stats import decode_mask

    return torch.from_numpy(decode_mask(row["robust_mask"], n, int(row["robust_count"])).copy())


def run_reliable(models: Sequence[Target], data: Data | Mapping[str, Data], store: ResultsStore | None = None,
                 stages: Sequence[Stage] | None = None, seed: int = 0, batch_size: int | None = None,
                 device: str | torch.device = "auto", progress: Callable[[dict], None] | None = None,
                 force: bool = False, part: Part = WHOLE, min_batches: int = 1) -> Evaluation:
    """Run the cascade on every model; store each stage as it finishes; resume from the first missing stage.

    ``part``: a torchrun rank; every stage re-splits the still-robust images over the ranks (rank 0 writes).
    ``min_batches``: cut every stage's still-robust images into at least this many global batches, so that many
    ranks share even the last stages (recorded in the rows' params when > 1; the numbers depend on it, not on K).

    ``progress`` gets ``{"kind": "start", "total"}``, then per stage ``{"kind": "stage", ...}`` and one
    ``{"kind": "batch", "done", "todo"}`` per restart.
    """
    stages = list(stages if stages is not None else RELIABLE)
    if not stages:
        raise BadSpec("a cascade needs at least one stage")
    if min_batches != 1:
        stages = [replace(s, spec=replace(s.spec, min_batches=min_batches)) for s in stages]
    dev = resolve_device(str(device))
    data = {t.dataset: data for t in models} if isinstance(data, Data) else dict(data)
    on_dev = {k: Data(d.name, d.x.to(dev), d.y.to(dev)) for k, d in data.items()}
    for t in models:
        check_fits(t, on_dev[t.dataset])
    stored = share({} if (store is None or force or not part.writer) else
                   {row_key(r): r for r in store.read().to_dict("records")}, part)
    store = store if part.writer else None
    emit = progress or (lambda ev: None)
    emit({"kind": "start", "total": len(models) * len(stages)})
    new_rows, findings, groups = [], [], []
    for t in models:
        cells = _cells(t, on_dev[t.dataset], stages, seed)
        groups.append(cells)
        rows, found = _run_model(t, on_dev[t.dataset], stages, cells, stored, store, seed, batch_size, dev, emit,
                                 force, part)
        new_rows += rows
        findings += found
    done = {row_key(r) for r in new_rows}
    records = collect_records([c for cells in groups for c in cells], new_rows, store)
    return Evaluation(records, ran=len(new_rows), skipped=sum(len(c) for c in groups) - len(new_rows),
                      findings=findings, new=done)


def _run_model(t: Target, d: Data, stages: Sequence[Stage], cells: list[Cell], stored: dict,
               store: ResultsStore | None, seed: int, batch_size: int | None, dev: torch.device, emit,
               force: bool, part: Part = WHOLE) -> tuple[list[dict], list[Finding]]:
    model = t.model.to(dev).eval()
    bs = batch_size or agree_min(auto_batch_size(model, d.x, dev), part)
    clean = _clean_correct(model, d.x, d.y, bs, part)
    robust, rows, history, secs_total, bad = clean.clone().cpu(), [], [], 0.0, []
    for k, (stage, cell) in enumerate(zip(stages, cells, strict=False), 1):
        old = stored.get(cell.key)
        if old is not None and old.get("robust_mask"):
            robust = _stored_mask(old, len(d.x))
            history.append((stage, int(robust.sum()), float(old["seconds"]), None))
            secs_total += float(old["seconds"])
            emit({"kind": "stage", "model": t.id, "stage": k, "of": len(stages), "attack": stage.spec.name,
                  "grad": stage.grad, "robust_acc": float(robust.float().mean()), "resumed": True})
            continue
        t0 = time.perf_counter()
        last_restart, invalid = 0, 0
        for r in range(stage.restarts):
            idx = robust.nonzero().flatten()
            emit({"kind": "batch", "model": t.id, "stage": k, "restart": r, "todo": len(idx)})
            if len(idx) == 0:
                break
            out = attack_cell(model, stage.spec, stage.grad, d.x[idx.to(dev)], d.y[idx.to(dev)],
                              stage_seed(seed, t.sha256, k, r), bs, dev, torch.ones(len(idx), dtype=torch.bool),
                              part=part)
            ok, invalid = out.correct, invalid + out.invalid
            last_restart = int((~ok).sum())
            robust[idx[~ok]] = False
        secs = time.perf_counter() - t0
        secs_total += secs
        history.append((stage, int(robust.sum()), secs, last_restart if stage.restarts > 1 else None))
        if invalid:
            bad.append(invalid_finding(cell, invalid))
        rows += keep_rows([make_row(cell, robust, clean.cpu(), secs, dev, row_flags([], cell.grad, invalid))], store,
                      set(stored), force)
        emit({"kind": "stage", "model": t.id, "stage": k, "of": len(stages), "attack": stage.spec.name,
              "grad": stage.grad, "robust_acc": float(robust.float().mean()), "resumed": False})
    found = bad + findings(t.id, history, int(clean.sum()), len(d.x))
    whole = cells[-1]
    if force or whole.key not in stored:
        flags = ";".join(f.name for f in found)
        rows += keep_rows([make_row(whole, robust, clean.cpu(), secs_total, dev, flags)], store, set(stored), force)
    return rows, found


def findings(model_id: str, history: Sequence[tuple], clean: int, n: int) -> list[Finding]:
    """``not-converged`` and ``gradient-masking`` from a cascade's history ``(stage, robust after, secs,
    broken by its last restart or None)``."""
    out: list[Finding] = []
    counts = [clean] + [h[1] for h in history]
    white = [i for i, h in enumerate(history) if h[0].white_box]
    if white:
        i = white[-1]
        drop = (counts[i] - counts[i + 1]) / max(n, 1)
        if drop > CONVERGED_PT:
            out.append(Finding("not-converged", f"{model_id}: the last white-box stage ({_name(history[i][0])}) still "
                               f"lowered robust accuracy by {100 * drop:.1f} pt", model=model_id))
    for stage, _, _, last in history:
        if last is not None and last / max(n, 1) > CONVERGED_PT:
            out.append(Finding("not-converged", f"{model_id}: the last restart of {_name(stage)} still broke "
                               f"{last} samples ({100 * last / n:.1f} pt)", model=model_id))
    for i, (stage, *_rest) in enumerate(history):
        if not stage.white_box and counts[i + 1] < counts[i]:
            out.append(Finding("gradient-masking", f"{model_id}: {_name(stage)} (black box) broke "
                               f"{counts[i] - counts[i + 1]} samples that every white-box stage missed",
                               model=model_id))
    return out


def _name(stage: Stage) -> str:
    steps = f"-{stage.spec.steps}" if stage.spec.steps else ""
    return f"{stage.spec.name}{steps} ({stage.grad})"
