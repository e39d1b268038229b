"""The package layout: every module imports on its own, and imports form no cycle.

Two checks: each ``lfr`` module is imported alone in a fresh interpreter (so no
module depends on another having been imported first), and a static pass over the
``import`` statements of python/lfr finds no cycle in the module import graph
(module-level imports only: imports inside functions run later, and those under
``if TYPE_CHECKING:`` never run).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "python"
PACKAGE = ROOT / "lfr"

Graph = Mapping[str, Iterable[str]]

#: Known edges that close a cycle, each with the file that must change. An entry
#: that no longer closes a cycle fails the test: remove it then.
KNOWN_CYCLE_EDGES: dict[tuple[str, str], str] = {}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def lfr_modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Every Python module of the package, by dotted name (``__main__`` left out)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        if path.name != "__main__.py":
            out[module_name(path, package.parent)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level(body: list[ast.stmt]) -> Iterable[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for part in (node.body, node.orelse, node.finalbody):
                yield from _module_level(part)
            for handler in node.handlers:
                yield from _module_level(handler.body)
        elif isinstance(node, (ast.With, ast.ClassDef)):
            yield from _module_level(node.body)


def imports_of(source: str, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` that module ``name`` imports at module level."""
    out: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in _module_level(ast.parse(source).body):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            # ``from pkg import sub`` imports the submodule; ``from pkg import
            # name`` runs pkg itself.
            out.add(sub if sub in known else base)
    return {m for m in out if m in known and m != name}


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = lfr_modules(package)
    # Extension modules (lfr._core) are known by their stubs; they import no lfr.
    stubs = {module_name(p, package.parent) for p in package.rglob("*.pyi")}
    known = set(modules) | stubs
    return {
        name: imports_of(
            path.read_text(encoding="utf-8"), name, path.name == "__init__.py", known
        )
        for name, path in modules.items()
    }


def find_cycle(graph: Graph) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None if it is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def without(graph: Graph, edges: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    drop = set(edges)
    return {a: {b for b in bs if (a, b) not in drop} for a, bs in graph.items()}


# -- the checker itself ------------------------------------------------------------


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    cycle = find_cycle(graph)
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}
    assert find_cycle({"a": {"a"}}) == ["a", "a"]
    assert find_cycle(without(graph, [("c", "a")])) is None
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_only_module_level_imports_count() -> None:
    source = """
from __future__ import annotations
import typing
from typing import TYPE_CHECKING
import lfr.b
from lfr import c, helper
from . import d
if TYPE_CHECKING:
    import lfr.e
else:
    import lfr.f
try:
    from lfr.g import thing
except ImportError:
    pass
class K:
    import lfr.h
def later() -> None:
    import lfr.i
"""
    known = {"lfr", "lfr.a", "lfr.b", "lfr.c", "lfr.d", "lfr.e", "lfr.f", "lfr.g"}
    known |= {"lfr.h", "lfr.i"}
    found = imports_of(source, "lfr.a", False, known)
    # ``helper`` is a name in lfr/__init__.py, so that import runs lfr itself.
    assert found == {"lfr", "lfr.b", "lfr.c", "lfr.d", "lfr.f", "lfr.g", "lfr.h"}


# -- lfr ------------------------------------------------------------------------


def test_the_graph_sees_lfrs_packages() -> None:
    graph = import_graph()
    assert "lfr.align.warp" in graph["lfr.align"]
    assert "lfr.models.provision" in graph["lfr.models"]
    assert "lfr.evaluation.run" in graph["lfr.evaluation"]
    assert "lfr.align" in graph["lfr.embed"]
    assert "lfr.embed" not in graph["lfr.quality"]  # alignment is lfr.align's


def test_lfr_has_no_import_cycle() -> None:
    graph = import_graph()
    cycle = find_cycle(without(graph, KNOWN_CYCLE_EDGES))
    assert cycle is None, " -> ".join(cycle or [])
    for (a, b), file in KNOWN_CYCLE_EDGES.items():
        assert b in graph.get(a, set()), (
            f"{a} no longer imports {b} ({file}): remove it from KNOWN_CYCLE_EDGES"
        )


def _import_alone(name: str) -> tuple[str, int, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    done = subprocess.run(
        [sys.executable, "-c", f"import {name}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    return name, done.returncode, done.stderr[-2000:]


@pytest.mark.slow
def test_every_module_imports_alone() -> None:
    names = sorted(lfr_modules())
    assert len(names) > 40
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        results = list(pool.map(_import_alone, names))
    failed = {name: err for name, rc, err in results if rc != 0}
    assert failed == {}
