"""Device choice, thread count, seeding and version stamps shared by training, the zoo and evaluation.

torch is imported by the functions that need it, so that the CLI can choose the thread count (and print it in
``--help``) before torch starts, and ``robench report`` never loads it.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import random
import sys
from importlib import metadata
from typing import TYPE_CHECKING

from .errors import BadSpec, RobenchError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda[:N]`` must be available."""
    import torch

    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise BadSpec(f"--device {name!r}; choose from: {', '.join(DEVICES)} (or cuda:N)")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RobenchError(f"--device {name!r} asked for, but CUDA is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError:
        raise BadSpec(f"--device {name!r}; choose from: {', '.join(DEVICES)} (or cuda:N)") from None


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too


def versions() -> dict[str, str]:
    """Versions that decide the numbers: python, torch, the attack libraries and robench itself."""
    out = {"python": platform.python_version()}
    for pkg in ("robench", "torch", "torchattacks", "pyautoattack"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "none"
    return out


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, e.g. a container's or a job's share)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def busy_cores(samples: int = 3) -> float:
    """Cores other processes keep busy now: the runnable tasks of ``/proc/loadavg`` minus this process (the median
    of a few readings 20 ms apart), else the 1-minute load average. The instantaneous count, unlike the average,
    does not still hold a run that just finished (the previous command of a script)."""
    import time

    seen = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as f:
                seen.append(max(0, int(f.read().split()[3].split("/")[0]) - 1))
        except (OSError, ValueError, IndexError):
            break
        if i + 1 < samples:
            time.sleep(0.02)
    if seen:
        return float(sorted(seen)[len(seen) // 2])
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def pick_threads(cores: int | None = None, busy: float | None = None, ranks: int | None = None) -> tuple[int, str]:
    """How many torch threads one process should use, and why (one phrase for ``--help`` and logs).

    ``ROBENCH_THREADS`` wins, then ``OMP_NUM_THREADS``; otherwise the usable ``cores`` minus those other processes
    keep ``busy`` (:func:`busy_cores`), shared among the ``ranks`` of a torchrun job on this machine
    (``LOCAL_WORLD_SIZE``), at least 1. More threads than free cores make a run slower, not faster: on a 2-core
    machine with two other busy processes, 2 threads took about 4x as long as 1.
    """
    for var in ("ROBENCH_THREADS", "OMP_NUM_THREADS"):
        text = os.environ.get(var, "").strip()
        if text:
            if not (text.isascii() and text.isdigit()) or int(text) < 1:
                raise BadSpec(f"{var}={text!r}; accepted: an integer >= 1")
            return int(text), f"set by {var}"
    cores = usable_cores() if cores is None else cores
    busy = busy_cores() if busy is None else busy
    ranks = ranks if ranks is not None else int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    n = max(1, max(1, cores - int(busy + 0.5)) // max(1, ranks))
    per = f", {ranks} local ranks" if ranks > 1 else ""
    return n, f"{cores} cores, {busy:g} busy{per}"


def configure_threads() -> tuple[int, str]:
    """Set torch's thread count from :func:`pick_threads` (also as ``OMP_NUM_THREADS`` for a torch not yet
    imported, and for the libraries it starts); returns the count and why."""
    n, why = pick_threads()
    os.environ["OMP_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    return n, why
