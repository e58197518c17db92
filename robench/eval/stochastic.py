"""Evaluating a stochastic model (one whose forward pass samples, e.g. Poisson input coding): EOT and fresh draws.

A sweep gives every attack on a stochastic target three more parameters (recorded in the row's ``params``, so
part of its key): ``eot`` = K, the draws averaged per gradient step (the attack sees
:class:`~robench.snn.encoding.Averaged` over K draws); ``draws`` = M, the draws averaged by every prediction that
decides a verdict (clean accuracy and verification); ``sampler``, the gradient estimator through the draws
(``rate`` or ``ste``). All draws are seeded from the cell's seed, the cell and the batch's first image index
(:func:`robench.dist.batch_seed`), with a different tag for the attack (``attack``), the clean predictions
(``clean``) and the verification (``verify``, ``verify-1``): verification draws are never draws the attack used,
and a rerun gives the same numbers.

Each cell also yields the single-draw outcome (the same adversarial examples, one fresh draw per verdict), stored as
its own row with ``draws = 1``: a sample is robust there when one draw classifies both its clean image and its
adversarial example correctly (and the averaged prediction classified the clean image correctly, so that it was
attacked). Comparing K = 1 with a larger K shows masking by randomness (:func:`robench.eval.checks.eot_masking`).

Examples:
    >>> spec = stochastic_spec(AttackSpec("pgd-best", eps=8 / 255), eot=8, draws=16)
    >>> clean = clean_correct_draws(model, x, y, 64, draws=16, seed=0)      # bool [N]
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from ..attacks import AttackSpec
from ..dist import WHOLE, Part, batch_seed, batches, gather
from ..errors import BadSpec
from ..snn.encoding import Averaged, check_draws, fresh_draws, is_stochastic
from .verify import Verified, check_examples

__all__ = ["DEFAULT_DRAWS", "DEFAULT_EOT", "clean_correct_draws", "stochastic_spec", "stochastic_specs",
           "verify_draws"]

DEFAULT_EOT = 8  # draws averaged per gradient step
DEFAULT_DRAWS = 16  # draws averaged per verdict
DEFAULT_SAMPLER = "rate"


def stochastic_spec(spec: AttackSpec, eot: int | None = None, draws: int | None = None,
                    sampler: str | None = None) -> AttackSpec:
    """``spec`` for a stochastic model: with ``eot``, ``draws`` and ``sampler`` set (defaults 8, 16, ``rate``)."""
    if spec.attack is not None:
        raise BadSpec(f"attack {spec.name}: a user's own attack object cannot take --eot; stochastic models are "
                      "attacked by robench's registry attacks")
    return replace(spec, eot=check_draws(eot or DEFAULT_EOT, "--eot"),
                   draws=check_draws(draws or DEFAULT_DRAWS, "--draws"), sampler=sampler or DEFAULT_SAMPLER)


def stochastic_specs(models, specs, eot: int | None, draws: int | None, sampler: str | None) -> dict[int, list]:
    """Per target (by ``id()``), the specs it is attacked with: stochastic targets get :func:`stochastic_spec`,
    deterministic ones the specs as given. EOT options with no stochastic target are an error (one line)."""
    for k, what in ((eot, "--eot"), (draws, "--draws")):
        if k is not None:
            check_draws(k, what)
    random = {id(t) for t in models if is_stochastic(t.model)}
    if not random and any(v is not None for v in (eot, draws, sampler)):
        raise BadSpec("--eot, --draws and --sampler apply to stochastic models (Poisson coding); none of "
                      f"{', '.join(t.id for t in models)} samples in its forward pass")
    return {id(t): [stochastic_spec(s, eot, draws, sampler) if id(t) in random else s for s in specs]
            for t in models}


def clean_correct_draws(model: nn.Module, x: Tensor, y: Tensor, batch_size: int, draws: int, seed: int,
                        part: Part = WHOLE) -> Tensor:
    """``bool [N]``: the argmax of the logits averaged over ``draws`` draws is ``y``; each batch's draws are
    seeded from ``seed``, ``draws`` and its first image index (the same numbers for any number of ranks)."""
    avg = Averaged(model, draws).eval()
    out = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    with torch.inference_mode():
        for idx in batches(torch.arange(len(x), device=x.device), batch_size, part if part.collective else WHOLE):
            with fresh_draws(batch_seed(seed, f"clean|draws={draws}", int(idx[0])), x.device):
                out[idx] = avg(x[idx]).argmax(1) == y[idx]
    return gather(out, part)


@dataclass
class DrawVerdicts:
    """Verification of one batch on a stochastic model: ``averaged`` (M fresh draws decide) and ``single`` (one
    fresh draw decides: ``broken`` where that draw misclassifies a valid example)."""

    averaged: Verified
    single: Verified


def verify_draws(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor, spec: AttackSpec, seed: int,
                 ball: bool, name: str) -> DrawVerdicts:
    """Re-classify ``x_adv`` ``[B, C, H, W]`` with ``spec.draws`` fresh draws (and, separately, with one), from
    generators seeded with ``seed`` that the attack never used; the caller's draw stream is left untouched."""
    with fresh_draws(batch_seed(seed, "verify", 0), x.device):
        averaged = check_examples(Averaged(model, spec.draws), x, y, x_adv, spec.eps, ball, name, spec.norm)
    with fresh_draws(batch_seed(seed, "verify-1", 0), x.device):
        single = check_examples(model, x, y, x_adv, spec.eps, ball, name, spec.norm)
    return DrawVerdicts(averaged, single)
