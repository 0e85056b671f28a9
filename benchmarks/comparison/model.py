"""The shapes every part shares: a section, the job a worker runs, samples, outcomes, reports."""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .plan import REMOTE_PYTHON, Plan


@dataclass(frozen=True)
class Remote:
    """Where the sections that log in go; made by the driver with trimitogen.testing."""

    host: str
    port: int  # 0: no sshd (only sections that need users alone run)
    identity_file: str
    ssh_args: list[str]  # hermetic client options (config, known hosts, key)
    ssh_user: str  # tmg-ssh: key login
    ssh_uid: int
    hop_user: str  # tmg-sudo: key login, may sudo to sudo_user without a password
    sudo_user: str  # tmg-nopw
    sudo_uid: int
    python: str = REMOTE_PYTHON

    def expected_uid(self, section: str) -> int:
        return self.ssh_uid if section == "ssh" else self.sudo_uid

    def ssh_options(self, user: str) -> list[str]:
        """ssh's options and destination, as execnet and the floor pass them."""
        return [
            *self.ssh_args,
            "-o",
            "BatchMode=yes",
            "-p",
            str(self.port),
            "%s@%s" % (user, self.host),
        ]

    def sudo_python(self) -> list[str]:
        return ["sudo", "-u", self.sudo_user, self.python]


@dataclass
class Samples:
    """Raw measurements of one library (seconds, unless a section says otherwise).

    ``series`` maps a key a section chose (name keys after the section) to its values.
    """

    series: dict[str, list[Any]] = field(default_factory=dict)
    #: section (or part of one) -> why this library cannot take part
    unsupported: dict[str, str] = field(default_factory=dict)
    #: section (or part of one) -> the traceback that ended its measurement
    errors: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, value: Any) -> None:
        self.series.setdefault(key, []).append(value)

    def extend(self, key: str, values: Sequence[Any]) -> None:
        self.series.setdefault(key, []).extend(values)

    def get(self, key: str) -> list[Any]:
        return self.series.get(key, [])


@dataclass
class Job:
    """What a section's measuring function gets, in the worker of one library."""

    library: str
    python: str  # the interpreter of every local child
    plan: Plan
    remote: Remote | None  # set when the section's needs were met
    samples: Samples


@dataclass
class Outcome:
    """What one worker produced: its samples, or why there are none."""

    library: str
    version: str = ""
    samples: Samples | None = None
    error: str = ""


@dataclass
class Floor:
    """The same work without any library: the command, its timings or why there are none."""

    command: str
    timings: list[float] = field(default_factory=list)
    error: str = ""


@dataclass(frozen=True)
class Report:
    """What a section's table is made from, in the driver."""

    outcomes: dict[str, Outcome]  # library -> outcome, in the order of LIBRARIES
    plan: Plan
    remote: Remote | None
    reason: str  # why the section did not run ("" when it did)
    floor: Floor | None  # the section's floor, if it has one and it ran


@dataclass(frozen=True)
class Section:
    """One table of the output: how each library is measured for it, and how it is printed.

    ``trimitogen`` runs under Trio in the trimitogen worker; ``mitogen`` and ``execnet`` run
    in theirs.  A library whose function is None is reported with its ``unsupported`` reason.
    ``needs`` names what the driver must set up first (``"users"``, ``"sshd"``: throwaway users
    and a loopback sshd, as root); ``floor`` runs in the driver before the workers (the same
    login without a library); ``header`` adds lines to the run's header.
    """

    name: str
    report: Callable[[Report], list[str]]
    trimitogen: Callable[[Job], Awaitable[None]] | None = None
    mitogen: Callable[[Job], None] | None = None
    execnet: Callable[[Job], None] | None = None
    unsupported: Mapping[str, str] = field(default_factory=dict)
    needs: frozenset[str] = frozenset()
    floor: Callable[[Remote, Plan], Floor] | None = None
    header: Callable[[Plan], list[str]] | None = None

    def why_unsupported(self, library: str) -> str:
        return self.unsupported.get(library, "no measurement written for %s" % library)


# --------------------------------------------------------------------------------------------
# Helpers for measuring functions


def check_length(what: str, got: int, want: int) -> None:
    if got != want:
        raise RuntimeError("%s: expected %d bytes, got %d" % (what, want, got))


def check_uid(section: str, got: int, want: int) -> None:
    if got != want:
        raise RuntimeError("%s: the context runs as uid %d, expected %d" % (section, got, want))


def error_text() -> str:
    """The current exception's traceback, trimmed to its last lines."""
    return "\n".join(traceback.format_exc().rstrip().splitlines()[-12:])


def repeat(warmup: int, runs: int, once: Callable[[], float]) -> list[float]:
    """Call ``once`` ``warmup + runs`` times; return the seconds of the counted runs."""
    timings = [once() for _ in range(warmup + runs)]
    return timings[warmup:]


async def repeat_async(warmup: int, runs: int, once: Callable[[], Awaitable[float]]) -> list[float]:
    timings = [await once() for _ in range(warmup + runs)]
    return timings[warmup:]


def run_sync_sections(
    job: Job,
    sections: Sequence[Section],
    measure: Callable[[Section], Callable[[Job], None] | None],
) -> None:
    """Run each section's function for a library without an event loop, recording failures."""
    for section in sections:
        function = measure(section)
        if function is None:
            job.samples.unsupported[section.name] = section.why_unsupported(job.library)
            continue
        try:
            function(job)
        except Exception:
            job.samples.errors[section.name] = error_text()
