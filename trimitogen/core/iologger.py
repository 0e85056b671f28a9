"""Output forwarding of a child: its fds 1 and 2, and its :mod:`logging` records, sent upward.

:class:`IoLogger` replaces fd 1 or 2 with a pipe and turns each line written there (by Python code
or by any process the child starts) into a log message for the master.  :class:`LoggingHook`
attaches a forwarding handler to :mod:`logging` when user code first imports it, so a child that
never logs never pays for importing it.
"""

from __future__ import annotations

import os
import select
import sys

from .side import Side, wait_fd

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

    SendLog = Callable[[str, str, int, str], None]

#: Level of forwarded output lines (logging.INFO, without importing logging).
OUTPUT_LEVEL = 20


class IoLogger:
    """Turns what is written to one fd (1 or 2) into forwarded lines.

    A pipe replaces the fd, so anything that writes there, including subprocesses, is captured.
    Whole lines are sent as they complete; a trailing partial line is sent at :meth:`flush`.
    """

    def __init__(self, send_log: SendLog, kind: str, dest_fd: int) -> None:
        self.send_log = send_log
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
        self.send_log(self.kind, self.kind, OUTPUT_LEVEL, text)


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


def install_forwarding(logging: Any, send_log: SendLog, level: int, owner: Any) -> None:
    """Add a root handler that sends every record upward; ``owner`` tags it for a forked copy."""

    class ForwardingHandler(logging.Handler):  # type: ignore[misc]
        def emit(self, record: Any) -> None:
            try:
                text = self.format(record)
            except Exception:
                self.handleError(record)
                return
            send_log("log", record.name, record.levelno, text)

    handler = ForwardingHandler()
    handler.trimitogen_context = owner  # so a forked copy can find and drop it
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)


def remove_forwarding(owner: Any) -> None:
    """Drop ``owner``'s forwarding handler and hook (a forked copy starts a runtime of its own)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, LoggingHook)]
    logging = sys.modules.get("logging")
    if logging is not None:
        root = logging.getLogger()
        for handler in list(root.handlers):
            if getattr(handler, "trimitogen_context", None) is owner:
                root.removeHandler(handler)


def redirect_stdio(context: Any) -> None:
    """Point fd 0 at /dev/null and fds 1 and 2 at pipes read by new :class:`IoLogger`\\ s of
    ``context``; line-buffer Python's own streams so a line reaches the master when printed."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.close(null)
    context.loggers = [
        IoLogger(context.send_log, kind, fd) for kind, fd in (("stdout", 1), ("stderr", 2))
    ]
    for stream in (sys.stdout, sys.stderr):
        reconfigure: Optional[Callable[..., None]] = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)
