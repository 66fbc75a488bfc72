"""The package's structure: no import cycle between crisp modules, no oversized module.

The import graph is built from the source with :mod:`ast` (nothing is imported): an edge A -> B for
every ``import crisp.b``, ``from crisp.b import x``, ``from crisp import b`` and relative import in
module A, at module level or inside a function (a function-level import is still a dependency; it
only hides a cycle from the interpreter until the function runs). Importing ``crisp.b.c`` also
imports the package ``crisp.b`` (its ``__init__``), which is an edge too. Imports under
``if TYPE_CHECKING:`` are left out: they exist for type checkers and never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "crisp"
MAX_LINES = 600


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (``__init__`` as the package)."""
    modules = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` refers to: itself, or the longest prefix that is a module."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _targets(module: str, is_package: bool, node: ast.AST) -> list[str]:
    """Dotted names a single import statement may load (before resolving to modules)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    # `from crisp.x import y`: y may be a submodule (crisp.x.y) or a name inside crisp.x
    return [prefix] + [f"{prefix}.{alias.name}" for alias in node.names if alias.name != "*"]


def _type_checking_imports(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (read by type checkers, never run)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
                (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
                or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")):
            ids.update(id(sub) for stmt in node.body for sub in ast.walk(stmt))
    return ids


def import_graph() -> dict[str, set[str]]:
    """Module -> the crisp modules it imports (module level and function level)."""
    modules = module_files()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        typing_only = _type_checking_imports(tree)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in typing_only:
                continue
            for name in _targets(module, is_package, node):
                if name != PACKAGE and not name.startswith(PACKAGE + "."):
                    continue
                target = _resolve(name, modules)
                # importing crisp.a.b runs crisp/__init__ and crisp/a/__init__ first
                parts = target.split(".") if target else []
                for i in range(2, len(parts) + 1):
                    edges.add(".".join(parts[:i]))
        edges.discard(module)
        # a package's __init__ importing its own submodules is how packages work, not a cycle
        graph[module] = {t for t in edges if not (is_package and t.startswith(module + "."))}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle per strongly connected component with more than one module."""
    from collections import deque

    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan; the graph is small (recursion depth < 100)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    cycles = []
    for component in components:
        start = min(component)
        parent: dict[str, str | None] = {start: None}
        queue = deque([start])
        cycle = None
        while queue and cycle is None:
            v = queue.popleft()
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while parent[path[-1]] is not None:
                        path.append(parent[path[-1]])
                    cycle = [*reversed(path), start]
                    break
                if w not in parent:
                    parent[w] = v
                    queue.append(w)
        cycles.append(cycle)
    return sorted(cycles)


def test_the_graph_finds_function_level_and_relative_imports(tmp_path, monkeypatch):
    """The checker itself: a cycle hidden in a function-level import is found, with its path."""
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import b\n")
    (pkg / "a.py").write_text("import crisp.sub.b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (pkg / "c.py").write_text("def g():\n    from crisp import a\n")
    (pkg / "d.py").write_text("from crisp.c import g\n")
    (pkg / "e.py").write_text("from typing import TYPE_CHECKING\n"
                              "if TYPE_CHECKING:\n    from crisp import a\n")
    monkeypatch.setitem(globals(), "SRC", tmp_path)
    graph = import_graph()
    assert graph["crisp.a"] == {"crisp.sub", "crisp.sub.b"}
    assert graph["crisp.sub.b"] == {"crisp.c"} and graph["crisp.c"] == {"crisp.a"}
    assert graph["crisp.sub"] == set() and graph["crisp.e"] == set()
    assert find_cycles(graph) == [["crisp.a", "crisp.sub.b", "crisp.c", "crisp.a"]]


def _cycles_message(cycles: list[list[str]]) -> str:
    return "import cycles:\n" + "\n".join("  " + " -> ".join(cycle) for cycle in cycles)


def test_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert cycles == [], _cycles_message(cycles)


def test_no_module_over_600_lines():
    sizes = {module: len(path.read_text(encoding="utf-8").splitlines())
             for module, path in module_files().items()}
    offenders = {m: n for m, n in sorted(sizes.items(), key=lambda kv: -kv[1]) if n > MAX_LINES}
    assert offenders == {}, f"modules over {MAX_LINES} lines: " + ", ".join(
        f"{m} ({n})" for m, n in offenders.items())
