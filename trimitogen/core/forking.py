"""Forking a context: the new process is a copy of this one, with a runtime of its own.

The fork happens on the context's main thread, between two calls, so no user code is running
and holding a lock at that moment.  In the copy, the runtime of the original is discarded: its
descriptors are closed, its importer and log handler removed, and a fresh runtime (a new context
id, this context as its parent, new output pipes, new wake-up sockets) takes over the thread.
Modules already imported, and their state, stay.  ``random`` re-seeds itself after a fork
(CPython registers that), so two copies do not share a random stream; logging's locks are reset
by logging's own fork hooks.
"""

from __future__ import annotations

import _socket
import os
import sys
import warnings

from . import latch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, List, Tuple


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def runtime_fds(context: Any) -> List[int]:
    """Every descriptor the runtime of ``context`` opened (a forked copy closes them)."""
    sides = [context.rx, context.tx] + [logger.side for logger in context.loggers]
    fds = [side.fd for side in sides if side is not None and side.fd is not None]
    if context.children is not None:
        fds += context.children.owned_fds()
    fds += [context._main_done_r, context._main_done_w]
    fds += context.waker.fds() + context._main_waker.fds()
    fds += [fd for _request, _src, _handle, _pid, fd in context._forked]
    return fds


def fork_child(owned_fds: List[int], become: Callable[[int], None]) -> Tuple[int, int]:
    """Fork.  The parent gets ``(pid, its end of the socket pair)``.  The copy closes
    ``owned_fds`` (the original runtime's descriptors), runs ``become(its end)`` and exits."""
    # Output still buffered would otherwise be written once by each process.
    _flush_stdio()
    parent_sock, child_sock = _socket.socketpair()
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a threaded process may deadlock the child.  The child
        # touches nothing the other thread (the I/O thread) may have held: it builds new objects.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid:
        child_sock.close()
        return pid, parent_sock.detach()
    try:
        parent_sock.close()
        for fd in owned_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        latch.reset_after_fork()
        become(child_sock.detach())
        _flush_stdio()
        os._exit(0)
    finally:
        os._exit(70)


def run_copy(old: Any, request: Any, sock_fd: int, make: Any, start: Any) -> None:
    """In a forked copy: drop the original's runtime and run a fresh one on ``sock_fd``, made
    by ``make`` (the runtime's class) and run by ``start``."""
    from .iologger import remove_forwarding

    sys.meta_path[:] = [finder for finder in sys.meta_path if finder is not old.importer]
    remove_forwarding(old)
    context = make(request.config, sock_fd, sock_fd)
    old.importer.hand_over(context.importer)
    start(context)
    context.importer.remove_files()  # a fork ends with os._exit(), which skips atexit
