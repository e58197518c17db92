"""The ``reliable`` protocol: an AutoAttack-style cascade of attacks x gradient paths, its stage list read from data.

A protocol (:mod:`robench.eval.stagelist`, one versioned TOML file per version under ``eval/protocols/``) lists
stages: an attack with every parameter fixed, a gradient path, a number of cascade-level restarts. The cascade
starts from the clean-correct samples; each run of a stage attacks only the samples still robust, and a sample it
breaks (with a verified adversarial example, :func:`robench.eval.cell.attack_cell`) stays broken. Every run is
stored at once as its own row: ``attack = reliable``, ``grad`` = the path it really used, ``params`` = the
protocol, its version, the run (``stage`` = ``3`` for stage 3, ``"3+1"`` for its next restart) and the attack's
parameters, and the per-sample mask of the samples robust after every run so far. The last row (``grad = worst``,
``params.stage = "all"``) is the cascade's result. A rerun resumes from the first run without a row (Ctrl-C or
SIGKILL keep every finished run, in the adaptive part too: its decisions are replayed from the stored rows).

Version 2 adds, when its file asks for them: the path probe (:mod:`robench.eval.probe`; ``probe:K`` stages),
substitution of paths that do not apply to the model (``params.path_requested``), and the adaptive part: after the
last white-box stage, while the last run broke more than ``threshold`` * n, further restarts of the strongest
white-box stage (at most ``cap``); after the black-box stage, while it breaks more than that, one further run per
``square_queries`` budget. Findings (rows' ``flags``, and returned): ``gradient-masking`` when a black-box run broke
samples every white-box run missed; ``not-converged`` when the cap (or the last query budget) stopped a part that
was still breaking more than the threshold (version 1: when the last white-box stage or restart still lowered
robust accuracy by more than 1 point).

A stochastic model (Poisson coding, a foreign model that declares its sampling) runs every stage, the probe
included, with EOT: K draws averaged per gradient step, clean and adversarial verdicts from M fresh draws the
attack never used, K, M and the sampler in every row's ``params`` (the result row's too). Only the averaged
verdict is stored; a sweep (``robench attack --attack ...``) also stores the single-draw rows.

Examples:
    >>> ev = run_reliable(targets, data, ResultsStore("results/reliable.csv"), seed=0)   # the newest version
    >>> ev = run_reliable(targets, data, store, protocol("reliable-v1"))                 # the first
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..dist import WHOLE, Part, agree_min, share
from ..errors import BadSpec
from ..results.findings import Finding
from ..results.store import ByKey, ResultsStore, row_key
from ..runtime import resolve_device
from ..snn.encoding import is_stochastic
from ..snn.pathkeys import GradPath
from .adversarial import check_adv_dir
from .cell import auto_batch_size
from .cell import clean_correct as _clean_correct
from .probe import probe_paths, rank, resolve
from .runs import SUITE, ModelRuns, Run, protocol_head, stage_params, stage_seed, whole_params
from .stagelist import Protocol, Stage, is_protocol, load, names, retarget
from .stochastic import clean_correct_draws, stochastic_spec, stochastic_specs
from .sweep import Data, Evaluation, Target, check_fits, collect_records, make_row

__all__ = ["CONVERGED_PT", "Protocol", "Stage", "as_protocol", "cascade", "findings", "is_protocol", "names",
           "protocol", "retarget", "run_reliable", "stage_params", "stage_seed", "whole_params"]

CONVERGED_PT = 0.01  # version 1: a last stage or restart that still breaks more than 1 point of n: not converged


def protocol(name: str = SUITE, norm: str | None = None) -> Protocol:
    """A protocol by name (``reliable`` = its newest version for ``norm``, default L-inf; ``reliable-v1``) or
    ``.toml`` file; checked whole. A ``norm`` no list is for, or a version for another norm, is one BadSpec line."""
    return load(name, norm=norm)


def cascade(name: str) -> list[Stage]:
    """The stages of protocol ``name`` (see :func:`protocol`)."""
    return list(protocol(name).stages)


def as_protocol(stages: Protocol | Sequence[Stage] | None) -> Protocol:
    """``stages`` as a :class:`Protocol`: None is the newest ``reliable``; a hand list is version 1 of its norm."""
    if stages is None:
        return protocol()
    if isinstance(stages, Protocol):
        return stages
    stages = tuple(stages)
    if not stages:
        raise BadSpec("a cascade needs at least one stage")
    norms = {getattr(s.spec, "norm", "Linf") for s in stages}
    if len(norms) != 1:
        raise BadSpec(f"a cascade's stages share one norm; these mix {', '.join(sorted(norms))}")
    return Protocol(SUITE, 1, stages, norm=norms.pop())  # a hand-made list: version 1 rows (no probe, no adaptive)


def _run_model(m: ModelRuns) -> list[Finding]:
    p = m.p
    ranking = _ranking(m)
    robust = m.clean.clone()
    white = [i for i, s in enumerate(p.stages) if s.white_box]
    for i, stage in enumerate(p.stages):
        grad, asked = resolve(stage, ranking, m.t.model)
        for r in range(stage.restarts):
            robust = _stage_run(m, i + 1, r, stage, grad, asked, robust)
        if p.adaptive is not None and white and i == white[-1]:
            robust = _more_restarts(m, robust)
    if p.adaptive is not None:
        robust = _escalate(m, robust)
    found = m.bad + (_adaptive_findings(m) if p.adaptive is not None else
                     findings(m.t.id, _history(m), int(m.clean.sum()), m.n))
    whole = m.cell(m.whole_params(), "worst")
    m.keys.append(whole.key)
    if m.force or whole.key not in m.stored:
        secs = m.probe_secs + sum(r.secs for r in m.runs)
        m.write(make_row(whole, robust, m.clean, secs, m.dev, ";".join(dict.fromkeys(f.name for f in found))), robust,
                 True)
    return found


def _stage_run(m: ModelRuns, k: int, r: int, stage: Stage, grad: GradPath | str, asked: GradPath | str | None,
               robust: torch.Tensor) -> torch.Tensor:
    stage = m.staged(stage)
    params = stage_params(m.p, k, stage, r, asked)
    seed = stage_seed(m.seed, m.t.sha256, k, r, m.p.name, m.p.version)
    black = lambda broke: ["gradient-masking"] if broke and not stage.white_box else []  # noqa: E731
    return m.attack(params, stage, grad, seed, robust, robust.nonzero().flatten(), black)


def _probe(m: ModelRuns) -> list[GradPath]:
    """Every applicable probe path on the first ``images`` images (a row each); the ranking."""
    pr = m.p.probe
    first = min(pr.images, m.n)
    todo = m.clean[:first].nonzero().flatten()
    broke = {}
    stage = m.staged(Stage(pr.spec, "probe"))
    for path in probe_paths(m.t.model, pr.paths):
        params = {**protocol_head(m.p), "stage": "probe", "images": first, "attack": pr.spec.name,
                  **stage.spec.params()}
        seed = stage_seed(m.seed, m.t.sha256, "probe", 0, m.p.name, m.p.version)
        after = m.attack(params, stage, path, seed, m.clean, todo, cumulative=False)
        broke[path] = int(m.clean.sum()) - int(after.sum())
    return rank(broke, pr.paths)


def _more_restarts(m: ModelRuns, robust: torch.Tensor) -> torch.Tensor:
    """Further restarts of the strongest white-box stage while the last white-box run broke more than the
    threshold, at most ``cap``."""
    ad, runs = m.p.adaptive, [r for r in m.runs if r.stage.white_box]
    if not runs or runs[-1].broke <= ad.threshold * m.n:
        return robust
    per_stage: dict[str, int] = {}
    for r in runs:
        per_stage[r.label.split("+")[0]] = per_stage.get(r.label.split("+")[0], 0) + r.broke
    k = int(max(per_stage, key=lambda s: (per_stage[s], -int(s))))
    stage = m.p.stages[k - 1]
    grad, asked = resolve(stage, _ranking(m), m.t.model)
    for j in range(ad.cap):
        robust = _stage_run(m, k, stage.restarts + j, stage, grad, asked, robust)
        if m.runs[-1].broke <= ad.threshold * m.n:
            break
    return robust


def _ranking(m: ModelRuns) -> list[GradPath]:
    """The probe's ranking (probed once per model; empty when no stage asks for it)."""
    if m.ranking is None:
        m.ranking = _probe(m) if m.p.probe is not None and any(s.probe_rank for s in m.p.stages) else []
    return m.ranking


def _escalate(m: ModelRuns, robust: torch.Tensor) -> torch.Tensor:
    """One further run of the last black-box stage per ``square_queries`` budget while the last black-box run
    broke more than the threshold."""
    ad = m.p.adaptive
    black = [i for i, s in enumerate(m.p.stages) if not s.white_box]
    if not black or not ad.square_queries:
        return robust
    k = black[-1] + 1
    stage = m.p.stages[k - 1]
    for j, q in enumerate(ad.square_queries):
        if m.runs[-1].stage.white_box or m.runs[-1].broke <= ad.threshold * m.n:
            break
        bigger = replace(stage, spec=replace(stage.spec, queries=q))
        robust = _stage_run(m, k, stage.restarts + j, bigger, "none", None, robust)
    return robust


def _history(m: ModelRuns) -> list[tuple]:
    """Version 1's history: (stage, robust after, secs, broken by its last restart or None) per stage."""
    out, by = [], {}
    for r in m.runs:
        by.setdefault(r.label.split("+")[0], []).append(r)
    for runs in by.values():
        out.append((runs[-1].stage, runs[-1].after, sum(r.secs for r in runs),
                    runs[-1].broke if len(runs) > 1 else None))
    return out


def _adaptive_findings(m: ModelRuns) -> list[Finding]:
    ad, out, mid = m.p.adaptive, [], m.t.id
    extra = [r for r in m.runs if "+" in r.label and int(r.label.split("+")[1]) >= r.stage.restarts]
    for white in (True, False):
        mine = [r for r in extra if r.stage.white_box is white]
        if not mine or mine[-1].broke <= ad.threshold * m.n:
            continue
        full = len(mine) >= (ad.cap if white else len(ad.square_queries))
        if full:
            out.append(Finding("not-converged", f"{mid}: the last of {len(mine)} extra run(s) of {_name(mine[-1])} "
                               f"still broke {mine[-1].broke} samples ({100 * mine[-1].broke / m.n:.1f} pt), "
                               f"more than the threshold; the cap stopped it", model=mid))
    masked = sum(r.broke for r in m.runs if not r.stage.white_box)
    if masked:
        out.append(Finding("gradient-masking", f"{mid}: the black-box stage broke {masked} samples that every "
                           "white-box run missed", model=mid))
    return out


def _name(run: Run) -> str:
    s = run.stage.spec
    budget = f"-{s.steps}" if s.steps else (f"-{s.queries}" if s.queries else "")
    return f"{s.name}{budget} (stage {run.label})"


# ---------------------------------------------------------------------------------------------- the cascade
def run_reliable(models: Sequence[Target], data: Data | Mapping[str, Data], store: ResultsStore | None = None,
                 stages: Protocol | Sequence[Stage] | None = None, seed: int = 0, batch_size: int | None = None,
                 device: str | torch.device = "auto", progress: Callable[[dict], None] | None = None,
                 force: bool = False, part: Part = WHOLE, min_batches: int = 1,
                 save_adv: str | Path | None = None, return_adv: bool = False, eot: int | None = None,
                 draws: int | None = None, sampler: str | None = None) -> Evaluation:
    """Run the cascade on every model; store each run as it finishes; resume from the first missing run.

    ``stages``: a :class:`Protocol` (default: the newest ``reliable``), or a list of :class:`Stage` (version 1
    rows, no probe, no adaptive part). ``part``: a torchrun rank; every run re-splits the still-robust images over
    the ranks (rank 0 writes). ``min_batches``: cut every run's images into at least this many global batches
    (recorded in the rows' params when > 1). ``save_adv``: a folder that gets, per run, the verified adversarial
    examples of every image broken so far (metadata ``stage``: the run that broke each), so ``robench verify-adv``
    can confirm every row, the cascade's result included. ``return_adv``: also return those examples in memory
    (``Evaluation.adv``, per model id); resuming from stored runs needs ``save_adv`` to read theirs back.
    ``eot``, ``draws``, ``sampler``: a stochastic model's K draws per gradient step, M fresh draws per verdict
    (clean and adversarial) and gradient estimator (defaults 8, 16, ``rate``; :mod:`robench.eval.stochastic`);
    every stage of it runs with EOT and is recorded so. Given with no stochastic model: one BadSpec line.

    ``progress`` gets ``{"kind": "start", "total"}``, then per run ``{"kind": "batch", ...}`` and
    ``{"kind": "stage", ...}``.
    """
    p = as_protocol(stages)
    if min_batches != 1:
        p = replace(p, stages=tuple(replace(s, spec=replace(s.spec, min_batches=min_batches)) for s in p.stages))
    dev = resolve_device(str(device))
    if save_adv is not None:
        check_adv_dir(save_adv)
    random = {t.id for t in models if is_stochastic(t.model)}
    stochastic_specs(models, [], eot, draws, sampler)  # checks the values; refuses them with no stochastic model
    data = {t.dataset: data for t in models} if isinstance(data, Data) else dict(data)
    on_dev = {k: Data(d.name, d.x.to(dev), d.y.to(dev)) for k, d in data.items()}
    for t in models:
        check_fits(t, on_dev[t.dataset])
    stored = share({} if (store is None or force or not part.writer) else
                   ByKey({row_key(r): r for r in store.read().to_dict("records")}), part)
    store = store if part.writer else None
    emit = progress or (lambda ev: None)
    emit({"kind": "start", "total": len(models) * len(p.stages)})
    new_rows, found, keys, adv = [], [], [], {}
    for t in models:
        d = on_dev[t.dataset]
        model = t.model.to(dev).eval()
        bs = batch_size or agree_min(auto_batch_size(model, d.x, dev), part)
        opts = (eot, draws, sampler) if t.id in random else None
        m_draws = stochastic_spec(p.stages[0].spec, *opts).draws if opts else None
        clean = (_clean_correct(model, d.x, d.y, bs, part) if opts is None else
                 clean_correct_draws(model, d.x, d.y, bs, m_draws, seed, part)).cpu()
        m = ModelRuns(t, d, p, stored, store, seed, bs, dev, emit, force, part, clean,
                      None if save_adv is None else Path(save_adv), keep_adv=return_adv or save_adv is not None,
                      draws=opts)
        found += _run_model(m)
        if return_adv:
            adv[t.id] = m.examples()
        new_rows += m.rows
        keys += m.keys
    records = collect_records([_Key(k) for k in dict.fromkeys(keys)], new_rows, store)
    return Evaluation(records, ran=len(new_rows), skipped=len(set(keys)) - len(new_rows), findings=found,
                      new={row_key(r) for r in new_rows}, adv=adv)


@dataclass(frozen=True)
class _Key:
    """A row's key where :func:`robench.eval.sweep.collect_records` expects a cell."""

    key: tuple


# ---------------------------------------------------------------------------------------------- findings
def findings(model_id: str, history: Sequence[tuple], clean: int, n: int) -> list[Finding]:
    """Version 1's ``not-converged`` and ``gradient-masking`` from a cascade's history ``(stage, robust after,
    secs, broken by its last restart or None)``."""
    out: list[Finding] = []
    counts = [clean] + [h[1] for h in history]
    white = [i for i, h in enumerate(history) if h[0].white_box]
    if white:
        i = white[-1]
        drop = (counts[i] - counts[i + 1]) / max(n, 1)
        if drop > CONVERGED_PT:
            out.append(Finding("not-converged", f"{model_id}: the last white-box stage ({_v1name(history[i][0])}) "
                               f"still lowered robust accuracy by {100 * drop:.1f} pt", model=model_id))
    for stage, _, _, last in history:
        if last is not None and last / max(n, 1) > CONVERGED_PT:
            out.append(Finding("not-converged", f"{model_id}: the last restart of {_v1name(stage)} still broke "
                               f"{last} samples ({100 * last / n:.1f} pt)", model=model_id))
    for i, (stage, *_rest) in enumerate(history):
        if not stage.white_box and counts[i + 1] < counts[i]:
            out.append(Finding("gradient-masking", f"{model_id}: {_v1name(stage)} (black box) broke "
                               f"{counts[i] - counts[i + 1]} samples that every white-box stage missed",
                               model=model_id))
    return out


def _v1name(stage: Stage) -> str:
    steps = f"-{stage.spec.steps}" if stage.spec.steps else ""
    return f"{stage.spec.name}{steps} ({stage.grad})"
