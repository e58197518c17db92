"""`robench attack --suite` with a protocol: a protocol file end to end (probe, adaptive part, --save-adv confirmed
by verify-adv), and one-line refusals, before any work, of bad protocol files, versions and cascade options."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from cli_helpers import one_line, run_main
from test_cli_attack import ID, fake_load, zoo  # noqa: F401  (module-scoped tiny zoo)

import robench.eval.sweep
from robench.eval.adversarial import read_adv

TINY = """
name = "tiny"
version = 2
norm = "Linf"
eps = "0.3"
[adaptive]
threshold = 0.0
cap = 1
square_queries = [30]
[probe]
paths = ["bptt", "rate", "arctan:a=4"]
attack = "pgd-best"
steps = 2
step_size = "0.1"
images = 8
[[stage]]
attack = "fgsm"
grad = "probe:1"
[[stage]]
attack = "pgd-best"
grad = "probe:2"
steps = 3
step_size = "0.1"
[[stage]]
attack = "square"
queries = 20
white_box = false
"""


@pytest.fixture(autouse=True)
def tiny_dataset(monkeypatch):
    monkeypatch.setattr(robench.eval.sweep, "load_dataset", fake_load)


def test_a_protocol_file_runs_and_verify_adv_confirms_the_cascade(zoo, tmp_path, capsys):  # noqa: F811
    f = tmp_path / "tiny.toml"
    f.write_text(TINY)
    adv, out = tmp_path / "adv", tmp_path / "res"
    args = ["attack", "--zoo", str(zoo), "--model", ID, "--suite", str(f), "--n", "16", "--out", str(out),
            "--save-adv", str(adv), "--device", "cpu", "--batch-size", "16"]
    code, text, err = run_main(capsys, args)
    assert code == 0, err
    df = pd.read_csv(out / "results.csv")
    params = [json.loads(p) for p in df["params"]]
    probe = [p for p in params if p["stage"] == "probe"]
    assert len(probe) == 3 and all(p["images"] == 8 and p["version"] == 2 and "digest" in p for p in probe)
    first = df[[p["stage"] == 1 for p in params]].iloc[0]
    assert json.loads(first["params"])["path_requested"] == "probe:1" and first["grad"] in ("bptt", "rate",
                                                                                           "arctan:a=4")
    whole = df[df["grad"] == "worst"].iloc[0]
    assert params[-1]["stage"] == "all" and "every run of the cascade" in " ".join(text.split())
    f_whole = [p for p in adv.glob("*.safetensors") if read_adv(p).meta["grad"] == "worst"]
    assert len(f_whole) == 1
    meta = read_adv(f_whole[0]).meta
    assert len(meta["stage"]) == int(whole["clean_count"]) - int(whole["robust_count"])  # the run per image
    code, text, err = run_main(capsys, ["verify-adv", str(f_whole[0]), "--zoo", str(zoo), "--device", "cpu"])
    implied = f"robust accuracy implied: {100 * whole['robust_count'] / 16:.1f}%"
    assert code == 0 and implied in text and f"the results row claimed {100 * whole['robust_acc']:.1f}%" in text, err
    code, text, err = run_main(capsys, args)  # a rerun finds every row and writes nothing new
    assert code == 0 and "0 new rows" in " ".join(text.split()) and len(pd.read_csv(out / "results.csv")) == len(df)


@pytest.mark.parametrize("edit, message", [
    (("cap = 1", "cap = 0"), "[adaptive]: cap = 0; must be an integer >= 1"),
    (('attack = "fgsm"', 'attack = "fgsn"'), "stage 1: unknown attack 'fgsn'"),
    (('grad = "probe:2"', 'grad = "arctan:b=4"'), "stage 2: grad 'arctan:b=4'"),
    (("version = 2", "version = 2\ncolour = 1"), "unknown key 'colour'"),
])
def test_a_bad_protocol_file_is_refused_before_any_work(zoo, tmp_path, capsys, edit, message):  # noqa: F811
    f = tmp_path / "bad.toml"
    f.write_text(TINY.replace(*edit))
    code, _, err = run_main(capsys, ["attack", "--zoo", str(zoo), "--model", ID, "--suite", str(f), "--n", "4",
                                     "--out", str(tmp_path / "res"), "--save-adv", str(tmp_path / "adv")])
    assert code == 2 and one_line(err).startswith("Error:") and message in one_line(err), err
    assert not (tmp_path / "res").exists() and not (tmp_path / "adv").exists()


@pytest.mark.parametrize("extra, message", [
    (["--suite", "reliable", "--grad", "rate"], "--suite reliable fixes every attack, path and parameter; drop "
                                                "--attack, --grad"),
    (["--suite", "reliable-v1", "--steps", "5"], "--suite reliable-v1 fixes every attack"),
    (["--suite", "reliable-v9"], "unknown protocol version 9 of 'reliable'; versions: 1, 2"),
    (["--suite", "nope"], "unknown suite 'nope'; choose from: paper, quick, pgd-sweep, autoattack, noise, reliable, "
                          "reliable-v1, reliable-v2"),
])
def test_cascade_options_and_versions_are_refused(zoo, tmp_path, capsys, extra, message):  # noqa: F811
    code, _, err = run_main(capsys, ["attack", "--zoo", str(zoo), "--model", ID, "--n", "4", "--out",
                                     str(tmp_path / "res"), *extra])
    assert code == 2 and message in one_line(err), err
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize("suite", ["reliable", "reliable-v1"])
def test_a_norm_without_a_stage_list_is_one_error_and_writes_nothing(zoo, tmp_path, capsys, suite):  # noqa: F811
    code, _, err = run_main(capsys, ["attack", "--zoo", str(zoo), "--model", ID, "--n", "4", "--suite", suite,
                                     "--norm", "L1", "--out", str(tmp_path / "res"), "--save-adv",
                                     str(tmp_path / "adv")])
    want = "no reliable stage list for L1" if suite == "reliable" else "'reliable-v1' is a stage list for Linf, not L1"
    assert code == 2 and one_line(err).startswith("Error:") and want in one_line(err), err
    assert not (tmp_path / "res").exists() and not (tmp_path / "adv").exists()
