"""No import circle between SR Lab's packages, and the IO package below the others.

The graph is read from the source (every ``import`` and ``from ... import``, inside functions
too), so a circle hidden behind a function-level import counts as one.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from tests.helpers import REPO_ROOT

SRC = REPO_ROOT / "src"


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.split(".")[0] == "src"}


def graph(depth: int) -> dict[str, set[str]]:
    """Edges between the first ``depth`` parts of module names (2: packages such as src.io)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in SRC.rglob("*.py"):
        source = ".".join(module_name(path).split(".")[:depth])
        for name in imported(path):
            target = ".".join(name.split(".")[:depth])
            if target != source:
                edges[source].add(target)
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every circle found by a depth-first walk (each once per starting node on it)."""
    found: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt in path:
                found.append([*path[path.index(nxt) :], nxt])
            elif len(path) < 20:
                walk(nxt, [*path, nxt])

    for start in sorted(edges):
        walk(start, [start])
    return found


def test_no_package_imports_one_that_imports_it_back():
    assert not circles(graph(2)), circles(graph(2))[:5]


def test_no_module_imports_one_that_imports_it_back():
    """Module level, function-level imports included: src.data's benchmark download, benchmark
    sets and image sources imported each other through lazy imports until the pixel manifest and
    DatasetNotFoundError moved to modules of their own (src/data/pixels.py, errors.py)."""
    assert not circles(graph(3)), circles(graph(3))[:5]


def test_the_io_modules_form_no_circle_among_themselves():
    edges = graph(3)
    within_io = {
        module: {target for target in targets if target.startswith("src.io.")}
        for module, targets in edges.items()
        if module.startswith("src.io.")
    }
    assert not circles(within_io), circles(within_io)[:5]


def test_io_and_ops_sit_below_data_models_and_metrics():
    edges = graph(2)
    assert edges["src.io"] <= {"src.utils", "src.ops"}, edges["src.io"]
    assert edges["src.ops"] <= {"src.utils"}, edges["src.ops"]


def test_the_walk_finds_a_circle_when_there_is_one():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}})
    assert not circles({"a": {"b"}, "b": {"c"}})
