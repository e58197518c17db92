"""Input encodings of a spiking network, and the evaluation of models whose forward pass samples.

- ``direct``: the image is fed unchanged at every time step (deterministic; robench's default).
- ``poisson``: rate coding; at every step each pixel fires a Bernoulli spike with probability equal to its value
  in ``[0, 1]`` (:func:`poisson_spikes`). The forward pass is random: two calls on the same image differ.

A gradient through a Bernoulli draw is an estimator, chosen per attack (the ``sampler`` of an attack spec):

- ``rate`` (the expectation): ``ds/dp = 1``, the exact gradient of the expected spike ``E[s] = p``; the same for
  every draw.
- ``ste``: a straight-through estimator through the draw's own threshold. A spike is ``s = H(p - u)`` with
  ``u ~ U(0, 1)``; the Heaviside step's derivative is replaced by a rectangle of width ``w`` around the threshold,
  ``ds/dp = 1[|p - u| < w/2] / w`` (``w = 0.5``). Per draw it is 0 or ``1/w``; its expectation over ``u`` is 1 for
  ``p`` in ``[w/2, 1 - w/2]`` and ``(min(p + w/2, 1) - max(p - w/2, 0)) / w`` near the ends, so it is noisy and
  only its average over draws approaches the rate gradient.

A model is *stochastic* when one of its modules declares ``stochastic = True`` (robench's :class:`PoissonEncoder`,
or a foreign model imported with ``--encoding poisson``). Such a model is evaluated by averaging (Athalye et al.
2018): a prediction is the argmax of the logits averaged over ``M`` draws (:class:`Averaged`), an attack's gradient
is the gradient of the loss of the logits averaged over ``K`` draws at every step (EOT, :class:`Averaged` given to
the attack), and an adversarial example counts only if ``M`` fresh draws from a seed the attack never used still
misclassify it (:func:`fresh_draws`). Randomness that a model does not declare is still refused.

Examples:
    >>> enc = PoissonEncoder(T=4)
    >>> enc(torch.rand(2, 1, 28, 28)).shape        # [T, B, C, H, W], values in {0, 1}
    torch.Size([4, 2, 1, 28, 28])
    >>> eot = Averaged(model, draws=8)             # logits [B, K] averaged over 8 draws; attack eot as any model
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..errors import BadSpec

__all__ = ["ENCODINGS", "SAMPLERS", "Averaged", "PoissonEncoder", "check_draws", "fresh_draws", "is_stochastic",
           "poisson_spikes", "sampler", "set_sampler"]

ENCODINGS = ("direct", "poisson")
SAMPLERS = ("rate", "ste")
STE_WIDTH = 0.5  # the straight-through rectangle's width around the draw's threshold


class _Bernoulli(torch.autograd.Function):
    """``s = 1[u < p]`` with a chosen backward: ``rate`` passes the gradient unchanged, ``ste`` through a
    rectangle of width ``STE_WIDTH`` around the threshold ``u``."""

    @staticmethod
    def forward(ctx, p: Tensor, u: Tensor, ste: bool) -> Tensor:  # type: ignore[override]
        ctx.ste = ste
        if ste:
            ctx.save_for_backward(p, u)
        return (u < p).to(p.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        if not ctx.ste:
            return grad, None, None
        p, u = ctx.saved_tensors
        window = ((p - u).abs() < STE_WIDTH / 2).to(grad.dtype) / STE_WIDTH
        return grad * window, None, None


def poisson_spikes(x: Tensor, T: int, how: str = "rate", generator: torch.Generator | None = None) -> Tensor:
    """Bernoulli spikes ``[T, B, C, H, W]`` (0 or 1) with probability ``x`` ``[B, C, H, W]`` in ``[0, 1]`` at every
    step, drawn from ``generator`` (default: torch's generator of ``x``'s device); ``how`` is the gradient
    estimator (``rate`` or ``ste``, see the module docstring)."""
    if how not in SAMPLERS:
        raise BadSpec(f"--sampler {how!r}; choose from: {', '.join(SAMPLERS)}")
    p = x.clamp(0, 1).unsqueeze(0).expand(T, *x.shape)
    u = torch.rand(p.shape, dtype=x.dtype, device=x.device, generator=generator)
    return _Bernoulli.apply(p, u, how == "ste")


class PoissonEncoder(nn.Module):
    """Rate coding: ``[B, C, H, W]`` in ``[0, 1]`` -> Bernoulli spikes ``[T, B, C, H, W]``; declares the model
    stochastic. ``how``: the gradient estimator through the draw (``rate`` by default; :func:`sampler` switches it
    for an attack)."""

    stochastic = True

    def __init__(self, T: int, how: str = "rate") -> None:
        super().__init__()
        self.T, self.how = T, how

    def forward(self, x: Tensor) -> Tensor:
        return poisson_spikes(x, self.T, self.how)

    def extra_repr(self) -> str:
        return f"T={self.T}, how={self.how}"


def is_stochastic(model: nn.Module) -> bool:
    """Whether ``model`` declares a random forward pass (a module with ``stochastic = True``)."""
    return any(getattr(m, "stochastic", False) is True for m in model.modules())


def set_sampler(model: nn.Module, how: str) -> list[tuple[nn.Module, str]]:
    """Set the gradient estimator of every sampler in ``model``; returns the previous ones for restoring."""
    if how not in SAMPLERS:
        raise BadSpec(f"--sampler {how!r}; choose from: {', '.join(SAMPLERS)}")
    saved = [(m, m.how) for m in model.modules() if getattr(m, "stochastic", False) is True and hasattr(m, "how")]
    for m, _ in saved:
        m.how = how
    return saved


@contextmanager
def sampler(model: nn.Module, how: str | None) -> Iterator[nn.Module]:
    """Within the block, the model's samplers use the gradient estimator ``how`` (None: unchanged); restored after,
    also on error."""
    saved = set_sampler(model, how) if how is not None else []
    try:
        yield model
    finally:
        for m, old in saved:
            m.how = old


class Averaged(nn.Module):
    """``model`` with its logits averaged over ``draws`` forward passes: ``[B, C, H, W] -> [B, K]``.

    Given to an attack, its gradient is the gradient of the loss of the K-draw mean logits (EOT): as K grows it
    tends to the gradient of the loss of the model's own decision rule (the argmax of averaged logits); for a loss
    linear in the logits it is exactly the mean of the K per-draw gradients. Used for predictions with ``M``
    draws. The draws come from torch's generator, so a seeded caller gets the same numbers every time.
    """

    def __init__(self, model: nn.Module, draws: int) -> None:
        super().__init__()
        check_draws(draws, "draws")
        self.model, self.draws = model, draws

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        for _ in range(self.draws - 1):
            out = out + self.model(x)
        return out / self.draws


def check_draws(k: object, what: str = "--eot") -> int:
    """``k`` must be an integer >= 1 (a number of draws); else one-line :class:`BadSpec`."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise BadSpec(f"{what} {k!r}; must be an integer >= 1 (a number of random draws)")
    return k


@contextmanager
def fresh_draws(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Within the block, torch's generators (CPU and ``device``'s) are seeded with ``seed``; outside it their
    state is exactly what it was, so the caller's (the attack's) stream of draws is neither consumed nor reused."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
