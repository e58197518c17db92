"""scripts/select_stages.py writes stage lists the cascade reads: the written file parses into the same stages,
with its norm and budget, a probe only when a stage uses one, and replays back to the same choices."""

import importlib.util
import json
from pathlib import Path

from robench.eval import stagelist
from robench.results.selection import Choice

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("select_stages", ROOT / "scripts" / "select_stages.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_written_linf_list_with_probe_stages_parses_and_replays_to_the_same_choices(tmp_path):
    s = _script()
    pgd = json.dumps({"norm": "Linf", "random_start": True, "restarts": 1, "step_size": 2 / 255, "steps": 50},
                     sort_keys=True)
    apgd = json.dumps({"norm": "Linf", "restarts": 2, "steps": 100}, sort_keys=True)
    stages = [Choice("pgd-best", pgd, "probe:1"), Choice("apgd-ce", apgd, "assg:A=0.425"),
              Choice("square", json.dumps({"norm": "Linf", "queries": 5000, "restarts": 1}, sort_keys=True), "none")]
    text = s.stage_toml(stages, s.probe_params("Linf", "8/255"), ["bptt", "arctan:a=4"], 64, "why\nbecause", 7)
    f = tmp_path / "reliable-v7.toml"
    f.write_text(text)
    p = stagelist.parse(stagelist.tomllib.loads(text), f.name)
    assert (p.version, p.norm, len(p.stages)) == (7, "Linf", 3) and p.probe is not None
    assert [str(g) for g in p.probe.paths] == ["bptt", "arctan:a=4"] and p.probe.spec.steps == 50
    assert [s2.probe_rank for s2 in p.stages] == [1, None, None] and not p.stages[-1].white_box
    assert s.replay_stages(f) == stages


def test_an_l2_list_without_probe_stages_has_no_probe_and_its_own_budget():
    s = _script()
    assert s.probe_params("L2", "0.5")["step_size"] == 0.125 and s.probe_params("L2", "0.5")["norm"] == "L2"
    apgd = json.dumps({"norm": "L2", "restarts": 2, "steps": 100}, sort_keys=True)
    text = s.stage_toml([Choice("apgd-ce", apgd, "arctan:a=4"), Choice("square", json.dumps({"queries": 1000}),
                                                                        "none")],
                        s.probe_params("L2", "0.5"), ["bptt"], 64, "why", 4, "L2", "0.5")
    data = stagelist.tomllib.loads(text)
    assert "probe" not in data and data["norm"] == "L2" and data["eps"] == "0.5"
    p = stagelist.parse(data, "reliable-v4.toml")
    assert p.norm == "L2" and p.eps[0] == 0.5 and {st.spec.norm for st in p.stages} == {"L2"}
