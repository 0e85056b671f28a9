"""open_group with real local interpreters: per-target results, failures that hide nothing,
bounded connection setup, fail_fast, shared first hops, and the file-descriptor budget."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import trio

import trimitogen as tm
from tests import group_helpers as gh
from tests import remote_helpers as rh
from tests.conftest import REPO, WAIT

PY = "/usr/bin/python3"
MISSING = "local:///nonexistent/python3"


def tagged(tag: str) -> tm.Target:
    return tm.Target((tm.local(python=[PY, "-X", "tmg=%s" % tag]),), name=tag)


async def test_call_gives_one_result_per_target_in_order(no_leaked_fds: None) -> None:
    targets: list[tm.Target | str] = [tagged("a"), MISSING, tagged("b"), tagged("c")]
    with trio.fail_after(WAIT):
        async with tm.open_group(targets, max_connecting=2) as group:
            results = await group.call(gh.tag)
            again = await group.call(gh.add, 2, 3)
    assert [r.index for r in results] == [0, 1, 2, 3]
    assert [r.value for r in results] == ["a", None, "b", "c"]
    assert [r.ok for r in results] == [True, False, True, True]
    failed = results[1]
    assert failed.phase == "connect"
    assert failed.hop == 1
    assert isinstance(failed.error, tm.ConnectError)
    assert "phase: spawn" in str(failed.error)
    assert failed.target == tm.parse_target(MISSING)
    assert failed.connect_seconds is None
    with pytest.raises(tm.ConnectError):
        failed.unwrap()
    for result in (results[0], results[2]):
        assert result.phase is None
        assert result.connect_seconds is not None
        assert result.connect_seconds > 0
        assert result.call_seconds is not None
        assert len(result.hop_seconds) == 1
    assert results[0].target.label == "a"
    assert [r.value for r in again] == [5, None, 5, 5]


async def test_a_failing_call_hides_no_other_result(no_leaked_fds: None) -> None:
    targets = [tagged("ok1"), tagged("bad"), tagged("ok2")]
    with trio.fail_after(WAIT):
        async with tm.open_group(targets) as group:
            results = await group.call(gh.fail_if_tagged, "bad", 0.0)
            statistics = group.statistics()
    assert [r.value for r in results] == ["ok1", None, "ok2"]
    assert results[1].phase == "call"
    assert isinstance(results[1].error, tm.CallError)
    assert "tagged bad" in str(results[1].error)
    assert statistics == tm.GroupStatistics(
        targets=3, waiting=0, connecting=0, connected=3, failed=0
    )


async def test_results_arrive_as_they_complete(no_leaked_fds: None) -> None:
    targets = [tagged("slow1"), tagged("quick"), tagged("slow2")]
    order = []
    with trio.fail_after(WAIT):
        async with tm.open_group(targets) as group:
            await group.wait_connected()
            async for result in group.results(gh.fail_if_tagged, "quick", 1.0):
                order.append(result.target.label)
    assert order[0] == "quick"
    assert sorted(order[1:]) == ["slow1", "slow2"]


async def test_each_runs_master_side_work_per_target(no_leaked_fds: None) -> None:
    """``each`` awaits a coroutine of this process per target (here: two calls and a check);
    its errors become failed results like a call's."""
    targets = [tagged("one"), tagged("two"), tagged("bad")]

    async def work(ctx: tm.Context, target: tm.Target) -> str:
        pid = await ctx.call(os.getpid)
        assert pid != os.getpid()
        if target.label == "bad":
            raise ValueError("refused %s" % target.label)
        return "%s:%s" % (target.label, await ctx.call(rh.echo, pid) == pid)

    with trio.fail_after(WAIT):
        async with tm.open_group(targets) as group:
            results = sorted([result async for result in group.each(work)], key=lambda r: r.index)
    assert [r.value for r in results] == ["one:True", "two:True", None]
    assert (results[2].phase, str(results[2].error)) == ("call", "refused bad")
    assert all(r.call_seconds is not None for r in results)


async def test_async_functions_and_typed_values(no_leaked_fds: None) -> None:
    with trio.fail_after(WAIT):
        async with tm.open_group([tagged("x")]) as group:
            (result,) = await group.call(gh.async_tag)
    assert result.unwrap() == "x"


async def test_connection_setup_is_bounded(no_leaked_fds: None) -> None:
    most = 0

    async def watch(group: tm.Group) -> None:
        nonlocal most
        while True:
            most = max(most, group.statistics().connecting)
            await trio.sleep(0.001)

    targets = [tagged(str(n)) for n in range(8)]
    with trio.fail_after(WAIT):
        async with (
            tm.open_group(targets, max_connecting=2) as group,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(watch, group)
            results = await group.wait_connected()
            nursery.cancel_scope.cancel()
    assert all(r.ok for r in results)
    assert 1 <= most <= 2


async def test_fail_fast_cancels_connections_still_starting(no_leaked_fds: None) -> None:
    # The shared interpreter takes far longer to start than a missing one takes to fail.
    targets = [MISSING, *["local://%s/fork://" % PY] * 5]
    with trio.fail_after(WAIT):
        async with tm.open_group(targets, fail_fast=True) as group:
            results = await group.call(gh.tag)
    assert results[0].phase == "connect"
    assert [r.phase for r in results[1:]] == ["cancelled"] * 5
    assert all("after local:///nonexistent/python3 failed" in str(r.error) for r in results[1:])


async def test_fail_fast_cancels_calls_in_flight(no_leaked_fds: None) -> None:
    targets = [tagged("s1"), tagged("bad"), tagged("s2")]
    with trio.fail_after(WAIT):
        async with tm.open_group(targets, fail_fast=True) as group:
            await group.wait_connected()
            started = trio.current_time()
            results = await group.call(gh.fail_if_tagged, "bad", 5.0)
            waited = trio.current_time() - started
            # The contexts stay usable once the failed batch is over.
            after = await group.call(gh.tag)
    assert [r.phase for r in results] == ["cancelled", "call", "cancelled"]
    assert waited < 5.0, "fail_fast waited for the sleeping calls"
    assert [r.value for r in after] == ["s1", "bad", "s2"]


async def test_without_fail_fast_every_target_answers(no_leaked_fds: None) -> None:
    targets: list[tm.Target | str] = [MISSING, tagged("a"), tagged("b")]
    with trio.fail_after(WAIT):
        async with tm.open_group(targets, max_connecting=1) as group:
            results = await group.call(gh.tag)
    assert [r.value for r in results] == [None, "a", "b"]


async def test_targets_sharing_a_first_hop_share_its_context(no_leaked_fds: None) -> None:
    targets = ["local://%s/fork://" % PY] * 4 + ["local://%s/local://%s" % (PY, PY)]
    with trio.fail_after(WAIT):
        async with tm.open_group(targets) as group:
            assert group.direct_contexts() == 1
            parents = await group.call(os.getppid)
            pids = await group.call(os.getpid)
    assert len({r.value for r in parents}) == 1
    assert len({r.value for r in pids}) == 5
    assert all(len(r.hop_seconds) == 2 for r in parents)
    # The shared hop started once: every target reports the same time for it.
    assert len({r.hop_seconds[0] for r in parents}) == 1


async def test_a_failed_shared_hop_fails_every_target_behind_it(no_leaked_fds: None) -> None:
    targets: list[tm.Target | str] = ["%s/fork://" % MISSING] * 3
    targets.append(tagged("alone"))
    with trio.fail_after(WAIT):
        async with tm.open_group(targets) as group:
            results = await group.call(gh.tag)
    assert [(r.phase, r.hop) for r in results[:3]] == [("connect", 1)] * 3
    assert len({id(r.error) for r in results[:3]}) == 1
    assert results[3].value == "alone"


async def test_body_errors_propagate_as_themselves(no_leaked_fds: None) -> None:
    async def body() -> None:
        async with tm.open_group([tagged("a"), tagged("b")]) as group:
            await group.wait_connected()
            raise KeyError("mine")

    with trio.fail_after(WAIT), pytest.raises(KeyError, match="mine"):
        await body()


async def test_leaving_early_stops_targets_still_connecting(no_leaked_fds: None) -> None:
    with trio.fail_after(WAIT):
        async with tm.open_group([tagged(str(n)) for n in range(6)], max_connecting=1):
            pass
        async with tm.open_group([tagged("x")]) as group:
            stream = group.results(gh.fail_if_tagged, "", 30.0)
            stream.aclose()


async def test_a_closed_group_refuses_calls(no_leaked_fds: None) -> None:
    async with tm.open_group([tagged("x")]) as group:
        pass
    with pytest.raises(RuntimeError, match="the group is closed"):
        group.results(gh.tag)


def test_max_connecting_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_connecting"):
        tm.Group([tagged("x")], max_connecting=0, connect_timeout=1, fail_fast=False)


async def test_one_direct_context_costs_the_documented_fds(no_leaked_fds: None) -> None:
    from trimitogen._group import FDS_PER_CONTEXT

    def count() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = count()
    with trio.fail_after(WAIT):
        async with tm.open_context(tm.local(python=PY)) as ctx:
            await ctx.call(rh.echo, 1)
            during = count()
    assert during - before == FDS_PER_CONTEXT


def run_with_fd_limit(soft: int, hard: int, body: str) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(
        """\
        import resource, sys, trio
        import trimitogen as tm
        resource.setrlimit(resource.RLIMIT_NOFILE, (%d, %d))
        async def main():
        %s
        trio.run(main)
        """
    ) % (soft, hard, textwrap.indent(textwrap.dedent(body), "    "))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=WAIT, env=env
    )


def test_too_many_contexts_for_the_fd_limit_fail_before_starting() -> None:
    result = run_with_fd_limit(
        100,
        100,
        """\
        try:
            async with tm.open_group(["local:///usr/bin/python3"] * 40, max_connecting=8):
                print("opened")
        except tm.FdLimitError as exc:
            print("refused:", exc)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert "opened" not in result.stdout
    assert "refused: opening 40 contexts needs about 152 file descriptors" in result.stdout
    assert "the limit (RLIMIT_NOFILE) is 100 (hard limit 100)" in result.stdout


def test_the_soft_fd_limit_is_raised_to_the_hard_one_at_first_use() -> None:
    result = run_with_fd_limit(
        64,
        4096,
        """\
        print("before", resource.getrlimit(resource.RLIMIT_NOFILE))
        async with tm.open_group(["local:///usr/bin/python3"] * 30) as group:
            results = await group.call(sum, [1, 2])
        print("after", resource.getrlimit(resource.RLIMIT_NOFILE))
        print("values", sorted({r.value for r in results}))
        """,
    )
    assert result.returncode == 0, result.stderr
    assert "before (64, 4096)" in result.stdout
    assert "after (4096, 4096)" in result.stdout
    assert "values [3]" in result.stdout
