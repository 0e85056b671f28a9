"""import: the first call into a package that only the master has (generated: package.py)."""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

from ..model import Job, Report, Section
from ..package import PACKAGE_ARG, MasterOnlyPackages, master_only_packages, package_files
from ..plan import PEERS
from ..tables import SECTION_LABEL_WIDTH, number, ratio, row, state
from ..workers import mitogen as mitogen_worker

#: The Samples keys of one row: first call, 2nd context, start-up+call, and the import counters
#: ([requests, modules sent, bytes sent, master seconds] per run).
KEYS = ("package_call", "package_call_warm", "package_startup", "import_stats")


async def _trimitogen_call(
    method: Any, packages: MasterOnlyPackages
) -> tuple[float, float, list[float]]:
    """First call on a started context, then on a second one (the master's cache warm)."""
    import trimitogen as tm

    fn, expected = packages.new()
    timings = []
    stats: list[float] = []
    for _ in range(2):
        async with tm.open_context(method) as ctx:
            await ctx.call(abs, 0)
            t0 = time.perf_counter()
            result = await ctx.call(fn, PACKAGE_ARG)
            timings.append(time.perf_counter() - t0)
            got = ctx.import_stats
        packages.check(result, expected)
        stats = stats or [got.requests, got.modules_sent, got.bytes_sent, got.seconds]
    return timings[0], timings[1], stats


async def _trimitogen_startup(method: Any, packages: MasterOnlyPackages) -> float:
    import trimitogen as tm

    fn, expected = packages.new()
    t0 = time.perf_counter()
    async with tm.open_context(method) as ctx:
        result = await ctx.call(fn, PACKAGE_ARG)
        t1 = time.perf_counter()
    packages.check(result, expected)
    return t1 - t0


async def measure_trimitogen(job: Job) -> None:
    """Compiled code (the default) and source only (``RESPONDER.send_code = False``),
    interleaved run by run."""
    import trimitogen as tm
    from trimitogen._context import RESPONDER

    method = tm.local(python=job.python)
    variants = [(True, "")]
    if hasattr(RESPONDER, "send_code"):
        variants.append((False, "_source"))
    else:
        job.samples.unsupported["import-source"] = (
            "trimitogen._context.RESPONDER has no send_code attribute"
        )
    plan = job.plan
    with master_only_packages() as packages:
        for i in range(plan.package_warmup + plan.package_runs):
            for send_code, suffix in variants:
                RESPONDER.send_code = send_code
                try:
                    call, warm, run_stats = await _trimitogen_call(method, packages)
                    startup = await _trimitogen_startup(method, packages)
                finally:
                    RESPONDER.send_code = True
                if i >= plan.package_warmup:
                    for key, value in zip(KEYS, (call, warm, startup, run_stats), strict=True):
                        job.samples.add(key + suffix, value)


def measure_mitogen(job: Job) -> None:
    """A new Broker and Router per run, so each run starts with a cold module responder."""
    python = job.python

    def call_once(packages: MasterOnlyPackages) -> tuple[float, float, list[float]]:
        """First call on a started context, then on a second one of the same router (its
        responder's cache warm)."""
        fn, expected = packages.new()
        timings = []
        stats: list[float] = []
        with mitogen_worker.router() as router:
            for _ in range(2):
                ctx = router.local(python_path=python)
                ctx.call(abs, 0)
                t0 = time.perf_counter()
                result = ctx.call(fn, PACKAGE_ARG)
                timings.append(time.perf_counter() - t0)
                packages.check(result, expected)
                responder = router.responder
                stats = stats or [
                    responder.get_module_count,
                    responder.good_load_module_count,
                    responder.good_load_module_size,
                    responder.get_module_secs,
                ]
                ctx.shutdown(wait=True)
        return timings[0], timings[1], stats

    def startup_once(packages: MasterOnlyPackages) -> float:
        fn, expected = packages.new()
        t0 = time.perf_counter()
        with mitogen_worker.router() as router:
            ctx = router.local(python_path=python)
            result = ctx.call(fn, PACKAGE_ARG)
            t1 = time.perf_counter()
        packages.check(result, expected)
        return t1 - t0

    plan = job.plan
    with master_only_packages() as packages:
        for i in range(plan.package_warmup + plan.package_runs):
            call, warm, stats = call_once(packages)
            startup = startup_once(packages)
            if i >= plan.package_warmup:
                for key, value in zip(KEYS, (call, warm, startup, stats), strict=True):
                    job.samples.add(key, value)


# --------------------------------------------------------------------------------------------
# The table

IMPORT_WIDTH = 14
IMPORT_COLUMNS = (
    ("first call", "ms"),
    ("2nd context", "ms"),
    ("start-up+call", "ms"),
    ("requests", ""),
    ("modules", ""),
    ("sent", "KiB"),
    ("master time", "ms"),
)


def _cells(
    calls: list[float], warm_calls: list[float], startups: list[float], stats: list[list[float]]
) -> list[str]:
    columns = list(zip(*stats, strict=True)) if stats else [[math.nan]] * 4
    requests, modules, sent, seconds = (statistics.median(column) for column in columns)
    return [
        number(statistics.median(calls) * 1e3),
        number(statistics.median(warm_calls) * 1e3),
        number(statistics.median(startups) * 1e3),
        "%.0f" % requests,
        "%.0f" % modules,
        number(sent / 1024),
        number(seconds * 1e3),
    ]


def report(rep: Report) -> list[str]:
    plan = rep.plan
    files = package_files("pkg")
    source_kib = sum(len(text.encode()) for text in files.values()) / 1024
    width = SECTION_LABEL_WIDTH
    lines = [
        "first call into a master-only package: %d modules (relative imports, one subpackage), "
        "%.0f KiB of source," % (len(files), source_kib),
        "on the master's sys.path only; a fresh copy per run; median of %d (+%d warm-up)"
        % (plan.package_runs, plan.package_warmup),
        "",
        row("library", [header for header, _ in IMPORT_COLUMNS], width, IMPORT_WIDTH),
        row("", [unit for _, unit in IMPORT_COLUMNS], width, IMPORT_WIDTH),
    ]
    times: dict[str, list[float]] = {}
    for library, outcome in rep.outcomes.items():
        rows = [(library, "import", "")]
        if library == "trimitogen":
            rows.append(("trimitogen, source only", "import-source", "_source"))
        for label, key, suffix in rows:
            why = state(outcome, "import") or state(outcome, key)
            if why is not None:
                lines.append(label.ljust(width) + why)
                continue
            assert outcome.samples is not None
            call, warm, startup, stats = (outcome.samples.get(k + suffix) for k in KEYS)
            lines.append(row(label, _cells(call, warm, startup, stats), width, IMPORT_WIDTH))
            times[label] = [statistics.median(t) for t in (call, warm, startup)]
    base = times.get("trimitogen")
    if base is not None:
        for label, basis in [(peer, peer + "/trimitogen") for peer in PEERS] + [
            ("trimitogen, source only", "source only/compiled")
        ]:
            if label in times:
                cells = [ratio(peer, mine) for peer, mine in zip(times[label], base, strict=True)]
                lines.append(row(basis, cells, width, IMPORT_WIDTH))
    lines += [
        "",
        "first call: on a context already started (and answering a no-op), the master serving",
        "this copy of the package for the first time; 2nd context: the same on a second context",
        "after the first has gone, the master's module cache warm; start-up+call: spawn until",
        "the first call into a fresh copy returns. Requests, modules, KiB and master time (first",
        "context) are each library's own count: trimitogen's ctx.import_stats (source plus",
        "compiled code, as sent); mitogen's responder counters (GET_MODULE messages, LOAD_MODULE",
        "messages and their compressed payload bytes, get_module_secs). 'source only':",
        "trimitogen with RESPONDER.send_code = False, so the child compiles every module itself.",
    ]
    return lines


SECTION = Section(
    name="import",
    report=report,
    trimitogen=measure_trimitogen,
    mitogen=measure_mitogen,
    unsupported={
        "execnet": "execnet serves no modules (a child imports only what is installed where it "
        "runs)",
    },
)
