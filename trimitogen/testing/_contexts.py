"""The context fixtures: a local context, and a factory of contexts of any method."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio

from .._context import Context, open_context
from .._methods import Method, local

ContextFactory = Callable[..., Awaitable[Context]]


@pytest.fixture
async def trimitogen_context() -> AsyncIterator[Context]:
    """A local context on the test's interpreter, isolated (``-I``), closed after the test."""
    async with open_context(local(python=[sys.executable, "-I"]), name="pytest") as context:
        yield context


@pytest.fixture
async def trimitogen_contexts() -> AsyncIterator[ContextFactory]:
    """A factory of contexts (any method and options), all closed after the test."""
    # pytest-trio runs the test and the fixture in different tasks, and a context's nursery
    # must end in the task that began it: so each context lives in a task of this fixture.
    closers: list[tuple[trio.Event, trio.Event]] = []

    async def keep(
        method: Method,
        options: dict[str, Any],
        *,
        task_status: trio.TaskStatus[Context] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        close, closed = trio.Event(), trio.Event()
        try:
            async with open_context(method, **options) as context:
                closers.append((close, closed))
                task_status.started(context)
                await close.wait()
        finally:
            closed.set()

    async with trio.open_nursery() as nursery:

        async def open_one(method: Method, **options: Any) -> Context:
            context: Context = await nursery.start(keep, method, options)
            return context

        yield open_one
        for close, closed in reversed(closers):  # newest first: children before parents
            close.set()
            await closed.wait()
