"""Training recipes (PAPER.md §3), the MPPD regulariser (PAPER.md §2) and a plain, resumable training loop.

Loss with a perturbed input ``x'``: ``kappa * CE(f(x), y) + (1 - kappa) * CE(f(x'), y) + alpha * V`` where ``V``
is the mean square of the simplified membrane-potential perturbation at the last spiking layer. The ``clean``
recipe is plain CE.

Resuming is exact: each epoch's data order and noise come from generators seeded by ``(seed, epoch)``, and a
checkpoint stores the step within the epoch and the RNG state, so an interrupted run that is resumed ends with
the same weights as one that never stopped (same device).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import DATASETS
from ..data import load as load_data
from ..dist import WHOLE, Part, all_sum, device_for, gather_objects, rank_seed, session
from ..eps import parse_one
from ..errors import BadSpec, IntegrityError, Interrupted
from ..io import replacing
from ..registry import Registry
from ..runtime import resolve_device, seed_everything
from ..snn.models import SNN, ModelConfig, accuracy, build_model
from ..snn.paths import grad_mode
from ..zoo import Card, check_new, check_writable
from ..zoo import save as save_entry
from .config import RAT_BETA, RAT_BETA_DEFAULT, RECIPE_SHORT, TrainConfig

Recipe = Callable[[nn.Module, Tensor, Tensor, "TrainConfig"], "Tensor | None"]
RECIPES: Registry[Recipe] = Registry("recipe")
Progress = Callable[[dict], None]


# ---------------------------------------------------------------------------------------------- recipes
@RECIPES.register("clean")
def _clean(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig) -> Tensor | None:
    return None


@RECIPES.register("gaussian")
def _gaussian(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig) -> Tensor | None:
    return x + cfg.sigma * torch.randn_like(x)  # not clipped, as in the reference (PAPER.md §3)


def _eval_grad(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Input gradient of CE in eval mode (BN running stats, BPTT), restoring the training mode after."""
    was = model.training
    model.eval()
    x = x.detach().requires_grad_(True)
    with grad_mode(model, "bptt"):
        (g,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    model.train(was)
    return g


@RECIPES.register("fgsm-at")
def _fgsm_at(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig) -> Tensor | None:
    x0 = (x + 0.001 * torch.randn_like(x)).clamp(0, 1)
    return (x0 + cfg.eps * _eval_grad(model, x0, y).sign()).clamp(0, 1).detach()


@RECIPES.register("pgd-at")
def _pgd_at(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig) -> Tensor | None:
    step = cfg.pgd_step or 2.5 * cfg.eps / cfg.pgd_steps
    xa = (x + torch.empty_like(x).uniform_(-cfg.eps, cfg.eps)).clamp(0, 1)
    for _ in range(cfg.pgd_steps):
        xa = xa + step * _eval_grad(model, xa, y).sign()
        xa = torch.min(torch.max(xa, x - cfg.eps), x + cfg.eps).clamp(0, 1)
    return xa.detach()


@RECIPES.register("rat")
def _rat(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig) -> Tensor | None:
    """The perturbed input of fgsm-at; the loop adds :func:`orthogonality_step` after each update."""
    return _fgsm_at(model, x, y, cfg)


def orthogonal_retraction(w: Tensor, beta: float) -> Tensor:
    """``(1 + beta) W - beta W W^T W`` for ``W`` of shape ``[out, in]``: one step that pulls the rows of ``W``
    toward an orthonormal set (the Parseval-network retraction used by SNN-RAT, PAPER.md §3)."""
    return (1 + beta) * w - beta * (w @ w.t()) @ w


def orthogonality_step(model: nn.Module, beta: float) -> None:
    """Apply :func:`orthogonal_retraction` in place to every conv and linear weight, conv kernels viewed as
    ``[out, in * kh * kw]``; all rows every time, so the step is deterministic (resume stays exact)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = m.weight.reshape(m.weight.shape[0], -1)  # [out, in * kh * kw]
                m.weight.copy_(orthogonal_retraction(w, beta).view_as(m.weight))


# ------------------------------------------------------------------------------------------------- MPPD
def mppd_sequence(delta_current: Tensor, tau: float) -> Tensor:
    """Simplified membrane-potential perturbation ``du[t] = tau * du[t-1] + dI[t]``, ``du[0] = 0``.

    Shape: ``[T, B, ...]`` in and out.
    """
    out, du = [], torch.zeros_like(delta_current[0])
    for t in range(delta_current.shape[0]):
        du = tau * du + delta_current[t]
        out.append(du)
    return torch.stack(out)


def mppd_penalty(clean_current: Tensor, perturbed_current: Tensor, tau: float) -> Tensor:
    """``V = mean_{t, elements} (du[t])^2`` with the clean currents detached (PAPER.md §2)."""
    return mppd_sequence(perturbed_current - clean_current.detach(), tau).pow(2).mean()


def robust_loss(
    model: SNN, x: Tensor, x_pert: Tensor | None, y: Tensor, kappa: float, alpha: float
) -> tuple[Tensor, Tensor, Tensor]:
    """The training loss of PAPER.md §2. Returns (loss, clean logits, MPPD value)."""
    neuron = model.last_neuron()
    neuron.record = alpha > 0
    try:
        logits = model(x)
        if x_pert is None:
            return F.cross_entropy(logits, y), logits, torch.zeros((), device=x.device)
        clean_cur = neuron.recorded
        logits_p = model(x_pert)
        v = mppd_penalty(clean_cur, neuron.recorded, neuron.tau) if alpha > 0 else logits.new_zeros(())
    finally:
        neuron.record, neuron.recorded, neuron.last_membrane = False, None, None
    loss = kappa * F.cross_entropy(logits, y) + (1 - kappa) * F.cross_entropy(logits_p, y) + alpha * v
    return loss, logits, v


# ------------------------------------------------------------------------------------------------- loop
@dataclass
class TrainResult:
    clean_acc: float | None
    n_test: int
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def _augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """Random crop (padding 4) and horizontal flip, per sample; ``[B, C, H, W]``."""
    B, _, H, W = x.shape
    pad = F.pad(x, (4, 4, 4, 4))
    dx, dy = torch.randint(0, 9, (2, B), generator=gen).tolist()
    flip = torch.rand(B, generator=gen) < 0.5
    out = torch.stack([pad[i, :, dy[i] : dy[i] + H, dx[i] : dx[i] + W] for i in range(B)])
    out[flip] = out[flip].flip(-1)
    return out


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def train(
    model: SNN,
    cfg: TrainConfig,
    train_data: tuple[Tensor, Tensor],
    test_data: tuple[Tensor, Tensor] | None = None,
    device: torch.device | str = "cpu",
    run_dir: Path | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    part: Part = WHOLE,
) -> TrainResult:
    """Train ``model`` in place with SGD + cosine (PAPER.md §3); checkpoint into ``run_dir`` if given.

    ``part``: this rank of a torchrun job: the loss runs under DistributedDataParallel, each epoch's order comes
    from a ``DistributedSampler`` (for one process it is the order a single run uses), the recipe's noise and
    augmentation are seeded per rank, and rank 0 alone writes checkpoints (with every rank's RNG state).

    Shape: ``train_data`` = images ``[N, C, H, W]`` in ``[0, 1]`` and labels ``[N]``.
    """
    device = torch.device(device)
    x_all, y_all = train_data
    if cfg.limit:
        x_all, y_all = x_all[: cfg.limit], y_all[: cfg.limit]
    model.to(device)
    net = _loss_module(model, cfg, part, device)
    order_of = _sampler(len(x_all), cfg, part)
    steps_per_epoch = math.ceil(len(order_of(0)) / cfg.batch_size)
    opt = torch.optim.SGD(model.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    recipe = RECIPES.get(cfg.recipe)
    state = {"epoch": 0, "step": 0, "history": [], "seconds": 0.0}
    ckpt = run_dir / "state.pt" if run_dir else None
    if resume and ckpt and ckpt.exists():
        state = _load_state(ckpt, cfg, model, opt, sched, part)
    notify = progress or (lambda e: None)
    notify({"kind": "start", "total": cfg.epochs * steps_per_epoch,
            "done": state["epoch"] * steps_per_epoch + state["step"]})
    t0 = time.perf_counter() - state["seconds"]
    try:
        for epoch in range(state["epoch"], cfg.epochs):
            order = order_of(epoch)
            if state["step"] == 0:
                torch.manual_seed(rank_seed(cfg.seed * 1_000_003 + epoch, part))  # the recipe's noise
                state["stats"] = [0.0, 0, 0]  # loss sum, correct, seen
            model.train()
            for step in range(state["step"], steps_per_epoch):
                idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                x, y = x_all[idx], y_all[idx]
                if cfg.augment:
                    x = _augment(x, torch.Generator().manual_seed(
                        rank_seed(cfg.seed * 7919 + epoch * 100_003 + step, part)))
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                x_pert = recipe(model, x, y, cfg)
                loss, logits, v = net(x, x_pert, y)
                if not torch.isfinite(loss):
                    raise IntegrityError(f"training diverged at epoch {epoch + 1} step {step} (loss {loss})")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if cfg.rat_beta:
                    orthogonality_step(model, cfg.rat_beta)
                sched.step()
                st = state["stats"]
                st[0] += float(loss.detach()) * len(y)
                st[1] += int((logits.argmax(1) == y).sum())
                st[2] += len(y)
                state["step"] = step + 1
                notify({"kind": "step", "epoch": epoch + 1, "loss": st[0] / st[2], "acc": st[1] / st[2],
                        "mppd": float(v.detach())})
                if ckpt and cfg.ckpt_every and state["step"] % cfg.ckpt_every == 0:
                    _save_state(ckpt, cfg, model, opt, sched, state, time.perf_counter() - t0, part)
            st = all_sum(state["stats"], part)  # the epoch over every rank
            state["history"].append({"epoch": epoch + 1, "loss": st[0] / st[2], "train_acc": st[1] / st[2]})
            state["epoch"], state["step"] = epoch + 1, 0
            if ckpt:
                _save_state(ckpt, cfg, model, opt, sched, state, time.perf_counter() - t0, part)
            notify({"kind": "epoch", **state["history"][-1]})
    except KeyboardInterrupt:
        hint = f"; resume with --resume (state in {run_dir})" if ckpt else ""
        raise Interrupted(f"training interrupted at epoch {state['epoch'] + 1}{hint}") from None
    model.eval()
    acc = accuracy(model, *test_data, batch_size=256) if test_data is not None else None
    return TrainResult(acc, len(test_data[1]) if test_data else 0, state["history"],
                       time.perf_counter() - t0)


def _rank_state(state: dict) -> dict:
    return {"stats": list(state.get("stats", [0.0, 0, 0])), "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _save_state(path: Path, cfg, model, opt, sched, state: dict, seconds: float, part: Part = WHOLE) -> None:
    """Atomic: write beside, then rename, so a kill never leaves a half-written checkpoint. Under torchrun every
    rank sends its RNG state and running statistics, and rank 0 writes them all."""
    ranks = gather_objects(_rank_state(state), part)
    if not part.writer:
        return
    blob = {
        "config": cfg.to_dict(), "model": model.state_dict(), "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(), "epoch": state["epoch"], "step": state["step"],
        "history": state["history"], "seconds": seconds, **ranks[0], "ranks": ranks,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        torch.save(blob, tmp)


def _same_config(saved: object, cfg: TrainConfig) -> bool:
    """The saved options equal ``cfg`` once the defaults of fields added since are filled in."""
    try:
        return isinstance(saved, dict) and TrainConfig.from_dict(saved).to_dict() == cfg.to_dict()
    except (BadSpec, TypeError):
        return False


def _load_state(path: Path, cfg: TrainConfig, model, opt, sched, part: Part = WHOLE) -> dict:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file, or a pickle that needs more than tensors
        m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        why = f"refused: it needs {m.group(1)}; nothing in it was run" if m else str(e).strip().split("\n")[0][:200]
        raise IntegrityError(f"cannot resume from {str(path)!r}: {why}") from None
    if not isinstance(blob, dict) or not _same_config(blob.get("config"), cfg):
        raise BadSpec(f"--resume: the run in {str(path.parent)!r} used other options; rerun them or drop --resume")
    model.load_state_dict(blob["model"])
    opt.load_state_dict(blob["optimizer"])
    sched.load_state_dict(blob["scheduler"])
    mine = blob.get("ranks", [blob])[part.index]  # the world size is part of the config compared above
    torch.set_rng_state(mine["rng_cpu"])
    if mine["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(mine["rng_cuda"])
    return {"epoch": blob["epoch"], "step": blob["step"], "stats": mine["stats"],
            "history": blob["history"], "seconds": blob["seconds"]}


class _Loss(nn.Module):
    """:func:`robust_loss` as one module call, so DistributedDataParallel sees one forward per backward (the
    clean and the perturbed pass together)."""

    def __init__(self, model: SNN, kappa: float, alpha: float) -> None:
        super().__init__()
        self.model, self.kappa, self.alpha = model, kappa, alpha

    def forward(self, x: Tensor, x_pert: Tensor | None, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return robust_loss(self.model, x, x_pert, y, self.kappa, self.alpha)


def _loss_module(model: SNN, cfg: TrainConfig, part: Part, device: torch.device) -> nn.Module:
    net = _Loss(model, cfg.kappa, cfg.alpha)
    if not part.collective or part.count == 1:
        return net
    if cfg.sync_bn:
        nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place below the root; same state-dict keys
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)


def _sampler(n: int, cfg: TrainConfig, part: Part) -> Callable[[int], Tensor]:
    """``epoch -> indices`` of this rank: torch's ``DistributedSampler`` seeded so that, for one process, it
    gives the permutation a single run uses (``randperm`` seeded by ``(seed, epoch)``)."""
    if not part.collective or part.count == 1:
        return lambda epoch: torch.randperm(n, generator=_epoch_generator(cfg.seed, epoch))
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=part.count, rank=part.index, shuffle=True,
                                 seed=cfg.seed * 1_000_003)

    def order(epoch: int) -> Tensor:
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler), dtype=torch.long)

    return order


# ------------------------------------------------------------------------------------- train into the zoo
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
                       resume, progress if part.writer else None, part)
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
