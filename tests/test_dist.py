"""Several processes: per-sample vectors identical for 1 and 2 gloo ranks (every attack family, the cascade),
--shard + merge identical to one run, a killed rank then resume (torchrun), DDP training under torchrun with resume.

The torchrun tests start real `torchrun --nproc_per_node 2 -m -- robench ...` subprocesses on the CPU (gloo)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from cli_helpers import one_line, run_main
from fmnist_files import write_idx

import robench.eval.sweep as ev
from robench.attacks import AttackSpec
from robench.data import DATASETS
from robench.data import load as load_data
from robench.dist import MIN_SPLIT_BATCH, WHOLE, Part, batch_seed, batches, owned, parse_shard, split
from robench.errors import BadSpec
from robench.eval.cascade import Stage, run_reliable
from robench.results import ResultsStore
from robench.snn.models import ModelConfig, build_model
from robench.train import TrainConfig, train
from robench.zoo import Card, save

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "--", "robench"]
ID = "dist-vgg5"
MODEL = dict(arch="vgg5", neuron="lif", T=2, width=0.125, fc=32, **DATASETS.get("fashion-mnist").model_kwargs())
SPECS = [AttackSpec("bim", eps=8 / 255, steps=2),                        # gradient
         AttackSpec("pgd", eps=8 / 255, steps=2, restarts=2),            # random start, restarts
         AttackSpec("gaussian", eps=32 / 255),                           # noise
         AttackSpec("autoattack", eps=8 / 255, version="custom", steps=2)]  # AutoAttack custom, seeded


def write_stripes(folder: Path, n_train: int = 256, n_test: int = 64) -> Path:
    """Fashion-MNIST stand-in (IDX files), 28x28, 10 classes: class c brightens rows 2c+4 .. 2c+6."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        g = torch.Generator().manual_seed(seed)
        y = torch.arange(n) % 10
        x = torch.randint(0, 110, (n, 28, 28), generator=g)
        for c in range(10):
            x[y == c, 2 * c + 4 : 2 * c + 7, :] += 140
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)
    return folder


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """(data dir, zoo dir, model, test x, test y): a tiny 28x28 model trained in-process (~60 % clean)."""
    root = tmp_path_factory.mktemp("dist")
    data = write_stripes(root / "data")
    torch.manual_seed(0)
    cfg = ModelConfig(**MODEL)
    model = build_model(cfg)
    res = train(model, TrainConfig(epochs=4, lr=0.2, batch_size=16), load_data("fashion-mnist", "train", data),
                load_data("fashion-mnist", "test", data))
    save(model, Card.new(ID, cfg, "fashion-mnist", recipe={"recipe": "clean"},
                         metrics={"clean_acc": res.clean_acc, "n_test": res.n_test}), root / "zoo")
    x, y = load_data("fashion-mnist", "test", data)
    return data, root / "zoo", model.eval(), x, y


def _env(threads: int = 1) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "ROBENCH_THREADS": str(threads), "OMP_NUM_THREADS": "1",
            "TERMINAL_WIDTH": "200", "_TYPER_FORCE_DISABLE_TERMINAL": "1"}


# ------------------------------------------------------------------------------------------------ the split
@pytest.mark.parametrize("text", ["3/2", "x", "1/0", "-1/2", "1/2/3", "0/", "²/3"])
def test_bad_shard_values_are_refused(text):
    with pytest.raises(BadSpec, match="--shard"):
        parse_shard(text)


def test_batches_are_balanced_disjoint_and_cover_the_todo_list():
    todo = torch.arange(0, 200, 3)
    parts = [list(batches(todo, 8, Part(i, 3))) for i in range(3)]
    got = torch.cat([b for p in parts for b in p]).sort().values
    assert torch.equal(got, todo)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert batch_seed(0, "pgd", 8) == batch_seed(0, "pgd", 8) != batch_seed(0, "pgd", 16)


# -------------------------------------------------------------------------------- identical for K = 1, 2
def _cascade_masks(model, x, y, part: Part = WHOLE, min_batches: int = 1) -> list[str]:
    """The robust masks of a two-stage cascade (each stage re-splits the still-robust images over the ranks)."""
    stages = [Stage(AttackSpec("pgd", eps=8 / 255, steps=2, restarts=1), "bptt", restarts=2),
              Stage(AttackSpec("bim", eps=8 / 255, steps=2), "rate")]
    ev_ = run_reliable([ev.Target(ID, "ab" * 32, model, "d")], ev.Data("d", x, y), None, stages, seed=3,
                       batch_size=8, device="cpu", part=part, min_batches=min_batches)
    return list(ev_.records["robust_mask"])


def _rank_worker(rank: int, world: int, init: str, model, x, y, out: str) -> None:
    import torch.distributed as tdist

    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    part = Part(rank, world, True)
    vectors = [ev.run_cell(model, s, "none" if s.gradient_free else "bptt", x, y, seed=3, batch_size=8, part=part)
               for s in SPECS]
    vectors.append(ev.clean_correct(model, x, y, 8, part).cpu())
    vectors.append(_cascade_masks(model, x, y, part))
    vectors.append(_cascade_masks(model, x, y, part, min_batches=4))
    if rank == 0:
        torch.save(vectors, out)
    tdist.destroy_process_group()


@pytest.mark.slow
def test_masks_identical_for_one_and_two_ranks_and_for_shards(env, tmp_path, one_thread):
    _, _, model, x, y = env
    x, y = x[:40], y[:40]  # 3 or 4 global batches of 8 initially correct images
    whole = [ev.run_cell(model, s, "none" if s.gradient_free else "bptt", x, y, seed=3, batch_size=8)
             for s in SPECS]
    clean = ev.clean_correct(model, x, y, 8).cpu()
    assert 0.3 < clean.float().mean() and any(not torch.equal(w, clean) for w in whole)  # attacks do break some
    out = tmp_path / "ranks.pt"
    mp.spawn(_rank_worker, args=(2, f"file://{tmp_path / 'rdzv'}", model, x, y, str(out)), nprocs=2)
    ranks = torch.load(out)
    for spec, a, b in zip(SPECS, whole, ranks, strict=False):
        assert torch.equal(a, b), spec.name
    assert torch.equal(ranks[-3], clean)
    assert ranks[-2] == _cascade_masks(model, x, y) and len(ranks[-2]) == 4  # stage 1, its restart, 2, the whole
    assert ranks[-1] == _cascade_masks(model, x, y, min_batches=4)  # smaller batches: still the same for K = 2
    for spec, a in zip(SPECS, whole, strict=True):  # two shards, no peers: their OR is the whole vector
        kw = dict(seed=3, batch_size=8)
        g = "none" if spec.gradient_free else "bptt"
        s0, s1 = (ev.run_cell(model, spec, g, x, y, part=Part(i, 2), **kw) for i in range(2))
        assert not (s0 & s1).any() and torch.equal(s0 | s1, a), spec.name


def test_min_batches_cuts_small_cells_so_every_part_has_work(env):
    _, _, model, x, y = env
    x, y = x[:80], y[:80]
    spec = AttackSpec("pgd", eps=8 / 255, steps=2, min_batches=4)
    assert spec.params()["min_batches"] == 4 and "min_batches" not in AttackSpec("pgd").params()
    clean = ev.clean_correct(model, x, y, 64)
    kw = dict(seed=3, batch_size=64, clean=clean)
    mine = [ev.attack_cell(model, spec, "bptt", x, y, part=Part(i, 2), **kw) for i in range(2)]
    whole = ev.attack_cell(model, spec, "bptt", x, y, **kw).correct
    assert torch.equal(mine[0].correct | mine[1].correct, whole)
    todo = clean.nonzero().flatten()
    got = [owned(todo, 64, Part(i, 2), len(x), min_batches=4).sum().item() for i in range(2)]
    assert MIN_SPLIT_BATCH < len(todo) <= 64 and abs(got[0] - got[1]) <= 1 and sum(got) == len(todo)
    assert owned(todo, 64, Part(1, 2), len(x)).sum() == 0  # one batch of 64 had all
    small = ev.attack_cell(model, spec, "bptt", x[:12], y[:12], seed=3, batch_size=64, part=Part(1, 2))
    assert not small.correct.any()  # 12 images: one batch (never below 16 a batch), so part 1 has none
    with pytest.raises(BadSpec, match="--min-batches 0; must be an integer >= 1"):
        AttackSpec("pgd", min_batches=0)


@pytest.mark.parametrize("n, bs, mb, sizes", [
    (20, 256, 8, [10, 10]),           # was 16 + 4: equal halves
    (12, 256, 8, [12]),               # too few images to cut
    (33, 256, 2, [17, 16]),
    (200, 256, 8, [25] * 8),
    (300, 256, 1, [256, 44]),         # min_batches 1: consecutive batches of the batch size, as before
    (41, 64, 4, [21, 20]),            # 3 batches would load part 0 twice: the largest divisor of 4 that fits
    (300, 64, 2, [50] * 6),           # the batch size needs 5: the next multiple of 2
    (100, 16, 12, [9] * 4 + [8] * 8),  # the batch size needs 7: the next divisor of 12
    (0, 64, 4, []),
])
def test_split_cuts_equal_batches_of_a_count_that_never_depends_on_k(n, bs, mb, sizes):
    todo = torch.arange(100, 100 + n)
    got = split(todo, bs, mb)
    assert [len(b) for b in got] == sizes
    assert torch.equal(torch.cat(got) if got else todo, todo)  # in order, each image once
    for k in (2, 3):
        parts = [owned(todo, bs, Part(i, k), 400, mb) for i in range(k)]
        assert sum(int(p.sum()) for p in parts) == n and not (parts[0] & parts[1]).any()


# ---------------------------------------------------------------------------------------- shard + merge
def _attack_args(zoo: Path, data: Path, out: Path, *extra: str, attacks: str = "pgd,gaussian") -> list[str]:
    return ["attack", "-m", ID, "--zoo", str(zoo), "--data-dir", str(data), "--n", "64", "-a", attacks,
            "--batch-size", "8", "--out", str(out), "--device", "cpu", *extra]


def _rows(path: Path) -> dict:
    df = ResultsStore(path).read()
    cols = ["clean_count", "robust_count"] + (["robust_mask"] if "robust_mask" in df.columns else [])
    return {tuple(r[c] for c in ("attack", "grad", "eps_str")): tuple(r[c] for c in cols)
            for r in df.to_dict("records")}


@pytest.mark.parametrize("split_args", [(), ("--batch-size", "64", "--min-batches", "4")])
def test_shards_merge_into_the_rows_of_one_run(env, tmp_path, capsys, one_thread, split_args):
    data, zoo, *_ = env
    code, _, _ = run_main(capsys, _attack_args(zoo, data, tmp_path / "one", "--steps", "3", *split_args))
    assert code == 0
    out = tmp_path / "sh"
    for i in range(2):
        code, text, _ = run_main(capsys, _attack_args(zoo, data, out, "--steps", "3", "--shard", f"{i}/2",
                                                      *split_args))
        assert code == 0 and "results merge" in text
    assert not (out / "results.csv").exists()
    code, text, _ = run_main(capsys, ["results", "merge", "--out", str(out)])
    assert code == 0 and "4 new rows" in text
    assert _rows(out / "results.csv") == _rows(tmp_path / "one" / "results.csv")
    code, text, _ = run_main(capsys, ["results", "merge", "--out", str(out)])  # again: nothing new
    assert code == 0 and "0 new rows" in text


def test_missing_duplicated_or_foreign_shards_are_refused(env, tmp_path, capsys, one_thread):
    data, zoo, *_ = env
    out = tmp_path / "sh"
    for i in range(2):
        assert run_main(capsys, _attack_args(zoo, data, out, "--shard", f"{i}/2", attacks="fgsm"))[0] == 0
    f0, f1 = out / "shards" / "results.shard-0-of-2.jsonl", out / "shards" / "results.shard-1-of-2.jsonl"
    cases = {"missing": ([f0], "shard 1/2 missing"), "twice": ([f0, tmp_path / "copy.jsonl"], "appears twice")}
    shutil.copy(f0, tmp_path / "copy.jsonl")
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text("".join(json.dumps({**json.loads(line), "sha256": "0" * 64}) + "\n"
                               for line in f1.read_text().splitlines()))
    cases["foreign"] = ([f0, foreign], "another model hash")
    cases["absent"] = ([f0, tmp_path / "nope.jsonl"], "does not exist")
    for files, msg in cases.values():
        code, _, err = run_main(capsys, ["results", "merge", "--out", str(out), *map(str, files)])
        assert code == 1 and msg in one_line(err)
    assert not (out / "results.csv").exists()  # nothing written
    for extra, msg in ((["--shard", "3/2"], "--shard '3/2'"), (["--shard", "x"], "--shard 'x'"),
                       (["--shard", "0/2", "--batch-size", "auto"], "needs --batch-size")):
        code, _, err = run_main(capsys, _attack_args(zoo, data, tmp_path / "bad", *extra, attacks="fgsm"))
        assert code == 2 and msg in one_line(err)
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------------------------ torchrun
def _kill_rank(launcher: subprocess.Popen, rank: int) -> bool:
    """SIGKILL the torchrun worker whose environment says RANK=rank (a child of the launcher)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == launcher.pid and f"RANK={rank}".encode() in env:
            os.kill(int(pid), signal.SIGKILL)
            return True
    return False


def _run_until(cmd: list[str], ready, cwd: Path, timeout: float = 120) -> tuple[subprocess.CompletedProcess, bool]:
    """Start ``cmd``; once ``ready()`` holds, kill rank 1. Returns the finished process and whether it was killed."""
    p = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed, t0 = False, time.monotonic()
    while p.poll() is None and not killed and time.monotonic() - t0 < timeout:
        if ready():
            killed = _kill_rank(p, 1)
        time.sleep(0.05)
    out, err = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(cmd, p.returncode, out, err), killed


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("Error")]


@pytest.mark.slow
def test_torchrun_attack_killed_rank_then_resume_equals_one_process(env, tmp_path, capsys, one_thread):
    data, zoo, *_ = env
    opts = ("--eps", "2/255,4/255,8/255", "--steps", "3")
    args = _attack_args(zoo, data, tmp_path / "tr", *opts, attacks="pgd")
    csv = tmp_path / "tr" / "results.csv"
    done, killed = _run_until([*TORCHRUN, *args], lambda: csv.exists(), tmp_path)
    assert killed and done.returncode != 0
    errors = _errors(done.stderr)
    assert len(errors) == 1 and "rerun the same command" in errors[0], done.stderr[-2000:]
    kept = len(ResultsStore(csv).read())
    assert 1 <= kept < 9
    again = subprocess.run([*TORCHRUN, *args], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                           timeout=180)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{9 - kept} new rows" in again.stdout and f"{kept} cells already there" in again.stdout
    assert run_main(capsys, _attack_args(zoo, data, tmp_path / "one", *opts, attacks="pgd"))[0] == 0
    assert _rows(csv) == _rows(tmp_path / "one" / "results.csv")


@pytest.mark.slow
def test_torchrun_ddp_training_writes_one_entry_and_resumes(env, tmp_path):
    data = env[0]
    args = ["train", "--data-dir", str(data), "--arch", "vgg5", "--width", "0.125", "-T", "2", "--fc", "32",
            "--epochs", "2", "--limit", "128", "--lr", "0.2", "--batch-size", "16", "--ckpt-every", "2",
            "--zoo", "zoo", "--runs", "runs", "--id", "ddp", "--device", "cpu"]
    state = tmp_path / "runs" / "ddp" / "state.pt"
    done, killed = _run_until([*TORCHRUN, *args], lambda: state.exists(), tmp_path)
    assert killed and done.returncode != 0 and not (tmp_path / "zoo" / "ddp.json").exists()
    assert len(_errors(done.stderr)) == 1, done.stderr[-2000:]
    again = subprocess.run([*TORCHRUN, *args, "--resume"], cwd=tmp_path, env=_env(), capture_output=True,
                           text=True, timeout=180)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("saved ddp") == 1  # rank 0 only
    card = json.loads((tmp_path / "zoo" / "ddp.json").read_text())
    assert card["recipe"]["world_size"] == 2 and card["metrics"]["global_batch"] == 32
    assert [h["epoch"] for h in card["metrics"]["history"]] == [1, 2]
    assert sorted(p.name for p in (tmp_path / "zoo").iterdir()) == ["ddp.json", "ddp.safetensors"]


def test_other_ranks_stay_silent_on_errors_rank_zero_reports(env, tmp_path, capsys, monkeypatch):
    """Errors before the job are the same on every rank: rank 0 prints one line, the others nothing."""
    data, zoo, *_ = env
    (tmp_path / "afile").write_text("")
    args = _attack_args(zoo, data, tmp_path / "afile" / "sub", attacks="fgsm")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    for rank, lines in (("1", 0), ("0", 1)):
        monkeypatch.setenv("RANK", rank)
        code, out, err = run_main(capsys, args)
        assert code == 1 and not out and len(err.splitlines()) == lines
    assert "cannot write results" in err
