"""Fan-out at scale with real sshd: 200 targets on 127.0.0.2 ... 127.0.0.201.

OpenSSH's sshd listens on at most 16 addresses (MAX_LISTEN_SOCKS), so the fixture starts one
sshd per 16 addresses, all on one port with one host key, and writes an ssh_config that names
them (``Host 127.0.0.*``: the user, the key, a known_hosts file with one ``HostKeyAlias``) and an
Ansible INI inventory of the 200 hosts.  The tests open a group on the inventory's targets,
print the wall time, the master's RSS and its peak count of open fds, and assert only what
each target answered: the address its sshd saw it connect to.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

import trimitogen as tm
from tests import infra
from tests.infra import Users

COUNT = 200
ADDRESSES = ["127.0.0.%d" % n for n in range(2, 2 + COUNT)]
#: Addresses where nothing listens: connections to them are refused at once.
NOWHERE = ["127.0.1.%d" % n for n in range(2, 2 + COUNT // 5)]
PER_SSHD = 16  # OpenSSH's MAX_LISTEN_SOCKS
PY = "/usr/bin/python3"
#: The whole group, connection and call, must finish within this (the per-test timeout is 120).
GROUP_WAIT = 100.0


@dataclass(frozen=True)
class Fleet:
    port: int
    ssh_config: Path
    inventory: Path
    directory: Path


def _port_free_everywhere(port: int) -> bool:
    for address in ADDRESSES:
        with socket.socket() as probe:
            try:
                probe.bind((address, port))
            except OSError:
                return False
    return True


def _config(directory: Path, port: int, addresses: list[str], index: int) -> str:
    return "\n".join(
        [
            "Port %d" % port,
            *("ListenAddress %s" % address for address in addresses),
            "HostKey %s" % (directory / "host_key"),
            "PidFile %s" % (directory / ("sshd%d.pid" % index)),
            "AuthorizedKeysFile %s" % (directory / "authorized_keys"),
            "AllowUsers tmg-ssh",
            "UsePAM no",
            "StrictModes no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "MaxStartups 400",
            "MaxSessions 400",
            "LogLevel ERROR",
            "",
        ]
    )


@contextlib.contextmanager
def running_fleet(users: Users) -> Iterator[Fleet]:
    infra._require_root()
    tools = infra._require("sshd", "ssh", "ssh-keygen")
    created_privsep = False
    if not infra.PRIVSEP_DIR.is_dir():
        infra.PRIVSEP_DIR.mkdir(mode=0o755, parents=True)
        created_privsep = True
    directory = Path(tempfile.mkdtemp(prefix="tmg-fleet-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        os.chmod(directory, 0o755)
        host_public = infra._keygen(tools["ssh-keygen"], directory / "host_key", "tmg-fleet")
        client_public = infra._keygen(tools["ssh-keygen"], directory / "id_ed25519", "tmg")
        (directory / "authorized_keys").write_text(client_public + "\n")
        os.chmod(directory / "authorized_keys", 0o644)
        for _attempt in range(5):
            port = infra._free_port("127.0.0.2")
            if _port_free_everywhere(port):
                break
        else:
            raise RuntimeError("no port is free on all %d addresses" % COUNT)
        for index in range(math.ceil(COUNT / PER_SSHD)):
            addresses = ADDRESSES[index * PER_SSHD : (index + 1) * PER_SSHD]
            config = directory / ("sshd%d_config" % index)
            config.write_text(_config(directory, port, addresses, index))
            log = directory / ("sshd%d.log" % index)
            with open(log, "wb") as stderr:
                process = subprocess.Popen(
                    [tools["sshd"], "-D", "-e", "-f", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    start_new_session=True,
                )
            processes.append(process)
            if not infra._wait_for_banner(process, addresses[-1], port, log):
                raise RuntimeError("sshd exited at start-up: " + log.read_text(errors="replace"))
        (directory / "known_hosts").write_text("tmg-fleet %s\n" % host_public)
        ssh_config = directory / "ssh_config"
        ssh_config.write_text(
            "\n".join(
                [
                    "Host 127.0.0.* 127.0.1.*",
                    "    Port %d" % port,
                    "    User %s" % users.ssh.name,
                    "    IdentityFile %s" % (directory / "id_ed25519"),
                    "    IdentitiesOnly yes",
                    "    IdentityAgent none",
                    "    HostKeyAlias tmg-fleet",
                    "    UserKnownHostsFile %s" % (directory / "known_hosts"),
                    "    GlobalKnownHostsFile /dev/null",
                    "",
                ]
            )
        )
        inventory = directory / "fleet.ini"
        inventory.write_text(
            "[fleet]\n127.0.0.[2:%d]\n\n[nowhere]\n127.0.1.[2:%d]\n\n[all:vars]\n"
            "ansible_python_interpreter=%s\nansible_ssh_common_args='-F %s'\n"
            % (1 + COUNT, 1 + len(NOWHERE), PY, ssh_config)
        )
        yield Fleet(port, ssh_config, inventory, directory)
    finally:
        for process in processes:
            infra._stop(process)
        shutil.rmtree(directory, ignore_errors=True)
        if created_privsep:
            with contextlib.suppress(OSError):
                infra.PRIVSEP_DIR.rmdir()


@pytest.fixture(scope="module")
def fleet(users: Users) -> Iterator[Fleet]:
    with running_fleet(users) as made:
        yield made


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


async def fan_out(targets: list[tm.Target]) -> tuple[list[tm.Result[str | None]], str]:
    peak_fds = 0
    peak_rss = 0.0
    fds_before = len(os.listdir("/proc/self/fd"))
    rss_before = _rss_mib()

    async def watch() -> None:
        nonlocal peak_fds, peak_rss
        while True:
            peak_fds = max(peak_fds, len(os.listdir("/proc/self/fd")))
            peak_rss = max(peak_rss, _rss_mib())
            await trio.sleep(0.01)

    started = time.monotonic()
    with trio.fail_after(GROUP_WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            async with tm.open_group(targets, connect_timeout=60) as group:
                results = await group.call(os.getenv, "SSH_CONNECTION")
                answered = time.monotonic() - started
            nursery.cancel_scope.cancel()
    wall = time.monotonic() - started
    reachable = sum(1 for t in targets if t.name in ADDRESSES)
    figures = (
        "%d targets (%d reachable): all answered in %.2f s, closed at %.2f s; master RSS "
        "%.0f MiB before, peak %.0f MiB; open fds %d before, peak %d (%.2f per reachable target)"
        % (
            len(targets),
            reachable,
            answered,
            wall,
            rss_before,
            peak_rss,
            fds_before,
            peak_fds,
            (peak_fds - fds_before) / max(reachable, 1),
        )
    )
    print("\n" + figures)
    return results, figures


async def test_two_hundred_targets_answer(fleet: Fleet) -> None:
    targets = tm.load_inventory(fleet.inventory).targets("fleet")
    assert [t.name for t in targets] == ADDRESSES
    results, _figures = await fan_out(targets)
    failures = [(r.target.label, str(r.error)[:300]) for r in results if not r.ok]
    assert not failures
    for result in results:
        assert result.value is not None
        assert result.value.split()[2] == result.target.name


async def test_unreachable_fifth_fails_quickly_the_rest_answer(fleet: Fleet) -> None:
    inventory = tm.load_inventory(fleet.inventory)
    fleet_targets = inventory.targets("fleet")[: COUNT - len(NOWHERE)]
    targets = [*fleet_targets, *inventory.targets("nowhere")]
    # Interleave, so the refusals come amid the successes rather than after them.
    targets = [targets[n] for n in sorted(range(len(targets)), key=lambda n: (n % 5, n))]
    results, _figures = await fan_out(targets)
    by_name = {r.target.name: r for r in results}
    for address in NOWHERE:
        failed = by_name[address]
        assert failed.phase == "connect"
        assert failed.hop == 1
        assert isinstance(failed.error, tm.ConnectError)
        assert "connection was refused" in str(failed.error)
        # Refused at once, not after connect_timeout (60 s).
        assert failed.hop_seconds[0] < 60
    answered = [r for r in results if r.target.name in ADDRESSES]
    assert len(answered) == COUNT - len(NOWHERE)
    assert all(r.ok for r in answered), [str(r.error)[:300] for r in answered if not r.ok][:3]
    assert all(r.value and r.value.split()[2] == r.target.name for r in answered)
