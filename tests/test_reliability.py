"""Crash safety and determinism: `robench train` killed with SIGKILL resumes to the very same weights, the same
command twice gives the same weights, every card carries seed, versions and device, and an unwritable output
folder or an unexpected failure is one line, exit 1 (a traceback only with --debug)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch
from cli_helpers import run_main as _run_main
from fmnist_files import write_fmnist
from safetensors.torch import load_file

from robench.cli import main

TRAIN = ["train", "--arch", "vgg5", "--width", "0.125", "--fc", "16", "-T", "2", "--limit", "64", "--batch-size",
         "16", "--epochs", "3", "--ckpt-every", "2", "--recipe", "gaussian", "--alpha", "1", "--seed", "3",
         "--device", "cpu", "--id", "tiny"]  # 4 steps per epoch, 12 in all; noise and MPPD use the RNG
ENV = {**os.environ, "ROBENCH_THREADS": "1", "COLUMNS": "200"}

# Runs robench in this process and SIGKILLs it at a chosen point: no handler, no cleanup, no flush can run,
# exactly as a kill from outside (which could not pick the point: the run is over in a second).
DRIVER = r"""
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a terminal (background jobs ignore SIGINT)
import torch
import robench.train.loop as t

where, at = os.environ["KILL_WHERE"], int(os.environ["KILL_AT"])
sig = signal.SIGINT if os.environ.get("KILL_SIGNAL") == "INT" else signal.SIGKILL
calls = {"step": 0, "save": 0}
loss, save = t.robust_loss, torch.save

def step(*a, **k):  # the training step number `at` (1-based) never finishes
    calls["step"] += 1
    if where == "step" and calls["step"] == at:
        os.kill(os.getpid(), sig)  # SIGINT: what Ctrl-C sends
    return loss(*a, **k)

def half_save(obj, f, *a, **k):  # checkpoint number `at` dies half written
    calls["save"] += 1
    if where == "save" and calls["save"] == at:
        save(obj, f, *a, **k)
        with open(f, "r+b") as fh:
            fh.truncate(os.path.getsize(f) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    return save(obj, f, *a, **k)

t.robust_loss, t.torch.save = step, half_save
from robench.cli import main
main(sys.argv[1:])
"""


def _robench(args: list[str], cwd: Path, kill: tuple | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-c", DRIVER, *args] if kill else [sys.executable, "-m", "robench", *args]
    env = {**ENV, "KILL_WHERE": kill[0], "KILL_AT": str(kill[1]), "KILL_SIGNAL": kill[2]} if kill else ENV
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(p: subprocess.Popen) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=300)
    return p.returncode, out, err


def _tensors(zoo: Path) -> dict[str, torch.Tensor]:
    return load_file(str(zoo / "tiny.safetensors"))


def _sha(zoo: Path) -> str:
    return hashlib.sha256((zoo / "tiny.safetensors").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory) -> Path:
    return write_fmnist(tmp_path_factory.mktemp("data") / "fm")


# Kill points: step 7 is epoch 2's third step, one step after the checkpoint at its step 2 (that step is lost
# and redone); save 3 is the end-of-epoch-1 checkpoint dying half written, so resume starts from save 2 (epoch 1
# with all its steps done, the epoch not yet closed). Ctrl-C (SIGINT) at step 7 stops cleanly: exit 130 and one
# line saying how to resume, the state on disk that of step 6.
KILLS = {"mid-epoch": (("step", 7, "KILL"), (1, 2)), "mid-checkpoint-write": (("save", 3, "KILL"), (0, 4)),
         "ctrl-c": (("step", 7, "INT"), (1, 2))}


@pytest.mark.slow
def test_sigkilled_training_resumes_to_the_same_weights(tmp_path, fmnist):
    opts = [*TRAIN, "--data-dir", str(fmnist)]
    ref = _robench([*opts, "--zoo", "ref/zoo", "--runs", "ref/runs"], tmp_path)
    killed = {name: _robench([*opts, "--zoo", f"{name}/zoo", "--runs", f"{name}/runs"], tmp_path, kill=kill)
              for name, (kill, _) in KILLS.items()}  # all at once: each run is a second of work
    resumed = {}
    for name, p in killed.items():
        code, _, err = _finish(p)
        if name == "ctrl-c":
            assert code == 130 and "Traceback" not in err
            assert err.splitlines()[-1] == f"Error: training interrupted at epoch 2; resume with --resume (state in "\
                                           f"{name}/runs/tiny)"
        else:
            assert code == -signal.SIGKILL, err
        state = tmp_path / name / "runs" / "tiny" / "state.pt"
        assert state.exists() and not (tmp_path / name / "zoo").exists()  # killed before the end: no entry
        saved = torch.load(state, weights_only=True)
        assert (saved["epoch"], saved["step"]) == KILLS[name][1]
        if name == "ctrl-c":
            continue  # the same state as mid-epoch's, whose resume is checked: one process less
        resumed[name] = _robench([*opts, "--zoo", f"{name}/zoo", "--runs", f"{name}/runs", "--resume"], tmp_path)
    code, _, err = _finish(ref)
    assert code == 0, err
    ref_zoo = tmp_path / "ref" / "zoo"
    ref_card = json.loads((ref_zoo / "tiny.json").read_text())
    for name, p in resumed.items():
        code, out, err = _finish(p)
        assert code == 0 and "saved tiny" in out, err
        zoo = tmp_path / name / "zoo"
        a, b = _tensors(zoo), _tensors(ref_zoo)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
        assert _sha(zoo) == _sha(ref_zoo)
        card = json.loads((zoo / "tiny.json").read_text())
        assert card["metrics"]["history"] == ref_card["metrics"]["history"]  # per-epoch loss and accuracy too
        assert card["metrics"]["clean_acc"] == ref_card["metrics"]["clean_acc"]


def test_same_command_same_seed_same_weights_and_provenance_in_the_card(tmp_path, fmnist, capsys, one_thread):
    opts = [*TRAIN, "--epochs", "1", "--data-dir", str(fmnist)]
    for run in ("a", "b", "c"):
        seed = ["--seed", "4"] if run == "c" else []
        code, _, err = _run_main(capsys, [*opts, *seed, "--zoo", str(tmp_path / run / "zoo"),
                                          "--runs", str(tmp_path / run / "runs")])
        assert code == 0, err
    a, b = tmp_path / "a" / "zoo", tmp_path / "b" / "zoo"
    assert _sha(a) == _sha(b)
    ta, tb = _tensors(a), _tensors(b)
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    card = json.loads((a / "tiny.json").read_text())
    assert card["recipe"]["seed"] == 3 and card["device"] == "cpu"
    assert {"python", "torch", "robench", "torchattacks", "pyautoattack"} <= set(card["versions"])
    assert card["versions"]["torch"] == metadata.version("torch")
    assert _sha(tmp_path / "c" / "zoo") != _sha(a)  # the seed does matter


# --------------------------------------------------------------------------------- unwritable output
@pytest.fixture
def unwritable(tmp_path) -> Path:
    """A zoo folder no write can reach: chmod 0o555 where that stops writes; as root (where it does not),
    a folder below a regular file."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    try:
        (d / "probe").write_text("")
    except PermissionError:
        yield d
        d.chmod(0o755)
        return
    (d / "probe").unlink()
    d.chmod(0o755)
    (tmp_path / "file").write_text("not a folder")
    yield tmp_path / "file" / "zoo"


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error"), err
    assert "Traceback" not in err
    return lines[0]


def test_training_into_an_unwritable_zoo_fails_before_training(tmp_path, fmnist, unwritable, capsys):
    runs = tmp_path / "runs"
    code, out, err = _run_main(capsys, [*TRAIN, "--data-dir", str(fmnist), "--zoo", str(unwritable),
                                        "--runs", str(runs)])
    assert code == 1 and out == ""
    assert f"cannot write to the zoo folder '{unwritable}'" in _one_error_line(err)
    assert not runs.exists()  # refused before the first step, not after hours of training


def test_unwritable_subset_output_is_one_line(tmp_path, fmnist, unwritable, capsys):
    code, out, err = _run_main(capsys, ["data", "subset", "--data-dir", str(fmnist), "--per-class", "1",
                                        "--out", str(unwritable / "subset.safetensors")])
    assert code == 1
    _one_error_line(err)


def test_unexpected_failures_are_one_line_and_debug_shows_the_traceback(tmp_path, monkeypatch, capsys):
    import robench.zoo

    def broken(*a, **k):
        raise RuntimeError("something nobody foresaw\nsecond line")

    monkeypatch.setattr(robench.zoo, "list_cards", broken)
    code, _, err = _run_main(capsys, ["zoo", "list", "--zoo", str(tmp_path)])
    assert code == 1
    line = _one_error_line(err)
    assert "RuntimeError: something nobody foresaw" in line and "--debug" in line
    with pytest.raises(RuntimeError, match="nobody foresaw"):
        main(["--debug", "zoo", "list", "--zoo", str(tmp_path)])


def test_debug_prints_a_traceback_from_the_real_command(tmp_path, capsys):
    code, out, err = _run_main(capsys, ["zoo", "show", "nothing", "--zoo", str(tmp_path / "zoo")])
    assert code == 2 and _one_error_line(err).startswith("Error: --model 'nothing'")
    code, out, err = _finish(_robench(["--debug", "zoo", "show", "nothing", "--zoo", str(tmp_path / "zoo")],
                                      tmp_path))
    assert code == 1 and "Traceback (most recent call last)" in err and "UnknownName" in err


def test_importing_into_an_unwritable_zoo_is_one_line(tmp_path, unwritable, capsys):
    from robench.data import DATASETS
    from robench.snn.models import ModelConfig, build_model

    f = tmp_path / "mine.pt"
    cfg = ModelConfig(arch="vgg5", T=2, width=0.125, fc=16, **DATASETS.get("fashion-mnist").model_kwargs())
    torch.save(build_model(cfg).state_dict(), f)
    code, out, err = _run_main(capsys, ["zoo", "import", str(f), "--id", "mine", "-T", "2", "--width", "0.125",
                                        "--fc", "16", "--zoo", str(unwritable)])
    assert code == 1 and out == ""
    assert f"cannot write zoo entry 'mine' to '{unwritable}'" in _one_error_line(err)
