"""MPPD regulariser, robust loss, recipes, TrainConfig checks and exact resume (docs/method.md §3, §4)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_tiny_data

from robench.errors import BadSpec, Interrupted, UnknownName
from robench.snn.models import build_model
from robench.train import RECIPES, TrainConfig, mppd_penalty, mppd_sequence, robust_loss, train

# ------------------------------------------------------------------------------------------------- MPPD
# tau = 0.5, two elements, dI = I(x') - I(x):
#   e1: dI = (0.4, 0.2)  -> du = (0.4, 0.5*0.4 + 0.2) = (0.4, 0.4)
#   e2: dI = (-1.0, 0.6) -> du = (-1.0, -0.5 + 0.6) = (-1.0, 0.1)
#   V = (0.16 + 0.16 + 1.0 + 0.01) / 4 = 0.3325
CLEAN = torch.tensor([[0.1, 0.5], [0.3, -0.2]], dtype=torch.float64)  # [T=2, 2 elements]
PERT = CLEAN + torch.tensor([[0.4, -1.0], [0.2, 0.6]], dtype=torch.float64)


def test_mppd_sequence_by_hand():
    du = mppd_sequence(PERT - CLEAN, tau=0.5)
    assert torch.allclose(du, torch.tensor([[0.4, -1.0], [0.4, 0.1]], dtype=torch.float64))


def test_mppd_penalty_by_hand_and_clean_currents_detached():
    clean = CLEAN.clone().requires_grad_(True)
    pert = PERT.clone().requires_grad_(True)
    v = mppd_penalty(clean, pert, tau=0.5)
    assert v.item() == pytest.approx(0.3325)
    v.backward()
    assert clean.grad is None  # no gradient reaches the clean currents
    # dV/dI'[t] = (2/4) * sum_{t' >= t} tau^(t'-t) du[t']:
    #   e1: (0.5*(0.4 + 0.5*0.4), 0.5*0.4) = (0.3, 0.2) ; e2: (0.5*(-1.0 + 0.5*0.1), 0.5*0.1) = (-0.475, 0.05)
    assert torch.allclose(pert.grad, torch.tensor([[0.3, -0.475], [0.2, 0.05]], dtype=torch.float64))


# -------------------------------------------------------------------------------------------- robust loss
def _ce_by_hand(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.logsumexp(z, 0) - z[k] for z, k in zip(logits, y, strict=True)]).mean()


def _v_by_hand(clean: torch.Tensor, pert: torch.Tensor, tau: float) -> float:
    d = (pert - clean).flatten(1)  # [T, elements]
    total, du = 0.0, torch.zeros(d.shape[1], dtype=torch.float64)
    for t in range(d.shape[0]):
        du = tau * du + d[t].double()
        total += float((du**2).sum())
    return total / d.numel()


@pytest.mark.parametrize("kappa, alpha", [(0.5, 1.0), (0.3, 2.5), (1.0, 0.0)])
def test_robust_loss_by_hand(tiny_model, tiny_data, kappa, alpha):
    x, y = tiny_data[0][:6], tiny_data[1][:6]
    xp = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    neuron = tiny_model.last_neuron()
    neuron.record = True
    logits = tiny_model(x).detach()
    clean_cur = neuron.recorded.detach()
    logits_p = tiny_model(xp).detach()
    pert_cur = neuron.recorded.detach()
    neuron.record = False
    v = _v_by_hand(clean_cur, pert_cur, neuron.tau) if alpha > 0 else 0.0
    expect = kappa * _ce_by_hand(logits, y) + (1 - kappa) * _ce_by_hand(logits_p, y) + alpha * v
    loss, out, v_got = robust_loss(tiny_model, x, xp, y, kappa, alpha)
    assert loss.item() == pytest.approx(expect.item(), rel=1e-5)
    assert v_got.item() == pytest.approx(v, rel=1e-5, abs=1e-12)
    assert torch.equal(out.detach(), logits)
    assert neuron.record is False and neuron.recorded is None  # nothing kept after the loss


def test_robust_loss_without_perturbation_is_plain_ce(tiny_model, tiny_data):
    x, y = tiny_data[0][:6], tiny_data[1][:6]
    loss, logits, v = robust_loss(tiny_model, x, None, y, kappa=0.5, alpha=0.0)
    assert loss.item() == pytest.approx(_ce_by_hand(logits.detach(), y).item(), rel=1e-6)
    assert v.item() == 0.0


# ------------------------------------------------------------------------------------------------ recipes
def test_recipe_names():
    assert RECIPES.names() == ["clean", "gaussian", "fgsm-at", "pgd-at", "rat"]


def test_clean_recipe_has_no_perturbed_input(tiny_model, tiny_data):
    assert RECIPES.get("clean")(tiny_model, *tiny_data, TrainConfig()) is None


def test_gaussian_is_x_plus_sigma_noise_not_clipped(tiny_model, tiny_data):
    x, y = tiny_data
    cfg = TrainConfig(recipe="gaussian", sigma=0.2)
    xp = RECIPES.get("gaussian")(tiny_model, x, y, cfg)
    noise = (xp - x) / 0.2
    assert xp.min() < 0 and xp.max() > 1  # not clipped to [0, 1] (docs/method.md §4)
    assert abs(noise.mean().item()) < 0.1 and abs(noise.std().item() - 1) < 0.1


@pytest.fixture
def warm_model(tiny_model, tiny_data):
    """The tiny model with BN running stats set from the data, so eval-mode input gradients are non-zero."""
    for m in tiny_model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average: one pass sets the stats to the batch's
    tiny_model.train()
    with torch.no_grad():
        tiny_model(tiny_data[0])
    return tiny_model


def _bn_stats(model) -> list[torch.Tensor]:
    return [b.clone() for n, b in model.named_buffers() if "running" in n]


def test_fgsm_at_is_one_signed_step_from_a_noisy_start(warm_model, tiny_data):
    tiny_model = warm_model
    x, y = tiny_data
    eps = 4 / 255
    tiny_model.train()
    stats = _bn_stats(tiny_model)
    torch.manual_seed(3)
    xp = RECIPES.get("fgsm-at")(tiny_model, x, y, TrainConfig(recipe="fgsm-at", eps=eps))
    torch.manual_seed(3)
    x0 = (x + 0.001 * torch.randn_like(x)).clamp(0, 1)  # the recipe's start point
    assert tiny_model.training  # computed in eval mode, training mode restored
    assert all(torch.equal(a, b) for a, b in zip(stats, _bn_stats(tiny_model), strict=True))
    assert 0 <= xp.min() and xp.max() <= 1
    assert ((xp - x0).abs() <= eps + 1e-6).all()
    interior = (x0 > eps) & (x0 < 1 - eps)
    steps = (xp - x0).abs()[interior]
    assert (steps > eps - 1e-6).float().mean() > 0.9  # a full step wherever the gradient is non-zero
    assert ((xp - x).abs() <= eps + 0.001 * 6).all()
    assert not xp.requires_grad


@pytest.mark.parametrize("step", [None, 0.01])
def test_pgd_at_stays_within_eps_and_image_range(warm_model, tiny_data, step):
    tiny_model = warm_model
    x, y = tiny_data
    eps = 8 / 255
    cfg = TrainConfig(recipe="pgd-at", eps=eps, pgd_steps=3, pgd_step=step)
    xp = RECIPES.get("pgd-at")(tiny_model, x, y, cfg)
    assert ((xp - x).abs() <= eps + 1e-6).all()
    assert 0 <= xp.min() and xp.max() <= 1
    assert (xp - x).abs().max() > eps / 2  # it moved


# ------------------------------------------------------------------------------------------- TrainConfig
@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(recipe="fgsm-at", eps=-0.01), "--eps"),
        (dict(recipe="gaussian", sigma=-0.1), "--sigma"),
        (dict(recipe="gaussian", alpha=-1.0), "--alpha"),
        (dict(recipe="gaussian", alpha=math.nan), "--alpha"),
        (dict(recipe="gaussian", kappa=-0.1), "--kappa"),
        (dict(recipe="gaussian", kappa=1.5), "--kappa"),
        (dict(recipe="clean", alpha=1.0), "--alpha > 0 needs a perturbed input"),
        (dict(epochs=0), "--epochs"),
        (dict(lr=0.0), "--lr"),
        (dict(batch_size=0), "--batch-size"),
        (dict(limit=0), "--limit"),
    ],
)
def test_train_config_rejects_bad_values(kw, match):
    with pytest.raises(BadSpec, match=match):
        TrainConfig(**kw)


def test_train_config_unknown_recipe_lists_choices():
    with pytest.raises(UnknownName, match="clean, gaussian, fgsm-at, pgd-at, rat"):
        TrainConfig(recipe="trades")


def test_train_config_round_trip():
    cfg = TrainConfig(recipe="gaussian", alpha=1.0, kappa=0.25)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(BadSpec, match="unknown training config keys"):
        TrainConfig.from_dict({**cfg.to_dict(), "rho": 1})


# ------------------------------------------------------------------------------------------------ resume
def _fresh(tiny_cfg):
    torch.manual_seed(0)
    return build_model(tiny_cfg)


def _stop_at(kind: str, when: int):
    """A progress callback that presses Ctrl-C at the ``when``-th event of ``kind``."""
    seen = {"n": 0}

    def progress(ev: dict) -> None:
        if ev["kind"] == kind:
            seen["n"] += 1
            if seen["n"] == when:
                raise KeyboardInterrupt

    return progress


@pytest.mark.parametrize("kind, when, every", [("epoch", 1, 0), ("step", 3, 1)])
def test_resumed_run_ends_with_the_same_weights(tiny_cfg, tmp_path, kind, when, every):
    data, test = make_tiny_data(48), make_tiny_data(16, 1)
    cfg = TrainConfig(recipe="gaussian", alpha=1.0, sigma=0.1, epochs=2, batch_size=16, ckpt_every=every)
    ref = _fresh(tiny_cfg)
    train(ref, cfg, data, test)

    run = tmp_path / "run"
    model = _fresh(tiny_cfg)
    with pytest.raises(Interrupted, match="--resume"):
        train(model, cfg, data, test, run_dir=run, progress=_stop_at(kind, when))
    assert (run / "state.pt").exists()
    torch.manual_seed(123)  # a different process state must not matter
    resumed = _fresh(tiny_cfg)
    res = train(resumed, cfg, data, test, run_dir=run, resume=True)
    assert [h["epoch"] for h in res.history] == [1, 2]
    for (k, a), b in zip(ref.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_resume_with_other_options_is_refused(tiny_cfg, tmp_path):
    data = make_tiny_data(32)
    run = tmp_path / "run"
    train(_fresh(tiny_cfg), TrainConfig(epochs=1, batch_size=16), data, run_dir=run)
    with pytest.raises(BadSpec, match="other options"):
        train(_fresh(tiny_cfg), TrainConfig(epochs=1, batch_size=16, lr=0.05), data, run_dir=run, resume=True)
