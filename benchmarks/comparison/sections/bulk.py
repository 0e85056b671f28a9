"""bulk: how long a small call waits while a large value crosses the same connection.

A 96 MiB ``bytes`` value goes to context B through context A (trimitogen and mitogen: B was
opened via A; execnet, which has no via, sends it on a second channel of the same gateway), and
meanwhile a no-op call is made to A, again and again, until the value has arrived.  trimitogen
splits the value into 1 MiB parts that take turns with other traffic; both peers write it as one
message, so a call queued behind it waits for all of it.  The table gives the round trips of
those calls (median and slowest) next to the idle round trip, and the value's transfer time.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

from ..model import Job, Report, Section, error_text
from ..tables import SECTION_LABEL_WIDTH, number, ratio, row, state
from ..workers import execnet as execnet_worker
from ..workers import mitogen as mitogen_worker

SIZE = {True: 16 * 1024 * 1024, False: 96 * 1024 * 1024}  # mitogen refuses 128 MiB
RUNS = {True: 1, False: 5}
IDLE_CALLS = 200


def _summarise(job: Job, idle: list[float], busy: list[float], transfer: float) -> None:
    job.samples.add("idle", statistics.median(idle))
    job.samples.add("median", statistics.median(busy) if busy else transfer)
    job.samples.add("slowest", max(busy) if busy else transfer)
    job.samples.add("calls", len(busy))
    job.samples.add("transfer", transfer)


async def measure_trimitogen(job: Job) -> None:
    import trio

    import trimitogen as tm

    data = b"x" * SIZE[job.plan.quick]
    try:
        async with (
            tm.open_context(tm.local(python=job.python)) as a,
            tm.open_context(tm.local(python=job.python), via=a) as b,
        ):
            await b.call(len, b"")
            idle = []
            for _ in range(IDLE_CALLS):
                t0 = time.perf_counter()
                await a.call(abs, 0)
                idle.append(time.perf_counter() - t0)

            async def send(done: trio.Event, took: list[float]) -> None:
                t0 = time.perf_counter()
                await b.call(len, data)
                took.append(time.perf_counter() - t0)
                done.set()

            for _ in range(RUNS[job.plan.quick]):
                busy: list[float] = []
                done = trio.Event()
                took: list[float] = []
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send, done, took)
                    await trio.sleep(0)
                    while not done.is_set():
                        t0 = time.perf_counter()
                        await a.call(abs, 0)
                        busy.append(time.perf_counter() - t0)
                _summarise(job, idle, busy, took[0])
    except Exception:
        job.samples.errors["bulk"] = error_text()


def measure_mitogen(job: Job) -> None:
    data = b"x" * SIZE[job.plan.quick]
    with mitogen_worker.router() as router:
        try:
            a = router.local(python_path=job.python)
            b = router.local(python_path=job.python, via=a)
            b.call(len, b"")
            idle = []
            for _ in range(IDLE_CALLS):
                t0 = time.perf_counter()
                a.call(abs, 0)
                idle.append(time.perf_counter() - t0)
            for _ in range(RUNS[job.plan.quick]):
                busy = []
                t0 = time.perf_counter()
                receiver = b.call_async(len, data)
                while receiver.empty():
                    t1 = time.perf_counter()
                    a.call(abs, 0)
                    busy.append(time.perf_counter() - t1)
                receiver.get().unpickle()
                _summarise(job, idle, busy, time.perf_counter() - t0)
        except Exception:
            job.samples.errors["bulk"] = error_text()


SINK = "channel.send(len(channel.receive()))"
PING = "for x in channel:\n    channel.send(x)"


def _send_and_wait(channel: Any, data: bytes) -> None:
    channel.send(data)
    channel.receive()


def measure_execnet(job: Job) -> None:
    data = b"x" * SIZE[job.plan.quick]
    with execnet_worker.group() as group:
        try:
            gw = group.makegateway(execnet_worker.local_spec(job))
            ping = gw.remote_exec(PING)
            idle = []
            for _ in range(IDLE_CALLS):
                t0 = time.perf_counter()
                ping.send(0)
                ping.receive()
                idle.append(time.perf_counter() - t0)
            for _ in range(RUNS[job.plan.quick]):
                busy = []
                sink = gw.remote_exec(SINK)
                t0 = time.perf_counter()
                sender = threading.Thread(target=_send_and_wait, args=(sink, data))
                sender.start()
                while sender.is_alive():
                    t1 = time.perf_counter()
                    ping.send(0)
                    ping.receive()
                    busy.append(time.perf_counter() - t1)
                sender.join()
                _summarise(job, idle, busy, time.perf_counter() - t0)
            ping.close()
        except Exception:
            job.samples.errors["bulk"] = error_text()


def _median_ms(outcome: Any, key: str) -> float | None:
    values = outcome.samples.get(key)
    return statistics.median(values) * 1e3 if values else None


def report(rep: Report) -> list[str]:
    width = SECTION_LABEL_WIDTH
    size = SIZE[rep.plan.quick] // (1024 * 1024)
    lines = [
        "bulk: a no-op call to context A while %d MiB go to context B behind it (execnet: "
        "another channel" % size,
        "of the same gateway); round trips of those calls and of idle ones, and the transfer "
        "time; median of %d runs, ms" % RUNS[rep.plan.quick],
        "",
        row("", ["idle call", "call, median", "call, slowest", "transfer"], width),
    ]
    base: list[float | None] = []
    keys = ("idle", "median", "slowest", "transfer")
    for library, outcome in rep.outcomes.items():
        why = state(outcome, "bulk")
        if why is not None:
            lines.append(library.ljust(width) + why)
            continue
        cells = [_median_ms(outcome, key) for key in keys]
        lines.append(row(library, ["-" if c is None else number(c) for c in cells], width))
        if library == "trimitogen":
            base = cells
        elif base:
            ratios = [
                ratio(c, b) if c is not None and b is not None else "-"
                for c, b in zip(cells, base, strict=True)
            ]
            lines.append(row("  %s/trimitogen" % library, ratios, width))
    lines += [
        "",
        "trimitogen sends a value over 1 MiB in parts that take turns with other traffic; the "
        "peers send it",
        "whole, so a call queued behind it waits for the rest of it.",
    ]
    return lines


SECTION = Section(
    name="bulk",
    report=report,
    trimitogen=measure_trimitogen,
    mitogen=measure_mitogen,
    execnet=measure_execnet,
)
