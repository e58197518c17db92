"""Architecture registry and the SNN model contract (docs/evaluation.md, "The model contract").

``model(x)`` takes images ``[B, C, H, W]`` in ``[0, 1]`` and returns logits ``[B, K]``: the output layer's values
averaged over the T time steps. Normalisation and input coding live inside the model: ``direct`` (the image at
every step, deterministic) or ``poisson`` (Bernoulli spikes with probability = pixel at every step, a random
forward pass declared by its :class:`~robench.snn.encoding.PoissonEncoder`); membranes start at rest on every
call, so nothing survives between calls. Stateless layers run on all T steps at once with
time folded into the batch; only the neurons are sequential.

Examples:
    >>> cfg = ModelConfig(arch="vgg5", neuron="stable", T=4, width=0.25, fc=64)
    >>> model = build_model(cfg)
    >>> model(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import BadSpec
from ..registry import Registry
from .encoding import ENCODINGS, PoissonEncoder
from .neurons import SpikingNeuron, spiking_neurons

ARCHS: Registry[Callable[[ModelConfig], nn.Module]] = Registry("arch")
NEURONS = ("lif", "stable")


@dataclass
class ModelConfig:
    """Everything ``build_model`` needs; stored verbatim in a zoo card so a checkpoint rebuilds itself.

    Arguments:
        arch: a name from ``ARCHS`` (``vgg5``, ``vgg11``, ``wrn16``).
        neuron: ``lif`` or ``stable`` (DLIF, docs/method.md §2).
        T: time steps; width: channel multiplier; fc: classifier width (None: the arch's paper value).
        in_channels, image_size, num_classes, mean, std: from the dataset.
        tau, v_th, gamma: leak, threshold, surrogate half-width.
        encoding: ``direct`` (default) or ``poisson`` (rate-coded Bernoulli spikes; the model is stochastic).
    """

    arch: str = "vgg5"
    neuron: str = "lif"
    T: int = 4
    width: float = 1.0
    fc: int | None = None
    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    tau: float = 0.99
    v_th: float = 1.0
    gamma: float = 1.0
    mean: tuple[float, ...] = field(default_factory=lambda: (0.5,))
    std: tuple[float, ...] = field(default_factory=lambda: (0.5,))
    encoding: str = "direct"

    def __post_init__(self) -> None:
        ARCHS.get(self.arch)  # unknown arch -> error listing the choices
        self.mean, self.std = tuple(map(float, self.mean)), tuple(map(float, self.std))
        checks = [
            (self.neuron in NEURONS, f"--neuron {self.neuron!r}; choose from: {', '.join(NEURONS)}"),
            (isinstance(self.T, int) and self.T >= 1, f"-T {self.T!r}; must be an integer >= 1"),
            (_finite(self.width) and self.width > 0, f"--width {self.width!r}; must be > 0"),
            (self.fc is None or self.fc >= 1, f"--fc {self.fc!r}; must be an integer >= 1"),
            (self.in_channels >= 1 and self.num_classes >= 2, "dataset needs >= 1 channel, >= 2 classes"),
            (self.image_size >= 8, f"image size {self.image_size}; must be >= 8"),
            (_finite(self.tau) and 0 <= self.tau <= 1, f"--tau {self.tau!r}; must be in [0, 1]"),
            (_finite(self.v_th) and self.v_th > 0, f"--v-th {self.v_th!r}; must be > 0"),
            (_finite(self.gamma) and self.gamma > 0, f"--gamma {self.gamma!r}; must be > 0"),
            (len(self.mean) == len(self.std) == self.in_channels, "mean/std need one value per channel"),
            (all(s > 0 for s in self.std), "std must be > 0"),
            (self.encoding in ENCODINGS, f"--encoding {self.encoding!r}; choose from: {', '.join(ENCODINGS)}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise BadSpec(msg)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        if self.encoding == "direct":  # cards written before encodings existed stay byte-identical
            del d["encoding"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise BadSpec(f"unknown model config keys {sorted(unknown)}; accepted: {sorted(known)}")
        return cls(**d)


def _finite(v: float) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def build_model(cfg: ModelConfig | str, **kwargs) -> SNN:
    """Build any registered architecture from a config or a name plus keyword arguments."""
    if isinstance(cfg, str):
        cfg = ModelConfig(arch=cfg, **kwargs)
    elif kwargs:
        cfg = ModelConfig(**{**cfg.to_dict(), **kwargs})
    return ARCHS.get(cfg.arch)(cfg)


# ------------------------------------------------------------------------------------------ building blocks
class SeqFold(nn.Module):
    """Apply a stateless layer to all T steps at once: ``[T, B, ...] -> [T*B, ...] -> layer -> [T, B, ...]``."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.layer = layers[0] if len(layers) == 1 else nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        T, B = x.shape[:2]
        y = self.layer(x.flatten(0, 1))  # [T*B, ...]
        return y.view(T, B, *y.shape[1:])  # [T, B, ...]


class _AvgPool2x2(torch.autograd.Function):
    """``F.avg_pool2d(x, 2)`` whose backward needs only the input's shape and layout, so autograd keeps no copy
    of it; on even sizes the backward copies ``grad / 4`` into every window (no zero fill, no scatter)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.shape = x.shape
        ctx.layout = torch.channels_last if is_channels_last(x) else torch.contiguous_format
        return F.avg_pool2d(x, 2)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        H, W = ctx.shape[2:]
        if H % 2 or W % 2:  # odd sizes: the last row/column was dropped and gets no gradient
            like = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.layout)
            return torch.ops.aten.avg_pool2d_backward(grad, like, [2, 2], [2, 2], [0, 0], False, True, None)
        quarter = grad * 0.25  # exact (a power of two): the same values as aten's grad / 4
        if ctx.layout == torch.channels_last:  # the fastest copy into each 2x2 window for either layout
            return F.interpolate(quarter, scale_factor=2.0, mode="nearest")
        return quarter.repeat_interleave(2, dim=3).repeat_interleave(2, dim=2)


def is_channels_last(x: Tensor) -> bool:
    """True when a 4-d tensor is laid out channels-last (and not also plainly contiguous)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class AvgPool(nn.Module):
    """2x2 average pooling (stride 2) that saves no activation for backward: the gradient of an average pool
    does not depend on its input. Same values and gradients as ``nn.AvgPool2d(2)``; ``[N, C, H, W]``."""

    def forward(self, x: Tensor) -> Tensor:
        return _AvgPool2x2.apply(x)


def make_neuron(cfg: ModelConfig) -> SpikingNeuron:
    return SpikingNeuron(cfg.T, cfg.tau, cfg.v_th, cfg.gamma, stable=cfg.neuron == "stable")


def conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]


class SNN(nn.Module):
    """Normalise -> stem (conv+BN, computed once: the input is the same at every step) -> repeat over T ->
    body on ``[T, B, ...]`` -> head -> mean over T. With ``poisson`` coding: spikes ``[T, B, C, H, W]`` drawn from
    the image -> normalise -> stem on every step (time folded into the batch) -> body -> head -> mean over T."""

    def __init__(self, cfg: ModelConfig, stem: nn.Module, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.config = cfg
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, -1, 1, 1), persistent=False)
        self.stem, self.body, self.head = stem, body, head
        self.encoder = PoissonEncoder(cfg.T) if cfg.encoding == "poisson" else None
        # channels-last activations: mkldnn/cudnn convolutions, batch norm and pooling run on them without
        # reordering; the same values up to float rounding. False gives the plain NCHW layout.
        self.channels_last = True

    def forward(self, x: Tensor) -> Tensor:
        if self.encoder is not None:
            return self._forward_spikes(self.encoder(x))
        x = (x - self.mean) / self.std  # [B, C, H, W]
        layout = torch.channels_last if self.channels_last and x.dim() == 4 else torch.contiguous_format
        x = self.stem(x.contiguous(memory_format=layout))  # direct coding: the same stem output at every step
        x = x.contiguous(memory_format=layout)  # a 1-channel input can leave the stem in either layout
        x = x.unsqueeze(0).expand(self.config.T, *x.shape)  # [B, C', H, W] -> [T, B, C', H, W]
        x = self.head(self.body(x))  # [T, B, K]
        return x.mean(0)  # [B, K]

    def _forward_spikes(self, s: Tensor) -> Tensor:
        """Input spikes ``[T, B, C, H, W]`` -> logits ``[B, K]``: the stem runs on every step."""
        T, B = s.shape[:2]
        x = (s.flatten(0, 1) - self.mean) / self.std  # [T*B, C, H, W]
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        x = self.stem(x.contiguous(memory_format=layout)).contiguous(memory_format=layout)
        x = x.view(T, B, *x.shape[1:])  # [T, B, C', H, W]
        return self.head(self.body(x)).mean(0)  # [B, K]

    def last_neuron(self) -> SpikingNeuron:
        """The last spiking layer: where the MPPD regulariser reads its currents (docs/method.md §3)."""
        return spiking_neurons(self)[-1]


# ----------------------------------------------------------------------------------------------------- VGG
VGG_LAYOUTS = {
    "vgg5": ((64, "P", 128, 128, "P"), 1, 1024),
    "vgg11": ((64, "P", 128, 256, "P", 512, 512, 512, "P", 512, 512), 2, 4096),
}


def _vgg(cfg: ModelConfig, layout: tuple, n_fc: int, fc_default: int) -> SNN:
    ch = [max(1, round(c * cfg.width)) if c != "P" else c for c in layout]
    stem = nn.Sequential(*conv_bn(cfg.in_channels, ch[0]))
    body: list[nn.Module] = [make_neuron(cfg)]
    cin, size = ch[0], cfg.image_size
    for c in ch[1:]:
        if c == "P":
            body.append(SeqFold(AvgPool()))
            size //= 2
        else:
            body += [SeqFold(*conv_bn(cin, c)), make_neuron(cfg)]
            cin = c
    if size < 1:
        raise BadSpec(f"image size {cfg.image_size} is too small for {cfg.arch}")
    fc = cfg.fc or fc_default
    body += [SeqFold(nn.AdaptiveAvgPool2d(1), nn.Flatten())]  # [T, B, C]
    for i in range(n_fc):  # BN keeps the hidden layers firing: pooled spike rates are small inputs
        body += [SeqFold(nn.Linear(cin if i == 0 else fc, fc, bias=False), nn.BatchNorm1d(fc)),
                 make_neuron(cfg)]
    head = nn.Linear(fc if n_fc else cin, cfg.num_classes)
    model = SNN(cfg, stem, nn.Sequential(*body), head)
    _init(model)
    return model


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


@ARCHS.register("vgg5")
def vgg5(cfg: ModelConfig) -> SNN:
    """VGG-5 for quick runs: conv 64, pool, 128, 128, pool, linear fc, classes."""
    return _vgg(cfg, *VGG_LAYOUTS["vgg5"])


@ARCHS.register("vgg11")
def vgg11(cfg: ModelConfig) -> SNN:
    """VGG-11 of docs/method.md §1: conv 64, pool, 128, 256, pool, 512x3, pool, 512x2, linear fc, fc, classes."""
    return _vgg(cfg, *VGG_LAYOUTS["vgg11"])


# ---------------------------------------------------------------------------------------- WideResNet-16
class WideBlock(nn.Module):
    """Spiking basic block on ``[T, B, C, H, W]``: conv-BN-neuron-conv-BN, + shortcut, then neuron."""

    def __init__(self, cfg: ModelConfig, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = SeqFold(*conv_bn(cin, cout, stride))
        self.n1 = make_neuron(cfg)
        self.conv2 = SeqFold(*conv_bn(cout, cout))
        self.short = (
            SeqFold(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )
        self.n2 = make_neuron(cfg)

    def forward(self, x: Tensor) -> Tensor:
        return self.n2(self.conv2(self.n1(self.conv1(x))) + self.short(x))


@ARCHS.register("wrn16")
def wrn16(cfg: ModelConfig, depth: int = 16, widen: int = 4) -> SNN:
    """WideResNet-16-4: stem 16, three groups of (depth-4)/6 blocks at 16k, 32k, 64k channels."""
    n = (depth - 4) // 6
    w = [max(1, round(c * cfg.width)) for c in (16, 16 * widen, 32 * widen, 64 * widen)]
    stem = nn.Sequential(*conv_bn(cfg.in_channels, w[0]))
    body: list[nn.Module] = [make_neuron(cfg)]
    cin = w[0]
    for g, cout in enumerate(w[1:]):
        for i in range(n):
            body.append(WideBlock(cfg, cin, cout, 2 if (g > 0 and i == 0) else 1))
            cin = cout
    body.append(SeqFold(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    fc = cfg.fc
    if fc:  # optional spiking classifier layer before the output
        body += [SeqFold(nn.Linear(cin, fc, bias=False), nn.BatchNorm1d(fc)), make_neuron(cfg)]
    model = SNN(cfg, stem, nn.Sequential(*body), nn.Linear(fc or cin, cfg.num_classes))
    _init(model)
    return model


# -------------------------------------------------------------------------------------------------- metrics
def predict(model: nn.Module, x: Tensor, batch_size: int = 256, device: torch.device | None = None) -> Tensor:
    """Predicted classes ``[N]`` (on the CPU) of ``model`` for images ``x`` ``[N, C, H, W]`` in ``[0, 1]``."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            out.append(model(x[i : i + batch_size].to(device)).argmax(1).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> float:
    """Clean accuracy in [0, 1] of ``model`` on ``(x, y)``; prints nothing."""
    return float((predict(model, x, batch_size) == y.cpu()).float().mean()) if len(y) else 0.0
