"""The library verbs behind the commands, called from Python: ``run_attack`` (robench attack), ``make_report``
(robench report) and ``merge_results`` (robench results merge) give what the command gives, and refuse a bad
option before anything is written."""

from __future__ import annotations

import pandas as pd
import pytest
from test_cli_attack import fake_load, run, zoo  # noqa: F401  (module-scoped tiny zoo)

import robench.eval.sweep
from robench.errors import BadSpec, UsageError
from robench.eval.job import AttackOptions, prepare_attack, run_attack
from robench.results.report import make_report
from robench.results.shards import merge_results
from robench.snn.pathkeys import BPTT, RATE

STAMPS = ["seconds", "timestamp"]


@pytest.fixture(autouse=True)
def tiny_dataset(monkeypatch):
    monkeypatch.setattr(robench.eval.sweep, "load_dataset", fake_load)


def _options(zoo, out, **kw) -> AttackOptions:  # noqa: F811
    given = {"model": ["vgg5"], "attacks": ["fgsm,pgd"], "steps": 2, "n": 16, "zoo": zoo, "out": out, "device": "cpu"}
    return AttackOptions(**{**given, **kw})


def test_run_attack_stores_the_rows_the_command_stores(zoo, tmp_path, capsys):  # noqa: F811
    res = run_attack(_options(zoo, tmp_path / "lib"))
    assert res.part.writer and not res.cascade and len(res.evaluation.new) == 6
    code, _, err = run(capsys, ["attack", "--zoo", str(zoo), "-m", "vgg5", "-a", "fgsm,pgd", "--steps", "2",
                                "--n", "16", "--out", str(tmp_path / "cli"), "--device", "cpu"])
    assert code == 0, err
    lib, cli = (pd.read_csv(tmp_path / d / "results.csv").drop(columns=STAMPS) for d in ("lib", "cli"))
    pd.testing.assert_frame_equal(lib, cli)
    again = run_attack(_options(zoo, tmp_path / "lib"))  # a rerun skips every stored cell
    assert again.evaluation.new == set() and again.evaluation.skipped == 6


@pytest.mark.parametrize("kw, message", [
    ({"n": 0}, "--n 0; must be an integer >= 1"),
    ({"batch_size": "0"}, "--batch-size '0'"),
    ({"name": "a/b"}, "--name 'a/b'"),
    ({"suite": "reliable"}, "--suite reliable fixes every attack"),
    ({"shard": "0/2"}, "--shard needs --batch-size N"),
])
def test_prepare_attack_refuses_a_bad_option_and_writes_nothing(zoo, tmp_path, kw, message):  # noqa: F811
    with pytest.raises(BadSpec, match=message.replace("(", r"\(").replace("[", r"\[")):
        prepare_attack(_options(zoo, tmp_path / "res", **kw))
    assert not (tmp_path / "res").exists()


def test_prepare_attack_leaves_the_options_as_given(zoo, tmp_path):  # noqa: F811
    opts = _options(zoo, tmp_path / "res", norm="linf")
    job = prepare_attack(opts)
    assert opts.norm == "linf" and job.options.norm == "Linf" and job.batch_size is None
    assert job.grads == [BPTT, RATE]  # parsed once, carried as paths


def test_make_report_writes_what_the_command_writes_and_checks_first(zoo, tmp_path, capsys):  # noqa: F811
    run_attack(_options(zoo, tmp_path / "res"))
    with pytest.raises(UsageError, match="must differ from --results"):
        make_report(tmp_path / "res", tmp_path / "res")
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    with pytest.raises(UsageError, match="has no block between"):
        make_report(tmp_path / "res", tmp_path / "rep", readme=readme)
    assert not (tmp_path / "rep").exists()
    r = make_report(tmp_path / "res", tmp_path / "rep", headline=True)
    assert r.paths["md"].is_file() and set(r.df["model"]) == {"tiny-vgg5-lif-clean"}
    assert list(r.shown.table.columns) != list(r.comparison.table.columns)  # the headline view is narrower
    code, out, err = run(capsys, ["report", "--results", str(tmp_path / "res"), "--out", str(tmp_path / "rep2"),
                                  "--headline"])
    assert code == 0, err
    assert out.startswith(r.markdown)


def test_merge_results_joins_shards_into_the_rows_one_run_writes(zoo, tmp_path):  # noqa: F811
    whole = run_attack(_options(zoo, tmp_path / "whole", batch_size="4"))
    for i in range(2):
        run_attack(_options(zoo, tmp_path / "sh", batch_size="4", shard=f"{i}/2"))
    with pytest.raises(BadSpec, match="--name 'x y'"):
        merge_results(tmp_path / "sh", "x y")
    done = merge_results(tmp_path / "sh")
    assert done.count == 2 and len(done.rows) == len(whole.evaluation.new) and done.path == tmp_path / "sh" / \
        "results.csv"
    cols = ["model", "attack", "grad", "eps", "clean_count", "robust_count", "robust_mask"]
    merged, one = (pd.read_csv(p)[cols] for p in (done.path, tmp_path / "whole" / "results.csv"))
    pd.testing.assert_frame_equal(merged.sort_values(cols[:4]).reset_index(drop=True),
                                  one.sort_values(cols[:4]).reset_index(drop=True))
    assert merge_results(tmp_path / "sh").skipped == len(done.rows)  # merging again adds nothing
