"""The exception hierarchy shared by the master and the child runtime."""

from __future__ import annotations

import builtins


class Error(Exception):
    """Base class of every error trimitogen raises."""


class LatchError(Error):
    """The :class:`~trimitogen.Latch` was closed while a caller used or waited on it."""


class StreamError(Error):
    """A connection carried bytes that break the protocol, or ended while bytes were expected."""


class ChannelError(Error):
    """A message could not be delivered or answered: the context on the other end is gone."""


class TimeoutError(Error, builtins.TimeoutError):  # noqa: A001 - the contract names it so
    """A deadline passed.  Also an instance of the built-in :class:`TimeoutError`."""


class ConnectError(Error):
    """A context could not be started: the message names the context, the phase and its output."""


class PasswordError(ConnectError):
    """Authentication failed: a password was wrong, missing, or asked for unexpectedly."""


class HostKeyError(ConnectError):
    """An ssh host key was unknown or changed and the host-key policy refused it."""


class CallError(Error):
    """A function called in another context raised an exception there.

    :attr:`type_name` is the qualified name of the remote exception's class, such as
    ``builtins.ValueError``; :attr:`message` is its ``str()``; :attr:`remote_traceback` is the
    traceback text printed by the context that ran the function.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(type_name, message, remote_traceback)
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        text = "%s: %s" % (self.type_name, self.message)
        if self.remote_traceback:
            text += "\n--- remote traceback ---\n" + self.remote_traceback.rstrip("\n")
        return text


class Cancelled(BaseException):
    """Raised inside a function running in a child when its caller was cancelled.

    A :class:`BaseException`, like :class:`trio.Cancelled`, so that ``except Exception`` in the
    function does not swallow it.  It arrives at once, also while the function waits in a
    blocking system call; the function may clean up, and should let it propagate.
    """
