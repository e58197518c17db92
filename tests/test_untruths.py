"""The smaller untruths: clean accuracy of a plain import, comparing a model with itself, error lines from the
parser, an unwritable --out, lock files left behind, dry runs of `zoo build`, `None` in `zoo list`, the seeds
summary."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_helpers import one_line, run_main
from test_cli_train import _fake_load
from test_recipes import TINY_TOML
from test_report import row
from test_results import make_row

import robench.results.report as report
import robench.train.job
from robench.errors import UsageError
from robench.results import ResultsStore, to_frame
from robench.results.seeds import seed_summary
from robench.snn.models import ModelConfig, build_model

ZOO = Path(__file__).resolve().parents[1] / "zoo"


def test_a_plain_state_dict_import_measures_and_records_clean_accuracy(tmp_path, capsys):
    from robench.zoo import read_card

    cfg = ModelConfig(arch="vgg5", neuron="lif", T=2, width=0.125, fc=16)  # Fashion-MNIST shapes
    torch.manual_seed(0)
    torch.save(build_model(cfg).state_dict(), tmp_path / "w.pt")
    code, out, err = run_main(capsys, ["zoo", "import", str(tmp_path / "w.pt"), "--id", "mine", "--arch", "vgg5",
                                       "-T", "2", "--width", "0.125", "--fc", "16", "--n", "20", "--zoo",
                                       str(tmp_path / "zoo")])
    assert code in (0, None), err
    card = read_card(tmp_path / "zoo", "mine")
    assert card.metrics["n_test"] == 20 and 0 <= card.metrics["clean_acc"] <= 1
    assert f"clean acc {100 * card.metrics['clean_acc']:.2f}" in out


def test_compare_a_model_with_itself_is_refused(tmp_path, capsys):
    with pytest.raises(UsageError, match="two different models"):
        report.compare_models(to_frame([row("m1")]), "m1", "m1")
    f = tmp_path / "r.csv"
    to_frame([row("m1")]).to_csv(f, index=False)
    code, _, err = run_main(capsys, ["report", "--results", str(f), "--out", str(tmp_path / "rep"), "--compare",
                                     "m1", "m1"])
    assert code == 2 and "two different models" in one_line(err) and not (tmp_path / "rep").exists()


@pytest.mark.parametrize("args, words", [
    (["attack"], ["Missing option", "--model"]),
    (["attack", "-m", "x", "--n", "abc"], ["'--n'", "integer"]),
    (["train", "--neuron", "xx"], ["--neuron", "'xx'", "lif"]),
    (["report", "--bogus"], ["--bogus"]),
    (["zoo", "show"], ["Missing argument"]),
    (["nosuch"], ["nosuch"]),
])
def test_usage_errors_of_the_parser_start_with_error_colon(capsys, args, words):
    code, _, err = run_main(capsys, args)
    line = one_line(err)
    assert code == 2 and line.startswith("Error: ") and all(w in line for w in words), line


def test_an_unwritable_out_folder_errors_before_any_progress(tmp_path, capsys):
    bad = tmp_path / "file"
    bad.write_text("x")
    for out in (str(bad / "sub"), "/proc/robench-x"):
        code, _, err = run_main(capsys, ["attack", "-m", "fmnist-vgg11-lif-clean", "--zoo", str(ZOO), "-a", "fgsm",
                                         "--n", "4", "--split", "subset", "--out", out])
        assert code == 1 and "pass --out DIR" in one_line(err), err


def test_no_lock_file_is_left_in_the_results_folder(tmp_path):
    store = ResultsStore(tmp_path / "r.csv")
    store.append([make_row(grad="bptt")])
    store.append([make_row(grad="rate")])
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]


def test_writers_in_one_folder_still_take_turns(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    store = ResultsStore(tmp_path / "r.csv")
    with ThreadPoolExecutor(4) as pool:  # each append reads, adds and renames: unlocked, rows would be lost
        list(pool.map(lambda s: ResultsStore(store.path).append([make_row(seed=s)]), range(24)))
    assert sorted(store.read()["seed"]) == list(range(24))
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]


def test_zoo_build_dry_run_marks_entries_already_present(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(robench.train.job, "load_data", _fake_load)
    f, zoo = tmp_path / "r.toml", tmp_path / "zoo"
    f.write_text(TINY_TOML)
    args = ["zoo", "build", "tiny-rat", "--recipes", str(f), "--zoo", str(zoo), "--runs", str(tmp_path / "runs"),
            "--device", "cpu"]
    assert run_main(capsys, args)[0] == 0
    code, out, _ = run_main(capsys, ["zoo", "build", "--recipes", str(f), "--zoo", str(zoo), "--dry-run"])
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 2
    assert "present" in lines[0] and "tiny-rat" in lines[0] and "tiny-rat-s1" not in lines[0]
    assert not lines[0].startswith("robench train")
    assert lines[1].startswith("robench train") and "--id tiny-rat-s1" in lines[1]
    code, out, _ = run_main(capsys, ["zoo", "build", "--recipes", str(f), "--zoo", str(zoo), "--dry-run", "--force"])
    assert [ln.startswith("robench train") for ln in out.strip().splitlines()] == [True, True]


def test_zoo_list_never_prints_none(capsys):
    code, out, _ = run_main(capsys, ["zoo", "list", "--zoo", str(ZOO)])
    assert code in (0, None) and "fmnist-sjvgg-lif-clean" in out and "None" not in out


def test_the_seeds_summary_has_no_mean_of_the_cells_count():
    from test_seeds import frame

    table = report.comparison_table(frame())
    assert any(str(c).startswith("cells") for c in table.columns)
    assert not any(str(c).startswith("cells") for c in seed_summary(table)["column"])
