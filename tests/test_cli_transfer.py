"""``trimitogen put`` and ``get``: the real console script copying files and trees to and from
several targets (local interpreters, and the loopback sshd), with progress and a summary."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import REPO, WAIT
from tests.infra import SshServer, run_on_pty
from tests.test_cli import PY, cli, console_script, ssh_target

__all__ = ["console_script"]  # the session fixture, shared with test_cli.py

LOCAL = "local://%s" % PY


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "payload.bin"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    path.chmod(0o640)
    os.utime(path, (1_600_000_000, 1_600_000_000))
    return path


def test_put_then_get_with_several_targets(
    console_script: str, payload: Path, tmp_path: Path
) -> None:
    remote = tmp_path / "remote" / "copy.bin"
    remote.parent.mkdir()
    put = cli(
        console_script,
        "put",
        "local://",
        LOCAL,
        "--progress",
        "lines",
        "--",
        str(payload),
        str(remote),
    )
    assert put.returncode == 0, put.stdout + put.stderr
    assert remote.read_bytes() == payload.read_bytes()
    assert (remote.stat().st_mode & 0o777, remote.stat().st_mtime) == (0o640, 1_600_000_000)
    assert put.stdout.splitlines()[0].split() == [
        "TARGET",
        "STATUS",
        "BYTES",
        "TIME",
        "RATE",
        "PATH",
    ]
    assert put.stdout.splitlines()[-1] == "2 ok, 0 failed"
    assert "sent 3.0 MiB in" in put.stderr
    got = tmp_path / "got"
    result = cli(console_script, "get", "local://", LOCAL, "--json", "--", str(remote), str(got))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["target"] for row in rows] == ["local://", LOCAL]
    assert {row["bytes"] for row in rows} == {payload.stat().st_size}
    for row, folder in zip(rows, ["local", "local____usr_bin_python3"], strict=True):
        copy = got / folder / "copy.bin"
        assert row["path"] == str(copy)
        assert copy.read_bytes() == payload.read_bytes()
    assert "2 ok, 0 failed" in result.stderr


def test_trees_with_r_and_a_single_target(console_script: str, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha")
    (tree / "sub" / "b.txt").write_text("beta")
    put = cli(console_script, "put", LOCAL, "--", str(tree), str(tmp_path / "there"))
    assert put.returncode == 0, put.stdout + put.stderr
    assert (tmp_path / "there" / "sub" / "b.txt").read_text() == "beta"
    back = cli(
        console_script, "get", "-r", LOCAL, "--", str(tmp_path / "there"), str(tmp_path / "back")
    )
    assert back.returncode == 0, back.stdout + back.stderr
    assert (tmp_path / "back" / "a.txt").read_text() == "alpha"
    assert " 9 B " in back.stdout  # "alpha" and "beta"


def test_a_failed_target_is_reported_and_the_others_still_copy(
    console_script: str, payload: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-dir" / "x"
    result = cli(
        console_script, "put", LOCAL, "--progress", "lines", "--", str(payload), str(missing)
    )
    assert result.returncode == 1
    assert "FAILED (call)" in result.stdout
    assert "put_file to %r" % str(missing) in result.stdout
    assert "call failed" in result.stderr
    assert "remote traceback" not in result.stderr  # one line per target
    assert not list(tmp_path.glob("**/*.part"))


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["put", LOCAL, "--", "only-one"], "give two paths after --"),
        (["get", LOCAL], "give two paths after --"),
        (["put", LOCAL, "--", "/nonexistent/file", "/tmp/x"], "no such local file"),
        (["put", "--", "a", "b"], "no targets"),
    ],
)
def test_transfer_usage_errors_exit_2(console_script: str, args: list[str], words: str) -> None:
    result = cli(console_script, *args)
    assert result.returncode == 2
    assert words in result.stderr


def test_put_and_get_over_loopback_ssh(
    console_script: str, sshd: SshServer, payload: Path, tmp_path: Path
) -> None:
    target = ssh_target(sshd)
    remote = "/tmp/tmg-cli-%d.bin" % os.getpid()
    try:
        put = cli(console_script, "put", target, "--", str(payload), remote)
        assert put.returncode == 0, put.stdout + put.stderr
        got = cli(console_script, "get", target, "--", remote, str(tmp_path / "back.bin"))
        assert got.returncode == 0, got.stdout + got.stderr
        assert (tmp_path / "back.bin").read_bytes() == payload.read_bytes()
    finally:
        if os.path.exists(remote):
            os.unlink(remote)


def test_a_terminal_gets_a_bar_with_bytes_and_speed(
    console_script: str, payload: Path, tmp_path: Path
) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200", TERM="xterm")
    argv = [console_script, "put", LOCAL, "--", str(payload), str(tmp_path / "tty.bin")]
    result = run_on_pty(argv, env=env, timeout=WAIT)
    text = result.transcript.decode("utf-8", "replace")
    assert result.returncode == 0, text
    assert "3.1/3.1 MB" in text  # rich's DownloadColumn
    assert "MB/s" in text
    assert "1 ok, 0 failed" in text
