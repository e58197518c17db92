"""Reports and record checks on synthetic results tables (no model, no torch needed by the code under test)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pandas as pd
import pytest

import robench.results.export as export
import robench.results.figures as figures
import robench.results.labels as labels
import robench.results.report as report
import robench.results.stats as stats
import robench.results.worstcase as worstcase
from robench.errors import DataNotFound
from robench.eval.checks import check_records, grad_gap, stored_flags
from robench.results import ResultsStore, to_frame
from robench.results.labels import attack_order

PGD = {"norm": "Linf", "random_start": True, "restarts": 1, "step_size": 2 / 255, "steps": 10}


def row(model="m1", attack="pgd", grad="bptt", k=8, acc=0.4, clean=0.9, params=None, seed=0, flags=""):
    params = params if params is not None else (PGD if attack == "pgd" else {"norm": "Linf"})
    return {"model": model, "sha256": "ab" * 32, "dataset": "fashion-mnist:test", "n": 100, "attack": attack,
            "params": json.dumps(params, sort_keys=True), "grad": grad, "eps": k / 255,
            "eps_str": f"{k}/255" if k else "0", "clean_acc": clean, "robust_acc": acc, "clean_count": 90,
            "robust_count": round(100 * acc), "seconds": 1.0, "device": "cpu", "seed": seed,
            "versions": "{}", "timestamp": "2026-01-01T00:00:00", "flags": flags}


@pytest.fixture
def records() -> pd.DataFrame:
    rows = []
    for model, base in (("m1", 0.5), ("m2", 0.3)):
        for k in (0, 4, 8):
            acc = 0.9 if k == 0 else base - k / 100
            rows += [row(model, "fgsm", g, k, acc + (0.05 if k else 0)) for g in ("bptt", "rate")]
            rows += [row(model, "pgd", "bptt", k, acc), row(model, "pgd", "rate", k, acc),
                     row(model, "pgd", "worst", k, acc - (0.01 if k else 0))]
    return to_frame(rows)


def test_comparison_table_rows_models_columns_attack_eps_grad(records):
    t = report.comparison_table(records)
    assert list(t.index) == ["m1", "m2"]
    assert list(t.columns[:4]) == ["clean", "fgsm @ 0 (bptt)", "fgsm @ 0 (rate)", "fgsm @ 4/255 (bptt)"]
    assert "pgd-10 (final) @ 8/255 (worst)" in t.columns
    assert t.loc["m1", "clean"] == 90.0 and t.loc["m1", "pgd-10 (final) @ 8/255 (worst)"] == 41.0
    md = report.to_markdown(t)
    assert md.splitlines()[2].split("|")[1].strip() == "m1"
    assert " 41.0 |" in md and " 90.0 |" in md  # one decimal, never '41'


def test_labels_tell_pgd_variants_apart():
    rows = [row(params={**PGD, "steps": s, "step_size": a / 255}) for s, a in ((7, 2.55), (10, 2), (20, 1))]
    rows += [row(params={**PGD, "steps": 10, "step_size": 1 / 255}), row(attack="fgsm")]
    labels = report.attack_labels(to_frame(rows)).tolist()
    assert labels == ["pgd-7 (final)", "pgd-10 (final) step=2/255", "pgd-20 (final)", "pgd-10 (final) step=1/255",
                      "fgsm"]


def test_labels_say_final_iterate_and_name_the_new_attacks():
    rows = [row(attack="pgd-best", params={**PGD, "steps": 50}), row(attack="sa-pgd", params={"steps": 100}),
            row(attack="bim", params={"steps": 10, "step_size": 2 / 255}), row(attack="square",
                                                                               params={"queries": 5000})]
    labels = report.attack_labels(to_frame(rows)).tolist()
    assert labels == ["pgd-best-50", "sa-pgd-100", "bim-10 (final)", "square-5000"]
    order = sorted(labels, key=attack_order)
    assert order == ["bim-10 (final)", "pgd-best-50", "sa-pgd-100", "square-5000"]


def test_write_report_writes_every_file(records, tmp_path):
    paths = report.write_report(records, tmp_path / "rep", check_records(records))
    assert {p.name for p in paths.values()} == {"table.md", "table.csv", "table.tex", "table-full.tex", "curves.png",
                                                "curves.pdf", "curves.svg", "findings.md"}
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths["png"].stat().st_size > 10_000
    tex = paths["tex_full"].read_text()
    assert "\\toprule" in tex and "8/255" in tex and "41.0" in tex
    narrow = paths["tex"].read_text()  # no masks here: the lowest single cell, marked, said in the caption
    assert "\\caption{" in narrow and "m2 & 100 & 90.0 & 25.0$^\\dagger$ {\\scriptsize" in narrow and "dagger" in narrow
    csv = pd.read_csv(paths["csv"], index_col=0, dtype=str)
    assert csv.loc["m2", "pgd-10 (final) @ 8/255 (bptt)"] == "22.0"
    assert "No findings" in paths["findings"].read_text()


def test_select_filters_and_empty_is_one_line_error(records):
    assert set(report.select(records, model="m2")["model"]) == {"m2"}
    assert set(report.select(records, attack="fgsm")["attack"]) == {"fgsm"}
    assert len(report.select(records, dataset="fashion-mnist")) == len(records)
    with pytest.raises(DataNotFound, match="no results match --model zz; the results hold models: m1, m2"):
        report.select(records, model="zz")
    more = pd.concat([records, records.assign(model="m2-s1"), records.assign(model="m2-mppd")], ignore_index=True)
    assert set(report.select(more, model="m2")["model"]) == {"m2"}  # an id the results hold: itself only
    assert set(report.select(more, model="m2-")["model"]) == {"m2-s1", "m2-mppd"}  # a prefix
    assert set(report.select(more, model="m2-s*,m2")["model"]) == {"m2", "m2-s1"}  # a glob and an id


@pytest.mark.parametrize("module", [report, worstcase, stats, labels, figures, export])
def test_report_modules_never_import_torch(module):
    tree = ast.parse(Path(module.__file__).read_text())
    mods = {n.module if isinstance(n, ast.ImportFrom) else a.name
            for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
            for a in (n.names if isinstance(n, ast.Import) else [n])}
    assert not any("torch" in (m or "") for m in mods)
    assert mods <= {"__future__", "fnmatch", "json", "math", "collections.abc", "pathlib", "matplotlib",
                    "matplotlib.figure", "matplotlib.lines", "pandas", "numpy", "dataclasses", "scipy.stats", "re",
                    "errors", "attack_meta", "findings", "store", "stats", "worstcase", "seeds", "labels", "figures",
                    "report", "checks", "readme", "headline"}


# ---------------------------------------------------------------------------------------- record checks
def test_clean_records_give_no_findings(records):
    assert check_records(records) == []


@pytest.mark.parametrize("change, name", [
    (dict(k=0, acc=0.5), "eps0-not-clean"),
    (dict(k=8, acc=0.95), "robust-above-clean"),
    (dict(k=8, acc=0.48), "not-monotone"),
    (dict(k=4, acc=0.53), "iterative-above-fgsm"),
])
def test_each_record_check_names_its_offending_cell(records, change, name):
    bad = row("m1", "pgd", "bptt", **change)
    df = records[~((records["model"] == "m1") & (records["attack"] == "pgd") & (records["grad"] == "bptt")
                   & (records["eps"] == change["k"] / 255))]
    found = [f for f in check_records(pd.concat([df, to_frame([bad])], ignore_index=True)) if f.name == name]
    assert len(found) == 1 and "m1 pgd" in found[0].message and found[0].cells


def test_grad_gap_flags_the_weaker_mode():
    df = to_frame([row(grad="bptt", acc=0.50), row(grad="rate", acc=0.20), row(model="m2", grad="bptt", acc=0.5),
                   row(model="m2", grad="rate", acc=0.45)])
    found = grad_gap(df, threshold=0.10)
    assert len(found) == 1 and "rate gradient is 30.0 pt stronger than bptt" in found[0].message
    assert found[0].cells[0]["model"] == "m1"


def test_stored_flags_become_findings(tmp_path):
    store = ResultsStore(tmp_path / "r.csv")
    store.append([row(flags="zero-grad"), row(grad="rate"), row(grad="worst", flags="zero-grad")])
    found = stored_flags(store.read())
    assert [(f.name, f.model) for f in found] == [("zero-grad", "m1")]
    cascade = ResultsStore(tmp_path / "c.csv")  # a cascade flags its worst-case row only
    cascade.append([row(attack="reliable", grad="worst", flags="gradient-masking")])
    (f,) = stored_flags(cascade.read())
    assert "(reliable worst case at 8/255, n=" in f.message and "black-box attack (Square) broke samples" in f.message


def test_inject_markdown_replaces_only_the_marked_block_and_refuses_a_document_without_it():
    from robench.errors import UsageError
    from robench.results.report import README_END, README_START, inject_markdown

    doc = f"intro\n{README_START}\nold table\n{README_END}\noutro\n"
    new = inject_markdown(doc, "| a |\n|---|\n")
    assert new == f"intro\n{README_START}\n| a |\n|---|\n{README_END}\noutro\n"
    assert inject_markdown(new, "| a |\n|---|\n") == new  # idempotent
    with pytest.raises(UsageError, match="no block"):
        inject_markdown("no markers here", "x")


def test_select_filters_by_eps_string_and_grad_mode():
    import pandas as pd

    from robench.errors import DataNotFound
    from robench.results.report import select

    df = pd.DataFrame({"model": ["m"] * 3, "attack": ["pgd"] * 3, "dataset": ["d"] * 3,
                       "eps_str": ["4/255", "8/255", "8/255"], "grad": ["bptt", "bptt", "worst"]})
    assert list(select(df, eps="8/255", grad="worst").index) == [2]
    assert len(select(df, eps=["4/255", "8/255"])) == 3
    with pytest.raises(DataNotFound, match="--grad rate"):
        select(df, grad="rate")


def test_named_blocks_and_the_n_filter():
    import pandas as pd

    from robench.results.report import inject_markdown, select

    doc = "<!-- robench report main: start -->\nx\n<!-- robench report main: end -->\n"
    assert inject_markdown(doc, "T", block="main") == "<!-- robench report main: start -->\nT\n" \
                                                      "<!-- robench report main: end -->\n"
    df = pd.DataFrame({"model": ["m", "m"], "attack": ["pgd", "pgd"], "dataset": ["d", "d"], "n": [200, 2000],
                       "eps_str": ["8/255"] * 2, "grad": ["worst"] * 2})
    assert list(select(df, n=2000).index) == [1]


def test_a_sweep_whose_step_follows_eps_is_one_curve_and_fixed_steps_stay_apart():
    import json

    import pandas as pd

    from robench.results.report import attack_labels

    def rows(pairs):
        return pd.DataFrame({"attack": ["pgd"] * len(pairs), "eps": [e for e, _ in pairs],
                             "params": [json.dumps({"steps": 10, "step_size": s}) for _, s in pairs]})

    sweep = rows([(0.0, 2 / 255), (4 / 255, 1 / 255), (8 / 255, 2 / 255), (16 / 255, 4 / 255)])
    assert set(attack_labels(sweep)) == {"pgd-10 (final) step=eps/4"}
    mixed = rows([(8 / 255, 2 / 255), (8 / 255, 1 / 255)])  # same budget, two steps: two labels
    assert sorted(attack_labels(mixed)) == ["pgd-10 (final) step=1/255", "pgd-10 (final) step=2/255"]


def test_cascade_rows_are_labelled_by_stage_and_the_table_transposes(records):
    stage = {"suite": "reliable", "version": 1, "stage": 2, "attack": "sa-pgd", "steps": 100, "stage_restarts": 1}
    whole = {"suite": "reliable", "version": 1, "stage": "all", "stages": 7}
    rows = [row(attack="reliable", params=stage, grad="arctan:a=4"), row(attack="reliable", params=whole,
                                                                         grad="worst")]
    # version 1 rows are labelled reliable-v1; the newest version's rows (with the path they asked for) reliable
    newest = labels.newest_version("reliable")
    assert newest is not None and newest >= 2
    v2 = [{**stage, "version": newest, "digest": "abc", "path_requested": "probe:1"}, {**whole, "version": newest}]
    rows += [row(attack="reliable", params=v2[0], grad="arctan:a=8"), row(attack="reliable", params=v2[1],
                                                                          grad="worst")]
    assert report.attack_labels(to_frame(rows)).tolist() == ["reliable-v1 2: sa-pgd-100", "reliable-v1",
                                                             "reliable 2: sa-pgd-100", "reliable"]
    c = report.comparison(records)
    md = report.to_markdown(c.table, c, transpose=True)
    lines = md.splitlines()
    assert lines[0].split("|")[2].strip() == "m1" and lines[0].split("|")[3].strip() == "m2"
    assert any(line.split("|")[1].strip() == "pgd-10 (final) @ 8/255 (worst)" for line in lines)


def test_headline_keeps_clean_worst_case_and_each_attacks_worst_over_paths(records):
    stage = {"suite": "reliable", "version": 1, "stage": 1, "attack": "sa-pgd", "steps": 100, "stage_restarts": 1}
    df = to_frame([*records.to_dict("records"), row(attack="reliable", params=stage, grad="arctan:a=4", acc=0.2)])
    cols = list(report.headline_view(report.comparison(df)).table.columns)
    assert cols[0] == "clean" and all(c.endswith("(worst)") for c in cols[1:])
    assert not any(c.startswith("reliable") for c in cols) and "pgd-10 (final) @ 8/255 (worst)" in cols


def test_headline_keeps_a_gradient_free_attacks_only_column(records):
    """Square has no worst-over-paths row (it takes no path): its one column is its result, and the pointwise
    worst case it lowers must not appear without it."""
    df = to_frame([*records.to_dict("records"), row(attack="square", params={"queries": 5000}, grad="none")])
    cols = list(report.headline_view(report.comparison(df)).table.columns)
    assert "square-5000 @ 8/255 (none)" in cols and all(c.endswith(("(worst)", "(none)")) for c in cols[3:])


def test_rows_the_first_protocol_wrote_still_read_and_are_labelled_v1(tmp_path):
    """A copy of rows from results/reliable.csv, written before protocols were versioned files."""
    old = Path(__file__).parent / "data" / "reliable-v1.csv"
    df = ResultsStore(old).read()
    labels = report.attack_labels(df).tolist()
    assert labels[0] == "reliable-v1 1: pgd-best-50" and labels[-1] == "reliable-v1" and len(labels) == 8
    c = report.comparison(df)
    assert "reliable-v1 @ 8/255 (worst)" in c.table.columns
    assert c.table["worst case"].iloc[0] == round(100 * df["robust_acc"].iloc[-1], 1)
    out = report.write_report(df, tmp_path / "rep")
    assert (tmp_path / "rep" / "table.md").read_text().count("reliable-v1") >= 8 and out


def test_a_cascade_is_labelled_newest_within_its_own_norm():
    from robench.eval import stagelist
    from robench.results.labels import suite_label, version_norms

    norms = version_norms("reliable")
    assert norms == {v: stagelist.load(f"reliable-v{v}").norm for v in stagelist.versions("reliable")}
    for v, norm in norms.items():
        newest = max(k for k, n in norms.items() if n == norm)  # an L2 list never makes the L-inf one old
        assert suite_label("reliable", v) == ("reliable" if v == newest else f"reliable-v{v}")
    assert {suite_label("reliable", max(k for k, n in norms.items() if n == m)) for m in set(norms.values())} == {
        "reliable"}
