"""The runtime of a child context: what runs in every interpreter the master starts.

The bootstrap hands :func:`main` a function that reads exact byte counts from fd 0.  From then on:

* fd 0 and fd 1 (one socket, or two pipes) are moved to private descriptors and carry frames;
  fd 0 becomes ``/dev/null`` and fds 1 and 2 become pipes read by :class:`IoLogger`, so output of
  the child and of any process it starts reaches the master as log records;
* an I/O thread reads frames, forwards output and answers shutdown and disconnection;
* the main thread runs calls one at a time, in arrival order, and writes each reply itself.

The child trusts its parent, but still only accepts messages that claim to come from the parent.
"""

from __future__ import annotations

import _thread
import os
import select
import sys

from .errors import ChannelError, LatchError, StreamError
from .importer import Importer
from .latch import Latch
from .protocol import (
    HANDLE_CALL,
    HANDLE_LOAD_MODULE,
    HANDLE_LOG,
    HANDLE_READY,
    HANDLE_SHUTDOWN,
    FrameDecoder,
    Message,
    dumps,
    dumps_body,
)
from .side import Side

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple


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
                r, _, _ = select.select([self.side.fd], [], [], 0)
                if not r:
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


class _LoggingHook:
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
        self.calls = Latch()
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

    # Sending -------------------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        """Write one frame to the parent; any thread may call this."""
        parts = [part for part in msg.frame_parts() if len(part)]
        fd = self.tx.fileno()
        with self._wlock:
            while parts:
                try:
                    n = self.tx.writev(parts)
                except BlockingIOError:
                    select.select([], [fd], [])
                    continue
                if n is None:
                    self.disconnected = True
                    raise ChannelError("the parent of context %r disconnected" % (self.name,))
                while n:
                    first = parts[0]
                    if n >= len(first):
                        n -= len(first)
                        parts.pop(0)
                    else:
                        parts[0] = memoryview(first)[n:]
                        n = 0

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

        root = logging.getLogger()
        root.addHandler(ForwardingHandler())
        root.setLevel(self.config["log_level"])

    # The I/O thread --------------------------------------------------------------------------
    def _io_loop(self) -> None:
        try:
            self._io_loop_inner()
        except BaseException as exc:  # the thread must never die silently
            try:
                os.write(2, ("trimitogen: I/O thread failed: %r\n" % (exc,)).encode())
            finally:
                os._exit(70)

    def _io_loop_inner(self) -> None:
        poller = select.poll()
        poller.register(self.rx.fileno(), _POLLIN)
        by_fd: Dict[int, IoLogger] = {}
        for logger in self.loggers:
            by_fd[logger.side.fileno()] = logger
            poller.register(logger.side.fileno(), _POLLIN)
        poller.register(self._main_done_r, _POLLIN)
        rx_fd = self.rx.fileno()
        stopping = False
        while True:
            for fd, _event in poller.poll():
                if fd == rx_fd:
                    if not self._on_receive():
                        self._on_parent_lost()
                        return
                elif fd == self._main_done_r:
                    for logger in self.loggers:
                        logger.drain()
                    self._io_done.release()
                    return
                else:
                    logger = by_fd[fd]
                    if not logger.on_readable():
                        poller.unregister(fd)
            if self.calls.closed and not stopping:
                stopping = True
                self._start_watchdog()

    def _on_receive(self) -> bool:
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
            self._dispatch(msg)
        return True

    def _dispatch(self, msg: Message) -> None:
        if msg.src != self.parent_id or msg.dst != self.context_id:
            self.send_log(
                "log",
                "trimitogen.child",
                30,
                "dropped a message for %d claiming origin %d: only the parent (%d) may send here"
                % (msg.dst, msg.src, self.parent_id),
            )
        elif msg.handle == HANDLE_CALL:
            try:
                self.calls.put(msg)
            except LatchError:
                pass  # shutting down: the call is not run
        elif msg.handle == HANDLE_LOAD_MODULE:
            try:
                self.importer.on_load_module(msg.unpickle())
            except (StreamError, TypeError, ValueError, IndexError) as exc:
                self.send_log("log", "trimitogen.importer", 40, "bad module records: %s" % exc)
        elif msg.handle == HANDLE_SHUTDOWN:
            self.calls.close()
        else:
            self.send_log(
                "log",
                "trimitogen.child",
                30,
                "dropped a message for unknown handle %d" % msg.handle,
            )

    def _on_parent_lost(self) -> None:
        # Nobody is left to hear from us: let a finishing call end the process normally, or end it
        # here after the grace time.
        self.disconnected = True
        self.importer.close()
        self.calls.close()
        self._io_done.release()
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
        func_desc = "<undecoded call>"
        try:
            module, qualname, args, kwargs = msg.unpickle()
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
        while True:
            try:
                msg = self.calls.get_sync()
            except LatchError:
                break
            self._run_call(msg)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os.write(self._main_done_w, b"x")
        self._io_done.acquire()


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


def main(read_exact: Callable[[int], bytes]) -> None:
    """Entry point called by the bootstrap once the runtime's modules are loaded."""
    from .protocol import loads

    config = loads(read_exact(int(read_exact(8), 16)))
    in_fd = os.dup(0)
    out_fd = in_fd if _same_file(0, 1) else os.dup(1)
    context = ExternalContext(config, in_fd, out_fd)
    _redirect_stdio(context)
    if "logging" in sys.modules:
        context.install_logging(sys.modules["logging"])
    else:
        sys.meta_path.insert(0, _LoggingHook(context.install_logging))
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
