"""Threat models by norm: distances, projections and steps for L-inf, L2 and L1 budgets.

A budget ``eps`` bounds ``||x_adv - x||_p`` per sample, with ``x_adv`` in ``[0, 1]``. Conventions (stated in the
README): L-inf 8/255 on Fashion-MNIST and CIFAR-10; L2 1.0-2.0 on MNIST-like data and 0.5 on CIFAR-10 (RobustBench's
L2 leaderboard, AutoAttack's paper); L1 12 on CIFAR-10 (AutoAttack's L1 evaluation). robench's defaults are the
Fashion-MNIST ones (:data:`DEFAULT_EPS`).

Projection onto the L2 ball rescales the perturbation, ``delta * min(1, eps / ||delta||_2)``; clipping to
``[0, 1]`` afterwards only moves coordinates towards ``x`` and never leaves the ball. :class:`FGM` is the one-step
L2 attack: ``x + eps * g / ||g||_2`` clipped to ``[0, 1]``.

Examples:
    >>> dist(x_adv, x, "L2")                         # [B]
    >>> project(x_adv, x, 1.0, "L2")                 # [B, C, H, W], within 1.0 in L2 and in [0, 1]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import BadSpec

__all__ = ["DEFAULT_EPS", "EPS_MAX", "FGM", "NORMS", "check_norm", "dist", "normalise", "project", "slack",
           "sphere_start",
           "uniform_start"]

NORMS = ("Linf", "L2", "L1")
DEFAULT_EPS = {"Linf": "8/255", "L2": "1.0", "L1": "10"}  # Fashion-MNIST conventions (see the module docstring)
EPS_MAX = {"Linf": 1.0, "L2": 1000.0, "L1": 1e6}  # a budget above these is a typo, not a threat model
TINY = 1e-12


def slack(eps: float, norm: str) -> float:
    """Float rounding allowed beyond the ball: 1e-6 (L-inf, L2: ``||delta|| <= eps + 1e-6``); for L1, whose
    distance sums every pixel's rounding, also 1e-6 of eps (the official L1 projection lands within it)."""
    return 1e-6 + (1e-6 * eps if norm == "L1" else 0.0)


def check_norm(norm: object, what: str = "--norm") -> str:
    """``norm`` as one of :data:`NORMS` (case-insensitive: ``linf``, ``l2``, ``l1``); else one-line BadSpec."""
    if isinstance(norm, str):
        for n in NORMS:
            if norm.strip().lower() == n.lower():
                return n
    raise BadSpec(f"{what} {norm!r}; choose from: {', '.join(NORMS)}")


def _view(t: Tensor, like: Tensor) -> Tensor:
    return t.view(-1, *[1] * (like.dim() - 1))


def dist(x_adv: Tensor, x: Tensor, norm: str) -> Tensor:
    """Per-sample distance ``[B]`` (float64) between ``x_adv`` and ``x`` (``[B, ...]`` each) in ``norm``."""
    d = (x_adv.double() - x.double()).flatten(1)  # float64: no rounding of sums over many pixels
    if d.shape[1] == 0:
        return torch.zeros(len(d), dtype=d.dtype, device=d.device)
    if norm == "Linf":
        return d.abs().amax(1)
    if norm == "L2":
        return d.square().sum(1).sqrt()
    return d.abs().sum(1)


def project(x_adv: Tensor, x: Tensor, eps: float, norm: str = "Linf") -> Tensor:
    """``x_adv`` ``[B, C, H, W]`` projected onto the ``norm`` ball of radius ``eps`` around ``x``, then onto [0, 1].

    L-inf clips every coordinate (torchattacks' arithmetic); L2 rescales the perturbation to norm at most ``eps``.
    """
    delta = x_adv - x
    if norm == "Linf":
        return (x + delta.clamp(-eps, eps)).clamp_(0, 1)
    if norm == "L2":
        n = dist(x_adv, x, "L2")
        scale = torch.where(n > eps, eps / (n + TINY), torch.ones_like(n)).to(delta.dtype)
        return (x + delta * _view(scale, delta)).clamp_(0, 1)
    raise BadSpec(f"projection onto the {norm} ball is not implemented; norms: Linf, L2")


def normalise(g: Tensor, norm: str) -> Tensor:
    """The steepest-ascent direction of unit ``norm`` for gradient ``g`` ``[B, ...]``: ``sign(g)`` for L-inf,
    ``g / ||g||_2`` for L2 (zero where the gradient is zero)."""
    if norm == "Linf":
        return g.sign()
    if norm == "L2":
        n = g.flatten(1).square().sum(1).sqrt()  # [B]
        return g / _view(n.clamp_min(torch.finfo(g.dtype).tiny), g)
    raise BadSpec(f"a {norm} step is not implemented; norms: Linf, L2")


def sphere_start(x: Tensor, eps: float, norm: str) -> Tensor:
    """APGD's random start: ``clip(x + eps * t / ||t||, 0, 1)`` on the ball's surface, with ``t ~ U[-1, 1]`` per
    pixel for L-inf and ``t ~ N(0, 1)`` for L2 (as the official code). Drawn from torch's generator."""
    t = 2 * torch.rand_like(x) - 1 if norm == "Linf" else torch.randn_like(x)
    n = dist(t, torch.zeros_like(t), norm).clamp_min(TINY).to(t.dtype)
    return (x + eps * t / _view(n, t)).clamp_(0, 1)


def uniform_start(x: Tensor, eps: float, norm: str) -> Tensor:
    """torchattacks' random starts: ``U(-eps, eps)`` per pixel (PGD) or, for L2, a Gaussian direction scaled to a
    radius ``r ~ U(0, 1)`` times eps (PGDL2); clipped to [0, 1]."""
    if norm == "Linf":
        return (x + torch.empty_like(x).uniform_(-eps, eps)).clamp_(0, 1)
    delta = torch.empty_like(x).normal_()
    n = dist(delta, torch.zeros_like(delta), "L2").clamp_min(1e-10).to(delta.dtype)
    r = torch.zeros(len(x), dtype=x.dtype, device=x.device).uniform_(0, 1)
    return (x + delta * _view(r / n * eps, x)).clamp_(0, 1)


class FGM:
    """Fast gradient method in L2: ``x_adv = clip_[0,1](x + eps * g / ||g||_2)``, ``g`` the input gradient of the
    cross-entropy (one step; the L2 counterpart of FGSM).

    Shape: ``x`` ``[B, C, H, W]`` in ``[0, 1]``, ``y`` ``[B]``; returns the same shape, within eps in L2.
    """

    def __init__(self, model: nn.Module, eps: float) -> None:
        self.model, self.eps = model, eps

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        xa = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(self.model(xa), y, reduction="sum")
            (g,) = torch.autograd.grad(loss, xa)
        return project(x.detach() + self.eps * normalise(g, "L2"), x.detach(), self.eps, "L2").detach()

