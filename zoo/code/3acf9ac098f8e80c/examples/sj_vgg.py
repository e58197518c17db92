"""A small SpikingJelly VGG for Fashion-MNIST, written the way SpikingJelly users write their models.

Multi-step: it takes ``[T, B, 1, 28, 28]`` images in [0, 1] and returns ``[T, B, 10]`` (a linear read-out at every
step; robench averages it over T). Normalisation is inside the model. ``build`` is the entry point that
``robench zoo import --framework spikingjelly --entry examples.sj_vgg:build --code-path .`` calls.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import layer, neuron, surrogate
from torch import nn

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST


class Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - MEAN) / STD


def block(cin: int, cout: int, tau: float) -> list[nn.Module]:
    return [layer.Conv2d(cin, cout, 3, padding=1, bias=False, step_mode="m"), layer.BatchNorm2d(cout, step_mode="m"),
            neuron.LIFNode(tau=tau, surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m")]


def build(num_classes: int = 10, width: int = 16, tau: float = 2.0) -> nn.Sequential:
    """Conv-BN-LIF blocks (width, 2*width, 2*width) with 2x2 pooling, then a linear read-out: ``[T, B, K]``."""
    w1, w2 = width, 2 * width
    return nn.Sequential(
        Normalize(),
        *block(1, w1, tau), layer.MaxPool2d(2, step_mode="m"),  # 28 -> 14
        *block(w1, w2, tau), layer.MaxPool2d(2, step_mode="m"),  # 14 -> 7
        *block(w2, w2, tau), layer.MaxPool2d(2, step_mode="m"),  # 7 -> 3
        layer.Flatten(step_mode="m"),
        layer.Linear(w2 * 3 * 3, num_classes, step_mode="m"),
    )
