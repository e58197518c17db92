"""SA-PGD (docs/evaluation.md §3): schedule, start, update rule, budget at every iterate, eps = 0, seeding, strength."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from conftest import ATTACK_EPS as EPS

import robench.attacks.iterate as iterate
from robench.attacks import SAPGD, AttackSpec, build
from robench.attacks.sapgd import checkpoints, surface_start

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads only contend


def robust(model, x_adv, y):
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def test_checkpoints_follow_apgds_schedule():
    assert sorted(checkpoints(100)) == [22, 41, 57, 70, 80, 87, 93, 99]
    p, prev, want = 0.22, 0.0, []  # p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)
    while p <= 1:
        want.append(round(p * 1000))
        p, prev = p + max(p - prev - 0.03, 0.06), p
    assert sorted(checkpoints(1000)) == want
    assert sorted(checkpoints(10)) == list(range(2, 11)) and checkpoints(1) == frozenset({1})  # gaps of >= 1


def test_start_is_on_the_surface_of_the_ball():
    torch.manual_seed(0)
    x = torch.full((5, 1, 4, 4), 0.5)
    x0 = surface_start(x, 0.1)
    dist = (x0 - x).abs().flatten(1).amax(1)
    assert torch.allclose(dist, torch.full((5,), 0.1))


def test_first_step_is_a_sign_step_and_a_zero_gradient_moves_nothing():
    g = torch.tensor([[3.0, -1.0, 0.0, 0.5]]).view(1, 1, 2, 2)
    m, v = SAPGD._moments(torch.cat([g, torch.zeros_like(g)]), torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 2, 2))
    step = (0.1 * m / (v.sqrt() + 1e-12)).clamp(-0.1, 0.1)
    assert torch.allclose(step[0], 0.1 * g.sign()[0]) and torch.equal(step[1], torch.zeros(1, 2, 2))
    assert torch.isfinite(m).all() and torch.isfinite(v).all()
    mean_abs = g.abs().mean()
    assert torch.allclose(m[0], (g / mean_abs)[0]) and torch.allclose(v[0], (g**2 / (g**2).mean())[0])


def test_every_iterate_stays_in_the_ball_and_range_and_broken_samples_stop(monkeypatch, attacked):
    model, x, y = attacked
    seen = []
    update = iterate.BestIterate.update

    def spy(self, x_i, idx, logits=None):
        seen.append((x_i.clone(), idx.clone()))
        return update(self, x_i, idx, logits)

    monkeypatch.setattr(iterate.BestIterate, "update", spy)
    torch.manual_seed(0)
    adv = build(AttackSpec("sa-pgd", eps=EPS, steps=12, restarts=2), model)(x, y)
    assert len(seen) >= 13  # x_0 .. x_12 of the first restart, then the second one on the survivors
    for x_i, idx in seen:
        assert x_i.min() >= 0 and x_i.max() <= 1 and (x_i - x[idx]).abs().max() <= EPS + 1e-6
    sizes = [len(idx) for _, idx in seen[:13]]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0]  # broken samples leave the batch
    assert (adv - x).abs().max() <= EPS + 1e-6 and adv.min() >= 0 and adv.max() <= 1


def test_eps_zero_returns_the_clean_images(attacked):
    model, x, y = attacked
    assert torch.equal(build(AttackSpec("sa-pgd", eps=0.0, steps=3), model)(x, y), x)
    torch.manual_seed(0)
    assert torch.equal(SAPGD(model, 0.0, steps=3)(x, y), x)  # the class itself moves nothing either


def test_deterministic_for_a_seed(attacked):
    model, x, y = attacked
    fn = build(AttackSpec("sa-pgd", eps=EPS, steps=8), model)
    runs = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        runs.append(fn(x, y))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("steps", [50])
def test_at_least_as_strong_as_final_iterate_pgd_with_the_same_steps(steps, attacked):
    model, x, y = attacked
    torch.manual_seed(0)
    pgd = robust(model, torchattacks.PGD(model, eps=EPS, alpha=EPS / 4, steps=steps)(x, y), y)
    torch.manual_seed(0)
    sa = robust(model, build(AttackSpec("sa-pgd", eps=EPS, steps=steps), model)(x, y), y)
    assert sa.sum() <= pgd.sum() < len(y)
    assert sa.sum() < robust(model, x, y).sum()  # it breaks something
