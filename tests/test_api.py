"""robench.evaluate / robench.benchmark: the reliable protocol in one call on any module, its result object, its
one-line refusals of bad input, resuming from a results file, and README's example (run from README's text)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_data, train_tiny
from torch import nn

import robench
from robench import api
from robench.attacks import AttackSpec
from robench.eval.stagelist import Stage
from robench.results.stats import wilson

ROOT = Path(__file__).resolve().parents[1]
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


def readme_example() -> str:
    """The Python block under README's 'One call from Python' heading."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## One call from Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs(monkeypatch, one_thread):
    code = readme_example()
    assert len(code.strip().splitlines()) == 5 and "robench.evaluate(" in code
    monkeypatch.chdir(ROOT)  # the example reads the shipped zoo from zoo/
    monkeypatch.setattr(api, "default_stages", lambda: QUICK)  # the same call, a quicker cascade
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert re.search(r"robust \d+\.\d% \[\d+\.\d, \d+\.\d\]", out.getvalue())
