"""Verification of adversarial examples (docs/evaluation.md §4): nothing counts as broken unless robench checked it.

An example ``x_adv`` of a clean image ``x`` breaks its sample only when it is *valid* (every value finite and in
[0, 1], and ``||x_adv - x||_p <= eps + 1e-6`` in the norm the attack claims: L-inf, L2, or L1 with a further 1e-6
of eps for the rounding of its sum; Gaussian noise, whose eps is a noise sigma, skips the ball check) and a fresh
forward of the exact model (``model.eval()``, ``torch.inference_mode()``) misclassifies it. For a stochastic model
the caller passes the prediction rule (logits averaged over fresh draws, :mod:`robench.snn.encoding`). An invalid
example is never a broken sample: the sample counts as robust and the cell gets a finding naming the attack and the
count. A result that is not a tensor of the input's shape is a broken attack, not a finding:
:class:`~robench.errors.IntegrityError`.

Examples:
    >>> v = check_examples(model, x, y, x_adv, eps=8 / 255)   # x, x_adv: [B, C, H, W]; y: [B]
    >>> v.broken, v.invalid                                     # bool [B] each, on x's device
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..attacks.norms import dist, slack
from ..errors import IntegrityError

SLACK = 1e-6  # float rounding allowed beyond the eps-ball


@dataclass(frozen=True)
class Verified:
    """Per-sample verdicts ``bool [B]``: ``broken`` (valid and misclassified) and ``invalid`` (failed a check)."""

    broken: Tensor
    invalid: Tensor


def check_shape(name: str, x: Tensor, x_adv: object) -> Tensor:
    """``x_adv`` must be a floating tensor of ``x``'s shape; anything else is a broken attack (IntegrityError)."""
    if not isinstance(x_adv, Tensor) or x_adv.shape != x.shape or not x_adv.is_floating_point():
        raise IntegrityError(f"attack {name} returned {type(x_adv).__name__} "
                             f"{tuple(getattr(x_adv, 'shape', ()))} {getattr(x_adv, 'dtype', '')}, expected a "
                             f"floating tensor {tuple(x.shape)}")
    return x_adv


def valid_examples(x: Tensor, x_adv: Tensor, eps: float, ball: bool = True, norm: str = "Linf") -> Tensor:
    """``bool [B]``: finite, every value in [0, 1], and (``ball``) within ``eps + 1e-6`` of ``x`` in ``norm``
    (``Linf``, ``L2``, ``L1``; the distance in float64)."""
    flat, ref = x_adv.detach().flatten(1), x.detach().to(x_adv.dtype).flatten(1)  # [B, C*H*W]
    ok = torch.isfinite(flat).all(1) & (flat >= 0).all(1) & (flat <= 1).all(1)
    if ball:
        ok &= dist(flat, ref, norm) <= eps + slack(eps, norm)  # a NaN distance compares False: invalid
    return ok


def check_examples(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor, eps: float, ball: bool = True,
                   name: str = "attack", norm: str = "Linf") -> Verified:
    """Verify ``x_adv`` ``[B, C, H, W]`` against clean ``x`` (same shape, in [0, 1]) and labels ``y`` ``[B]``.

    The model is put in eval mode and run under ``torch.inference_mode`` on the valid examples only (invalid
    ones are replaced by their clean image, so NaN never reaches the model); ``ball=False`` for noise, whose eps is
    not a budget; ``norm``: the ball's norm.
    """
    x_adv = check_shape(name, x, x_adv).to(x.device)
    ok = valid_examples(x, x_adv, eps, ball, norm)
    model.eval()
    with torch.inference_mode():
        safe = torch.where(ok.view(-1, *([1] * (x.dim() - 1))), x_adv.to(x.dtype), x)  # [B, C, H, W]
        wrong = model(safe).argmax(1) != y if len(x) else torch.zeros(0, dtype=torch.bool, device=x.device)
    return Verified(broken=(ok & wrong).clone(), invalid=(~ok).clone())
