"""Zoo entries whose model is built by the user's own code (SpikingJelly, snnTorch, plain PyTorch).

The card's ``model`` is a :class:`ForeignSpec`: the framework and its version, the entry point
``package.module:function`` and its keyword arguments, the file that defines it with its sha256, T, the step mode
and the encoding. Importing copies that file into the zoo folder (``code/<first 16 hex of its sha256>/<module
path>.py``, the spec's ``snapshot``), and loading runs the copy: a zoo folder can be moved, archived and shared as a
unit. Entries imported before snapshots existed run the file where it was imported from. Building such a model
runs that file, so it needs an explicit opt-in on every load: the ``--trust-code`` flag (``trust_code=True``)
AND the environment variable ``ROBENCH_TRUST_CODE=1``. Without both, or when the file's sha256 differs from the
card's, loading is refused in one line naming the file. The bytes that are hashed are the bytes that run (no
second read). An entry imported with encoding ``poisson`` declares that its forward pass samples (rate-coded input
spikes drawn from torch's generator): robench then evaluates it with averaged draws (:mod:`robench.snn.encoding`);
randomness that is not declared is refused at import.

Examples:
    >>> spec = resolve_entry("examples.sj_vgg:build", "examples/..", framework="spikingjelly", T=4, ...)
    >>> model = build(spec, tensors, zoo_dir="zoo", trust_code=True)     # a ForeignModel
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import types
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

from torch import nn

from ..errors import BadSpec, IntegrityError
from .adapters import FRAMEWORKS, STEP_MODES, ForeignModel
from .weights import fit_weights

FOREIGN = "foreign"  # the card's arch for these entries
TRUST_ENV = "ROBENCH_TRUST_CODE"
ENCODINGS = ("direct", "poisson")  # poisson: the model's forward samples its input spikes (declared, seeded)
ENTRY_RE = re.compile(r"\A[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_]\w*\Z")


@dataclass
class ForeignSpec:
    """How to rebuild a user's model; stored as the card's ``model`` (checked here and on every card read)."""

    framework: str
    entry: str  # package.module:function
    code_file: str  # the file defining the entry: relative to code_root, or absolute when code_root is ""
    code_sha256: str
    T: int
    in_channels: int
    image_size: int
    num_classes: int
    kwargs: dict = field(default_factory=dict)
    code_root: str = ""  # the folder put on sys.path; relative to the zoo folder's parent, or absolute
    step_mode: str = "multi"
    encoding: str = "direct"
    framework_version: str = ""
    output: str = ""  # the logits in a tuple (index) or dict (key) the network returns; "" = one tensor
    snapshot: str = ""  # the copy of the code inside the zoo folder (relative to it); "" before snapshots existed

    LATER: ClassVar[dict] = {"output": "", "snapshot": ""}  # fields added after the first cards: what absence means

    def __post_init__(self) -> None:
        FRAMEWORKS.get(self.framework)
        checks = [
            (ENTRY_RE.match(self.entry), f"--entry {self.entry!r}; expected package.module:function"),
            (isinstance(self.kwargs, dict), "--kwargs must be a JSON object"),
            (isinstance(self.T, int) and 1 <= self.T <= 1000, f"-T {self.T}; must be an integer in 1..1000"),
            (self.step_mode in STEP_MODES, f"--step-mode {self.step_mode!r}; choose from: {', '.join(STEP_MODES)}"),
            (self.encoding in ENCODINGS, f"encoding {self.encoding!r}; choose from: {', '.join(ENCODINGS)}"),
            (re.fullmatch(r"[0-9a-f]{64}", self.code_sha256), "code_sha256 must be 64 hex digits"),
            (self.snapshot in ("", snapshot_dir(self.code_sha256)),
             f"snapshot {self.snapshot!r}; must be {snapshot_dir(self.code_sha256)!r} (the code's sha256) or empty"),
            (all(isinstance(v, int) and v >= 1 for v in (self.in_channels, self.image_size, self.num_classes)),
             "in_channels, image_size and num_classes must be integers >= 1"),
            (isinstance(self.output, str) and len(self.output) <= 100 and self.output.isprintable(),
             f"--output {self.output!r:.40}; give an index such as 1 or a dict key"),
        ]
        for ok, msg in checks:
            if not ok:
                raise BadSpec(msg)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def module(self) -> str:
        return self.entry.partition(":")[0]

    @property
    def function(self) -> str:
        return self.entry.partition(":")[2]

    @property
    def snapshot_file(self) -> str:
        """The code file's path inside the snapshot folder: the module's dotted path."""
        return self.module.replace(".", "/") + ".py"


def snapshot_dir(code_sha256: str) -> str:
    return f"code/{code_sha256[:16]}"


def trusted(trust_code: bool) -> bool:
    return bool(trust_code) and os.environ.get(TRUST_ENV, "") == "1"


def require_trust(trust_code: bool, file: Path | str, what: str) -> None:
    """Refuse (one line naming the file) unless both the flag and the environment variable opt in."""
    if not trusted(trust_code):
        missing = " and ".join(m for m, ok in (("--trust-code", trust_code),
                                               (f"{TRUST_ENV}=1", os.environ.get(TRUST_ENV) == "1")) if not ok)
        raise IntegrityError(f"{what} runs the code in {str(file)!r}: read it, then pass --trust-code with "
                             f"{TRUST_ENV}=1 in the environment (missing: {missing})")


def module_file(root: Path, module: str) -> Path | None:
    """``root/package/module.py`` or ``root/package/module/__init__.py``, if either exists."""
    base = root.joinpath(*module.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def run_code(path: Path, module: str, root: Path | None,
             sha256: str | None = None) -> tuple[types.ModuleType, str]:
    """Execute ``path`` as module ``module`` (with ``root`` on sys.path for its own imports); with ``sha256``, the
    bytes must hash to it first. Returns the module and the sha256 of the bytes that ran."""
    blob = path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if sha256 is not None and digest != sha256:
        raise IntegrityError(f"{str(path)!r} changed since the entry was imported (sha256 {digest[:12]}…, card "
                             f"{sha256[:12]}…); refusing to run it; re-import the model to trust the new code")
    mod = types.ModuleType(module)
    mod.__file__ = str(path)
    added = root is not None and str(root) not in sys.path
    if added:
        sys.path.insert(0, str(root))
    sys.modules[module] = mod  # dataclasses and pickling inside the user's code look their module up
    try:
        exec(compile(blob, str(path), "exec"), mod.__dict__)
    except Exception as e:
        sys.modules.pop(module, None)
        raise BadSpec(f"running {str(path)!r} failed: {type(e).__name__}: {str(e)[:200]}") from None
    finally:
        if added:
            sys.path.remove(str(root))
    return mod, digest


def entry_function(mod: types.ModuleType, spec_entry: str, path: Path) -> Callable[..., nn.Module]:
    fn = getattr(mod, spec_entry.partition(":")[2], None)
    if not callable(fn):
        raise BadSpec(f"--entry {spec_entry!r}: {str(path)!r} defines no function {spec_entry.partition(':')[2]!r}")
    return fn


def call_entry(fn: Callable[..., nn.Module], spec: ForeignSpec) -> nn.Module:
    """``fn(**kwargs)``: the user's network, or a one-line BadSpec."""
    try:
        net = fn(**spec.kwargs)
    except Exception as e:
        raise BadSpec(f"--entry {spec.entry} with --kwargs {spec.kwargs} raised {type(e).__name__}: "
                      f"{str(e)[:200]}") from None
    if not isinstance(net, nn.Module):
        raise BadSpec(f"--entry {spec.entry} returned a {type(net).__name__}, not a torch.nn.Module")
    return net


def code_path(spec: ForeignSpec, zoo_dir: Path | str) -> tuple[Path, Path | None]:
    """The code file and the folder to put on sys.path, from a card's spec: the snapshot inside ``zoo_dir``, or for
    an entry imported before snapshots, the original file (``code_root`` relative to the zoo folder's parent)."""
    if spec.snapshot:
        root = Path(zoo_dir) / spec.snapshot
        return root / spec.snapshot_file, root
    base = Path(zoo_dir).resolve().parent
    if not spec.code_root:
        return Path(spec.code_file), None
    root = Path(spec.code_root)
    root = root if root.is_absolute() else base / root
    return root / spec.code_file, root


def code_hash_ok(spec: ForeignSpec | dict, zoo_dir: Path | str) -> str:
    """Check a card's code file against its sha256 without running it; returns what was checked (one line)."""
    spec = spec if isinstance(spec, ForeignSpec) else ForeignSpec(**spec)
    path, _ = code_path(spec, zoo_dir)
    if not path.is_file():
        raise IntegrityError(f"its code file {str(path)!r} is missing")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != spec.code_sha256:
        raise IntegrityError(f"{str(path)!r} changed since the entry was imported (sha256 {digest[:12]}…, card "
                             f"{spec.code_sha256[:12]}…)")
    return f"code {path.name} sha256 {digest[:12]} matches; not run (--trust-code with {TRUST_ENV}=1 builds it)"


def write_snapshot(blob: bytes, spec: ForeignSpec, zoo_dir: Path | str) -> Path | None:
    """Copy the code that ran at import (``blob``, whose sha256 is ``spec.code_sha256``) into the zoo folder and
    set ``spec.snapshot``; returns the file when this call created it (so a failed import can remove it)."""
    spec.snapshot = snapshot_dir(spec.code_sha256)
    path, _ = code_path(spec, zoo_dir)
    if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == spec.code_sha256:
        return None  # another entry already carries this code
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, path)
    except OSError as e:
        raise IntegrityError(f"cannot write the code snapshot {str(path)!r}: {e.strerror or e}") from None
    return path


def build(spec: ForeignSpec | dict, tensors: dict, zoo_dir: Path | str, trust_code: bool = False,
          what: str = "this zoo entry") -> ForeignModel:
    """The adapted model of a card's spec with ``tensors`` loaded (strict): opt-in, code hash and shapes checked."""
    spec = spec if isinstance(spec, ForeignSpec) else ForeignSpec(**spec)
    path, root = code_path(spec, zoo_dir)
    require_trust(trust_code, path, what)
    if not path.is_file():
        raise IntegrityError(f"{what}: its code file {str(path)!r} is missing")
    mod, _ = run_code(path, spec.module, root, spec.code_sha256)
    net = call_entry(entry_function(mod, spec.entry, path), spec)
    fit_weights(net, tensors, what, f"{spec.entry} {spec.kwargs}")
    return ForeignModel(net, spec.framework, spec.T, spec.step_mode, output=spec.output,
                        stochastic=spec.encoding == "poisson")
