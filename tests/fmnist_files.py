"""Tiny Fashion-MNIST stand-ins as real IDX gz files, for `python -m robench` run as a subprocess (where
monkeypatching the loader is impossible): 28x28, 10 classes, odd classes brighter on the left."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import torch


def write_idx(path: Path, array: torch.Tensor) -> None:
    """An unsigned-byte IDX file (gzipped): magic 0x0000 0x08 ndim, the sizes, then the bytes."""
    a = array.to(torch.uint8).contiguous()
    header = struct.pack(">HBB", 0, 8, a.dim()) + struct.pack(f">{a.dim()}I", *a.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + a.numpy().tobytes())


def write_fmnist(folder: Path, n_train: int = 64, n_test: int = 32) -> Path:
    """``train-*`` and ``t10k-*`` image and label files in ``folder``; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        g = torch.Generator().manual_seed(seed)
        y = torch.arange(n) % 10
        x = torch.randint(0, 128, (n, 28, 28), generator=g)
        x[:, :, :14] += 127 * (y % 2).view(-1, 1, 1)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)
    return folder
