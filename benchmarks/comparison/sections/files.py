"""files: ``put_file`` / ``get_file`` of 1 GiB, locally against ``cp`` and over ssh against
``scp`` and ``rsync``.

Locally: a ``tm.local()`` context against ``cp -p``.  Over ssh: a ``tm.ssh()`` context logged in
as tmg-ssh on the driver's loopback sshd, against ``scp -p`` and ``rsync -tp -e ssh`` to the same
sshd as the same user, with the ssh options trimitogen passes (batch mode, the host key enforced,
only the test key, OpenSSH's default cipher, no compression).  Every copy keeps mode and mtime;
trimitogen fsyncs the file before renaming it over the target, so the peers' times include
``sync FILE`` (an fsync of the target) too.  The file is random data (nothing compresses it) in
a temporary directory on the same filesystem, removed at the end; its size is
``TMG_BENCH_FILE_MIB`` (default 1024, 16 with ``--quick``).  Only trimitogen's worker measures;
mitogen and execnet are not among the peers of this table.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial

from ..model import Job, Remote, Report, Section
from ..plan import MIB, Plan
from ..tables import SECTION_LABEL_WIDTH, number, ratio, row, state

RUNS = {True: 1, False: 3}
BLOCK = MIB
COLUMNS = ("put / up", "get / down")
#: (key, row label) of every measured variant: a key ending in _put or _up is the first
#: column, _get or _down the second; ``cp`` fills both.
LOCAL_ROWS = (("local", "local: trimitogen"), ("cp", "local: cp -p"))
SSH_ROWS = (("ssh", "ssh: trimitogen"), ("scp", "ssh: scp -O -p"), ("rsync", "ssh: rsync -tp"))


def size_mib(quick: bool) -> int:
    return int(os.environ.get("TMG_BENCH_FILE_MIB") or (16 if quick else 1024))


@contextlib.contextmanager
def work_directory(owner_uid: int) -> Iterator[str]:
    """A temporary directory the ssh user may write in; removed with everything in it."""
    path = tempfile.mkdtemp(prefix="trimitogen-bench-files-")
    try:
        os.chown(path, owner_uid, -1)
        os.chmod(path, 0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def make_source(path: str, nbytes: int) -> None:
    block = os.urandom(BLOCK)
    with open(path, "wb") as f:
        for start in range(0, nbytes, BLOCK):
            f.write(block[: min(BLOCK, nbytes - start)])
    os.chmod(path, 0o644)


def ssh_command(remote: Remote) -> list[str]:
    """ssh and the options trimitogen's ``ssh()`` passes for this login (no port, no host)."""
    return [
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-i",
        remote.identity_file,
        "-o",
        "IdentitiesOnly=yes",
        *remote.ssh_args,
    ]


def peer_argv(tool: str, remote: Remote, up: bool, local: str, far: str) -> list[str]:
    where = "%s@%s:%s" % (remote.ssh_user, remote.host, far)
    src, dst = (local, where) if up else (where, local)
    if tool == "scp":
        # -O: the scp protocol; the test sshd has no sftp subsystem, which scp uses by default.
        return ["scp", "-O", "-q", "-p", *ssh_command(remote)[1:], "-P", str(remote.port), src, dst]
    ssh = shlex.join([*ssh_command(remote), "-p", str(remote.port)])
    return ["rsync", "-tp", "-e", ssh, src, dst]


def run_and_sync(argv: list[str], target: str) -> None:
    """Run a peer's copy, then fsync its target (as trimitogen does before its rename)."""
    for command in (argv, ["sync", target]):
        proc = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, timeout=600, check=False
        )
        if proc.returncode:
            raise RuntimeError(
                "%s exited %d: %s"
                % (shlex.join(command), proc.returncode, proc.stderr.decode(errors="replace"))
            )


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


async def timed(
    job: Job, key: str, target: str, nbytes: int, copy: Callable[[], Awaitable[object]]
) -> None:
    """Time ``copy()``, which makes ``target``; check its size and remove it again."""
    _remove(target)
    t0 = time.perf_counter()
    await copy()
    elapsed = time.perf_counter() - t0
    size = os.stat(target).st_size
    _remove(target)
    if size != nbytes:
        raise RuntimeError("%s: %s has %d bytes, expected %d" % (key, target, size, nbytes))
    job.samples.add("files_" + key, elapsed)


async def measure_trimitogen(job: Job) -> None:
    import trio

    import trimitogen as tm

    remote = job.remote
    if remote is None:
        raise RuntimeError("the driver set up no users or sshd for this section")
    nbytes = size_mib(job.plan.quick) * MIB
    login = tm.ssh(
        remote.host,
        username=remote.ssh_user,
        port=remote.port,
        identity_file=remote.identity_file,
        check_host_keys="enforce",
        ssh_args=remote.ssh_args,
        python=remote.python,
    )

    def peer(argv: list[str], target: str) -> Callable[[], Awaitable[object]]:
        return partial(trio.to_thread.run_sync, run_and_sync, argv, target)

    with work_directory(remote.ssh_uid) as tmp:
        src, dst = os.path.join(tmp, "source"), os.path.join(tmp, "copy")
        await trio.to_thread.run_sync(make_source, src, nbytes)
        async with (
            tm.open_context(tm.local(python=job.python)) as local,
            tm.open_context(login) as ssh,
        ):
            for _ in range(RUNS[job.plan.quick]):
                for key, ctx in (("local", local), ("ssh", ssh)):
                    await timed(job, key + "_put", dst, nbytes, partial(ctx.put_file, src, dst))
                    await timed(job, key + "_get", dst, nbytes, partial(ctx.get_file, src, dst))
                await timed(job, "cp", dst, nbytes, peer(["cp", "-p", src, dst], dst))
                for tool in ("scp", "rsync"):
                    for up in (True, False):
                        local_path, far_path = (src, dst) if up else (dst, src)
                        argv = peer_argv(tool, remote, up, local_path, far_path)
                        key = "%s_%s" % (tool, "up" if up else "down")
                        await timed(job, key, dst, nbytes, peer(argv, dst))
    job.samples.add("files_bytes", nbytes)


def _speeds(samples: dict[str, list[float]], key: str, nbytes: int) -> list[float]:
    keys = [key, key] if key == "cp" else [key + "_put", key + "_get"]
    if key in ("scp", "rsync"):
        keys = [key + "_up", key + "_down"]
    return [nbytes / MIB / statistics.median(samples["files_" + k]) for k in keys]


def report(rep: Report) -> list[str]:
    width = SECTION_LABEL_WIDTH
    if rep.remote is None:
        return ["files: not run: " + rep.reason]
    outcome = rep.outcomes.get("trimitogen")
    why = "not measured (--only)" if outcome is None else state(outcome, "files")
    if why is not None or outcome is None or outcome.samples is None:
        return ["files: %s" % why]
    series = outcome.samples.series
    nbytes = int(series["files_bytes"][0])
    lines = [
        "files: put_file / get_file of %d MiB, locally against cp and over ssh to %s@%s:%d"
        % (nbytes // MIB, rep.remote.ssh_user, rep.remote.host, rep.remote.port),
        "against scp and rsync; median of %d runs" % RUNS[rep.plan.quick],
        "",
        row("", list(COLUMNS), width),
        row("", ["MiB/s"] * len(COLUMNS), width),
    ]
    targets: list[str] = []
    for rows in (LOCAL_ROWS, SSH_ROWS):
        speeds = {key: _speeds(series, key, nbytes) for key, _ in rows}
        for key, label in rows:
            lines.append(row(label, [number(s) for s in speeds[key]], width))
        mine = speeds[rows[0][0]]
        for key, _ in rows[1:]:
            cells = [ratio(a, b) for a, b in zip(mine, speeds[key], strict=True)]
            lines.append(row("  trimitogen/%s" % key, cells, width))
            targets += [
                "%s, %s: %s than %s" % (rows[0][1], column, "faster" if a > b else "SLOWER", key)
                for column, a, b in zip(COLUMNS, mine, speeds[key], strict=True)
            ]
    lines += [
        "",
        "target: faster than each peer (informational):",
        *("  " + line for line in targets),
        "",
        "put: master -> context (cp: the same copy; scp/rsync: upload), get: context -> master.",
        "Peers' times include 'sync FILE' after the copy: trimitogen fsyncs before its rename.",
        "All ssh copies: OpenSSH's default cipher, no compression, the options trimitogen passes.",
    ]
    return lines


def header(plan: Plan) -> list[str]:
    return ["files: %d MiB (TMG_BENCH_FILE_MIB)" % size_mib(plan.quick)]


_NA = "not a peer of this table (cp, scp and rsync are)"

SECTION = Section(
    name="files",
    report=report,
    trimitogen=measure_trimitogen,
    unsupported={"mitogen": _NA, "execnet": _NA},
    needs=frozenset({"users", "sshd"}),
    header=header,
)
