"""Fan-out at scale with real sshd: 200 targets on 127.0.0.2 ... 127.0.0.201.

The sshds, their ssh_config and an inventory of the 200 hosts come from tests/fleet.py.  The
tests open a group on the inventory's targets,
print the wall time, the master's RSS and its peak count of open fds, and assert only what
each target answered: the address its sshd saw it connect to.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator

import pytest
import trio

import trimitogen as tm
from tests.fleet import COUNT, Fleet, fleet_addresses, nowhere_addresses, running_fleet
from tests.infra import Users

ADDRESSES = fleet_addresses(COUNT)
NOWHERE = nowhere_addresses(COUNT)
#: The whole group, connection and call, must finish within this (the per-test timeout is 120).
GROUP_WAIT = 100.0


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
