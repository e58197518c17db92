"""Checkpoints never run code: crafted pickles are refused by `zoo import` before anything in them runs, zoo
entries load only from safetensors plus a validated card, and every damaged entry is refused with its reason."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest
import torch
from cli_helpers import one_line as _one_line
from cli_helpers import run_main as _run
from safetensors.torch import save as st_save

from robench.data import DATASETS
from robench.errors import BadSpec, IntegrityError
from robench.snn.models import ModelConfig, build_model
from robench.zoo import Card, config_digest, load, save, verify
from robench.zoo.importing import import_state_dict

FM = dict(arch="vgg5", T=2, width=0.125, fc=16, **DATASETS.get("fashion-mnist").model_kwargs())
FM_OPTS = ["--arch", "vgg5", "-T", "2", "--width", "0.125", "--fc", "16"]


class WritesAFile:
    """Unpickling this calls ``open(path, "w")``: it creates ``path``. No shell, no os.system."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def fm_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(**FM)).eval()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


def _import(capsys, file: Path, zoo: Path, *extra: str) -> tuple[int, str, str]:
    return _run(capsys, ["zoo", "import", str(file), "--id", "mine", *FM_OPTS, "--zoo", str(zoo), *extra])


# ------------------------------------------------------------------------------------ crafted pickles
def _crafted(kind: str, payload: object, path: Path) -> Path:
    if kind == "torch-zip":
        torch.save(payload, path)
    else:  # a bare pickle, the pre-1.6 torch.save format
        path.write_bytes(pickle.dumps(payload, protocol=2))
    return path


@pytest.mark.parametrize("kind", ["torch-zip", "bare-pickle"])
@pytest.mark.parametrize("wrap", ["top-level", "inside-a-state-dict"])
def test_a_crafted_pickle_is_refused_and_never_runs(tmp_path, capsys, fm_model, kind, wrap):
    def payload(marker: Path) -> object:
        evil = WritesAFile(marker)
        return evil if wrap == "top-level" else {"state_dict": {"extra": evil, **fm_model.state_dict()}}

    # the payload is live: a plain unpickler creates its file (this one, in another place)
    live = _crafted(kind, payload(tmp_path / "proof"), tmp_path / f"live.{kind}")
    if kind == "torch-zip":
        torch.load(live, weights_only=False)
    else:
        pickle.loads(live.read_bytes())
    assert (tmp_path / "proof").exists()

    marker = tmp_path / "pwned"
    evil = _crafted(kind, payload(marker), tmp_path / "evil.pt")
    zoo = tmp_path / "zoo"
    save(fm_model, Card.new("existing", ModelConfig(**FM), "fashion-mnist"), zoo)
    before = _snapshot(zoo)
    code, out, err = _import(capsys, evil, zoo)
    assert code == 1 and out == ""
    line = _one_line(err)
    assert "refused" in line and "open" in line and "nothing in the file was run" in line
    assert not marker.exists()
    assert _snapshot(zoo) == before  # nothing added, nothing changed


def test_a_pickle_renamed_to_safetensors_in_the_zoo_is_never_unpickled(tmp_path, fm_model):
    """Even with a card whose sha256 matches, zoo weights are read as safetensors only."""
    zoo = tmp_path / "zoo"
    card = save(fm_model, Card.new("entry", ModelConfig(**FM), "fashion-mnist"), zoo)
    marker = tmp_path / "pwned"
    evil = pickle.dumps(WritesAFile(marker))
    (zoo / "entry.safetensors").write_bytes(evil)
    d = json.loads((zoo / "entry.json").read_text())
    d["sha256"] = hashlib.sha256(evil).hexdigest()
    (zoo / "entry.json").write_text(json.dumps(d))
    with pytest.raises(IntegrityError, match="not a valid safetensors file"):
        load(card.id, zoo)
    assert not marker.exists()


# ----------------------------------------------------------------------------------- zoo import works
@pytest.mark.parametrize("layout", ["plain", "state_dict-key", "model-key", "dataparallel", "safetensors"])
def test_import_writes_a_normal_entry(tmp_path, capsys, fm_model, layout):
    sd = fm_model.state_dict()
    f = tmp_path / ("mine.safetensors" if layout == "safetensors" else "mine.pt")
    if layout == "safetensors":
        f.write_bytes(st_save({k: v.contiguous() for k, v in sd.items()}))
    else:
        obj = {"plain": sd, "state_dict-key": {"state_dict": sd, "epoch": 7, "acc": 0.9},
               "model-key": {"model": sd, "optimizer": {"lr": 0.1}},
               "dataparallel": {f"module.{k}": v for k, v in sd.items()}}[layout]
        torch.save(obj, f)
    zoo = tmp_path / "zoo"
    code, out, err = _import(capsys, f, zoo)
    assert code == 0, err
    assert "imported" in out and "mine" in out
    model, card = load("mine", zoo)
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(model(x), fm_model(x))
    assert card.notes == f"imported from {f.name}" and card.recipe == {} and 0 <= card.clean_acc <= 1
    assert card.metrics["n_test"] >= 1  # measured at import, as a framework import does
    assert card.device == "cpu" and card.versions["torch"] and card.model["T"] == 2
    assert verify(zoo) == [("mine", True, f"ok (sha256 {card.sha256[:12]}, config {config_digest(card)[:12]})")]


# ------------------------------------------------------------------------------- zoo import refuses
def _bad_files(tmp: Path, sd: dict) -> dict[str, tuple[Path, int, str]]:
    files = {
        "missing": (tmp / "nope.pt", 2, "does not exist or is not a file"),
        "empty": (tmp / "empty.pt", 1, "cannot read"),
        "text": (tmp / "text.pt", 1, "cannot read"),
        "truncated": (tmp / "trunc.pt", 1, "cannot read"),
        "not-tensors": (tmp / "ints.pt", 1, "entry 'a' is a int, not a tensor"),
        "a-list": (tmp / "list.pt", 1, "holds a list, not a state dict"),
        "nan": (tmp / "nan.pt", 1, "holds NaN or Inf"),
        "wrong-shape": (tmp / "wide.pt", 1, "weights do not fit its vgg5 config"),
        "missing-key": (tmp / "less.pt", 1, "weights do not fit its vgg5 config: Missing key(s)"),
        "extra-key": (tmp / "more.pt", 1, "Unexpected key(s)"),
        "bad-safetensors": (tmp / "bad.safetensors", 1, "cannot read"),
    }
    files["empty"][0].write_bytes(b"")
    files["text"][0].write_text("hello")
    torch.save(sd, tmp / "full.pt")
    files["truncated"][0].write_bytes((tmp / "full.pt").read_bytes()[:2000])
    torch.save({"a": 1, "b": 2.0}, files["not-tensors"][0])
    torch.save([torch.zeros(1)], files["a-list"][0])
    first = next(k for k, v in sd.items() if v.is_floating_point())
    torch.save({**sd, first: torch.full_like(sd[first], float("nan"))}, files["nan"][0])
    torch.manual_seed(0)
    torch.save(build_model(ModelConfig(**{**FM, "width": 0.25})).state_dict(), files["wrong-shape"][0])
    torch.save({k: v for k, v in sd.items() if k != first}, files["missing-key"][0])
    torch.save({**sd, "stowaway": torch.zeros(3)}, files["extra-key"][0])
    files["bad-safetensors"][0].write_bytes(b"\xff" * 64)
    return files


def test_every_bad_file_is_refused_and_the_zoo_kept(tmp_path, capsys, fm_model):
    zoo = tmp_path / "zoo"
    save(fm_model, Card.new("existing", ModelConfig(**FM), "fashion-mnist"), zoo)
    before = _snapshot(zoo)
    for name, (path, code, message) in _bad_files(tmp_path, fm_model.state_dict()).items():
        got, out, err = _import(capsys, path, zoo)
        assert (name, got) == (name, code), err
        assert message in _one_line(err), (name, err)
        assert _snapshot(zoo) == before, name


def test_import_refuses_bad_options_and_existing_ids(tmp_path, capsys, fm_model):
    zoo, f = tmp_path / "zoo", tmp_path / "mine.pt"
    torch.save(fm_model.state_dict(), f)
    save(fm_model, Card.new("mine", ModelConfig(**FM), "fashion-mnist"), zoo)
    before = _snapshot(zoo)
    cases = [([], "already exists"), (["--arch", "resnet"], "unknown arch 'resnet'"),
             (["--dataset", "mnist"], "unknown dataset 'mnist'"), (["-T", "0"], "-T 0"),
             (["--width", "nan"], "--width"), (["--neuron", "x"], "'x' is not one of")]
    for extra, message in cases:
        code, _, err = _import(capsys, f, zoo, *extra)
        assert code == 2 and message in _one_line(err), err
    code, _, err = _run(capsys, ["zoo", "import", str(f), "--id", "Bad Id", "--zoo", str(zoo)])
    assert code == 2 and "zoo id 'Bad Id'" in _one_line(err)
    code, _, err = _run(capsys, ["zoo", "import", str(f), "--zoo", str(zoo)])
    assert code == 2 and "--id" in _one_line(err)
    assert _snapshot(zoo) == before
    code, _, err = _import(capsys, f, zoo, "--overwrite")
    assert code == 0, err


def test_import_checks_the_model_fits_the_dataset(tmp_path, tiny_cfg, tiny_model):
    f = tmp_path / "tiny.pt"
    torch.save(tiny_model.state_dict(), f)
    with pytest.raises(BadSpec, match="the model takes 1 channel.*of 8x8 with 2 classes; fashion-mnist has 1 of "
                                      "28x28 with 10"):
        import_state_dict(f, tiny_cfg, "fashion-mnist", "tiny", tmp_path / "zoo")
    assert not (tmp_path / "zoo").exists()


# ---------------------------------------------------------------------------- damaged zoo entries
def _rewrite_card(zoo: Path, change) -> None:
    path = zoo / "entry.json"
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d))


def _truncate_and_rehash(zoo: Path) -> None:
    w = zoo / "entry.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    _rewrite_card(zoo, lambda d: d.update(sha256=hashlib.sha256(w.read_bytes()).hexdigest()))


def _other_arch_card(zoo: Path) -> None:
    wrn = ModelConfig(**{**FM, "arch": "wrn16", "fc": None}).to_dict()
    _rewrite_card(zoo, lambda d: d.update(arch="wrn16", model=wrn))


def _flip_byte(zoo: Path) -> None:
    w = zoo / "entry.safetensors"
    blob = bytearray(w.read_bytes())
    blob[-3] ^= 0x10
    w.write_bytes(bytes(blob))


FAULTS = {
    "sha256 mismatch": (_flip_byte, "sha256 of entry.safetensors is"),
    "truncated weights": (lambda z: (z / "entry.safetensors").write_bytes(b"\x00" * 40), "changed or truncated"),
    "truncated, card re-hashed": (_truncate_and_rehash, "not a valid safetensors file"),
    "missing card": (lambda z: (z / "entry.json").unlink(), "entry.json' is missing; weights alone are never"),
    "missing weights": (lambda z: (z / "entry.safetensors").unlink(), "entry.safetensors' are missing"),
    "card for another arch": (_other_arch_card, "defining field 'arch' changed"),
    "shape mismatch": (lambda z: _rewrite_card(z, lambda d: d["model"].update(width=0.25)), "'width' changed"),
    # cards written before fingerprints: the weights' own header and shapes still refuse them
    "old card for another arch": (lambda z: (_other_arch_card(z), _rewrite_card(z, lambda d: d.pop("fingerprint"))),
                                  "the weights are a vgg5, the card is for wrn16"),
    "old card, shape mismatch": (lambda z: _rewrite_card(z, lambda d: (d["model"].update(width=0.25),
                                                                      d.pop("fingerprint"))), "do not fit"),
    "not JSON": (lambda z: (z / "entry.json").write_text("{"), "not valid JSON"),
    "unknown key": (lambda z: _rewrite_card(z, lambda d: d.update(pickle="x")), "unknown keys ['pickle']"),
    "missing key": (lambda z: _rewrite_card(z, lambda d: d.pop("versions")), "missing keys ['versions']"),
    "wrong type": (lambda z: _rewrite_card(z, lambda d: d["model"].update(T="2")), "'T' must be int"),
    "bool for int": (lambda z: _rewrite_card(z, lambda d: d["model"].update(T=True)), "'T' must be int"),
    "model key unknown": (lambda z: _rewrite_card(z, lambda d: d["model"].update(depth=3)), "unknown keys ['depth']"),
    "model value bad": (lambda z: _rewrite_card(z, lambda d: d["model"].update(tau=2.0)), "--tau 2.0"),
    "recipe key unknown": (lambda z: _rewrite_card(z, lambda d: d["recipe"].update(lr_decay=1)),
                           "unknown keys ['lr_decay']"),
    "recipe value bad": (lambda z: _rewrite_card(z, lambda d: d["recipe"].update(epochs=0)), "--epochs 0"),
    "recipe wrong type": (lambda z: _rewrite_card(z, lambda d: d["recipe"].update(lr="fast")), "'lr' must be"),
    "metric out of range": (lambda z: _rewrite_card(z, lambda d: d["metrics"].update(clean_acc=1.5)),
                            "metrics 'clean_acc'"),
    "metric unknown": (lambda z: _rewrite_card(z, lambda d: d["metrics"].update(robust=1)), "unknown metrics"),
    "unknown device": (lambda z: _rewrite_card(z, lambda d: d.update(device="tpu")), "device 'tpu'"),
    "unknown dataset": (lambda z: _rewrite_card(z, lambda d: d.update(dataset="mnist")), "unknown dataset"),
    "bad date": (lambda z: _rewrite_card(z, lambda d: d.update(created="yesterday")), "not an ISO date"),
    "other schema": (lambda z: _rewrite_card(z, lambda d: d.update(schema=2)), "schema 2"),
    "id not its file name": (lambda z: _rewrite_card(z, lambda d: d.update(id="other")), "does not match"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_damaged_entry_is_refused_with_its_reason(tmp_path, capsys, fm_model, fault):
    zoo = tmp_path / "zoo"
    card = save(fm_model, Card.new("entry", ModelConfig(**FM), "fashion-mnist",
                                   recipe={"recipe": "clean", "epochs": 1, "seed": 0},
                                   metrics={"clean_acc": 0.5, "n_test": 10}), zoo)
    assert load("entry", zoo)[1].sha256 == card.sha256
    damage, message = FAULTS[fault]
    damage(zoo)
    with pytest.raises(IntegrityError, match="entry") as e:
        load("entry", zoo)
    assert message in str(e.value) and "\n" not in str(e.value)
    code, out, err = _run(capsys, ["zoo", "verify", "--zoo", str(zoo)])
    assert code == 1 and "FAIL" in out and message in " ".join(out.split())
    assert "failed verification" in _one_line(err)


def test_a_crafted_resume_state_is_refused_and_never_runs(tmp_path, capsys):
    from fmnist_files import write_fmnist

    marker, runs = tmp_path / "pwned", tmp_path / "runs"
    (runs / "tiny").mkdir(parents=True)
    torch.save({"config": {}, "model": WritesAFile(marker)}, runs / "tiny" / "state.pt")
    code, out, err = _run(capsys, ["train", *FM_OPTS, "--limit", "16", "--batch-size", "16", "--device", "cpu",
                                   "--data-dir", str(write_fmnist(tmp_path / "fm")), "--id", "tiny",
                                   "--zoo", str(tmp_path / "zoo"), "--runs", str(runs), "--resume"])
    line = _one_line(err)
    assert code == 1 and "cannot resume from" in line and "refused: it needs" in line
    assert "nothing in it was run" in line
    assert not marker.exists() and not (tmp_path / "zoo" / "tiny.json").exists()
