"""The package's import layering (DESIGN.md, "Layers"): imports only point down.

format ← host ← services ← cli, with the base modules directly under ``appimg/``
(``errors``, ``atomic``, ...) importable by every layer; and no module imports
itself back through others. The modules are parsed, not imported, so that an
import hidden in a function counts as much as one at the top; an import under
``if TYPE_CHECKING:`` counts for the layers (it still says what a module knows
about) but not for cycles (it never runs).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "appimg"

#: A module of the key layer must import nothing from the listed layers.
FORBIDDEN = {
    "appimg.format": ("appimg.host", "appimg.services", "appimg.cli"),
    "appimg.host": ("appimg.services", "appimg.cli"),
    "appimg.services": ("appimg.cli",),
}


@dataclass(frozen=True)
class Import:
    target: str  # the most specific module of the tree the statement loads
    line: int
    type_only: bool  # under `if TYPE_CHECKING:`


def module_names(root: Path) -> dict[str, Path]:
    """Every module of the package under ``root``: dotted name → file."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, type_only: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    """All nodes below ``node`` (functions and classes included), each with whether it
    sits in the body of an ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        yield child, type_only
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield stmt, True
                yield from _walk(stmt, True)
            for stmt in child.orelse:
                yield stmt, type_only
                yield from _walk(stmt, type_only)
        else:
            yield from _walk(child, type_only)


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of ``from <level dots><name> import ...`` written in ``module``."""
    if level == 0:
        assert name is not None
        return name
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: -(level - 1)]
    return ".".join([*base, name] if name else base)


@functools.cache
def _bound_names(init: Path) -> set[str]:
    """Names a package's ``__init__`` binds itself at top level (def, class, assignment)."""
    names = set()
    for node in ast.parse(init.read_bytes(), str(init)).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def imports_of(module: str, path: Path, known: Mapping[str, Path]) -> list[Import]:
    """The modules of ``known`` that ``module`` (the file ``path``) imports, anywhere in it.

    Each import names the most specific module it loads (``from pkg import sub``: the
    module ``pkg.sub``, unless ``pkg`` itself defines ``sub``); the ``__init__`` of the
    packages above it, which Python runs first, is not counted, as import checkers do.
    """
    tree = ast.parse(path.read_bytes(), str(path))
    is_package = path.name == "__init__.py"
    found = []

    def add(target: str, line: int, type_only: bool) -> None:
        # `import a.b.c` of a name that is no module (a bad path) still points at `a.b`.
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != module and Import(target, line, type_only) not in found:
            found.append(Import(target, line, type_only))  # once per statement

    for node, type_only in _walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno, type_only)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                # `from pkg import sub` loads the module pkg.sub when there is one, unless
                # pkg's __init__ (once run, and not the importer) gives the name its own value.
                sub = f"{base}.{alias.name}"
                shadowed = (
                    base in known and base != module and alias.name in _bound_names(known[base])
                )
                is_module = sub in known and not shadowed
                add(sub if is_module else base, node.lineno, type_only)
    return found


def import_graph(root: Path) -> dict[str, list[Import]]:
    names = module_names(root)
    return {name: imports_of(name, path, names) for name, path in names.items()}


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """One cycle per strongly connected component that has one (Tarjan), each as the
    list of its modules in import order, starting from the smallest name; sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:  # the package is small: recursion depth is no issue
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)

    cycles = []
    for component in components:
        start = min(component)
        if len(component) == 1 and start not in graph.get(start, ()):
            continue
        cycles.append(_shortest_cycle(graph, start, component))
    return sorted(cycles)


def _shortest_cycle(graph: Mapping[str, Iterable[str]], start: str, within: set[str]) -> list[str]:
    """The shortest path from ``start`` back to itself inside ``within`` (breadth first)."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(graph.get(node, ())):
                if succ == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return path[::-1]
                if succ in within and succ not in came_from:
                    came_from[succ] = node
                    following.append(succ)
        frontier = following
    raise AssertionError(f"{start} is on no cycle")  # a component of one without a self-loop


def layer_violations(
    graph: Mapping[str, list[Import]], rules: Mapping[str, tuple[str, ...]] = FORBIDDEN
) -> list[str]:
    violations = []
    for module, imports in sorted(graph.items()):
        for layer, forbidden in rules.items():
            if module != layer and not module.startswith(layer + "."):
                continue
            for imp in imports:
                if any(imp.target == f or imp.target.startswith(f + ".") for f in forbidden):
                    how = " (under TYPE_CHECKING)" if imp.type_only else ""
                    violations.append(f"{module}:{imp.line} imports {imp.target}{how}")
    return violations


def runtime_graph(graph: Mapping[str, list[Import]]) -> dict[str, set[str]]:
    return {m: {i.target for i in imports if not i.type_only} for m, imports in graph.items()}


def unit_graph(graph: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """``graph`` with each module folded into its unit: the subpackage or module
    directly inside a layer (``appimg.services.store.ops`` → ``appimg.services.store``)."""
    units: dict[str, set[str]] = {}
    for module, targets in graph.items():
        unit = ".".join(module.split(".")[:3])
        others = {".".join(t.split(".")[:3]) for t in targets} - {unit}
        units.setdefault(unit, set()).update(others)
    return units


# -- the package ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> dict[str, list[Import]]:
    return import_graph(PACKAGE)


def test_the_walk_sees_the_layers(graph: dict[str, list[Import]]) -> None:
    # A guard against a walk that finds nothing and so passes vacuously.
    for layer in ("appimg.errors", "appimg.format", "appimg.host", "appimg.services", "appimg.cli"):
        assert layer in graph
    assert sum(len(imports) for imports in graph.values()) > 100


def test_no_import_cycles(graph: dict[str, list[Import]]) -> None:
    cycles = find_cycles(runtime_graph(graph))
    assert not cycles, "import cycles:\n" + "\n".join(
        " -> ".join([*cycle, cycle[0]]) for cycle in cycles
    )


def test_no_import_cycles_between_subpackages(graph: dict[str, list[Import]]) -> None:
    # Two subpackages that lean on each other (store ops writing xdgpath's files, xdgpath
    # reading the store's layout) are one unit in disguise, even with no module cycle.
    cycles = find_cycles(unit_graph(runtime_graph(graph)))
    assert not cycles, "import cycles between subpackages:\n" + "\n".join(
        " -> ".join([*cycle, cycle[0]]) for cycle in cycles
    )


def test_imports_point_down_the_layers(graph: dict[str, list[Import]]) -> None:
    violations = layer_violations(graph)
    assert not violations, "imports against the layers:\n" + "\n".join(violations)


# -- the checker itself -----------------------------------------------------------------


def test_find_cycles_finds_a_planted_cycle() -> None:
    graph = {
        "a": {"b"},
        "b": {"c", "x"},
        "c": {"a", "d"},  # a -> b -> c -> a
        "d": {"e"},
        "e": set(),
        "x": {"y"},
        "y": {"x"},  # a second, separate one
        "z": {"z"},  # and a module that imports itself
    }
    assert find_cycles(graph) == [["a", "b", "c"], ["x", "y"], ["z"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) == []


def test_find_cycles_reports_the_shortest_cycle_of_a_tangle() -> None:
    # One component, several cycles through "a": the shortest is reported.
    graph = {"a": {"b"}, "b": {"c", "a"}, "c": {"a"}}
    assert find_cycles(graph) == [["a", "b"]]


def test_the_parser_resolves_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "low").mkdir(parents=True)
    (pkg / "high").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "base.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("from . import core\n")
    (pkg / "low" / "core.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import os\n"
        "from ..base import thing\n"
        "if TYPE_CHECKING:\n"
        "    from pkg.high.top import Top\n"
        "else:\n"
        "    pass\n"
        "def late():\n"
        "    from ..high import top\n"
        "    import pkg.high.top.missing\n"
    )
    (pkg / "high" / "__init__.py").write_text("")
    (pkg / "high" / "top.py").write_text("from pkg.low.core import late\n")
    # `run` is both a submodule and a function of the package: the import gets the function.
    (pkg / "cli").mkdir()
    (pkg / "cli" / "__init__.py").write_text("from . import run as _run\ndef run(): ...\n")
    (pkg / "cli" / "run.py").write_text("")
    (pkg / "__main__.py").write_text("from pkg.cli import run\n")
    graph = import_graph(pkg)
    assert sorted(graph) == [
        "pkg", "pkg.__main__", "pkg.base", "pkg.cli", "pkg.cli.run",
        "pkg.high", "pkg.high.top", "pkg.low", "pkg.low.core",
    ]  # fmt: skip
    assert graph["pkg.__main__"] == [Import("pkg.cli", 1, False)]
    assert graph["pkg.cli"] == [Import("pkg.cli.run", 1, False)]
    assert [(i.target, i.line, i.type_only) for i in graph["pkg.low.core"]] == [
        ("pkg.base", 3, False),
        ("pkg.high.top", 5, True),
        ("pkg.high.top", 9, False),
        ("pkg.high.top", 10, False),
    ]
    assert [i.target for i in graph["pkg.low"]] == ["pkg.low.core"]
    # The function-level import closes a cycle; the TYPE_CHECKING one alone would not.
    assert find_cycles(runtime_graph(graph)) == [["pkg.high.top", "pkg.low.core"]]
    del graph["pkg.low.core"][2:]
    assert find_cycles(runtime_graph(graph)) == []
    assert layer_violations(graph, {"pkg.low": ("pkg.high",)}) == [
        "pkg.low.core:5 imports pkg.high.top (under TYPE_CHECKING)"
    ]
    assert layer_violations(graph, {"pkg.high": ("pkg.low",)}) == [
        "pkg.high.top:1 imports pkg.low.core"
    ]
