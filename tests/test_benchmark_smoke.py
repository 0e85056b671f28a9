"""Smoke test: benchmarks/compare.py runs and prints trimitogen's rows (timings not checked).

The local and import sections run, and bytestream and files at a tiny size over the session's
sshd; the ssh, sudo and hop sections need root, throwaway users and an sshd of their own, and take
longer (tests/test_methods.py covers those methods).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.infra import SshServer, Users

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


@pytest.mark.usefixtures("servers_first")
def test_bytestream_and_files_sections_run(sshd: SshServer, users: Users, tmp_path: Path) -> None:
    """Both sections at a tiny size, pinned, over the session's own sshd and users (a second
    provisioning would wait for this session's)."""
    remote = {
        "host": sshd.host,
        "port": sshd.port,
        "identity_file": str(sshd.identity_file),
        "ssh_args": sshd.ssh_args(),
        "ssh_user": users.ssh.name,
        "ssh_uid": users.ssh.uid,
        "hop_user": users.sudo.name,
        "sudo_user": users.nopw.name,
        "sudo_uid": users.nopw.uid,
    }
    remote_json = tmp_path / "remote.json"
    remote_json.write_text(json.dumps(remote))
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--pin",
            "--only",
            "trimitogen",
            "--sections",
            "bytestream,files",
            "--remote-json",
            str(remote_json),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
        env={**os.environ, "TMG_BENCH_STREAM_MIB": "2", "TMG_BENCH_FILE_MIB": "2"},
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    # bytestream: MiB/s each way for the floor, direct and via=local
    for label in ("floor (raw pipe)", "trimitogen", "trimitogen, via=local"):
        assert _numeric_rows(proc.stdout, label, 2), output
    assert "2 MiB each way" in proc.stdout, output
    # files: put and get MiB/s for trimitogen and every peer, locally and over ssh
    for label in ("local: trimitogen", "local: cp -p", "ssh: trimitogen", "ssh: rsync -tp"):
        assert _numeric_rows(proc.stdout, label, 2), output
    assert _numeric_rows(proc.stdout, "ssh: scp -O -p", 2), output
    assert "put_file / get_file of 2 MiB" in proc.stdout, output
    assert "could not be measured" not in output, output
    assert not list(Path(tempfile.gettempdir()).glob("trimitogen-bench-files-*")), "left behind"


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
