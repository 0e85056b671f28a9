"""Flood: a child printing and logging as fast as it can does not grow the master, loses no
line, and does not stop calls on the same context from answering.

The master's log sink is made deliberately slow (a short sleep every few hundred records, as a
slow disk or terminal would be), so the child produces faster than the master consumes.  The
child must then wait in its writes: how far its counters run ahead of what the master has
received stays within what the kernel's pipe and socket buffers hold, and the master's resident
memory stays flat.  Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import trio

import trimitogen as tm
from tests import flood_helpers as fh
from tests import remote_helpers as rh
from tests.conftest import WAIT

#: How long the child floods.
FLOOD_SECONDS = 10.0
#: The slow sink: the master's handler sleeps THROTTLE_SLEEP every THROTTLE_EVERY records.
THROTTLE_EVERY = 200
THROTTLE_SLEEP = 0.002
#: Calls on the flooded context are made this often, and each must answer within CALL_BOUND.
CALL_INTERVAL = 0.05
CALL_BOUND = 10.0
#: Growth of the master's resident memory allowed during the flood.  Buffering what the child
#: sends would cost far more: the flood makes hundreds of MiB of frames in 10 s.
RSS_SLACK = 32 << 20
#: How many lines the child may be ahead of the master.  The kernel holds at most a pipe
#: (64 KiB) and a socket's buffers (a few hundred KiB) of them, under 10,000 short lines each;
#: a child or master that queued instead of waiting would run ahead by hundreds of thousands.
MAX_LAG = 50_000
NAME = "flood"


def rss(pid: int | str = "self") -> int:
    with open("/proc/%s/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class SequenceCheck(logging.Handler):
    """Counts the flood's lines per stream, checks they arrive in order, and is slow."""

    def __init__(self) -> None:
        super().__init__()
        self.next = {"out": 0, "log": 0}
        self.out_of_order: list[str] = []
        self.other: list[str] = []
        self.records = 0

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        kind, _, number = text.partition(" ")
        if kind not in self.next or not number.isdigit():
            if len(self.other) < 20:
                self.other.append("%s: %s" % (record.name, text))
            return
        seen = int(number)
        if seen != self.next[kind] and len(self.out_of_order) < 20:
            self.out_of_order.append("%s: expected %d, got %d" % (kind, self.next[kind], seen))
        self.next[kind] = seen + 1
        self.records += 1
        if self.records % THROTTLE_EVERY == 0:
            time.sleep(THROTTLE_SLEEP)


@pytest.fixture
def sink() -> Iterator[SequenceCheck]:
    """The handler, alone on the flooded context's logger: pytest's capture would keep every
    record and be the unbounded buffer this test looks for."""
    logger = logging.getLogger("trimitogen.ctx." + NAME)
    handler = SequenceCheck()
    saved = (logger.level, logger.propagate)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(saved[0])
    logger.propagate = saved[1]


@asynccontextmanager
async def flooded_context(via: bool) -> AsyncIterator[tuple[tm.Context, int | None]]:
    """The context to flood, and the pid of the intermediate it is opened through, if any."""
    if not via:
        async with tm.open_context(tm.local(), name=NAME) as ctx:
            yield ctx, None
        return
    async with (
        tm.open_context(tm.local(), name="middle") as middle,
        tm.open_context(tm.local(), via=middle, name=NAME) as ctx,
    ):
        yield ctx, middle.pid


@pytest.mark.timeout(FLOOD_SECONDS * 3 + WAIT)
@pytest.mark.parametrize("via", [False, True], ids=["direct", "via-intermediate"])
async def test_flood_is_bounded_lossless_and_calls_answer(
    sink: SequenceCheck, no_leaked_fds: None, via: bool
) -> None:
    latencies: list[float] = []
    lags: list[tuple[int, int]] = []
    samples: list[int] = []
    middle_samples: list[int] = []
    with trio.fail_after(FLOOD_SECONDS + WAIT):
        async with flooded_context(via) as (ctx, middle_pid):
            # Warm up: the helper module and logging are imported, a first record goes through.
            await ctx.call(fh.start_flood, 0.0)
            assert await ctx.call(fh.finish_flood) == [64, 64]
            with trio.fail_after(WAIT):
                while sink.records < 128:
                    await trio.sleep(0.01)
            sink.next = {"out": 0, "log": 0}
            sink.records = 0
            before = rss()
            middle_before = rss(middle_pid) if middle_pid else 0
            await ctx.call(fh.start_flood, FLOOD_SECONDS)
            flooding = True

            async def sample_rss() -> None:
                while flooding:
                    samples.append(rss())
                    if middle_pid:
                        middle_samples.append(rss(middle_pid))
                    await trio.sleep(0.1)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample_rss)
                end = time.monotonic() + FLOOD_SECONDS
                while time.monotonic() < end:
                    started = time.monotonic()
                    with trio.fail_after(CALL_BOUND):
                        emitted = await ctx.call(fh.flood_progress)
                    latencies.append(time.monotonic() - started)
                    # The reply followed every line the child had fully sent before it.
                    lags.append((emitted[0] - sink.next["out"], emitted[1] - sink.next["log"]))
                    await trio.sleep(CALL_INTERVAL)
                with trio.fail_after(WAIT):
                    totals = await ctx.call(fh.finish_flood)
                # What the child wrote before its last reply may still be on its way.
                with trio.fail_after(WAIT):
                    while [sink.next["out"], sink.next["log"]] != totals:
                        await trio.sleep(0.05)
                flooding = False
            after = rss()
            assert await ctx.call(rh.echo, "after") == "after"
    peak = max(samples)
    latencies.sort()
    middle_peak = max(middle_samples, default=0)
    if middle_pid:
        print(
            "\nintermediate rss %.1f MiB before, %.1f MiB peak"
            % (middle_before / 2**20, middle_peak / 2**20)
        )
    print(
        "\nflood %s %.0fs: %d lines printed, %d records logged (%d received in order); master rss "
        "%.1f MiB before, %.1f MiB peak, %.1f MiB after; %d calls answered during it, latency "
        "median %.1f ms, max %.1f ms; child ahead of master by at most %d lines / %d records"
        % (
            "via an intermediate" if via else "direct",
            FLOOD_SECONDS,
            totals[0],
            totals[1],
            sink.records,
            before / 2**20,
            peak / 2**20,
            after / 2**20,
            len(latencies),
            latencies[len(latencies) // 2] * 1000,
            latencies[-1] * 1000,
            max(out for out, _ in lags),
            max(log for _, log in lags),
        )
    )
    assert not sink.out_of_order, sink.out_of_order
    assert not sink.other, sink.other
    assert sink.records == sum(totals)
    assert totals[0] > 0
    assert totals[1] > 0
    assert peak - before < RSS_SLACK, (before, peak)
    # An intermediate makes its child wait too, rather than reading ahead into its own memory.
    assert middle_peak - middle_before < RSS_SLACK, (middle_before, middle_peak)
    assert max(max(pair) for pair in lags) < MAX_LAG, lags
    # One call per interval, each within CALL_BOUND (fail_after above), for the whole flood.
    assert len(latencies) >= FLOOD_SECONDS / (CALL_BOUND + CALL_INTERVAL)
