"""robench.evaluate / robench.benchmark: the reliable protocol in one call on any module, its result object, its
one-line refusals of bad input, resuming from a results file, and the verified adversarial examples it returns
(README's example and its output: tests/test_readme.py)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny_data, train_tiny
from torch import nn

import robench
from robench.attacks import AttackSpec
from robench.eval.stagelist import Stage
from robench.results.stats import wilson

EPS = dict(eps=0.3, eps_str="0.3")
QUICK = [Stage(AttackSpec("fgsm", **EPS), "bptt"), Stage(AttackSpec("pgd", steps=3, step_size=0.1, **EPS), "bptt"),
         Stage(AttackSpec("square", queries=20, **EPS), "none", white_box=False)]


@pytest.fixture(scope="module")
def tiny():
    x, y = make_tiny_data(32, 2)
    return train_tiny(), x, y


def run(model, x, y, **kw):
    return robench.evaluate(model, x, y, eps=kw.pop("eps", 0.15), stages=kw.pop("stages", QUICK), batch_size=16,
                            device="cpu", **kw)


def test_result_is_consistent_and_serialises(tiny, tmp_path, one_thread):
    model, x, y = tiny
    r = run(model, x, y, name="tiny")
    assert r.model == "tiny" and r.n == len(x) and r.eps_str == "0.15" and r.protocol.startswith("reliable")
    assert r.robust_mask.dtype == torch.bool and r.robust_mask.shape == (len(x),)
    assert r.robust_count == int(r.robust_mask.sum()) and r.robust_acc == r.robust_count / r.n
    assert r.interval == wilson(r.robust_count, r.n) and r.interval[0] <= r.robust_acc <= r.interval[1]
    with torch.inference_mode():
        clean = model(x).argmax(1) == y
    assert not (r.robust_mask & ~clean).any() and r.clean_count == int(clean.sum())  # robust only if clean-correct
    assert list(r.stages["stage"]) == [1, 2, 3] and list(r.stages["grad"]) == ["bptt", "bptt", "none"]
    assert int(r.stages["broken"].sum()) == r.clean_count - r.robust_count
    assert r.stages["robust_acc"].iloc[-1] == r.robust_acc
    d = json.loads(r.to_json(tmp_path / "r.json"))
    assert d == json.loads((tmp_path / "r.json").read_text())
    assert d["robust_count"] == r.robust_count and d["robust_ci"] == list(r.interval) and len(d["stages"]) == 3
    bits = torch.tensor(list(bytes.fromhex(d["robust_mask"])), dtype=torch.uint8)
    decoded = ((bits.unsqueeze(1) >> torch.arange(8)) & 1).flatten()[: r.n].bool()  # packbits, little bit order
    assert torch.equal(decoded, r.robust_mask)
    assert "robust" in str(r) and "0.15" in str(r)


def test_defaults_write_nothing_and_a_results_file_resumes(tiny, tmp_path, monkeypatch, one_thread):
    model, x, y = tiny
    monkeypatch.chdir(tmp_path)
    run(model, x, y)
    assert list(tmp_path.iterdir()) == []  # no sha256, dataset name or results file needed, nothing written
    first = run(model, x, y, results=tmp_path / "out" / "r.csv")
    events = []
    again = run(model, x, y, results=tmp_path / "out" / "r.csv", progress=events.append)
    assert [e["resumed"] for e in events if e["kind"] == "stage"] == [True, True, True]
    assert torch.equal(first.robust_mask, again.robust_mask)
    fresh = []
    other = run(model, x[:16], y[:16], results=tmp_path / "out" / "r.csv", progress=fresh.append)
    assert other.dataset != first.dataset  # other images are other cells, never a stale row
    assert [e["resumed"] for e in fresh if e["kind"] == "stage"] == [False, False, False]


def test_non_spiking_and_plain_torch_models(one_thread):
    torch.manual_seed(0)
    x, y = make_tiny_data(16, 3)
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).eval()
    r = run(cnn, x, y)
    assert r.model == "Sequential" and 0 <= r.robust_acc <= r.clean_acc and r.flags == []
    rate = [Stage(AttackSpec("fgsm", **EPS), "bptt"), Stage(AttackSpec("fgsm", **EPS), "arctan:a=4")]
    r = run(cnn, x, y, stages=rate)  # a surrogate path on a model without spiking neurons: said, not hidden
    assert "path-substituted" in r.flags and "stage 2 asked for arctan:a=4 and ran through bptt" in r.messages[-1]


@pytest.mark.parametrize("make, framework, step", [
    ("sj", "spikingjelly", "multi"), ("snn_net", "snntorch", "single")])
def test_spikingjelly_and_snntorch_through_the_adapter(make, framework, step, one_thread):
    pytest.importorskip(framework)
    import foreign_nets

    torch.manual_seed(0)
    net = getattr(foreign_nets, make)()
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(12, 1, 28, 28, generator=g), torch.arange(12) % 10
    r = run(net, x, y, framework=framework, T=2, step_mode=step)
    assert r.n == 12 and r.robust_count <= r.clean_count
    with pytest.raises(ValueError, match="needs T"):
        robench.evaluate(net, x, y, framework=framework)


def test_a_zoo_id_instead_of_a_module(trained_zoo, one_thread):
    zoo, card, _ = trained_zoo
    x, y = make_tiny_data(16, 4)
    r = robench.evaluate(card.id, x, y, eps=0.15, zoo=zoo, stages=QUICK, batch_size=16, device="cpu")
    assert r.model == card.id and r.sha256 == card.sha256


class Counter(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.calls = nn.Linear(64, 2), 0

    def forward(self, x):
        self.calls += 1
        return self.fc(x.flatten(1)) + self.calls


BAD = {
    "probabilities": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 2), nn.Softmax(-1)), None, "probabilities"),
    "state": (Counter, None, "keeps state"),
    "above one": (None, lambda x, y: (x * 2, y), r"x ranges over \[.*\]; accepted: images in \[0, 1\]"),
    "below zero": (None, lambda x, y: (x - 0.5, y), r"x ranges over \[-0\.4.*; accepted: images in \[0, 1\]"),
    "nan": (None, lambda x, y: (x.masked_fill(x > 0.9, float("nan")), y), "NaN"),
    "lengths": (None, lambda x, y: (x, y[:-1]), "32 images but y 31 labels"),
    "float labels": (None, lambda x, y: (x, y.float()), "integer class labels"),
    "label range": (None, lambda x, y: (x, y + 5), "2 outputs, but y holds the label 6"),
    "3d images": (None, lambda x, y: (x[:, 0], y), r"accepted: images \[N, C, H, W\]"),
    "uint8": (None, lambda x, y: ((x * 255).to(torch.uint8), y), "divide uint8 by 255"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_value_error(case, tiny):
    make, change, pattern = BAD[case]
    model, x, y = tiny
    if make is not None:
        torch.manual_seed(0)
        model = make().eval()
    if change is not None:
        x, y = change(x, y)
    with pytest.raises(ValueError, match=pattern) as e:
        run(model, x, y)
    assert "\n" not in str(e.value) and isinstance(e.value, robench.RobenchError)


def test_bad_eps_and_bad_model_type(tiny):
    model, x, y = tiny
    with pytest.raises(ValueError, match="eps"):
        robench.evaluate(model, x, y, eps="-1")
    with pytest.raises(ValueError, match="one budget"):
        robench.evaluate(model, x, y, eps="2/255,4/255")
    with pytest.raises(ValueError, match="torch.nn.Module or a zoo id"):
        robench.evaluate(lambda t: t, x, y)
    with pytest.raises(ValueError, match="give images x"):
        robench.evaluate(model)


def test_benchmark_loads_the_shipped_subset(one_thread):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10)).eval()
    r = robench.benchmark(net, "fashion-mnist", n=8, split="subset", eps="8/255", stages=QUICK, device="cpu")
    assert r.dataset.startswith("data:") and r.n == 8 and r.eps_str == "8/255"


# ------------------------------------------------------------------------------------- adversarial examples
def check_examples(model, x, y, r, norm="Linf"):
    """Every returned example is misclassified and inside the ball; they cover exactly the broken images."""
    from robench.attacks.norms import dist, slack

    adv = r.adv
    with torch.inference_mode():
        clean = model(x).argmax(1) == y
        pred = model(adv.x_adv).argmax(1)
    assert adv.x_adv.shape == (len(adv), *x.shape[1:]) and adv.index.dtype == torch.int64
    assert torch.equal(adv.index, adv.index.sort().values) and len(set(adv.stage)) >= 1
    assert (pred != y[adv.index]).all()
    assert (dist(adv.x_adv, x[adv.index], norm) <= r.eps + slack(r.eps, norm)).all()
    assert adv.x_adv.min() >= 0 and adv.x_adv.max() <= 1
    broken = (clean & ~r.robust_mask).nonzero().flatten()
    assert torch.equal(adv.index, broken) and len(adv) == r.clean_count - r.robust_count > 0


def test_return_adv_gives_the_verified_examples_of_exactly_the_broken_images(tiny, tmp_path, one_thread):
    model, x, y = tiny
    r = run(model, x, y, return_adv=True)
    check_examples(model, x, y, r)
    assert sorted({int(s) for s in r.adv.stage}) == sorted(
        int(s) for s, b in zip(r.stages["stage"], r.stages["broken"], strict=True) if b)  # the run that broke it
    d = json.loads(r.to_json())  # JSON-able: no tensors, the count and the indices
    assert d["adv_count"] == len(r.adv) and d["adv_index"] == r.adv.index.tolist()
    assert f"adversarial examples: {len(r.adv)} verified" in str(r)
    assert run(model, x, y).adv is None and json.loads(run(model, x, y).to_json())["adv_count"] is None


def test_return_adv_in_l2_and_after_a_resume(tiny, tmp_path, one_thread):
    model, x, y = tiny
    l2 = [Stage(AttackSpec("fgsm", eps=1.0, norm="L2"), "bptt"),
          Stage(AttackSpec("pgd-best", eps=1.0, steps=5, norm="L2"), "bptt")]
    r = run(model, x, y, stages=l2, eps=1.5, return_adv=True)
    assert r.norm == "L2" and r.eps == 1.5 and "eps 1.5 (L2)" in str(r)
    check_examples(model, x, y, r, "L2")
    with pytest.raises(ValueError, match="norm 'Linf', but the stages given are for L2"):
        run(model, x, y, stages=l2, norm="Linf")
    res, adv = tmp_path / "r.csv", tmp_path / "adv"
    first = run(model, x, y, results=res, save_adv=adv, return_adv=True)
    again = run(model, x, y, results=res, save_adv=adv, return_adv=True)  # every run resumed: read back
    assert torch.equal(again.adv.index, first.adv.index) and torch.equal(again.adv.x_adv, first.adv.x_adv)
    assert again.adv.stage == first.adv.stage
    with pytest.raises(ValueError, match="return_adv: the results file already holds runs of"):
        run(model, x, y, results=res, return_adv=True)  # stored runs, their examples nowhere: said, not faked


def test_a_norm_without_a_stage_list_is_refused(tiny):
    model, x, y = tiny
    with pytest.raises(ValueError, match="no reliable stage list for L1"):
        robench.evaluate(model, x, y, eps=10.0, norm="L1")
