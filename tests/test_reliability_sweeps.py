"""Crash-safe sweeps: `robench attack` killed with SIGKILL (between cells or while writing), or stopped with
Ctrl-C, leaves a results file that parses with every finished cell once, and a rerun does only the missing cells;
two sweeps writing to one results file at once lose nothing; bad data and foreign results folders are one line."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest
import torch
from cli_helpers import one_line as _one_line
from cli_helpers import run_main as _run
from fmnist_files import write_fmnist

from robench.attacks import AttackSpec
from robench.cli import main
from robench.data import DATASETS
from robench.errors import BadSpec
from robench.eval.sweep import Data, Target, evaluate
from robench.results import ResultsStore, row_key
from robench.snn.models import ModelConfig, build_model
from robench.zoo import Card, save

ENV = {**os.environ, "ROBENCH_THREADS": "1", "COLUMNS": "200"}
FM = dict(arch="vgg5", T=2, width=0.125, fc=16, **DATASETS.get("fashion-mnist").model_kwargs())
EPS = "0,2/255,4/255,8/255,16/255"  # 5 groups x (bptt, rate, worst) = 15 rows, one append per row


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Path:
    """A zoo with one tiny Fashion-MNIST-shaped entry and 32 test images as IDX files."""
    d = tmp_path_factory.mktemp("sweeps")
    torch.manual_seed(0)
    save(build_model(ModelConfig(**FM)), Card.new("tiny", ModelConfig(**FM), "fashion-mnist"), d / "zoo")
    write_fmnist(d / "fm", n_train=16, n_test=32)
    return d


def _attack_args(place: Path, out: Path, eps: str = EPS) -> list[str]:
    return ["attack", "--model", "tiny", "--attack", "fgsm", "--eps", eps, "--grad", "both", "--n", "32",
            "--batch-size", "16", "--device", "cpu", "--zoo", str(place / "zoo"), "--data-dir", str(place / "fm"),
            "--out", str(out)]


# Stops robench at a chosen append: after the store's `at`-th append (SIGKILL or SIGINT), or inside it, with the
# new file written beside the old one but not yet renamed over it (SIGKILL).
DRIVER = r"""
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a terminal (background jobs ignore SIGINT)
import robench.results.store as r

where, at, sig = os.environ["STOP_WHERE"], int(os.environ["STOP_AT"]), getattr(signal, os.environ["STOP_SIG"])
calls = [0]
append, replace = r.ResultsStore.append, os.replace

def stop_after(self, rows, replace=False):
    calls[0] += 1
    out = append(self, rows, replace)
    if where == "after" and calls[0] == at:
        os.kill(os.getpid(), sig)
    return out

def rename(src, dst):
    if where == "inside" and calls[0] == at and str(dst).endswith(".csv"):
        os.kill(os.getpid(), sig)
    return replace(src, dst)

r.ResultsStore.append, os.replace = stop_after, rename
from robench.cli import main
main(sys.argv[1:])
"""


def _robench(args: list[str], stop: tuple[str, int, str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-c", DRIVER, *args] if stop else [sys.executable, "-m", "robench", *args]
    env = {**ENV, "STOP_WHERE": stop[0], "STOP_AT": str(stop[1]), "STOP_SIG": stop[2]} if stop else ENV
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(p: subprocess.Popen) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=300)
    return p.returncode, out, err


def _rows(folder: Path) -> pd.DataFrame:
    return ResultsStore(folder / "results.csv").read()


def _by_key(df: pd.DataFrame) -> dict:
    keys = [row_key(r) for r in df.to_dict("records")]
    assert len(keys) == len(set(keys)), "a cell is stored twice"
    return {k: (r["clean_acc"], r["robust_acc"], r["clean_count"], r["robust_count"])
            for k, r in zip(keys, df.to_dict("records"), strict=True)}


# stop point -> (exit code, rows kept). Appends 1-3 are the eps=0 group (bptt, rate, worst), 4 is eps=2/255's bptt.
STOPS = {"sigkill-between-cells": (("after", 4, "SIGKILL"), -9, 4),
         "sigkill-while-writing": (("inside", 6, "SIGKILL"), -9, 5),
         "ctrl-c": (("after", 4, "SIGINT"), 130, 4)}


def _main(args: list[str]) -> tuple[int, str]:
    """`robench ...` in this process (no import cost): (exit code, stdout)."""
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code, out.getvalue()


@pytest.mark.slow
def test_a_stopped_sweep_keeps_finished_cells_and_a_rerun_does_only_the_rest(place, tmp_path, one_thread):
    stopped = {name: _robench(_attack_args(place, tmp_path / name), stop) for name, (stop, _, _) in STOPS.items()}
    code, _ = _main(_attack_args(place, tmp_path / "ref"))  # the uninterrupted sweep, meanwhile
    assert code == 0
    ref = _rows(tmp_path / "ref")
    want = _by_key(ref)
    assert len(want) == 15
    assert set(ref["seed"]) == {0} and set(ref["device"]) == {"cpu"}  # provenance in every row
    assert all(json.loads(v)["torch"] == metadata.version("torch") for v in ref["versions"])
    for name, p in stopped.items():
        code, _, err = _finish(p)
        _, want_code, kept = STOPS[name]
        assert code == want_code, err
        if name == "ctrl-c":
            assert err.splitlines()[-1] == "Error: interrupted; finished work was kept"
            assert "Traceback" not in err
        rows = _rows(tmp_path / name)  # parses
        assert len(rows) == kept and len(_by_key(rows)) == kept
        code, out = _main(_attack_args(place, tmp_path / name))  # the rerun
        assert code == 0
        assert f"{15 - kept} new rows" in out and f"{kept} cells already there" in out, out
        assert _by_key(_rows(tmp_path / name)) == want  # every cell once, the same numbers
        assert [f.name for f in (tmp_path / name).glob("*.csv")] == ["results.csv"]


def test_two_sweeps_into_one_results_file_lose_nothing(place, tmp_path, one_thread):
    out = tmp_path / "shared"
    other = _robench(_attack_args(place, out, "4/255,8/255,16/255"))
    while other.poll() is None and not (out / "results.csv").exists():
        time.sleep(0.02)  # until the other sweep has stored its first cell: then both write at once
    code, _ = _main(_attack_args(place, out, "0,2/255,4/255"))  # 4/255 in both: stored once
    assert code == 0
    code, _, err = _finish(other)
    assert code == 0, err
    assert len(_by_key(_rows(out))) == 15


WRITER = r"""
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from importlib import metadata
from robench.results import ResultsStore
path, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
row = {"model": who, "sha256": "0" * 64, "dataset": "d", "n": 1, "attack": "fgsm", "params": "{}", "grad": "bptt",
       "eps_str": "e", "clean_acc": 1.0, "robust_acc": 0.5, "clean_count": 1, "robust_count": 0, "seconds": 0.1,
       "device": "cpu", "seed": 0, "versions": "{}", "timestamp": "t", "flags": ""}
for i in range(n):
    ResultsStore(path).append([{**row, "eps": i / 1000}])
"""


def test_concurrent_appends_are_serialised_by_the_lock(tmp_path):
    path = tmp_path / "r.csv"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"w{i}", "12"], env=ENV) for i in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0] * 4
    df = ResultsStore(path).read()
    assert len(df) == 48 and len(_by_key(df)) == 48
    assert sorted(df["model"].value_counts().to_dict().items()) == [(f"w{i}", 12) for i in range(4)]


# --------------------------------------------------------------------------------------- bad data
def _tiny_target(tiny_model) -> Target:
    return Target("tiny", "0" * 64, tiny_model, "d")


@pytest.mark.parametrize("bad, message", [
    (float("nan"), "NaN or Inf"), (float("inf"), "NaN or Inf"), (255.0, "accepted: values in [0, 1]"),
    (-0.5, "range [-0.5"),
])
def test_images_that_are_not_finite_in_0_1_are_refused(tiny_model, tiny_data, tmp_path, bad, message):
    x, y = tiny_data
    x = x.clone()
    if bad == 255.0:  # 0..255 images: a forgotten division
        x = x * 255
    else:
        x[3, 0, 2, 2] = bad
    store = ResultsStore(tmp_path / "r.csv")
    with pytest.raises(BadSpec, match=message.replace("[", r"\[")):
        evaluate([_tiny_target(tiny_model)], [AttackSpec("fgsm", eps=8 / 255)], "bptt", Data("d", x, y), store)
    assert not store.path.exists()


@pytest.mark.parametrize("x, y, message", [
    (torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long), "does not take d images (3, 8, 8)"),
    (torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 9]), "has 2 classes, but d labels go up to 9"),
])
def test_data_that_does_not_fit_the_model_is_refused(tiny_model, tmp_path, x, y, message):
    store = ResultsStore(tmp_path / "r.csv")
    with pytest.raises(BadSpec, match=message.replace("(", r"\(").replace(")", r"\)")):
        evaluate([_tiny_target(tiny_model)], [AttackSpec("fgsm", eps=8 / 255)], "bptt", Data("d", x, y), store)
    assert not store.path.exists()


def test_a_model_whose_card_does_not_fit_its_dataset_is_one_line(place, tmp_path, tiny_cfg, tiny_model, capsys):
    zoo = tmp_path / "zoo"
    save(tiny_model, Card.new("small", tiny_cfg, "fashion-mnist"), zoo)  # 8x8, 2 classes, card says fashion-mnist
    out = tmp_path / "results"
    code, _, err = _run(capsys, ["attack", "--model", "small", "--attack", "fgsm", "--n", "8", "--device", "cpu",
                                 "--zoo", str(zoo), "--data-dir", str(place / "fm"), "--out", str(out)])
    assert code == 2 and "model small" in _one_line(err)
    assert not (out / "results.csv").exists()


# ------------------------------------------------------------------------------- report's inputs
def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.fixture
def good_csv(place, tmp_path) -> Path:
    out = tmp_path / "good"
    ResultsStore(out / "results.csv").append(_rows_of(place))
    return out / "results.csv"


def _rows_of(place: Path) -> list[dict]:
    row = {"model": "tiny", "sha256": "0" * 64, "dataset": "fashion-mnist:test", "n": 32, "attack": "fgsm",
           "params": "{}", "grad": "bptt", "eps": 8 / 255, "eps_str": "8/255", "clean_acc": 0.5, "robust_acc": 0.25,
           "clean_count": 16, "robust_count": 8, "seconds": 0.1, "device": "cpu", "seed": 0, "versions": "{}",
           "timestamp": "2026-01-01T00:00:00+00:00", "flags": ""}
    return [row, {**row, "grad": "rate", "robust_acc": 0.125, "robust_count": 4}]


@pytest.mark.parametrize("case, code, message", [
    ("missing folder", 1, "does not exist"),
    ("empty folder", 1, "no results CSV"),
    ("foreign csv", 1, "is not a robench results file: missing columns"),
    ("binary csv", 1, "is not a robench results file"),
    ("header only", 1, "hold no rows"),
    ("nan accuracy", 1, "accuracy outside [0, 1]"),
    ("inf accuracy", 1, "accuracy outside [0, 1]"),
    ("accuracy 2", 1, "accuracy outside [0, 1]"),
    ("bad grad", 1, "grad that is not a gradient path key"),
    ("not a number", 1, "is not a number"),
    ("no rows match", 1, "no results match --model nobody"),
])
def test_report_on_bad_results_is_one_line_and_writes_nothing(good_csv, tmp_path, capsys, case, code, message):
    d = tmp_path / "res"
    good = good_csv.read_text()
    header, first = good.splitlines()[:2]
    cols = header.split(",")
    col = cols.index("robust_acc")

    def with_value(c: int, v: str) -> str:
        cells = first.split(",")
        cells[c] = v
        return header + "\n" + ",".join(cells) + "\n"

    extra = []
    if case == "empty folder":
        d.mkdir()
    elif case == "foreign csv":
        _write(d / "x.csv", "a,b\n1,2\n")
    elif case == "binary csv":
        _write(d / "x.csv", bytes(range(256)) * 4)
    elif case == "header only":
        _write(d / "x.csv", header + "\n")
    elif case in ("nan accuracy", "inf accuracy", "accuracy 2"):
        _write(d / "x.csv", with_value(col, {"nan accuracy": "nan", "inf accuracy": "inf"}.get(case, "2.0")))
    elif case == "bad grad":
        _write(d / "x.csv", with_value(cols.index("grad"), "backprop"))
    elif case == "not a number":
        _write(d / "x.csv", with_value(cols.index("n"), "many"))
    elif case == "no rows match":
        _write(d / "x.csv", good)
        extra = ["--model", "nobody"]
    before = {p: p.read_bytes() for p in d.glob("*")} if d.exists() else {}
    got, out, err = _run(capsys, ["report", "--results", str(d), "--out", str(tmp_path / "rep"), *extra])
    assert got == code and message in _one_line(err), err
    assert not (tmp_path / "rep").exists()
    assert ({p: p.read_bytes() for p in d.glob("*")} if d.exists() else {}) == before


def test_report_into_an_unwritable_folder_is_one_line(good_csv, tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    code, _, err = _run(capsys, ["report", "--results", str(good_csv.parent), "--out", str(tmp_path / "file" / "r")])
    assert code == 1
    _one_line(err)


def test_attack_into_an_unwritable_folder_is_one_line(place, tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    code, _, err = _run(capsys, _attack_args(place, tmp_path / "file" / "results"))
    assert code == 1 and "cannot write results" in _one_line(err)
