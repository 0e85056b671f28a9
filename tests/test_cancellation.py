"""Structured concurrency across the process boundary: remote cancellation, coroutine functions
under Trio and asyncio, process groups, and remote errors ``except`` can catch.

Most tests run on four kinds of context: a local child of the master's Python, the oldest and the
newest child Python of the machine (the newest started with ``-I -S``, so it has no Trio of its
own and receives the master's over the wire), and the end of an ssh → sudo chain.  No test
asserts speed: where a wait matters, the thing waited for is made long (30 s or more) and the test
asserts that it did not happen.
"""

from __future__ import annotations

import codecs
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

import trimitogen as tm
from tests import cancel_helpers as ch
from tests import trio_helpers as th
from tests.chains import shared_directory, ssh_sudo
from tests.conftest import REPO, WAIT, discover_interpreters
from tests.test_methods import process_gone

#: Far longer than any step below may take: reaching it means the cancel did not work.
LONG = 30.0
#: A cancelled step must end well before LONG; generous for a loaded 2-core machine.
SOON = 10.0


def _versions() -> list[tuple[tuple[int, int], str]]:
    found = []
    for name, exe in discover_interpreters(oldest=(3, 6)).items():
        if name.startswith("pyenv-"):
            major, minor = name[len("pyenv-") :].split(".")[:2]
            found.append(((int(major), int(minor)), exe))
    return sorted(found)


def _has_trio(exe: str) -> bool:
    return subprocess.run([exe, "-c", "import trio"], capture_output=True).returncode == 0


OLDEST = _versions()[0][1]
NEWEST = _versions()[-1][1]
#: Trio coroutines need a Trio in the child: its own (the newest gets the master's).
OLDEST_WITH_TRIO = next(exe for _, exe in _versions() if _has_trio(exe))
WHERE = ["local", "oldest", "newest", "ssh-sudo"]
WHERE_TRIO = ["local", "oldest-with-trio", "newest", "ssh-sudo"]


pytestmark = pytest.mark.usefixtures("servers_first")


async def _open(request: pytest.FixtureRequest) -> AsyncIterator[tm.Context]:
    kind = request.param
    with trio.fail_after(WAIT):
        if kind == "ssh-sudo":
            chain = ssh_sudo(request.getfixturevalue("sshd"), request.getfixturevalue("users"))
            async with chain as ctx:
                yield ctx
            return
        python: Any = {
            "local": None,
            "oldest": OLDEST,
            "oldest-with-trio": OLDEST_WITH_TRIO,
            "newest": [NEWEST, "-I", "-S"],
        }[kind]
        async with tm.open_context(tm.local(python=python), name=kind) as ctx:
            yield ctx


@pytest.fixture(params=WHERE)
async def where(request: pytest.FixtureRequest) -> AsyncIterator[tm.Context]:
    async for ctx in _open(request):
        yield ctx


@pytest.fixture(params=WHERE_TRIO)
async def where_trio(request: pytest.FixtureRequest) -> AsyncIterator[tm.Context]:
    async for ctx in _open(request):
        yield ctx


async def cancel_after(delay: float, fn: Any, *args: Any, ctx: tm.Context) -> float:
    """Call ``fn`` and cancel it after ``delay``; how long the next call took to answer."""
    with trio.move_on_after(delay) as scope:
        await ctx.call(fn, *args)
    assert scope.cancelled_caught, "%s returned before it was cancelled" % fn.__name__
    cancelled_at = time.monotonic()
    with trio.fail_after(WAIT):
        assert await ctx.call(ch.quick, 7) == 7
    return time.monotonic() - cancelled_at


# -- 1. remote cancellation of sync calls ----------------------------------------------------------
async def test_cancelling_a_sleep_interrupts_it_in_the_child(where: tm.Context) -> None:
    await where.call(ch.clear)
    took = await cancel_after(0.5, ch.sleep_noting, LONG, "a", ctx=where)
    assert took < SOON
    assert await where.call(ch.events) == ["cancelled a"]
    assert not where.statistics().busy


async def test_blocking_system_calls_are_interrupted(where: tm.Context) -> None:
    await where.call(ch.clear)
    for fn, args in (
        (ch.block_in_select, (LONG,)),
        (ch.block_in_socket_read, ()),
        (ch.block_in_subprocess_run, (LONG,)),
        (ch.block_in_subprocess, (LONG,)),
        (ch.spin, (LONG,)),
    ):
        assert await cancel_after(0.5, fn, *args, ctx=where) < SOON, fn.__name__
    events = await where.call(ch.events)
    (sleeper,) = [int(event.split()[1]) for event in events if event.startswith("pid ")]
    with trio.fail_after(WAIT):
        while not process_gone(sleeper):
            await trio.sleep(0.05)


async def test_except_exception_does_not_swallow_the_cancel(ctx: tm.Context) -> None:
    await ctx.call(ch.clear)
    assert await cancel_after(0.5, ch.sleep_catching_exception, LONG, ctx=ctx) < SOON
    assert await ctx.call(ch.events) == []


async def test_a_queued_call_is_dropped_without_running(where: tm.Context) -> None:
    await where.call(ch.clear)
    first, second = trio.CancelScope(), trio.CancelScope()

    async def call_in(scope: trio.CancelScope, fn: Any, *args: Any) -> None:
        with scope:
            await where.call(fn, *args)

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call_in, first, ch.sleep_noting, LONG, "first")
            await trio.sleep(0.3)
            nursery.start_soon(call_in, second, ch.record, "second ran")
            await trio.sleep(0.3)
            second.cancel()
            await trio.sleep(0.1)
            first.cancel()
        assert await where.call(ch.events) == ["cancelled first"]


async def test_interrupts_never_land_between_calls(ctx: tm.Context) -> None:
    """Cancels racing with calls that end at about the same moment: the runtime never sees one
    (it would break a frame or kill the child), and every call that returned returned its value."""
    pid = ctx.pid
    with trio.fail_after(WAIT * 2):
        for i in range(300):
            with trio.move_on_after((i % 7) * 0.0007):
                assert await ctx.call(ch.sleep_noting, (i % 5) * 0.0005, "r") == "r"
        assert await ctx.call(ch.quick, 1) == 1
        while ctx.statistics().busy:
            await trio.sleep(0.01)
    assert ctx.pid == pid
    assert ctx.statistics().gone_reason is None


async def test_a_call_that_swallows_the_cancel_shows_as_busy(ctx: tm.Context) -> None:
    await ctx.call(ch.clear)
    with trio.move_on_after(0.3):
        await ctx.call(ch.swallow_cancel, 1.0)
    stats = ctx.statistics()
    assert stats.busy
    assert stats.cancelled_calls_running == 1
    assert stats.calls_in_flight == 0
    with trio.fail_after(WAIT):
        assert await ctx.call(ch.quick, 2) == 2  # queued behind the one still running
    assert await ctx.call(ch.events) == ["ignored a cancel"]
    assert not ctx.statistics().busy


async def test_fail_after_raises_too_slow_and_cancels_the_remote_work(where: tm.Context) -> None:
    await where.call(ch.clear)
    with pytest.raises(trio.TooSlowError):
        with trio.fail_after(0.5):
            await where.call(ch.sleep_noting, LONG, "f")
    with trio.fail_after(WAIT):
        assert await where.call(ch.events) == ["cancelled f"]


# -- 2. coroutine functions --------------------------------------------------------------------
async def test_trio_coroutines_run_concurrently_and_cancel_one_by_one(
    where_trio: tm.Context,
) -> None:
    await where_trio.call(ch.clear)
    results: list[str] = []
    long_call = trio.CancelScope()

    async def run(tag: str, seconds: float, scope: trio.CancelScope | None = None) -> None:
        with scope or trio.CancelScope():
            results.append(await where_trio.call(th.trio_sleep, seconds, tag))

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "long", LONG, long_call)
            nursery.start_soon(run, "b", 0.5)
            nursery.start_soon(run, "c", 0.5)
            while len(results) < 2:  # they end while "long" still sleeps: concurrent
                await trio.sleep(0.01)
            long_call.cancel()
    assert sorted(results) == ["b", "c"]
    with trio.fail_after(WAIT):
        while where_trio.statistics().busy:  # until the child reported the cancelled call ended
            await trio.sleep(0.01)
        events = await where_trio.call(ch.events)
    assert sorted(events) == ["trio cancelled long", "trio finished b", "trio finished c"]


async def test_the_loop_follows_the_function(where_trio: tm.Context) -> None:
    with trio.fail_after(WAIT):
        assert await where_trio.call(th.which_library) == "trio"
        assert await where_trio.call(ch.marked_trio) == "trio"
        assert "EventLoop" in await where_trio.call(ch.asyncio_sleep, 0, "x")
        assert "EventLoop" in await where_trio.call(th.marked_asyncio)
        assert await where_trio.call(th.on_main_thread) is False


async def test_asyncio_coroutines_are_cancelled_too(ctx: tm.Context) -> None:
    await ctx.call(ch.clear)
    assert await cancel_after(0.5, ch.asyncio_sleep, LONG, "a", ctx=ctx) < SOON
    with trio.fail_after(WAIT):
        while "asyncio cancelled a" not in await ctx.call(ch.events):
            await trio.sleep(0.01)
        while ctx.statistics().busy:
            await trio.sleep(0.01)


async def test_trio_comes_over_the_wire_when_the_child_has_none() -> None:
    with trio.fail_after(WAIT):
        async with tm.open_context(tm.local(python=[NEWEST, "-I", "-S"])) as ctx:
            origin = await ctx.call(th.trio_origin)
            assert origin.startswith("master:"), origin
            assert ctx.import_stats.modules_sent > 20  # trio and its dependencies
            assert await ctx.call(th.which_library) == "trio"


async def test_a_context_ends_with_its_coroutines_cancelled(tmp_path: Path) -> None:
    with trio.fail_after(WAIT):
        with trio.move_on_after(1.0):
            async with tm.open_context(tm.local()) as ctx, trio.open_nursery() as nursery:
                nursery.start_soon(ctx.call, th.trio_sleep, 60, "x")
                nursery.start_soon(ctx.call, ch.asyncio_sleep, 60, "y")
    assert ctx.statistics().exit_status == 0


# -- 4. nothing left behind -------------------------------------------------------------------
@pytest.fixture
def shared_tmp(tmp_path: Path) -> Path:
    return shared_directory(tmp_path)


async def wait_gone(pids: list[int]) -> None:
    with trio.fail_after(WAIT):
        while not all(process_gone(pid) for pid in pids):
            await trio.sleep(0.05)


@pytest.mark.parametrize("kind", ["local", "ssh-sudo", "fork"])
async def test_processes_a_call_started_end_with_the_context(
    kind: str, shared_tmp: Path, request: pytest.FixtureRequest
) -> None:
    with trio.fail_after(WAIT):
        if kind == "ssh-sudo":
            chain = ssh_sudo(request.getfixturevalue("sshd"), request.getfixturevalue("users"))
            async with chain as ctx:
                pids = await ctx.call(ch.start_background, str(shared_tmp))
                assert not any(process_gone(pid) for pid in pids)
        else:
            here: tm.Method = tm.local() if kind == "local" else tm.fork()
            async with tm.open_context(here) as ctx:
                pids = await ctx.call(ch.start_background, str(shared_tmp))
                assert not any(process_gone(pid) for pid in pids)
    assert len(pids) == 3
    await wait_gone(pids)


def test_processes_end_when_the_master_is_killed(tmp_path: Path) -> None:
    """The child's watchdog finds its parent gone and ends its process group."""
    script = tmp_path / "master.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, time, trio
            import trimitogen as tm
            from tests import cancel_helpers as ch

            async def main():
                async with tm.open_context(tm.local()) as ctx:
                    print(*await ctx.call(ch.start_background, sys.argv[1]), flush=True)
                    await ctx.call(time.sleep, 60)

            trio.run(main)
            """
        )
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, env=env, text=True
    ) as master:
        assert master.stdout is not None
        pids = [int(word) for word in master.stdout.readline().split()]
        assert len(pids) == 3
        master.kill()
        master.wait(timeout=WAIT)
    deadline = time.monotonic() + WAIT
    while not all(process_gone(pid) for pid in pids):
        if time.monotonic() > deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            pytest.fail("processes %s outlived their killed master's child" % pids)
        time.sleep(0.05)


def test_fork_server_does_not_delay_the_end_of_the_run(tmp_path: Path) -> None:
    """With a 30 s exit grace, a program that forked ends long before 30 s."""
    script = tmp_path / "forker.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, trio
            import trimitogen as tm
            from trimitogen.core.grace import Grace

            Grace.EXIT = 30.0

            async def main():
                async with tm.open_context(tm.fork()) as ctx:
                    print(await ctx.call(os.getpid), flush=True)

            trio.run(main)
            """
        )
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=WAIT
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) > 0
    assert time.monotonic() - started < 20.0


# -- 5. remote errors that except can catch ---------------------------------------------------
async def test_builtin_remote_errors_are_instances_of_the_builtin(ctx: tm.Context) -> None:
    with pytest.raises(ValueError, match="bad") as value_error:
        await ctx.call(ch.raise_builtin, "ValueError", "bad")
    assert isinstance(value_error.value, tm.CallError)
    assert value_error.value.type_name == "builtins.ValueError"
    assert value_error.value.message == "bad"
    assert "raise_builtin" in value_error.value.remote_traceback
    with pytest.raises(KeyError):
        await ctx.call(ch.raise_builtin, "KeyError", "k")
    with pytest.raises(FileNotFoundError) as missing:
        await ctx.call(ch.missing_file, "/nonexistent/file")
    assert missing.value.errno == 2
    assert missing.value.filename == "/nonexistent/file"
    with pytest.raises(UnicodeError):
        await ctx.call(codecs.decode, b"\xff", "utf-8")
    with pytest.raises(tm.CallError) as custom:
        await ctx.call(ch.raise_custom)
    # A class the child names is never made in the master: the error stays a plain CallError.
    assert type(custom.value) is tm.CallError
    assert not isinstance(custom.value, ValueError)
    assert custom.value.type_name == "tests.cancel_helpers.CustomError"
    with pytest.raises(RuntimeError) as chained:
        await ctx.call(ch.raise_chained)
    assert isinstance(chained.value, tm.CallError)
    assert "KeyError: 'missing'" in chained.value.remote_traceback
    assert "direct cause" in chained.value.remote_traceback


async def test_remote_stop_iteration_stays_a_plain_call_error(ctx: tm.Context) -> None:
    # A StopIteration raised out of a coroutine would become RuntimeError.
    with pytest.raises(tm.CallError) as info:
        await ctx.call(ch.raise_builtin, "StopIteration")
    assert type(info.value) is tm.CallError
