"""The public API's types, proven with mypy --strict on tests/type_tests/."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_public_api_types_check_strictly() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--warn-unused-ignores",
            "--config-file",
            str(REPO / "mypy.ini"),
            str(REPO / "tests" / "type_tests"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_is_marked_typed() -> None:
    assert (REPO / "trimitogen" / "py.typed").exists()
