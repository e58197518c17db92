"""A protocol's stage list as versioned data: ``robench/eval/protocols/<name>-v<version>.toml``.

A protocol file names the protocol and its version, the threat model (norm) it is for, the budget its step sizes
are given at, the stages of the cascade in order, and optionally the path probe and the adaptive part
(``docs/protocol.md``)::

    name = "reliable"
    version = 2
    norm = "Linf"                  # the threat model of every stage: Linf, L2 or L1
    eps = "8/255"                  # the reference budget of the step sizes (a retarget scales them)
    [adaptive]                     # optional
    threshold = 0.005              # fraction of n: a run that breaks more than this earns another
    cap = 4                        # at most this many extra restarts of the strongest white-box stage
    square_queries = [10000]       # one further black-box run per entry (its query budget), in order
    [[stage]]
    attack = "apgd-ce"             # a registered attack
    grad = "probe:1"               # a gradient path key, or probe:K = the K-th best path of the model's probe
    steps = 100                    # any attack parameter: steps, step_size, restarts, random_start, queries
    repeat = 1                     # cascade-level restarts, each on what is still robust
    white_box = true
    [probe]                        # optional; needed by probe:K
    paths = ["bptt", "rate", "arctan:a=4"]
    attack = "pgd-best"
    steps = 10
    images = 32

:func:`load` reads and checks the whole file before anything runs: an unknown key, attack, path, parameter or
version, a missing or unknown norm, an attack without a version in that norm, a cap <= 0 or a black-box stage
before a white-box one raise one :class:`BadSpec` line naming the file, the stage and the value. The loader is
general: a new version is a new file, and ``reliable`` means the newest list for the norm asked for (L-inf by
default); a norm no list is for is refused, never run with another norm's stages.

Examples:
    >>> p = load("reliable")            # the newest L-inf version; load("reliable-v1") the first
    >>> load("reliable", norm="L2")     # the newest list for L2, or one BadSpec line when there is none
    >>> [str(s.grad) for s in p.stages][:2]    # a stage's path is a parsed GradPath, or probe:K or none
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from ..attacks import ATTACKS, DEFAULTS, EPS_MAX, NOISE, AttackSpec, check_norm
from ..eps import format_eps, parse_one
from ..errors import BadSpec
from ..snn.pathkeys import GradPath
from ..snn.paths import parse_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PROTOCOL_DIR = Path(__file__).resolve().with_name("protocols")
FILE_RE = re.compile(r"(?P<name>[a-z][a-z0-9-]*?)-v(?P<version>[0-9]+)\.toml")
PROBE_RE = re.compile(r"probe:(?P<k>[0-9]+)")
SPEC_KEYS = ("steps", "step_size", "restarts", "random_start", "queries")  # AttackSpec parameters a stage may set
TOP_KEYS = ("name", "version", "norm", "eps", "adaptive", "stage", "probe")
STAGE_KEYS = ("attack", "grad", "repeat", "white_box", *SPEC_KEYS)
ADAPTIVE_KEYS = ("threshold", "cap", "square_queries")
PROBE_KEYS = ("paths", "attack", "steps", "step_size", "images")


@dataclass(frozen=True)
class Stage:
    """One stage: ``spec`` through gradient path ``grad`` (a :class:`GradPath`; a path given as text is parsed here,
    once), or ``probe:K``, or ``none`` for a gradient-free attack, run ``restarts`` times at cascade level (each a
    new seed, on the samples still robust). ``white_box = False`` marks a black-box stage (the gradient-masking
    check)."""

    spec: AttackSpec
    grad: GradPath | str
    restarts: int = 1
    white_box: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.grad, str) and self.grad not in ("none", "probe") and not PROBE_RE.fullmatch(self.grad):
            object.__setattr__(self, "grad", parse_path(self.grad, label="stage grad"))

    @property
    def probe_rank(self) -> int | None:
        """K for a ``probe:K`` stage, else None."""
        m = PROBE_RE.fullmatch(self.grad) if isinstance(self.grad, str) else None
        return int(m["k"]) if m else None


@dataclass(frozen=True)
class Adaptive:
    """The adaptive part: extra restarts of the strongest white-box stage while the last run broke more than
    ``threshold`` * n (at most ``cap``), and one further black-box run per ``square_queries`` entry while the
    black-box stage keeps breaking more than that."""

    threshold: float
    cap: int
    square_queries: tuple[int, ...] = ()


@dataclass(frozen=True)
class Probe:
    """The path probe: ``spec`` (few steps) through every path of ``paths`` that applies to the model, on the
    first ``images`` images; the paths ranked by how many images each broke (ties: the order of ``paths``). Paths
    given as text are parsed here, once."""

    spec: AttackSpec
    paths: tuple[GradPath, ...]
    images: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", tuple(parse_path(p, label="probe path") for p in self.paths))


@dataclass(frozen=True)
class Protocol:
    """A named, versioned cascade for one threat model (``norm``): its ``stages`` in order, and optionally its
    ``adaptive`` part and ``probe``."""

    name: str
    version: int
    stages: tuple[Stage, ...]
    adaptive: Adaptive | None = None
    probe: Probe | None = None
    norm: str = "Linf"

    @property
    def label(self) -> str:
        return f"{self.name}-v{self.version}"

    @property
    def eps(self) -> tuple[float, str]:
        return self.stages[0].spec.eps, self.stages[0].spec.eps_str

    def digest(self) -> str:
        """12 hex digits of the stage list, probe and adaptive part at the reference budget (rows of version >= 2
        carry it, so a changed list never resumes from another list's rows)."""
        ref = self.at(8 / 255, "8/255")

        def spec(s: AttackSpec) -> dict:  # step sizes rounded: a retarget there and back may move the last bit
            return {"attack": s.name, **{k: round(v, 12) if isinstance(v, float) else v for k, v in s.params().items()}}

        body = {"name": ref.name, "version": ref.version,
                "stages": [{**spec(s.spec), "grad": str(s.grad), "repeat": s.restarts, "white_box": s.white_box}
                           for s in ref.stages],
                "adaptive": None if ref.adaptive is None else [ref.adaptive.threshold, ref.adaptive.cap,
                                                               list(ref.adaptive.square_queries)],
                "probe": None if ref.probe is None else {**spec(ref.probe.spec), "images": ref.probe.images,
                                                         "paths": [str(p) for p in ref.probe.paths]}}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]

    def at(self, eps: float, eps_str: str) -> Protocol:
        """The same protocol at another budget: step sizes given in absolute units scale with it."""
        probe = None if self.probe is None else replace(self.probe, spec=_spec_at(self.probe.spec, eps, eps_str))
        return replace(self, stages=tuple(retarget(self.stages, eps, eps_str)), probe=probe)


def _spec_at(s: AttackSpec, eps: float, eps_str: str) -> AttackSpec:
    step = None if s.step_size is None or s.eps == 0 else s.step_size * eps / s.eps
    return replace(s, eps=eps, eps_str=eps_str, step_size=step)


def retarget(stages, eps: float, eps_str: str) -> list[Stage]:
    """The same stages at another budget (step sizes given in absolute units scale with it)."""
    return [replace(s, spec=_spec_at(s.spec, eps, eps_str)) for s in stages]


# ---------------------------------------------------------------------------------------------- finding files
def versions(name: str, folder: Path = PROTOCOL_DIR) -> dict[int, Path]:
    """Every shipped version of protocol ``name``: version -> file."""
    out = {}
    for f in sorted(folder.glob(f"{name}-v*.toml")):
        m = FILE_RE.fullmatch(f.name)
        if m and m["name"] == name:
            out[int(m["version"])] = f
    return dict(sorted(out.items()))


def names(folder: Path = PROTOCOL_DIR) -> list[str]:
    """The protocol names a ``--suite`` accepts: each protocol (its newest version), then every version."""
    found = sorted({m["name"] for f in folder.glob("*.toml") if (m := FILE_RE.fullmatch(f.name))})
    return [*found, *(f"{n}-v{v}" for n in found for v in versions(n, folder))]


def is_protocol(name: str, folder: Path = PROTOCOL_DIR) -> bool:
    """True when ``name`` names a shipped protocol (``reliable``, ``reliable-vN``) or is a ``.toml`` file."""
    return name.endswith(".toml") or name in names(folder) or bool(
        (m := re.fullmatch(r"(.+)-v([0-9]+)", name)) and versions(m[1], folder))


def load(name: str, folder: Path = PROTOCOL_DIR, norm: str | None = None) -> Protocol:
    """The protocol ``name`` (its newest version for ``norm``, default L-inf), ``name-vN`` (version N) or a
    ``.toml`` file path. With ``norm``, a version or file for another norm is refused, and so is a ``name`` with
    no list for ``norm`` (one line naming the norms its lists are for)."""
    want = None if norm is None else check_norm(norm)
    if name.endswith(".toml"):
        return _for_norm(load_file(Path(name)), want, name)
    base, version = name, None
    m = re.fullmatch(r"(.+)-v([0-9]+)", name)
    if m and versions(m[1], folder):
        base, version = m[1], int(m[2])
    have = versions(base, folder)
    if not have:
        raise BadSpec(f"unknown protocol {name!r}; choose from: {', '.join(names(folder))}")
    if version is not None:
        if version not in have:
            raise BadSpec(f"unknown protocol version {version} of {base!r}; versions: {', '.join(map(str, have))}")
        return _for_norm(load_file(have[version]), want, name)
    lists = {v: load_file(f) for v, f in have.items()}
    fits = [v for v, p in lists.items() if p.norm == (want or "Linf")]
    if not fits:
        by = {}
        for p in lists.values():
            by.setdefault(p.norm, []).append(p.label)
        shipped = "; ".join(f"{n}: {', '.join(labels)}" for n, labels in by.items())
        raise BadSpec(f"no {base} stage list for {want}: its lists are for {shipped}; in {want}, name the attacks "
                      "instead (e.g. --attack apgd-ce,apgd-t,square)")
    return lists[max(fits)]


def _for_norm(p: Protocol, norm: str | None, name: str) -> Protocol:
    if norm is not None and p.norm != norm:
        raise BadSpec(f"protocol {name!r} is a stage list for {p.norm}, not {norm}; give --norm {p.norm}, or a "
                      f"list for {norm}")
    return p


def load_file(path: Path) -> Protocol:
    """Read and check a protocol file (see the module docstring); one BadSpec line for anything wrong."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise BadSpec(f"protocol file {str(path)!r} cannot be read ({e.strerror or type(e).__name__})") from None
    except tomllib.TOMLDecodeError as e:
        raise BadSpec(f"protocol file {str(path)!r} is not TOML ({e})") from None
    return parse(data, path.name)


# ---------------------------------------------------------------------------------------------- checking
def _keys(table: object, accepted: tuple[str, ...], where: str) -> dict:
    if not isinstance(table, dict):
        raise BadSpec(f"{where} must be a table of keys")
    for k in table:
        if k not in accepted:
            raise BadSpec(f"{where}: unknown key {k!r}; accepted: {', '.join(accepted)}")
    return table


def _int(v: object, what: str, low: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise BadSpec(f"{what} = {v!r}; must be an integer >= {low}")
    return v


def _spec(table: dict, keys: tuple[str, ...], eps: tuple[float, str], norm: str, where: str) -> AttackSpec:
    """An AttackSpec from a stage's (or the probe's) keys; the spec's own checks, named in file terms."""
    name = table.get("attack")
    if not isinstance(name, str):
        raise BadSpec(f"{where}: attack = {name!r}; choose from: {', '.join(ATTACKS.names())}")
    if name not in ATTACKS:
        raise BadSpec(f"{where}: unknown attack {name!r}; choose from: {', '.join(ATTACKS.names())}")
    if name in NOISE or name == "autoattack":
        raise BadSpec(f"{where}: attack {name!r} cannot be a stage (noise has no budget to verify; autoattack is a "
                      "cascade of its own)")
    kw = {k: table[k] for k in keys if k in table}
    for k, v in kw.items():
        if k not in DEFAULTS[name]:
            takers = ", ".join(n for n, d in DEFAULTS.items() if k in d)
            raise BadSpec(f"{where}: {k} does not apply to {name}; it applies to: {takers}")
        if k == "step_size":
            try:
                kw[k] = parse_one(v, "step_size", EPS_MAX[norm]) if isinstance(v, str) else v
            except BadSpec as e:
                raise BadSpec(f"{where}: {e}") from None
    try:
        return AttackSpec(name, eps=eps[0], eps_str=eps[1], norm=norm, **kw)
    except (BadSpec, TypeError) as e:
        raise BadSpec(f"{where}: {str(e).replace('--', '')}") from None


def _grad(value: object, spec: AttackSpec, probe: Probe | None, where: str) -> GradPath | str:
    if spec.gradient_free:
        if value not in (None, "none"):
            raise BadSpec(f"{where}: grad = {value!r}; the gradient-free {spec.name} takes none")
        return "none"
    if not isinstance(value, str):
        raise BadSpec(f"{where}: grad = {value!r}; give a gradient path (e.g. \"bptt\") or probe:K")
    m = PROBE_RE.fullmatch(value)
    if m:
        if probe is None:
            raise BadSpec(f"{where}: grad = {value!r} needs a [probe] section")
        k = int(m["k"])
        if not 1 <= k <= len(probe.paths):
            raise BadSpec(f"{where}: grad = {value!r}; the probe ranks {len(probe.paths)} paths (probe:1.."
                          f"probe:{len(probe.paths)})")
        return value
    try:
        return parse_path(value, label=f"{where}: grad")
    except BadSpec as e:
        raise BadSpec(str(e)) from None


def _probe(table: object, eps: tuple[float, str], norm: str, where: str) -> Probe:
    t = _keys(table, PROBE_KEYS, where)
    spec = _spec(t, ("steps", "step_size"), eps, norm, where)
    if spec.gradient_free:
        raise BadSpec(f"{where}: attack {spec.name!r} uses no gradient; a probe ranks gradient paths")
    paths = t.get("paths")
    if not isinstance(paths, list) or not paths:
        raise BadSpec(f"{where}: paths = {paths!r}; give a non-empty list of gradient paths")
    parsed = [parse_path(p, label=f"{where}: paths") if isinstance(p, str) else
              _raise(f"{where}: paths holds {p!r}, not a path") for p in paths]
    if len(set(parsed)) != len(parsed):
        raise BadSpec(f"{where}: paths lists a path twice")
    return Probe(spec, tuple(parsed), _int(t.get("images"), f"{where}: images"))


def _raise(msg: str):
    raise BadSpec(msg)


def _adaptive(table: object, where: str) -> Adaptive:
    t = _keys(table, ADAPTIVE_KEYS, where)
    thr = t.get("threshold")
    if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not 0 <= thr < 1:
        raise BadSpec(f"{where}: threshold = {thr!r}; must be a fraction of n in [0, 1)")
    cap = _int(t.get("cap"), f"{where}: cap")
    queries = t.get("square_queries", [])
    if not isinstance(queries, list):
        raise BadSpec(f"{where}: square_queries = {queries!r}; give a list of query budgets")
    return Adaptive(float(thr), cap, tuple(_int(q, f"{where}: square_queries entry") for q in queries))


def parse(data: dict, where: str = "protocol") -> Protocol:
    """A protocol from a parsed TOML table (``where`` names it in messages)."""
    _keys(data, TOP_KEYS, where)
    name, version = data.get("name"), data.get("version")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9-]*", name):
        raise BadSpec(f"{where}: name = {name!r}; use lowercase letters, digits and '-'")
    version = _int(version, f"{where}: version")
    m = FILE_RE.fullmatch(where)
    if m and (m["name"] != name or int(m["version"]) != version):
        raise BadSpec(f"{where}: holds {name} version {version}; its file name says {m['name']} version "
                      f"{m['version']}")
    if "norm" not in data:
        raise BadSpec(f"{where}: norm is missing (the threat model every stage is for: Linf, L2 or L1)")
    norm = check_norm(data["norm"], f"{where}: norm")
    if "eps" not in data:
        raise BadSpec(f"{where}: eps is missing (the budget the step sizes are given at, e.g. \"8/255\")")
    try:
        eps_v = parse_one(data["eps"], f"{where}: eps", EPS_MAX[norm])
    except BadSpec as e:
        raise BadSpec(str(e)) from None
    den = 255 if norm == "Linf" else None
    eps = (eps_v, data["eps"] if isinstance(data["eps"], str) else format_eps(eps_v, den=den))
    probe = _probe(data["probe"], eps, norm, f"{where}: [probe]") if "probe" in data else None
    adaptive = _adaptive(data["adaptive"], f"{where}: [adaptive]") if "adaptive" in data else None
    tables = data.get("stage")
    if not isinstance(tables, list) or not tables:
        raise BadSpec(f"{where}: no [[stage]]; a protocol needs at least one stage")
    stages = []
    for i, t in enumerate(tables, 1):
        here = f"{where}: stage {i}"
        _keys(t, STAGE_KEYS, here)
        spec = _spec(t, SPEC_KEYS, eps, norm, here)
        grad = _grad(t.get("grad"), spec, probe, here)
        white = t.get("white_box", not spec.gradient_free)
        if not isinstance(white, bool) or (white and spec.gradient_free):
            raise BadSpec(f"{here}: white_box = {white!r}; a gradient-free attack is a black-box stage (false)")
        stages.append(Stage(spec, grad, _int(t.get("repeat", 1), f"{here}: repeat"), white))
    flags = [s.white_box for s in stages]
    if True in flags and False in flags[: len(flags) - flags[::-1].index(True)]:
        raise BadSpec(f"{where}: a black-box stage comes before a white-box one; black-box stages go last (they "
                      "check for gradient masking: what every white-box stage missed)")
    if adaptive and adaptive.square_queries:
        black = [s for s in stages if not s.white_box]
        if not black or "queries" not in DEFAULTS.get(black[-1].spec.name, {}):
            raise BadSpec(f"{where}: [adaptive] square_queries needs a last black-box stage that takes queries")
    return Protocol(name, version, tuple(stages), adaptive, probe, norm)
