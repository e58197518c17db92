"""The attack table (robench.attack_meta) is the one source of every attack's defaults and traits: the registry,
the specs, verification, the record checks, the report and the CLI help agree with it."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from robench.attack_meta import FINAL_ITERATE, INFO, ITERATIVE, NAMES, NOISE, REPORT_ORDER, SINGLE_STEP, TABLE
from robench.attacks import ATTACKS, AttackSpec
from robench.cli import app
from robench.results.report import attack_labels


def test_the_table_names_exactly_the_registered_attacks():
    assert set(NAMES) == set(ATTACKS.names())
    assert sorted(REPORT_ORDER) == sorted(NAMES) and len({a.order for a in TABLE}) == len(TABLE)


@pytest.mark.parametrize("info", TABLE, ids=lambda a: a.name)
def test_a_spec_takes_the_tables_defaults_and_traits(info):
    spec = AttackSpec(info.name)
    for opt in ("steps", "step_size", "restarts", "random_start", "version", "queries"):
        assert getattr(spec, opt) == info.defaults.get(opt), opt
    assert spec.gradient_free == info.gradient_free
    assert spec.budgeted == (not info.noise)


def test_square_is_gradient_free_but_keeps_its_eps_ball():
    assert INFO["square"].gradient_free and not INFO["square"].noise
    assert AttackSpec("square").gradient_free and AttackSpec("square").budgeted
    assert NOISE == {a.name for a in TABLE if not AttackSpec(a.name).budgeted}  # noise: no eps-ball


def test_the_report_marks_final_iterates_and_the_checks_use_the_same_sets():
    rows = pd.DataFrame({"attack": list(NAMES), "params": [json.dumps(AttackSpec(n).params()) for n in NAMES]})
    labels = dict(zip(NAMES, attack_labels(rows), strict=True))
    assert {n for n, lab in labels.items() if lab.endswith("(final)")} == FINAL_ITERATE
    gradient_free = {a.name for a in TABLE if a.gradient_free}
    assert SINGLE_STEP and not ITERATIVE & (SINGLE_STEP | NOISE | gradient_free)


def test_the_cli_help_lists_every_attack_with_its_note():
    out = CliRunner().invoke(app, ["attack", "--help"], env={"COLUMNS": "400", "TERM": "dumb"}).output
    text = " ".join(out.replace("│", " ").split())
    for a in TABLE:
        assert (f"{a.name} ({a.note})" if a.note else a.name) in text


def test_the_table_never_imports_torch():
    code = "import sys, robench.attack_meta; assert 'torch' not in sys.modules"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_the_tables_norms_are_the_threat_models_the_specs_accept():
    from robench.attacks import NORMS_OF
    from robench.attacks.norms import NORMS

    assert {n for a in TABLE for n in a.norms} == set(NORMS)
    for a in TABLE:
        assert NORMS_OF[a.name] == a.norms
        for norm in NORMS:
            ok = norm in a.norms
            try:
                AttackSpec(a.name, eps=0.1, norm=norm)
            except Exception:
                ok = not ok
            assert ok, (a.name, norm)
