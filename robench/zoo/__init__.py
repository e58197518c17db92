"""The model zoo: one entry = ``<id>.safetensors`` (weights) + ``<id>.json`` (card).

The card (:mod:`robench.zoo.card`, re-exported here) holds everything that rebuilds and explains the model: the
exact ``ModelConfig`` given to ``build_model``, the dataset, the training recipe, metrics measured at the end of
training, the sha256 of the weights file, library versions and the date. A model's identity is its weights *and*
the fields that define the network (:func:`defining_fields`: arch, dataset and the whole model config or foreign
spec: T, tau, v_th, encoding, entry point, code hash, ...): at save the card records a digest of each in
``fingerprint``, and a card whose defining fields no longer match it is refused, naming the field (cards written
before fingerprints existed read with ``{}``: nothing to compare). Results rows carry :func:`config_digest` beside
the weights' sha256. This module stores, finds, loads and verifies entries.
Loading checks the card's schema, fingerprint, the hash, and the shapes (``load_state_dict(strict=True)``);
nothing is ever unpickled.

Examples:
    >>> card = save(model, Card.new("fmnist-vgg5-lif-clean", model.config, "fashion-mnist"), "zoo")
    >>> model, card = load("fmnist-vgg5", "zoo")  # id, unique prefix, or arch name
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from ..errors import BadSpec, IntegrityError, UnknownName, UsageError
from ..io import existing_base, header_metadata, replacing, unwritable
from ..snn.models import ARCHS, accuracy, build_model
from .card import (  # noqa: F401  (the card, importable from robench.zoo as before)
    CARD_TYPES,
    DEVICE_RE,
    DIGEST_RE,
    ID_RE,
    LOCATION,
    METRICS,
    SCHEMA,
    Card,
    check_fields,
    check_fingerprint,
    config_digest,
    defining_fields,
    fingerprint,
    validate_id,
)
from .foreign import FOREIGN, code_hash_ok, trusted
from .weights import fit_weights

TestData = Callable[[str], tuple[Tensor, Tensor]]  # dataset name -> test images [N, C, H, W] in [0, 1], labels
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
