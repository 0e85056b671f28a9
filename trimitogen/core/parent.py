"""An intermediate context's own children: start them, finish their bootstrap, pump their stream.

When the master opens a context ``via=`` another one, it sends that intermediate a spawn request;
the intermediate starts the process itself (with a pty for prompts where the method needs one),
answers its prompts, sends it the runtime, waits for it to report ready, and from then on routes
frames between it and its own parent.  Everything here runs on the intermediate's I/O thread,
driven by readiness callbacks and timers, so no wait blocks other traffic.
"""

from __future__ import annotations

import _thread
import os
import signal

from .bootstrap import length_prefixed
from .connect import ChildFds, PromptDialog, build_plan
from .errors import ChannelError, ConnectError, StreamError
from .importer import ModuleForwarder, ModulePolicy
from .link import CONNECTING, GONE, READY, Grace, Link
from .messages import (
    AddRoute,
    DelRoute,
    GetModule,
    GetResource,
    LoadModule,
    LoadResource,
    Log,
    Spawn,
    SpawnFailed,
    SpawnOk,
)
from .parts import Reassembler, SplitSender
from .pgroup import signal_group, sweep_group
from .protocol import (
    HANDLE_ADD_ROUTE,
    HANDLE_DEL_ROUTE,
    HANDLE_GET_MODULE,
    HANDLE_GET_RESOURCE,
    HANDLE_LOAD_MODULE,
    HANDLE_LOAD_RESOURCE,
    HANDLE_LOG,
    HANDLE_SPAWN,
    MASTER_ID,
    Message,
    dumps,
)
from .routing import RouteTable
from .side import Side, wait_fd, write_parts_blocking

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Set, Tuple


class ForkedProcess:
    """The part of ``subprocess.Popen`` a :class:`Downstream` uses, for a process made by fork."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: Optional[int] = None

    def wait(self) -> int:
        while self.returncode is None:
            try:
                _pid, status = os.waitpid(self.pid, 0)
            except InterruptedError:
                continue
            if os.WIFSIGNALED(status):
                self.returncode = -os.WTERMSIG(status)
            else:
                self.returncode = os.WEXITSTATUS(status)
        return self.returncode

    def _signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)


class ProcessMonitor:
    """Waits for one child process on a thread of its own and wakes the owner's loop when it ends.

    The loop then reads :attr:`exit_status`.  A thread per child, because ``waitpid`` on a
    specific pid is the only wait that cannot steal another library's child.
    """

    def __init__(self, process: Any, wake: Any) -> None:
        self.process = process
        self.exit_status: Optional[int] = None
        self._wake = wake
        _thread.start_new_thread(self._wait, ())

    def _wait(self) -> None:
        self.exit_status = self.process.wait()
        self._wake()
        # The child led a process group: end what it left there (see core/pgroup.py).
        sweep_group(self.process.pid)

    def terminate(self) -> None:
        if self.exit_status is None:
            signal_group(self.process.pid, signal.SIGTERM)

    def kill(self) -> None:
        if self.exit_status is None:
            signal_group(self.process.pid, signal.SIGKILL)


def create_child(plan: Any) -> Tuple[Any, int, int]:
    """Start ``plan``'s process with a socket for frames and a pipe for stderr (no terminal).

    Returns ``(process, stream fd, stderr fd)``; raises :class:`ConnectError` if it cannot start.
    """
    import subprocess

    fds = ChildFds(plan)
    try:
        process = subprocess.Popen(plan.argv, **fds.options)
    except OSError as exc:
        fds.failed()
        raise ConnectError("%s: %s" % (plan.argv[0], exc)) from exc
    stream_fd, term_fd = fds.spawned()
    return process, stream_fd, term_fd


def tty_create_child(plan: Any) -> Tuple[Any, int, int]:
    """Like :func:`create_child`, with a pty as the controlling terminal, for methods that may
    prompt (the returned fd is the pty's master)."""
    assert plan.use_pty, "tty_create_child needs a plan that asks for a terminal"
    return create_child(plan)


class Downstream:
    """One child of this context, from spawn to reaping: a pump of its fds into a :class:`Link`."""

    def __init__(
        self,
        owner: Any,
        request: Spawn,
        requester: int,
        reply_to: int,
        forked: Optional[Tuple[int, int]] = None,
    ) -> None:
        self.owner = owner
        self.context_id = request.context_id
        self.name = request.name
        self.requester = requester
        self.reply_to = reply_to
        self.module_policy = ModulePolicy(request.deny, request.allow)
        self.modules_sent: Set[str] = set()
        if forked is not None:  # a copy has every module this context had (package data too)
            self.modules_sent.update(owner.context.importer.received)
        self.eof = False
        self._reported = False
        self._hearing_out = False  # a failure waits for the rest of the terminal (Link.heard_out)
        self.sender = SplitSender(self._write)
        self.term: Optional[Side] = None
        if forked is not None:
            # A copy of the owner made by os.fork(): no bootstrap, no terminal; it speaks frames
            # at once on its end of the socketpair.
            dialog = PromptDialog("fork of context %r" % owner.name, None)
            self.link = Link(
                self.context_id,
                dialog,
                expect_marker=False,
                max_message_size=owner.max_message_size,
            )
            pid, sock_fd = forked
            process: Any = ForkedProcess(pid)
            self.rx = self.tx = Side(self, sock_fd)
        else:
            plan = build_plan(request.spec)
            self.link = Link(self.context_id, plan.dialog, max_message_size=owner.max_message_size)
            spawn = tty_create_child if plan.use_pty else create_child
            process, stream_fd, term_fd = spawn(plan)
            self.rx = self.tx = Side(self, stream_fd)
            self.term = Side(self, term_fd)
            owner.add_reader(self.term.fileno(), self.on_term_readable)
        self.pid = process.pid
        self.monitor = ProcessMonitor(process, owner.wake)
        owner.add_reader(self.rx.fileno(), self.on_readable)
        owner.loop.hold(self.rx)
        owner.add_timer(request.connect_timeout, self.on_connect_timeout)
        if forked is None:
            self.send_parts([request.payload, length_prefixed(dumps(request.config))])

    def __repr__(self) -> str:
        return "Downstream(%r, id=%d, %s)" % (self.name, self.context_id, self.link.state)

    @property
    def magic(self) -> bytes:
        return self.link.ready.magic if self.link.ready is not None else b""

    # -- start-up ----------------------------------------------------------------------------
    def _settle(self) -> None:
        """Answer the spawn request once start-up is decided, either way."""
        link = self.link
        if self._reported or link.state == CONNECTING:
            return
        if link.ready is None and self.term is not None and not link.last_words_heard:
            # Hear the tool out before stopping it (ssh explains after the line that decides).
            if not self._hearing_out:
                self._hearing_out = True
                self.owner.add_timer(Grace.LAST_WORDS, self._heard_out)
            return
        self._reported = True
        if link.ready is not None:
            ready = link.ready
            self.owner.on_child_ready(self)
            answer: Any = SpawnOk(True, ready.pid, ready.hexversion, ready.magic)
            self.owner.reply(self.requester, self.reply_to, answer)
            return
        failure = link.failure
        assert failure is not None
        answer = SpawnFailed(False, failure.kind, failure.phase, failure.reason, failure.last_lines)
        self.owner.reply(self.requester, self.reply_to, answer)
        self.kill()

    def _heard_out(self) -> None:
        self.link.heard_out()
        self._settle()

    def on_connect_timeout(self) -> None:
        if self.link.state == CONNECTING:
            self.link.fail(ConnectError("no answer within the connect timeout"))
            self.link.heard_out()  # it said nothing that decided, so nothing more is awaited
            self._settle()

    # -- streams -----------------------------------------------------------------------------
    def _write(self, parts: List[Any]) -> bool:
        if self.tx.closed:
            return False
        try:
            return write_parts_blocking(self.tx, parts, self.owner.write_pump())
        except OSError:
            return False

    def send_parts(self, parts: List[Any]) -> bool:
        with self.sender.lock:
            return self._write(parts)

    def send(self, msg: Message) -> bool:
        return self.sender.send(msg)

    def _read(self) -> bool:
        """Read what is there into the link; False at end of stream."""
        view = self.link.body_view()
        if view is not None:
            n = self.rx.readinto(view)
            if n:
                self.link.body_filled(n)
            return bool(n)
        data = self.rx.read()
        if not data:
            return False
        self.link.receive_stream(data)
        return True

    def pump(self) -> None:
        """Read what is there without acting on it (see Children.write_pump)."""
        if self.eof or self.rx.closed:
            return
        try:
            if not self._read():
                self.eof = True  # stop pumping it; on_readable handles the end
        except BlockingIOError:
            return
        except Exception:
            self.eof = True  # on_readable meets the same condition and deals with it
        self.owner.pumped.add(self)

    def on_readable(self) -> None:
        self.owner.pumped.discard(self)
        try:
            alive = self._read()
        except BlockingIOError:
            alive = True
        except Exception as exc:  # a StreamError: this child's stream can no longer be trusted
            self.owner.log(40, "context %r broke the protocol: %s" % (self.name, exc))
            self.kill()
            alive = False
        if not alive:
            self.eof = True
            self.link.stream_closed()
            self.owner.remove_reader(self.rx.fileno())
            self._maybe_finish()
            return
        for msg in self.link.messages():
            self.owner.on_downstream_message(self, msg)
        self._settle()

    def on_term_readable(self) -> None:
        if self.term is None:
            return
        try:
            data = self.term.read()
        except BlockingIOError:
            return
        if not data:
            self._forward(self.link.output_closed())
            self.owner.remove_reader(self.term.fileno())
            self.term.close()
            self._settle()
            return
        lines, answer = self.link.receive_output(data)
        self._forward(lines)
        if answer:
            try:
                os.write(self.term.fileno(), answer)
            except OSError:
                pass
        self._settle()

    def _forward(self, lines: List[str]) -> None:
        if self.link.state in (CONNECTING, READY):
            for text in lines:
                self.owner.forward_log(self.context_id, "stderr", text)

    # -- the end -----------------------------------------------------------------------------
    def kill(self) -> None:
        if self.monitor.exit_status is None:
            self.monitor.terminate()
            self.owner.add_timer(Grace.KILL, self.monitor.kill)

    def on_wake(self) -> None:
        """The owner was woken: the process may have exited."""
        status = self.monitor.exit_status
        if status is not None and self.link.state != GONE and self.link.exit_status is None:
            self.link.process_exited(status)
            if not self.eof:
                # Give the stream a moment to deliver what the child wrote before it exited.
                self.owner.add_timer(Grace.OUTPUT_AFTER_EXIT, self._finish_after_exit)
            self._maybe_finish()

    def _finish_after_exit(self) -> None:
        self.eof = True
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        link = self.link
        if link.state == GONE or not self.eof:
            return
        if link.exit_status is None:
            # The stream closed but the process lives on: make sure it ends.
            self.kill()
            return
        term = self.term
        if link.ready is None and term is not None and not term.closed:
            # What it printed last (such as "Authentication failure", or ssh's advice after its
            # verdict) says more than its status.
            for _ in range(64):
                if term.closed or link.last_words_heard:
                    break
                self.on_term_readable()
                if not term.closed:
                    import select

                    if not wait_fd(term.fileno(), select.POLLIN, 0):
                        break
        reason = link.end_reason("its stream closed")
        link.gone(reason)
        link.heard_out()  # the terminal was read above as far as it goes without waiting
        self._settle()
        for side in (self.rx, self.term):
            if side is not None and not side.closed:
                self.owner.remove_reader(side.fileno())
                self.owner.loop.release(side)
                side.close()
        self.owner.on_child_gone(self, reason)


class Children:
    """The children of one context and the routes through them, on that context's I/O thread.

    Messages from the parent for a context below are passed down the right child's stream;
    messages from a child go upward only, and only as a context behind that child (the rules are
    :class:`~.routing.RouteTable`'s).  Module requests of children are served by a
    :class:`~.importer.ModuleForwarder` from what this context received.
    """

    def __init__(self, context: Any) -> None:
        self.context = context
        self.name: str = context.name
        self.max_message_size: int = context.decoder.max_message_size
        self.loop = context.loop
        self.by_id: Dict[int, Downstream] = {}
        self.table = RouteTable(context.context_id)
        #: Children whose stream was read while a write waited (see write_pump).
        self.pumped: Set[Downstream] = set()
        self.forwarder = ModuleForwarder(
            self._request_module, context.config.get("master_magic", b"")
        )
        #: Joins split messages from below for this context itself.
        self.parts = Reassembler(self.max_message_size)
        #: Serves the children's package data requests, made on the first (core/resources.py).
        self.resource_forwarder: Any = None

    # What a Downstream asks of its owner ------------------------------------------------------
    def add_reader(self, fd: int, callback: Any) -> None:
        self.loop.add_reader(fd, callback)

    def remove_reader(self, fd: int) -> None:
        self.loop.remove_reader(fd)

    def add_timer(self, delay: float, callback: Any) -> None:
        self.loop.add_timer(delay, callback)

    def wake(self) -> None:
        self.context.wake()

    def write_pump(self) -> Any:
        """What a write on the I/O thread does while it waits: read the children's streams.

        Suppose this thread waits to write to a child whose own I/O thread waits to write to us:
        neither reads, and both would wait forever.  So while waiting, this thread keeps reading
        its children's streams into their decoders; the messages are handled by the loop later.
        Other threads' writes (the main thread's replies) do not need this: this thread reads.
        """
        if not self.by_id:
            return None
        return (self._child_fds, self._pump_child)

    def _child_fds(self) -> List[int]:
        return [c.rx.fd for c in self.by_id.values() if c.rx.fd is not None and not c.eof]

    def _pump_child(self, fd: int) -> None:
        for child in list(self.by_id.values()):
            if child.rx.fd == fd:
                child.pump()

    def handle_pumped(self) -> None:
        while self.pumped:
            self.pumped.pop().on_readable()

    def reply(self, dst: int, handle: int, body: Any) -> None:
        self.context.reply(dst, handle, body)

    def log(self, levelno: int, text: str) -> None:
        self.context.log(levelno, text)

    def forward_log(self, src: int, kind: str, text: str) -> None:
        """Send a line a child printed before its runtime took over, as that child's output."""
        if not self.context.disconnected:
            self._send_up(Message(MASTER_ID, src, HANDLE_LOG, 0, Log.pack(kind, kind, 20, text)))

    # Starting and stopping -------------------------------------------------------------------
    def spawn(self, request: Spawn, requester: int, reply_to: int) -> None:
        try:
            child = Downstream(self, request, requester, reply_to)
        except Exception as exc:
            self.reply(requester, reply_to, SpawnFailed(False, "connect", "spawn", str(exc), []))
            return
        self._add(child)

    def adopt(self, request: Spawn, requester: int, reply_to: int, pid: int, fd: int) -> Downstream:
        """Take over the stream of a fork of this context made by the main thread."""
        child = Downstream(self, request, requester, reply_to, forked=(pid, fd))
        self._add(child)
        return child

    def _add(self, child: Downstream) -> None:
        self.by_id[child.context_id] = child
        self.table.add(child.context_id, child, self.table.own_id)

    def kill(self, context_id: int) -> bool:
        """Stop the direct child ``context_id`` by force; False if there is none."""
        child = self.by_id.get(context_id)
        if child is None:
            return False
        child.kill()
        return True

    def stop_all(self) -> None:
        for child in list(self.by_id.values()):
            child.kill()

    def on_wake(self) -> None:
        for child in list(self.by_id.values()):
            child.on_wake()

    def owned_fds(self) -> List[int]:
        sides = []
        for child in self.by_id.values():
            sides += [child.rx, child.term]
        return [side.fd for side in sides if side is not None and side.fd is not None]

    def on_child_ready(self, child: Downstream) -> None:
        self._send_up(
            Message(
                MASTER_ID, self.table.own_id, HANDLE_ADD_ROUTE, 0, AddRoute.pack(child.context_id)
            )
        )

    def on_child_gone(self, child: Downstream, reason: str) -> None:
        self.by_id.pop(child.context_id, None)
        ids = self.table.forget_link(child)
        for context_id in ids:
            self.parts.forget(context_id)
        self._send_up(
            Message(MASTER_ID, self.table.own_id, HANDLE_DEL_ROUTE, 0, DelRoute.pack(ids, reason))
        )

    # Routing -----------------------------------------------------------------------------------
    def route_down(self, msg: Message) -> bool:
        """Pass a message from the parent towards ``msg.dst``; False if there is no route."""
        child = self.table.link_of(msg.dst)
        if child is None:
            return False
        if msg.handle == HANDLE_SPAWN:
            # A context is about to be started below ``msg.dst``: only that branch may later
            # announce it.
            try:
                self.table.expect(Spawn.decode(msg.data).context_id, child, msg.dst)
            except StreamError:
                pass
        return bool(child.send(msg))

    def on_downstream_message(self, child: Downstream, msg: Message) -> None:
        """A message from a child: only upward, and only from contexts behind that child."""
        try:
            self._on_downstream_message(child, msg)
        except Exception as exc:
            # Whatever a child sends, it cannot take this context down with it.
            self.log(40, "dropped a malformed message from context %r: %s" % (child.name, exc))

    def _on_downstream_message(self, child: Downstream, msg: Message) -> None:
        refusal = self.table.refuse_upward(child, msg.src, msg.dst)
        if refusal is not None:
            self.log(30, "dropped a message from context %r %s" % (child.name, refusal))
            return
        if msg.dst == self.table.own_id:
            whole = self.parts.add(msg)
            if whole is None:
                return
            msg = whole
            if msg.handle == HANDLE_GET_MODULE:
                answer = self.forwarder.request(child, GetModule.decode(msg.data).name)
                if answer is not None:
                    self._send_records(child, answer)
            elif msg.handle == HANDLE_GET_RESOURCE:
                self._on_get_resource(child, msg)
            elif msg.handle == HANDLE_LOG:
                self._send_up(Message(MASTER_ID, msg.src, HANDLE_LOG, 0, msg.data))
            else:
                self.log(30, "dropped a message from %r for handle %d" % (child.name, msg.handle))
            return
        if msg.handle == HANDLE_ADD_ROUTE:
            if not self.table.claim(AddRoute.decode(msg.data).context_id, child):
                self.log(
                    30, "context %r announced a context it was not asked to start" % child.name
                )
                return
        elif msg.handle == HANDLE_DEL_ROUTE:
            for context_id in DelRoute.decode(msg.data).ids:
                if self.table.may_report_gone(child.context_id, context_id):
                    self.table.forget(context_id)
        self._send_up(msg)

    def _send_up(self, msg: Message) -> None:
        try:
            self.context.send(msg)
        except ChannelError:
            pass

    # Modules -----------------------------------------------------------------------------------
    def on_load_module(self, records: List[Any]) -> None:
        for child, answer in self.forwarder.on_load_module(records):
            self._send_records(child, answer)

    def _send_records(self, child: Downstream, records: List[Any]) -> None:
        child.send(
            Message(
                child.context_id, self.table.own_id, HANDLE_LOAD_MODULE, 0, LoadModule.pack(records)
            )
        )

    def _request_module(self, name: str) -> None:
        context = self.context
        self._send_up(
            Message(
                context.parent_id, context.context_id, HANDLE_GET_MODULE, 0, GetModule.pack(name)
            )
        )

    # Package data (see core/resources.py) ------------------------------------------------------
    def _resources(self) -> Any:
        if self.resource_forwarder is None:
            from .resources import ResourceForwarder

            self.resource_forwarder = ResourceForwarder(self._request_resource)
        return self.resource_forwarder

    def _on_get_resource(self, child: Downstream, msg: Message) -> None:
        request = GetResource.decode(msg.data)
        answer = self._resources().request(child, request.package, request.path)
        if answer is not None:
            self._send_resource(child, answer)

    def on_load_resource(self, answer: Any) -> None:
        if self.resource_forwarder is not None:
            for child, waited in self.resource_forwarder.on_load_resource(answer):
                self._send_resource(child, waited)

    def _send_resource(self, child: Downstream, answer: Any) -> None:
        body = LoadResource.pack(*answer)
        child.send(Message(child.context_id, self.table.own_id, HANDLE_LOAD_RESOURCE, 0, body))

    def _request_resource(self, package: str, path: str) -> None:
        context = self.context
        body = GetResource.pack(package, path)
        self._send_up(Message(context.parent_id, context.context_id, HANDLE_GET_RESOURCE, 0, body))
