"""Byte streams through a context: a TCP connection made by the child, as a Trio stream.

:meth:`Context.open_tcp_stream` has the child connect (through every ``via=`` hop, like ssh's
port forwarding through any chain of contexts) and relay bytes over a two-way channel; this
module's :class:`RemoteByteStream` is the master's end, a :class:`trio.abc.HalfCloseableStream`.
Bytes travel as raw frames (:data:`~trimitogen.core.protocol.FLAG_RAW`), never pickled, within
the channel's credit: the master copies what ``send_all`` is given once (the caller may reuse
its buffer at once), the child writes to its socket straight from its receive buffer, and
``receive_some`` copies from the master's receive buffer only the bytes it returns.
"""

from __future__ import annotations

import collections
from typing import Any

import trio

from ._streams import RemoteChannel
from .core.errors import CallError, ChannelError, StreamError
from .core.messages import raw_pieces

#: The largest piece of a ``send_all`` sent as one item.  Measured (benchmarks/compare.py
#: --sections bytestream): 1 MiB pieces moved 30-70 % more bytes per second to the far end
#: than 64 KiB ones, and cost both processes less CPU, as each item costs a frame, a decode
#: and a hand-over between the child's threads; the credit window (4 MiB) still bounds them.
PIECE = 1024 * 1024

#: What the relay's items may be (anything else breaks the stream).
_BUFFERS = (bytes, bytearray, memoryview)


class RemoteByteStream(trio.abc.HalfCloseableStream):
    """The master's end of a byte stream relayed by a context (see the module)."""

    def __init__(self, channel: RemoteChannel, peer: tuple[Any, ...]) -> None:
        self._channel = channel
        #: The address the child connected to, as the child's socket reported it.
        self.peer = peer
        #: Received, not returned yet: the bytes of each read of a raw body, as the reader got
        #: them (see FrameDecoder.raw_pieces).
        self._pending: collections.deque[bytes | memoryview] = collections.deque()
        channel.raw_parts = True
        self._closed = False
        self._eof_sent = False
        self._eof_seen = False
        self._sending = False
        self._receiving = False

    def __repr__(self) -> str:
        return "<RemoteByteStream to %r via %r>" % (self.peer, self._channel._name)

    def _broken(self, exc: BaseException) -> trio.BrokenResourceError:
        return trio.BrokenResourceError(
            "the connection to %r through context %r: %s" % (self.peer, self._channel._name, exc)
        )

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            if self._closed or self._eof_sent:
                raise trio.ClosedResourceError("the stream was closed for sending")
            view = memoryview(data).cast("B")
            if not view:
                await trio.lowlevel.checkpoint()
                return
            # send_bytes copies what the caller could change once this returns.
            for start in range(0, len(view), PIECE):
                try:
                    await self._channel.send_bytes(view[start : start + PIECE])
                except trio.ClosedResourceError:
                    raise
                except (trio.BrokenResourceError, ChannelError, StreamError) as exc:
                    raise self._broken(exc) from None
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            if self._closed:
                raise trio.ClosedResourceError("the stream was closed")
            await self._channel.wait_writable()
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        await trio.lowlevel.checkpoint()
        if self._eof_sent:
            return
        self._eof_sent = True
        self._channel.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None:
            if not isinstance(max_bytes, int):
                raise TypeError("max_bytes must be an int or None")
            if max_bytes < 1:
                raise ValueError("max_bytes must be at least 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        self._receiving = True
        try:
            if self._closed:
                raise trio.ClosedResourceError("the stream was closed")
            pending = self._pending
            if pending or self._eof_seen:
                await trio.lowlevel.checkpoint()
            while not pending and not self._eof_seen:
                try:
                    item = await self._channel.receive()
                except trio.EndOfChannel:
                    self._eof_seen = True
                    break
                except trio.ClosedResourceError:
                    raise
                except (CallError, ChannelError, StreamError) as exc:
                    raise self._broken(exc) from None
                pieces = raw_pieces(item)
                if not all(type(p) in _BUFFERS for p in pieces):
                    raise self._broken(StreamError("the relay sent something other than bytes"))
                # An empty piece would read as the end of the stream: skipped.
                pending.extend(bytes(p) for p in pieces if len(p))
            if self._closed:
                raise trio.ClosedResourceError("the stream was closed")
            if not pending:
                return b""
            data = pending.popleft()
            if max_bytes is not None and len(data) > max_bytes:
                # The rest waits as a view: taking a piece in small bites copies each once.
                view = memoryview(data)
                pending.appendleft(view[max_bytes:])
                data = view[:max_bytes]
            return data if type(data) is bytes else bytes(data)
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        self._closed = True
        self._pending.clear()
        await self._channel.aclose()
