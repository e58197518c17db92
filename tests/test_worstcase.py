"""The pointwise worst case in reports, on hand-made results: AND over masked cells, breakdown in run order,
Wilson intervals, notes on cells without masks, and the paired comparison (--compare)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from cli_helpers import one_line, run_main

import robench.results.report as report
from robench.errors import DataNotFound, IntegrityError
from robench.results import ResultsStore, to_frame
from robench.results.findings import Finding
from robench.results.stats import encode_mask, wilson

N = 10


def mrow(robust, model="m1", attack="pgd", grad="bptt", ts="2026-01-01T00:00:01", clean=8, k=8, mask=True):
    m = np.zeros(N, dtype=bool)
    m[list(robust)] = True
    params = {"steps": 10, "norm": "Linf"} if attack != "gaussian" else {}
    return {"model": model, "sha256": "ab" * 32, "dataset": "fashion-mnist:test", "n": N, "attack": attack,
            "params": json.dumps(params), "grad": grad, "eps": k / 255, "eps_str": f"{k}/255",
            "clean_acc": clean / N, "robust_acc": len(robust) / N, "clean_count": clean, "robust_count": len(robust),
            "seconds": 1.0, "device": "cpu", "seed": 0, "versions": "{}", "timestamp": ts, "flags": "",
            "robust_mask": encode_mask(m) if mask else ""}


def cells(model="m1", a_first=True):
    ta, tb = ("2026-01-01T00:00:01", "2026-01-01T00:00:02") if a_first else ("2026-01-01T00:00:03",
                                                                             "2026-01-01T00:00:02")
    return [mrow(range(6), model, "pgd", "bptt", ta),            # breaks 6, 7 (8, 9: clean errors)
            mrow([0, 1, 2, 3, 6], model, "apgd-ce", "rate", tb),  # breaks 4, 5, 7
            mrow([0, 1, 2, 3], model, "pgd", "worst", ta),        # an AND itself: left out
            mrow(range(8), model, "gaussian", "none", ta)]        # noise: left out


def test_worst_case_is_the_and_with_intervals_and_cell_count():
    c = report.comparison(to_frame(cells()))
    assert c.table.loc["m1", "worst case"] == 40.0 and c.table.loc["m1", "cells"] == 2
    lo, hi = wilson(4, N)
    assert (c.lo.loc["m1", "worst case"], c.hi.loc["m1", "worst case"]) == (round(100 * lo, 1), round(100 * hi, 1))
    md = report.to_markdown(c.table, c)
    assert f"40.0 [{100 * lo:.1f}, {100 * hi:.1f}]" in md and "80.0 [" in md  # clean has its interval too
    assert list(c.table.columns[:3]) == ["clean", "worst case", "cells"] and c.note is None
    csv = report.to_csv_frame(c)
    assert csv.loc["m1", "worst case lo"] == f"{100 * lo:.1f}" and "cells lo" not in csv.columns


@pytest.mark.parametrize("a_first, added", [(True, [2, 2, 2]), (False, [2, 3, 1])])
def test_breakdown_counts_first_breaks_in_run_order(a_first, added):
    df = to_frame(cells(a_first=a_first))
    (case,) = report.worst_cases(df, report.attack_labels(df))
    frame = report.breakdown_frame([case])
    assert frame["added"].tolist() == added and frame["step"].tolist() == [0, 1, 2]
    assert frame["cell"].iloc[1] == ("pgd-10 (final) (bptt)" if a_first else "apgd-ce-10 (rate)")
    assert sum(added) + case.robust_count == N and frame["robust"].iloc[-1] == 40.0


def test_cells_without_masks_are_left_out_and_noted_once(tmp_path):
    rows = [*cells(), mrow([0], attack="fgsm", mask=False), mrow([1], attack="bim", mask=False)]
    c = report.comparison(to_frame(rows))
    assert c.table.loc["m1", "worst case"] == 40.0 and c.note is not None
    assert c.note.message.startswith("2 cell(s) have no per-sample robust_mask")
    assert isinstance(c.note, Finding) and c.note.line().startswith("no-mask: 2 cell(s)")  # the checks' type
    paths = report.write_report(to_frame(rows), tmp_path / "rep")
    assert paths["findings"].read_text().count("no-mask") == 1
    assert {"breakdown_md", "breakdown_csv", "breakdown_png"} <= set(paths)
    assert paths["breakdown_png"].read_bytes()[:4] == b"\x89PNG"
    assert "broke first" in paths["breakdown_md"].read_text()
    assert {"robust lo", "robust hi"} <= set(pd.read_csv(paths["breakdown_csv"]).columns)


def write(tmp_path, rows):
    d = tmp_path / "res"
    ResultsStore(d / "r.csv").append(rows)
    return d


def test_cli_report_compare_prints_and_writes_the_paired_difference(tmp_path, capsys):
    m2 = [mrow([0, 1, 2, 3, 4, 5, 6], "m2", "pgd", "bptt", clean=8), mrow([0, 1, 6, 7], "m2", "apgd-ce", "rate")]
    res = write(tmp_path, cells() + m2)
    code, out, err = run_main(capsys, ["report", "--results", str(res), "--out", str(tmp_path / "rep"),
                                       "--compare", "m1", "m2"])
    assert code == 0, err
    text = (tmp_path / "rep" / "compare.md").read_text()
    assert "m1 (A) vs m2 (B)" in text and "| 40.0 [" in text and "| 30.0 [" in text
    assert "| +10.0 [" in text and "| 2 | 1 |" in text  # only m1: 2, 3; only m2: 6
    assert text.splitlines()[-1] in out and "worst case" in out
    for f in ("breakdown.md", "breakdown.csv", "breakdown.png", "table.csv"):
        assert (tmp_path / "rep" / f).exists()


def test_cli_compare_of_a_model_without_masks_is_one_line_and_writes_nothing(tmp_path, capsys):
    res = write(tmp_path, cells() + [mrow([0], "m3", mask=False)])
    for pair, msg in ((["m1", "m3"], "--compare 'm3': no masked cells"), (["m1", "zz"], "no masked cells")):
        code, _, err = run_main(capsys, ["report", "--results", str(res), "--out", str(tmp_path / "rep"),
                                         "--compare", *pair])
        assert code == 1 and msg in one_line(err)
    assert not (tmp_path / "rep").exists()


def test_a_mask_of_the_wrong_length_names_the_file_and_row(tmp_path, capsys):
    res = write(tmp_path, cells())
    csv = res / "r.csv"
    good = encode_mask(np.arange(N) < 6)
    csv.write_text(csv.read_text().replace(good, good + "00", 1))
    with pytest.raises(IntegrityError, match=r"r\.csv'?: row 2 robust_mask holds 3 bytes, but n = 10 needs 2"):
        ResultsStore(csv).read()
    code, _, err = run_main(capsys, ["report", "--results", str(res), "--out", str(tmp_path / "rep")])
    assert code == 1 and "row 2 robust_mask" in one_line(err) and not (tmp_path / "rep").exists()


def test_compare_needs_shared_images_and_pairs_the_first_images_of_longer_runs():
    longer = np.r_[np.ones(4, bool), np.zeros(16, bool)]  # 20 images: robust on the first 4 only
    other = [{**r, "n": 20, "robust_mask": encode_mask(longer), "robust_count": 4, "robust_acc": 0.2,
              "model": "m2"} for r in cells()[:1]]
    text = report.compare_models(to_frame(cells() + other), "m1", "m2")
    assert "| 10 |" in text.splitlines()[-1]  # paired on the first 10 images, the ones both runs saw
    elsewhere = [{**r, "eps": 4 / 255, "eps_str": "4/255"} for r in other]
    with pytest.raises(DataNotFound, match="share no images"):
        report.compare_models(to_frame(cells() + elsewhere), "m1", "m2")


def test_compare_into_a_readme_block(tmp_path, capsys):
    m2 = [mrow([0, 1, 2, 3, 4, 5, 6], "m2", "pgd", "bptt", clean=8), mrow([0, 1, 6, 7], "m2", "apgd-ce", "rate")]
    res = write(tmp_path, cells() + m2)
    doc = tmp_path / "README.md"
    doc.write_text("x\n<!-- robench report cmp: start -->\nold\n<!-- robench report cmp: end -->\ny\n")
    code, _, err = run_main(capsys, ["report", "--results", str(res), "--out", str(tmp_path / "rep"), "--compare",
                                     "m1", "m2", "--readme", str(doc), "--readme-block", "cmp"])
    assert code == 0, err
    text = doc.read_text()
    assert "old" not in text and "| +10.0 [" in text and "# Paired" not in text and text.endswith("y\n")


def test_black_box_breaks_every_white_box_cell_missed_are_gradient_masking(tmp_path, capsys):
    white = cells()[:2]  # robust after both: 0, 1, 2, 3
    ts = "2026-01-01T00:00:04"
    sq = [mrow([0, 1, 2], "m1", "square", "none", ts)]  # breaks 3 (4 and 5 it missed)
    found = report.masking_findings(to_frame(white + sq))
    assert [(f.model, f.count, f.white) for f in found] == [("m1", 1, 2)] and "square" in found[0].message
    assert report.masking_findings(to_frame(white + [mrow([0, 1, 2, 3], "m1", "square", "none", ts)])) == []
    assert report.masking_findings(to_frame(sq)) == []  # nothing white-box to compare with
    res = write(tmp_path, white + sq)  # no flag stored: the report finds it from the masks
    code, out, err = run_main(capsys, ["report", "--results", str(res), "--out", str(tmp_path / "rep")])
    assert code == 0 and "gradient-masking: m1: square" in " ".join(out.split()), err
    assert "gradient-masking" in (tmp_path / "rep" / "findings.md").read_text()
