"""One cell: one attack through one gradient path on a model's images, every adversarial example verified.

A cell returns a per-sample vector ``correct[n]``: a sample counts as robust when it is classified correctly both
clean and under attack (the AutoAttack convention), so only initially correct samples are attacked, and robust
accuracy never exceeds clean accuracy. An invalid example (:mod:`robench.eval.verify`) counts as robust.

The cell keeps work to what is needed: clean predictions under ``torch.inference_mode``, every batch gathered on
the device, parameters that do not require gradients during attacks (only the input does), and a batch size
chosen automatically unless given (:func:`auto_batch_size`).

Examples:
    >>> correct = run_cell(model, AttackSpec("pgd", eps=8 / 255), "rate", x, y, seed=0)   # bool [N]
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..attacks import AttackSpec, build
from ..dist import WHOLE, Part, agree_min, all_sum, batch_seed, batches, gather, gather_objects
from ..runtime import seed_everything
from ..snn.encoding import Averaged, sampler
from ..snn.pathkeys import GradPath
from ..snn.paths import grad_mode, parse_path
from .stochastic import clean_correct_draws, verify_draws
from .verify import check_examples

CPU_CAP, CUDA_CAP = 256, 4096  # larger CPU batches do not run faster; the GPU cap keeps one launch modest


# ------------------------------------------------------------------------------------------ one cell
@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Parameters need no gradient while attacking (only the input does): less memory and work."""
    saved = [p.requires_grad for p in model.parameters()]
    try:
        model.requires_grad_(False)
        yield model
    finally:
        for p, r in zip(model.parameters(), saved, strict=True):
            p.requires_grad_(r)


def clean_correct(model: nn.Module, x: Tensor, y: Tensor, batch_size: int, part: Part = WHOLE) -> Tensor:
    """Per-sample clean correctness ``bool [N]`` (on ``x``'s device), under ``torch.inference_mode``; torchrun
    ranks each take every K-th batch and gather (a ``--shard`` computes all: it needs the global todo list)."""
    model.eval()
    with torch.inference_mode():
        out = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for idx in batches(torch.arange(len(x), device=x.device), batch_size, part if part.collective else WHOLE):
            out[idx] = model(x[idx]).argmax(1) == y[idx]
    return gather(out, part)


@dataclass
class CellOutcome:
    """What one cell's attack did: ``correct`` ``bool [N]`` (robust samples, on the CPU), the number of
    ``invalid`` adversarial examples (failed verification, so counted robust), and with ``keep_adv`` the verified
    examples ``x_adv`` ``[m, C, H, W]`` float32 of the broken samples and their ``index`` ``[m]`` int64 into x."""

    correct: Tensor
    invalid: int = 0
    x_adv: Tensor | None = None
    index: Tensor | None = None
    single: Tensor | None = None  # stochastic models: adversarial correct under one fresh draw, bool [N]


def run_cell(model: nn.Module, spec: AttackSpec, grad: str | GradPath, x: Tensor, y: Tensor, seed: int = 0,
             batch_size: int | None = None, device: str | torch.device | None = None,
             clean: Tensor | None = None, part: Part = WHOLE) -> Tensor:
    """Per-sample robustness ``bool [N]`` (on the CPU) of ``model`` under ``spec`` with gradient mode ``grad``:
    :func:`attack_cell`'s ``correct`` (verified: an invalid adversarial example counts as robust)."""
    return attack_cell(model, spec, grad, x, y, seed, batch_size, device, clean, part=part).correct


def attack_cell(model: nn.Module, spec: AttackSpec, grad: str | GradPath, x: Tensor, y: Tensor, seed: int = 0,
                batch_size: int | None = None, device: str | torch.device | None = None,
                clean: Tensor | None = None, keep_adv: bool = False, part: Part = WHOLE) -> CellOutcome:
    """Attack the clean-correct samples of ``x`` and verify every example (:mod:`robench.eval.verify`).

    ``model`` must already be on ``device`` (default: its parameters' device); ``x`` ``[N, C, H, W]`` in ``[0, 1]``
    and ``y`` ``[N]`` are moved there (a no-op when they are). ``grad``: a gradient path (text is parsed here, once;
    a :class:`GradPath` is used as it is) or ``"none"`` for a gradient-free attack. ``clean``: the clean ``correct``
    vector when already known. ``keep_adv``: also return the verified examples of the broken samples (on the CPU).
    The initially correct images are attacked in global batches of ``batch_size``; before each, torch is seeded from
    ``seed``, the cell (attack, params, eps, ``grad``) and the batch's first image index
    (:func:`robench.dist.batch_seed`), so a cell is reproducible and its outcome does not depend on ``part``:
    torchrun ranks run every K-th batch and gather; a ``--shard`` returns its own batches' bits and examples only.
    A spec with ``eot`` (a stochastic model, :mod:`robench.eval.stochastic`) attacks the K-draw average and is
    verified with ``draws`` fresh draws (``single``: with one).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    model.eval()
    bs = batch_size or agree_min(auto_batch_size(model, x, device), part)
    eot = getattr(spec, "eot", None)
    clean = (_clean_of(model, spec, x, y, bs, seed, part) if clean is None else clean).to(device)
    path = None if grad == "none" else parse_path(grad)
    ctx = nullcontext if path is None else (lambda: grad_mode(model, path))
    correct = torch.zeros_like(clean)  # set on this part's images only: the parts' vectors are disjoint
    single = torch.zeros_like(clean)
    name = getattr(spec, "name", type(spec).__name__)
    ball = getattr(spec, "budgeted", not getattr(spec, "gradient_free", False))  # square: no gradient, L-inf ball
    norm = getattr(spec, "norm", "Linf")
    invalid, kept, index = 0, [], []
    tag = _cell_tag(spec, name, grad)
    with frozen(model), sampler(model, getattr(spec, "sampler", None)):
        attack = build(spec, model if eot is None else Averaged(model, eot))
        todo = clean.nonzero().flatten()  # only initially correct samples are attacked
        for idx in batches(todo, bs, part, getattr(spec, "min_batches", 1)):  # never a function of K
            seed_everything(batch_seed(seed, tag, int(idx[0])))  # never from the rank or the batch position
            xb, yb = x[idx], y[idx]
            with ctx():
                x_adv = attack(xb, yb)
            if eot is None:
                v = check_examples(model, xb, yb, x_adv, getattr(spec, "eps", 0.0), ball, name, norm)
            else:  # fresh draws, seeded apart from the attack's
                vd = verify_draws(model, xb, yb, x_adv, spec, batch_seed(seed, tag + "|verify", int(idx[0])),
                                  ball, name)
                v, single[idx] = vd.averaged, ~vd.single.broken  # an invalid example stays robust
            correct[idx] = ~v.broken
            invalid += int(v.invalid.sum())
            if keep_adv and v.broken.any():
                kept.append(x_adv.detach().to(device)[v.broken].float().cpu())
                index.append(idx[v.broken].cpu())
    out = CellOutcome(gather(correct, part).cpu(), int(all_sum([invalid], part)[0]),
                      single=gather(single, part).cpu() if eot is not None else None)
    if keep_adv:
        out.x_adv, out.index = _gathered_examples(kept, index, x.shape[1:], part)
    return out


def _clean_of(model: nn.Module, spec: AttackSpec, x: Tensor, y: Tensor, batch_size: int, seed: int,
              part: Part) -> Tensor:
    """The clean ``correct`` vector: one forward per image, or ``draws`` fresh draws for a spec with ``eot`` (a
    stochastic model)."""
    if getattr(spec, "eot", None) is None:
        return clean_correct(model, x, y, batch_size, part)
    return clean_correct_draws(model, x, y, batch_size, spec.draws, seed, part)


def _cell_tag(spec: AttackSpec, name: str, grad: str | GradPath) -> str:
    """The cell's part of every batch seed: attack, params, eps and the path as given (a GradPath renders as its
    key, what sweeps and cascades give)."""
    return f"{name}|{spec.params_json()}|{spec.eps!r}|{grad}" if isinstance(spec, AttackSpec) else f"{name}|{grad}"


def _gathered_examples(kept: list[Tensor], index: list[Tensor], shape: torch.Size, part: Part
                       ) -> tuple[Tensor, Tensor]:
    """Every rank's verified examples ``[m, *shape]`` and their image indices ``[m]``, in image order."""
    kept = [t for ks in gather_objects(kept, part) for t in ks]  # every rank's examples (torchrun)
    index = [t for ix in gather_objects(index, part) for t in ix]
    x_adv = torch.cat(kept) if kept else torch.zeros(0, *shape)
    idx = torch.cat(index).long() if index else torch.zeros(0, dtype=torch.long)
    order = idx.argsort()  # image order, whatever the ranks
    return x_adv[order], idx[order]


# ------------------------------------------------------------------------------------------ batch size
def activation_bytes(model: nn.Module, x1: Tensor) -> int:
    """Bytes of every leaf module's output for one sample ``x1`` ``[1, C, H, W]`` (T steps included)."""
    total = 0

    def hook(_m, _inp, out) -> None:
        nonlocal total
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, Tensor):
                total += t.numel() * t.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.inference_mode():
            model(x1)
    finally:
        for h in handles:
            h.remove()
    return max(total, 1)


def _memory_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        avail = 2**32
    return int(min(avail * 0.25, 4 * 2**30))


def auto_batch_size(model: nn.Module, x: Tensor, device: torch.device | None = None) -> int:
    """The largest power of two whose attack step fits half the free GPU memory (a quarter of the free RAM,
    at most 4 GiB, on the CPU), estimating 4x a sample's forward activations (saved activations, their
    gradients, the attack's buffers); capped at 256 on the CPU, 4096 on a GPU, and at ``len(x)``."""
    device = device or x.device
    need = 4 * activation_bytes(model, x[:1].to(device))
    fit = max(1, _memory_budget(device) // need)
    bs = 1 << (int(fit).bit_length() - 1)
    return max(1, min(bs, CUDA_CAP if device.type == "cuda" else CPU_CAP, len(x)))
