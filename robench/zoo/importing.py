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

import hashlib
import importlib.util
import json
import pickle
import re
import warnings
from pathlib import Path

import torch

from ..data import DATASETS
from ..errors import BadSpec, IntegrityError
from ..runtime import now, versions
from ..snn.models import ModelConfig, accuracy, build_model
from . import Card, check_new, fit_weights, save, validate_id
from .adapters import FRAMEWORKS
from .foreign import (
    FOREIGN,
    ForeignSpec,
    call_entry,
    entry_function,
    module_file,
    require_trust,
    run_code,
    write_snapshot,
)

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
    x: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
) -> Card:
    """Check ``path`` against the model ``model_cfg`` builds and write it as zoo entry ``entry_id``; with test
    images ``x`` ``[N, C, H, W]`` in ``[0, 1]`` and labels ``y``, measure and record its clean accuracy (an
    untrained or mismatched model shows at once, as with a framework import).

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
    metrics = {} if x is None or y is None else {"clean_acc": accuracy(model.eval(), x, y), "n_test": len(y)}
    card = Card.new(entry_id, model_cfg, info.name, notes=f"imported from {Path(path).name}", command=command,
                    metrics=metrics)
    return save(model.eval(), card, zoo_dir, overwrite=overwrite)


# ------------------------------------------------------------------------------------- foreign models
def parse_kwargs(text: str | None) -> dict:
    """``--kwargs``: a JSON object of keyword arguments for the entry point (``None`` -> ``{}``)."""
    if text is None or not text.strip():
        return {}
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadSpec(f"--kwargs {text!r:.60} is not JSON ({e.msg} at character {e.pos}); "
                      'give an object such as \'{"num_classes": 10}\'') from None
    if not isinstance(obj, dict):
        raise BadSpec(f"--kwargs {text!r:.60} is a JSON {type(obj).__name__}; give an object such as "
                      '\'{"num_classes": 10}\'')
    return obj


def _locate(entry: str, code_path: Path | str | None, trust_code: bool) -> tuple[Path, Path | None]:
    """The file defining ``entry``'s module, and the folder to put on sys.path (None: an installed module).
    The opt-in is checked before anything of the user's runs (finding an installed module imports its package)."""
    module = entry.partition(":")[0]
    if code_path is not None:
        root = Path(code_path).resolve()
        path = module_file(root, module)
        if path is None:
            raise BadSpec(f"--entry {entry!r}: no {module.replace('.', '/')}.py under --code-path {str(root)!r}")
        require_trust(trust_code, path, "importing this model")
        return path, root
    require_trust(trust_code, f"module {module}", "importing this model")
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.origin or not Path(found.origin).is_file():
        raise BadSpec(f"--entry {entry!r}: module {module!r} not found; pass --code-path DIR with the folder "
                      "that holds it")
    return Path(found.origin), None


def _stored_root(root: Path | None, zoo_dir: Path | str) -> str:
    """``root`` as the card stores it: relative to the zoo folder's parent when inside it (a project moves with its
    zoo), else absolute; "" for an installed module."""
    if root is None:
        return ""
    base = Path(zoo_dir).resolve().parent
    return root.relative_to(base).as_posix() or "." if root.is_relative_to(base) else str(root)


def import_foreign(weights: Path | str, framework: str, entry: str, x: torch.Tensor, y: torch.Tensor, dataset: str,
                   entry_id: str, zoo_dir: Path | str, T: int, kwargs: dict | None = None, step_mode: str = "multi",
                   code_path: Path | str | None = None, trust_code: bool = False, overwrite: bool = False,
                   command: str = "", output: str = "", encoding: str = "direct") -> Card:
    """Import a SpikingJelly, snnTorch or plain PyTorch model built by ``entry(**kwargs)`` (``package.module:
    function``, found under ``code_path`` or installed) with the weights in ``weights``, after the checks of
    :func:`robench.zoo.checks_foreign.check_import` on test images ``x`` ``[N, C, H, W]`` in ``[0, 1]`` with
    labels ``y``. ``output`` picks the logits when the network returns a tuple (an index, e.g. ``"1"`` for
    snnTorch's ``(spk, mem)``) or a dict (a key); it is recorded in the card and applied on every load.
    ``encoding="poisson"`` declares that the model's forward samples (checked on seeded draws). Running the
    entry needs ``trust_code`` and ROBENCH_TRUST_CODE=1. Everything is checked before anything is written: a
    refused import leaves the zoo as it was."""
    from .checks_foreign import check_import

    validate_id(entry_id)
    info = DATASETS.get(dataset)
    spec = ForeignSpec(framework, entry, "", "0" * 64, T, info.channels, info.size, info.classes,
                       kwargs=dict(kwargs or {}), step_mode=step_mode,
                       output=str(output or ""), encoding=encoding)  # the code fields are filled in below
    check_new(zoo_dir, entry_id, overwrite)
    fw = FRAMEWORKS.get(spec.framework)
    fw.require()
    path, root = _locate(spec.entry, code_path, trust_code)
    mod, digest = run_code(path, spec.module, root)
    net = call_entry(entry_function(mod, spec.entry, path), spec)
    fit_weights(net, read_state_dict(weights), repr(str(weights)), spec.entry)
    spec.code_root, spec.code_sha256 = _stored_root(root, zoo_dir), digest
    spec.code_file = path.relative_to(root).as_posix() if root is not None else str(path)
    spec.framework_version = fw.version()
    result = check_import(net.eval(), spec, x, y)
    blob = path.read_bytes()  # the bytes that ran, copied into the zoo so that the folder carries its own code
    if hashlib.sha256(blob).hexdigest() != digest:
        raise IntegrityError(f"{str(path)!r} changed while it was being imported; import it again")
    created = write_snapshot(blob, spec, zoo_dir)
    card = Card(id=entry_id, arch=FOREIGN, model=spec.to_dict(), dataset=info.name,
                metrics={"clean_acc": result.clean_acc, "n_test": len(y)},
                versions={**versions(), spec.framework: spec.framework_version}, created=now(), command=command,
                notes=f"imported from {Path(weights).name}; {result.note}")
    try:
        return save(net, card, zoo_dir, overwrite=overwrite)
    except IntegrityError:
        if created is not None:
            created.unlink(missing_ok=True)
        raise
