"""Poisson (Bernoulli) input coding, its gradient estimators, and averaging over draws (EOT)."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY
from torch import nn

from robench.errors import BadSpec
from robench.snn.encoding import (
    STE_WIDTH,
    Averaged,
    PoissonEncoder,
    check_draws,
    fresh_draws,
    is_stochastic,
    poisson_spikes,
    sampler,
)
from robench.snn.models import ModelConfig, build_model


class Toy(nn.Module):
    """logits = W s_bar: a linear readout of the mean Poisson spike train, ``[B, 4] -> [B, 2]``."""

    def __init__(self, T: int = 1) -> None:
        super().__init__()
        self.enc = PoissonEncoder(T)
        self.register_buffer("W", torch.tensor([[1.0, -2.0, 0.5, 3.0], [0.0, 1.0, -1.0, 2.0]]))

    def forward(self, x):
        return self.enc(x).mean(0) @ self.W.T


def grad_of(model, x):
    x = x.clone().requires_grad_(True)
    model(x)[:, 0].sum().backward()
    return x.grad


def test_spikes_are_bernoulli_with_the_pixel_as_probability():
    torch.manual_seed(0)
    p = torch.tensor([[0.0, 0.2, 0.7, 1.0]])
    s = poisson_spikes(p, 20000)
    assert set(s.unique().tolist()) <= {0.0, 1.0} and s.shape == (20000, 1, 4)
    assert torch.allclose(s.mean(0), p, atol=0.01)
    assert s[:, 0, 0].sum() == 0 and s[:, 0, 3].sum() == 20000


def test_rate_gradient_is_the_gradient_of_the_expectation_on_every_draw():
    toy = Toy()
    x = torch.tensor([[0.3, 0.5, 0.05, 0.9]])
    torch.manual_seed(0)
    assert torch.equal(grad_of(toy, x), toy.W[:1])  # d E[W s]/dx = W, whatever the draw


def test_eot_gradient_of_the_ste_matches_its_analytic_expectation():
    toy = Toy()
    x = torch.tensor([[0.3, 0.5, 0.05, 0.9]])
    lo, hi = (x - STE_WIDTH / 2).clamp(min=0), (x + STE_WIDTH / 2).clamp(max=1)
    expected = toy.W[:1] * (hi - lo) / STE_WIDTH  # E_u[1(|p - u| < w/2)] / w
    torch.manual_seed(0)
    with sampler(toy, "ste"):
        one = grad_of(toy, x)
        avg = grad_of(Averaged(toy, 4000), x)
    assert set((one / toy.W[:1]).unique().tolist()) <= {0.0, 1 / STE_WIDTH}  # one draw: 0 or 1/w per pixel
    assert torch.allclose(avg, expected, atol=0.06)
    assert toy.enc.how == "rate"  # restored after the block


def test_averaged_logits_are_the_mean_of_the_draws():
    toy = Toy(T=3)
    x = torch.rand(5, 4)
    torch.manual_seed(3)
    draws = [toy(x) for _ in range(6)]
    torch.manual_seed(3)
    assert torch.allclose(Averaged(toy, 6)(x), torch.stack(draws).mean(0))


def test_fresh_draws_are_seeded_and_leave_the_callers_stream_untouched():
    torch.manual_seed(5)
    before = torch.get_rng_state()
    with fresh_draws(11):
        a = torch.rand(3)
    assert torch.equal(torch.get_rng_state(), before)
    with fresh_draws(11):
        assert torch.equal(torch.rand(3), a)


def test_a_poisson_model_is_stochastic_and_reproducible_under_a_seed():
    model = build_model(ModelConfig(**{**TINY, "encoding": "poisson", "v_th": 0.2})).eval()
    assert is_stochastic(model) and not is_stochastic(build_model(ModelConfig(**TINY)))
    x = torch.rand(4, 1, 8, 8)
    with fresh_draws(0):
        a = model(x)
    with fresh_draws(0):
        b = model(x)
    assert torch.equal(a, b) and not torch.equal(model(x), model(x))


def test_bad_draw_counts_and_encodings_are_refused():
    for k in (0, -1, 1.5, True):
        with pytest.raises(BadSpec, match="must be an integer >= 1"):
            check_draws(k, "--eot")
    with pytest.raises(BadSpec, match="--encoding 'rate'; choose from: direct, poisson"):
        ModelConfig(**{**TINY, "encoding": "rate"})
    with pytest.raises(BadSpec, match="--sampler 'x'"):
        poisson_spikes(torch.rand(1, 4), 2, "x")


def test_direct_cards_keep_their_config_keys():
    assert "encoding" not in ModelConfig(**TINY).to_dict()
    assert ModelConfig(**{**TINY, "encoding": "poisson"}).to_dict()["encoding"] == "poisson"
