"""bytestream: bytes per second of ``ctx.open_tcp_stream`` against the raw pipe floor.

A TCP server process (the far end) on 127.0.0.1 either swallows what it is sent and answers with
the count (``r``: master -> far end) or sends a number of bytes and closes (``w``: far end ->
master).  trimitogen: the master talks to it through ``await ctx.open_tcp_stream(...)``, the
connection made by a local child (and by a child of that child for ``via=local``).  The floor:
the same bytes written by the master into a plain OS pipe to a child interpreter that relays them
to the same server, and its answer back through a pipe, without any library.  The bytes are
random (nothing compresses them); the size is ``TMG_BENCH_STREAM_MIB`` (default 256, 16 with
``--quick``).  mitogen and execnet have no byte stream: the floor is the comparison.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from ..model import Job, Report, Section
from ..plan import MIB, Plan
from ..tables import SECTION_LABEL_WIDTH, number, ratio, row, state

if TYPE_CHECKING:
    import trimitogen as tm

RUNS = {True: (1, 0), False: (3, 1)}  # quick -> (runs, warm-up runs)
DIRECTIONS = (("r", "master->far"), ("w", "far->master"))
#: (key prefix, row label) of every measured variant, the floor first.
VARIANTS = (
    ("floor", "floor (raw pipe)"),
    ("direct", "trimitogen"),
    ("via", "trimitogen, via=local"),
)
TARGET = 0.8  # of the floor
PIECE = MIB  # what the master hands to one write / send_all
HEADER = 16  # a command letter and the byte count, padded

#: The far end: prints its port, then serves every connection in a thread of its own until its
#: stdin closes.  ``r``: read to EOF, answer the count; ``w`` + size: send that many bytes.
SERVER_SOURCE = r"""
import os, socket, sys, threading
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(16)
sys.stdout.write("%d\n" % listener.getsockname()[1])
sys.stdout.flush()
block = os.urandom(1 << 20)
def serve(conn):
    with conn:
        head = b""
        while len(head) < 16:
            more = conn.recv(16 - len(head))
            if not more:
                return
            head += more
        if head[:1] == b"r":
            count, buf = 0, bytearray(1 << 18)
            while True:
                n = conn.recv_into(buf)
                if not n:
                    break
                count += n
            conn.sendall(b"%d\n" % count)
        else:
            left, view = int(head[1:]), memoryview(block)
            while left:
                n = conn.send(view[: min(left, len(view))])
                left -= n
def accept():
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
threading.Thread(target=accept, daemon=True).start()
sys.stdin.buffer.read()
"""

#: The floor's relay: connect, say so, then stdin -> socket until EOF, then socket -> stdout.
RELAY_SOURCE = r"""
import os, socket, sys
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
os.write(1, b"k")
buf = bytearray(65536)
view = memoryview(buf)
while True:
    n = os.readv(0, [buf])
    if not n:
        break
    sock.sendall(view[:n])
sock.shutdown(socket.SHUT_WR)
while True:
    n = sock.recv_into(buf)
    if not n:
        break
    mv = view[:n]
    while mv:
        mv = mv[os.write(1, mv):]
"""


def size_mib(quick: bool) -> int:
    return int(os.environ.get("TMG_BENCH_STREAM_MIB") or (16 if quick else 256))


def header_for(direction: str, nbytes: int) -> bytes:
    return (b"%s%d" % (direction.encode(), nbytes)).ljust(HEADER)


@contextlib.contextmanager
def far_end(python: str) -> Iterator[int]:
    """The TCP server, running for the length of the block; its port."""
    proc = subprocess.Popen(
        [python, "-c", SERVER_SOURCE], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]


def floor_once(python: str, port: int, direction: str, nbytes: int, block: bytes) -> float:
    """One transfer through the raw pipe relay (blocking; run in a thread)."""
    proc = subprocess.Popen(
        [python, "-c", RELAY_SOURCE, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        bufsize=0,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        if proc.stdout.read(1) != b"k":
            raise RuntimeError("the floor's relay could not connect")
        stdin, stdout = proc.stdin.fileno(), proc.stdout.fileno()
        t0 = time.perf_counter()
        _write_all(stdin, memoryview(header_for(direction, nbytes)))
        if direction == "r":
            for start in range(0, nbytes, PIECE):
                _write_all(stdin, memoryview(block)[: min(PIECE, nbytes - start)])
        proc.stdin.close()
        got, buf = 0, bytearray(PIECE)
        answer = b""
        while n := os.readv(stdout, [buf]):
            got += n
            if direction == "r":
                answer += buf[:n]
        elapsed = time.perf_counter() - t0
    finally:
        proc.wait(timeout=30)
    check(direction, nbytes, got, answer)
    return elapsed


def check(direction: str, nbytes: int, got: int, answer: bytes) -> None:
    if direction == "w" and got != nbytes:
        raise RuntimeError("received %d bytes of %d" % (got, nbytes))
    if direction == "r" and int(answer or b"-1") != nbytes:
        raise RuntimeError("the far end counted %r bytes, %d sent" % (answer, nbytes))


async def stream_once(
    ctx: tm.Context, port: int, direction: str, nbytes: int, block: bytes
) -> float:
    """One transfer through ``ctx.open_tcp_stream`` (connected before the clock starts)."""
    stream = await ctx.open_tcp_stream("127.0.0.1", port)
    async with stream:
        t0 = time.perf_counter()
        await stream.send_all(header_for(direction, nbytes))
        if direction == "r":
            for start in range(0, nbytes, PIECE):
                await stream.send_all(memoryview(block)[: min(PIECE, nbytes - start)])
        await stream.send_eof()
        got, answer = 0, b""
        while data := await stream.receive_some():
            got += len(data)
            if direction == "r":
                answer += data
        elapsed = time.perf_counter() - t0
    check(direction, nbytes, got, answer)
    return elapsed


@contextlib.asynccontextmanager
async def chain(python: str, via: bool) -> AsyncIterator[tm.Context]:
    """A local context, or one started through another local context."""
    import trimitogen as tm

    method = tm.local(python=python)
    async with tm.open_context(method) as first:
        if not via:
            yield first
            return
        async with tm.open_context(method, via=first) as second:
            yield second


async def measure_trimitogen(job: Job) -> None:
    import trio

    runs, warmup = RUNS[job.plan.quick]
    nbytes = size_mib(job.plan.quick) * MIB
    block = os.urandom(PIECE)
    samples = job.samples
    with far_end(job.python) as port:
        for direction, _ in DIRECTIONS:
            for i in range(warmup + runs):
                seconds = await trio.to_thread.run_sync(
                    floor_once, job.python, port, direction, nbytes, block
                )
                if i >= warmup:
                    samples.add("bytestream_floor_" + direction, seconds)
        for key, via in (("direct", False), ("via", True)):
            async with chain(job.python, via) as ctx:
                for direction, _ in DIRECTIONS:
                    for i in range(warmup + runs):
                        seconds = await stream_once(ctx, port, direction, nbytes, block)
                        if i >= warmup:
                            samples.add("bytestream_%s_%s" % (key, direction), seconds)
    samples.add("bytestream_bytes", nbytes)


def report(rep: Report) -> list[str]:
    width = SECTION_LABEL_WIDTH
    runs, warmup = RUNS[rep.plan.quick]
    outcome = rep.outcomes.get("trimitogen")
    labels = [label for _, label in DIRECTIONS]
    lines = []
    why = "not measured (--only)" if outcome is None else state(outcome, "bytestream")
    if why is not None or outcome is None or outcome.samples is None:
        return ["bytestream: %s" % why]
    samples = outcome.samples
    nbytes = samples.get("bytestream_bytes")[0]
    lines += [
        "bytestream: %d MiB each way through ctx.open_tcp_stream to a TCP server, against a raw"
        % (nbytes // MIB),
        "pipe to a relaying child; median of %d runs (+%d warm-up)" % (runs, warmup),
        "",
        row("", labels, width),
        row("", ["MiB/s"] * len(labels), width),
    ]
    speeds: dict[str, list[float]] = {}
    for key, label in VARIANTS:
        values = [samples.get("bytestream_%s_%s" % (key, d)) for d, _ in DIRECTIONS]
        speeds[key] = [nbytes / MIB / statistics.median(v) for v in values]
        lines.append(row(label, [number(s) for s in speeds[key]], width))
    floor = speeds["floor"]
    met: list[str] = []
    for key, label in VARIANTS[1:]:
        cells = [ratio(mine, base) for mine, base in zip(speeds[key], floor, strict=True)]
        lines.append(row("  %s/floor" % label.replace(", ", " "), cells, width))
        met += [
            "%s %s: %s" % (label, d, "met" if mine >= TARGET * base else "NOT met")
            for (_, d), mine, base in zip(DIRECTIONS, speeds[key], floor, strict=True)
        ]
    lines += [
        "",
        "target: at least %.2fx of the floor (informational):" % TARGET,
        *("  " + line for line in met),
        "",
        "floor: the master writes into a pipe to a child interpreter, which relays to the",
        "server (64 KiB reads), and the answer comes back through a pipe; its start and its",
        "connect are not timed, like trimitogen's open_tcp_stream is not.  via=local is compared",
        "with the same one-hop floor.  mitogen and execnet have no byte stream: n/a.",
    ]
    return lines


def header(plan: Plan) -> list[str]:
    return ["bytestream: %d MiB each way (TMG_BENCH_STREAM_MIB)" % size_mib(plan.quick)]


_NA = "no byte stream (the table compares trimitogen with the raw pipe floor)"
UNSUPPORTED = {"mitogen": _NA, "execnet": _NA}
SECTION = Section(
    name="bytestream",
    report=report,
    trimitogen=measure_trimitogen,
    unsupported=UNSUPPORTED,
    header=header,
)
