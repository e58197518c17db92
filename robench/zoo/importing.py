"""Bring a user's own weights into the zoo without ever running code from the file.

A ``.pt``/``.pth`` file is read with ``torch.load(weights_only=True)``: its restricted unpickler rebuilds only
tensors and plain containers and refuses every other global (``open``, ``os.system``, a custom class), so a
crafted pickle is refused before anything in it runs. A ``.safetensors`` file holds no code at all. The tensors
must then fit the model built from the given options exactly (``load_state_dict(strict=True)``), and the entry is
written like any other: safetensors weights plus a validated card whose notes say where it came from.

Examples:
    >>> cfg = ModelConfig(arch="vgg5", neuron="lif", T=4, width=0.5)
    >>> card = import_state_dict("mine.pt", cfg, "fashion-mnist", "fmnist-vgg5-mine", "zoo")
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import torch

from ..data import DATASETS
from ..errors import BadSpec, IntegrityError
from ..snn.models import ModelConfig, build_model
from . import Card, check_new, fit_weights, save, validate_id

WRAPPER_KEYS = ("state_dict", "model")  # common checkpoint layouts: {"state_dict": {...}, "epoch": ...}
PREFIXES = ("module.", "_orig_mod.")  # DataParallel and torch.compile wrappers
ACCEPTED = "a PyTorch state dict (.pt/.pth, tensors only) or a .safetensors file"


def read_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """The tensors of a user's checkpoint, read without executing anything (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise BadSpec(f"{str(p)!r} does not exist or is not a file; accepted: {ACCEPTED}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load as st_load

        try:
            obj = st_load(p.read_bytes())
        except Exception as e:  # safetensors raises several kinds for a bad header
            raise IntegrityError(f"cannot read {str(p)!r} as safetensors: {e}") from None
    else:
        obj = _torch_load(p)
    return _tensors_of(obj, p)


def _torch_load(p: Path) -> object:
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": not an error, not for the user
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"Unsupported (global|class|operand)[:\s]+(?:GLOBAL\s+)?([\w.<>]+)", str(e))
        what = f"it needs {m.group(2)}" if m else "it holds more than tensors"
        raise IntegrityError(f"{str(p)!r} refused: {what}, and robench reads only plain tensors from a pickle "
                             "(torch.load weights_only=True); nothing in the file was run") from None
    except Exception as e:  # a truncated zip, a text file, an empty file, ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise IntegrityError(f"cannot read {str(p)!r}: {first[:200]}; accepted: {ACCEPTED}") from None


def _tensors_of(obj: object, p: Path) -> dict[str, torch.Tensor]:
    """Unwrap ``{"state_dict": ...}`` / ``{"model": ...}`` and wrapper prefixes; every value must be a tensor."""
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise IntegrityError(f"{str(p)!r} holds a {type(obj).__name__}, not a state dict; accepted: {ACCEPTED}")
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise IntegrityError(f"{str(p)!r}: entry {k!r} is a {type(v).__name__}, not a tensor; "
                                 f"accepted: {ACCEPTED}")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise IntegrityError(f"{str(p)!r}: tensor {k!r} holds NaN or Inf; refusing to import it")
    tensors = dict(obj)
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    return tensors


def import_state_dict(
    path: Path | str,
    model_cfg: ModelConfig,
    dataset: str,
    entry_id: str,
    zoo_dir: Path | str,
    overwrite: bool = False,
    command: str = "",
) -> Card:
    """Check ``path`` against the model ``model_cfg`` builds and write it as zoo entry ``entry_id``.

    Everything is checked before anything is written: a refused import leaves the zoo as it was.
    """
    validate_id(entry_id)
    info = DATASETS.get(dataset)
    got = (model_cfg.in_channels, model_cfg.image_size, model_cfg.num_classes)
    if got != (info.channels, info.size, info.classes):
        raise BadSpec(f"the model takes {got[0]} channel(s) of {got[1]}x{got[1]} with {got[2]} classes; "
                      f"{info.name} has {info.channels} of {info.size}x{info.size} with {info.classes}")
    check_new(zoo_dir, entry_id, overwrite)
    tensors = read_state_dict(path)
    model = build_model(model_cfg)
    fit_weights(model, tensors, repr(str(path)), model_cfg.arch)
    card = Card.new(entry_id, model_cfg, info.name, notes=f"imported from {Path(path).name}", command=command)
    return save(model.eval(), card, zoo_dir, overwrite=overwrite)
