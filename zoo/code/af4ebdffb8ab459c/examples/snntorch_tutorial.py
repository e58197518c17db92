"""A small snnTorch network for Fashion-MNIST written as snnTorch's tutorials write theirs: single-step, ``Leaky``
neurons with their default subtract reset and ``surrogate.fast_sigmoid()``, and an output layer of ``Leaky``
neurons that returns ``(spk, mem)``; the read-out is the output membrane.

Each call takes one time step ``[B, 1, 28, 28]`` in [0, 1] and returns ``(spk, mem)``, both ``[B, 10]``. robench
imports it with ``--step-mode single --output 1`` (the membrane: element 1 of the tuple) and averages it over T::

    robench zoo import runs/snntorch.pt --framework snntorch --entry examples.snntorch_tutorial:build \\
        --code-path . --step-mode single --output 1 -T 4 ...
"""

from __future__ import annotations

import snntorch as snn
import torch
from snntorch import surrogate
from torch import nn

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST


class Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - MEAN) / STD


def build(num_classes: int = 10, width: int = 16, beta: float = 0.9, slope: float = 25.0) -> nn.Sequential:
    """Conv-BN-Leaky blocks (width, 2*width) with 2x2 pooling, a hidden Leaky layer and a Leaky output layer."""
    spike_grad = surrogate.fast_sigmoid(slope=slope)

    def leaky(**kw: bool) -> snn.Leaky:
        return snn.Leaky(beta=beta, spike_grad=spike_grad, init_hidden=True, **kw)  # reset: subtract (default)

    return nn.Sequential(
        Normalize(),
        nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), leaky(), nn.MaxPool2d(2),  # 28 -> 14
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), leaky(),
        nn.MaxPool2d(2),  # 14 -> 7
        nn.Flatten(), nn.Linear(2 * width * 7 * 7, 128), leaky(),
        nn.Linear(128, num_classes), leaky(output=True),  # returns (spk, mem)
    )
