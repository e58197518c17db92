"""Attacks as configured callables ``attack(x, y) -> x_adv``, built by a registry from an :class:`AttackSpec`.

- ``fgsm``, ``pgd`` and ``bim`` come from torchattacks. ``pgd`` and ``bim`` return their **final iterate**
  (kept as they are for comparability with papers; the report labels them ``(final)``).
- ``pgd-best`` (:mod:`.iterate`) and ``sa-pgd`` (:mod:`.sapgd`) are robench's own: every iterate is checked and
  a sample misclassified at any verified iterate keeps it (docs/evaluation.md §3).
- ``apgd-ce``, ``apgd-dlr``, ``apgd-t`` (targeted DLR, ``min(9, K - 1)`` targets), ``square`` (black box, L-inf)
  and ``autoattack`` (versions ``standard``, ``rand`` and ``custom`` = APGD-CE + APGD-T) are the official code
  (pyautoattack, :mod:`.autoattack`); the single attacks restart in robench's loop.
- ``gaussian`` is accuracy under clipped Gaussian noise, its ``eps`` being the noise std sigma.

Threat models (:mod:`.norms`): every budgeted attack takes ``norm`` = ``Linf`` (default), ``L2`` or ``L1`` where it
has a version in that norm (:data:`NORMS_OF`): in L2, ``fgsm`` is the fast gradient method (FGM), ``pgd``
torchattacks' ``PGDL2`` (final iterate), ``pgd-best`` and ``sa-pgd`` robench's own L2 versions, and APGD, Square
and AutoAttack the official L2 code; in L1 only the official APGD, Square and AutoAttack. The norm is part of
every row's ``params`` (so of its key). On a stochastic model (:mod:`robench.snn.encoding`) a spec also carries
``eot`` (K draws averaged per gradient step), ``draws`` (M fresh draws per verifying prediction) and ``sampler``
(the gradient estimator through the draws).

Every attack uses the model only through ``model(x)`` (the gradient path is a context on the model), so a user's
own attack object (e.g. ``torchattacks.MIFGSM(model, eps=8/255)``) runs the same way: :func:`build` passes any
callable through. A budget of 0 returns ``x`` unchanged for every attack.

Examples:
    >>> spec = AttackSpec("pgd", eps=8 / 255, steps=10, step_size=2 / 255)
    >>> x_adv = build(spec, model)(x, y)  # x: [B, C, H, W] in [0, 1], y: [B]; x_adv: same shape, in [0, 1]
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torchattacks
from torch import Tensor, nn

from ..attack_meta import GRADIENT_FREE, NOISE, TABLE  # no input gradient; eps is a noise std
from ..eps import format_eps, parse_eps
from ..errors import BadSpec
from ..registry import Registry
from .autoattack import AutoAttackAdapter, OfficialAttack
from .iterate import BestIterate, PGDBest, reset_path_state
from .norms import DEFAULT_EPS, EPS_MAX, FGM, NORMS, check_norm
from .sapgd import SAPGD

__all__ = ["ATTACKS", "FGM", "NORMS", "NORMS_OF", "AttackSpec", "AutoAttackAdapter", "BestIterate", "OfficialAttack",
           "PGDBest", "SAPGD", "SUITES", "build", "make_specs", "parse_eps", "specs_from", "suite"]

AttackFn = Callable[[Tensor, Tensor], Tensor]
ATTACKS: Registry[Callable[[AttackSpec, nn.Module], AttackFn]] = Registry("attack")
# which optional parameters each attack takes, with their defaults (None: the field does not apply)
DEFAULTS: dict[str, dict[str, object]] = {a.name: dict(a.defaults) for a in TABLE}
AA_VERSIONS = ("standard", "rand", "custom")
NORMS_OF: dict[str, tuple[str, ...]] = {a.name: a.norms for a in TABLE}  # the norms each attack has
OPTIONAL = ("steps", "step_size", "restarts", "random_start", "version", "queries")
FLAGS = {"steps": "--steps", "step_size": "--step-size", "restarts": "--restarts", "random_start": "--random-start",
         "version": "--aa-version", "queries": "--queries"}


@dataclass
class AttackSpec:
    """One attack with every hyper-parameter fixed; unset optional fields take the attack's defaults.

    Arguments:
        name: a name from ``ATTACKS`` (``fgsm``, ``pgd``, ``bim``, ``pgd-best``, ``sa-pgd``, ``apgd-ce``,
            ``apgd-dlr``, ``apgd-t``, ``square``, ``autoattack``, ``gaussian``), or a label for ``attack``.
        eps: L-inf budget in [0, 1] (for ``gaussian`` the noise std); eps_str: as given (default ``k/255``).
        steps, step_size, restarts, random_start: iterative attacks; version: ``autoattack`` only
            (``custom`` runs APGD-CE + APGD-T with ``steps`` and ``restarts``); queries: ``square`` only.
        norm: the threat model, ``Linf`` (default), ``L2`` or ``L1`` (:data:`NORMS_OF` lists each attack's).
        eot, draws, sampler: for a stochastic model only (set by the sweep): gradient draws per step, fresh draws
            per verifying prediction, and the gradient estimator through the draws (``rate`` or ``ste``).
        attack: a user's own already-built attack ``attack(x, y) -> x_adv``, used instead of the registry.
        min_batches: cut a cell's images into at least this many global batches of equal size (within one
            image), but none much smaller than 16 images (default 1: consecutive batches as large as the batch
            size; see :func:`robench.dist.split`). The batches fix the random draws, so this is
            recorded in ``params`` when > 1; under torchrun, set it to a multiple of the number of ranks so that
            every rank has the same work even when few images are left (the cascade's later stages), with
            numbers that still never depend on the rank count.
    """

    name: str
    eps: float = 8 / 255
    eps_str: str = ""
    steps: int | None = None
    step_size: float | None = None
    restarts: int | None = None
    random_start: bool | None = None
    version: str | None = None
    queries: int | None = None
    attack: AttackFn | None = field(default=None, repr=False, compare=False)
    min_batches: int = 1
    norm: str = "Linf"
    eot: int | None = None
    draws: int | None = None
    sampler: str | None = None

    def __post_init__(self) -> None:
        self.norm = check_norm(self.norm)
        top = EPS_MAX[self.norm]
        if not isinstance(self.eps, (int, float)) or isinstance(self.eps, bool) or not 0 <= self.eps <= top:
            raise BadSpec(f"--eps {self.eps!r}; accepted in {self.norm}: a number in [0, {top:g}] such as "
                          f"{DEFAULT_EPS[self.norm]}")
        self.eps = float(self.eps)
        self.eps_str = self.eps_str or format_eps(self.eps, den=255 if self.norm == "Linf" else None)
        _check_stochastic(self)
        mb = self.min_batches
        if isinstance(mb, bool) or not isinstance(mb, int) or mb < 1:
            raise BadSpec(f"--min-batches {mb!r}; must be an integer >= 1")
        if self.attack is not None:
            if not callable(self.attack):
                raise BadSpec(f"attack {self.attack!r} is not callable as attack(x, y)")
            return
        ATTACKS.get(self.name)  # an unknown name lists the choices
        if self.norm not in NORMS_OF.get(self.name, ("Linf",)):
            raise BadSpec(f"--norm {self.norm}: {self.name} has no {self.norm} version; in {self.norm}: "
                          f"{', '.join(n for n, ns in NORMS_OF.items() if self.norm in ns and n not in NOISE)}")
        defaults = DEFAULTS.get(self.name, {})
        for opt in OPTIONAL:
            value = getattr(self, opt)
            if value is None and opt == "step_size" and "step_size" in defaults and self.norm != "Linf":
                setattr(self, opt, self.eps / 4 if self.eps > 0 else 1.0)  # L2: a quarter of the budget
            elif value is None:
                setattr(self, opt, defaults.get(opt))
            elif opt not in defaults:
                raise BadSpec(f"{FLAGS[opt]} does not apply to {self.name}; it applies to: {_takers(opt)}")
        self._check_values()

    def _check_values(self) -> None:
        checks = [
            (self.steps is None or (isinstance(self.steps, int) and self.steps >= 1),
             f"--steps {self.steps!r}; must be an integer >= 1"),
            (self.step_size is None or (math.isfinite(self.step_size) and 0 < self.step_size <= EPS_MAX[self.norm]),
             f"--step-size {self.step_size!r}; must be in (0, {EPS_MAX[self.norm]:g}]"),
            (self.restarts is None or (isinstance(self.restarts, int) and self.restarts >= 1),
             f"--restarts {self.restarts!r}; must be an integer >= 1"),
            (self.queries is None or (isinstance(self.queries, int) and self.queries >= 1),
             f"--queries {self.queries!r}; must be an integer >= 1"),
            (self.version is None or self.version in AA_VERSIONS,
             f"--aa-version {self.version!r}; choose from: {', '.join(AA_VERSIONS)}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise BadSpec(msg)
        if self.name == "autoattack" and self.version == "custom":
            self.steps = self.steps or 100
            self.restarts = self.restarts or 1
        elif self.name == "autoattack" and (self.steps or self.restarts):
            raise BadSpec(f"--steps and --restarts apply to autoattack --aa-version custom only; version "
                          f"{self.version!r} fixes every parameter")

    @property
    def gradient_free(self) -> bool:
        return self.attack is None and self.name in GRADIENT_FREE

    @property
    def budgeted(self) -> bool:
        """Whether ``eps`` bounds the L-inf distance of the result (every attack but noise)."""
        return self.attack is not None or self.name not in NOISE

    def params(self) -> dict:
        """The hyper-parameters that define the attack (not eps), for the results' ``params`` column."""
        split = {"min_batches": self.min_batches} if self.min_batches > 1 else {}  # it sets the batches
        if self.attack is not None:
            keys = ("steps", "alpha", "decay", "random_start", "n_restarts")
            return {"user": type(self.attack).__name__, **{k: _plain(getattr(self.attack, k)) for k in keys
                                                           if hasattr(self.attack, k)}, **split}
        out = {k: getattr(self, k) for k in OPTIONAL if getattr(self, k) is not None}
        out.update({k: getattr(self, k) for k in STOCHASTIC if getattr(self, k) is not None})
        return {**out, **split, "norm": self.norm} if self.budgeted else {**out, **split}

    def params_json(self) -> str:
        return json.dumps(self.params(), sort_keys=True)

    def at(self, eps: float, eps_str: str = "") -> AttackSpec:
        """The same attack at another budget."""
        return replace(self, eps=eps, eps_str=eps_str)

    @classmethod
    def of(cls, attack: AttackFn, eps: float | None = None, name: str | None = None) -> AttackSpec:
        """Describe a user's own built attack (its ``eps`` attribute is read when not given)."""
        eps = float(getattr(attack, "eps", 0.0)) if eps is None else eps
        return cls(name or type(attack).__name__.lower(), eps=eps, attack=attack)


STOCHASTIC = ("eot", "draws", "sampler")


def _check_stochastic(spec: AttackSpec) -> None:
    """``eot`` and ``draws`` are integers >= 1, ``sampler`` one of the estimators (when given)."""
    from ..snn.encoding import SAMPLERS, check_draws

    if spec.eot is not None:
        check_draws(spec.eot, "--eot")
    if spec.draws is not None:
        check_draws(spec.draws, "--draws")
    if spec.sampler is not None and spec.sampler not in SAMPLERS:
        raise BadSpec(f"--sampler {spec.sampler!r}; choose from: {', '.join(SAMPLERS)}")


def _takers(opt: str) -> str:
    return ", ".join(n for n, d in DEFAULTS.items() if opt in d)


def _plain(v: object) -> object:
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


# ------------------------------------------------------------------------------------------------ build
def build(spec: AttackSpec | AttackFn, model: nn.Module) -> AttackFn:
    """The attack ``(x, y) -> x_adv`` for ``spec`` on ``model``; a callable that is not a spec passes through.

    Shape: ``x`` ``[B, C, H, W]`` in ``[0, 1]``, ``y`` ``[B]``; ``x_adv`` the same shape, in ``[0, 1]``.
    """
    if not isinstance(spec, AttackSpec):
        if not callable(spec):
            raise BadSpec(f"attack {spec!r} is neither an AttackSpec nor callable as attack(x, y)")
        return spec
    if spec.eps == 0:  # attack libraries may still move points (random starts) or fail at a zero budget
        return _unchanged
    if spec.attack is not None:
        return spec.attack
    return ATTACKS.get(spec.name)(spec, model)


def _unchanged(x: Tensor, y: Tensor) -> Tensor:
    return x.detach().clone()


@ATTACKS.register("fgsm")
def _fgsm(spec: AttackSpec, model: nn.Module) -> AttackFn:
    """torchattacks' FGSM in L-inf; in L2 the fast gradient method (one normalised step of length eps)."""
    return FGM(model, spec.eps) if spec.norm == "L2" else torchattacks.FGSM(model, eps=spec.eps)


@ATTACKS.register("bim")
def _bim(spec: AttackSpec, model: nn.Module) -> AttackFn:
    """torchattacks' BIM, final iterate (``pgd-best`` counts every iterate)."""
    return torchattacks.BIM(model, eps=spec.eps, alpha=spec.step_size, steps=spec.steps)


@ATTACKS.register("pgd")
def _pgd(spec: AttackSpec, model: nn.Module) -> AttackFn:
    """torchattacks' PGD (PGDL2 in L2), final iterate, as in papers (``pgd-best`` counts every iterate)."""
    cls = torchattacks.PGDL2 if spec.norm == "L2" else torchattacks.PGD
    atk = cls(model, eps=spec.eps, alpha=spec.step_size, steps=spec.steps, random_start=bool(spec.random_start))
    return atk if spec.restarts == 1 else Restarts(atk, model, spec.restarts)


class Restarts:
    """Run ``attack`` up to ``restarts`` times, re-attacking only the samples not yet misclassified (the gradient
    path's state is reset before each try)."""

    def __init__(self, attack: AttackFn, model: nn.Module, restarts: int) -> None:
        self.attack, self.model, self.restarts = attack, model, restarts

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        adv = x.detach().clone()
        alive = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            idx = alive.nonzero().flatten()
            if len(idx) == 0:
                break
            reset_path_state(self.model)
            a = self.attack(x[idx], y[idx])
            with torch.inference_mode():
                fooled = self.model(a).argmax(1) != y[idx]
            adv[idx] = a  # keep the last try for samples that stay robust
            alive[idx[fooled]] = False
        return adv


@ATTACKS.register("gaussian")
def _gaussian(spec: AttackSpec, model: nn.Module) -> AttackFn:
    sigma = spec.eps

    def noise(x: Tensor, y: Tensor) -> Tensor:
        """``clip(x + sigma * N(0, 1), 0, 1)``; drawn from torch's global generator (seeded per cell)."""
        return (x + sigma * torch.randn_like(x)).clamp_(0, 1)

    return noise


# ------------------------------------------------------------------------- best-iterate and official attacks
@ATTACKS.register("pgd-best")
def _pgd_best(spec: AttackSpec, model: nn.Module) -> AttackFn:
    return PGDBest(model, spec.eps, steps=spec.steps, step_size=spec.step_size, restarts=spec.restarts,
                   random_start=bool(spec.random_start), norm=spec.norm)


@ATTACKS.register("sa-pgd")
def _sa_pgd(spec: AttackSpec, model: nn.Module) -> AttackFn:
    return SAPGD(model, spec.eps, steps=spec.steps, restarts=spec.restarts, norm=spec.norm)


def _official(spec: AttackSpec, model: nn.Module) -> AttackFn:
    return OfficialAttack(model, spec)


for _name in OfficialAttack.NAMES:  # apgd-ce, apgd-dlr, apgd-t, square
    ATTACKS.register(_name)(_official)


@ATTACKS.register("autoattack")
def _autoattack(spec: AttackSpec, model: nn.Module) -> AttackFn:
    return AutoAttackAdapter(model, spec, ["apgd-ce", "apgd-t"] if spec.version == "custom" else None)


# ---------------------------------------------------------------------------------------- suites as data
_E8 = dict(eps=8 / 255, eps_str="8/255")
SUITES: dict[str, list[AttackSpec]] = {
    # docs/method.md §6: FGSM; PGD (steps, step size) = (7, 2.55/255), (10, 2/255), (20, 1/255), (40, 0.5/255);
    # APGD-CE and APGD-DLR with 10 steps; all at eps = 8/255
    "paper": [
        AttackSpec("fgsm", **_E8),
        *(AttackSpec("pgd", **_E8, steps=k, step_size=a / 255) for k, a in ((7, 2.55), (10, 2), (20, 1), (40, 0.5))),
        AttackSpec("apgd-ce", **_E8, steps=10),
        AttackSpec("apgd-dlr", **_E8, steps=10),
    ],
    "quick": [AttackSpec("fgsm", **_E8), AttackSpec("pgd", **_E8, steps=10, step_size=2 / 255)],
    # docs/method.md §6: PGD-10 sweeps over larger budgets, step eps/4
    "pgd-sweep": [AttackSpec("pgd", eps=k / 255, eps_str=f"{k}/255", steps=10, step_size=k / 4 / 255)
                  for k in range(10, 101, 10)],  # re-targeted with --eps through RETARGET below
    "autoattack": [AttackSpec("autoattack", **_E8, version="standard")],
    "noise": [AttackSpec("gaussian", eps=k / 255, eps_str=f"{k}/255") for k in (4, 8, 16, 32, 64)],
}
DEFAULT_ATTACKS = ("fgsm", "pgd")


def _pgd_sweep_at(eps: float, eps_str: str) -> AttackSpec:
    """PGD-10 with step eps/4 (docs/method.md §6), at any budget (eps = 0 keeps the default step: nothing moves)."""
    return AttackSpec("pgd", eps=eps, eps_str=eps_str, steps=10, step_size=eps / 4 if eps > 0 else None)


# suites whose parameters follow the budget: re-targeting them with --eps rebuilds each spec at the new budget
RETARGET: dict[str, Callable[[float, str], AttackSpec]] = {"pgd-sweep": _pgd_sweep_at}


def suite(name: str) -> list[AttackSpec]:
    if name not in SUITES:
        raise BadSpec(f"unknown suite {name!r}; choose from: {', '.join(SUITES)}")
    return [replace(s) for s in SUITES[name]]


def make_specs(names: Sequence[str], eps: Sequence[tuple[float, str]], norm: str = "Linf",
               **options: object) -> list[AttackSpec]:
    """One spec per attack name and budget, in ``norm``. Each option given (not None) is set on the attacks that
    take it; an option that no chosen attack takes is an error. Unknown names list the choices."""
    norm = check_norm(norm)
    for name in names:
        ATTACKS.get(name)
    given = {k: v for k, v in options.items() if v is not None}
    for opt in given:
        if opt not in OPTIONAL:
            raise BadSpec(f"unknown attack option {opt!r}; accepted: {', '.join(OPTIONAL)}")
        if not any(opt in DEFAULTS[n] for n in names):
            raise BadSpec(f"{FLAGS[opt]} applies to none of {', '.join(names)}; it applies to: {_takers(opt)}")
    specs = []
    for name in names:
        kw = {k: v for k, v in given.items() if k in DEFAULTS[name]}
        specs += [AttackSpec(name, eps=v, eps_str=s, norm=norm, **kw) for v, s in eps]
    return specs


def specs_from(names: Sequence[str] | None = None, suite_name: str | None = None, eps: str | None = None,
               norm: str = "Linf", **options: object) -> list[AttackSpec]:
    """The specs of a command line: ``names`` (repeatable or comma lists; default fgsm and pgd unless a suite is
    given) at every budget of ``eps`` (default: the norm's, :data:`~.norms.DEFAULT_EPS`), in ``norm``, plus the
    suite's specs (re-targeted to ``eps`` when given; suites are L-inf presets). Options such as ``steps`` apply to
    named attacks only: a suite fixes every parameter."""
    norm = check_norm(norm)
    names = [n.strip() for item in names or () for n in item.split(",") if n.strip()]
    noise = bool(names) and all(n in NOISE for n in names)
    limit = 1.0 if noise else EPS_MAX[norm]
    budgets = parse_eps(eps, limit=limit) if eps is not None else None
    specs: list[AttackSpec] = []
    if suite_name is not None and norm != "Linf":
        raise BadSpec(f"--suite {suite_name} is an L-inf preset; with --norm {norm} name the attacks instead "
                      "(e.g. --attack apgd-ce,apgd-t or --attack autoattack)")
    if suite_name is not None:
        base = suite(suite_name)
        if any(v is not None for v in options.values()) and not names:
            raise BadSpec(f"--suite {suite_name} fixes every attack parameter; name attacks with --attack to set "
                          "steps, step size, restarts or version")
        if budgets and suite_name in RETARGET:
            specs += [RETARGET[suite_name](v, t) for v, t in budgets]
        else:
            specs += [s.at(v, t) for s in base for v, t in budgets] if budgets else base
    elif not names:
        names = list(DEFAULT_ATTACKS)
    if names:
        specs += make_specs(names, budgets or parse_eps(DEFAULT_EPS[norm], limit=limit), norm, **options)
    unique: dict[tuple, AttackSpec] = {}
    for s in specs:
        unique.setdefault((s.name, s.params_json(), s.eps), s)  # params_json holds the norm
    return list(unique.values())
