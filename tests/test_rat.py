"""The `rat` recipe (docs/method.md §4): the orthogonality step by hand, its options, a tiny training, resume, card."""

from __future__ import annotations

import json

import pytest
import torch
from cli_helpers import one_line
from cli_helpers import run_main as _run_main
from conftest import make_tiny_data
from test_cli_train import TINY_OPTS, _fake_load
from torch import nn

import robench.train.job
from robench.errors import BadSpec, IntegrityError, Interrupted
from robench.snn.models import build_model
from robench.train import RECIPES, TrainConfig, job_from_options, orthogonal_retraction, orthogonality_step, train
from robench.train.loop import _same_config
from robench.zoo import Card

F64 = torch.float64


# ------------------------------------------------------------------------------------- the step by hand
@pytest.mark.parametrize("w, beta, expect", [
    # W W^T W = diag(1, 8): 1.1 * diag(1, 2) - 0.1 * diag(1, 8) = diag(1.0, 1.4)
    ([[1.0, 0.0], [0.0, 2.0]], 0.1, [[1.0, 0.0], [0.0, 1.4]]),
    # W W^T = [[5, 2], [2, 1]], W W^T W = [[5, 12], [2, 5]]: 1.1 W - 0.1 * that
    ([[1.0, 2.0], [0.0, 1.0]], 0.1, [[0.6, 1.0], [-0.2, 0.6]]),
    # one row [1, 1]: W W^T = 2, so 1.5 * [1, 1] - 0.5 * [2, 2]
    ([[1.0, 1.0]], 0.5, [[0.5, 0.5]]),
    # orthonormal rows are a fixed point
    ([[0.6, 0.8], [-0.8, 0.6]], 0.3, [[0.6, 0.8], [-0.8, 0.6]]),
])
def test_orthogonal_retraction_by_hand(w, beta, expect):
    got = orthogonal_retraction(torch.tensor(w, dtype=F64), beta)
    assert torch.allclose(got, torch.tensor(expect, dtype=F64), atol=1e-12)


def test_the_step_touches_conv_and_linear_weights_only():
    net = nn.Sequential(nn.Conv2d(1, 2, (1, 2), bias=False), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 1))
    net = net.double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=F64).view(2, 1, 1, 2))  # [out, in, kh, kw]
        net[1].weight.fill_(3.0)
        net[3].weight.copy_(torch.tensor([[1.0, 1.0]], dtype=F64))
        net[3].bias.fill_(0.5)
    orthogonality_step(net, 0.1)
    assert torch.allclose(net[0].weight.view(2, 2), torch.tensor([[0.6, 1.0], [-0.2, 0.6]], dtype=F64))
    assert torch.allclose(net[3].weight, torch.tensor([[0.9, 0.9]], dtype=F64))  # 1.1 - 0.1 * 2
    assert (net[1].weight == 3.0).all() and (net[3].bias == 0.5).all()  # norms and biases untouched


def test_rat_perturbs_as_fgsm_at(tiny_model, tiny_data):
    cfg = TrainConfig(recipe="rat")
    torch.manual_seed(5)
    a = RECIPES.get("rat")(tiny_model, *tiny_data, cfg)
    torch.manual_seed(5)
    b = RECIPES.get("fgsm-at")(tiny_model, *tiny_data, TrainConfig(recipe="fgsm-at"))
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------- options
def test_rat_defaults_no_weight_decay_and_vgg_strength():
    cfg = TrainConfig(recipe="rat")
    assert cfg.weight_decay == 0.0 and cfg.rat_beta == 0.001
    plain = TrainConfig(recipe="fgsm-at")
    assert plain.weight_decay == 5e-4 and plain.rat_beta is None
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("kw, match", [
    (dict(recipe="rat", weight_decay=5e-4), "--weight-decay 0.0005 with --recipe rat"),
    (dict(recipe="gaussian", rat_beta=0.01), "--rat-beta 0.01 needs --recipe rat"),
    (dict(recipe="rat", rat_beta=-0.1), r"--rat-beta -0.1; must be in \[0, 1\)"),
    (dict(recipe="rat", rat_beta=float("nan")), "--rat-beta nan"),
])
def test_rat_options_are_checked(kw, match):
    with pytest.raises(BadSpec, match=match):
        TrainConfig(**kw)


@pytest.mark.parametrize("arch, given, expect", [("vgg11", None, 0.001), ("vgg5", None, 0.001),
                                                 ("wrn16", None, 0.004), ("wrn16", 0.002, 0.002)])
def test_the_strength_defaults_per_arch(arch, given, expect):
    job = job_from_options({"arch": arch, "recipe": "rat", "rat_beta": given, "weight_decay": None})
    assert job.train.rat_beta == expect and job.train.weight_decay == 0.0


def test_rat_with_mppd_is_accepted():
    assert TrainConfig(recipe="rat", alpha=1.0).alpha == 1.0


# ------------------------------------------------------------------------------------------- training
def test_one_rat_step_is_fgsm_at_without_decay_then_the_step(tiny_cfg):
    data = make_tiny_data(16)
    torch.manual_seed(0)
    rat = build_model(tiny_cfg)
    torch.manual_seed(0)
    ref = build_model(tiny_cfg)
    train(rat, TrainConfig(recipe="rat", rat_beta=0.01, batch_size=16), data)
    train(ref, TrainConfig(recipe="fgsm-at", weight_decay=0.0, batch_size=16), data)
    orthogonality_step(ref, 0.01)
    for (k, a), b in zip(rat.state_dict().items(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_rat_resumes_to_the_same_weights(tiny_cfg, tmp_path):
    data = make_tiny_data(48)
    cfg = TrainConfig(recipe="rat", alpha=1.0, rat_beta=0.01, epochs=2, batch_size=16, ckpt_every=1)
    torch.manual_seed(0)
    ref = build_model(tiny_cfg)
    train(ref, cfg, data)
    run = tmp_path / "run"
    torch.manual_seed(0)
    model = build_model(tiny_cfg)
    stop = {"n": 0}

    def progress(ev):
        stop["n"] += ev["kind"] == "step"
        if stop["n"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        train(model, cfg, data, run_dir=run, progress=progress)
    torch.manual_seed(123)
    resumed = build_model(tiny_cfg)
    train(resumed, cfg, data, run_dir=run, resume=True)
    for (k, a), b in zip(ref.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_a_checkpoint_from_before_rat_still_resumes():
    cfg = TrainConfig(recipe="gaussian", alpha=1.0)
    old = {k: v for k, v in cfg.to_dict().items() if k != "rat_beta"}  # saved before the field existed
    assert _same_config(old, cfg)
    assert not _same_config({**old, "lr": 0.05}, cfg)
    assert not _same_config({**old, "rho": 1}, cfg) and not _same_config(None, cfg)


# ------------------------------------------------------------------------------------------ card and CLI
def test_cli_trains_a_rat_entry_and_the_card_records_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(robench.train.job, "load_data", _fake_load)
    zoo, runs = tmp_path / "zoo", tmp_path / "runs"
    args = ["train", "--neuron", "stable", "--recipe", "rat", "--alpha", "1", *TINY_OPTS, "--zoo", str(zoo),
            "--runs", str(runs)]
    code, out, err = _run_main(capsys, args)
    assert code == 0, err
    card = json.loads((zoo / "fmnist-vgg5-stable-rat.json").read_text())
    assert card["recipe"]["recipe"] == "rat" and card["recipe"]["rat_beta"] == 0.001
    assert card["recipe"]["weight_decay"] == 0.0 and card["recipe"]["alpha"] == 1.0
    code, out, _ = _run_main(capsys, ["zoo", "verify", "--zoo", str(zoo)])
    assert code == 0 and "ok" in out
    code, out, err = _run_main(capsys, [*args, "--resume", "--overwrite"])  # resume of a finished run: same options
    assert code == 0, err
    bad = {**card, "recipe": {**card["recipe"], "weight_decay": 5e-4}}
    with pytest.raises(IntegrityError, match="rat trains without weight decay"):
        Card.validate(bad)


@pytest.mark.parametrize("extra, message", [
    (["--recipe", "gaussian", "--rat-beta", "0.01"], "--rat-beta 0.01 needs --recipe rat"),
    (["--recipe", "rat", "--weight-decay", "5e-4"], "--weight-decay 0.0005 with --recipe rat"),
])
def test_bad_rat_options_are_one_line(tmp_path, capsys, extra, message):
    zoo, runs = tmp_path / "zoo", tmp_path / "runs"
    code, out, err = _run_main(capsys, ["train", *extra, "--zoo", str(zoo), "--runs", str(runs)])
    assert code == 2 and message in one_line(err) and out == ""
    assert not zoo.exists() and not runs.exists()
