"""The master's end of a stream: a remote generator's items as a Trio receive channel.

The consumer grants credit as it takes items (see :mod:`trimitogen.core.streams`): at most
``WINDOW_ITEMS`` items and about ``WINDOW_BYTES`` bytes are ever on their way or buffered here,
so a consumer that stops reading makes the remote generator wait, on every hop, instead of any
process buffering without bound.  A child that sends more than it was granted ends the stream
with :class:`~trimitogen.StreamError` (the connection itself carries on).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import trio

from .core.errors import ChannelError, StreamError, remote_error
from .core.messages import (
    Cancel,
    Credit,
    ReplyOk,
    StreamEnd,
    StreamItems,
    decode_stream,
    raw_value,
)
from .core.protocol import FLAG_RAW, HANDLE_CANCEL, HANDLE_CREDIT, MASTER_ID, Message

if TYPE_CHECKING:
    from ._connection import Connection

T = TypeVar("T")

#: Bodies that carry items: one, or a batch.
_ITEMS = (ReplyOk, StreamItems)
#: Stands for a raw body in :meth:`RemoteStream.on_message`.
_RAW: Any = object()

#: The consumer's window: items, and bytes of encoded items, that may be in flight at once.
WINDOW_ITEMS = 64
WINDOW_BYTES = 4 * 1024 * 1024

#: ``receive`` is a checkpoint every time.  ``async for`` is a cancellation point at every
#: item, but while items are buffered it lets other tasks run only at every this many (and
#: whenever it waits): a Trio schedule point costs more than taking a buffered item, and a fast
#: stream would spend most of its time in them.
SCHEDULE_EVERY = 16


class RemoteStream(trio.abc.ReceiveChannel[T], Generic[T]):
    """Items of a generator running in a context; made by :meth:`Context.open_stream`.

    ``receive`` returns the next item, raises :class:`trio.EndOfChannel` once the generator is
    exhausted, the remote exception (see :class:`~trimitogen.CallError`) if it raised,
    :class:`~trimitogen.ChannelError` if the context is gone, and
    :class:`trio.ClosedResourceError` after :meth:`aclose`.
    """

    KIND = "stream"

    def __init__(self, conn: Connection, target: int, name: str, what: str) -> None:
        self._conn = conn
        self.target = target
        self._name = name
        self._what = what
        self.handle = 0
        self._items: collections.deque[Any] = collections.deque()
        self._failure: BaseException | None = None
        self._ended = False  # the far side said it is done (end, error, or gone)
        self._far_eof = False  # the far side sends nothing more, but may still receive
        self._closed = False  # closed here
        self._lot = trio.lowlevel.ParkingLot()
        # Credit: what the far side may still send, and what was taken here but not granted.
        self._granted_items = WINDOW_ITEMS
        self._granted_bytes = WINDOW_BYTES
        self._taken_items = 0
        self._taken_bytes = 0
        self._unscheduled = 0  # items taken since receive() last let other tasks run
        #: Raw items (FLAG_RAW) are taken as they were read (bytes, or a Body of the bytes of
        #: each read) rather than joined into one bytes: for the master's own consumers.
        self.raw_parts = False

    def __repr__(self) -> str:
        return "<RemoteStream %s in context %r>" % (self._what, self._name)

    # Called by the connection's reader ---------------------------------------------------------
    def on_message(self, msg: Message) -> None:
        if self._ended:
            return
        size = len(msg.data)
        if self._closed:  # closed here: drop what was on its way, until the far side ends
            if msg.is_dead or (len(msg.data) < 64 and not msg.flags & FLAG_RAW):
                try:
                    if msg.is_dead or type(decode_stream(msg.data)) not in _ITEMS:
                        self._end(None)
                except StreamError:
                    self._end(None)
            return
        try:
            if msg.is_dead:
                raise ChannelError(
                    "%s in context %r: %s"
                    % (self._what, self._name, bytes(msg.data).decode("utf-8", "replace"))
                )
            # A raw body is one item, its bytes (see FLAG_RAW): not unpickled, not copied.
            body = _RAW if msg.flags & FLAG_RAW else decode_stream(msg.data)
        except (ChannelError, StreamError) as exc:
            self._end(exc)
            return
        kind = type(body)
        if kind in _ITEMS or body is _RAW:
            # Every item of a batch counts, and the batch may begin only within the credit.
            count = len(body.values) if kind is StreamItems else 1
            if self._granted_items < count or self._granted_bytes <= 0:
                self._end(
                    StreamError(
                        "context %r sent an item of %s it was never given credit for: the "
                        "stream is closed" % (self._name, self._what)
                    )
                )
                self._cancel_remote()
                return
            self._granted_items -= count
            self._granted_bytes -= size
            if body is _RAW:
                self._items.append((msg.data if self.raw_parts else raw_value(msg.data), size))
            elif kind is ReplyOk:
                self._items.append((body.value, size))
            else:
                # The batch's bytes are shared out, so taking its items grants exactly them.
                share, extra = divmod(size, count)
                values = body.values
                self._items.append((values[0], share + extra))
                self._items.extend(zip(itertools.islice(values, 1, None), itertools.repeat(share)))
        elif kind is StreamEnd and body.end == "eof":
            self._far_eof = True  # a half-close: the far side may still receive
        elif kind is StreamEnd:
            self._end(None)
        else:
            self._end(remote_error(body.type_name, body.message, body.traceback))
        self._lot.unpark_all()

    def fail(self, error: BaseException) -> None:
        """The context is gone."""
        self._end(error)

    def _end(self, failure: BaseException | None) -> None:
        if not self._ended:
            self._ended = True
            self._failure = failure
            self._conn.streams.pop(self.handle, None)
            if self.raw_parts:
                self._conn.link.decoder.view_handles.discard(self.handle)
        self._lot.unpark_all()

    def keep_raw_views(self) -> None:
        """Take raw items as they were read, not joined into one ``bytes``, and large ones as
        views of the connection's reused receive buffers: for a consumer that writes each item
        out at once and keeps none (a view held keeps its buffer from being used again)."""
        self.raw_parts = True
        if not self._ended:
            self._conn.link.decoder.view_handles.add(self.handle)

    # The channel ------------------------------------------------------------------------------
    async def receive(self) -> T:
        await trio.lowlevel.checkpoint_if_cancelled()
        return await self._receive_waiting()

    async def __anext__(self) -> T:
        # ``async for`` takes a buffered item without a schedule point (see SCHEDULE_EVERY).
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._items and not self._closed:
            value = self._take()
            if self._unscheduled >= SCHEDULE_EVERY:
                self._unscheduled = 0
                await trio.lowlevel.cancel_shielded_checkpoint()
            return value  # type: ignore[no-any-return]
        try:
            return await self._receive_waiting()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def _receive_waiting(self) -> T:
        """An item or the end, waiting for it if need be; a schedule point either way."""
        while True:
            if self._closed:
                raise trio.ClosedResourceError("the %s was closed" % self.KIND)
            if self._items:
                value = self._take()
                self._unscheduled = 0
                await trio.lowlevel.cancel_shielded_checkpoint()
                return value  # type: ignore[no-any-return]
            if self._ended or self._far_eof:
                await trio.lowlevel.cancel_shielded_checkpoint()  # a checkpoint either way
                if self._failure is not None:
                    raise self._failure
                raise trio.EndOfChannel
            await self._lot.park()

    def _take(self) -> Any:
        """The next buffered item; grants credit for what was taken, half a window at a time
        (one CREDIT per many items, never a stall)."""
        value, size = self._items.popleft()
        self._unscheduled += 1
        self._taken_items += 1
        self._taken_bytes += size
        if (
            self._taken_items >= WINDOW_ITEMS // 2 or self._taken_bytes >= WINDOW_BYTES // 2
        ) and not self._ended:
            self._grant()
        return value

    def _grant(self) -> None:
        items, nbytes = self._taken_items, self._taken_bytes
        self._taken_items = self._taken_bytes = 0
        self._granted_items += items
        self._granted_bytes += nbytes
        try:
            self._conn.send(
                Message(
                    self.target,
                    MASTER_ID,
                    HANDLE_CREDIT,
                    0,
                    Credit.pack(self.handle, items, nbytes),
                ),
                self.handle,
            )
        except ChannelError:
            pass  # the reader reports the end

    def _cancel_remote(self) -> None:
        try:
            self._conn.send(
                Message(self.target, MASTER_ID, HANDLE_CANCEL, 0, Cancel.pack(self.handle)),
                self.handle,
            )
        except ChannelError:
            pass

    async def aclose(self) -> None:
        """Close the stream; a generator still running is closed in the child."""
        if not self._closed:
            self._closed = True
            if not self._ended:
                # Items on their way are dropped; the stream stays known until the far side
                # says it closed the generator.
                self._cancel_remote()
            self._items.clear()
            self._lot.unpark_all()
        await trio.lowlevel.checkpoint()

    @property
    def buffered(self) -> int:
        """Items received and not yet taken (at most the window)."""
        return len(self._items)


class RemoteChannel(RemoteStream[Any], trio.abc.Channel[Any]):
    """Both ways with a function running in a context; made by :meth:`Context.open_channel`.

    ``receive`` behaves as a stream's: :class:`trio.EndOfChannel` once the function returned.
    ``send`` waits while the child's window is full; it raises :class:`trio.BrokenResourceError`
    once the far side is done or gone, :class:`trio.ClosedResourceError` after :meth:`aclose`.
    """

    def __init__(self, conn: Connection, target: int, name: str, what: str) -> None:
        super().__init__(conn, target, name, what)
        self.KIND = "channel"
        self._send_items = 0  # until the child's first grant
        self._send_bytes = 0
        self._send_lot = trio.lowlevel.ParkingLot()

    def on_credit(self, items: int, nbytes: int) -> None:
        self._send_items += items
        self._send_bytes += nbytes
        self._send_lot.unpark_all()

    def _end(self, failure: BaseException | None) -> None:
        super()._end(failure)
        self._send_lot.unpark_all()

    async def send(self, value: Any) -> None:
        # TypeError here for a value that cannot travel.
        await self._send_body(ReplyOk.pack(True, value), 0)

    async def _send_body(self, encoded: Any, flags: int) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self._closed:
                raise trio.ClosedResourceError("the channel was closed")
            if self._ended:
                raise trio.BrokenResourceError(
                    "%s in context %r is done: %s"
                    % (self._what, self._name, self._failure or "its function returned")
                )
            if self._send_items > 0 and self._send_bytes > 0:
                break
            await self._send_lot.park()
        self._send_items -= 1
        self._send_bytes -= len(encoded)
        self._conn.send(Message(self.target, MASTER_ID, self.handle, 0, encoded, flags))
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def send_bytes(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as one raw item (not pickled; see FLAG_RAW), once credit allows: the
        far end takes it as its bytes.  Bytes that cannot change (``bytes``, or a view of
        them) are sent from where they are; anything else is copied first."""
        await self._send_body(unchanging(data), FLAG_RAW)

    def send_eof(self) -> None:
        """Tell the far end this side sends nothing more (it may still send): its ``receive``
        ends; nothing happens if the channel ended."""
        if not self._ended:
            body = StreamEnd.pack("eof")
            with contextlib.suppress(ChannelError):
                self._conn.send(Message(self.target, MASTER_ID, self.handle, 0, body))

    async def wait_writable(self) -> None:
        """Until a ``send`` would not wait for credit (or would fail at once)."""
        while not (self._closed or self._ended or (self._send_items > 0 and self._send_bytes > 0)):
            await self._send_lot.park()
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self._send_lot.unpark_all()
        await super().aclose()


def unchanging(data: bytes | bytearray | memoryview) -> bytes | memoryview:
    """``data`` itself if nothing can change it (``bytes``, or a view of them, as bytes),
    else a copy: what is sent must stay as it was until it is written."""
    if type(data) is bytes:
        return data
    view = memoryview(data)
    if view.readonly and type(view.obj) is bytes:
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")
    return bytes(view)


def on_credit(conn: Connection, msg: Message) -> None:
    """A context took items of a channel (a CREDIT from it): the master may send it more."""
    try:
        credit = Credit.decode(msg.data)
    except StreamError as exc:
        conn.logger.warning("dropped a malformed credit from %d: %s", msg.src, exc)
        return
    channel = conn.streams.get(credit.reply_to)
    if not isinstance(channel, RemoteChannel) or channel.target != msg.src:
        conn.logger.warning("dropped a credit from %d for no channel of its own", msg.src)
        return
    channel.on_credit(credit.items, credit.nbytes)
