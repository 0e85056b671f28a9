"""The shape of the package: no import cycles, small modules, each part of the internals reference
findable by file name, and the handle table of the docs in step with ``core/messages.py``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from trimitogen.core import messages

from .conftest import REPO

PACKAGE = REPO / "trimitogen"

#: Lines a module may have; past this it is usually two ideas (STYLE.md, section 2).
MAX_MODULE_LINES = 620


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (imports for type checkers only)."""
    nodes: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return nodes


def _imports(path: Path, name: str) -> set[str]:
    """Every trimitogen module ``path`` imports, at any depth (lazy imports in functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # "from . import latch" names a module, not an attribute.
            found.update(target + "." + alias.name for alias in node.names)
    return {m for m in found if m.split(".")[0] == "trimitogen"}


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in _imports(path, name) if m in paths and m != name}
        for name, path in paths.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            # A package's __init__ importing its own submodules is not a cycle of ideas.
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = _graph()
    assert "trimitogen.core.child" in graph
    assert _cycle(graph) is None, "import cycle: %s" % " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_core_imports_nothing_outside_core() -> None:
    for name, targets in _graph().items():
        if name.startswith("trimitogen.core"):
            outside = {t for t in targets if not t.startswith("trimitogen.core")}
            assert not outside, "%s imports %s" % (name, sorted(outside))


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_modules_stay_small(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, "%s has %d lines" % (path.name, lines)


#: Each part of the internals reference, and the file a reader finds it in.
REFERENCE_PARTS = {
    "Latch": "core/latch.py",
    "Side": "core/side.py",
    "io_op": "core/side.py",
    "IoLogger": "core/iologger.py",
    "Waker": "core/loop.py",
    "Importer": "core/importer.py",
    "ModuleForwarder": "core/importer.py",
    "ModuleResponder": "_responder.py",
    "ExternalContext": "core/child.py",
    "create_child": "core/parent.py",
    "tty_create_child": "core/parent.py",
    "ProcessMonitor": "core/parent.py",
    "minimize_source": "core/minify.py",
    "get_child_modules": "core/modules.py",
}


@pytest.mark.parametrize(("name", "file"), sorted(REFERENCE_PARTS.items()))
def test_reference_parts_are_findable_by_file_name(name: str, file: str) -> None:
    tree = ast.parse((PACKAGE / file).read_text())
    defined = {
        node.name
        for node in tree.body
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
    }
    assert name in defined


def _doc_handle_rows() -> dict[str, tuple[int, str, str, str]]:
    text = (REPO / "docs" / "internals.rst").read_text()
    rows = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Z_]+)\s+(\d+)\s+(\S+ → \S+)\s+``(\w+)``\s+(.*)$", line)
        if match:
            name, number, direction, schema, body = match.groups()
            rows[name] = (int(number), direction, schema, body)
    return rows


def test_the_handle_table_in_the_docs_matches_the_schemas() -> None:
    rows = _doc_handle_rows()
    assert set(rows) == set(messages.HANDLES)
    for name, (number, direction, schema) in messages.HANDLES.items():
        doc_number, doc_direction, doc_schema, body = rows[name]
        assert (doc_number, doc_direction, doc_schema) == (number, direction, schema.__name__)
        fields = [field for field, _check in schema.FIELDS]
        if fields:
            assert body.startswith("``(%s)``" % ", ".join(fields)), name
        else:
            assert body == "empty", name
        assert number == schema.HANDLE
