"""One call from Python: the reliable protocol on any PyTorch model that maps images in [0, 1] to logits.

:func:`evaluate` takes a model (an ``nn.Module`` or a zoo id) and data, runs the ``reliable`` cascade
(:func:`robench.eval.cascade.run_reliable`) and returns an :class:`EvalResult`: robust accuracy with its Wilson 95%
interval, the per-image mask, the per-stage table, the flags, optionally the verified adversarial examples
(``return_adv=True``), and ``to_dict()`` / ``to_json()``. Nothing is
needed beyond the model and the data: the model's identity is the sha256 of its weights, the data's name the
sha256 of the images and labels. ``results=FILE`` stores every finished stage there, so an interrupted call
resumes. :func:`benchmark` also loads the data, RobustBench-style.

SpikingJelly and snnTorch networks go through the zoo's adapter (:class:`robench.zoo.adapters.ForeignModel`):
``framework="spikingjelly"`` with ``T`` and ``step_mode`` ("multi": ``[T, B, C, H, W] -> [T, B, K]``; "single":
``[B, C, H, W] -> [B, K]`` once per step). robench's own models, plain PyTorch SNNs and non-spiking networks
are used as they are.

Examples:
    >>> result = evaluate(model, x, y, eps=8 / 255)          # x [N, C, H, W] in [0, 1], y [N]
    >>> result.robust_acc, result.interval, result.flags
    >>> evaluate(model, x, y, return_adv=True).adv.x_adv     # [m, C, H, W]: the m images it broke, verified
    >>> result = benchmark("fmnist-vgg11-lif-clean", n=100)   # the zoo entry on its own test images
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from .attacks import EPS_MAX, check_norm
from .eps import parse_eps
from .errors import BadSpec
from .eval.adversarial import AdvExamples
from .eval.cascade import as_protocol, run_reliable
from .eval.checks import DOC, eval_determinism, outputs_probabilities
from .eval.stagelist import Protocol, Stage, load
from .eval.sweep import Data, Target, load_data, load_targets
from .results.stats import decode_mask, wilson
from .results.store import ResultsStore

__all__ = ["EvalResult", "evaluate", "benchmark"]
CHECK_IMAGES = 16  # images used to check the model contract before any attack


@dataclass
class EvalResult:
    """What :func:`evaluate` returns.

    ``robust_acc`` (fraction of all ``n`` images classified correctly both clean and under every stage),
    ``interval`` its Wilson 95% interval, ``robust_mask`` ``bool [n]`` (True: image i stayed robust),
    ``stages`` one row per cascade stage (``stage, attack, grad, robust_acc, broken, seconds``), ``flags`` the
    findings' names (``not-converged``, ``gradient-masking``, ``invalid-adv``, ``own-gradient`` for paths that
    did not apply) with ``messages`` their one-line explanations, ``records`` the results rows, and with
    ``return_adv`` ``adv``: the verified adversarial examples of exactly the images the cascade broke
    (:class:`~robench.eval.adversarial.AdvExamples`: ``x_adv [m, C, H, W]``, ``index [m]``, ``stage``)."""

    model: str
    sha256: str
    dataset: str
    n: int
    eps: float
    eps_str: str
    protocol: str
    clean_acc: float
    robust_acc: float
    interval: tuple[float, float]
    robust_mask: Tensor
    stages: pd.DataFrame
    flags: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    seconds: float = 0.0
    records: pd.DataFrame | None = field(default=None, repr=False)
    norm: str = "Linf"
    adv: AdvExamples | None = field(default=None, repr=False)
    eot: int | None = None  # a stochastic model: draws averaged per gradient step
    draws: int | None = None  # ... and fresh draws averaged per verdict

    @property
    def clean_count(self) -> int:
        return int(round(self.clean_acc * self.n))

    @property
    def robust_count(self) -> int:
        return int(self.robust_mask.sum())

    def to_dict(self) -> dict:
        """Plain JSON types: fractions in [0, 1], the mask as the hex of ``numpy.packbits(mask,
        bitorder="little")`` (the results files' encoding); of the adversarial examples only their count
        (``adv_count``, None when they were not asked for) and indices: the tensors stay in ``adv``."""
        mask = self.robust_mask.cpu().numpy().astype(bool)
        return {
            "model": self.model, "sha256": self.sha256, "dataset": self.dataset, "n": self.n, "eps": self.eps,
            "eps_str": self.eps_str, "norm": self.norm, "protocol": self.protocol, "eot": self.eot,
            "draws": self.draws, "clean_acc": self.clean_acc,
            "clean_count": self.clean_count, "robust_acc": self.robust_acc, "robust_count": self.robust_count,
            "robust_ci": list(self.interval),
            "robust_mask": np.packbits(mask, bitorder="little").tobytes().hex(),
            "stages": [{k: _plain(v) for k, v in r.items()} for r in self.stages.to_dict("records")],
            "flags": list(self.flags), "messages": list(self.messages), "seconds": round(self.seconds, 3),
            "adv_count": None if self.adv is None else len(self.adv),
            "adv_index": None if self.adv is None else self.adv.index.tolist(),
        }

    def to_json(self, path: str | Path | None = None, indent: int = 2) -> str:
        """The result as JSON text; with ``path``, also written there."""
        text = json.dumps(self.to_dict(), indent=indent) + "\n"
        if path is not None:
            Path(path).write_text(text)
        return text

    def __str__(self) -> str:
        lo, hi = self.interval
        budget = self.eps_str if self.norm == "Linf" else f"{self.eps_str} ({self.norm})"
        if self.eot is not None:
            budget += f", EOT {self.eot} draws per step, {self.draws} fresh per verdict"
        head = (f"{self.model} on {self.dataset} (n = {self.n}), eps {budget}, {self.protocol}: clean "
                f"{100 * self.clean_acc:.1f}%, robust {100 * self.robust_acc:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]")
        table = self.stages.assign(robust_acc=(100 * self.stages["robust_acc"]).round(1)).to_string(index=False)
        flags = "flags: " + (", ".join(self.flags) if self.flags else "none")
        adv = [] if self.adv is None else [f"adversarial examples: {len(self.adv)} verified (result.adv)"]
        return "\n".join([head, table, flags, *adv])


def _plain(v: object) -> object:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if math.isnan(v) else float(v)
    return v


# ------------------------------------------------------------------------------------------------ checks
def _as_data(x: object, y: object) -> tuple[Tensor, Tensor]:
    """``x`` ``[N, C, H, W]`` floats in [0, 1] and ``y`` ``[N]`` integer labels, or one line saying what is wrong."""
    if x is None or y is None:
        raise BadSpec("evaluate(model, x, y): give images x [N, C, H, W] in [0, 1] and labels y [N] "
                      "(or a zoo id, or benchmark(...) to load a dataset)")
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if not x.is_floating_point():
        raise BadSpec(f"x has dtype {x.dtype}; accepted: floating-point images in [0, 1] (divide uint8 by 255)")
    if x.dim() != 4:
        raise BadSpec(f"x has shape {tuple(x.shape)}; accepted: images [N, C, H, W]")
    if y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool:
        raise BadSpec(f"y has shape {tuple(y.shape)} and dtype {y.dtype}; accepted: integer class labels [N]")
    if len(x) != len(y):
        raise BadSpec(f"x holds {len(x)} images but y {len(y)} labels; they must match")
    if len(x) == 0:
        raise BadSpec("x holds no images; give at least one")
    if not torch.isfinite(x).all():
        raise BadSpec("x contains NaN or Inf; accepted: finite values in [0, 1]")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise BadSpec(f"x ranges over [{lo:.3g}, {hi:.3g}]; accepted: images in [0, 1] (normalise inside the "
                      "model)")
    if int(y.min()) < 0:
        raise BadSpec(f"y holds the label {int(y.min())}; accepted: class indices 0..K-1")
    return x.float(), y.long()


def _check_model(model: nn.Module, x: Tensor, y: Tensor) -> None:
    """The model contract on a few images: logits ``[B, K]`` with K above every label, no state kept between
    calls, no probabilities."""
    xs = x[:CHECK_IMAGES]
    model.eval()
    try:
        with torch.inference_mode():
            out = model(xs)
    except RuntimeError as e:
        first = (str(e).strip().splitlines() or [""])[0][:150]
        raise BadSpec(f"the model does not take images {tuple(x.shape[1:])}: {first}") from None
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != len(xs):
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise BadSpec(f"the model returned {shape} for {len(xs)} images; accepted: logits [B, K] (a SpikingJelly "
                      "or snnTorch network: pass framework=..., T=... and step_mode=...)")
    if int(y.max()) >= out.shape[1]:
        raise BadSpec(f"the model has {out.shape[1]} outputs, but y holds the label {int(y.max())}")
    if not eval_determinism(model, xs):
        raise BadSpec("two calls of the model on the same images gave different logits: it keeps state between "
                      "calls (reset it inside forward) or is random in eval mode")
    if outputs_probabilities(model, xs):
        raise BadSpec("the model returns probabilities (in [0, 1], rows summing to 1); attacks need logits: "
                      "return the output before the softmax")


def _as_k255(eps: float | str) -> float | str:
    """A float budget that is k/255 for a whole k < 255 as the string ``"k/255"`` (how the CLI and the results
    show it): ``8 / 255`` and ``"8/255"`` are then the same cells."""
    if isinstance(eps, float) and 0 < eps < 1:
        k = round(eps * 255)
        if eps == k / 255:
            return f"{k}/255"
    return eps


def weights_sha256(model: nn.Module) -> str:
    """The model's identity without a card: sha256 over its class name and every parameter and buffer."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def data_name(x: Tensor, y: Tensor) -> str:
    """``data:<sha256 prefix>`` of the images and labels: the results' dataset column for data given directly."""
    h = hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes())
    h.update(y.detach().cpu().contiguous().numpy().tobytes())
    return f"data:{h.hexdigest()[:12]}"


# -------------------------------------------------------------------------------------------- the calls
def default_stages(norm: str = "Linf") -> Protocol:
    """The newest ``reliable`` stage list for ``norm`` at its own budget (:func:`evaluate` re-targets it to
    ``eps``); a norm without a list is one BadSpec line."""
    return load("reliable", norm=norm)


def _wrap(model: nn.Module, framework: str | None, T: int | None, step_mode: str) -> nn.Module:
    if framework is None:
        return model
    from .zoo.adapters import ForeignModel

    if T is None or T < 1:
        raise BadSpec(f"framework={framework!r} needs T, the number of time steps (an integer >= 1)")
    return ForeignModel(model, framework, T, step_mode)


def _target(model: nn.Module | str, x, y, name: str | None, framework: str | None, T: int | None,
            step_mode: str, zoo: str | Path, trust_code: bool, n: int | None, split: str,
            data_dir: str | Path | None) -> tuple[Target, Data]:
    if isinstance(model, str):
        from .zoo import select

        cards = select(model, zoo)
        if len(cards) != 1:
            raise BadSpec(f"model {model!r} matches {len(cards)} zoo entries ({', '.join(c.id for c in cards)}); "
                          "give one id")
        target = load_targets(cards, zoo, trust_code=trust_code)[0]
        if x is None and y is None:
            data, _ = load_data(target.dataset, data_dir, n or 1000, split)
            return target, data
        x, y = _as_data(x, y)
        return target, Data(data_name(x, y), x, y)
    if not isinstance(model, nn.Module):
        raise BadSpec(f"model is a {type(model).__name__}; accepted: a torch.nn.Module or a zoo id")
    x, y = _as_data(x, y)
    if n is not None:
        x, y = x[:n], y[:n]
    net = _wrap(model, framework, T, step_mode)
    return Target(name or type(model).__name__, weights_sha256(net), net, "data"), Data(data_name(x, y), x, y)


def evaluate(model: nn.Module | str, x: Tensor | None = None, y: Tensor | None = None,
             eps: float | str = 8 / 255, *, name: str | None = None, framework: str | None = None,
             T: int | None = None, step_mode: str = "multi", results: str | Path | None = None,
             seed: int = 0, batch_size: int | None = None, device: str = "auto",
             n: int | None = None, split: str = "test", data_dir: str | Path | None = None,
             zoo: str | Path = "zoo", trust_code: bool = False, stages: Protocol | Sequence[Stage] | None = None,
             norm: str | None = None, return_adv: bool = False, save_adv: str | Path | None = None,
             eot: int | None = None, draws: int | None = None, sampler: str | None = None,
             progress: Callable[[dict], None] | None = None) -> EvalResult:
    """Run the ``reliable`` protocol on ``model`` and return its :class:`EvalResult`.

    Arguments:
        model: an ``nn.Module`` mapping images in [0, 1] to logits (robench's, a plain PyTorch SNN or any
            network), a SpikingJelly/snnTorch network with ``framework``, ``T`` and ``step_mode``, or a zoo id.
        x, y: images and labels; for a zoo id they default to the first ``n`` images of its dataset's ``split``.
        eps: the budget in ``norm``, a number or a string such as ``"8/255"``.
        name: the model's name in results and JSON (default: its class name, or the zoo id).
        results: a results CSV: every finished stage is stored there and a rerun resumes (default: nothing
            written).
        seed, batch_size, device: the cascade's seed, images per batch (None: auto), ``auto``/``cpu``/``cuda``.
        stages: another protocol or stage list (default: the newest ``reliable`` list for ``norm``).
        norm: the threat model (default: the stages' own, else L-inf); a norm no list is for is refused.
        return_adv: also return the verified adversarial examples (``result.adv``); resuming from a results file
            needs ``save_adv`` too. save_adv: a folder that gets them as files (``robench verify-adv`` checks them).
        eot, draws, sampler: a stochastic model (one that samples in its forward pass, e.g. Poisson coding): K
            draws averaged per gradient step (default 8), M fresh draws per verdict (default 16), the gradient
            estimator through the draws (``rate`` or ``ste``); every stage runs so (EOT). Refused for a
            deterministic model.

    Shape:
        x ``[N, C, H, W]`` in ``[0, 1]``; y ``[N]``; the result's ``robust_mask`` ``[N]``.

    Examples:
        >>> result = evaluate(model, x, y, eps="8/255", results="results/mine.csv")
        >>> print(result); result.to_json("mine.json")
    """
    chosen = _stages(stages, norm)
    budgets = parse_eps(_as_k255(eps) if chosen.norm == "Linf" else eps, "eps", EPS_MAX[chosen.norm])
    if len(budgets) != 1:
        raise BadSpec(f"eps {eps!r}: give one budget, not {len(budgets)}")
    (eps_v, eps_s), = budgets
    target, data = _target(model, x, y, name, framework, T, step_mode, zoo, trust_code, n, split, data_dir)
    target.dataset = data.name
    _check_model(target.model, data.x, data.y)
    plan = chosen.at(eps_v, eps_s)
    store = ResultsStore(results) if results is not None else None
    if store is not None:
        Path(results).parent.mkdir(parents=True, exist_ok=True)
        store.check_writable()
    ev = run_reliable([target], data, store, plan, seed=seed, batch_size=batch_size, device=device,
                      progress=progress, save_adv=save_adv, return_adv=return_adv, eot=eot, draws=draws,
                      sampler=sampler)
    result = _result(target, ev.records, ev.findings)
    result.norm, result.adv = plan.norm, ev.adv.get(target.id)
    return result


def _stages(stages: Protocol | Sequence[Stage] | None, norm: str | None) -> Protocol:
    """The protocol to run: ``stages`` (a hand list becomes a version-1 protocol) or the newest ``reliable``
    list for ``norm``; a ``norm`` other than the stages' own is one BadSpec line."""
    want = None if norm is None else check_norm(norm, "norm")
    if stages is None:
        return default_stages(want or "Linf")
    p = stages if isinstance(stages, Protocol) else as_protocol(stages)
    if want is not None and p.norm != want:
        raise BadSpec(f"norm {want!r}, but the stages given are for {p.norm}")
    return p


def benchmark(model: nn.Module | str, dataset: str = "fashion-mnist", *, n: int = 1000, eps: float | str = 8 / 255,
              split: str = "test", data_dir: str | Path | None = None, **kwargs) -> EvalResult:
    """RobustBench-style: load the first ``n`` images of ``dataset``'s ``split`` (the shipped Fashion-MNIST
    subset when the full set is missing), then :func:`evaluate`. ``kwargs`` go to :func:`evaluate`."""
    data, _ = load_data(dataset, data_dir, n, split)
    return evaluate(model, data.x, data.y, eps, **kwargs)


# ------------------------------------------------------------------------------------------------ result
def _result(target: Target, records: pd.DataFrame, findings: Sequence) -> EvalResult:
    rows = records.to_dict("records")
    params = [json.loads(r["params"]) for r in rows]
    whole, wp = next((r, p) for r, p in zip(rows, params, strict=True) if p.get("stage") == "all")
    n = int(whole["n"])
    mask = torch.from_numpy(decode_mask(whole["robust_mask"], n, int(whole["robust_count"])).copy())
    table, prev, notes = [], int(whole["clean_count"]), []
    for r, p in zip(rows, params, strict=True):
        if p.get("stage") in ("all", "probe", None) or not str(r.get("robust_mask") or ""):
            continue
        table.append({"stage": p.get("stage"), "attack": p.get("attack", r["attack"]), "grad": r["grad"],
                      "robust_acc": float(r["robust_acc"]), "broken": prev - int(r["robust_count"]),
                      "seconds": float(r["seconds"])})
        prev = int(r["robust_count"])
        if p.get("path_requested"):  # a path the model cannot take: the stage ran through another, said so
            notes.append(f"path-substituted: stage {p.get('stage')} asked for {p['path_requested']} and ran "
                         f"through {r['grad']} (the path does not apply to this model)")
    names = [f for r in rows for f in str(r.get("flags") or "").split(";") if f]
    messages = [f.line() for f in findings] or [f"{f}: {DOC.get(f.split('=')[0], 'flagged')}" for f in names]
    names += [t.split(":")[0] for t in notes]
    version, suite = wp.get("version"), wp.get("suite", "reliable")
    eot, draws = wp.get("eot"), wp.get("draws")
    return EvalResult(
        model=target.id, sha256=target.sha256, dataset=str(whole["dataset"]), n=n, eps=float(whole["eps"]),
        eps_str=str(whole["eps_str"]), protocol=f"{suite} v{version}" if version else suite,
        clean_acc=float(whole["clean_acc"]), robust_acc=float(whole["robust_acc"]),
        interval=wilson(int(whole["robust_count"]), n), robust_mask=mask,
        stages=pd.DataFrame(table, columns=["stage", "attack", "grad", "robust_acc", "broken", "seconds"]),
        flags=list(dict.fromkeys(names)), messages=messages + list(dict.fromkeys(notes)),
        seconds=float(whole["seconds"]), records=records, eot=eot, draws=draws)
