"""After the documented set-up, a consumer outside the checkout type-checks against the package.

``scripts/setup.sh`` installs the package in editable mode.  setuptools' default editable mode
for this layout is an import hook that mypy does not follow, so a consumer saw ``trimitogen`` as
missing and every ``ctx.call`` result as ``Any``.  This test installs a copy of the checkout
the way ``setup.sh`` does, into a fresh virtual environment, and runs ``mypy --strict`` on a
consumer in another directory.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

CONSUMER = """\
import os
from typing import assert_type

import trimitogen as tm


async def main() -> None:
    async with tm.open_context(tm.local()) as ctx:
        pid = await ctx.call(os.getpid)
        assert_type(pid, int)
        reveal_type(pid)
"""


def setup_editable_mode() -> str:
    """The ``editable_mode`` that ``scripts/setup.sh`` passes to pip."""
    script = (REPO / "scripts" / "setup.sh").read_text()
    found = re.search(r"--config-settings editable_mode=(\w+)", script)
    assert found, "scripts/setup.sh must choose an editable mode that mypy follows"
    return found.group(1)


@pytest.mark.timeout(600)
def test_consumer_outside_the_checkout_sees_the_types(tmp_path: Path) -> None:
    mode = setup_editable_mode()
    # The whole tree: what setuptools installs depends on what else lies next to the package.
    checkout = tmp_path / "checkout"
    shutil.copytree(
        REPO,
        checkout,
        ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "*_cache", "_build"),
    )
    venv = tmp_path / "venv"
    # System site-packages give the venv mypy and trio without installing them again.
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
        timeout=120,
    )
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")}
    install = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", python, "install", "-q"),
            *("--disable-pip-version-check", "--no-deps", "-e", str(checkout)),
            *("--config-settings", "editable_mode=" + mode),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    (consumer / "consumer.py").write_text(CONSUMER)
    result = subprocess.run(
        [python, "-m", "mypy", "--strict", "--no-incremental", "consumer.py"],
        cwd=consumer,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'Revealed type is "int"' in result.stdout
