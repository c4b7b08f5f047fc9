"""The layers hold: core imports no Airflow, operators or hooks, and no module of releng imports itself in a cycle."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def _module(path: Path) -> str:
    parts = list(path.relative_to(PLUGINS).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Modules a file imports at module level or in functions (``from x import y`` counts x and x.y)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in PLUGINS.rglob("*.py")}
    return {name: {i for i in _imports(path) if i in files and i != name} for name, path in files.items()}


def test_core_imports_no_airflow_operators_or_hooks():
    bad = {name: sorted(i for i in _imports(path) if i.split(".")[0] == "airflow"
                        or i.startswith(("releng.operators", "releng.hooks")))
           for name, path in ((_module(p), p) for p in (PLUGINS / "releng" / "core").rglob("*.py"))}
    assert {k: v for k, v in bad.items() if v} == {}


def test_no_import_cycles_in_releng():
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    # a package's __init__ importing its own submodules is not a cycle between modules
    real = [c for c in cycles
            if not any(a.startswith(b + ".") or b.startswith(a + ".") for a, b in itertools.pairwise(c))]
    assert real == []
