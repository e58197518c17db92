"""The reliable cascade on a tiny trained model: stages attack only what is still robust, each finished stage is
stored with its mask, the worst-case row is the last stage's mask, a rerun resumes after an interruption between
stages, and the findings (not converged, gradient masking) come from the history."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny_data, train_tiny

import robench.eval.cascade as proto
import robench.eval.probe as probe_mod
import robench.eval.sweep as ev
from robench.attacks import AttackSpec
from robench.errors import BadSpec
from robench.eval import stagelist
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
    # stage 2's second restart is a row of its own ("2+1"), so every run is resumable and its breaks are known
    assert list(df["grad"]) == ["bptt", "rate", "rate", "none", "worst"]
    assert [json.loads(p)["stage"] for p in df["params"]] == [1, 2, "2+1", 3, "all"]
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
    assert [e["resumed"] for e in stages] == [True, False, False, False]
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
    with pytest.raises(BadSpec, match="unknown protocol 'fast'; choose from: reliable, reliable-v1"):
        proto.cascade("fast")
    with pytest.raises(BadSpec):
        proto.run_reliable([], ev.Data("x", torch.zeros(1, 1, 8, 8), torch.zeros(1, dtype=torch.long)), None, [])


def test_retarget_scales_step_sizes():
    st = proto.retarget([proto.Stage(AttackSpec("pgd", steps=3, step_size=0.1, **EPS), "bptt")], 0.15, "0.15")
    assert st[0].spec.eps == 0.15 and st[0].spec.step_size == pytest.approx(0.05)


# ------------------------------------------------------------------------------- version 2: probe, adaptive part
class Threshold(torch.nn.Module):
    """Class 1 when the mean pixel exceeds 0.5: images at 0.45 are correct (class 0) until pushed by 0.1."""

    def forward(self, x):
        s = (x.flatten(1).mean(1) - 0.5) * 10
        return torch.stack([-s, s], 1)


class Scripted:
    """Breaks the first ``script[i]`` images it is given on its i-th call (0 after the script), others untouched."""

    def __init__(self, script):
        self.script, self.calls = list(script), 0

    def __call__(self, x, y):
        k = self.script[self.calls] if self.calls < len(self.script) else 0
        self.calls += 1
        out = x.clone()
        out[:k] += 0.1
        return out


class Coin:
    """Breaks each image it is given with probability ``p``, from torch's generator (seeded per run)."""

    def __init__(self, p):
        self.p = p

    def __call__(self, x, y):
        return x + 0.1 * (torch.rand(len(x)) < self.p).float().view(-1, 1, 1, 1)


STUB = ev.Target("stub", "cd" * 32, Threshold(), "stub")
STUB_DATA = ev.Data("stub:test", torch.full((40, 1, 4, 4), 0.45), torch.zeros(40, dtype=torch.long))
E1 = dict(eps=0.1, eps_str="0.1")


def _v2(white, black=None, cap=3, queries=()):
    stages = [proto.Stage(AttackSpec(f"w{i}", attack=a, **E1), "bptt") for i, a in enumerate(white)]
    if black is not None:
        stages.append(proto.Stage(AttackSpec("b", attack=black, **E1), "none", white_box=False))
    return proto.Protocol("reliable", 2, tuple(stages), stagelist.Adaptive(0.05, cap, tuple(queries)))


def _stages(df):
    return [json.loads(p)["stage"] for p in df["params"]]


def test_adaptive_restarts_stop_when_a_restart_adds_nothing(tmp_path):
    # threshold 0.05 * 40 = 2: stage 2 still broke 3, so stage 1 (the strongest, 5) restarts until one breaks <= 2
    p = _v2([Scripted([5, 4, 1, 9]), Scripted([3])])
    out = proto.run_reliable([STUB], STUB_DATA, ResultsStore(tmp_path / "r.csv"), p, batch_size=64, device="cpu")
    df = out.records
    assert _stages(df) == [1, 2, "1+1", "1+2", "all"]
    assert list(df["robust_count"]) == [35, 32, 28, 27, 27] and list(df["grad"])[-1] == "worst"
    assert not [f for f in out.findings if f.name == "not-converged"] and df["flags"].iloc[-1] in ("", "nan")


def test_adaptive_restarts_stop_at_the_cap_and_flag_it(tmp_path):
    p = _v2([Scripted([5, 4, 4, 4, 4]), Scripted([3])], cap=3)
    out = proto.run_reliable([STUB], STUB_DATA, ResultsStore(tmp_path / "r.csv"), p, batch_size=64, device="cpu")
    assert _stages(out.records) == [1, 2, "1+1", "1+2", "1+3", "all"]
    assert [f.name for f in out.findings] == ["not-converged"] and out.records["flags"].iloc[-1] == "not-converged"


def test_no_adaptive_run_when_the_last_stage_converged(tmp_path):
    p = _v2([Scripted([9]), Scripted([2])])  # the last white-box stage broke 2 <= 2
    out = proto.run_reliable([STUB], STUB_DATA, None, p, batch_size=64, device="cpu")
    assert _stages(out.records) == [1, 2, "all"]


def test_black_box_breaks_flag_masking_and_escalate_its_budget(tmp_path):
    p = _v2([Scripted([5]), Scripted([1])], black=Scripted([4, 3, 2]), queries=(10, 20, 30))
    out = proto.run_reliable([STUB], STUB_DATA, ResultsStore(tmp_path / "r.csv"), p, batch_size=64, device="cpu")
    df = out.records
    assert _stages(df) == [1, 2, 3, "3+1", "3+2", "all"]  # 4 > 2, 3 > 2, then 2 <= 2: stop before the last budget
    assert [f.name for f in out.findings] == ["gradient-masking"]
    assert df["flags"].iloc[2] == "gradient-masking" and df["flags"].iloc[-1] == "gradient-masking"


def test_resume_after_a_kill_in_the_adaptive_part(tmp_path):
    def protocol():
        return _v2([Coin(0.3), Coin(0.3)], cap=4)

    full = proto.run_reliable([STUB], STUB_DATA, ResultsStore(tmp_path / "full.csv"), protocol(), seed=1,
                              batch_size=8, device="cpu").records
    assert any("+" in str(s) for s in _stages(full))  # the adaptive part ran
    store = ResultsStore(tmp_path / "r.csv")

    def kill_in_adaptive(e):
        if e["kind"] == "stage" and "+" in str(e["stage"]):
            raise KeyboardInterrupt  # as SIGKILL: the run's row is stored, nothing after it

    with pytest.raises(KeyboardInterrupt):
        proto.run_reliable([STUB], STUB_DATA, store, protocol(), seed=1, batch_size=8, device="cpu",
                           progress=kill_in_adaptive)
    assert len(store.read()) == _stages(full).index(next(s for s in _stages(full) if "+" in str(s))) + 1
    events = []
    proto.run_reliable([STUB], STUB_DATA, store, protocol(), seed=1, batch_size=8, device="cpu",
                       progress=events.append)
    df = store.read()
    assert _stages(df) == _stages(full) and list(df["robust_mask"]) == list(full["robust_mask"])
    assert [e["resumed"] for e in events if e["kind"] == "stage"][:3] == [True, True, True]


def test_probe_ranks_paths_and_stages_use_the_ranking(trained, tmp_path, one_thread):
    target, data = trained
    probe = stagelist.Probe(AttackSpec("pgd-best", steps=2, step_size=0.1, **EPS), ("bptt", "rate",
                                                                                  "arctan:a=4"), 16)
    p = proto.Protocol("reliable", 2, (proto.Stage(AttackSpec("fgsm", **EPS), "probe:2"),
                                       proto.Stage(AttackSpec("fgsm", **EPS), "probe:1")), None, probe)
    df = proto.run_reliable([target], data, ResultsStore(tmp_path / "r.csv"), p, seed=0, batch_size=16,
                            device="cpu").records
    rows = df[[json.loads(q)["stage"] == "probe" for q in df["params"]]]
    assert list(rows["grad"]) == ["bptt", "rate", "arctan:a=4"]  # every path that applies, in the file's order
    broke = dict(zip(rows["grad"], rows["clean_count"] - rows["robust_count"], strict=True))
    ranking = probe_mod.rank(broke, [p.key for p in probe.paths])  # the rows hold the keys
    stages = df[[isinstance(json.loads(q)["stage"], int) for q in df["params"]]]
    assert list(stages["grad"]) == [ranking[1], ranking[0]]
    assert [json.loads(q)["path_requested"] for q in stages["params"]] == ["probe:2", "probe:1"]
    masks = _masks(rows)
    assert all(not m[16:].any() or (m[16:] == masks[0][16:]).all() for m in masks)  # images past 16: untouched


def test_paths_that_do_not_apply_run_through_a_named_substitute(tmp_path):
    """A model without spiking neurons: only bptt applies; a probe probes only it, and a stage asking for a
    surrogate runs its own gradient under the name bptt, recording what it asked for."""
    probe = stagelist.Probe(AttackSpec("fgsm", **E1), ("bptt", "rate", "arctan:a=4"), 8)
    p = proto.Protocol("reliable", 2, (proto.Stage(AttackSpec("fgsm", **E1), "arctan:a=4"),
                                       proto.Stage(AttackSpec("fgsm", **E1), "probe:2")), None, probe)
    df = proto.run_reliable([STUB], STUB_DATA, None, p, batch_size=64, device="cpu").records
    assert list(df["grad"]) == ["bptt", "bptt", "bptt", "worst"]  # probe (bptt only), stage 1, stage 2, whole
    asked = [json.loads(q).get("path_requested") for q in df["params"]]
    assert asked == [None, "arctan:a=4", "probe:2", None]
    v1 = proto.run_reliable([STUB], STUB_DATA, None, [proto.Stage(AttackSpec("fgsm", **E1), "rate")], batch_size=64,
                            device="cpu").records
    assert list(v1["grad"]) == ["bptt", "worst"] and json.loads(v1["params"].iloc[0])["path_requested"] == "rate"
