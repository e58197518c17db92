"""Attack registry, specs, suites and adapters: every attack's contract (shape, [0, 1], budget, eps = 0)."""

from __future__ import annotations

import json

import pytest
import torch
import torchattacks
from conftest import TINY

import robench.eps
from robench.attacks import (
    ATTACKS,
    DEFAULT_ATTACKS,
    SUITES,
    AttackSpec,
    AutoAttackAdapter,
    build,
    make_specs,
    parse_eps,
    specs_from,
    suite,
)
from robench.errors import BadSpec, UnknownName
from robench.snn.models import ModelConfig, build_model

ALL = ("fgsm", "pgd", "bim", "pgd-best", "sa-pgd", "apgd-ce", "apgd-dlr", "apgd-t", "square", "autoattack", "gaussian")
FAST = {"pgd": dict(steps=2), "bim": dict(steps=2), "pgd-best": dict(steps=2), "sa-pgd": dict(steps=2),
        "apgd-ce": dict(steps=2), "apgd-dlr": dict(steps=2), "apgd-t": dict(steps=2), "square": dict(queries=5),
        "autoattack": dict(version="custom", steps=2)}


@pytest.fixture(scope="module")
def four_class():
    """An untrained tiny model with 4 classes (APGD-T's targeted DLR loss needs 4) and 4 images."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{**TINY, "num_classes": 4})).eval()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return model, x, torch.arange(4)


def test_registry_holds_every_attack_and_lists_choices():
    assert set(ALL) <= set(ATTACKS.names())
    with pytest.raises(UnknownName, match="choose from: .*fgsm.*gaussian"):
        AttackSpec("nope")
    assert parse_eps is robench.eps.parse_eps  # re-exported, not re-implemented


def test_spec_fills_defaults_and_params_are_sorted_json():
    s = AttackSpec("pgd")
    assert (s.steps, s.step_size, s.restarts, s.random_start, s.eps_str) == (10, 2 / 255, 1, True, "8/255")
    assert json.loads(s.params_json()) == {"norm": "Linf", "random_start": True, "restarts": 1,
                                           "step_size": 2 / 255, "steps": 10}
    assert s.params_json() == json.dumps(s.params(), sort_keys=True)
    assert AttackSpec("pgd", steps=10).params_json() == s.params_json()  # an explicit default is the same cell
    assert AttackSpec("gaussian", eps=0.1).params() == {}
    assert AttackSpec("apgd-ce").steps == 100 and AttackSpec("autoattack").version == "standard"
    assert AttackSpec("autoattack", version="custom").steps == 100


@pytest.mark.parametrize("kw, msg", [
    (dict(name="fgsm", steps=3), "--steps does not apply to fgsm"),
    (dict(name="pgd", steps=0), "--steps 0"),
    (dict(name="pgd", step_size=-1.0), "--step-size"),
    (dict(name="pgd", restarts=0), "--restarts 0"),
    (dict(name="autoattack", version="plus"), "--aa-version 'plus'"),
    (dict(name="autoattack", steps=10), "custom only"),
    (dict(name="pgd", eps=1.5), "--eps 1.5"),
    (dict(name="pgd", eps=-0.1), "--eps -0.1"),
])
def test_spec_refuses_bad_values(kw, msg):
    with pytest.raises(BadSpec, match=msg):
        AttackSpec(**kw)


@pytest.mark.parametrize("name", ALL)
def test_eps_zero_returns_x_unchanged(name, tiny_model, tiny_data):
    x, y = tiny_data[0][:8], tiny_data[1][:8]
    x_adv = build(AttackSpec(name, eps=0.0, **FAST.get(name, {})), tiny_model)(x, y)
    assert torch.equal(x_adv, x)


@pytest.mark.parametrize("name", ALL)
def test_every_attack_stays_in_budget_and_range(name, four_class):
    model, x, y = four_class
    eps = 8 / 255
    x_adv = build(AttackSpec(name, eps=eps, **FAST.get(name, {})), model)(x, y)
    assert x_adv.shape == x.shape and x_adv.min() >= 0 and x_adv.max() <= 1
    if name != "gaussian":
        assert (x_adv - x).abs().max() <= eps + 1e-6
    else:
        assert not torch.equal(x_adv, x)


def test_dlr_attacks_refuse_too_few_classes_with_one_line(tiny_model, tiny_data):
    x, y = tiny_data[0][:4], tiny_data[1][:4]
    with pytest.raises(BadSpec, match="apgd-dlr needs at least 3 classes; the model has 2"):
        build(AttackSpec("apgd-dlr", steps=2), tiny_model)(x, y)
    with pytest.raises(BadSpec, match="apgd-t needs at least 4 classes; the model has 2"):
        build(AttackSpec("apgd-t", steps=2), tiny_model)(x, y)


def test_autoattack_adapter_caps_target_classes_and_sets_iterations(four_class):
    model, x, _ = four_class
    adapter = build(AttackSpec("autoattack", version="custom", steps=7, restarts=2), model)
    assert isinstance(adapter, AutoAttackAdapter)
    aa = adapter._make(x.device, n_classes=4)
    assert aa.attacks_to_run == ["apgd-ce", "apgd-t"]
    assert aa.apgd_targeted.n_target_classes == 3
    assert (aa.apgd.n_iter, aa.apgd.n_iter_2, aa.apgd.n_restarts) == (7, 1, 2)
    std = build(AttackSpec("autoattack"), model)._make(x.device, n_classes=4)
    assert std.attacks_to_run == ["apgd-ce", "apgd-t", "fab-t", "square"] and std.apgd.n_iter == 100


def test_gaussian_noise_is_seeded(tiny_model, tiny_data):
    x, y = tiny_data[0][:4], tiny_data[1][:4]
    fn = build(AttackSpec("gaussian", eps=0.2), tiny_model)
    torch.manual_seed(3)
    a = fn(x, y)
    torch.manual_seed(3)
    assert torch.equal(a, fn(x, y))


def test_pgd_restarts_keep_the_budget(four_class):
    model, x, y = four_class
    x_adv = build(AttackSpec("pgd", eps=4 / 255, steps=2, restarts=3), model)(x, y)
    assert (x_adv - x).abs().max() <= 4 / 255 + 1e-6


def test_a_users_torchattacks_attack_passes_through(tiny_model, tiny_data):
    x, y = tiny_data[0][:4], tiny_data[1][:4]
    mine = torchattacks.MIFGSM(tiny_model, eps=4 / 255, steps=2)
    assert build(mine, tiny_model) is mine
    spec = AttackSpec.of(mine)
    assert spec.name == "mifgsm" and spec.eps == 4 / 255 and spec.eps_str == "4/255"
    assert json.loads(spec.params_json())["user"] == "MIFGSM"
    assert build(spec, tiny_model) is mine
    assert (build(spec, tiny_model)(x, y) - x).abs().max() <= 4 / 255 + 1e-6
    with pytest.raises(BadSpec, match="neither an AttackSpec nor callable"):
        build(42, tiny_model)


def test_paper_suite_is_papers_evaluation_list():
    got = [(s.name, s.steps, s.step_size and round(s.step_size * 255, 2), s.eps_str) for s in SUITES["paper"]]
    assert got == [("fgsm", None, None, "8/255"), ("pgd", 7, 2.55, "8/255"), ("pgd", 10, 2.0, "8/255"),
                   ("pgd", 20, 1.0, "8/255"), ("pgd", 40, 0.5, "8/255"), ("apgd-ce", 10, None, "8/255"),
                   ("apgd-dlr", 10, None, "8/255")]
    assert [s.name for s in SUITES["quick"]] == ["fgsm", "pgd"]
    assert suite("paper") is not SUITES["paper"] and suite("paper")[0] is not SUITES["paper"][0]
    with pytest.raises(BadSpec, match="unknown suite 'nope'; choose from: paper"):
        suite("nope")


def test_specs_from_the_command_line():
    default = specs_from()
    assert [(s.name, s.eps_str) for s in default] == [(n, "8/255") for n in DEFAULT_ATTACKS]
    assert default[1].steps == 10 and default[1].step_size == 2 / 255
    two = specs_from(["fgsm,bim", "bim"], eps="0,4/255")
    assert [(s.name, s.eps_str) for s in two] == [("fgsm", "0"), ("fgsm", "4/255"), ("bim", "0"), ("bim", "4/255")]
    assert [s.steps for s in specs_from(["fgsm", "pgd"], steps=3)] == [None, 3]  # only where it applies
    retarget = specs_from(suite_name="quick", eps="4/255")
    assert {s.eps_str for s in retarget} == {"4/255"} and len(retarget) == 2
    with pytest.raises(BadSpec, match="fixes every attack parameter"):
        specs_from(suite_name="paper", steps=3)
    with pytest.raises(BadSpec, match="--steps applies to none of fgsm"):
        make_specs(["fgsm"], [(8 / 255, "8/255")], steps=3)
    with pytest.raises(UnknownName, match="unknown attack 'pgdd'"):
        specs_from(["pgdd"])
    with pytest.raises(BadSpec, match="not a number"):
        specs_from(["fgsm"], eps="abc")


def test_pgd_sweep_retargeted_keeps_step_a_quarter_of_each_budget():
    from robench.attacks import specs_from

    specs = specs_from(None, "pgd-sweep", "0:16/255:4/255")
    assert [s.eps_str for s in specs] == ["0", "4/255", "8/255", "12/255", "16/255"]
    assert all(s.name == "pgd" and s.steps == 10 for s in specs)
    for s in specs[1:]:
        assert abs(s.step_size - s.eps / 4) < 1e-12
