"""Record checks compare only cells of one run key: model identity (weights and config), dataset, n, seed and
attack parameters; two measurements at one eps are never a rise with eps."""

from __future__ import annotations

from test_report import row

from robench.eval.checks import check_records, monotone_in_eps
from robench.results import to_frame


def test_two_measurements_of_one_eps_are_not_a_rise_with_eps():
    # the same cell measured in two files (another batch size draws other noise): 81.0 % and 80.6 % at 0.1
    df = to_frame([row("m", "pgd", "bptt", 0, 0.9), row("m", "pgd", "bptt", 8, 0.806),
                   row("m", "pgd", "bptt", 8, 0.810), row("m", "pgd", "bptt", 16, 0.5)])
    assert monotone_in_eps(df) == []
    # a real rise is still found
    df = to_frame([row("m", "pgd", "bptt", 4, 0.6), row("m", "pgd", "bptt", 8, 0.7)])
    assert [f.name for f in monotone_in_eps(df)] == ["not-monotone"]


def test_checks_never_compare_cells_of_other_run_keys():
    rows = [row("m", "pgd", "bptt", 4, 0.6, seed=0), row("m", "pgd", "bptt", 8, 0.7, seed=1),  # other attack seed
            {**row("m", "pgd", "bptt", 4, 0.3), "n": 50}, {**row("m", "pgd", "bptt", 8, 0.4), "n": 200},  # other n
            {**row("m", "pgd", "bptt", 4, 0.2), "sha256": "cd" * 32}, row("m", "pgd", "bptt", 8, 0.25),  # weights
            {**row("m", "fgsm", "bptt", 8, 0.1), "sha256": "ef" * 32}, {**row("m", "pgd", "bptt", 8, 0.2),
                                                                          "sha256": "ef" * 32, "seed": 5}]
    rows = [{**r, "robust_count": round(r["n"] * r["robust_acc"])} for r in rows]
    assert check_records(to_frame(rows)) == []
