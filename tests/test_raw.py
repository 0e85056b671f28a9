"""Raw bodies (FLAG_RAW): byte streams and file chunks travel unpickled, read where they land.

Unit tests drive the sender's windows, the decoder and the reused buffers directly; the rest
run real contexts, locally and at the end of an ssh → sudo chain.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

import trimitogen as tm
from tests import stream_helpers as sh
from tests.conftest import WAIT
from trimitogen._streams import WINDOW_ITEMS
from trimitogen.core.batching import Raw, Sender, Window
from trimitogen.core.messages import ReplyOk, decode_stream
from trimitogen.core.parts import PART_SIZE, Reassembler, split_frames
from trimitogen.core.protocol import FLAG_RAW, Body, FrameDecoder, Message, frame
from trimitogen.core.readers import BufferPool

MIB = 1024 * 1024
KEY = (0, 1000)

pytestmark = pytest.mark.usefixtures("servers_first")


# -- the child's sender -----------------------------------------------------------------------
class Calls:
    max_message_size = 16 * MIB

    @staticmethod
    def explain(exc: BaseException) -> str:
        return str(exc)


class Parent:
    """Records each frame the sender writes; holds the first write until released."""

    context_id = 5

    def __init__(self) -> None:
        self.calls = Calls()
        self.frames: list[Message] = []
        self.release = threading.Event()
        self.writing = threading.Event()
        self._hold = True

    def send(self, msg: Message) -> None:
        self.writing.set()
        if self._hold:
            self._hold = False
            assert self.release.wait(WAIT)
        self.frames.append(msg)

    def wait_for(self, count: int) -> list[Message]:
        deadline = time.monotonic() + WAIT
        while len(self.frames) < count:
            assert time.monotonic() < deadline, self.frames
            time.sleep(0.001)
        return self.frames


def test_raw_items_handed_over_during_a_write_go_in_one_frame_without_a_copy() -> None:
    parent = Parent()
    window = Window(Sender(parent), KEY, 64, 16 * MIB)
    first = b"a" * 1000
    assert window.put_sync(Raw(first))
    assert parent.writing.wait(WAIT)
    later = [bytes([i]) * 5000 for i in range(3)]
    for data in later:
        assert window.put_sync(Raw(data))
    parent.release.set()
    alone, joined = parent.wait_for(2)
    assert alone.flags & FLAG_RAW
    assert alone.data.parts == [first]
    assert joined.flags & FLAG_RAW
    # The very buffers handed over, gathered: nothing was copied or pickled.
    assert all(a is b for a, b in zip(joined.data.parts, later, strict=True))
    assert len(joined.data) == 15000
    assert window.items == 64 - 2  # one item of credit per frame, as the master counts


def test_raw_and_pickled_items_never_share_a_frame_and_keep_their_order() -> None:
    parent = Parent()
    window = Window(Sender(parent), KEY, 64, 16 * MIB)
    assert window.put_sync("first")
    assert parent.writing.wait(WAIT)
    for value in (Raw(b"r1"), Raw(b"r2"), "p1", "p2", Raw(b"r3")):
        assert window.put_sync(value)
    parent.release.set()
    frames = parent.wait_for(4)
    kinds: list[Any] = []
    for msg in frames:
        if msg.flags & FLAG_RAW:
            kinds.append(b"".join(msg.data.parts))
        else:
            body = decode_stream(bytes(b"".join(msg.frame_parts()[1:])))
            kinds.append(body.value if type(body) is ReplyOk else tuple(body.values))
    assert kinds == ["first", b"r1r2", ("p1", "p2"), b"r3"]


def test_a_producer_waiting_for_item_credit_goes_on_when_raw_items_are_joined() -> None:
    """Joining raw items frees credit without any grant from the master: the producer must be
    woken, or it would wait for a grant the master has no reason to send."""
    parent = Parent()
    window = Window(Sender(parent), KEY, 4, 16 * MIB)
    assert window.put_sync(Raw(b"0"))
    assert parent.writing.wait(WAIT)
    for i in range(1, 4):
        assert window.put_sync(Raw(b"%d" % i))  # three wait; the credit left is spoken for
    fifth = threading.Thread(target=window.put_sync, args=(Raw(b"4"),))
    fifth.start()
    time.sleep(0.05)
    assert fifth.is_alive()  # waits: four items are handed over, four granted
    parent.release.set()
    fifth.join(WAIT)
    assert not fifth.is_alive()
    frames = parent.wait_for(3)
    assert b"".join(b"".join(m.data.parts) for m in frames) == b"01234"


# -- the decoder ------------------------------------------------------------------------------
class ChoppySide:
    """A Side over fixed bytes whose every read returns a random amount (at most asked)."""

    def __init__(self, data: bytes, seed: int) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._rng = random.Random(seed)

    def _take(self, n: int) -> memoryview:
        n = min(n, self._rng.randint(1, 200_000))
        chunk = self._data[self._pos : self._pos + n]
        self._pos += len(chunk)
        return chunk

    def read(self, n: int) -> bytes:
        return bytes(self._take(n))

    def readinto(self, buffer: Any) -> int:
        chunk = self._take(len(buffer))
        memoryview(buffer)[: len(chunk)] = chunk
        return len(chunk)


def decode_all(decoder: FrameDecoder, data: bytes, seed: int) -> list[Message]:
    side = ChoppySide(data, seed)
    got: list[Message] = []
    while decoder.read_from(side)[0]:
        got.extend(decoder.messages())
    return got


@pytest.mark.parametrize("seed", range(5))
def test_raw_bodies_are_read_as_the_bytes_of_each_read(seed: int) -> None:
    raw = os.urandom(700_000)
    pickled = b"p" * 300_000
    stream = b"".join(
        frame(m)
        for m in (
            Message(0, 5, 1000, 0, raw, FLAG_RAW),
            Message(0, 5, 1001, 0, b"small", FLAG_RAW),
            Message(0, 5, 1002, 0, pickled),
            Message(0, 5, 1000, 0, raw[:100_000], FLAG_RAW),
        )
    )
    big, small, other, second = decode_all(FrameDecoder(raw_pieces=True), stream, seed)
    assert type(big.data) is Body
    assert all(type(p) in (bytes, bytearray) for p in big.data.parts)
    assert b"".join(big.data.parts) == raw
    assert len(big.data) == len(raw)
    assert all(big.data.parts)  # no empty piece, which a byte stream would take for its end
    assert small.data == b"small"
    assert type(other.data) is memoryview
    assert bytes(other.data) == pickled
    assert bytes(second.data) == raw[:100_000]
    # A handle whose consumer writes from the receive buffers gets views of them.
    decoder = FrameDecoder(raw_pieces=True)
    decoder.view_handles.add(1000)
    big, _, _, _ = decode_all(decoder, stream, seed)
    assert type(big.data) is memoryview
    assert bytes(big.data) == raw
    # Without raw_pieces (a child), raw bodies are read in place like any other.
    big, _, _, _ = decode_all(FrameDecoder(), stream, seed)
    assert type(big.data) is memoryview
    assert bytes(big.data) == raw


class TricklingSide(ChoppySide):
    """A peer that writes a byte at a time."""

    def _take(self, n: int) -> memoryview:
        chunk = self._data[self._pos : self._pos + 1]
        self._pos += len(chunk)
        return chunk


def test_a_raw_body_trickled_a_byte_at_a_time_costs_a_page_per_page() -> None:
    raw = os.urandom(300_000)
    decoder = FrameDecoder(raw_pieces=True)
    side = TricklingSide(frame(Message(0, 5, 1000, 0, raw, FLAG_RAW)), 0)
    got: list[Message] = []
    while decoder.read_from(side)[0]:
        got.extend(decoder.messages())
    (msg,) = got
    assert bytes(msg.data) == raw
    assert len(msg.data.parts) <= len(raw) // FrameDecoder.SMALL_PIECE + 2


def test_a_raw_message_split_in_parts_is_joined_flat() -> None:
    raw = os.urandom(2 * PART_SIZE + 5000)
    stream = b"".join(
        bytes(b"".join(bytes(p) for p in parts))
        for parts in split_frames(Message(0, 5, 1000, 0, raw, FLAG_RAW))
    )
    joiner = Reassembler()
    whole = [joiner.add(m) for m in decode_all(FrameDecoder(raw_pieces=True), stream, 1)]
    assert whole[:2] == [None, None]
    msg = whole[2]
    assert msg is not None
    assert msg.flags == FLAG_RAW
    assert all(type(p) in (bytes, bytearray) for p in msg.data.parts)
    assert bytes(msg.data) == raw


def test_a_pool_buffer_is_used_again_once_no_view_of_it_is_left() -> None:
    pool = BufferPool(4096, 2)
    first = pool.take()
    part = first[:10]
    del first
    second = pool.take()
    assert second.obj is not part.obj  # a view of the first is still held
    del part
    third = pool.take()
    assert third.obj is not second.obj
    kept = id(third.obj)
    del third
    assert id(pool.take().obj) == kept  # free again
    extra = [pool.take() for _ in range(3)]  # more than kept while all are held
    assert len({id(v.obj) for v in extra}) == 3


# -- through real contexts --------------------------------------------------------------------
@contextlib.asynccontextmanager
async def relayed_pair(
    ctx: tm.Context,
) -> AsyncIterator[tuple[trio.abc.HalfCloseableStream, trio.SocketStream]]:
    """A byte stream relayed by ``ctx`` to a listener here, and the connection it accepted."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    try:
        async with trio.open_nursery() as nursery:
            accepted: list[trio.SocketStream] = []

            async def accept() -> None:
                accepted.append(await listeners[0].accept())

            nursery.start_soon(accept)
            relayed = await ctx.open_tcp_stream("127.0.0.1", port)
        async with relayed, accepted[0] as far:
            yield relayed, far
    finally:
        for listener in listeners:
            await listener.aclose()


async def test_byte_stream_bytes_arrive_exactly_both_ways(where: tm.Context) -> None:
    """Large random payloads each way: from ``bytes`` (sent from where they are) and from a
    ``bytearray`` changed as soon as ``send_all`` returns (which must have copied it), and
    received in pieces of random sizes, every one a ``bytes``."""
    payload = os.urandom(6 * MIB + 123)
    rng = random.Random(7)
    with trio.fail_after(WAIT * 2):
        async with relayed_pair(where) as (relayed, far):

            async def send_mutable() -> None:
                scratch = bytearray(MIB)
                for start in range(0, len(payload), MIB):
                    piece = payload[start : start + MIB]
                    scratch[: len(piece)] = piece
                    await relayed.send_all(memoryview(scratch)[: len(piece)])
                    scratch[:] = b"\0" * MIB  # too late to change what was sent
                await relayed.send_all(payload)

            async def echo_back() -> None:
                got = bytearray()
                while len(got) < 2 * len(payload):
                    got += await far.receive_some()
                assert bytes(got) == payload * 2
                await far.send_all(payload)
                await far.send_eof()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_mutable)
                nursery.start_soon(echo_back)
                pieces = []
                while True:
                    piece = await relayed.receive_some(rng.choice([None, 1, 1000, MIB]))
                    if not piece:
                        break
                    assert type(piece) is bytes
                    pieces.append(piece)
            assert b"".join(pieces) == payload


@pytest.mark.parametrize("fn", [sh.send_raw_pieces, sh.asend_raw_pieces])
async def test_raw_bytes_a_function_sends_arrive_as_bytes(where: tm.Context, fn: Any) -> None:
    with trio.fail_after(WAIT):
        async with where.open_channel(fn, 40, 70_000) as channel:
            got = [item async for item in channel]
    assert all(type(item) is bytes for item in got)
    assert b"".join(got) == b"".join(bytes([i]) * 70_000 for i in range(40))


async def test_a_function_of_the_users_gets_bytes_not_views(ctx: tm.Context) -> None:
    with trio.fail_after(WAIT):
        async with ctx.open_channel(sh.raw_kinds) as channel:
            await channel.send_bytes(b"x" * 200_000)  # type: ignore[attr-defined]
            await channel.send(b"pickled")
            assert [await channel.receive(), await channel.receive()] == ["bytes", "bytes"]


async def test_a_chatty_peer_through_a_relay_arrives_whole(ctx: tm.Context) -> None:
    """Many small writes from the far end (each a short read in the relay, copied so it does
    not hold a read buffer) arrive in order, as bytes."""
    words = [b"%d," % i for i in range(3000)]
    with trio.fail_after(WAIT):
        async with relayed_pair(ctx) as (relayed, far):
            for word in words:
                await far.send_all(word)
            await far.send_eof()
            got = b""
            while piece := await relayed.receive_some():
                got += piece
        assert got == b"".join(words)


async def test_raw_frames_beyond_the_credit_are_refused(ctx: tm.Context) -> None:
    with trio.fail_after(WAIT):
        async with ctx.open_stream(sh.flood_raw_without_credit, WINDOW_ITEMS * 3) as items:
            await trio.sleep(1.0)  # let the flood arrive unread
            with pytest.raises(tm.StreamError, match="never given credit"):
                async for _ in items:
                    pass
        assert await ctx.call(sh.echo, "alive") == "alive"  # the connection survives


class RecordingChannel:
    """Stands in for the channel under a byte stream: records what ``send_all`` hands on."""

    _name = "recording"

    def __init__(self) -> None:
        self.raw_parts = False
        self.sent: list[Any] = []

    async def send_bytes(self, data: Any) -> None:
        self.sent.append(data)


@pytest.mark.parametrize("kind", ["bytes", "view of bytes", "bytearray", "view of bytearray"])
async def test_send_all_copies_only_what_the_caller_could_change(kind: str) -> None:
    from trimitogen._bytestreams import PIECE, RemoteByteStream
    from trimitogen._streams import unchanging

    source: Any = os.urandom(2 * PIECE + 10)
    if "bytearray" in kind:
        source = bytearray(source)
    given = memoryview(source) if "view" in kind else source
    channel = RecordingChannel()
    stream = RemoteByteStream(channel, ("127.0.0.1", 1))  # type: ignore[arg-type]
    await stream.send_all(given)
    assert [len(piece) for piece in channel.sent] == [PIECE, PIECE, 10]
    sent = [unchanging(piece) for piece in channel.sent]  # as RemoteChannel.send_bytes does
    assert b"".join(bytes(piece) for piece in sent) == bytes(source)
    for piece in sent:
        if "bytearray" in kind:
            assert type(piece) is bytes  # a copy: the caller may change its buffer at once
        else:
            assert type(piece) is memoryview
            assert piece.obj is source  # sent from where it is


def test_unchanging_counts_bytes_not_elements() -> None:
    import array

    from trimitogen._streams import unchanging

    numbers = array.array("i", range(1000))
    copied = unchanging(memoryview(numbers))
    assert type(copied) is bytes
    assert len(copied) == 1000 * numbers.itemsize
    frozen = memoryview(bytes(numbers)).cast("i")
    view = unchanging(frozen)
    assert len(view) == len(copied)  # a view of bytes, counted in bytes
    assert bytes(view) == copied
