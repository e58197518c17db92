"""Property-based bad input: the eps/sigma parser and the numeric options of every command.

Whatever a user types, robench answers with data or with one line ``Error...``: exit 2 for a value it does not
accept, 1 for a runtime failure (here always "data not found", so nothing ever trains), never a traceback.
"""

from __future__ import annotations

import io
import math
import re
from contextlib import redirect_stderr, redirect_stdout
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from robench.cli import NAME_RE, main
from robench.data import DATASETS
from robench.eps import format_eps, parse_eps, parse_one
from robench.errors import BadSpec
from robench.results import ResultsStore
from robench.snn.models import ModelConfig, build_model
from robench.zoo import Card, save

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# argv can hold any text but NUL (and no lone surrogates)
ARG = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)


def _py_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


JUNK = ARG.filter(lambda v: not _py_number(v))


# --------------------------------------------------------------------------------------------- parser
@FAST
@given(st.one_of(ARG, st.from_regex(r"\A[-0-9./:, eE+]{0,24}\Z"), st.floats(), st.integers().map(str)))
@example("0:1:1e-320")  # a step so small that the count overflows
@example("0/" + "1" * 5000)  # past Python's int() digit limit
@example("1e400")
def test_parse_eps_answers_values_in_0_1_or_bad_spec(text):
    try:
        values = parse_eps(text)
    except BadSpec as e:
        assert "\n" not in str(e) and "--eps" in str(e)
        return
    assert values
    for v, s in values:
        assert isinstance(v, float) and math.isfinite(v) and 0 <= v <= 1
        (again,) = parse_eps(s)
        assert math.isclose(again[0], v, rel_tol=1e-5, abs_tol=1e-12)  # eps_str reads back as the value
    assert len({v for v, _ in values}) == len(values)


@FAST
@given(st.integers(0, 255))
def test_k_over_255_round_trips_exactly(k):
    ((v, s),) = parse_eps(f"{k}/255")
    assert v == k / 255 and s == ("0" if k == 0 else f"{k}/255")
    assert format_eps(v, Fraction(k, 255)) == s
    assert parse_eps(s) == [(v, s)]


@FAST
@given(st.integers(0, 255), st.integers(0, 255), st.integers(1, 64))
def test_ranges_of_k_over_255_are_exact_and_stop_at_stop(a, b, c):
    text = f"{a}/255:{b}/255:{c}/255"
    if b < a:
        with pytest.raises(BadSpec, match="stop is below start"):
            parse_eps(text)
        return
    values = parse_eps(text)
    assert [v for v, _ in values] == [(a + i * c) / 255 for i in range((b - a) // c + 1)]
    assert all(s == format_eps(v, Fraction(round(v * 255), 255)) for v, s in values)


@FAST
@given(st.floats(min_value=0, max_value=1), st.floats(min_value=0, max_value=1),
       st.floats(min_value=1e-6, max_value=1))
def test_decimal_ranges_never_pass_stop(a, b, c):
    try:
        values = parse_eps(f"{a!r}:{b!r}:{c!r}")
    except BadSpec as e:
        assert "stop is below start" in str(e) or "values" in str(e) or "too long" in str(e)
        return
    assert all(min(a, b) <= v <= b for v, _ in values)


# ------------------------------------------------------------------------------------------------ CLI
def _cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code, out.getvalue(), err.getvalue()


def _one_error(code: int, out: str, err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error"), err
    assert "Traceback" not in out + err and out == ""
    return lines[0]


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("props")
    (d / "empty").mkdir()
    (d / "empty.pt").write_bytes(b"")
    cfg = ModelConfig(arch="vgg5", T=2, width=0.125, fc=16, **DATASETS.get("fashion-mnist").model_kwargs())
    save(build_model(cfg), Card.new("tiny", cfg, "fashion-mnist"), d / "attack-zoo")
    row = {"model": "tiny", "sha256": "0" * 64, "dataset": "fashion-mnist:test", "n": 8, "attack": "fgsm",
           "params": "{}", "grad": "bptt", "eps": 8 / 255, "eps_str": "8/255", "clean_acc": 0.5, "robust_acc": 0.25,
           "clean_count": 4, "robust_count": 2, "seconds": 0.1, "device": "cpu", "seed": 0, "versions": "{}",
           "timestamp": "2026-01-01T00:00:00+00:00", "flags": ""}
    ResultsStore(d / "results" / "results.csv").append([row, {**row, "grad": "rate"}])
    return d


INT_OPTS = {"-T": lambda v: v >= 1, "--fc": lambda v: v >= 1, "--pgd-steps": lambda v: v >= 1,
            "--epochs": lambda v: v >= 1, "--batch-size": lambda v: v >= 1, "--seed": lambda v: 0 <= v < 2**32,
            "--limit": lambda v: v >= 1, "--ckpt-every": lambda v: v >= 0}
FLOAT_OPTS = {"--width": lambda v: v > 0, "--tau": lambda v: 0 <= v <= 1, "--v-th": lambda v: v > 0,
              "--alpha": lambda v: v >= 0, "--kappa": lambda v: 0 <= v <= 1, "--lr": lambda v: v > 0,
              "--weight-decay": lambda v: v >= 0}
MODEL_OPTS = ("-T", "--fc", "--width", "--tau", "--v-th")


def _value_and_oracle(draw, opts: tuple[str, ...]) -> tuple[str, str, bool]:
    """(option, value, accepted?) with a value that is junk, an int, or a float (nan and inf too)."""
    opt = draw(st.sampled_from(opts))
    if opt in INT_OPTS:
        number = st.integers(-(2**40), 2**40).map(lambda v: (str(v), INT_OPTS[opt](v)))
    else:
        number = st.floats().map(lambda v: (repr(v), math.isfinite(v) and FLOAT_OPTS[opt](v)))
    value, ok = draw(st.one_of(number, JUNK.map(lambda v: (v, False))))
    return opt, value, ok


@st.composite
def train_option(draw):
    return _value_and_oracle(draw, tuple(INT_OPTS) + tuple(FLOAT_OPTS))


@st.composite
def import_option(draw):
    return _value_and_oracle(draw, MODEL_OPTS)


@FAST
@given(train_option())
def test_train_numeric_options(place, case):
    opt, value, accepted = case
    zoo, runs = place / "zoo", place / "runs"
    code, out, err = _cli(["train", "--recipe", "gaussian", opt, value, "--data-dir", str(place / "empty"),
                           "--zoo", str(zoo), "--runs", str(runs), "--device", "cpu"])
    line = _one_error(code, out, err)
    assert code == (1 if accepted else 2), line
    if accepted:
        assert "not found" in line  # got as far as loading the data
    assert not zoo.exists() and not runs.exists()


@FAST
@given(st.sampled_from(["--eps", "--sigma"]), st.one_of(ARG, st.floats().map(repr)))
def test_train_budget_options(place, opt, value):
    try:
        parse_one(value, opt)
        accepted = True
    except BadSpec:
        accepted = False
    code, out, err = _cli(["train", "--recipe", "gaussian", opt, value, "--data-dir", str(place / "empty"),
                           "--zoo", str(place / "zoo"), "--device", "cpu"])
    line = _one_error(code, out, err)
    assert code == (1 if accepted else 2), line


@FAST
@given(import_option())
def test_zoo_import_numeric_options(place, case):
    opt, value, accepted = case
    zoo = place / "import-zoo"
    code, out, err = _cli(["zoo", "import", str(place / "empty.pt"), "--id", "x", opt, value, "--zoo", str(zoo)])
    line = _one_error(code, out, err)
    assert code == (1 if accepted else 2), line
    if accepted:
        assert "cannot read" in line  # options passed; the empty file is what failed
    assert not zoo.exists()


@FAST
@given(st.one_of(st.integers(-(2**40), 2**40).map(str), JUNK))
@example("²")  # "²".isdigit() is True, yet it is no number
def test_data_subset_per_class(place, value):
    out_file = place / "subset" / "s.safetensors"
    code, out, err = _cli(["data", "subset", "--per-class", value, "--data-dir", str(place / "empty"),
                           "--out", str(out_file)])
    line = _one_error(code, out, err)
    accepted = _py_number(value) and 1 <= int(value) <= 1000  # JUNK is never a number
    assert code == (1 if accepted else 2), line
    assert not out_file.exists()


@FAST
@given(st.sampled_from(["show", "verify", "list-format"]), ARG)
def test_zoo_commands_on_random_names(place, monkeypatch, command, value):
    monkeypatch.chdir(place)
    zoo = str(place / "no-zoo")
    if command == "list-format":
        code, out, err = _cli(["zoo", "list", "--zoo", zoo, "--format", value])
        if value in ("table", "json"):
            assert code == 0 and err == ""
            return
    else:
        code, out, err = _cli(["zoo", command, "--zoo", zoo, "--", value])
    assert code == 2
    _one_error(code, out, err)


@FAST
@given(ARG)
def test_zoo_list_and_data_info_on_random_folders(place, monkeypatch, folder):
    monkeypatch.chdir(place / "empty")  # relative names land here, where nothing can be harmed
    for args in (["zoo", "list", "--zoo", folder, "--format", "json"], ["data", "info", "--data-dir", folder]):
        code, out, err = _cli(args)
        assert "Traceback" not in out + err
        assert code in (0, 1, 2)
        if code:
            _one_error(code, out, err)


@FAST
@given(st.one_of(ARG, st.from_regex(r"\A[a-z0-9][a-z0-9._-]{0,90}\Z")))
@example("mine\n")  # a final newline once passed the id check and would have named files "mine\n.json"
def test_zoo_import_ids(place, entry_id):
    from robench.zoo import ID_RE

    zoo = place / "id-zoo"
    code, out, err = _cli(["zoo", "import", str(place / "empty.pt"), "--id", entry_id, "--zoo", str(zoo)])
    line = _one_error(code, out, err)
    assert code == (1 if ID_RE.match(entry_id) else 2), line
    assert not zoo.exists()


# ----------------------------------------------------------------------------------------- attack, report
def _accepts(parse, value) -> bool:
    try:
        parse(value)
        return True
    except BadSpec:
        return False


ATTACK_INTS = {"--n": lambda v: v >= 1, "--seed": lambda v: 0 <= v < 2**32, "--steps": lambda v: v >= 1,
               "--restarts": lambda v: v >= 1}
ATTACK_TEXTS = {
    "--batch-size": lambda v: v == "auto" or (v.isascii() and v.isdigit() and int(v) >= 1),
    "--eps": lambda v: _accepts(parse_eps, v),
    "--step-size": lambda v: not v or _accepts(lambda t: parse_one(t, "--step-size"), v),
    "--name": lambda v: re.fullmatch(NAME_RE, v) is not None,
}


@st.composite
def attack_option(draw):
    opt = draw(st.sampled_from(sorted(ATTACK_INTS) + sorted(ATTACK_TEXTS)))
    if opt in ATTACK_INTS:
        v = draw(st.one_of(st.integers(-(2**70), 2**70), JUNK))
        return opt, str(v), isinstance(v, int) and ATTACK_INTS[opt](v)
    v = draw(st.one_of(ARG, st.integers(-5, 300).map(str), st.sampled_from(["auto", "8/255", "²", "0:1:1e-320"])))
    return opt, v, ATTACK_TEXTS[opt](v)


@FAST
@given(attack_option())
@example(("--batch-size", "²", False))  # "²".isdigit() is True, int("²") is not a number
@example(("--seed", str(2**70), False))  # overflowed torch's seeding at the first cell
def test_attack_options(place, case):
    opt, value, accepted = case
    out = place / "attack-results"
    code, stdout, err = _cli(["attack", "--model", "tiny", "--attack", "pgd", opt, value, "--zoo",
                              str(place / "attack-zoo"), "--data-dir", str(place / "empty"), "--out", str(out),
                              "--device", "cpu"])
    line = _one_error(code, stdout, err)
    assert code == (1 if accepted else 2), line
    if accepted:
        assert "not found" in line  # every option passed; the data is what is missing
    assert not out.exists()


SAFE = ARG.filter(lambda v: ".." not in v)  # relative to a scratch folder, never above it


@FAST
@given(st.sampled_from(["--results", "--out", "--model", "--attack", "--dataset", "--eps", "--grad"]), SAFE)
def test_report_options(place, monkeypatch, tmp_path_factory, opt, value):
    import robench.results.report

    def write_report(df, out, findings):  # the tables and PNGs are tested elsewhere; here: options only
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(str(len(df)))
        return {"md": out / "table.md"}

    monkeypatch.setattr(robench.results.report, "write_report", write_report)
    scratch = tmp_path_factory.mktemp("report")
    monkeypatch.chdir(scratch)
    args = {"--results": str(place / "results"), "--out": "rep"}
    args[opt] = "./" + value if opt in ("--results", "--out") else value
    results_before = (place / "results" / "results.csv").read_bytes()
    code, out, err = _cli(["report", *[a for kv in args.items() for a in kv]])
    assert "Traceback" not in out + err and code in (0, 1, 2), err
    if code:
        _one_error(code, out, err)
    else:
        assert (Path(args["--out"]) / "table.md").read_text() in ("1", "2")
    assert (place / "results" / "results.csv").read_bytes() == results_before
