"""The I/O thread loop of a child: readiness callbacks, timers, and the :class:`Waker`.

A child runtime has no Trio: its I/O thread sleeps in :func:`select.poll` on the descriptors it
reads (the parent's stream while a call runs, output pipes, its own children's streams) and on a
:class:`Waker`'s pipe, which any thread writes a byte to when it has handed the loop work.  Only
the thread that runs the loop may register readers and timers.
"""

from __future__ import annotations

import os
import select
import time

from .side import set_nonblocking

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

#: Events that make a reader's callback run: data, or the other end gone.
POLLIN = select.POLLIN | select.POLLHUP | select.POLLERR


def poke(fd: int) -> None:
    """Write a wake-up byte to a non-blocking pipe; a full pipe already holds one, which is fine."""
    try:
        os.write(fd, b"x")
    except BlockingIOError:
        pass


def drain(fd: int) -> None:
    """Read every pending wake-up byte from a non-blocking pipe."""
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


class Waker:
    """A self-pipe: :meth:`wake` from any thread makes the loop that reads it run soon."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        set_nonblocking(self.read_fd)
        set_nonblocking(self.write_fd)

    def __repr__(self) -> str:
        return "Waker(fd=%d)" % self.read_fd

    def wake(self) -> None:
        poke(self.write_fd)

    def drain(self) -> None:
        drain(self.read_fd)

    def fds(self) -> List[int]:
        return [self.read_fd, self.write_fd]


class PollLoop:
    """Readers and timers of one thread, run by :meth:`run_once` until :meth:`stop`."""

    def __init__(self) -> None:
        self._poller = select.poll()
        self._readers: Dict[int, Callable[[], None]] = {}
        self._timers: List[Tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = 0
        #: Sides with ``keep_alive`` whose stream has not ended: the loop's owner waits for them
        #: before it finishes (see :meth:`hold`).
        self.held: List[Any] = []
        self.stopped = False

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self._readers[fd] = callback
        self._poller.register(fd, POLLIN)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            self._poller.unregister(fd)

    def hold(self, side: Any) -> None:
        """Keep the owner's shutdown waiting until :meth:`release` of ``side``, if it is a
        ``keep_alive`` side (see :class:`~.side.Side`)."""
        if side.keep_alive:
            self.held.append(side)

    def release(self, side: Any) -> None:
        if side in self.held:
            self.held.remove(side)

    def add_timer(self, delay: float, callback: Callable[[], None]) -> None:
        self._timer_seq += 1
        self._timers.append((time.monotonic() + delay, self._timer_seq, callback))
        self._timers.sort()

    def stop(self) -> None:
        self.stopped = True

    def run_once(self, busy: bool = False, at_most: Optional[float] = None) -> None:
        """Wait for readiness or the next timer (not at all when ``busy``, at most ``at_most``
        seconds if given), then run the callbacks."""
        self.dispatch(self.wait(busy, at_most))

    def wait(self, busy: bool = False, at_most: Optional[float] = None) -> List[Tuple[int, int]]:
        """The first half of :meth:`run_once`: sleep until something is ready."""
        timeout = None
        if busy:
            timeout = 0
        elif self._timers:
            timeout = max(0, int((self._timers[0][0] - time.monotonic()) * 1000) + 1)
        if at_most is not None:
            limit = max(0, int(at_most * 1000))
            timeout = limit if timeout is None else min(timeout, limit)
        return self._poller.poll(timeout)

    def dispatch(self, events: List[Tuple[int, int]]) -> None:
        """The second half of :meth:`run_once`: run the callbacks of what is ready, and due
        timers."""
        for fd, _event in events:
            callback = self._readers.get(fd)
            if callback is not None:
                callback()
            if self.stopped:
                return
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now and not self.stopped:
            self._timers.pop(0)[2]()
