"""Contexts: ``open_context`` and the :class:`Context` handle used to call into a child."""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, Protocol, TypeVar, overload

import trio

from ._connection import SHUT_DOWN, Connection
from ._funcref import function_reference
from ._payload import config_payload, runtime_payload
from ._responder import ImportStats, ModulePolicy, ModuleResponder, module_names
from .core.errors import (
    CallError,
    ChannelError,
    ConnectError,
    HostKeyError,
    PasswordError,
    StreamError,
)
from .core.protocol import (
    DEFAULT_MAX_MESSAGE_SIZE,
    HANDLE_CALL,
    HANDLE_SHUTDOWN,
    MASTER_ID,
    Message,
    dumps_body,
)

P = ParamSpec("P")
R = TypeVar("R")

#: Seconds a child gets to exit after being asked to, before SIGTERM; then as long again before
#: SIGKILL.
SHUTDOWN_GRACE = 3.0

_context_ids = itertools.count(1)

#: function_reference() results: validating a callable costs more than the rest of a small call.
_references: dict[Any, tuple[str, str]] = {}
_REFERENCES_MAX = 4096

#: Top-level module names children never request: the standard library (never served) and probes
#: for modules of other Python implementations.
NEVER_ASK = tuple(sorted(sys.stdlib_module_names | {"org", "java", "_jython", "__pypy__"}))

#: Serves modules to every context of this process.
RESPONDER = ModuleResponder()


class Method(Protocol):
    """What :func:`open_context` needs from a connection method such as :func:`local`."""

    @property
    def kind(self) -> str: ...

    def describe(self) -> str: ...

    async def start(self, name: str, context_id: int) -> Connection: ...


class Context:
    """A running child interpreter, valid inside its :func:`open_context` block.

    Any number of Trio tasks may call into one context at once; the child runs the calls one at
    a time in the order they arrive.
    """

    def __init__(self, conn: Connection, via: Context | None) -> None:
        self._conn = conn
        self.via = via

    def __repr__(self) -> str:
        return "Context(%r, id=%d)" % (self.name, self.context_id)

    @property
    def name(self) -> str:
        """The context's name, used in log names and error messages."""
        return self._conn.name

    @property
    def context_id(self) -> int:
        """The context's id in routing (the master is 0)."""
        return self._conn.context_id

    @property
    def import_stats(self) -> ImportStats:
        """Module traffic so far: requests served, modules and bytes sent, time spent."""
        return self._conn.import_stats

    @property
    def pid(self) -> int | None:
        """The child's process id, as the child reported it."""
        return self._conn.remote_pid

    def _request(self, fn: Callable[..., Any], args: Any, kwargs: Any, reply_to: int) -> Message:
        try:
            module, qualname = _references[fn]
        except (KeyError, TypeError):
            module, qualname = function_reference(fn)
            if len(_references) >= _REFERENCES_MAX:
                _references.clear()
            _references[fn] = (module, qualname)
        try:
            data = dumps_body((module, qualname, args, kwargs))
        except TypeError as exc:
            raise TypeError("arguments of %s.%s: %s" % (module, qualname, exc)) from None
        return Message(self.context_id, MASTER_ID, HANDLE_CALL, reply_to, data)

    @overload
    async def call(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R: ...

    @overload
    async def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...

    async def call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in the child and return its result.

        ``fn`` must be findable by name in the child: a module-level function, a builtin, or a
        static or class method of a module-level class (others raise :class:`TypeError` before
        anything is sent).  An ``async def`` function runs to completion in an event loop in the
        child.  Arguments and results are plain data: None, bool, int, float, complex, str,
        bytes, bytearray, tuple, list, dict, set, frozenset, nested freely.

        Raises :class:`~trimitogen.CallError` if ``fn`` raised, :class:`~trimitogen.ChannelError`
        if the child died or disconnected first.  Cancelling the caller abandons the reply at
        once; the child finishes the call on its own.
        """
        conn = self._conn
        if conn.dead_reason is not None:
            raise conn.channel_error()
        handle, reply = conn.new_reply()
        try:
            conn.send(self._request(fn, args, kwargs, handle))
            await reply.wait()
        finally:
            conn.pending.pop(handle, None)
        if reply.error is not None:
            raise reply.error
        assert reply.msg is not None
        return self._decode_reply(fn, reply.msg)

    def _decode_reply(self, fn: Callable[..., Any], msg: Message) -> Any:
        what = "the reply of context %r to %s" % (self.name, getattr(fn, "__qualname__", fn))
        if msg.is_dead:
            raise ChannelError("%s: %s" % (what, bytes(msg.data).decode("utf-8", "replace")))
        try:
            reply = msg.unpickle()
        except StreamError as exc:
            raise StreamError("%s was refused: %s" % (what, exc)) from None
        if type(reply) is tuple and len(reply) == 2 and reply[0] is True:
            return reply[1]
        if (
            type(reply) is tuple
            and len(reply) == 4
            and reply[0] is False
            and all(type(part) is str for part in reply[1:])
        ):
            raise CallError(reply[1], reply[2], reply[3])
        raise StreamError("%s is not a reply: %r" % (what, type(reply)))

    async def call_no_reply(
        self, fn: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs
    ) -> None:
        """Send a call without waiting for it; an exception it raises is logged by the child."""
        await trio.lowlevel.checkpoint_if_cancelled()
        conn = self._conn
        conn.send(self._request(fn, args, kwargs, 0))
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def shutdown(self) -> None:
        """Stop the child now and wait until it is reaped; calls afterwards raise ChannelError.

        Leaving the :func:`open_context` block does this too.
        """
        with trio.CancelScope(shield=True):
            await _stop(self._conn)


async def _stop(conn: Connection) -> None:
    """Ask the child to exit, then escalate to SIGTERM and SIGKILL; always reaps it."""
    conn.shutting_down = True
    if conn.ready.is_set() and conn.dead_reason is None:
        try:
            conn.send(Message(conn.context_id, MASTER_ID, HANDLE_SHUTDOWN, 0, b""))
        except ChannelError:
            pass
        with trio.move_on_after(SHUTDOWN_GRACE):
            await conn.exited.wait()
    process = conn.process
    if process is not None:
        if process.returncode is None:
            conn.logger.debug("sending SIGTERM to pid %d", process.pid)
            process.terminate()
            with trio.move_on_after(SHUTDOWN_GRACE):
                await process.wait()
        if process.returncode is None:
            conn.logger.warning("pid %d ignored SIGTERM: sending SIGKILL", process.pid)
            process.kill()
            await process.wait()
    conn.disconnect(SHUT_DOWN)


async def _await_ready(conn: Connection, method: Method, connect_timeout: float) -> None:
    with trio.move_on_after(connect_timeout):
        await conn.settled.wait()
    if conn.ready.is_set():
        return
    error_class: type[ConnectError] = ConnectError
    started = conn.remote_hexversion is not None
    if conn.connect_error is not None:
        error_class = type(conn.connect_error)
        phase = {PasswordError: "authentication", HostKeyError: "host key"}.get(
            error_class, "connect"
        )
        why = str(conn.connect_error)
    elif conn.dead_reason is not None:
        phase = "bootstrap" if started else "spawn"
        why = conn.dead_reason
    elif not started:
        phase = "authentication" if conn.dialog and conn.dialog.passwords_sent else "spawn"
        why = "the interpreter did not start the bootstrap within %gs" % connect_timeout
    else:
        phase = "bootstrap"
        why = "the bootstrap did not complete within %gs" % connect_timeout
    await _stop(conn)
    with trio.move_on_after(0.5):
        await conn.stderr_closed.wait()
    raise error_class(
        "%s: could not start context %r (phase: %s): %s; last output:\n%s"
        % (method.describe(), conn.name, phase, why, conn.output_tail())
    )


@asynccontextmanager
async def open_context(
    method: Method,
    *,
    via: Context | None = None,
    name: str | None = None,
    connect_timeout: float = 30.0,
    deny_modules: Sequence[str] | str = (),
    allow_modules: Sequence[str] | str | None = None,
) -> AsyncIterator[Context]:
    """Start a child with ``method`` and yield its :class:`Context`.

    ``name`` labels the context in logs and errors (default: the method's kind and the context
    id, such as ``local.1``).  Start-up failures raise :class:`~trimitogen.ConnectError` naming
    the context, the phase and the child's last output; ``connect_timeout`` bounds the start-up.

    However the block ends, the child is asked to exit, then terminated if it does not, reaped,
    and every fd is closed.  An exception from the body propagates as itself.

    Modules the child cannot import itself are sent by the master on request (never the standard
    library, never compiled extensions).  ``deny_modules`` and ``allow_modules`` are dotted-name
    prefixes limiting what this context may receive; deny wins.
    """
    if via is not None:
        raise ValueError("via= is not supported by this version: open contexts directly")
    context_id = next(_context_ids)
    policy = ModulePolicy(deny=module_names(deny_modules) or (), allow=module_names(allow_modules))
    conn = await method.start(name or "%s.%d" % (method.kind, context_id), context_id)
    conn.responder = RESPONDER
    conn.module_policy = policy
    error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.reader)
            nursery.start_soon(conn.writer)
            if conn.stderr is not None:
                nursery.start_soon(conn.stderr_reader)
            if conn.process is not None:
                nursery.start_soon(conn.waiter)
            try:
                config = {
                    "context_id": conn.context_id,
                    "parent_id": MASTER_ID,
                    "name": conn.name,
                    "log_level": conn.logger.getEffectiveLevel() or logging.WARNING,
                    "max_message_size": DEFAULT_MAX_MESSAGE_SIZE,
                    "never_ask": NEVER_ASK,
                }
                conn.send_parts([runtime_payload(), config_payload(config)])
                await _await_ready(conn, method, connect_timeout)
                yield Context(conn, via)
            except BaseException as exc:
                # Kept to re-raise outside the nursery, so it is never wrapped in a group.
                error = exc
            finally:
                with trio.CancelScope(shield=True):
                    await _stop(conn)
                nursery.cancel_scope.cancel()
    finally:
        conn.close_fds()
    if error is not None:
        try:
            raise error
        finally:
            del error
