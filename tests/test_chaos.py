"""Chaos: processes of a context tree are killed, stopped and continued at random while 50 tasks
call into it.  Every call ends, within a bound, with its result or a ChannelError; every re-open
ends with a context or a ConnectError; the master never hangs; nothing is left running.

Two trees: local -> local -> local (each opened ``via=`` the one above), and ssh -> sudo with the
suite's sshd and throwaway users.  Whenever a context of a tree is gone, the whole tree is closed
and opened again, so the chaos goes on against fresh processes.  The random choices come from
``random.Random(seed)``: ``TMG_CHAOS_SEED=N`` repeats a run's choices (their timing, and so what
they hit, still varies).  The seed is printed, and named in every failure.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import pytest
import trio

import trimitogen as tm
from tests import remote_helpers as rh
from tests.conftest import WAIT, _children_of, _runtime_processes
from tests.infra import SshServer, Users

#: How long the killer runs.
CHAOS_SECONDS = 10.0
#: Tasks calling into the trees.
CALLERS = 50
#: Every call ends within this, whatever the killer does (it stops a process for at most
#: STOP_MAX at a time).
CALL_BOUND = 30.0
STOP_MAX = 1.0
#: Share of the killer's actions that are SIGKILL (the others are SIGSTOP, then SIGCONT).
KILL_SHARE = 0.35
#: connect_timeout of every (re-)open.
CONNECT_TIMEOUT = 15.0
SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass
class Figures:
    seed: int
    calls: int = 0
    results: int = 0
    channel_errors: int = 0
    opens: int = 0
    connect_errors: int = 0
    kills: int = 0
    stops: int = 0
    slowest_call: float = 0.0
    slowest_what: str = ""
    unexpected: list[str] = field(default_factory=list)


@dataclass
class Tree:
    """One chain of contexts, reopened whenever one of them is gone."""

    name: str
    methods: list[tm._methods._Method]
    contexts: list[tm.Context] = field(default_factory=list)

    def pids(self) -> set[int]:
        """The processes of the tree now: each child interpreter and the tool (ssh, sudo)
        that runs it, if that is on this machine and not the master itself."""
        found = set()
        for ctx in self.contexts:
            if ctx.pid is None:
                continue
            found.add(ctx.pid)
            parent = _ppid(ctx.pid)
            if parent is not None and _comm(parent) == "sudo":
                found.add(parent)
        found |= {pid for pid in _children_of(os.getpid()) if _comm(pid) == "ssh"}
        found.discard(os.getpid())
        return found


def _ppid(pid: int) -> int | None:
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rfind(b")") + 2 :].split()[1])


def _describe(pid: int) -> str:
    """State, owner and parent of a process, for a failure message."""
    try:
        with open("/proc/%d/status" % pid) as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return "gone"
    parent = _ppid(pid) or 0
    return "state %s, uid %s, parent %d (%s)" % (
        fields.get("State", "?").strip(),
        fields.get("Uid", "?").split()[0],
        parent,
        _comm(parent),
    )


def _comm(pid: int) -> str:
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


async def keep_open(tree: Tree, figures: Figures, running: Callable[[], bool]) -> None:
    """Open the tree, wait until one of its contexts is gone, close it, and again."""
    while running():
        try:
            async with AsyncExitStack() as stack:
                via: tm.Context | None = None
                opened = []
                for level, method in enumerate(tree.methods):
                    # Bounded by connect_timeout (a cancel scope cannot be left open around
                    # a context that stays open), and the whole test by fail_after.
                    via = await stack.enter_async_context(
                        tm.open_context(
                            method,
                            via=via,
                            name="%s.%d" % (tree.name, level),
                            connect_timeout=CONNECT_TIMEOUT,
                        )
                    )
                    opened.append(via)
                figures.opens += 1
                tree.contexts = opened
                while running() and all(c.statistics().gone_reason is None for c in opened):
                    await trio.sleep(0.05)
                tree.contexts = []
        except tm.ConnectError:
            figures.connect_errors += 1
        finally:
            tree.contexts = []
        await trio.sleep(0.05)


async def call_forever(
    number: int,
    trees: list[Tree],
    rng: random.Random,
    figures: Figures,
    running: Callable[[], bool],
) -> None:
    while running():
        contexts = [ctx for tree in trees for ctx in tree.contexts]
        if not contexts:
            await trio.sleep(0.02)
            continue
        ctx = rng.choice(contexts)
        figures.calls += 1
        started = time.monotonic()
        try:
            with trio.fail_after(CALL_BOUND):
                value = await ctx.call(rh.echo, number)
        except tm.ChannelError:
            figures.channel_errors += 1
        except trio.TooSlowError:
            figures.unexpected.append("a call on %r took over %gs" % (ctx.name, CALL_BOUND))
            return
        except Exception as exc:
            figures.unexpected.append("a call on %r raised %r" % (ctx.name, exc))
        else:
            if value == number:
                figures.results += 1
            else:
                figures.unexpected.append("a call on %r returned %r" % (ctx.name, value))
        took = time.monotonic() - started
        if took > figures.slowest_call:
            figures.slowest_call = took
            figures.slowest_what = "a call on %r" % ctx.name


async def kill_at_random(
    trees: list[Tree], rng: random.Random, figures: Figures, targets: set[int]
) -> None:
    """SIGKILL, or SIGSTOP then SIGCONT, random processes of the trees; ``targets`` collects
    every process hit."""
    end = time.monotonic() + CHAOS_SECONDS
    while time.monotonic() < end:
        await trio.sleep(rng.uniform(0.05, 0.4))
        pids = sorted(set().union(*(tree.pids() for tree in trees)))
        if not pids:
            continue
        pid = rng.choice(pids)
        targets.add(pid)
        try:
            if rng.random() < KILL_SHARE:
                os.kill(pid, signal.SIGKILL)
                figures.kills += 1
            else:
                os.kill(pid, signal.SIGSTOP)
                figures.stops += 1
                await trio.sleep(rng.uniform(0.05, STOP_MAX))
                os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def continue_all(pids: set[int]) -> None:
    """SIGCONT each of ``pids`` that still exists.  One SIGCONT after each SIGSTOP does not
    always leave a process running: a stopped command makes sudo stop itself, and a process
    the killer never hit was once found stopped (see the report of issue 13's chaos test)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


@pytest.mark.timeout(CHAOS_SECONDS + 4 * WAIT)
async def test_chaos(sshd: SshServer, users: Users, no_leaked_fds: None) -> None:
    seed = int(os.environ.get("TMG_CHAOS_SEED", random.randrange(2**32)))
    print("\nchaos seed %d (TMG_CHAOS_SEED=%d repeats its choices)" % (seed, seed))
    rng = random.Random(seed)
    figures = Figures(seed)
    before = _runtime_processes()
    login = tm.ssh(
        sshd.host,
        port=sshd.port,
        username=users.sudo.name,
        ssh_args=sshd.ssh_args(),
        python=SYSTEM_PYTHON,
    )
    trees = [
        Tree("local", [tm.local(), tm.local(), tm.local()]),
        Tree("ssh", [login, tm.sudo(users.nopw.name)]),
    ]
    chaos = True
    targets: set[int] = set()

    def running() -> bool:
        return chaos

    with trio.fail_after(CHAOS_SECONDS + 2 * WAIT):
        async with trio.open_nursery() as nursery:
            for tree in trees:
                nursery.start_soon(keep_open, tree, figures, running)
            with trio.fail_after(WAIT):
                while not all(tree.contexts for tree in trees):
                    await trio.sleep(0.05)
            for number in range(CALLERS):
                nursery.start_soon(call_forever, number, trees, rng, figures, running)
            try:
                await kill_at_random(trees, rng, figures, targets)
            finally:
                continue_all(targets)
                chaos = False
    # Every process of every hop ends once its context is closed or its parent is gone.
    deadline = time.monotonic() + WAIT
    while _runtime_processes() - before and time.monotonic() < deadline:
        continue_all(targets | (_runtime_processes() - before))
        await trio.sleep(0.1)
    left = {pid: _describe(pid) for pid in sorted(_runtime_processes() - before)}
    assert not left, "seed %d: child interpreters still run: %s" % (seed, left)
    print(
        "chaos %.0fs, seed %d: %d calls (%d results, %d ChannelError), slowest %.2fs (%s); "
        "%d opens of a tree, %d ConnectError; %d SIGKILL, %d SIGSTOP/SIGCONT"
        % (
            CHAOS_SECONDS,
            seed,
            figures.calls,
            figures.results,
            figures.channel_errors,
            figures.slowest_call,
            figures.slowest_what,
            figures.opens,
            figures.connect_errors,
            figures.kills,
            figures.stops,
        )
    )
    assert not figures.unexpected, (seed, figures.unexpected[:20])
    assert figures.results > 0, figures
    assert figures.kills + figures.stops > 0, figures


async def test_calls_on_a_gone_context_let_other_tasks_run(no_leaked_fds: None) -> None:
    """A task that retries calls on a gone context in a loop must not starve the others (the
    chaos callers once froze the whole run this way: the ChannelError came without a
    checkpoint)."""
    with trio.fail_after(WAIT):
        async with tm.open_context(tm.local()) as ctx:
            await ctx.shutdown()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.sleep(0)

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tick)
            await trio.sleep(0)
            ticks = 0
            for _ in range(100):
                with pytest.raises(tm.ChannelError):
                    await ctx.call(rh.echo, 1)
                with pytest.raises(tm.ChannelError):
                    await ctx.call_no_reply(rh.echo, 1)
            assert ticks >= 100
            nursery.cancel_scope.cancel()
