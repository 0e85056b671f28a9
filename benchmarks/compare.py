"""Compare trimitogen with mitogen and execnet, side by side in one run.

Each library is measured in a subprocess of its own (mitogen installs signal and fork handlers
and starts threads; Trio must not share a process with it), which writes its raw samples as
JSON; this script then prints one table with absolute numbers, ratios relative to trimitogen and
whether the design targets are met.  Timings never make the script fail: it exits non-zero only
if a measurement could not be taken at all.

Run ``python benchmarks/compare.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

LIBRARIES = ("trimitogen", "mitogen", "execnet")
PEERS = ("mitogen", "execnet")
MIB = 1024 * 1024
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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


@dataclass(frozen=True)
class Plan:
    """How many times each measurement runs; warm-up runs are not counted."""

    startup_runs: int
    startup_warmup: int
    rtt_calls: int
    rtt_warmup: int
    transfer_runs: int
    transfer_warmup: int
    nbytes: int = 64 * MIB


FULL_PLAN = Plan(
    startup_runs=15,
    startup_warmup=1,
    rtt_calls=5000,
    rtt_warmup=200,
    transfer_runs=5,
    transfer_warmup=1,
)
QUICK_PLAN = Plan(
    startup_runs=2,
    startup_warmup=0,
    rtt_calls=100,
    rtt_warmup=10,
    transfer_runs=1,
    transfer_warmup=0,
)


@dataclass
class Samples:
    """Raw measurements of one library, all in seconds."""

    startup: list[float] = field(default_factory=list)  # spawn until the first reply
    teardown: list[float] = field(default_factory=list)  # shutdown until the child is gone
    rtt: list[float] = field(default_factory=list)  # one no-op call each
    to_parent: list[float] = field(default_factory=list)  # one child->parent transfer each
    to_child: list[float] = field(default_factory=list)  # one parent->child transfer each


# --------------------------------------------------------------------------------------------
# Workers: each runs in its own subprocess and imports only its own library.
# --------------------------------------------------------------------------------------------


def _check_length(what: str, got: int, want: int) -> None:
    if got != want:
        raise RuntimeError("%s: expected %d bytes, got %d" % (what, want, got))


def bench_trimitogen(python: str, plan: Plan) -> tuple[str, Samples]:
    """Measure trimitogen: ``open_context(local(...))`` and ``await ctx.call(...)``."""
    sys.path.insert(0, REPO_ROOT)  # measure this checkout, installed or not
    import trio

    import trimitogen as tm

    samples = Samples()
    method = tm.local(python=python)

    async def startup_once(keep: bool) -> None:
        t0 = time.perf_counter()
        async with tm.open_context(method) as ctx:
            await ctx.call(abs, 0)
            t1 = time.perf_counter()
        t2 = time.perf_counter()
        if keep:
            samples.startup.append(t1 - t0)
            samples.teardown.append(t2 - t1)

    async def main() -> None:
        for i in range(plan.startup_warmup + plan.startup_runs):
            await startup_once(i >= plan.startup_warmup)
        async with tm.open_context(method) as ctx:
            for _ in range(plan.rtt_warmup):
                await ctx.call(abs, 0)
            for _ in range(plan.rtt_calls):
                t0 = time.perf_counter()
                await ctx.call(abs, 0)
                samples.rtt.append(time.perf_counter() - t0)
            for i in range(plan.transfer_warmup + plan.transfer_runs):
                t0 = time.perf_counter()
                data: bytes = await ctx.call(bytes, plan.nbytes)
                t1 = time.perf_counter()
                _check_length("child->parent", len(data), plan.nbytes)
                t2 = time.perf_counter()
                n: int = await ctx.call(len, data)
                t3 = time.perf_counter()
                _check_length("parent->child", n, plan.nbytes)
                del data
                if i >= plan.transfer_warmup:
                    samples.to_parent.append(t1 - t0)
                    samples.to_child.append(t3 - t2)

    trio.run(main)
    return tm.__version__, samples


def bench_mitogen(python: str, plan: Plan) -> tuple[str, Samples]:
    """Measure mitogen: a Broker and Router, ``router.local(...)`` and ``context.call(...)``.

    Each start-up run creates its own Broker and Router, as ``mitogen.utils.run_with_router``
    does, and tears them down with ``broker.shutdown(); broker.join()``.
    """
    import mitogen  # type: ignore[import-untyped]
    import mitogen.master  # type: ignore[import-untyped]

    samples = Samples()

    def startup_once(keep: bool) -> None:
        t0 = time.perf_counter()
        broker = mitogen.master.Broker()
        try:
            router = mitogen.master.Router(broker)
            ctx = router.local(python_path=python)
            ctx.call(abs, 0)
            t1 = time.perf_counter()
        finally:
            broker.shutdown()
            broker.join()
        t2 = time.perf_counter()
        if keep:
            samples.startup.append(t1 - t0)
            samples.teardown.append(t2 - t1)

    for i in range(plan.startup_warmup + plan.startup_runs):
        startup_once(i >= plan.startup_warmup)

    broker = mitogen.master.Broker()
    try:
        router = mitogen.master.Router(broker)
        ctx = router.local(python_path=python)
        for _ in range(plan.rtt_warmup):
            ctx.call(abs, 0)
        for _ in range(plan.rtt_calls):
            t0 = time.perf_counter()
            ctx.call(abs, 0)
            samples.rtt.append(time.perf_counter() - t0)
        for i in range(plan.transfer_warmup + plan.transfer_runs):
            t0 = time.perf_counter()
            data = ctx.call(bytes, plan.nbytes)
            t1 = time.perf_counter()
            _check_length("child->parent", len(data), plan.nbytes)
            t2 = time.perf_counter()
            n = ctx.call(len, data)
            t3 = time.perf_counter()
            _check_length("parent->child", int(n), plan.nbytes)
            del data
            if i >= plan.transfer_warmup:
                samples.to_parent.append(t1 - t0)
                samples.to_child.append(t3 - t2)
    finally:
        broker.shutdown()
        broker.join()
    return ".".join(str(part) for part in mitogen.__version__), samples


def bench_execnet(python: str, plan: Plan) -> tuple[str, Samples]:
    """Measure execnet: popen gateways in a Group, ``remote_exec`` and channels.

    The first call is a ``remote_exec`` whose channel sends one item; round trips and transfers
    use one long-lived channel each.  Teardown is ``group.terminate()``, which sends the exit
    message (``gw.exit()``) and waits for the subprocess.
    """
    import execnet

    samples = Samples()
    spec = "popen//python=%s" % python

    def startup_once(keep: bool) -> None:
        group = execnet.Group()
        t0 = time.perf_counter()
        try:
            gw = group.makegateway(spec)
            channel = gw.remote_exec("channel.send(abs(0))")
            channel.receive()
            t1 = time.perf_counter()
        finally:
            group.terminate(timeout=10.0)
        t2 = time.perf_counter()
        if keep:
            samples.startup.append(t1 - t0)
            samples.teardown.append(t2 - t1)

    for i in range(plan.startup_warmup + plan.startup_runs):
        startup_once(i >= plan.startup_warmup)

    group = execnet.Group()
    try:
        gw = group.makegateway(spec)
        echo = gw.remote_exec(EXECNET_ECHO)
        for _ in range(plan.rtt_warmup):
            echo.send(0)
            echo.receive()
        for _ in range(plan.rtt_calls):
            t0 = time.perf_counter()
            echo.send(0)
            echo.receive()
            samples.rtt.append(time.perf_counter() - t0)
        echo.close()
        echo.waitclose(timeout=10.0)
        transfer = gw.remote_exec(EXECNET_TRANSFER)
        for i in range(plan.transfer_warmup + plan.transfer_runs):
            t0 = time.perf_counter()
            transfer.send(("get", plan.nbytes))
            data = transfer.receive()
            t1 = time.perf_counter()
            _check_length("child->parent", len(data), plan.nbytes)
            t2 = time.perf_counter()
            transfer.send(("put", data))
            n = transfer.receive()
            t3 = time.perf_counter()
            _check_length("parent->child", int(n), plan.nbytes)
            del data
            if i >= plan.transfer_warmup:
                samples.to_parent.append(t1 - t0)
                samples.to_child.append(t3 - t2)
        transfer.close()
        transfer.waitclose(timeout=10.0)
    finally:
        group.terminate(timeout=10.0)
    return execnet.__version__, samples


BENCHMARKS: dict[str, Callable[[str, Plan], tuple[str, Samples]]] = {
    "trimitogen": bench_trimitogen,
    "mitogen": bench_mitogen,
    "execnet": bench_execnet,
}


def pin(cpu: int | None) -> None:
    """Pin this process, and so every child it starts, to one CPU (like ``taskset -c CPU``)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def run_worker(library: str, python: str, plan: Plan, json_out: str, cpu: int | None) -> None:
    pin(cpu)
    version, samples = BENCHMARKS[library](python, plan)
    result = {"library": library, "version": version, "samples": asdict(samples)}
    with open(json_out, "w", encoding="utf-8") as f:
        json.dump(result, f)


# --------------------------------------------------------------------------------------------
# Driver: starts one worker per library, then prints the table.
# --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one worker produced: its samples, or why there are none."""

    library: str
    version: str = ""
    samples: Samples | None = None
    error: str = ""


def collect(library: str, python: str, quick: bool, cpu: int | None, timeout: float) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="trimitogen-bench-") as tmp:
        json_out = os.path.join(tmp, "result.json")
        argv = [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            library,
            "--python",
            python,
            "--json-out",
            json_out,
        ]
        if quick:
            argv.append("--quick")
        if cpu is not None:
            argv += ["--pin", str(cpu)]
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return Outcome(library, error="worker timed out after %gs" % timeout)
        output = (proc.stdout + proc.stderr).strip()
        if proc.returncode != 0 or not os.path.exists(json_out):
            tail = "\n".join(output.splitlines()[-20:])
            return Outcome(library, error="worker exited %d:\n%s" % (proc.returncode, tail))
        if output:
            print("[%s worker output]\n%s" % (library, output), file=sys.stderr)
        with open(json_out, encoding="utf-8") as f:
            result: dict[str, Any] = json.load(f)
    return Outcome(library, version=str(result["version"]), samples=Samples(**result["samples"]))


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


def summarize(samples: Samples, nbytes: int) -> Summary:
    mib = nbytes / MIB
    deciles = statistics.quantiles(samples.rtt, n=10) if len(samples.rtt) > 1 else samples.rtt * 9
    return Summary(
        startup_ms=statistics.median(samples.startup) * 1e3,
        teardown_ms=statistics.median(samples.teardown) * 1e3,
        rtt_us=statistics.median(samples.rtt) * 1e6,
        to_parent_mibs=mib / statistics.median(samples.to_parent),
        to_child_mibs=mib / statistics.median(samples.to_child),
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
LABEL_WIDTH = 20
COLUMN_WIDTH = 15


def _row(label: str, cells: Sequence[str]) -> str:
    return label.ljust(LABEL_WIDTH) + "".join(cell.rjust(COLUMN_WIDTH) for cell in cells)


def _number(value: float) -> str:
    return "%.1f" % value if value < 10000 else "%.0f" % value


def format_table(summaries: dict[str, Summary], failed: dict[str, str]) -> list[str]:
    lines = [
        _row("library", [header for _, header, _ in COLUMNS]),
        _row("", [unit for _, _, unit in COLUMNS]),
    ]
    for library in LIBRARIES:
        if library in summaries:
            summary = summaries[library]
            lines.append(_row(library, [_number(getattr(summary, a)) for a, _, _ in COLUMNS]))
        elif library in failed:
            lines.append(_row(library, ["failed"] * len(COLUMNS)))
    base = summaries.get("trimitogen")
    if base is not None:
        for peer in PEERS:
            if peer in summaries:
                cells = [
                    "%.2fx" % (getattr(summaries[peer], a) / getattr(base, a))
                    for a, _, _ in COLUMNS
                ]
                lines.append(_row("%s/trimitogen" % peer, cells))
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
    """The issue's design targets for trimitogen, each MET, NOT MET or not evaluated."""
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


def interpreter_version(python: str) -> str:
    try:
        out = subprocess.run(
            [python, "-S", "-c", "import sys; print(sys.version.split()[0])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise SystemExit("cannot run the child interpreter %r: %s" % (python, exc)) from None
    return out.strip()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare trimitogen with mitogen and execnet: start-up, round trip and "
        "64 MiB transfers, each library measured in a subprocess of its own."
    )
    parser.add_argument(
        "--python",
        metavar="PATH",
        help="interpreter for every child (default: this interpreter, symlinks resolved; "
        "name a real interpreter, not a pyenv shim)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="few iterations: checks that it works, not timings"
    )
    parser.add_argument(
        "--only",
        metavar="LIBS",
        default=",".join(LIBRARIES),
        help="comma-separated libraries to measure (default: %(default)s)",
    )
    parser.add_argument(
        "--pin",
        metavar="CPU",
        nargs="?",
        type=int,
        const=0,
        default=None,
        help="run each library and its children on one CPU (default 0), like taskset -c 0: "
        "unpinned latency is bimodal, depending on whether the scheduler puts parent and child "
        "on the same CPU",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds each library's measurements may take (default: %(default)s)",
    )
    parser.add_argument("--worker", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.libraries = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.libraries) - set(LIBRARIES))
    if unknown or not args.libraries:
        parser.error("--only takes a comma-separated subset of %s" % ",".join(LIBRARIES))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK_PLAN if args.quick else FULL_PLAN
    python = args.python or os.path.realpath(sys.executable)
    if args.worker is not None:
        run_worker(args.worker, python, plan, args.json_out, args.pin)
        return 0

    print("trimitogen vs mitogen vs execnet (%s run)" % ("quick" if args.quick else "full"))
    print("child interpreter: %s (Python %s)" % (python, interpreter_version(python)))
    print("driver interpreter: %s (Python %s)" % (sys.executable, platform.python_version()))
    print(
        "machine: %s, %d CPUs; %s"
        % (
            platform.machine(),
            os.cpu_count() or 0,
            "pinned to CPU %d" % args.pin if args.pin is not None else "not pinned (see --pin)",
        )
    )
    print(
        "start-up: median of %d runs (+%d warm-up); round trip: median of %d calls (+%d warm-up); "
        "transfers: median of %d (+%d warm-up) x %d MiB"
        % (
            plan.startup_runs,
            plan.startup_warmup,
            plan.rtt_calls,
            plan.rtt_warmup,
            plan.transfer_runs,
            plan.transfer_warmup,
            plan.nbytes // MIB,
        )
    )
    sys.stdout.flush()

    summaries: dict[str, Summary] = {}
    failed: dict[str, str] = {}
    versions: list[str] = []
    for library in LIBRARIES:
        if library not in args.libraries:
            continue
        outcome = collect(library, python, args.quick, args.pin, args.timeout)
        if outcome.samples is None:
            failed[library] = outcome.error
            continue
        summaries[library] = summarize(outcome.samples, plan.nbytes)
        versions.append("%s %s" % (library, outcome.version))

    print("versions: %s" % (", ".join(versions) or "-"))
    print()
    for line in format_table(summaries, failed):
        print(line)
    print()
    print("ratio = peer's value / trimitogen's: for ms and us above 1 means trimitogen is faster,")
    print("for MiB/s below 1 means trimitogen is faster.")
    if summaries:
        print()
        print("round-trip spread (p10 / median / p90, us):")
        for library, summary in summaries.items():
            print(
                "  %-18s %8.1f / %8.1f / %8.1f"
                % (library, summary.rtt_p10_us, summary.rtt_us, summary.rtt_p90_us)
            )
    print()
    print("design targets for trimitogen (informational; timings never fail this script):")
    for line in format_targets(summaries):
        print(line)
    for library, error in failed.items():
        print()
        print("%s could not be measured: %s" % (library, error))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
