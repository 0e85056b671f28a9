"""The core latch (threads) and the public trimitogen.Latch (threads and Trio tasks together)."""

from __future__ import annotations

import builtins
import gc
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
import trio.testing

import trimitogen
from trimitogen.core import latch as core_latch

#: Upper bound on any single wait in these tests; reaching it means the test failed.
PATIENCE = 30.0

# A sleeping thread's wake-up sockets must be gone once the thread has ended.
pytestmark = pytest.mark.usefixtures("no_leaked_fds")

LatchFactory = Callable[[], core_latch.Latch]


@pytest.fixture(params=[core_latch.Latch, trimitogen.Latch], ids=["core", "public"])
def make_latch(request: pytest.FixtureRequest) -> LatchFactory:
    factory: LatchFactory = request.param
    return factory


class Waiter:
    """A thread running ``func()`` once; the outcome is kept for the test to inspect."""

    def __init__(self, func: Callable[[], Any]) -> None:
        self.func = func
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self.func()
        except BaseException as exc:
            self.error = exc

    def join(self) -> None:
        self.thread.join(PATIENCE)
        assert not self.thread.is_alive(), "waiter thread did not finish"

    def outcome(self) -> Any:
        self.join()
        if self.error is not None:
            raise self.error
        return self.result


def run_in_thread(func: Callable[[], Any]) -> Any:
    """``func()`` in a fresh thread, never the test's own: get_sync must not run in Trio's."""
    return Waiter(func).outcome()


@pytest.fixture
def waiters() -> Iterator[list[Waiter]]:
    started: list[Waiter] = []
    yield started
    for waiter in started:
        waiter.join()


def wait_for_sleepers(latch: core_latch.Latch, count: int) -> None:
    """Block until ``count`` callers are waiting on ``latch``."""
    deadline = time.monotonic() + PATIENCE
    while len(latch._wakers) < count:
        assert time.monotonic() < deadline, "waiters never went to sleep"
        time.sleep(0.001)


async def await_sleepers(latch: core_latch.Latch, count: int) -> None:
    with trio.fail_after(PATIENCE):
        while len(latch._wakers) < count:
            await trio.sleep(0.001)


# --- threads -----------------------------------------------------------------------------------


def test_put_then_get_in_order(make_latch: LatchFactory) -> None:
    latch = make_latch()
    for i in range(10):
        latch.put(i)
    assert run_in_thread(lambda: [latch.get_sync() for _ in range(10)]) == list(range(10))


def test_empty(make_latch: LatchFactory) -> None:
    latch = make_latch()
    assert latch.empty()
    latch.put(None)
    assert not latch.empty()
    assert run_in_thread(lambda: latch.get_sync(block=False)) is None
    assert latch.empty()


def test_get_sync_non_blocking_on_empty_raises(make_latch: LatchFactory) -> None:
    latch = make_latch()
    with pytest.raises(trimitogen.TimeoutError):
        run_in_thread(lambda: latch.get_sync(block=False))
    latch.put("x")
    assert run_in_thread(lambda: latch.get_sync(block=False)) == "x"


@pytest.mark.parametrize("timeout", [0.0, 0.05])
def test_get_sync_times_out(make_latch: LatchFactory, timeout: float) -> None:
    latch = make_latch()
    with pytest.raises(trimitogen.TimeoutError) as info:
        run_in_thread(lambda: latch.get_sync(timeout=timeout))
    assert isinstance(info.value, builtins.TimeoutError)
    assert isinstance(info.value, trimitogen.Error)
    assert latch._wakers == []
    # A latch that timed out still works, and the thread's wake-up socket holds no stale byte.
    latch.put(1)
    assert run_in_thread(lambda: (latch.get_sync(timeout=PATIENCE), latch.empty())) == (1, True)


def test_timeout_does_not_lose_an_item_put_after_it(make_latch: LatchFactory) -> None:
    latch = make_latch()

    def time_out_then_get() -> Any:
        with pytest.raises(trimitogen.TimeoutError):
            latch.get_sync(timeout=0.01)
        latch.put("later")
        return latch.get_sync(timeout=PATIENCE)

    assert run_in_thread(time_out_then_get) == "later"


def test_put_from_another_thread_wakes_a_sleeping_thread(
    make_latch: LatchFactory, waiters: list[Waiter]
) -> None:
    latch = make_latch()
    waiter = Waiter(lambda: latch.get_sync(timeout=PATIENCE))
    waiters.append(waiter)
    wait_for_sleepers(latch, 1)
    putter = Waiter(lambda: latch.put("hello"))
    waiters.append(putter)
    putter.outcome()
    assert waiter.outcome() == "hello"


def test_every_sleeping_thread_gets_one_item(
    make_latch: LatchFactory, waiters: list[Waiter]
) -> None:
    latch = make_latch()
    for _ in range(5):
        waiters.append(Waiter(lambda: latch.get_sync(timeout=PATIENCE)))
    wait_for_sleepers(latch, 5)
    for i in range(5):
        latch.put(i)
    assert sorted(w.outcome() for w in waiters) == list(range(5))
    assert latch.empty()


def test_close_wakes_every_sleeping_thread(make_latch: LatchFactory, waiters: list[Waiter]) -> None:
    latch = make_latch()
    for _ in range(4):
        waiters.append(Waiter(lambda: latch.get_sync(timeout=PATIENCE)))
    wait_for_sleepers(latch, 4)
    latch.close()
    for waiter in waiters:
        with pytest.raises(trimitogen.LatchError):
            waiter.outcome()


def test_closed_latch(make_latch: LatchFactory) -> None:
    latch = make_latch()
    latch.put("before")
    latch.close()
    with pytest.raises(trimitogen.LatchError):
        latch.put("after")
    # What was put before close() is still handed out; then the latch reports it is closed.
    assert run_in_thread(lambda: latch.get_sync(block=False)) == "before"
    with pytest.raises(trimitogen.LatchError):
        run_in_thread(lambda: latch.get_sync(timeout=PATIENCE))
    with pytest.raises(trimitogen.LatchError):
        run_in_thread(lambda: latch.get_sync(block=False))


def test_a_finished_thread_leaves_no_socket_to_the_garbage_collector() -> None:
    latch = core_latch.Latch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        waiter = Waiter(lambda: latch.get_sync(timeout=0.01))
        with pytest.raises(trimitogen.TimeoutError):
            waiter.outcome()
        del waiter
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


# --- Trio --------------------------------------------------------------------------------------


async def test_trio_put_then_get_in_order() -> None:
    latch: trimitogen.Latch[int] = trimitogen.Latch()
    for i in range(10):
        latch.put(i)
    with trio.fail_after(PATIENCE):
        assert [await latch.get() for _ in range(10)] == list(range(10))
    assert latch.empty()


async def test_trio_get_waits_for_a_put_from_another_task() -> None:
    latch: trimitogen.Latch[str] = trimitogen.Latch()
    got: list[str] = []

    async def getter() -> None:
        got.append(await latch.get())

    with trio.fail_after(PATIENCE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(getter)
            await await_sleepers(latch, 1)
            assert got == []
            latch.put("item")
    assert got == ["item"]


async def test_put_from_foreign_threads_wakes_trio_tasks() -> None:
    latch: trimitogen.Latch[int] = trimitogen.Latch()
    got: list[int] = []

    async def getter() -> None:
        got.append(await latch.get())

    with trio.fail_after(PATIENCE):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(getter)
            await await_sleepers(latch, 3)
            putters = [threading.Thread(target=latch.put, args=(i,)) for i in range(3)]
            for putter in putters:
                putter.start()
            for putter in putters:
                await trio.to_thread.run_sync(putter.join)
    assert sorted(got) == [0, 1, 2]


async def test_trio_get_is_cancellable(autojump_clock: trio.testing.MockClock) -> None:
    latch: trimitogen.Latch[str] = trimitogen.Latch()
    with trio.move_on_after(5) as scope:
        await latch.get()
    assert scope.cancelled_caught
    assert latch._wakers == []
    latch.put("kept")
    with trio.fail_after(PATIENCE):
        assert await latch.get() == "kept"


async def test_trio_get_on_a_cancelled_scope_takes_nothing() -> None:
    latch: trimitogen.Latch[str] = trimitogen.Latch()
    latch.put("kept")
    with trio.CancelScope() as scope:
        scope.cancel()
        await latch.get()
    assert scope.cancelled_caught
    assert not latch.empty()
    with trio.fail_after(PATIENCE):
        assert await latch.get() == "kept"


async def test_cancelled_waiter_chosen_by_put_does_not_swallow_the_item() -> None:
    latch: trimitogen.Latch[str] = trimitogen.Latch()
    with trio.fail_after(PATIENCE):
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def cancelled_getter() -> None:
                with scope:
                    await latch.get()

            nursery.start_soon(cancelled_getter)
            await await_sleepers(latch, 1)
            # A foreign thread's put() chooses the waiter; its wake-up is only queued to this
            # thread, and the waiter is cancelled before the wake-up runs.
            putter = threading.Thread(target=latch.put, args=("item",))
            putter.start()
            putter.join(PATIENCE)
            assert latch._wakers == []
            scope.cancel()
        assert scope.cancelled_caught
        assert await latch.get() == "item"


async def test_cancelled_waiter_chosen_by_put_passes_the_wake_up_on() -> None:
    latch: trimitogen.Latch[str] = trimitogen.Latch()
    got: list[str] = []
    with trio.fail_after(PATIENCE):
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def cancelled_getter() -> None:
                with scope:
                    got.append("cancelled waiter got " + await latch.get())

            async def getter() -> None:
                got.append(await latch.get())

            nursery.start_soon(cancelled_getter)
            await await_sleepers(latch, 1)
            nursery.start_soon(getter)
            await await_sleepers(latch, 2)
            putter = threading.Thread(target=latch.put, args=("item",))
            putter.start()
            putter.join(PATIENCE)
            scope.cancel()
    assert got == ["item"]
    assert latch.empty()


async def test_close_wakes_trio_waiters() -> None:
    latch: trimitogen.Latch[object] = trimitogen.Latch()
    errors: list[BaseException] = []

    async def getter() -> None:
        try:
            await latch.get()
        except trimitogen.LatchError as exc:
            errors.append(exc)

    with trio.fail_after(PATIENCE):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(getter)
            await await_sleepers(latch, 3)
            latch.close()
        with pytest.raises(trimitogen.LatchError):
            await latch.get()
    assert len(errors) == 3


async def test_close_from_a_thread_wakes_trio_waiters() -> None:
    latch: trimitogen.Latch[object] = trimitogen.Latch()
    with trio.fail_after(PATIENCE):
        async with trio.open_nursery() as nursery:

            async def getter() -> None:
                with pytest.raises(trimitogen.LatchError):
                    await latch.get()

            nursery.start_soon(getter)
            await await_sleepers(latch, 1)
            closer = threading.Thread(target=latch.close)
            closer.start()
            await trio.to_thread.run_sync(closer.join)


async def test_mixed_thread_and_trio_waiters_all_get_items(waiters: list[Waiter]) -> None:
    latch: trimitogen.Latch[int] = trimitogen.Latch()
    got: list[int] = []

    async def getter() -> None:
        got.append(await latch.get())

    try:
        with trio.fail_after(PATIENCE):
            async with trio.open_nursery() as nursery:
                # Alternate the kinds of waiter so each kind sits at every position in the FIFO.
                for i in range(3):
                    waiters.append(Waiter(lambda: latch.get_sync(timeout=PATIENCE)))
                    await await_sleepers(latch, 2 * i + 1)
                    nursery.start_soon(getter)
                    await await_sleepers(latch, 2 * i + 2)
                putters = [threading.Thread(target=latch.put, args=(i,)) for i in range(0, 6, 2)]
                for putter in putters:
                    putter.start()
                for i in range(1, 6, 2):
                    latch.put(i)
                for putter in putters:
                    await trio.to_thread.run_sync(putter.join)
            thread_results = [await trio.to_thread.run_sync(w.outcome) for w in waiters]
    finally:
        latch.close()
    assert sorted(got + thread_results) == list(range(6))
    assert len(got) == 3
