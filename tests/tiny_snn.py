"""A tiny spiking MLP trained in a few seconds on a separable 4-class 8x8 task, shared by the attack tests."""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robench.snn.neurons import SpikingNeuron

EPS = 0.1  # the budget at which the trained model is neither robust nor broken everywhere (about 70 % robust)


class TinySNN(nn.Module):
    """Linear -> LIF (T steps, triangle surrogate) -> linear readout averaged over T: ``[B, 1, 8, 8] -> [B, K]``."""

    def __init__(self, classes: int = 4, T: int = 4, hidden: int = 32) -> None:
        super().__init__()
        self.T = T
        self.fc1, self.lif, self.fc2 = nn.Linear(64, hidden), SpikingNeuron(T), nn.Linear(hidden, classes)

    def forward(self, x: Tensor) -> Tensor:
        cur = self.fc1(x.flatten(1))  # [B, H]
        spikes = self.lif(cur.unsqueeze(0).expand(self.T, *cur.shape))  # [T, B, H]
        return self.fc2(spikes).mean(0)  # [B, K]


def quadrants(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Class c (0..3) is 0.3 brighter in quadrant c; images ``[n, 1, 8, 8]`` in [0, 1], labels ``[n]``."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.6
    for c in range(4):
        r, q = divmod(c, 2)
        x[y == c, :, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4] += 0.3
    return x.clamp(0, 1), y


@lru_cache(maxsize=1)
def trained(steps: int = 200) -> tuple[TinySNN, Tensor, Tensor]:
    """The model trained with Adam for ``steps`` batches (deterministic: one thread), in eval mode, and 64 test
    images."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(steps)
    finally:
        torch.set_num_threads(threads)


def _train(steps: int) -> tuple[TinySNN, Tensor, Tensor]:
    torch.manual_seed(0)
    model = TinySNN()
    x, y = quadrants(512, 0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        i = torch.randint(0, len(x), (64,), generator=g)
        loss = F.cross_entropy(model(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval().requires_grad_(False)
    return (model, *quadrants(64, 1))
