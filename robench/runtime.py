"""Device choice, seeding and version stamps shared by training, the zoo and evaluation."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import random
from importlib import metadata

import torch

from .errors import BadSpec, RobenchError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda[:N]`` must be available."""
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


def configure_threads() -> None:
    """Honour ROBENCH_THREADS (default: torch's own choice)."""
    n = os.environ.get("ROBENCH_THREADS")
    if n:
        torch.set_num_threads(int(n))
