"""The package's dependencies point one way: no import cycle, and library -> callbacks -> tasks -> entry points."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "src" / "robustxai"
# a layer may import only from the layers before it (utils and errors are below everything)
LAYERS = {"library": 0, "callbacks": 1, "tasks": 2}
LIBRARY = {"attacks", "attributions", "metrics", "models", "data", "methods", "analysis", "utils", "errors"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Every robustxai module ``path`` imports, at module level or inside functions (a lazy import is still one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known)
    return found


@cache
def import_graph() -> dict[str, frozenset[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    return {name: frozenset(imported_modules(path, known) - {name}) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    return LAYERS["library"] if top in LIBRARY or top == "" else LAYERS[top]


def test_no_import_cycle_among_the_package_modules():
    # package __init__ re-exports are edges too: a submodule importing its own package would be a cycle
    assert cycles(import_graph()) == []


def test_the_graph_sees_real_imports():
    graph = import_graph()
    assert "robustxai.attacks.pgd" in graph["robustxai.attacks.attribution_norm"]
    assert "robustxai.callbacks.registry" in graph["robustxai.tasks.common"]


def test_a_cycle_is_detected():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", sorted(import_graph()))
def test_imports_point_from_entry_points_down_to_the_library(module):
    wrong = sorted(dep for dep in import_graph()[module] if layer(dep) > layer(module))
    assert not wrong, f"{module} (layer {layer(module)}) imports the higher layers {wrong}"
