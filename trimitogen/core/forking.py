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
    from typing import Any


def fork_child(owner: Any, request: Any, requester: int, reply_to: int) -> None:
    """Fork; in the parent hand the child's stream to the I/O thread, in the child never return."""
    for stream in (sys.stdout, sys.stderr):
        # Output still buffered would otherwise be written once by each process.
        try:
            stream.flush()
        except Exception:
            pass
    parent_sock, child_sock = _socket.socketpair()
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a threaded process may deadlock the child.  The child
        # touches nothing the other thread (the I/O thread) may have held: it builds new objects.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid:
        child_sock.close()
        owner.adopt_forked(request, requester, reply_to, pid, parent_sock.detach())
        return
    try:
        parent_sock.close()
        _become_child(owner, request, child_sock.detach())
    finally:
        os._exit(70)


def _become_child(old: Any, request: Any, sock_fd: int) -> None:
    from . import child

    for fd in old.owned_fds():
        try:
            os.close(fd)
        except OSError:
            pass
    latch.reset_after_fork()
    sys.meta_path[:] = [
        finder
        for finder in sys.meta_path
        if finder is not old.importer and not isinstance(finder, child.LoggingHook)
    ]
    logging = sys.modules.get("logging")
    if logging is not None:
        root = logging.getLogger()
        for handler in list(root.handlers):
            if getattr(handler, "trimitogen_context", None) is old:
                root.removeHandler(handler)
    context = child.ExternalContext(request.config, sock_fd, sock_fd)
    child.start_runtime(context)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(0)
