"""`robench attack` and `robench report` through the CLI: a tiny run, skipping done cells, the report files, and
one-line errors that leave the results untouched."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from conftest import TINY, make_tiny_data

import robench.eval.sweep
from robench.cli import main
from robench.errors import DataNotFound
from robench.snn.models import ModelConfig, build_model
from robench.train import TrainConfig, train
from robench.zoo import Card, save

ID = "tiny-vgg5-lif-clean"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """conftest's trained_zoo, trained once for this module."""
    torch.manual_seed(0)
    cfg = ModelConfig(**TINY)
    model = build_model(cfg)
    res = train(model, TrainConfig(recipe="clean", epochs=3, lr=0.1, batch_size=16), make_tiny_data(128),
                make_tiny_data(64, 1))
    card = Card.new(ID, cfg, "fashion-mnist", recipe={"recipe": "clean"},
                    metrics={"clean_acc": res.clean_acc, "n_test": res.n_test})
    d = tmp_path_factory.mktemp("zoo")
    save(model, card, d)
    return d


def fake_load(name, split="test", data_dir=None, limit=None, download=False):
    """The tiny 8x8 task stands in for the Fashion-MNIST test split."""
    if data_dir is not None:
        raise DataNotFound(f"{name} ({split}) not found in {str(data_dir)!r}")
    x, y = make_tiny_data(48, 2)
    return x[:limit], y[:limit]


@pytest.fixture(autouse=True)
def tiny_dataset(monkeypatch):
    monkeypatch.setattr(robench.eval.sweep, "load_dataset", fake_load)


def run(capsys, args: list[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_help_lists_attack_and_report(capsys):
    code, out, _ = run(capsys, ["-h"])
    assert code == 0 and "attack" in out and "report" in out
    code, out, _ = run(capsys, ["attack", "-h"])
    for opt in ("--model", "--attack", "--eps", "--grad", "--n", "--batch-size", "--seed", "--device", "--dataset",
                "--data-dir", "--out", "--suite", "--force", "--zoo", "--steps", "--step-size", "--restarts",
                "--queries"):
        assert opt in out


def test_attack_writes_rows_prints_table_and_rerun_skips(zoo, tmp_path, capsys):
    out_dir = tmp_path / "res"
    args = ["attack", "--zoo", str(zoo), "--model", "vgg5", "--attack", "fgsm,gaussian", "--eps", "0,8/255",
            "--n", "16", "--out", str(out_dir), "--device", "cpu"]
    code, out, err = run(capsys, args)
    assert code == 0, err
    df = pd.read_csv(out_dir / "results.csv")
    assert len(df) == 2 * 3 + 2 and set(df["grad"]) == {"bptt", "rate", "worst", "none"}
    assert set(df["model"]) == {ID} and set(df["n"]) == {16}
    eps0 = df[df["eps"] == 0]
    assert (eps0["robust_acc"] == eps0["clean_acc"]).all()
    assert ID in out and "8/255" in out and "8 new rows" in out
    before = (out_dir / "results.csv").read_bytes()
    code, out, _ = run(capsys, args)
    assert code == 0 and "0 new rows" in out and "8 cells already there" in out
    assert (out_dir / "results.csv").read_bytes() == before

    code, out, err = run(capsys, ["report", "--results", str(out_dir), "--out", str(tmp_path / "rep")])
    assert code == 0, err
    assert "fgsm @ 8/255 (worst)" in out
    for f in ("table.md", "table.csv", "table.tex", "curves.png", "findings.md"):
        assert (tmp_path / "rep" / f).stat().st_size > 0


def test_default_attacks_are_fgsm_and_pgd10_with_both_grads(zoo, tmp_path, capsys):
    code, _, err = run(capsys, ["attack", "--zoo", str(zoo), "--model", ID, "--n", "4", "--out", str(tmp_path),
                                "--name", "run1", "--batch-size", "4"])
    assert code == 0, err
    df = pd.read_csv(tmp_path / "run1.csv")
    assert list(dict.fromkeys(df["attack"])) == ["fgsm", "pgd"] and set(df["eps_str"]) == {"8/255"}
    assert set(df["grad"]) == {"bptt", "rate", "worst"}
    pgd = json.loads(df[df["attack"] == "pgd"]["params"].iloc[0])
    assert pgd["steps"] == 10 and pgd["step_size"] == 2 / 255


def test_missing_data_dir_is_an_error_not_a_fallback(zoo, tmp_path, capsys):
    code, _, err = run(capsys, ["attack", "--zoo", str(zoo), "--model", ID, "--data-dir", str(tmp_path),
                                "--out", str(tmp_path / "r")])
    assert code == 1 and err.startswith("Error:") and len(err.strip().splitlines()) == 1


BAD = [
    (["--attack", "nope"], "unknown attack 'nope'; choose from: fgsm"),
    (["--grad", "sideways"], "sideways"),
    (["--eps", "abc"], "--eps 'abc' is not a number"),
    (["--eps", "-1"], "--eps '-1' is negative"),
    (["--eps", "8/0"], "divides by zero"),
    (["--n", "0"], "--n 0; must be an integer >= 1"),
    (["--min-batches", "0"], "--min-batches 0; must be an integer >= 1"),
    (["--n", "-5"], "--n -5"),
    (["--batch-size", "0"], "--batch-size '0'"),
    (["--suite", "nope"], "unknown suite 'nope'; choose from: paper, quick, pgd-sweep, autoattack, noise, reliable"),
    (["--suite", "reliable", "--steps", "5"], "--suite reliable fixes every attack, path and parameter"),
    (["--grad", "sigmoid:k=-1"], "--grad 'sigmoid:k=-1': k must be a finite number > 0"),
    (["--steps", "0"], "--steps 0"),
    (["--attack", "pgd", "--queries", "5"], "--queries applies to none of pgd; it applies to: square"),
    (["--attack", "square", "--queries", "0"], "--queries 0; must be an integer >= 1"),
    (["--model", "resnet9"], "--model 'resnet9' is not an id, prefix or arch"),
    (["--dataset", "cifar10"], "was trained on fashion-mnist"),
    (["--name", "../x"], "--name '../x'"),
]


@pytest.fixture(scope="module")
def stored_csv(zoo, tmp_path_factory) -> bytes:
    """A results file from one small run, shared by the bad-input tests."""
    out_dir = tmp_path_factory.mktemp("res")
    with pytest.MonkeyPatch.context() as mp, pytest.raises(SystemExit):
        mp.setattr(robench.eval.sweep, "load_dataset", fake_load)
        main(["attack", "--zoo", str(zoo), "--model", ID, "--attack", "fgsm", "--eps", "0", "--n", "4", "--out",
              str(out_dir), "--grad", "bptt"])
    return (out_dir / "results.csv").read_bytes()


@pytest.mark.parametrize("extra, msg", BAD)
def test_bad_input_is_one_line_and_leaves_results_alone(zoo, stored_csv, tmp_path, capsys, extra, msg):
    out_dir = tmp_path / "res"
    out_dir.mkdir()
    csv = out_dir / "results.csv"
    csv.write_bytes(stored_csv)
    args = ["attack", "--zoo", str(zoo), "--model", ID, "--n", "4", "--out", str(out_dir), *extra]
    code, out, err = run(capsys, args)
    assert code != 0
    assert len(err.strip().splitlines()) == 1 and err.startswith("Error"), err
    assert msg in " ".join(err.split()), err
    assert csv.read_bytes() == stored_csv and [p.name for p in out_dir.iterdir()] == ["results.csv"]


def test_a_results_folder_that_is_not_ours_is_refused(zoo, tmp_path, capsys):
    csv = tmp_path / "results.csv"
    csv.write_text("name,score\nalice,3\n")
    code, _, err = run(capsys, ["attack", "--zoo", str(zoo), "--model", ID, "--n", "4", "--out", str(tmp_path)])
    assert code == 1 and "not a robench results file: missing columns model" in err
    assert len(err.strip().splitlines()) == 1 and csv.read_text() == "name,score\nalice,3\n"
    code, _, err = run(capsys, ["report", "--results", str(tmp_path), "--out", str(tmp_path / "rep")])
    assert code == 1 and "missing columns" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "rep").exists()


def test_report_on_an_empty_or_missing_folder_is_one_line(tmp_path, capsys):
    for folder in (tmp_path, tmp_path / "missing"):
        code, _, err = run(capsys, ["report", "--results", str(folder), "--out", str(tmp_path / "rep")])
        assert code == 1 and err.startswith("Error:") and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, ["report", "--results", str(tmp_path), "--out", str(tmp_path)])
    assert code == 2 and "must differ" in err
