"""fork(): contexts that start as a copy of a running one."""

from __future__ import annotations

import logging
import os

import pytest
import trio

import trimitogen as tm
from tests import remote_helpers as rh
from tests.conftest import WAIT, MasterOnly, discover_interpreters


async def test_fork_via_a_context_copies_its_state(ctx: tm.Context) -> None:
    await ctx.call(rh.set_state, "answer", 42)
    with trio.fail_after(WAIT):
        async with tm.open_context(tm.fork(), via=ctx, name="copy") as copy:
            assert await copy.call(rh.get_state, "answer") == 42
            assert await copy.call(rh.getppid) == ctx.pid
            assert copy.pid != ctx.pid
            await copy.call(rh.set_state, "answer", "changed in the copy")
            assert await ctx.call(rh.get_state, "answer") == 42
            # Its own runtime: calls, errors and async functions work as for any context.
            with pytest.raises(tm.CallError, match="in a fork"):
                await copy.call(rh.fail, "in a fork")
            assert await copy.call(rh.async_add, 1, 2) == 3


async def test_fork_without_via_uses_a_fork_server_and_preload() -> None:
    with trio.fail_after(WAIT):
        async with tm.open_context(tm.fork(preload=["tests.remote_helpers"])) as first:
            assert await first.call(eval, "'tests.remote_helpers' in __import__('sys').modules")
            async with tm.open_context(tm.fork()) as second:
                # Both are children of the same fork server, which is not the master.
                server = await first.call(os.getppid)
                assert await second.call(os.getppid) == server
                assert server != os.getpid()


async def test_forks_have_distinct_random_streams() -> None:
    with trio.fail_after(WAIT):
        async with (
            tm.open_context(tm.fork(preload=["random"])) as one,
            tm.open_context(tm.fork(preload=["random"])) as two,
        ):
            assert await one.call(rh.random_draws, 5) != await two.call(rh.random_draws, 5)


async def test_forking_a_fork(ctx: tm.Context, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trimitogen")
    with trio.fail_after(WAIT):
        async with tm.open_context(tm.fork(), via=ctx, name="f1") as f1:
            async with tm.open_context(tm.fork(), via=f1, name="f2") as f2:
                assert await f2.call(rh.getppid) == f1.pid
                await f2.call(rh.print_lines, "printed by f2")
                await f2.call(rh.run_subprocess_echo, "f2-sub")
                with trio.fail_after(WAIT):
                    while not any(
                        r.name == "trimitogen.ctx.f2.stdout" and r.getMessage() == "f2-sub"
                        for r in caplog.records
                    ):
                        await trio.sleep(0.01)
                pid = f2.pid
            assert pid is not None
            assert pid not in await f1.call(rh.child_pids)
    records = [r for r in caplog.records if r.getMessage() == "printed by f2"]
    assert [r.name for r in records] == ["trimitogen.ctx.f2.stdout"]


async def test_import_over_the_wire_in_a_fork(ctx: tm.Context, master_only: MasterOnly) -> None:
    from tests.test_import import genpkg_files

    master_only(genpkg_files())
    import genpkg.api

    async with tm.open_context(tm.fork(), via=ctx) as copy:
        assert (await copy.call(genpkg.api.run, 1))["value"] == 102


async def test_fifty_fork_cycles_leave_no_process(ctx: tm.Context) -> None:
    with trio.fail_after(WAIT * 2):
        for _ in range(50):
            async with tm.open_context(tm.fork(), via=ctx) as copy:
                assert await copy.call(rh.echo, 1) == 1
        with trio.fail_after(WAIT):
            while await ctx.call(rh.child_pids):
                await trio.sleep(0.05)


NEWER = {k: v for k, v in discover_interpreters().items() if "3.12" in k or "3.13" in k}


@pytest.mark.parametrize("label", sorted(NEWER))
async def test_fork_on_newer_pythons_with_warnings_as_errors(
    label: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The child interpreter turns every warning into an error: forking in a threaded process
    # warns on 3.12+, and the runtime must not trip over it.
    monkeypatch.setenv("PYTHONWARNINGS", "error")
    with trio.fail_after(WAIT):
        async with (
            tm.open_context(tm.local(python=NEWER[label])) as parent,
            tm.open_context(tm.fork(), via=parent) as copy,
        ):
            assert await copy.call(rh.getppid) == parent.pid
            assert await copy.call(rh.version) >= (3, 12)


async def test_a_dead_fork_server_is_replaced() -> None:
    with trio.fail_after(WAIT):
        async with tm.open_context(tm.fork()) as first:
            server = await first.call(os.getppid)
        os.kill(server, 9)
        while True:  # the master notices the server is gone
            try:
                async with tm.open_context(tm.fork()) as second:
                    new_server = await second.call(os.getppid)
                break
            except tm.Error:
                await trio.sleep(0.05)
        assert new_server != server


async def test_a_preload_that_fails_is_a_connect_error(ctx: tm.Context) -> None:
    with trio.fail_after(WAIT):
        for via in (None, ctx):
            with pytest.raises(tm.ConnectError) as info:
                async with tm.open_context(tm.fork(preload=["tmg_no_such_module"]), via=via):
                    pytest.fail("the fork must not start")
            message = str(info.value)
            assert "phase: preload" in message
            assert "tmg_no_such_module" in message
            assert isinstance(info.value.__cause__, tm.CallError)
        # The context asked to preload is still usable.
        assert await ctx.call(len, "abc") == 3


async def test_forks_beside_a_spawning_sibling_can_import(no_leaked_fds: None) -> None:
    """A fork made while the intermediate's I/O thread starts another child must not inherit
    a module lock that thread held mid-import (it then hung importing asyncio, which imports
    subprocess).  The race is timing-dependent: several rounds make it likely to show."""
    for _round in range(3):
        with trio.fail_after(WAIT):
            async with tm.open_context(tm.local(), name="mid") as mid:
                answers: list[int] = []

                async def one(method: tm.Method, answers: list[int]) -> None:
                    async with tm.open_context(method, via=mid) as child:
                        answers.append(await child.call(rh.getppid))

                async with trio.open_nursery() as nursery:
                    for _ in range(4):
                        nursery.start_soon(one, tm.fork(), answers)
                    nursery.start_soon(one, tm.local(), answers)
                assert answers == [mid.pid] * 5
