"""A child's printed lines reach the user whether or not the master configured logging.

Each case runs a real master: a fresh Python running a small script (so pytest's own logging
handlers, which sit on the root logger during every test, cannot decide the outcome), with a local
child that prints to stdout and writes to stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.conftest import REPO, WAIT

MASTER = textwrap.dedent(
    """
    import logging, os, sys
    import trio
    import trimitogen as tm

    async def main() -> None:
        async with tm.open_context(tm.local(), name="worker") as ctx:
            await ctx.call(print, "hello from the child")
            await ctx.call(os.write, 2, b"a line on the child's stderr\\n")

    if __name__ == "__main__":
        setup = sys.argv[1]
        if setup == "basicConfig":
            logging.basicConfig(
                level=logging.INFO, stream=sys.stdout, format="%(name)s: %(message)s"
            )
        elif setup == "NullHandler":
            logging.getLogger("trimitogen").addHandler(logging.NullHandler())
        trio.run(main)
    """
)

LINES = ("hello from the child", "a line on the child's stderr")


def run_master(setup: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", MASTER, setup],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=env,
        cwd=str(REPO),
    )
    assert result.returncode == 0, result.stderr
    return result


def test_without_logging_configured_the_lines_go_to_stderr() -> None:
    result = run_master("nothing")
    assert "[worker] hello from the child\n" in result.stderr
    assert "[worker] a line on the child's stderr\n" in result.stderr
    assert result.stdout == ""


def test_with_a_handler_the_lines_are_log_records_only() -> None:
    result = run_master("basicConfig")
    assert "trimitogen.ctx.worker.stdout: hello from the child\n" in result.stdout
    assert "trimitogen.ctx.worker.stderr: a line on the child's stderr\n" in result.stdout
    for line in LINES:
        assert line not in result.stderr


def test_a_null_handler_silences_them() -> None:
    result = run_master("NullHandler")
    for line in LINES:
        assert line not in result.stderr
        assert line not in result.stdout
