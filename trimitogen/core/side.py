"""One file descriptor of a connection, with disconnection folded into ordinary return values."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import stat

from .errors import StreamError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, List, Optional, Tuple, TypeVar

    _T = TypeVar("_T")


#: errno values that mean "the other end went away" rather than "something is wrong here":
#: EIO from a pty whose slave side closed, ECONNRESET from a socket, EPIPE from a pipe.
DISCONNECT_ERRNOS = frozenset((errno.EIO, errno.ECONNRESET, errno.EPIPE))

#: The largest single read a Side makes by default.
CHUNK_SIZE = 256 * 1024


def io_op(func: Callable[..., _T], *args: Any) -> Tuple[Optional[_T], bool]:
    """Call ``func(*args)`` and report disconnection instead of raising it.

    Returns ``(result, False)`` on success and ``(None, True)`` when the call failed with an errno
    that means the peer disconnected.  An interrupted call (EINTR) is retried; any other
    :class:`OSError`, including :class:`BlockingIOError`, propagates.
    """
    while True:
        try:
            return func(*args), False
        except InterruptedError:
            continue
        except OSError as exc:
            if exc.errno in DISCONNECT_ERRNOS:
                return None, True
            raise


def set_nonblocking(fd: int) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if not flags & os.O_NONBLOCK:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)


#: Capacity asked for a pipe a Side uses (Linux's default is 64 KiB; an unprivileged process
#: may ask up to /proc/sys/fs/pipe-max-size, 1 MiB by default).  A larger pipe means fewer
#: wake-ups of each end per megabyte: an ssh session's pipes carry every byte of a transfer.
#: Only a context's stream to its parent is widened: output pipes stay small, so a flood of
#: output waits for the master instead of running far ahead of it.
PIPE_SIZE = 1024 * 1024
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, which Python names only from 3.10


def widen_pipe(fd: int) -> None:
    """Make the pipe ``fd`` is an end of hold :data:`PIPE_SIZE` bytes, if the system lets it
    (nothing happens for anything but a pipe, or where it is refused)."""
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass


class Side:
    """One end of a stream: the fd it reads from or the fd it writes to.

    A pipe needs two Sides (one per direction) while a socket or pty may serve as both, so stream
    code treats them alike.  The fd is made non-blocking here; a read or write that would block
    raises :class:`BlockingIOError` for the caller's event loop to wait on.  ``stream`` is the
    object the side belongs to, or ``None`` for a standalone fd.  ``keep_alive`` tells a loop that
    this side's stream should stay open until the side disconnects.
    """

    def __init__(self, stream: object, fd: int, keep_alive: bool = True) -> None:
        self.stream = stream
        self.fd: Optional[int] = fd
        self.keep_alive = keep_alive
        set_nonblocking(fd)

    def __repr__(self) -> str:
        return "Side(%r, fd=%r)" % (self.stream, self.fd)

    def fileno(self) -> int:
        """The fd, for ``select``-style APIs; :class:`StreamError` once closed."""
        if self.fd is None:
            raise StreamError("%r is closed" % (self,))
        return self.fd

    def close(self) -> None:
        """Close the fd once; later calls do nothing."""
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    @property
    def closed(self) -> bool:
        return self.fd is None

    def read(self, n: int = CHUNK_SIZE) -> bytes:
        """Read up to ``n`` bytes; ``b""`` means the peer disconnected (or end of file)."""
        data, disconnected = io_op(os.read, self.fileno(), n)
        if disconnected or data is None:
            return b""
        return data

    def readinto(self, buffer: Any) -> int:
        """Read straight into a writable buffer; ``0`` means the peer disconnected."""
        n, disconnected = io_op(os.readv, self.fileno(), [buffer])
        if disconnected or n is None:
            return 0
        return n

    def write(self, data: Any) -> Optional[int]:
        """Write what the fd accepts now; the count written, or ``None`` on disconnection."""
        n, disconnected = io_op(os.write, self.fileno(), data)
        if disconnected:
            return None
        return n

    def writev(self, buffers: Any) -> Optional[int]:
        """Like :meth:`write` for a sequence of buffers, gathered in one system call."""
        n, disconnected = io_op(os.writev, self.fileno(), buffers)
        if disconnected:
            return None
        return n


#: At most this many buffers go to one writev() (the kernel refuses more with EINVAL).
IOV_MAX = 1024


def wait_fd(fd: int, events: int, timeout: Optional[float] = None) -> bool:
    """Sleep until ``fd`` is ready for ``events`` (select.POLLIN/POLLOUT), or ``timeout`` passes.

    ``poll`` rather than ``select``: it works for descriptors numbered 1024 and above.
    """
    poller = select.poll()
    poller.register(fd, events)
    return bool(poller.poll(None if timeout is None else max(0, int(timeout * 1000))))


def write_parts_blocking(side: Side, parts: List[Any], pump: Any = None) -> bool:
    """Write every buffer in ``parts`` to a non-blocking Side, sleeping in ``poll`` when full.

    For the child runtime's threads (the master writes from Trio instead).  Returns False if the
    other end disconnected first.  ``pump``, if given, is ``(fds, read)``: while waiting, data
    arriving on those fds is read with ``read(fd)``, so two processes each waiting to write to
    the other cannot wait forever.
    """
    parts = [part for part in parts if len(part)]
    fd = side.fileno()
    while parts:
        try:
            n = side.writev(parts[:IOV_MAX])
        except BlockingIOError:
            if pump is None:
                wait_fd(fd, select.POLLOUT)
                continue
            fds, read = pump
            wanted = {other: select.POLLIN for other in fds()}
            # The same socket may be both the one written and one read: events combine.
            wanted[fd] = wanted.get(fd, 0) | select.POLLOUT
            poller = select.poll()
            for other, events in wanted.items():
                poller.register(other, events)
            for ready, event in poller.poll():
                if event & (select.POLLIN | select.POLLHUP) and wanted[ready] & select.POLLIN:
                    read(ready)
            continue
        if n is None:
            return False
        parts = written(parts, n)
    return True


def written(parts: List[Any], n: int) -> List[Any]:
    """What remains of the buffers ``parts`` once a gathered write took the first ``n`` bytes.

    The one place where a partial write is accounted for, by the master and the child alike.
    """
    i = 0
    while i < len(parts):
        size = len(parts[i])
        if n < size:
            if not n:
                return parts[i:]
            return [memoryview(parts[i])[n:], *parts[i + 1 :]]
        n -= size  # empty buffers are passed over here too
        i += 1
    return []


def same_file(fd1: int, fd2: int) -> bool:
    """Whether two descriptors refer to the same open file (one socket on fds 0 and 1)."""
    st1, st2 = os.fstat(fd1), os.fstat(fd2)
    return (st1.st_dev, st1.st_ino) == (st2.st_dev, st2.st_ino)
