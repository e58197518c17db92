"""robench.io: the one atomic write, writable-folder probe and safetensors-header reader."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save as st_save

from robench.io import atomic_write, existing_base, header_metadata, replacing, unwritable


def test_replacing_renames_a_finished_block_and_removes_a_failed_one(tmp_path):
    f = tmp_path / "ckpt.pt"
    with replacing(f) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".ckpt.pt.")
        torch.save({"a": 1}, tmp)  # a writer that needs a path
    assert torch.load(f)["a"] == 1
    with pytest.raises(RuntimeError, match="killed"):
        with replacing(f) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert torch.load(f)["a"] == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_atomic_write_gives_a_new_file_the_usual_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "new.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o640


def test_unwritable_names_why_and_looks_at_the_nearest_existing_folder(tmp_path):
    assert unwritable(tmp_path / "not" / "yet" / "made") is None
    assert existing_base(tmp_path / "not" / "yet") == tmp_path
    (tmp_path / "f").write_text("a file")
    assert unwritable(tmp_path / "f" / "sub") == "Not a directory"
    assert list(tmp_path.iterdir()) == [tmp_path / "f"]  # the probe leaves nothing behind


def test_unwritable_gives_the_systems_reason(tmp_path, monkeypatch):
    import errno
    import tempfile

    def refuse(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)  # what a read-only folder does (root ignores modes)
    assert unwritable(tmp_path / "sub") == "Permission denied"


def test_header_metadata_reads_robench_metadata_and_refuses_anything_else():
    blob = st_save({"x": torch.zeros(2)}, metadata={"robench": json.dumps({"id": "m", "n": 3})})
    assert header_metadata(blob) == {"id": "m", "n": 3}
    for bad in (blob[:20], b"", st_save({"x": torch.zeros(2)}), b"\xff" * 64):
        with pytest.raises(ValueError, match="no 'robench' metadata"):
            header_metadata(bad)


def test_io_never_imports_torch():
    code = "import sys, robench.io; assert 'torch' not in sys.modules"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
