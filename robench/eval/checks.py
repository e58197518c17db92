"""Sanity checks as pure functions returning findings: how users spot gradient masking and broken evaluations.

The record checks read a results table and live with the results (:mod:`robench.results.checks`, re-exported here).
The model checks take a model; they import torch only when called:

- ``nondeterministic``: two evaluations of the same input differ (the stateless model contract is broken); a
  model that declares random draws (:mod:`robench.snn.encoding`) must give the same logits under the same seed;
- ``probabilities``: the model returns probabilities rather than logits;
- ``zero-grad``: a large fraction of samples has an input gradient that is exactly zero in a gradient mode.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..results.checks import (  # noqa: F401  (the record checks, importable from here as before)
    CELL,
    COUNTED,
    DOC,
    SHOWN,
    check_records,
    eot_masking,
    eps_zero,
    grad_gap,
    iterative_le_single_step,
    monotone_in_eps,
    norm_of,
    robust_le_clean,
    stored_flags,
)
from ..results.findings import Finding
from ..snn.pathkeys import GradPath


# ----------------------------------------------------------------------------------------- model checks
def eval_determinism(model, x) -> bool:
    """True when two evaluations of ``x`` ``[B, C, H, W]`` in ``[0, 1]`` give identical logits (for a model that
    declares random draws: under the same seed; undeclared randomness still fails)."""
    import torch

    from ..snn.encoding import fresh_draws, is_stochastic

    model.eval()
    with torch.inference_mode():
        if not is_stochastic(model):
            return bool(torch.equal(model(x), model(x)))
        with fresh_draws(0, x.device):
            a = model(x)
        with fresh_draws(0, x.device):
            return bool(torch.equal(a, model(x)))


def outputs_probabilities(model, x, tol: float = 1e-5) -> bool:
    """True when the outputs look like probabilities (in [0, 1], rows summing to 1) instead of logits."""
    import torch

    with torch.inference_mode():
        out = model(x)
    return bool(out.min() > -tol and out.max() < 1 + tol and ((out.sum(-1) - 1).abs() < tol).all())


def zero_grad_fraction(model, x, y, mode: str | GradPath) -> float:
    """Fraction of samples whose input gradient of the cross-entropy is exactly zero in gradient ``mode``."""
    import torch
    import torch.nn.functional as F

    from ..snn.paths import grad_mode

    model.eval()
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), grad_mode(model, mode):
        loss = F.cross_entropy(model(x), y, reduction="sum")  # samples are independent in eval mode
        (g,) = torch.autograd.grad(loss, x)
    return float((g.flatten(1) == 0).all(1).float().mean())


def model_findings(model, model_id: str, x, y, modes: Sequence[str | GradPath], zero_grad: float = 0.05
                   ) -> list[Finding]:
    """The model checks on a few samples: determinism, logits, and the zero-gradient fraction per mode."""
    out = []
    if not eval_determinism(model, x):
        out.append(Finding("nondeterministic", f"{model_id}: two evaluations of the same input differ; the "
                           "model keeps state between calls or is randomised", model=model_id))
    if outputs_probabilities(model, x):
        out.append(Finding("probabilities", f"{model_id}: outputs look like probabilities; attacks need logits",
                           model=model_id))
    for mode in modes:
        frac = zero_grad_fraction(model, x, y, mode)
        if frac > zero_grad:
            out.append(Finding("zero-grad", f"{model_id}: {100 * frac:.1f}% of {len(x)} samples have an all-zero input "
                               f"gradient with {mode} (gradient masking: that mode's attacks are blind there)",
                               model=model_id, grads=(str(mode),)))
    return out
