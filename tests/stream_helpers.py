"""Generator functions the stream tests iterate in child contexts (sent over the wire, 3.8+)."""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import trio

PRODUCED: list[int] = []
EVENTS: list[str] = []


def produced() -> int:
    return len(PRODUCED)


def events() -> list[str]:
    return list(EVENTS)


def reset() -> None:
    del PRODUCED[:]
    del EVENTS[:]


def count(n: int) -> Iterator[int]:
    yield from range(n)


def chunks(n: int, size: int) -> Iterator[bytes]:
    """``n`` chunks of ``size`` bytes, each made only when asked for; counted in PRODUCED."""
    try:
        for i in range(n):
            PRODUCED.append(i)
            yield bytes([i % 256]) * size
    finally:
        EVENTS.append("chunks closed after %d" % len(PRODUCED))


def endless() -> Iterator[int]:
    i = 0
    try:
        while True:
            yield i
            i += 1
    except GeneratorExit:
        EVENTS.append("GeneratorExit")
        raise


def fail_after(n: int) -> Iterator[int]:
    yield from range(n)
    raise KeyError("after %d" % n)


def not_plain_after(n: int) -> Iterator[Any]:
    """``n`` items, then one that cannot travel, then the end."""
    yield from range(n)
    yield object()


def returns_early() -> Iterator[int]:
    yield 1
    return


def slow_items(delay: float) -> Iterator[int]:
    i = 0
    while True:
        time.sleep(delay)
        yield i
        i += 1


async def trio_count(n: int) -> AsyncIterator[int]:
    try:
        for i in range(n):
            await trio.sleep(0)
            yield i
    except trio.Cancelled:
        EVENTS.append("trio stream cancelled")
        raise


async def trio_endless() -> AsyncIterator[int]:
    i = 0
    try:
        while True:
            await trio.sleep(0.001)
            yield i
            i += 1
    except BaseException as exc:
        EVENTS.append("trio endless ended by %s" % type(exc).__name__)
        raise


def not_a_generator() -> int:
    return 1


def flood_without_credit(extra: int) -> Iterator[int]:
    """A hostile producer: yields one item, then sends ``extra`` more straight onto the wire,
    ignoring its window."""
    from trimitogen.core.messages import ReplyOk
    from trimitogen.core.protocol import Message
    from trimitogen.core.streams import Streams

    yield 0
    (streams,) = [obj for obj in gc.get_objects() if type(obj) is Streams]
    (key,) = list(streams.by_key)
    for i in range(extra):
        streams.context.send(
            Message(key[0], streams.context.context_id, key[1], 0, ReplyOk.pack(True, i))
        )
    yield 1


def flood_batch(n: int) -> Iterator[int]:
    """A producer that sends one batch of ``n`` items straight onto the wire (however many its
    window holds), then ends without yielding."""
    from trimitogen.core.messages import StreamItems
    from trimitogen.core.protocol import Message
    from trimitogen.core.streams import Streams

    (streams,) = [obj for obj in gc.get_objects() if type(obj) is Streams]
    (key,) = list(streams.by_key)
    body = StreamItems.pack("items", list(range(n)))
    streams.context.send(Message(key[0], streams.context.context_id, key[1], 0, body))
    return
    yield 0  # a generator function


def one_then_wait(seconds: float) -> Iterator[str]:
    """One item, then a long wait before the next."""
    yield "first"
    time.sleep(seconds)
    yield "second"


async def trio_one_then_wait(seconds: float) -> AsyncIterator[str]:
    yield "first"
    await trio.sleep(seconds)
    yield "second"


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def echo(value: Any) -> Any:
    return value


# -- channel functions: the first argument is the child's end ---------------------------------
def upper(channel: Any, suffix: str) -> None:
    for item in channel:
        channel.send(item.upper() + suffix)


async def double(channel: Any) -> None:
    async for item in channel:
        await channel.asend(item * 2)


def total_until_zero(channel: Any) -> None:
    total = 0
    for item in channel:
        total += item
        if item == 0:
            break
    channel.send(total)


def never_reads(channel: Any) -> None:
    """Takes nothing from the master (its sends must stop at the child's window) and sends
    until the master, which does not read either, has it wait; the close ends that wait."""
    from trimitogen import ChannelError

    try:
        while True:
            channel.send("tick")
    except ChannelError:
        EVENTS.append("never_reads saw the close")


def fails_on(channel: Any, bad: str) -> None:
    for item in channel:
        if item == bad:
            raise ValueError("refused %r" % item)
        channel.send(item)


def limit_file_size(nbytes: int) -> None:
    """Make writes past ``nbytes`` of any file fail with EFBIG here (instead of SIGXFSZ)."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(
        resource.RLIMIT_FSIZE, (nbytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1])
    )


# -- raw bodies (FLAG_RAW) --------------------------------------------------------------------
def send_raw_pieces(channel: Any, count: int, size: int) -> None:
    """Sends ``count`` pieces of ``size`` bytes each as raw bytes (piece i is byte i)."""
    for i in range(count):
        channel.send_bytes(bytes([i % 256]) * size)


def flood_raw_without_credit(extra: int) -> Iterator[int]:
    """A hostile producer: yields one item, then writes ``extra`` raw frames straight onto the
    wire, ignoring its window."""
    from trimitogen.core.protocol import FLAG_RAW, Message
    from trimitogen.core.streams import Streams

    yield 0
    (streams,) = [obj for obj in gc.get_objects() if type(obj) is Streams]
    (key,) = list(streams.by_key)
    context = streams.context
    for _ in range(extra):
        context.send(Message(key[0], context.context_id, key[1], 0, b"raw" * 30, FLAG_RAW))
    yield 1


def raw_kinds(channel: Any) -> None:
    """Sends back the type name of each item the master sends (a relay's end would take raw
    bytes as views; a user's function gets bytes)."""
    for item in channel:
        channel.send(type(item).__name__)


async def asend_raw_pieces(channel: Any, count: int, size: int) -> None:
    """The coroutine version of :func:`send_raw_pieces`."""
    for i in range(count):
        await channel.asend_bytes(bytes([i % 256]) * size)
