"""Running a call in a child: find the function by name, run it, and encode its answer.

The main thread of a child runs sync calls one at a time (see :mod:`.child`); a coroutine function
runs in an event loop on its own thread instead (see :mod:`.aloop`).  A call is known by its key:
the sender's context id and the handle its reply goes to.

Cancelling a sync call (the master sent CANCEL) raises :class:`~.errors.Cancelled` on the main
thread through a signal sent to that thread only: the signal interrupts a blocking system call, and
its handler raises only while the call's own function runs (between :meth:`CallRunner.run`'s two
marks), never in the runtime's code between calls, and never in the middle of a frame the main
thread writes (see :meth:`CallRunner.uninterruptible`).
"""

from __future__ import annotations

import _signal
import _thread
import sys

from .errors import Cancelled
from .messages import Call, ReplyError, ReplyOk

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Optional, Set, Tuple

    SendLog = Callable[[str, str, int, str], None]
    Key = Tuple[int, int]

#: Sent to the main thread to interrupt a cancelled call.  Its default action is to do nothing,
#: so a stray one (a process the call started and that did not reset it) harms no one.  (The C
#: module ``_signal``: ``signal`` imports enum, milliseconds of every child's start.)
INTERRUPT_SIGNAL = _signal.SIGURG

#: What :meth:`CallRunner.run` returns when a coroutine went to an event loop, which replies.
HANDED_OVER = object()

CANCELLED_NAME = "%s.%s" % (Cancelled.__module__, Cancelled.__qualname__)


class CallRunner:
    """Runs CALL bodies: resolves ``module.qualname`` (cached), calls it, encodes the answer."""

    def __init__(
        self,
        max_message_size: int,
        send_log: SendLog,
        explain: Callable[[BaseException], str] = str,
        send_reply: Optional[Callable[[Key, Any], None]] = None,
        hand_over: Optional[Callable[..., None]] = None,
    ) -> None:
        self.max_message_size = max_message_size
        self.send_log = send_log
        #: Turns an exception into the message sent (the importer adds why a module was missing).
        self.explain = explain
        #: How an event loop thread sends the answer of a coroutine it ran.
        self.send_reply = send_reply
        #: Runs a coroutine in an event loop (see :mod:`.aloop`); None: coroutines fail.
        self.hand_over = hand_over
        self._functions: Dict[Tuple[str, str], Any] = {}
        #: The call the main thread is taking from the queue or running (set before the queue
        #: is popped: see ``cancel``).
        self.current: Optional[Key] = None
        #: Set only while the call's function itself runs: where the interrupt may land.
        self._running: Optional[Key] = None
        self._masked = 0
        self._deferred = False
        #: Keys of sync calls cancelled before they ended.
        self.cancelled: Set[Key] = set()
        self._main_thread: Optional[int] = None
        self.loops: Any = None

    # Cancellation ------------------------------------------------------------------------------
    def install_interrupt(self) -> None:
        """On the main thread, before any call: route the interrupt signal to this runner."""
        self._main_thread = _thread.get_ident()
        _signal.signal(INTERRUPT_SIGNAL, self._on_interrupt)

    def _on_interrupt(self, _signum: int, _frame: Any) -> None:
        if self._running is None or self._running not in self.cancelled:
            return  # between calls, or a late signal for a call that already ended
        if self._masked:
            self._deferred = True
            return
        self._raise_cancelled()

    def _raise_cancelled(self) -> None:
        self.cancelled.discard(self._running)
        raise Cancelled("the caller cancelled this call")

    def uninterruptible(self) -> Any:
        """A context manager: the interrupt waits until the block ends (a frame being written
        by the main thread is never cut short).  Outside a call, and on other threads, it is a
        shared no-op: every frame the runtime sends passes here."""
        if self._running is None or _thread.get_ident() != self._main_thread:
            return _UNMASKED
        return _Mask(self)

    def cancel(self, key: Key, queued: Callable[[Key], bool]) -> bool:
        """From the I/O thread: stop call ``key``.  ``queued(key)`` says whether it still waits
        in the main thread's queue.  False if no such call runs or waits here (it ended)."""
        if self.loops is not None and self.loops.cancel(key):
            return True
        # The queue first, then ``current``: the main thread sets ``current`` before it pops
        # the queue, so a call in between is seen in one place or the other.
        if not (queued(key) or self.current == key):
            return False
        self.cancelled.add(key)
        if self.current == key and self._main_thread is not None:
            _signal.pthread_kill(self._main_thread, INTERRUPT_SIGNAL)
        return True

    # Running -----------------------------------------------------------------------------------
    def resolve(self, module: str, qualname: str) -> Any:
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

    def run(self, data: Any, key: Key, wants_reply: bool) -> Any:
        """Run the call encoded in ``data``; the encoded answer, None if none is wanted (a failure
        of a call without a reply is logged instead), or :data:`HANDED_OVER` when a coroutine
        went to an event loop (which sends the answer)."""
        func_desc = "<undecoded call>"
        result: Any = None
        error: Optional[ReplyError] = None
        try:
            if key in self.cancelled:
                self.cancelled.discard(key)
                raise Cancelled("the caller cancelled this call before it started")
            # A call may name modules to import for its values: it comes from the parent.
            call = Call.decode(data, may_import=True)
            func_desc = "%s.%s" % (call.module, call.qualname)
            fn = self.resolve(call.module, call.qualname)
            try:
                self._running = key
                if key in self.cancelled:  # an interrupt that came before the mark was set
                    self._raise_cancelled()
                result = fn(*call.args, **call.kwargs)
            finally:
                self._running = None
            if type(result).__name__ == "coroutine" and self.hand_over is not None:
                self.hand_over(self, fn, result, key, func_desc, wants_reply)
                return HANDED_OVER
        except BaseException as exc:
            error = describe_exception(exc, self.explain)
        finally:
            self.cancelled.discard(key)
        return self.answer(func_desc, wants_reply, result, error)

    def answer(
        self, func_desc: str, wants_reply: bool, result: Any, error: Optional[ReplyError]
    ) -> Any:
        """The encoded reply to a call that returned ``result`` or failed with ``error``."""
        if not wants_reply:
            if error is not None and error.type_name != CANCELLED_NAME:
                self.send_log(
                    "log",
                    "trimitogen.call",
                    40,
                    "call_no_reply(%s) raised %s: %s\n%s"
                    % (func_desc, error.type_name, error.message, error.traceback),
                )
            return None
        try:
            encoded: Any = ReplyOk.pack(True, result) if error is None else error.encode()
            if len(encoded) > self.max_message_size:
                raise ValueError(
                    "it encodes to %d bytes, over the %d-byte message limit"
                    % (len(encoded), self.max_message_size)
                )
        except Exception as exc:
            encoded = ReplyError.pack(
                False,
                "builtins.TypeError",
                "the result of %s could not be sent back: %s" % (func_desc, exc),
                "",
            )
        return encoded


class _Unmasked:
    __slots__ = ()

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc_info: Any) -> None:
        pass


_UNMASKED = _Unmasked()


class _Mask:
    """Defers the interrupt while the main thread, inside a call, writes a frame."""

    __slots__ = ("runner",)

    def __init__(self, runner: CallRunner) -> None:
        self.runner = runner

    def __enter__(self) -> None:
        self.runner._masked += 1

    def __exit__(self, *exc_info: Any) -> None:
        runner = self.runner
        runner._masked -= 1
        if not runner._masked and runner._deferred:
            runner._deferred = False
            if exc_info[0] is None and runner._running in runner.cancelled:
                runner._raise_cancelled()


def describe_exception(
    exc: BaseException, explain: Callable[[BaseException], str] = str
) -> ReplyError:
    """The answer for a call that raised ``exc``: its type's full name, message and traceback."""
    import traceback

    cls = type(exc)
    type_name = "%s.%s" % (cls.__module__, cls.__qualname__)
    try:
        message = explain(exc)
    except Exception:
        message = "<str() of the exception failed>"
    text = "".join(traceback.format_exception(cls, exc, exc.__traceback__))
    return ReplyError(False, type_name, message, text)


def preload(names: Any) -> None:
    """Import ``names`` here (a fork server does this so its forks start warm)."""
    for name in names:
        __import__(name)
