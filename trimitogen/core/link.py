"""One child from spawn to gone, without I/O: bytes in, messages and a start-up verdict out.

Both the master and an intermediate context own one :class:`Link` per direct child and pump
its descriptors into it:

* the stream (a socket) carries the stage-1 marker line, then frames: feed it with
  :meth:`Link.receive_stream` (or read large bodies in place through :meth:`Link.body_view`) and
  take the messages from :meth:`Link.messages`; the child's READY is consumed here;
* the terminal or stderr pipe carries what the child and its method's tool print: feed it with
  :meth:`Link.receive_output`, which splits lines (one policy for over-long lines), masks the
  password, keeps the last lines for error messages, and returns what to type at a prompt;
* the pump reports the facts it sees: :meth:`Link.process_exited`, :meth:`Link.stream_closed`,
  :meth:`Link.timed_out`; the link decides what they mean.

A link is ``connecting`` until READY (then ``ready``) or a start-up failure (then ``failed``, with
:attr:`Link.failure` saying the error kind, the phase and why), and ``gone`` at the end.  A forked
child is a link that expects no marker.
"""

from __future__ import annotations

from .bootstrap import MIN_VERSION, BootstrapParser
from .connect import PromptDialog
from .errors import ConnectError, HostKeyError, PasswordError, StreamError
from .grace import Grace as Grace
from .messages import Ready
from .protocol import DEFAULT_MAX_MESSAGE_SIZE, HANDLE_READY, FrameDecoder

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterator, List, Optional, Tuple

    from .protocol import Message


#: Lines of a child's terminal or stderr output kept for error messages.
TAIL_LINES = 20

#: An output line longer than this is passed on in pieces of this size.
MAX_LINE = 64 * 1024

#: After a start-up failure, how many more bytes of the child's terminal are worth waiting for:
#: the tool may still be explaining (ssh prints how to fix a changed host key after the line
#: that decides), but a child that keeps printing must not hold the error back.
LAST_WORDS_BYTES = 64 * 1024

#: The error kinds a failure can have, as sent in a spawn answer, and back.
ERROR_KINDS = {PasswordError: "password", HostKeyError: "hostkey", ConnectError: "connect"}
ERROR_CLASSES = {kind: cls for cls, kind in ERROR_KINDS.items()}

CONNECTING = "connecting"
READY = "ready"
FAILED = "failed"
GONE = "gone"


class Failed:
    """Why a child did not start: ``kind`` (a key of :data:`ERROR_CLASSES`), the phase it was in
    (spawn, authentication, host key, connect, bootstrap), the reason, and its last output."""

    __slots__ = ("kind", "last_lines", "phase", "reason")

    def __init__(self, kind: str, phase: str, reason: str, last_lines: List[str]) -> None:
        self.kind = kind
        self.phase = phase
        self.reason = reason
        self.last_lines = last_lines

    def __repr__(self) -> str:
        return "Failed(%r, phase=%r, %r)" % (self.kind, self.phase, self.reason)

    @property
    def error_class(self) -> Any:
        return ERROR_CLASSES.get(self.kind, ConnectError)


def describe_status(status: int) -> str:
    """A process's exit status (negative: a signal) in words."""
    if status < 0:
        import signal

        try:
            return "was killed by signal %s" % signal.Signals(-status).name
        except ValueError:
            return "was killed by signal %d" % -status
    return "exited with status %d" % status


class Link:
    """The state of one direct child, fed with what its descriptors deliver."""

    def __init__(
        self,
        context_id: int,
        dialog: Optional[PromptDialog] = None,
        *,
        expect_marker: bool = True,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self.context_id = context_id
        self.dialog = dialog if dialog is not None else PromptDialog("child", None)
        self.decoder = FrameDecoder(max_message_size)
        self.bootstrap = BootstrapParser()
        if not expect_marker:
            self.bootstrap.hexversion = 0  # a fork speaks frames at once
        self.state = CONNECTING
        self.ready: Optional[Ready] = None
        self.failure: Optional[Failed] = None
        self.exit_status: Optional[int] = None
        self.stream_eof = False
        self.output_eof = False
        self._after_failure = 0
        self._heard_out = False
        self._tail: List[str] = []
        self._partial = b""

    def __repr__(self) -> str:
        return "Link(%d, %s)" % (self.context_id, self.state)

    @property
    def started(self) -> bool:
        """True once stage 1 announced itself (always, for a fork)."""
        return self.bootstrap.hexversion is not None

    @property
    def hexversion(self) -> Optional[int]:
        """The child's ``sys.hexversion``, once known (from READY, or from the marker)."""
        if self.ready is not None:
            return self.ready.hexversion
        return self.bootstrap.hexversion or None

    # -- the stream ----------------------------------------------------------------------------
    def body_view(self) -> Any:
        """Where the missing part of a large body can be read in place, or None."""
        return self.decoder.body_view()

    def body_filled(self, n: int) -> None:
        self.decoder.body_filled(n)

    def receive_stream(self, data: bytes) -> None:
        """Bytes from the stream: the marker line and what precedes it, then frames.

        Raises :class:`StreamError` on a frame that breaks the protocol.
        """
        if self.bootstrap.hexversion is None:
            if not self.bootstrap.receive_data(data):
                return
            found = self.bootstrap.hexversion or 0
            if found >> 16 < MIN_VERSION[0] << 8 | MIN_VERSION[1]:
                self.fail(ConnectError(too_old(found)))
                return
            data = self.bootstrap.remainder
        if data:
            self.decoder.receive_data(data)

    def messages(self) -> Iterator[Message]:
        """The frames decoded so far, except the READY this link consumes."""
        for msg in self.decoder.messages():
            if msg.handle == HANDLE_READY and self.state == CONNECTING:
                if msg.src == self.context_id:
                    self._on_ready(msg)
                continue  # READY is accepted once, and only from the child itself
            yield msg

    def _on_ready(self, msg: Message) -> None:
        try:
            self.ready = Ready.decode(msg.data)
        except StreamError as exc:
            self.fail(ConnectError("it announced itself wrongly: %s" % (exc,)))
            return
        self.state = READY

    # -- the terminal or stderr ----------------------------------------------------------------
    def receive_output(self, data: bytes) -> Tuple[List[str], bytes]:
        """Output of the child or its tool: the complete lines (password masked) and the bytes
        to type in answer to a prompt (often ``b""``)."""
        pieces = (self._partial + data).split(b"\n")
        partial = pieces.pop()
        lines = []
        for piece in pieces:
            while len(piece) > MAX_LINE:
                lines.append(self._line(piece[:MAX_LINE]))
                piece = piece[MAX_LINE:]
            lines.append(self._line(piece))
        while len(partial) > MAX_LINE:
            lines.append(self._line(partial[:MAX_LINE]))
            partial = partial[MAX_LINE:]
        self._partial = partial
        answer = b""
        if self.failure is not None:
            self._after_failure += len(data)
        elif self.state == CONNECTING:
            answer = self.dialog.receive_data(data)
            if self.dialog.error is not None:
                self.fail(self.dialog.error)
        self._refresh_failure()
        return lines, answer

    def output_closed(self) -> List[str]:
        """The terminal or pipe closed: the last partial line, if any."""
        partial, self._partial = self._partial, b""
        self.output_eof = True
        lines = [self._line(partial)] if partial else []
        self._refresh_failure()
        return lines

    @property
    def last_words_heard(self) -> bool:
        """True once the terminal closed, or once a failed start brought :data:`LAST_WORDS_BYTES`
        more of it: a driver reports a failure (and stops the child) only then, or after
        ``Grace.LAST_WORDS``, so the error carries the tool's whole explanation."""
        return self.output_eof or self._heard_out or self._after_failure >= LAST_WORDS_BYTES

    def heard_out(self) -> None:
        """The driver waited ``Grace.LAST_WORDS`` or read all there was: report the failure now."""
        self._heard_out = True

    def _refresh_failure(self) -> None:
        # Lines that arrive after the verdict (ssh's advice) belong in the error too.
        if self.failure is not None:
            self.failure.last_lines = self.output_tail()

    def _line(self, raw: bytes) -> str:
        text = self.dialog.redact(raw.rstrip(b"\r").decode("utf-8", "replace"))
        self._tail.append(text)
        if len(self._tail) > TAIL_LINES:
            del self._tail[0]
        return text

    def output_tail(self) -> List[str]:
        """The last lines the child printed (before the marker, and on its terminal), for errors."""
        before = [self.dialog.redact(line) for line in self.bootstrap.output_lines()]
        lines = before[-TAIL_LINES:] + self._tail
        partial = self._partial.decode("utf-8", "replace").strip()
        if partial:
            lines.append(self.dialog.redact(partial))
        return lines[-TAIL_LINES:]

    # -- the end -------------------------------------------------------------------------------
    def phase(self, error: Optional[ConnectError] = None) -> str:
        """The start-up phase a failure belongs to."""
        if isinstance(error, PasswordError):
            return "authentication"
        if isinstance(error, HostKeyError):
            return "host key"
        if error is not None and error is self.dialog.error:
            return "connect"
        if self.started:
            return "bootstrap"
        if self.dialog.passwords_sent:
            return "authentication"
        return self.dialog.phase_before_start(self.exit_status)

    def fail(self, error: ConnectError) -> None:
        """Start-up failed with ``error`` (ignored once the child is ready or already failed)."""
        if self.state != CONNECTING:
            return
        kind = ERROR_KINDS.get(type(error), "connect")
        self.failure = Failed(kind, self.phase(error), str(error), self.output_tail())
        self.state = FAILED

    def timed_out(self, seconds: float) -> None:
        """The connect timeout passed."""
        if self.started:
            reason = "the bootstrap did not complete within %gs" % seconds
        elif self.phase() == "connect":
            reason = "it did not reach the far side and start the interpreter within %gs" % seconds
        else:
            reason = "the interpreter did not start the bootstrap within %gs" % seconds
        self.fail(ConnectError(reason))

    def process_exited(self, status: int) -> None:
        self.exit_status = status

    def stream_closed(self) -> None:
        self.stream_eof = True

    def end_reason(self, fallback: str) -> str:
        """How the child ended, in words: its exit status if known, else ``fallback``."""
        if self.exit_status is not None:
            return "its process %s" % describe_status(self.exit_status)
        return fallback

    def gone(self, reason: str) -> None:
        """The child is gone for ``reason``; a child still starting failed for it."""
        status = self.exit_status
        if not self.started and status is not None and status == self.dialog.connect_status:
            # The tool gave up on its own; what it said last is why (ssh's "Connection reset by
            # ..." or "kex_exchange_identification: ..."), its status alone says nothing.
            said = [line for line in self.output_tail() if line.strip()]
            if said:
                reason = "%s, after it said: %s" % (reason, said[-1].strip())
        self.fail(ConnectError(reason))
        self.state = GONE


def too_old(hexversion: int) -> str:
    """Why a child of Python ``hexversion`` cannot run the runtime, and what to do."""
    found = "%d.%d.%d" % (hexversion >> 24, hexversion >> 16 & 0xFF, hexversion >> 8 & 0xFF)
    return (
        "its interpreter is Python %s, and trimitogen needs Python %d.%d or newer there (pass "
        "python= the path of a newer interpreter on that side)" % (found, *MIN_VERSION)
    )


def connect_failure(what: str, name: str, phase: str, reason: str, lines: List[str]) -> str:
    """The one format of every start-up failure: who, which phase, why, and the last output."""
    shown = "\n".join("    " + line for line in lines) if lines else "    (it printed nothing)"
    return "%s: could not start context %r (phase: %s): %s; last output:\n%s" % (
        what,
        name,
        phase,
        reason,
        shown,
    )
