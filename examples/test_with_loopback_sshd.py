"""Tests of remote code over a real loopback sshd, with trimitogen.testing (docs/testing.rst).

Run as root, in a suite whose top ``conftest.py`` says ``pytest_plugins = ["trimitogen.testing"]``
and whose pytest configuration has ``trio_mode = true``.  trimitogen's own suite runs these tests
from tests/test_testing_plugin.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager

import pytest
import trio

import trimitogen as tm
from trimitogen.testing import SshServer, Users, running_sshd

#: Other users cannot run an interpreter under /root (pyenv's): use the system's.
PYTHON = "/usr/bin/python3"


def login(
    server: SshServer, user: str, host: str | None = None
) -> AbstractAsyncContextManager[tm.Context]:
    """A context of ``user`` on ``host`` (default: the server's first address), by key."""
    method = tm.ssh(
        host or server.host,
        port=server.port,
        username=user,
        ssh_args=server.ssh_args(),  # hermetic: only this server's key and known_hosts
        python=PYTHON,
    )
    return tm.open_context(method)


async def test_ssh_login_by_key(trimitogen_sshd: SshServer, trimitogen_users: Users) -> None:
    with trio.fail_after(60):
        async with login(trimitogen_sshd, trimitogen_users.ssh.name) as ctx:
            assert await ctx.call(os.getuid) == trimitogen_users.ssh.uid


async def test_sudo_through_ssh(trimitogen_sshd: SshServer, trimitogen_users: Users) -> None:
    sudo = tm.sudo(trimitogen_users.nopw.name, python=PYTHON)  # tmg-sudo needs no password
    with trio.fail_after(60):
        async with (
            login(trimitogen_sshd, trimitogen_users.sudo.name) as host,
            tm.open_context(sudo, via=host) as ctx,
        ):
            assert await ctx.call(os.getuid) == trimitogen_users.nopw.uid


@pytest.fixture(scope="module")
def three_hosts(trimitogen_users: Users) -> Iterator[SshServer]:
    """One more sshd, listening on three loopback addresses: three 'hosts' for fan-out."""
    with running_sshd(trimitogen_users, ["127.0.0.2", "127.0.0.3", "127.0.0.4"]) as server:
        yield server


async def test_each_host_answers(three_hosts: SshServer, trimitogen_users: Users) -> None:
    seen: dict[str, int] = {}

    async def one(host: str) -> None:
        async with login(three_hosts, trimitogen_users.ssh.name, host) as ctx:
            seen[host] = await ctx.call(os.getuid)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for host in three_hosts.hosts:
                nursery.start_soon(one, host)
    assert seen == dict.fromkeys(three_hosts.hosts, trimitogen_users.ssh.uid)
