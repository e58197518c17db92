"""The training configuration: every option of ``robench train`` with its defaults and checks (docs/method.md §4).

Torch-free, so the zoo checks a card's recipe against it without loading any training code; the recipes
themselves (the perturbed inputs) and the loop are :mod:`robench.train.loop`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from ..errors import BadSpec, UnknownName

# the recipes, in the order the help and errors list them, with the short name entry ids use
RECIPE_SHORT = {"clean": "clean", "gaussian": "gn", "fgsm-at": "at", "pgd-at": "pgdat", "rat": "rat"}
RAT_BETA = {"wrn16": 0.004}  # the orthogonality strength per arch (docs/method.md §4); others: RAT_BETA_DEFAULT
RAT_BETA_DEFAULT = 0.001  # VGG-5, VGG-11
WEIGHT_DECAY = 5e-4  # every recipe but rat, which trains without it


@dataclass
class TrainConfig:
    """One CLI flag per field; defaults follow docs/method.md §4 except the epoch count.

    Arguments:
        recipe: ``clean``, ``gaussian``, ``fgsm-at``, ``pgd-at`` or ``rat`` (fgsm-at plus the orthogonality step).
        alpha: MPPD weight (0: no regulariser); kappa: weight of the clean CE term.
        sigma: Gaussian-noise std for ``gaussian``; eps: L-inf budget for ``fgsm-at``/``pgd-at``.
        pgd_steps, pgd_step: PGD-AT iterations and step size (None: 2.5 * eps / steps).
        limit: use only the first N training images (quick runs); augment: random crop + flip.
        ckpt_every: also checkpoint every N steps (0: end of epoch only).
        world_size: processes training together under torchrun (DistributedDataParallel); each takes
            ``batch_size`` images per step, so the global batch is ``world_size * batch_size``.
        sync_bn: synchronise batch-norm statistics across the processes (CUDA only, as torch's SyncBatchNorm).
        weight_decay: None resolves to 5e-4, or to 0 with ``rat`` (which refuses any other value).
        rat_beta: strength of the orthogonality step of ``rat`` (None: 0.001, the VGG value); only with ``rat``.
    """

    recipe: str = "clean"
    epochs: int = 1
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float | None = None
    batch_size: int = 64
    seed: int = 0
    alpha: float = 0.0
    kappa: float = 0.5
    sigma: float = 8 / 255
    eps: float = 4 / 255
    pgd_steps: int = 3
    pgd_step: float | None = None
    limit: int | None = None
    augment: bool = False
    ckpt_every: int = 0
    world_size: int = 1
    sync_bn: bool = False
    rat_beta: float | None = None

    def __post_init__(self) -> None:
        if self.recipe not in RECIPE_SHORT:  # the same line as an unknown name in any registry
            raise UnknownName(f"unknown recipe {self.recipe!r}; choose from: {', '.join(RECIPE_SHORT)}")
        rat = self.recipe == "rat"
        if self.weight_decay is None:
            self.weight_decay = 0.0 if rat else WEIGHT_DECAY
        if rat and self.rat_beta is None:
            self.rat_beta = RAT_BETA_DEFAULT
        checks = [
            (self.epochs >= 1, f"--epochs {self.epochs}; must be >= 1"),
            (_pos(self.lr), f"--lr {self.lr}; must be > 0"),
            (_fin(self.momentum) and 0 <= self.momentum < 1, f"--momentum {self.momentum}; in [0, 1)"),
            (_fin(self.weight_decay) and self.weight_decay >= 0, f"--weight-decay {self.weight_decay}; >= 0"),
            (self.batch_size >= 1, f"--batch-size {self.batch_size}; must be >= 1"),
            (0 <= self.seed < 2**32, f"--seed {self.seed}; must be in 0..{2**32 - 1}"),  # seeds * 1e6 fit 64 bits
            (_fin(self.alpha) and self.alpha >= 0, f"--alpha {self.alpha}; must be >= 0"),
            (_fin(self.kappa) and 0 <= self.kappa <= 1, f"--kappa {self.kappa}; must be in [0, 1]"),
            (_fin(self.sigma) and self.sigma >= 0, f"--sigma {self.sigma}; must be >= 0"),
            (_fin(self.eps) and self.eps >= 0, f"--eps {self.eps}; must be >= 0"),
            (self.pgd_steps >= 1, f"--pgd-steps {self.pgd_steps}; must be >= 1"),
            (self.pgd_step is None or _pos(self.pgd_step), f"--pgd-step {self.pgd_step}; must be > 0"),
            (self.limit is None or self.limit >= 1, f"--limit {self.limit}; must be >= 1"),
            (self.ckpt_every >= 0, f"--ckpt-every {self.ckpt_every}; must be >= 0"),
            (isinstance(self.world_size, int) and self.world_size >= 1, f"world size {self.world_size}; must be >= 1"),
            (not (self.recipe == "clean" and self.alpha > 0),
             "--alpha > 0 needs a perturbed input; use --recipe gaussian, fgsm-at, pgd-at or rat"),
            (not rat or self.weight_decay == 0,
             f"--weight-decay {self.weight_decay} with --recipe rat; rat trains without weight decay (give 0)"),
            (rat or self.rat_beta is None, f"--rat-beta {self.rat_beta} needs --recipe rat"),
            (self.rat_beta is None or (_fin(self.rat_beta) and 0 <= self.rat_beta < 1),
             f"--rat-beta {self.rat_beta}; must be in [0, 1)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise BadSpec(msg)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        if set(d) - known:
            raise BadSpec(f"unknown training config keys {sorted(set(d) - known)}")
        return cls(**d)


def _fin(v: float) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _pos(v: float) -> bool:
    return _fin(v) and v > 0
