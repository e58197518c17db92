"""A whole ``robench attack`` run: options -> :func:`prepare_attack` (every check, nothing written) ->
:meth:`AttackJob.run` (a sweep or the reliable cascade, rows stored as they finish) -> :class:`AttackResult`.

The command line is one way to fill :class:`AttackOptions`; Python callers get the same checks and the same rows:

Examples:
    >>> job = prepare_attack(AttackOptions(model=["fmnist-vgg5"], attacks=["pgd"], n=100, out=Path("results")))
    >>> res = job.run()                       # or run_attack(options) in one call
    >>> res.evaluation.records["robust_acc"]  # every requested cell's row, new and already stored
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch

from ..attacks import EPS_MAX, SUITES, AttackSpec, check_norm, specs_from
from ..dist import WHOLE, Part, device_for, env_rank, parse_shard, session
from ..eps import parse_eps, parse_one
from ..errors import BadSpec
from ..io import check_name
from ..results.checks import check_records
from ..results.findings import Finding
from ..results.shards import ShardFile, shard_path
from ..results.store import ResultsStore
from ..runtime import resolve_device
from ..snn.encoding import ENCODINGS, SAMPLERS, check_draws
from ..snn.pathkeys import GradPath
from ..zoo import select
from .adversarial import check_adv_dir
from .cascade import is_protocol, names, protocol, run_reliable
from .stagelist import Protocol
from .stochastic import stochastic_specs
from .sweep import Data, Evaluation, Target, evaluate, load_data, load_targets, parse_grads

Progress = Callable[[dict], None]


@dataclass
class AttackOptions:
    """Every option of ``robench attack``, as given (strings where the command line takes text; ``None``: the
    default of the attack, the suite or the model). See ``robench attack --help`` for each."""

    model: list[str]
    attacks: list[str] | None = None
    suite: str | None = None
    eps: str | None = None
    norm: str = "Linf"
    eot: int | None = None
    draws: int | None = None
    sampler: str | None = None
    encoding: str | None = None
    grad: str | None = None
    n: int = 1000
    batch_size: str = "auto"
    min_batches: int = 1
    seed: int = 0
    steps: int | None = None
    step_size: str | None = None
    restarts: int | None = None
    random_start: bool | None = None
    queries: int | None = None
    aa_version: str | None = None
    dataset: str | None = None
    split: str = "test"
    data_dir: Path | None = None
    out: Path = Path("results")
    name: str = "results"
    force: bool = False
    shard: str | None = None
    zoo: Path = Path("zoo")
    device: str = "auto"
    save_adv: Path | None = None
    trust_code: bool = False


@dataclass
class AttackResult:
    """What a run did: its evaluation, the store it wrote, this process's part (only the ``writer`` reports),
    and every finding (the run's own and the record checks of its rows)."""

    evaluation: Evaluation
    store: ResultsStore | ShardFile
    part: Part
    cascade: bool
    findings: list[Finding] = field(default_factory=list)


@dataclass
class AttackJob:
    """A checked ``robench attack``: the models loaded, the data in memory, the store proven writable."""

    options: AttackOptions
    cascade: Protocol | None
    specs: list[AttackSpec]
    grads: list[GradPath]  # parsed once, carried to the neurons
    batch_size: int | None
    part: Part
    device: torch.device
    store: ResultsStore | ShardFile
    targets: list[Target]
    data: dict[str, Data]

    def run(self, progress: Progress | None = None) -> AttackResult:
        """Run every cell (the cascade's every stage), storing each row as it finishes; reruns skip stored cells.

        ``progress`` gets the sweep's events (:func:`robench.eval.sweep.evaluate`) or the cascade's
        (:func:`robench.eval.cascade.run_reliable`), on the writing process only."""
        o = self.options
        with session(self.device, self.part) as part:
            show = progress if part.writer else None
            if self.cascade is not None:
                ev = _run_cascade(self, part, show)
            else:
                ev = evaluate(self.targets, self.specs, self.grads, self.data, self.store, progress=show,
                              force=o.force, seed=o.seed, batch_size=self.batch_size, device=self.device,
                              save_adv=o.save_adv, part=part, eot=o.eot, draws=o.draws, sampler=o.sampler)
        found = [*ev.findings, *check_records(ev.records)] if part.writer else []
        return AttackResult(ev, self.store, part, self.cascade is not None, found)


def run_attack(options: AttackOptions, progress: Progress | None = None,
               note: Callable[[str], None] | None = None) -> AttackResult:
    """:func:`prepare_attack`, then :meth:`AttackJob.run`."""
    return prepare_attack(options, note).run(progress)


def prepare_attack(o: AttackOptions, note: Callable[[str], None] | None = None) -> AttackJob:
    """Check every option, load the models and the data, and refuse a store that cannot be written, before any
    attack runs; nothing is written. ``note`` gets one line per data fallback (on rank 0)."""
    if o.suite is not None and o.suite not in SUITES and not is_protocol(o.suite):
        raise BadSpec(f"unknown suite {o.suite!r}; choose from: {', '.join([*SUITES, *names()])}")
    o = replace(o, norm=check_norm(o.norm))
    cascade, specs = _check_attacks(o)
    grads = parse_grads(o.grad or "both")
    if o.n < 1:
        raise BadSpec(f"--n {o.n}; must be an integer >= 1")
    if not 0 <= o.seed < 2**32:  # torch seeds overflow past 64 bits; the same range as `train --seed`
        raise BadSpec(f"--seed {o.seed}; must be in 0..{2**32 - 1}")
    bs = batch_size(o.batch_size)
    check_name(o.name)
    part = parse_shard(o.shard)
    if part.is_shard and bs is None:
        raise BadSpec("--shard needs --batch-size N (not auto): the batches define the random draws, and every "
                      "shard, like the single run it reproduces, must cut the same ones")
    if part.is_shard and (cascade is not None or o.save_adv is not None):
        raise BadSpec(f"--shard does not apply to {'--suite ' + str(o.suite) if cascade else '--save-adv'}: its "
                      "stages re-split the still-robust images (or its files name whole cells); use torchrun")
    dev = device_for(resolve_device(o.device))
    cards = list({c.id: c for q in o.model for c in select(q, o.zoo)}.values())
    store = ShardFile(shard_path(o.out, o.name, part.index, part.count)) if part.is_shard else \
        ResultsStore(o.out / f"{o.name}.csv")
    store.check_writable()  # a results file that is not ours is refused before any work
    if o.save_adv is not None:
        check_adv_dir(o.save_adv)
    targets = load_targets(cards, o.zoo, o.dataset, trust_code=o.trust_code, encoding=o.encoding)
    if cascade is not None:  # draws given with no stochastic model: refused here, before any work
        stochastic_specs(targets, [], o.eot, o.draws, o.sampler)
    data = {}
    for ds in dict.fromkeys(t.dataset for t in targets):
        data[ds], said = load_data(ds, o.data_dir, o.n, o.split)
        if said and note is not None and env_rank() == 0:
            note(said)
    return AttackJob(o, cascade, specs, grads, bs, part, dev, store, targets, data)


def _check_attacks(o: AttackOptions) -> tuple[Protocol | None, list[AttackSpec]]:
    """The cascade (None for a list of attacks), the input coding and the attacks' parameters."""
    if o.encoding is not None and o.encoding not in ENCODINGS:
        raise BadSpec(f"--encoding {o.encoding!r}; choose from: {', '.join(ENCODINGS)}")
    cascade = protocol(o.suite, o.norm) if o.suite is not None and o.suite not in SUITES else None  # checked whole
    if cascade is not None:
        _check_cascade_options(str(o.suite), o.attacks, o.steps, o.step_size, o.restarts, o.random_start,
                               o.aa_version, o.queries, o.grad)
    step = parse_one(o.step_size, "--step-size", EPS_MAX[o.norm]) if o.step_size else None
    specs = [] if cascade is not None else specs_from(o.attacks, o.suite, o.eps, o.norm, steps=o.steps,
                                                      restarts=o.restarts, random_start=o.random_start,
                                                      version=o.aa_version, queries=o.queries, step_size=step)
    check_stochastic(o.eot, o.draws, o.sampler)
    if o.min_batches < 1:
        raise BadSpec(f"--min-batches {o.min_batches}; must be an integer >= 1")
    if o.min_batches > 1:
        specs = [replace(s, min_batches=o.min_batches) for s in specs]
    return cascade, specs


def check_stochastic(eot: int | None, draws: int | None, sampler: str | None) -> None:
    """--eot and --draws are integers >= 1, --sampler an estimator (before any work)."""
    for k, what in ((eot, "--eot"), (draws, "--draws")):
        if k is not None:
            check_draws(k, what)
    if sampler is not None and sampler not in SAMPLERS:
        raise BadSpec(f"--sampler {sampler!r}; choose from: {', '.join(SAMPLERS)}")


def batch_size(text: str | int) -> int | None:
    """``auto`` -> None (fitted to the device's memory), else an integer >= 1."""
    text = str(text)
    if text == "auto":
        return None
    if not (text.isascii() and text.isdigit()) or int(text) < 1:  # "²".isdigit() is True, int("²") fails
        raise BadSpec(f"--batch-size {text!r}; accepted: an integer >= 1 or auto")
    return int(text)


def _check_cascade_options(suite: str, *given: object) -> None:
    if any(v is not None and v != [] for v in given):
        raise BadSpec(f"--suite {suite} fixes every attack, path and parameter; drop --attack, --grad, --steps, "
                      "--step-size, --restarts, --random-start, --aa-version and --queries (--eot, --draws and "
                      "--sampler set a stochastic model's draws)")


def _run_cascade(job: AttackJob, part: Part = WHOLE, progress: Progress | None = None) -> Evaluation:
    """Each budget of ``--eps`` (default: the protocol's own 8/255) runs the whole cascade, resumably; a
    stochastic model with EOT (--eot, --draws, --sampler)."""
    o, p = job.options, job.cascade
    assert p is not None
    budgets = parse_eps(o.eps, limit=EPS_MAX[p.norm]) if o.eps is not None else [p.eps]
    evs = [run_reliable(job.targets, job.data, job.store, p.at(v, t), seed=o.seed, batch_size=job.batch_size,
                        device=job.device, progress=progress, force=o.force, part=part, min_batches=o.min_batches,
                        save_adv=o.save_adv, eot=o.eot, draws=o.draws, sampler=o.sampler)
           for v, t in budgets]
    ev = evs[0]
    for other in evs[1:]:
        ev.records = pd.concat([ev.records, other.records], ignore_index=True)
        ev.new |= other.new
        ev.findings += other.findings
        ev.skipped += other.skipped
    return ev
