"""Soak: many context open/close cycles and many calls leave fds, processes and memory flat.

Marked ``soak`` (select or skip it with ``-m``); the suite runs it, so it is kept to about a
minute here.  Run with ``-s`` to see the figures; ``TMG_SOAK_FULL=1`` runs the full size (2,000
local and 2,000 fork cycles, 1,000,000 calls on one context).
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable

import pytest
import trio

import trimitogen as tm
from tests.conftest import _children_of

FULL = os.environ.get("TMG_SOAK_FULL") == "1"
FORK_CYCLES = 2000
LOCAL_CYCLES = 2000 if FULL else 200
CALLS = 1_000_000 if FULL else 100_000
#: Cycles before the baseline is taken: caches, the fork server and Trio's own state warm up.
WARM_UP = 50
#: Growth of the master's resident memory allowed over the whole run.
RSS_SLACK = 16 << 20


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def descendants() -> int:
    """Processes below this one, at any depth (forks made via a context are grandchildren)."""
    found, queue = 0, _children_of(os.getpid())
    while queue:
        found += 1
        queue.extend(_children_of(queue.pop()))
    return found


def snapshot() -> dict[str, int]:
    return {
        "fds": len(os.listdir("/proc/self/fd")),
        "children": len(_children_of(os.getpid())),
        "descendants": descendants(),
        "rss": rss(),
    }


def report(
    label: str, count: int, seconds: float, before: dict[str, int], after: dict[str, int]
) -> None:
    print(
        "soak %-14s %7d in %5.1fs (%6.0f/s): fds %d -> %d, children %d -> %d, "
        "descendants %d -> %d, rss %.1f -> %.1f MiB"
        % (
            label,
            count,
            seconds,
            count / seconds,
            before["fds"],
            after["fds"],
            before["children"],
            after["children"],
            before["descendants"],
            after["descendants"],
            before["rss"] / 2**20,
            after["rss"] / 2**20,
        )
    )


def assert_flat(before: dict[str, int], after: dict[str, int]) -> None:
    assert after["fds"] == before["fds"]
    assert after["children"] == before["children"]
    assert after["descendants"] == before["descendants"]
    assert after["rss"] - before["rss"] < RSS_SLACK


async def cycles(label: str, count: int, open_one: Callable[[], Awaitable[None]]) -> None:
    for _ in range(WARM_UP):
        await open_one()
    before = snapshot()
    started = time.perf_counter()
    for _ in range(count):
        await open_one()
    seconds = time.perf_counter() - started
    after = snapshot()
    report(label, count, seconds, before, after)
    assert_flat(before, after)


@pytest.mark.soak
@pytest.mark.timeout(1500 if FULL else 300)
async def test_soak_open_close_and_calls() -> None:
    with trio.fail_after(1480 if FULL else 280):
        async with tm.open_context(tm.local(), name="soak-parent") as parent:

            async def fork_from_server() -> None:
                async with tm.open_context(tm.fork()) as ctx:
                    assert await ctx.call(os.getpid) == ctx.pid

            async def fork_via_parent() -> None:
                async with tm.open_context(tm.fork(), via=parent) as ctx:
                    assert await ctx.call(os.getpid) == ctx.pid

            async def local_one() -> None:
                async with tm.open_context(tm.local()) as ctx:
                    assert await ctx.call(os.getpid) == ctx.pid

            await cycles("fork (server)", FORK_CYCLES // 2, fork_from_server)
            await cycles("fork (via)", FORK_CYCLES // 2, fork_via_parent)
            await cycles("local", LOCAL_CYCLES, local_one)

            for i in range(WARM_UP * 20):
                await parent.call(abs, -i)
            before = snapshot()
            started = time.perf_counter()
            for i in range(CALLS):
                assert await parent.call(abs, -i) == i
            seconds = time.perf_counter() - started
            after = snapshot()
            report("calls", CALLS, seconds, before, after)
            assert_flat(before, after)
