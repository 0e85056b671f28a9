"""Deadline-bounded reading and writing of raw file descriptors in Trio."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncGenerator

import trio

from .core.errors import StreamError, TimeoutError
from .core.side import Side

#: Chunk size of :func:`iter_read`.
READ_CHUNK = 4096


def _on_trio_clock(deadline: float | None) -> float:
    """A UNIX-time deadline as a time on Trio's clock (which may be a test's mock clock).

    Converted once, when the operation starts, so the deadline is as far away as the caller
    meant even if the wall clock is stepped later.
    """
    if deadline is None:
        return math.inf
    return trio.current_time() + (deadline - time.time())


async def _wait(wait: object, fd: int, deadline: float, what: str) -> None:
    with trio.move_on_at(deadline) as scope:
        await wait(fd)  # type: ignore[operator]
    if scope.cancelled_caught:
        raise TimeoutError("timed out %s fd %d" % (what, fd))


async def iter_read(fd: int, deadline: float | None = None) -> AsyncGenerator[bytes, None]:
    """Yield chunks of up to 4096 bytes read from ``fd`` as they arrive.

    ``deadline`` is an absolute UNIX timestamp (:func:`time.time` based), as in the internals
    reference; within a Trio program a cancel scope does the same job.  Raises
    :class:`~trimitogen.TimeoutError` when no data came before it and
    :class:`~trimitogen.StreamError` at end of file or disconnection.  The fd is made
    non-blocking and is not closed.
    """
    until = _on_trio_clock(deadline)
    side = Side(None, fd)
    while True:
        try:
            data = side.read(READ_CHUNK)
        except BlockingIOError:
            await _wait(trio.lowlevel.wait_readable, fd, until, "reading from")
            continue
        if not data:
            raise StreamError("end of file on fd %d" % fd)
        yield data
        await trio.lowlevel.checkpoint()


async def write_all(fd: int, data: bytes, deadline: float | None = None) -> None:
    """Write all of ``data`` to ``fd``.

    ``deadline`` is as for :func:`iter_read`.  Raises :class:`~trimitogen.TimeoutError` if the
    fd would not take everything in time and :class:`~trimitogen.StreamError` if the other end
    disconnected.  The fd is made non-blocking and is not closed.
    """
    until = _on_trio_clock(deadline)
    side = Side(None, fd)
    view = memoryview(data)
    await trio.lowlevel.checkpoint_if_cancelled()
    while view:
        try:
            n = side.write(view)
        except BlockingIOError:
            await _wait(trio.lowlevel.wait_writable, fd, until, "writing to")
            continue
        if n is None:
            raise StreamError("fd %d disconnected with %d bytes unwritten" % (fd, len(view)))
        view = view[n:]
    await trio.lowlevel.cancel_shielded_checkpoint()
