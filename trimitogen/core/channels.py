"""Two-way channels in a child.

A channel is ``fn(channel, *args)`` talking with the master both ways.

An OPEN_CHANNEL is an OPEN_STREAM whose function gets the child's end of the channel as its first
argument.  Items to the master travel like a stream's, within the window the master granted (see
:mod:`.batching`);
items from the master wait in a bounded inbox, and the child grants the master credit as the
function takes them (the first grant goes up at once).  The function returning closes the
channel (the master's ``receive`` raises :class:`trio.EndOfChannel`); raising sends the error.
"""

from __future__ import annotations

import _thread
import collections

from .batching import Raw
from .errors import ChannelError
from .messages import Credit, OpenStream, ReplyOk, StreamEnd, decode_stream, raw_value
from .protocol import FLAG_RAW, HANDLE_CREDIT, Message
from .readers import BufferPool

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Deque, Optional, Tuple

    Key = Tuple[int, int]

#: The master may have this many items, and about this many bytes, on their way to the child.
INBOX_ITEMS = 64
INBOX_BYTES = 4 * 1024 * 1024


class ChannelEnd:
    """The child's end of a channel opened by :meth:`Context.open_channel`.

    Sync functions use :meth:`send`, :meth:`receive`, iteration and :meth:`close`, which block;
    coroutine functions use :meth:`asend`, :meth:`areceive`, ``async for`` and :meth:`aclose`.
    ``receive`` raises :class:`EOFError` (iteration stops) once the master closed the channel;
    ``send`` then raises :class:`~trimitogen.ChannelError`.
    """

    def __init__(self, streams: Any, key: Key, window: Any) -> None:
        self._streams = streams
        self._key = key
        self._window = window  # credit for items to the master
        self._inbox: Deque[Tuple[Any, int]] = collections.deque()
        self._lock = _thread.allocate_lock()
        self._waiter: Optional[Any] = None
        self._master_closed = False  # the master closed the channel (CANCEL)
        self._master_eof = False  # the master will send nothing more (a byte stream's EOF)
        self._eof_sent = False  # this end said it sends nothing more
        self._taken_items = 0
        self._taken_bytes = 0
        #: "trio" or "asyncio" when a coroutine function holds this end.
        self.library: Optional[str] = None
        #: Raw bytes from the master arrive as views of the receive buffer, not copies (for
        #: consumers that write them out at once and keep nothing: the relay, file writes).
        self.keeps_views = False

    def __repr__(self) -> str:
        return "<ChannelEnd %d of the master>" % self._key[1]

    # From the I/O thread ------------------------------------------------------------------------
    def deliver(self, msg: Message) -> None:
        if msg.flags & FLAG_RAW:
            # Bytes of a byte stream or a file, in the receive buffer: the consumer writes
            # them from there (a function of the user's gets its own bytes).
            value = raw_value(msg.data) if self.keeps_views else bytes(msg.data)
            with self._lock:
                self._inbox.append((value, len(msg.data)))
            self._wake()
            return
        body = decode_stream(msg.data)
        with self._lock:
            if type(body) is ReplyOk:
                self._inbox.append((body.value, len(msg.data)))
            else:
                self._master_eof = True
        self._wake()

    def master_closed(self) -> None:
        with self._lock:
            self._master_closed = True
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.release()

    # The blocking API ---------------------------------------------------------------------------
    def send(self, value: Any) -> None:
        """Send ``value`` to the master, waiting while its window is full.  The value is
        encoded and written shortly after (with others sent meanwhile): one that cannot travel
        ends the channel with its error, and the next ``send`` raises
        :class:`~trimitogen.ChannelError` saying so."""
        window = self._window
        if self._master_closed or not window.put_sync(value):
            if window.failure is not None:
                raise ChannelError("an item sent earlier could not travel: %s" % window.failure)
            if self._eof_sent and not (self._master_closed or window.closed):
                raise ChannelError("this end sent its end of file: it sends nothing more")
            raise ChannelError("the master closed the channel")

    def send_bytes(self, data: bytes) -> None:
        """Send ``data`` as raw bytes (not pickled; bytes sent together may arrive joined
        into one item), waiting like :meth:`send`."""
        self.send(Raw(data if type(data) is bytes else bytes(data)))

    def receive(self) -> Any:
        """The next item from the master; :class:`EOFError` once it closed the channel."""
        while True:
            with self._lock:
                if self._inbox:
                    value, size = self._inbox.popleft()
                    break
                if self._master_closed or self._master_eof:
                    raise EOFError("the master closed the channel")
                waiter = self._waiter = _thread.allocate_lock()
                waiter.acquire()
            waiter.acquire()
        self._took(size)
        return value

    def _took(self, size: int) -> None:
        self._taken_items += 1
        self._taken_bytes += size
        if self._taken_items >= INBOX_ITEMS // 2 or self._taken_bytes >= INBOX_BYTES // 2:
            self.grant(self._taken_items, self._taken_bytes)
            self._taken_items = self._taken_bytes = 0

    def grant(self, items: int, nbytes: int) -> None:
        context = self._streams.context
        body = Credit.pack(self._key[1], items, nbytes)
        try:
            context.send(Message(self._key[0], context.context_id, HANDLE_CREDIT, 0, body))
        except ChannelError:
            pass

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        try:
            return self.receive()
        except EOFError:
            raise StopIteration from None

    def close(self) -> None:
        """Close the channel: the master's ``receive`` raises ``EndOfChannel``."""
        self._streams.finish(self._key, None)

    @property
    def closed_by_master(self) -> bool:
        """Whether the master closed the channel (not merely ended its sending)."""
        return self._master_closed

    def send_eof(self) -> None:
        """Tell the master this end sends nothing more; it may go on receiving (a half-close)."""
        self._eof_sent = True
        self._window.put_body(StreamEnd.pack("eof"), final=False)

    # The awaitable API (the blocking calls, run in a worker thread of the loop) -----------------
    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        if self.library == "asyncio":
            import asyncio

            return await asyncio.get_event_loop().run_in_executor(None, fn, *args)
        import trio

        try:
            return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)
        except TypeError:  # a Trio older than 0.23 calls it ``cancellable``
            legacy: Any = {"cancellable": True}
            return await trio.to_thread.run_sync(fn, *args, **legacy)

    async def asend(self, value: Any) -> None:
        await self._in_thread(self.send, value)

    async def asend_bytes(self, data: bytes) -> None:
        await self._in_thread(self.send_bytes, data)

    async def areceive(self) -> Any:
        return await self._in_thread(self.receive)

    def __aiter__(self) -> Any:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.areceive()
        except EOFError:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self.close()


def open_channel(streams: Any, msg: Message) -> None:
    """From the I/O thread: start ``fn(end, *args)`` for an OPEN_CHANNEL."""
    request = OpenStream.decode(msg.data, may_import=True)
    key = (msg.src, msg.reply_to)
    end = streams.channels[key] = ChannelEnd(streams, key, streams.new_window(key, request))
    end.grant(INBOX_ITEMS, INBOX_BYTES)
    _thread.start_new_thread(_run, (streams, key, request, end))


def _run(streams: Any, key: Key, request: Any, end: ChannelEnd) -> None:
    try:
        fn = streams.context.calls.resolve(request.module, request.qualname)
        result = fn(end, *request.args, **request.kwargs)
        if type(result).__name__ == "coroutine":
            from .aloop import run_channel

            run_channel(streams, fn, key, result, end)
            return
        streams.finish(key, None)
    except BaseException as exc:
        streams.finish(key, exc)


def tcp_relay(channel: ChannelEnd, host: str, port: int) -> None:
    """Connect to ``host:port`` here and relay bytes both ways through ``channel`` (the remote
    side of :meth:`Context.open_tcp_stream`): the first item up is the peer's address, then
    bytes; an EOF either way is passed on as a half-close."""
    import socket

    sock = socket.create_connection((host, port))
    channel.keeps_views = True
    writer_done = _thread.allocate_lock()
    writer_done.acquire()

    def write() -> None:
        try:
            for data in channel:
                sock.sendall(data)
            if channel.closed_by_master:
                sock.shutdown(socket.SHUT_RDWR)  # also ends the read below
            else:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the peer is gone: the read below sees it too
        finally:
            writer_done.release()

    try:
        channel.send(tuple(sock.getpeername()[:2]))
        _thread.start_new_thread(write, ())
        # Read into buffers used again once written, not fresh memory per read.  At most a
        # window of them is on its way.
        pool = BufferPool(RELAY_CHUNK, RELAY_BUFFERS)
        buffer: Optional[memoryview] = None
        while True:
            if buffer is None:
                buffer = pool.take()
            n = sock.recv_into(buffer)
            if not n:
                channel.send_eof()
                break
            if n < COPY_BELOW:
                # A short read is copied, and the buffer read into again: a chatty peer's
                # small writes do not each hold a buffer of their own.
                channel.send_bytes(bytes(buffer[:n]))
            else:
                channel.send(Raw(buffer[:n]))
                buffer = None  # free for use again once written
        writer_done.acquire()
    except ChannelError:
        pass  # the master closed the stream
    finally:
        sock.close()


#: Bytes read from a relayed socket at a time (one item of the channel), and how many such
#: buffers are kept for use again (the window holds 4 MiB).
RELAY_CHUNK = 1024 * 1024
RELAY_BUFFERS = 6
#: Reads shorter than this are sent as a copy.
COPY_BELOW = 64 * 1024
