"""Streams from remote generators: order, early close, errors, death, flow control, hostility.

Locally and at the end of an ssh → sudo chain.  Flow control is shown by counting what the remote
generator produced while the consumer does not read (never more than a window ahead), and by the
memory of the master, the intermediate and the child staying within a few windows while a
generator that could send 1 GiB waits, as calls on the same context keep answering.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import pytest
import trio
import trio.testing

import trimitogen as tm
from tests import stream_helpers as sh
from tests.conftest import WAIT
from trimitogen._streams import WINDOW_BYTES, WINDOW_ITEMS

MIB = 1024 * 1024


async def drain(ctx: tm.Context, fn: Any, *args: Any, into: list[Any] | None = None) -> list[Any]:
    """Every item of ``fn(*args)``'s stream (appended to ``into`` as they come)."""
    got = [] if into is None else into
    async with ctx.open_stream(fn, *args) as items:
        async for item in items:
            got.append(item)
    return got


async def drain_channel(items: trio.abc.ReceiveChannel[Any]) -> None:
    async for _ in items:
        pass


pytestmark = pytest.mark.usefixtures("servers_first")


async def test_items_arrive_in_order_and_the_stream_ends(where: tm.Context) -> None:
    with trio.fail_after(WAIT):
        async with where.open_stream(sh.count, 1000) as items:
            assert isinstance(items, trio.abc.ReceiveChannel)
            got = [item async for item in items]
            with pytest.raises(trio.EndOfChannel):
                await items.receive()
    assert got == list(range(1000))
    with pytest.raises(trio.ClosedResourceError):
        await items.receive()


async def test_async_generators_under_trio(where: tm.Context) -> None:
    with trio.fail_after(WAIT):
        async with where.open_stream(sh.trio_count, 50) as items:
            assert [item async for item in items] == list(range(50))


async def test_leaving_early_closes_the_remote_generator(where: tm.Context) -> None:
    await where.call(sh.reset)
    with trio.fail_after(WAIT):
        async with where.open_stream(sh.endless) as items:
            async for item in items:
                if item == 300:
                    break
        while "GeneratorExit" not in await where.call(sh.events):
            await trio.sleep(0.01)
        async with where.open_stream(sh.trio_endless) as aitems:
            assert await aitems.receive() == 0
        while not any("trio endless ended" in e for e in await where.call(sh.events)):
            await trio.sleep(0.01)


async def test_cancelling_the_consumer_closes_the_generator(ctx: tm.Context) -> None:
    await ctx.call(sh.reset)
    with trio.move_on_after(0.5) as scope:
        async with ctx.open_stream(sh.slow_items, 0.01) as items:
            async for _ in items:
                pass
    assert scope.cancelled_caught
    with trio.fail_after(WAIT):
        assert await ctx.call(sh.echo, 5) == 5


async def test_a_remote_exception_ends_the_iteration(where: tm.Context) -> None:
    got: list[int] = []
    with trio.fail_after(WAIT), pytest.raises(KeyError) as info:
        await drain(where, sh.fail_after, 3, into=got)
    assert got == [0, 1, 2]
    assert isinstance(info.value, tm.CallError)
    assert "after 3" in info.value.message


async def test_an_item_that_cannot_travel_ends_the_stream_after_the_others(
    where: tm.Context,
) -> None:
    got: list[int] = []
    with trio.fail_after(WAIT), pytest.raises(TypeError, match="cannot send an object") as info:
        await drain(where, sh.not_plain_after, 100, into=got)
    assert got == list(range(100))
    assert isinstance(info.value, tm.CallError)


async def test_a_generator_may_stop_on_its_own(ctx: tm.Context) -> None:
    async with ctx.open_stream(sh.returns_early) as items:
        assert [item async for item in items] == [1]


async def test_a_function_that_is_not_a_generator_is_refused(ctx: tm.Context) -> None:
    with pytest.raises(TypeError, match="not a generator"):
        async with ctx.open_stream(sh.not_a_generator) as items:  # type: ignore[call-overload]
            await items.receive()


async def test_a_context_that_dies_mid_stream_gives_channel_error() -> None:
    with trio.fail_after(WAIT):
        async with (
            tm.open_context(tm.local()) as ctx,
            ctx.open_stream(sh.slow_items, 0.01) as items,
        ):
            assert await items.receive() == 0
            assert ctx.pid is not None
            os.kill(ctx.pid, 9)
            with pytest.raises(tm.ChannelError):
                await drain_channel(items)


async def test_a_stalled_consumer_makes_the_producer_wait(where: tm.Context) -> None:
    """The generator could send 1 GiB; the consumer takes 8 items then stops.  The producer is
    never more than a window ahead, the memory of the master, the intermediate and the child
    stay within a few windows, and calls on the same context keep answering meanwhile.

    Locally a second local context is started through ``where`` (``via=``), so ``where`` is the
    intermediate; at the end of the ssh → sudo chain the intermediate is the ssh context."""
    async with contextlib.AsyncExitStack() as stack:
        if where.via is None:
            hop = where
            with trio.fail_after(WAIT):
                ctx = await stack.enter_async_context(tm.open_context(tm.local(), via=hop))
        else:
            hop, ctx = where.via, where
        await stalled_consumer(hop, ctx)


async def stalled_consumer(hop: tm.Context, ctx: tm.Context) -> None:
    size = 1 * MIB
    await ctx.call(sh.reset)
    master_before = sh.rss_kib()
    hop_before = await hop.call(sh.rss_kib)
    child_before = await ctx.call(sh.rss_kib)
    bound = 4 * WINDOW_BYTES + 32 * MIB
    with trio.fail_after(WAIT):
        async with ctx.open_stream(sh.chunks, 1024, size) as items:
            for expected in range(8):
                chunk = await items.receive()
                assert chunk == bytes([expected]) * size
            # Let the producer run as far as it can.
            last = -1
            while (now := await ctx.call(sh.produced)) != last:
                last = now
                await trio.sleep(0.3)
            window_items = min(WINDOW_ITEMS, WINDOW_BYTES // size + 1)
            assert 8 <= last <= 8 + window_items + 1, last
            for _ in range(20):
                assert await ctx.call(sh.echo, "still answering") == "still answering"
            master_growth = (sh.rss_kib() - master_before) * 1024
            hop_growth = (await hop.call(sh.rss_kib) - hop_before) * 1024
            child_growth = (await ctx.call(sh.rss_kib) - child_before) * 1024
            assert master_growth < bound, master_growth
            assert hop_growth < bound, hop_growth
            assert child_growth < bound, child_growth
            # Reading on resumes the stream.
            for expected in range(8, 40):
                assert await items.receive() == bytes([expected % 256]) * size
    with trio.fail_after(WAIT):
        while not any(e.startswith("chunks closed") for e in await ctx.call(sh.events)):
            await trio.sleep(0.01)


async def test_a_child_sending_beyond_its_credit_is_refused(ctx: tm.Context) -> None:
    extra = WINDOW_ITEMS * 3
    with trio.fail_after(WAIT):
        async with ctx.open_stream(sh.flood_without_credit, extra) as items:
            await trio.sleep(1.0)  # let the flood arrive unread
            with pytest.raises(tm.StreamError, match="never given credit"):
                await drain_channel(items)
        assert await ctx.call(sh.echo, "alive") == "alive"  # the connection survives


async def test_every_item_of_a_batch_counts_against_the_credit(ctx: tm.Context) -> None:
    """A batch of a whole window is taken; one item more than the window is refused, whatever
    frame it comes in."""
    with trio.fail_after(WAIT):
        assert await drain(ctx, sh.flood_batch, WINDOW_ITEMS) == list(range(WINDOW_ITEMS))
        with pytest.raises(tm.StreamError, match="never given credit"):
            await drain(ctx, sh.flood_batch, WINDOW_ITEMS + 1)
        assert await ctx.call(sh.echo, "alive") == "alive"


async def test_a_lone_item_goes_at_once() -> None:
    """A generator yields one item, then waits 30 s: the item arrives at once, never held back
    for a batch to fill or for the next item."""
    with trio.fail_after(WAIT):
        async with tm.open_context(tm.local()) as ctx:
            for fn in (sh.one_then_wait, sh.trio_one_then_wait):
                async with ctx.open_stream(fn, 30.0) as items:
                    with trio.fail_after(5):
                        assert await items.receive() == "first"


async def test_statistics_show_no_stream_left(ctx: tm.Context) -> None:
    async with ctx.open_stream(sh.count, 10) as items:
        assert [i async for i in items] == list(range(10))
    conn: Any = ctx._conn  # the registry is internal; nothing may stay in it
    assert not conn.streams


# -- two-way channels -------------------------------------------------------------------------
async def test_a_channel_talks_both_ways(where: tm.Context) -> None:
    with trio.fail_after(WAIT):
        async with where.open_channel(sh.upper, "!") as channel:
            assert isinstance(channel, trio.abc.Channel)
            for word in ("a", "bc", "def"):
                await channel.send(word)
                assert await channel.receive() == word.upper() + "!"
        async with where.open_channel(sh.double) as channel:
            await channel.send(21)
            assert await channel.receive() == 42


async def test_a_channel_ends_when_its_function_returns(ctx: tm.Context) -> None:
    with trio.fail_after(WAIT):
        async with ctx.open_channel(sh.total_until_zero) as channel:
            for value in (5, 6, 0):
                await channel.send(value)
            assert await channel.receive() == 11
            with pytest.raises(trio.EndOfChannel):
                await channel.receive()
            with pytest.raises(trio.BrokenResourceError):
                await channel.send(1)
    with pytest.raises(trio.ClosedResourceError):
        await channel.send(1)


async def test_a_remote_error_ends_a_channel(ctx: tm.Context) -> None:
    with trio.fail_after(WAIT):
        async with ctx.open_channel(sh.fails_on, "bad") as channel:
            await channel.send("good")
            assert await channel.receive() == "good"
            await channel.send("bad")
            with pytest.raises(ValueError, match="refused"):
                await channel.receive()


async def test_sending_to_a_child_that_does_not_read_waits(ctx: tm.Context) -> None:
    """The master's sends stop at the child's window (64 items) instead of piling up."""
    await ctx.call(sh.reset)
    sent = 0
    with trio.fail_after(WAIT):
        async with ctx.open_channel(sh.never_reads) as channel:
            with trio.move_on_after(1.0) as scope:
                while True:
                    await channel.send(sent)
                    sent += 1
            assert scope.cancelled_caught
            assert 60 <= sent <= 70, sent
            assert await ctx.call(sh.echo, "calls still answer") == "calls still answer"
        while "never_reads saw the close" not in await ctx.call(sh.events):
            await trio.sleep(0.01)


# -- byte streams -----------------------------------------------------------------------------
async def test_a_tcp_stream_through_the_context_is_a_trio_stream(where: tm.Context) -> None:
    """trio.testing's own checks of a half-closeable stream, both ways round: the child
    connects to a listener of the master's, so both ends are here to compare."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def pair() -> tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]:
        accepted: list[trio.SocketStream] = []

        async def accept() -> None:
            accepted.append(await listeners[0].accept())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept)
            relayed = await where.open_tcp_stream("127.0.0.1", port)
        return relayed, accepted[0]

    async def reversed_pair() -> tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]:
        relayed, accepted = await pair()
        return accepted, relayed

    try:
        with trio.fail_after(WAIT * 2):
            await trio.testing.check_half_closeable_stream(pair, None)
            await trio.testing.check_half_closeable_stream(reversed_pair, None)
            relayed, accepted = await pair()
            async with relayed, accepted:
                payload = os.urandom(3 * MIB)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(relayed.send_all, payload)
                    got = b""
                    while len(got) < len(payload):
                        got += await accepted.receive_some()
                assert got == payload
    finally:
        for listener in listeners:
            await listener.aclose()
    conn: Any = where._conn  # every relay ended in the child, and the master forgot it
    with trio.fail_after(WAIT):
        while conn.streams:
            await trio.sleep(0.01)


async def test_a_refused_tcp_connection_raises_the_childs_error(ctx: tm.Context) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with trio.fail_after(WAIT), pytest.raises(ConnectionRefusedError) as info:
        await ctx.open_tcp_stream("127.0.0.1", port)
    assert isinstance(info.value, tm.CallError)
