"""The exception hierarchy shared by the master and the child runtime."""

from __future__ import annotations

import builtins
import re

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Type


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

    def __reduce__(self) -> Any:
        return (remote_error, (self.type_name, self.message, self.remote_traceback))


#: Built-in exceptions that stay plain :class:`CallError`: raising a StopIteration from a
#: coroutine turns it into RuntimeError, and an exception group needs its members.
_NOT_MIRRORED = frozenset(("StopIteration", "StopAsyncIteration", "ExceptionGroup"))

_mirrors: Dict[str, Type[CallError]] = {}

_ERRNO_MESSAGE = re.compile(r"\[Errno (-?\d+)\] (.*?)(?:: '(.*)')?\Z", re.DOTALL)


def _mirror(name: str) -> Type[CallError]:
    """``CallError`` that is also the built-in exception class ``name`` (or CallError)."""
    cls = _mirrors.get(name)
    if cls is None:
        cls = CallError
        base = getattr(builtins, name, None)
        if (
            name not in _NOT_MIRRORED
            and isinstance(base, type)
            and issubclass(base, Exception)
            and base.__module__ == "builtins"
        ):
            # Named CallError: a traceback reads ``trimitogen.core.errors.CallError:
            # builtins.ValueError: ...``, and code that reports ``type(exc).__name__`` sees the
            # class it knows.
            try:
                candidate = type(
                    "CallError",
                    (CallError, base),
                    {"__module__": __name__, "__qualname__": "CallError"},
                )
                str(candidate("builtins." + name, "probe", ""))
                cls = candidate
            except TypeError:
                # A built-in whose constructor insists on its own arguments: mirror its base.
                cls = _mirror(base.__mro__[1].__name__)
        _mirrors[name] = cls
    return cls


def remote_error(type_name: str, message: str, remote_traceback: str = "") -> CallError:
    """The exception to raise for a remote exception of class ``type_name``.

    For a built-in exception class (``builtins.ValueError``) it is a :class:`CallError` that is
    also an instance of that class, so ``except ValueError:`` catches it; an ``OSError`` gets its
    ``errno``, ``strerror`` and ``filename`` back from the message.  Any other class gives a
    plain :class:`CallError`: nothing a child sends becomes a class here.
    """
    cls = CallError
    module, _, name = type_name.rpartition(".")
    if module == "builtins":
        cls = _mirror(name)
    error = cls(type_name, message, remote_traceback)
    if isinstance(error, OSError):
        match = _ERRNO_MESSAGE.match(message)
        error.errno, error.strerror, error.filename = (
            (int(match.group(1)), match.group(2), match.group(3))
            if match
            else (None, message, None)
        )
    return error


class Cancelled(BaseException):
    """Raised inside a function running in a child when its caller was cancelled.

    A :class:`BaseException`, like :class:`trio.Cancelled`, so that ``except Exception`` in the
    function does not swallow it.  It arrives at once, also while the function waits in a
    blocking system call; the function may clean up, and should let it propagate.
    """
