"""A thread-safe queue whose sleepers can always be interrupted and wake without latency.

A thread that must wait sleeps in ``poll()`` on the reading end of a socketpair that belongs to
that thread (made the first time the thread sleeps on any latch, and kept for reuse).  ``put()``
wakes exactly one sleeper by writing one byte to its socketpair.  Unlike ``threading.Condition``,
the wait is a plain system call: signals interrupt it and a timeout ends it on time.

Other kinds of waiters (the master's Trio tasks) join the same FIFO of sleepers through
:meth:`Latch._add_waker`, so one latch serves threads and an event loop together.
"""

from __future__ import annotations

import _socket
import _thread
import select
import time

from .errors import LatchError, TimeoutError
from .side import wait_fd

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, List, Optional


_local = _thread._local()


class _ThreadSockets:
    """A thread's wake-up socketpair, closed when the thread ends and its locals are freed."""

    __slots__ = ("rsock", "wsock")

    def __init__(self) -> None:
        self.rsock, self.wsock = _socket.socketpair()

    def __del__(self) -> None:
        self.rsock.close()
        self.wsock.close()


def reset_after_fork() -> None:
    """In a forked child: stop using the wake-up sockets shared with the parent process."""
    sockets = getattr(_local, "sockets", None)
    if sockets is not None:
        del _local.sockets


def _thread_socketpair() -> "tuple[_socket.socket, _socket.socket]":
    sockets = getattr(_local, "sockets", None)
    if sockets is None:
        sockets = _local.sockets = _ThreadSockets()
    return sockets.rsock, sockets.wsock


class _SleepingThread:
    """A sync waker: one byte written to the sleeping thread's socketpair."""

    __slots__ = ("wsock",)

    def __init__(self, wsock: _socket.socket) -> None:
        self.wsock = wsock

    def __call__(self) -> None:
        self.wsock.send(b"\x01")


class Latch:
    """A FIFO queue that any number of threads may ``put()`` to and sleep on."""

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._queue: List[Any] = []
        self._wakers: List[Callable[[], None]] = []
        self.closed = False

    def __repr__(self) -> str:
        return "<%s size=%d waiters=%d%s>" % (
            type(self).__name__,
            len(self._queue),
            len(self._wakers),
            " closed" if self.closed else "",
        )

    def empty(self) -> bool:
        """True when a ``get`` would block now; another thread may change that at any moment."""
        return not self._queue

    def put(self, obj: Any) -> None:
        """Append ``obj`` and wake the longest-waiting sleeper; :class:`LatchError` once closed."""
        with self._lock:
            if self.closed:
                raise LatchError("put() on a closed latch")
            self._queue.append(obj)
            if self._wakers:
                self._wakers.pop(0)()

    def close(self) -> None:
        """Mark the latch closed and wake every sleeper; each raises :class:`LatchError`."""
        with self._lock:
            self.closed = True
            wakers, self._wakers = self._wakers, []
            for wake in wakers:
                wake()

    def _pop_or_raise(self) -> Any:
        # Called with the lock held.  Items put before close() are still handed out.
        if self._queue:
            return self._queue.pop(0)
        if self.closed:
            raise LatchError("the latch was closed")
        return _EMPTY

    def _add_waker(self, wake: Callable[[], None]) -> None:
        self._wakers.append(wake)

    def _remove_waker(self, wake: Callable[[], None]) -> bool:
        """Withdraw a waker; False if it was already called (a wake-up is on its way)."""
        try:
            self._wakers.remove(wake)
        except ValueError:
            return False
        return True

    def get_sync(self, timeout: Optional[float] = None, block: bool = True) -> Any:
        """Dequeue the next object, sleeping the calling thread until one arrives.

        ``timeout`` bounds the sleep in seconds; ``block=False`` never sleeps.  Raises
        :class:`~trimitogen.TimeoutError` when nothing arrived in time and :class:`LatchError` if
        the latch is or becomes closed.  Must not be called from the Trio thread: use ``await
        get()`` there.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        rsock, wsock = _thread_socketpair()
        while True:
            with self._lock:
                obj = self._pop_or_raise()
                if obj is not _EMPTY:
                    return obj
                if not block:
                    raise TimeoutError("the latch is empty")
                waker = _SleepingThread(wsock)
                self._add_waker(waker)
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                ready = wait_fd(rsock.fileno(), select.POLLIN, remaining)
            except BaseException:
                with self._lock:
                    if not self._remove_waker(waker):
                        # put() chose this thread, which is leaving: pass the wake-up on.
                        rsock.recv(1)
                        if self._queue and self._wakers:
                            self._wakers.pop(0)()
                raise
            with self._lock:
                if not self._remove_waker(waker):
                    # put()/close() already chose us and its byte is in the socket; consume it so
                    # the next sleep on this thread does not return at once.
                    rsock.recv(1)
            if not ready and deadline is not None and time.monotonic() >= deadline:
                with self._lock:
                    obj = self._pop_or_raise()
                    if obj is not _EMPTY:
                        return obj
                raise TimeoutError("no object arrived within %rs" % (timeout,))


class _Empty:
    __slots__ = ()


_EMPTY: Any = _Empty()

__all__ = ["Latch"]


class FairLock:
    """A lock passed to the threads waiting for it in the order they came.

    A plain lock lets the thread that releases it take it straight back (it still holds the
    GIL), so a thread writing a large message part by part would keep every other writer out
    until the whole message is written.  This one hands the lock to the longest waiter: while
    any thread waits, ``_lock`` stays taken and passes from holder to waiter.
    """

    __slots__ = ("_guard", "_lock", "_waiters")

    def __init__(self) -> None:
        self._guard = _thread.allocate_lock()
        self._lock = _thread.allocate_lock()
        self._waiters: List[Any] = []

    @property
    def _held(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> None:
        if self._lock.acquire(False):  # free, so nobody waits either
            return
        guard = self._guard
        with guard:
            if self._lock.acquire(False):
                return
            waiter = _thread.allocate_lock()
            waiter.acquire()
            self._waiters.append(waiter)
        try:
            waiter.acquire()  # released by the holder as it hands the lock on
        except BaseException:
            with guard:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                    raise
            self.__exit__()  # it was handed over just now: pass it on
            raise

    def __exit__(self, *exc_info: Any) -> None:
        with self._guard:
            if self._waiters:
                self._waiters.pop(0).release()
            else:
                self._lock.release()
