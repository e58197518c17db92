"""The results schema and store: exact round trip, keys, atomic appends, refusing files that are not ours."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from robench.errors import DataNotFound, IntegrityError
from robench.results import COLUMNS, ResultsStore, read_dir, row_key


def make_row(**kw) -> dict:
    row = {"model": "m1", "sha256": "ab" * 32, "dataset": "fashion-mnist:test", "n": 100, "attack": "pgd",
           "params": json.dumps({"steps": 10, "norm": "Linf"}), "grad": "bptt", "eps": 8 / 255, "eps_str": "8/255",
           "clean_acc": 0.9, "robust_acc": 0.37, "clean_count": 90, "robust_count": 37, "seconds": 1.5,
           "device": "cpu", "seed": 0, "versions": json.dumps({"torch": "2"}), "timestamp": "2026-01-01T00:00:00",
           "flags": ""}
    return {**row, **kw}


def test_a_cell_is_what_was_measured_not_when_or_how_fast(tmp_path):
    """A rerun of the same cell (another time, speed, device, result or flag) is the same cell; any change to what
    is measured (model, weights, network config, data, attack, parameters, path, budget, seed) is another one."""
    base = make_row()
    same = [make_row(**{k: v}) for k, v in (("timestamp", "2027-01-01T00:00:00"), ("seconds", 9.0), ("device",
            "cuda:0"), ("robust_acc", 0.5), ("robust_count", 50), ("flags", "zero-grad"), ("eps_str", "0.0314"),
            ("versions", json.dumps({"torch": "3"})))]
    other = [make_row(**{k: v}) for k, v in (("model", "m2"), ("sha256", "cd" * 32), ("config", "0123456789abcdef"),
             ("dataset", "cifar10:test"), ("n", 50), ("attack", "bim"), ("params", json.dumps({"steps": 20})),
             ("grad", "rate"), ("eps", 4 / 255), ("seed", 1))]
    assert all(row_key(r) == row_key(base) for r in same)
    assert len({row_key(r) for r in [base, *other]}) == 1 + len(other)
    store = ResultsStore(tmp_path / "r.csv")
    store.append([base])
    store.append(same)  # a concurrent run's copy of a stored cell is dropped
    assert len(store.read()) == 1 and store.read()["seconds"].tolist() == [1.5]
    store.append(other)
    assert len(store.read()) == 1 + len(other) and set(COLUMNS) <= set(store.read().columns)


def test_round_trip_is_exact_and_keys_match(tmp_path):
    store = ResultsStore(tmp_path / "r.csv")
    assert store.read().empty and store.keys_done() == set()
    rows = [make_row(eps=e, eps_str=s) for e, s in ((0.0, "0"), (8 / 255, "8/255"), (1 / 3, "0.333333"))]
    store.append(rows)
    df = store.read()
    assert list(df.columns) == list(COLUMNS)
    assert df["eps"].tolist() == [0.0, 8 / 255, 1 / 3]  # bit-exact floats
    assert df["n"].dtype == "int64" and df["robust_acc"].iloc[0] == 0.37
    assert store.keys_done() == {row_key(r) for r in rows}
    # params with other key order is the same cell
    assert row_key(make_row(params='{"norm": "Linf", "steps": 10}')) == row_key(rows[1])


def test_append_adds_and_replace_swaps_same_keys(tmp_path):
    store = ResultsStore(tmp_path / "r.csv")
    store.append([make_row(grad="bptt"), make_row(grad="rate")])
    store.append([make_row(grad="worst")])
    assert store.read()["grad"].tolist() == ["bptt", "rate", "worst"]
    store.append([make_row(grad="rate", robust_acc=0.1)], replace=True)
    df = store.read()
    assert len(df) == 3 and df.set_index("grad").loc["rate", "robust_acc"] == 0.1
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "r.csv"]
    assert leftovers == []  # no temporary or lock files left behind


def test_a_failed_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path / "r.csv")
    store.append([make_row()])
    before = store.path.read_bytes()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        store.append([make_row(grad="rate")])
    assert store.path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]


@pytest.mark.parametrize("content, msg", [
    ("a,b\n1,2\n", "missing columns model, sha256"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not a robench results file"),
    ("", "not a robench results file"),
])
def test_a_foreign_file_is_refused_and_left_alone(tmp_path, content, msg):
    path = tmp_path / "r.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    store = ResultsStore(path)
    with pytest.raises(IntegrityError, match=msg) as e:
        store.read()
    assert "r.csv" in str(e.value)
    with pytest.raises(IntegrityError):
        store.append([make_row()])
    assert path.read_bytes() == (content if isinstance(content, bytes) else content.encode())


@pytest.mark.parametrize("bad", [dict(robust_acc=1.5), dict(grad="sideways"), dict(n="many")])
def test_bad_values_are_refused(tmp_path, bad):
    path = tmp_path / "r.csv"
    pd.DataFrame([make_row(**bad)]).to_csv(path, index=False)
    with pytest.raises(IntegrityError, match="r.csv"):
        ResultsStore(path).read()
    with pytest.raises(IntegrityError):
        ResultsStore(tmp_path / "new.csv").append([make_row(**bad)])


def test_read_dir_joins_every_results_file(tmp_path):
    ResultsStore(tmp_path / "a.csv").append([make_row(model="m1")])
    ResultsStore(tmp_path / "b.csv").append([make_row(model="m2"), make_row(model="m2", grad="rate")])
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "table.csv").write_text("x\n1\n")  # subfolders (a report) are not read
    df = read_dir(tmp_path)
    assert sorted(df["model"]) == ["m1", "m2", "m2"]


def test_read_dir_errors_are_one_line(tmp_path):
    with pytest.raises(DataNotFound, match="does not exist"):
        read_dir(tmp_path / "missing")
    with pytest.raises(DataNotFound, match="no results CSV"):
        read_dir(tmp_path)
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(IntegrityError, match="x.csv.*missing columns"):
        read_dir(tmp_path)


def test_check_writable_refuses_a_file_as_folder(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(IntegrityError, match="not a writable folder"):
        ResultsStore(tmp_path / "f" / "results.csv").check_writable()


def test_masks_round_trip_and_are_checked_against_n_and_count(tmp_path):
    import numpy as np

    from robench.results import masks
    from robench.results.stats import encode_mask

    mask = np.zeros(100, dtype=bool)
    mask[:37] = True
    store = ResultsStore(tmp_path / "r.csv")
    store.append([make_row(robust_mask=encode_mask(mask)), make_row(grad="rate")])  # the second has no mask
    df = store.read()
    assert df["robust_mask"].tolist() == [encode_mask(mask), ""]
    got = masks(df)
    assert (got[0] == mask).all() and got[1] is None
    for bad, what in ((encode_mask(mask[:50]), "holds 7 bytes, but n = 100 needs 13"),
                      (encode_mask(~mask), "has 63 robust samples, but robust_count is 37")):
        text = (tmp_path / "r.csv").read_text().replace(encode_mask(mask), bad)
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(IntegrityError, match=f"bad.csv'?: row 2 robust_mask {what}"):
            ResultsStore(tmp_path / "bad.csv").read()


def test_old_files_without_the_mask_column_still_read_and_append(tmp_path):
    from robench.results.stats import encode_mask

    old = pd.DataFrame([make_row()])  # written before robust_mask existed
    old.to_csv(tmp_path / "old.csv", index=False)
    store = ResultsStore(tmp_path / "old.csv")
    assert store.read()["robust_mask"].tolist() == [""]
    store.append([make_row(grad="rate", robust_mask=encode_mask([True] * 37 + [False] * 63))])
    df = store.read()
    assert list(df.columns) == list(COLUMNS) and df["robust_mask"].str.len().tolist() == [0, 26]


def test_atomic_write_keeps_permissions_and_never_leaves_a_part(tmp_path, monkeypatch):
    import stat

    from robench.results import atomic_write

    f = tmp_path / "r.csv"
    old = os.umask(0o022)
    try:
        atomic_write(f, "a\n")
    finally:
        os.umask(old)
    assert f.read_text() == "a\n" and stat.S_IMODE(f.stat().st_mode) == 0o644  # not mkstemp's 0600
    f.chmod(0o640)
    atomic_write(f, b"b\n")
    assert f.read_bytes() == b"b\n" and stat.S_IMODE(f.stat().st_mode) == 0o640

    def boom(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(f, "c\n")
    assert f.read_bytes() == b"b\n" and sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]
