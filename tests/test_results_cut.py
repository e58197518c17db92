"""A results file cut mid-row (a crash, a full disk, a bad copy) is refused in one line naming the file and the
line, and nothing is rewritten."""

from __future__ import annotations

import pytest
from cli_helpers import one_line, run_main
from test_results import make_row

from robench.errors import IntegrityError
from robench.results import ResultsStore, read_dir
from robench.results.stats import encode_mask


@pytest.mark.parametrize("cut", [0.05, 0.5, 0.97])
def test_a_results_file_cut_mid_row_is_refused_naming_file_and_line_and_kept(tmp_path, cut):
    store = ResultsStore(tmp_path / "r.csv")
    store.append([make_row(grad="bptt"), make_row(grad="rate", robust_mask=encode_mask([True] * 37 + [False] * 63))])
    whole = store.path.read_bytes()
    last = len(whole.splitlines()[-1])
    cut_bytes = whole[: len(whole) - 1 - int(cut * last)]  # a part of the last row (and its end of line) missing
    assert cut_bytes.count(b"\n") == 2  # the header and the first row are whole, the second row is cut
    store.path.write_bytes(cut_bytes)
    with pytest.raises(IntegrityError, match=r"r\.csv.* line 3\b") as e:
        store.read()
    assert "\n" not in str(e.value)
    with pytest.raises(IntegrityError, match="line 3"):
        store.append([make_row(grad="worst")])
    with pytest.raises(IntegrityError, match="line 3"):
        read_dir(tmp_path)
    assert store.path.read_bytes() == cut_bytes  # nothing rewritten


def test_a_row_with_fields_missing_in_the_middle_is_refused(tmp_path):
    store = ResultsStore(tmp_path / "r.csv")
    store.append([make_row(grad="bptt"), make_row(grad="rate"), make_row(grad="worst")])
    lines = store.path.read_text().splitlines(keepends=True)
    lines[2] = ",".join(lines[2].split(",")[:4]) + "\n"  # model, sha256, dataset, n: the rest lost
    store.path.write_text("".join(lines))
    with pytest.raises(IntegrityError, match="line 3"):
        store.read()


def test_report_on_a_cut_file_is_one_error_line(tmp_path, capsys):
    store = ResultsStore(tmp_path / "res" / "r.csv")
    store.append([make_row(grad="bptt"), make_row(grad="rate")])
    store.path.write_bytes(store.path.read_bytes()[:-30])
    code, _, err = run_main(capsys, ["report", "--results", str(tmp_path / "res"), "--out", str(tmp_path / "rep")])
    assert code != 0 and "line 3" in one_line(err) and one_line(err).startswith("Error: ")
    assert not (tmp_path / "rep").exists()
