"""The real ``trimitogen`` console script, in a subprocess, against local and loopback-ssh targets.

The script is installed from this checkout's pyproject.toml into a temporary prefix once per
session (pip generates it from ``[project.scripts]``), and runs with this checkout first on
PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import trimitogen as tm
from tests.conftest import REPO, WAIT, skip_or_fail
from tests.infra import SshServer, run_on_pty

PY = "/usr/bin/python3"
MISSING = "local:///nonexistent/python3"

JOB = '''\
"""A module only the master has: the targets get it over the wire."""
import sys


def greet(name, times=1, *, punctuation="!"):
    return ("hello %s" % name) * times + punctuation


def version():
    return list(sys.version_info[:2])


def explode(text):
    raise ValueError(text)
'''


@pytest.fixture(scope="session")
def console_script() -> Iterator[str]:
    """The console script pip generates from this checkout's pyproject.toml."""
    with tempfile.TemporaryDirectory(prefix="tmg-cli-") as scratch:
        source = Path(scratch) / "src"
        source.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(REPO / name, source / name)
        shutil.copytree(REPO / "trimitogen", source / "trimitogen")
        prefix = Path(scratch) / "prefix"
        # --ignore-installed: with --prefix alone, pip first uninstalls the checkout's own
        # install from this interpreter.
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed"]
        result = subprocess.run(
            [*pip, "--disable-pip-version-check", "--prefix", str(prefix), str(source)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        script = prefix / "bin" / "trimitogen"
        if result.returncode != 0 or not script.exists():
            skip_or_fail("pip could not install the console script: %s" % result.stderr[-2000:])
        yield str(script)


def cli(
    script: str, *args: str, cwd: Path | None = None, module: bool = False
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "trimitogen"] if module else [script]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [*argv, *args], capture_output=True, text=True, timeout=WAIT, cwd=cwd, env=env
    )


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    (tmp_path / "tmg_job.py").write_text(JOB)
    return tmp_path


@pytest.mark.parametrize("command", [[], ["check"], ["run"]])
def test_help_everywhere(console_script: str, command: list[str]) -> None:
    result = cli(console_script, *command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: trimitogen" in result.stdout
    assert "ssh://[user@]host[:port]" in result.stdout
    if command == ["run"]:
        assert "-- module:function [ARG ...]" in result.stdout
        assert "--max-connecting N" in result.stdout


def test_python_dash_m_is_the_same_command(console_script: str) -> None:
    result = cli(console_script, "--version", module=True)
    assert result.returncode == 0
    assert result.stdout.strip() == "trimitogen %s" % tm.__version__


def test_check_local_targets(console_script: str) -> None:
    result = cli(console_script, "check", "local://%s" % PY, "local://%s/fork://" % PY)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "TARGET",
        "STATUS",
        "START-UP",
        "FIRST",
        "CALL",
        "ROUND",
        "TRIP",
        "PYTHON",
    ]
    system = subprocess.run(
        [PY, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert lines[1].startswith("local://%s " % PY)
    assert " ok " in lines[1]
    assert lines[1].endswith("%s %s" % (system, PY))
    assert " local " in lines[2]
    assert " + fork " in lines[2]
    assert lines[-1] == "2 ok, 0 failed"
    assert "[2/2]" in result.stderr


def test_check_reports_a_failed_target_and_exits_1(console_script: str) -> None:
    result = cli(console_script, "check", "local://%s" % PY, MISSING)
    assert result.returncode == 1
    row = next(line for line in result.stdout.splitlines() if line.startswith(MISSING))
    assert "FAILED (connect)" in row
    assert "phase: spawn" in row
    assert "%s: connect failed at hop 1 (local)" % MISSING in result.stderr
    assert result.stdout.splitlines()[-1] == "1 ok, 1 failed"


def test_run_prints_a_table_and_exits_1_when_one_target_fails(
    console_script: str, job_dir: Path
) -> None:
    result = cli(
        console_script,
        "run",
        "local://%s" % PY,
        MISSING,
        "local://%s/fork://" % PY,
        "--",
        "tmg_job:greet",
        "'you'",
        "2",
        "punctuation='?'",
        cwd=job_dir,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TARGET", "STATUS", "CONNECT", "CALL", "RESULT"]
    # In the order given, whatever order they answered in.
    assert [line.split()[0] for line in lines[1:4]] == [
        "local://%s" % PY,
        MISSING,
        "local://%s/fork://" % PY,
    ]
    assert lines[1].endswith("'hello youhello you?'")
    assert "FAILED (connect)" in lines[2]
    assert "ConnectError" in lines[2]
    assert lines[3].endswith("'hello youhello you?'")
    assert lines[-1] == "2 ok, 1 failed"
    assert result.stderr.count("ok in") == 2


def test_run_json_gives_one_object_per_target(console_script: str, job_dir: Path) -> None:
    result = cli(
        console_script,
        "run",
        "--json",
        "local://%s" % PY,
        "local://%s" % PY,
        "--",
        "tmg_job:explode",
        "boom",
        cwd=job_dir,
    )
    assert result.returncode == 1
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert row["ok"] is False
        assert row["phase"] == "call"
        assert row["error_type"] == "CallError"
        assert "boom" in row["error"]
        assert row["connect_seconds"] > 0
    assert "0 ok, 2 failed" in result.stderr

    result = cli(
        console_script, "run", "--json", "local://%s" % PY, "--", "tmg_job:version", cwd=job_dir
    )
    assert result.returncode == 0, result.stderr
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["ok"] is True
    assert row["target"] == "local://%s" % PY
    assert row["value"][0] == 3


def test_run_on_an_inventory_with_a_limit(console_script: str, job_dir: Path) -> None:
    (job_dir / "hosts.ini").write_text(
        "[app]\n"
        "app[1:3] ansible_connection=local ansible_python_interpreter=%s\n"
        "[other]\n"
        "lonely ansible_connection=local\n" % PY
    )
    result = cli(
        console_script,
        "run",
        "-i",
        "hosts.ini",
        "-l",
        "app:!app2",
        "--json",
        "--",
        "tmg_job:greet",
        "x",
        cwd=job_dir,
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["target"] for row in rows] == ["app1", "app3"]
    assert {row["value"] for row in rows} == {"hello x!"}


def test_python_option_sets_the_interpreter(console_script: str, job_dir: Path) -> None:
    result = cli(
        console_script, "run", "--json", "--python", PY, "local://", "--", "sys:getrecursionlimit"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["target_string"] == "local://%s" % PY


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["run", "local://"], "give the function after --"),
        (["run", "local://", "--", "nocolon"], "is not module:function"),
        (["run", "local://", "--", "no_such_module_x:f"], "cannot import 'no_such_module_x'"),
        (["run", "local://", "--", "os:no_such_fn"], "os has no 'no_such_fn'"),
        (["run", "local://", "--", "os:getpid", "[1,"], "argument '[1,' is not a Python literal"),
        (["run", "local://", "--", "os:getpid", "a=1", "2"], "positional argument '2' after"),
        (["run", "ssh://h:0", "--", "os:getpid"], "hop 1 ('ssh://h:0'): port '0'"),
        (["run", "--", "os:getpid"], "no targets"),
        (["run", "-l", "web", "local://", "--", "os:getpid"], "--limit selects inventory hosts"),
        (["run", "-i", "/nonexistent/inv", "--", "os:getpid"], "inventory /nonexistent/inv"),
        (["check", "local://", "--", "os:getpid"], "check takes no function"),
        (["check", "--max-connecting", "0", "local://"], "--max-connecting must be at least 1"),
    ],
)
def test_usage_errors_exit_2_and_say_what_is_wrong(
    console_script: str, args: list[str], words: str
) -> None:
    result = cli(console_script, *args)
    assert result.returncode == 2
    assert words in result.stderr
    assert result.stdout == ""


def ssh_target(sshd: SshServer) -> str:
    return str(
        tm.Target(
            (
                tm.ssh(
                    sshd.host,
                    port=sshd.port,
                    username=sshd.user,
                    ssh_args=sshd.ssh_args(),
                    python=PY,
                ),
            )
        )
    )


def refused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_check_and_run_over_loopback_ssh(
    console_script: str, sshd: SshServer, job_dir: Path
) -> None:
    good = ssh_target(sshd)
    bad = "ssh://127.0.0.1:%d?ssh_args=-F%%20/dev/null" % refused_port()
    result = cli(console_script, "check", good, bad)
    assert result.returncode == 1
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:-1]}
    assert " ok " in rows[good]
    assert rows[good].endswith(PY)
    assert " ssh " in rows[good]
    assert "FAILED (connect)" in rows[bad]
    assert "%s: connect failed at hop 1 (ssh)" % bad in result.stderr
    assert "connection was refused" in result.stderr

    chain = good + "/sudo://root"
    result = cli(
        console_script, "run", "--json", good, chain, "--", "tmg_job:greet", "ssh", cwd=job_dir
    )
    assert result.returncode == 1  # tmg-ssh may not sudo
    rows_json = {row["target"]: row for row in map(json.loads, result.stdout.splitlines())}
    assert rows_json[good]["value"] == "hello ssh!"
    assert rows_json[chain]["phase"] == "connect"
    assert rows_json[chain]["hop"] == 2


def test_a_terminal_gets_a_live_display_and_a_table(console_script: str, job_dir: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200", TERM="xterm")
    argv = [console_script, "run", "local://%s" % PY, MISSING, "--", "tmg_job:greet", "tty"]
    old = Path.cwd()
    os.chdir(job_dir)
    try:
        result = run_on_pty(argv, env=env, timeout=WAIT)
    finally:
        os.chdir(old)
    text = result.transcript.decode("utf-8", "replace")
    assert result.returncode == 1
    assert "TARGET" in text
    assert "'hello tty!'" in text
    assert "connect failed at hop 1 (local)" in text
    assert "1 ok, 1 failed" in text
    # rich draws the table with box characters on a terminal.
    assert "━" in text or "─" in text


def test_arguments_are_literals_or_plain_words() -> None:
    from trimitogen.cli import UsageError, parse_arguments

    words = ["/tmp", "web-1", "3", "'s'", "-2", "[1, (2, b'x')]", "x=/a", "y={'k': None}"]
    assert parse_arguments(words) == (
        ["/tmp", "web-1", 3, "s", -2, [1, (2, b"x")]],
        {"x": "/a", "y": {"k": None}},
    )
    for bad in ["[1,", "1.2.3", '"abc', "{'k'"]:
        with pytest.raises(UsageError, match="is not a Python literal"):
            parse_arguments([bad])
    # Never evaluated: a call is not a literal.
    with pytest.raises(UsageError, match="is not a Python literal"):
        parse_arguments(["(__import__('os').system('true'))"])
