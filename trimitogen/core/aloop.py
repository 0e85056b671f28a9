"""Event loops for coroutine functions called in a child.

A coroutine function runs in an event loop on a thread of its own, started on the first such call
and kept until the context ends: one for Trio, one for asyncio.  The main thread stays free for
sync calls (run one at a time, in order) and forks, and the coroutines of several calls run
concurrently, each in its own cancel scope (Trio) or task (asyncio), so cancelling one leaves the
others running.

Which loop runs a function is decided per function, the same way every time:

1. ``@trimitogen.event_loop("trio")`` or ``("asyncio")`` on the function decides;
2. otherwise, the library the function's own code names (``trio.sleep``, a local ``import
   asyncio``), if it names one of the two;
3. otherwise, the library its module uses (a module, function or class from it among the
   module's globals), Trio if it uses both;
4. otherwise (a coroutine that uses neither) asyncio, which every child has.

Trio is the child's own if it has one, else received from the master like any module.
"""

from __future__ import annotations

import _thread
import sys

from .calls import describe_exception
from .errors import Cancelled

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Optional, Set, Tuple

    Key = Tuple[int, int]
    Done = Callable[[Any, Optional[BaseException]], None]

TRIO = "trio"
ASYNCIO = "asyncio"
_MARK = "__trimitogen_event_loop__"

#: How long the context's end waits for an event loop's coroutines to finish after cancelling
#: them.
STOP_GRACE = 1.0


def event_loop(kind: str) -> Callable[[Any], Any]:
    """Decorator: run this coroutine function under ``"trio"`` or ``"asyncio"`` when it is called
    in a child, whatever its module imports."""
    if kind not in (TRIO, ASYNCIO):
        raise ValueError("event_loop() takes 'trio' or 'asyncio', not %r" % (kind,))

    def mark(fn: Any) -> Any:
        setattr(fn, _MARK, kind)
        return fn

    return mark


_module_choice: Dict[str, Optional[str]] = {}


def _module_uses(module: Any) -> Optional[str]:
    """TRIO, ASYNCIO or None: which loop library a module's globals come from."""
    found = set()
    for value in list(getattr(module, "__dict__", {}).values()):
        try:
            if type(value).__name__ == "module":
                name = value.__name__
            else:
                name = getattr(value, "__module__", None)
        except Exception:
            continue
        if type(name) is str:
            top = name.partition(".")[0]
            if top in (TRIO, ASYNCIO):
                found.add(top)
    if TRIO in found:
        return TRIO
    return ASYNCIO if found else None


def _code_uses(code: Any) -> Optional[str]:
    """TRIO, ASYNCIO or None: which of the two names a function's code (and the code nested in
    it) refers to, such as ``trio.sleep`` or a local ``import asyncio``."""
    found = set()
    todo = [code]
    while todo:
        current = todo.pop()
        names = set(getattr(current, "co_names", ())) | set(getattr(current, "co_varnames", ()))
        found |= names & {TRIO, ASYNCIO}
        todo += [c for c in getattr(current, "co_consts", ()) if type(c).__name__ == "code"]
    if len(found) == 1:
        return str(found.pop())
    return None


def choose(fn: Any) -> str:
    """The loop that runs coroutine function ``fn`` (see the module's docstring)."""
    explicit = getattr(fn, _MARK, None)
    if explicit in (TRIO, ASYNCIO):
        return str(explicit)
    in_code = _code_uses(getattr(fn, "__code__", None))
    if in_code is not None:
        return in_code
    name = getattr(fn, "__module__", None)
    if type(name) is not str:
        return ASYNCIO
    if name not in _module_choice:
        _module_choice[name] = _module_uses(sys.modules.get(name))
    return _module_choice[name] or ASYNCIO


class Loops:
    """The event loop threads of one context and the calls running in them."""

    def __init__(self) -> None:
        self._loops: Dict[str, Any] = {}
        #: Key of each coroutine call still running, and the loop it runs in.
        self.running: Dict[Key, Any] = {}

    def get(self, kind: str) -> Any:
        loop = self._loops.get(kind)
        if loop is None:
            loop = self._loops[kind] = TrioLoop() if kind == TRIO else AsyncioLoop()
        return loop

    def cancel(self, key: Key) -> bool:
        """From any thread: cancel coroutine call ``key``; False if none runs here."""
        loop = self.running.get(key)
        if loop is None:
            return False
        loop.cancel(key)
        return True

    def stop(self) -> None:
        """Cancel every coroutine still running and end the loop threads (bounded wait)."""
        for loop in self._loops.values():
            loop.stop()
        for loop in self._loops.values():
            loop.ended.acquire(True, STOP_GRACE)


def hand_over(runner: Any, fn: Any, coro: Any, key: Key, func_desc: str, wants_reply: bool) -> None:
    """From the main thread: run coroutine ``coro`` (from ``fn``) in its loop; the loop thread
    sends the answer through ``runner``."""
    if runner.loops is None:
        runner.loops = Loops()
    loops = runner.loops
    kind = choose(fn)
    try:
        loop = loops.get(kind)
    except ImportError as exc:
        coro.close()
        raise ImportError(
            "%s is a Trio coroutine function, but Trio could not be imported in this child "
            "(Python %d.%d): %s.  Install trio here, or mark the function "
            "@trimitogen.event_loop('asyncio')"
            % (func_desc, sys.version_info[0], sys.version_info[1], exc)
        ) from None

    def done(result: Any, exc: Optional[BaseException]) -> None:
        loops.running.pop(key, None)
        error = None if exc is None else describe_exception(exc, runner.explain)
        encoded = runner.answer(func_desc, wants_reply, result, error)
        if encoded is not None and runner.send_reply is not None:
            runner.send_reply(key, encoded)

    loops.running[key] = loop
    # After registering: a cancel that came while this thread was on its way is seen here, or
    # the canceller sees the registration (see CallRunner.cancel).
    loop.submit(key, coro, done, key in runner.cancelled)


def stream_async(streams: Any, fn: Any, key: Key, window: Any, agen: Any, func_desc: str) -> None:
    """From a stream's thread: iterate async generator ``agen`` (from ``fn``) in its loop."""
    runner = streams.context.calls
    if runner.loops is None:
        runner.loops = Loops()
    kind = choose(fn)
    try:
        loop = runner.loops.get(kind)
    except ImportError as exc:
        raise ImportError(
            "%s is a Trio async generator function, but Trio could not be imported in this "
            "child: %s" % (func_desc, exc)
        ) from None
    loop.submit_stream(streams, key, window, agen)


def run_channel(streams: Any, fn: Any, key: Key, coro: Any, end: Any) -> None:
    """From a channel's thread: run coroutine ``coro`` (``fn(end, ...)``) in its loop; its end
    (return or error) ends the channel."""
    runner = streams.context.calls
    if runner.loops is None:
        runner.loops = Loops()
    loops = runner.loops
    kind = end.library = choose(fn)
    try:
        loop = loops.get(kind)
    except BaseException:
        coro.close()
        raise

    def done(_result: Any, exc: Optional[BaseException]) -> None:
        loops.running.pop(key, None)
        streams.finish(key, exc)

    loops.running[key] = loop
    loop.submit(key, coro, done, False)


async def _feed(window: Any, agen: Any, wait_for_change: Callable[[], Any]) -> None:
    """Hand the items of async generator ``agen`` to the stream's window as it allows;
    ``wait_for_change()`` returns after a grant or a close."""
    async for value in agen:
        while not window.ready():
            await wait_for_change()
        if window.closed:
            break
        window.put(value)


def _cancelled() -> Cancelled:
    return Cancelled("the caller cancelled this call")


def _start_thread(target: Callable[[Any], None]) -> Any:
    """Run ``target(ready)`` on a new thread; returns once it released ``ready``."""
    ready = _thread.allocate_lock()
    ready.acquire()
    _thread.start_new_thread(target, (ready,))
    ready.acquire()


class TrioLoop:
    """``trio.run`` on its own thread, with a nursery that runs each coroutine call."""

    def __init__(self) -> None:
        import trio

        self.trio = trio
        self.scopes: Dict[Key, Any] = {}
        self.cancelled: Set[Key] = set()
        self.ended = _thread.allocate_lock()
        self.ended.acquire()
        self.failure: Optional[BaseException] = None
        self.token: Any = None
        self.nursery: Any = None
        _start_thread(self._main)
        if self.failure is not None:
            raise self.failure

    def _main(self, ready: Any) -> None:
        trio = self.trio

        async def serve() -> None:
            self.token = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                ready.release()
                await trio.sleep_forever()

        try:
            trio.run(serve)
        except BaseException as exc:
            self.failure = exc
        finally:
            if ready.locked():
                ready.release()
            self.ended.release()

    def submit(self, key: Key, coro: Any, done: Done, cancelled: bool) -> None:
        if cancelled:
            self.cancel(key)
        self.token.run_sync_soon(self.nursery.start_soon, self._run, key, coro, done)

    async def _run(self, key: Key, coro: Any, done: Done) -> None:
        result: Any = None
        error: Optional[BaseException] = None
        with self.trio.CancelScope() as scope:
            self.scopes[key] = scope
            if key in self.cancelled:
                self.cancelled.discard(key)
                scope.cancel()
            try:
                result = await coro
            except self.trio.Cancelled:
                error = _cancelled()
                raise
            except BaseException as exc:
                error = exc
            finally:
                self.scopes.pop(key, None)
                done(result, error)

    def submit_stream(self, streams: Any, key: Key, window: Any, agen: Any) -> None:
        self.token.run_sync_soon(self.nursery.start_soon, self._stream, streams, key, window, agen)

    async def _stream(self, streams: Any, key: Key, window: Any, agen: Any) -> None:
        trio = self.trio
        error: Optional[BaseException] = None
        with trio.CancelScope() as scope:
            event = [trio.Event()]

            def on_loop() -> None:
                event[0].set()
                if window.closed:
                    scope.cancel()

            def changed() -> None:  # on the I/O thread: a grant, or the consumer closed
                try:
                    self.token.run_sync_soon(on_loop)
                except trio.RunFinishedError:
                    pass

            window.on_change = changed
            on_loop()

            async def wait_for_change() -> None:
                event[0] = trio.Event()
                if not window.ready():
                    await event[0].wait()

            try:
                await _feed(window, agen, wait_for_change)
            except trio.Cancelled:
                raise
            except BaseException as exc:
                error = exc
            finally:
                with trio.CancelScope(shield=True):
                    try:
                        await agen.aclose()
                    except BaseException as exc:
                        error = error or exc
        streams.finish(key, error)

    def cancel(self, key: Key) -> None:
        """From any thread."""
        self.token.run_sync_soon(self._cancel, key)

    def _cancel(self, key: Key) -> None:
        scope = self.scopes.get(key)
        if scope is not None:
            scope.cancel()
        else:  # submitted, not started yet
            self.cancelled.add(key)

    def stop(self) -> None:
        try:
            self.token.run_sync_soon(self.nursery.cancel_scope.cancel)
        except self.trio.RunFinishedError:
            pass


class AsyncioLoop:
    """An asyncio event loop on its own thread; each coroutine call is a task."""

    def __init__(self) -> None:
        import asyncio

        self.asyncio = asyncio
        self.loop = asyncio.new_event_loop()
        self.tasks: Dict[Key, Any] = {}
        self._events: Dict[Key, Any] = {}
        self.cancelled: Set[Key] = set()
        self.ended = _thread.allocate_lock()
        self.ended.acquire()
        _start_thread(self._main)

    def _main(self, ready: Any) -> None:
        loop = self.loop
        try:
            self.asyncio.set_event_loop(loop)
            loop.call_soon(ready.release)
            loop.run_forever()
            pending = list(self.tasks.values())
            if pending:
                loop.run_until_complete(self.asyncio.wait(pending, timeout=STOP_GRACE))
            loop.close()
        except BaseException:
            pass
        finally:
            if ready.locked():
                ready.release()
            self.ended.release()

    def submit(self, key: Key, coro: Any, done: Done, cancelled: bool) -> None:
        if cancelled:
            self.cancelled.add(key)
        self.loop.call_soon_threadsafe(self._start, key, coro, done)

    def _start(self, key: Key, coro: Any, done: Done) -> None:
        task = self.tasks[key] = self.loop.create_task(self._run(key, coro, done))
        if key in self.cancelled:
            self.cancelled.discard(key)
            task.cancel()

    async def _run(self, key: Key, coro: Any, done: Done) -> None:
        result: Any = None
        error: Optional[BaseException] = None
        try:
            result = await coro
        except self.asyncio.CancelledError:
            error = _cancelled()
        except BaseException as exc:
            error = exc
        finally:
            self.tasks.pop(key, None)
            done(result, error)

    def submit_stream(self, streams: Any, key: Key, window: Any, agen: Any) -> None:
        def start() -> None:  # on the loop's thread: an Event binds to the running loop
            event = self._events[key] = self.asyncio.Event()
            task = self.loop.create_task(self._stream(streams, key, window, agen))

            def on_loop() -> None:
                event.set()
                if window.closed:
                    task.cancel()

            def changed() -> None:
                try:
                    self.loop.call_soon_threadsafe(on_loop)
                except RuntimeError:
                    pass  # the loop is closed

            window.on_change = changed
            on_loop()

        self.loop.call_soon_threadsafe(start)

    async def _stream(self, streams: Any, key: Key, window: Any, agen: Any) -> None:
        asyncio = self.asyncio
        event = self._events.pop(key)
        error: Optional[BaseException] = None

        async def wait_for_change() -> None:
            event.clear()
            if not window.ready():
                await event.wait()

        try:
            await _feed(window, agen, wait_for_change)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:
            error = exc
        finally:
            try:
                await agen.aclose()
            except BaseException as exc:
                error = error or exc
        streams.finish(key, error)

    def cancel(self, key: Key) -> None:
        """From any thread."""
        self.loop.call_soon_threadsafe(self._cancel, key)

    def _cancel(self, key: Key) -> None:
        task = self.tasks.get(key)
        if task is not None:
            task.cancel()
        else:
            self.cancelled.add(key)

    def stop(self) -> None:
        def stop_all() -> None:
            for task in self.tasks.values():
                task.cancel()
            self.loop.stop()

        try:
            self.loop.call_soon_threadsafe(stop_all)
        except RuntimeError:
            pass  # the loop is closed already
