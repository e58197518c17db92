"""Per-sample outcomes and the statistics of accuracies: the mask codec, Wilson intervals, paired differences.

A cell's per-sample outcome is a boolean mask over its first n images (``True`` = still robust). It is stored
in the results column ``robust_mask`` as lowercase hex of ``numpy.packbits(mask, bitorder="little")``
(docs/evaluation.md §5), so it decodes with three lines of numpy::

    raw = np.frombuffer(bytes.fromhex(row["robust_mask"]), dtype=np.uint8)
    mask = np.unpackbits(raw, bitorder="little")[: row["n"]].astype(bool)
    assert mask.sum() == row["robust_count"]

Intervals: Wilson's score interval for one accuracy, and for two models on the same images the paired
difference of their accuracies with Newcombe's interval built from Wilson intervals (method 10 of Newcombe 1998,
which accounts for the correlation of the pairs), plus an exact McNemar p-value. This module needs numpy and
scipy only (never torch), so reports stay light.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import IntegrityError

Z95 = 1.959963984540054  # two-sided 95% normal quantile


# ------------------------------------------------------------------------------------------------- masks
def encode_mask(mask) -> str:
    """``bool [n]`` -> lowercase hex of ``packbits(mask, bitorder="little")`` (empty string for n = 0)."""
    m = np.asarray(mask, dtype=bool).reshape(-1)
    return np.packbits(m, bitorder="little").tobytes().hex()


def decode_mask(text: str, n: int, count: int | None = None, where: str = "robust_mask") -> np.ndarray:
    """The ``bool [n]`` mask of ``text``; refuses a string that is not hex, whose length does not match ``n``
    (``ceil(n / 8)`` bytes, unused high bits zero), or whose set bits differ from ``count`` when given."""
    try:
        raw = np.frombuffer(bytes.fromhex(str(text)), dtype=np.uint8)
    except ValueError:
        raise IntegrityError(f"{where} {str(text)[:20]!r} is not lowercase hex") from None
    if len(raw) != (n + 7) // 8:
        raise IntegrityError(f"{where} holds {len(raw)} bytes, but n = {n} needs {(n + 7) // 8}")
    bits = np.unpackbits(raw, bitorder="little")
    if bits[n:].any():
        raise IntegrityError(f"{where} has bits set beyond n = {n}")
    mask = bits[:n].astype(bool)
    if count is not None and int(mask.sum()) != int(count):
        raise IntegrityError(f"{where} has {int(mask.sum())} robust samples, but robust_count is {count}")
    return mask


# ------------------------------------------------------------------------------------------------ intervals
def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval ``(lo, hi)`` for ``k`` successes out of ``n`` (``(0, 1)`` when n = 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = min(max(k / n, 0.0), 1.0)
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


@dataclass(frozen=True)
class Paired:
    """Two models (a, b) on the same n images: accuracies, their difference a - b with a 95% interval, the
    counts robust only for a / only for b, and the exact McNemar p-value."""

    n: int
    acc_a: float
    acc_b: float
    diff: float
    lo: float
    hi: float
    only_a: int
    only_b: int
    p_value: float


def paired(mask_a, mask_b, z: float = Z95) -> Paired:
    """The paired comparison of two per-sample masks over the same images (Newcombe's hybrid score interval)."""
    a, b = np.asarray(mask_a, dtype=bool), np.asarray(mask_b, dtype=bool)
    if a.shape != b.shape:
        raise IntegrityError(f"paired comparison needs masks over the same images; got {a.size} and {b.size}")
    n = int(a.size)
    both, only_a, only_b = int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum())
    neither = n - both - only_a - only_b
    if n == 0:
        return Paired(0, 0.0, 0.0, 0.0, -1.0, 1.0, 0, 0, 1.0)
    pa, pb = (both + only_a) / n, (both + only_b) / n
    la, ua = wilson(both + only_a, n, z)
    lb, ub = wilson(both + only_b, n, z)
    # correlation of the pairs (phi), set to 0 when a margin is empty (Newcombe 1998, method 10)
    den = (both + only_a) * (neither + only_b) * (both + only_b) * (neither + only_a)
    phi = (both * neither - only_a * only_b) / math.sqrt(den) if den > 0 else 0.0
    d = pa - pb
    lo = d - math.sqrt(max(0.0, (pa - la) ** 2 - 2 * phi * (pa - la) * (ub - pb) + (ub - pb) ** 2))
    hi = d + math.sqrt(max(0.0, (ua - pa) ** 2 - 2 * phi * (ua - pa) * (pb - lb) + (pb - lb) ** 2))
    return Paired(n, pa, pb, d, max(-1.0, lo), min(1.0, hi), only_a, only_b, mcnemar(only_a, only_b))


def mcnemar(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value: the binomial test of ``only_a`` out of the discordant pairs at 1/2."""
    m = only_a + only_b
    if m == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(only_a, m, 0.5).pvalue)
