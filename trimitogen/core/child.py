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

from .errors import ChannelError, StreamError
from .importer import Importer, ModuleForwarder
from .protocol import (
    FLAG_DEAD,
    HANDLE_ADD_ROUTE,
    HANDLE_CALL,
    HANDLE_DEL_ROUTE,
    HANDLE_GET_MODULE,
    HANDLE_KILL,
    HANDLE_LOAD_MODULE,
    HANDLE_LOG,
    HANDLE_READY,
    HANDLE_SHUTDOWN,
    HANDLE_SPAWN,
    MASTER_ID,
    FrameDecoder,
    Message,
    dumps,
    dumps_body,
)
from .side import Side, set_nonblocking, wait_fd, write_parts_blocking

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Set, Tuple


#: Seconds a child waits for a running call to finish after shutdown or loss of its parent.
SHUTDOWN_GRACE = 1.0

_POLLIN = select.POLLIN | select.POLLHUP | select.POLLERR


class IoLogger:
    """Turns what is written to one fd (1 or 2) into forwarded lines.

    A pipe replaces the fd, so anything that writes there, including subprocesses, is captured.
    Whole lines are sent as they complete; a trailing partial line is sent at :meth:`flush`.
    """

    def __init__(self, context: "ExternalContext", kind: str, dest_fd: int) -> None:
        self.context = context
        self.kind = kind
        rfd, wfd = os.pipe()
        os.dup2(wfd, dest_fd)
        os.close(wfd)
        self.side = Side(self, rfd, keep_alive=False)
        self._partial = b""

    def __repr__(self) -> str:
        return "IoLogger(%s)" % (self.kind,)

    def on_readable_callback(self) -> None:
        if not self.on_readable():
            self.context.remove_reader(self.side.fileno())

    def on_readable(self) -> bool:
        """Forward what is readable now; False once the pipe has no writers left."""
        try:
            data = self.side.read()
        except BlockingIOError:
            return True
        if not data:
            self.flush()
            return False
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self._emit(line)
        return True

    def drain(self) -> None:
        """Forward everything already written, without waiting for more."""
        while self.side.fd is not None:
            try:
                if not self.on_readable():
                    return
                if not wait_fd(self.side.fd, select.POLLIN, 0):
                    break
            except OSError:
                break
        self.flush()

    def flush(self) -> None:
        if self._partial:
            self._emit(self._partial)
            self._partial = b""

    def _emit(self, line: bytes) -> None:
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        self.context.send_log(self.kind, self.kind, 20, text)


class LoggingHook:
    """Attaches the forwarding handler to :mod:`logging` when (and if) user code imports it.

    Importing ``logging`` at start-up would cost the child several milliseconds for nothing.
    """

    def __init__(self, install: Callable[[Any], None]) -> None:
        self.install = install

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "logging":
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        exec_module = loader.exec_module
        install = self.install

        def exec_then_install(module: Any) -> None:
            exec_module(module)
            install(module)

        loader.exec_module = exec_then_install
        return spec


class ExternalContext:
    """The child side of one connection: routing, the call loop, output forwarding."""

    def __init__(self, config: Dict[str, Any], in_fd: int, out_fd: int) -> None:
        self.config = config
        self.context_id: int = config["context_id"]
        self.parent_id: int = config["parent_id"]
        self.name: str = config["name"]
        self.rx = Side(self, in_fd)
        self.tx = Side(self, out_fd) if out_fd != in_fd else self.rx
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
        self._for_io: List[Message] = []
        self._main_wake_r, self._main_wake_w = os.pipe()
        set_nonblocking(self._main_wake_r)
        set_nonblocking(self._main_wake_w)
        self._io_done_released = False
        self._wlock = _thread.allocate_lock()
        self._io_done = _thread.allocate_lock()
        self._io_done.acquire()
        self._main_done_r, self._main_done_w = os.pipe()
        self.loggers: List[IoLogger] = []
        self._functions: Dict[Tuple[str, str], Any] = {}
        self.importer = Importer(
            self.send, self.context_id, self.parent_id, frozenset(config.get("never_ask", ()))
        )
        self.disconnected = False
        self._poller = select.poll()
        self._readers: Dict[int, Callable[[], None]] = {}
        self._timers: List[Tuple[float, Callable[[], None]]] = []
        self._wake_r, self._wake_w = os.pipe()
        set_nonblocking(self._wake_r)
        set_nonblocking(self._wake_w)
        self._io_finished = False
        #: Direct children, and the route to every context below this one.
        self.children: Dict[int, Any] = {}
        self._forked: List[Any] = []
        #: Children whose stream was read while a write waited (see write_pump).
        self.pumped: Set[Any] = set()
        self._io_thread: Optional[int] = None
        self._cancelled: Set[Any] = set()
        #: Context ids the parent asked a child of ours to start: child announcements must match.
        self._expected: Dict[int, Any] = {}
        self.routes: Dict[int, Any] = {}
        self.forwarder = ModuleForwarder(self._request_module, config.get("master_magic", b""))

    # Sending -------------------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        """Write one frame to the parent; any thread may call this."""
        with self._wlock:
            if not write_parts_blocking(self.tx, msg.frame_parts(), self.write_pump()):
                self.disconnected = True
                raise ChannelError("the parent of context %r disconnected" % (self.name,))

    def send_log(self, kind: str, name: str, levelno: int, text: str) -> None:
        if self.disconnected:
            return
        data = dumps((kind, name, levelno, text))
        try:
            self.send(Message(self.parent_id, self.context_id, HANDLE_LOG, 0, data))
        except (ChannelError, OSError):
            pass

    # Logging -------------------------------------------------------------------------------
    def install_logging(self, logging: Any) -> None:
        context = self

        class ForwardingHandler(logging.Handler):  # type: ignore[misc]
            def emit(self, record: Any) -> None:
                try:
                    text = self.format(record)
                except Exception:
                    self.handleError(record)
                    return
                context.send_log("log", record.name, record.levelno, text)

        handler = ForwardingHandler()
        handler.trimitogen_context = self  # so a forked copy can find and drop it
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(self.config["log_level"])

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
                os._exit(70)

    def write_pump(self) -> Any:
        """What a write on the I/O thread does while it waits: read the children's streams.

        Suppose this thread waits to write to a child whose own I/O thread waits to write to us:
        neither reads, and both would wait forever.  So while waiting, this thread keeps reading
        its children's streams into their decoders; the messages are handled by the loop later.
        Other threads' writes (the main thread's replies) do not need this: this thread reads.
        """
        if _thread.get_ident() != self._io_thread or not self.children:
            return None
        return (self._child_fds, self._pump_child)

    def _child_fds(self) -> List[int]:
        return [c.rx.fd for c in self.children.values() if c.rx.fd is not None and not c.eof]

    def _pump_child(self, fd: int) -> None:
        for child in list(self.children.values()):
            if child.rx.fd == fd:
                child.pump()

    # Readiness callbacks and timers of the I/O thread's loop; only that thread calls these.
    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self._readers[fd] = callback
        self._poller.register(fd, _POLLIN)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            self._poller.unregister(fd)

    def add_timer(self, delay: float, callback: Callable[[], None]) -> None:
        self._timers.append((time.monotonic() + delay, callback))

    def wake(self) -> None:
        """Make the I/O loop run its wake-up work soon; any thread may call this."""
        _poke(self._wake_w)

    def _on_wake(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass
        self._drain_for_io()
        if self._parent_eof and not self._io_finished:
            self._on_parent_lost()
            self._io_finished = True
            return
        self._adopt_forked()
        for child in list(self.children.values()):
            child.on_wake()

    def _io_loop_inner(self) -> None:
        self._io_thread = _thread.get_ident()
        for logger in self.loggers:
            self.add_reader(logger.side.fileno(), logger.on_readable_callback)
        self.add_reader(self._main_done_r, self._on_main_done)
        self.add_reader(self._wake_r, self._on_wake)
        stopping = False
        rx_fd = self.rx.fileno()
        while not self._io_finished:
            if self._busy and not self._rx_registered:
                self.add_reader(rx_fd, self._on_parent_readable)
                self._rx_registered = True
            timeout = None
            if self._timers:
                self._timers.sort(key=lambda entry: entry[0])
                timeout = max(0, int((self._timers[0][0] - time.monotonic()) * 1000) + 1)
            if self.pumped:
                timeout = 0  # messages read while a write waited are still to be handled
            for fd, _event in self._poller.poll(timeout):
                callback = self._readers.get(fd)
                if callback is not None:
                    callback()
                if self._io_finished:
                    return
            while self.pumped:
                self.pumped.pop().on_readable()
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                self._timers.pop(0)[1]()
            if self._stopping and not stopping:
                stopping = True
                self._stop_children()
                self._start_watchdog()

    def _on_parent_readable(self) -> None:
        if not self._busy or not self._rx_lock.acquire(False):
            # The main thread is idle and reads the stream itself.
            self.remove_reader(self.rx.fileno())
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
            self._io_finished = True

    def _on_main_done(self) -> None:
        for logger in self.loggers:
            logger.drain()
        self._release_io_done()
        self._io_finished = True

    def _drain_for_io(self) -> None:
        while self._for_io:
            self._dispatch(self._for_io.pop(0))

    def _release_io_done(self) -> None:
        if not self._io_done_released:
            self._io_done_released = True
            self._io_done.release()

    def _enqueue_call(self, msg: Message) -> None:
        self._queue.append(msg)
        _poke(self._main_wake_w)

    def _stop_main(self) -> None:
        self._stopping = True
        _poke(self._main_wake_w)

    def _on_receive(self, dispatch: Callable[[Message], None]) -> bool:
        """Read and dispatch what arrived; False once the parent disconnected."""
        try:
            view = self.decoder.body_view()
            if view is not None:
                n = self.rx.readinto(view)
                if not n:
                    return False
                self.decoder.body_filled(n)
            else:
                data = self.rx.read()
                if not data:
                    return False
                self.decoder.receive_data(data)
        except BlockingIOError:
            return True
        for msg in self.decoder.messages():
            dispatch(msg)
        return True

    def _dispatch(self, msg: Message) -> None:
        """A message from the parent: for this context, or to be routed to one below it."""
        if msg.dst != self.context_id:
            child = self.routes.get(msg.dst)
            if child is not None and msg.handle == HANDLE_SPAWN:
                # A context is about to be started below ``child``: remember which id it will
                # have, so only that child may later announce a route to it.
                try:
                    self._expected[msg.unpickle()["context_id"]] = child
                except (StreamError, TypeError, KeyError):
                    pass
            if child is None or not child.send(msg):
                self._bounce(msg, "there is no route to context %d: it is gone" % msg.dst)
        elif msg.handle == HANDLE_CALL:
            if not self._stopping:
                self._enqueue_call(msg)
        elif msg.handle == HANDLE_LOAD_MODULE:
            try:
                records = msg.unpickle()
                self.importer.on_load_module(records)
                for child, answer in self.forwarder.on_load_module(records):
                    self._send_records(child, answer)
            except (StreamError, TypeError, ValueError, IndexError) as exc:
                self.send_log("log", "trimitogen.importer", 40, "bad module records: %s" % exc)
        elif msg.handle == HANDLE_SHUTDOWN:
            self._stop_main()
        elif msg.handle == HANDLE_SPAWN:
            self._spawn_child(msg)
        elif msg.handle == HANDLE_KILL:
            context_id = msg.unpickle()
            child = self.children.get(context_id)
            if child is not None:
                child.kill()
            else:
                # Not started yet (a fork waiting behind calls): it must not start later.
                self._cancelled.add(context_id)
        else:
            self.send_log(
                "log",
                "trimitogen.child",
                30,
                "dropped a message for unknown handle %d" % msg.handle,
            )

    # Routing for contexts below this one -------------------------------------------------------
    def log(self, levelno: int, text: str) -> None:
        self.send_log("log", "trimitogen.child", levelno, text)

    def reply(self, dst: int, handle: int, value: Any) -> None:
        if handle:
            try:
                self.send(Message(dst, self.context_id, handle, 0, dumps(value)))
            except ChannelError:
                pass

    def _bounce(self, msg: Message, reason: str) -> None:
        """Tell the sender that ``msg`` could not be delivered (if it wants an answer)."""
        if msg.reply_to:
            try:
                self.send(
                    Message(msg.src, self.context_id, msg.reply_to, 0, reason.encode(), FLAG_DEAD)
                )
            except ChannelError:
                pass

    def forward_log(self, src: int, kind: str, text: str) -> None:
        """Send a line a child printed before its runtime took over, as that child's output."""
        if not self.disconnected:
            data = dumps((kind, kind, 20, text))
            try:
                self.send(Message(MASTER_ID, src, HANDLE_LOG, 0, data))
            except ChannelError:
                pass

    def _spawn_child(self, msg: Message) -> None:
        from .parent import Downstream

        request = msg.unpickle()
        if request["spec"]["kind"] == "fork":
            # Forking happens on the main thread, between calls (see core/forking.py).
            if self._stopping:
                self.reply(msg.src, msg.reply_to, (False, "connect", "spawn", "shutting down", []))
            else:
                self._enqueue_call(msg)
            return
        try:
            child = Downstream(self, request, msg.src, msg.reply_to)
        except Exception as exc:
            self.reply(msg.src, msg.reply_to, (False, "connect", "spawn", str(exc), []))
            return
        self.children[child.context_id] = child
        self.routes[child.context_id] = child

    def adopt_forked(
        self, request: Dict[str, Any], requester: int, reply_to: int, pid: int, sock_fd: int
    ) -> None:
        """From the main thread: a fork was made; the I/O thread takes its stream over."""
        self._forked.append((request, requester, reply_to, pid, sock_fd))
        self.wake()

    def _adopt_forked(self) -> None:
        if not self._forked:
            return
        from .parent import Downstream

        while self._forked:
            request, requester, reply_to, pid, sock_fd = self._forked.pop(0)
            child = Downstream(self, request, requester, reply_to, forked=(pid, sock_fd))
            self.children[child.context_id] = child
            self.routes[child.context_id] = child
            if child.context_id in self._cancelled:
                child.kill()  # the master gave up while the fork was being made

    def owned_fds(self) -> List[int]:
        """Every descriptor this runtime opened (a forked copy closes them)."""
        sides = [self.rx, self.tx] + [logger.side for logger in self.loggers]
        for child in self.children.values():
            sides += [child.rx, child.term]
        fds = [side.fd for side in sides if side is not None and side.fd is not None]
        fds += [self._main_done_r, self._main_done_w, self._wake_r, self._wake_w]
        fds += [self._main_wake_r, self._main_wake_w]
        fds += [fd for _request, _src, _handle, _pid, fd in self._forked]
        return fds

    def on_child_ready(self, child: Any) -> None:
        self.send(Message(MASTER_ID, self.context_id, HANDLE_ADD_ROUTE, 0, dumps(child.context_id)))

    def on_child_gone(self, child: Any, reason: str) -> None:
        self.children.pop(child.context_id, None)
        for context_id in child.ids:
            self.routes.pop(context_id, None)
        self.send_upward_del_route(sorted(child.ids), reason)

    def send_upward_del_route(self, ids: List[int], reason: str) -> None:
        try:
            self.send(
                Message(MASTER_ID, self.context_id, HANDLE_DEL_ROUTE, 0, dumps((ids, reason)))
            )
        except ChannelError:
            pass

    def _claim_expected(self, context_id: Any, child: Any) -> bool:
        """True (once) if the parent asked ``child`` to start ``context_id``."""
        if self._expected.get(context_id) is child:
            del self._expected[context_id]
            return True
        return False

    def on_downstream_message(self, child: Any, msg: Message) -> None:
        """A message from a child: only upward, and only from contexts behind that child."""
        try:
            self._on_downstream_message(child, msg)
        except Exception as exc:
            # Whatever a child sends, it cannot take this context down with it.
            self.log(40, "dropped a malformed message from context %r: %r" % (child.name, exc))

    def _on_downstream_message(self, child: Any, msg: Message) -> None:
        if msg.src not in child.ids and self._expected.get(msg.src) is not child:
            self.log(
                30,
                "dropped a message from context %r claiming to come from context %d"
                % (child.name, msg.src),
            )
            return
        if msg.dst == self.context_id:
            if msg.handle == HANDLE_GET_MODULE:
                self._on_child_get_module(child, msg)
            elif msg.handle == HANDLE_LOG:
                self._forward_up(Message(MASTER_ID, msg.src, HANDLE_LOG, 0, msg.data))
            else:
                self.log(30, "dropped a message from %r for handle %d" % (child.name, msg.handle))
            return
        if msg.dst in self.routes:
            # Trust flows downward: a child may not address its siblings or their children.
            self.log(
                30,
                "dropped a message from context %r to context %d: children may only send upward"
                % (child.name, msg.dst),
            )
            return
        if msg.handle == HANDLE_ADD_ROUTE:
            new_id = msg.unpickle()
            if not self._claim_expected(new_id, child):
                self.log(
                    30, "context %r announced a context it was not asked to start" % child.name
                )
                return
            child.ids.add(new_id)
            self.routes[new_id] = child
        elif msg.handle == HANDLE_DEL_ROUTE:
            ids, _reason = msg.unpickle()
            for context_id in ids:
                if context_id in child.ids and context_id != child.context_id:
                    child.ids.discard(context_id)
                    self.routes.pop(context_id, None)
        self._forward_up(msg)

    def _forward_up(self, msg: Message) -> None:
        try:
            self.send(msg)
        except ChannelError:
            pass

    def _on_child_get_module(self, child: Any, msg: Message) -> None:
        name = msg.unpickle()
        if type(name) is not str:
            return
        answer = self.forwarder.request(child, name)
        if answer is not None:
            self._send_records(child, answer)

    def _send_records(self, child: Any, records: List[Any]) -> None:
        child.send(
            Message(child.context_id, self.context_id, HANDLE_LOAD_MODULE, 0, dumps(records))
        )

    def _request_module(self, name: str) -> None:
        try:
            self.send(Message(self.parent_id, self.context_id, HANDLE_GET_MODULE, 0, dumps(name)))
        except ChannelError:
            pass

    def _stop_children(self) -> None:
        for child in list(self.children.values()):
            child.kill()

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
            select.select([], [], [], SHUTDOWN_GRACE)
            os._exit(0)

        _thread.start_new_thread(watchdog, ())

    # The main thread -------------------------------------------------------------------------
    def _resolve(self, module: str, qualname: str) -> Any:
        key = (module, qualname)
        fn = self._functions.get(key)
        if fn is None:
            obj = sys.modules.get(module)
            if obj is None:
                __import__(module)
                obj = sys.modules[module]
            for part in qualname.split("."):
                obj = getattr(obj, part)
            fn = self._functions[key] = obj
        return fn

    def _run_call(self, msg: Message) -> None:
        if msg.handle == HANDLE_SPAWN:
            from .forking import fork_child

            request = msg.unpickle()
            if request["context_id"] in self._cancelled:
                return  # the master gave up waiting for it
            try:
                fork_child(self, request, msg.src, msg.reply_to)
            except Exception as exc:
                failure: Tuple[Any, ...] = (False, "connect", "spawn", "fork failed: %r" % exc, ())
                self.reply(msg.src, msg.reply_to, failure)
            return
        func_desc = "<undecoded call>"
        try:
            # A call may name modules to import for its values: it comes from the parent.
            module, qualname, args, kwargs = msg.unpickle(may_import=True)
            func_desc = "%s.%s" % (module, qualname)
            result = self._resolve(module, qualname)(*args, **kwargs)
            if type(result).__name__ == "coroutine":
                import asyncio

                result = asyncio.run(result)
            reply: Tuple[Any, ...] = (True, result)
        except BaseException as exc:
            reply = _describe_exception(exc)
        if not msg.reply_to:
            if not reply[0]:
                self.send_log(
                    "log",
                    "trimitogen.call",
                    40,
                    "call_no_reply(%s) raised %s: %s\n%s" % (func_desc, *reply[1:]),
                )
            return
        try:
            data: Any = dumps_body(reply)
            if len(data) > self.decoder.max_message_size:
                raise ValueError(
                    "it encodes to %d bytes, over the %d-byte message limit"
                    % (len(data), self.decoder.max_message_size)
                )
        except Exception as exc:
            data = dumps(
                (
                    False,
                    "builtins.TypeError",
                    "the result of %s could not be sent back: %s" % (func_desc, exc),
                    "",
                )
            )
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
                dumps((os.getpid(), sys.hexversion, _bytecode_magic())),
            )
        )
        self._main_loop()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os.write(self._main_done_w, b"x")
        self._io_done.acquire()

    def _main_loop(self) -> None:
        poller = select.poll()
        poller.register(self.rx.fileno(), _POLLIN)
        poller.register(self._main_wake_r, _POLLIN)
        # Calls that arrived before a shutdown still run (the watchdog bounds how long).
        while self._queue or not self._stopping:
            if self._queue:
                msg = self._queue.pop(0)
                if not self._busy:
                    # The call may block: the I/O thread reads the stream meanwhile.
                    self._busy = True
                    self.wake()
                self._run_call(msg)
                continue
            self._busy = False
            with self._rx_lock:
                if self._queue or self._stopping:
                    continue
                for fd, _event in poller.poll():
                    if fd == self._main_wake_r:
                        try:
                            os.read(self._main_wake_r, 4096)
                        except BlockingIOError:
                            pass
                    elif not self._on_receive(self._dispatch_from_main):
                        self._parent_eof = True
                        self._stopping = True
                        self.wake()

    def _dispatch_from_main(self, msg: Message) -> None:
        """A message read by the main thread: calls stay here, the rest goes to the I/O thread."""
        if msg.dst == self.context_id and msg.handle == HANDLE_CALL:
            if not self._stopping:
                self._queue.append(msg)
        else:
            if msg.dst == self.context_id and msg.handle == HANDLE_SHUTDOWN:
                self._stopping = True
            self._for_io.append(msg)
            self.wake()


def _poke(fd: int) -> None:
    """Write a wake-up byte; a full pipe already holds one, so that is fine too."""
    try:
        os.write(fd, b"x")
    except BlockingIOError:
        pass


def _describe_exception(exc: BaseException) -> Tuple[Any, ...]:
    import traceback

    cls = type(exc)
    type_name = "%s.%s" % (cls.__module__, cls.__qualname__)
    try:
        message = str(exc)
    except Exception:
        message = "<str() of the exception failed>"
    text = "".join(traceback.format_exception(cls, exc, exc.__traceback__))
    return (False, type_name, message, text)


def _redirect_stdio(context: ExternalContext) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.close(null)
    context.loggers = [IoLogger(context, "stdout", 1), IoLogger(context, "stderr", 2)]
    for stream in (sys.stdout, sys.stderr):
        reconfigure: Optional[Callable[..., None]] = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)


def main(read_exact: Callable[[int], bytes], stage1_fd: int = 0) -> None:
    """Entry point called by the bootstrap once the runtime's modules are loaded.

    ``stage1_fd`` is the fd stage 1 read from: 0, or 1 when fd 0 is a terminal.
    """
    from .protocol import loads

    config = loads(read_exact(int(read_exact(8), 16)))
    in_fd = os.dup(stage1_fd)
    out_fd = in_fd if _same_file(stage1_fd, 1) else os.dup(1)
    start_runtime(ExternalContext(config, in_fd, out_fd))


def start_runtime(context: ExternalContext) -> None:
    """Take over stdio, logging and imports for ``context``, then run it until it ends."""
    _redirect_stdio(context)
    if "logging" in sys.modules:
        context.install_logging(sys.modules["logging"])
    else:
        sys.meta_path.insert(0, LoggingHook(context.install_logging))
    sys.meta_path.append(context.importer)
    sys.argv = ["trimitogen:" + context.name]
    context.run()


def _bytecode_magic() -> bytes:
    # importlib's bootstrap is always loaded; importing importlib.util would cost time.
    external = sys.modules.get("_frozen_importlib_external")
    return bytes(getattr(external, "MAGIC_NUMBER", b""))


def _same_file(fd1: int, fd2: int) -> bool:
    st1, st2 = os.fstat(fd1), os.fstat(fd2)
    return (st1.st_dev, st1.st_ino) == (st2.st_dev, st2.st_ino)


def preload(names: List[str]) -> None:
    """Import ``names`` here (a fork server does this so its forks start warm)."""
    for name in names:
        __import__(name)
