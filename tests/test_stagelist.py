"""Protocol stage lists as versioned data files: the shipped files parse, version 1 keeps the keys of the rows it
wrote before the lists became data, and every bad file is refused whole, naming the bad value, before anything
runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import robench.eval.cascade as proto
from robench.errors import BadSpec
from robench.eval import stagelist
from robench.results import ResultsStore
from robench.snn.pathkeys import GradPath

OLD_ROWS = Path(__file__).parent / "data" / "reliable-v1.csv"  # rows the first cascade wrote (results/reliable.csv)
GOOD = """
name = "reliable"
version = 3
norm = "Linf"
eps = "8/255"
[adaptive]
threshold = 0.005
cap = 2
square_queries = [2000]
[probe]
paths = ["bptt", "rate"]
attack = "pgd-best"
steps = 5
images = 8
[[stage]]
attack = "apgd-ce"
grad = "probe:1"
steps = 20
[[stage]]
attack = "pgd-best"
grad = "sigmoid:k=16"
steps = 10
step_size = "1/255"
repeat = 2
[[stage]]
attack = "square"
queries = 500
white_box = false
"""


def test_shipped_files_parse_and_the_newest_is_the_default():
    assert stagelist.names()[:3] == ["reliable", "reliable-v1", "reliable-v2"]
    v1, v2 = stagelist.load("reliable-v1"), stagelist.load("reliable-v2")
    linf = [v for v in stagelist.versions("reliable") if stagelist.load(f"reliable-v{v}").norm == "Linf"]
    assert (v1.version, v2.version) == (1, 2) and proto.protocol().version == max(linf)  # the newest L-inf list
    assert v1.probe is None and v1.adaptive is None and len(v1.stages) == 7
    assert v2.probe is not None and v2.adaptive is not None and v2.adaptive.cap >= 1
    assert any(s.probe_rank for s in v2.stages) and not v2.stages[-1].white_box


def test_v1_rows_keep_their_keys():
    """The params of every row version 1 writes are byte-identical to those the hand-written list wrote."""
    old = ResultsStore(OLD_ROWS).read()
    p = stagelist.load("reliable-v1")
    assert p.at(*p.eps).stages == p.stages  # the CLI retargets to the protocol's own budget: nothing moves
    for k, stage in enumerate(p.stages, 1):
        assert json.dumps(proto.stage_params(p, k, stage), sort_keys=True) == old["params"].iloc[k - 1]
        assert str(stage.grad) == old["grad"].iloc[k - 1]
    assert json.dumps(proto.whole_params(p), sort_keys=True) == old["params"].iloc[7]
    assert proto.stage_seed(0, "ab", 1, 0) == proto.stage_seed(0, "ab", 1, 0, "reliable", 1)


def test_retarget_and_digest():
    p = stagelist.parse(_toml(GOOD), "x.toml")
    q = p.at(4 / 255, "4/255")
    assert q.stages[1].spec.step_size == pytest.approx(0.5 / 255) and q.probe.spec.eps == pytest.approx(4 / 255)
    assert q.digest() == p.digest() != stagelist.load("reliable-v2").digest()
    assert p.stages[1].restarts == 2 and p.stages[0].probe_rank == 1
    assert p.stages[1].grad == GradPath("sigmoid", (("k", 16.0),))  # parsed once, on loading the file
    assert stagelist.Stage(p.stages[1].spec, "sigmoid:k=16.0").grad == p.stages[1].grad  # a hand-made stage too


@pytest.mark.parametrize("edit, message", [
    (("steps = 20", "stpes = 20"), "stage 1: unknown key 'stpes'; accepted: attack, grad"),
    (('attack = "apgd-ce"', 'attack = "apgd-xx"'), "stage 1: unknown attack 'apgd-xx'; choose from:"),
    (('grad = "sigmoid:k=16"', 'grad = "sigmoid:q=16"'), "stage 2: grad 'sigmoid:q=16'"),
    (('grad = "sigmoid:k=16"', 'grad = "probe:3"'), "grad = 'probe:3'; the probe ranks 2 paths"),
    (("cap = 2", "cap = 0"), "[adaptive]: cap = 0; must be an integer >= 1"),
    (("version = 3", "version = 0"), "version = 0; must be an integer >= 1"),
    (("queries = 500", "queries = 500\nsteps = 3"), "stage 3: steps does not apply to square"),
    (('"bptt", "rate"', '"bptt", "tanh"'), "[probe]: paths 'tanh'"),
    (("threshold = 0.005", "threshold = 2"), "threshold = 2; must be a fraction of n in [0, 1)"),
    (("[[stage]]\nattack = \"apgd-ce\"", "[[stage]]\nattack = \"square\"\nwhite_box = false\n[[stage]]\n"
      "attack = \"apgd-ce\""), "a black-box stage comes before a white-box one"),
])
def test_bad_files_are_refused_naming_the_value(edit, message):
    with pytest.raises(BadSpec) as e:
        stagelist.parse(_toml(GOOD.replace(*edit)), "x.toml")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_versions_and_file_names(tmp_path):
    with pytest.raises(BadSpec, match=r"unknown protocol version 9 of 'reliable'; versions: 1, 2"):
        stagelist.load("reliable-v9")
    f = tmp_path / "reliable-v4.toml"
    f.write_text(GOOD)
    with pytest.raises(BadSpec, match="holds reliable version 3; its file name says reliable version 4"):
        stagelist.load(str(f))
    f.write_text("name = ")
    with pytest.raises(BadSpec, match="is not TOML"):
        stagelist.load(str(f))
    with pytest.raises(BadSpec, match="cannot be read"):
        stagelist.load(str(tmp_path / "none.toml"))
    assert stagelist.is_protocol("reliable-v9") and stagelist.is_protocol("x.toml")
    assert not stagelist.is_protocol("paper")


def _toml(text: str) -> dict:
    return stagelist.tomllib.loads(text)


# ------------------------------------------------------------------------------------------------- norms
def test_every_list_declares_its_norm_and_each_norm_gets_its_own_newest():
    shipped = {v: stagelist.load(f"reliable-v{v}").norm for v in stagelist.versions("reliable")}
    assert set(shipped.values()) == {"Linf", "L2"}
    for norm in ("Linf", "L2"):
        p = stagelist.load("reliable", norm=norm)
        assert p.version == max(v for v, n in shipped.items() if n == norm)
        assert all(s.spec.norm == norm for s in p.stages) and (p.probe is None or p.probe.spec.norm == norm)
    assert stagelist.load("reliable").norm == "Linf"  # the default threat model
    with pytest.raises(BadSpec, match="x.toml: norm is missing"):
        stagelist.parse(_toml(GOOD.replace('norm = "Linf"\n', "")), "x.toml")
    with pytest.raises(BadSpec, match="x.toml: norm 'L3'; choose from: Linf, L2, L1"):
        stagelist.parse(_toml(GOOD.replace('norm = "Linf"', 'norm = "L3"')), "x.toml")


def test_an_attack_without_a_version_in_the_lists_norm_fails_at_load_naming_the_stage():
    l2 = GOOD.replace('norm = "Linf"', 'norm = "L2"').replace('eps = "8/255"', 'eps = "1.0"')
    p = stagelist.parse(_toml(l2), "x.toml")
    assert p.norm == "L2" and {s.spec.norm for s in p.stages} == {"L2"} and p.probe.spec.norm == "L2"
    assert p.digest() != stagelist.parse(_toml(GOOD), "x.toml").digest()
    with pytest.raises(BadSpec) as e:
        stagelist.parse(_toml(l2.replace('attack = "pgd-best"\ngrad = "sigmoid:k=16"',
                                         'attack = "bim"\ngrad = "sigmoid:k=16"')), "x.toml")
    assert "x.toml: stage 2: norm L2: bim has no L2 version" in str(e.value) and "\n" not in str(e.value)


def test_the_newest_list_for_the_norm_asked_for(tmp_path):
    for v, norm, eps in ((1, "Linf", "8/255"), (2, "L2", "1.0"), (3, "Linf", "8/255")):
        text = GOOD.replace("version = 3", f"version = {v}").replace('norm = "Linf"', f'norm = "{norm}"')
        (tmp_path / f"reliable-v{v}.toml").write_text(text.replace('eps = "8/255"', f'eps = "{eps}"'))
    assert stagelist.load("reliable", tmp_path).version == 3  # L-inf by default, never the L2 list
    assert stagelist.load("reliable", tmp_path, norm="l2").version == 2
    assert stagelist.load("reliable", tmp_path, norm="Linf").version == 3
    with pytest.raises(BadSpec, match="'reliable-v2' is a stage list for L2, not Linf"):
        stagelist.load("reliable-v2", tmp_path, norm="Linf")
    with pytest.raises(BadSpec, match="no reliable stage list for L1: its lists are for Linf: reliable-v1, "
                                      "reliable-v3; L2: reliable-v2"):
        stagelist.load("reliable", tmp_path, norm="L1")
    with pytest.raises(BadSpec, match=r"no reliable stage list for L1: its lists are for Linf: reliable-v1, .*; "
                                      r"L2: reliable-v.*; in L1, name the attacks"):
        proto.protocol("reliable", "L1")  # the shipped lists: none is chosen for L1
