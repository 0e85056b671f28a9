"""Contexts: ``open_context`` and the :class:`Context` handle used to call into a child."""

from __future__ import annotations

import importlib.util
import itertools
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar, overload

import trio

from . import _files
from ._bytestreams import RemoteByteStream
from ._connection import spawn
from ._files import Progress, TreeResult
from ._funcref import function_reference
from ._methods import Method, local
from ._payload import config_payload, runtime_payload
from ._responder import ImportStats, ModuleResponder, module_names
from ._route import SHUT_DOWN, ContextStatistics, Route
from ._streams import WINDOW_BYTES, WINDOW_ITEMS, RemoteChannel, RemoteStream
from .core import calls
from .core.channels import ChannelEnd, tcp_relay
from .core.errors import CallError, ChannelError, ConnectError, StreamError, remote_error
from .core.importer import ModulePolicy
from .core.link import ERROR_CLASSES, Grace, connect_failure
from .core.messages import (
    Call,
    Kill,
    OpenStream,
    ReplyOk,
    Spawn,
    SpawnOk,
    decode_reply,
    decode_spawn_answer,
)
from .core.protocol import (
    DEFAULT_MAX_MESSAGE_SIZE,
    HANDLE_CALL,
    HANDLE_KILL,
    HANDLE_OPEN_CHANNEL,
    HANDLE_OPEN_STREAM,
    HANDLE_SHUTDOWN,
    HANDLE_SPAWN,
    MASTER_ID,
    Message,
)

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_context_ids = itertools.count(1)

#: function_reference() results: validating a callable costs more than the rest of a small call.
_references: dict[Any, tuple[str, str]] = {}
_REFERENCES_MAX = 4096

#: Top-level module names children never request: the standard library (never served) and probes
#: for modules of other Python implementations.
NEVER_ASK = tuple(sorted(sys.stdlib_module_names | {"org", "java", "_jython", "__pypy__"}))

#: Bytes queued for one child above which :meth:`Context.call_no_reply` waits.
SEND_QUEUE_LIMIT = 4 * 1024 * 1024

#: Serves modules to every context of this process.
RESPONDER = ModuleResponder()


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

    def statistics(self) -> ContextStatistics:
        """Calls in flight, messages and bytes each way, bytes queued, and the exit status."""
        return self._conn.statistics(self._route)

    def _request(self, fn: Callable[..., Any], args: Any, kwargs: Any, reply_to: int) -> Message:
        try:
            module, qualname = _references[fn]
        except (KeyError, TypeError):
            module, qualname = function_reference(fn)
            if len(_references) >= _REFERENCES_MAX:
                _references.clear()
            _references[fn] = (module, qualname)
        try:
            data = Call.pack(module, qualname, args, kwargs)
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
        if the child died or disconnected first.  Cancelling the caller returns at once and
        cancels the call in the child: a call still queued there never runs, a running one gets
        :class:`~trimitogen.Cancelled` (see :doc:`cancellation`).
        """
        route = self._route
        if route.dead_reason is not None:
            # A checkpoint even so: a task retrying in a loop must not starve all the others.
            await trio.lowlevel.checkpoint()
            raise route.channel_error()
        conn = self._conn
        handle, reply = conn.new_reply(route.context_id)
        try:
            conn.send(self._request(fn, args, kwargs, handle))
            try:
                await reply.wait()
            except BaseException:
                if not reply.done:
                    conn.cancel_call(handle, route.context_id)
                raise
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
            reply = decode_reply(msg.data)
        except StreamError as exc:
            raise StreamError("%s was refused: %s" % (what, exc)) from None
        if type(reply) is ReplyOk:
            return reply.value
        raise remote_error(reply.type_name, reply.message, reply.traceback)

    @overload
    def open_stream(
        self, fn: Callable[P, AsyncIterator[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> AbstractAsyncContextManager[trio.abc.ReceiveChannel[T]]: ...

    @overload
    def open_stream(
        self, fn: Callable[P, Iterator[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> AbstractAsyncContextManager[trio.abc.ReceiveChannel[T]]: ...

    def open_stream(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> AbstractAsyncContextManager[trio.abc.ReceiveChannel[Any]]:
        """Iterate generator function ``fn(*args, **kwargs)`` in the child; its items arrive
        through the channel this block yields, with flow control (see :doc:`streams`).

        ``async with ctx.open_stream(fn, ...) as items: async for item in items: ...``.  ``fn``
        is found like :meth:`call`'s and may be a generator function (run on a thread of its
        own in the child) or an async generator function (run in the child's event loop).
        Leaving the block early closes the remote generator.
        """
        return self._stream(fn, args, kwargs)

    def open_channel(
        self,
        fn: Callable[Concatenate[ChannelEnd, P], Any],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> AbstractAsyncContextManager[trio.abc.Channel[Any]]:
        """Run ``fn(channel_end, *args, **kwargs)`` in the child and talk with it both ways
        through the :class:`trio.abc.Channel` this block yields, with flow control each way
        (see :doc:`streams`).  Leaving the block closes the channel and cancels ``fn``."""
        return self._stream(fn, args, kwargs, channel=True)

    def _open_remote(
        self, fn: Callable[..., Any], args: Any, kwargs: Any, channel: bool
    ) -> RemoteStream[Any]:
        """Send OPEN_STREAM (or OPEN_CHANNEL) for ``fn``; the master's end, registered."""
        route = self._route
        if route.dead_reason is not None:
            raise route.channel_error()
        conn = self._conn
        request = self._request(fn, args, kwargs, 0)  # checks fn and the arguments
        module, qualname, _, _ = Call.decode(request.data).astuple()
        what = "%s.%s" % (module, qualname)
        stream: RemoteStream[Any] = (RemoteChannel if channel else RemoteStream)(
            conn, route.context_id, self.name, what
        )
        stream.handle = conn.new_stream_handle(stream)
        body = OpenStream.pack(module, qualname, args, kwargs, WINDOW_ITEMS, WINDOW_BYTES)
        handle = HANDLE_OPEN_CHANNEL if channel else HANDLE_OPEN_STREAM
        conn.send(Message(self.context_id, MASTER_ID, handle, stream.handle, body))
        return stream

    @asynccontextmanager
    async def _stream(
        self, fn: Callable[..., Any], args: Any, kwargs: Any, channel: bool = False
    ) -> AsyncIterator[Any]:
        stream = self._open_remote(fn, args, kwargs, channel)
        try:
            yield stream
        finally:
            await stream.aclose()

    async def open_tcp_stream(self, host: str, port: int) -> RemoteByteStream:
        """Have the child connect to ``host:port`` and return the connection as a Trio
        :class:`~trio.abc.HalfCloseableStream`, relayed through every hop like ssh's port
        forwarding (see :doc:`streams`).  A refused connection raises the child's error
        (``ConnectionRefusedError``, also a :class:`CallError`)."""
        channel = self._open_remote(tcp_relay, (host, port), {}, True)
        assert isinstance(channel, RemoteChannel)
        try:
            peer = await channel.receive()
        except BaseException:
            await channel.aclose()
            raise
        return RemoteByteStream(channel, tuple(peer))

    async def put_file(
        self,
        local_path: str | os.PathLike[str],
        remote_path: str,
        *,
        mode: int | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Copy a local file to ``remote_path`` here, atomically; see :doc:`files`."""
        return await _files.put_file(self, local_path, remote_path, mode=mode, progress=progress)

    async def get_file(
        self,
        remote_path: str,
        local_path: str | os.PathLike[str],
        *,
        mode: int | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Copy ``remote_path`` from here to a local file, atomically; see :doc:`files`."""
        return await _files.get_file(self, remote_path, local_path, mode=mode, progress=progress)

    async def put_tree(
        self,
        local_dir: str | os.PathLike[str],
        remote_dir: str,
        *,
        checksum: bool = False,
        progress: Progress | None = None,
    ) -> TreeResult:
        """Copy a local directory tree here, skipping files that match; see :doc:`files`."""
        return await _files.put_tree(
            self, local_dir, remote_dir, checksum=checksum, progress=progress
        )

    async def get_tree(
        self,
        remote_dir: str,
        local_dir: str | os.PathLike[str],
        *,
        checksum: bool = False,
        progress: Progress | None = None,
    ) -> TreeResult:
        """Copy a directory tree from here to a local one, skipping files that match; see
        :doc:`files`."""
        return await _files.get_tree(
            self, remote_dir, local_dir, checksum=checksum, progress=progress
        )

    async def call_no_reply(
        self, fn: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs
    ) -> None:
        """Send a call without waiting for it; an exception it raises is logged by the child.

        Returns once the call is queued on the connection, waiting first while more than
        :data:`SEND_QUEUE_LIMIT` bytes are queued for the child (so a loop of these to a child
        that does not keep up waits instead of filling the master's memory)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._route.dead_reason is not None:
            await trio.lowlevel.cancel_shielded_checkpoint()  # as in call()
            raise self._route.channel_error()
        self._conn.send(self._request(fn, args, kwargs, 0))
        if self._conn.queued_bytes() > SEND_QUEUE_LIMIT:
            await self._conn.wait_drained(SEND_QUEUE_LIMIT)
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def shutdown(self) -> None:
        """Stop the child now and wait until it is reaped; calls afterwards raise ChannelError.

        Leaving the :func:`open_context` block does this too.
        """
        with trio.CancelScope(shield=True):
            if self._route is self._conn.route:
                await self._conn.stop()
            else:
                await _stop_via(self._route)


async def _stop_via(route: Route) -> None:
    """Ask a context below an intermediate to exit, then have the intermediate kill it."""
    route.shutting_down = True
    conn = route.conn
    for handle, dst, data in (
        (HANDLE_SHUTDOWN, route.context_id, b""),
        (
            HANDLE_KILL,
            route.parent.context_id if route.parent else MASTER_ID,
            Kill.pack(route.context_id),
        ),
    ):
        if route.dead_reason is not None:
            break
        try:
            conn.send(Message(dst, MASTER_ID, handle, 0, data))
        except ChannelError:
            break
        with trio.move_on_after(Grace.EXIT):
            await route.gone.wait()
    conn.forget(route, SHUT_DOWN)


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
                await via.call(calls.preload, preload)
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
    conn = await spawn(method.spec(), method.describe(), name, context_id)
    conn.responder = RESPONDER
    conn.route.module_policy = policy
    error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            conn.start(nursery)
            try:
                config = _child_config(conn.route, MASTER_ID)
                payload = runtime_payload(compiled=_runs_this_interpreter(method))
                conn.send_parts([payload, config_payload(config)])
                await conn.wait_ready(method.describe(), connect_timeout)
                yield Context(conn.route, None)
            except BaseException as exc:
                # Kept to re-raise outside the nursery, so it is never wrapped in a group.
                error = exc
            finally:
                with trio.CancelScope(shield=True):
                    await conn.stop()
                conn.stop_tasks()
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
    route = conn.add_route(context_id, name, parent)
    route.module_policy = policy
    request = Spawn(
        method.spec(),
        context_id,
        name,
        b"" if method.kind == "fork" else runtime_payload(),
        _child_config(route, parent.context_id),
        connect_timeout,
        list(policy.deny),
        None if policy.allow is None else list(policy.allow),
    )
    handle, reply = conn.new_reply(parent.context_id)
    what = "%s (started by %r)" % (method.describe(), parent.name)
    error: BaseException | None = None
    started = False
    try:
        conn.send(Message(parent.context_id, MASTER_ID, HANDLE_SPAWN, handle, request.encode()))
        # The intermediate enforces connect_timeout itself; the margin covers the round trip.
        with trio.move_on_after(connect_timeout + Grace.EXIT):
            await reply.wait()
        if reply.error is not None:
            raise ConnectError(
                "%s: could not start context %r: %s" % (what, name, reply.error)
            ) from None
        if reply.msg is None:
            raise ConnectError(
                "%s: could not start context %r: %r did not answer within %gs"
                % (what, name, parent.name, connect_timeout + Grace.EXIT)
            )
        if reply.msg.is_dead:
            raise ConnectError(
                connect_failure(
                    what, name, "spawn", bytes(reply.msg.data).decode("utf-8", "replace"), []
                )
            )
        try:
            answer = decode_spawn_answer(reply.msg.data)
        except StreamError as exc:
            raise ConnectError(
                connect_failure(what, name, "spawn", "malformed answer: %s" % (exc,), [])
            ) from None
        if type(answer) is not SpawnOk:
            raise ERROR_CLASSES.get(answer.kind, ConnectError)(
                connect_failure(what, name, answer.phase, answer.reason, list(answer.lines))
            )
        route.pid = answer.pid
        route.magic = answer.magic
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
                        Message(parent.context_id, MASTER_ID, HANDLE_KILL, 0, Kill.pack(context_id))
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
