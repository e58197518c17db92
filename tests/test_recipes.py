"""zoo/recipes.toml: seeds expand into entries, the shipped file's commands, and `zoo build` over seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import one_line
from cli_helpers import run_main as _run_main
from test_cli_train import _fake_load

import robench.train.job
from robench.errors import BadSpec, UnknownName
from robench.train import job_from_options
from robench.zoo.buildlist import expand_seeds, load_recipes, pick, seed_id

SHIPPED = Path(__file__).resolve().parents[1] / "zoo" / "recipes.toml"
COMMON = ("robench train --dataset fashion-mnist --arch vgg11 --width 0.125 --fc 128 -T 4 --epochs 3 "
          "--batch-size 64 --lr 0.1 --sigma 8/255 --eps 4/255 --ckpt-every 200")


def test_seed_ids():
    assert seed_id("a-b", 0) == "a-b" and seed_id("a-b", 2) == "a-b-s2"


def test_the_shipped_file_has_three_seeds_of_six_recipes():
    ids = [r.id for r in load_recipes(SHIPPED)]
    for base in ("lif-gn", "stable-gn", "lif-at", "stable-at", "lif-rat", "stable-rat"):
        for suffix in ("", "-s1", "-s2"):
            assert f"fmnist-vgg11-{base}{suffix}" in ids
    for single in ("lif-clean", "dlif-gn", "lif-gn-mppd", "lif-gn-poisson", "stable-gn-poisson"):
        assert f"fmnist-vgg11-{single}" in ids and f"fmnist-vgg11-{single}-s1" not in ids
    assert len(ids) == len(set(ids)) == 23
    (r,) = pick(load_recipes(SHIPPED), ["fmnist-vgg11-stable-gn-poisson"])
    job = job_from_options(r.options, r.command())
    assert job.model.encoding == "poisson" and job.train.epochs == 1
    assert r.command().endswith("--alpha 1.0 --encoding poisson")


@pytest.mark.parametrize("entry_id, tail", [
    ("fmnist-vgg11-lif-gn-s1", "--seed 1 --id fmnist-vgg11-lif-gn-s1 --neuron lif --recipe gaussian"),
    ("fmnist-vgg11-stable-gn-s2",
     "--seed 2 --id fmnist-vgg11-stable-gn-s2 --neuron stable --recipe gaussian --alpha 1.0"),
    ("fmnist-vgg11-lif-at-s1", "--seed 1 --id fmnist-vgg11-lif-at-s1 --neuron lif --recipe fgsm-at"),
    ("fmnist-vgg11-stable-at-s2",
     "--seed 2 --id fmnist-vgg11-stable-at-s2 --neuron stable --recipe fgsm-at --alpha 1.0"),
    ("fmnist-vgg11-lif-rat", "--seed 0 --id fmnist-vgg11-lif-rat --neuron lif --recipe rat"),
    ("fmnist-vgg11-stable-rat-s1",
     "--seed 1 --id fmnist-vgg11-stable-rat-s1 --neuron stable --recipe rat --alpha 1.0"),
])
def test_commands_are_the_ones_the_seed_runs_use(entry_id, tail):
    (r,) = pick(load_recipes(SHIPPED), [entry_id])
    assert r.command() == f"{COMMON} {tail}"


def test_every_shipped_recipe_is_a_valid_job():
    for r in load_recipes(SHIPPED):
        job = job_from_options(r.options, r.command())
        assert job.entry_id == r.id and job.train.seed == r.options["seed"]
        assert r.id.endswith(f"-s{job.train.seed}") if job.train.seed else "-s" not in r.id[-3:]
        if job.train.recipe == "rat":
            assert job.train.rat_beta == 0.001 and job.train.weight_decay == 0.0
        else:
            assert job.train.rat_beta is None and job.train.weight_decay == 5e-4


def test_seeds_in_defaults_and_entry_overrides():
    defaults = {"seeds": [0, 3], "lr": 0.1}
    assert [r.id for r in expand_seeds(defaults, {"id": "x"})] == ["x", "x-s3"]
    assert [r.id for r in expand_seeds(defaults, {"id": "x", "seeds": [1]})] == ["x-s1"]
    (one,) = expand_seeds(defaults, {"id": "x", "seed": 7})
    assert one.id == "x" and one.options["seed"] == 7  # a single explicit seed keeps the id, as before
    (plain,) = expand_seeds({}, {"id": "y"})
    assert plain.id == "y" and plain.options["seed"] == 0


@pytest.mark.parametrize("entry, match", [
    ({"id": "x", "seed": 1, "seeds": [0, 1]}, "both seed and seeds"),
    ({"id": "x", "seeds": []}, "seeds"),
    ({"id": "x", "seeds": [0, 0]}, "distinct"),
    ({"id": "x", "seeds": [-1]}, "seeds"),
    ({"id": "x", "seeds": "0,1"}, "seeds"),
])
def test_bad_seeds_are_refused(entry, match):
    with pytest.raises(BadSpec, match=match):
        expand_seeds({}, entry)


def test_an_id_taken_by_a_seed_is_a_duplicate(tmp_path):
    f = tmp_path / "r.toml"
    f.write_text('[[entry]]\nid = "x"\nseeds = [0, 1]\n\n[[entry]]\nid = "x-s1"\n')
    with pytest.raises(BadSpec, match="duplicate id 'x-s1'"):
        load_recipes(f)
    with pytest.raises(UnknownName, match="no zoo recipe 'x-s9'"):
        pick(load_recipes(SHIPPED), ["x-s9"])


TINY_TOML = """[defaults]
arch = "vgg5"
width = 0.125
fc = 16
T = 2
batch_size = 16
limit = 16
seeds = [0, 1]

[[entry]]
id = "tiny-rat"
neuron = "lif"
recipe = "rat"
"""


def test_zoo_build_trains_every_seed_and_skips_what_exists(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(robench.train.job, "load_data", _fake_load)
    f, zoo = tmp_path / "r.toml", tmp_path / "zoo"
    f.write_text(TINY_TOML)
    args = ["zoo", "build", "--recipes", str(f), "--zoo", str(zoo), "--runs", str(tmp_path / "runs"),
            "--device", "cpu"]
    code, out, err = _run_main(capsys, [*args, "--dry-run"])
    assert code == 0 and "--seed 1 --id tiny-rat-s1" in out and not zoo.exists()
    code, out, err = _run_main(capsys, args)
    assert code == 0, err
    cards = {i: json.loads((zoo / f"{i}.json").read_text()) for i in ("tiny-rat", "tiny-rat-s1")}
    assert cards["tiny-rat"]["recipe"]["seed"] == 0 and cards["tiny-rat-s1"]["recipe"]["seed"] == 1
    assert cards["tiny-rat-s1"]["sha256"] != cards["tiny-rat"]["sha256"]
    code, out, err = _run_main(capsys, args)
    assert code == 0 and out.count("skip") == 2


def test_a_bad_seeds_line_is_one_error(tmp_path, capsys):
    f = tmp_path / "r.toml"
    f.write_text('[[entry]]\nid = "x"\nseeds = [0, 0]\n')
    code, out, err = _run_main(capsys, ["zoo", "build", "--recipes", str(f), "--dry-run"])
    assert code == 2 and "seeds [0, 0]" in one_line(err)
