"""A plain, resumable training loop over the recipes of :mod:`robench.train.recipes`.

Resuming is exact: each epoch's data order and noise come from generators seeded by ``(seed, epoch)``, and a
checkpoint stores the step within the epoch and the RNG state, so an interrupted run that is resumed ends with
the same weights as one that never stopped (same device).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..dist import WHOLE, Part, all_sum, gather_objects, rank_seed
from ..errors import BadSpec, IntegrityError, Interrupted, UsageError
from ..io import replacing
from ..snn.models import SNN, accuracy
from .config import TrainConfig
from .recipes import RECIPES, orthogonality_step, robust_loss

Progress = Callable[[dict], None]


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
    overwrite: bool = False,
) -> TrainResult:
    """Train ``model`` in place with SGD + cosine (docs/method.md §4); checkpoint into ``run_dir`` if given.

    ``resume``: continue from the state saved in ``run_dir`` (refused when there is none). Without it, state saved
    there by an earlier run is refused too (nothing is discarded), unless ``overwrite`` starts the run over.

    ``part``: this rank of a torchrun job: the loss runs under DistributedDataParallel, each epoch's order comes
    from a ``DistributedSampler`` (for one process it is the order a single run uses), the recipe's noise and
    augmentation are seeded per rank, and rank 0 alone writes checkpoints (with every rank's RNG state).

    Shape: ``train_data`` = images ``[N, C, H, W]`` in ``[0, 1]`` and labels ``[N]``.
    """
    ckpt = run_dir / STATE_FILE if run_dir else None
    check_run_state(ckpt, resume, overwrite)
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
    if resume and ckpt:
        state = _load_state(ckpt, cfg, model, opt, sched, part)
    elif ckpt and ckpt.exists() and part.writer:  # --overwrite: the old state must not be resumed later
        ckpt.unlink()
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


STATE_FILE = "state.pt"  # a run folder's resumable state


def check_run_state(ckpt: Path | None, resume: bool, overwrite: bool = False) -> None:
    """``resume`` needs saved state in ``ckpt``, and saved state needs ``resume`` (or ``overwrite``, which starts
    the run over): refused in one line before any work, so an interrupted run is never silently discarded."""
    if ckpt is None:
        if resume:
            raise BadSpec("--resume needs a run folder with saved state (pass run_dir)")
        return
    if resume and not ckpt.is_file():
        raise BadSpec(f"--resume: no saved state in {str(ckpt.parent)!r}, nothing to resume; run the same "
                      "command without --resume to start")
    if not resume and not overwrite and ckpt.exists():
        raise UsageError(f"a run with this id left its saved state in {str(ckpt)!r}: pass --resume to continue "
                         "it, or --overwrite to start over (which discards that state)")


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
