"""local: start-up to the first reply, teardown, no-op round trip, 64 MiB each way."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..model import Job, Report, Section, check_length
from ..plan import LIBRARIES, MIB, PEERS, Plan
from ..tables import number, row, state
from ..workers import execnet as execnet_worker
from ..workers import mitogen as mitogen_worker
from ..workers import trimitogen as trimitogen_worker

#: execnet: echo every item back; the idiomatic fastest round trip is a long-lived channel.
EXECNET_ECHO = """
for item in channel:
    channel.send(item)
"""

#: execnet: ("get", n) returns n bytes; ("put", data) returns len(data).
EXECNET_TRANSFER = """
for op, arg in channel:
    if op == "get":
        channel.send(bytes(arg))
    else:
        channel.send(len(arg))
"""


def _keep_transfer(job: Job, index: int, times: tuple[float, float, float, float]) -> None:
    t0, t1, t2, t3 = times
    if index >= job.plan.transfer_warmup:
        job.samples.add("to_parent", t1 - t0)
        job.samples.add("to_child", t3 - t2)


async def measure_trimitogen(job: Job) -> None:
    """``open_context(local())`` and ``await ctx.call(...)``."""
    import trimitogen as tm

    plan = job.plan
    method = tm.local(python=job.python)
    for i in range(plan.startup_warmup + plan.startup_runs):
        t0 = time.perf_counter()
        async with tm.open_context(method) as ctx:
            await ctx.call(abs, 0)
            t1 = time.perf_counter()
        t2 = time.perf_counter()
        if i >= plan.startup_warmup:
            job.samples.add("startup", t1 - t0)
            job.samples.add("teardown", t2 - t1)
    async with tm.open_context(method) as ctx:
        job.samples.extend("rtt", await trimitogen_worker.round_trips(ctx, job))
        for i in range(plan.transfer_warmup + plan.transfer_runs):
            t0 = time.perf_counter()
            data: bytes = await ctx.call(bytes, plan.nbytes)
            t1 = time.perf_counter()
            check_length("child->parent", len(data), plan.nbytes)
            t2 = time.perf_counter()
            n: int = await ctx.call(len, data)
            t3 = time.perf_counter()
            check_length("parent->child", n, plan.nbytes)
            del data
            _keep_transfer(job, i, (t0, t1, t2, t3))


def measure_mitogen(job: Job) -> None:
    """``router.local(...)`` and ``context.call(...)``; a new Broker and Router per start-up,
    torn down with ``broker.shutdown(); broker.join()``."""
    plan = job.plan
    for i in range(plan.startup_warmup + plan.startup_runs):
        t0 = time.perf_counter()
        with mitogen_worker.router() as router:
            ctx = router.local(python_path=job.python)
            ctx.call(abs, 0)
            t1 = time.perf_counter()
        t2 = time.perf_counter()
        if i >= plan.startup_warmup:
            job.samples.add("startup", t1 - t0)
            job.samples.add("teardown", t2 - t1)
    with mitogen_worker.router() as router:
        ctx = router.local(python_path=job.python)
        job.samples.extend("rtt", mitogen_worker.round_trips(ctx, job))
        for i in range(plan.transfer_warmup + plan.transfer_runs):
            t0 = time.perf_counter()
            data = ctx.call(bytes, plan.nbytes)
            t1 = time.perf_counter()
            check_length("child->parent", len(data), plan.nbytes)
            t2 = time.perf_counter()
            n = ctx.call(len, data)
            t3 = time.perf_counter()
            check_length("parent->child", int(n), plan.nbytes)
            del data
            _keep_transfer(job, i, (t0, t1, t2, t3))


def measure_execnet(job: Job) -> None:
    """The first call is a ``remote_exec`` whose channel sends one item; round trips and
    transfers use one long-lived channel each; teardown is ``group.terminate()``."""
    plan = job.plan
    spec = execnet_worker.local_spec(job)
    for i in range(plan.startup_warmup + plan.startup_runs):
        with execnet_worker.group() as group:
            t0 = time.perf_counter()
            gw = group.makegateway(spec)
            channel = gw.remote_exec("channel.send(abs(0))")
            channel.receive()
            t1 = time.perf_counter()
        t2 = time.perf_counter()
        if i >= plan.startup_warmup:
            job.samples.add("startup", t1 - t0)
            job.samples.add("teardown", t2 - t1)
    with execnet_worker.group() as group:
        gw = group.makegateway(spec)
        echo = gw.remote_exec(EXECNET_ECHO)
        for _ in range(plan.rtt_warmup):
            echo.send(0)
            echo.receive()
        for _ in range(plan.rtt_calls):
            t0 = time.perf_counter()
            echo.send(0)
            echo.receive()
            job.samples.add("rtt", time.perf_counter() - t0)
        echo.close()
        echo.waitclose(timeout=execnet_worker.TERMINATE_TIMEOUT)
        transfer = gw.remote_exec(EXECNET_TRANSFER)
        for i in range(plan.transfer_warmup + plan.transfer_runs):
            t0 = time.perf_counter()
            transfer.send(("get", plan.nbytes))
            data = transfer.receive()
            t1 = time.perf_counter()
            check_length("child->parent", len(data), plan.nbytes)
            t2 = time.perf_counter()
            transfer.send(("put", data))
            n = transfer.receive()
            t3 = time.perf_counter()
            check_length("parent->child", int(n), plan.nbytes)
            del data
            _keep_transfer(job, i, (t0, t1, t2, t3))
        transfer.close()
        transfer.waitclose(timeout=execnet_worker.TERMINATE_TIMEOUT)


# --------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True)
class Summary:
    """Medians of one library's samples, in the units the table prints."""

    startup_ms: float
    teardown_ms: float
    rtt_us: float
    to_parent_mibs: float
    to_child_mibs: float
    rtt_p10_us: float
    rtt_p90_us: float


def summarize(job_samples: dict[str, list[float]], nbytes: int) -> Summary:
    mib = nbytes / MIB
    rtt = job_samples["rtt"]
    deciles = statistics.quantiles(rtt, n=10) if len(rtt) > 1 else rtt * 9
    return Summary(
        startup_ms=statistics.median(job_samples["startup"]) * 1e3,
        teardown_ms=statistics.median(job_samples["teardown"]) * 1e3,
        rtt_us=statistics.median(rtt) * 1e6,
        to_parent_mibs=mib / statistics.median(job_samples["to_parent"]),
        to_child_mibs=mib / statistics.median(job_samples["to_child"]),
        rtt_p10_us=deciles[0] * 1e6,
        rtt_p90_us=deciles[-1] * 1e6,
    )


COLUMNS = (
    # (attribute, header, unit)
    ("startup_ms", "start-up", "ms"),
    ("teardown_ms", "teardown", "ms"),
    ("rtt_us", "round trip", "us"),
    ("to_parent_mibs", "child->parent", "MiB/s"),
    ("to_child_mibs", "parent->child", "MiB/s"),
)


def format_table(summaries: dict[str, Summary], failed: Sequence[str]) -> list[str]:
    lines = [
        row("library", [header for _, header, _ in COLUMNS]),
        row("", [unit for _, _, unit in COLUMNS]),
    ]
    for library in LIBRARIES:
        if library in summaries:
            summary = summaries[library]
            lines.append(row(library, [number(getattr(summary, a)) for a, _, _ in COLUMNS]))
        elif library in failed:
            lines.append(row(library, ["failed"] * len(COLUMNS)))
    base = summaries.get("trimitogen")
    if base is not None:
        for peer in PEERS:
            if peer in summaries:
                cells = [
                    "%.2fx" % (getattr(summaries[peer], a) / getattr(base, a))
                    for a, _, _ in COLUMNS
                ]
                lines.append(row("%s/trimitogen" % peer, cells))
    return lines


def _target(what: str, value: float, op: str, limit: float, unit: str, basis: str) -> str:
    ok = value < limit if op == "<" else value >= limit
    return "  %-38s %10.1f %-5s %2s %8.1f %-5s  %-8s %s" % (
        what,
        value,
        unit,
        op,
        limit,
        unit,
        "MET" if ok else "NOT MET",
        basis,
    )


def format_targets(summaries: dict[str, Summary]) -> list[str]:
    """The design targets for trimitogen, each MET, NOT MET or not evaluated."""
    base = summaries.get("trimitogen")
    execnet = summaries.get("execnet")
    lines = []
    for what, attr, fraction, unit in (
        ("start-up < 1/2 of execnet's", "startup_ms", 0.5, "ms"),
        ("round trip < 3/4 of execnet's", "rtt_us", 0.75, "us"),
    ):
        if base is None or execnet is None:
            lines.append("  %-38s not evaluated (needs trimitogen and execnet)" % what)
            continue
        peer_value = getattr(execnet, attr)
        basis = "(execnet: %.1f %s)" % (peer_value, unit)
        lines.append(_target(what, getattr(base, attr), "<", peer_value * fraction, unit, basis))
    for attr, direction in (
        ("to_parent_mibs", "child->parent"),
        ("to_child_mibs", "parent->child"),
    ):
        what = "%s >= 3x the better peer's" % direction
        peers = [(getattr(summaries[peer], attr), peer) for peer in PEERS if peer in summaries]
        if base is None or not peers:
            lines.append("  %-38s not evaluated (needs trimitogen and a peer)" % what)
            continue
        best, name = max(peers)
        basis = "(%s: %.1f MiB/s)" % (name, best)
        lines.append(_target(what, getattr(base, attr), ">=", 3 * best, "MiB/s", basis))
    return lines


def report(rep: Report) -> list[str]:
    summaries: dict[str, Summary] = {}
    failed: list[str] = []
    for library, outcome in rep.outcomes.items():
        if state(outcome, "local") is not None:
            failed.append(library)
            continue
        assert outcome.samples is not None
        summaries[library] = summarize(outcome.samples.series, rep.plan.nbytes)
    lines = ["local: start-up, teardown, round trip, 64 MiB transfers", ""]
    lines += format_table(summaries, failed)
    lines += [
        "",
        "ratio = peer's value / trimitogen's: for ms and us above 1 means trimitogen is faster,",
        "for MiB/s below 1 means trimitogen is faster.",
    ]
    if summaries:
        lines += ["", "round-trip spread (p10 / median / p90, us):"]
        for library, summary in summaries.items():
            lines.append(
                "  %-18s %8.1f / %8.1f / %8.1f"
                % (library, summary.rtt_p10_us, summary.rtt_us, summary.rtt_p90_us)
            )
    lines += ["", "design targets for trimitogen (informational; timings never fail this script):"]
    lines += format_targets(summaries)
    return lines


def header(plan: Plan) -> list[str]:
    return [
        "start-up: median of %d runs (+%d warm-up); round trip: median of %d calls "
        "(+%d warm-up); transfers: median of %d (+%d warm-up) x %d MiB"
        % (
            plan.startup_runs,
            plan.startup_warmup,
            plan.rtt_calls,
            plan.rtt_warmup,
            plan.transfer_runs,
            plan.transfer_warmup,
            plan.nbytes // MIB,
        )
    ]


SECTION = Section(
    name="local",
    report=report,
    trimitogen=measure_trimitogen,
    mitogen=measure_mitogen,
    execnet=measure_execnet,
    header=header,
)
