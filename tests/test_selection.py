"""The stage selection of the reliable protocol (robench.results.selection): greedy choice on one split, probe
stages resolved per model, replay on the held-out split."""

import json

import numpy as np
import pandas as pd

from robench.results.selection import (
    Choice,
    evaluate_choice,
    greedy_by_time,
    read_matrix,
    read_timed,
    select,
    v1_masks,
    work,
)
from robench.results.stats import encode_mask

PGD = json.dumps({"steps": 50}, sort_keys=True)
APGD = json.dumps({"steps": 100}, sort_keys=True)
SQ = json.dumps({"queries": 5000}, sort_keys=True)
PROBE = ("pgd-best", PGD)


def _row(model, attack, params, grad, mask, n=None):
    mask = np.asarray(mask, dtype=bool)
    return {"model": model, "attack": attack, "params": params, "grad": grad, "eps_str": "8/255",
            "n": n or len(mask), "robust_mask": encode_mask(mask), "robust_count": int(mask.sum()), "seconds": 1.0}


def _frame(rows):
    return pd.DataFrame(rows)


def _m(robust_idx, n=8):
    out = np.zeros(n, dtype=bool)
    out[list(robust_idx)] = True
    return out


def test_greedy_takes_the_cheapest_breaker_first_and_stops_when_nothing_adds():
    # images 0-3 are the selection split; all eight clean-correct on one model
    rows = [
        _row("a", "pgd-best", PGD, "bptt", _m([0, 1, 2, 3, 4, 5, 6, 7])),  # some cell leaves all robust
        _row("a", "pgd-best", PGD, "arctan:a=4", _m([2, 3, 4, 5, 6, 7])),   # breaks 0, 1 cheaply
        _row("a", "apgd-ce", APGD, "arctan:a=4", _m([1, 3, 4, 5, 6, 7])),  # breaks 0, 2 at great cost
        _row("a", "apgd-ce", APGD, "bptt", _m([0, 1, 3, 4, 5, 6, 7])),    # breaks 2 only
    ]
    mx = read_matrix(_frame(rows), 8)
    sel = np.arange(4)
    got = select(mx, sel, PROBE, ["bptt", "arctan:a=4"], probe_images=4, threshold=0.0, prefer_probe=1.0)
    labels = [(c.attack, c.grad) for c in got.stages]
    assert labels[0] == ("pgd-best", "arctan:a=4")  # 2 images per 1 s
    assert labels[1][0] == "apgd-ce"  # then the one that breaks image 2; no white-box stage after it
    assert labels[2:] == [("square", "none")]  # the black-box check, kept by rule though the matrix has none
    assert got.gains[0] == {"a": 2} and got.gains[1] == {"a": 1}


def test_probe_stage_resolves_to_each_models_best_path():
    rows = []
    for model, good in (("a", "arctan:a=4"), ("b", "sigmoid:k=16")):
        bad = "sigmoid:k=16" if good == "arctan:a=4" else "arctan:a=4"
        rows += [_row(model, "pgd-best", PGD, good, _m([3, 5, 6, 7])),
                 _row(model, "pgd-best", PGD, bad, _m([0, 1, 2, 3, 4, 5, 6, 7])),
                 _row(model, "apgd-ce", APGD, good, _m([4, 5, 6, 7])),
                 _row(model, "apgd-ce", APGD, bad, _m([0, 1, 2, 3, 4, 5, 6, 7]))]
    mx = read_matrix(_frame(rows), 8)
    got = select(mx, np.arange(4), PROBE, ["arctan:a=4", "sigmoid:k=16"], probe_images=4, threshold=0.0)
    # no fixed path is best for both models; the probe stage is
    assert Choice("apgd-ce", APGD, "probe:1") in got.stages
    table = evaluate_choice(mx, [Choice("apgd-ce", APGD, "probe:1")], np.arange(4, 8), PROBE,
                            ["arctan:a=4", "sigmoid:k=16"], probe_images=4)
    assert list(table["probe top 3"]) == ["arctan:a=4, sigmoid:k=16", "sigmoid:k=16, arctan:a=4"]


def test_replay_on_held_out_images_reports_the_gap_to_the_matrix_worst_case():
    rows = [_row("a", "pgd-best", PGD, "bptt", _m([0, 1, 2, 3, 4, 5, 6, 7])),
            _row("a", "pgd-best", PGD, "rate", _m([0, 1, 2, 3, 6, 7])),     # breaks 4, 5: validation only
            _row("a", "square", SQ, "none", _m([0, 1, 2, 3, 4, 5, 7]))]
    mx = read_matrix(_frame(rows), 8)
    stages = [Choice("pgd-best", PGD, "bptt"), Choice("square", SQ, "none")]
    val = evaluate_choice(mx, stages, np.arange(4, 8), PROBE, ["bptt", "rate"], probe_images=4).iloc[0]
    assert val["stages robust %"] == 75.0 and val["matrix worst %"] == 25.0 and val["gap pt"] == 50.0


def test_square_stays_last_and_v1_masks_come_from_the_cascade_row():
    rows = [_row("a", "square", SQ, "none", _m([0, 1])),
            _row("a", "pgd-best", PGD, "bptt", _m([0, 1, 2, 3])),
            _row("a", "pgd-best", PGD, "rate", _m([1, 2, 3]))]
    mx = read_matrix(_frame(rows), 8)
    got = select(mx, np.arange(8), PROBE, ["bptt", "rate"], probe_images=8, threshold=0.0)
    assert got.stages[-1].attack == "square" and not got.stages[-1].white_box
    v1 = {"reliable": json.dumps({"version": 1, "stage": "all"}, sort_keys=True)}
    rel = _frame([dict(_row("a", "reliable", v1["reliable"], "worst", _m([5, 6], n=16), n=16)),
                  dict(_row("a", "reliable", json.dumps({"version": 1, "stage": 1}), "arctan:a=4", _m([1], n=16),
                            n=16))])
    got_v1 = v1_masks(rel, 8)
    assert set(got_v1) == {"a"} and got_v1["a"].nonzero()[0].tolist() == [5, 6]


def test_cost_is_counted_in_gradient_evaluations_not_seconds():
    assert work("pgd-best", PGD) == 50
    assert work("apgd-ce", json.dumps({"steps": 100, "restarts": 2})) == 200
    assert work("apgd-t", APGD) == 900  # nine target classes
    assert abs(work("square", SQ) - 5000 / 3) < 1e-9


def test_a_probe_stage_is_preferred_to_the_fixed_path_it_equals_here():
    rows = [_row("a", "pgd-best", PGD, "bptt", _m([0, 1, 2, 3])),
            _row("a", "pgd-best", PGD, "arctan:a=4", _m([2, 3]))]
    mx = read_matrix(_frame(rows), 8)
    got = select(mx, np.arange(4), PROBE, ["bptt", "arctan:a=4"], probe_images=4, threshold=0.0)
    assert got.stages[0] == Choice("pgd-best", PGD, "probe:1")  # resolves to arctan:a=4 on this model


def test_ordering_by_time_takes_breaks_per_second_and_uses_only_cells_on_every_model():
    def timed(model, attack, grad, robust, secs, n=8):
        return {**_row(model, attack, PGD, grad, _m(robust, n)), "seconds": secs, "clean_count": n}

    rows = [timed(m, "pgd-best", "bptt", range(8), 1.0) for m in ("a", "b")]  # leaves every image robust
    rows += [timed(m, "pgd-best", "rate", [2, 3, 4, 5, 6, 7], 1.0) for m in ("a", "b")]  # 2 per model, cheap
    rows += [timed(m, "apgd-ce", "bptt", [4, 5, 6, 7], 100.0) for m in ("a", "b")]  # 4 per model, slow
    rows += [timed("a", "fgsm", "bptt", [], 0.1)]  # breaks everything, but on one model only: not a candidate
    rows += [{**timed(m, "square", "none", [], 0.1)} for m in ("a", "b")]  # black box: not ordered here
    models, cells = read_timed(_frame(rows).assign(flags=""))
    assert models == ["a", "b"] and {c.key[0] for c in cells} == {"pgd-best", "apgd-ce"}
    picks = greedy_by_time(models, cells)
    assert [(p.key[0], p.key[2]) for p in picks] == [("pgd-best", "rate"), ("apgd-ce", "bptt")]
    assert picks[0].gains == {"a": 2, "b": 2} and picks[1].gains == {"a": 2, "b": 2}
    assert picks[1].robust == {"a": 0.5, "b": 0.5} and picks[1].cost == 2 * 100.0 * 6 / 8
    models, cells = read_timed(_frame(rows), first=4)  # the selection split: images 0-3, seconds halved
    picks = greedy_by_time(models, cells)
    assert [p.key[2] for p in picks] == ["rate", "bptt"] and picks[1].cost == 2 * 50.0 * 2 / 4


def test_a_probe_stage_runs_through_exactly_the_kth_ranked_path_even_without_its_cell():
    # the probe ranks rate second; the matrix has APGD through bptt and arctan:a=4 only: probe:2 must count as
    # breaking nothing (the real cascade runs APGD through rate), not as APGD through the next path with a cell
    rows = [_row("a", "pgd-best", PGD, "arctan:a=4", _m([4, 5, 6, 7])),
            _row("a", "pgd-best", PGD, "rate", _m([3, 4, 5, 6, 7])),
            _row("a", "pgd-best", PGD, "bptt", _m([0, 1, 2, 3, 4, 5, 6, 7])),
            _row("a", "apgd-ce", APGD, "bptt", _m([6, 7])),
            _row("a", "apgd-ce", APGD, "arctan:a=4", _m([5, 6, 7]))]
    mx = read_matrix(_frame(rows), 8)
    order = ["bptt", "arctan:a=4", "rate"]
    table = evaluate_choice(mx, [Choice("apgd-ce", APGD, "probe:2")], np.arange(8), PROBE, order, probe_images=8)
    row = table.iloc[0]
    assert row["probe top 3"] == "arctan:a=4, rate, bptt"
    assert row["stages missing"] == 1 and row["stages robust %"] == 100.0  # nothing credited
    table = evaluate_choice(mx, [Choice("apgd-ce", APGD, "probe:3")], np.arange(8), PROBE, order, probe_images=8)
    assert table.iloc[0]["stages robust %"] == 25.0  # probe:3 is bptt, which has a cell


def test_the_rule_kept_square_check_matches_a_square_cell_with_its_budget():
    sq_full = json.dumps({"queries": 5000, "restarts": 1, "norm": "Linf", "p_init": 0.8}, sort_keys=True)
    rows = [_row("a", "pgd-best", PGD, "bptt", _m([0, 1, 2, 3])),
            _row("a", "square", sq_full, "none", _m([0, 1])),
            _row("a", "square", json.dumps({"queries": 1000}), "none", _m([0, 1, 2]))]
    mx = read_matrix(_frame(rows), 8)
    table = evaluate_choice(mx, [Choice("square", SQ, "none")], np.arange(8), PROBE, ["bptt"], probe_images=8)
    assert table.iloc[0]["stages missing"] == 0 and table.iloc[0]["stages robust %"] == 25.0
