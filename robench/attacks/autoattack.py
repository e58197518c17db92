"""The official APGD-CE, APGD-DLR, APGD-T, Square and AutoAttack (pyautoattack) as ``attack(x, y) -> x_adv``.

:class:`AutoAttackAdapter` runs AutoAttack's own cascade (``autoattack``: versions ``standard``, ``rand``,
``custom``). :class:`OfficialAttack` runs one of its attacks alone, with robench's restart loop: each restart
calls the official attack with ``n_restarts = 1`` on the samples still robust, seeded from the cell's seed and
the restart number, after resetting the gradient path's state. The attacks use the model only through
``model(x)``, so whatever gradient path is active on the model is the one they follow.

Examples:
    >>> x_adv = OfficialAttack(model, AttackSpec("apgd-t", eps=8 / 255, restarts=2))(x, y)  # [B, C, H, W]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..errors import BadSpec
from .iterate import BestIterate, restart_seed, run_restarts

if TYPE_CHECKING:
    from . import AttackSpec

__all__ = ["AutoAttackAdapter", "OfficialAttack"]

logging.getLogger("auto-attack").addHandler(logging.NullHandler())  # pyautoattack logs; a library prints nothing


class AutoAttackAdapter:
    """pyautoattack's ``AutoAttack`` as ``attack(x, y) -> x_adv``, on the input's device and seeded.

    ``attacks`` (for version ``custom``): pyautoattack names such as ``["apgd-ce"]``; ``steps`` and
    ``restarts`` set APGD's iterations and restarts. Targeted attacks use ``min(9, K - 1)`` target classes.
    ``seed``: default ``torch.initial_seed()`` (the cell's seed) modulo 2**31.
    """

    MIN_CLASSES = {"apgd-dlr": 3, "apgd-t": 4, "fab-t": 2}  # DLR losses read the 3rd (4th) largest logit

    def __init__(self, model: nn.Module, spec: AttackSpec, attacks: Sequence[str] | None = None,
                 seed: int | None = None) -> None:
        self.model, self.spec, self.seed = model, spec, seed
        self.attacks = list(attacks) if attacks else None
        self.version = "custom" if attacks else spec.version

    def _make(self, device: torch.device, n_classes: int):
        import pyautoattack

        s = self.spec
        seed = torch.initial_seed() % 2**31 if self.seed is None else self.seed
        aa = pyautoattack.AutoAttack(self.model, attacks=self.attacks, device=device, eps=s.eps, norm=s.norm,
                                     seed=seed, version=self.version)
        names = aa.attacks_to_run or []
        for name in names:
            if n_classes < self.MIN_CLASSES.get(name, 2):
                raise BadSpec(f"{s.name}: {name} needs at least {self.MIN_CLASSES[name]} classes; "
                              f"the model has {n_classes}")
        aa.apgd_targeted.n_target_classes = min(aa.apgd_targeted.n_target_classes, n_classes - 1)
        aa.fab.n_target_classes = min(aa.fab.n_target_classes, n_classes - 1)
        if self.version == "custom":
            for apgd in (aa.apgd, aa.apgd_targeted):
                _set_iterations(apgd, s.steps or 100)
            aa.apgd.n_restarts = s.restarts or 1
            aa.apgd_targeted.n_restarts = s.restarts or 1
            aa.apgd.use_largereps = aa.apgd_targeted.use_largereps = s.norm == "L1"  # as the official L1 setup
        return aa

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            n_classes = self.model(x[:1]).shape[1]
        aa = self._make(x.device, n_classes)
        x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=len(x))
        return x_adv.detach()


def _set_iterations(apgd, n: int) -> None:
    """APGD derives its checkpoints from ``n_iter`` in its constructor; set them all together."""
    apgd.n_iter = apgd.n_iter_orig = n
    apgd.n_iter_2 = max(int(0.22 * n), 1)
    apgd.n_iter_min = max(int(0.06 * n), 1)
    apgd.size_decr = max(int(0.03 * n), 1)


class OfficialAttack:
    """One official attack (``apgd-ce``, ``apgd-dlr``, ``apgd-t`` or ``square``) with robench's restarts.

    Restart ``r`` runs the attack once (``n_restarts = 1``; APGD-T: every one of its ``min(9, K - 1)`` target
    classes once) on the samples still robust, seeded with :func:`~robench.attacks.iterate.restart_seed` of the
    cell's seed and ``r`` (restart 0 uses the cell's seed: one restart gives AutoAttack's own numbers). Each
    result is verified by an inference-mode forward before a sample counts as broken.

    Arguments:
        model: ``model(x) -> logits [B, K]``; spec: an :class:`AttackSpec` (``name``, ``eps``, ``norm``:
        ``Linf``, ``L2`` or ``L1`` as the official code, ``steps`` for APGD, ``queries`` for Square, ``restarts``).
        In L1, APGD uses the official code's large-budget schedule (``use_largereps``), as AutoAttack's L1 setup.

    Shape: ``x`` ``[B, C, H, W]`` in ``[0, 1]``, ``y`` ``[B]``; returns the same shape, in ``[0, 1]``, within eps.
    """

    NAMES = ("apgd-ce", "apgd-dlr", "apgd-t", "square")

    def __init__(self, model: nn.Module, spec: AttackSpec) -> None:
        if spec.name not in self.NAMES:
            raise BadSpec(f"attack {spec.name!r} is not an official single attack; choose from: "
                          f"{', '.join(self.NAMES)}")
        self.model, self.spec = model, spec

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        x = x.detach()
        base = torch.initial_seed()
        return run_restarts(self.model, x, y, self.spec.eps, self.spec.restarts or 1,
                            lambda r, idx, tracker: self._once(restart_seed(base, r), x, y, idx, tracker),
                            self.spec.norm)

    def _once(self, seed: int, x: Tensor, y: Tensor, idx: Tensor, tracker: BestIterate) -> None:
        name = self.spec.name
        with torch.no_grad():
            n_classes = self.model(x[idx[:1]]).shape[1]
        aa = AutoAttackAdapter(self.model, self.spec, [name], seed=seed)._make(x.device, n_classes)
        if name == "square":
            aa.square.n_queries, aa.square.n_restarts, aa.square.seed = self.spec.queries, 1, seed
            adv = aa.square.perturb(x[idx], y[idx])
        elif name == "apgd-t":
            aa.apgd_targeted.n_restarts, aa.apgd_targeted.seed = 1, seed
            adv = aa.apgd_targeted.perturb(x[idx], y[idx])
        else:
            aa.apgd.loss, aa.apgd.n_restarts, aa.apgd.seed = name.removeprefix("apgd-"), 1, seed
            adv = aa.apgd.perturb(x[idx], y[idx])
        tracker.update(adv.detach(), idx)
