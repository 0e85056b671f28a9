"""The public :class:`Latch`: the thread-safe latch of the child runtime, awaitable from Trio."""

from __future__ import annotations

import _thread
from typing import Generic, TypeVar

import trio

from .core import latch as _core_latch

T = TypeVar("T")


class _TrioWaker:
    """Wakes one Trio task, directly from the Trio thread or through the run's token otherwise."""

    __slots__ = ("event", "thread_id", "token")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.token = trio.lowlevel.current_trio_token()
        self.thread_id = _thread.get_ident()

    def __call__(self) -> None:
        if _thread.get_ident() == self.thread_id:
            self.event.set()
        else:
            self.token.run_sync_soon(self.event.set)


class Latch(_core_latch.Latch, Generic[T]):
    """A queue that any thread may :meth:`put` to and that Trio tasks and threads may wait on.

    ``await get()`` waits in Trio and is cancellable; :meth:`get_sync` waits in a thread that is
    not running Trio (see :meth:`~trimitogen.core.latch.Latch.get_sync`).  Both kinds of waiter
    are served in the order they began to wait.  :meth:`close` wakes all of them with
    :class:`~trimitogen.LatchError`.
    """

    def put(self, obj: T) -> None:
        """Append ``obj``, waking the longest waiter; :class:`~trimitogen.LatchError` if closed."""
        super().put(obj)

    def get_sync(self, timeout: float | None = None, block: bool = True) -> T:
        """Dequeue from a non-Trio thread, sleeping up to ``timeout`` seconds."""
        obj: T = super().get_sync(timeout, block)
        return obj

    async def get(self) -> T:
        """Dequeue the next object, waiting for one; cancellable; ``LatchError`` if closed."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            with self._lock:
                obj = self._pop_or_raise()
                if obj is not _core_latch._EMPTY:
                    break
                waker = _TrioWaker()
                self._add_waker(waker)
            try:
                await waker.event.wait()
            except BaseException:
                with self._lock:
                    if not self._remove_waker(waker) and self._queue and self._wakers:
                        # We were chosen by put() but are leaving: hand the wake-up on.
                        self._wakers.pop(0)()
                raise
        await trio.lowlevel.cancel_shielded_checkpoint()
        result: T = obj
        return result
