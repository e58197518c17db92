"""Evaluating stochastic (Poisson-coded) models: EOT specs, fresh-draw verification, single-draw rows, determinism
under fixed seeds, the masking-by-randomness check, and the L2 threat model through sweeps and reports."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from cli_helpers import one_line, run_main
from conftest import TINY, make_tiny_data
from test_cli_attack import ID, fake_load, zoo  # noqa: F401  (module-scoped tiny zoo)

import robench.eval.sweep as ev
from robench.attacks import AttackSpec
from robench.eval.checks import eot_masking, eval_determinism
from robench.eval.stochastic import clean_correct_draws, stochastic_spec, verify_draws
from robench.eval.sweep import Data, Target, attack_cell, evaluate
from robench.eval.verify import check_examples
from robench.results.report import comparison
from robench.results.store import ResultsStore
from robench.results.worstcase import budget_label
from robench.snn.encoding import is_stochastic
from robench.snn.models import ModelConfig, build_model
from robench.train import TrainConfig, train


@pytest.fixture(autouse=True)
def tiny_dataset(monkeypatch):
    monkeypatch.setattr(ev, "load_dataset", fake_load)


@pytest.fixture(scope="module")
def poisson():
    """The tiny model with Poisson coding, trained briefly (eval mode), and 24 test images."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{**TINY, "encoding": "poisson", "T": 4}))
    train(model, TrainConfig(recipe="clean", epochs=3, lr=0.1, batch_size=16), make_tiny_data(128),
          make_tiny_data(64, 1))
    x, y = make_tiny_data(48, 2)
    return model.eval(), x[:24], y[:24]


def test_a_stochastic_sweep_is_reproducible_and_records_k_m_and_a_single_draw_row(poisson, tmp_path):
    model, x, y = poisson
    t = Target("p", "0" * 64, model, "tiny")
    spec = AttackSpec("pgd-best", eps=0.1, steps=3)

    def run(name):
        return evaluate([t], [spec], "bptt", Data("tiny", x, y), ResultsStore(tmp_path / f"{name}.csv"), seed=3,
                        eot=2, draws=4, check_models=False).records

    a, b = run("a"), run("b")
    cols = ["params", "clean_count", "robust_count", "robust_mask"]
    assert a[cols].equals(b[cols])  # determinism under fixed seeds
    params = [json.loads(p) for p in a["params"]]
    assert [(p["eot"], p["draws"], p["sampler"]) for p in params] == [(2, 4, "rate"), (2, 1, "rate")]
    assert (a["robust_count"] <= a["clean_count"]).all()


def test_bad_norms_draws_and_encodings_are_one_line_errors_that_write_nothing(zoo, tmp_path, capsys):  # noqa: F811
    for args, msg in ((["--eot", "0"], "--eot 0; must be an integer >= 1"),
                      (["--draws", "-2"], "--draws -2; must be an integer >= 1"),
                      (["--eot", "4"], "apply to stochastic models"),
                      (["--sampler", "x"], "--sampler 'x'; choose from: rate, ste"),
                      (["--norm", "L3"], "--norm 'L3'; choose from: Linf, L2, L1"),
                      (["--norm", "L2", "--attack", "bim"], "bim has no L2 version"),
                      (["--encoding", "rate"], "--encoding 'rate'; choose from: direct, poisson")):
        code, _, err = run_main(capsys, ["attack", "--model", ID, "--zoo", str(zoo), "--n", "8", "--out",
                                         str(tmp_path / "out"), "--attack", "fgsm", *args])
        assert code == 2 and msg in one_line(err), (args, err)
    assert not (tmp_path / "out").exists()


def test_fresh_draw_verification_uses_draws_the_attack_never_saw(poisson):
    model, x, y = poisson
    spec = stochastic_spec(AttackSpec("fgsm", eps=0.0), eot=1, draws=8)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = verify_draws(model, x, y, x, spec, seed=7, ball=True, name="fgsm")
    assert torch.equal(torch.get_rng_state(), state)  # the attack's stream is untouched
    b = verify_draws(model, x, y, x, spec, seed=7, ball=True, name="fgsm")
    assert torch.equal(a.averaged.broken, b.averaged.broken)
    c = clean_correct_draws(model, x, y, 8, draws=8, seed=7)
    assert torch.equal(~a.averaged.broken, c)  # eps = 0: the verdict is the averaged clean prediction


def test_an_attack_that_wins_only_on_its_own_draws_does_not_count(poisson):
    """An 'attack' that returns the clean image and succeeds only on a lucky draw: with fresh draws it breaks
    exactly what the averaged clean prediction already gets wrong, i.e. nothing that was attacked."""
    model, x, y = poisson
    spec = stochastic_spec(AttackSpec("pgd-best", eps=0.0), eot=1, draws=16)
    out = attack_cell(model, spec, "bptt", x, y, seed=1, batch_size=8)
    clean = clean_correct_draws(model, x, y, 8, draws=16, seed=1)
    assert torch.equal(out.correct, clean.cpu())  # eps = 0 equals clean, through the averaged prediction


def test_a_poisson_model_passes_the_determinism_check_only_under_a_seed(poisson):
    model, x, _ = poisson
    assert is_stochastic(model) and eval_determinism(model, x[:4])

    class Undeclared(torch.nn.Module):
        def forward(self, z):
            return torch.rand(len(z), 2)

    assert not eval_determinism(Undeclared(), x[:4])


def test_eot_masking_flags_robustness_that_vanishes_with_more_draws():
    def row(k, acc):
        return {"model": "m", "sha256": "s", "dataset": "d", "n": 100, "seed": 0, "attack": "pgd-best",
                "params": json.dumps({"eot": k, "draws": 16, "norm": "Linf"}), "grad": "bptt", "eps": 0.03,
                "eps_str": "8/255", "robust_acc": acc}

    df = pd.DataFrame([row(1, 0.60), row(8, 0.40)])
    found = eot_masking(df)
    assert len(found) == 1 and "K=1 60.0% -> K=8 40.0%" in found[0].message
    assert not eot_masking(pd.DataFrame([row(1, 0.42), row(8, 0.40)]))


def test_l2_rows_never_join_linf_cells_in_the_worst_case(zoo, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "res"
    base = ["attack", "--model", ID, "--zoo", str(zoo), "--n", "16", "--out", str(out), "--grad", "bptt"]
    assert run_main(capsys, [*base, "--attack", "pgd-best", "--steps", "3", "--eps", "0.5"])[0] == 0
    assert run_main(capsys, [*base, "--attack", "pgd-best", "--steps", "3", "--eps", "0.5", "--norm", "L2"])[0] == 0
    assert run_main(capsys, [*base, "--attack", "fgsm", "--eps", "0", "--norm", "L2"])[0] == 0
    df = ResultsStore(out / "results.csv").read()
    assert len(df) == 3 and sorted(json.loads(p)["norm"] for p in df["params"]) == ["L2", "L2", "Linf"]
    zero = df[df["eps"] == 0].iloc[0]
    assert zero["robust_acc"] == zero["clean_acc"]  # eps = 0 equals clean in L2 too
    c = comparison(df)
    budgets = sorted(case.eps_str for case in c.cases)
    assert budgets == ["0.5", "L2 0", "L2 0.5"]  # same eps value, two threat models: two worst cases
    assert any(col.endswith("@ L2 0.5 (bptt)") for col in c.table.columns)
    assert budget_label('{"norm": "L2", "draws": 16}', "1") == "L2 1, 16 draws"
    assert budget_label("{}", "8/255") == "8/255"  # old rows without a norm read as L-inf


def test_verification_catches_an_example_outside_the_l2_ball(poisson):
    model, x, y = poisson
    cheat = (x + 0.2).clamp(0, 1)  # within 0.2 in L-inf, far outside 0.5 in L2 (64 pixels)
    v = check_examples(model, x, y, cheat, 0.5, norm="L2")
    assert v.invalid.all() and not v.broken.any()
    assert not check_examples(model, x, y, cheat, 0.2 + 1e-7, norm="Linf").invalid.any()


# ------------------------------------------------------------------------------------ the reliable protocol
def test_the_reliable_protocol_runs_every_stage_of_a_stochastic_model_with_eot_and_fresh_draws(poisson, monkeypatch):
    import robench
    import robench.eval.cell as cell
    from robench.eval.stagelist import Stage

    model, x, y = poisson
    seen = []
    real = cell.verify_draws

    def spy(model, x, y, x_adv, spec, *a, **kw):
        seen.append((spec.name, spec.eot, spec.draws))
        return real(model, x, y, x_adv, spec, *a, **kw)

    monkeypatch.setattr(cell, "verify_draws", spy)
    stages = [Stage(AttackSpec("fgsm", eps=0.2), "bptt"), Stage(AttackSpec("pgd-best", eps=0.2, steps=3), "rate"),
              Stage(AttackSpec("square", eps=0.2, queries=10), "none", white_box=False)]
    r = robench.evaluate(model, x, y, eps=0.2, stages=stages, eot=2, draws=4, batch_size=24, device="cpu", seed=1)
    params = [json.loads(p) for p in r.records["params"]]
    assert len(params) == 4 and all((p["eot"], p["draws"], p["sampler"]) == (2, 4, "rate") for p in params)
    assert {(name, k, m) for name, k, m in seen} <= {("fgsm", 2, 4), ("pgd-best", 2, 4), ("square", 2, 4)}
    assert seen and seen[0][0] == "fgsm"  # every verdict came from fresh draws (the stages that attacked)
    clean = clean_correct_draws(model, x, y, 24, draws=4, seed=1).cpu()
    assert r.clean_count == int(clean.sum()) and not (r.robust_mask & ~clean).any()  # clean: the M-draw verdict
    assert (r.eot, r.draws) == (2, 4) and "EOT 2 draws per step, 4 fresh per verdict" in str(r)
    again = robench.evaluate(model, x, y, eps=0.2, stages=stages, eot=2, draws=4, batch_size=24, device="cpu",
                             seed=1)
    assert torch.equal(again.robust_mask, r.robust_mask)  # determinism under fixed seeds
    deterministic = build_model(ModelConfig(**TINY)).eval()
    with pytest.raises(ValueError, match="apply to stochastic models"):
        robench.evaluate(deterministic, x, y, eps=0.2, stages=stages, eot=2)


def test_suite_reliable_on_a_poisson_model_runs_with_eot(zoo, tmp_path, capsys):  # noqa: F811
    from test_cli_reliable import TINY as PROTOCOL

    f = tmp_path / "tiny.toml"
    f.write_text(PROTOCOL)
    out = tmp_path / "res"
    code, _, err = run_main(capsys, ["attack", "--zoo", str(zoo), "--model", ID, "--suite", str(f), "--n", "8",
                                     "--out", str(out), "--encoding", "poisson", "--eot", "2", "--draws", "3",
                                     "--device", "cpu", "--batch-size", "8"])
    assert code == 0, err
    params = [json.loads(p) for p in pd.read_csv(out / "results.csv")["params"]]
    assert params[-1]["stage"] == "all" and {p["stage"] for p in params} >= {"probe", 1, 2, 3}
    assert all((p["eot"], p["draws"]) == (2, 3) for p in params)
    code, _, err = run_main(capsys, ["attack", "--zoo", str(zoo), "--model", ID, "--suite", "reliable", "--n", "8",
                                     "--out", str(tmp_path / "none"), "--eot", "2"])
    assert code == 2 and one_line(err).startswith("Error:") and "apply to stochastic models" in one_line(err), err
    assert not (tmp_path / "none").exists()
