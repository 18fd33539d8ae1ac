"""The package's layout is its architecture: each wing imports only the wings below it, and no
module imports itself back through another (sandbox/*/__init__.py say what each wing owns)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sandbox"

# wing -> the wings it may import (besides itself and sandbox.settings, which imports nothing)
MAY_IMPORT = {
    "production": set(),
    "store": set(),
    "population": {"production", "store"},
    "api": {"production", "population", "store"},
    "tryit": {"production", "population"},
    "airtable": {"production", "population"},
    "franceconnect": {"api", "production", "population", "store"},
}
WINGS = set(MAY_IMPORT)


def _modules() -> dict:
    """module name -> (file, package parts) for every module of the package."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        if "bundled" in path.parts:
            continue
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        package = parts[:-1]
        if parts[-1] == "__init__":
            parts = package
        out[".".join(parts)] = (path, package)
    return out


def _imports(modules: dict) -> dict:
    """module -> the package's modules it imports, wherever in the file (lazy imports count)."""
    graph = {}
    for name, (path, package) in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    submodule = f"{target}.{alias.name}"
                    found.add(submodule if submodule in modules else target)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in WINGS else None


GRAPH = _imports(_modules())


def test_the_walk_sees_the_package():
    assert {"sandbox.api.pipeline", "sandbox.production.spec", "sandbox.population.fixtures",
            "sandbox.store", "sandbox.tryit.docs", "sandbox.application"} <= GRAPH.keys()
    assert "sandbox.production.spec" in GRAPH["sandbox.api.pipeline"] or any(
        m.startswith("sandbox.production") for m in GRAPH["sandbox.api.pipeline"])


def wrong_directions(graph: dict, wing: str) -> list:
    return sorted(f"{module} imports {target}"
                  for module, targets in graph.items() if _wing(module) == wing
                  for target in targets
                  if _wing(target) != wing and target != "sandbox.settings"
                  and _wing(target) not in MAY_IMPORT[wing])


def cycles(graph: dict) -> list:
    """Tarjan's strongly connected components: any component of two modules or more is a cycle."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("wing", sorted(WINGS))
def test_a_wing_imports_only_what_it_may(wing):
    wrong = wrong_directions(GRAPH, wing)
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    assert not cycles(GRAPH)


def test_the_checks_catch_a_cycle_and_a_wrong_direction():
    broken = {k: set(v) for k, v in GRAPH.items()}
    broken["sandbox.production.errors"].add("sandbox.api.pipeline")  # which imports errors
    assert wrong_directions(broken, "production") == ["sandbox.production.errors imports sandbox.api.pipeline"]
    assert cycles(broken)
