"""SA-PGD (docs/evaluation.md §3): APGD's start and step schedule with an Adam-like step on a normalised gradient.

Written by hand: no attack library ships it. Every iterate is checked and a misclassified one is kept
(:class:`~robench.attacks.iterate.BestIterate`); broken samples stop being updated.

Examples:
    >>> attack = SAPGD(model, eps=8 / 255, steps=100)
    >>> x_adv = attack(x, y)  # x: [B, C, H, W] in [0, 1], y: [B]; x_adv: same shape, in [0, 1]
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .iterate import BestIterate, input_grad, run_restarts
from .norms import normalise, project, sphere_start

__all__ = ["SAPGD", "checkpoints", "surface_start"]

BETA_M, BETA_V, DIV_EPS = 0.5, 0.8, 1e-12


def checkpoints(steps: int) -> frozenset[int]:
    """APGD's checkpoints as step counts: after ``w_j ~ p_j * steps`` steps (``p_0 = 0``, ``p_1 = 0.22``,
    ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``) the step size halves. Computed with APGD's own integer
    arithmetic (first gap ``int(0.22 n)``, shrinking by ``int(0.03 n)`` down to ``int(0.06 n)``, each >= 1): exact
    for ``steps = 100`` (22, 41, 57, 70, 80, 87, 93, 99); short runs halve more often (10 steps: 2, 3, ..., 10)."""
    gap, decr, least = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    out, at = set(), gap
    while at <= steps:
        out.add(at)
        gap = max(gap - decr, least)
        at += gap
    return frozenset(out)


def surface_start(x: Tensor, eps: float, norm: str = "Linf") -> Tensor:
    """APGD's random start ``clip(x + eps * t / ||t||, 0, 1)``, ``t ~ U[-1, 1]`` per pixel (L-inf) or ``N(0, 1)``
    (L2): a point on the eps-ball's surface (before the [0, 1] clip). ``x`` ``[B, C, H, W]``; drawn from torch's
    generator of ``x``'s device."""
    return sphere_start(x, eps, norm)


class SAPGD:
    """SA-PGD: sign-free, Adam-like L-inf attack with APGD's start and schedule (docs/evaluation.md §3).

    Update, per sample and restart, from ``x_0`` = :func:`surface_start`, ``m_0 = v_0 = 0``, ``eta = eps``::

        g     = grad_x sum_batch CE(model(x_k), y)
        g_hat = g / mean|g|                               (mean over the sample's C*H*W pixels)
        m     = 0.5 m + g_hat
        v     = 0.8 v + g_hat^2 / mean(g_hat^2)           (= g^2 / mean(g^2))
        x_k+1 = clip_[0,1](clip_ball(x_k + clip(eta m / (sqrt(v) + 1e-12), -eta, eta)))

    After the steps of :func:`checkpoints` eta halves, unconditionally; there is no restart from the best point.

    **L2** (robench's own design; the method was published for L-inf only): the same moments, start on the L2
    sphere (Gaussian direction, as APGD-L2), ``eta = eps``, and the step is the moment ratio normalised to L2 length
    eta instead of clipped per coordinate, ``r = m / (sqrt(v) + 1e-12)``, ``x_k+1 = clip_[0,1](proj_L2(x_k +
    eta r / ||r||_2))``: Adam's per-coordinate scaling keeps its direction, the budget's geometry sets its length.
    Every iterate ``x_0 .. x_steps`` is checked: a sample misclassified at any of them is broken, keeps that
    iterate and leaves the batch. ``restarts`` re-attack the samples still robust from a new random start.

    Arguments:
        model: ``model(x) -> logits [B, K]``; eps: budget in ``norm``; steps: iterations (default 100);
        restarts: >= 1 (default 1); norm: ``Linf`` (default) or ``L2``.

    Shape: ``x`` ``[B, C, H, W]`` in ``[0, 1]``, ``y`` ``[B]``; returns the same shape, in ``[0, 1]``, within eps.
    Random draws come from torch's generator on ``x``'s device (seeded per cell by ``run_cell``).
    """

    def __init__(self, model: nn.Module, eps: float, steps: int = 100, restarts: int = 1,
                 norm: str = "Linf") -> None:
        self.model, self.eps, self.steps, self.restarts, self.norm = model, eps, steps, restarts, norm

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        x = x.detach()
        return run_restarts(self.model, x, y, self.eps, self.restarts,
                            lambda r, idx, tracker: self._run(x, y, idx, tracker), self.norm)

    def _run(self, x: Tensor, y: Tensor, idx: Tensor, tracker: BestIterate) -> None:
        x0, y0 = x[idx], y[idx]
        xa = surface_start(x0, self.eps, self.norm)
        m, v = torch.zeros_like(x0), torch.zeros_like(x0)
        eta, halve = self.eps, checkpoints(self.steps)
        for k in range(self.steps):
            g, logits = input_grad(self.model, xa, y0)
            alive = ~tracker.update(xa, idx, logits)
            if not alive.all():  # broken samples keep their iterate and leave the batch
                idx, x0, y0, xa, g, m, v = (t[alive] for t in (idx, x0, y0, xa, g, m, v))
                if len(idx) == 0:
                    return
            m, v = self._moments(g, m, v)
            if self.norm == "Linf":
                step = (eta * m / (v.sqrt() + DIV_EPS)).clamp(-eta, eta)
            else:
                step = eta * normalise(m / (v.sqrt() + DIV_EPS), "L2")
            xa = project(xa + step, x0, self.eps, self.norm)
            if k + 1 in halve:
                eta /= 2
        tracker.update(xa, idx)

    @staticmethod
    def _moments(g: Tensor, m: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """The updated first and second moments ``[B, C, H, W]`` from the gradient ``g`` (same shape); a sample
        whose gradient is exactly zero contributes nothing (no division by zero)."""
        def per_sample_mean(t: Tensor) -> Tensor:
            return t.flatten(1).mean(1).view(-1, *[1] * (t.dim() - 1))  # [B, 1, 1, 1]

        scale = per_sample_mean(g.abs())
        g_hat = torch.where(scale > 0, g / scale.clamp_min(torch.finfo(g.dtype).tiny), torch.zeros_like(g))
        sq = g_hat.square()
        sq_mean = per_sample_mean(sq)
        sq = torch.where(sq_mean > 0, sq / sq_mean.clamp_min(torch.finfo(g.dtype).tiny), torch.zeros_like(sq))
        return BETA_M * m + g_hat, BETA_V * v + sq
