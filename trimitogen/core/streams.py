"""Streams in a child: a generator's items sent to the master as the consumer grants credit.

An OPEN_STREAM names a generator function (or an async generator function) and the consumer's
window: how many items, and about how many bytes, may be on their way at once.  The producer
hands items to the context's sender thread (see :mod:`.batching`, which writes several in one frame
when the producer gets ahead) while it has credit, then waits -- blocking its own thread for a
sync generator, awaiting in the event loop for an async one -- until a CREDIT says the consumer
took some.  So
nothing between the generator and the consumer (this process, an intermediate, the master) holds
more than one window of the stream, however slowly the consumer reads.

A sync generator runs on a thread of its own, so a stalled stream never holds up the calls of
the context; an async generator runs in the context's Trio or asyncio loop (see :mod:`.aloop`).
A CANCEL for the stream, or the master leaving its ``async with`` early, closes the generator
(``GeneratorExit`` at its ``yield``, or cancellation of the coroutine).
"""

from __future__ import annotations

import _thread

from .batching import Sender, Window
from .calls import describe_exception
from .channels import open_channel
from .messages import Cancel, Credit, OpenStream, StreamEnd
from .protocol import HANDLE_CANCEL, HANDLE_OPEN_CHANNEL, HANDLE_OPEN_STREAM, Message

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Optional, Tuple

    Key = Tuple[int, int]


class Streams:
    """The streams of one context, by key (the master's id, the stream's handle)."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.by_key: Dict[Key, Window] = {}
        #: The child's ends of two-way channels (see core/channels.py), by the same keys.
        self.channels: Dict[Key, Any] = {}
        #: Writes the items of every stream and channel here (see core/batching.py).
        self.sender = Sender(context)

    def new_window(self, key: Key, request: Any) -> Window:
        window = self.by_key[key] = Window(self.sender, key, request.items, request.nbytes)
        return window

    def deliver(self, msg: Message) -> bool:
        """An item from the master for a channel; False if no channel has that handle."""
        end = self.channels.get((msg.src, msg.handle))
        if end is None:
            return False
        end.deliver(msg)
        return True

    def open(self, msg: Message) -> None:
        """From the I/O thread: start the producer of an OPEN_STREAM."""
        request = OpenStream.decode(msg.data, may_import=True)
        key = (msg.src, msg.reply_to)
        window = self.new_window(key, request)
        _thread.start_new_thread(self._produce, (key, request, window))

    def credit(self, key: Key, items: int, nbytes: int) -> None:
        window = self.by_key.get(key)
        if window is not None:
            window.grant(items, nbytes)

    def cancel(self, key: Key) -> bool:
        window = self.by_key.get(key)
        if window is None:
            return False
        window.close()
        end = self.channels.get(key)
        if end is not None:
            end.master_closed()
            if self.context.calls.loops is not None:
                self.context.calls.loops.cancel(key)
        return True

    def close_all(self) -> None:
        for window in list(self.by_key.values()):
            window.close()

    # The producer ------------------------------------------------------------------------------
    def _produce(self, key: Key, request: Any, window: Window) -> None:
        desc = "%s.%s" % (request.module, request.qualname)
        generator: Any = None
        try:
            try:
                fn = self.context.calls.resolve(request.module, request.qualname)
                generator = fn(*request.args, **request.kwargs)
                if hasattr(generator, "__anext__"):
                    from .aloop import stream_async

                    stream_async(self, fn, key, window, generator, desc)
                    generator = None  # the event loop closes it
                    return
                if not hasattr(generator, "__next__"):
                    raise TypeError(
                        "%s returned %s, not a generator: open_stream needs a generator "
                        "function" % (desc, type(generator).__name__)
                    )
                for value in generator:
                    # A full window makes the generator wait here; the sender writes the item,
                    # with any others handed over meanwhile.
                    if not window.put_sync(value):
                        break
            finally:
                if generator is not None and hasattr(generator, "close"):
                    generator.close()  # GeneratorExit at its yield when left early
            self.finish(key, None)
        except BaseException as exc:
            self.finish(key, exc)

    def finish(self, key: Key, exc: Optional[BaseException]) -> None:
        """The stream ended (``exc`` None), or failed: say so, after its items, and forget it."""
        window = self.by_key.pop(key, None)
        end = self.channels.pop(key, None)
        if end is not None:
            end.master_closed()  # a receive still waiting in the function's threads ends
        if window is None:
            return  # finished already (the function closed its end, then returned)
        if exc is not None and not window.closed:
            body = describe_exception(exc, self.context.calls.explain).encode()
        else:
            body = StreamEnd.pack("closed" if window.closed else "end")
        window.put_body(body, final=True)  # nothing, if a failed item ended the stream already


def on_message(context: Any, msg: Message) -> None:
    """From the I/O thread: a CANCEL, OPEN_STREAM, OPEN_CHANNEL or CREDIT for ``context``."""
    if msg.handle == HANDLE_CANCEL:  # of a stream or channel, or else of a call
        key = (msg.src, Cancel.decode(msg.data).reply_to)
        if context.streams is None or not context.streams.cancel(key):
            context.calls.cancel(key, context.is_queued)
        return
    if msg.handle in (HANDLE_OPEN_STREAM, HANDLE_OPEN_CHANNEL):
        if context.streams is None:
            context.streams = Streams(context)
        if msg.handle == HANDLE_OPEN_STREAM:
            context.streams.open(msg)
        else:
            open_channel(context.streams, msg)
        return
    credit = Credit.decode(msg.data)
    if context.streams is not None:
        context.streams.credit((msg.src, credit.reply_to), credit.items, credit.nbytes)
