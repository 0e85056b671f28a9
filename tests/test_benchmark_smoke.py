"""Smoke test: benchmarks/compare.py runs and prints trimitogen's row (timings not checked)."""

from __future__ import annotations

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


def test_compare_quick_prints_trimitogen_row() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--only", "trimitogen"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=100,  # below pytest-timeout's 120 s, so a hang reports the output it has
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("trimitogen ")]
    # library, start-up, teardown, round trip, child->parent, parent->child
    assert any(len(row) == 6 and all(_is_number(cell) for cell in row[1:]) for row in rows), output
    assert "round trip < 3/4 of execnet's" in proc.stdout, output
