"""Smoke test: benchmarks/compare.py runs and prints trimitogen's rows (timings not checked).

Only the local and import sections run: the ssh, sudo and hop sections need root, throwaway
users and an sshd, and take longer (tests/test_methods.py covers those methods).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "compare.py"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _numeric_rows(stdout: str, label: str, cells: int) -> list[list[str]]:
    """Rows starting with ``label`` followed by exactly ``cells`` numbers."""
    rows = []
    for line in stdout.splitlines():
        if line.startswith(label + " "):
            row = line[len(label) :].split()
            if len(row) == cells and all(_is_number(cell) for cell in row):
                rows.append(row)
    return rows


def test_compare_quick_prints_trimitogen_rows() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--only",
            "trimitogen",
            "--sections",
            "local,import",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=100,  # below pytest-timeout's 120 s, so a hang reports the output it has
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    # local: start-up, teardown, round trip, child->parent, parent->child
    assert _numeric_rows(proc.stdout, "trimitogen", 5), output
    assert "round trip < 3/4 of execnet's" in proc.stdout, output
    # import: first call, 2nd context, start-up+call, requests, modules, KiB sent, master time
    assert _numeric_rows(proc.stdout, "trimitogen", 7), output
    assert _numeric_rows(proc.stdout, "trimitogen, source only", 7), output
    assert "could not be measured" not in output, output


def test_benchmarks_do_not_import_the_test_suite() -> None:
    """benchmarks/ takes its users and sshd from trimitogen.testing, never from tests/."""
    offenders = []
    for path in sorted(SCRIPT.parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [
                "%s:%d %s" % (path.name, node.lineno, name)
                for name in names
                if name == "tests" or name.startswith("tests.")
            ]
    assert offenders == []
