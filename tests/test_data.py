"""Datasets: the shipped subset, IDX and CIFAR readers on tiny files written here, and clear misses."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import re
import struct

import numpy as np
import pytest
import torch
from fmnist_files import write_idx

from robench.data import DATASETS, check_images, load, load_subset, make_subset, read_idx
from robench.errors import BadSpec, DataNotFound, IntegrityError, UnknownName


# ---------------------------------------------------------------------------------------- shipped subset
def test_shipped_subset_loads_offline_and_is_balanced():
    x, y = load("fashion-mnist", "subset")
    assert x.shape == (1000, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (1000,) and y.dtype == torch.int64
    assert torch.bincount(y, minlength=10).tolist() == [100] * 10
    assert 0 <= x.min() and x.max() <= 1 and x.max() > 0.9
    assert torch.equal((x * 255).round() / 255, x)  # values come from uint8
    assert y[:10].tolist() == list(range(10))  # class-interleaved: any prefix stays balanced
    x8, _ = load_subset()
    assert x8.dtype == torch.uint8
    check_images(x, DATASETS.get("fashion-mnist"))


def test_limit_keeps_the_first_images():
    x, y = load("fashion-mnist", "subset", limit=20)
    assert len(x) == 20 and torch.bincount(y).tolist() == [2] * 10


# ------------------------------------------------------------------------------------------------- IDX
def _write_idx(path, arr: np.ndarray) -> None:
    write_idx(path, torch.from_numpy(arr))


def _fake_fmnist(d, prefix: str = "train", n: int = 5) -> np.ndarray:
    imgs = np.zeros((n, 28, 28), np.uint8)
    imgs[:, 0, 0] = [0, 51, 102, 204, 255][:n]
    imgs[:, 27, 27] = 255
    _write_idx(d / f"{prefix}-images-idx3-ubyte.gz", imgs)
    _write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return imgs


def test_idx_files_from_data_dir(tmp_path):
    _fake_fmnist(tmp_path, "train")
    x, y = load("fashion-mnist", "train", data_dir=tmp_path)
    assert x.shape == (5, 1, 28, 28) and y.tolist() == [0, 1, 2, 3, 4]
    assert x[:, 0, 0, 0].tolist() == pytest.approx([0.0, 0.2, 0.4, 0.8, 1.0])
    assert (x[:, 0, 27, 27] == 1.0).all() and x[:, 0, 5, 5].sum() == 0
    _fake_fmnist(tmp_path, "t10k", n=3)
    assert len(load("fashion-mnist", "test", data_dir=str(tmp_path))[0]) == 3


def test_idx_header_is_checked(tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x0D, 1) + struct.pack(">I", 1) + b"\0\0\0\0")  # float IDX
    with pytest.raises(IntegrityError, match="not an unsigned-byte IDX file"):
        read_idx(bad)
    truncated = tmp_path / "t.gz"
    with gzip.open(truncated, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x08, 2) + struct.pack(">2I", 4, 4) + b"\0\0")
    with pytest.raises(IntegrityError, match="cannot read IDX"):
        read_idx(truncated)


def test_missing_data_names_dataset_and_place(tmp_path):
    where = re.escape(f"'{tmp_path}'")
    with pytest.raises(DataNotFound, match=rf"fashion-mnist \(train\) not found in {where}.*dataset-fashion-mnist"):
        load("fashion-mnist", "train", data_dir=tmp_path)
    with pytest.raises(DataNotFound, match=rf"cifar10 \(test\) not found in {where}.*--download"):
        load("cifar10", "test", data_dir=tmp_path)
    with pytest.raises(DataNotFound, match="cifar100 needs a data folder"):
        load("cifar100", "test")


def test_bad_names_and_folders(tmp_path):
    with pytest.raises(BadSpec, match="does not exist"):
        load("fashion-mnist", "train", data_dir=tmp_path / "nope")
    with pytest.raises(UnknownName, match="choose from: fashion-mnist, cifar10, cifar100"):
        load("mnist", "train")
    with pytest.raises(BadSpec, match="choose from: train, test, subset"):
        load("fashion-mnist", "val")
    with pytest.raises(BadSpec, match="fashion-mnist only"):
        load("cifar10", "subset")
    with pytest.raises(BadSpec, match="--limit"):
        load("fashion-mnist", "subset", limit=0)


def test_make_subset_from_a_data_dir(tmp_path):
    imgs = np.stack([np.full((28, 28), 5 * i, np.uint8) for i in range(30)])
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(30) % 10)
    out = make_subset(tmp_path, per_class=2, out=tmp_path / "sub.safetensors")
    x8, y = load_subset(out)
    assert y.tolist() == list(range(10)) * 2  # first two of each class, interleaved
    assert x8[:, 0, 0, 0].tolist() == [5 * i for i in range(20)]


# ----------------------------------------------------------------------------------------------- CIFAR
class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python-2 ``str`` opcodes, as in the real CIFAR batches (read back with latin1 as str)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        op = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + n.to_bytes(4, "little")
        self.write(op + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _cifar_batch(path, n: int, label_key: bytes, start: int, py2: bool) -> None:
    data = np.zeros((n, 3072), np.uint8)
    data[:, :1024], data[:, 1024:2048], data[:, 2048:] = 10, 20, 30  # R, G, B planes
    data[:, 0] = np.arange(start, start + n)  # marks the order
    batch = {b"batch_label": b"fake", b"data": data, label_key: list(range(start, start + n)),
             b"filenames": [b"a.png"] * n}
    with open(path, "wb") as f:
        if py2:
            _Py2Pickler(f, protocol=2).dump(batch)
        else:  # a Python 3 pickle with bytes keys
            pickle.dump(batch, f, protocol=2)


@pytest.mark.parametrize("py2", [True, False])
def test_cifar10_batches(tmp_path, py2):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for i in range(1, 6):
        _cifar_batch(root / f"data_batch_{i}", 2, b"labels", 2 * (i - 1), py2)
    _cifar_batch(root / "test_batch", 3, b"labels", 7, py2)
    x, y = load("cifar10", "train", data_dir=tmp_path)
    assert x.shape == (10, 3, 32, 32) and y.tolist() == list(range(10))
    assert x[:, 0, 0, 0].tolist() == pytest.approx([i / 255 for i in range(10)])
    assert x[:, :, 5, 5].tolist() == [pytest.approx([10 / 255, 20 / 255, 30 / 255])] * 10
    xt, yt = load("cifar10", "test", data_dir=root)  # the batches folder itself works too
    assert xt.shape == (3, 3, 32, 32) and yt.tolist() == [7, 8, 9]


def test_cifar100_uses_fine_labels(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    _cifar_batch(root / "train", 4, b"fine_labels", 50, py2=True)
    _cifar_batch(root / "test", 2, b"fine_labels", 97, py2=True)
    assert load("cifar100", "train", data_dir=tmp_path)[1].tolist() == [50, 51, 52, 53]
    assert load("cifar100", "test", data_dir=tmp_path)[1].tolist() == [97, 98]


def test_cifar_batch_without_labels_is_refused(tmp_path):
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((1, 3072), np.uint8)}, f, protocol=2)
    with pytest.raises(IntegrityError, match="lacks the keys 'data' and 'labels'"):
        load("cifar10", "test", data_dir=tmp_path)


class _Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_restricted_unpickler_refuses_other_globals(tmp_path):
    marker = tmp_path / "was-run"
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({"data": _Evil(str(marker)), "labels": [0]}, f, protocol=2)
    with pytest.raises(IntegrityError, match=r"refused global (posix|os|nt)\.mkdir"):
        load("cifar10", "test", data_dir=tmp_path)
    assert not marker.exists()
    buf = io.BytesIO()
    pickle.dump({"data": torch.zeros(1)}, buf)  # a torch tensor is not allowed either
    (tmp_path / "test_batch").write_bytes(buf.getvalue())
    with pytest.raises(IntegrityError, match="refused global torch"):
        load("cifar10", "test", data_dir=tmp_path)
