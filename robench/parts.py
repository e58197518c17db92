"""How a job's images are cut into global batches and shared among parts: plain arithmetic, torch-free.

:class:`Part` says which part of a job a process runs (a torchrun rank, or a ``--shard i/K``), and
:func:`batch_bounds` where each global batch of a cell's still-to-attack images starts and stops; batch ``j``
belongs to part ``j % K``. :mod:`robench.dist` runs the batches; :mod:`robench.results.shards` recomputes, from a
shard file alone, which images each shard attacked.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import BadSpec


@dataclass(frozen=True)
class Part:
    """Which part of a job this process runs: ``index`` of ``count`` (rank of world size, or shard i of K).

    ``collective``: the parts are torchrun ranks that gather every cell's vector (rank 0 writes); otherwise a
    ``--shard`` that runs alone and writes its own shard file (``count`` = 1: the whole job).
    """

    index: int = 0
    count: int = 1
    collective: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.count, int) and self.count >= 1 and 0 <= self.index < self.count):
            raise BadSpec(f"--shard {self.index}/{self.count}; accepted: i/K with 0 <= i < K (e.g. 0/4)")

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def writer(self) -> bool:
        """Writes rows and prints: rank 0 of a torchrun job, every shard, a single process."""
        return self.index == 0 or not self.collective

    @property
    def is_shard(self) -> bool:
        return not self.collective and self.count > 1

    def mine(self, j: int) -> bool:
        return j % self.count == self.index


WHOLE = Part()


def parse_shard(text: str | None) -> Part:
    """``"i/K"`` -> ``Part(i, K)`` (a shard, no peers); ``None`` -> :data:`WHOLE`."""
    if text is None:
        return WHOLE
    i, sep, k = str(text).partition("/")
    if not (sep and i.isascii() and i.isdigit() and k.isascii() and k.isdigit()) or not 0 <= int(i) < int(k):
        raise BadSpec(f"--shard {text!r}; accepted: i/K with 0 <= i < K (e.g. 0/4)")
    return Part(int(i), int(k))


# --min-batches never cuts batches below this many images: smaller ones cost more per image than a second rank
# saves (a 7-stage cascade on 100 images in batches of 4-11 took one CPU rank 2.2x as long as in one batch)
MIN_SPLIT_BATCH = 16


def batch_bounds(n: int, batch_size: int, min_batches: int = 1) -> list[tuple[int, int]]:
    """``(start, stop)`` of each global batch of ``n`` images (see :func:`robench.dist.split`): consecutive
    batches of ``batch_size`` when ``min_batches`` is 1, else equal batches (sizes within one) as many as
    :func:`robench.dist.split` says."""
    m = min_batches
    if n == 0:
        return []
    if m <= 1:
        return [(a, min(a + batch_size, n)) for a in range(0, n, batch_size)]
    need, cap = -(-n // batch_size), -(-n // MIN_SPLIT_BATCH)
    count = max(d for d in range(1, m + 1) if m % d == 0 and d <= cap)
    if count < need:
        count = min([d for d in range(need, m + 1) if m % d == 0] or [m * -(-need // m)])
    size, extra = divmod(n, count)  # as torch.tensor_split: the first n % count batches get one image more
    bounds, a = [], 0
    for j in range(count):
        b = a + size + (j < extra)
        bounds.append((a, b))
        a = b
    return bounds
