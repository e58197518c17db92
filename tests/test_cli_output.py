"""Output for scripts and logs: --format json on attack, report and zoo verify (and list), --version, tables
printed whole when stdout is not a terminal, and the thread count chosen so a run does not oversubscribe."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import one_line, run_main
from conftest import make_tiny_data
from rich.console import Console
from rich.table import Table

import robench
import robench.cli.common as common
import robench.eval.sweep
from robench.errors import BadSpec
from robench.runtime import busy_cores, pick_threads

ROOT = Path(__file__).resolve().parents[1]


def fake_load(name, split="test", data_dir=None, limit=None, download=False):
    x, y = make_tiny_data(48, 2)  # the tiny 8x8 task stands in for the test split
    return x[:limit], y[:limit]


@pytest.fixture
def tiny_dataset(monkeypatch):
    monkeypatch.setattr(robench.eval.sweep, "load_dataset", fake_load)


def test_version(capsys):
    code, out, err = run_main(capsys, ["--version"])
    assert code == 0 and out.strip() == f"robench {robench.__version__}" and err == ""


@pytest.fixture
def keep_threads():
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_help_says_how_many_threads(capsys, monkeypatch, keep_threads):
    monkeypatch.setenv("ROBENCH_THREADS", "3")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code, out, _ = run_main(capsys, ["--help"])
    assert code == 0 and "Threads: 3 torch thread(s) per process (set by ROBENCH_THREADS)" in " ".join(out.split())
    assert os.environ["OMP_NUM_THREADS"] == "3"  # for a torch not yet imported
    monkeypatch.setenv("ROBENCH_THREADS", "0")
    code, _, err = run_main(capsys, ["--version"])
    assert code == 2 and "ROBENCH_THREADS='0'; accepted: an integer >= 1" in one_line(err)


def test_pick_threads_leaves_busy_cores_alone(monkeypatch):
    monkeypatch.delenv("ROBENCH_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert pick_threads(cores=2, busy=0, ranks=1)[0] == 2
    assert pick_threads(cores=2, busy=2, ranks=1)[0] == 1  # two other runs on a 2-core machine: one thread
    assert pick_threads(cores=16, busy=3.6, ranks=1) == (12, "16 cores, 3.6 busy")
    assert pick_threads(cores=16, busy=0, ranks=4)[0] == 4  # torchrun: the free cores shared among local ranks
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert pick_threads(cores=8, busy=0)[0] == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert pick_threads(cores=2, busy=9) == (5, "set by OMP_NUM_THREADS")
    monkeypatch.setenv("ROBENCH_THREADS", "2")
    assert pick_threads(cores=64, busy=0) == (2, "set by ROBENCH_THREADS")
    monkeypatch.setenv("ROBENCH_THREADS", "two")
    with pytest.raises(BadSpec, match="ROBENCH_THREADS='two'"):
        pick_threads()
    assert busy_cores() >= 0


def test_tables_are_whole_when_stdout_is_not_a_terminal(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(common, "console", Console(file=buf, width=40))  # a narrow, non-terminal stdout
    t = Table(title="robust accuracy")
    for col in ("model", "attack", "clean_acc", "robust"):
        t.add_column(col)
    t.add_row("fmnist-vgg11-stable-gn-mppd-s1", "pgd-best-50 step=2/255", "90.0", "45.0")
    common.print_table(t)
    text = buf.getvalue()
    assert "…" not in text and "clean_acc" in text and "fmnist-vgg11-stable-gn-mppd-s1" in text
    assert "pgd-best-50 step=2/255" in text and len(text.splitlines()) == 6  # one line per row, none wrapped


def test_zoo_list_in_a_pipe_prints_every_column_whole(trained_zoo):
    zoo, card, _ = trained_zoo
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-m", "robench", "zoo", "list", "--zoo", str(zoo)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "…" not in out.stdout and card.id in out.stdout and "clean_acc" in out.stdout and "sha256" in out.stdout


def test_zoo_verify_and_list_as_json(trained_zoo, capsys):
    zoo, card, _ = trained_zoo
    code, out, err = run_main(capsys, ["zoo", "verify", "--zoo", str(zoo), "--format", "json"])
    assert code == 0, err
    (entry,) = json.loads(out)
    assert entry["id"] == card.id and entry["ok"] is True
    assert entry["message"].startswith(f"ok (sha256 {card.sha256[:12]}")
    (zoo / f"{card.id}.safetensors").write_bytes(b"broken")
    code, out, err = run_main(capsys, ["zoo", "verify", "--zoo", str(zoo), "--format", "json"])
    assert code == 1 and json.loads(out)[0]["ok"] is False and "failed verification" in one_line(err)
    code, out, _ = run_main(capsys, ["zoo", "list", "--zoo", str(zoo), "--format", "json"])
    assert code == 0 and json.loads(out)[0]["id"] == card.id


@pytest.mark.parametrize("args", [["zoo", "verify"], ["zoo", "list"], ["report"], ["attack", "-m", "x"]])
def test_an_unknown_format_is_one_line(args, capsys, tmp_path):
    code, out, err = run_main(capsys, [*args, "--format", "xml"])
    assert code == 2 and out == "" and "'xml' is not one of 'table', 'json'" in one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_attack_and_report_as_json(trained_zoo, tiny_dataset, tmp_path, capsys, monkeypatch):
    zoo, card, _ = trained_zoo
    monkeypatch.setattr(common, "err_console", Console(stderr=True, width=40))  # a narrow log on stderr
    out_dir = tmp_path / "res"
    args = ["attack", "--zoo", str(zoo), "-m", card.id, "-a", "fgsm", "--eps", "0.2", "--n", "16", "--out",
            str(out_dir), "--device", "cpu", "--format", "json"]
    code, out, err = run_main(capsys, args)
    assert code == 0, err
    assert "2/2" in err and "…" not in err and card.id in err  # progress: on stderr, whole in a log
    doc = json.loads(out)  # stdout is the JSON document and nothing else
    assert doc["new_rows"] == 3 and doc["skipped"] == 0 and doc["results"] == str(out_dir / "results.csv")
    assert [r["grad"] for r in doc["rows"]] == ["bptt", "rate", "worst"] and all(r["new"] for r in doc["rows"])
    row = doc["rows"][0]
    assert row["params"]["norm"] == "Linf" and row["n"] == 16 and len(row["robust_ci"]) == 2
    code, out, _ = run_main(capsys, args)
    again = json.loads(out)
    assert again["new_rows"] == 0 and not any(r["new"] for r in again["rows"])

    rep = tmp_path / "rep"
    code, out, err = run_main(capsys, ["report", "--results", str(out_dir), "--out", str(rep), "--format", "json"])
    assert code == 0, err
    doc = json.loads(out)
    cols = doc["table"]["models"][0]["columns"]
    assert doc["table"]["models"][0]["model"] == card.id and 0 <= cols["worst case"]["lo"] <= cols["worst case"]["hi"]
    assert doc["worst_cases"][0]["cells"] == ["fgsm (bptt)", "fgsm (rate)"]
    assert all(Path(p).exists() for p in doc["files"].values()) and doc["compare"] is None
    assert {"table.tex", "curves.pdf", "curves.svg"} <= {Path(p).name for p in doc["files"].values()}
