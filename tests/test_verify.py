"""Verification of adversarial examples, per-sample masks in the rows, and --save-adv / verify-adv round trips."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from cli_helpers import one_line, run_main
from conftest import make_tiny_data
from safetensors.torch import save_file
from test_cli_attack import ID, fake_load, zoo  # noqa: F401  (module-scoped tiny zoo)

import robench.eval.sweep as ev
from robench.attacks import AttackSpec
from robench.errors import IntegrityError
from robench.eval.adversarial import read_adv
from robench.eval.checks import stored_flags
from robench.eval.recheck import recheck
from robench.eval.verify import check_examples, valid_examples
from robench.results import ResultsStore
from robench.results.stats import decode_mask
from robench.zoo import load


@pytest.fixture(autouse=True)
def tiny_dataset(monkeypatch):
    monkeypatch.setattr(ev, "load_dataset", fake_load)


@pytest.fixture(scope="module")
def trained(zoo):  # noqa: F811
    model, _ = load(ID, zoo)
    x, y = make_tiny_data(48, 2)
    return model.eval(), x[:16], y[:16]


def flip(model):
    """A perfect attack that cheats: the image of the other class, far outside any small eps-ball."""
    def attack(xb, yb):
        x, y = make_tiny_data(64, 7)
        return torch.stack([x[(y != t).nonzero()[0, 0]] for t in yb])
    return attack


def test_valid_examples_checks_range_ball_and_finiteness():
    x = torch.full((4, 1, 2, 2), 0.5)
    adv = x.clone()
    adv[1, 0, 0, 0] = 0.5 + 0.1  # outside eps = 0.05
    adv[2, 0, 0, 0] = 1.2  # outside [0, 1]
    adv[3, 0, 0, 0] = float("nan")
    assert valid_examples(x, adv, 0.05).tolist() == [True, False, False, False]
    assert valid_examples(x, adv, 0.05, ball=False).tolist() == [True, True, False, False]
    assert valid_examples(x, x + 0.05 + 5e-7, 0.05).all()  # float slack of 1e-6


def test_check_examples_counts_only_valid_misclassified(trained):
    model, x, y = trained
    clean = ev.clean_correct(model, x, y, 16)
    assert clean.all()
    far = flip(model)(x, y)
    v = check_examples(model, x, y, far, eps=1.0)
    assert v.broken.float().mean() > 0.5 and not v.invalid.any()
    v = check_examples(model, x, y, far, eps=8 / 255)
    assert not v.broken.any() and v.invalid.all()
    with pytest.raises(IntegrityError, match="returned Tensor"):
        check_examples(model, x, y, far.long(), eps=1.0)


@pytest.mark.parametrize("kind", ["out-of-ball", "nan"])
def test_cheating_attacks_break_nothing_and_leave_a_finding(trained, tmp_path, kind):
    model, x, y = trained
    fn = flip(model) if kind == "out-of-ball" else (lambda xb, yb: torch.full_like(xb, float("nan")))
    spec = AttackSpec.of(fn, eps=8 / 255, name="cheat")
    store = ResultsStore(tmp_path / "r.csv")
    out = ev.evaluate([ev.Target("tiny", "ab" * 32, model, "tiny")], [spec], "bptt", ev.Data("tiny", x, y), store,
                      device="cpu", check_models=False)
    row = store.read().iloc[0]
    assert row["robust_count"] == 16 and row["flags"] == "invalid-adv=16"
    assert decode_mask(row["robust_mask"], 16, 16).all()
    assert [f.name for f in out.findings] == ["invalid-adv"] and "cheat" in out.findings[0].message
    found = stored_flags(store.read())
    assert [f.name for f in found] == ["invalid-adv"] and "16 adversarial example(s) failed" in found[0].message


def test_gaussian_skips_the_ball_but_keeps_the_range(trained):
    model, x, y = trained
    noisy = ev.attack_cell(model, AttackSpec("gaussian", eps=0.5), "none", x, y, seed=0)
    assert noisy.invalid == 0  # sigma 0.5 moves pixels far beyond 0.5 in L-inf, which is fine for noise


def test_rows_carry_masks_worst_is_the_and(trained, tmp_path):
    model, x, y = trained
    store = ResultsStore(tmp_path / "r.csv")
    ev.evaluate([ev.Target("tiny", "ab" * 32, model, "tiny")], [AttackSpec("fgsm", eps=0.3)], "both",
                ev.Data("tiny", x, y), store, device="cpu", check_models=False)
    df = store.read().set_index("grad")
    m = {g: decode_mask(df.loc[g, "robust_mask"], 16, df.loc[g, "robust_count"]) for g in df.index}
    assert (m["worst"] == (m["bptt"] & m["rate"])).all()


def test_save_adv_and_verify_adv_round_trip(zoo, tmp_path, capsys):  # noqa: F811
    adv = tmp_path / "adv"
    code, _, err = run_main(capsys, ["attack", "--zoo", str(zoo), "--model", ID, "--attack", "pgd", "--eps", "0.3",
                                     "--steps", "3", "--step-size", "0.1", "--n", "16", "--out", str(tmp_path / "res"),
                                     "--grad", "both", "--save-adv", str(adv), "--device", "cpu"])
    assert code == 0, err
    files = sorted(adv.glob("*.safetensors"))
    assert len(files) == 2  # one per cell run (bptt, rate); the worst row is an AND, not a run
    rows = pd.read_csv(tmp_path / "res" / "results.csv").set_index("grad")
    f = read_adv(files[0])
    row = rows.loc[f.meta["grad"]]
    assert len(f.index) == row["clean_count"] - row["robust_count"] > 0
    assert f.x_adv.dtype == torch.float32 and f.x_adv.shape[1:] == (1, 8, 8) and f.meta["n"] == 16
    r = recheck(files[0], zoo)
    assert r.robust_count == r.claimed == row["robust_count"] and r.invalid == 0
    code, out, err = run_main(capsys, ["verify-adv", str(files[0]), "--zoo", str(zoo), "--device", "cpu"])
    assert code == 0 and f"robust accuracy implied: {100 * r.robust_count / 16:.1f}%" in out, err


def test_verify_adv_refuses_foreign_and_truncated_files(zoo, tmp_path, capsys):  # noqa: F811
    adv = tmp_path / "adv"
    run_main(capsys, ["attack", "--zoo", str(zoo), "--model", ID, "--attack", "fgsm", "--eps", "0.3", "--n", "8",
                      "--out", str(tmp_path / "res"), "--grad", "bptt", "--save-adv", str(adv), "--device", "cpu"])
    good = next(adv.glob("*.safetensors"))
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    (tmp_path / "cut.safetensors").write_bytes(good.read_bytes()[:-40])
    (tmp_path / "text.safetensors").write_text("hello")
    for name in ("foreign", "cut", "text"):
        code, _, err = run_main(capsys, ["verify-adv", str(tmp_path / f"{name}.safetensors"), "--zoo", str(zoo)])
        assert code == 1 and "not a robench adversarial-example file" in one_line(err), name


def test_save_adv_to_an_unwritable_folder_is_refused_before_work(zoo, tmp_path, capsys):  # noqa: F811
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_main(capsys, ["attack", "--zoo", str(zoo), "--model", ID, "--n", "4", "--out",
                                     str(tmp_path / "res"), "--save-adv", str(blocker / "adv")])
    assert code == 2 and "--save-adv" in one_line(err) and "not a writable folder" in err
    assert not (tmp_path / "res").exists()


def test_verify_adv_checks_the_l2_ball_the_row_claims(zoo, tmp_path, capsys):  # noqa: F811
    adv = tmp_path / "adv"
    code, _, err = run_main(capsys, ["attack", "--zoo", str(zoo), "--model", ID, "--attack", "pgd-best", "--norm",
                                     "L2", "--eps", "1.5", "--steps", "5", "--n", "16", "--grad", "bptt", "--out",
                                     str(tmp_path / "res"), "--save-adv", str(adv), "--device", "cpu"])
    assert code == 0, err
    (path,) = adv.glob("*.safetensors")
    r = recheck(path, zoo)
    assert r.broken > 0 and r.invalid == 0 and r.robust_count == r.claimed
    f = read_adv(path)  # the same examples claimed at a tenth of the budget: every one leaves the L2 ball
    meta = {**f.meta, "eps": 0.15}
    save_file({"x_adv": f.x_adv, "index": f.index}, str(tmp_path / "small.safetensors"),
              metadata={"robench": json.dumps(meta, sort_keys=True, default=str)})
    r2 = recheck(tmp_path / "small.safetensors", zoo)
    assert r2.broken == 0 and r2.invalid == len(f.index)
