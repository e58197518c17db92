"""Best-iterate tracking, the restart loop, pgd-best, and the official APGD-T / Square through robench's restarts."""

from __future__ import annotations

import json

import pytest
import torch
import torchattacks
from conftest import ATTACK_EPS as EPS
from torch import nn

import robench.attacks.autoattack as aa_mod
import robench.snn.paths
from robench.attacks import ATTACKS, AttackSpec, BestIterate, OfficialAttack, build
from robench.attacks.iterate import restart_seed, run_restarts
from robench.errors import BadSpec, IntegrityError

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads only contend


class MeanModel(nn.Module):
    """Class 1 when the mean pixel exceeds 0.5, else class 0: ``[B, C, H, W] -> [B, 2]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(1)
        return torch.stack([0.5 - m, m - 0.5], 1)


def robust(model, x_adv, y):
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def test_tracker_keeps_the_first_misclassified_iterate_and_the_last_for_the_rest():
    model, eps = MeanModel(), 0.2
    x = torch.tensor([0.4, 0.4, 0.6]).view(3, 1, 1, 1).expand(3, 1, 2, 2).contiguous()
    y = torch.tensor([0, 0, 0])  # sample 2 is misclassified at the start
    t = BestIterate(model, x, y, eps)
    assert t.broken.tolist() == [False, False, True] and t.robust_idx().tolist() == [0, 1]
    idx = torch.tensor([0, 1])
    assert t.update(x[idx] + torch.tensor([0.15, 0.05]).view(2, 1, 1, 1), idx).tolist() == [True, False]
    assert t.update(x[idx] - 0.1, idx).tolist() == [True, False]  # sample 0 is back on the right side: kept
    assert torch.allclose(t.adv[:, 0, 0, 0], torch.tensor([0.55, 0.3, 0.6]))  # first break; last; clean
    with pytest.raises(IntegrityError, match="left the budget"):
        t.update(x[idx] + 0.3, idx)
    with pytest.raises(IntegrityError, match="left the budget"):
        t.update((x[idx] - 0.45).clamp_min(-0.01), idx)


def test_tracker_trusts_attack_logits_only_to_pick_candidates():
    model, eps = MeanModel(), 0.2
    x, y = torch.full((2, 1, 2, 2), 0.45), torch.tensor([0, 0])
    t = BestIterate(model, x, y, eps)
    x1 = x + 0.1  # misclassified by the model
    claims_fooled = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    claims_correct = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert t.update(x1, torch.arange(2), claims_correct).tolist() == [False, True]  # a candidate is verified
    t2 = BestIterate(model, x, y, eps)
    assert t2.update(x, torch.arange(2), claims_fooled).tolist() == [False, False]  # logits alone never count


def test_restarts_attack_only_the_samples_still_robust_and_reset_the_path(monkeypatch):
    resets = []
    monkeypatch.setattr(robench.snn.paths, "reset_path_state", lambda m: resets.append(m))
    model = MeanModel()
    x, y = torch.full((4, 1, 2, 2), 0.45), torch.tensor([0, 0, 0, 1])  # sample 3 is wrong from the start
    seen = []

    def attempt(r, idx, tracker):
        seen.append(idx.tolist())
        push = torch.zeros(len(idx), 1, 1, 1)
        push[0] = 0.1  # each restart breaks the first sample it is given
        tracker.update(x[idx] + push, idx)

    adv = run_restarts(model, x, y, 0.2, 5, attempt)
    assert seen == [[0, 1, 2], [1, 2], [2]] and len(resets) == 3 and resets[0] is model
    assert (robust(model, adv, y) == torch.tensor([False, False, False, False])).all()


def test_restart_seeds_start_at_the_cell_seed_and_differ():
    assert restart_seed(7, 0) == 7 and restart_seed(2**40 + 3, 0) == (2**40 + 3) % 2**31
    seeds = [restart_seed(7, r) for r in range(5)]
    assert len(set(seeds)) == 5 and seeds == [restart_seed(7, r) for r in range(5)]
    assert all(0 <= s < 2**31 for s in seeds)


def test_new_attacks_are_registered_and_square_keeps_its_eps_ball():
    assert {"pgd-best", "sa-pgd", "apgd-t", "square"} <= set(ATTACKS.names())
    sq = AttackSpec("square", queries=100)
    assert sq.gradient_free and sq.budgeted and json.loads(sq.params_json())["norm"] == "Linf"
    assert AttackSpec("gaussian").gradient_free and not AttackSpec("gaussian").budgeted
    assert "queries" not in AttackSpec("pgd").params()  # old rows keep their keys
    with pytest.raises(BadSpec, match="--queries does not apply to pgd; it applies to: square"):
        AttackSpec("pgd", queries=10)
    with pytest.raises(BadSpec, match="--queries 0"):
        AttackSpec("square", queries=0)
    with pytest.raises(BadSpec, match="--step-size does not apply to sa-pgd"):
        AttackSpec("sa-pgd", step_size=0.1)


def test_pgd_best_breaks_every_sample_final_iterate_pgd_breaks(attacked):
    model, x, y = attacked
    kw = dict(eps=EPS, steps=10, step_size=EPS / 4)
    torch.manual_seed(0)
    final = robust(model, torchattacks.PGD(model, alpha=kw["step_size"], **{k: kw[k] for k in ("eps", "steps")})(
        x, y), y)
    torch.manual_seed(0)
    adv = build(AttackSpec("pgd-best", **kw), model)(x, y)
    best = robust(model, adv, y)
    assert (best <= final).all()  # the robust set is a subset
    assert 0 < best.sum() < len(y)
    assert (adv - x).abs().max() <= EPS + 1e-6 and adv.min() >= 0 and adv.max() <= 1


def test_pgd_best_stops_updating_broken_samples(attacked):
    model, x, y = attacked
    sizes = []
    hook = model.register_forward_hook(lambda m, i, o: sizes.append(len(i[0])) if torch.is_grad_enabled() else None)
    try:
        torch.manual_seed(0)
        build(AttackSpec("pgd-best", eps=EPS, steps=10, step_size=EPS / 4), model)(x, y)
    finally:
        hook.remove()
    assert len(sizes) == 10 and sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0]


def test_apgd_t_restarts_attack_only_robust_samples_with_new_seeds(monkeypatch, attacked):
    model, x, y = attacked
    calls = []
    once = OfficialAttack._once

    def spy(self, seed, x_, y_, idx, tracker):
        calls.append((seed, idx.tolist()))
        once(self, seed, x_, y_, idx, tracker)
        calls[-1] += (tracker.robust_idx().tolist(),)

    monkeypatch.setattr(OfficialAttack, "_once", spy)
    torch.manual_seed(5)
    adv = build(AttackSpec("apgd-t", eps=EPS, steps=3, restarts=3), model)(x[:16], y[:16])
    assert calls[0][0] == 5 and len({c[0] for c in calls}) == len(calls) >= 2
    for prev, nxt in zip(calls, calls[1:], strict=False):
        assert nxt[1] == prev[2]  # restart r+1 attacks exactly the survivors of restart r
    assert (adv - x[:16]).abs().max() <= EPS + 1e-6


def test_apgd_t_caps_its_targets_and_square_takes_its_queries(monkeypatch, attacked):
    model, x, y = attacked
    made = []
    make = aa_mod.AutoAttackAdapter._make
    monkeypatch.setattr(aa_mod.AutoAttackAdapter, "_make", lambda self, d, k: made.append(make(self, d, k)) or made[-1])
    torch.manual_seed(0)
    build(AttackSpec("apgd-t", eps=EPS, steps=2), model)(x[:8], y[:8])
    assert made[-1].apgd_targeted.n_target_classes == 3 and made[-1].apgd_targeted.n_iter == 2
    adv = build(AttackSpec("square", eps=EPS, queries=20), model)(x[:8], y[:8])
    assert made[-1].square.n_queries == 20
    assert (adv - x[:8]).abs().max() <= EPS + 1e-6 and adv.min() >= 0 and adv.max() <= 1
