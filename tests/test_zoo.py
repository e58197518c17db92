"""Zoo round trip, integrity checks, selection and verification."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny_data

from robench.errors import IntegrityError, UnknownName, UsageError
from robench.snn.models import build_model
from robench.train import TrainConfig, train
from robench.zoo import Card, list_cards, load, save, select, verify


@pytest.fixture
def one_epoch_zoo(tmp_path, tiny_cfg):
    """A tiny model trained one epoch on tiny data and saved: (zoo_dir, model, card)."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg)
    res = train(model, TrainConfig(recipe="clean", epochs=1, batch_size=16), make_tiny_data(32), make_tiny_data(16, 1))
    card = Card.new("tiny-vgg5-lif-clean", tiny_cfg, "fashion-mnist", recipe={"recipe": "clean", "epochs": 1},
                    metrics={"clean_acc": res.clean_acc, "n_test": res.n_test})
    zoo = tmp_path / "zoo"
    save(model, card, zoo)
    return zoo, model.eval(), card


def _add(zoo, tiny_cfg, entry_id: str, **model_kw) -> Card:
    torch.manual_seed(1)
    cfg = type(tiny_cfg)(**{**tiny_cfg.to_dict(), **model_kw})
    return save(build_model(cfg), Card.new(entry_id, cfg, "fashion-mnist"), zoo)


def test_round_trip_gives_identical_logits(one_epoch_zoo):
    zoo, model, card = one_epoch_zoo
    assert (zoo / f"{card.id}.safetensors").exists() and (zoo / f"{card.id}.json").exists()
    loaded, card2 = load(card.id, zoo)
    assert card2.sha256 == card.sha256 and len(card.sha256) == 64
    assert card2.model == card.model and card2.clean_acc == card.clean_acc
    assert not loaded.training
    x = make_tiny_data(16, 2)[0]
    assert torch.equal(loaded(x), model(x))


def test_a_changed_weight_byte_is_refused(one_epoch_zoo):
    zoo, _, card = one_epoch_zoo
    path = zoo / f"{card.id}.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0x01  # one bit of one weight
    path.write_bytes(bytes(blob))
    with pytest.raises(IntegrityError, match="sha256.*refusing to load"):
        load(card.id, zoo)
    (result,) = verify(zoo)
    assert result[0] == card.id and result[1] is False and "sha256" in result[2]


def test_a_changed_card_is_refused(one_epoch_zoo):
    zoo, _, card = one_epoch_zoo
    cpath = zoo / f"{card.id}.json"
    d = json.loads(cpath.read_text())
    d["model"]["width"] = 0.25  # a defining field changed since the entry was saved
    cpath.write_text(json.dumps(d))
    with pytest.raises(IntegrityError, match="'width' changed"):
        load(card.id, zoo)
    d["fingerprint"] = {}  # a card written before fingerprints: the weights still have to fit
    cpath.write_text(json.dumps(d))
    with pytest.raises(IntegrityError, match="do not fit"):
        load(card.id, zoo)
    d["extra"] = 1
    cpath.write_text(json.dumps(d))
    cards, problems = list_cards(zoo)
    assert cards == [] and len(problems) == 1 and "unknown keys ['extra']" in problems[0]


def test_select_by_id_prefix_and_arch(one_epoch_zoo, tiny_cfg):
    zoo, _, card = one_epoch_zoo
    _add(zoo, tiny_cfg, "other-wrn", arch="wrn16", fc=None)
    assert [c.id for c in select(card.id, zoo)] == [card.id]
    assert [c.id for c in select("tiny-vgg", zoo)] == [card.id]
    assert [c.id for c in select("oth", zoo)] == ["other-wrn"]
    assert [c.id for c in select("wrn16", zoo)] == ["other-wrn"]
    assert [c.id for c in select("vgg5", zoo)] == [card.id]
    model, c = load("wrn16", zoo)
    assert c.id == "other-wrn" and c.arch == "wrn16"


def test_ambiguous_prefix_and_unknown_query(one_epoch_zoo, tiny_cfg):
    zoo, _, card = one_epoch_zoo
    _add(zoo, tiny_cfg, "tiny-vgg5-lif-gn")
    with pytest.raises(UsageError, match="'tiny-vgg5' is ambiguous: tiny-vgg5-lif-clean, tiny-vgg5-lif-gn"):
        select("tiny-vgg5", zoo)
    with pytest.raises(UsageError, match="matches 2 entries"):
        load("vgg5", zoo)  # an arch with two entries cannot be loaded as one
    with pytest.raises(UnknownName, match="entries: tiny-vgg5-lif-clean, tiny-vgg5-lif-gn"):
        select("resnet", zoo)


def test_empty_zoo_says_how_to_fill_it(tmp_path):
    with pytest.raises(UnknownName, match="empty or missing.*robench train"):
        select("anything", tmp_path / "nozoo")


def test_existing_entry_is_not_overwritten(one_epoch_zoo, tiny_cfg):
    zoo, model, card = one_epoch_zoo
    before = (zoo / f"{card.id}.safetensors").read_bytes(), (zoo / f"{card.id}.json").read_text()
    torch.manual_seed(5)
    other = build_model(tiny_cfg)
    with pytest.raises(UsageError, match="already exists.*--overwrite"):
        save(other, Card.new(card.id, tiny_cfg, "fashion-mnist"), zoo)
    assert ((zoo / f"{card.id}.safetensors").read_bytes(), (zoo / f"{card.id}.json").read_text()) == before
    new = save(other, Card.new(card.id, tiny_cfg, "fashion-mnist"), zoo, overwrite=True)
    assert new.sha256 != card.sha256
    assert load(card.id, zoo)[1].sha256 == new.sha256
    assert not list(zoo.glob(".*tmp"))  # no temporary files left behind


def test_list_cards_and_verify(one_epoch_zoo, tiny_cfg):
    zoo, _, card = one_epoch_zoo
    _add(zoo, tiny_cfg, "tiny-b", neuron="stable")
    cards, problems = list_cards(zoo)
    assert [c.id for c in cards] == ["tiny-b", card.id] and problems == []
    row = cards[1].summary()
    assert row["id"] == card.id and row["arch"] == "vgg5" and row["T"] == 2 and row["sha256"] == card.sha256[:12]
    results = verify(zoo)
    assert [(i, ok) for i, ok, _ in results] == [("tiny-b", True), (card.id, True)]
    assert verify(zoo, "tiny-b")[0][:2] == ("tiny-b", True)
    (zoo / "tiny-b.safetensors").unlink()
    assert [ok for _, ok, _ in verify(zoo)] == [False, True]
    assert "missing" in verify(zoo, "tiny-b")[0][2]


@pytest.mark.parametrize("bad", ["Upper", "-lead", "a b", "x" * 81, ""])
def test_bad_ids_are_refused(tmp_path, tiny_cfg, bad):
    with pytest.raises(UsageError, match="zoo id"):
        save(build_model(tiny_cfg), Card.new(bad, tiny_cfg, "fashion-mnist"), tmp_path / "zoo")
    assert not (tmp_path / "zoo").exists()


def test_verify_with_test_data_rechecks_clean_accuracy_against_the_card(trained_zoo):
    zoo_dir, card, _ = trained_zoo
    [(entry, ok, msg)] = verify(zoo_dir, test_data=lambda ds: make_tiny_data(64, 1))  # the data of the card
    assert entry == card.id and ok and "card 100.00% on 64" in msg
    x, y = make_tiny_data(64, 1)
    [(_, ok, msg)] = verify(zoo_dir, test_data=lambda ds: (x, 1 - y))  # labels flipped: accuracy differs
    assert not ok and "clean accuracy 0.00%" in msg
    [(_, ok, _)] = verify(zoo_dir, test_data=lambda ds: (x[:32], y[:32]))  # another n is not the card's number
    assert not ok
