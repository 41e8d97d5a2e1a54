"""The layering of HOUSE_STYLE, checked on the source: no cycles, no private cross-imports.

The graph is read with ``ast`` (no module is imported), over every import statement in a module:
top-level, inside functions, and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "duh"

# serve and bench run artifacts: they use the runtime, never the compiler side.
COMPILER_SIDE = ("duh.compiler", "duh.passes", "duh.calibration")
RUNTIME_USERS = ("duh.serve", "duh.bench", "duh.runtime")
UI_LIBRARIES = ("typer", "rich")
# batch, the integrations and the deployment exporters run artifacts too: never the compiler;
# batch reads image folders with calibration's public preprocessing, imported where it is used.
SCALE_OUT = ("duh.batch", "duh.integrations", "duh.export")
COMPILER = ("duh.compiler", "duh.passes")


@dataclass(frozen=True, slots=True)
class Edge:
    """``importer`` imports ``imported`` at ``line``; ``top_level`` when it runs at import time."""

    importer: str
    imported: str
    line: int
    top_level: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _walk(node: ast.AST, top_level: bool) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        nested = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        if _type_checking_block(child):
            nested = True
        yield child, top_level and not nested
        yield from _walk(child, top_level and not nested)


def _edges(known: dict[str, Path]) -> list[Edge]:
    edges = []
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        for node, top in _walk(tree, True):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node)
                # `from duh.x import y` imports the module duh.x.y when y is one.
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
                ]
            for target in dict.fromkeys(targets):
                edges.append(Edge(name, target, node.lineno, top))  # type: ignore[attr-defined]
    return edges


KNOWN = _modules()
EDGES = _edges(KNOWN)


def _owner(module: str) -> str:
    """The package whose private names ``module`` may use: ``duh.serve`` for ``duh.serve._x``."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return module


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _cycles(edges: list[Edge]) -> list[list[str]]:
    graph: dict[str, set[str]] = {}
    for e in edges:
        if e.imported in KNOWN and e.imported != e.importer:
            graph.setdefault(e.importer, set()).add(e.imported)
    # Tarjan's strongly connected components: every component of more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_the_package() -> None:
    assert "duh.compiler" in KNOWN and "duh.runtime" in KNOWN
    assert any(e.importer == "duh.cli" for e in EDGES)


def test_no_import_cycles() -> None:
    cycles = _cycles(EDGES)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_private_module_of_another_package() -> None:
    bad = [
        f"{e.importer}:{e.line} imports {e.imported}"
        for e in EDGES
        if e.imported.startswith("duh.")
        and _owner(e.imported) != e.imported
        and _owner(e.imported) != "duh"  # duh._version, duh._cuda: the root's shared internals
        and not _inside(e.importer, _owner(e.imported))
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("user", RUNTIME_USERS)
def test_runtime_side_never_reaches_the_compiler(user: str) -> None:
    bad = [
        f"{e.importer}:{e.line} imports {e.imported}"
        for e in EDGES
        if _inside(e.importer, user) and any(_inside(e.imported, c) for c in COMPILER_SIDE)
    ]
    assert not bad, "\n".join(bad)


def test_runtime_side_does_not_load_the_compiler_at_import_time() -> None:
    """Following top-level imports from serve/bench/runtime never reaches compiler, passes."""
    graph: dict[str, set[str]] = {}
    for e in EDGES:
        if e.top_level:
            graph.setdefault(e.importer, set()).add(e.imported)
    for start in (m for m in KNOWN if any(_inside(m, u) for u in RUNTIME_USERS)):
        seen, todo = {start}, [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                assert not any(_inside(nxt, c) for c in COMPILER_SIDE), f"{start} loads {nxt}"
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)


@pytest.mark.parametrize("user", SCALE_OUT)
def test_scale_out_never_reaches_the_compiler(user: str) -> None:
    """No import of compiler/passes at all; nothing of the compiler side at import time."""
    graph: dict[str, set[str]] = {}
    for e in EDGES:
        assert not (_inside(e.importer, user) and any(_inside(e.imported, c) for c in COMPILER)), (
            f"{e.importer}:{e.line} imports {e.imported}"
        )
        if e.top_level:
            graph.setdefault(e.importer, set()).add(e.imported)
    for start in (m for m in KNOWN if _inside(m, user)):
        seen, todo = {start}, [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                assert not any(_inside(nxt, c) for c in COMPILER_SIDE), f"{start} loads {nxt}"
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)


def test_only_cli_imports_typer_or_rich() -> None:
    bad = [
        f"{e.importer}:{e.line} imports {e.imported}"
        for e in EDGES
        if e.imported.split(".")[0] in UI_LIBRARIES and not _inside(e.importer, "duh.cli")
    ]
    assert not bad, "\n".join(bad)


def test_the_checks_catch_what_they_should() -> None:
    """The rules flag a made-up cycle and private import (so a green run means something)."""
    fake = [
        Edge("duh.compiler.ingest", "duh.runtime._data", 1, True),
        Edge("duh.runtime._data", "duh.compiler.ingest", 1, True),
    ]
    assert _cycles(fake) == [["duh.compiler.ingest", "duh.runtime._data"]]
    assert _owner("duh.runtime._data") == "duh.runtime"
    assert not _inside("duh.compiler.ingest", _owner("duh.runtime._data"))
