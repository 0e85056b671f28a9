"""trimitogen's worker: the sections' coroutines, one after another, under one ``trio.run``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..model import Job, Section, error_text

if TYPE_CHECKING:
    import trimitogen as tm


def run(job: Job, sections: Sequence[Section]) -> str:
    """Measure ``sections`` with trimitogen; return its version."""
    # benchmarks/compare.py put this checkout first on sys.path: it is what gets measured.
    import trio

    import trimitogen as tm

    async def main() -> None:
        for section in sections:
            if section.trimitogen is None:
                job.samples.unsupported[section.name] = section.why_unsupported(job.library)
                continue
            try:
                await section.trimitogen(job)
            except Exception:
                job.samples.errors[section.name] = error_text()

    trio.run(main)
    return tm.__version__


async def round_trips(ctx: tm.Context, job: Job) -> list[float]:
    """Seconds of each of the plan's no-op calls (``abs(0)``) on ``ctx``, after a warm-up."""
    for _ in range(job.plan.rtt_warmup):
        await ctx.call(abs, 0)
    timings = []
    for _ in range(job.plan.rtt_calls):
        t0 = time.perf_counter()
        await ctx.call(abs, 0)
        timings.append(time.perf_counter() - t0)
    return timings
