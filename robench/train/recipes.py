"""Training recipes (docs/method.md §4) and the MPPD regulariser (docs/method.md §3): what the loop adds to each batch.

A recipe gives the perturbed input ``x'`` of a batch (None: clean training). Loss with a perturbed input:
``kappa * CE(f(x), y) + (1 - kappa) * CE(f(x'), y) + alpha * V`` where ``V`` is the mean square of the simplified
membrane-potential perturbation at the last spiking layer (:func:`robust_loss`). The ``clean`` recipe is plain CE;
``rat`` adds :func:`orthogonality_step` after each update. The names (and the options) are
:mod:`robench.train.config`'s.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Registry
from ..snn.models import SNN
from ..snn.paths import grad_mode
from .config import TrainConfig

Recipe = Callable[[nn.Module, Tensor, Tensor, "TrainConfig"], "Tensor | None"]
RECIPES: Registry[Recipe] = Registry("recipe")


# ---------------------------------------------------------------------------------------------- recipes
@RECIPES.register("clean")
def _clean(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig) -> Tensor | None:
    return None


@RECIPES.register("gaussian")
def _gaussian(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig) -> Tensor | None:
    return x + cfg.sigma * torch.randn_like(x)  # not clipped, as in the reference (docs/method.md §4)


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
    toward an orthonormal set (the Parseval-network retraction used by SNN-RAT, docs/method.md §4)."""
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
    """``V = mean_{t, elements} (du[t])^2`` with the clean currents detached (docs/method.md §3)."""
    return mppd_sequence(perturbed_current - clean_current.detach(), tau).pow(2).mean()


def robust_loss(
    model: SNN, x: Tensor, x_pert: Tensor | None, y: Tensor, kappa: float, alpha: float
) -> tuple[Tensor, Tensor, Tensor]:
    """The training loss of docs/method.md §3. Returns (loss, clean logits, MPPD value)."""
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
