"""The command line: ``python3 benchmarks/compare.py [--sections ...] [--quick] [--pin] ...``.

The driver sets up what the chosen sections need, measures their floors, runs one worker per
library, then prints each section's table.  Timings never make it fail: it exits non-zero only
if a measurement could not be taken at all.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict

from .model import Floor, Outcome, Report, Section
from .plan import LIBRARIES, REMOTE_PYTHON, Plan, plan_for
from .remote import remote_infrastructure
from .runner import collect, pin, run_worker
from .sections import NAMES, by_name


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


def _csv(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare trimitogen with mitogen and execnet: start-up, round trip and "
        "64 MiB transfers, first call into a package only the master has, forked copies, and "
        "ssh, sudo and ssh->sudo start-up; each library measured in a subprocess of its own."
    )
    parser.add_argument(
        "--python",
        metavar="PATH",
        help="interpreter for every local child (default: this interpreter, symlinks resolved; "
        "name a real interpreter, not a pyenv shim); ssh and sudo children run %s" % REMOTE_PYTHON,
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
        "--sections",
        metavar="NAMES",
        default=",".join(NAMES),
        help="comma-separated sections to run (default: %(default)s); ssh, sudo and hop need "
        "root: they create throwaway users and an sshd with trimitogen.testing, removed at the "
        "end",
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
    parser.add_argument(
        "--remote-json",
        metavar="FILE",
        help="use the users and sshd described in FILE (the fields of model.Remote, as JSON) "
        "instead of setting them up: a test session passes its own",
    )
    args = parser.parse_args(argv)
    args.libraries = _csv(args.only)
    unknown = sorted(set(args.libraries) - set(LIBRARIES))
    if unknown or not args.libraries:
        parser.error("--only takes a comma-separated subset of %s" % ",".join(LIBRARIES))
    chosen = set(_csv(args.sections))
    if not chosen or chosen - set(NAMES):
        parser.error("--sections takes a comma-separated subset of %s" % ",".join(NAMES))
    args.sections = [name for name in NAMES if name in chosen]
    return args


def print_header(args: argparse.Namespace, plan: Plan, python: str) -> None:
    sections = by_name(args.sections)
    print("trimitogen vs mitogen vs execnet (%s run)" % ("quick" if args.quick else "full"))
    print("sections: %s" % ", ".join(args.sections))
    print("child interpreter: %s (Python %s)" % (python, interpreter_version(python)))
    if any(section.needs for section in sections):
        print(
            "ssh/sudo child interpreter: %s (Python %s)"
            % (REMOTE_PYTHON, interpreter_version(REMOTE_PYTHON))
        )
    print("driver interpreter: %s (Python %s)" % (sys.executable, platform.python_version()))
    print(
        "machine: %s, %d CPUs; %s"
        % (
            platform.machine(),
            os.cpu_count() or 0,
            "pinned to CPU %d" % args.pin if args.pin is not None else "not pinned (see --pin)",
        )
    )
    for section in sections:
        if section.header is not None:
            for line in section.header(plan):
                print(line)
    sys.stdout.flush()


def failures(outcomes: dict[str, Outcome], floors: dict[str, Floor]) -> int:
    """Print every measurement that could not be taken; return how many."""
    count = 0
    for library, outcome in outcomes.items():
        if outcome.samples is None:
            count += 1
            print()
            print("%s could not be measured: %s" % (library, outcome.error))
            continue
        for section, error in outcome.samples.errors.items():
            count += 1
            print()
            print("%s, section %s, could not be measured:\n%s" % (library, section, error))
    return count + sum(1 for floor in floors.values() if floor.error)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = plan_for(args.quick)
    python = args.python or os.path.realpath(sys.executable)
    if args.worker is not None:
        run_worker(
            args.worker,
            python,
            plan,
            args.sections,
            args.remote_json,
            args.json_out,
            args.pin,
            args.timeout,
        )
        return 0

    print_header(args, plan, python)
    chosen: list[Section] = by_name(args.sections)
    outcomes: dict[str, Outcome] = {}
    floors: dict[str, Floor] = {}
    with (
        remote_infrastructure(chosen, args.remote_json) as (remote, reason),
        tempfile.TemporaryDirectory(prefix="trimitogen-bench-") as tmp,
    ):
        runnable = [section.name for section in chosen if not section.needs]
        remote_json = args.remote_json
        if remote is not None and remote_json is None:
            remote_json = os.path.join(tmp, "remote.json")
            with open(remote_json, "w", encoding="utf-8") as f:
                json.dump(asdict(remote), f)
        if remote is not None:
            pin(args.pin)  # the floors run like the workers do
            for section in chosen:
                if section.needs:
                    runnable.append(section.name)
                    if section.floor is not None:
                        floors[section.name] = section.floor(remote, plan)
        for library in LIBRARIES:
            if library in args.libraries:
                outcomes[library] = collect(
                    library, python, args.quick, args.pin, args.timeout, runnable, remote_json
                )

    versions = ["%s %s" % (o.library, o.version) for o in outcomes.values() if o.samples]
    print("versions: %s" % (", ".join(versions) or "-"))
    for section in chosen:
        ran = not section.needs or remote is not None
        report = Report(
            outcomes=outcomes,
            plan=plan,
            remote=remote if section.needs else None,
            reason="" if ran else reason,
            floor=floors.get(section.name),
        )
        print()
        for line in section.report(report):
            print(line)
    return 1 if failures(outcomes, floors) else 0
