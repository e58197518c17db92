"""The smaller untruths: clean accuracy of a plain import, comparing a model with itself, error lines from the
parser, an unwritable --out, lock files left behind, dry runs of `zoo build`, `None` in `zoo list`, the seeds
summary."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import one_line, run_main

ZOO = Path(__file__).resolve().parents[1] / "zoo"


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


def test_zoo_list_never_prints_none(capsys):
    code, out, _ = run_main(capsys, ["zoo", "list", "--zoo", str(ZOO)])
    assert code in (0, None) and "fmnist-sjvgg-lif-clean" in out and "None" not in out
