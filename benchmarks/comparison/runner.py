"""Running one library's worker: the driver starts it as a subprocess, which writes JSON back.

Each library runs in a process of its own: mitogen installs signal and fork handlers and starts
threads, and Trio must not share a process with it.
"""

from __future__ import annotations

import faulthandler
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from .model import Job, Outcome, Remote, Samples, Section
from .plan import ENTRY_SCRIPT, Plan
from .sections import by_name
from .workers import execnet, mitogen, trimitogen

#: library -> its worker's ``run(job, sections) -> version``
WORKERS: dict[str, Callable[[Job, Sequence[Section]], str]] = {
    "trimitogen": trimitogen.run,
    "mitogen": mitogen.run,
    "execnet": execnet.run,
}


def pin(cpu: int | None) -> None:
    """Pin this process, and so every child it starts, to one CPU (like ``taskset -c CPU``)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def run_worker(
    library: str,
    python: str,
    plan: Plan,
    sections: Sequence[str],
    remote_json: str | None,
    json_out: str,
    cpu: int | None,
    timeout: float,
) -> None:
    """In the worker process: measure ``sections`` with ``library``, write the samples."""
    # Before the driver gives up on this worker: print where every thread is, and exit.
    faulthandler.dump_traceback_later(max(timeout - 10.0, 1.0), exit=True)
    pin(cpu)
    remote = None
    if remote_json:
        with open(remote_json, encoding="utf-8") as f:
            remote = Remote(**json.load(f))
    job = Job(library=library, python=python, plan=plan, remote=remote, samples=Samples())
    version = WORKERS[library](job, by_name(list(sections)))
    result = {"library": library, "version": version, "samples": asdict(job.samples)}
    with open(json_out, "w", encoding="utf-8") as f:
        json.dump(result, f)


def collect(
    library: str,
    python: str,
    quick: bool,
    cpu: int | None,
    timeout: float,
    sections: Sequence[str],
    remote_json: str | None,
) -> Outcome:
    """In the driver: run ``library``'s worker and read back what it measured."""
    with tempfile.TemporaryDirectory(prefix="trimitogen-bench-") as tmp:
        json_out = os.path.join(tmp, "result.json")
        argv = [
            sys.executable,
            ENTRY_SCRIPT,
            "--worker",
            library,
            "--python",
            python,
            "--sections",
            ",".join(sections),
            "--json-out",
            json_out,
            "--timeout",
            str(timeout),
        ]
        if remote_json is not None:
            argv += ["--remote-json", remote_json]
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
        except subprocess.TimeoutExpired as exc:
            partial = [
                data.decode(errors="replace") if isinstance(data, bytes) else data or ""
                for data in (exc.stdout, exc.stderr)
            ]
            tail = "\n".join("".join(partial).strip().splitlines()[-40:])
            return Outcome(library, error="worker timed out after %gs:\n%s" % (timeout, tail))
        output = (proc.stdout + proc.stderr).strip()
        if proc.returncode != 0 or not os.path.exists(json_out):
            tail = "\n".join(output.splitlines()[-40:])
            return Outcome(library, error="worker exited %d:\n%s" % (proc.returncode, tail))
        if output:
            print("[%s worker output]\n%s" % (library, output), file=sys.stderr)
        with open(json_out, encoding="utf-8") as f:
            result: dict[str, Any] = json.load(f)
    return Outcome(library, version=str(result["version"]), samples=Samples(**result["samples"]))
