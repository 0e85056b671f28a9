"""mitogen's worker: sections run in turn; each makes its own Broker and Router."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ..model import Job, Section, run_sync_sections


def run(job: Job, sections: Sequence[Section]) -> str:
    """Measure ``sections`` with mitogen; return its version."""
    import mitogen  # type: ignore[import-untyped]

    run_sync_sections(job, sections, lambda section: section.mitogen)
    return ".".join(str(part) for part in mitogen.__version__)


@contextlib.contextmanager
def router() -> Iterator[Any]:
    """A new Broker and Router, as ``mitogen.utils.run_with_router`` makes them.

    On exit: ``broker.shutdown(); broker.join()``, which ends every context of the router.
    """
    import mitogen.master  # type: ignore[import-untyped]

    broker = mitogen.master.Broker()
    try:
        yield mitogen.master.Router(broker)
    finally:
        broker.shutdown()
        broker.join()


def round_trips(ctx: Any, job: Job) -> list[float]:
    """Seconds of each of the plan's no-op calls (``abs(0)``) on ``ctx``, after a warm-up."""
    for _ in range(job.plan.rtt_warmup):
        ctx.call(abs, 0)
    timings = []
    for _ in range(job.plan.rtt_calls):
        t0 = time.perf_counter()
        ctx.call(abs, 0)
        timings.append(time.perf_counter() - t0)
    return timings
