"""Contexts: ``open_context`` and the :class:`Context` handle used to call into a child."""

from __future__ import annotations

import importlib.util
import itertools
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, Protocol, TypeVar, overload

import trio

from ._connection import SHUT_DOWN, Connection, Route
from ._funcref import function_reference
from ._methods import local
from ._payload import config_payload, runtime_payload
from ._responder import ImportStats, ModulePolicy, ModuleResponder, module_names
from .core import child as child_runtime
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
    HANDLE_KILL,
    HANDLE_SHUTDOWN,
    HANDLE_SPAWN,
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

    def spec(self) -> dict[str, Any]: ...

    async def start(self, name: str, context_id: int) -> Connection: ...


class Context:
    """A running child interpreter, valid inside its :func:`open_context` block.

    Any number of Trio tasks may call into one context at once; the child runs the calls one at
    a time in the order they arrive.
    """

    def __init__(self, route: Route, via: Context | None) -> None:
        self._route = route
        self._conn = route.conn
        self.via = via

    def __repr__(self) -> str:
        return "Context(%r, id=%d)" % (self.name, self.context_id)

    @property
    def name(self) -> str:
        """The context's name, used in log names and error messages."""
        return self._route.name

    @property
    def context_id(self) -> int:
        """The context's id in routing (the master is 0)."""
        return self._route.context_id

    @property
    def import_stats(self) -> ImportStats:
        """Module requests that reached the master from this context, and what they cost.

        A context opened ``via=`` another is usually served by that intermediate's cache, so
        its requests show in the intermediate's figures instead.
        """
        return self._route.import_stats

    @property
    def pid(self) -> int | None:
        """The child's process id, as the child reported it."""
        return self._route.pid

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
        if len(data) > DEFAULT_MAX_MESSAGE_SIZE:
            raise ValueError(
                "arguments of %s.%s encode to %d bytes, over the %d-byte message limit: send "
                "them in several calls" % (module, qualname, len(data), DEFAULT_MAX_MESSAGE_SIZE)
            )
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
        route = self._route
        if route.dead_reason is not None:
            raise route.channel_error()
        conn = self._conn
        handle, reply = conn.new_reply(route.context_id)
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
        if self._route.dead_reason is not None:
            raise self._route.channel_error()
        self._conn.send(self._request(fn, args, kwargs, 0))
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def shutdown(self) -> None:
        """Stop the child now and wait until it is reaped; calls afterwards raise ChannelError.

        Leaving the :func:`open_context` block does this too.
        """
        with trio.CancelScope(shield=True):
            if self._route is self._conn.route:
                await _stop(self._conn)
            else:
                await _stop_via(self._route)


async def _stop_via(route: Route) -> None:
    """Ask a context below an intermediate to exit, then have the intermediate kill it."""
    route.shutting_down = True
    conn = route.conn
    for handle, dst, body in (
        (HANDLE_SHUTDOWN, route.context_id, b""),
        (HANDLE_KILL, route.parent.context_id if route.parent else MASTER_ID, None),
    ):
        if route.dead_reason is not None:
            break
        try:
            data = dumps_body(route.context_id) if body is None else body
            conn.send(Message(dst, MASTER_ID, handle, 0, data))
        except ChannelError:
            break
        with trio.move_on_after(SHUTDOWN_GRACE):
            await route.gone.wait()
    conn.forget(route, SHUT_DOWN)


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
    if conn.connect_error is None and conn.stderr is not None:
        # The process may have ended before its last words (a refused password) were read.
        with trio.move_on_after(0.5):
            await conn.stderr_closed.wait()
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
    raise error_class(connect_failure(method.describe(), conn.name, phase, why, conn.output_tail()))


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
    context_id = next(_context_ids)
    name = name or "%s.%d" % (method.kind, context_id)
    policy = ModulePolicy(deny=module_names(deny_modules) or (), allow=module_names(allow_modules))
    if method.kind == "fork":
        if via is None:
            via = await _fork_server()
        preload = list(getattr(method, "preload", ()))
        if preload:
            try:
                await via.call(child_runtime.preload, preload)
            except CallError as exc:  # a start-up failure, as the docs promise
                raise ConnectError(
                    connect_failure(
                        "fork (started by %r)" % via.name,
                        name,
                        "preload",
                        "importing %s there failed: %s" % (", ".join(preload), exc.message),
                        [],
                    )
                ) from exc
    if via is not None:
        async with _open_via(method, via, context_id, name, connect_timeout, policy) as context:
            yield context
        return
    conn = await method.start(name, context_id)
    conn.responder = RESPONDER
    conn.route.module_policy = policy
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
                config = _child_config(conn.route, MASTER_ID)
                payload = runtime_payload(compiled=_runs_this_interpreter(method))
                conn.send_parts([payload, config_payload(config)])
                await _await_ready(conn, method, connect_timeout)
                yield Context(conn.route, None)
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


def _runs_this_interpreter(method: Method) -> bool:
    """True if ``method`` starts the master's own interpreter, which can take compiled code."""
    python: tuple[str, ...] = getattr(method, "python", ())
    if method.kind != "local" or not python:
        return False
    # Options only: a script argument would be what runs, not the bootstrap.
    if not all(arg.startswith("-") for arg in python[1:]):
        return False
    return os.path.realpath(python[0]) == os.path.realpath(sys.executable)


def connect_failure(what: str, name: str, phase: str, reason: str, lines: list[str]) -> str:
    """The one format of every start-up failure: who, which phase, why, and the last output."""
    shown = "\n".join("    " + line for line in lines) if lines else "    (it printed nothing)"
    return "%s: could not start context %r (phase: %s): %s; last output:\n%s" % (
        what,
        name,
        phase,
        reason,
        shown,
    )


def _child_config(route: Route, parent_id: int) -> dict[str, Any]:
    """The settings a new child's runtime starts with."""
    return {
        "context_id": route.context_id,
        "parent_id": parent_id,
        "name": route.name,
        "log_level": route.logger.getEffectiveLevel() or logging.WARNING,
        "max_message_size": DEFAULT_MAX_MESSAGE_SIZE,
        "never_ask": NEVER_ASK,
        "master_magic": importlib.util.MAGIC_NUMBER,
    }


_CONNECT_ERRORS: dict[str, type[ConnectError]] = {
    "password": PasswordError,
    "hostkey": HostKeyError,
    "connect": ConnectError,
}


@asynccontextmanager
async def _open_via(
    method: Method,
    via: Context,
    context_id: int,
    name: str,
    connect_timeout: float,
    policy: ModulePolicy,
) -> AsyncIterator[Context]:
    """Have the context ``via`` start the child, and route to it through ``via``'s connection."""
    parent = via._route
    if parent.dead_reason is not None:
        raise ConnectError(
            connect_failure(
                "%s (started by %r)" % (method.describe(), parent.name),
                name,
                "spawn",
                "the context to start it from is gone: %s" % parent.dead_reason,
                [],
            )
        )
    conn = parent.conn
    route = Route(conn, context_id, name, parent)
    route.module_policy = policy
    request = {
        "spec": method.spec(),
        "context_id": context_id,
        "name": name,
        "payload": b"" if method.kind == "fork" else runtime_payload(),
        "config_payload": config_payload(_child_config(route, parent.context_id)),
        "connect_timeout": connect_timeout,
        "deny": list(policy.deny),
        "allow": None if policy.allow is None else list(policy.allow),
    }
    conn.routes[context_id] = route
    handle, reply = conn.new_reply(parent.context_id)
    what = "%s (started by %r)" % (method.describe(), parent.name)
    error: BaseException | None = None
    started = False
    try:
        conn.send(Message(parent.context_id, MASTER_ID, HANDLE_SPAWN, handle, dumps_body(request)))
        # The intermediate enforces connect_timeout itself; the margin covers the round trip.
        with trio.move_on_after(connect_timeout + SHUTDOWN_GRACE):
            await reply.wait()
        if reply.error is not None:
            raise ConnectError(
                "%s: could not start context %r: %s" % (what, name, reply.error)
            ) from None
        if reply.msg is None:
            raise ConnectError(
                "%s: could not start context %r: %r did not answer within %gs"
                % (what, name, parent.name, connect_timeout + SHUTDOWN_GRACE)
            )
        if reply.msg.is_dead:
            raise ConnectError(
                connect_failure(
                    what, name, "spawn", bytes(reply.msg.data).decode("utf-8", "replace"), []
                )
            )
        try:
            answer = reply.msg.unpickle()
            if answer[0] is not True:
                _ok, kind, phase, reason, lines = answer
                failure = _CONNECT_ERRORS.get(kind, ConnectError)(
                    connect_failure(what, name, str(phase), str(reason), [str(x) for x in lines])
                )
            else:
                failure = None
                route.pid = int(answer[1])
                route.magic = bytes(answer[3])
        except (StreamError, TypeError, ValueError, IndexError) as exc:
            raise ConnectError(
                connect_failure(what, name, "spawn", "malformed answer: %r" % (exc,), [])
            ) from None
        if failure is not None:
            raise failure
        started = True
        yield Context(route, via)
    except BaseException as exc:
        error = exc
    finally:
        conn.pending.pop(handle, None)
        if started:
            with trio.CancelScope(shield=True):
                await _stop_via(route)
        else:
            if reply.msg is None and parent.dead_reason is None:
                # No answer: the intermediate may still be starting it.  Make sure it stops.
                try:
                    conn.send(
                        Message(
                            parent.context_id, MASTER_ID, HANDLE_KILL, 0, dumps_body(context_id)
                        )
                    )
                except ChannelError:
                    pass
            conn.forget(route, "it did not start")
    if error is not None:
        try:
            raise error
        finally:
            del error


class _ForkServer:
    """The local context that ``fork()`` without ``via`` copies, one per Trio run."""

    def __init__(self) -> None:
        self.ready = trio.Event()
        self.context: Context | None = None
        self.error: BaseException | None = None
        self.finished = False


_FORK_SERVER: trio.lowlevel.RunVar[_ForkServer] = trio.lowlevel.RunVar("trimitogen_fork_server")


async def _fork_server() -> Context:
    try:
        server: _ForkServer | None = _FORK_SERVER.get()
    except LookupError:
        server = None
    if server is None or server.finished:
        # First use in this run, or the previous server died: start one.
        server = _ForkServer()
        _FORK_SERVER.set(server)
        trio.lowlevel.spawn_system_task(_run_fork_server, server, name="trimitogen fork server")
    await server.ready.wait()
    context = server.context
    if context is None or server.finished:
        raise ConnectError("the fork server could not start: %s" % (server.error,))
    return context


async def _run_fork_server(server: _ForkServer) -> None:
    # A system task: it lives until the run ends, when Trio cancels it and the context's own
    # shutdown stops and reaps the server, or until the server dies (a later fork() then starts
    # a new one).
    try:
        async with open_context(local(), name="fork-server") as context:
            server.context = context
            server.ready.set()
            await context._route.gone.wait()
            logging.getLogger("trimitogen").warning(
                "the fork server is gone (%s); the next fork() starts a new one",
                context._route.dead_reason,
            )
    except Exception as exc:
        server.error = exc
        logging.getLogger("trimitogen").warning("the fork server failed: %s", exc)
    finally:
        server.finished = True
        server.ready.set()
