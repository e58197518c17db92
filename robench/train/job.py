"""A whole ``robench train`` run into the zoo: options -> :class:`TrainJob` -> data, model, training, entry.

The only part of training that imports the zoo (the loop and the recipes never do).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..data import DATASETS
from ..data import load as load_data
from ..dist import device_for, session
from ..eps import parse_one
from ..errors import BadSpec
from ..runtime import resolve_device, seed_everything
from ..snn.models import ModelConfig, build_model
from ..zoo import Card, check_new, check_writable
from ..zoo import save as save_entry
from .config import RAT_BETA, RAT_BETA_DEFAULT, RECIPE_SHORT, TrainConfig
from .loop import STATE_FILE, Progress, check_run_state, train


@dataclass
class TrainJob:
    """A whole ``robench train`` run: data, model, recipe, and where the entry and run state go."""

    dataset: str
    model: ModelConfig
    train: TrainConfig
    data_dir: str | None = None
    entry_id: str | None = None
    device: str = "auto"
    command: str = ""
    download: bool = False


def default_id(dataset_short: str, cfg: ModelConfig, recipe: str, alpha: float) -> str:
    """``<dataset>-<arch>-<neuron>-<recipe>``: ``stable`` = DLIF + MPPD, ``dlif`` = DLIF without it,
    ``-mppd`` marks LIF with the regulariser, ``-poisson`` Poisson input coding."""
    if cfg.neuron == "stable":
        neuron = "stable" if alpha > 0 or recipe == "clean" else "dlif"
    else:
        neuron = "lif"
    mppd = "-mppd" if alpha > 0 and cfg.neuron == "lif" else ""
    coding = "-poisson" if cfg.encoding == "poisson" else ""
    return f"{dataset_short}-{cfg.arch}-{neuron}-{RECIPE_SHORT[recipe]}{mppd}{coding}"


def run_job(
    job: TrainJob,
    zoo_dir: Path,
    runs_dir: Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Card | None:
    """Load data, build, train (resumable state in ``runs_dir/<id>``), measure, and save into the zoo.

    Under ``torchrun`` every rank trains its share (DistributedDataParallel); rank 0 alone measures, writes the
    checkpoints and the entry, and returns its card (the other ranks return None). The card's recipe records
    ``world_size``; its metrics the global batch ``world_size * batch_size``.
    """
    info = DATASETS.get(job.dataset)
    entry_id = job.entry_id or default_id(info.short, job.model, job.train.recipe, job.train.alpha)
    check_new(zoo_dir, entry_id, overwrite)  # before training, not after it
    check_run_state(runs_dir / entry_id / STATE_FILE, resume, overwrite)
    device = device_for(resolve_device(job.device))
    if job.train.sync_bn and device.type != "cuda":
        raise BadSpec("--sync-bn needs CUDA devices (torch's SyncBatchNorm synchronises GPU tensors only)")
    train_set = load_data(job.dataset, "train", job.data_dir, limit=job.train.limit, download=job.download)
    test_set = load_data(job.dataset, "test", job.data_dir)
    check_writable(zoo_dir)  # before training, not after it
    with session(device) as part:
        cfg = replace(job.train, world_size=part.count)
        seed_everything(cfg.seed)
        model = build_model(job.model)
        result = train(model, cfg, train_set, test_set if part.writer else None, device, runs_dir / entry_id,
                       resume, progress if part.writer else None, part, overwrite=overwrite)
        if not part.writer:
            return None
        card = Card.new(entry_id, job.model, job.dataset, recipe=cfg.to_dict(), device=device.type,
                        command=job.command,
                        metrics={"clean_acc": result.clean_acc, "n_test": result.n_test,
                                 "train_seconds": round(result.seconds, 1), "history": result.history,
                                 "world_size": part.count, "global_batch": part.count * cfg.batch_size})
        return save_entry(model, card, zoo_dir, overwrite=overwrite)


JOB_OPTIONS = {
    "dataset", "data_dir", "arch", "neuron", "T", "width", "fc", "tau", "v_th", "recipe", "alpha", "kappa",
    "sigma", "eps", "pgd_steps", "epochs", "lr", "batch_size", "weight_decay", "augment", "seed", "limit",
    "ckpt_every", "id", "device", "download", "rat_beta", "sync_bn", "encoding",
}


def job_from_options(opts: dict, command: str = "") -> TrainJob:
    """The one path from `robench train` options (CLI flags or a zoo recipe) to a checked TrainJob."""
    unknown = set(opts) - JOB_OPTIONS
    if unknown:
        raise BadSpec(f"unknown training options {sorted(unknown)}; accepted: {sorted(JOB_OPTIONS)}")
    o = dict(opts)
    recipe = {"gn": "gaussian", "at": "fgsm-at"}.get(o.get("recipe", "clean"), o.get("recipe", "clean"))
    info = DATASETS.get(o.get("dataset", "fashion-mnist"))
    model_keys = ("arch", "neuron", "T", "width", "fc", "tau", "v_th", "encoding")
    mcfg = ModelConfig(**{k: o[k] for k in model_keys if o.get(k) is not None}, **info.model_kwargs())
    tkeys = ("epochs", "lr", "batch_size", "seed", "alpha", "kappa", "pgd_steps", "limit", "weight_decay",
             "ckpt_every", "rat_beta", "sync_bn")
    if recipe == "rat" and o.get("rat_beta") is None:
        o["rat_beta"] = RAT_BETA.get(mcfg.arch, RAT_BETA_DEFAULT)
    tcfg = TrainConfig(
        recipe=recipe,
        sigma=parse_one(o.get("sigma", "8/255"), "--sigma"),
        eps=parse_one(o.get("eps", "4/255"), "--eps"),
        augment=info.channels == 3 if o.get("augment") is None else bool(o["augment"]),
        **{k: o[k] for k in tkeys if o.get(k) is not None},
    )
    data_dir = str(o["data_dir"]) if o.get("data_dir") else None
    return TrainJob(info.name, mcfg, tcfg, data_dir, o.get("id"), str(o.get("device", "auto")), command,
                    bool(o.get("download", False)))
