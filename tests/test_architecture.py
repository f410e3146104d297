"""The package's shape: no import cycles, and the core knows no system.

Every import counts, including those inside functions (deferred for start-up time, they are still
dependencies). Systems are PeopleSoft, Jira, JD Edwards (and the packages to come); pairs combine
them; the registry, the runner, ping and the CLI compose everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mlconnector

ROOT = Path(mlconnector.__file__).parent
SYSTEM_PACKAGES = ("mlconnector.peoplesoft", "mlconnector.jira", "mlconnector.jde", "mlconnector.procurify",
                   "mlconnector.pairs",
                   "mlconnector.sandbox")
# Modules that may only depend on the core (never on a system, a pair or the composition layer).
CORE = ("mlconnector.sync", "mlconnector.state", "mlconnector.keymap", "mlconnector.http", "mlconnector.audit",
        "mlconnector.errors", "mlconnector.sections", "mlconnector.checks", "mlconnector.credentials",
        "mlconnector.auth", "mlconnector.report", "mlconnector.private")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                if t in modules and t != name:
                    graph[name].add(t)
    return graph


def test_the_import_graph_has_no_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for dep in sorted(graph[m]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_core_modules_import_no_system_pair_or_composition_module() -> None:
    graph = _graph()
    bad = {m: sorted(d for d in deps if d.startswith(SYSTEM_PACKAGES) or d in (
        "mlconnector.registry", "mlconnector.runner", "mlconnector.cli", "mlconnector.ping", "mlconnector.config"))
        for m, deps in graph.items() if m.startswith(CORE)}
    assert {m: d for m, d in bad.items() if d} == {}
