"""Many targets at once: :func:`open_group`, per-target results, the file-descriptor budget.

The contexts of a group form a tree: every target's last hop is a context of its own, and
targets whose chains start with the same hops share the contexts of those hops (one ssh to a
bastion, any number of hops behind it).  Each context is held open by one task of the group's
nursery, which starts the contexts below it once its own is up; a
:class:`trio.CapacityLimiter` bounds how many hops are starting at once.
"""

from __future__ import annotations

import os
import resource
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, Literal, ParamSpec, TypeVar, overload

import trio

from ._context import Context, open_context
from ._methods import Method
from ._targets import Target, as_target
from .core.errors import Error

P = ParamSpec("P")
R = TypeVar("R")

Phase = Literal["connect", "call", "cancelled"]

#: What one direct context costs the master in steady state: its end of the socketpair that
#: carries frames, the read end of the child's stderr (a pipe, or a pty where a prompt may come),
#: and the pidfd Trio waits on.  Contexts started ``via=`` another cost the master nothing.
FDS_PER_CONTEXT = 3
#: What a context costs on top while its process starts: the child's ends of the socketpair and
#: of the stderr pipe, and the exec-error pipe of the spawn; closed once the child runs.
FDS_WHILE_STARTING = 4
#: Left free for everything else the program does.
FDS_RESERVE = 32

_fd_limit_raised = False


class FdLimitError(Error):
    """Opening a group would need more file descriptors than ``RLIMIT_NOFILE`` allows."""


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return the (soft, hard) limits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass  # An unlimited hard limit above the kernel's nr_open: keep the soft one.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def _open_fd_count() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def check_fd_budget(direct_contexts: int, max_connecting: int) -> int:
    """Raise :class:`FdLimitError` unless ``direct_contexts`` more contexts, ``max_connecting``
    of them starting at once, fit under the fd limit; return the fds they need."""
    global _fd_limit_raised
    if not _fd_limit_raised:
        raise_fd_limit()
        _fd_limit_raised = True
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    open_now = _open_fd_count()
    starting = min(max_connecting, direct_contexts)
    need = direct_contexts * FDS_PER_CONTEXT + starting * FDS_WHILE_STARTING
    if open_now + need + FDS_RESERVE > soft:
        raise FdLimitError(
            "opening %d contexts needs about %d file descriptors (%d each, %d more for each of "
            "the %d starting at once), %d are open already and %d are kept free, but the limit "
            "(RLIMIT_NOFILE) is %d (hard limit %s): raise the hard limit (ulimit -Hn, "
            "LimitNOFILE= in a systemd unit), lower max_connecting, or reach the hosts through "
            "an intermediate (contexts behind it cost this process no fds)"
            % (
                direct_contexts,
                need,
                FDS_PER_CONTEXT,
                FDS_WHILE_STARTING,
                starting,
                open_now,
                FDS_RESERVE,
                soft,
                "unlimited" if hard == resource.RLIM_INFINITY else hard,
            )
        )
    return need


@dataclass(frozen=True)
class Result(Generic[R]):
    """What one target gave: a value, or the error and the phase it happened in.

    ``phase`` is ``None`` on success, ``"connect"`` when a hop did not start (``hop`` says which,
    counting from 1), ``"call"`` when the function raised or the context died, ``"cancelled"``
    when ``fail_fast`` stopped it.  Times are in seconds: ``hop_seconds`` for each hop's start-up
    (a hop shared with other targets counts once for all), ``connect_seconds`` their sum,
    ``call_seconds`` for the call itself.
    """

    target: Target
    index: int
    value: R | None = None
    error: Exception | None = None
    phase: Phase | None = None
    hop: int | None = None
    hop_seconds: tuple[float, ...] = ()
    call_seconds: float | None = None

    @property
    def ok(self) -> bool:
        """True when the target answered."""
        return self.error is None

    @property
    def connect_seconds(self) -> float | None:
        """How long the target's hops took to start, or None if they did not all start."""
        return sum(self.hop_seconds) if self.hop is None and self.hop_seconds else None

    def unwrap(self) -> R:
        """The value; the error is raised instead if there is one."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


@dataclass(frozen=True)
class GroupStatistics:
    """How far a group's connection setup has got."""

    targets: int
    waiting: int  #: not started yet (no free connection slot, or a hop before it is starting)
    connecting: int
    connected: int
    failed: int


class _Slot:
    """One target's place in the group."""

    def __init__(self, index: int, target: Target) -> None:
        self.index = index
        self.target = target
        self.settled = trio.Event()
        self.connecting = False
        self.context: Context | None = None
        self.error: Exception | None = None
        self.phase: Phase | None = None
        self.hop: int | None = None
        self.hop_seconds: tuple[float, ...] = ()


class _Node:
    """One context of the tree: a hop after the hops of its parent."""

    def __init__(self, hop: Method, parent: _Node | None, slot: _Slot | None) -> None:
        self.hop = hop
        self.parent = parent
        self.depth: int = 0 if parent is None else parent.depth + 1
        self.slot = slot
        self.children: list[_Node] = []
        self.scope: trio.CancelScope | None = None
        self.connected = False
        self.seconds = 0.0

    def slots(self) -> list[_Slot]:
        found = [] if self.slot is None else [self.slot]
        for child in self.children:
            found += child.slots()
        return found

    def hop_seconds(self) -> tuple[float, ...]:
        node: _Node | None = self
        seconds: list[float] = []
        while node is not None:
            seconds.insert(0, node.seconds)
            node = node.parent
        return tuple(seconds)


class _Batch:
    def __init__(self) -> None:
        self.scopes: set[trio.CancelScope] = set()
        self.tripped = False


class ResultStream(Generic[R]):
    """The results of one :meth:`Group.results` call, in the order they complete."""

    def __init__(self, receive: trio.MemoryReceiveChannel[Result[R]], batch: _Batch) -> None:
        self._receive = receive
        self._batch = batch

    def __aiter__(self) -> ResultStream[R]:
        return self

    async def __anext__(self) -> Result[R]:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def aclose(self) -> None:
        """Stop listening: calls still running are cancelled, their results dropped."""
        self._receive.close()
        for scope in self._batch.scopes:
            scope.cancel()


class Group:
    """Contexts for many targets, opened by :func:`open_group`."""

    def __init__(
        self,
        targets: list[Target],
        *,
        max_connecting: int,
        connect_timeout: float,
        fail_fast: bool,
    ) -> None:
        if max_connecting < 1:
            raise ValueError("max_connecting must be at least 1, not %r" % (max_connecting,))
        #: The targets, in the order given.
        self.targets: tuple[Target, ...] = tuple(targets)
        self._slots = [_Slot(index, target) for index, target in enumerate(targets)]
        self._limiter = trio.CapacityLimiter(max_connecting)
        self._connect_timeout = connect_timeout
        self._fail_fast = fail_fast
        self._tripped_by: str | None = None
        self._nursery: trio.Nursery | None = None
        self._closing = trio.Event()
        self._batches: set[_Batch] = set()
        self._nodes: list[_Node] = []
        self._roots = self._build_tree()

    def _build_tree(self) -> list[_Node]:
        roots: list[_Node] = []
        shared: dict[tuple[int, Method], _Node] = {}
        for slot in self._slots:
            parent: _Node | None = None
            for hop in slot.target.hops[:-1]:
                key = (id(parent), hop)
                node = shared.get(key)
                if node is None:
                    node = shared[key] = _Node(hop, parent, None)
                    self._add(node, roots)
                parent = node
            self._add(_Node(slot.target.hops[-1], parent, slot), roots)
        return roots

    def _add(self, node: _Node, roots: list[_Node]) -> None:
        self._nodes.append(node)
        (roots if node.parent is None else node.parent.children).append(node)

    def direct_contexts(self) -> int:
        """How many contexts the master itself parents (fork targets share the fork server)."""
        forks = sum(1 for root in self._roots if root.hop.kind == "fork")
        return len(self._roots) - forks + (1 if forks else 0)

    def statistics(self) -> GroupStatistics:
        """Counts of targets waiting, connecting, connected and failed."""
        connected = sum(1 for s in self._slots if s.context is not None and s.error is None)
        failed = sum(1 for s in self._slots if s.error is not None)
        connecting = sum(1 for s in self._slots if s.connecting and not s.settled.is_set())
        return GroupStatistics(
            targets=len(self._slots),
            waiting=len(self._slots) - connected - failed - connecting,
            connecting=connecting,
            connected=connected,
            failed=failed,
        )

    async def _run_node(self, node: _Node, via: Context | None) -> None:
        with trio.CancelScope() as scope:
            node.scope = scope
            if self._tripped_by is not None:
                scope.cancel()
            async with AsyncExitStack() as stack:
                started = trio.current_time()
                try:
                    async with self._limiter:
                        for slot in node.slots():
                            slot.connecting = True
                        started = trio.current_time()
                        context = await stack.enter_async_context(
                            open_context(
                                node.hop,
                                via=via,
                                connect_timeout=self._connect_timeout,
                                name=node.slot.target.name if node.slot else None,
                            )
                        )
                        node.seconds = trio.current_time() - started
                except Exception as exc:
                    node.seconds = trio.current_time() - started
                    self._node_failed(node, exc, "connect")
                    return
                node.connected = True
                if node.slot is not None:
                    slot = node.slot
                    slot.context = context
                    slot.hop_seconds = node.hop_seconds()
                    slot.settled.set()
                    await self._closing.wait()
                else:
                    async with trio.open_nursery() as nursery:
                        for child in node.children:
                            nursery.start_soon(self._run_node, child, context)
        if scope.cancelled_caught and not node.connected and self._tripped_by is not None:
            self._node_failed(
                node,
                Error("cancelled: fail_fast, after %s failed" % self._tripped_by),
                "cancelled",
            )

    def _node_failed(self, node: _Node, error: Exception, phase: Phase) -> None:
        seconds = node.hop_seconds()
        for slot in node.slots():
            if slot.settled.is_set():
                continue
            slot.error = error
            slot.phase = phase
            slot.hop = node.depth + 1
            slot.hop_seconds = seconds
            slot.settled.set()
        if phase == "connect" and self._fail_fast and node.slots():
            self._trip(node.slots()[0].target.label, None)

    def _trip(self, label: str, batch: _Batch | None) -> None:
        """fail_fast: stop every hop still starting, and the other calls of ``batch``."""
        if self._tripped_by is None:
            self._tripped_by = label
            for node in self._nodes:
                if not node.connected and node.scope is not None:
                    node.scope.cancel()
        if batch is not None and not batch.tripped:
            batch.tripped = True
            for scope in batch.scopes:
                scope.cancel()

    def _close(self) -> None:
        """Let every context end its block; stop what is still starting or running."""
        self._nursery = None
        self._closing.set()
        for node in self._nodes:
            if not node.connected and node.scope is not None:
                node.scope.cancel()
        for batch in self._batches:
            for scope in batch.scopes:
                scope.cancel()

    def _settled_result(self, slot: _Slot) -> Result[Any]:
        return Result(
            slot.target,
            slot.index,
            error=slot.error,
            phase=slot.phase,
            hop=slot.hop,
            hop_seconds=slot.hop_seconds,
        )

    async def wait_connected(self) -> list[Result[None]]:
        """Wait until every target has connected or failed; one result per target, in order."""
        for slot in self._slots:
            await slot.settled.wait()
        return [self._settled_result(slot) for slot in self._slots]

    async def _call_one(
        self,
        slot: _Slot,
        batch: _Batch,
        action: Callable[[Context, Target], Awaitable[Any]],
        send: trio.MemorySendChannel[Result[Any]],
    ) -> None:
        with send:
            result = await self._call_result(slot, batch, action)
            try:
                send.send_nowait(result)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # Nobody listens any more.
        if not batch.scopes:
            self._batches.discard(batch)

    async def _call_result(
        self, slot: _Slot, batch: _Batch, action: Callable[[Context, Target], Awaitable[Any]]
    ) -> Result[Any]:
        result: Result[Any] | None = None
        with trio.CancelScope() as scope:
            batch.scopes.add(scope)
            if batch.tripped:
                scope.cancel()
            await slot.settled.wait()
            if slot.error is not None or slot.context is None:
                result = self._settled_result(slot)
            else:
                started = trio.current_time()
                try:
                    value = await action(slot.context, slot.target)
                except Exception as exc:
                    result = Result(
                        slot.target,
                        slot.index,
                        error=exc,
                        phase="call",
                        hop_seconds=slot.hop_seconds,
                        call_seconds=trio.current_time() - started,
                    )
                else:
                    result = Result(
                        slot.target,
                        slot.index,
                        value=value,
                        hop_seconds=slot.hop_seconds,
                        call_seconds=trio.current_time() - started,
                    )
        batch.scopes.discard(scope)
        if result is None:
            result = Result(
                slot.target,
                slot.index,
                error=Error("cancelled: fail_fast, after %s failed" % self._tripped_by),
                phase="cancelled",
                hop_seconds=slot.hop_seconds,
            )
        if self._fail_fast and result.phase in ("connect", "call"):
            self._trip(slot.target.label, batch)
        return result

    @overload
    def results(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> ResultStream[R]: ...

    @overload
    def results(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> ResultStream[R]: ...

    def results(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> ResultStream[Any]:
        """Call ``fn(*args, **kwargs)`` on every target; iterate the results as they complete.

        Each target's call starts as soon as its context is up, so fast targets answer while
        slow ones are still connecting.  Every target gives exactly one :class:`Result`, also
        those that failed to connect.
        """

        async def call(context: Context, target: Target) -> Any:
            return await context.call(fn, *args, **kwargs)

        return self.each(call)

    def each(self, action: Callable[[Context, Target], Awaitable[R]]) -> ResultStream[R]:
        """Run ``await action(context, target)`` here in the master for every target, as soon
        as its context is up; iterate the results as they complete.

        For work that is more than one remote call: a file transfer, a stream, calls in a
        row.  Results, failures and ``fail_fast`` are as for :meth:`results`; the time of
        ``action`` is the result's ``call_seconds``.
        """
        if self._nursery is None:
            raise RuntimeError("the group is closed: use it inside its open_group block")
        send, receive = trio.open_memory_channel[Result[Any]](len(self._slots))
        batch = _Batch()
        self._batches.add(batch)
        with send:
            for slot in self._slots:
                self._nursery.start_soon(self._call_one, slot, batch, action, send.clone())
        return ResultStream(receive, batch)

    @overload
    async def call(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> list[Result[R]]: ...

    @overload
    async def call(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> list[Result[R]]: ...

    async def call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> list[Any]:
        """Call ``fn(*args, **kwargs)`` on every target; one :class:`Result` each, in order."""
        found = [result async for result in self.results(fn, *args, **kwargs)]
        return sorted(found, key=lambda result: result.index)


@asynccontextmanager
async def open_group(
    targets: Iterable[Target | str | Method],
    *,
    max_connecting: int = 64,
    connect_timeout: float = 30.0,
    fail_fast: bool = False,
) -> AsyncIterator[Group]:
    """Open contexts for many targets at once and yield a :class:`Group` to call them.

    ``targets`` are :class:`Target` objects, target strings or single methods.  Connection
    setup starts at once in the background, at most ``max_connecting`` hops at a time;
    ``connect_timeout`` bounds each hop.  Targets whose chains begin with the same hops share
    those contexts.  A target that fails to connect gives a failed :class:`Result` and never
    holds up the others; with ``fail_fast`` the first failure cancels the connections still
    being set up and the other calls in flight.

    Before anything starts, the soft ``RLIMIT_NOFILE`` is raised to the hard limit (once per
    process), and :class:`FdLimitError` is raised if the contexts would not fit under it.

    Leaving the block closes every context, innermost first; an exception from the body
    propagates as itself.
    """
    group = Group(
        [as_target(target) for target in targets],
        max_connecting=max_connecting,
        connect_timeout=connect_timeout,
        fail_fast=fail_fast,
    )
    check_fd_budget(group.direct_contexts(), max_connecting)
    error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        group._nursery = nursery
        for root in group._roots:
            nursery.start_soon(group._run_node, root, None)
        try:
            yield group
        except BaseException as exc:
            # Kept to re-raise outside the nursery, so it is never wrapped in a group.
            error = exc
        finally:
            # Contexts end their blocks by themselves rather than by cancellation, which
            # would cost each a shutdown grace period.
            group._close()
    if error is not None:
        try:
            raise error
        finally:
            del error
