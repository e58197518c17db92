"""Regenerate README's console examples and the committed report by running the commands README shows.

Console blocks. Every ```console block of README.md sits between ``<!-- console NAME: start -->`` and
``<!-- console NAME: end -->``. Its ``$ `` lines are the commands (a trailing ``\\`` continues one, ``#`` starts a
shell comment); this script runs them in order with bash, in a scratch folder prepared for the block (BLOCKS), and
writes each command's output (stdout and stderr, as a terminal 150 columns wide would show it) under it. Blocks
marked ``live`` are fast and deterministic: tests/test_readme.py runs them again and compares. The others take
minutes or print timings (training, an import, an attack); their last run is stored in tests/readme/consoles.json,
which the test compares README against, and is renewed only by this script.

The Python example. The ```python block under "## One call from Python" is followed by its output, a ```text block
between ``<!-- output python: start -->`` and ``<!-- output python: end -->``. :func:`run_python` runs the example
from the repository root with a quick three-stage list (:data:`PYTHON_PRELUDE`) in place of the protocol's, so that
it takes seconds; tests/test_readme.py runs it again and compares, timings aside (:func:`untimed`).

The report. README quotes every ``robench report`` command that writes one of its tables or a folder of
``results/report/``; :func:`report_commands` finds them (inline code spans starting ``robench report`` without
placeholders such as ``DIR`` or ``NAME``). ``--report`` runs them all, in README order, from the repository root,
which rewrites README's tables and ``results/report/``. The test runs them into a scratch folder and compares.

Usage (from the repository root, with the venv's python)::

    python scripts/readme_consoles.py                  # every console block, then every report command
    python scripts/readme_consoles.py --only zoo,report # some blocks (names as in the markers; python: the
                                                        # Python example's output)
    python scripts/readme_consoles.py --report          # the report commands only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
STORE = ROOT / "tests" / "readme" / "consoles.json"
FIRST_RESULTS = ROOT / "tests" / "readme" / "first-results.csv"  # the attack block's results, for the report block
WIDTH = 150
SENTINEL = "::readme-console-command::"
BLOCK_RE = re.compile(r"<!-- console (?P<name>[\w-]+): start -->\n(?P<body>.*?)<!-- console (?P=name): end -->\n",
                      re.S)


# ------------------------------------------------------------------------------------------- the blocks
def _plain(tmp: Path) -> Path:
    return tmp


def _shipped_zoo(tmp: Path) -> Path:
    (tmp / "zoo").symlink_to(ROOT / "zoo", target_is_directory=True)  # attacks read the zoo, never write it
    return tmp


def _sj_weights(tmp: Path) -> Path:
    """The SpikingJelly example's folder with the weights its training script writes (``torch.save`` of the
    model's ``state_dict``), taken from the shipped entry trained that way: the import then runs on the very
    tensors the shipped entry holds, without the ten minutes of training."""
    import torch
    from safetensors.torch import load_file

    shutil.copytree(ROOT / "examples", tmp / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp / "runs").mkdir()
    torch.save(load_file(ROOT / "zoo" / "fmnist-sjvgg-lif-clean.safetensors"), tmp / "runs" / "sj-vgg.pt")
    return tmp


def _first_results(tmp: Path) -> Path:
    (tmp / "runs" / "first").mkdir(parents=True)
    shutil.copy(FIRST_RESULTS, tmp / "runs" / "first" / "results.csv")
    return tmp


def _keep_first_results(tmp: Path) -> None:
    shutil.copy(tmp / "runs" / "first" / "results.csv", FIRST_RESULTS)


@dataclass(frozen=True)
class Block:
    """How to run one console block: ``setup(tmp) -> cwd``; ``live`` blocks are re-run by the test;
    ``keep(tmp)`` saves what a later block needs."""

    setup: Callable[[Path], Path]
    live: bool
    keep: Callable[[Path], None] | None = None
    in_root: bool = False  # run in the repository itself (read-only commands on the shipped zoo)


BLOCKS: dict[str, Block] = {
    "train": Block(_plain, live=False),
    "zoo": Block(_plain, live=True, in_root=True),
    "import": Block(_sj_weights, live=False),
    "attack": Block(_shipped_zoo, live=False, keep=_keep_first_results),
    "report": Block(_first_results, live=True),
}


# ------------------------------------------------------------------------------------------ README text
def console_blocks(text: str) -> dict[str, list[str]]:
    """``{name: [command, ...]}`` of README's marked console blocks, commands as shown (continuations joined
    with their newlines)."""
    out: dict[str, list[str]] = {}
    for m in BLOCK_RE.finditer(text):
        lines = m["body"].strip("\n").splitlines()
        if not lines or lines[0] != "```console" or lines[-1] != "```":
            raise SystemExit(f"README: console block {m['name']!r} must hold exactly one ```console fence")
        cmds: list[str] = []
        cont = False
        for ln in lines[1:-1]:
            if cont:
                cmds[-1] += "\n" + ln
            elif ln.startswith("$ "):
                cmds.append(ln[2:])
            else:
                cont = False
                continue
            cont = ln.endswith("\\")
        out[m["name"]] = cmds
    return out


def render(commands: list[str], outputs: list[str]) -> str:
    """The fenced console block of these commands and their outputs."""
    parts = ["```console"]
    for cmd, output in zip(commands, outputs, strict=True):
        parts.append("$ " + cmd)
        parts += output.splitlines()
    return "\n".join([*parts, "```"]) + "\n"


def replace_block(text: str, name: str, body: str) -> str:
    start, end = f"<!-- console {name}: start -->\n", f"<!-- console {name}: end -->"
    a, b = text.index(start) + len(start), text.index(end)
    return text[:a] + body + text[b:]


def block_body(text: str, name: str) -> str:
    m = next(m for m in BLOCK_RE.finditer(text) if m["name"] == name)
    return m["body"]


# ------------------------------------------------------------------------------------------------ running
def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROBENCH_")}
    env.update(PYTHONPATH=str(ROOT), COLUMNS=str(WIDTH), LINES="50", TERM="dumb", NO_COLOR="1",
               OMP_NUM_THREADS="1", ROBENCH_THREADS="1", PYTHONHASHSEED="0")
    return env


def run_commands(commands: list[str], cwd: Path) -> list[str]:
    """Run ``commands`` in one bash session in ``cwd`` (``robench`` and ``python`` being this interpreter's);
    return each one's output, trailing spaces stripped."""
    py = shlex.quote(sys.executable)
    script = [f'robench() {{ {py} -m robench "$@"; }}', f'python() {{ {py} "$@"; }}']
    for cmd in commands:
        script += [f"echo {SENTINEL}", f"{cmd} 2>&1"]
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=cwd, env=environment(), capture_output=True,
                          text=True, timeout=3600)
    chunks = done.stdout.split(SENTINEL + "\n")[1:]
    if len(chunks) != len(commands):
        raise SystemExit(f"ran {len(chunks)} of {len(commands)} commands in {cwd}: {done.stdout[-2000:]}"
                         f"{done.stderr[-2000:]}")
    return ["\n".join(ln.rstrip() for ln in c.rstrip("\n").splitlines()) for c in chunks]


def run_block(name: str, commands: list[str]) -> list[str]:
    """Run one block's commands in the folder its :data:`BLOCKS` entry prepares."""
    block = BLOCKS[name]
    if block.in_root:
        return run_commands(commands, ROOT)
    with tempfile.TemporaryDirectory(prefix=f"readme-{name}-") as tmp:
        cwd = block.setup(Path(tmp))
        outputs = run_commands(commands, cwd)
        if block.keep:
            block.keep(Path(tmp))
        return outputs


# ------------------------------------------------------------------------------------ the Python example
PYTHON = "python"  # the output block's name
PYTHON_PRELUDE = """\
from robench import api
from robench.attacks import AttackSpec
from robench.eval.stagelist import Protocol, Stage
api.default_stages = lambda norm="Linf": Protocol("readme-quick", 1, (   # seconds, not the protocol's minutes
    Stage(AttackSpec("fgsm"), "bptt"), Stage(AttackSpec("pgd", steps=3, step_size=2 / 255), "bptt"),
    Stage(AttackSpec("square", queries=20), "none", white_box=False)))
"""
OUTPUT_RE = re.compile(r"<!-- output (?P<name>[\w-]+): start -->\n```text\n(?P<body>.*?)```\n"
                       r"<!-- output (?P=name): end -->\n", re.S)


def python_example(text: str) -> str:
    """The ```python block under README's 'One call from Python' heading."""
    section = text[text.index("## One call from Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def output_block(text: str, name: str = PYTHON) -> str:
    """The text inside README's output block ``name``."""
    m = next((m for m in OUTPUT_RE.finditer(text) if m["name"] == name), None)
    if m is None:
        raise SystemExit(f"README lacks the output block {name!r} (a ```text fence between its markers)")
    return m["body"]


def run_python(code: str) -> str:
    """Run README's Python example from the repository root (it reads the shipped zoo) with the quick stage
    list; its stdout and stderr, trailing spaces stripped."""
    done = subprocess.run([sys.executable, "-c", PYTHON_PRELUDE + code], cwd=ROOT, env=environment(),
                          capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise SystemExit(f"README's Python example failed: {done.stderr[-2000:]}")
    out = done.stdout + done.stderr
    return "\n".join(ln.rstrip() for ln in out.rstrip("\n").splitlines()) + "\n"


def untimed(text: str) -> str:
    """``text`` with the stage table's seconds (the last number of a line) masked: all that may differ between
    two runs of the example."""
    return re.sub(r"(?m)\s+\d+\.\d+$", " <seconds>", text)


def write_python_output() -> None:
    text = README.read_text()
    out = run_python(python_example(text))
    output_block(text)  # the markers must be there
    start, end = f"<!-- output {PYTHON}: start -->\n", f"<!-- output {PYTHON}: end -->"
    a, b = text.index(start) + len(start), text.index(end)
    README.write_text(text[:a] + "```text\n" + out + "```\n" + text[b:])


# ------------------------------------------------------------------------------------------- the report
PLACEHOLDER = re.compile(r"^[A-Z]+$")


def report_commands(text: str) -> list[list[str]]:
    """The complete ``robench report`` commands README quotes in inline code, as argument lists without
    ``robench``, in order and without repeats (templates with placeholders such as ``DIR`` are left out)."""
    out: list[list[str]] = []
    for m in re.finditer(r"(?<!`)`(robench report(?: [^`]*)?)`(?!`)", text):
        args = shlex.split(" ".join(m[1].split()))[1:]
        if any(PLACEHOLDER.match(a) for a in args) or args in out:
            continue
        out.append(args)
    return out


def run_reports(root: Path = ROOT, clean: bool = True) -> None:
    """Run README's report commands (``root/README.md``'s) from ``root``: they rewrite its README tables and the
    folders under ``results/report/`` (emptied first when ``clean``, so nothing stale stays)."""
    from robench.cli import main

    commands = report_commands((root / "README.md").read_text())
    if clean:
        shutil.rmtree(root / "results" / "report", ignore_errors=True)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for args in commands:
            try:
                main(args)
            except SystemExit as e:
                if e.code:
                    raise SystemExit(f"failed ({e.code}): robench {shlex.join(args)}") from None
    finally:
        os.chdir(cwd)


# ---------------------------------------------------------------------------------------------------- main
def regenerate(names: list[str]) -> None:
    if PYTHON in names:
        print("output python: README's Python example", flush=True)
        write_python_output()
        names = [n for n in names if n != PYTHON]
    text = README.read_text()
    blocks = console_blocks(text)
    unknown = [n for n in [*names, *blocks] if n not in BLOCKS]
    if unknown:
        raise SystemExit(f"unknown console block(s) {unknown}; known: {', '.join([*BLOCKS, PYTHON])}")
    for name in names:
        print(f"console {name}: {len(blocks[name])} command(s)", flush=True)
        outputs = run_block(name, blocks[name])
        if console_blocks(README.read_text()).get(name) != blocks[name]:
            raise SystemExit(f"README's console block {name!r} changed while it ran; run it again")
        README.write_text(replace_block(README.read_text(), name, render(blocks[name], outputs)))  # one at a time
        if not BLOCKS[name].live:
            store = json.loads(STORE.read_text()) if STORE.exists() else {}
            store[name] = {"commands": blocks[name], "outputs": outputs,
                           "run": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
            STORE.parent.mkdir(parents=True, exist_ok=True)
            STORE.write_text(json.dumps({k: store[k] for k in BLOCKS if k in store}, indent=1, ensure_ascii=False)
                             + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", help="comma-separated console blocks (default: all); 'report' alone with --report")
    p.add_argument("--report", action="store_true", help="run README's report commands (alone, unless --only)")
    a = p.parse_args()
    names = [n for n in (a.only or "").split(",") if n] or ([] if a.report else [*BLOCKS, PYTHON])
    if names:
        regenerate(names)
    if a.report or not a.only:
        run_reports()


if __name__ == "__main__":
    main()
