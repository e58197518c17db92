"""`robench train`, `zoo` and `data` through the CLI: help, a tiny training run, one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from cli_helpers import run_main as _run_main
from typer.testing import CliRunner

import robench.train.job
from robench.cli import app, main

runner = CliRunner()
TINY_OPTS = ["--width", "0.125", "--fc", "16", "-T", "2", "--batch-size", "16", "--device", "cpu"]


def _fake_load(name, split="test", data_dir=None, limit=None, download=False):
    """Tiny 28x28 stand-in for Fashion-MNIST so `robench train` runs in a second."""
    n = 32 if split == "train" else 16
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    y = torch.arange(n) % 10
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.5
    x[:, :, :, :14] += (y.view(-1, 1, 1, 1) % 2) * 0.5
    return (x[:limit], y[:limit]) if limit else (x, y)


# -------------------------------------------------------------------------------------------------- help
@pytest.mark.parametrize("args, names", [
    (["-h"], ["train", "zoo", "data"]),
    (["zoo", "-h"], ["list", "show", "verify"]),
    (["data", "-h"], ["subset", "info"]),
])
def test_help_lists_every_command(capsys, args, names):
    result = runner.invoke(app, args)
    assert result.exit_code == 0
    code, out, err = _run_main(capsys, args)
    assert code == 0 and err == ""
    for text in (result.output, out):
        for name in names:
            assert name in text


def test_train_help_shows_the_options(capsys):
    code, out, _ = _run_main(capsys, ["train", "-h"])
    assert code == 0
    for opt in ("--arch", "--neuron", "--recipe", "--alpha", "--kappa", "--sigma", "--eps", "--limit", "--resume",
                "--zoo", "--data-dir", "--device"):
        assert opt in out


# ------------------------------------------------------------------------------------------ a tiny train
def test_train_writes_a_listed_loadable_entry(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(robench.train.job, "load_data", _fake_load)
    zoo, runs = tmp_path / "zoo", tmp_path / "runs"
    args = ["train", "--neuron", "stable", "--recipe", "gaussian", "--alpha", "1", "--epochs", "1", *TINY_OPTS,
            "--zoo", str(zoo), "--runs", str(runs)]
    code, out, err = _run_main(capsys, args)
    assert code == 0, err
    assert "saved fmnist-vgg5-stable-gn" in out and "clean acc" in out
    assert "train" in err and "2/2" in err  # the progress bar, on stderr
    assert (zoo / "fmnist-vgg5-stable-gn.safetensors").exists()
    assert (runs / "fmnist-vgg5-stable-gn" / "state.pt").exists()

    listed = runner.invoke(app, ["zoo", "list", "--zoo", str(zoo), "--format", "json"])
    assert listed.exit_code == 0
    (row,) = json.loads(listed.output)
    assert row["id"] == "fmnist-vgg5-stable-gn" and row["recipe"] == "gaussian" and row["alpha"] == 1.0
    assert row["neuron"] == "stable" and row["T"] == 2
    table = runner.invoke(app, ["zoo", "list", "--zoo", str(zoo)])
    assert "fmnist-vgg5-stable-gn" in table.output
    shown = runner.invoke(app, ["zoo", "show", "fmnist-vgg5", "--zoo", str(zoo)])
    assert json.loads(shown.output)["recipe"]["sigma"] == pytest.approx(8 / 255)
    code, out, _ = _run_main(capsys, ["zoo", "verify", "--zoo", str(zoo)])
    assert code == 0 and "ok" in out and "fmnist-vgg5-stable-gn" in out

    # the same run again: refused, the entry untouched
    before = (zoo / "fmnist-vgg5-stable-gn.json").read_text()
    code, out, err = _run_main(capsys, args)
    assert code == 2 and err.startswith("Error") and "--overwrite" in err
    assert (zoo / "fmnist-vgg5-stable-gn.json").read_text() == before


def test_train_through_the_typer_app(tmp_path, monkeypatch):
    monkeypatch.setattr(robench.train.job, "load_data", _fake_load)
    zoo = tmp_path / "zoo"
    result = runner.invoke(app, ["train", *TINY_OPTS, "--id", "cli-tiny", "--limit", "16", "--zoo", str(zoo),
                                 "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    card = json.loads((zoo / "cli-tiny.json").read_text())
    assert card["recipe"]["limit"] == 16 and card["model"]["T"] == 2 and card["metrics"]["n_test"] == 16


# ------------------------------------------------------------------------------------------- bad input
BAD = [
    (["--arch", "resnet"], 2, "unknown arch 'resnet'; choose from: vgg5, vgg11, wrn16"),
    (["--recipe", "trades"], 2, "unknown recipe 'trades'; choose from: clean, gaussian, fgsm-at, pgd-at, rat"),
    (["--dataset", "mnist"], 2, "unknown dataset 'mnist'; choose from: fashion-mnist, cifar10, cifar100"),
    (["--recipe", "fgsm-at", "--eps", "-4/255"], 2, "--eps '-4/255' is negative"),
    (["--recipe", "gaussian", "--sigma", "-0.1"], 2, "--sigma '-0.1' is negative"),
    (["--recipe", "gaussian", "--sigma", "2"], 2, "out of range"),
    (["-T", "0"], 2, "-T 0; must be an integer >= 1"),
    (["-T", "abc"], 2, "'-T'"),
    (["--alpha", "1"], 2, "--alpha > 0 needs a perturbed input"),
    (["--recipe", "gaussian", "--kappa", "1.5"], 2, "--kappa 1.5"),
    (["--neuron", "izhikevich"], 2, "izhikevich"),
    (["--width", "0"], 2, "--width"),
    (["--device", "tpu"], 2, "--device 'tpu'"),
    (["--data-dir", "{tmp}/nowhere"], 2, "--data-dir '{tmp}/nowhere' does not exist"),
    (["--data-dir", "{tmp}/empty"], 1, "fashion-mnist (train) not found in '{tmp}/empty'"),
    (["--id", "Bad Id"], 2, "zoo id 'Bad Id'"),
    (["--bogus"], 2, "--bogus"),
]


@pytest.mark.parametrize("extra, code, message", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input_is_one_error_line_and_nothing_written(tmp_path, capsys, extra, code, message):
    (tmp_path / "empty").mkdir()
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    zoo, runs = tmp_path / "zoo", tmp_path / "runs"
    got, out, err = _run_main(capsys, ["train", *extra, "--zoo", str(zoo), "--runs", str(runs)])
    assert got == code
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error"), err
    assert message.replace("{tmp}", str(tmp_path)) in lines[0]
    assert "Traceback" not in err + out and out == ""
    assert not zoo.exists() and not runs.exists()


@pytest.mark.parametrize("args, code, message", [
    (["trian"], 2, "No such command 'trian'"),
    (["zoo", "show", "nothing"], 2, "is empty or missing"),
    (["zoo", "verify"], 1, "no zoo entries"),
    (["data", "subset", "--per-class", "0"], 2, "--per-class 0"),
])
def test_other_bad_commands(tmp_path, capsys, args, code, message):
    if args[0] == "zoo":
        args = [*args, "--zoo", str(tmp_path / "zoo")]
    got, out, err = _run_main(capsys, args)
    assert got == code and err.startswith("Error") and len(err.splitlines()) == 1, err
    assert message in err and "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="unknown arch"):
        main(["--debug", "train", "--arch", "nope", "--zoo", str(tmp_path / "zoo")])


def test_debug_given_as_an_option_value_is_not_the_root_flag(capsys):
    # hypothesis found this: `-T --debug` made main show a traceback for a plain usage error
    code, _, err = _run_main(capsys, ["zoo", "import", "x.pt", "--id", "a", "-T", "--debug"])
    assert code == 2 and err.startswith("Error") and "Traceback" not in err and len(err.splitlines()) == 1
