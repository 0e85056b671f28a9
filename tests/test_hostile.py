"""A hostile child cannot make the master run code, and its bad frames end only its connection."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
import trio

import trimitogen as tm
from tests import remote_helpers as rh
from tests.conftest import WAIT, MasterOnly

HOSTILE = str(Path(__file__).with_name("hostile_child.py"))

OpenHostile = Callable[[str], AbstractAsyncContextManager[tm.Context]]


@pytest.fixture
def sentinel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "pwned"
    monkeypatch.setenv("HOSTILE_SENTINEL", str(path))
    return path


@pytest.fixture
def open_hostile(no_leaked_fds: None) -> OpenHostile:
    @asynccontextmanager
    async def opener(mode: str) -> AsyncIterator[tm.Context]:
        method = tm.local(python=[sys.executable, HOSTILE, mode])
        with trio.fail_after(WAIT):
            async with tm.open_context(method, name="hostile") as ctx:
                yield ctx

    return opener


async def test_honest_fake_child_answers(open_hostile: OpenHostile) -> None:
    async with open_hostile("honest") as ctx:
        assert await ctx.call(rh.echo, 1) == "honest answer"


async def test_reply_that_would_run_code_is_refused(
    open_hostile: OpenHostile, sentinel: Path
) -> None:
    async with open_hostile("evil-reply") as ctx:
        with pytest.raises(tm.StreamError, match=r"posix\.system.*allow-list"):
            await ctx.call(rh.echo, 1)
        assert await ctx.call(rh.echo, 2) == "honest answer"
    assert not sentinel.exists()


async def test_log_message_that_would_run_code_is_dropped(
    open_hostile: OpenHostile, sentinel: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_hostile("evil-log") as ctx:
        assert await ctx.call(rh.echo, 1) == "after evil log"
    assert not sentinel.exists()
    assert any("malformed log message" in r.getMessage() for r in caplog.records)


async def test_spoofed_origin_is_dropped(
    open_hostile: OpenHostile, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trimitogen")
    async with open_hostile("spoofed-origin") as ctx:
        assert await ctx.call(rh.echo, 1) == "genuine"
    dropped = [r.getMessage() for r in caplog.records if "dropped a message" in r.getMessage()]
    assert len(dropped) == 2
    assert "claiming to come from context %d" % (ctx.context_id + 1000) in dropped[0]


async def test_malformed_reply_shape_is_a_stream_error(open_hostile: OpenHostile) -> None:
    async with open_hostile("not-a-reply") as ctx:
        with pytest.raises(tm.StreamError, match="is not a reply"):
            await ctx.call(rh.echo, 1)
        assert await ctx.call(rh.echo, 2) == "honest answer"


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("bad-magic", "bad frame header"), ("oversized", "exceeds the limit")],
)
async def test_broken_framing_disconnects_the_child(
    open_hostile: OpenHostile, mode: str, reason: str
) -> None:
    async with open_hostile(mode) as ctx:
        with pytest.raises(tm.ChannelError, match=reason):
            await ctx.call(rh.echo, 1)
        with pytest.raises(tm.ChannelError, match="break the protocol"):
            await ctx.call(rh.echo, 2)


async def test_hostile_grandchild_cannot_forge_or_claim(
    caplog: pytest.LogCaptureFixture, no_leaked_fds: None
) -> None:
    """Below an intermediate, a hostile child tries to answer other contexts' requests, to pose
    as its parent, to fake a READY and to claim ids of contexts not started yet."""
    caplog.set_level(logging.WARNING, logger="trimitogen")
    with trio.fail_after(WAIT):
        async with tm.open_context(tm.local(), name="middle") as middle:
            pid = middle.pid
            slow = trio.Event()
            answers: list[object] = []

            async def ask_middle() -> None:
                answers.append(await middle.call(rh.sleep, 1.0))
                slow.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask_middle)
                hostile = tm.local(python=[sys.executable, HOSTILE, "forge"])
                async with tm.open_context(hostile, via=middle, name="hostile") as bad:
                    # It may answer its own calls as it likes, but only its own.
                    await bad.call(rh.echo, 1)
                    # A context started after the hostile one's claims gets a claimed id ...
                    async with tm.open_context(tm.local(), via=middle, name="victim") as victim:
                        assert await victim.call(rh.echo, "mine") == "mine"
                        assert await victim.call(rh.getppid) == pid
            assert answers == [1.0]
            assert middle.pid == pid
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "claiming to come from context %d" % middle.context_id in messages
    assert "announced a context it was not asked to start" in messages


async def test_bad_requests_and_allocation_bombs_are_refused(
    open_hostile: OpenHostile, caplog: pytest.LogCaptureFixture
) -> None:
    before = set(sys.modules)
    async with open_hostile("bad-requests") as ctx:
        with pytest.raises(tm.StreamError, match="bytearray"):
            await ctx.call(rh.echo, 1)
        assert await ctx.call(rh.echo, 2) == "honest answer"
    # Asking for "distutils" ran no finder that imports things into the master.
    assert not {m for m in set(sys.modules) - before if m.startswith(("distutils", "setuptools"))}


async def test_intermediate_survives_garbage_from_below(no_leaked_fds: None) -> None:
    with trio.fail_after(WAIT):
        async with tm.open_context(tm.local(), name="middle") as middle:
            hostile = tm.local(python=[sys.executable, HOSTILE, "garbage-up"])
            async with tm.open_context(hostile, via=middle) as bad:
                assert await bad.call(rh.echo, 1) == "still standing"
            assert await middle.call(rh.echo, "alive") == "alive"


@pytest.mark.parametrize(
    ("mode", "match"),
    [
        ("smuggle-enum", "'smuggled' is not imported here"),
        ("smuggle-main", "no 'Evil'"),
        ("smuggle-value", "'smuggled.Evil': it is not registered"),
        ("smuggle-global", r"posix\.system.*allow-list"),
        ("smuggle-date", r"posix\.system.*allow-list"),
    ],
)
async def test_values_cannot_smuggle_an_import_or_a_global(
    open_hostile: OpenHostile, sentinel: Path, master_only: MasterOnly, mode: str, match: str
) -> None:
    touch = "import os, pathlib\npathlib.Path(os.environ['HOSTILE_SENTINEL']).touch()\n"
    master_only({"smuggled.py": touch})
    async with open_hostile(mode) as ctx:
        with pytest.raises(tm.StreamError, match=match):
            await ctx.call(rh.echo, 1)
        assert await ctx.call(rh.echo, 2) == "honest answer"
    assert "smuggled" not in sys.modules
    assert not sentinel.exists()
