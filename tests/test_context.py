"""Local contexts end to end: calls, data, errors, output, concurrency and shutdown."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import operator
import os
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from typing import Any

import pytest
import trio

import trimitogen as tm
from tests import remote_helpers as rh
from tests.conftest import REPO, WAIT
from trimitogen.core.link import Grace

SAMPLE_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**200,
    -(3**150),
    1.5,
    -0.0,
    math.inf,
    1e-300,
    3 + 4j,
    "",
    "snowman \u2603 and \U0001f600",
    b"",
    bytes(range(256)),
    bytearray(b"mutable"),
    (),
    (1, "two", b"three"),
    [],
    [1, [2, [3, [4]]]],
    {},
    {"a": 1, 2: "b", (3, 4): [5], None: {frozenset({1}): set()}},
    set(),
    {1, "x", (2, 3)},
    frozenset(),
    frozenset({b"a", 1.0}),
    [(1, {2: {3: frozenset({4})}}), bytearray(3), {"x": (None, True)}],
]


def assert_identical(got: Any, want: Any) -> None:
    """Equal and of exactly the same type, recursively."""
    assert type(got) is type(want), (got, want)
    if isinstance(want, float) and math.isnan(want):
        assert math.isnan(got)
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_identical(g, w)
    elif isinstance(want, dict):
        assert got.keys() == want.keys()
        for key in want:
            assert_identical(got[key], want[key])
    else:
        assert got == want


@pytest.mark.parametrize("value", SAMPLE_VALUES, ids=lambda v: type(v).__name__)
async def test_values_round_trip_with_their_types(ctx: tm.Context, value: Any) -> None:
    assert_identical(await ctx.call(rh.echo, value), value)


async def test_nan_round_trips(ctx: tm.Context) -> None:
    assert math.isnan(await ctx.call(rh.echo, math.nan))


async def test_keyword_arguments(ctx: tm.Context) -> None:
    result = await ctx.call(rh.echo_kwargs, 1, b"2", three=3.0, four=[4])
    assert_identical(result, ((1, b"2"), {"three": 3.0, "four": [4]}))


async def test_builtins_static_and_class_methods(ctx: tm.Context) -> None:
    assert await ctx.call(len, b"abc") == 3
    assert await ctx.call(os.getpid) == ctx.pid
    assert await ctx.call(int.from_bytes, b"\x01\x00", "big") == 256
    assert await ctx.call(bytes.fromhex, "ff00") == b"\xff\x00"
    assert await ctx.call(rh.Tools.double, 21) == 42
    assert await ctx.call(rh.Tools.name) == "Tools"
    assert await ctx.call(operator.mul, b"ab", 3) == b"ababab"


async def test_async_function_runs_in_an_event_loop(ctx: tm.Context) -> None:
    assert await ctx.call(rh.async_add, 2, 3) == 5


async def test_unreachable_callables_are_refused_before_sending(ctx: tm.Context) -> None:
    def closure() -> None:
        pass

    refused: list[Any] = [
        lambda: None,
        closure,
        rh.Tools().bound,
        [].append,
        functools.partial(rh.echo),
    ]
    for bad in refused:
        with pytest.raises(TypeError, match="cannot call"):
            await ctx.call(bad)
    assert ctx.statistics().calls_in_flight == 0
    assert await ctx.call(rh.echo, 1) == 1


async def test_unsendable_arguments_raise_type_error(ctx: tm.Context) -> None:
    with pytest.raises(TypeError, match="object"):
        await ctx.call(rh.echo, object())
    with pytest.raises(TypeError, match="range"):
        await ctx.call(rh.echo, [REPO, range(3)])


async def test_unsendable_result_is_a_call_error(ctx: tm.Context) -> None:
    with pytest.raises(tm.CallError) as info:
        await ctx.call(rh.return_object)
    assert info.value.type_name == "builtins.TypeError"
    assert "could not be sent back" in info.value.message
    assert await ctx.call(rh.echo, "still usable") == "still usable"


@pytest.mark.parametrize("size_mib", [128])
async def test_large_payloads_both_directions(ctx: tm.Context, size_mib: int) -> None:
    size = size_mib << 20
    up = os.urandom(1 << 20) * size_mib
    assert await ctx.call(zlib.crc32, up) == zlib.crc32(up)
    del up
    down = await ctx.call(operator.mul, b"\x01\x02\x03\x04", size // 4)
    assert type(down) is bytes
    assert len(down) == size
    assert down == b"\x01\x02\x03\x04" * (size // 4)


async def test_many_separate_buffers_in_one_message(ctx: tm.Context) -> None:
    # More large bytes values than one writev() may carry (1024).
    chunks = [bytes([i % 256]) * 70_000 for i in range(1100)]
    assert await ctx.call(len, chunks) == 1100
    assert await ctx.call(rh.echo, chunks) == chunks


async def test_oversized_arguments_are_refused_before_sending(ctx: tm.Context) -> None:
    with pytest.raises(ValueError, match="message limit"):
        await ctx.call(len, bytes(300 << 20))
    assert await ctx.call(rh.echo, 1) == 1


async def test_a_flood_of_queued_calls_does_not_stall_the_child(ctx: tm.Context) -> None:
    with trio.fail_after(WAIT * 2):
        await ctx.call_no_reply(rh.sleep, 0.5)
        for i in range(70_000):
            await ctx.call_no_reply(rh.echo, i)
        await ctx.call(rh.print_lines, "x" * 100_000)
        assert await ctx.call(rh.echo, "done") == "done"


async def test_remote_exception_is_a_call_error(ctx: tm.Context) -> None:
    with pytest.raises(tm.CallError) as info:
        await ctx.call(rh.fail, "it broke")
    err = info.value
    assert err.type_name == "builtins.ValueError"
    assert err.message == "it broke"
    assert "remote_helpers.py" in err.remote_traceback
    assert "raise ValueError(message)" in err.remote_traceback
    text = str(err)
    assert "builtins.ValueError: it broke" in text
    assert "remote traceback" in text
    assert await ctx.call(rh.echo, 7) == 7


async def test_many_tasks_call_one_context_at_once(ctx: tm.Context) -> None:
    results: dict[int, Any] = {}

    async def one(i: int) -> None:
        results[i] = await ctx.call(rh.echo, (i, str(i)))

    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(one, i)
    assert results == {i: (i, str(i)) for i in range(200)}


async def test_call_no_reply_runs_in_order(
    ctx: tm.Context, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trimitogen")
    await ctx.call_no_reply(rh.print_lines, "first")
    await ctx.call_no_reply(rh.fail, "no one waits for this")
    assert await ctx.call(rh.echo, "after") == "after"
    # Output travels on its own pipe, so it may arrive after the reply: wait for both.
    failure = await _wait_for_record(caplog, "no one waits")
    await _wait_for_record(caplog, "first")
    stdout = [r.getMessage() for r in caplog.records if r.name == "trimitogen.ctx.test.stdout"]
    assert stdout == ["first"]
    assert failure.levelno == logging.ERROR
    assert "builtins.ValueError" in failure.getMessage()


async def _wait_for_record(
    caplog: pytest.LogCaptureFixture, text: str, exact: bool = False
) -> logging.LogRecord:
    with trio.fail_after(WAIT):
        while True:
            for record in caplog.records:
                message = record.getMessage()
                if message == text if exact else text in message:
                    return record
            await trio.sleep(0.01)


async def test_output_and_logging_arrive_under_context_loggers(
    ctx: tm.Context, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trimitogen")
    await ctx.call(rh.print_lines, "out-1", "out-2")
    await ctx.call(rh.print_stderr, "err-1")
    await ctx.call(rh.run_subprocess_echo, "subproc")
    await ctx.call(rh.log_record, "app.db", logging.WARNING, "disk is slow")
    await ctx.call(rh.log_record, "root", logging.ERROR, "root says hi")
    expected = {
        "out-2": "trimitogen.ctx.test.stdout",
        "err-1": "trimitogen.ctx.test.stderr",
        "subproc-err": "trimitogen.ctx.test.stderr",
        "disk is slow": "trimitogen.ctx.test.app.db",
        "root says hi": "trimitogen.ctx.test",
    }
    for text, logger_name in expected.items():
        record = await _wait_for_record(caplog, text)
        assert record.name == logger_name
    # Exactly: its stderr line "subproc-err" comes through another pipe and may be logged first.
    subproc = await _wait_for_record(caplog, "subproc", exact=True)
    assert subproc.name == "trimitogen.ctx.test.stdout"
    assert (await _wait_for_record(caplog, "disk is slow")).levelno == logging.WARNING


async def test_child_dying_mid_call_raises_channel_error(ctx: tm.Context) -> None:
    with trio.fail_after(WAIT), pytest.raises(tm.ChannelError, match="exited with status 3"):
        await ctx.call(rh.exit_now, 3)
    with pytest.raises(tm.ChannelError, match="test"):
        await ctx.call(rh.echo, 1)


async def test_child_killed_by_signal_names_the_signal(ctx: tm.Context) -> None:
    with trio.fail_after(WAIT), pytest.raises(tm.ChannelError, match="SIGKILL"):
        await ctx.call(rh.kill_self, int(signal.SIGKILL))


async def test_exception_in_body_propagates_unwrapped() -> None:
    caught: BaseException | None = None
    try:
        async with tm.open_context(tm.local()) as ctx:
            await ctx.call(rh.echo, 1)
            raise KeyError("mine")
    except BaseException as exc:
        caught = exc
    assert type(caught) is KeyError
    assert ctx.statistics().exit_status is not None


async def test_leaving_the_block_reaps_the_child_and_closes_fds(no_leaked_fds: None) -> None:
    async with tm.open_context(tm.local()) as ctx:
        pid = ctx.pid
        assert pid is not None
    assert ctx.statistics().exit_status == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(tm.ChannelError, match="shut down"):
        await ctx.call(rh.echo, 1)


async def test_cancelled_call_returns_while_child_is_busy(ctx: tm.Context) -> None:
    with trio.move_on_after(0.2) as scope:
        await ctx.call(rh.sleep, 30)
    assert scope.cancelled_caught
    assert ctx.statistics().calls_in_flight == 0


async def test_cancelling_the_block_shuts_down_a_busy_child(no_leaked_fds: None) -> None:
    with trio.fail_after(WAIT):
        with trio.move_on_after(0.5):
            async with tm.open_context(tm.local()) as ctx:
                await ctx.call(rh.sleep, 60)
    assert ctx.statistics().exit_status is not None


async def test_calls_sent_before_shutdown_still_complete() -> None:
    results: list[float] = []
    async with tm.open_context(tm.local()) as ctx:

        async def slow_call() -> None:
            results.append(await ctx.call(rh.sleep, 0.1))

        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(slow_call)
                await trio.sleep(0.05)  # the three calls are on their way
                await ctx.shutdown()
    assert results == [0.1, 0.1, 0.1]


async def test_explicit_shutdown() -> None:
    async with tm.open_context(tm.local()) as ctx:
        await ctx.shutdown()
        assert ctx.statistics().exit_status == 0
        with pytest.raises(tm.ChannelError):
            await ctx.call(rh.echo, 1)


async def test_missing_interpreter_is_a_connect_error(no_leaked_fds: None) -> None:
    with pytest.raises(tm.ConnectError, match="/no/such/python"):
        async with tm.open_context(tm.local(python="/no/such/python")):
            pass


async def test_failing_interpreter_shows_its_output(no_leaked_fds: None) -> None:
    python = [sys.executable, "-c", "import sys; sys.stderr.write('boom here\\n'); sys.exit(3)"]
    with trio.fail_after(WAIT), pytest.raises(tm.ConnectError) as info:
        async with tm.open_context(tm.local(python=python)):
            pass
    assert "exited with status 3" in str(info.value)
    assert "boom here" in str(info.value)


async def test_bootstrap_timeout_shows_last_output(no_leaked_fds: None) -> None:
    stuck = ["/bin/sh", "-c", "echo warming up; echo on stderr >&2; sleep 60", "sh"]
    with trio.fail_after(WAIT), pytest.raises(tm.ConnectError) as info:
        async with tm.open_context(tm.local(python=stuck), connect_timeout=1.0):
            pass
    text = str(info.value)
    assert "did not start the bootstrap within 1s" in text
    assert "warming up" in text
    assert "on stderr" in text


async def test_isolated_interpreter_without_site(no_leaked_fds: None) -> None:
    python = [sys.executable, "-I", "-S"]
    async with tm.open_context(tm.local(python=python)) as ctx:
        assert await ctx.call(len, "isolated") == 8
        flags = "__import__('sys').flags"
        assert await ctx.call(eval, flags + ".no_site") == 1
        assert await ctx.call(eval, flags + ".isolated") == 1


def test_child_exits_when_master_is_killed(tmp_path: Any) -> None:
    script = tmp_path / "master.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys, time, trio
            import trimitogen as tm

            async def main():
                async with tm.open_context(tm.local()) as ctx:
                    print(ctx.pid, flush=True)
                    await ctx.call(time.sleep, 60)

            trio.run(main)
            """
        )
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, env=env, text=True
    ) as master:
        assert master.stdout is not None
        child_pid = int(master.stdout.readline())
        os.kill(child_pid, 0)
        master.kill()
        master.wait(timeout=WAIT)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                os.kill(child_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(child_pid, signal.SIGKILL)
            pytest.fail("the child %d outlived its killed master" % child_pid)


@pytest.mark.parametrize("depth", [1, 2, 3])
async def test_closing_under_cancellation_does_not_wait_for_the_grace_time(
    depth: int, monkeypatch: pytest.MonkeyPatch, no_leaked_fds: None
) -> None:
    """The pump tasks outlive the cancelled block until the child is reaped, so the shutdown
    sees the child exit instead of waiting out a (here 30 s) grace time at each level."""
    monkeypatch.setattr(Grace, "EXIT", 30.0)
    started = time.monotonic()
    with trio.fail_after(WAIT):
        with trio.move_on_after(1.0) as scope:
            async with contextlib.AsyncExitStack() as stack:
                ctx = await stack.enter_async_context(tm.open_context(tm.local()))
                for _ in range(depth - 1):
                    ctx = await stack.enter_async_context(tm.open_context(tm.local(), via=ctx))
                await ctx.call(rh.sleep, 60)
    assert scope.cancelled_caught
    assert time.monotonic() - started < 15.0
    assert ctx.statistics().gone_reason is not None


async def test_call_no_reply_waits_when_the_child_does_not_keep_up(ctx: tm.Context) -> None:
    """A loop of call_no_reply to a stopped child waits once 4 MiB are queued, instead of
    queueing without bound in the master."""
    from trimitogen._context import SEND_QUEUE_LIMIT

    assert ctx.pid is not None
    os.kill(ctx.pid, signal.SIGSTOP)
    sent = 0
    try:
        with trio.move_on_after(2.0) as scope:
            while True:
                await ctx.call_no_reply(rh.echo, b"x" * 65536)
                sent += 1
        assert scope.cancelled_caught
        queued = ctx.statistics().queued_bytes
        assert queued <= SEND_QUEUE_LIMIT + 2 * 65536 + 4096, queued
        assert sent * 65536 < 64 * SEND_QUEUE_LIMIT
    finally:
        os.kill(ctx.pid, signal.SIGCONT)
    with trio.fail_after(WAIT):
        assert await ctx.call(rh.echo, "caught up") == "caught up"
