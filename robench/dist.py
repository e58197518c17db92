"""Several processes on one job: ranks under ``torchrun`` and ``--shard i/K`` parts, with rank-independent numbers.

A job's images are split in *global* batches: the cell's still-to-attack images (initially correct, in index order)
are cut into batches of ``batch_size`` (with ``--min-batches`` N: into at least N batches of equal size, see
:func:`split`), and batch ``j`` runs on part ``j % K``, so the split is balanced and deterministic. Before each
batch torch is seeded from ``(seed, the cell's attack, params, eps and gradient path, the batch's first global image
index)`` (:func:`batch_seed`), never from the rank, so every random draw (random starts, restarts, noise,
AutoAttack's seed) and every mask is the same for K = 1, 2, ... ranks as long as the batch size is the same. Under
``torchrun`` (:func:`session`) the ranks all-reduce each cell's per-sample vector and rank 0 alone writes; an auto
batch size is the minimum over the ranks. A ``--shard i/K`` part is an ordinary process with no peers: it writes its
rows with its masks into a shard file (:mod:`robench.results.shards`), and ``robench results merge`` joins the K
parts into the rows one run writes.

Examples:
    >>> with session(torch.device("cpu")) as part:   # Part(index=rank, count=world) under torchrun, else WHOLE
    ...     for idx in batches(todo, 64, part): ...
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from .errors import BadSpec, RankFailed, RobenchError
from .parts import MIN_SPLIT_BATCH, WHOLE, Part, batch_bounds, parse_shard  # noqa: F401 (re-exported)

KEPT = "finished work is kept (result rows, checkpoints); rerun the same command to resume (train: with --resume)"
TIMEOUT_S = int(os.environ.get("ROBENCH_DIST_TIMEOUT", "1800"))  # a rank waits this long for a slow peer


class _Terminated(BaseException):
    """Raised by the SIGTERM handler: a BaseException so no ``except Exception`` in attack code swallows it."""


# -------------------------------------------------------------------------------------------- the split
def split(todo: Tensor, batch_size: int, min_batches: int = 1) -> tuple[Tensor, ...]:
    """The global batches of a cell's images ``todo``, a function of ``len(todo)``, ``batch_size`` and
    ``min_batches`` only (never of the number of parts).

    ``min_batches`` = 1: consecutive batches of ``batch_size`` (the last one shorter). Otherwise batches whose sizes
    differ by at most one, as many as the largest divisor of ``min_batches`` that leaves batches of about
    ``MIN_SPLIT_BATCH`` images or more, or, where ``batch_size`` needs more batches, the next divisor or multiple of
    ``min_batches``. So K parts get the same work whenever ``min_batches`` is a multiple of K and the images allow
    it (20 images, ``min_batches`` 8: 10 + 10, not 16 + 4).
    """
    return tuple(todo[a:b] for a, b in batch_bounds(len(todo), batch_size, min_batches))


def batches(todo: Tensor, batch_size: int, part: Part = WHOLE, min_batches: int = 1) -> Iterator[Tensor]:
    """The global batches of :func:`split` that belong to ``part`` (batch ``j`` when ``j % K == index``)."""
    for j, idx in enumerate(split(todo, batch_size, min_batches)):
        if part.mine(j):
            yield idx


def owned(todo: Tensor, batch_size: int, part: Part, n: int, min_batches: int = 1) -> Tensor:
    """``bool [n]``: the images of ``todo`` that ``part`` attacks."""
    out = torch.zeros(n, dtype=torch.bool)
    for idx in batches(todo.cpu(), batch_size, part, min_batches):
        out[idx] = True
    return out


def batch_seed(seed: int, tag: str, first: int) -> int:
    """A 63-bit seed from the cell's ``seed``, its ``tag`` (attack, params, eps, gradient path) and the global
    index of the batch's first image: the same batch gets the same draws on any rank and for any K."""
    digest = hashlib.sha256(f"{seed}|{tag}|{first}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# ------------------------------------------------------------------------------------------- torchrun
def launched() -> bool:
    """True in a process started by ``torchrun`` (it sets RANK, WORLD_SIZE and MASTER_ADDR)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR"))


def env_rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def device_for(device: torch.device) -> torch.device:
    """A rank's own GPU: ``cuda`` -> ``cuda:LOCAL_RANK`` under torchrun (CPU and explicit indices unchanged)."""
    if device.type == "cuda" and device.index is None and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@contextmanager
def session(device: torch.device, shard: Part = WHOLE) -> Iterator[Part]:
    """The process group for a torchrun job (gloo on CPU, NCCL on GPUs), or ``shard`` when not under torchrun.

    Inside, a killed peer or torchrun's SIGTERM becomes one :class:`RankFailed` line; rank > 0 errors are marked
    with their rank (the CLI prints rank 0's, and other ranks' own failures, once).
    """
    if not launched():
        yield shard
        return
    if shard is not WHOLE:
        raise BadSpec("--shard runs one part as an ordinary process; under torchrun the ranks split the job already")
    import torch.distributed as tdist

    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    started = not tdist.is_initialized()
    if started:
        tdist.init_process_group(backend, timeout=_dt.timedelta(seconds=TIMEOUT_S))
    part = Part(tdist.get_rank(), tdist.get_world_size(), True)
    old, ok = signal.signal(signal.SIGTERM, _on_term), False
    try:
        yield part
        barrier(part)
        ok = True
    except _Terminated:
        raise RankFailed(f"torchrun stopped this job (a rank failed or the job was cancelled); {KEPT}") from None
    except RuntimeError as e:  # gloo/NCCL: a peer closed its connection or timed out
        if not _collective_failure(e):
            raise
        raise RankFailed(f"a rank was lost ({_first_line(e)}); {KEPT}") from None
    except RobenchError as e:
        e.rank = part.index  # type: ignore[attr-defined]  # the CLI prints rank > 0 errors with their rank
        raise
    finally:
        # on failure torchrun's SIGTERM follows at once: ignore it so the one-line error gets out, and leave a
        # broken group alone (tearing it down can wait on the lost peer); the process is about to exit
        signal.signal(signal.SIGTERM, old if ok else signal.SIG_IGN)
        if ok and started:
            tdist.destroy_process_group()


def _on_term(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second SIGTERM must not interrupt the one-line exit
    raise _Terminated()


def _collective_failure(e: BaseException) -> bool:
    text = str(e).lower()
    return type(e).__name__ in ("DistBackendError", "DistNetworkError", "DistError") or any(
        w in text for w in ("connection closed", "connection reset", "broken pipe", "timed out", "gloo", "nccl"))


def _first_line(e: BaseException) -> str:
    """The message's first line without the C++ source location gloo puts in front (``[.../pair.cc:545] ``)."""
    line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return re.sub(r"^\[[^\]]*\]\s*", "", line).split(". ")[0][:120]


def _wire(t: Tensor, part: Part) -> Tensor:
    """The tensor on the backend's device: NCCL reduces GPU tensors, gloo CPU ones."""
    import torch.distributed as tdist

    return t.cuda() if tdist.get_backend() == "nccl" else t.cpu()


def gather(vec: Tensor, part: Part) -> Tensor:
    """Join a per-sample ``bool [n]`` vector whose set bits come from each rank's own images (disjoint), on
    ``vec``'s device; unchanged outside a torchrun job."""
    if not part.collective or part.count == 1:
        return vec
    import torch.distributed as tdist

    wire = _wire(vec.to(torch.int32), part)
    tdist.all_reduce(wire, op=tdist.ReduceOp.SUM)
    return (wire > 0).to(vec.device)


def agree_min(value: int, part: Part) -> int:
    """The minimum of ``value`` over the ranks (the same auto batch size everywhere)."""
    if not part.collective or part.count == 1:
        return value
    import torch.distributed as tdist

    t = _wire(torch.tensor([value], dtype=torch.int64), part)
    tdist.all_reduce(t, op=tdist.ReduceOp.MIN)
    return int(t.item())


def share(obj: object, part: Part) -> object:
    """Rank 0's ``obj`` on every rank (e.g. the cells already stored, read by rank 0 only)."""
    if not part.collective or part.count == 1:
        return obj
    import torch.distributed as tdist

    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(part: Part) -> None:
    if part.collective and part.count > 1:
        import torch.distributed as tdist

        tdist.barrier()


def all_sum(values: list, part: Part) -> list[float]:
    """Element-wise sum of a short list of numbers over the ranks (e.g. an epoch's loss sum, correct, seen)."""
    if not part.collective or part.count == 1:
        return list(values)
    import torch.distributed as tdist

    t = _wire(torch.tensor([float(v) for v in values], dtype=torch.float64), part)
    tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t.cpu().tolist()


def gather_objects(obj: object, part: Part) -> list:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` outside a torchrun job)."""
    if not part.collective or part.count == 1:
        return [obj]
    import torch.distributed as tdist

    out: list = [None] * part.count
    tdist.all_gather_object(out, obj)
    return out


def rank_seed(base: int, part: Part) -> int:
    """A training draw's seed for this rank: ``base`` on rank 0 (so one process trains as before), a hash of
    ``(base, rank)`` elsewhere (ranks must not add the same noise to their different images)."""
    if part.index == 0:
        return base
    return batch_seed(base, "rank", part.index)
