"""What a run measures: the libraries, and how many times each measurement is repeated."""

from __future__ import annotations

import os
from dataclasses import dataclass

#: Every library measured, trimitogen first: the ratios are relative to it.
LIBRARIES = ("trimitogen", "mitogen", "execnet")
PEERS = ("mitogen", "execnet")
MIB = 1024 * 1024
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: The script that runs the driver and, with ``--worker``, each library's worker.
ENTRY_SCRIPT = os.path.join(REPO_ROOT, "benchmarks", "compare.py")
#: The interpreter of every context that runs as another user: pyenv's live under /root.
REMOTE_PYTHON = "/usr/bin/python3"


@dataclass(frozen=True)
class Plan:
    """How many times each measurement runs; warm-up runs are not counted.

    A new section may keep its own counts in its module and pick them with ``quick``.
    """

    quick: bool
    startup_runs: int
    startup_warmup: int
    rtt_calls: int
    rtt_warmup: int
    transfer_runs: int
    transfer_warmup: int
    package_runs: int  # per measurement of the import section
    package_warmup: int
    remote_runs: int  # per measurement of the ssh, sudo and hop sections, floors included
    remote_warmup: int
    fork_runs: int  # per fork variant; its first fork is kept apart, then fork_warmup more
    fork_warmup: int
    nbytes: int = 64 * MIB


FULL_PLAN = Plan(
    quick=False,
    startup_runs=15,
    startup_warmup=1,
    rtt_calls=5000,
    rtt_warmup=200,
    transfer_runs=5,
    transfer_warmup=1,
    package_runs=9,
    package_warmup=1,
    remote_runs=9,
    remote_warmup=1,
    fork_runs=21,
    fork_warmup=1,
)
QUICK_PLAN = Plan(
    quick=True,
    startup_runs=2,
    startup_warmup=0,
    rtt_calls=100,
    rtt_warmup=10,
    transfer_runs=1,
    transfer_warmup=0,
    package_runs=1,
    package_warmup=0,
    remote_runs=1,
    remote_warmup=0,
    fork_runs=2,
    fork_warmup=0,
)


def plan_for(quick: bool) -> Plan:
    """The quick plan (a few iterations: does it work?) or the full one."""
    return QUICK_PLAN if quick else FULL_PLAN
