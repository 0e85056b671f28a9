"""Many sshds on the loopback network, for fan-out tests and benchmarks (root only).

:func:`running_fleet` starts the suite's sshd (``running_sshd``, one process per 16 addresses,
all on one port) on 127.0.0.2 up, and writes an ssh_config that names the hosts (``Host
127.0.0.*``: the port, the user, the key, the known_hosts file) and an Ansible INI inventory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.infra import Users, running_sshd

COUNT = 200
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


@contextlib.contextmanager
def running_fleet(users: Users, count: int = COUNT) -> Iterator[Fleet]:
    """sshd on ``count`` addresses from 127.0.0.2 up, an ssh_config and an inventory (groups
    ``fleet`` and ``nowhere``, a fifth as many addresses on 127.0.1.x)."""
    addresses = fleet_addresses(count)
    nowhere = nowhere_addresses(count)
    with running_sshd(users, addresses, max_startups=4 * count) as server:
        directory = server.directory
        ssh_config = directory / "fleet_ssh_config"
        ssh_config.write_text(
            "\n".join(
                [
                    "Host 127.0.0.* 127.0.1.*",
                    "    Port %d" % server.port,
                    "    User %s" % server.user,
                    "    IdentityFile %s" % server.identity_file,
                    "    IdentitiesOnly yes",
                    "    IdentityAgent none",
                    "    UserKnownHostsFile %s" % server.known_hosts,
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
        yield Fleet(server.port, ssh_config, inventory, directory, tuple(addresses), tuple(nowhere))
