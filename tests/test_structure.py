"""The package's shape: no import circles, no private names used across packages, cheap modules stay cheap.

Imports are read from the source with `ast`, including the ones inside functions: a deferred import hides a
circle from Python at import time but not from the reader, who still cannot understand one module without the other.
"""

import ast
import subprocess
import sys
from pathlib import Path

import nbhelpers

ROOT = Path(nbhelpers.__file__).parent


def _modules() -> dict:
    """dotted module name -> (path, dotted name of the package that holds it)."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        package = ".".join(parts[:-1])
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = (path, package)
    return found


MODULES = _modules()


def _imports(tree) -> list[tuple[str, str]]:
    """(imported module, imported name or "") for every nbhelpers import in a module, nested ones included."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names if alias.name.startswith("nbhelpers")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nbhelpers"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.append((submodule, "") if submodule in MODULES else (node.module, alias.name))
    return found


def import_graph() -> dict:
    return {name: {module for module, _ in _imports(ast.parse(path.read_text())) if module in MODULES} - {name}
            for name, (path, _) in MODULES.items()}


def cycles(graph: dict) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
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
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_import_graph_has_no_cycles():
    graph = import_graph()
    assert graph["nbhelpers.doctor"] >= {"nbhelpers.env", "nbhelpers.persist", "nbhelpers.profiles"}
    assert cycles(graph) == []


def test_env_holds_the_probes_and_imports_nothing_from_the_package():
    assert import_graph()["nbhelpers.env"] == set()


def _private_uses() -> list[str]:
    """`from X import _name` and `module._name` where X / module lives in another package than the user."""
    uses = []
    for name, (path, package) in MODULES.items():
        tree = ast.parse(path.read_text())
        aliases = {}
        for module, imported in _imports(tree):
            owner = MODULES[module][1] if module in MODULES else module.rpartition(".")[0]
            if imported.startswith("_") and owner != package:
                uses.append(f"{name}: from {module} import {imported}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nbhelpers"):
                aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names
                                if f"{node.module}.{a.name}" in MODULES})
            elif isinstance(node, ast.Import):
                aliases.update({a.asname: a.name for a in node.names if a.asname and a.name in MODULES})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")
                    and MODULES[aliases[node.value.id]][1] != package):
                uses.append(f"{name}: {aliases[node.value.id]}.{node.attr}")
    return uses


def test_no_private_names_are_used_across_packages():
    assert _private_uses() == []


def _imports_torch(module: str) -> bool:
    code = f"import sys, {module}; print('torch' in sys.modules)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "True"


def test_the_planner_and_the_budgets_import_arithmetic_not_torch():
    assert _imports_torch("nbhelpers.moe.offload.convert")  # the probe works: the converter does need torch
    assert not _imports_torch("nbhelpers.plan.verdict")
    assert not _imports_torch("nbhelpers.moe.offload.budgets")
