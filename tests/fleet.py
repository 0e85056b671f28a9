"""Many sshds on the loopback network, for fan-out tests and benchmarks (root only).

OpenSSH's sshd listens on at most 16 addresses (MAX_LISTEN_SOCKS), so :func:`running_fleet`
starts one sshd per 16 addresses from 127.0.0.2 up, all on one port with one host key, and
writes an ssh_config that names them (``Host 127.0.0.*``: the user, the key, a known_hosts file
with one ``HostKeyAlias``) and an Ansible INI inventory of the hosts.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests import infra
from tests.infra import Users

COUNT = 200
PER_SSHD = 16  # OpenSSH's MAX_LISTEN_SOCKS
PY = "/usr/bin/python3"


def fleet_addresses(count: int) -> list[str]:
    if not 0 < count <= 250:
        raise ValueError("between 1 and 250 addresses, not %d" % count)
    return ["127.0.0.%d" % n for n in range(2, 2 + count)]


def nowhere_addresses(count: int) -> list[str]:
    return ["127.0.1.%d" % n for n in range(2, 2 + max(count // 5, 1))]


@dataclass(frozen=True)
class Fleet:
    port: int
    ssh_config: Path
    inventory: Path
    directory: Path
    addresses: tuple[str, ...]  #: where an sshd listens
    nowhere: tuple[str, ...]  #: where nothing listens: connections are refused at once


def _port_free_everywhere(port: int, addresses: list[str]) -> bool:
    for address in addresses:
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
def running_fleet(users: Users, count: int = COUNT) -> Iterator[Fleet]:
    """One sshd per 16 of ``count`` addresses from 127.0.0.2 up, an ssh_config and an inventory
    (groups ``fleet`` and ``nowhere``, a fifth as many addresses on 127.0.1.x)."""
    addresses = fleet_addresses(count)
    nowhere = nowhere_addresses(count)
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
            if _port_free_everywhere(port, addresses):
                break
        else:
            raise RuntimeError("no port is free on all %d addresses" % count)
        for index in range(math.ceil(count / PER_SSHD)):
            group = addresses[index * PER_SSHD : (index + 1) * PER_SSHD]
            config = directory / ("sshd%d_config" % index)
            config.write_text(_config(directory, port, group, index))
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
            if not infra._wait_for_banner(process, group[-1], port, log):
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
            % (1 + count, 1 + len(nowhere), PY, ssh_config)
        )
        yield Fleet(port, ssh_config, inventory, directory, tuple(addresses), tuple(nowhere))
    finally:
        for process in processes:
            infra._stop(process)
        shutil.rmtree(directory, ignore_errors=True)
        if created_privsep:
            with contextlib.suppress(OSError):
                infra.PRIVSEP_DIR.rmdir()
