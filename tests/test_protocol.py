"""The reliable cascade on a tiny trained model: stages attack only what is still robust, each finished stage is
stored with its mask, the worst-case row is the last stage's mask, a rerun resumes after an interruption between
stages, and the findings (not converged, gradient masking) come from the history."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_data, train_tiny

import robench.eval.cascade as proto
import robench.eval.sweep as ev
from robench.attacks import AttackSpec
from robench.errors import BadSpec
from robench.results import ResultsStore
from robench.results.stats import decode_mask

EPS = dict(eps=0.3, eps_str="0.3")
STAGES = [proto.Stage(AttackSpec("fgsm", **EPS), "bptt"),
          proto.Stage(AttackSpec("pgd", steps=3, step_size=0.1, **EPS), "rate", restarts=2),
          proto.Stage(AttackSpec("gaussian", eps=0.5, eps_str="0.5"), "none", white_box=False)]


@pytest.fixture(scope="module")
def trained():
    x, y = make_tiny_data(48, 2)
    return ev.Target("tiny", "ab" * 32, train_tiny(), "tiny"), ev.Data("tiny:test", x, y)


def _masks(df):
    return [decode_mask(r["robust_mask"], int(r["n"]), int(r["robust_count"])) for r in df.to_dict("records")]


def test_cascade_rows_masks_and_monotone(trained, tmp_path, one_thread):
    target, data = trained
    store = ResultsStore(tmp_path / "r.csv")
    out = proto.run_reliable([target], data, store, STAGES, seed=0, batch_size=16, device="cpu")
    df = store.read()
    assert len(df) == len(STAGES) + 1 and list(df["grad"]) == ["bptt", "rate", "none", "worst"]
    masks = _masks(df)
    clean = ev.clean_correct(target.model, data.x, data.y, 16).numpy()
    assert not (masks[0] & ~clean).any()  # robust only if clean-correct
    for a, b in zip(masks, masks[1:-1], strict=False):
        assert not (b & ~a).any()  # each stage only removes samples
    assert (masks[-1] == masks[-2]).all()  # the worst-case row is the last stage's outcome
    assert out.new == {tuple(k) for k in out.new} and len(out.new) == len(df)
    # rerun: everything is stored, nothing runs
    again = proto.run_reliable([target], data, store, STAGES, seed=0, batch_size=16, device="cpu")
    assert again.new == set() and len(store.read()) == len(df)


def test_cascade_deterministic_for_seed(trained, tmp_path, one_thread):
    target, data = trained
    a = proto.run_reliable([target], data, ResultsStore(tmp_path / "a.csv"), STAGES, seed=3, batch_size=16,
                           device="cpu").records
    b = proto.run_reliable([target], data, ResultsStore(tmp_path / "b.csv"), STAGES, seed=3, batch_size=16,
                           device="cpu").records
    assert list(a["robust_mask"]) == list(b["robust_mask"])


def test_resume_after_interrupt_between_stages(trained, tmp_path, one_thread):
    target, data = trained
    store = ResultsStore(tmp_path / "r.csv")
    seen = []

    def stop_after_first(ev_: dict) -> None:
        if ev_["kind"] == "stage":
            seen.append(ev_)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        proto.run_reliable([target], data, store, STAGES, seed=0, batch_size=16, device="cpu",
                           progress=stop_after_first)
    assert len(store.read()) == 1  # the finished stage is kept
    events = []
    proto.run_reliable([target], data, store, STAGES, seed=0, batch_size=16, device="cpu", progress=events.append)
    stages = [e for e in events if e["kind"] == "stage"]
    assert [e["resumed"] for e in stages] == [True, False, False]
    full = proto.run_reliable([target], data, ResultsStore(tmp_path / "full.csv"), STAGES, seed=0, batch_size=16,
                              device="cpu").records
    assert list(store.read()["robust_mask"]) == list(full["robust_mask"])  # same outcome as one uninterrupted run


def test_findings_from_history():
    white = proto.Stage(AttackSpec("fgsm", **EPS), "bptt")
    black = proto.Stage(AttackSpec("gaussian", eps=0.5, eps_str="0.5"), "none", white_box=False)
    found = proto.findings("m", [(white, 80, 1.0, None), (white, 70, 1.0, 5), (black, 69, 1.0, None)], 90, 100)
    names = [f.name for f in found]
    assert names.count("not-converged") == 2 and "gradient-masking" in names
    assert proto.findings("m", [(white, 80, 1.0, None), (white, 80, 1.0, 0), (black, 80, 1.0, None)], 90, 100) == []


def test_unknown_cascade_and_empty():
    with pytest.raises(BadSpec, match="choose from: reliable"):
        proto.cascade("fast")
    with pytest.raises(BadSpec):
        proto.run_reliable([], ev.Data("x", torch.zeros(1, 1, 8, 8), torch.zeros(1, dtype=torch.long)), None, [])


def test_retarget_scales_step_sizes():
    st = proto.retarget([proto.Stage(AttackSpec("pgd", steps=3, step_size=0.1, **EPS), "bptt")], 0.15, "0.15")
    assert st[0].spec.eps == 0.15 and st[0].spec.step_size == pytest.approx(0.05)
