"""ssh, sudo and su with real tools, chains of contexts (via=), and faults across hops.

The sshd on 127.0.0.1 and the throwaway users come from trimitogen.testing.  Other users cannot run
pyenv's interpreters (they live under root's home), so every context that runs as another user
uses the system's /usr/bin/python3.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import trimitogen as tm
from tests import remote_helpers as rh
from tests.conftest import REPO, WAIT, MasterOnly
from tests.infra import SshServer, Users

SYSTEM_PYTHON = "/usr/bin/python3"


def ssh_method(
    sshd: SshServer,
    *,
    user: str | None = None,
    password: str | None = None,
    known_hosts: Path | None = None,
    check_host_keys: tm._methods.HostKeyPolicy = "enforce",
) -> tm._methods.Ssh:
    use_key = password is None
    return tm.ssh(
        sshd.host,
        port=sshd.port,
        username=user or sshd.user,
        password=password,
        check_host_keys=check_host_keys,
        ssh_args=sshd.ssh_args(known_hosts, use_key=use_key),
        python=SYSTEM_PYTHON,
    )


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ")[1].startswith("Z")
    except OSError:
        return True


async def wait_until_gone(*pids: int) -> None:
    with trio.fail_after(WAIT):
        while not all(process_gone(pid) for pid in pids):
            await trio.sleep(0.05)


@asynccontextmanager
async def bounded(method: tm._methods._Method, **kwargs: object) -> AsyncIterator[tm.Context]:
    with trio.fail_after(WAIT):
        async with tm.open_context(method, **kwargs) as ctx:  # type: ignore[arg-type]
            yield ctx


# -- ssh ----------------------------------------------------------------------------------------
async def test_ssh_with_key(sshd: SshServer, users: Users) -> None:
    async with bounded(ssh_method(sshd)) as ctx:
        assert await ctx.call(os.getuid) == users.ssh.uid
        assert await ctx.call(rh.getppid) != os.getpid()
        assert await ctx.call(rh.echo, {"k": [1, 2j]}) == {"k": [1, 2j]}
        assert ctx.name.startswith("ssh.")


async def test_ssh_with_password(sshd: SshServer, users: Users) -> None:
    async with bounded(ssh_method(sshd, password=users.ssh.password)) as ctx:
        assert await ctx.call(os.getuid) == users.ssh.uid


async def test_ssh_wrong_password_fails_fast(sshd: SshServer) -> None:
    method = ssh_method(sshd, password="not the password")
    with trio.fail_after(WAIT), pytest.raises(tm.PasswordError) as info:
        async with tm.open_context(method, connect_timeout=600):
            pass
    text = str(info.value)
    assert "phase: authentication" in text
    assert "ssh to tmg-ssh@127.0.0.1" in text
    assert "Permission denied" in text


async def test_ssh_refused_port_says_so(sshd: SshServer) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    method = tm.ssh("127.0.0.1", port=port, ssh_args=["-F", "/dev/null"], python=SYSTEM_PYTHON)
    with trio.fail_after(WAIT), pytest.raises(tm.ConnectError, match="connection was refused"):
        async with tm.open_context(method):
            pass


async def test_host_key_enforce_refuses_unknown_and_changed(sshd: SshServer) -> None:
    for known_hosts in (sshd.known_hosts_empty, sshd.known_hosts_wrong):
        method = ssh_method(sshd, known_hosts=known_hosts)
        with trio.fail_after(WAIT), pytest.raises(tm.HostKeyError) as info:
            async with tm.open_context(method):
                pass
        assert "phase: host key" in str(info.value)


async def test_host_key_accept_records_new_refuses_changed(sshd: SshServer, tmp_path: Path) -> None:
    fresh = sshd.new_known_hosts(tmp_path)
    async with bounded(ssh_method(sshd, known_hosts=fresh, check_host_keys="accept")) as ctx:
        assert await ctx.call(rh.echo, 1) == 1
    assert sshd.host_public_key.split()[1] in fresh.read_text()
    method = ssh_method(sshd, known_hosts=sshd.known_hosts_wrong, check_host_keys="accept")
    with trio.fail_after(WAIT), pytest.raises(tm.HostKeyError, match="CHANGED"):
        async with tm.open_context(method):
            pass


async def test_host_key_ignore_connects_to_anything(sshd: SshServer) -> None:
    method = ssh_method(sshd, known_hosts=sshd.known_hosts_wrong, check_host_keys="ignore")
    async with bounded(method) as ctx:
        assert await ctx.call(rh.echo, "ok") == "ok"


# -- sudo and su ----------------------------------------------------------------------------------
async def test_sudo_without_password(users: Users) -> None:
    async with bounded(tm.sudo(users.nopw.name)) as ctx:
        assert await ctx.call(os.getuid) == users.nopw.uid
        assert await ctx.call(rh.echo, b"data") == b"data"


async def test_sudo_with_password_and_su_with_password(sshd: SshServer, users: Users) -> None:
    login = ssh_method(sshd, user=users.sudo.name, password=users.sudo.password)
    async with bounded(login) as as_sudoer:
        assert await as_sudoer.call(os.getuid) == users.sudo.uid
        method = tm.sudo(users.target.name, password=users.sudo.password)
        async with bounded(method, via=as_sudoer) as target:
            assert await target.call(os.getuid) == users.target.uid
        async with bounded(tm.sudo(users.nopw.name), via=as_sudoer) as nopw:
            assert await nopw.call(os.getuid) == users.nopw.uid
        async with bounded(tm.su(users.su.name, password=users.su.password), via=as_sudoer) as su:
            assert await su.call(os.getuid) == users.su.uid
            assert await su.call(rh.echo, [1, "x"]) == [1, "x"]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda u: tm.sudo(u.target.name, password="wrong"), "sudo to tmg-target"),
        (lambda u: tm.sudo(u.target.name), "none was given"),
        (lambda u: tm.su(u.su.name, password="wrong"), "su to tmg-su"),
    ],
    ids=["sudo-wrong", "sudo-missing", "su-wrong"],
)
async def test_wrong_or_missing_passwords(
    sshd: SshServer, users: Users, make: object, match: str
) -> None:
    login = ssh_method(sshd, user=users.sudo.name, password=users.sudo.password)
    async with bounded(login, name="sudoer") as as_sudoer:
        method = make(users)  # type: ignore[operator]
        with trio.fail_after(WAIT), pytest.raises(tm.PasswordError) as info:
            async with tm.open_context(method, via=as_sudoer, connect_timeout=600):
                pass
        text = str(info.value)
        assert match in text
        assert "started by 'sudoer'" in text
        # The intermediate is still usable.
        assert await as_sudoer.call(rh.echo, 1) == 1


# -- chains ---------------------------------------------------------------------------------------
CHAIN_PACKAGE = {
    "chainpkg/__init__.py": "from .core import where\n",
    "chainpkg/core.py": textwrap.dedent(
        """
        import getpass
        import os
        from . import util

        def where():
            return (getpass.getuser(), os.getuid(), util.hop_label(), __file__)
        """
    ),
    "chainpkg/util.py": "def hop_label():\n    return 'three hops down'\n",
}


async def test_three_hop_chain_calls_master_only_package(
    sshd: SshServer, users: Users, master_only: MasterOnly
) -> None:
    master_only(CHAIN_PACKAGE)
    import chainpkg  # type: ignore[import-not-found]

    async with bounded(tm.local(), name="hop1") as hop1:
        login = ssh_method(sshd, user=users.sudo.name, password=users.sudo.password)
        async with bounded(login, via=hop1, name="hop2") as hop2:
            method = tm.sudo(users.target.name, password=users.sudo.password)
            async with bounded(method, via=hop2, name="hop3") as hop3:
                user, uid, label, origin = await hop3.call(chainpkg.where)
                assert (user, uid) == (users.target.name, users.target.uid)
                assert label == "three hops down"
                assert origin.startswith("master:")
                assert await hop2.call(os.getuid) == users.sudo.uid
                pids = [hop1.pid, hop2.pid, hop3.pid]
        # hop1 fetched the package once for everything below it.
        assert hop1.import_stats.requests >= 1
        assert hop1.import_stats.modules_sent == 3
    await wait_until_gone(*[pid for pid in pids if pid is not None])


async def test_ten_grandchildren_cost_one_transfer_per_module(
    master_only: MasterOnly,
) -> None:
    master_only(CHAIN_PACKAGE)
    import chainpkg

    async with bounded(tm.local(), name="middle") as middle:
        for i in range(10):
            async with bounded(tm.local(), via=middle, name="leaf%d" % i) as leaf:
                assert (await leaf.call(chainpkg.where))[2] == "three hops down"
                assert leaf.import_stats.requests == 0
        assert middle.import_stats.modules_sent == 3
        assert middle.import_stats.requests <= 2


async def test_leaving_a_block_ends_everything_below(no_leaked_fds: None) -> None:
    async with bounded(tm.local(), name="top") as top:
        async with (
            bounded(tm.local(), via=top, name="mid") as mid,
            bounded(tm.local(), via=mid, name="low") as low,
        ):
            pids = [mid.pid, low.pid]
            assert await low.call(rh.getppid) == mid.pid
        await wait_until_gone(*[p for p in pids if p is not None])
        with pytest.raises(tm.ChannelError, match="shut down"):
            await low.call(rh.echo, 1)
        assert await top.call(rh.echo, "top lives") == "top lives"


async def test_an_intermediate_reaps_its_children_before_it_exits(no_leaked_fds: None) -> None:
    """Its children's streams are keep-alive sides: shutting the intermediate down waits until
    each child is reaped and reported gone with its own exit status."""
    async with bounded(tm.local(), name="top") as top, bounded(tm.local(), via=top) as low:
        assert low.pid is not None
        await top.shutdown()
        reason = low.statistics().gone_reason
        assert reason is not None
        assert "its process" in reason, reason
        assert "above it is gone" not in reason, reason
        await wait_until_gone(low.pid)


async def test_killing_an_intermediate_fails_calls_below(no_leaked_fds: None) -> None:
    async with bounded(tm.local(), name="top") as top:
        async with (
            bounded(tm.local(), via=top, name="mid") as mid,
            bounded(tm.local(), via=mid, name="low") as low,
        ):
            assert mid.pid is not None
            assert low.pid is not None
            async with trio.open_nursery() as nursery:
                failures: list[BaseException] = []

                async def busy_call() -> None:
                    try:
                        await low.call(rh.sleep, 60)
                    except tm.ChannelError as exc:
                        failures.append(exc)

                nursery.start_soon(busy_call)
                await trio.sleep(0.2)
                os.kill(mid.pid, signal.SIGKILL)
                with trio.fail_after(WAIT):
                    while not failures:
                        await trio.sleep(0.01)
            assert "mid" in str(failures[0])
            with pytest.raises(tm.ChannelError):
                await low.call(rh.echo, 1)
            await wait_until_gone(low.pid)
        assert await top.call(rh.echo, "still here") == "still here"


def test_master_killed_leaves_nothing_running(sshd: SshServer, users: Users) -> None:
    script = textwrap.dedent(
        """
        import sys, trio
        import trimitogen as tm

        async def main():
            args = sys.argv[1:]
            port, password = int(args[0]), args[1]
            ssh_args = args[2:]
            async with tm.open_context(tm.local()) as a:
                login = tm.ssh("127.0.0.1", port=port, username="tmg-sudo", password=password,
                               ssh_args=ssh_args, python="/usr/bin/python3")
                async with tm.open_context(login, via=a) as b:
                    async with tm.open_context(tm.sudo("tmg-nopw"), via=b) as c:
                        print(a.pid, b.pid, c.pid, flush=True)
                        await trio.sleep(600)

        trio.run(main)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    argv = [sys.executable, "-c", script, str(sshd.port), users.sudo.password]
    argv += sshd.ssh_args(use_key=False)
    with subprocess.Popen(argv, stdout=subprocess.PIPE, env=env, text=True) as master:
        assert master.stdout is not None
        pids = [int(p) for p in master.stdout.readline().split()]
        assert len(pids) == 3
        assert [pwd.getpwuid(os.stat("/proc/%d" % p).st_uid).pw_name for p in pids] == [
            "root",
            "tmg-sudo",
            "tmg-nopw",
        ]
        master.kill()
        master.wait(timeout=WAIT)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and not all(process_gone(p) for p in pids):
        time.sleep(0.05)
    left = [p for p in pids if not process_gone(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "processes outlived their killed master: %s" % left


async def test_starting_from_a_dead_context_is_a_connect_error(no_leaked_fds: None) -> None:
    async with bounded(tm.local(), name="gone") as gone:
        await gone.shutdown()
        with pytest.raises(tm.ConnectError, match="the context to start it from is gone"):
            async with tm.open_context(tm.local(), via=gone):
                pass
