"""Deadline-bounded reading and writing of raw file descriptors in Trio."""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator

import trio

from .core.errors import StreamError, TimeoutError
from .core.side import Side

#: Chunk size of :func:`iter_read`.
READ_CHUNK = 4096


async def _wait(wait: object, fd: int, deadline: float | None, what: str) -> None:
    with trio.move_on_at(math.inf if deadline is None else deadline) as scope:
        await wait(fd)  # type: ignore[operator]
    if scope.cancelled_caught:
        raise TimeoutError("timed out %s fd %d" % (what, fd))


async def iter_read(fd: int, deadline: float | None = None) -> AsyncGenerator[bytes, None]:
    """Yield chunks of up to 4096 bytes read from ``fd`` as they arrive.

    ``deadline`` is an absolute time on Trio's clock (:func:`trio.current_time`), as for
    :func:`trio.move_on_at`.  Raises :class:`~trimitogen.TimeoutError` when no data came before
    it and :class:`~trimitogen.StreamError` at end of file or disconnection.  The fd is made
    non-blocking and is not closed.
    """
    side = Side(None, fd)
    while True:
        try:
            data = side.read(READ_CHUNK)
        except BlockingIOError:
            await _wait(trio.lowlevel.wait_readable, fd, deadline, "reading from")
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
    side = Side(None, fd)
    view = memoryview(data)
    await trio.lowlevel.checkpoint_if_cancelled()
    while view:
        try:
            n = side.write(view)
        except BlockingIOError:
            await _wait(trio.lowlevel.wait_writable, fd, deadline, "writing to")
            continue
        if n is None:
            raise StreamError("fd %d disconnected with %d bytes unwritten" % (fd, len(view)))
        view = view[n:]
    await trio.lowlevel.cancel_shielded_checkpoint()
