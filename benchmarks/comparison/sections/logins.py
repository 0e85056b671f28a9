"""ssh, sudo and hop (ssh then sudo): start-up until the reply to the first no-op call.

Each also has a floor: the same login running ``python3 -c pass`` without any library.
"""

from __future__ import annotations

import functools
import os
import statistics
import subprocess
import time
from dataclasses import asdict
from typing import Any

from ..model import Floor, Job, Remote, Report, Section, check_uid, repeat, repeat_async
from ..plan import Plan
from ..tables import SECTION_LABEL_WIDTH, number, ratio, row, state
from ..workers import execnet as execnet_worker
from ..workers import mitogen as mitogen_worker


def _remote(job: Job) -> Remote:
    if job.remote is None:
        raise RuntimeError("the driver set up no users or sshd for this section")
    return job.remote


async def measure_trimitogen(section: str, job: Job) -> None:
    """``tm.ssh(...)``, ``tm.sudo(...)``, ``open_context(tm.sudo(...), via=ssh_ctx)``."""
    import trimitogen as tm

    remote = _remote(job)
    sudo = tm.sudo(remote.sudo_user, python=remote.python)

    def login(user: str) -> Any:
        return tm.ssh(
            remote.host,
            username=user,
            port=remote.port,
            identity_file=remote.identity_file,
            check_host_keys="enforce",
            ssh_args=remote.ssh_args,
            python=remote.python,
        )

    async def once() -> float:
        t0 = time.perf_counter()
        if section == "hop":
            async with (
                tm.open_context(login(remote.hop_user)) as via,
                tm.open_context(sudo, via=via) as ctx,
            ):
                await ctx.call(abs, 0)
                t1 = time.perf_counter()
                uid = await ctx.call(os.getuid)
        else:
            first = login(remote.ssh_user) if section == "ssh" else sudo
            async with tm.open_context(first) as ctx:
                await ctx.call(abs, 0)
                t1 = time.perf_counter()
                uid = await ctx.call(os.getuid)
        check_uid(section, uid, remote.expected_uid(section))
        return t1 - t0

    plan = job.plan
    job.samples.extend(section, await repeat_async(plan.remote_warmup, plan.remote_runs, once))


def measure_mitogen(section: str, job: Job) -> None:
    """``router.ssh(...)``, ``router.sudo(...)``, ``router.sudo(via=ssh_ctx, ...)``."""
    remote = _remote(job)
    ssh_options = {
        "hostname": remote.host,
        "port": remote.port,
        "identity_file": remote.identity_file,
        "check_host_keys": "enforce",
        "ssh_args": remote.ssh_args,
        "python_path": remote.python,
    }
    sudo_options = {"username": remote.sudo_user, "python_path": remote.python}

    def once() -> float:
        t0 = time.perf_counter()
        with mitogen_worker.router() as router:
            if section == "ssh":
                ctx = router.ssh(username=remote.ssh_user, **ssh_options)
            elif section == "sudo":
                ctx = router.sudo(**sudo_options)
            else:
                via = router.ssh(username=remote.hop_user, **ssh_options)
                ctx = router.sudo(via=via, **sudo_options)
            ctx.call(abs, 0)
            t1 = time.perf_counter()
            uid = int(ctx.call(os.getuid))
        check_uid(section, uid, remote.expected_uid(section))
        return t1 - t0

    job.samples.extend(section, repeat(job.plan.remote_warmup, job.plan.remote_runs, once))


def measure_execnet(section: str, job: Job) -> None:
    """``ssh=OPTIONS user@host//python=...``, ``popen//python=sudo -u ...``; for the hop both
    one gateway (ssh runs sudo) and two (``hop_via``: a popen gateway started via= an ssh one)."""
    remote = _remote(job)
    sudo_python = " ".join(remote.sudo_python())
    variants: list[tuple[str, list[str]]]
    if section == "ssh":
        ssh = execnet_worker.ssh_spec(remote, remote.ssh_user)
        variants = [("ssh", ["%s//python=%s" % (ssh, remote.python)])]
    elif section == "sudo":
        variants = [("sudo", ["popen//python=%s" % sudo_python])]
    else:
        ssh = execnet_worker.ssh_spec(remote, remote.hop_user)
        variants = [
            # One gateway: ssh runs sudo, which runs the interpreter.
            ("hop", ["%s//python=%s" % (ssh, sudo_python)]),
            # Two gateways, like the other libraries' chains: the second one via the first.
            (
                "hop_via",
                [
                    "%s//python=%s//id=login" % (ssh, remote.python),
                    "popen//python=%s//via=login" % sudo_python,
                ],
            ),
        ]

    def once(specs: list[str]) -> float:
        """Open ``specs`` in order (the last is the target); time until its first reply."""
        with execnet_worker.group() as group:
            t0 = time.perf_counter()
            for one in specs:
                gw = group.makegateway(one)
            channel = gw.remote_exec("channel.send(abs(0))")
            channel.receive()
            t1 = time.perf_counter()
            uid = int(gw.remote_exec("import os; channel.send(os.getuid())").receive())
        check_uid(section, uid, remote.expected_uid(section))
        return t1 - t0

    for key, specs in variants:
        timings = repeat(
            job.plan.remote_warmup, job.plan.remote_runs, functools.partial(once, specs)
        )
        job.samples.extend(key, timings)


# --------------------------------------------------------------------------------------------
# The floors (measured by the driver) and the tables


def floor_commands(remote: Remote, section: str) -> tuple[list[str], str]:
    """The floor's argv and how to print it (without the long test-only ssh options)."""
    python = [remote.python, "-c", "pass"]
    if section == "sudo":
        argv = [*remote.sudo_python(), "-c", "pass"]
        return argv, " ".join(argv)
    user = remote.ssh_user if section == "ssh" else remote.hop_user
    command = python if section == "ssh" else [*remote.sudo_python(), "-c", "pass"]
    argv = ["ssh", "-C", *remote.ssh_options(user), *command]
    shown = ["ssh", "-C", "[test options]", *remote.ssh_options(user)[len(remote.ssh_args) :]]
    return argv, " ".join(shown + command)


def measure_floor(section: str, remote: Remote, plan: Plan) -> Floor:
    argv, shown = floor_commands(remote, section)
    floor = Floor(shown)

    def once() -> float:
        t0 = time.perf_counter()
        subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=True)
        return time.perf_counter() - t0

    try:
        floor.timings = repeat(plan.remote_warmup, plan.remote_runs, once)
    except (OSError, subprocess.SubprocessError) as exc:
        stderr = getattr(exc, "stderr", None) or b""
        floor.error = "%s %s" % (exc, stderr.decode(errors="replace").strip())
    return floor


TITLES = {
    "ssh": "ssh start-up to first call: key login as {ssh_user}@{host}:{port}, {python}",
    "sudo": "sudo start-up to first call: root -> sudo -u {sudo_user} {python}, no password",
    "hop": "ssh->sudo hop: key login as {hop_user}@{host}:{port}, then sudo -u {sudo_user} "
    "{python}, no password",
}
NOTES = {
    "ssh": [
        "All three compress (ssh -C / Compression yes) and check the host key against the",
        "test's known_hosts file.",
    ],
    "sudo": [],
    "hop": [
        "trimitogen and mitogen start a context as tmg-sudo and a second one through it (two",
        "interpreters). execnet: one gateway whose ssh command runs sudo, which runs the",
        "interpreter (one interpreter); 'execnet, via=': a popen gateway with python=sudo ...",
        "started through an ssh gateway, like the others' chains.",
    ],
}
COLUMNS = (("start-up", "ms"), ("above floor", "ms"), ("min", "ms"), ("max", "ms"))


def report(section: str, rep: Report) -> list[str]:
    width = SECTION_LABEL_WIDTH
    remote, floor, plan = rep.remote, rep.floor, rep.plan
    if remote is None:
        title = TITLES[section].partition(":")[0]
        return [title + ": not run: " + rep.reason]
    title = TITLES[section].format(**asdict(remote))
    lines = [
        "%s; median of %d (+%d warm-up)" % (title, plan.remote_runs, plan.remote_warmup),
        "",
        row("", [header for header, _ in COLUMNS], width),
        row("", [unit for _, unit in COLUMNS], width),
    ]
    floor_ms: float | None = None
    if floor is not None and floor.timings:
        floor_ms = statistics.median(floor.timings) * 1e3
        cells = [number(floor_ms), "-", number(min(floor.timings) * 1e3)]
        cells.append(number(max(floor.timings) * 1e3))
        lines.append(row("floor (no library)", cells, width))
    elif floor is not None:
        lines.append("floor (no library)".ljust(width) + "failed: " + floor.error)
    medians: dict[str, float] = {}
    for library, outcome in rep.outcomes.items():
        rows = [(library, section)]
        if library == "execnet" and section == "hop":
            rows.append(("execnet, via=", "hop_via"))
        for label, key in rows:
            why = state(outcome, section)
            if why is not None:
                lines.append(label.ljust(width) + why)
                continue
            assert outcome.samples is not None
            timings = [t * 1e3 for t in outcome.samples.get(key)]
            median = medians[label] = statistics.median(timings)
            above = "-" if floor_ms is None else number(median - floor_ms)
            cells = [number(median), above, number(min(timings)), number(max(timings))]
            lines.append(row(label, cells, width))
    base = medians.get("trimitogen")
    if base is not None:
        for label, median in medians.items():
            if label == "trimitogen":
                continue
            cells = [ratio(median, base)]
            if floor_ms is not None:
                cells.append(ratio(median - floor_ms, base - floor_ms))
            lines.append(row("%s/trimitogen" % label.replace(", ", " "), cells, width))
    lines.append("")
    if floor is not None:
        lines.append("floor: " + floor.command)
    lines += NOTES[section]
    return lines


def _section(name: str, needs: frozenset[str]) -> Section:
    return Section(
        name=name,
        report=functools.partial(report, name),
        trimitogen=functools.partial(measure_trimitogen, name),
        mitogen=functools.partial(measure_mitogen, name),
        execnet=functools.partial(measure_execnet, name),
        needs=needs,
        floor=functools.partial(measure_floor, name),
    )


SSH = _section("ssh", frozenset({"users", "sshd"}))
SUDO = _section("sudo", frozenset({"users"}))
HOP = _section("hop", frozenset({"users", "sshd"}))
