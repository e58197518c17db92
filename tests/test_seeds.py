"""The report across training seeds on hand-made results tables (no model, no torch needed by the code under test)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from cli_helpers import one_line
from cli_helpers import run_main as _run_main
from test_report import row

import robench.results.report as report
from robench.errors import DataNotFound, UsageError
from robench.results import to_frame
from robench.results.seeds import compare_seeds, has_seeds, over_seeds, seed_summary, seeds_markdown, split_seed
from robench.results.stats import encode_mask, paired

N = 10
# robust images out of 10 at pgd @ 8/255 (bptt): recipe a beats b by 2, 1 and 3 images on seeds 0, 1, 2
ROBUST = {"a": (6, 5, 7), "b": (4, 4, 4)}
CLEAN = {"a": (0.80, 0.90, 0.85), "b": (0.70, 0.70, 0.70)}


def _mask(k: int) -> list[bool]:
    return [True] * k + [False] * (N - k)  # the first k images robust: b's robust set lies inside a's


def frame(with_masks: bool = True, seeds: tuple[int, ...] = (0, 1, 2)) -> pd.DataFrame:
    rows, masks = [], []
    for name in ("a", "b"):
        for k in seeds:
            model = f"m-{name}" if k == 0 else f"m-{name}-s{k}"
            r = ROBUST[name][k]
            rows.append({**row(model, "pgd", "bptt", 8, r / N, CLEAN[name][k]), "n": N, "robust_count": r})
            masks.append(encode_mask(_mask(r)))
    rows.append({**row("m-c", "pgd", "bptt", 8, 0.3, 0.6), "n": N, "robust_count": 3})  # one seed only
    masks.append(encode_mask(_mask(3)))
    df = to_frame(rows)
    return df.assign(robust_mask=masks) if with_masks else df


@pytest.mark.parametrize("label, expect", [
    ("fmnist-vgg11-lif-gn-s2", ("fmnist-vgg11-lif-gn", 2)),
    ("fmnist-vgg11-lif-gn", ("fmnist-vgg11-lif-gn", 0)),
    ("fmnist-vgg11-lif-gn-mppd", ("fmnist-vgg11-lif-gn-mppd", 0)),
    ("m-s12 [fashion-mnist:test, n=100]", ("m [fashion-mnist:test, n=100]", 12)),
    ("m-seed", ("m-seed", 0)),
    ("m-s", ("m-s", 0)),
])
def test_split_seed(label, expect):
    assert split_seed(label) == expect


def test_summary_by_hand():
    table = report.comparison_table(frame())
    assert has_seeds(table.index) and not has_seeds(["m-a", "m-c", "m-b-s1"])
    s = seed_summary(table).set_index(["recipe", "column"])
    assert set(s.index.get_level_values(0)) == {"m-a", "m-b"}  # m-c has one seed: no summary
    clean = s.loc[("m-a", "clean")]
    # 80, 90, 85: mean 85, sd sqrt((25 + 25 + 0) / 2) = 5
    assert clean["seeds"] == "0,1,2" and clean["mean"] == pytest.approx(85.0)
    assert clean["sd"] == pytest.approx(5.0) and (clean["min"], clean["max"]) == (80.0, 90.0)
    pgd = s.loc[("m-a", "pgd-10 (final) @ 8/255 (bptt)")]
    assert pgd["mean"] == pytest.approx(60.0) and pgd["sd"] == pytest.approx(10.0)
    assert s.loc[("m-b", "clean")]["sd"] == pytest.approx(0.0)


def test_paired_per_seed_and_over_seeds_by_hand():
    per = compare_seeds(frame(), "m-a", "m-b", report.attack_labels(frame()))
    assert list(per["seed"]) == [0, 1, 2] and set(per["column"]) == {"pgd-10 (final) @ 8/255 (bptt)"}
    assert list(per["diff"].round(9)) == [0.2, 0.1, 0.3]
    assert list(per["only_a"]) == [2, 1, 3] and list(per["only_b"]) == [0, 0, 0]
    ref = paired(_mask(6), _mask(4))
    assert (per.at[0, "lo"], per.at[0, "hi"], per.at[0, "p_value"]) == (ref.lo, ref.hi, ref.p_value)
    (o,) = over_seeds(per).to_dict("records")
    # differences 0.2, 0.1, 0.3: mean 0.2, sd 0.1, t(0.975, 2 dof) = 4.302652729911275, half = t * 0.1 / sqrt(3)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)
    assert o["seeds"] == 3 and o["mean_diff"] == pytest.approx(0.2) and o["sd"] == pytest.approx(0.1)
    assert (o["lo"], o["hi"]) == (pytest.approx(0.2 - half), pytest.approx(0.2 + half))


def test_one_common_seed_has_no_interval_over_seeds():
    per = compare_seeds(frame(seeds=(0,)), "m-a", "m-b")
    (o,) = over_seeds(per).to_dict("records")
    assert o["seeds"] == 1 and o["mean_diff"] == pytest.approx(0.2) and math.isnan(o["lo"])


@pytest.mark.parametrize("a, b, err, match", [
    ("m-x", "m-b", UsageError, "--seeds-compare 'm-x': no results for it; recipes: m-a, m-b, m-c"),
    ("m-a", "m-a", UsageError, "two different recipes"),
])
def test_bad_comparisons(a, b, err, match):
    with pytest.raises(err, match=match):
        compare_seeds(frame(), a, b)


def test_no_masks_is_data_not_found():
    with pytest.raises(DataNotFound, match="robust_mask"):
        compare_seeds(frame(with_masks=False), "m-a", "m-b")


def test_seeds_module_never_imports_torch():
    import ast
    from pathlib import Path

    import robench.results.seeds

    tree = ast.parse(Path(robench.results.seeds.__file__).read_text())
    mods = {n.module if isinstance(n, ast.ImportFrom) else a.name
            for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
            for a in (n.names if isinstance(n, ast.Import) else [n])}
    assert mods <= {"__future__", "math", "re", "collections.abc", "numpy", "pandas", "errors", "stats",
                    "scipy.stats"}


def test_markdown_and_report_files(tmp_path):
    df = frame()
    md = seeds_markdown(df, report.comparison_table(df), ("m-a", "m-b"), report.attack_labels(df))
    assert "| m-a " in md and "85.0" in md and "5.0" in md
    assert "m-a minus m-b" in md and "+20.0 [" in md and "+10.0 [" in md and "sd 10.0" in md
    paths = report.write_report(df, tmp_path / "rep", seeds_compare=("m-a", "m-b"))
    assert paths["seeds"].read_text() == md
    single = df[df["model"].isin(["m-a", "m-b", "m-c"])]
    assert "seeds" not in report.write_report(single, tmp_path / "one")  # one seed each: no seeds.md
    with pytest.raises(UsageError):
        report.write_report(df, tmp_path / "bad", seeds_compare=("m-a", "nope"))
    assert not (tmp_path / "bad").exists()  # refused before anything was written


def test_cli_report_seeds_compare(tmp_path, capsys):
    f = tmp_path / "res.csv"
    frame().to_csv(f, index=False)
    out = tmp_path / "rep"
    code, stdout, err = _run_main(capsys, ["report", "--results", str(f), "--out", str(out),
                                           "--seeds-compare", "m-a", "m-b"])
    assert code == 0, err
    assert "m-a minus m-b" in stdout and (out / "seeds.md").exists()
    code, stdout, err = _run_main(capsys, ["report", "--results", str(f), "--out", str(tmp_path / "r2"),
                                           "--seeds-compare", "m-a", "m-z"])
    assert code == 2 and "'m-z': no results" in one_line(err)


def test_seeds_on_different_n_pool_and_the_largest_n_of_a_seed_counts():
    # seed 0 of both recipes also measured on 20 images (a beats b by 10 of 20); seeds 1, 2 only on 10
    big = []
    for name, r in (("a", 14), ("b", 4)):
        big.append({**row(f"m-{name}", "pgd", "bptt", 8, r / 20, 0.8), "n": 20, "robust_count": r})
    masks = [encode_mask([True] * 14 + [False] * 6), encode_mask([True] * 4 + [False] * 16)]
    df = pd.concat([frame(), to_frame(big).assign(robust_mask=masks)], ignore_index=True)
    per = compare_seeds(df, "m-a", "m-b", report.attack_labels(df))
    assert list(per["seed"]) == [0, 1, 2] and list(per["n"]) == [20, 10, 10]
    assert list(per["diff"].round(9)) == [0.5, 0.1, 0.3]  # seed 0 from its n = 20 cell, not its n = 10 one
    (o,) = over_seeds(per).to_dict("records")
    assert o["seeds"] == 3 and o["n"] == "20,10,10" and o["mean_diff"] == pytest.approx(0.3)
    md = seeds_markdown(df[df["n"] == 10], report.comparison_table(df[df["n"] == 10]), ("m-a", "m-b"))
    assert "+20.0 [" in md and "n=10" in md


def test_cli_seeds_compare_into_a_readme_block(tmp_path, capsys):
    f = tmp_path / "res.csv"
    frame().to_csv(f, index=False)
    doc = tmp_path / "README.md"
    doc.write_text("# Doc\n\n<!-- robench report seeds: start -->\nold\n<!-- robench report seeds: end -->\ntail\n")
    code, _, err = _run_main(capsys, ["report", "--results", str(f), "--out", str(tmp_path / "rep"),
                                      "--seeds-compare", "m-a", "m-b", "--readme", str(doc),
                                      "--readme-block", "seeds"])
    assert code == 0, err
    text = doc.read_text()
    block = text.split("seeds: start -->\n")[1].split("<!--")[0]
    assert "old" not in block and text.endswith("tail\n") and text.startswith("# Doc\n")
    assert "**m-a minus m-b (percentage points)**" in block and "+20.0 [" in block and "sd 10.0" in block
    assert "**Seeds of one recipe" in block and "\n#" not in block  # no headings added to the document
