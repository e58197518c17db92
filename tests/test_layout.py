"""The package's import graph: no module imports itself back through others, and none reaches into another's
private names. Read from the source (imports inside functions included), so a circle that only closes at run time
is still found."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import robench

ROOT = Path(robench.__file__).parent


def module_name(path: Path, root: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (never run)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def import_graph(root: Path) -> tuple[dict[str, set[str]], list[str]]:
    """Module -> the package modules it imports (anywhere in the file, ``TYPE_CHECKING`` blocks left out), and
    every import of a private name (``_x``) from another module, as ``"importer: module._x"`` lines.

    Importing ``a.b.c`` from outside package ``a.b`` also runs ``a.b``'s ``__init__``: that is an edge too."""
    paths = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    top = root.name
    edges: dict[str, set[str]] = {m: set() for m in paths}
    private: list[str] = []
    for mod, path in paths.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_only(tree)
        for node in ast.walk(tree):
            if id(node) in skip or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == top]
            else:
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source.split(".")[0] != top:
                    continue
                targets = []
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    targets.append(sub if sub in paths else source)
                    if alias.name.startswith("_") and sub not in paths and source != mod:
                        private.append(f"{mod}: {source}.{alias.name}")
            for target in targets:
                parts = target.split(".")
                for i in range(2, len(parts) + 1):  # the target and the packages above it that mod is not in
                    t = ".".join(parts[:i])
                    if t in paths and t != mod and not (mod + ".").startswith(t + "."):
                        edges[mod].add(t)
    return edges, private


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    edges, _ = import_graph(ROOT)
    assert cycles(edges) == []


def test_no_module_imports_another_modules_private_names():
    _, private = import_graph(ROOT)
    assert private == []


def test_every_package_module_is_read():
    edges, _ = import_graph(ROOT)
    assert {"robench.eval.sweep", "robench.results.store", "robench.train.loop", "robench.zoo.buildlist"} <= set(edges)
    assert "robench.results.store" in edges["robench.eval.sweep"]


@pytest.fixture
def fake_package(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from .b import thing\n",
        "b.py": "def f():\n    from .a import _hidden  # inside a function\n    return _hidden\nthing = 1\n",
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import thing\n",
        "d.py": "from .sub.e import x\n",
        "sub/__init__.py": "from ..d import x\n",
        "sub/e.py": "x = 1\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    return pkg


def test_the_checker_finds_a_cycle_through_a_function_and_a_private_import(fake_package):
    edges, private = import_graph(fake_package)
    assert edges["pkg.c"] == set()  # TYPE_CHECKING imports never run
    assert private == ["pkg.b: pkg.a._hidden"]
    # a <-> b through b's function; d -> sub.e runs sub/__init__, which imports d
    assert cycles(edges) == [["pkg.a", "pkg.b"], ["pkg.d", "pkg.sub"]]


def test_the_zoo_checks_recipes_without_loading_training_code():
    code = ("import sys, robench.zoo, robench.train.config; "
            "loaded = {'robench.train.' + m for m in ('loop', 'recipes', 'job')} & set(sys.modules); "
            "assert not loaded, loaded")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_the_config_names_exactly_the_recipes_the_loop_registers():
    from robench.train.config import RECIPE_SHORT
    from robench.train.recipes import RECIPES

    assert RECIPES.names() == list(RECIPE_SHORT)


CLAIM = re.compile(r"torch-free|never (?:imports |loads |needs )?torch|\(never torch\)|no torch", re.IGNORECASE)


def torch_free_claims(root: Path = ROOT) -> list[str]:
    """The modules whose docstring promises they never load torch."""
    out = []
    for path in sorted(root.rglob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if CLAIM.search(" ".join(doc.split())):
            out.append(module_name(path, root))
    return out


def test_every_module_that_claims_to_be_torch_free_is():
    results = [module_name(p, ROOT) for p in sorted((ROOT / "results").glob("*.py"))]  # the package promises it
    claims = sorted(set(torch_free_claims()) | set(results))
    assert {"robench.results.shards", "robench.results.report", "robench.io", "robench.attack_meta"} <= set(claims)
    code = ("import importlib, sys\n"
            f"for m in {claims!r}:\n"
            "    importlib.import_module(m)\n"
            "    assert 'torch' not in sys.modules, m + ' loaded torch'\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_importing_sets_no_global_state(monkeypatch):
    """No matplotlib backend or pyplot at import (the report draws on Figure objects), and torch.compile is
    chosen when a neuron first runs, from ROBENCH_COMPILE, not when the module is imported."""
    code = ("import sys, robench.results.report, robench.results.worstcase\n"
            "assert 'matplotlib.pyplot' not in sys.modules\n"
            "import robench.snn.neurons, robench.snn.fused as n\n"
            "assert n._USE_COMPILED[0] is None and not n._COMPILED\n"
            "assert n.compile_enabled()\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "ROBENCH_COMPILE": "1"})
    assert run.returncode == 0, run.stderr
