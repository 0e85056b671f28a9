"""The stage-1 command and the parser of what a child prints before framing starts."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail
from trimitogen.core.bootstrap import (
    MARKER,
    BootstrapParser,
    length_prefixed,
    stage1_command,
)

#: Upper bound on any single wait in these tests; reaching it means the test failed.
PATIENCE = 30.0

BANNER = b"Welcome to host\r\nLast login: yesterday\n\nwarning: something odd\n"
MARKER_LINE = b"TMG0 30b07f0\n"
AFTER = b"\x00\x00\x00\x18framed bytes follow"


def feed(parser: BootstrapParser, data: bytes, cuts: list[int]) -> list[bool]:
    """Feed ``data`` cut at ``cuts``; the result of each receive_data call."""
    bounds = [0, *sorted(cuts), len(data)]
    return [parser.receive_data(data[a:b]) for a, b in itertools.pairwise(bounds)]


def test_marker_in_one_feed() -> None:
    parser = BootstrapParser()
    assert parser.receive_data(BANNER + MARKER_LINE + AFTER)
    assert parser.hexversion == 0x30B07F0
    assert parser.remainder == AFTER
    assert parser.output_lines() == [
        "Welcome to host",
        "Last login: yesterday",
        "warning: something odd",
    ]


@pytest.mark.parametrize("split", range(len(BANNER + MARKER_LINE + AFTER) + 1))
def test_marker_split_across_two_feeds(split: int) -> None:
    data = BANNER + MARKER_LINE + AFTER
    parser = BootstrapParser()
    first, second = feed(parser, data, [split])
    assert first == (split >= len(BANNER + MARKER_LINE))
    assert second
    assert parser.hexversion == 0x30B07F0
    assert parser.remainder == AFTER
    assert parser.output_lines() == [
        "Welcome to host",
        "Last login: yesterday",
        "warning: something odd",
    ]


def test_marker_fed_one_byte_at_a_time() -> None:
    data = BANNER + MARKER_LINE + AFTER
    parser = BootstrapParser()
    results = feed(parser, data, list(range(1, len(data))))
    end_of_marker = len(BANNER + MARKER_LINE)
    assert results == [i + 1 >= end_of_marker for i in range(len(data))]
    assert parser.remainder == AFTER
    assert parser.hexversion == 0x30B07F0


def test_output_after_the_marker_goes_to_the_remainder() -> None:
    parser = BootstrapParser()
    assert parser.receive_data(MARKER_LINE)
    assert parser.remainder == b""
    assert parser.receive_data(b"more")
    assert parser.receive_data(b" and more")
    assert parser.remainder == b"more and more"
    assert parser.output_lines() == []


def test_no_marker_keeps_the_output() -> None:
    parser = BootstrapParser()
    assert not parser.receive_data(b"python3: command not found\r\n")
    assert not parser.receive_data(b"sudo: a password is required")
    assert parser.hexversion is None
    assert parser.output_lines() == [
        "python3: command not found",
        "sudo: a password is required",
    ]


def test_marker_without_its_newline_is_not_enough() -> None:
    parser = BootstrapParser()
    assert not parser.receive_data(BANNER + MARKER_LINE[:-1])
    assert parser.hexversion is None
    assert parser.receive_data(b"\n")
    assert parser.hexversion == 0x30B07F0


def test_marker_line_from_a_pty() -> None:
    parser = BootstrapParser()
    assert parser.receive_data(b"Password: \r\nTMG0 30800f0\r\nrest")
    assert parser.hexversion == 0x30800F0
    assert parser.remainder == b"rest"
    assert parser.output_lines() == ["Password: "]


def test_a_false_marker_is_skipped_and_kept_as_output() -> None:
    parser = BootstrapParser()
    assert not parser.receive_data(b"echo TMG0 not-hex\n")
    assert parser.receive_data(MARKER_LINE + AFTER)
    assert parser.hexversion == 0x30B07F0
    assert parser.remainder == AFTER
    assert parser.output_lines() == ["echo TMG0 not-hex"]


def test_undecodable_output_is_replaced() -> None:
    parser = BootstrapParser()
    assert not parser.receive_data(b"caf\xe9\n")
    assert parser.output_lines() == ["caf\ufffd"]


def test_long_output_keeps_the_last_lines() -> None:
    parser = BootstrapParser()
    lines = [b"line %05d" % i for i in range(5000)]
    for line in lines:
        assert not parser.receive_data(line + b"\n")
    kept = parser.output_lines()
    assert kept
    assert kept[-1] == "line 04999"
    assert len("\n".join(kept)) <= BootstrapParser.KEEP
    assert parser.receive_data(MARKER_LINE)
    assert parser.output_lines()[-1] == "line 04999"


def test_stage1_command_is_one_shell_safe_line() -> None:
    command = stage1_command()
    assert "\n" not in command
    assert "\r" not in command
    assert '"' not in command
    for special in ("$", "`", "\\", "!"):
        assert special not in command
    compile(command, "<stage1>", "exec")


def test_length_prefixed() -> None:
    assert length_prefixed(b"") == b"00000000"
    assert length_prefixed(b"abc") == b"00000003abc"
    assert length_prefixed(b"x" * 0x1234)[:8] == b"00001234"


def test_stage1_runs_inside_double_quotes_in_a_shell() -> None:
    # Stage 1 announces itself, reads a length-prefixed compressed stage 2 and runs it with
    # read_exact available to read what follows.
    stage2 = b'import os\nos.write(1, b"stage 2 got " + read_exact(5) + b"\\n")\n'
    stdin = length_prefixed(zlib.compress(stage2)) + b"hello"
    shell_line = 'exec "$0" -c "%s"' % stage1_command()
    result = subprocess.run(
        ["/bin/sh", "-c", shell_line, sys.executable],
        input=stdin,
        capture_output=True,
        timeout=PATIENCE,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    parser = BootstrapParser()
    assert parser.receive_data(result.stdout)
    assert parser.hexversion == sys.hexversion
    assert parser.remainder == b"stage 2 got hello\n"
    assert parser.output_lines() == []
    assert MARKER in result.stdout


def test_stage1_reports_a_connection_closed_during_bootstrap() -> None:
    result = subprocess.run(
        [sys.executable, "-c", stage1_command()],
        input=b"0000",
        capture_output=True,
        timeout=PATIENCE,
        check=False,
    )
    assert result.returncode != 0
    assert b"connection closed during bootstrap" in result.stderr
    assert result.stdout.startswith(MARKER)


def test_stage1_on_python_2_7_announces_its_version_and_exits_without_running_stage_2() -> None:
    python = (
        Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions/2.7.18/bin/python"
    )
    if not python.exists():
        skip_or_fail("no Python 2.7 at %s" % python)
    stage2 = b"def f(x: int) -> None: pass\n"  # Python 3 syntax: stage 2 must never be compiled
    result = subprocess.run(
        [str(python), "-c", stage1_command()],
        input=length_prefixed(zlib.compress(stage2)),
        capture_output=True,
        timeout=PATIENCE,
        check=False,
    )
    assert result.returncode == 1
    parser = BootstrapParser()
    assert parser.receive_data(result.stdout)
    assert parser.hexversion == 0x020712F0
    assert result.stderr == b"trimitogen needs Python 3.6 or newer\n"
