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

from .bootstrap import BootstrapParser, length_prefixed
from .connect import ChildFds, PromptDialog, build_plan
from .errors import ConnectError, HostKeyError, PasswordError
from .messages import Ready, Spawn, SpawnFailed, SpawnOk
from .protocol import HANDLE_READY, FrameDecoder, Message, dumps
from .side import Side, wait_fd, write_parts_blocking

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List, Optional, Set, Tuple

#: Seconds between SIGTERM and SIGKILL when a child must be stopped.
KILL_GRACE = 2.0

#: Lines of a child's terminal or stderr output kept for error messages.
TAIL_LINES = 20

_ERROR_KINDS = {PasswordError: "password", HostKeyError: "hostkey", ConnectError: "connect"}


def describe_status(status: int) -> str:
    if status < 0:
        import signal

        try:
            return "was killed by signal %s" % signal.Signals(-status).name
        except ValueError:
            return "was killed by signal %d" % -status
    return "exited with status %d" % status


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
        import signal

        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        import signal

        self._signal(signal.SIGKILL)


class Downstream:
    """One child of this context, from spawn to reaping."""

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
        self.ids: Set[int] = {self.context_id}
        self.requester = requester
        self.reply_to = reply_to
        self.deny_modules = tuple(request.deny)
        self.allow_modules = None if request.allow is None else tuple(request.allow)
        self.modules_sent: Set[str] = set()
        self.magic = b""
        self.state = "connecting"
        self.exit_status: Optional[int] = None
        self.eof = False
        self.tail: List[str] = []
        self._partial = b""
        self._wlock = _thread.allocate_lock()
        self.decoder = FrameDecoder(owner.decoder.max_message_size)
        self.bootstrap = BootstrapParser()
        self.term: Optional[Side] = None
        if forked is not None:
            # A copy of the owner made by os.fork(): no bootstrap, no terminal; it speaks frames
            # at once on its end of the socketpair.
            self.dialog = PromptDialog("fork of context %r" % owner.name, None)
            self.describe = self.dialog.what
            self.bootstrap.hexversion = 0
            pid, sock_fd = forked
            self.process: Any = ForkedProcess(pid)
            self.pid = pid
            self.rx = self.tx = Side(self, sock_fd)
            self._watch(request)
            return
        plan = build_plan(request.spec)
        self.dialog = plan.dialog
        self.describe = self.dialog.what
        self._spawn(plan, request)

    def __repr__(self) -> str:
        return "Downstream(%r, id=%d, %s)" % (self.name, self.context_id, self.state)

    # -- start-up ----------------------------------------------------------------------------
    def _spawn(self, plan: Any, request: Spawn) -> None:
        import subprocess

        fds = ChildFds(plan)
        try:
            self.process = subprocess.Popen(plan.argv, **fds.options)
        except OSError as exc:
            fds.failed()
            raise ConnectError("%s: %s" % (plan.argv[0], exc)) from exc
        stream_fd, term_fd = fds.spawned()
        self.pid = self.process.pid
        self.rx = self.tx = Side(self, stream_fd)
        self.term = Side(self, term_fd)
        self.owner.add_reader(self.term.fileno(), self.on_term_readable)
        self._watch(request)
        self.send_parts([request.payload, length_prefixed(dumps(request.config))])

    def _watch(self, request: Spawn) -> None:
        owner = self.owner
        owner.add_reader(self.rx.fileno(), self.on_readable)
        owner.add_timer(request.connect_timeout, self.on_connect_timeout)
        _thread.start_new_thread(self._wait_for_exit, ())

    def _wait_for_exit(self) -> None:
        self.exit_status = self.process.wait()
        self.owner.wake()

    def _phase(self, error: Optional[ConnectError] = None) -> str:
        if isinstance(error, PasswordError):
            return "authentication"
        if isinstance(error, HostKeyError):
            return "host key"
        if error is not None and error is self.dialog.error:
            return "connect"
        if self.bootstrap.hexversion is not None:
            return "bootstrap"
        return "authentication" if self.dialog.passwords_sent else "spawn"

    def _fail_connect(self, error: ConnectError) -> None:
        """Answer the spawn request with the failure: (False, kind, phase, reason, output)."""
        if self.state != "connecting":
            return
        self.state = "failed"
        lines = self.bootstrap.output_lines()[-TAIL_LINES:] + self.tail[-TAIL_LINES:]
        if self._partial.strip():
            lines.append(self.dialog.redact(self._partial.decode("utf-8", "replace").strip()))
        kind = _ERROR_KINDS.get(type(error), "connect")
        reply = SpawnFailed(False, kind, self._phase(error), str(error), lines[-TAIL_LINES:])
        self.owner.reply(self.requester, self.reply_to, reply)
        self.kill()

    def on_connect_timeout(self) -> None:
        if self.state == "connecting":
            self._fail_connect(ConnectError("no answer within the connect timeout"))

    def _on_ready(self, msg: Message) -> None:
        try:
            ready = Ready.decode(msg.data)
        except Exception as exc:
            self._fail_connect(ConnectError("it announced itself wrongly: %s" % (exc,)))
            return
        self.magic = ready.magic
        self.state = "ready"
        self.owner.on_child_ready(self)
        answer = SpawnOk(True, ready.pid, ready.hexversion, ready.magic)
        self.owner.reply(self.requester, self.reply_to, answer)

    # -- streams -----------------------------------------------------------------------------
    def send_parts(self, parts: List[Any]) -> bool:
        if self.tx.closed:
            return False
        with self._wlock:
            try:
                return write_parts_blocking(self.tx, parts, self.owner.write_pump())
            except OSError:
                return False

    def send(self, msg: Message) -> bool:
        return self.send_parts(msg.frame_parts())

    def _read(self) -> bool:
        """Read what is there into the decoder; False at end of stream."""
        view = self.decoder.body_view()
        if view is not None:
            n = self.rx.readinto(view)
            if n:
                self.decoder.body_filled(n)
            return bool(n)
        data = self.rx.read()
        if not data:
            return False
        if self.bootstrap.hexversion is None:
            if not self.bootstrap.receive_data(data):
                return True
            data = self.bootstrap.remainder
        if data:
            self.decoder.receive_data(data)
        return True

    def pump(self) -> None:
        """Read what is there without acting on it (see ExternalContext.write_pump)."""
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
            self.owner.remove_reader(self.rx.fileno())
            self._maybe_finish()
            return
        for msg in self.decoder.messages():
            if self.state == "connecting" and msg.handle == HANDLE_READY:
                if msg.src == self.context_id:
                    self._on_ready(msg)
                continue
            self.owner.on_downstream_message(self, msg)

    def on_term_readable(self) -> None:
        if self.term is None:
            return
        try:
            data = self.term.read()
        except BlockingIOError:
            return
        if not data:
            self.owner.remove_reader(self.term.fileno())
            self.term.close()
            return
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()[-4096:]
        for line in lines:
            text = self.dialog.redact(line.rstrip(b"\r").decode("utf-8", "replace"))
            self.tail = [*self.tail, text][-TAIL_LINES:]
            if self.state in ("connecting", "ready"):
                self.owner.forward_log(self.context_id, "stderr", text)
        if self.state == "connecting":
            answer = self.dialog.receive_data(data)
            if answer:
                try:
                    os.write(self.term.fileno(), answer)
                except OSError:
                    pass
            if self.dialog.error is not None:
                self._fail_connect(self.dialog.error)

    # -- the end -----------------------------------------------------------------------------
    def kill(self) -> None:
        if self.exit_status is None:
            try:
                self.process.terminate()
            except OSError:
                pass
            self.owner.add_timer(KILL_GRACE, self._kill_hard)

    def _kill_hard(self) -> None:
        if self.exit_status is None:
            try:
                self.process.kill()
            except OSError:
                pass

    def on_wake(self) -> None:
        """The owner was woken: the process may have exited."""
        if self.exit_status is not None and self.state != "gone":
            if not self.eof:
                # Give the stream a moment to deliver what the child wrote before it exited.
                self.owner.add_timer(1.0, self._finish_after_exit)
            self._maybe_finish()

    def _finish_after_exit(self) -> None:
        self.eof = True
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self.state == "gone":
            return
        if not self.eof:
            return
        if self.exit_status is None:
            # The stream closed but the process lives on: make sure it ends.
            self.kill()
            return
        reason = "its process %s" % describe_status(self.exit_status)
        term = self.term
        if self.state == "connecting" and term is not None and not term.closed:
            # What it printed last (such as "Authentication failure") says more than its status.
            for _ in range(64):
                if term.closed or self.state != "connecting":
                    break
                self.on_term_readable()
                if not term.closed:
                    import select

                    if not wait_fd(term.fileno(), select.POLLIN, 0):
                        break
        self._fail_connect(ConnectError(reason))
        self.state = "gone"
        for side in (self.rx, self.term):
            if side is not None and not side.closed:
                self.owner.remove_reader(side.fileno())
                side.close()
        self.owner.on_child_gone(self, reason)
