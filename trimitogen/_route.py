"""What the master keeps per context: :class:`Route`, the :class:`Reply` a caller waits on, the
:class:`ContextStatistics` a context reports, and the handling of route announcements."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from ._responder import ImportStats
from .core.errors import ChannelError, StreamError
from .core.importer import ModulePolicy
from .core.messages import AddRoute, DelRoute

if TYPE_CHECKING:
    from ._connection import Connection
    from .core.protocol import Message

#: The reason given to calls made after a context was shut down on purpose.
SHUT_DOWN = "it was shut down"


@dataclass(frozen=True)
class ContextStatistics:
    """A snapshot of one context's traffic and state, from :meth:`Context.statistics`."""

    #: Calls (and spawn requests) sent to the context whose answer has not arrived.
    calls_in_flight: int
    #: Messages and body bytes the master sent to the context.
    messages_sent: int
    bytes_sent: int
    #: Messages and body bytes the master received from the context.
    messages_received: int
    bytes_received: int
    #: Bytes waiting to be written on the connection this context's messages travel on.
    queued_bytes: int
    #: The exit status of the context's process once it ended (negative: killed by that
    #: signal); None while it runs, and for contexts below an intermediate.
    exit_status: int | None
    #: None while the context is usable, else why it is gone.
    gone_reason: str | None
    #: Calls whose caller was cancelled but which the context has not finished yet: a function
    #: that swallowed :class:`~trimitogen.Cancelled`, or C code that never lets it in.  While
    #: this is not zero, calls queue behind them.
    cancelled_calls_running: int = 0

    @property
    def busy(self) -> bool:
        """Whether the context is working on anything: calls in flight or cancelled ones that
        have not ended."""
        return bool(self.calls_in_flight or self.cancelled_calls_running)


class Route:
    """One context as the master sees it: its name, the connection its messages travel on, its
    parent (for a context opened ``via=``), and whether it still exists."""

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
        self.messages_sent = 0
        self.bytes_sent = 0
        self.messages_received = 0
        self.bytes_received = 0

    def __repr__(self) -> str:
        return "Route(%r, id=%d)" % (self.name, self.context_id)

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


def on_del_route(conn: Connection, msg: Message) -> None:
    """DEL_ROUTE: contexts below an intermediate are gone; only an ancestor may say so."""
    try:
        removal = DelRoute.decode(msg.data)
    except StreamError as exc:
        conn.logger.warning("dropped a malformed route removal from %d: %s", msg.src, exc)
        return
    if not removal.ids:
        conn.logger.debug("ignored a route removal from context %d naming none", msg.src)
    for context_id in removal.ids:
        route = conn.routes.get(context_id)
        if route is None:
            # Usually one the master forgot already (it shut it down, or its parent went).
            conn.logger.debug(
                "ignored a route removal from context %d for unknown context %d",
                msg.src,
                context_id,
            )
        elif conn.table.may_report_gone(msg.src, context_id):
            conn.forget(route, removal.reason)
        else:
            conn.logger.warning(
                "ignored a route removal from context %d for context %d: only a context "
                "above it may report it gone",
                msg.src,
                context_id,
            )


def on_add_route(conn: Connection, msg: Message) -> None:
    """The master learns routes from its own spawn requests; an announcement is only
    checked, so that a malformed one is reported."""
    try:
        AddRoute.decode(msg.data)
    except StreamError as exc:
        conn.logger.warning("dropped a malformed route announcement from %d: %s", msg.src, exc)
        return
    conn.logger.debug("ignored a route announcement from context %d", msg.src)
