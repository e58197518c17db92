"""Best-iterate tracking (docs/evaluation.md §3), the restart loop shared by robench's own attacks, and ``pgd-best``.

torchattacks' PGD and BIM return their final iterate; on spiking networks sign steps swing across the decision
boundary, so a sample misclassified at some step is often classified correctly again at the last one. An attack
used for a claim therefore keeps, per sample, the first iterate that a fresh inference-mode forward of the model
misclassifies (:class:`BestIterate`), and stops spending work on that sample.

Examples:
    >>> attack = PGDBest(model, eps=8 / 255, steps=50, step_size=2 / 255)
    >>> x_adv = attack(x, y)  # x: [B, C, H, W] in [0, 1], y: [B]; x_adv: same shape, in [0, 1]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import IntegrityError
from .norms import dist, normalise, project, slack, uniform_start

__all__ = ["BestIterate", "PGDBest", "input_grad", "project", "reset_path_state", "restart_seed", "run_restarts"]

TOL = 1e-6  # float rounding allowed on the budget (docs/evaluation.md §4)


class BestIterate:
    """Per-sample record of the first verified misclassified iterate of an attack on ``(x, y)``.

    Arguments:
        model: the attacked model (``model(x) -> logits [B, K]``); eps: the budget in ``norm`` (``Linf``, ``L2``
        or ``L1``).
        x: clean images ``[B, C, H, W]`` in ``[0, 1]``; y: labels ``[B]``.

    ``broken[i]`` is True once sample ``i`` was misclassified (at the start, or at a checked iterate); ``adv[i]``
    is then that misclassified point and never changes again. For a sample still robust ``adv[i]`` is the last
    iterate given. Samples misclassified at the start are broken from the outset, with ``adv[i] = x[i]``.
    """

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str = "Linf") -> None:
        self.model, self.x, self.y, self.eps, self.norm = model, x.detach(), y, eps, norm
        self.adv = self.x.clone()
        self.broken = self._misclassified(self.x, y) if len(x) else torch.zeros(0, dtype=torch.bool, device=x.device)

    def robust_idx(self) -> Tensor:
        """Indices ``[b]`` of the samples not broken yet."""
        return (~self.broken).nonzero().flatten()

    def update(self, x_i: Tensor, idx: Tensor, logits: Tensor | None = None) -> Tensor:
        """Check the iterates ``x_i`` ``[b, C, H, W]`` of samples ``idx`` ``[b]``; return ``broken[idx]`` ``[b]``.

        ``logits`` ``[b, K]``: the model's output at ``x_i`` from the attack's own (gradient) forward, when known.
        The forward is the exact model whatever the gradient path, so only the samples it misclassifies need the
        verifying inference-mode forward; without ``logits`` every sample not yet broken is checked.
        Raises :class:`IntegrityError` when an iterate leaves the eps-ball or ``[0, 1]`` (a bug in the attack).
        """
        x_i = x_i.detach()
        self._check_valid(x_i, idx)
        fresh = ~self.broken[idx]
        cand = fresh if logits is None else fresh & (logits.detach().argmax(1) != self.y[idx])
        c = cand.nonzero().flatten()
        if len(c):
            hit = c[self._misclassified(x_i[c], self.y[idx[c]])]
            self.broken[idx[hit]] = True
            self.adv[idx[hit]] = x_i[hit]
        keep = (~self.broken[idx]).nonzero().flatten()
        self.adv[idx[keep]] = x_i[keep]
        return self.broken[idx].clone()

    def _misclassified(self, x: Tensor, y: Tensor) -> Tensor:
        with torch.inference_mode():
            wrong = self.model(x).argmax(1) != y
        return wrong.clone()  # a normal tensor, usable outside inference mode

    def _check_valid(self, x_i: Tensor, idx: Tensor) -> None:
        if len(idx) == 0:
            return
        d = dist(x_i, self.x[idx], self.norm).max()
        over = d > self.eps + slack(self.eps, self.norm)
        if bool((x_i.min() < 0) | (x_i.max() > 1) | over):  # one device sync per iterate
            raise IntegrityError(f"an attack iterate left the budget: {self.norm} distance {float(d):.6g} (eps "
                                 f"{self.eps:.6g}), range [{float(x_i.min()):.6g}, {float(x_i.max()):.6g}]")


def input_grad(model: nn.Module, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Gradient ``[B, C, H, W]`` of the cross-entropy summed over the batch w.r.t. ``x_adv``, and the logits ``[B, K]``.

    The sum (not the mean) keeps every sample's gradient independent of the batch size: no underflow on large
    batches, and dropping broken samples changes nothing for the others. The model's active gradient path applies.
    """
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x_adv)
    return g.detach(), logits.detach()


def reset_path_state(model: nn.Module) -> None:
    """Reset the per-attack state of the model's gradient path (ASSG statistics); a no-op for stateless paths."""
    from ..snn import paths

    paths.reset_path_state(model)


def restart_seed(base: int, restart: int) -> int:
    """The seed of restart ``restart`` (0, 1, ...) of a cell seeded with ``base``: restart 0 uses ``base`` itself
    (so one restart gives the numbers of a plain run); later ones a value mixed from both, in ``[0, 2**31)``."""
    if restart == 0:
        return base % 2**31
    return int(np.random.SeedSequence([base, restart]).generate_state(1)[0]) % 2**31


def run_restarts(model: nn.Module, x: Tensor, y: Tensor, eps: float, restarts: int,
                 attempt: Callable[[int, Tensor, BestIterate], None], norm: str = "Linf") -> Tensor:
    """Run ``attempt(r, idx, tracker)`` for r = 0 .. restarts - 1 on the samples still robust, then return the
    tracker's adversarial examples ``[B, C, H, W]``. Each attempt reports its iterates to ``tracker.update``; the
    gradient path's state is reset before every restart. Samples misclassified at the start are never attacked."""
    tracker = BestIterate(model, x, y, eps, norm)
    for r in range(restarts):
        idx = tracker.robust_idx()
        if len(idx) == 0:
            break
        reset_path_state(model)
        attempt(r, idx, tracker)
    return tracker.adv


class PGDBest:
    """Best-iterate PGD: torchattacks' PGD update, returning per sample the first misclassified iterate.

    Update (as torchattacks ``PGD``): ``x_0 = clip(x + U(-eps, eps), 0, 1)`` (or ``x`` without random start), then
    ``x_{k+1} = clip_[0,1](clip_ball(x_k + step_size * sign(grad CE(model(x_k), y))))``. In L2 (as torchattacks
    ``PGDL2``): a random start at radius ``U(0, 1) * eps`` in a Gaussian direction, the step
    ``step_size * g / ||g||_2`` and the projection onto the L2 ball. Every iterate
    ``x_0 .. x_steps`` is checked; a sample misclassified at any of them is broken, keeps that iterate, and is no
    longer updated (later steps cost less). ``restarts``: new random starts for the samples still robust.

    Arguments:
        model: ``model(x) -> logits [B, K]``; eps: budget in ``norm``; steps: iterations (default 50);
        step_size: the step's length in ``norm`` (default 2/255); restarts: >= 1; random_start: a start in the
        ball; norm: ``Linf`` (default) or ``L2``.

    Shape: ``x`` ``[B, C, H, W]`` in ``[0, 1]``, ``y`` ``[B]``; returns the same shape, in ``[0, 1]``, within eps.
    """

    def __init__(self, model: nn.Module, eps: float, steps: int = 50, step_size: float = 2 / 255,
                 restarts: int = 1, random_start: bool = True, norm: str = "Linf") -> None:
        self.model, self.eps, self.steps, self.step_size = model, eps, steps, step_size
        self.restarts, self.random_start, self.norm = restarts, random_start, norm

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        x = x.detach()
        return run_restarts(self.model, x, y, self.eps, self.restarts,
                            lambda r, idx, tracker: self._run(x, y, idx, tracker), self.norm)

    def _run(self, x: Tensor, y: Tensor, idx: Tensor, tracker: BestIterate) -> None:
        x0, y0 = x[idx], y[idx]
        xa = x0.clone()
        if self.random_start:  # the draws of torchattacks' PGD (PGDL2 in L2)
            xa = uniform_start(xa, self.eps, self.norm)
        for _ in range(self.steps):
            g, logits = input_grad(self.model, xa, y0)
            alive = ~tracker.update(xa, idx, logits)
            if not alive.all():  # broken samples keep their iterate and leave the batch
                idx, x0, y0, xa, g = idx[alive], x0[alive], y0[alive], xa[alive], g[alive]
                if len(idx) == 0:
                    return
            xa = project(xa + self.step_size * normalise(g, self.norm), x0, self.eps, self.norm)
        tracker.update(xa, idx)
