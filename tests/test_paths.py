"""The gradient-path registry: parsing and canonical keys, P.grad_mode with any path, the fused engine against the
reference loop for every path (LIF and DLIF, T = 1..8), bptt unchanged, ASSG statistics only in attack forwards,
and the places paths reach: results keys, the grad-gap check, the evaluation and `--grad`."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import torch
from cli_helpers import one_line, run_main
from conftest import TINY

import robench.eval.sweep as ev
from robench.attacks import AttackSpec
from robench.errors import BadSpec
from robench.eval.checks import grad_gap
from robench.results import ResultsStore, validate
from robench.snn import paths as P
from robench.snn.models import ModelConfig, build_model
from robench.snn.neurons import ENGINES, GradMode, SpikingNeuron, set_engine, spiking_neurons
from robench.snn.pathkeys import PATH_PARAMS, GradPath, is_path_key
from robench.snn.surrogates import arctan_derivative

KEYS = ["bptt", "rate", "triangle:w=0.5", "triangle:w=2", "sigmoid:k=4", "arctan:a=2", "rectangle:w=1",
        "assg:A=0.425", "assg:A=0.35"]
F64 = torch.float64
TINY_TS = (1, 8)  # whole-model checks; the per-neuron check covers every T in 1..8


# -------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("text, keys", [
    ("bptt", ["bptt"]), ("both", ["bptt", "rate"]), ("triangle:w=0.50", ["triangle:w=0.5"]),
    ("sigmoid:k=4.0", ["sigmoid:k=4"]), (" arctan:a=2e0 ", ["arctan:a=2"]), ("rectangle:w=1", ["rectangle:w=1"]),
    ("assg", ["assg:A=0.425"]), ("assg:A=.4", ["assg:A=0.4"]), ("triangle:w=1e-5", ["triangle:w=1e-05"]),
    ("triangle:w=0.5|1|2", ["triangle:w=0.5", "triangle:w=1", "triangle:w=2"]),
    ("rate,bptt,rate,both", ["rate", "bptt"]), (["bptt", "sigmoid:k=2,sigmoid:k=2.0"], ["bptt", "sigmoid:k=2"]),
])
def test_parse_paths_gives_canonical_keys(text, keys):
    assert [p.key for p in P.parse_paths(text)] == keys


def test_keys_round_trip_and_are_recognised_without_torch():
    for p in P.parse_paths(",".join([*KEYS, "sweep"])):
        assert is_path_key(p.key) and GradPath.from_key(p.key) == p and P.parse_paths(p.key) == [p]
        assert P.parse_paths(p) == [p]  # a GradPath passes through (checked again)
    for bad in ("sideways", "worst", "none", "triangle", "triangle:w=0.50", "triangle:k=1", "bptt:w=1",
                "triangle:w=inf", "Triangle:w=1", "", 3):
        assert not is_path_key(bad)
    code = "import sys, robench.results, robench.snn.pathkeys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sweep_preset_has_two_shapes_and_two_widths_each():
    sweep = P.parse_paths("sweep")
    assert [p.key for p in sweep] == list(P.PRESETS["sweep"])
    by_shape = {}
    for p in sweep:
        by_shape.setdefault(p.name, set()).add(p.params)
    assert len(by_shape) >= 2 and all(len(v) >= 2 for v in by_shape.values())


def test_registry_matches_the_torch_free_syntax():
    assert {n: ((P.PATHS.get(n).param,) if P.PATHS.get(n).param else ()) for n in P.PATHS} == PATH_PARAMS


def test_every_path_has_one_kind():
    """bptt is the model's own surrogate, rate the rate gradient, every other path a surrogate swapped in at attack
    time (assg the adaptive one): what neurons, the surrogate swap and the foreign adapter decide by."""
    for p in P.parse_paths(",".join(KEYS)):
        assert [p.is_own, p.is_rate, p.swaps_surrogate].count(True) == 1, p
        assert p.is_adaptive == (p.name == "assg") and (not p.is_adaptive or p.swaps_surrogate)
    assert [p.key for p in P.parse_paths(",".join(KEYS)) if p.is_own or p.is_rate] == ["bptt", "rate"]
    assert not GradPath("sideways").swaps_surrogate  # an unregistered name is no surrogate


@pytest.mark.parametrize("text, match", [
    ("sideways", r"^--grad 'sideways'; choose from: bptt, rate, both, sweep, triangle:w=W, sigmoid:k=K, "
                 r"arctan:a=A, rectangle:w=W, assg\[:A=0.425\]$"),
    ("bptt,nope", "--grad 'nope'; choose from: bptt"), ("", "--grad ''; choose from"),
    ("triangle", r"--grad 'triangle': triangle needs w=VALUE \(triangle:w=W\)"),
    ("triangle:k=1", "--grad 'triangle:k=1': triangle takes w=VALUE"),
    ("triangle:w=", "--grad 'triangle:w=': w='' is not a finite number"),
    ("sigmoid:k=abc", "--grad 'sigmoid:k=abc': k='abc' is not a finite number"),
    ("arctan:a=0", r"--grad 'arctan:a=0': a must be a finite number > 0"),
    ("rectangle:w=nan", "is not a finite number"), ("triangle:w=0.5|-1", "w must be a finite number > 0"),
    ("assg:A=0.5", r"--grad 'assg:A=0.5': A must be in \[0.35, 0.49\]"),
    ("rate:w=1", "--grad 'rate:w=1': rate takes no parameter; choose from"),
])
def test_bad_paths_are_one_line_errors(text, match):
    with pytest.raises(BadSpec, match=match) as e:
        ev.parse_grads(text)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------- P.grad_mode
def test_grad_mode_accepts_keys_and_paths_and_restores(tiny_model):
    with P.grad_mode(tiny_model, "sigmoid:k=4.0"):
        assert P.get_grad_mode(tiny_model) == GradPath("sigmoid", (("k", 4.0),))
        with P.grad_mode(tiny_model, GradPath("rate")):
            assert P.get_grad_mode(tiny_model) is GradMode.rate
        assert {n.path.key for n in spiking_neurons(tiny_model)} == {"sigmoid:k=4"}
    assert P.get_grad_mode(tiny_model) is GradMode.bptt
    P.set_grad_mode(tiny_model, "assg")
    assert spiking_neurons(tiny_model)[0].grad_mode == GradPath("assg", (("A", 0.425),))
    assert P.parse_grad_mode("triangle:w=2").key == "triangle:w=2" and P.parse_grad_mode("bptt") is GradMode.bptt
    for bad in ("both", "sweep", "bptt,rate"):
        with pytest.raises(BadSpec, match="one path expected"):
            P.set_grad_mode(tiny_model, bad)


# ------------------------------------------------------------------------------------- both engines
def _currents(T: int, seed: int) -> torch.Tensor:
    """Random ``[T, 3, 7]`` currents, a third of them on or next to the threshold."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(T, 3, 7, generator=g, dtype=F64) * 1.6 - 0.2
    near = torch.rand(x.shape, generator=g) < 1 / 3
    return torch.where(near, 1.0 + torch.randint(-2, 3, x.shape, generator=g).to(F64) * 2.2e-16, x)


def _grads(engine: str, key: str, T: int, stable: bool, x0: torch.Tensor, w: torch.Tensor, forwards: int = 3):
    """Input and gain gradients of ``sum(w * n(x))`` over several forwards of one run (ASSG moves each time)."""
    n = SpikingNeuron(T=T, stable=stable).to(F64)
    if stable:
        with torch.no_grad():
            n.gains.copy_(torch.linspace(0.5, 1.5, T, dtype=F64))
    set_engine(n, engine)
    out = []
    with P.grad_mode(n, key):
        for _ in range(forwards):
            x = x0.clone().requires_grad_(True)
            (n(x) * w).sum().backward()
            out.append(x.grad)
    return torch.stack(out), (None if n.gains is None else n.gains.grad)


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("stable", [False, True], ids=["lif", "dlif"])
@pytest.mark.parametrize("T", range(1, 9))
def test_fused_matches_reference_per_neuron(key, stable, T):
    x0 = _currents(T, T)
    w = torch.randn(x0.shape, generator=torch.Generator().manual_seed(T + 7), dtype=F64)
    fused, ref = _grads("fused", key, T, stable, x0, w), _grads("reference", key, T, stable, x0, w)
    torch.testing.assert_close(fused, ref, rtol=1e-12, atol=1e-12)
    assert fused[0].abs().sum() > 0


@pytest.fixture(scope="module")
def busy_models():
    """vgg5 tiny models (LIF, DLIF) at T = 1..8 whose BN statistics come from real data, so eval mode fires."""
    from conftest import make_tiny_data

    x = make_tiny_data(32)[0]
    out = {}
    for neuron in ("lif", "stable"):
        for T in TINY_TS:
            torch.manual_seed(0)
            m = build_model(ModelConfig(**{**TINY, "T": T}), neuron=neuron)
            for bn in m.modules():
                if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
                    bn.momentum = None
            with torch.no_grad():
                m.train()(x)
            out[neuron, T] = m.eval().requires_grad_(False)
    return out


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("neuron", ["lif", "stable"])
def test_fused_matches_reference_on_a_tiny_model(busy_models, tiny_data, key, neuron):
    x0, y = tiny_data[0][:4], tiny_data[1][:4]
    for T in TINY_TS:
        model, out = busy_models[neuron, T], {}
        for engine in ENGINES:
            set_engine(model, engine)
            grads = []
            with P.grad_mode(model, key):
                for _ in range(2):  # ASSG's statistics move between the two forwards
                    x = x0.clone().requires_grad_(True)
                    torch.nn.functional.cross_entropy(model(x), y).backward()
                    grads.append(x.grad)
            out[engine] = torch.stack(grads)
        set_engine(model, "fused")
        torch.testing.assert_close(out["fused"], out["reference"], rtol=1e-4, atol=1e-7)
        assert out["fused"].abs().sum() > 0


@pytest.mark.parametrize("engine", ENGINES)
def test_bptt_is_the_training_triangle(tiny_model, tiny_data, engine):
    """bptt's numbers are unchanged: the same input gradient as the triangle path at the model's gamma = 1."""
    set_engine(tiny_model, engine)
    x0, y, g = tiny_data[0][:8], tiny_data[1][:8], {}
    for key in ("bptt", "triangle:w=1", "triangle:w=2"):
        x = x0.clone().requires_grad_(True)
        with P.grad_mode(tiny_model, key):
            torch.nn.functional.cross_entropy(tiny_model.train()(x), y).backward()
        g[key] = x.grad
    assert torch.equal(g["bptt"], g["triangle:w=1"]) and g["bptt"].abs().sum() > 0
    assert not torch.equal(g["bptt"], g["triangle:w=2"])


# ---------------------------------------------------------------------------------------------- ASSG
def _states(model):
    return [n.path_state for n in spiking_neurons(model)]


@pytest.mark.parametrize("engine", ENGINES)
def test_assg_statistics_move_only_in_attack_forwards(tiny_model, tiny_data, engine):
    set_engine(tiny_model, engine)
    tiny_model.requires_grad_(False)  # as while attacking: only the input needs a gradient
    x0 = tiny_data[0][:4]
    tiny_model(x0)  # outside grad_mode: bptt, no state at all
    assert all(s is None for s in _states(tiny_model))
    with P.grad_mode(tiny_model, "assg"):
        tiny_model(x0.clone().requires_grad_(True)).sum().backward()
        states = _states(tiny_model)
        assert all(s.forwards == 1 for s in states)
        M0 = [s.M.clone() for s in states]
        assert M0[0].shape[:2] == (spiking_neurons(tiny_model)[0].T, 4)
        with torch.no_grad():
            tiny_model(x0.clone().requires_grad_(True))
        with torch.inference_mode():
            tiny_model(x0)
        tiny_model(x0)  # input without requires_grad: no gradient needed
        assert all(s.forwards == 1 for s in states)
        assert all(torch.equal(a, s.M) for a, s in zip(M0, states, strict=True))
        tiny_model(x0.clone().requires_grad_(True))
        assert all(s.forwards == 2 for s in states) and not torch.equal(M0[0], states[0].M)
        P.reset_path_state(tiny_model)
        assert all(s.M is None and s.forwards == 0 for s in states)
        tiny_model(x0.clone().requires_grad_(True))
        torch.testing.assert_close(states[0].M, M0[0])  # fresh statistics: the first update again
        tiny_model(x0[:2].clone().requires_grad_(True))  # a new batch shape restarts them
        assert states[0].forwards == 1 and states[0].M.shape[1] == 2
    with P.grad_mode(tiny_model, "assg"):  # fresh on entry
        assert all(s.forwards == 0 for s in _states(tiny_model))


def test_assg_gradient_is_arctan_at_each_elements_sharpness():
    """T = 1: d s / d I = arctan'(I - v_th) with a = c / (M + r D + 1e-4) from one update of M = 1, D = 0."""
    n = SpikingNeuron(T=1).to(F64)
    x = (torch.rand(1, 2, 5, generator=torch.Generator().manual_seed(3), dtype=F64) * 2).requires_grad_(True)
    d = (x.detach() - n.v_th).abs()
    with P.grad_mode(n, "assg:A=0.4"):
        n(x).sum().backward()
        st = n.path_state
        torch.testing.assert_close(st.M, 0.9 + 0.1 * d)
        torch.testing.assert_close(st.D, 0.1 * (d - st.M).abs())
        a = st.c / (st.M + 1.5 * st.D + 1e-4)
    torch.testing.assert_close(x.grad, arctan_derivative(x.detach() - n.v_th, a), rtol=1e-12, atol=1e-12)
    assert a.std() > 0  # per element, not one sharpness
    assert n.path_state.M is None  # dropped on leaving grad_mode: inert outside the attack


# -------------------------------------------------------------------------------------- where it lands
def _row(grad: str, acc: float) -> dict:
    return {"model": "m", "sha256": "ab" * 32, "dataset": "d", "n": 10, "attack": "pgd", "params": "{}",
            "grad": grad, "eps": 8 / 255, "eps_str": "8/255", "clean_acc": 0.9, "robust_acc": acc,
            "clean_count": 9, "robust_count": int(acc * 10), "seconds": 1.0, "device": "cpu", "seed": 0,
            "versions": "{}", "timestamp": "t", "flags": ""}


def test_results_accept_every_path_key_and_grad_gap_compares_each_to_bptt():
    df = validate(pd.DataFrame([_row(k, 0.5) for k in [*KEYS, "worst", "none"]]), "t")
    assert len(df) == len(KEYS) + 2
    rows = [_row("bptt", 0.5), _row("rate", 0.45), _row("sigmoid:k=2", 0.2), _row("assg:A=0.425", 0.7),
            _row("worst", 0.1)]
    found = grad_gap(pd.DataFrame(rows), threshold=0.10)
    msg = found[0].message
    assert "sigmoid:k=2 gradient is 30.0 pt stronger than bptt" in msg
    assert "bptt gradient is 20.0 pt stronger than assg:A=0.425" in msg and "rate" not in msg


def test_evaluate_records_each_path_and_the_worst_case(tiny_model, tiny_data, tmp_path):
    x, y = tiny_data[0][:8], tiny_data[1][:8]
    store = ResultsStore(tmp_path / "r.csv")
    target = ev.Target("tiny", "ab" * 32, tiny_model, "tiny")
    spec = AttackSpec("pgd", eps=0.1, steps=2, step_size=0.05)
    out = ev.evaluate([target], [spec], "triangle:w=0.5|2,assg", ev.Data("tiny", x, y), store, device="cpu",
                      check_models=False)
    assert list(out.records["grad"]) == ["triangle:w=0.5", "triangle:w=2", "assg:A=0.425", "worst"]
    again = ev.evaluate([target], [spec], "triangle:w=0.50,triangle:w=2.0,assg:A=0.425", ev.Data("tiny", x, y),
                        store, device="cpu", check_models=False)
    assert again.ran == 0 and again.skipped == 4  # same keys (worst included): every cell is skipped


def test_evaluate_parses_each_path_once_and_carries_the_object_to_the_neurons(tiny_model, tiny_data, monkeypatch):
    """--grad text is parsed once; every batch's grad_mode gets the parsed GradPath, never text to parse again."""
    import robench.eval.cell

    parsed, given = [], []
    expand, grad_mode = P._expand, robench.eval.cell.grad_mode
    monkeypatch.setattr(P, "_expand", lambda item, label: parsed.append(item) or expand(item, label))
    monkeypatch.setattr(robench.eval.cell, "grad_mode", lambda m, mode: given.append(mode) or grad_mode(m, mode))
    P._checked.cache_clear()
    x, y = tiny_data[0][:16], tiny_data[1][:16]
    spec = AttackSpec("pgd", eps=0.1, steps=1, step_size=0.05)
    out = ev.evaluate([ev.Target("tiny", "ab" * 32, tiny_model, "tiny")], [spec], "sigmoid:k=4.0,assg",
                      ev.Data("tiny", x, y), device="cpu", check_models=False, batch_size=2)
    assert list(out.records["grad"]) == ["sigmoid:k=4", "assg:A=0.425", "worst"]
    paths = [GradPath("sigmoid", (("k", 4.0),)), GradPath("assg", (("A", 0.425),))]
    assert len(given) > 2 * len(paths) and set(given) == set(paths)  # several batches each, always the object
    assert parsed.count("sigmoid:k=4.0") == 1 and parsed.count("assg") == 1
    assert all(parsed.count(p.key) <= 1 for p in paths)  # an object is checked once, however many batches


def test_cli_grad_errors_are_one_line_and_write_nothing(capsys, tmp_path):
    for bad, text in [("sideways", "--grad 'sideways'; choose from: bptt, rate, both, sweep"),
                      ("triangle:w=-1", "w must be a finite number > 0")]:
        code, _, err = run_main(capsys, ["attack", "--model", "x", "--zoo", str(tmp_path / "zoo"), "--grad", bad,
                                         "--out", str(tmp_path / "r")])
        assert code == 2 and text in one_line(err)
    assert not (tmp_path / "r").exists()
    code, out, _ = run_main(capsys, ["attack", "-h"])
    assert code == 0 and "sigmoid:k=K" in out and "sweep" in out
