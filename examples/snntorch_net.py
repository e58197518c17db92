"""A small snnTorch convolutional network for Fashion-MNIST, written the way snnTorch users write theirs.

Single-step: each call takes one time step ``[B, 1, 28, 28]`` in [0, 1] and returns ``[B, 10]``; the ``Leaky``
neurons keep their membrane between calls (``init_hidden=True``) and reset to zero after a spike. robench calls it
T times per image and resets every neuron before each image (nested ones too). ``build`` is the entry point of
``robench zoo import --framework snntorch --step-mode single --entry examples.snntorch_net:build --code-path .``.
"""

from __future__ import annotations

import snntorch as snn
from snntorch import surrogate
from torch import nn


def build(num_classes: int = 10, width: int = 8, beta: float = 0.9) -> nn.Sequential:
    """Conv-BN-Leaky blocks (width, 2*width) with 2x2 pooling, then a linear read-out: ``[B, K]`` per step."""
    spike_grad = surrogate.fast_sigmoid(slope=25)

    def leaky() -> snn.Leaky:
        return snn.Leaky(beta=beta, spike_grad=spike_grad, init_hidden=True, reset_mechanism="zero")

    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), leaky(), nn.MaxPool2d(2),  # 28 -> 14
        nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), leaky()),
        nn.MaxPool2d(2),  # 14 -> 7
        nn.Flatten(), nn.Linear(2 * width * 7 * 7, num_classes),
    )
