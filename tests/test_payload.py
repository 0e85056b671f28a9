"""The runtime as shipped: one source, without annotations, for every child Python from 3.6."""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import skip_or_fail
from trimitogen._payload import runtime_source, strip_annotations

PYTHON36 = (
    Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions/3.6.15/bin/python3"
)

TRICKY = """\
from __future__ import annotations, division
import typing
X: int = 1
Y: typing.List[
    int
]
class C:
    a: int
    b: typing.Dict[
        str, int
    ] = {}
    def m(self, x: int, *args: str, y: "é" = 2, **kw: bytes) -> typing.Tuple[
        int, int
    ]:
        return (x, y)
    async def g(self, a: int, *, b: int=3)->None: pass
def h(é: str = "€") -> str: return é; z: int = 5
self_x: typing.Any = [lambda v: v]
def k(a="->") \\
    -> \\
        int: return len(a)
"""


def _statements(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt):
            kind = {"AnnAssign": "Assign"}.get(type(node).__name__, type(node).__name__)
            if kind != "Pass" and not (kind == "Assign" and getattr(node, "value", 1) is None):
                found.append((node.lineno, kind))
    return sorted(found)


def _annotations(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) or getattr(node, "returns", None) is not None:
            found.append(ast.dump(node))
        if isinstance(node, ast.arg) and node.annotation is not None:
            found.append(node.arg)
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            found.extend(alias.name for alias in node.names if alias.name == "annotations")
    return found


def test_annotations_go_and_every_statement_stays_on_its_line() -> None:
    stripped = strip_annotations(TRICKY)
    assert stripped.count("\n") == TRICKY.count("\n")
    tree = ast.parse(stripped)
    assert _annotations(tree) == []
    original = ast.parse(TRICKY)
    # A bare annotation (no value) becomes a pass; everything else keeps its line.
    kept = [s for s in _statements(original) if s not in {(4, "Assign"), (8, "Assign")}]
    assert _statements(tree) == kept
    assert "from __future__ import division" in stripped


def test_stripped_source_behaves_the_same() -> None:
    results = []
    for source in (TRICKY, strip_annotations(TRICKY)):
        namespace: dict[str, Any] = {}
        exec(compile(source, "<tricky>", "exec", dont_inherit=True), namespace)
        results.append(
            (
                namespace["X"],
                namespace["C"]().m(1, y=3),
                namespace["C"].b,
                namespace["h"](),
                namespace["self_x"][0](4),
                namespace["k"](),
            )
        )
    assert results[0] == results[1] == (1, (1, 3), {}, "€", 4, 2)


def _compiles_on_python36(sources: dict[str, str]) -> str:
    if not PYTHON36.exists():
        skip_or_fail("no Python 3.6 at %s" % PYTHON36)
    script = (
        "import sys, json\n"
        "for name, text in json.load(sys.stdin).items():\n"
        "    compile(text, name, 'exec', dont_inherit=True)\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [str(PYTHON36), "-c", script],
        input=json.dumps(sources),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout + result.stderr


def _shipped_modules() -> dict[str, str]:
    """Every module source in the runtime as a child receives it."""
    modules = {"<loader>": runtime_source()}
    for node in ast.parse(runtime_source()).body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) in ("SOURCES", "LAZY"):
            modules.update(ast.literal_eval(node.value))
    return modules


def test_the_tricky_source_and_the_runtime_compile_on_python_3_6() -> None:
    shipped = _shipped_modules()
    assert "trimitogen.core.child" in shipped
    assert "trimitogen.core.parent" in shipped
    for name, text in shipped.items():
        assert _annotations(ast.parse(text)) == [], name
    shipped["<tricky>"] = strip_annotations(TRICKY)
    assert _compiles_on_python36(shipped) == "ok\n"
