"""A zoo entry's card: what rebuilds and explains the model, checked field by field when read.

The card holds the exact ``ModelConfig`` given to ``build_model`` (or a foreign entry's spec), the dataset, the
training recipe (checked against ``TrainConfig``'s fields, never importing training code), the metrics measured
at the end of training, the sha256 of the weights, library versions and the date. :func:`defining_fields` are
the fields that define the network; :func:`fingerprint` records a digest of each at save, and
:func:`check_fingerprint` refuses a card whose defining fields changed since, naming the field.
:func:`config_digest` is what results rows carry beside the weights' sha256.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields

from ..data import DATASETS
from ..errors import BadSpec, IntegrityError, UsageError
from ..runtime import now, versions
from ..snn.models import ARCHS, ModelConfig
from ..train.config import TrainConfig
from .foreign import FOREIGN, ForeignSpec

SCHEMA = 1
ID_RE = re.compile(r"\A[a-z0-9][a-z0-9._-]{0,79}\Z")  # \Z: "$" would let a final newline in


@dataclass
class Card:
    """A zoo entry's description; serialised as JSON, validated on every read (unknown keys refused)."""

    id: str
    arch: str
    model: dict
    dataset: str
    recipe: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    sha256: str = ""
    fingerprint: dict = field(default_factory=dict)  # defining field -> digest of its value, recorded at save
    versions: dict = field(default_factory=dict)
    created: str = ""
    device: str = "cpu"
    command: str = ""
    notes: str = ""
    schema: int = SCHEMA

    @classmethod
    def new(cls, id: str, model_cfg: ModelConfig, dataset: str, **kw) -> Card:
        return cls(id=id, arch=model_cfg.arch, model=model_cfg.to_dict(), dataset=dataset,
                   versions=versions(), created=now(), **kw)

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.model)

    @property
    def clean_acc(self) -> float | None:
        return self.metrics.get("clean_acc")

    def summary(self) -> dict:
        """One flat row for `zoo list`."""
        m, r = self.model, self.recipe
        return {
            "id": self.id, "arch": self.arch, "dataset": self.dataset, "neuron": m.get("neuron", m.get("framework")),
            "T": m.get("T"), "width": m.get("width"), "recipe": r.get("recipe", ""),
            "alpha": r.get("alpha", 0.0), "epochs": r.get("epochs"), "clean_acc": self.clean_acc,
            "sha256": self.sha256[:12],
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "card") -> Card:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise IntegrityError(f"{where}: not valid JSON ({e})") from None
        return cls.validate(d, where)

    @classmethod
    def validate(cls, d: object, where: str = "card") -> Card:
        """Types and allowed values of every field, of the model config and of the recipe; unknown or missing
        keys are refused (a card written by robench always has every key)."""
        if not isinstance(d, dict):
            raise IntegrityError(f"{where}: a card must be a JSON object")
        names = {f.name for f in fields(cls)}
        d = {**({"fingerprint": {}} if "fingerprint" not in d else {}), **d}  # cards written before it existed
        unknown, missing = set(d) - names, names - set(d)
        if unknown:
            raise IntegrityError(f"{where}: unknown keys {sorted(unknown)}; accepted: {sorted(names)}")
        if missing:
            raise IntegrityError(f"{where}: missing keys {sorted(missing)}")
        for k, v in d.items():
            if not isinstance(v, CARD_TYPES[k]) or (CARD_TYPES[k] is int and isinstance(v, bool)):
                raise IntegrityError(f"{where}: {k!r} must be {CARD_TYPES[k].__name__}, got {type(v).__name__}")
        if d["schema"] != SCHEMA:
            raise IntegrityError(f"{where}: schema {d['schema']}; this robench reads schema {SCHEMA}")
        checks = [
            (ID_RE.match(d["id"]), f"id {d['id']!r} is not a valid zoo id"),
            (re.fullmatch(r"[0-9a-f]{64}", d["sha256"]), "sha256 must be 64 hex digits"),
            (d["arch"] in ARCHS or d["arch"] == FOREIGN,
             f"unknown arch {d['arch']!r}; known: {', '.join([*ARCHS.names(), FOREIGN])}"),
            (d["dataset"] in DATASETS, f"unknown dataset {d['dataset']!r}; known: {', '.join(DATASETS.names())}"),
            (DEVICE_RE.match(d["device"]), f"device {d['device']!r}; accepted: cpu, cuda, cuda:N, mps"),
            (all(isinstance(k, str) and isinstance(v, str) for k, v in d["versions"].items()),
             "versions must map names to version strings"),
            (all(isinstance(v, str) and DIGEST_RE.match(v) for v in d["fingerprint"].values()),
             "fingerprint must map field names to 16 hex digits"),
            (d["model"].get("arch", FOREIGN) == d["arch"],
             f"model config is for arch {d['model'].get('arch')!r}, card says {d['arch']!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise IntegrityError(f"{where}: {msg}")
        _check_created(d["created"], where)
        (_check_foreign if d["arch"] == FOREIGN else _check_model)(d["model"], where)
        _check_recipe(d["recipe"], where)
        _check_metrics(d["metrics"], where)
        return cls(**d)


CARD_TYPES = {"id": str, "arch": str, "model": dict, "dataset": str, "recipe": dict, "metrics": dict, "sha256": str,
              "fingerprint": dict, "versions": dict, "created": str, "device": str, "command": str, "notes": str,
              "schema": int}
DEVICE_RE = re.compile(r"\A(cpu|mps|cuda(:[0-9]+)?)\Z")
DIGEST_RE = re.compile(r"\A[0-9a-f]{16}\Z")
LOCATION = ("code_file", "code_root", "snapshot")  # where a foreign entry's code lies: its sha256 defines it


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def defining_fields(card: Card) -> dict:
    """Everything that defines the network besides its weights: arch, dataset and every field of the model
    config (robench) or the foreign spec (framework, entry, code hash, T, step mode, encoding, ...), but not
    where a foreign entry's code file lies."""
    return {"arch": card.arch, "dataset": card.dataset,
            **{k: v for k, v in card.model.items() if k not in LOCATION and k != "arch"}}


def fingerprint(card: Card) -> dict:
    """``{field: 16-hex digest of its value}`` for every defining field: what a card records at save."""
    return {k: _digest(v) for k, v in defining_fields(card).items()}


def config_digest(card: Card) -> str:
    """The digest (16 hex digits) of all the defining fields: the results rows' ``config`` column."""
    return _digest(defining_fields(card))


def check_fingerprint(card: Card, where: str) -> None:
    """Refuse a card whose defining fields differ from the digests recorded when it was saved (naming the
    field); a card without a recorded fingerprint (written before it existed) has nothing to compare."""
    now_ = fingerprint(card)
    for name, digest in card.fingerprint.items():
        if now_.get(name) != digest:
            value = defining_fields(card).get(name, "(removed)")
            raise IntegrityError(f"{where}: defining field {name!r} changed since the entry was trained or imported "
                                 f"(now {value!r:.40}); the weights belong to the network recorded then; refusing "
                                 "to load (restore the field, or train or import a new entry)")
_JSON_TYPES = {"int": int, "float": (int, float), "str": str, "bool": bool, "tuple[float, ...]": list, "dict": dict}


def check_fields(d: dict, cls: type, where: str, require_all: bool = False,
                 optional: frozenset[str] = frozenset()) -> None:
    """Keys of ``d`` are fields of dataclass ``cls`` and each value has the field's JSON type; with
    ``require_all``, every field but the ``optional`` ones must be there."""
    known = {f.name: str(f.type) for f in fields(cls)}
    unknown, missing = set(d) - set(known), (set(known) - set(d) - optional) if require_all else set()
    if unknown or missing:
        bad = f"unknown keys {sorted(unknown)}" if unknown else f"missing keys {sorted(missing)}"
        raise IntegrityError(f"{where}: {bad}; accepted: {sorted(known)}")
    for k, v in d.items():
        tname = known[k]
        base = tname.removesuffix(" | None")
        if v is None and base != tname:
            continue
        ok = isinstance(v, _JSON_TYPES[base]) and (base == "bool" or not isinstance(v, bool))
        if ok and base.startswith("tuple"):
            ok = all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in v)
        if not ok:
            raise IntegrityError(f"{where}: {k!r} must be {tname.replace('None', 'null')}, got {v!r:.40}")


def _check_model(model: dict, where: str) -> None:
    # encoding: written only when not direct, so cards from before input codings existed stay as they were
    check_fields(model, ModelConfig, f"{where}: model", require_all=True, optional=frozenset({"encoding"}))
    try:
        ModelConfig.from_dict(model)
    except (UsageError, TypeError) as e:
        raise IntegrityError(f"{where}: bad model config: {e}") from None


def _check_foreign(model: dict, where: str) -> None:
    """A foreign entry's spec (framework, entry point, code hash, T, ...): every key, with its type and value."""
    model = {**ForeignSpec.LATER, **model}  # a card written before a field existed reads with its default
    check_fields(model, ForeignSpec, f"{where}: model", require_all=True)
    try:
        ForeignSpec(**model)
    except (UsageError, TypeError) as e:
        raise IntegrityError(f"{where}: bad foreign model spec: {e}") from None


def _check_recipe(recipe: dict, where: str) -> None:
    """The training options (a subset of TrainConfig's fields; an imported entry has none)."""
    check_fields(recipe, TrainConfig, f"{where}: recipe")
    try:
        TrainConfig(**recipe)
    except (UsageError, TypeError) as e:
        raise IntegrityError(f"{where}: bad recipe: {e}") from None


METRICS = {"clean_acc": "a fraction in [0, 1] or null", "n_test": "an integer >= 0",
           "train_seconds": "a number >= 0", "history": "a list of per-epoch {name: number} objects",
           "world_size": "an integer >= 1", "global_batch": "an integer >= 1"}


def _check_metrics(metrics: dict, where: str) -> None:
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise IntegrityError(f"{where}: unknown metrics {sorted(unknown)}; accepted: {sorted(METRICS)}")

    def num(v: object) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    ok = {
        "clean_acc": lambda v: v is None or (num(v) and 0 <= v <= 1),
        "n_test": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "train_seconds": lambda v: num(v) and v >= 0,
        "world_size": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "global_batch": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "history": lambda v: isinstance(v, list) and all(
            isinstance(e, dict) and all(isinstance(k, str) and num(x) for k, x in e.items()) for e in v),
    }
    for k, v in metrics.items():
        if not ok[k](v):
            raise IntegrityError(f"{where}: metrics {k!r} = {v!r:.40}; must be {METRICS[k]}")


def _check_created(created: str, where: str) -> None:
    try:
        if created:
            _dt.datetime.fromisoformat(created)
    except ValueError:
        raise IntegrityError(f"{where}: created {created!r} is not an ISO date") from None


def validate_id(entry_id: str) -> str:
    if not ID_RE.match(entry_id):
        raise BadSpec(f"zoo id {entry_id!r}; use lowercase letters, digits, '.', '_' and '-' (max 80)")
    return entry_id
