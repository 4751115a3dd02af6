"""The import graph of the installed package: no cycles, and nothing imports the test tree.

Built from the source with :mod:`ast` (nothing is imported). Every ``import`` statement counts,
also those inside functions and under ``TYPE_CHECKING``: a lazy import that closes a cycle is
still a cycle in the design. ``from pkg import name`` is an edge to ``pkg.name`` when that is a
module of the package, else to ``pkg``; the implicit import of a parent package's
``__init__`` is not an edge (every submodule would otherwise form a cycle with a package that
re-exports it). Run as a script (``python -m tests.test_imports``) to print the cycles.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "sealgrid"

Graph = dict[str, set[str]]


def modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of ``package`` under ``root``, by dotted name."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imported(name: str, path: Path) -> Iterator[tuple[str, str | None]]:
    """``(module, imported name or None)`` for every import statement of one module."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                yield target, alias.name


def graph(root: Path = ROOT, package: str = PACKAGE) -> tuple[Graph, dict[str, set[str]]]:
    """The edges between the package's modules, and every import from outside it, by module."""
    known = modules(root, package)
    edges: Graph = {m: set() for m in known}
    outside: dict[str, set[str]] = {m: set() for m in known}
    for name, path in known.items():
        for target, member in imported(name, path):
            full = f"{target}.{member}" if member else target
            if full in known:
                hit = full
            elif target in known:
                hit = target
            else:
                outside[name].add(target)
                continue
            if hit != name:
                edges[name].add(hit)
    return edges, outside


def cycles(edges: Graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(edges) + 100))
    try:
        for v in sorted(edges):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(found)


def test_the_package_has_no_import_cycle() -> None:
    edges, _ = graph()
    assert cycles(edges) == []


def test_no_module_of_the_package_imports_the_tests() -> None:
    _, outside = graph()
    offenders = {m: sorted(t for t in targets if t == "tests" or t.startswith("tests."))
                 for m, targets in outside.items()}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_the_guard_sees_a_cycle_and_a_test_import(tmp_path: Path) -> None:
    """Guard the guard: a lazy import closing a cycle, a relative one, and ``import tests``."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f() -> None:\n    from ..a import x\n")
    (pkg / "c.py").write_text("import tests.chaos\n")
    edges, outside = graph(tmp_path, "pkg")
    assert cycles(edges) == [["pkg.a", "pkg.sub.b"]]
    assert outside["pkg.c"] == {"tests.chaos"}
    assert graph(ROOT)[0]  # the real package was found at all


if __name__ == "__main__":
    found = cycles(graph()[0])
    for cycle in found:
        print(" -> ".join(cycle))
    sys.exit(1 if found else 0)
