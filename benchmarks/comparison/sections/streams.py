"""streams: items per second from a remote generator, small items and 64 KiB items.

trimitogen: ``ctx.open_stream`` (flow-controlled); mitogen: a remote function sending through a
Sender to a Receiver in the master (unbounded); execnet: ``channel.send`` in a ``remote_exec``
(unbounded queue).  All three on a local child.
"""

from __future__ import annotations

import statistics
import time

from ..model import Job, Report, Section, error_text
from ..producers import EXECNET_SOURCE, items, send_items
from ..tables import SECTION_LABEL_WIDTH, number, ratio, row, state
from ..workers import execnet as execnet_worker
from ..workers import mitogen as mitogen_worker

#: (label, items per run, item size in bytes)
SHAPES = (("small items", 20000, 0), ("64 KiB items", 2000, 64 * 1024))
RUNS = {True: 1, False: 5}


def _shapes(job: Job) -> list[tuple[str, int, int]]:
    scale = 10 if job.plan.quick else 1
    return [(label, n // scale, size) for label, n, size in SHAPES]


async def measure_trimitogen(job: Job) -> None:
    import trimitogen as tm

    try:
        async with tm.open_context(tm.local(python=job.python)) as ctx:
            for label, n, size in _shapes(job):
                for run in range(1 + RUNS[job.plan.quick]):
                    t0 = time.perf_counter()
                    count = 0
                    async with ctx.open_stream(items, n, size) as stream:
                        async for _ in stream:
                            count += 1
                    if count != n:
                        raise RuntimeError("got %d items of %d" % (count, n))
                    if run:  # the first run warms up
                        job.samples.add(label, n / (time.perf_counter() - t0))
    except Exception:
        job.samples.errors["streams"] = error_text()


def measure_mitogen(job: Job) -> None:
    import mitogen.core  # type: ignore[import-untyped]

    with mitogen_worker.router() as router:
        try:
            ctx = router.local(python_path=job.python)
            for label, n, size in _shapes(job):
                for run in range(1 + RUNS[job.plan.quick]):
                    receiver = mitogen.core.Receiver(router)
                    t0 = time.perf_counter()
                    call = ctx.call_async(send_items, receiver.to_sender(), n, size)
                    for count, msg in enumerate(receiver, 1):
                        msg.unpickle()
                        if count == n:
                            break
                    call.get()
                    if run:
                        job.samples.add(label, n / (time.perf_counter() - t0))
                    receiver.close()
            ctx.shutdown(wait=True)
        except Exception:
            job.samples.errors["streams"] = error_text()


def measure_execnet(job: Job) -> None:
    with execnet_worker.group() as group:
        try:
            gw = group.makegateway(execnet_worker.local_spec(job))
            for label, n, size in _shapes(job):
                for run in range(1 + RUNS[job.plan.quick]):
                    t0 = time.perf_counter()
                    channel = gw.remote_exec(EXECNET_SOURCE)
                    channel.send((n, size))
                    for _ in range(n):
                        channel.receive()
                    channel.waitclose()
                    if run:
                        job.samples.add(label, n / (time.perf_counter() - t0))
            gw.exit()
        except Exception:
            job.samples.errors["streams"] = error_text()


def report(rep: Report) -> list[str]:
    width = SECTION_LABEL_WIDTH
    labels = [label for label, _, _ in SHAPES]
    lines = [
        "streams: items per second from a generator in a local child to the master; median of "
        "%d runs (+1 warm-up)" % RUNS[rep.plan.quick],
        "",
        row("", labels, width),
        row("", ["items/s"] * len(labels), width),
    ]
    base: list[float] = []
    for library, outcome in rep.outcomes.items():
        why = state(outcome, "streams")
        if why is not None:
            lines.append(library.ljust(width) + why)
            continue
        assert outcome.samples is not None
        medians = [statistics.median(outcome.samples.get(label)) for label in labels]
        if library == "trimitogen":
            base = medians
        lines.append(row(library, [number(m) for m in medians], width))
        if library != "trimitogen" and base:
            cells = [ratio(mine, theirs) for mine, theirs in zip(base, medians, strict=True)]
            lines.append(row("  trimitogen/" + library, cells, width))
    lines += [
        "",
        "trimitogen/peer above 1.00x: trimitogen streams more items per second. trimitogen's",
        "stream is flow-controlled (a window of 64 items and 4 MiB); mitogen's Receiver and",
        "execnet's channel queue without bound in the master.",
    ]
    return lines


SECTION = Section(
    name="streams",
    report=report,
    trimitogen=measure_trimitogen,
    mitogen=measure_mitogen,
    execnet=measure_execnet,
)
