"""The runtime of a child context: what runs in every interpreter the master starts.

The bootstrap hands :func:`main` a function that reads exact byte counts from the stream.  Then:

* the stream's descriptors (fd 0 and fd 1, or fd 1 alone when fd 0 is a terminal) are moved to
  private descriptors and carry frames; fd 0 becomes ``/dev/null`` and fds 1 and 2 become pipes
  read by :class:`IoLogger`, so output of the child and of any process it starts reaches the
  master as log records;
* the main thread runs calls one at a time, in arrival order, and writes each reply itself; while
  idle it also reads the parent's stream, so a call costs no thread switch;
* the I/O thread reads the stream while a call runs, forwards output, drives this context's own
  children (see :mod:`trimitogen.core.parent`) and answers shutdown and disconnection.

Trust flows downward: whatever arrives from the parent is obeyed (or routed to a context below);
a child of this context may only send upward, as itself or as a context below it.
"""

from __future__ import annotations

import _thread
import os
import select
import sys
import time

from .calls import HANDED_OVER, CallRunner
from .errors import ChannelError, StreamError
from .grace import Grace
from .importer import Importer
from .iologger import IoLogger, LoggingHook, install_forwarding, redirect_stdio
from .loop import POLLIN, PollLoop, Waker
from .messages import Kill, LoadModule, LoadResource, Log, Ready, Spawn, SpawnFailed
from .parts import Reassembler, SplitSender
from .pgroup import end_group, lead_session
from .protocol import (
    FIRST_REPLY_HANDLE,
    FLAG_DEAD,
    HANDLE_CALL,
    HANDLE_CANCEL,
    HANDLE_CREDIT,
    HANDLE_KILL,
    HANDLE_LOAD_MODULE,
    HANDLE_LOAD_RESOURCE,
    HANDLE_LOG,
    HANDLE_OPEN_CHANNEL,
    HANDLE_OPEN_STREAM,
    HANDLE_READY,
    HANDLE_SHUTDOWN,
    HANDLE_SPAWN,
    FrameDecoder,
    Message,
)
from .side import Side, same_file, widen_pipe, write_parts_blocking

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Set


#: While calls run, the I/O thread looks every this many seconds whether the current one has run
#: this long, and then takes over reading the parent's stream (see ``_io_wait``).
TICK = 0.002

#: The I/O thread stops looking this many seconds after the last call ended.
TICK_IDLE = 0.05

#: Most bytes the main thread reads ahead for the I/O thread.
READ_AHEAD = 4 * 1024 * 1024


class ExternalContext:
    """The child side of one connection: the parent's stream, the call loop, and the I/O thread.

    Messages for a context below this one are handed to :class:`~.parent.Children`, created when
    this context is first asked to start a child.
    """

    def __init__(self, config: Dict[str, Any], in_fd: int, out_fd: int) -> None:
        self.config = config
        self.context_id: int = config["context_id"]
        self.parent_id: int = config["parent_id"]
        self.name: str = config["name"]
        self.rx = Side(self, in_fd)
        self.tx = Side(self, out_fd) if out_fd != in_fd else self.rx
        for fd in {in_fd, out_fd}:
            widen_pipe(fd)
        self.decoder = FrameDecoder(config["max_message_size"])
        # Calls waiting for the main thread, and the hand-over of reading the parent's stream:
        # the main thread reads it while idle (a call then costs no thread switch), the I/O
        # thread while the main thread is busy.  Whoever reads holds _rx_lock.
        self._queue: List[Message] = []
        self._stopping = False
        self._busy = False
        self._rx_lock = _thread.allocate_lock()
        self._rx_registered = False
        self._parent_eof = False
        # The hand-over without a wake-up per call: the main thread notes when its calls start
        # and end; the I/O thread, while ``_ticking``, looks at those every TICK (see _io_wait).
        # Only a call that runs longer than TICK, or that waits for a message (an import),
        # makes the I/O thread read the stream.
        self._call_started = 0.0
        self._call_ended = 0.0
        self._ticking = False
        self._wants_reader = False
        self._for_io: List[Message] = []
        self._throttled = False
        self._main_waker = Waker()
        self._io_done_released = False
        self.sender = SplitSender(lambda parts: write_parts_blocking(self.tx, parts))
        self.parts = Reassembler(config["max_message_size"])
        self._io_done = _thread.allocate_lock()
        self._io_done.acquire()
        self._main_done_r, self._main_done_w = os.pipe()
        self.loggers: List[IoLogger] = []
        self.importer = Importer(
            self.send,
            self.context_id,
            self.parent_id,
            frozenset(config.get("never_ask", ())),
            self.ensure_reader,
        )
        self.calls = CallRunner(
            config["max_message_size"],
            self.send_log,
            self.importer.explain,
            self._send_reply,
            _hand_over,
        )
        self.disconnected = False
        self.loop = PollLoop()
        self.waker = Waker()
        #: This context's own children, once it has any (see core/parent.py).
        self.children: Any = None
        #: Its streams, once it was asked for one (see core/streams.py).
        self.streams: Any = None
        self._forked: List[Any] = []
        self._cancelled: Set[int] = set()
        self._finishing = False
        #: Held by the I/O thread while it acts on what its poll found, and by a fork.
        self._work_lock = _thread.allocate_lock()

    # Sending -------------------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        """Write a message to the parent (in parts if large, see core/parts.py); any thread may.

        A full stream makes the writer wait without reading its own children (only writes down
        need that, see ``Children.write_pump``), so a child flooding upward waits too.  A
        cancelled call's interrupt waits until the message is written.
        """
        with self.calls.uninterruptible():
            if not self.sender.send(msg):
                self.disconnected = True
                raise ChannelError("the parent of context %r disconnected" % (self.name,))

    def _send_reply(self, key: Any, data: Any) -> None:
        """Answer call ``key`` (sender, reply handle) from an event loop thread."""
        try:
            self.send(Message(key[0], self.context_id, key[1], 0, data))
        except ChannelError:
            pass

    def send_log(self, kind: str, name: str, levelno: int, text: str) -> None:
        if self.disconnected:
            return
        data = Log.pack(kind, name, levelno, text)
        try:
            self.send(Message(self.parent_id, self.context_id, HANDLE_LOG, 0, data))
        except (ChannelError, OSError):
            pass

    def log(self, levelno: int, text: str) -> None:
        self.send_log("log", "trimitogen.child", levelno, text)

    def reply(self, dst: int, handle: int, body: Any) -> None:
        """Send ``body`` (a :mod:`.messages` object) to ``handle`` of ``dst``, if it wants one."""
        if handle:
            try:
                self.send(Message(dst, self.context_id, handle, 0, body.encode()))
            except ChannelError:
                pass

    def install_logging(self, logging: Any) -> None:
        install_forwarding(logging, self.send_log, self.config["log_level"], self)

    # The I/O thread --------------------------------------------------------------------------
    def _io_loop(self) -> None:
        try:
            self._io_loop_inner()
        except BaseException as exc:  # the thread must never die silently
            try:
                import traceback

                text = "the I/O thread failed, the context ends:\n" + traceback.format_exc()
                # fd 2 is the pipe this very thread was forwarding: tell the parent directly.
                self.send_log("log", "trimitogen.child", 50, text)
                os.write(2, ("trimitogen: I/O thread failed: %r\n" % (exc,)).encode())
            finally:
                end_group()
                os._exit(70)

    def wake(self) -> None:
        """Make the I/O loop run its wake-up work soon; any thread may call this."""
        self.waker.wake()

    def ensure_reader(self) -> None:
        """A call is about to wait for a message from the parent: make sure someone reads."""
        if self._busy and not self._rx_registered:
            self._wants_reader = True
            self.wake()

    def _io_wait(self) -> Optional[float]:
        """How long the I/O loop may sleep while calls come and go (None: until woken; 0: take
        over reading the parent's stream now).

        Dekker-style with :meth:`_begin_call`: the main thread sets ``_busy`` then reads
        ``_ticking``; this thread clears ``_ticking`` then reads ``_busy``.  One of the two
        always sees the other's write, so a call never runs unwatched.
        """
        if not self._ticking:
            return None
        if self._busy:
            if self._rx_registered:
                return None  # this thread reads already: the stream itself wakes it
            if self._wants_reader or time.monotonic() - self._call_started >= TICK:
                self._wants_reader = False
                return 0.0
            return TICK
        if time.monotonic() - self._call_ended < TICK_IDLE:
            return TICK
        self._ticking = False
        if self._busy:
            self._ticking = True
            return 0.0
        return None

    def _on_wake(self) -> None:
        self.waker.drain()
        self._drain_for_io()
        if self._parent_eof and not self.loop.stopped:
            self._on_parent_lost()
            self.loop.stop()
            return
        self._adopt_forked()
        if self.children is not None:
            self.children.on_wake()

    def _on_logger_readable(self, logger: IoLogger) -> Callable[[], None]:
        def callback() -> None:
            if not logger.on_readable():
                self.loop.remove_reader(logger.side.fileno())

        return callback

    def _io_loop_inner(self) -> None:
        loop = self.loop
        for logger in self.loggers:
            loop.add_reader(logger.side.fileno(), self._on_logger_readable(logger))
        loop.add_reader(self._main_done_r, self._on_main_done)
        loop.add_reader(self.waker.read_fd, self._on_wake)
        stopping = False
        rx_fd = self.rx.fileno()
        while not loop.stopped:
            at_most = self._io_wait()
            if at_most == 0.0:
                if self._busy and not self._rx_registered:
                    loop.add_reader(rx_fd, self._on_parent_readable)
                    self._rx_registered = True
                at_most = TICK
            # Messages read while a write waited are still to be handled: do not sleep.
            events = loop.wait(self.children is not None and bool(self.children.pumped), at_most)
            with self._work_lock:
                loop.dispatch(events)
                if loop.stopped:
                    return
                if self.children is not None:
                    self.children.handle_pumped()
                if self._finishing and not loop.held:
                    self._finish_io()
                    return
                if self._stopping and not stopping:
                    stopping = True
                    if self.children is not None:
                        self.children.stop_all()
                    self._start_watchdog()

    def _on_parent_readable(self) -> None:
        if not self._busy or not self._rx_lock.acquire(False):
            # The main thread is idle and reads the stream itself.
            self.loop.remove_reader(self.rx.fileno())
            self._rx_registered = False
            return
        try:
            # Messages the main thread read earlier go first, so order is kept.
            self._drain_for_io()
            alive = self._on_receive(self._dispatch)
        finally:
            self._rx_lock.release()
        if not alive:
            self._on_parent_lost()
            self.loop.stop()

    def _on_main_done(self) -> None:
        # Children still running keep their streams (keep_alive sides) held: the loop goes on
        # until they are reaped and reported gone, or the watchdog ends the process.
        self.loop.remove_reader(self._main_done_r)
        self._finishing = True

    def _finish_io(self) -> None:
        for logger in self.loggers:
            logger.drain()
        self._release_io_done()
        self.loop.stop()

    def _drain_for_io(self) -> None:
        while self._for_io:
            self._dispatch(self._for_io.pop(0))
        if self._throttled:
            self._main_waker.wake()

    def _release_io_done(self) -> None:
        if not self._io_done_released:
            self._io_done_released = True
            self._io_done.release()

    def _enqueue_call(self, msg: Message) -> None:
        self._queue.append(msg)
        self._main_waker.wake()

    def _stop_main(self) -> None:
        self._stopping = True
        self._main_waker.wake()

    def _on_receive(self, dispatch: Callable[[Message], None]) -> bool:
        """Read and dispatch what arrived; False once the parent disconnected."""
        try:
            if not self.decoder.read_from(self.rx)[0]:
                return False
        except BlockingIOError:
            return True
        for msg in self.decoder.messages():
            # The parts of a split message for this context are joined by whoever reads.
            try:
                whole = self.parts.add(msg) if msg.flags and msg.dst == self.context_id else msg
            except StreamError as exc:  # from the parent: logged, as a malformed message
                self.log(40, str(exc))
                continue
            if whole is not None:
                dispatch(whole)
        return True

    def _dispatch(self, msg: Message) -> None:
        """A message from the parent: for this context, or to be routed to one below it."""
        try:
            self._dispatch_from_parent(msg)
        except StreamError as exc:
            self.log(40, "dropped a malformed message for handle %d: %s" % (msg.handle, exc))

    def _dispatch_from_parent(self, msg: Message) -> None:
        if msg.dst != self.context_id:
            if self.children is None or not self.children.route_down(msg):
                self._bounce(msg, "there is no route to context %d: it is gone" % msg.dst)
        elif msg.handle == HANDLE_CALL:
            if not self._stopping:
                self._enqueue_call(msg)
        elif msg.handle == HANDLE_LOAD_MODULE:
            records = LoadModule.decode(msg.data).records
            self.importer.on_load_module(records)
            if self.children is not None:
                self.children.on_load_module(records)
        elif msg.handle == HANDLE_LOAD_RESOURCE:  # package data for the importer or a child
            answer = LoadResource.decode(msg.data).astuple()
            self.importer.on_load_resource(answer)
            if self.children is not None:
                self.children.on_load_resource(answer)
        elif msg.handle == HANDLE_SHUTDOWN:
            self._stop_main()
        elif msg.handle == HANDLE_SPAWN:
            self._spawn_child(msg)
        elif msg.handle in (HANDLE_CANCEL, HANDLE_OPEN_STREAM, HANDLE_OPEN_CHANNEL, HANDLE_CREDIT):
            from .streams import on_message

            on_message(self, msg)
        elif msg.handle == HANDLE_KILL:
            context_id = Kill.decode(msg.data).context_id
            if self.children is None or not self.children.kill(context_id):
                # Not started yet (a fork waiting behind calls): it must not start later.
                self._cancelled.add(context_id)
        elif self.streams is None or not self.streams.deliver(msg):
            late = msg.handle >= FIRST_REPLY_HANDLE  # items for a channel that just ended
            self.log(10 if late else 30, "dropped a message for unknown handle %d" % msg.handle)

    def is_queued(self, key: Any) -> bool:
        """Whether call ``key`` (sender, reply handle) waits in the main thread's queue."""
        return any((msg.src, msg.reply_to) == key for msg in list(self._queue))

    def _bounce(self, msg: Message, reason: str) -> None:
        """Tell the sender that ``msg`` could not be delivered (if it wants an answer)."""
        if msg.reply_to:
            try:
                self.send(
                    Message(msg.src, self.context_id, msg.reply_to, 0, reason.encode(), FLAG_DEAD)
                )
            except ChannelError:
                pass

    # Children ----------------------------------------------------------------------------------
    def _children(self) -> Any:
        if self.children is None:
            from .parent import Children

            self.children = Children(self)
        return self.children

    def _spawn_child(self, msg: Message) -> None:
        request = Spawn.decode(msg.data)
        if request.spec.get("kind") != "fork":
            self._children().spawn(request, msg.src, msg.reply_to)
        elif self._stopping:
            failed = SpawnFailed(False, "connect", "spawn", "shutting down", [])
            self.reply(msg.src, msg.reply_to, failed)
        else:
            # Forking happens on the main thread, between calls (see core/forking.py).
            self._enqueue_call(msg)

    def adopt_forked(
        self, request: Spawn, requester: int, reply_to: int, pid: int, fd: int
    ) -> None:
        """From the main thread: a fork was made; the I/O thread takes its stream over."""
        self._forked.append((request, requester, reply_to, pid, fd))
        self.wake()

    def _adopt_forked(self) -> None:
        while self._forked:
            request, requester, reply_to, pid, sock_fd = self._forked.pop(0)
            child = self._children().adopt(request, requester, reply_to, pid, sock_fd)
            if request.context_id in self._cancelled:
                child.kill()  # the master gave up while the fork was being made

    def _on_parent_lost(self) -> None:
        # Nobody is left to hear from us: let a finishing call end the process normally, or end it
        # here after the grace time.
        self.disconnected = True
        self.importer.close()
        self._stop_main()
        self._release_io_done()
        self._start_watchdog()

    def _start_watchdog(self) -> None:
        def watchdog() -> None:
            select.select([], [], [], Grace.CALL_FINISH)
            self.importer.remove_files()  # os._exit() skips atexit, which would do it
            end_group()
            os._exit(0)

        _thread.start_new_thread(watchdog, ())

    # The main thread -------------------------------------------------------------------------
    def _fork(self, msg: Message) -> None:
        from .forking import fork_child, run_copy, runtime_fds

        request = Spawn.decode(msg.data)
        if request.context_id in self._cancelled:
            return  # the master gave up waiting for it
        try:
            # Never while the I/O thread works: it may be importing (a spawn imports
            # subprocess lazily), and the copy would inherit that module's lock, held for ever.
            with self._work_lock:
                pid, fd = fork_child(
                    runtime_fds(self),
                    lambda fd: run_copy(self, request, fd, ExternalContext, start_runtime),
                )
        except Exception as exc:
            failure = SpawnFailed(False, "connect", "spawn", "fork failed: %r" % exc, [])
            self.reply(msg.src, msg.reply_to, failure)
            return
        self.adopt_forked(request, msg.src, msg.reply_to, pid, fd)

    def _run_call(self, msg: Message) -> None:
        if msg.handle == HANDLE_SPAWN:
            self._fork(msg)
            return
        data = self.calls.run(msg.data, (msg.src, msg.reply_to), bool(msg.reply_to))
        if data is None or data is HANDED_OVER:
            return
        try:
            self.send(Message(msg.src, self.context_id, msg.reply_to, 0, data))
        except ChannelError:
            pass

    def run(self) -> None:
        _thread.start_new_thread(self._io_loop, ())
        self.send(
            Message(
                self.parent_id,
                self.context_id,
                HANDLE_READY,
                0,
                Ready.pack(os.getpid(), sys.hexversion, _bytecode_magic()),
            )
        )
        self._main_loop()
        if self.streams is not None:
            self.streams.close_all()
        if self.calls.loops is not None:
            self.calls.loops.stop()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os.write(self._main_done_w, b"x")
        self._io_done.acquire()
        end_group()

    def _main_loop(self) -> None:
        poller, waker_only = select.poll(), select.poll()
        poller.register(self.rx.fileno(), POLLIN)
        for each in (poller, waker_only):
            each.register(self._main_waker.read_fd, POLLIN)
        # Calls that arrived before a shutdown still run (the watchdog bounds how long).
        while self._queue or not self._stopping:
            if self._queue:
                # ``current`` before the pop: a cancel looks in the queue, then at ``current``.
                msg = self._queue[0]
                self.calls.current = (msg.src, msg.reply_to)
                self._queue.pop(0)
                if not self._busy:
                    self._begin_call()
                self._run_call(msg)
                self.calls.current = None
                self._call_ended = time.monotonic()
                continue
            self._busy = False
            with self._rx_lock:
                if self._queue or self._stopping:
                    continue
                # Bounded read-ahead for the I/O thread (routing to a child may be slow).
                self._throttled = bool(self._for_io)
                if self._throttled:
                    self._throttled = sum(len(m.data) for m in self._for_io) > READ_AHEAD
                for fd, _event in (waker_only if self._throttled else poller).poll():
                    if fd == self._main_waker.read_fd:
                        self._main_waker.drain()
                    elif not self._on_receive(self._dispatch_from_main):
                        self._parent_eof = True
                        self._stopping = True
                        self.wake()

    def _begin_call(self) -> None:
        # The call may block: the I/O thread reads the stream meanwhile if it runs long.  No
        # wake-up while the I/O thread is already watching (see _io_wait).
        self._call_started = time.monotonic()
        self._busy = True
        if not self._ticking:
            self._ticking = True
            self.wake()

    def _dispatch_from_main(self, msg: Message) -> None:
        """A message read by the main thread: calls stay here, the rest goes to the I/O thread."""
        if msg.dst == self.context_id and msg.handle == HANDLE_CALL:
            if not self._stopping:
                self._queue.append(msg)
        elif msg.dst == self.context_id and msg.handle == HANDLE_CREDIT:
            self._dispatch(msg)  # a grant is thread-safe: no hop through the I/O thread
        else:
            if msg.dst == self.context_id and msg.handle == HANDLE_SHUTDOWN:
                self._stopping = True
            self._for_io.append(msg)
            self.wake()


def _hand_over(*args: Any) -> None:
    from .aloop import hand_over

    hand_over(*args)


def main(read_exact: Callable[[int], bytes], stage1_fd: int = 0) -> None:
    """Entry point called by the bootstrap once the runtime's modules are loaded.

    ``stage1_fd`` is the fd stage 1 read from: 0, or 1 when fd 0 is a terminal.
    """
    from .protocol import loads

    config = loads(read_exact(int(read_exact(8), 16)))
    in_fd = os.dup(stage1_fd)
    out_fd = in_fd if same_file(stage1_fd, 1) else os.dup(1)
    start_runtime(ExternalContext(config, in_fd, out_fd))


def start_runtime(context: ExternalContext) -> None:
    """Take over stdio, logging and imports for ``context``, then run it until it ends."""
    redirect_stdio(context)
    if "logging" in sys.modules:
        context.install_logging(sys.modules["logging"])
    else:
        sys.meta_path.insert(0, LoggingHook(context.install_logging))
    sys.meta_path.append(context.importer)
    sys.argv = ["trimitogen:" + context.name]
    context.calls.install_interrupt()
    lead_session()
    context.run()


def _bytecode_magic() -> bytes:
    # importlib's bootstrap is always loaded; importing importlib.util would cost time.
    external = sys.modules.get("_frozen_importlib_external")
    return bytes(getattr(external, "MAGIC_NUMBER", b""))
