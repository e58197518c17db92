"""Paper figures and the narrow LaTeX table on hand-made results: PNG + PDF + SVG, one figure per question, every
model in the legend with its own colour and marker, sizes that fit a page, reproducible files; and the JSON
export of rows, comparisons and worst cases."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import robench.results.export as export
import robench.results.figures as fig
import robench.results.report as report
from robench.results import to_frame
from robench.results.stats import encode_mask, wilson

N = 20


def mrow(model, attack, k, robust, grad="bptt", params=None, clean=18, ts="2026-01-01T00:00:01", n=N):
    m = np.zeros(n, dtype=bool)
    m[list(robust)] = True
    p = params if params is not None else {"steps": 10, "norm": "Linf"}
    return {"model": model, "sha256": "ab" * 32, "dataset": "fashion-mnist:test", "n": n, "attack": attack,
            "params": json.dumps(p, sort_keys=True), "grad": grad, "eps": k / 255, "eps_str": f"{k}/255" if k else "0",
            "clean_acc": clean / n, "robust_acc": len(robust) / n, "clean_count": clean, "robust_count": len(robust),
            "seconds": 1.0, "device": "cpu", "seed": 0, "versions": "{}", "timestamp": ts, "flags": "",
            "robust_mask": encode_mask(m)}


def cascade_rows(model, k=8, robust_after=(12, 9, 9)):
    rows = []
    for s, r in enumerate(robust_after, 1):
        p = {"suite": "reliable", "version": 1, "stage": s, "attack": "pgd-best", "steps": 50}
        rows.append(mrow(model, "reliable", k, range(r), grad=["arctan:a=4", "rate", "none"][s - 1], params=p))
    whole = {"suite": "reliable", "version": 1, "stage": "all", "stages": len(robust_after)}
    return rows + [mrow(model, "reliable", k, range(robust_after[-1]), grad="worst", params=whole)]


@pytest.fixture
def results() -> pd.DataFrame:
    rows = []
    for i in range(22):  # more models than any palette has colours
        model = f"m{i:02d}" if i < 20 else f"r-s{i - 19}"
        for k in (4, 8):
            rows += [mrow(model, "fgsm", k, range(15 - k // 2 - i % 3)), mrow(model, "pgd", k, range(12 - k - i % 4)),
                     mrow(model, "apgd-ce", k, range(10 - k), grad="rate")]
    rows += [mrow("r", "fgsm", 8, range(14)), mrow("r", "pgd", 8, range(7))]  # seed 0 of recipe r
    rows += [mrow("m00", "gaussian", 51, range(16), grad="none", params={})]
    rows += cascade_rows("m01") + cascade_rows("m02", robust_after=(10, 10, 8))
    return to_frame(rows)


def test_styles_stay_distinct_beyond_twenty_models():
    styles = fig.model_styles([f"m{i}" for i in range(45)])
    pairs = {(tuple(s["color"]), s["marker"], s["linestyle"]) for s in styles.values()}
    assert len(pairs) == 45
    assert len({(tuple(s["color"]), s["marker"]) for s in list(styles.values())[:40]}) == 40


def test_curve_points_worst_case_family_minimum_and_clean_at_zero(results):
    pts = fig.curve_points(results)
    w = pts[(pts["panel"] == fig.WORST) & (pts["row"] == "m05")].set_index("eps_str")
    # pointwise worst case over fgsm, pgd, apgd-ce at 8/255: range(7-1) AND range(12-8-1) AND range(2) -> 2 images
    assert w.at["8/255", "count"] == 2 and w.at["0", "count"] == 18
    assert (w.at["8/255", "lo"], w.at["8/255", "hi"]) == wilson(2, N)
    pgd = pts[(pts["panel"] == "pgd (final iterate)") & (pts["row"] == "m05")].set_index("eps_str")
    assert pgd.at["8/255", "count"] == 12 - 8 - 1
    assert "reliable-v1" in set(pts["panel"])  # the cascade's result is a family (its version said once a newer
    assert not any(p.startswith("reliable-v1 ") for p in pts["panel"])  # ships); its stages are not


def test_a_cascade_that_has_not_finished_still_has_its_worst_case_curve():
    # only stage rows (no result row): no row of the model belongs to a family, yet its masks make a worst case
    stages = [r for r in cascade_rows("u", robust_after=(12, 9)) if r["grad"] != "worst"]
    pts = fig.curve_points(to_frame(stages))
    w = pts[(pts["panel"] == fig.WORST) & (pts["row"] == "u")].set_index("eps_str")
    assert w.at["8/255", "count"] == 9 and w.at["0", "count"] == 18


def test_every_figure_in_three_formats_with_every_model_in_the_legend(results, tmp_path):
    paths = fig.plot_curves(results, tmp_path / "curves")
    assert [p.suffix for p in paths] == [".png", ".pdf", ".svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:5] == b"%PDF-"
    svg = paths[2].read_text()
    for model in [f"m{i:02d}" for i in range(20)] + ["r-s1", "r-s2", "r"]:
        assert f">{model}<" in svg  # svg.fonttype none: the legend's text is text
    width_in = float(svg.split('width="')[1].split("pt")[0]) / 72
    assert width_in <= fig.PAGE + 0.3  # fits a page
    stages = fig.plot_stages(results, tmp_path / "stages")
    assert [p.exists() for p in stages] == [True] * 3
    s = stages[2].read_text()
    assert ">m01<" in s and ">m02<" in s and "reliable v1 @ 8/255, n = 20" in s
    seeds = fig.plot_seeds(results, tmp_path / "seeds")
    assert seeds is not None and "seed 2" in seeds[2].read_text()


def test_figures_are_reproducible(results, tmp_path):
    a = fig.plot_curves(results, tmp_path / "a")
    b = fig.plot_curves(results, tmp_path / "b")
    assert a[1].read_bytes() == b[1].read_bytes() and a[2].read_text() == b[2].read_text()


def test_no_cascade_and_no_seeds_give_no_figure(tmp_path):
    df = to_frame([mrow("a", "fgsm", 8, range(9)), mrow("b", "fgsm", 8, range(5))])
    assert fig.plot_stages(df, tmp_path / "s") is None and fig.plot_seeds(df, tmp_path / "t") is None
    assert list(tmp_path.iterdir()) == []


def test_seed_points_group_recipes(results):
    pts = fig.seed_points(results)
    assert set(pts["recipe"]) == {"r"} and sorted(pts["seed"]) == [0, 1, 2]


def test_headline_latex_is_narrow_with_caption_and_intervals(results):
    tex = fig.headline_latex(results)
    assert "\\caption{" in tex and "\\begin{table}" in tex and "\\label{tab:robench}" in tex
    header = next(line for line in tex.splitlines() if line.startswith("Model"))
    assert header.count("&") == 4  # model, n, clean, one column per budget (4/255, 8/255)
    row = next(line for line in tex.splitlines() if line.startswith("m05 "))
    lo, hi = wilson(2, N)
    assert f"10.0 {{\\scriptsize [{100 * lo:.1f}, {100 * hi:.1f}]}}" in row
    assert "[" not in fig.headline_latex(results, intervals=False).split("\\midrule")[1]
    more = pd.concat([results, to_frame([{**mrow("m05", "fgsm", 8, range(50), n=100), "robust_mask": ""}])],
                     ignore_index=True)
    assert "m05 & 20 &" in fig.headline_latex(more)  # a masked worst case beats a larger n without masks


def test_json_export_of_rows_comparison_and_worst_cases(results):
    rows = export.rows_json(results.head(3))
    assert rows[0]["params"] == {"norm": "Linf", "steps": 10} and rows[0]["flags"] == []
    assert rows[0]["robust_ci"] == list(wilson(rows[0]["robust_count"], N))
    c = report.comparison(results)
    d = json.loads(export.dumps(export.comparison_json(c)))
    m05 = next(m for m in d["models"] if m["model"] == "m05")["columns"]
    assert m05["worst case @ 8/255"]["acc"] == 0.1 and m05["cells @ 8/255"] == 3
    cases = export.worst_cases_json(report.worst_cases(results, report.attack_labels(results)))
    one = next(c for c in cases if c["model"] == "m05" and c["eps_str"] == "8/255")
    assert one["robust_count"] == 2 and sum(one["added"]) + 2 + (N - 18) == N
    assert json.loads(export.dumps({"x": float("nan"), "k": np.int64(3)})) == {"x": None, "k": 3}  # strict JSON


def test_breakdown_segments_add_up_to_n_even_when_two_cells_share_a_label(results, tmp_path):
    dup = to_frame([mrow("a", "fgsm", 8, range(12), ts="2026-01-01T00:00:01"),
                    mrow("a", "fgsm", 8, range(9), grad="rate", ts="2026-01-01T00:00:02"),
                    mrow("a", "fgsm", 8, range(5), grad="rate", params={"steps": 10, "norm": "Linf", "x": 1},
                         ts="2026-01-01T00:00:03")])
    cases = report.worst_cases(dup, report.attack_labels(dup).where(dup["grad"] != "rate", "fgsm"))
    series = fig.breakdown_series(cases, shown=1)
    assert sum(counts[0] for _, counts, _ in series) == N
    assert [s[0] for s in series] == ["robust in every cell", "clean errors", "fgsm (rate)", "other cells (1)"]
    assert {s[0]: s[1][0] for s in series}["fgsm (rate)"] == 3 + 4  # both rate cells, one label
    paths = fig.plot_breakdown(report.worst_cases(results, report.attack_labels(results)), tmp_path / "b")
    assert [p.suffix for p in paths] == [".png", ".pdf", ".svg"] and ">other cells (" not in paths[2].read_text()


def test_another_norm_is_another_panel(results):
    l2 = {"steps": 10, "norm": "L2"}
    more = pd.concat([results, to_frame([mrow("m05", "pgd", 127.5, range(4), params={**l2, "random_start": True}),
                                          mrow("m05", "apgd-ce", 127.5, range(3), params=l2)])], ignore_index=True)
    pts = fig.curve_points(more)
    assert {"pgd (final iterate) · L2", f"{fig.WORST} · L2"} <= set(pts["panel"])
    linf = pts[(pts["panel"] == fig.WORST) & (pts["row"] == "m05")]
    assert 127.5 / 255 not in set(linf["eps"])  # an L2 budget never joins the L-inf worst case
    l2w = pts[(pts["panel"] == f"{fig.WORST} · L2") & (pts["row"] == "m05") & (pts["eps"] > 0)]
    assert list(l2w["count"]) == [3] and list(l2w["eps_str"]) == ["127.5/255"]


def test_stage_points_keep_one_stage_list_per_model_and_label_stages_by_what_they_asked_for():
    def v2(model, stage, grad, robust, digest, asked=None, attack="apgd-ce"):
        p = {"suite": "reliable", "version": 2, "stage": stage, "attack": attack, "digest": digest,
             **({"path_requested": asked} if asked else {})}
        return mrow(model, "reliable", 8, range(robust), grad=grad, params=p)

    rows = [v2("a", 1, "rate", 15, "old"), v2("a", 2, "bptt", 14, "old"),  # an earlier list of the same version
            v2("a", 1, "arctan:a=4", 12, "new", "probe:1"), v2("a", "1+1", "arctan:a=4", 11, "new", "probe:1"),
            v2("a", 2, "assg:A=0.425", 9, "new"),
            v2("b", 1, "sigmoid:k=16", 13, "new", "probe:1"), v2("b", 2, "assg:A=0.425", 10, "new")]
    pts = fig.stage_points(to_frame(rows))
    a = pts[pts["row"] == "a"]
    assert list(a["stage"]) == [0, 1, 1.3, 2] and [round(100 * x, 6) for x in a["acc"]] == [90.0, 60.0, 55.0, 45.0]
    labels = dict(zip(pts["stage"], pts["label"], strict=False))
    assert labels[1] == "1: apgd-ce\nprobe:1" and labels[2] == "2: apgd-ce\nassg:A=0.425" and labels[1.3] == ""


def test_the_seed_figure_draws_a_seed_at_zero_percent(tmp_path):
    # at n = 200 the Wilson lower bound of 0/200 rounds to 1.7e-18, above the point itself
    rows = [mrow("z", "pgd", 8, [], n=200, clean=180), mrow("z-s1", "pgd", 8, range(3), n=200, clean=180)]
    assert fig.plot_seeds(to_frame(rows), tmp_path / "seeds") is not None
