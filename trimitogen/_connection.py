"""The master's end of one child connection: the Trio tasks that pump its file descriptors."""

from __future__ import annotations

import collections
import importlib.util
import logging
import os
from typing import Any

import trio

from ._responder import ImportStats, ModulePolicy, ModuleResponder
from .core.bootstrap import BootstrapParser
from .core.connect import PromptDialog
from .core.errors import ChannelError, ConnectError, StreamError
from .core.messages import DelRoute, GetModule, LoadModule, Log, Ready
from .core.parent import describe_status
from .core.protocol import (
    DEFAULT_MAX_MESSAGE_SIZE,
    FIRST_REPLY_HANDLE,
    HANDLE_ADD_ROUTE,
    HANDLE_DEL_ROUTE,
    HANDLE_GET_MODULE,
    HANDLE_LOAD_MODULE,
    HANDLE_LOG,
    HANDLE_READY,
    MASTER_ID,
    FrameDecoder,
    Message,
)
from .core.side import IOV_MAX, Side

log = logging.getLogger("trimitogen")

#: The reason given to calls made after a context was shut down on purpose.
SHUT_DOWN = "it was shut down"

#: Lines of stderr and pre-bootstrap output kept for error messages.
TAIL_LINES = 20

#: Distinct logger names one context's records may create under its logger; later names are
#: logged on the context's own logger, with the name in the text.
MAX_REMOTE_LOGGERS = 1000

#: A line of stderr longer than this is logged in pieces.
MAX_LINE = 64 * 1024

#: Reads in a row without waiting before the reader yields to other tasks.
_READS_PER_YIELD = 32


class Route:
    """One context as the master sees it: its name, the connection its messages travel on, and
    whether it still exists.

    A direct child's route travels on its own :class:`Connection`; a context opened ``via=``
    another travels on the connection of the top-level context above it.
    """

    def __init__(
        self, conn: Connection, context_id: int, name: str, parent: Route | None = None
    ) -> None:
        self.conn = conn
        self.context_id = context_id
        self.name = name
        self.parent = parent
        self.logger = logging.getLogger("trimitogen.ctx." + name)
        self.dead_reason: str | None = None
        self.shutting_down = False
        self.gone = trio.Event()
        self.pid: int | None = None
        self.magic = b""
        self.module_policy = ModulePolicy()
        self.modules_sent: set[str] = set()
        self.import_stats = ImportStats()
        self.logger_names: set[str] = set()

    def __repr__(self) -> str:
        return "Route(%r, id=%d)" % (self.name, self.context_id)

    def is_below(self, context_id: int) -> bool:
        """True if the context ``context_id`` is an ancestor of this one."""
        parent = self.parent
        while parent is not None:
            if parent.context_id == context_id:
                return True
            parent = parent.parent
        return False

    def mark_dead(self, reason: str) -> None:
        if self.dead_reason is None:
            if self.shutting_down and reason != SHUT_DOWN:
                reason = "%s (%s)" % (SHUT_DOWN, reason)
            self.dead_reason = reason
            self.gone.set()

    def channel_error(self) -> ChannelError:
        return ChannelError("context %r is gone: %s" % (self.name, self.dead_reason))


class Reply:
    """Where the reader puts the answer to one request, waking the one task that waits for it.

    Lighter than a :class:`trio.Event`: exactly one task waits, so the reader reschedules it
    directly.
    """

    __slots__ = ("done", "error", "msg", "target", "task")

    def __init__(self, target: int) -> None:
        self.target = target  # the context expected to answer
        self.msg: Message | None = None
        self.error: BaseException | None = None
        self.task: trio.lowlevel.Task | None = None
        self.done = False

    def set(self) -> None:
        self.done = True
        if self.task is not None:
            task, self.task = self.task, None
            trio.lowlevel.reschedule(task)

    async def wait(self) -> None:
        """Wait until :meth:`set`; cancellable (the answer, if it comes later, is dropped)."""
        if self.done:
            await trio.lowlevel.checkpoint()
            return
        self.task = trio.lowlevel.current_task()

        def abort(_raise_cancel: object) -> trio.lowlevel.Abort:
            self.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


class Connection:
    """Pumps one child's streams: frames in, frames out, stderr, and the process's exit.

    ``rx`` and ``tx`` carry frames (they may be the same Side, for a socket).  ``stderr`` is the
    child's stderr pipe until its runtime takes fd 2 over.  The connection never raises out of its
    tasks: a failure becomes :attr:`dead_reason`, and every waiting request gets a
    :class:`~trimitogen.ChannelError` that says what happened.
    """

    def __init__(
        self,
        *,
        name: str,
        context_id: int,
        process: trio.Process | None,
        rx: Side,
        tx: Side,
        stderr: Side | None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self.name = name
        self.context_id = context_id
        self.process = process
        self.rx = rx
        self.tx = tx
        self.stderr = stderr
        self.decoder = FrameDecoder(max_message_size)
        self.bootstrap = BootstrapParser()
        self.route = Route(self, context_id, name)
        self.logger = self.route.logger
        #: Every context reachable through this connection; messages from others are dropped.
        self.routes = {context_id: self.route}
        self.pending: dict[int, Reply] = {}
        self._next_handle = FIRST_REPLY_HANDLE
        self._outq: collections.deque[list[Any]] = collections.deque()
        self._writer_lot = trio.lowlevel.ParkingLot()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.stderr_closed = trio.Event()
        self.stderr_partial = b""
        self.ready = trio.Event()
        self.settled = trio.Event()  # set on READY or on death: the connect phase is over
        self.exited = trio.Event()
        self.reader_done = trio.Event()
        self.dead_reason: str | None = None
        self.shutting_down = False
        self.tx_broken = False
        self.remote_hexversion: int | None = None
        self.responder: ModuleResponder | None = None
        self.dialog: PromptDialog | None = None
        self.connect_error: ConnectError | None = None

    def __repr__(self) -> str:
        return "Connection(%r)" % (self.name,)

    # -- requests ----------------------------------------------------------------------------
    def new_reply(self, target: int) -> tuple[int, Reply]:
        handle = self._next_handle
        self._next_handle += 1
        reply = self.pending[handle] = Reply(target)
        return handle, reply

    def channel_error(self) -> ChannelError:
        return self.route.channel_error()

    # -- writing -----------------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        """Queue ``msg`` for the child, writing at once what the fd accepts without waiting.

        Never blocks and never checkpoints, so a cancelled caller cannot leave half a frame.
        """
        self.send_parts(msg.frame_parts())

    def send_parts(self, parts: list[Any]) -> None:
        """Queue raw buffers (a frame, or bootstrap bytes) like :meth:`send`."""
        if self.dead_reason is not None:
            raise self.channel_error()
        if self.tx_broken:
            return  # the waiter will report how the child ended
        if not self._outq:
            parts = self._write_some(parts)
            if not parts:
                return
        self._outq.append(parts)
        self._writer_lot.unpark()

    def _write_some(self, parts: list[Any]) -> list[Any]:
        """Write what the fd takes now; return what is left (``[]`` when done)."""
        parts = [part for part in parts if len(part)]
        while parts:
            try:
                n = self.tx.writev(parts[:IOV_MAX])
            except BlockingIOError:
                return parts
            except OSError as exc:
                self._write_failed("writing to it failed: %s" % exc)
                return []
            if n is None:
                self._write_failed("it disconnected while a message was being sent")
                return []
            while n:
                first = parts[0]
                if n >= len(first):
                    n -= len(first)
                    parts = parts[1:]
                else:
                    parts = [memoryview(first)[n:], *parts[1:]]
                    n = 0
        return parts

    def _write_failed(self, reason: str) -> None:
        """The child stopped reading.  If it has a process, its exit (seen by the waiter, with
        its status) explains that better than this, so only a process-less connection ends here."""
        self._outq.clear()
        self.tx_broken = True
        if self.process is None:
            self.disconnect(reason)

    async def writer(self) -> None:
        while True:
            while not self._outq:
                await self._writer_lot.park()
            if self.tx.closed:
                return
            await trio.lowlevel.wait_writable(self.tx.fileno())
            if self._outq:
                left = self._write_some(self._outq[0])
                if left:
                    self._outq[0] = left
                elif self._outq:  # a failed write empties the queue
                    self._outq.popleft()

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
        # End of file: the process has probably exited; wait briefly so the reason can say how.
        with trio.move_on_after(2.0):
            await self.exited.wait()
        self.disconnect(self._exit_description("its connection closed"))

    async def _read_until_eof(self) -> None:
        fd = self.rx.fileno()
        reads = 0
        while True:
            view = self.decoder.body_view()
            try:
                if view is not None:
                    n = self.rx.readinto(view)
                    if not n:
                        return
                    self.decoder.body_filled(n)
                else:
                    data = self.rx.read()
                    if not data:
                        return
                    if self.remote_hexversion is None and not self.ready.is_set():
                        if not self.bootstrap.receive_data(data):
                            continue
                        self.remote_hexversion = self.bootstrap.hexversion
                        data = self.bootstrap.remainder
                    self.decoder.receive_data(data)
            except BlockingIOError:
                reads = 0
                await trio.lowlevel.wait_readable(fd)
                continue
            for msg in self.decoder.messages():
                try:
                    self._dispatch(msg)
                except Exception:
                    # One bad message (hostile, or a module the master cannot read) must not
                    # end the connection's reader; it is logged and dropped.
                    self.logger.exception("could not handle %r from context %d", msg, msg.src)
            reads += 1
            if reads >= _READS_PER_YIELD:
                reads = 0
                await trio.lowlevel.checkpoint()

    def _dispatch(self, msg: Message) -> None:
        if msg.src not in self.routes or msg.dst != MASTER_ID:
            self.logger.warning(
                "dropped a message claiming to come from context %d for %d: the connection to %r "
                "only carries messages from %s to the master",
                msg.src,
                msg.dst,
                self.name,
                sorted(self.routes),
            )
            return
        handle = msg.handle
        reply = self.pending.get(handle)
        if reply is not None:
            if msg.src != reply.target and not self._may_bounce(msg, reply.target):
                # Only the context that was asked may answer: a reply is not a way for another
                # context on this connection to put words in its mouth.
                self.logger.warning(
                    "dropped an answer to request %d from context %d: it was sent to context %d",
                    handle,
                    msg.src,
                    reply.target,
                )
                return
            del self.pending[handle]
            reply.msg = msg
            reply.set()
        elif handle == HANDLE_LOG:
            self._on_log(msg)
        elif handle == HANDLE_GET_MODULE:
            self._on_get_module(msg)
        elif handle == HANDLE_DEL_ROUTE:
            self._on_del_route(msg)
        elif handle == HANDLE_ADD_ROUTE:
            pass  # the master learns routes from its own spawn requests
        elif handle == HANDLE_READY and msg.src == self.context_id:
            self._on_ready(msg)
        else:
            self.logger.debug("dropped %r: nothing waits on handle %d", msg, handle)

    def _may_bounce(self, msg: Message, target: int) -> bool:
        """An undeliverable-message notice may come from any context above the target."""
        route = self.routes.get(target)
        return msg.is_dead and route is not None and route.is_below(msg.src)

    def _on_del_route(self, msg: Message) -> None:
        try:
            removal = DelRoute.decode(msg.data)
        except StreamError as exc:
            self.logger.warning(
                "dropped a malformed route removal from context %d: %s", msg.src, exc
            )
            return
        reason = removal.reason
        for context_id in removal.ids:
            route = self.routes.get(context_id)
            # Only an ancestor of a context may report it gone.
            if route is None or not route.is_below(msg.src):
                continue
            self.forget(route, reason)

    def forget(self, route: Route, reason: str) -> None:
        """``route`` and everything below it are gone: fail the requests waiting on them."""
        doomed = [r for r in self.routes.values() if r is route or r.is_below(route.context_id)]
        for dead in doomed:
            self.routes.pop(dead.context_id, None)
            dead.mark_dead(
                reason
                if dead is route
                else "the context %r above it is gone: %s" % (route.name, reason)
            )
        ids = {dead.context_id for dead in doomed}
        for handle, reply in list(self.pending.items()):
            if reply.target in ids:
                del self.pending[handle]
                reply.error = self.routes_error(reply.target, doomed)
                reply.set()

    @staticmethod
    def routes_error(target: int, doomed: list[Route]) -> ChannelError:
        for route in doomed:
            if route.context_id == target:
                return route.channel_error()
        return ChannelError("context %d is gone" % target)

    def _on_ready(self, msg: Message) -> None:
        try:
            ready = Ready.decode(msg.data)
        except StreamError as exc:
            self.logger.warning("dropped a malformed READY message: %s", exc)
            return
        self.route.pid = ready.pid
        self.remote_hexversion = ready.hexversion
        self.route.magic = ready.magic
        self.ready.set()
        self.settled.set()

    def _on_get_module(self, msg: Message) -> None:
        try:
            name = GetModule.decode(msg.data).name
        except StreamError as exc:
            self.logger.warning(
                "dropped a malformed module request from context %d: %s", msg.src, exc
            )
            return
        route = self.routes[msg.src]
        if self.responder is None:
            records: list[Any] = [(name, False, "", False, b"", b"", "no module responder")]
            seconds = 0.0
        else:
            records, seconds = self.responder.answer(
                name,
                route.module_policy,
                route.modules_sent,
                with_code=route.magic == importlib.util.MAGIC_NUMBER,
            )
        body = LoadModule.pack(records)
        stats = route.import_stats
        route.import_stats = ImportStats(
            requests=stats.requests + 1,
            modules_sent=stats.modules_sent + sum(1 for r in records if r[1]),
            bytes_sent=stats.bytes_sent + len(body),
            seconds=stats.seconds + seconds,
        )
        self.logger.debug("sent %d module records for %r", len(records), name)
        try:
            self.send(Message(msg.src, MASTER_ID, HANDLE_LOAD_MODULE, 0, body))
        except ChannelError:
            pass

    def _on_log(self, msg: Message) -> None:
        try:
            record = Log.decode(msg.data)
        except StreamError as exc:
            self.logger.warning("dropped a malformed log message from context %d: %s", msg.src, exc)
            return
        kind, name, levelno, text = record.kind, record.name, record.levelno, record.text
        route = self.routes[msg.src]
        child_name = name if kind == "log" else kind
        if child_name == "root":
            target = route.logger
        elif child_name in route.logger_names or len(route.logger_names) < MAX_REMOTE_LOGGERS:
            # Python never frees a logger: a child may not make the master create them forever.
            route.logger_names.add(child_name)
            target = route.logger.getChild(child_name)
        else:
            target, text = route.logger, "[%s] %s" % (child_name, text)
        target.log(levelno, "%s", text)

    async def stderr_reader(self) -> None:
        """Log the child's stderr until its runtime redirects fd 2, keeping the last lines."""
        assert self.stderr is not None
        fd = self.stderr.fileno()
        try:
            while True:
                try:
                    data = self.stderr.read()
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(fd)
                    continue
                if not data:
                    break
                # Lines first, so a failure found in this chunk can show it.
                lines = (self.stderr_partial + data).split(b"\n")
                self.stderr_partial = lines.pop()
                if len(self.stderr_partial) > MAX_LINE:
                    lines.append(self.stderr_partial)
                    self.stderr_partial = b""
                for line in lines:
                    self._stderr_line(line)
                if self.dialog is not None and not self.ready.is_set():
                    self._converse(data)
            if self.stderr_partial:
                self._stderr_line(self.stderr_partial)
                self.stderr_partial = b""
        finally:
            self.stderr_closed.set()

    def _converse(self, data: bytes) -> None:
        """Answer a start-up prompt, or record why start-up failed."""
        assert self.dialog is not None
        assert self.stderr is not None
        answer = self.dialog.receive_data(data)
        if answer:
            try:
                os.write(self.stderr.fileno(), answer)
            except OSError as exc:
                self.logger.debug("could not answer a prompt: %s", exc)
        if self.dialog.error is not None and self.connect_error is None:
            self.connect_error = self.dialog.error
            self.settled.set()

    def _stderr_line(self, line: bytes) -> None:
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        if self.dialog is not None:
            text = self.dialog.redact(text)
        self.stderr_tail.append(text)
        self.logger.getChild("stderr").info("%s", text)

    # -- the process -------------------------------------------------------------------------
    async def waiter(self) -> None:
        assert self.process is not None
        await self.process.wait()
        self.exited.set()
        # Let the reader deliver what the child wrote before it exited.
        with trio.move_on_after(1.0):
            await self.reader_done.wait()
        self.disconnect(self._exit_description("it ended"))

    def _exit_description(self, fallback: str) -> str:
        if self.process is not None and self.process.returncode is not None:
            return "its process %s" % describe_status(self.process.returncode)
        return fallback

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()

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
        self._outq.clear()
        self._writer_lot.unpark_all()
        pending, self.pending = self.pending, {}
        for reply in pending.values():
            target = self.routes.get(reply.target, self.route)
            reply.error = target.channel_error()
            reply.set()

    def close_fds(self) -> None:
        for side in (self.rx, self.tx, self.stderr):
            if side is not None:
                side.close()

    def output_tail(self) -> list[str]:
        """The last lines the child printed (pre-bootstrap output and stderr), for errors."""
        lines = self.bootstrap.output_lines()[-TAIL_LINES:] + list(self.stderr_tail)
        if self.stderr_partial.strip():
            partial = self.stderr_partial.decode("utf-8", "replace").strip()
            lines.append(self.dialog.redact(partial) if self.dialog is not None else partial)
        return lines[-TAIL_LINES:]
