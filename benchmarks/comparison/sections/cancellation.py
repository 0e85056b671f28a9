"""cancellation: giving up on a busy remote call, and closing a context under cancellation.

trimitogen cancels the remote call: the next call is answered as soon as the child has seen the
cancel.  Neither peer can stop remote sync code: mitogen's next call queues behind the abandoned
one, and execnet's runs beside it in another thread while the abandoned one goes on.  For them
the remote work is a shorter sleep (PEER_SLEEP), and the table shows what the user waits.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any

from ..model import Job, Report, Section, error_text
from ..tables import SECTION_LABEL_WIDTH, number, ratio, row, state
from ..workers import execnet as execnet_worker
from ..workers import mitogen as mitogen_worker

#: trimitogen's remote sleep: it is cancelled long before.
TRIMITOGEN_SLEEP = 30.0
#: The peers' remote sleep: they wait for it to end.
PEER_SLEEP = 2.0
#: How long the call runs before the caller gives up.
GIVE_UP_AFTER = 0.2
RUNS = {True: 2, False: 7}
DEPTHS = (1, 2, 3)


async def measure_trimitogen(job: Job) -> None:
    import trio

    import trimitogen as tm

    runs = RUNS[job.plan.quick]

    async def chain(stack: contextlib.AsyncExitStack, depth: int) -> tm.Context:
        ctx = await stack.enter_async_context(tm.open_context(tm.local(python=job.python)))
        for _ in range(depth - 1):
            ctx = await stack.enter_async_context(
                tm.open_context(tm.local(python=job.python), via=ctx)
            )
        return ctx

    async def next_call_after_cancel(depth: int) -> float:
        async with contextlib.AsyncExitStack() as stack:
            ctx = await chain(stack, depth)
            with trio.move_on_after(GIVE_UP_AFTER):
                await ctx.call(time.sleep, TRIMITOGEN_SLEEP)
            t0 = time.perf_counter()
            await ctx.call(abs, 0)
            return time.perf_counter() - t0

    async def close(depth: int, cancelled: bool) -> float:
        marks: list[float] = []  # when the scope was cancelled, or the last reply arrived
        with trio.CancelScope() as scope:
            async with contextlib.AsyncExitStack() as stack:
                ctx = await chain(stack, depth)
                await ctx.call(abs, 0)
                if cancelled:
                    # The block ends because its scope was cancelled while a call ran.
                    async def cancel_soon() -> None:
                        await trio.sleep(GIVE_UP_AFTER)
                        marks.append(time.perf_counter())
                        scope.cancel()

                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(cancel_soon)
                        await ctx.call(time.sleep, TRIMITOGEN_SLEEP)
                else:
                    marks.append(time.perf_counter())
        return time.perf_counter() - marks[0]

    try:
        for depth in (1, 3):
            for _ in range(runs):
                job.samples.add("next_%d" % depth, await next_call_after_cancel(depth))
        for depth in DEPTHS:
            for _ in range(runs):
                job.samples.add("close_%d" % depth, await close(depth, False))
                job.samples.add("close_cancelled_%d" % depth, await close(depth, True))
    except Exception:
        job.samples.errors["cancellation"] = error_text()


def _give_up(start: Any, wait_next: Any) -> float:
    start()
    time.sleep(GIVE_UP_AFTER)
    t0 = time.perf_counter()
    wait_next()
    return time.perf_counter() - t0


def measure_mitogen(job: Job) -> None:
    """``call_async(time.sleep, PEER_SLEEP)``, abandoned after GIVE_UP_AFTER; then ``call``."""
    with mitogen_worker.router() as router:
        try:
            for depth in (1, 3):
                for _ in range(RUNS[job.plan.quick]):
                    ctx = router.local(python_path=job.python)
                    first = ctx
                    for _ in range(depth - 1):
                        ctx = router.local(python_path=job.python, via=ctx)
                    ctx.call(abs, 0)
                    job.samples.add(
                        "next_%d" % depth,
                        _give_up(
                            lambda c=ctx: c.call_async(time.sleep, PEER_SLEEP),
                            lambda c=ctx: c.call(abs, 0),
                        ),
                    )
                    first.shutdown(wait=True)
        except Exception:
            job.samples.errors["cancellation"] = error_text()


def measure_execnet(job: Job) -> None:
    """``remote_exec("time.sleep(PEER_SLEEP)")`` abandoned after GIVE_UP_AFTER, then another
    ``remote_exec`` answered (execnet runs it in another thread: it does not queue)."""
    with execnet_worker.group() as group:
        try:
            for _ in range(RUNS[job.plan.quick]):
                gw = group.makegateway(execnet_worker.local_spec(job))
                gw.remote_exec("channel.send(1)").receive()
                channels: list[Any] = []
                job.samples.add(
                    "next_1",
                    _give_up(
                        lambda g=gw, channels=channels: channels.append(
                            g.remote_exec("import time; time.sleep(%r)" % PEER_SLEEP)
                        ),
                        lambda g=gw: g.remote_exec("channel.send(abs(0))").receive(),
                    ),
                )
                t0 = time.perf_counter()
                channels[0].waitclose()
                job.samples.add("still_running_1", time.perf_counter() - t0)
                gw.exit()
        except Exception:
            job.samples.errors["cancellation"] = error_text()


# --------------------------------------------------------------------------------------------
# The table


def _median_ms(outcome: Any, key: str) -> float | None:
    if state(outcome, "cancellation") is not None:
        return None
    values = outcome.samples.get(key)
    return statistics.median(values) * 1e3 if values else None


def _cell(value: float | None) -> str:
    return "-" if value is None else number(value)


def report(rep: Report) -> list[str]:
    width = SECTION_LABEL_WIDTH
    lines = [
        "cancellation: a remote time.sleep given up after %.1f s, until the next call is "
        "answered; closing a" % GIVE_UP_AFTER,
        "chain of local contexts normally and when its scope is cancelled mid-call; median of "
        "%d runs, ms" % RUNS[rep.plan.quick],
        "",
        row("", ["depth 1", "depth 3"], width),
    ]
    base: dict[str, float | None] = {}
    for library, outcome in rep.outcomes.items():
        why = state(outcome, "cancellation")
        if why is not None:
            lines.append(("next call, " + library).ljust(width) + why)
            continue
        cells = [_median_ms(outcome, "next_%d" % depth) for depth in (1, 3)]
        if library == "trimitogen":
            base = {"1": cells[0], "3": cells[1]}
        lines.append(row("next call, " + library, [_cell(c) for c in cells], width))
        if library != "trimitogen" and base:
            ratios = [
                ratio(c, b) if c is not None and b is not None else "-"
                for c, b in zip(cells, (base["1"], base["3"]), strict=True)
            ]
            lines.append(row("  %s/trimitogen" % library, ratios, width))
        running = _median_ms(outcome, "still_running_1")
        if running is not None:
            lines.append(
                "  %s's abandoned call went on for another %s ms" % (library, number(running))
            )
    trimitogen = rep.outcomes.get("trimitogen")
    if trimitogen is not None and state(trimitogen, "cancellation") is None:
        lines += ["", row("close", ["depth %d" % d for d in DEPTHS], width)]
        for label, key in (("normal", "close_%d"), ("cancelled", "close_cancelled_%d")):
            cells = [_median_ms(trimitogen, key % d) for d in DEPTHS]
            lines.append(row("trimitogen, " + label, [_cell(c) for c in cells], width))
    lines += [
        "",
        "trimitogen's remote sleep is %.0f s and is cancelled in the child (the next call does "
        "not wait for it);" % TRIMITOGEN_SLEEP,
        "the peers cannot stop remote sync code, so theirs is %.0f s: mitogen's next call "
        "queues behind it" % PEER_SLEEP,
        "(the user waits for the rest of the sleep), execnet runs the next remote_exec in "
        "another thread while",
        "the abandoned one goes on. Closing: from the scope's cancel (or the last reply) until "
        "the block is left.",
    ]
    return lines


SECTION = Section(
    name="cancellation",
    report=report,
    trimitogen=measure_trimitogen,
    mitogen=measure_mitogen,
    execnet=measure_execnet,
)
