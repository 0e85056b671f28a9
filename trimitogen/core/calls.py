"""Running a call in a child: find the function by name, run it, and encode its answer.

The main thread of a child runs one call at a time (see :mod:`.child`); what it needs for that
is here, so that the runtime's loops and the call's semantics stay apart.
"""

from __future__ import annotations

import sys

from .messages import Call, ReplyError, ReplyOk

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Optional, Tuple

    SendLog = Callable[[str, str, int, str], None]


class CallRunner:
    """Runs CALL bodies: resolves ``module.qualname`` (cached), calls it, encodes the answer."""

    def __init__(
        self,
        max_message_size: int,
        send_log: SendLog,
        explain: Callable[[BaseException], str] = str,
    ) -> None:
        self.max_message_size = max_message_size
        self.send_log = send_log
        #: Turns an exception into the message sent (the importer adds why a module was missing).
        self.explain = explain
        self._functions: Dict[Tuple[str, str], Any] = {}

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

    def run(self, data: Any, wants_reply: bool) -> Any:
        """Run the call encoded in ``data``; the encoded answer, or None if none is wanted (a
        failure of a call without a reply is logged instead)."""
        func_desc = "<undecoded call>"
        error: Optional[ReplyError] = None
        try:
            # A call may name modules to import for its values: it comes from the parent.
            call = Call.decode(data, may_import=True)
            func_desc = "%s.%s" % (call.module, call.qualname)
            result = self.resolve(call.module, call.qualname)(*call.args, **call.kwargs)
            if type(result).__name__ == "coroutine":
                import asyncio

                result = asyncio.run(result)
        except BaseException as exc:
            error = describe_exception(exc, self.explain)
        if not wants_reply:
            if error is not None:
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
