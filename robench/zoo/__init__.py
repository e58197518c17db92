"""The model zoo: one entry = ``<id>.safetensors`` (weights) + ``<id>.json`` (card).

The card holds everything that rebuilds and explains the model: the exact ``ModelConfig`` given to
``build_model``, the dataset, the training recipe, metrics measured at the end of training, the sha256 of the
weights file, library versions and the date. A model's identity is its weights *and* the fields that define the
network (:func:`defining_fields`: arch, dataset and the whole model config or foreign spec: T, tau, v_th,
encoding, entry point, code hash, ...): at save the card records a digest of each in ``fingerprint``, and a card
whose defining fields no longer match it is refused, naming the field (cards written before fingerprints existed
read with ``{}``: nothing to compare). Results rows carry :func:`config_digest` beside the weights' sha256.
Loading checks the card's schema, fingerprint, the hash, and the shapes (``load_state_dict(strict=True)``);
nothing is ever unpickled.

Examples:
    >>> card = save(model, Card.new("fmnist-vgg5-lif-clean", model.config, "fashion-mnist"), "zoo")
    >>> model, card = load("fmnist-vgg5", "zoo")  # id, unique prefix, or arch name
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from ..data import DATASETS
from ..errors import BadSpec, IntegrityError, UnknownName, UsageError
from ..io import existing_base, header_metadata, replacing, unwritable
from ..runtime import now, versions
from ..snn.models import ARCHS, ModelConfig, accuracy, build_model
from ..train.config import TrainConfig
from .foreign import FOREIGN, ForeignSpec, code_hash_ok, trusted
from .weights import fit_weights

TestData = Callable[[str], tuple[Tensor, Tensor]]  # dataset name -> test images [N, C, H, W] in [0, 1], labels
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


# ------------------------------------------------------------------------------------------ save / load
def _paths(zoo_dir: Path | str, entry_id: str) -> tuple[Path, Path]:
    d = Path(zoo_dir)
    return d / f"{entry_id}.safetensors", d / f"{entry_id}.json"


def _state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    model = getattr(model, "_orig_mod", model)  # the uncompiled module
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def check_writable(zoo_dir: Path | str) -> None:
    """Refuse early (before hours of training) a zoo folder that cannot be written; creates nothing."""
    d = Path(zoo_dir)
    why = unwritable(d)
    if why:
        raise IntegrityError(f"cannot write to the zoo folder {str(d)!r}: {why} ({str(existing_base(d))!r}); "
                             "pass --zoo DIR with a writable folder")


def check_new(zoo_dir: Path | str, entry_id: str, overwrite: bool = False) -> str:
    """A valid id whose entry does not exist yet (or may be replaced): checked before any work that makes one."""
    validate_id(entry_id)
    if not overwrite and any(p.exists() for p in _paths(zoo_dir, entry_id)):
        raise UsageError(f"zoo entry {entry_id!r} already exists in {str(zoo_dir)!r}; "
                         "pass --id NAME for a new one or --overwrite to replace it")
    return entry_id


def save(model: nn.Module, card: Card, zoo_dir: Path | str, overwrite: bool = False) -> Card:
    """Write weights and card beside their final names, then rename both: a failed write changes nothing, and
    a crash between the two renames leaves a hash mismatch that loading refuses, never a wrong model."""
    check_new(zoo_dir, card.id, overwrite)
    wpath, cpath = _paths(zoo_dir, card.id)
    # one metadata key: safetensors writes a metadata map in random order, and the sha256 must not vary
    meta = json.dumps({"arch": card.arch, "format": "robench", "id": card.id}, sort_keys=True)
    blob = st_save(_state_dict(model), metadata={"robench": meta})
    card.sha256 = hashlib.sha256(blob).hexdigest()
    card.fingerprint = fingerprint(card)  # the network these weights were trained or imported for
    try:
        Path(zoo_dir).mkdir(parents=True, exist_ok=True)
        with replacing(wpath) as wtmp, replacing(cpath) as ctmp:  # both written, then renamed (card first)
            wtmp.write_bytes(blob)
            ctmp.write_bytes(card.to_json().encode())
    except OSError as e:
        raise IntegrityError(f"cannot write zoo entry {card.id!r} to {str(zoo_dir)!r}: {e.strerror or e}") from None
    return card


def read_card(zoo_dir: Path | str, entry_id: str) -> Card:
    wpath, cpath = _paths(zoo_dir, entry_id)
    if not cpath.exists():
        hint = "; weights alone are never loaded (add them with `robench zoo import`)" if wpath.exists() else ""
        raise IntegrityError(f"zoo entry {entry_id!r}: card {str(cpath)!r} is missing{hint}")
    try:
        text = cpath.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise IntegrityError(f"cannot read card {str(cpath)!r}: {e}") from None
    card = Card.from_json(text, where=str(cpath))
    if card.id != entry_id:
        raise IntegrityError(f"{str(cpath)}: card id {card.id!r} does not match its file name")
    check_fingerprint(card, str(cpath))
    return card


def _header_metadata(blob: bytes) -> dict:
    """What robench wrote into a safetensors header (empty for older files or an unreadable header)."""
    try:
        meta = header_metadata(blob)
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def load_weights(zoo_dir: Path | str, card: Card) -> dict[str, torch.Tensor]:
    """The entry's tensors, after checking the file's sha256 against the card (never unpickled)."""
    wpath, _ = _paths(zoo_dir, card.id)
    if not wpath.exists():
        raise IntegrityError(f"zoo entry {card.id!r}: weights {str(wpath)!r} are missing")
    blob = wpath.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != card.sha256:
        raise IntegrityError(f"zoo entry {card.id!r}: sha256 of {wpath.name} is {digest[:12]}…, card says "
                             f"{card.sha256[:12]}…; the file was changed or truncated; refusing to load")
    arch = _header_metadata(blob).get("arch", card.arch)
    if arch != card.arch:
        raise IntegrityError(f"zoo entry {card.id!r}: the weights are a {arch}, the card is for {card.arch}; "
                             "refusing to load")
    try:
        return st_load(blob)
    except (SafetensorError, Exception) as e:
        raise IntegrityError(f"zoo entry {card.id!r}: not a valid safetensors file ({e})") from None


def model_from(card: Card, tensors: dict[str, torch.Tensor], zoo_dir: Path | str = "zoo",
               trust_code: bool = False, encoding: str | None = None) -> nn.Module:
    """The entry's model in eval mode. A foreign entry (arch ``foreign``) runs its code file: that needs
    ``trust_code`` and ROBENCH_TRUST_CODE=1, and the file's sha256 must match the card's (see zoo.foreign).
    ``encoding``: run one of robench's own models with another input coding (``direct`` or ``poisson``; the
    weights are the same); a foreign model keeps the encoding it was imported with, and asking for another is an
    error."""
    if card.arch == FOREIGN:
        from .foreign import build

        declared = card.model.get("encoding", "direct")
        if encoding is not None and encoding != declared:
            raise BadSpec(f"--encoding {encoding}: zoo entry {card.id!r} is a foreign model imported with encoding "
                          f"{declared!r}; a foreign model's coding is its own (import it with --encoding {encoding} "
                          "if its forward samples)")
        what = f"zoo entry {card.id!r}"
        return build(card.model, tensors, zoo_dir, trust_code, what).eval()
    model = build_model(card.model_config, **({"encoding": encoding} if encoding is not None else {}))
    fit_weights(model, tensors, f"zoo entry {card.id!r}", card.arch)
    return model.eval()


def load(query: str, zoo_dir: Path | str, device: str | torch.device = "cpu",
         trust_code: bool = False) -> tuple[nn.Module, Card]:
    """Load exactly one entry by id or unique prefix: hash, schema and shapes checked."""
    cards = select(query, zoo_dir)
    if len(cards) > 1:
        raise UsageError(f"--model {query!r} matches {len(cards)} entries ({', '.join(c.id for c in cards)}); "
                         "give one id")
    card = cards[0]
    return model_from(card, load_weights(zoo_dir, card), zoo_dir, trust_code).to(device), card


# ------------------------------------------------------------------------------------------- selection
def entry_ids(zoo_dir: Path | str) -> list[str]:
    """Every entry name, including weights whose card is missing (reading those says so)."""
    d = Path(zoo_dir)
    if not d.is_dir():
        return []
    return sorted({p.stem for p in d.glob("*.json")} | {p.stem for p in d.glob("*.safetensors")})


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
    if not query.strip():
        raise BadSpec(f"--model {query!r} is empty; give an id, a unique prefix or an arch")
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


def verify(zoo_dir: Path | str, query: str | None = None, test_data: TestData | None = None,
           tol: float = 0.001, trust_code: bool = False) -> list[tuple[str, bool, str]]:
    """Check card schema, hash and shapes of every (or the selected) entry: ``(id, ok, message)``. With
    ``test_data`` (dataset name -> images, labels), also re-measure clean accuracy: it must match the card's
    within ``tol`` (0.1 pt) on the same number of test images."""
    ids = [c.id for c in select(query, zoo_dir)] if query is not None else entry_ids(zoo_dir)
    out = []
    for i in ids:
        try:
            card = read_card(zoo_dir, i)
            tensors = load_weights(zoo_dir, card)
            ident = (f"sha256 {card.sha256[:12]}, config {config_digest(card)[:12]}" if card.fingerprint else
                     f"sha256 {card.sha256[:12]}; defining fields not recorded (card written before robench "
                     "recorded them)")
            if card.arch == FOREIGN and not trusted(trust_code):
                out.append((i, True, f"ok ({ident}; {code_hash_ok(card.model, zoo_dir)})"))
                continue
            model = model_from(card, tensors, zoo_dir, trust_code)
            ok, msg = True, f"ok ({ident})"
            if test_data is not None and card.clean_acc is not None:
                x, y = test_data(card.dataset)
                acc = accuracy(model, x, y)
                ok = len(y) == card.metrics.get("n_test") and abs(acc - card.clean_acc) <= tol
                msg += (f"; clean accuracy {100 * acc:.2f}% on {len(y)} test images, card "
                        f"{100 * card.clean_acc:.2f}% on {card.metrics.get('n_test')}")
            out.append((i, ok, msg))
        except (IntegrityError, UsageError) as e:
            out.append((i, False, str(e)))
    return out
