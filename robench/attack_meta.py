"""What each attack is, as data: the one table that the attack registry, the results, verification, the record
checks, the report and the CLI help read. Torch-free (standard library only), so the report never loads torch.

Each :class:`AttackInfo` gives an attack's optional parameters with their defaults (``defaults``: the fields of
:class:`robench.attacks.AttackSpec` it takes), and its traits:

- ``gradient_free``: needs no input gradient (one cell, ``grad = none``): Square (black box) and Gaussian noise;
- ``noise``: its ``eps`` is a noise std, not an L-inf budget (no eps-ball check, no worst case): Gaussian noise;
- ``iterative``: a gradient attack of several steps, which must do at least as well as FGSM (``single_step``);
- ``final_iterate``: returns its last iterate, not its best (torchattacks' PGD and BIM; the report says
  ``(final)``);
- ``norms``: the threat models it has a version in (L1: the official code only; noise ignores the norm);
- ``order``: its place in the report's columns; ``note``: a few words for the CLI help.

Examples:
    >>> INFO["square"].gradient_free, INFO["square"].noise
    (True, False)
    >>> sorted(GRADIENT_FREE)
    ['gaussian', 'square']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class AttackInfo:
    name: str
    defaults: Mapping[str, object] = field(default_factory=dict)
    order: int = 0
    note: str = ""
    gradient_free: bool = False
    noise: bool = False
    iterative: bool = False
    single_step: bool = False
    final_iterate: bool = False
    norms: tuple[str, ...] = ("Linf",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))


_STEP = 2 / 255
_LINF_L2 = ("Linf", "L2")
_ALL_NORMS = ("Linf", "L2", "L1")  # robench.attacks.norms.NORMS
# in the registry's order (the order of "it applies to: ..." lists); ``order`` is the report's
TABLE: tuple[AttackInfo, ...] = (
    AttackInfo("fgsm", {}, 0, single_step=True, norms=_LINF_L2),
    AttackInfo("pgd", {"steps": 10, "step_size": _STEP, "restarts": 1, "random_start": True}, 1, "final iterate",
               iterative=True, final_iterate=True, norms=_LINF_L2),
    AttackInfo("bim", {"steps": 10, "step_size": _STEP}, 2, "final iterate", iterative=True, final_iterate=True),
    AttackInfo("pgd-best", {"steps": 50, "step_size": _STEP, "restarts": 1, "random_start": True}, 3,
               "best iterate", iterative=True, norms=_LINF_L2),
    AttackInfo("sa-pgd", {"steps": 100, "restarts": 1}, 4, "best iterate", iterative=True, norms=_LINF_L2),
    AttackInfo("apgd-ce", {"steps": 100, "restarts": 1}, 5, iterative=True, norms=_ALL_NORMS),
    AttackInfo("apgd-dlr", {"steps": 100, "restarts": 1}, 6, iterative=True, norms=_ALL_NORMS),
    AttackInfo("apgd-t", {"steps": 100, "restarts": 1}, 7, iterative=True, norms=_ALL_NORMS),
    # 5000 queries as in AutoAttack standard: the masking check is no weaker than the reference's Square
    AttackInfo("square", {"queries": 5000, "restarts": 1}, 9, "black box", gradient_free=True, norms=_ALL_NORMS),
    # steps, restarts: version custom only
    AttackInfo("autoattack", {"version": "standard", "steps": None, "restarts": None}, 8, iterative=True,
               norms=_ALL_NORMS),
    AttackInfo("gaussian", {}, 10, "noise, eps = sigma", gradient_free=True, noise=True, norms=_ALL_NORMS),
)
INFO: Mapping[str, AttackInfo] = MappingProxyType({a.name: a for a in TABLE})
NAMES = tuple(INFO)
REPORT_ORDER = tuple(a.name for a in sorted(TABLE, key=lambda a: a.order))
GRADIENT_FREE = frozenset(a.name for a in TABLE if a.gradient_free)
NOISE = frozenset(a.name for a in TABLE if a.noise)
ITERATIVE = frozenset(a.name for a in TABLE if a.iterative)
SINGLE_STEP = frozenset(a.name for a in TABLE if a.single_step)
FINAL_ITERATE = frozenset(a.name for a in TABLE if a.final_iterate)


def help_text() -> str:
    """The attack names for ``--attack``'s help, each with its note: ``fgsm, pgd (final iterate), ...``."""
    return ", ".join(f"{a.name} ({a.note})" if a.note else a.name for a in TABLE)
