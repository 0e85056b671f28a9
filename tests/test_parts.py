"""Split messages: large bodies travel as parts, and other traffic passes between the parts.

Unit tests cover the splitting, the joining (limits, interleaving, a gone sender), the reader
that unpickles across parts, the fair lock and the two writers (the master's lanes, a child's
threads).  Integration tests show, locally and through ssh → sudo, that a small call sent after a
large one overtakes it, that replies pass a large stream item as it is written, and that an
intermediate holds one part of a message passing through it, not the message.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import threading
from typing import Any

import pytest
import trio

import trimitogen as tm
from tests import parts_helpers as ph
from tests import remote_helpers as rh
from tests.conftest import WAIT
from trimitogen._outbox import Outbox, lane_of
from trimitogen.core.errors import StreamError
from trimitogen.core.latch import FairLock
from trimitogen.core.parts import (
    FLAG_MORE,
    FLAG_PART,
    PART_SIZE,
    SPLIT_ABOVE,
    Reassembler,
    SplitSender,
    split_frames,
)
from trimitogen.core.protocol import (
    HANDLE_CALL,
    HANDLE_CANCEL,
    HANDLE_CREDIT,
    HANDLE_LOAD_MODULE,
    HANDLE_SHUTDOWN,
    HEADER,
    Body,
    FrameDecoder,
    Message,
    dumps_body,
    loads,
)

MIB = 1024 * 1024


def decode(stream: bytes) -> list[Message]:
    decoder = FrameDecoder()
    decoder.receive_data(stream)
    return list(decoder.messages())


def wire(frames: list[list[Any]]) -> bytes:
    return b"".join(bytes(part) for frame in frames for part in frame)


# Splitting and joining ---------------------------------------------------------------------------
def test_small_bodies_travel_whole() -> None:
    msg = Message(5, 0, 1000, 0, b"x" * SPLIT_ABOVE)
    (frame,) = split_frames(msg)
    (back,) = decode(wire([frame]))
    assert back.flags == 0
    assert bytes(back.data) == msg.data


@pytest.mark.parametrize("size", [SPLIT_ABOVE + 1, 3 * PART_SIZE, 5 * PART_SIZE + 7])
def test_large_bodies_split_into_parts_and_join(size: int) -> None:
    body = Body()
    for piece in (b"a" * 1000, os.urandom(size // 2), b"b" * (size - size // 2 - 1000)):
        body.write(piece)
    msg = Message(5, 3, 1001, 7, body)
    frames = split_frames(msg)
    assert len(frames) == -(-size // PART_SIZE)
    parts = decode(wire(frames))
    assert [len(p.data) for p in parts[:-1]] == [PART_SIZE] * (len(parts) - 1)
    assert all(p.flags == FLAG_PART | FLAG_MORE for p in parts[:-1])
    assert parts[-1].flags == FLAG_PART
    assert {(p.dst, p.src, p.handle, p.reply_to) for p in parts} == {(5, 3, 1001, 7)}
    joiner = Reassembler()
    assert [joiner.add(p) for p in parts[:-1]] == [None] * (len(parts) - 1)
    whole = joiner.add(parts[-1])
    assert whole is not None
    assert (whole.flags, whole.reply_to) == (0, 7)
    assert bytes(whole.data) == bytes(body)
    assert joiner.pending_bytes == 0


def test_parts_from_different_senders_and_handles_interleave() -> None:
    joiner = Reassembler()
    a = decode(wire(split_frames(Message(0, 3, 1000, 0, b"A" * (3 * PART_SIZE)))))
    b = decode(wire(split_frames(Message(0, 4, 1000, 0, b"B" * (2 * PART_SIZE)))))
    c = decode(wire(split_frames(Message(0, 3, 1002, 0, b"C" * (2 * PART_SIZE)))))
    lone = Message(0, 3, 1000, 0, b"lone")  # a whole message for the same handle, in between
    done = []
    for msg in [a[0], b[0], c[0], lone, a[1], b[1], c[1], a[2]]:
        whole = joiner.add(msg)
        if whole is not None:
            done.append((whole.src, whole.handle, bytes(whole.data)))
    assert done == [
        (3, 1000, b"lone"),
        (4, 1000, b"B" * (2 * PART_SIZE)),
        (3, 1002, b"C" * (2 * PART_SIZE)),
        (3, 1000, b"A" * (3 * PART_SIZE)),
    ]


def part(src: int, handle: int, size: int, more: bool = True) -> Message:
    flags = FLAG_PART | (FLAG_MORE if more else 0)
    return Message(0, src, handle, 0, b"p" * size, flags)


def test_a_split_message_larger_than_the_limit_is_refused_and_its_rest_dropped() -> None:
    joiner = Reassembler(max_message_size=3 * MIB)
    for _ in range(3):
        assert joiner.add(part(3, 1000, PART_SIZE)) is None
    with pytest.raises(StreamError, match="a message over the limit of 3145728 bytes"):
        joiner.add(part(3, 1000, PART_SIZE))
    assert joiner.pending_bytes == 0  # what it had sent is dropped...
    assert joiner.add(part(3, 1000, PART_SIZE)) is None
    assert joiner.add(part(3, 1000, 10, more=False)) is None  # ...and so is the rest of it
    assert joiner.pending_bytes == 0
    whole = joiner.add(part(3, 1000, 10, more=False))  # the next message is itself again
    assert whole is not None
    assert len(whole.data) == 10


def test_a_part_of_the_wrong_size_is_refused() -> None:
    """Every part but the last is PART_SIZE bytes: empty or tiny parts cannot pile up."""
    joiner = Reassembler()
    with pytest.raises(StreamError, match="a part of 0 bytes"):
        joiner.add(part(3, 1000, 0))
    assert joiner.pending_bytes == 0


def test_unfinished_messages_together_are_bounded() -> None:
    joiner = Reassembler(max_message_size=2 * MIB)
    for handle in range(1000, 1004):
        assert joiner.add(part(3, handle, MIB)) is None
    assert joiner.pending_bytes == 4 * MIB
    with pytest.raises(StreamError, match="unfinished split messages over 4194304 bytes"):
        joiner.add(part(4, 1000, MIB))
    assert joiner.pending_bytes == 4 * MIB


def test_two_calls_to_one_handle_are_joined_apart_by_their_reply_handles() -> None:
    """Two large calls under way at once (one handle, CALL) take turns part by part."""
    side = FakeSide(0)
    out = Outbox(side, lambda reason: None)  # type: ignore[arg-type]
    out.send(Message(5, 0, HANDLE_CALL, 1001, b"A" * (3 * PART_SIZE)))
    out.send(Message(5, 0, HANDLE_CALL, 1002, b"B" * (3 * PART_SIZE)))
    while out:
        side.room = 64 * 1024
        out.flush()
    parts = decode(bytes(side.data))
    assert [p.reply_to for p in parts] == [1001, 1001, 1002, 1001, 1002, 1002]
    joiner = Reassembler()
    whole = [m for m in (joiner.add(p) for p in parts) if m is not None]
    assert [(m.reply_to, bytes(m.data)) for m in whole] == [
        (1001, b"A" * (3 * PART_SIZE)),
        (1002, b"B" * (3 * PART_SIZE)),
    ]


def test_a_body_claiming_more_than_it_holds_allocates_nothing_for_the_claim() -> None:
    import tracemalloc

    # BINUNICODE8 of 300 MiB, in a body of a few bytes split over two parts.
    data = b"\x80\x04\x8d" + (300 * MIB).to_bytes(8, "little") + b"abc"
    body = Body()
    body.parts = [data[:5], data[5:]]
    body.size = len(data)
    tracemalloc.start()
    try:
        with pytest.raises(StreamError):
            loads(body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * MIB, peak


def test_a_gone_sender_leaves_nothing_behind() -> None:
    joiner = Reassembler()
    joiner.add(part(3, 1000, MIB))
    joiner.add(part(4, 1000, MIB))
    joiner.forget(3)
    assert joiner.pending_bytes == MIB
    whole = joiner.add(part(4, 1000, 10, more=False))
    assert whole is not None
    assert len(whole.data) == MIB + 10
    assert joiner.pending_bytes == 0


@pytest.mark.parametrize("seed", range(5))
def test_loads_reads_across_parts_wherever_they_are_cut(seed: int) -> None:
    rng = random.Random(seed)
    value = {
        "big": os.urandom(300_000),
        "text": "é" * 5000,
        "list": list(range(3000)),
        "nested": [(b"x" * rng.randrange(1, 100_000), i) for i in range(20)],
    }
    data = bytes(dumps_body(value))
    cuts = sorted(rng.sample(range(1, len(data)), 40))
    body = Body()
    body.parts = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    body.size = len(data)
    assert loads(body) == value


def test_loads_across_parts_still_refuses_what_is_not_plain() -> None:
    # A bytearray made read-only (READONLY_BUFFER) unpickles as a memoryview: not plain data.
    data = b"\x80\x05\x96\x01\x00\x00\x00\x00\x00\x00\x00a\x98."
    body = Body()
    body.parts = [data[:3], data[3:12], data[12:]]
    body.size = len(data)
    with pytest.raises(StreamError):
        loads(body)


# The fair lock and a child's writer --------------------------------------------------------------
def wait_until(predicate: Any) -> None:
    for _ in range(10_000):
        if predicate():
            return
        threading.Event().wait(0.001)
    raise AssertionError("timed out")


@pytest.mark.timeout(30)
def test_fair_lock_goes_to_the_longest_waiter() -> None:
    lock = FairLock()
    got: list[str] = []

    def take(name: str) -> None:
        with lock:
            got.append(name)

    lock.__enter__()
    threads = []
    for name in "ab":
        thread = threading.Thread(target=take, args=(name,))
        thread.start()
        threads.append(thread)
        waiting = len(threads)
        wait_until(lambda: len(lock._waiters) == waiting)  # noqa: B023 - used at once
    lock.__exit__()
    take("holder again")  # queues behind the two waiters instead of taking it straight back
    for thread in threads:
        thread.join(10)
    assert got == ["a", "b", "holder again"]
    assert not lock._held


@pytest.mark.timeout(30)
def test_a_thread_writing_a_split_message_lets_others_in_after_each_part() -> None:
    written: list[tuple[str, int]] = []
    started = threading.Event()

    def write(parts: list[Any]) -> bool:
        header = HEADER.unpack(bytes(parts[0])[: HEADER.size])
        written.append((threading.current_thread().name, header[5]))
        if header[5] == 1000 and not started.is_set():
            started.set()
            wait_until(lambda: len(sender.lock._waiters) == 1)  # the other thread waits
        return True

    sender = SplitSender(write)
    big = threading.Thread(
        target=sender.send, args=(Message(0, 3, 1000, 0, b"b" * (3 * PART_SIZE)),), name="big"
    )
    big.start()
    assert started.wait(10)
    small = threading.Thread(
        target=sender.send, args=(Message(0, 3, 1001, 0, b"small"),), name="small"
    )
    small.start()
    big.join(10)
    small.join(10)
    assert written == [("big", 1000), ("small", 1001), ("big", 1000), ("big", 1000)]


# The master's lanes ------------------------------------------------------------------------------
class FakeSide:
    """A descriptor that takes ``room`` bytes, then would block until given more."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.data = bytearray()

    def writev(self, buffers: list[Any]) -> int:
        if not self.room:
            raise BlockingIOError
        n = 0
        for buffer in buffers:
            take = bytes(buffer)[: self.room - n]
            self.data += take
            n += len(take)
            if n == self.room:
                break
        self.room -= n
        return n


def drain(out: Outbox, side: FakeSide) -> list[tuple[int, int, int]]:
    """Let everything out; the (dst, handle, size) of each whole frame, in wire order."""
    while out:
        side.room = 64 * 1024
        out.flush()
    return [(m.dst, m.handle, len(m.data)) for m in decode(bytes(side.data))]


def test_lanes_of_messages() -> None:
    assert lane_of(Message(5, 0, HANDLE_CALL, 1001)) == ((5, 1001), (5, 0))
    assert lane_of(Message(5, 0, HANDLE_CALL, 0)) == ((5, 0), None)
    assert lane_of(Message(5, 0, HANDLE_CANCEL), 1001) == ((5, 1001), (5, 0))
    assert lane_of(Message(5, 0, HANDLE_CREDIT), 1001) == ((5, 1001), None)
    assert lane_of(Message(5, 0, 1002)) == ((5, 1002), None)
    assert lane_of(Message(5, 0, HANDLE_LOAD_MODULE)) == ((5, 0), None)


def test_small_messages_pass_a_split_one_of_another_lane_part_by_part() -> None:
    side = FakeSide(0)
    out = Outbox(side, lambda reason: None)  # type: ignore[arg-type]
    out.send(Message(5, 0, 1000, 0, b"B" * (4 * PART_SIZE)))  # a big stream item
    for handle in (1001, 1002):
        out.send(Message(5, 0, HANDLE_CALL, handle, b"small call"))
    out.send(Message(5, 0, 1000, 0, b"after the item, same lane"))
    assert out.queued == 4 * PART_SIZE + 2 * 10 + 25 + 7 * HEADER.size
    frames = drain(out, side)
    assert frames == [
        (5, 1000, PART_SIZE),  # started at once (the fd was full: it waits as ``current``)
        (5, HANDLE_CALL, 10),
        (5, HANDLE_CALL, 10),
        (5, 1000, PART_SIZE),
        (5, 1000, PART_SIZE),
        (5, 1000, PART_SIZE),
        (5, 1000, 25),
    ]
    assert out.queued == 0


def test_two_split_messages_of_different_lanes_take_turns() -> None:
    side = FakeSide(0)
    out = Outbox(side, lambda reason: None)  # type: ignore[arg-type]
    out.send(Message(5, 0, 1000, 0, b"A" * (3 * PART_SIZE)))
    out.send(Message(6, 0, 1000, 0, b"B" * (2 * PART_SIZE)))
    out.send(Message(5, 0, 1001, 0, b"small"))
    assert [(dst, handle) for dst, handle, _ in drain(out, side)] == [
        (5, 1000),  # the first part of A started at once
        (5, 1001),
        (5, 1000),
        (6, 1000),
        (5, 1000),
        (6, 1000),
    ]


def test_calls_do_not_pass_a_large_call_without_an_answer() -> None:
    side = FakeSide(0)
    out = Outbox(side, lambda reason: None)  # type: ignore[arg-type]
    out.send(Message(5, 0, HANDLE_CALL, 0, b"N" * (2 * PART_SIZE)))  # call_no_reply
    out.send(Message(5, 0, HANDLE_CALL, 1001, b"call"))
    out.send(Message(5, 0, 1001, 0, b"item for its channel"))
    out.send(Message(5, 0, HANDLE_CREDIT, 0, b"credit for it"), 1001)
    out.send(Message(6, 0, HANDLE_CALL, 1002, b"other context"))
    assert drain(out, side) == [
        (5, HANDLE_CALL, PART_SIZE),
        (6, HANDLE_CALL, 13),  # another context's lane passes
        (5, HANDLE_CALL, PART_SIZE),
        (5, HANDLE_CALL, 4),
        (5, 1001, 20),
        (5, HANDLE_CREDIT, 13),
    ]


def test_a_shutdown_waits_for_every_message_sent_to_its_context_before_it() -> None:
    side = FakeSide(0)
    out = Outbox(side, lambda reason: None)  # type: ignore[arg-type]
    out.send(Message(5, 0, HANDLE_CALL, 1001, b"A" * (2 * PART_SIZE)))
    out.send(Message(6, 0, 1002, 0, b"B" * (2 * PART_SIZE)))
    out.send(Message(5, 0, HANDLE_SHUTDOWN, 0, b""))
    out.send(Message(6, 0, HANDLE_CALL, 1003, b"other context"))
    assert drain(out, side) == [
        (5, HANDLE_CALL, PART_SIZE),
        (6, HANDLE_CALL, 13),  # another context's traffic passes the held shutdown
        (5, HANDLE_CALL, PART_SIZE),
        (5, HANDLE_SHUTDOWN, 0),  # once the call to its context is all out
        (6, 1002, PART_SIZE),
        (6, 1002, PART_SIZE),
    ]


def test_a_partly_written_frame_is_finished_before_any_other() -> None:
    side = FakeSide(100)
    out = Outbox(side, lambda reason: None)  # type: ignore[arg-type]
    out.send(Message(5, 0, HANDLE_CALL, 1001, b"c" * 500))  # 100 bytes go at once
    assert out.current
    assert out.queued == 500 + HEADER.size - 100
    out.send(Message(5, 0, HANDLE_CALL, 1002, b"second"))
    assert drain(out, side) == [(5, HANDLE_CALL, 500), (5, HANDLE_CALL, 6)]


def test_a_failed_write_drops_the_queue_and_says_why() -> None:
    reasons: list[str] = []

    class Broken(FakeSide):
        def writev(self, buffers: list[Any]) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    out = Outbox(Broken(0), reasons.append)  # type: ignore[arg-type]
    out.send(Message(5, 0, 1000, 0, b"x" * (3 * PART_SIZE)))
    assert not out
    assert out.queued == 0
    assert reasons == ["writing to it failed: [Errno 32] Broken pipe"]


# Through real contexts ---------------------------------------------------------------------------
real = pytest.mark.usefixtures("servers_first")


@real
@pytest.mark.timeout(120)
async def test_a_small_call_overtakes_a_large_one_sent_before_it(where: tm.Context) -> None:
    ctx = where
    with trio.fail_after(WAIT):
        await ctx.call(ph.reset)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ctx.call, ph.record, "large", b"L" * (64 * MIB))
            await trio.sleep(0)  # the large call is queued (and partly written) first
            assert await ctx.call(ph.record, "small") == 0
        assert await ctx.call(ph.order) == ["small", "large"]


@real
@pytest.mark.timeout(120)
async def test_replies_pass_a_large_stream_item_while_it_is_written(where: tm.Context) -> None:
    """The child's producer thread writes a 256 MiB item part by part; the main thread's
    replies go between the parts (one after the whole item would be at most one call)."""
    ctx = where
    with trio.fail_after(WAIT):
        await ctx.call(ph.reset)
        done = trio.Event()
        answered = 0

        async def consume() -> None:
            async with ctx.open_stream(ph.big_when_released, 200 * MIB) as items:
                assert len(await items.receive()) == 200 * MIB
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await ctx.call(ph.release)
            while not done.is_set():
                await ctx.call(os.getpid)
                answered += 1
        assert answered >= 10, answered


@pytest.mark.timeout(120)
async def test_an_intermediate_holds_a_part_of_a_message_passing_through_not_all_of_it() -> None:
    with trio.fail_after(WAIT):
        async with (
            tm.open_context(tm.local()) as middle,
            tm.open_context(tm.local(), via=middle) as leaf,
        ):
            before = await middle.call(ph.peak_kib)
            assert await leaf.call(ph.record, "down", b"D" * (200 * MIB)) == 200 * MIB
            up = await leaf.call(os.urandom, 100 * MIB)
            assert len(up) == 100 * MIB
            grown = await middle.call(ph.peak_kib) - before
            assert grown < 48 * 1024, "the intermediate's peak grew by %d KiB" % grown


@pytest.mark.timeout(120)
async def test_a_hostile_child_cannot_make_the_master_hold_unfinished_parts_without_bound(
    caplog: pytest.LogCaptureFixture, no_leaked_fds: None
) -> None:
    """Parts of messages it never finishes, and one message larger than the limit: each is
    refused with a line naming the child, the master holds at most twice the limit, and
    honest calls go on (the limit is made 4 MiB here so that the child need not send GiBs)."""
    from tests import hostile_child as hc
    from tests.test_hostile import HOSTILE

    caplog.set_level(logging.WARNING, logger="trimitogen")
    method = tm.local(python=[sys.executable, HOSTILE, "relay"])
    more = FLAG_PART | FLAG_MORE
    with trio.fail_after(WAIT):
        async with tm.open_context(method, name="hostile") as ctx:
            joiner = ctx._conn.parts
            joiner.max_message_size = 4 * MIB
            too_big: list[tuple[int | None, int, bytes]] = [
                (6000, more, b"t" * PART_SIZE) for _ in range(6)
            ]
            assert await ctx.call(hc.relay, too_big) == 6
            assert joiner.pending_bytes == 0
            unfinished: list[tuple[int | None, int, bytes]] = [
                (5000 + i, more, b"u" * MIB) for i in range(12)
            ]
            assert await ctx.call(hc.relay, unfinished) == 12
            assert joiner.pending_bytes == 8 * MIB
            # A whole message for a handle with unfinished parts is delivered as itself.
            whole: Any = await ctx.call(hc.relay, [(None, 0, pickle_ok("whole"))])
            assert whole == "whole"
            assert await ctx.call(rh.echo, 1) == 1
            assert joiner.pending_bytes <= 8 * MIB
    lines = [r.getMessage() for r in caplog.records if "dropped a split message" in r.getMessage()]
    assert any("unfinished split messages over 8388608 bytes" in line for line in lines), lines
    assert any("a message over the limit of 4194304 bytes" in line for line in lines), lines
    assert all("from context %d" % ctx.context_id in line for line in lines), lines


def pickle_ok(value: Any) -> bytes:
    from trimitogen.core.messages import ReplyOk

    return bytes(ReplyOk.pack(True, value))


def test_large_bodies_reuse_a_buffer_only_once_nobody_holds_the_message() -> None:
    decoder = FrameDecoder()

    def one(fill: bytes) -> Message:
        """A frame read as the drivers read it: the header, then the body in place."""
        frame = wire(split_frames(Message(0, 3, 1000, 0, fill * (200 * 1024))))
        decoder.receive_data(frame[: HEADER.size])
        view = decoder.body_view()
        assert view is not None
        view[:] = frame[HEADER.size :]
        del view
        decoder.body_filled(200 * 1024)
        (msg,) = decoder.messages()
        return msg

    held = one(b"a")
    second = one(b"b")
    assert bytes(held.data) == b"a" * (200 * 1024)  # not overwritten while it is held
    assert held.data.obj is not second.data.obj
    buffer = id(second.data.obj)  # (a reference to it would keep it from being used again)
    del second
    third = one(b"c")
    assert id(third.data.obj) == buffer  # used again once its message was dropped
    assert bytes(third.data) == b"c" * (200 * 1024)
    assert loads(dumps_body(bytes(third.data))) == b"c" * (200 * 1024)
