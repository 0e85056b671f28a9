"""The master's end of one child connection: the Trio tasks that pump its descriptors into a
:class:`~trimitogen.core.link.Link`, the routes of every context behind it, and its shutdown."""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import trio

from ._outbox import Outbox
from ._output import show_output
from ._responder import ModuleResponder
from ._route import SHUT_DOWN, ContextStatistics, Reply, Route, on_add_route, on_del_route
from ._serving import answer_module, answer_resource
from ._streams import on_credit
from .core.connect import ChildFds, PromptDialog, build_plan
from .core.errors import ChannelError, ConnectError, StreamError
from .core.link import CONNECTING, READY, Grace, Link, connect_failure
from .core.messages import Cancel, Log
from .core.parts import PART_SIZE, Reassembler
from .core.pgroup import POLL, group_alive, signal_group
from .core.protocol import (
    DEFAULT_MAX_MESSAGE_SIZE,
    FIRST_REPLY_HANDLE,
    HANDLE_ADD_ROUTE,
    HANDLE_CANCEL,
    HANDLE_CREDIT,
    HANDLE_DEL_ROUTE,
    HANDLE_GET_MODULE,
    HANDLE_GET_RESOURCE,
    HANDLE_LOG,
    HANDLE_SHUTDOWN,
    MASTER_ID,
    Message,
)
from .core.routing import RouteTable
from .core.side import CHUNK_SIZE, Side

log = logging.getLogger("trimitogen")

#: Distinct logger names one context's records may create under its logger; later names are
#: logged on the context's own logger, with the name in the text.
MAX_REMOTE_LOGGERS = 1000

#: Reads in a row without waiting before the reader yields to other tasks.
_READS_PER_YIELD = 32


async def spawn(spec: dict[str, Any], what: str, name: str, context_id: int) -> Connection:
    """Start the process of a method ``spec`` (see :func:`~trimitogen.core.connect.build_plan`):
    a socketpair on fds 0 and 1 (fd 1 only, with the pty on fd 0, for su), and a pty (for methods
    that prompt) or a pipe on fd 2."""
    plan = build_plan(spec)
    fds = ChildFds(plan)
    try:
        process = await trio.lowlevel.open_process(plan.argv, **fds.options)
    except OSError as exc:
        fds.failed()
        raise ConnectError(
            connect_failure(what, name, "spawn", "%s: %s" % (plan.argv[0], exc), [])
        ) from exc
    except BaseException:
        # Cancelled before the spawn began (Trio checks on its way into the spawn thread).
        fds.failed()
        raise
    stream_fd, term_fd = fds.spawned()
    conn = Connection(
        name=name,
        context_id=context_id,
        process=process,
        stream_fd=stream_fd,
        stderr_fd=term_fd,
        dialog=plan.dialog,
    )
    return conn


class Connection:
    """Pumps one child's descriptors: frames in, frames out, stderr, and the process's exit.

    The connection never raises out of its tasks: a failure becomes :attr:`dead_reason`, and
    every waiting request gets a :class:`~trimitogen.ChannelError` that says what happened.
    """

    def __init__(
        self,
        *,
        name: str,
        context_id: int,
        process: trio.Process | None,
        stream_fd: int,
        stderr_fd: int | None,
        dialog: PromptDialog | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self.name = name
        self.context_id = context_id
        self.process = process
        self.side = Side(self, stream_fd)
        self.stderr = None if stderr_fd is None else Side(self, stderr_fd, keep_alive=False)
        self.link = Link(context_id, dialog, max_message_size=max_message_size)
        # Raw bytes (byte streams, files) are read as the bytes objects handed to their reader.
        self.link.decoder.raw_pieces = True
        self.route = Route(self, context_id, name)
        self.logger = self.route.logger
        #: Every context reachable through this connection; messages from others are dropped.
        self.table = RouteTable(MASTER_ID)
        self.table.add(context_id, self, MASTER_ID)
        self.routes = {context_id: self.route}
        self.pending: dict[int, Reply] = {}
        #: Open streams, by handle (see _streams.py).
        self.streams: dict[int, Any] = {}
        #: Calls whose caller was cancelled, by reply handle: the context they were sent to.
        #: Their answer, when it comes, only says that the context finished them.
        self.abandoned: dict[int, int] = {}
        self._next_handle = FIRST_REPLY_HANDLE
        self._out = Outbox(self.side, self._write_failed)
        #: Joins the parts of split messages from the contexts behind this connection.
        self.parts = Reassembler(max_message_size)
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._drain_lot = trio.lowlevel.ParkingLot()  # senders waiting for the queue to shrink
        self.stderr_closed = trio.Event()
        self.last_words = trio.Event()  # set once the link's last_words_heard
        self.ready = trio.Event()
        self.settled = trio.Event()  # set on READY, on a start-up failure, or on death
        self.exited = trio.Event()
        self.reader_done = trio.Event()
        self.dead_reason: str | None = None
        self.shutting_down = False
        self.tx_broken = False
        self.responder: ModuleResponder | None = None
        self._task_scopes: list[trio.CancelScope] = []

    def __repr__(self) -> str:
        return "Connection(%r)" % (self.name,)

    def start(self, nursery: trio.Nursery) -> None:
        """Start the tasks that pump this connection.

        They run shielded: a cancellation of the block around the context must not stop them,
        since its shutdown needs them to see the child exit; :meth:`stop_tasks` ends them once
        the child is reaped.
        """
        tasks = [self.reader, self.writer]
        if self.stderr is not None:
            tasks.append(self.stderr_reader)
        if self.process is not None:
            tasks.append(self.waiter)
        for task in tasks:
            scope = trio.CancelScope(shield=True)
            self._task_scopes.append(scope)
            nursery.start_soon(self._run_shielded, scope, task)

    @staticmethod
    async def _run_shielded(scope: trio.CancelScope, task: Any) -> None:
        with scope:
            await task()

    def stop_tasks(self) -> None:
        """End the pump tasks (after :meth:`stop`)."""
        for scope in self._task_scopes:
            scope.cancel()

    # -- routes and requests -----------------------------------------------------------------
    def add_route(self, context_id: int, name: str, parent: Route) -> Route:
        """A context the master asked ``parent`` to start; its messages may arrive from now on."""
        route = Route(self, context_id, name, parent)
        self.routes[context_id] = route
        self.table.add(context_id, self, parent.context_id)
        return route

    def new_reply(self, target: int) -> tuple[int, Reply]:
        handle = self._next_handle
        self._next_handle += 1
        reply = self.pending[handle] = Reply(target)
        return handle, reply

    def new_stream_handle(self, stream: Any) -> int:
        handle = self._next_handle
        self._next_handle += 1
        self.streams[handle] = stream
        return handle

    def cancel_call(self, handle: int, target: int) -> None:
        """The caller of the request answering on ``handle`` gave up: tell ``target`` to stop
        it (it drops it if still queued, interrupts it if running)."""
        self.pending.pop(handle, None)
        if self.dead_reason is not None or target not in self.routes:
            return
        self.abandoned[handle] = target
        self.send(Message(target, MASTER_ID, HANDLE_CANCEL, 0, Cancel.pack(handle)), handle)

    def statistics(self, route: Route) -> ContextStatistics:
        queued = self.queued_bytes()
        in_flight = sum(1 for reply in self.pending.values() if reply.target == route.context_id)
        status = None
        if route is self.route and self.process is not None:
            status = self.process.returncode
        return ContextStatistics(
            calls_in_flight=in_flight,
            messages_sent=route.messages_sent,
            bytes_sent=route.bytes_sent,
            messages_received=route.messages_received,
            bytes_received=route.bytes_received,
            queued_bytes=queued,
            exit_status=status,
            gone_reason=route.dead_reason,
            cancelled_calls_running=sum(
                1 for target in self.abandoned.values() if target == route.context_id
            ),
        )

    # -- writing -----------------------------------------------------------------------------
    def send(self, msg: Message, lane: int | None = None) -> None:
        """Queue ``msg`` for the child, writing at once what the fd accepts without waiting.

        Never blocks and never checkpoints, so a cancelled caller cannot leave half a frame.
        ``lane`` is the reply handle the message is about, where its header does not say (see
        :mod:`._outbox`).
        """
        route = self.routes.get(msg.dst)
        if route is not None:
            route.messages_sent += 1
            route.bytes_sent += len(msg.data)
        if self.dead_reason is not None:
            raise self.route.channel_error()
        if not self.tx_broken:  # else the waiter will report how the child ended
            self._out.send(msg, lane)
            if self._out:
                self._writer_lot.unpark()

    def send_parts(self, parts: list[Any]) -> None:
        """Queue raw bytes (bootstrap) like :meth:`send`."""
        if self.dead_reason is not None:
            raise self.route.channel_error()
        if not self.tx_broken:
            self._out.send_frame(parts)
            if self._out:
                self._writer_lot.unpark()

    def _write_failed(self, reason: str) -> None:
        """The child stopped reading.  If it has a process, its exit (seen by the waiter, with
        its status) explains that better than this, so only a process-less connection ends here."""
        self.tx_broken = True
        if self.process is None:
            self.disconnect(reason)

    async def writer(self) -> None:
        while True:
            while not self._out:
                await self._writer_lot.park()
            if self.side.closed:
                return
            await trio.lowlevel.wait_writable(self.side.fileno())
            self._out.flush()
            if self._drain_lot:
                self._drain_lot.unpark_all()

    def queued_bytes(self) -> int:
        return self._out.queued

    async def wait_drained(self, limit: int) -> None:
        """Until at most ``limit`` bytes wait to be written (or the connection is gone)."""
        while self.dead_reason is None and self.queued_bytes() > limit:
            await self._drain_lot.park()

    # -- reading -----------------------------------------------------------------------------
    async def reader(self) -> None:
        try:
            await self._read_until_eof()
        except StreamError as exc:
            self.disconnect("it sent bytes that break the protocol: %s" % exc)
            self.kill()
            return
        finally:
            self.reader_done.set()
        self.link.stream_closed()
        # End of file: the process has probably exited; wait briefly so the reason can say how.
        with trio.move_on_after(Grace.EXIT_AFTER_EOF):
            await self.exited.wait()
        self.disconnect(self._end_reason("its connection closed"))

    async def _read_until_eof(self) -> None:
        side = self.side
        fd = side.fileno()
        link = self.link
        decoder = link.decoder
        reads = taken = 0
        drained = False
        while True:
            if drained:
                # The last read took less than it asked for: the socket is empty, so wait
                # instead of paying for a read that fails with EAGAIN.
                reads = taken = 0
                await trio.lowlevel.wait_readable(fd)
            try:
                if link.state != CONNECTING or decoder.body_view() is not None:
                    n, asked = decoder.read_from(side)
                else:  # the start-up dialog, the marker line, then frames
                    data = side.read()
                    n, asked = len(data), CHUNK_SIZE
                    link.receive_stream(data)
                if not n:
                    return
                drained = n < asked
                taken += n
            except BlockingIOError:
                drained = True
                continue
            for msg in link.messages() if link.state == CONNECTING else decoder.messages():
                try:
                    self._dispatch(msg)
                except Exception:
                    # One bad message (hostile, or a module the master cannot read) must not
                    # end the connection's reader; it is logged and dropped.
                    self.logger.exception("could not handle %r from context %d", msg, msg.src)
            if not self.settled.is_set() and link.state != CONNECTING:
                self._settle()
            reads += 1
            if reads >= _READS_PER_YIELD or taken >= PART_SIZE:
                # A task woken by what was read (a reply) runs after one part at most.
                reads = taken = 0
                await trio.lowlevel.checkpoint()

    def _settle(self) -> None:
        """Start-up is decided: READY arrived, or the link failed."""
        ready = self.link.ready
        if self.link.state == READY and ready is not None:
            self.route.pid = ready.pid
            self.route.magic = ready.magic
            self.ready.set()
        self.settled.set()

    def _dispatch(self, msg: Message) -> None:
        route = self.routes.get(msg.src)
        if route is None or msg.dst != MASTER_ID:
            self.logger.warning(
                "dropped a message claiming to come from context %d for %d: the connection to %r "
                "only carries messages from %s to the master",
                msg.src,
                msg.dst,
                self.name,
                sorted(self.routes),
            )
            return
        try:
            whole = self.parts.add(msg) if msg.flags else msg
        except StreamError as exc:
            self.logger.warning("dropped a split message from context %d: %s", msg.src, exc)
            return
        if whole is None:
            return  # one part of a split message: the rest follows
        msg = whole
        route.messages_received += 1
        route.bytes_received += len(msg.data)
        handle = msg.handle
        # An answer (to a call, a stream, or a call whose caller gave up) comes only from the
        # context that was asked: not a way for another context here to put words in its mouth.
        waiter: Any = self.pending.get(handle) or self.streams.get(handle)
        target = self.abandoned.get(handle) if waiter is None else waiter.target
        if target is not None and not self.table.may_answer(msg.src, target, msg.is_dead):
            self.logger.warning(
                "dropped an answer to request %d from context %d: it was sent to context %d",
                handle,
                msg.src,
                target,
            )
        elif type(waiter) is Reply:
            del self.pending[handle]
            waiter.msg = msg
            waiter.set()
        elif waiter is not None:
            waiter.on_message(msg)  # a stream's item or end
        elif target is not None:
            del self.abandoned[handle]  # the context finished a call nobody waits for
        elif handle == HANDLE_CREDIT:
            on_credit(self, msg)
        elif handle == HANDLE_LOG:
            self._on_log(route, msg)
        elif handle == HANDLE_GET_MODULE:
            answer_module(self, route, msg)
        elif handle == HANDLE_GET_RESOURCE:
            answer_resource(self, route, msg)
        elif handle == HANDLE_DEL_ROUTE:
            on_del_route(self, msg)
        elif handle == HANDLE_ADD_ROUTE:
            on_add_route(self, msg)
        else:
            self.logger.debug("dropped %r: nothing waits on handle %d", msg, handle)

    def forget(self, route: Route, reason: str) -> None:
        """``route`` and everything below it are gone: fail the requests waiting on them."""
        ids = set(self.table.subtree(route.context_id))
        self.table.forget(route.context_id)
        doomed = [self.routes.pop(i) for i in sorted(ids) if i in self.routes]
        for context_id in ids:
            self.parts.forget(context_id)
        for dead in doomed:
            dead.mark_dead(
                reason
                if dead is route
                else "the context %r above it is gone: %s" % (route.name, reason)
            )
        for handle, target in list(self.abandoned.items()):
            if target in ids:
                del self.abandoned[handle]
        for stream in list(self.streams.values()):
            if stream.target in ids:
                stream.fail(self._routes_error(stream.target, doomed))
        for handle, reply in list(self.pending.items()):
            if reply.target in ids:
                del self.pending[handle]
                reply.error = self._routes_error(reply.target, doomed)
                reply.set()

    @staticmethod
    def _routes_error(target: int, doomed: list[Route]) -> ChannelError:
        for route in doomed:
            if route.context_id == target:
                return route.channel_error()
        return ChannelError("context %d is gone" % target)

    def _on_log(self, route: Route, msg: Message) -> None:
        try:
            record = Log.decode(msg.data)
        except StreamError as exc:
            self.logger.warning("dropped a malformed log message from %d: %s", msg.src, exc)
            return
        child_name = record.name if record.kind == "log" else record.kind
        text = record.text
        if child_name == "root":
            target = route.logger
        elif child_name in route.logger_names or len(route.logger_names) < MAX_REMOTE_LOGGERS:
            # Python never frees a logger: a child may not make the master create them forever.
            route.logger_names.add(child_name)
            target = route.logger.getChild(child_name)
        else:
            target, text = route.logger, "[%s] %s" % (child_name, text)
        if record.kind == "log":
            target.log(record.levelno, "%s", text)
        else:
            show_output(target, route.name, record.levelno, text)  # stderr if nobody listens

    async def stderr_reader(self) -> None:
        """Log the child's stderr (its terminal, for methods that prompt) and answer prompts."""
        assert self.stderr is not None
        fd = self.stderr.fileno()
        logger = self.logger.getChild("stderr")
        reads = 0
        try:
            while True:
                reads += 1
                if reads >= _READS_PER_YIELD:
                    # A child that prints without pause must not starve the other tasks (the
                    # one that reports its failed start and stops it among them).
                    reads = 0
                    await trio.lowlevel.checkpoint()
                try:
                    data = self.stderr.read()
                except BlockingIOError:
                    reads = 0
                    await trio.lowlevel.wait_readable(fd)
                    continue
                if not data:
                    break
                lines, answer = self.link.receive_output(data)
                for text in lines:
                    logger.info("%s", text)
                if answer:
                    try:
                        os.write(fd, answer)
                    except OSError as exc:
                        self.logger.debug("could not answer a prompt: %s", exc)
                if self.link.failure is not None:
                    self.settled.set()
                    if self.link.last_words_heard:
                        self.last_words.set()
            for text in self.link.output_closed():
                logger.info("%s", text)
        finally:
            self.stderr_closed.set()
            self.last_words.set()

    # -- the process -------------------------------------------------------------------------
    async def waiter(self) -> None:
        assert self.process is not None
        self.link.process_exited(await self.process.wait())
        self.exited.set()
        # Let the reader deliver what the child wrote before it exited.
        with trio.move_on_after(Grace.OUTPUT_AFTER_EXIT):
            await self.reader_done.wait()
        self.disconnect(self._end_reason("it ended"))

    def _end_reason(self, fallback: str) -> str:
        if self.process is not None and self.process.returncode is not None:
            self.link.process_exited(self.process.returncode)
        return self.link.end_reason(fallback)

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            signal_group(self.process.pid, signal.SIGKILL)

    def disconnect(self, reason: str) -> None:
        """Mark the connection dead and fail every waiting request with ``reason``."""
        if self.dead_reason is not None:
            return
        if self.shutting_down and reason != SHUT_DOWN:
            reason = "%s (%s)" % (SHUT_DOWN, reason)
        self.dead_reason = reason
        self.settled.set()
        for route in list(self.routes.values()):
            route.mark_dead(
                reason
                if route is self.route
                else "the context %r above it is gone: %s" % (self.name, reason)
            )
        self._out.drop()
        self._writer_lot.unpark_all()
        self._drain_lot.unpark_all()
        pending, self.pending = self.pending, {}
        for reply in pending.values():
            target = self.routes.get(reply.target, self.route)
            reply.error = target.channel_error()
            reply.set()
        self.abandoned.clear()
        for stream in list(self.streams.values()):
            stream.fail(self.routes.get(stream.target, self.route).channel_error())

    def close_fds(self) -> None:
        for side in (self.side, self.stderr):
            if side is not None:
                side.close()

    # -- start-up and shutdown ---------------------------------------------------------------
    async def wait_ready(self, what: str, connect_timeout: float) -> None:
        """Wait for READY; on a start-up failure stop the child and raise its ConnectError."""
        with trio.move_on_after(connect_timeout) as waiting:
            await self.settled.wait()
        if self.ready.is_set():
            return
        link = self.link
        if self.stderr is not None and not waiting.cancelled_caught:
            # Read the terminal to its end (the link bounds the bytes, this the time) before
            # stopping the child: the tool may still be explaining (ssh prints how to fix a
            # changed host key after the line that decides), or it ended before its last words
            # (a refused password) were read.
            with trio.move_on_after(Grace.LAST_WORDS):
                await self.last_words.wait()
        if link.failure is None:
            if self.dead_reason is not None:
                link.gone(self.dead_reason)
            else:
                link.timed_out(connect_timeout)
        failure = link.failure
        assert failure is not None
        await self.stop()
        with trio.move_on_after(Grace.LAST_WORDS):
            await self.stderr_closed.wait()
        raise failure.error_class(
            connect_failure(what, self.name, failure.phase, failure.reason, link.output_tail())
        )

    async def stop(self) -> None:
        """Ask the child to exit, then escalate to SIGTERM and SIGKILL; always reaps it."""
        self.shutting_down = True
        if self.ready.is_set() and self.dead_reason is None:
            try:
                self.send(Message(self.context_id, MASTER_ID, HANDLE_SHUTDOWN, 0, b""))
            except ChannelError:
                pass
            with trio.move_on_after(Grace.EXIT):
                await self.exited.wait()
        process = self.process
        if process is not None:
            # The child leads a process group: what it started goes with it.
            if process.returncode is None:
                self.logger.debug("sending SIGTERM to process group %d", process.pid)
                signal_group(process.pid, signal.SIGTERM)
                with trio.move_on_after(Grace.EXIT):
                    await process.wait()
            if process.returncode is None:
                self.logger.warning("pid %d ignored SIGTERM: sending SIGKILL", process.pid)
                signal_group(process.pid, signal.SIGKILL)
                await process.wait()
            await self._sweep_group(process.pid)
        self.disconnect(SHUT_DOWN)

    async def _sweep_group(self, pgid: int) -> None:
        """The child was reaped: end what is left of its process group (SIGTERM, then SIGKILL
        after the grace), waiting only while something is left."""
        for signum, wait in ((signal.SIGTERM, Grace.KILL), (signal.SIGKILL, 0.0)):
            if not group_alive(pgid):
                return
            self.logger.debug("sending %s to what is left of process group %d", signum, pgid)
            signal_group(pgid, signum)
            with trio.move_on_after(wait):
                while group_alive(pgid):
                    await trio.sleep(POLL)
