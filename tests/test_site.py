"""The leaderboard site, read back with an HTML parser: rows, ranking, sorting keys, links, model pages, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytest
from cli_helpers import one_line, run_main
from site_data import Page, make_inputs

from robench.errors import UsageError
from robench.results import ResultsStore
from robench.results.site import GENERATOR, build_site, check_out


@pytest.fixture
def inputs(tmp_path):
    return make_inputs(tmp_path)


@pytest.fixture
def site(inputs, tmp_path):
    results, zoo, adv = inputs
    return build_site(results, zoo, tmp_path / "site", [adv])


def _board(site) -> Page:
    return Page(site.index.read_text())


def test_index_has_one_row_per_model_and_threat_model_ranked_by_the_newest_protocol(site):
    page = _board(site)
    got = [(r["data-model"], r["data-norm"], r["cells"]["rank"]) for r in page.rows]
    assert got == [("m-a", "L2", "1"), ("m-b", "Linf", "1"), ("m-b-s1", "Linf", "2"), ("m-a", "Linf", "3"),
                   ("m-e", "Linf", ""), ("m-c", "Linf", "")]  # m-d has Gaussian noise only; m-z no results
    linf = {r["data-model"]: r["cells"] for r in page.rows if r["data-norm"] == "Linf"}
    assert len(linf) == len({r["data-model"] for r in page.rows if r["data-norm"] == "Linf"})
    assert linf["m-b"]["robust"] == "40.0000" and linf["m-a"]["robust"] == "20.0000"
    assert linf["m-a"]["reliable-v1"] == "25.0000"  # the older protocol's column
    assert linf["m-e"]["reliable-v1"] == "50.0000" and linf["m-e"]["robust"] == ""  # not ranked against v2
    assert linf["m-a"]["autoattack"] == "30.0000"  # AutoAttack standard, its worst case over paths
    assert linf["m-b"]["seeds"] == linf["m-b-s1"]["seeds"] == "35.0000" and linf["m-a"]["seeds"] == ""
    assert linf["m-a"]["clean"] == "90.0000" and linf["m-c"]["robust"] == ""
    assert linf["m-b"]["neuron"] == "stable" and linf["m-b"]["recipe"] == "fgsm-at α=1"
    assert linf["m-c"]["arch"] == ""  # no card
    text = site.index.read_text()
    assert "35.0 ± 7.1" in text and "gradient-masking" in text and GENERATOR in text
    assert 'href="models/m-z.html"' in text and 'href="models/m-d.html"' in text  # no result to rank: listed


def test_every_column_has_a_sort_key_on_every_row(site):
    page = _board(site)
    keys = [h["data-key"] for h in page.heads]
    assert {"rank", "model", "dataset", "norm", "eps", "n", "clean", "robust", "reliable-v1", "autoattack", "seeds",
            "arch", "neuron", "recipe", "framework", "T", "date"} <= set(keys)
    assert all(h["data-type"] in ("num", "text") for h in page.heads)
    for r in page.rows:
        assert set(r["cells"]) == set(keys), r["data-model"]
        for k, h in zip(keys, page.heads, strict=True):
            if h["data-type"] == "num" and r["cells"][k]:
                float(r["cells"][k])  # a number the script can compare
    filters = {r["data-norm"] for r in page.rows}, {r["data-dataset"] for r in page.rows}
    assert filters == ({"Linf", "L2"}, {"fashion-mnist"})
    assert 'data-filter="norm"' in site.index.read_text() and 'data-filter="dataset"' in site.index.read_text()


def test_links_resolve_to_files_in_the_site_and_nothing_is_loaded_from_outside(site):
    pages = [site.index, *site.pages]
    assert {p.name for p in site.pages} == {f"{m}.html" for m in ("m-a", "m-b", "m-b-s1", "m-c", "m-d", "m-e", "m-z")}
    for p in pages:
        page = Page(p.read_text())
        assert not page.stylesheets and all("src" not in s for s in page.scripts)
        for link in page.links:
            parts = urlsplit(link)
            assert not parts.scheme and not parts.netloc, (p, link)  # nothing from a server
            assert (p.parent / parts.path).resolve().is_file(), (p, link)
            assert (p.parent / parts.path).resolve().is_relative_to(site.out.resolve())


def test_model_page_shows_card_breakdown_curves_rows_and_adversarial_files(site, inputs):
    results, _, adv = inputs
    page = (site.out / "models" / "m-a.html").read_text()
    assert "robench train --id m-a" in page and "reliable v1" in page and "reliable v2" in page
    assert "clean errors" in page and "pgd-best-50" in page and "square-1000" in page
    assert 'src="m-a-curves.svg"' in page and (site.out / "models" / "m-a-curves.svg").read_text().startswith("<?xml")
    assert page.count('href="../adv/m-a_reliable_stage1.safetensors"') == 1
    assert (site.out / "adv" / "m-a_reliable_stage1.safetensors").read_bytes() == (
        adv / "m-a_reliable_stage1.safetensors").read_bytes()
    assert not (site.out / "adv" / "other.safetensors").exists()
    rows = ResultsStore(site.out / "models" / "m-a.csv").read()  # a results file robench reads back
    mine = ResultsStore(results / "run.csv").read().query("model == 'm-a'")
    assert len(rows) == 12
    pd.testing.assert_frame_equal(rows, mine.reset_index(drop=True))
    assert "No zoo card" in (site.out / "models" / "m-c.html").read_text()
    assert "m-b-s1.html" in (site.out / "models" / "m-b.html").read_text()  # the other seed


def test_rebuild_replaces_a_site_and_the_same_inputs_give_the_same_files(site, inputs):
    before = {p.relative_to(site.out): p.read_bytes() for p in site.out.rglob("*") if p.is_file()}
    (site.out / "models" / "stale.html").write_text("old")
    again = build_site(inputs[0], inputs[1], site.out, [inputs[2]])
    after = {p.relative_to(again.out): p.read_bytes() for p in again.out.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in site.out.parent.iterdir() if p.name.startswith(".")] == []  # no temporary folder left


def test_out_that_is_not_a_site_is_refused_and_left_alone(inputs, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(UsageError, match="not a robench leaderboard"):
        build_site(inputs[0], inputs[1], mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is not a folder"):
        check_out(tmp_path / "file")


def test_cli_writes_the_site(inputs, tmp_path, capsys):
    results, zoo, adv = inputs
    code, out, err = run_main(capsys, ["leaderboard", "--results", str(results), "--zoo", str(zoo), "--adv", str(adv),
                                       "--out", str(tmp_path / "lb")])
    assert code == 0, err
    assert "4 ranked entries" in out and "7 model pages" in out
    assert (tmp_path / "lb" / "index.html").is_file()


@pytest.mark.parametrize("out", ["/proc/robench-site", "/proc/robench-site/deeper"])
def test_cli_unwritable_out_is_one_error_line_and_writes_nothing(inputs, capsys, out):
    results, zoo, _ = inputs
    code, _, err = run_main(capsys, ["leaderboard", "--results", str(results), "--zoo", str(zoo), "--out", out])
    assert code == 2
    assert out in one_line(err) and "not a writable folder" in err
    assert not Path(out).exists()


def test_cli_missing_results_or_adv_folder_is_one_error_line(inputs, tmp_path, capsys):
    results, zoo, _ = inputs
    for args in (["--results", str(tmp_path / "none")], ["--results", str(results), "--adv", str(tmp_path / "x")]):
        code, _, err = run_main(capsys, ["leaderboard", *args, "--zoo", str(zoo), "--out", str(tmp_path / "lb")])
        assert code == 1 and one_line(err)
    assert not (tmp_path / "lb").exists()


def test_the_site_needs_no_torch_and_sets_no_plotting_state():
    code = ("import sys, robench.results.site, robench.cli.leaderboard; "
            "sys.exit('torch' in sys.modules or 'matplotlib.pyplot' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_a_model_id_that_is_not_a_file_name_gets_a_safe_page_name():
    from robench.results.site import slug

    assert slug("fmnist-vgg11-lif-gn") == "fmnist-vgg11-lif-gn"
    odd = slug("../My Model/<x>")
    assert "/" not in odd and "<" not in odd and not odd.startswith(".") and odd != slug("../My Model/<y>")


def test_a_single_draw_row_of_a_stochastic_model_is_never_the_headline():
    from site_data import cascade, row

    from robench.results import to_frame
    from robench.results.board import make_board

    naive = row("m-p", "reliable", {"suite": "reliable", "version": 2, "stage": "all", "stages": 2, "draws": 1},
                "worst", 1, ts="2026-01-03T00:00:00+00:00")
    aa = {"norm": "Linf", "version": "standard"}
    board = make_board(to_frame([*cascade("m-p", 2, 7), naive, row("m-p", "autoattack", aa, "worst", 9),
                                 row("m-p", "autoattack", {**aa, "draws": 1}, "worst", 2)]), {})
    (e,) = board.entries
    assert (e.robust.count, e.autoattack.count) == (7, 9)


def test_each_norm_is_ranked_by_its_own_newest_version():
    from site_data import cascade

    from robench.results import to_frame
    from robench.results.board import make_board

    # version 3 ran in L-inf only, version 4 (an L2 list) in L2 only: neither unranks the other norm's entries
    rows = [*cascade("m-a", 3, 5), *cascade("m-b", 3, 8), *cascade("m-b", 2, 9),
            *cascade("m-a", 4, 4, norm="L2", eps=0.5, eps_str="0.5")]
    board = make_board(to_frame(rows), {})
    got = {(e.model, e.norm): (e.rank, e.robust.count, sorted(e.older)) for e in board.entries}
    assert got == {("m-a", "L2"): (1, 4, []), ("m-b", "Linf"): (1, 8, ["2"]), ("m-a", "Linf"): (2, 5, [])}
    assert board.newest == {"Linf": "3", "L2": "4"} and board.older == ["2"]
    assert board.headline() == "v4 (L2), v3 (Linf)"
