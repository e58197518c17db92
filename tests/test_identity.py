"""A model's identity is its weights AND everything that defines the network: the card records a digest of each
defining field, an edited one is refused on load and by `zoo verify` (naming the field), and every results row
carries the config digest in its key, so a changed network never reuses another one's rows."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import make_tiny_data
from test_report import row

from robench.attacks import AttackSpec
from robench.errors import IntegrityError
from robench.eval.checks import check_records
from robench.eval.sweep import Data, evaluate, load_targets
from robench.results import KEY, ResultsStore, to_frame
from robench.zoo import Card, config_digest, fingerprint, list_cards, load, read_card, save, verify

ZOO = Path(__file__).resolve().parents[1] / "zoo"


def _edit(zoo_dir: Path, entry: str, change) -> None:
    p = zoo_dir / f"{entry}.json"
    d = json.loads(p.read_text())
    change(d)
    p.write_text(json.dumps(d, indent=2))


def test_a_saved_card_records_its_defining_fields(trained_zoo):
    zoo_dir, card, _ = trained_zoo
    c = read_card(zoo_dir, card.id)
    assert {"arch", "dataset", "T", "tau", "v_th", "neuron", "width"} <= set(c.fingerprint)
    assert all(len(v) == 16 for v in c.fingerprint.values())
    assert len(config_digest(c)) == 16


@pytest.mark.parametrize("field, value", [("tau", 0.5), ("v_th", 0.7), ("T", 3), ("neuron", "stable")])
def test_an_edited_defining_field_is_refused_on_load_and_by_verify_naming_it(trained_zoo, field, value):
    zoo_dir, card, _ = trained_zoo
    _edit(zoo_dir, card.id, lambda d: d["model"].__setitem__(field, value))
    with pytest.raises(IntegrityError, match=rf"'{field}'.*changed") as e:
        load(card.id, zoo_dir)
    assert "\n" not in str(e.value)
    [(i, ok, msg)] = verify(zoo_dir)
    assert i == card.id and not ok and f"'{field}'" in msg


def test_an_edited_dataset_is_refused_and_other_edits_are_not(trained_zoo):
    zoo_dir, card, _ = trained_zoo
    _edit(zoo_dir, card.id, lambda d: d.update(notes="my favourite", command="robench train ..."))
    load(card.id, zoo_dir)  # notes and the command line do not define the network
    _edit(zoo_dir, card.id, lambda d: d.update(dataset="cifar10"))
    with pytest.raises(IntegrityError, match="'dataset'"):
        load(card.id, zoo_dir)


def test_a_card_written_before_fingerprints_still_loads(trained_zoo):
    zoo_dir, card, _ = trained_zoo
    _edit(zoo_dir, card.id, lambda d: d.pop("fingerprint"))
    _, c = load(card.id, zoo_dir)
    assert c.fingerprint == {}
    [(_, ok, msg)] = verify(zoo_dir)
    assert ok and "not recorded" in msg


def test_rows_key_the_config_so_another_network_on_the_same_weights_is_another_cell(trained_zoo, tmp_path):
    zoo_dir, card, model = trained_zoo
    other = tmp_path / "zoo2"  # the same id and weights file, legitimately saved for a network with another tau
    card2 = save(model, Card.new(card.id, replace(card.model_config, tau=0.5), card.dataset), other)
    assert card2.sha256 == card.sha256 and config_digest(card2) != config_digest(card)
    assert "config" in KEY
    x, y = make_tiny_data(8)
    store = ResultsStore(tmp_path / "res" / "r.csv")
    spec = AttackSpec("fgsm", eps=8 / 255)
    for z, ran in ((zoo_dir, 1), (other, 1), (zoo_dir, 0)):  # the third: already stored
        ev = evaluate(load_targets([read_card(z, card.id)], z), [spec], "bptt", Data("tiny", x, y), store)
        assert ev.ran == ran
    df = store.read()
    assert len(df) == 2 and df["sha256"].nunique() == 1
    assert sorted(df["config"]) == sorted([config_digest(card), config_digest(card2)])


def test_rows_written_before_the_config_column_still_read_and_count_as_done(trained_zoo, tmp_path):
    zoo_dir, card, _ = trained_zoo
    x, y = make_tiny_data(8)
    store = ResultsStore(tmp_path / "r.csv")
    spec = AttackSpec("fgsm", eps=8 / 255)
    targets = load_targets([read_card(zoo_dir, card.id)], zoo_dir)
    evaluate(targets, [spec], "bptt", Data("tiny", x, y), store)
    import pandas as pd

    old = pd.read_csv(store.path, dtype=str, keep_default_na=False).drop(columns=["config"])
    old.to_csv(store.path, index=False)
    assert store.read()["config"].tolist() == [""]
    ev = evaluate(targets, [spec], "bptt", Data("tiny", x, y), store)
    assert ev.ran == 0 and len(store.read()) == 1


def test_checks_keep_models_of_another_config_apart():
    a, b = row("m", "pgd", "bptt", 4, 0.3), row("m", "pgd", "bptt", 8, 0.4)
    assert [f.name for f in check_records(to_frame([a, b]))] == ["not-monotone"]  # same model identity
    assert check_records(to_frame([{**a, "config": "1" * 16}, {**b, "config": "2" * 16}])) == []


def test_a_worst_case_never_mixes_two_networks_and_old_rows_join_their_own():
    from robench.results.stats import encode_mask
    from robench.results.worstcase import worst_cases

    def masked(config, k, attack="pgd"):
        return {**row("m", attack, "bptt", 8, k / 100), "robust_count": k, "config": config,
                "robust_mask": encode_mask([True] * k + [False] * (100 - k))}

    labels = lambda df: df["attack"]  # noqa: E731
    df = to_frame([masked("1" * 16, 40), masked("2" * 16, 30)])  # the same weights under two configs
    assert sorted(c.robust_count for c in worst_cases(df, labels(df))) == [30, 40]
    df = to_frame([masked("", 40, "fgsm"), masked("1" * 16, 30)])  # an old row joins the one config seen
    assert [(c.robust_count, len(c.cells)) for c in worst_cases(df, labels(df))] == [(30, 2)]


def test_every_shipped_entry_records_its_defining_fields_and_they_match():
    cards, problems = list_cards(ZOO)
    assert not problems and len(cards) >= 18
    for c in cards:
        assert c.fingerprint and c.fingerprint == fingerprint(c), c.id
    results = verify(ZOO)  # hashes, shapes and fingerprints; the foreign entry's code checked, not run
    assert all(ok and "config" in msg for _, ok, msg in results), [r for r in results if not r[1]]
