"""Sweeps of model x attack x gradient mode x eps -> tidy records, skipping cells already in the store.

A cell returns a per-sample vector ``correct[n]``: a sample counts as robust when it is classified correctly both
clean and under attack (the AutoAttack convention), so only initially correct samples are attacked, and robust
accuracy never exceeds clean accuracy. The worst case over gradient paths (``grad = worst``) is the AND of the
paths' vectors (``grad`` holds a path's canonical key, e.g. ``bptt`` or ``sigmoid:k=4``). A gradient-free attack
(``gaussian``) runs once, recorded with ``grad = none``. The paths are parsed once (:func:`parse_grads`) and carried
as :class:`~robench.snn.pathkeys.GradPath` objects down to the neurons; only rows hold their keys. Every adversarial
example is verified before its sample counts as broken (:mod:`robench.eval.verify`); an invalid one counts as robust
and leaves ``invalid-adv=N`` in the row's ``flags``. Each row carries its ``robust_mask`` (docs/evaluation.md §5),
and ``save_adv`` writes each cell run's verified examples (:mod:`robench.eval.adversarial`).

One cell (one attack x gradient path on a batch, verified) is :mod:`robench.eval.cell`; the data, targets, cells
and the row a cell writes are :mod:`robench.eval.cells`; this module plans the cells, runs each model's, and stores
and collects the rows. Clean predictions are computed once per model and
data, and the data is moved to the device once.

Examples:
    >>> correct = run_cell(model, AttackSpec("pgd", eps=8 / 255), "rate", x, y, seed=0)   # bool [N]
    >>> ev = evaluate([Target("m", sha, model, "fashion-mnist:test")], specs, ["bptt", "rate"], data, store)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from ..attacks import AttackSpec
from ..data import DATASETS, check_images
from ..data import load as load_dataset
from ..dist import WHOLE, Part, agree_min, share
from ..errors import BadSpec, DataNotFound
from ..results.findings import Finding
from ..results.shards import shard_fields
from ..results.store import COLUMNS, ByKey, ResultsStore, row_key, to_frame
from ..results.worstcase import masking
from ..runtime import resolve_device
from ..snn.pathkeys import GradPath
from ..snn.paths import parse_paths, path_applies
from .cell import (  # noqa: F401 (the cell's names, re-exported: a sweep's callers run single cells too)
    CPU_CAP,
    CUDA_CAP,
    CellOutcome,
    activation_bytes,
    attack_cell,
    auto_batch_size,
    clean_correct,
    frozen,
    run_cell,
)
from .cells import (  # noqa: F401 (importable from the sweep, as before)
    Cell,
    Data,
    Evaluation,
    Grad,
    Target,
    invalid_finding,
    make_row,
    row_flags,
)
from .checks import model_findings
from .stochastic import clean_correct_draws, stochastic_specs

CHECK_SAMPLES = 64  # samples used by the model checks


def parse_grads(grad: str | GradPath | Sequence[str | GradPath]) -> list[GradPath]:
    """Gradient paths (``robench.snn.paths.parse_paths`` syntax; ``both`` = ``bptt,rate``) -> the paths, distinct,
    in order: what the cells carry (paths already parsed are only checked, once per path)."""
    return parse_paths(grad, label="--grad")


# ------------------------------------------------------------------------------------------------ sweeps
@dataclass
class _Group:
    """The cells of one (model, attack spec): one per gradient mode, plus ``worst`` over several modes."""

    target: Target
    spec: AttackSpec
    modes: list[Grad]
    cells: list[Cell]
    single: list[Cell] = field(default_factory=list)  # stochastic: the same cells verified with one draw


def _single(cell: Cell) -> Cell:
    """The row of ``cell`` judged by one fresh draw per verdict (``draws = 1``)."""
    return replace(cell, spec=replace(cell.spec, draws=1))


def plan(models: Sequence[Target], specs: Sequence[AttackSpec] | Mapping[int, Sequence[AttackSpec]],
         grads: Sequence[GradPath], data: Mapping[str, Data], seed: int) -> list[_Group]:
    """The cell groups of ``models x specs x grads``; ``specs`` may map a target's ``id()`` to its own list."""
    groups = []
    for t in models:
        d = data[t.dataset]
        for spec in specs[id(t)] if isinstance(specs, Mapping) else specs:
            modes = ["none"] if spec.gradient_free else list(grads)
            names = modes + (["worst"] if len(modes) > 1 else [])
            cells = [Cell(t.id, t.sha256, d.name, len(d.x), spec, g, seed, t.config) for g in names]
            single = [_single(c) for c in cells] if getattr(spec, "eot", None) and spec.draws > 1 else []
            groups.append(_Group(t, spec, modes, cells, single))
    return groups


def evaluate(models: Sequence[Target], specs: Sequence[AttackSpec], grads: str | Sequence[str | GradPath],
             data: Data | Mapping[str, Data], store: ResultsStore | None = None,
             progress: Callable[[dict], None] | None = None, force: bool = False, seed: int = 0,
             batch_size: int | None = None, device: str | torch.device = "auto",
             check_models: bool = True, save_adv: str | Path | None = None, part: Part = WHOLE,
             eot: int | None = None, draws: int | None = None, sampler: str | None = None) -> Evaluation:
    """Run every cell of ``models x specs x grads`` not yet in ``store`` (all of them with ``force``, replacing
    the stored rows) and append each (model, attack) group's rows as soon as it finishes.

    A stochastic target (:mod:`robench.eval.stochastic`) is attacked with ``eot`` draws per gradient step and
    judged with ``draws`` fresh draws (defaults 8 and 16; ``sampler``: the gradient estimator through the draws),
    and also gets each cell's single-draw row (``draws = 1``).

    ``data``: one :class:`Data` for every model, or a mapping from each target's ``dataset`` to its data.
    ``progress`` gets ``{"kind": "start", "total", "skipped"}`` and one ``{"kind": "cell", ...}`` per cell run.
    ``save_adv``: a folder that gets each cell run's verified adversarial examples (:mod:`robench.eval.adversarial`);
    one that cannot be written is refused before any work.
    ``part``: this process's part of a torchrun job (rank 0 reads the stored keys and writes rows and examples;
    the others only compute) or a ``--shard`` (``store`` is then its shard file); see :mod:`robench.dist`.
    """
    saver = _adv_saver(save_adv, part)
    grads = parse_grads(grads)
    _check_numbers(batch_size, seed)
    dev = resolve_device(str(device))
    on_dev = _data_on(models, data, dev)
    _check_targets(models, specs, grads, on_dev)
    groups = plan(models, stochastic_specs(models, specs, eot, draws, sampler), grads, on_dev, seed)
    # cells already stored: key -> (robust_mask, seconds); a group whose worst-case row is missing reuses them
    done = share({} if (store is None or force or not part.writer) else _stored_outcomes(store), part)
    store = store if part.writer else None
    todo = [g for g in groups if any(c.key not in done for c in g.cells)]
    total = sum(c.key not in done for g in todo for c in g.cells[: len(g.modes)])
    emit = progress or (lambda ev: None)
    emit({"kind": "start", "total": total, "skipped": sum(len(g.cells) for g in groups if g not in todo)})
    new_rows, findings = [], []
    for target in models:
        mine = [g for g in todo if g.target is target]
        if mine:
            rows, found = _run_target(target, mine, on_dev[target.dataset], dev, batch_size, done,
                                      check_models and part.writer, store, force, emit, saver, part)
            new_rows += rows
            findings += found
    records = collect_records([c for g in groups for c in [*g.cells, *g.single]], new_rows, store)
    if not part.is_shard:  # a shard's masks cover its own images only
        records, masked = flag_masking(records, store)
        findings += masked
    return Evaluation(records, ran=total, skipped=sum(len(g.cells) for g in groups) - len(new_rows),
                      findings=findings, new={row_key(r) for r in new_rows})


def _adv_saver(save_adv: str | Path | None, part: Part) -> Callable[[dict, CellOutcome], object] | None:
    """What writes each cell run's verified examples into folder ``save_adv`` (on the writing rank only), the
    folder checked first; None without one."""
    if save_adv is None:
        return None
    from .adversarial import check_adv_dir, write_adv

    check_adv_dir(save_adv)
    return lambda row, outcome: write_adv(save_adv, row, outcome) if part.writer else None


def _check_numbers(batch_size: int | None, seed: int) -> None:
    """Refuse a batch size below 1 or a seed outside 32 bits."""
    if batch_size is not None and batch_size < 1:
        raise BadSpec(f"--batch-size {batch_size}; must be an integer >= 1 or auto")
    if not 0 <= seed < 2**32:
        raise BadSpec(f"--seed {seed}; must be in 0..{2**32 - 1}")


def _data_on(models: Sequence[Target], data: Data | Mapping[str, Data], dev: torch.device) -> dict[str, Data]:
    """Each target's dataset -> its data (one :class:`Data` for every model, or a mapping), checked and moved to
    ``dev`` once."""
    data = {t.dataset: data for t in models} if isinstance(data, Data) else dict(data)
    for d in data.values():
        check_images(d.x)  # NaN, Inf or values outside [0, 1] would make every number meaningless
    return {k: Data(d.name, d.x.to(dev), d.y.to(dev)) for k, d in data.items()}  # moved once


def _check_targets(models: Sequence[Target], specs: Sequence[AttackSpec], grads: Sequence[GradPath],
                   data: Mapping[str, Data]) -> None:
    """Refuse, before any cell runs, data a model cannot take, and (when an attack needs gradients) a gradient path
    that does not apply to it."""
    for t in models:
        check_fits(t, data[t.dataset])
        if any(not s.gradient_free for s in specs):
            _check_paths(t, grads)


def flag_masking(records: pd.DataFrame, store: ResultsStore | None) -> tuple[pd.DataFrame, list[Finding]]:
    """``gradient-masking`` on every gradient-free cell (Square) that broke images every white-box cell of the run
    missed (:func:`robench.results.worstcase.masking`): added to those rows' flags, in the store too, and returned
    as findings."""
    found = masking(records)
    fixed = []
    for m in found:
        flags = [f for f in str(records.at[m.index, "flags"]).split(";") if f and f != "nan"]
        if "gradient-masking" not in flags:
            records.at[m.index, "flags"] = ";".join([*flags, "gradient-masking"])
            fixed.append(records.loc[m.index].to_dict())
    if store is not None and fixed:
        store.append(fixed, replace=True)  # the same cells, their flags completed
    return records, [Finding(m.name, m.message, model=m.model) for m in found]


def check_fits(t: Target, d: Data) -> None:
    """Refuse, before any cell runs, data the model cannot take: image shape, or labels beyond its classes."""
    model = t.model.to(d.x.device).eval()
    try:
        with torch.inference_mode():
            k = model(d.x[:1]).shape[-1]
    except RuntimeError as e:
        first = (str(e).strip().splitlines() or [""])[0][:150]
        raise BadSpec(f"model {t.id} does not take {d.name} images {tuple(d.x.shape[1:])}: {first}") from None
    if len(d.y) and int(d.y.max()) >= k:
        raise BadSpec(f"model {t.id} has {k} classes, but {d.name} labels go up to {int(d.y.max())}")


def _check_paths(t: Target, grads: Sequence[GradPath]) -> None:
    """Refuse, before any cell runs, a gradient path that does not apply to the model (never run it under that
    path's name with another gradient)."""
    for g in grads:
        why = path_applies(t.model, g)
        if why is not None:
            raise BadSpec(f"--grad {g} on model {t.id}: {why}")


def _run_target(target: Target, groups: list[_Group], d: Data, dev: torch.device, batch_size: int | None,
                done: set, check_models: bool, store: ResultsStore | None, force: bool, emit,
                saver: Callable[[dict, CellOutcome], object] | None = None, part: Part = WHOLE) -> tuple[list, list]:
    model = target.model.to(dev).eval()
    bs = batch_size or agree_min(auto_batch_size(model, d.x, dev), part)  # the batches define the random draws
    cleans: dict = {}  # once per model, data (and number of draws)

    def clean_of(spec: AttackSpec, seed: int) -> Tensor:
        draws = getattr(spec, "draws", None)
        if draws not in cleans:
            cleans[draws] = clean_correct(model, d.x, d.y, bs, part) if draws is None else \
                clean_correct_draws(model, d.x, d.y, bs, draws, seed, part)
        return cleans[draws]

    modes = sorted({m for g in groups for m in g.modes} - {"none"}, key=str)
    found = model_findings(model, target.id, d.x[:CHECK_SAMPLES], d.y[:CHECK_SAMPLES], modes) if check_models else []
    rows, invalid_found = [], []
    for g in groups:
        vectors, singles, invalid = [], [], 0
        clean = clean_of(g.spec, g.cells[0].seed)
        for cell in g.cells[: len(g.modes)]:
            kept = _kept_outcome(done.get(cell.key), len(d.x)) if not force else None
            if kept is not None:  # stored with its mask (an interrupted group): no need to attack again
                vectors.append(kept)
                continue
            t0 = time.perf_counter()
            out = attack_cell(model, g.spec, cell.grad, d.x, d.y, cell.seed, bs, dev, clean, bool(saver), part)
            secs = time.perf_counter() - t0
            vectors.append((out.correct, secs))
            invalid += out.invalid
            invalid_found += [invalid_finding(cell, out.invalid)] if out.invalid else []
            row = {**make_row(cell, out.correct, clean, secs, dev, row_flags(found, cell.grad, out.invalid)),
                   **shard_fields(part, out.correct, clean, bs)}
            if saver is not None:
                saver(row, out)
            rows += keep_rows([row], store, done, force)
            if g.single:  # the same examples, one fresh draw per verdict
                one = clean_of(g.single[0].spec, cell.seed)
                singles.append(out.single & one)
                rows += keep_rows([make_row(_single(cell), singles[-1], one, secs, dev, row["flags"])], store, done,
                                  force)
            emit({"kind": "cell", "model": cell.model, "attack": cell.spec.name, "eps_str": cell.spec.eps_str,
                  "grad": str(cell.grad), "robust_acc": row["robust_acc"]})
        if len(g.cells) > len(g.modes):  # worst case: a sample is robust only if robust in every mode
            worst = torch.stack([v for v, _ in vectors]).all(0)
            secs = sum(s for _, s in vectors)
            row = make_row(g.cells[-1], worst, clean, secs, dev, row_flags(found, "worst", invalid))
            rows += keep_rows([{**row, **shard_fields(part, worst, clean, bs)}], store, done, force)
            if g.single and len(singles) == len(g.modes):
                one = clean_of(g.single[0].spec, g.cells[0].seed)
                rows += keep_rows([make_row(g.single[-1], torch.stack(singles).all(0), one, secs, dev,
                                           row["flags"])], store, done, force)
    return rows, found + invalid_found


def _stored_outcomes(store: ResultsStore) -> dict:
    """Every stored cell's key -> ``(robust_mask, n, robust_count, seconds)`` (mask ``""`` in older files)."""
    return ByKey({row_key(r): (str(r["robust_mask"]), int(r["n"]), int(r["robust_count"]), float(r["seconds"]))
                  for r in store.read().to_dict("records")})


def _kept_outcome(stored: tuple | None, n: int) -> tuple[Tensor, float] | None:
    """A stored cell's per-sample vector and seconds, when it has a mask over these ``n`` images."""
    if stored is None or not stored[0] or stored[1] != n:
        return None
    from ..results.stats import decode_mask

    return torch.from_numpy(decode_mask(stored[0], n, stored[2]).copy()), stored[3]


def keep_rows(rows: list[dict], store: ResultsStore | None, done: set, force: bool) -> list[dict]:
    """Store each finished cell at once (a crash or Ctrl-C loses at most the cell running), skipping stored ones."""
    rows = [r for r in rows if force or row_key(r) not in done]
    if store is not None and rows:
        store.append(rows, replace=force)
    return rows


def collect_records(cells: Sequence[Cell], new_rows: list[dict], store: ResultsStore | None) -> pd.DataFrame:
    """The rows of ``cells``, in their order: the new ones, and the stored ones for skipped cells."""
    by_key = ByKey({row_key(r): r for r in to_frame(new_rows).to_dict("records")} if new_rows else {})
    if store is not None:
        for r in store.read().to_dict("records"):
            by_key.setdefault(row_key(r), r)
    rows = [by_key.get(c.key) for c in cells if c.key in by_key]
    return pd.DataFrame(rows, columns=list(COLUMNS)) if rows else to_frame([])


# ---------------------------------------------------------------------------------------- from the zoo
def load_targets(cards: Sequence, zoo_dir: str | Path, dataset: str | None = None,
                 trust_code: bool = False, encoding: str | None = None) -> list[Target]:
    """Targets for zoo ``cards`` (weights hash-checked); ``dataset`` must be each model's own when given;
    ``trust_code`` lets foreign entries run their code (with ROBENCH_TRUST_CODE=1, see zoo.foreign)."""
    from ..zoo import config_digest, load_weights, model_from

    out = []
    for card in cards:
        if dataset is not None and DATASETS.get(dataset).name != card.dataset:
            raise BadSpec(f"--dataset {dataset}: model {card.id} was trained on {card.dataset}")
        model = model_from(card, load_weights(zoo_dir, card), zoo_dir, trust_code, encoding)
        out.append(Target(card.id, card.sha256, model, card.dataset, config_digest(card)))
    return out


def load_data(dataset: str, data_dir: str | Path | None, n: int, split: str = "test") -> tuple[Data, str | None]:
    """The first ``n`` images of ``dataset``'s ``split`` (``test`` or the shipped ``subset``); for ``test``,
    Fashion-MNIST falls back to the shipped subset when the full data is not found and no ``data_dir`` was given.
    Returns the data and a note on any fallback."""
    if n < 1:
        raise BadSpec(f"--n {n}; must be an integer >= 1")
    if split not in ("test", "subset"):
        raise BadSpec(f"--split {split!r}; choose from: test, subset")
    note = None
    try:
        x, y = load_dataset(dataset, split, data_dir, limit=n)
        name = f"{dataset}:{split}"
        if split == "subset":
            return Data(name, x, y), None if len(x) >= n else f"{name} holds {len(x)} images: using {len(x)}"
    except DataNotFound as e:
        if data_dir is not None or dataset != "fashion-mnist":
            raise
        x, y = load_dataset(dataset, "subset", limit=n)
        name = f"{dataset}:subset"
        note = f"{e}; using the shipped {dataset} test subset ({len(x)} images) instead"
    if len(x) < n:
        note = (note + "; " if note else "") + f"{name} holds {len(x)} images, fewer than --n {n}: using {len(x)}"
    return Data(name, x, y), note
