"""The checks a foreign model passes before it enters the zoo (issue 13, item 4).

On the test images given: the adapted model's logits equal the original's (the user's network with its own
neurons, run through the same reset, encoding and mean over T), bitwise or to float rounding, and the card says
which; two calls give identical logits (no state survives: else the model is stateful); the outputs are logits,
not probabilities; the input gradient in ``bptt`` is non-zero on most images (else SpikingJelly's eval-mode trap
or gradient masking, named); and clean accuracy is measured for the card. Each failure is one line.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import BadSpec, IntegrityError, RobenchError
from ..eval.checks import outputs_probabilities
from ..snn.encoding import fresh_draws
from ..snn.models import accuracy
from .adapters import STEP_MODES, ForeignModel, OutputError
from .foreign import ForeignSpec

ROUNDING = 1e-4  # largest |difference| of logits, relative to their scale, still called float rounding
FLIP_SHARE = 0.001  # share of images whose logits may differ more (a spike at the threshold flipped by rounding)
GRAD_IMAGES = 32  # images whose input gradient is checked
ZERO_GRAD_MAX = 0.5  # more than this fraction of all-zero input gradients is refused


@dataclass
class ImportResult:
    clean_acc: float
    note: str  # one line for the card's notes: how the logits matched, which neurons were mapped


def _seeded_logits(model: nn.Module, x: Tensor, batch_size: int = 100) -> Tensor:
    """:func:`_plain_logits` on draws seeded with 0 (the caller's generator state is left as it was)."""
    with fresh_draws(0, x.device):
        return _plain_logits(model, x, batch_size)


def _plain_logits(model: nn.Module, x: Tensor, batch_size: int = 100) -> Tensor:
    with torch.inference_mode():
        return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def zero_grad_fraction(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Fraction of images whose input gradient of the cross-entropy is exactly zero in ``bptt`` (a model whose
    spikes carry no graph at all, like a SpikingJelly neuron in eval mode that detaches them, counts as zero)."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x, allow_unused=True) if loss.requires_grad else (None,)
    if g is None:
        return 1.0
    return float((g.flatten(1) == 0).all(1).float().mean())


def _match(orig: Tensor, adapted: Tensor, adapter: ForeignModel) -> str:
    """How the adapted model's logits ``[N, K]`` match the original's: bitwise, to float rounding, or to float
    rounding on all but at most ``FLIP_SHARE`` of the images (a spike exactly at the threshold can flip when the
    membrane is computed in another order, e.g. SpikingJelly's ``v + (x - v) / tau`` and ``tau' v + x / tau``)."""
    if torch.equal(orig, adapted):
        return "bitwise"
    per_image = (orig - adapted).abs().amax(1)
    diff = float(per_image.max())
    scale = max(1.0, float(orig.abs().max()))
    off = int((per_image > ROUNDING * scale).sum())
    if off == 0:
        return f"to float rounding (max |difference| {diff:.2g})"
    if off <= FLIP_SHARE * len(orig):
        return (f"to float rounding on {len(orig) - off} of {len(orig)} images; {off} differ by up to {diff:.3g} "
                f"(at most {FLIP_SHARE:.1%} may: a spike at the threshold can flip with the membrane's rounding)")
    raise IntegrityError(f"the adapted model's logits differ from the original's by up to {diff:.3g} on {off} of "
                         f"{len(orig)} images: the neuron mapping is not exact for this model ({adapter.describe()})")


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]}"


def check_runs(net: nn.Module, spec: ForeignSpec, x: Tensor) -> None:
    """The original network (its own neurons) on two images in the spec's step mode; when it fails there but runs
    in the other step mode, one line saying which ``--step-mode`` fits (and ``--output`` if it needs one too)."""
    def attempt(mode: str) -> BaseException | None:
        model = ForeignModel(copy.deepcopy(net), spec.framework, spec.T, mode, map_neurons=False, output=spec.output)
        try:
            with torch.inference_mode():
                model(x[:2])
        except Exception as e:  # the user's code may raise anything on the wrong input shape
            return e
        return None

    err = attempt(spec.step_mode)
    if err is None or isinstance(err, OutputError):
        if err is not None:
            raise err
        return
    other = next(m for m in STEP_MODES if m != spec.step_mode)
    other_err = attempt(other)
    if other_err is None or isinstance(other_err, OutputError):
        takes = "one time step [B, C, H, W] per call" if other == "single" else "all T steps [T, B, C, H, W] at once"
        also = f"; with it: {other_err}" if other_err is not None else ""
        raise BadSpec(f"the model fails as a {spec.step_mode}-step network ({_first_line(err)}) but runs as a "
                      f"{other}-step one, which takes {takes}: pass --step-mode {other}{also}")
    if isinstance(err, RobenchError):
        raise err
    raise BadSpec(f"the model fails on the test images as a {spec.step_mode}-step network, and as a {other}-step "
                  f"one: {_first_line(err)}")


def check_import(net: nn.Module, spec: ForeignSpec, x: Tensor, y: Tensor) -> ImportResult:
    """Run every check on ``net`` (weights loaded, eval mode; left unchanged) with images ``x`` ``[N, C, H, W]`` in
    ``[0, 1]`` and labels ``y`` ``[N]``; raise one line on the first failure."""
    check_runs(net, spec, x)
    rand = spec.encoding == "poisson"  # declared random: every comparison runs on the same seeded draws
    orig = ForeignModel(copy.deepcopy(net), spec.framework, spec.T, spec.step_mode, map_neurons=False,
                        output=spec.output, stochastic=rand)
    adapted = ForeignModel(copy.deepcopy(net), spec.framework, spec.T, spec.step_mode, output=spec.output,
                           stochastic=rand)
    _logits = _seeded_logits if rand else _plain_logits
    lo = _logits(orig, x)
    if lo.dim() != 2 or lo.shape[1] != spec.num_classes:
        raise BadSpec(f"the model returns {list(lo.shape[1:])} outputs per image; the dataset has "
                      f"{spec.num_classes} classes")
    la = _logits(adapted, x)
    if not torch.equal(la, _logits(adapted, x)):
        raise IntegrityError("two calls of the model on the same images gave different logits" +
                             (" under the same seed: its randomness does not come from torch's generator" if rand
                              else ": it keeps state the adapter cannot reset (a stateful model) or is random in "
                              "eval mode (a model whose forward samples: import it with --encoding poisson)"))
    if outputs_probabilities(adapted, x[:GRAD_IMAGES]):
        raise BadSpec("the model returns probabilities (in [0, 1], rows summing to 1); attacks need logits: "
                      "return the output before the softmax")
    match = _match(lo, la, adapted)
    n = min(GRAD_IMAGES, len(x))
    frac = zero_grad_fraction(adapted, x[:n], y[:n])
    if frac > ZERO_GRAD_MAX:
        raise IntegrityError(f"the input gradient (bptt) is exactly zero on {100 * frac:.0f}% of {n} images: the "
                             "spike function has no surrogate gradient (SpikingJelly's eval-mode trap: a plain step "
                             "in eval mode) or the model masks gradients; attacks on it would be blind")
    acc = accuracy(adapted, x, y)
    picked = f"logits: output {spec.output!r} of what the network returns; " if spec.output else ""
    note = (f"{picked}logits equal to the original's {match} on {len(x)} images; {adapted.describe()}; "
            f"input gradient zero on {100 * frac:.0f}% of {n} images (bptt)")
    return ImportResult(acc, note)
