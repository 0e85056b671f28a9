"""The ssh → sudo chain and the shared directory that several test modules use.

A module that uses :func:`ssh_sudo` marks its tests ``usefixtures("servers_first")`` (see
``tests/conftest.py``), so that the session's sshd starts before any test's leftover-process
check takes its snapshot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trimitogen as tm
from tests.infra import SshServer, Users
from tests.test_methods import SYSTEM_PYTHON, ssh_method


@asynccontextmanager
async def ssh_sudo(sshd: SshServer, users: Users) -> AsyncIterator[tm.Context]:
    """A context running as ``tmg-nopw``, reached by ssh as ``tmg-sudo`` and then sudo."""
    login = ssh_method(sshd, user=users.sudo.name, password=users.sudo.password)
    async with tm.open_context(login) as hop:
        method = tm.sudo(users.nopw.name, python=SYSTEM_PYTHON)
        async with tm.open_context(method, via=hop) as ctx:
            yield ctx


def shared_directory(tmp_path: Path) -> Path:
    """``tmp_path``, made writable by the throwaway users too (its parents traversable)."""
    tmp_path.chmod(0o777)
    for parent in tmp_path.parents:
        if parent == Path("/tmp"):
            break
        parent.chmod(parent.stat().st_mode | 0o711)
    return tmp_path
