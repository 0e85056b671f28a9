"""Fan-out over ssh: connect to N loopback targets and call one function on each.

    python3 benchmarks/fanout.py                 # as root: N = 50 and 200, one run each
    python3 benchmarks/fanout.py --counts 50 --runs 3

Four ways, each measured in a fresh worker process so that its RSS and fds are its own:

- ``floor``: N concurrent ``ssh HOST /usr/bin/python3 -c pass`` processes (what any tool that
  runs ssh and Python must pay);
- ``trimitogen``: :func:`trimitogen.open_group` over the N targets, ``group.call(os.getpid)``;
- ``mitogen``: one Broker and Router, one thread per target calling ``router.ssh(...)`` and
  then ``ctx.call(os.getpid)`` (how Ansible's mitogen strategy uses it, through a thread pool);
- ``execnet``: one Group, one thread per gateway making it and ``remote_exec``-ing one send.

The wall time runs from the first connection to the last answer; closing is timed apart.  "fds
per target" is the worker's peak count of open fds, above what it had before, divided by N
(sampled every 2 ms by a thread).  RSS is the worker's peak (VmHWM).  The targets are one sshd
per 16 addresses of 127.0.0.2 ... (trimitogen.testing.running_sshd), reached through a
generated ssh_config.
Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PY = "/usr/bin/python3"
WAYS = ("floor", "trimitogen", "mitogen", "execnet")
WORKER_TIMEOUT = 600.0


class FdSampler:
    """The most fds this process had open at once, sampled by a thread."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak = self.count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def count() -> int:
        return len(os.listdir("/proc/self/fd"))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.count())

    def __enter__(self) -> FdSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def peak_rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_threads(addresses: Sequence[str], one: Callable[[str], int]) -> dict[str, int]:
    answers: dict[str, int] = {}
    errors: list[str] = []

    def target(address: str) -> None:
        try:
            answers[address] = one(address)
        except Exception as exc:
            errors.append("%s: %r" % (address, exc))

    threads = [threading.Thread(target=target, args=(a,)) for a in addresses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError("%d targets failed, e.g. %s" % (len(errors), errors[0]))
    return answers


def way_floor(addresses: Sequence[str], config: str) -> Callable[[], None]:
    processes = [
        subprocess.Popen(
            ["ssh", "-F", config, "-o", "BatchMode=yes", address, PY, "-c", "pass"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for address in addresses
    ]
    failed = [p.args for p in processes if p.wait() != 0]
    if failed:
        raise RuntimeError("%d ssh processes failed, e.g. %r" % (len(failed), failed[0]))
    return lambda: None


def way_trimitogen(
    addresses: Sequence[str], config: str, max_connecting: int
) -> Callable[[], None]:
    import trio

    import trimitogen as tm

    targets = [
        tm.Target((tm.ssh(a, ssh_args=["-F", config], python=PY),), name=a) for a in addresses
    ]
    closing = threading.Event()
    answered = threading.Event()
    failures: list[str] = []

    async def main() -> None:
        async with tm.open_group(targets, max_connecting=max_connecting) as group:
            results = await group.call(os.getpid)
            failures.extend(str(r.error)[:200] for r in results if not r.ok)
            answered.set()
            await trio.to_thread.run_sync(closing.wait)

    runner = threading.Thread(target=trio.run, args=(main,))
    runner.start()
    answered.wait()
    if failures:
        closing.set()
        runner.join()
        raise RuntimeError("%d targets failed, e.g. %s" % (len(failures), failures[0]))

    def close() -> None:
        closing.set()
        runner.join()

    return close


def way_mitogen(addresses: Sequence[str], config: str) -> Callable[[], None]:
    import mitogen.master  # type: ignore[import-untyped]

    broker = mitogen.master.Broker()
    router = mitogen.master.Router(broker)

    def one(address: str) -> int:
        context = router.ssh(hostname=address, ssh_args=["-F", config], python_path=PY)
        return int(context.call(os.getpid))

    try:
        run_threads(addresses, one)
    except BaseException:
        broker.shutdown()
        broker.join()
        raise

    def close() -> None:
        broker.shutdown()
        broker.join()

    return close


def way_execnet(addresses: Sequence[str], config: str) -> Callable[[], None]:
    import execnet

    group = execnet.Group()

    def one(address: str) -> int:
        gateway = group.makegateway("ssh=-F %s %s//python=%s" % (config, address, PY))
        channel = gateway.remote_exec("import os; channel.send(os.getpid())")
        return int(channel.receive())

    try:
        run_threads(addresses, one)
    except BaseException:
        group.terminate(timeout=10.0)
        raise
    return lambda: group.terminate(timeout=10.0)


def fleet_addresses(count: int) -> list[str]:
    return ["127.0.0.%d" % n for n in range(2, 2 + count)]


@contextlib.contextmanager
def running_fleet(count: int) -> Iterator[Path]:
    """Throwaway users, one sshd listening on ``count`` loopback addresses (one process per 16
    of them, from trimitogen.testing), and an ssh_config naming them; yields the config."""
    from trimitogen.testing import provision_users, running_sshd

    with (
        provision_users() as users,
        running_sshd(users, fleet_addresses(count), max_startups=4 * count) as server,
    ):
        config = server.directory / "fanout_ssh_config"
        config.write_text(
            "Host 127.0.0.*\n    Port %d\n    User %s\n    IdentityFile %s\n"
            "    IdentitiesOnly yes\n    IdentityAgent none\n    UserKnownHostsFile %s\n"
            "    GlobalKnownHostsFile /dev/null\n"
            % (server.port, server.user, server.identity_file, server.known_hosts)
        )
        yield config


def worker(way: str, count: int, config: str, max_connecting: int) -> dict[str, Any]:
    addresses = fleet_addresses(count)
    before = FdSampler.count()
    with FdSampler() as sampler:
        started = time.perf_counter()
        if way == "floor":
            close = way_floor(addresses, config)
        elif way == "trimitogen":
            close = way_trimitogen(addresses, config, max_connecting)
        elif way == "mitogen":
            close = way_mitogen(addresses, config)
        else:
            close = way_execnet(addresses, config)
        answered = time.perf_counter()
        close()
        closed = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "way": way,
        "count": count,
        "wall": answered - started,
        "master_cpu": usage.ru_utime + usage.ru_stime,
        "ssh_cpu": children.ru_utime + children.ru_stime,
        "close": closed - answered,
        "fds_per_target": (sampler.peak - before) / count,
        "rss_mib": peak_rss_mib(),
    }


def run_worker(way: str, count: int, config: Path, max_connecting: int) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--worker", way, str(count), str(config)]
    argv += ["--max-connecting", str(max_connecting)]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=WORKER_TIMEOUT, env=env, cwd=REPO
    )
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-3:]
        return {
            "way": way,
            "count": count,
            "error": " | ".join(tail) or "exit %d" % result.returncode,
        }
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def table(count: int, rows: dict[str, list[dict[str, Any]]]) -> str:
    def median(way: str, key: str) -> float | None:
        values = [r[key] for r in rows.get(way, []) if key in r]
        return statistics.median(values) if values else None

    floor = median("floor", "wall")
    lines = [
        "fan-out over ssh, N = %d (median of %d)" % (count, max(map(len, rows.values()))),
        "| way | wall | vs floor | fds per target | master RSS | master CPU | close |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for way in WAYS:
        if way not in rows:
            continue
        errors = [r["error"] for r in rows[way] if "error" in r]
        wall = median(way, "wall")
        if wall is None:
            lines.append("| %s | failed: %s | | | | | |" % (way, errors[0] if errors else "?"))
            continue
        ratio = "%.2fx" % (wall / floor) if floor else "n/a"
        fds = median(way, "fds_per_target")
        rss = median(way, "rss_mib")
        close = median(way, "close")
        cpu = median(way, "master_cpu")
        lines.append(
            "| %s | %.2f s | %s | %s | %s | %s | %s |"
            % (
                way,
                wall,
                ratio,
                "-" if way == "floor" or fds is None else "%.2f" % fds,
                "-" if way == "floor" or rss is None else "%.0f MiB" % rss,
                "-" if way == "floor" or cpu is None else "%.2f s" % cpu,
                "-" if way == "floor" or close is None else "%.2f s" % close,
            )
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="50,200", help="numbers of targets (default 50,200)")
    parser.add_argument("--runs", type=int, default=1, help="runs of each way (default 1)")
    parser.add_argument("--only", default=",".join(WAYS), help="ways to run, comma-separated")
    parser.add_argument("--max-connecting", type=int, default=64, help="for open_group")
    parser.add_argument("--worker", nargs=3, metavar=("WAY", "N", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        way, count, config = args.worker
        print(json.dumps(worker(way, int(count), config, args.max_connecting)))
        return 0
    if os.geteuid() != 0:
        print("fanout: run as root (it starts sshds and uses the throwaway users)", file=sys.stderr)
        return 2
    counts = [int(c) for c in args.counts.split(",")]
    ways = [w for w in WAYS if w in args.only.split(",")]
    with running_fleet(max(counts)) as ssh_config:
        for count in counts:
            rows: dict[str, list[dict[str, Any]]] = {}
            for _ in range(args.runs):
                # Interleaved, so a drift of the machine's load spreads over every way.
                for way in ways:
                    figures = run_worker(way, count, ssh_config, args.max_connecting)
                    rows.setdefault(way, []).append(figures)
                    print("  %s" % json.dumps(figures), file=sys.stderr, flush=True)
            print(table(count, rows), flush=True)
            print(flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
