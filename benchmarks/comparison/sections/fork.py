"""fork: a forked copy of a running interpreter, from a started context and without via."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

from ..model import Job, Report, Section, error_text
from ..tables import SECTION_LABEL_WIDTH, number, ratio, row, state
from ..workers import mitogen as mitogen_worker
from ..workers import trimitogen as trimitogen_worker

#: The rows: (label, error key, Samples key prefix) per library; the first row of each is the
#: via= variant, where a started local context forks itself; the second forks without via
#: (trimitogen: from its fork server; mitogen: the master forks itself).
VARIANTS = {
    "trimitogen": (
        ("trimitogen, via=local", "fork, via=", "fork_via"),
        ("trimitogen, fork server", "fork, no via", "fork"),
    ),
    "mitogen": (
        ("mitogen, via=local", "fork, via=", "fork_via"),
        ("mitogen, master forks", "fork, no via", "fork"),
    ),
}


def _check_fork(pid: int, not_pids: set[int]) -> None:
    if pid in not_pids:
        raise RuntimeError("the forked context runs in process %d, not in a new one" % pid)


def _keep(job: Job, prefix: str, runs: Sequence[tuple[float, float]], rtt: Sequence[float]) -> None:
    """Store one variant: its first run apart, then (after the warm-up) open and close."""
    job.samples.add(prefix + "_first", runs[0][0])
    for opened, closed in runs[1 + job.plan.fork_warmup :]:
        job.samples.add(prefix + "_open", opened)
        job.samples.add(prefix + "_close", closed)
    job.samples.extend(prefix + "_rtt", rtt)


async def measure_trimitogen(job: Job) -> None:
    """``open_context(fork(), via=parent)`` and ``open_context(fork())``."""
    import trimitogen as tm

    async def once(via: tm.Context | None) -> tuple[float, float]:
        """Fork (from ``via``, or from the fork server) until the first reply; then close."""
        t0 = time.perf_counter()
        async with tm.open_context(tm.fork(), via=via) as ctx:
            await ctx.call(abs, 0)
            t1 = time.perf_counter()
        return t1 - t0, time.perf_counter() - t1

    async def rtt(via: tm.Context | None, not_pids: set[int]) -> list[float]:
        async with tm.open_context(tm.fork(), via=via) as ctx:
            _check_fork(await ctx.call(os.getpid), not_pids)
            return await trimitogen_worker.round_trips(ctx, job)

    async def variant(key: str, prefix: str, via: tm.Context | None, pids: set[int]) -> None:
        # The first fork without via also starts the run's fork server: kept apart as "first".
        try:
            count = 1 + job.plan.fork_warmup + job.plan.fork_runs
            runs = [await once(via) for _ in range(count)]
            timings = await rtt(via, pids)
        except Exception:
            job.samples.errors[key] = error_text()
            return
        _keep(job, prefix, runs, timings)

    (_, via_key, via_prefix), (_, key, prefix) = VARIANTS["trimitogen"]
    async with tm.open_context(tm.local(python=job.python)) as parent:
        pids = {os.getpid(), await parent.call(os.getpid)}
        await variant(via_key, via_prefix, parent, pids)
    await variant(key, prefix, None, {os.getpid()})


def measure_mitogen(job: Job) -> None:
    """``router.fork(via=local_ctx)`` (the local context forks) and ``router.fork()``
    (mitogen.fork: the master process forks itself), each closed with
    ``ctx.shutdown(wait=True)``; one Broker and Router for the whole section."""
    with mitogen_worker.router() as router:

        def once(via: Any) -> tuple[float, float]:
            t0 = time.perf_counter()
            ctx = router.fork(via=via)
            ctx.call(abs, 0)
            t1 = time.perf_counter()
            ctx.shutdown(wait=True)
            return t1 - t0, time.perf_counter() - t1

        def rtt(via: Any, not_pids: set[int]) -> list[float]:
            ctx = router.fork(via=via)
            try:
                _check_fork(int(ctx.call(os.getpid)), not_pids)
                return mitogen_worker.round_trips(ctx, job)
            finally:
                ctx.shutdown(wait=True)

        def variant(key: str, prefix: str, via: Any, pids: set[int]) -> None:
            # The first fork via= also upgrades the local context to a parent: kept apart.
            try:
                runs = [once(via) for _ in range(1 + job.plan.fork_warmup + job.plan.fork_runs)]
                timings = rtt(via, pids)
            except Exception:
                job.samples.errors[key] = error_text()
                return
            _keep(job, prefix, runs, timings)

        (_, via_key, via_prefix), (_, key, prefix) = VARIANTS["mitogen"]
        parent = router.local(python_path=job.python)
        pids = {os.getpid(), int(parent.call(os.getpid))}
        variant(via_key, via_prefix, parent, pids)
        parent.shutdown(wait=True)
        variant(key, prefix, None, {os.getpid()})


# --------------------------------------------------------------------------------------------
# The table

COLUMNS = (("open+call", "ms"), ("close", "ms"), ("first", "ms"), ("round trip", "us"))


def report(rep: Report) -> list[str]:
    plan = rep.plan
    width = SECTION_LABEL_WIDTH
    lines = [
        "fork: a forked copy, fork until the reply to its first no-op call, close, round trip;",
        "median of %d (+1 first, +%d warm-up); round trip: median of %d calls (+%d warm-up)"
        % (plan.fork_runs, plan.fork_warmup, plan.rtt_calls, plan.rtt_warmup),
        "",
        row("", [header for header, _ in COLUMNS], width),
        row("", [unit for _, unit in COLUMNS], width),
    ]
    values: dict[str, list[list[float]]] = {}  # library -> one row of medians per variant
    for library, outcome in rep.outcomes.items():
        if library not in VARIANTS:
            lines.append(library.ljust(width) + (state(outcome, "fork") or "n/a"))
            continue
        for label, key, prefix in VARIANTS[library]:
            why = state(outcome, "fork") or state(outcome, key)
            if why is not None:
                lines.append(label.ljust(width) + why)
                values.setdefault(library, []).append([])
                continue
            assert outcome.samples is not None
            samples = outcome.samples
            medians = [
                statistics.median(samples.get(prefix + "_open")) * 1e3,
                statistics.median(samples.get(prefix + "_close")) * 1e3,
                samples.get(prefix + "_first")[0] * 1e3,
                statistics.median(samples.get(prefix + "_rtt")) * 1e6,
            ]
            values.setdefault(library, []).append(medians)
            lines.append(row(label, [number(value) for value in medians], width))
    base = values.get("trimitogen")
    peer = values.get("mitogen")
    if base is not None and peer is not None:
        for basis, mine, theirs in zip(
            ("mitogen/trimitogen, via=", "mitogen/trimitogen, no via"), base, peer, strict=True
        ):
            if mine and theirs:
                cells = [ratio(p, b) for p, b in zip(theirs, mine, strict=True)]
                lines.append(row(basis, cells, width))
    if base is not None and len(base) > 1 and base[1]:
        opened, _, first, _ = base[1]
        lines += [
            "",
            "trimitogen's fork server: the run's first fork() without via took %s ms, %s ms more"
            % (number(first), number(first - opened)),
            "than a fork from the started server (the server's own start).",
        ]
    lines += [
        "",
        "open+call: fork until the reply to ctx.call(abs, 0); close: from that reply until the",
        "copy is gone (trimitogen: leaving open_context; mitogen: ctx.shutdown(wait=True));",
        "first: the variant's first fork of the run (open+call, one sample, not in the median);",
        "round trip: one no-op call on a forked context. via=local: a local context, started",
        "once, forks itself (open_context(fork(), via=ctx); router.fork(via=ctx)), the copy is",
        "its child. trimitogen's master never forks: fork() without via copies the run's fork",
        "server (a local context), whose own start is in that row's first. mitogen.fork without",
        "via forks the master process itself (one hop less for every call). The first via= fork",
        "of mitogen also makes the local context a parent (upgrade_router).",
    ]
    return lines


SECTION = Section(
    name="fork",
    report=report,
    trimitogen=measure_trimitogen,
    mitogen=measure_mitogen,
    unsupported={
        "execnet": "execnet has no fork method (every gateway starts a new interpreter: "
        "popen, ssh, socket)",
    },
)
