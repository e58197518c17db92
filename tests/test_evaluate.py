"""Cells and sweeps on a tiny trained model: eps = 0 is clean accuracy, a huge eps breaks it, worst <= each mode,
reruns skip done cells, a user's own attack runs, and the evaluation path (inference mode, clean once, batch size)."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from conftest import make_tiny_data, train_tiny

import robench.data
import robench.eval.cell
import robench.eval.sweep as ev
from robench.attacks import ATTACKS, AttackSpec
from robench.errors import BadSpec, IntegrityError
from robench.eval.checks import eval_determinism, model_findings, outputs_probabilities, zero_grad_fraction
from robench.results import ResultsStore
from robench.snn.pathkeys import BPTT, RATE, GradPath

FAST = {"pgd": dict(steps=3), "bim": dict(steps=3), "apgd-ce": dict(steps=2), "apgd-dlr": dict(steps=2),
        "autoattack": dict(version="custom", steps=2)}


@pytest.fixture(scope="module")
def trained():
    """conftest's trained_zoo model, trained once for this module, and 32 held-out images."""
    x, y = make_tiny_data(32, 2)
    return train_tiny(), x, y


def _target(model):
    return ev.Target("tiny", "ab" * 32, model, "tiny")


@pytest.mark.parametrize("grad", ["bptt", "rate"])
@pytest.mark.parametrize("name", ATTACKS.names())
def test_eps_zero_is_exactly_clean_accuracy(trained, name, grad):
    model, x, y = trained
    clean = ev.clean_correct(model, x, y, 32).cpu()
    spec = AttackSpec(name, eps=0.0, **FAST.get(name, {}))
    correct = ev.run_cell(model, spec, "none" if spec.gradient_free else grad, x, y, seed=0, batch_size=8)
    assert correct.dtype == torch.bool and correct.shape == (32,)
    assert torch.equal(correct, clean)


@pytest.mark.parametrize("grad", ["bptt", "rate"])
def test_a_huge_eps_drives_pgd_accuracy_near_zero(trained, grad):
    model, x, y = trained
    assert ev.clean_correct(model, x, y, 32).float().mean() > 0.9
    correct = ev.run_cell(model, AttackSpec("pgd", eps=1.0, steps=10, step_size=0.25), grad, x, y)
    assert correct.float().mean() <= 0.1


def test_cells_are_reproducible_and_robust_implies_clean(trained):
    model, x, y = trained
    spec = AttackSpec("pgd", eps=0.3, steps=2, step_size=0.1)
    a = ev.run_cell(model, spec, "bptt", x, y, seed=1, batch_size=8)
    b = ev.run_cell(model, spec, "bptt", x, y, seed=1, batch_size=8)
    assert torch.equal(a, b)
    assert not (a & ~ev.clean_correct(model, x, y, 8).cpu()).any()


def test_an_attack_leaving_its_budget_breaks_nothing(trained):
    model, x, y = trained
    cheat = AttackSpec.of(lambda xb, yb: (xb + 0.5).clamp(0, 1), eps=8 / 255, name="cheat")
    out = ev.attack_cell(model, cheat, "bptt", x, y)  # every example is out of the ball: all invalid, none broken
    clean = ev.clean_correct(model, x, y, 32).cpu()
    assert torch.equal(out.correct, clean) and out.invalid == int(clean.sum())
    with pytest.raises(IntegrityError, match="cheat returned Tensor"):  # a wrong shape is a broken attack
        ev.run_cell(model, AttackSpec.of(lambda xb, yb: xb[:, :, :4], eps=0.1, name="cheat"), "bptt", x, y)


def test_a_users_torchattacks_attack_runs_on_a_robench_model(trained, tmp_path):
    model, x, y = trained
    mifgsm = torchattacks.MIFGSM(model, eps=0.3, alpha=0.1, steps=3)
    correct = ev.run_cell(model, mifgsm, "rate", x, y)  # passed through as is
    assert correct.float().mean() < ev.clean_correct(model, x, y, 32).float().mean()
    store = ResultsStore(tmp_path / "r.csv")
    out = ev.evaluate([_target(model)], [AttackSpec.of(mifgsm)], "both", ev.Data("tiny", x, y), store,
                      device="cpu", check_models=False)
    assert list(out.records["attack"]) == ["mifgsm"] * 3 and set(out.records["grad"]) == {"bptt", "rate", "worst"}


def test_evaluate_records_worst_and_skips_done_cells(trained, tmp_path):
    model, x, y = trained
    store = ResultsStore(tmp_path / "r.csv")
    specs = [AttackSpec("fgsm", eps=e) for e in (0.0, 0.2)] + [AttackSpec("gaussian", eps=0.3)]
    events = []
    out = ev.evaluate([_target(model)], specs, "both", ev.Data("tiny", x, y), store, progress=events.append,
                      device="cpu")
    df = out.records
    assert len(df) == 2 * 3 + 1 and out.ran == 5 and len(out.new) == 7
    assert events[0] == {"kind": "start", "total": 5, "skipped": 0} and len(events) == 6
    assert df[df["attack"] == "gaussian"]["grad"].tolist() == ["none"]  # no gradient: run once
    for eps, g in df[df["attack"] == "fgsm"].groupby("eps"):
        acc = g.set_index("grad")["robust_acc"]
        assert acc["worst"] <= min(acc["bptt"], acc["rate"])
        assert (acc == g["clean_acc"].iloc[0]).all() if eps == 0 else True
    before = store.path.read_bytes()
    again = ev.evaluate([_target(model)], specs, "both", ev.Data("tiny", x, y), store, device="cpu")
    assert again.ran == 0 and again.skipped == 7 and again.new == set()
    assert store.path.read_bytes() == before and len(again.records) == 7
    forced = ev.evaluate([_target(model)], specs[:1], "bptt", ev.Data("tiny", x, y), store, device="cpu",
                         force=True)
    assert forced.ran == 1 and len(store.read()) == 7  # replaced, not duplicated


def test_an_interrupted_group_reruns_only_its_missing_paths(trained, tmp_path, monkeypatch):
    """A group stopped after its first path: the rerun attacks only the missing path and builds the worst-case
    row from the stored mask, giving the rows of one uninterrupted run."""
    model, x, y = trained
    spec = [AttackSpec("pgd", eps=0.2, steps=3, step_size=0.1)]
    full = ev.evaluate([_target(model)], spec, "both", ev.Data("tiny", x, y), ResultsStore(tmp_path / "a.csv"),
                       device="cpu", batch_size=8).records
    store = ResultsStore(tmp_path / "b.csv")
    ev.evaluate([_target(model)], spec, "bptt", ev.Data("tiny", x, y), store, device="cpu", batch_size=8)
    calls, real = [], ev.attack_cell
    monkeypatch.setattr(ev, "attack_cell", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    again = ev.evaluate([_target(model)], spec, "both", ev.Data("tiny", x, y), store, device="cpu", batch_size=8)
    assert calls == [RATE] and again.ran == 1  # the parsed path, carried as it is
    cols = ["grad", "robust_count", "robust_mask"]
    assert again.records[cols].values.tolist() == full[cols].values.tolist()


def test_clean_predictions_once_per_model_in_inference_mode(trained, monkeypatch):
    model, x, y = trained
    calls = []
    real = ev.clean_correct

    def counting(*a, **k):
        out = real(*a, **k)
        calls.append(out.is_inference())
        return out

    monkeypatch.setattr(ev, "clean_correct", counting)
    specs = [AttackSpec("fgsm", eps=e) for e in (0.1, 0.2)]
    ev.evaluate([_target(model)], specs, "both", ev.Data("tiny", x, y), None, device="cpu", check_models=False)
    assert calls == [True]
    assert all(p.requires_grad for p in model.parameters())  # frozen only while attacking


def test_auto_batch_size_is_a_capped_power_of_two(trained, monkeypatch):
    model, x, _ = trained
    assert ev.auto_batch_size(model, x) == 32  # capped at n
    big = x.repeat(40, 1, 1, 1)
    assert ev.auto_batch_size(model, big) == ev.CPU_CAP
    monkeypatch.setattr(robench.eval.cell, "_memory_budget", lambda device: 100 * 4 * ev.activation_bytes(model, x[:1]))
    assert ev.auto_batch_size(model, big) == 64


def test_parse_grads():
    assert ev.parse_grads("both") == [BPTT, RATE]
    assert ev.parse_grads(["rate", "bptt", "rate"]) == [RATE, BPTT]
    assert ev.parse_grads([RATE, "triangle:w=0.50"]) == [RATE, GradPath("triangle", (("w", 0.5),))]
    with pytest.raises(BadSpec, match="--grad 'sideways'; choose from: bptt, rate, both"):
        ev.parse_grads("sideways")


def test_load_data_falls_back_to_the_shipped_subset(tmp_path, monkeypatch):
    monkeypatch.setattr(robench.data, "FMNIST_SYSTEM_DIR", tmp_path)
    data, note = ev.load_data("fashion-mnist", None, 10)
    assert data.name == "fashion-mnist:subset" and len(data.x) == 10 and "shipped" in note
    with pytest.raises(BadSpec, match="--n 0"):
        ev.load_data("fashion-mnist", None, 0)
    with pytest.raises(robench.errors.DataNotFound):
        ev.load_data("fashion-mnist", tmp_path, 10)  # an explicit --data-dir never falls back


def test_model_checks(trained):
    model, x, y = trained
    assert eval_determinism(model, x) and not outputs_probabilities(model, x)
    assert 0.0 <= zero_grad_fraction(model, x, y, "rate") <= 1.0
    probs = torch.nn.Sequential(model, torch.nn.Softmax(-1))
    names = [f.name for f in model_findings(probs, "p", x, y, ["bptt"], zero_grad=1.0)]
    assert names == ["probabilities"]
    dead = [f for f in model_findings(model, "m", x, y, ["bptt"], zero_grad=-1.0) if f.name == "zero-grad"]
    assert dead and dead[0].grads == ("bptt",)


def test_data_the_model_cannot_take_is_refused_before_any_cell(trained, tmp_path):
    model, x, y = trained
    store = ResultsStore(tmp_path / "r.csv")
    with pytest.raises(BadSpec, match="has 2 classes, but tiny labels go up to 9"):
        ev.evaluate([_target(model)], [AttackSpec("fgsm")], "bptt", ev.Data("tiny", x, y * 9), store, device="cpu")
    with pytest.raises(BadSpec, match=r"does not take tiny images \(3, 8, 8\)"):
        ev.evaluate([_target(model)], [AttackSpec("fgsm")], "bptt", ev.Data("tiny", x.repeat(1, 3, 1, 1), y), store,
                    device="cpu")
    assert not store.path.exists()


class _Threshold(torch.nn.Module):
    """No spiking neurons: class 1 when the mean pixel exceeds 0.5 (images at 0.45 are class 0 until pushed)."""

    def forward(self, x):
        s = (x.flatten(1).mean(1) - 0.5) * 10
        return torch.stack([-s, s], 1)


def _stub():
    return (ev.Target("stub", "cd" * 32, _Threshold(), "stub"),
            ev.Data("stub:test", torch.full((12, 1, 4, 4), 0.45), torch.zeros(12, dtype=torch.long)))


def test_square_breaking_what_every_white_box_cell_missed_flags_its_row(tmp_path):
    t, d = _stub()
    store = ResultsStore(tmp_path / "r.csv")
    blind = AttackSpec("blind", eps=0.1, attack=lambda x, y: x.clone())  # a white-box attack that finds nothing
    out = ev.evaluate([t], [blind, AttackSpec("square", eps=0.1, queries=100)], "bptt", d, store, device="cpu",
                      batch_size=16, check_models=False)
    assert [f.name for f in out.findings] == ["gradient-masking"] and "square" in out.findings[0].message
    stored = store.read().set_index("attack")
    assert stored.loc["square", "flags"] == "gradient-masking" and stored.loc["blind", "flags"] in ("", "nan")
    assert stored.loc["square", "robust_count"] < stored.loc["blind", "robust_count"]


def test_a_path_that_does_not_apply_is_refused_before_any_cell(tmp_path):
    t, d = _stub()
    store = ResultsStore(tmp_path / "r.csv")
    with pytest.raises(BadSpec, match="--grad rate on model stub: gradient path 'rate' needs spiking neurons"):
        ev.evaluate([t], [AttackSpec("fgsm", eps=0.1)], "bptt,rate", d, store, device="cpu", batch_size=16,
                    check_models=False)
    assert not (tmp_path / "r.csv").exists()
