"""Checked by ``mypy --strict`` (see ``tests/test_types.py``), never run.

``assert_type`` lines prove what mypy infers from the public API; lines marked
``# type: ignore[...]`` must fail to type-check (``warn_unused_ignores`` turns a line that
unexpectedly passes into an error).
"""

from __future__ import annotations

import os

from typing_extensions import assert_type

import trimitogen as tm


def add(a: int, b: int) -> int:
    return a + b


async def fetch(url: str, *, retries: int = 3) -> bytes:
    return url.encode() * retries


async def uses_the_api() -> None:
    method = tm.local(python=["/usr/bin/python3", "-I"])
    async with tm.open_context(method, name="typed", connect_timeout=5.0) as ctx:
        assert_type(ctx, tm.Context)
        assert_type(ctx.name, str)
        assert_type(ctx.context_id, int)
        assert_type(ctx.via, tm.Context | None)
        assert_type(await ctx.call(add, 1, 2), int)
        assert_type(await ctx.call(os.getuid), int)
        assert_type(await ctx.call(fetch, "x", retries=2), bytes)
        assert_type(await ctx.call(len, b"abc"), int)
        await ctx.call_no_reply(add, 1, 2)
        await ctx.call_no_reply(fetch, "x")
        await ctx.shutdown()

        await ctx.call(add, 1, "2")  # type: ignore[call-overload]
        await ctx.call(add, 1)  # type: ignore[call-overload]
        await ctx.call(fetch, "x", retry=2)  # type: ignore[call-arg]
        x: str = await ctx.call(add, 1, 2)  # type: ignore[call-overload]
        await ctx.call_no_reply(add, "1", 2)  # type: ignore[arg-type]


async def uses_the_latch() -> None:
    latch: tm.Latch[int] = tm.Latch()
    latch.put(1)
    assert_type(await latch.get(), int)
    assert_type(latch.get_sync(timeout=1.0), int)
    assert_type(latch.empty(), bool)
    latch.put("no")  # type: ignore[arg-type]
    latch.close()


async def uses_the_fd_helpers(fd: int) -> None:
    async for chunk in tm.iter_read(fd, deadline=10.0):
        assert_type(chunk, bytes)
    await tm.write_all(fd, b"data", deadline=None)
    result, disconnected = tm.io_op(os.read, fd, 10)
    assert_type(result, bytes | None)
    assert_type(disconnected, bool)
    side = tm.Side(None, fd)
    assert_type(side.read(10), bytes)
    assert_type(side.write(b"x"), int | None)
    assert_type(tm.get_child_modules("/tmp"), list[str])
    assert_type(tm.minimize_source("x = 1\n"), str)


def uses_the_errors(err: tm.CallError) -> None:
    assert_type(err.type_name, str)
    assert_type(err.message, str)
    assert_type(err.remote_traceback, str)
    assert issubclass(tm.PasswordError, tm.ConnectError)
    assert issubclass(tm.TimeoutError, TimeoutError)
