"""Small SpikingJelly networks for Fashion-MNIST with other neurons and surrogates than robench's own, written the
way SpikingJelly users write them (multi-step: ``[T, B, 1, 28, 28]`` in [0, 1] -> ``[T, B, 10]``).

``build(neuron="lif", surrogate="sigmoid", alpha=4.0)`` gives Conv-BN-neuron blocks with ``LIFNode`` (hard reset
to 0: robench maps it onto its own neuron) or ``ParametricLIFNode`` (a learnable leak: robench keeps it and swaps
its surrogate at attack time), firing through ``surrogate.Sigmoid(alpha)`` or ``surrogate.ATan(alpha)``.
``examples/train_foreign.py`` trains them; ``robench zoo import --framework spikingjelly --entry
examples.sj_nets:build --kwargs '{"neuron": "plif", "surrogate": "atan", "alpha": 2.0}' --code-path .`` imports.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import layer, neuron, surrogate
from torch import nn

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST
SURROGATES = {"sigmoid": surrogate.Sigmoid, "atan": surrogate.ATan}


class Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - MEAN) / STD


def spiking(kind: str, fn: str, alpha: float, tau: float) -> nn.Module:
    sg = SURROGATES[fn](alpha=alpha)
    if kind == "lif":
        return neuron.LIFNode(tau=tau, surrogate_function=sg, detach_reset=True, step_mode="m")
    if kind == "plif":
        return neuron.ParametricLIFNode(init_tau=tau, surrogate_function=sg, detach_reset=True, step_mode="m")
    raise ValueError(f"neuron {kind!r}; choose lif or plif")


def build(num_classes: int = 10, width: int = 16, neuron: str = "lif", surrogate: str = "sigmoid",
          alpha: float = 4.0, tau: float = 2.0) -> nn.Sequential:
    """Conv-BN-neuron blocks (width, 2*width, 2*width) with 2x2 pooling, then a linear read-out: ``[T, B, K]``."""
    w1, w2 = width, 2 * width

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [layer.Conv2d(cin, cout, 3, padding=1, bias=False, step_mode="m"),
                layer.BatchNorm2d(cout, step_mode="m"), spiking(neuron, surrogate, alpha, tau),
                layer.MaxPool2d(2, step_mode="m")]

    return nn.Sequential(
        Normalize(),
        *block(1, w1), *block(w1, w2), *block(w2, w2),  # 28 -> 14 -> 7 -> 3
        layer.Flatten(step_mode="m"),
        layer.Linear(w2 * 3 * 3, num_classes, step_mode="m"),
    )
