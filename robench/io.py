"""Files robench writes and reads back: atomic writes, the writable-folder probe and the safetensors header.

Standard library only (no torch), so the results store and the report use it too.

- :func:`atomic_write`, and :func:`replacing` for writers that need a path (``torch.save``) or several files
  renamed together: a reader, or a crash, sees the old file or the new one, never a part of either;
- :func:`unwritable`: before any work, why a folder (or the nearest existing folder above it) cannot take files;
- :func:`folder_lock`: writers of the files in one folder take turns, with no lock file left behind;
- :func:`header_metadata`: what robench stored in a safetensors file's header, without loading its tensors;
- :func:`check_name`: the name of a results file (``NAME.csv``), :data:`NAME_RE`.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import BadSpec

NAME_RE = r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}"  # a results file's name: NAME.csv in the results folder


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (setting it to read it would race
    with files other threads create meanwhile)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A hidden temporary file beside ``path`` for the block to write; when the block ends, the file is flushed
    to disk and renamed over ``path``, and on any error (or a failed rename) it is removed. It has the
    permissions ``path`` has, or for a new file the usual ones (0666 less the umask), not mkstemp's 0600."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        os.fchmod(fd, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
        os.close(fd)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` itself (``flock`` on its descriptor) while the block runs: writers of
    the files in it, in any process or thread, take turns, and no lock file is left behind in the folder."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a hidden temporary file in the same folder, flushed to disk, then
    renamed over it: a reader (or a crash) sees the old file or the new one, never a part of either. The file
    keeps its permissions; a new one gets the usual ones (0666 less the umask), not the temporary file's 0600."""
    with replacing(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def existing_base(folder: str | Path) -> Path:
    """``folder`` or the nearest folder above it that exists (``.`` when none does): where it would be made."""
    d = Path(folder)
    return next((p for p in (d, *d.parents) if p.exists()), Path("."))


def unwritable(folder: str | Path) -> str | None:
    """Why no file can be made in ``folder`` (created on demand, so the nearest existing folder above it counts),
    or None when one can. Probes with an unnamed temporary file, which leaves nothing behind."""
    base = existing_base(folder)
    if not base.is_dir():
        return "Not a directory"
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return None


def header_metadata(blob: bytes, key: str = "robench") -> object:
    """The JSON value stored under metadata ``key`` in the header of the safetensors file ``blob``; ValueError
    when the header is not JSON or holds no such key (a truncated, foreign or older file)."""
    try:
        size = int.from_bytes(blob[:8], "little")
        return json.loads(json.loads(blob[8 : 8 + size])["__metadata__"][key])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise ValueError(f"no {key!r} metadata in the safetensors header ({type(e).__name__})") from None


def check_name(name: str) -> None:
    """Refuse a results file name (``--name``: the ``NAME`` of ``NAME.csv``) outside :data:`NAME_RE`."""
    if not re.fullmatch(NAME_RE, name):
        raise BadSpec(f"--name {name!r}; use letters, digits, '.', '_' and '-'")
