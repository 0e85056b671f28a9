"""Connection methods: how to start a child, described as data."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from ._connection import Connection
from .core.bootstrap import stage1_command
from .core.errors import ConnectError
from .core.side import Side

#: Socket buffer size asked for on a local child's socketpair.
SOCKET_BUFFER = 4 * 1024 * 1024


@dataclass(frozen=True)
class Local:
    """A new local interpreter.  Made by :func:`local`."""

    python: tuple[str, ...]

    kind = "local"

    def describe(self) -> str:
        return "local interpreter %s" % " ".join(self.python)

    def argv(self) -> list[str]:
        return [*self.python, "-c", stage1_command()]

    async def start(self, name: str, context_id: int) -> Connection:
        """Spawn the interpreter with a socketpair on fds 0 and 1 and a pipe on fd 2."""
        parent_sock, child_sock = socket.socketpair()
        for sock in (parent_sock, child_sock):
            # Larger buffers mean fewer wake-ups per megabyte; the kernel caps the request.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        err_r, err_w = os.pipe()
        try:
            process = await trio.lowlevel.open_process(
                self.argv(),
                stdin=child_sock.fileno(),
                stdout=child_sock.fileno(),
                stderr=err_w,
                # Own session: a Ctrl-C meant for the master's terminal must not reach children;
                # the master shuts them down itself.
                start_new_session=True,
            )
        except OSError as exc:
            parent_sock.close()
            os.close(err_r)
            raise ConnectError(
                "%s: could not start context %r: %s (check the interpreter path)"
                % (self.describe(), name, exc)
            ) from exc
        finally:
            child_sock.close()
            os.close(err_w)
        side = Side(None, parent_sock.detach())
        conn = Connection(
            name=name,
            context_id=context_id,
            process=process,
            rx=side,
            tx=side,
            stderr=Side(None, err_r),
        )
        side.stream = conn
        return conn


def local(*, python: str | Sequence[str] | None = None) -> Local:
    """A method that starts a new local Python interpreter.

    ``python`` is the interpreter's path or a whole argv prefix such as
    ``["/usr/bin/python3", "-I", "-S"]``; by default the master's own :data:`sys.executable`.
    Any CPython 3.8 or newer works: nothing needs to be installed for it.
    """
    if python is None:
        argv: tuple[str, ...] = (sys.executable,)
    elif isinstance(python, str):
        argv = (python,)
    else:
        argv = tuple(python)
    if not argv or not all(isinstance(arg, str) and arg for arg in argv):
        raise ValueError("python must be a non-empty path or argv list, got %r" % (python,))
    return Local(argv)


__all__ = ["Local", "local"]
