"""Items on their way from a child's streams and channels to the master, and their credit.

A producer (a generator's thread, an event loop, a channel's function) hands each item to its
stream's :class:`Window` and goes on at once; the context's :class:`Sender` thread encodes what
waits and writes it.  An item that finds the sender idle is written at once, alone; items handed
over while the sender is busy (or waits for the interpreter lock the producer holds) go together
in the next frame (:class:`~.messages.StreamItems`).  Nothing waits for a batch to fill, and a
producer that gets ahead costs one pickle, one frame and one write per batch instead of per
item, and goes on producing while the sender writes.

The window is the consumer's credit: items, and bytes of encoded bodies.  A producer may hand
over an item while the credit, less what already waits, has room for one more (the size of what
waits is estimated); the sender writes only what the credit covers, counting each frame as the
master does (every item of a batch, the whole body's bytes), so the master never receives an
item it did not grant, and nothing here holds more than a window of a stream.
"""

from __future__ import annotations

import _thread
import collections

from .calls import describe_exception
from .errors import ChannelError
from .messages import ReplyOk, StreamItems
from .protocol import FLAG_RAW, Body, Message

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Deque, List, Optional, Tuple

    Key = Tuple[int, int]

#: A batch stops growing once its items are estimated at this many bytes (a larger item goes
#: alone), so one stream's frame never holds the connection for long.
BATCH_BYTES = 256 * 1024

#: What the estimate counts for an item that is not a string or a container.
SMALL_ITEM = 16

#: Raw items handed over together travel as one frame of at most this many bytes (or one item
#: alone, if larger); it stays below the size at which frames are split.
RAW_FRAME = 1024 * 1024


class Raw:
    """Bytes handed to a window to travel as they are (:data:`~.protocol.FLAG_RAW`), not
    pickled: a byte stream's or a file's data.  Raw items handed over together go as one
    frame, their buffers gathered into one write, and arrive as one ``bytes`` item."""

    __slots__ = ("data",)

    def __init__(self, data: Any) -> None:
        self.data = data  # bytes, or a view of a buffer nobody changes until it is written


def estimate(value: Any) -> int:
    """About how many bytes ``value`` encodes to, without encoding it (the window's check of
    what waits; the sender counts the real sizes)."""
    kind = type(value)
    if kind is Raw:
        return len(value.data)  # exact: a raw body is its bytes
    if kind is bytes or kind is str or kind is bytearray:
        return len(value) + SMALL_ITEM
    if kind is tuple or kind is list or kind is dict or kind is set or kind is frozenset:
        return 8 * len(value) + SMALL_ITEM
    return SMALL_ITEM


class Window:
    """Credit left for one stream (or a channel's items to the master), and its items waiting
    to be written.  Granted by the I/O thread, filled by the producer, drained by the sender."""

    def __init__(self, sender: Sender, key: Key, items: int, nbytes: int) -> None:
        self.key = key
        self.items = items  # credit left after what the sender took
        self.nbytes = nbytes
        #: The consumer closed the stream (or the context ends): items are dropped.
        self.closed = False
        #: The stream's last body (its end, or its error) is queued or written.
        self.ended = False
        #: Why an item handed over could not be sent (the stream then ended with it).
        self.failure: Optional[BaseException] = None
        #: Items per batch at most (0: no limit); lowered while a batch that failed is retried
        #: in pieces.
        self.batch_limit = 0
        #: For an async producer: called (on any thread) when one more item may be handed over.
        self.on_change: Optional[Callable[[], None]] = None
        self._sender = sender
        self._values: List[Any] = []  # handed over, not taken by the sender yet
        self._sizes: List[int] = []  # their estimates
        self._waiting_bytes = 0
        self._raw = 0  # how many of them are Raw
        self._bodies: List[Any] = []  # to write after them: a half-close, the end
        self._sealed = False  # a body was queued: no item may follow it
        self._scheduled = False  # in the sender's queue, or being written by it
        self._lock = _thread.allocate_lock()
        self._waiter: Optional[Any] = None  # a held lock the sync producer waits on

    # The I/O thread -----------------------------------------------------------------------------
    def grant(self, items: int, nbytes: int) -> None:
        with self._lock:
            self.items += items
            self.nbytes += nbytes
            resume = self._wants_sender()  # items left for want of credit go now
        if resume:
            self._sender.schedule(self)
        self._notify()

    def close(self) -> None:
        """The consumer closed the stream: what waits is dropped (the master would drop it)."""
        with self._lock:
            self.closed = True
            self._values, self._sizes, self._waiting_bytes, self._raw = [], [], 0, 0
            resume = self._wants_sender()
        if resume:
            self._sender.schedule(self)
        self._notify()

    def _notify(self) -> None:
        with self._lock:
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.release()
        if self.on_change is not None:
            self.on_change()

    # The producer -------------------------------------------------------------------------------
    def ready(self) -> bool:
        """May one more item be handed over (or is the stream closed)?"""
        return self.closed or (self.items > len(self._values) and self.nbytes > self._waiting_bytes)

    def put_sync(self, value: Any) -> bool:
        """Hand over an item, first waiting while the window is full; False (the item is
        dropped) once the stream is closed or ended."""
        size = estimate(value)
        while True:
            with self._lock:
                if self.closed or self._sealed:
                    return False
                if self.items > len(self._values) and self.nbytes > self._waiting_bytes:
                    if self._append(value, size):
                        break
                    return True
                waiter = self._waiter = _thread.allocate_lock()
                waiter.acquire()
            waiter.acquire()
        self._sender.schedule(self)
        return True

    def put(self, value: Any) -> None:
        """Hand over an item without waiting (once :meth:`ready`: an async producer)."""
        size = estimate(value)
        with self._lock:
            if self.closed or self._sealed or not self._append(value, size):
                return
        self._sender.schedule(self)

    def _append(self, value: Any, size: int) -> bool:
        """Under the lock: queue an item; True if the sender must be told."""
        self._values.append(value)
        self._sizes.append(size)
        self._waiting_bytes += size
        if type(value) is Raw:
            self._raw += 1
        if self._scheduled:
            return False  # the sender takes it with the next batch
        self._scheduled = True
        return True

    def put_body(self, body: Any, final: bool) -> None:
        """Queue ``body`` after the items handed over so far: a half-close, or (``final``) the
        stream's end or error.  No item follows it, nor anything a final body."""
        with self._lock:
            if self.ended:
                return
            self.ended = final
            self._sealed = True
            self._bodies.append(body)
            if self._scheduled:
                return
            self._scheduled = True
        self._sender.schedule(self)

    # The sender ---------------------------------------------------------------------------------
    def take(self) -> Optional[Tuple[Optional[List[Any]], Any, int]]:
        """``(items, None, estimate)`` to encode and write next, all within the credit, or
        ``(None, body, 0)``; None: nothing to write now (the window leaves the sender's queue;
        a grant or a new item puts it back)."""
        with self._lock:
            if self._values:
                if self.nbytes > 0:
                    # The first item decides, as at the master: a batch may end past the credit
                    # for bytes by its last item, never past the credit for items.
                    raw = self._raw > 0 and type(self._values[0]) is Raw
                    if raw:
                        values, n, total = self._take_raw()
                    elif self._raw:
                        values, n, total = self._take_some(stop_at_raw=True)
                    elif self._waiting_bytes <= BATCH_BYTES and not self.batch_limit:
                        values, self._values, self._sizes = self._values, [], []
                        n, total = len(values), self._waiting_bytes
                    else:
                        values, n, total = self._take_some()
                    self._waiting_bytes -= total
                    self.items -= 1 if raw else n  # a raw frame is one item at the master
                    self.nbytes -= total  # corrected to the encoded size by ``sent``
                    if not (raw and n > 1):
                        return values, None, total
                else:
                    self._scheduled = False
                    return None
            elif self._bodies:
                return None, self._bodies.pop(0), 0
            else:
                self._scheduled = False
                return None
        # Raw items joined into one frame took one item of credit for several: a producer
        # waiting for credit may go on.
        self._notify()
        return values, None, total

    def _take_some(self, stop_at_raw: bool = False) -> Tuple[List[Any], int, int]:
        """Under the lock: the items of a batch that stops at the byte cap or the limit (and
        before a raw item, which goes in a frame of its own kind)."""
        limit = self.batch_limit or len(self._values)
        n = total = 0
        for size in self._sizes:
            if n >= limit or (n and total + size > BATCH_BYTES):
                break
            if stop_at_raw and type(self._values[n]) is Raw:
                break
            n += 1
            total += size
        return self._take_front(n), n, total

    def _take_raw(self) -> Tuple[List[Any], int, int]:
        """Under the lock: the raw items at the front, up to :data:`RAW_FRAME` bytes (one at
        least): one frame, which the master counts as one item."""
        n = total = 0
        for value, size in zip(self._values, self._sizes):
            if type(value) is not Raw or (n and total + size > RAW_FRAME):
                break
            n += 1
            total += size
        self._raw -= n
        return self._take_front(n), n, total

    def _take_front(self, n: int) -> List[Any]:
        """Under the lock: the first ``n`` items waiting, removed."""
        values = self._values[:n]
        del self._values[:n]
        del self._sizes[:n]
        return values

    def _wants_sender(self) -> bool:
        """Under the lock: put the window in the sender's queue now?"""
        if self._scheduled or not (self._values or self._bodies):
            return False
        self._scheduled = True
        return True

    def untake(self, values: List[Any], total: int) -> None:
        """Put a batch back in front (it is to go in smaller pieces)."""
        sizes = [estimate(value) for value in values]
        with self._lock:
            if self.closed:
                return
            self._values[:0] = values
            self._sizes[:0] = sizes
            self._waiting_bytes += sum(sizes)
            self.items += len(values)
            self.nbytes += total

    def sent(self, total: int, encoded: int) -> None:
        """A batch estimated at ``total`` bytes encoded to ``encoded``."""
        with self._lock:
            could = self.ready()
            self.nbytes += total - encoded
            wake = not could and self.ready()
        if wake:
            self._notify()

    def fail(self, exc: BaseException, body: Any) -> None:
        """An item could not be sent: the stream ends with ``body`` (its error, in place of an
        end queued already) and takes no more items.  A second failure (writing that error)
        gives up."""
        with self._lock:
            self._bodies = [body] if self.failure is None else []
            self.failure = exc
            self.closed = self._sealed = self.ended = True
            self._values, self._sizes, self._waiting_bytes, self._raw = [], [], 0, 0
        self._notify()

    def lost(self) -> None:
        """The parent is gone: nothing more is written."""
        with self._lock:
            self.closed = self.ended = self._sealed = True
            self._values, self._sizes, self._waiting_bytes, self._raw = [], [], 0, 0
            self._bodies = []
        self._notify()


class Sender:
    """The thread that writes the items of one context's streams (started on first use).

    Windows with something to write wait in a queue; each turn writes one frame of one window
    and puts it back at the end, so streams share the connection fairly.
    """

    def __init__(self, context: Any) -> None:
        self.context = context
        self._queue: Deque[Window] = collections.deque()
        self._lock = _thread.allocate_lock()
        self._wake = _thread.allocate_lock()
        self._wake.acquire()
        self._idle = False
        self._started = False

    def schedule(self, window: Window) -> None:
        with self._lock:
            self._queue.append(window)
            wake, self._idle = self._idle, False
            start = not self._started
            self._started = True
        if start:
            _thread.start_new_thread(self._run, ())
        elif wake:
            self._wake.release()

    def _run(self) -> None:
        while True:
            with self._lock:
                window = self._queue.popleft() if self._queue else None
                self._idle = window is None
            if window is None:
                self._wake.acquire()
                continue
            work = window.take()
            if work is not None:
                self._write(window, work)
                with self._lock:  # it stayed scheduled: nobody else puts it back
                    self._queue.append(window)

    def _write(self, window: Window, work: Tuple[Optional[List[Any]], Any, int]) -> None:
        """Encode and write what :meth:`Window.take` gave.  A failure ends that stream, never
        the thread."""
        values, body, total = work
        flags = 0
        try:
            if values is not None and type(values[0]) is Raw:
                ceiling = self.context.calls.max_message_size
                if total > ceiling:  # joined ones are at most RAW_FRAME: a single one
                    raise ValueError(
                        "%d raw bytes in one piece, over the %d-byte message limit"
                        % (total, ceiling)
                    )
                body = Body()
                body.parts = [value.data for value in values]
                body.size = total
                flags = FLAG_RAW
            elif values is not None:
                body = self._encode(window, values, total)
            if body is not None:
                context = self.context
                key = window.key
                context.send(Message(key[0], context.context_id, key[1], 0, body, flags))
        except ChannelError:
            window.lost()
        except Exception as exc:
            window.fail(exc, describe_exception(exc, self.context.calls.explain).encode())

    def _encode(self, window: Window, values: List[Any], total: int) -> Any:
        """One body for ``values``, or None if it cannot be made (they are put back to go in
        smaller batches, or the stream fails with the error of a single item)."""
        try:
            if len(values) == 1:
                body = ReplyOk.pack(True, values[0])
            else:
                body = StreamItems.pack("items", values)
            ceiling = self.context.calls.max_message_size
            if len(body) > ceiling:
                raise ValueError(
                    "a stream item encodes to %d bytes, over the %d-byte message limit"
                    % (len(body), ceiling)
                )
        except Exception as exc:
            if len(values) > 1:
                # One of them cannot go (or together they are too big): again, in halves, so
                # the items before a bad one still arrive, then its error.
                window.untake(values, total)
                window.batch_limit = max(1, len(values) // 2)
                return None
            window.fail(exc, describe_exception(exc, self.context.calls.explain).encode())
            return None
        window.sent(total, len(body))
        return body
