"""No import cycle among llamaswap's modules.

The graph is built from the source, not by importing: every `import` and `from ... import`
in every module of the package, at top level and inside functions alike (a function-local
import still ties the two modules together; it only hides the cycle until the call), minus
the ones under `if TYPE_CHECKING:`, which never run. `from pkg import name` is an edge to
`pkg.name` when that is a module of ours, else to `pkg`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import llamaswap

PACKAGE_DIR = Path(llamaswap.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Modules of ours that `module` imports (any depth, TYPE_CHECKING blocks skipped)."""
    out: set[str] = set()

    def ours(name: str) -> None:
        if name in known:
            out.add(name)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                ours(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                pkg = ".".join(base + ([node.module] if node.module else []))
            else:
                pkg = node.module or ""
            for alias in node.names:
                sub = f"{pkg}.{alias.name}"
                if sub in known:
                    out.add(sub)
                else:
                    ours(pkg)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    out.discard(module)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {
        name: _imports(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py", known)
        for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]], within: str = "") -> list[str] | None:
    """One cycle among the modules under `within` (as a path a -> b -> a), or None."""
    nodes = sorted(n for n in graph if n.startswith(within))
    inside = set(nodes)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def go(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in sorted(graph[n] & inside):
            if state.get(m) == 1:
                return path[path.index(m) :] + [m]
            if m not in state:
                found = go(m)
                if found:
                    return found
        path.pop()
        state[n] = 2
        return None

    for n in nodes:
        if n not in state:
            found = go(n)
            if found:
                return found
    return None


def test_the_graph_sees_every_kind_of_import() -> None:
    graph = import_graph()
    # Top level, function-local, and `from package import module`.
    assert "llamaswap.compiler.diagnostics" in graph["llamaswap.compiler.plan"]
    assert "llamaswap.compiler.parse" in graph["llamaswap.compiler.resolve"]  # function-local
    assert (
        "llamaswap.compiler.precompute" in graph["llamaswap.compiler.plan"]
    )  # from compiler import precompute
    assert find_cycle({"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}}) == ["a.x", "a.y", "a.z", "a.x"]
    assert find_cycle({"a.x": {"a.y"}, "a.y": set()}) is None


def test_type_checking_imports_are_not_edges() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from p import b\n"
        "else:\n    from p import c\ndef f():\n    from p import d\n"
    )
    assert _imports(tree, "p.a", False, {"p.b", "p.c", "p.d"}) == {"p.c", "p.d"}
    tree = ast.parse("from . import b\nfrom .c import x\nfrom .. import q\n")
    assert _imports(tree, "p.s.a", False, {"p.s.b", "p.s.c", "p.q"}) == {"p.s.b", "p.s.c", "p.q"}


@pytest.mark.parametrize("within", ["llamaswap.compiler", "llamaswap.grammar"])
def test_no_import_cycle_in_the_pure_core(within: str) -> None:
    cycle = find_cycle(import_graph(), within)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def test_no_import_cycle_in_the_package() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())
