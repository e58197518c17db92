"""The model zoo: one entry = ``<id>.safetensors`` (weights) + ``<id>.json`` (card).

The card holds everything that rebuilds and explains the model: the exact ``ModelConfig`` given to
``build_model``, the dataset, the training recipe, metrics measured at the end of training, the sha256 of the
weights file, library versions and the date. Loading checks the card's schema, the hash, and the shapes
(``load_state_dict(strict=True)``); nothing is ever unpickled.

Examples:
    >>> card = save(model, Card.new("fmnist-vgg5-lif-clean", model.config, "fashion-mnist"), "zoo")
    >>> model, card = load("fmnist-vgg5", "zoo")  # id, unique prefix, or arch name
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from .errors import BadSpec, IntegrityError, UnknownName, UsageError
from .models import ARCHS, SNN, ModelConfig, build_model
from .runtime import now, versions

SCHEMA = 1
ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}$")


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
            "id": self.id, "arch": self.arch, "dataset": self.dataset, "neuron": m.get("neuron"),
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
        """Types and allowed values of every field; unknown or missing keys are refused."""
        if not isinstance(d, dict):
            raise IntegrityError(f"{where}: a card must be a JSON object")
        types = {"id": str, "arch": str, "model": dict, "dataset": str, "recipe": dict, "metrics": dict,
                 "sha256": str, "versions": dict, "created": str, "device": str, "command": str,
                 "notes": str, "schema": int}
        names = {f.name for f in fields(cls)}
        unknown, missing = set(d) - names, {"id", "arch", "model", "dataset", "sha256"} - set(d)
        if unknown:
            raise IntegrityError(f"{where}: unknown keys {sorted(unknown)}; accepted: {sorted(names)}")
        if missing:
            raise IntegrityError(f"{where}: missing keys {sorted(missing)}")
        for k, v in d.items():
            if not isinstance(v, types[k]) or (types[k] is int and isinstance(v, bool)):
                raise IntegrityError(f"{where}: {k!r} must be {types[k].__name__}, got {type(v).__name__}")
        if d.get("schema", SCHEMA) != SCHEMA:
            raise IntegrityError(f"{where}: schema {d['schema']}; this robench reads schema {SCHEMA}")
        if not ID_RE.match(d["id"]):
            raise IntegrityError(f"{where}: id {d['id']!r} is not a valid zoo id")
        if not re.fullmatch(r"[0-9a-f]{64}", d["sha256"]):
            raise IntegrityError(f"{where}: sha256 must be 64 hex digits")
        if d["arch"] not in ARCHS:
            raise IntegrityError(f"{where}: unknown arch {d['arch']!r}; known: {', '.join(ARCHS.names())}")
        if d["model"].get("arch") != d["arch"]:
            raise IntegrityError(f"{where}: model config is for arch {d['model'].get('arch')!r}, "
                                 f"card says {d['arch']!r}")
        try:
            ModelConfig.from_dict(d["model"])
        except (UsageError, TypeError) as e:
            raise IntegrityError(f"{where}: bad model config: {e}") from None
        return cls(**d)


def validate_id(entry_id: str) -> str:
    if not ID_RE.match(entry_id):
        raise BadSpec(f"zoo id {entry_id!r}; use lowercase letters, digits, '.', '_' and '-' (max 80)")
    return entry_id


# ------------------------------------------------------------------------------------------ save / load
def _paths(zoo_dir: Path | str, entry_id: str) -> tuple[Path, Path]:
    d = Path(zoo_dir)
    return d / f"{entry_id}.safetensors", d / f"{entry_id}.json"


def _state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    model = getattr(model, "_orig_mod", model)  # the uncompiled module
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(model: nn.Module, card: Card, zoo_dir: Path | str, overwrite: bool = False) -> Card:
    """Write weights then card (the card commits the entry); refuses to replace an entry unless asked."""
    validate_id(card.id)
    wpath, cpath = _paths(zoo_dir, card.id)
    if not overwrite and (wpath.exists() or cpath.exists()):
        raise UsageError(f"zoo entry {card.id!r} already exists in {str(zoo_dir)!r}; "
                         "pass --id NAME for a new one or --overwrite to replace it")
    blob = st_save(_state_dict(model), metadata={"id": card.id, "format": "robench"})
    card.sha256 = hashlib.sha256(blob).hexdigest()
    try:
        Path(zoo_dir).mkdir(parents=True, exist_ok=True)
        _atomic_write(wpath, blob)
        _atomic_write(cpath, card.to_json().encode())
    except OSError as e:
        raise IntegrityError(f"cannot write zoo entry {card.id!r} to {str(zoo_dir)!r}: {e.strerror}") from None
    return card


def read_card(zoo_dir: Path | str, entry_id: str) -> Card:
    _, cpath = _paths(zoo_dir, entry_id)
    if not cpath.exists():
        raise IntegrityError(f"zoo entry {entry_id!r}: card {str(cpath)!r} is missing")
    card = Card.from_json(cpath.read_text(), where=str(cpath))
    if card.id != entry_id:
        raise IntegrityError(f"{str(cpath)}: card id {card.id!r} does not match its file name")
    return card


def load_weights(zoo_dir: Path | str, card: Card) -> dict[str, torch.Tensor]:
    """The entry's tensors, after checking the file's sha256 against the card."""
    wpath, _ = _paths(zoo_dir, card.id)
    if not wpath.exists():
        raise IntegrityError(f"zoo entry {card.id!r}: weights {str(wpath)!r} are missing")
    blob = wpath.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != card.sha256:
        raise IntegrityError(f"zoo entry {card.id!r}: sha256 of {wpath.name} is {digest[:12]}…, card says "
                             f"{card.sha256[:12]}…; the file was changed or truncated; refusing to load")
    try:
        return st_load(blob)
    except (SafetensorError, Exception) as e:
        raise IntegrityError(f"zoo entry {card.id!r}: not a valid safetensors file ({e})") from None


def model_from(card: Card, tensors: dict[str, torch.Tensor]) -> SNN:
    model = build_model(card.model_config)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3]) if len(first) > 1 else first[0]
        raise IntegrityError(f"zoo entry {card.id!r}: weights do not fit its {card.arch} config: "
                             f"{detail[:300]}") from None
    return model.eval()


def load(query: str, zoo_dir: Path | str, device: str | torch.device = "cpu") -> tuple[SNN, Card]:
    """Load exactly one entry by id or unique prefix: hash, schema and shapes checked."""
    cards = select(query, zoo_dir)
    if len(cards) > 1:
        raise UsageError(f"--model {query!r} matches {len(cards)} entries ({', '.join(c.id for c in cards)}); "
                         "give one id")
    card = cards[0]
    return model_from(card, load_weights(zoo_dir, card)).to(device), card


# ------------------------------------------------------------------------------------------- selection
def entry_ids(zoo_dir: Path | str) -> list[str]:
    d = Path(zoo_dir)
    return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []


def list_cards(zoo_dir: Path | str) -> tuple[list[Card], list[str]]:
    """All readable cards, and one problem line per unreadable one."""
    cards, problems = [], []
    for i in entry_ids(zoo_dir):
        try:
            cards.append(read_card(zoo_dir, i))
        except IntegrityError as e:
            problems.append(str(e))
    return cards, problems


def select(query: str, zoo_dir: Path | str) -> list[Card]:
    """Entries matching ``query``: an exact id, an arch name (every entry of that arch), or a unique prefix."""
    ids = entry_ids(zoo_dir)
    if not ids:
        raise UnknownName(f"--model {query!r}: the zoo {str(zoo_dir)!r} is empty or missing; "
                          "train one with `robench train` or pass --zoo DIR")
    if query in ids:
        return [read_card(zoo_dir, query)]
    if query in ARCHS:
        cards = [c for c in list_cards(zoo_dir)[0] if c.arch == query]
        if cards:
            return cards
    matches = [i for i in ids if i.startswith(query)]
    if len(matches) == 1:
        return [read_card(zoo_dir, matches[0])]
    if len(matches) > 1:
        raise UsageError(f"--model {query!r} is ambiguous: {', '.join(matches)}")
    raise UnknownName(f"--model {query!r} is not an id, prefix or arch in {str(zoo_dir)!r}; "
                      f"entries: {', '.join(ids)}")


def verify(zoo_dir: Path | str, query: str | None = None) -> list[tuple[str, bool, str]]:
    """Check card schema, hash and shapes of every (or the selected) entry: ``(id, ok, message)``."""
    ids = [c.id for c in select(query, zoo_dir)] if query else entry_ids(zoo_dir)
    out = []
    for i in ids:
        try:
            card = read_card(zoo_dir, i)
            model_from(card, load_weights(zoo_dir, card))
            out.append((i, True, f"ok (sha256 {card.sha256[:12]})"))
        except (IntegrityError, UsageError) as e:
            out.append((i, False, str(e)))
    return out
