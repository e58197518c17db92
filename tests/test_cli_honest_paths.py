"""A model robench cannot see into (plain PyTorch, no spiking neuron) through the CLI: the import says only bptt
applies, a sweep that names another path is refused before any cell, and a protocol runs every stage through the
path that applies, each row saying which path its stage asked for."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import torch
from cli_helpers import one_line, run_main

from robench.zoo.foreign import run_code

NETS = Path(__file__).with_name("foreign_nets.py")
PROTOCOL = """
name = "honest"
version = 2
norm = "Linf"
eps = "8/255"
[probe]
paths = ["bptt", "rate", "arctan:a=4"]
attack = "fgsm"
images = 8
[[stage]]
attack = "fgsm"
grad = "arctan:a=4"
[[stage]]
attack = "pgd-best"
grad = "probe:2"
steps = 2
"""


def test_a_plain_torch_model_gets_every_stage_honestly_labelled(tmp_path, capsys, monkeypatch):
    root = tmp_path / "code"
    root.mkdir()
    shutil.copy(NETS, root / "tinynets.py")
    mod, _ = run_code(root / "tinynets.py", "tinynets", root)
    torch.manual_seed(0)
    torch.save(mod.plain().state_dict(), tmp_path / "plain.pt")
    monkeypatch.setenv("ROBENCH_TRUST_CODE", "1")
    zoo = str(tmp_path / "zoo")
    code, out, err = run_main(capsys, ["zoo", "import", str(tmp_path / "plain.pt"), "--id", "p1", "--framework",
                                       "torch", "--entry", "tinynets:plain", "--code-path", str(root), "-T", "1",
                                       "--step-mode", "single", "--n", "16", "--zoo", zoo, "--trust-code"])
    assert code in (0, None), err
    assert "every gradient path applies" not in out and "bptt only" in " ".join(out.split())
    base = ["attack", "-m", "p1", "--zoo", zoo, "--n", "8", "--split", "subset", "--out", str(tmp_path / "res"),
            "--trust-code", "--device", "cpu"]
    code, _, err = run_main(capsys, [*base, "--attack", "fgsm", "--grad", "bptt,rate"])
    assert code == 2 and "--grad rate on model p1" in one_line(err) and "paths for it: bptt" in err
    assert not (tmp_path / "res").exists()
    f = tmp_path / "honest.toml"
    f.write_text(PROTOCOL)
    code, _, err = run_main(capsys, [*base, "--suite", str(f)])
    assert code in (0, None), err
    df = pd.read_csv(tmp_path / "res" / "results.csv")
    params = [json.loads(p) for p in df["params"]]
    assert list(df["grad"]) == ["bptt", "bptt", "bptt", "worst"]  # the probe (bptt only), stages 1 and 2, whole
    assert [p.get("path_requested") for p in params] == [None, "arctan:a=4", "probe:2", None]
