"""README's console examples and the committed report are what the current code writes.

``scripts/readme_consoles.py`` regenerates both; these tests fail when README or ``results/report/`` differ from
what it would write, and say how to fix it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("readme_consoles", ROOT / "scripts" / "readme_consoles.py")
rc = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = rc  # dataclasses look their module up there
_spec.loader.exec_module(rc)

README = (ROOT / "README.md").read_text()
FIX = ("README or results/report/ is stale: run `python scripts/readme_consoles.py` (--only NAME, --report) "
       "and commit README.md, tests/readme/ and results/report/")


def _tracked(folder: str) -> list[str] | None:
    """The tracked files under ``folder`` (relative paths), or None outside a git checkout."""
    try:
        done = subprocess.run(["git", "ls-files", "-z", "--", folder], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return sorted(p for p in done.stdout.decode().split("\0") if p)


def _committed(rel: str) -> bytes:
    """The staged content of a results file (what a fresh clone gets; a run still appending to the file in this
    checkout does not count), or the file itself outside a git checkout."""
    try:
        return subprocess.run(["git", "show", f":{rel}"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return (ROOT / rel).read_bytes()


# ----------------------------------------------------------------------------------------------- consoles
def test_every_console_block_is_marked_and_known():
    blocks = rc.console_blocks(README)
    assert README.count("```console") == len(blocks), "a ```console block of README lacks its console markers"
    assert sorted(blocks) == sorted(rc.BLOCKS)
    assert all(blocks.values()), "a console block without a `$ ` command"


def test_stored_console_blocks_are_readme_verbatim():
    """Blocks too slow to rerun here (training, an import, an attack) must show their last real run."""
    store = json.loads(rc.STORE.read_text())
    blocks = rc.console_blocks(README)
    for name, block in rc.BLOCKS.items():
        if block.live:
            continue
        assert store[name]["commands"] == blocks[name], f"console {name}: commands changed since its run. {FIX}"
        assert rc.block_body(README, name) == rc.render(store[name]["commands"], store[name]["outputs"]), (
            f"console {name} differs from its stored run. {FIX}")


@pytest.mark.parametrize("name", [n for n, b in rc.BLOCKS.items() if b.live])
def test_live_console_block_is_what_the_code_prints(name):
    commands = rc.console_blocks(README)[name]
    assert rc.block_body(README, name) == rc.render(commands, rc.run_block(name, commands)), f"console {name}. {FIX}"


def test_render_round_trips_a_block():
    text = "x\n<!-- console b: start -->\n```console\n$ a \\\n  --n 2   # c\nout\n$ b\n```\n<!-- console b: end -->\n"
    assert rc.console_blocks(text) == {"b": ["a \\\n  --n 2   # c", "b"]}
    assert rc.block_body(text, "b") == rc.render(["a \\\n  --n 2   # c", "b"], ["out", ""])
    assert rc.replace_block(text, "b", "new\n") == "x\n<!-- console b: start -->\nnew\n<!-- console b: end -->\n"


# ------------------------------------------------------------------------------------------ Python example
def test_python_example_prints_its_readme_output():
    """README's 5-line example runs (with the quick stage list of scripts/readme_consoles.py) and prints the output
    block under it, timings aside."""
    code = rc.python_example(README)
    assert len(code.strip().splitlines()) == 5 and "robench.evaluate(" in code
    shown = rc.output_block(README)
    out = rc.run_python(code)
    assert re.search(r"robust \d+\.\d% \[\d+\.\d, \d+\.\d\]", out) and "readme-quick v1" in out
    assert rc.untimed(out) == rc.untimed(shown), f"README's Python example output. {FIX}"
    assert rc.untimed(shown) != shown  # the masking only hides the seconds column


# ------------------------------------------------------------------------------------------------- report
def test_report_commands_skip_templates():
    text = ("`robench report --results DIR --out DIR`, `robench report --compare A B`, `robench report`, "
            "`robench report --n 100\n--out results/report/x`, again `robench report`")
    assert rc.report_commands(text) == [["report"], ["report", "--n", "100", "--out", "results/report/x"]]


def test_readme_report_commands_change_no_tracked_file(tmp_path, monkeypatch):
    """README's own `robench report` commands, run on the committed results in a scratch folder, rewrite README's
    tables and results/report/ to exactly what is there: same files, same text (figures: present)."""
    report = importlib.import_module("robench.results.report")

    def touch(_data, stem):  # figures are checked for presence only (their pixels depend on matplotlib)
        paths = [Path(stem).with_name(f"{Path(stem).name}.{fmt}") for fmt in ("png", "pdf", "svg")]
        for path in paths:
            path.touch()
        return paths

    figures = importlib.import_module("robench.results.figures")
    for name in ("plot_curves", "plot_breakdown"):
        monkeypatch.setattr(report, name, touch)
    for name, points in (("plot_stages", figures.stage_points), ("plot_seeds", figures.seed_points)):
        monkeypatch.setattr(report, name, lambda df, stem, points=points: None if points(df).empty else touch(df, stem))
    csvs = _tracked("results") or [str(p.relative_to(ROOT)) for p in (ROOT / "results").glob("*.csv")]
    for rel in [p for p in csvs if p.endswith(".csv") and not p.startswith("results/report/")]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(_committed(rel))
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    rc.run_reports(tmp_path)
    assert (tmp_path / "README.md").read_text() == README, f"README's report tables. {FIX}"
    written = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "results" / "report").rglob("*") if p.is_file())
    committed = _tracked("results/report") or sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "results" / "report").rglob("*") if p.is_file())
    assert written == committed, f"files added or left over in results/report/. {FIX}"
    for rel in written:
        if not rel.endswith((".png", ".pdf", ".svg")):
            assert (tmp_path / rel).read_bytes() == (ROOT / rel).read_bytes(), f"{rel}. {FIX}"


def test_figures_do_not_depend_on_the_hash_seed(tmp_path):
    """The committed figures must be what a fresh run draws: panels tied in order (several surrogate paths of one
    attack) come out in the same order whatever Python's string hashing does."""
    rows = []
    for grad in ("triangle:w=0.5", "arctan:a=4", "sigmoid:k=8", "assg:A=0.425"):
        for eps, eps_str in ((0.0, "0"), (8 / 255, "8/255")):
            rows.append({"model": "m", "dataset": "d:test", "n": 10, "attack": "pgd-best", "params": "{}",
                         "grad": grad, "eps": eps, "eps_str": eps_str, "clean_acc": 0.9,
                         "robust_acc": 0.9 if eps == 0 else 0.5, "clean_count": 9,
                         "robust_count": 9 if eps == 0 else 5, "sha256": "ab" * 32, "seed": 0, "robust_mask": ""})
    csv = tmp_path / "rows.csv"
    __import__("pandas").DataFrame(rows).to_csv(csv, index=False)
    code = ("import sys, pandas as pd; from robench.results.report import plot_curves; "
            "plot_curves(pd.read_csv(sys.argv[1], keep_default_na=False), sys.argv[2])")
    for seed in ("1", "2", "3"):
        subprocess.run([sys.executable, "-c", code, str(csv), str(tmp_path / seed)], check=True,
                       env={**rc.environment(), "PYTHONHASHSEED": seed})
    for fmt in ("png", "svg"):
        assert (tmp_path / f"1.{fmt}").read_bytes() == (tmp_path / f"2.{fmt}").read_bytes() == \
            (tmp_path / f"3.{fmt}").read_bytes()


# -------------------------------------------------------------------------------------------------- links
def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file: lowercased, punctuation but ``-`` and ``_`` dropped,
    spaces turned into ``-``."""
    heads = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", path.read_text(), flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


@pytest.mark.parametrize("doc", ["README.md", *(f"docs/{p.name}" for p in sorted((ROOT / "docs").glob("*.md")))])
def test_relative_links_resolve(doc):
    """Every relative link of README and docs/ names a file of the repository, and a heading where it has #."""
    text = re.sub(r"```.*?```", "", (ROOT / doc).read_text(), flags=re.S)  # links inside code are not links
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        rel, _, anchor = target.partition("#")
        path = ((ROOT / doc).parent / rel).resolve() if rel else ROOT / doc
        assert path.exists(), f"{doc}: link to {target}: no such file"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{doc}: link to {target}: no such heading"
