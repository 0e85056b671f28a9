"""The Sphinx documentation builds with warnings treated as errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = str(Path(__file__).resolve().parent.parent / "docs")


@pytest.mark.timeout(330)
def test_docs_build_without_warnings(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", DOCS, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


GUARD = 'if __name__ == "__main__":'


def unguarded_runs(text: str) -> list[str]:
    """Lines that start an event loop outside an ``if __name__ == "__main__":`` block.

    An enclosing line is the nearest line above with less indentation, then the nearest above
    that with less still, and so on (code blocks of the docs are indented; prose is not).
    """
    lines = text.split("\n")
    found = []
    for index, line in enumerate(lines):
        if not re.match(r"\s*(trio|asyncio)\.run\(", line):
            continue
        indent = len(line) - len(line.lstrip())
        guarded = False
        for above in reversed(lines[:index]):
            depth = len(above) - len(above.lstrip())
            if above.strip() and depth < indent:
                if above.strip() == GUARD:
                    guarded = True
                    break
                indent = depth
        if not guarded:
            found.append(line.strip())
    return found


def test_examples_start_their_work_under_a_main_guard() -> None:
    # A child that calls a function of a script imports the script: unguarded top-level code
    # would run again there.
    root = Path(DOCS).parent
    pages = [root / "README.md", *sorted(Path(DOCS).glob("*.rst")), *root.glob("examples/*.py")]
    found = {str(p.relative_to(root)): unguarded_runs(p.read_text()) for p in pages}
    assert {page: runs for page, runs in found.items() if runs} == {}
