"""Shared fixtures.  The rules every test here follows:

1. Real parts, not mocks: real child interpreters (every CPython 3.8+ on the machine), real fds.
2. Anything that touches a process or an fd runs under a timeout: pytest-timeout for every test
   (``timeout`` in pyproject.toml) and ``trio.fail_after`` around waits inside async tests.
3. Nothing is left behind: the autouse ``no_leftover_processes`` fixture fails a test that leaves a
   child process, and ``no_leaked_fds`` does the same for file descriptors.
4. No timing assertions; where time matters, use the ``autojump_clock`` fixture.
5. Loopback only.  A test whose real part is missing skips with the reason, except under
   ``CI=true``, where such a skip is a failure.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import trio

import trimitogen as tm
from trimitogen.testing import IN_CI as IN_CI
from trimitogen.testing import skip_or_fail as skip_or_fail

REPO = Path(__file__).resolve().parent.parent

# The context fixtures, and the real sshd and throwaway users (``sshd``, ``users``: tests/infra.py).
pytest_plugins = ["trimitogen.testing", "tests.infra"]

#: Bound for any single wait inside an async test.
WAIT = 60.0


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Field 4 (ppid) follows the parenthesised command name, which may contain spaces.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


#: What every child interpreter's command line contains (the bootstrap's stage 1).
_STAGE1_MARK = b"exec(zlib.decompress(binascii.a2b_base64("


def _runtime_processes() -> set[int]:
    """Every process on the machine running a trimitogen child, wherever it was reparented."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    if _STAGE1_MARK in f.read():
                        found.add(int(entry))
            except OSError:
                continue
    return found


@pytest.fixture(autouse=True, scope="session")
def no_orphaned_children() -> Iterator[None]:
    """After the suite, no child of any hop may be left, even one reparented to init."""
    before = _runtime_processes()
    yield
    deadline = time.monotonic() + 15
    left = _runtime_processes() - before
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _runtime_processes() - before
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, "child interpreters outlived the test suite: %s" % sorted(left)


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    before = set(_children_of(os.getpid()))
    yield
    left = set(_children_of(os.getpid())) - before
    assert not left, "the test left child processes behind: %s" % sorted(left)


@pytest.fixture(params=["local", "ssh-sudo"])
async def where(request: pytest.FixtureRequest) -> AsyncIterator[tm.Context]:
    """A local context, then the end of an ssh → sudo chain (tests/chains.py).  A module that
    uses it marks its tests ``usefixtures("servers_first")``; one may override it."""
    from tests.chains import ssh_sudo

    with trio.fail_after(WAIT):
        if request.param == "ssh-sudo":
            chain = ssh_sudo(request.getfixturevalue("sshd"), request.getfixturevalue("users"))
            async with chain as ctx:
                yield ctx
            return
        async with tm.open_context(tm.local()) as ctx:
            yield ctx


@pytest.fixture(scope="module")
def servers_first(request: pytest.FixtureRequest) -> None:
    """The session's sshd and throwaway users, started before the module's first test: a test
    that starts them itself would see the sshd as a process it left behind."""
    request.getfixturevalue("sshd")
    request.getfixturevalue("users")


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@pytest.fixture
def no_leaked_fds() -> Iterator[None]:
    before = _open_fds()
    yield
    # The listing itself briefly opens an fd; compare against what was open before.
    leaked = {fd for fd in _open_fds() - before if os.path.exists("/proc/self/fd/%d" % fd)}
    details = {fd: os.readlink("/proc/self/fd/%d" % fd) for fd in leaked}
    assert not leaked, "the test leaked fds: %s" % details


MasterOnly = Callable[[dict[str, str]], Path]


@pytest.fixture
def master_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MasterOnly]:
    """Write modules where only the master looks (``files``: relative path -> source).

    Returns the directory, which is put first on the master's sys.path; children do not see it,
    so they get these modules over the wire.  Whatever was imported from it is forgotten after
    the test, so the next test's copy is imported afresh.
    """
    root = tmp_path / "master_only"
    tops: set[str] = set()

    def install(files: dict[str, str]) -> Path:
        for rel, text in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
            tops.add(rel.split("/")[0].removesuffix(".py"))
        monkeypatch.syspath_prepend(str(root))
        return root

    yield install
    for name in [m for m in sys.modules if m.split(".")[0] in tops]:
        del sys.modules[name]


@pytest.fixture
async def ctx(no_leaked_fds: None) -> AsyncIterator[tm.Context]:
    """A local context on the master's own interpreter.

    Test helpers (``tests.remote_helpers``) reach it by import over the wire.
    """
    with trio.fail_after(WAIT):
        async with tm.open_context(tm.local(), name="test") as context:
            yield context


def discover_interpreters(oldest: tuple[int, int] = (3, 8)) -> dict[str, str]:
    """Every CPython from ``oldest`` up on this machine: pyenv's versions and the system's python3.

    3.6 and 3.7 children run the runtime too (tests/test_versions.py), but the shared test
    helpers need 3.8, so other tests ask for that by default.
    """
    found: dict[str, str] = {}
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if pyenv_root.is_dir():
        for entry in sorted(pyenv_root.iterdir()):
            parts = entry.name.split(".")
            if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
                continue
            if (int(parts[0]), int(parts[1])) < oldest:
                continue
            exe = entry / "bin" / "python3"
            if exe.exists():
                found["pyenv-" + entry.name] = str(exe)
    for system in ("/usr/bin/python3",):
        if os.path.exists(system):
            found["system-" + os.path.basename(os.path.realpath(system))] = system
    found.setdefault("master", sys.executable)
    return found
