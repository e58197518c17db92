"""Threat models by norm: L2 (and L1) budgets through parsing, attacks, projection and the tracker."""

from __future__ import annotations

import pytest
import torch
import torchattacks

from robench.attacks import AttackSpec, build, specs_from
from robench.attacks.iterate import BestIterate
from robench.attacks.norms import FGM, check_norm, dist, normalise, project, sphere_start, uniform_start
from robench.eps import parse_eps
from robench.errors import BadSpec, IntegrityError

L2_ATTACKS = ("fgsm", "pgd", "pgd-best", "sa-pgd", "apgd-ce", "apgd-dlr", "apgd-t", "square", "autoattack")


def test_norm_names_parse_case_insensitively_and_unknown_ones_list_the_choices():
    assert [check_norm(n) for n in ("linf", "L2", "l1")] == ["Linf", "L2", "L1"]
    with pytest.raises(BadSpec, match="--norm 'L3'; choose from: Linf, L2, L1"):
        check_norm("L3")


def test_l2_projection_lands_in_the_ball_and_in_range():
    torch.manual_seed(0)
    x = torch.rand(6, 1, 8, 8)
    far = x + 3 * torch.randn_like(x)
    p = project(far, x, 0.7, "L2")
    assert (dist(p, x, "L2") <= 0.7 + 1e-6).all() and p.min() >= 0 and p.max() <= 1
    inside = (x + 0.01 * torch.randn_like(x)).clamp(0, 1)
    assert torch.allclose(project(inside, x, 0.7, "L2"), inside)  # already in the ball: unchanged
    assert torch.equal(project(far, x, 0.1, "Linf"), (x + (far - x).clamp(-0.1, 0.1)).clamp(0, 1))


def test_l2_steps_and_starts_have_the_right_lengths():
    torch.manual_seed(1)
    x = torch.rand(5, 1, 8, 8) * 0.2 + 0.4  # far from the box: no clipping
    g = torch.randn_like(x)
    assert torch.allclose(dist(normalise(g, "L2"), torch.zeros_like(g), "L2"), torch.ones(5, dtype=torch.float64))
    assert torch.allclose(dist(sphere_start(x, 0.5, "L2"), x, "L2"), torch.full((5,), 0.5, dtype=torch.float64))
    assert (dist(uniform_start(x, 0.5, "L2"), x, "L2") <= 0.5 + 1e-6).all()


def test_l2_budgets_parse_beyond_one_but_linf_ones_do_not():
    assert [s for _, s in parse_eps("0.5,1.5", limit=1000)] == ["0.5", "1.5"]
    with pytest.raises(BadSpec, match="out of range"):
        parse_eps("1.5")
    specs = specs_from(["pgd-best"], eps="1.5", norm="L2")
    assert specs[0].eps == 1.5 and specs[0].norm == "L2" and specs[0].step_size == 1.5 / 4
    assert specs_from(["pgd"], norm="L2")[0].eps == 1.0  # the norm's default budget
    with pytest.raises(BadSpec, match="out of range"):
        specs_from(["pgd"], eps="1.5")


@pytest.mark.parametrize("name", ["bim"])
def test_an_attack_without_the_norm_is_refused_listing_those_with_it(name):
    with pytest.raises(BadSpec, match=r"--norm L2: bim has no L2 version; in L2: fgsm, pgd"):
        AttackSpec(name, eps=1.0, norm="L2")
    with pytest.raises(BadSpec, match="pgd-best has no L1 version"):
        AttackSpec("pgd-best", eps=5.0, norm="L1")
    with pytest.raises(BadSpec, match="L-inf preset"):
        specs_from(suite_name="quick", norm="L2")


def test_the_norm_is_part_of_the_params_and_so_of_the_key():
    a, b = AttackSpec("pgd-best", eps=0.5, norm="Linf"), AttackSpec("pgd-best", eps=0.5, norm="L2")
    assert a.params()["norm"] == "Linf" and b.params()["norm"] == "L2" and a.params_json() != b.params_json()


def test_the_tracker_refuses_an_iterate_outside_the_l2_ball(attacked):
    model, x, y = attacked
    x, y = x[:4], y[:4]
    t = BestIterate(model, x, y, 0.5, "L2")
    inside = project(x + torch.randn_like(x), x, 0.5, "L2")
    t.update(inside, torch.arange(4))
    outside = project(x + torch.randn_like(x), x, 0.9, "L2")  # within 0.5 in L-inf, not in L2
    assert (dist(outside, x, "Linf") <= 0.5).all()
    with pytest.raises(IntegrityError, match="L2 distance"):
        t.update(outside, torch.arange(4))


@pytest.mark.parametrize("name", L2_ATTACKS)
def test_every_l2_attack_stays_in_the_l2_ball_and_zero_budget_is_clean(name, attacked):
    model, x, y = attacked
    x, y = x[:12], y[:12]
    kw = {"queries": 30} if name == "square" else {"steps": 5} if name in ("pgd", "pgd-best", "sa-pgd", "apgd-ce",
                                                                               "apgd-dlr", "apgd-t") else {}
    torch.manual_seed(0)
    adv = build(AttackSpec(name, eps=1.0, norm="L2", **kw), model)(x, y)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    assert (dist(adv, x, "L2") <= 1.0 + 1e-5).all()
    assert torch.equal(build(AttackSpec(name, eps=0.0, norm="L2", **kw), model)(x, y), x)


def test_l2_attacks_break_samples_and_pgd_is_torchattacks_pgdl2(attacked):
    model, x, y = attacked
    torch.manual_seed(0)
    mine = build(AttackSpec("pgd", eps=1.5, norm="L2", steps=5), model)
    assert isinstance(mine, torchattacks.PGDL2) and mine.eps == 1.5 and mine.alpha == 1.5 / 4
    adv = build(AttackSpec("pgd-best", eps=1.5, norm="L2", steps=20), model)(x, y)
    with torch.no_grad():
        clean, broken = (model(x).argmax(1) == y), (model(adv).argmax(1) != y)
    assert (broken & clean).sum() >= 5


def test_fgm_takes_one_step_of_length_eps_along_the_gradient(attacked):
    model, x, y = attacked
    x = x[:4] * 0.2 + 0.4  # no clipping at the box
    adv = FGM(model, 0.3)(x, y[:4])
    assert torch.allclose(dist(adv, x, "L2"), torch.full((4,), 0.3, dtype=torch.float64), atol=1e-5)


def test_l1_is_accepted_by_the_official_attacks_only(attacked):
    spec = AttackSpec("apgd-ce", eps=10.0, norm="L1", steps=5)
    assert spec.params()["norm"] == "L1"
    model, x, y = attacked
    torch.manual_seed(0)
    adv = build(spec, model)(x[:8], y[:8])
    assert (dist(adv, x[:8], "L1") <= 10.0 + 1e-3).all()
