"""Training resume semantics: `--resume` with nothing to resume is refused, and rerunning an interrupted run
without it is refused (unless `--overwrite`), its saved state kept."""

from __future__ import annotations

import pytest
import torch
from cli_helpers import one_line, run_main
from conftest import TINY, make_tiny_data
from test_cli_train import TINY_OPTS, _fake_load

import robench.train.job
from robench.errors import BadSpec, UsageError
from robench.snn.models import ModelConfig, build_model
from robench.train import TrainConfig, train


def _tiny_model():
    torch.manual_seed(0)
    return build_model(ModelConfig(**TINY))


def test_resume_without_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(BadSpec, match="--resume.*no saved state"):
        train(_tiny_model(), TrainConfig(epochs=1, batch_size=16), make_tiny_data(32), run_dir=tmp_path / "run",
              resume=True)
    assert not (tmp_path / "run").exists()


def _interrupt_after(steps: int):
    seen = {"n": 0}

    def progress(ev: dict) -> None:
        if ev["kind"] == "step":
            seen["n"] += 1
            if seen["n"] == steps:
                raise KeyboardInterrupt

    return progress


def test_rerunning_an_interrupted_run_without_resume_is_refused_and_keeps_its_state(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(robench.train.job, "load_data", _fake_load)
    zoo, runs = tmp_path / "zoo", tmp_path / "runs"
    args = ["train", "--epochs", "2", "--ckpt-every", "1", *TINY_OPTS, "--zoo", str(zoo), "--runs", str(runs)]
    code, _, err = run_main(capsys, [*args, "--resume"])  # nothing to resume
    assert code == 2 and "--resume" in one_line(err) and "no saved state" in err and not runs.exists()
    real = robench.train.job.train
    monkeypatch.setattr(robench.train.job, "train", lambda *a, **k: real(*a[:7], _interrupt_after(3), *a[8:], **k))
    code, _, err = run_main(capsys, args)
    assert code == 130
    state = runs / "fmnist-vgg5-lif-clean" / "state.pt"
    before = state.read_bytes()
    monkeypatch.setattr(robench.train.job, "train", real)
    code, _, err = run_main(capsys, args)  # the same command again, without --resume
    assert code == 2 and "--resume" in one_line(err) and "--overwrite" in err
    assert state.read_bytes() == before and not zoo.exists()
    code, out, err = run_main(capsys, [*args, "--resume"])
    assert code == 0 and "saved fmnist-vgg5-lif-clean" in out, err


def test_overwrite_starts_an_interrupted_run_over(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(robench.train.job, "load_data", _fake_load)
    run = tmp_path / "run"
    with pytest.raises(Exception, match="interrupted"):
        train(_tiny_model(), TrainConfig(epochs=2, batch_size=16, ckpt_every=1), make_tiny_data(32), run_dir=run,
              progress=_interrupt_after(2))
    with pytest.raises(UsageError, match="--overwrite"):
        train(_tiny_model(), TrainConfig(epochs=2, batch_size=16, ckpt_every=1), make_tiny_data(32), run_dir=run)
    res = train(_tiny_model(), TrainConfig(epochs=2, batch_size=16, ckpt_every=1), make_tiny_data(32), run_dir=run,
                overwrite=True)
    assert [h["epoch"] for h in res.history] == [1, 2]
