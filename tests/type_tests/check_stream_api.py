"""Checked by ``mypy --strict`` (see ``tests/test_types.py``), never run: streams, channels and
file transfers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import trio
from typing_extensions import assert_type

import trimitogen as tm
from trimitogen.core.channels import ChannelEnd


def numbers(n: int) -> Iterator[int]:
    yield from range(n)


async def words(prefix: str) -> AsyncIterator[str]:
    yield prefix


def serve(channel: ChannelEnd, limit: int) -> None:
    for item in channel:
        channel.send(item)


async def uses_streams(ctx: tm.Context) -> None:
    async with ctx.open_stream(numbers, 3) as items:
        assert_type(items, trio.abc.ReceiveChannel[int])
        async for item in items:
            assert_type(item, int)
    async with ctx.open_stream(words, "x") as texts:
        assert_type(await texts.receive(), str)
    async with ctx.open_channel(serve, 10) as channel:
        assert_type(channel, trio.abc.Channel[Any])
        await channel.send(1)
    assert_type(await ctx.put_file("a", "/tmp/a"), int)
    assert_type(await ctx.get_tree("/srv", "out"), tm.TreeResult)

    ctx.open_stream(numbers, "3")  # type: ignore[call-overload]
    ctx.open_channel(serve, "10")  # type: ignore[arg-type]
