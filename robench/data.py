"""Datasets as float tensors ``[N, C, H, W]`` in ``[0, 1]`` with int64 labels.

- ``fashion-mnist``: the IDX gz files of Debian's ``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist)
  or ``data_dir``. Its split ``subset`` is the balanced 1,000-image test subset shipped inside the package, so
  evaluation runs offline on a fresh clone (made by :func:`make_subset`, ``robench data subset``).
- ``cifar10`` / ``cifar100``: the standard python pickle batches in ``data_dir``, or torchvision's download when
  ``download=True``. The batches are plain pickles of lists and arrays; they are read with a restricted unpickler
  that refuses any other object.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from .errors import BadSpec, DataNotFound, IntegrityError
from .registry import Registry

SPLITS = ("train", "test", "subset")
FMNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
SUBSET_FILE = Path(__file__).parent / "assets" / "fashion-mnist-test-1000.safetensors"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    short: str  # used in zoo ids
    channels: int
    size: int
    classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    how_to_get: str

    def model_kwargs(self) -> dict:
        """The ModelConfig fields a dataset fixes."""
        return dict(
            in_channels=self.channels,
            image_size=self.size,
            num_classes=self.classes,
            mean=self.mean,
            std=self.std,
        )


DATASETS: Registry[DatasetInfo] = Registry("dataset")
DATASETS.add(
    "fashion-mnist",
    DatasetInfo(
        "fashion-mnist", "fmnist", 1, 28, 10, (0.2860,), (0.3530,),
        "install Debian's package 'dataset-fashion-mnist' (apt-get install dataset-fashion-mnist) or pass "
        "--data-dir DIR with train/t10k-{images-idx3,labels-idx1}-ubyte.gz",
    ),
)
for _name, _short, _k, _mean, _std, _folder in (
    ("cifar10", "c10", 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "cifar-10-batches-py"),
    ("cifar100", "c100", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "cifar-100-python"),
):
    DATASETS.add(
        _name,
        DatasetInfo(
            _name, _short, 3, 32, _k, _mean, _std,
            f"pass --data-dir DIR holding the python batches ({_folder}), "
            "or --download when online (needs torchvision)",
        ),
    )


def load(
    name: str,
    split: str = "test",
    data_dir: str | Path | None = None,
    limit: int | None = None,
    download: bool = False,
) -> tuple[Tensor, Tensor]:
    """Load ``split`` of dataset ``name``: images ``[N, C, H, W]`` float32 in ``[0, 1]``, labels ``[N]`` int64.

    ``limit`` keeps the first N samples (the stored order; for ``subset`` that order is class-balanced).
    """
    info = DATASETS.get(name)
    if split not in SPLITS:
        raise BadSpec(f"unknown split {split!r}; choose from: {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise BadSpec(f"--limit {limit}; must be >= 1")
    if split == "subset":
        if info.name != "fashion-mnist":
            raise BadSpec(f"the shipped subset exists for fashion-mnist only, not {name!r}")
        x8, y = load_subset()
    elif info.name == "fashion-mnist":
        x8, y = _load_fmnist(split, data_dir, info)
    else:
        x8, y = _load_cifar(info, split, data_dir, download)
    if limit is not None:
        x8, y = x8[:limit], y[:limit]
    return x8.float().div_(255.0), y.long()


def _candidates(data_dir: str | Path | None, system: Path | None) -> list[Path]:
    if data_dir is not None:
        d = Path(data_dir)
        if not d.is_dir():
            raise BadSpec(f"--data-dir {str(d)!r} does not exist or is not a folder")
        return [d]
    return [system] if system else []


def _load_fmnist(split: str, data_dir, info: DatasetInfo) -> tuple[Tensor, Tensor]:
    prefix = "train" if split == "train" else "t10k"
    for d in _candidates(data_dir, FMNIST_SYSTEM_DIR):
        img, lab = d / f"{prefix}-images-idx3-ubyte.gz", d / f"{prefix}-labels-idx1-ubyte.gz"
        if img.exists() and lab.exists():
            x, y = read_idx(img), read_idx(lab)
            return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y.astype(np.int64))
    where = data_dir or FMNIST_SYSTEM_DIR
    raise DataNotFound(f"fashion-mnist ({split}) not found in {str(where)!r}: {info.how_to_get}")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a uint8 array, checking its header."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
        arr = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
        return arr.reshape(shape).copy()
    except (OSError, ValueError, struct.error, EOFError) as e:
        raise IntegrityError(f"cannot read IDX file {str(path)!r}: {e}") from None


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches (dicts, lists, numpy arrays) and refuses every other global."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def _read_cifar_batch(path: Path, label_key: str) -> dict:
    """One batch as a dict with str keys (a batch pickled with bytes keys, b'data', reads the same)."""
    try:
        with open(path, "rb") as f:
            d = _NumpyOnlyUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise IntegrityError(f"cannot read CIFAR batch {str(path)!r}: {e}") from None
    if isinstance(d, dict):
        d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}
    if not isinstance(d, dict) or "data" not in d or label_key not in d:
        raise IntegrityError(f"CIFAR batch {str(path)!r} lacks the keys 'data' and {label_key!r}")
    return d


def _load_cifar(info: DatasetInfo, split: str, data_dir, download: bool) -> tuple[Tensor, Tensor]:
    folder = info.name.replace("cifar", "cifar-") + "-batches-py"
    if info.name == "cifar100":
        folder = "cifar-100-python"
    if download and data_dir is not None:
        _download_cifar(info, Path(data_dir))
    if data_dir is None:
        raise DataNotFound(f"{info.name} needs a data folder: {info.how_to_get}")
    base = Path(data_dir)
    root = base / folder if (base / folder).is_dir() else base
    if info.name == "cifar10":
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        key = "labels"
    else:
        names, key = (["train"] if split == "train" else ["test"]), "fine_labels"
    if not all((root / n).exists() for n in names):
        raise DataNotFound(f"{info.name} ({split}) not found in {str(base)!r}: {info.how_to_get}")
    batches = [_read_cifar_batch(root / n, key) for n in names]
    x = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches]).reshape(-1, 3, 32, 32)
    y = np.concatenate([np.asarray(b[key], dtype=np.int64) for b in batches])
    return torch.from_numpy(x), torch.from_numpy(y)


def _download_cifar(info: DatasetInfo, root: Path) -> None:
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise DataNotFound("--download needs torchvision: pip install 'robench[download]'") from None
    cls = tvd.CIFAR10 if info.name == "cifar10" else tvd.CIFAR100
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as e:  # network errors come in many types
        raise DataNotFound(f"download of {info.name} into {str(root)!r} failed: {e}") from None


# ---------------------------------------------------------------------------------------- shipped subset
def load_subset(path: Path = SUBSET_FILE) -> tuple[Tensor, Tensor]:
    """The shipped 1,000-image Fashion-MNIST test subset: uint8 ``[1000, 1, 28, 28]`` and labels."""
    if not path.exists():
        raise DataNotFound(f"shipped subset {str(path)!r} is missing; rebuild it with `robench data subset`")
    t = load_file(str(path))
    return t["images"], t["labels"]


def make_subset(
    data_dir: str | Path | None = None, per_class: int = 100, out: Path = SUBSET_FILE
) -> Path:
    """Build the balanced subset: the first ``per_class`` test images of each class, interleaved by class
    (so any prefix of it stays nearly balanced), stored as uint8 safetensors."""
    info = DATASETS.get("fashion-mnist")
    x8, y = _load_fmnist("test", data_dir, info)
    idx = [torch.nonzero(y == k).flatten()[:per_class] for k in range(info.classes)]
    order = torch.stack(idx, 1).flatten()  # [per_class * classes], class-interleaved
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({"images": x8[order].contiguous(), "labels": y[order].contiguous()}, str(out))
    return out


def check_images(x: Tensor, info: DatasetInfo | None = None) -> None:
    """Refuse images that are not finite, not in [0, 1], or do not fit the dataset's shape."""
    if x.dim() != 4:
        raise BadSpec(f"images must be [N, C, H, W], got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise BadSpec("images contain NaN or Inf; accepted: finite values in [0, 1]")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise BadSpec(f"images range [{lo:.3g}, {hi:.3g}]; accepted: values in [0, 1]")
    if info is not None and (x.shape[1], x.shape[2]) != (info.channels, info.size):
        raise BadSpec(f"images {tuple(x.shape[1:])} do not fit {info.name} ({info.channels} channels)")
