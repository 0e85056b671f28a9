"""Compare trimitogen with mitogen and execnet, side by side in one run.

Each library is measured in a subprocess of its own (mitogen installs signal and fork handlers
and starts threads; Trio must not share a process with it), which writes its raw samples as
JSON; this script then prints one table per section with absolute numbers, ratios relative to
trimitogen and, for the local section, whether the design targets are met.  Timings never make
the script fail: it exits non-zero only if a measurement could not be taken at all.

Sections (``--sections``): ``local`` (start-up, teardown, round trip, transfers), ``import``
(first call into a package that only the master has), ``fork`` (a forked copy: start-up to first
call, close, round trip), ``ssh``, ``sudo`` and ``hop`` (ssh then sudo) start-up to first call.
The last three create throwaway users and a real sshd with ``tests/infra.py`` (root only) and
remove them again at the end.

Run ``python benchmarks/compare.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import functools
import importlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

LIBRARIES = ("trimitogen", "mitogen", "execnet")
PEERS = ("mitogen", "execnet")
SECTIONS = ("local", "import", "fork", "ssh", "sudo", "hop")
#: Sections that need throwaway users (and, but for sudo, an sshd) from tests/infra.py.
REMOTE_SECTIONS = ("ssh", "sudo", "hop")
MIB = 1024 * 1024
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The interpreter of every context that runs as another user: pyenv's live under /root.
REMOTE_PYTHON = "/usr/bin/python3"

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

#: Why a library cannot take part in a section.
UNSUPPORTED = {
    ("execnet", "import"): "execnet serves no modules (a child imports only what is "
    "installed where it runs)",
    ("execnet", "fork"): "execnet has no fork method (every gateway starts a new interpreter: "
    "popen, ssh, socket)",
}


@dataclass(frozen=True)
class Plan:
    """How many times each measurement runs; warm-up runs are not counted."""

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


@dataclass
class Samples:
    """Raw measurements of one library, all in seconds."""

    startup: list[float] = field(default_factory=list)  # spawn until the first reply
    teardown: list[float] = field(default_factory=list)  # shutdown until the child is gone
    rtt: list[float] = field(default_factory=list)  # one no-op call each
    to_parent: list[float] = field(default_factory=list)  # one child->parent transfer each
    to_child: list[float] = field(default_factory=list)  # one parent->child transfer each
    # import section: a fresh copy of the generated package for every run
    package_call: list[float] = field(default_factory=list)  # first call, context started
    package_call_warm: list[float] = field(default_factory=list)  # same, master already served it
    package_startup: list[float] = field(default_factory=list)  # start-up + first call
    package_call_source: list[float] = field(default_factory=list)  # trimitogen, source only
    package_call_warm_source: list[float] = field(default_factory=list)
    package_startup_source: list[float] = field(default_factory=list)
    #: [requests, modules sent, bytes sent, master seconds] per package_call run
    import_stats: list[list[float]] = field(default_factory=list)
    import_stats_source: list[list[float]] = field(default_factory=list)
    # remote sections: start-up until the reply to the first no-op call
    ssh: list[float] = field(default_factory=list)
    sudo: list[float] = field(default_factory=list)
    hop: list[float] = field(default_factory=list)
    hop_via: list[float] = field(default_factory=list)  # execnet: two gateways, via=
    # fork section, two variants: "fork_via" (a started local context forks itself) and "fork"
    # (trimitogen: fork() without via, from its fork server; mitogen: the master forks itself)
    fork_via_first: list[float] = field(default_factory=list)  # the variant's first fork+call
    fork_via_open: list[float] = field(default_factory=list)  # fork until the first reply
    fork_via_close: list[float] = field(default_factory=list)  # from then until it is gone
    fork_via_rtt: list[float] = field(default_factory=list)  # one no-op call on a fork each
    fork_first: list[float] = field(default_factory=list)  # trimitogen: includes server start
    fork_open: list[float] = field(default_factory=list)
    fork_close: list[float] = field(default_factory=list)
    fork_rtt: list[float] = field(default_factory=list)
    #: section -> why this library cannot take part
    unsupported: dict[str, str] = field(default_factory=dict)
    #: section -> the traceback that ended its measurement
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Remote:
    """Where the ssh, sudo and hop sections log in; made by the driver from tests/infra.py."""

    host: str
    port: int  # 0: no sshd (only the sudo section runs)
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


# --------------------------------------------------------------------------------------------
# The import section's package: generated, and on the master's sys.path only.
# --------------------------------------------------------------------------------------------

#: module (dotted, relative to the package) -> the modules it imports (relative imports).
PACKAGE_MODULES: dict[str, tuple[str, ...]] = {
    "__init__": ("api",),
    "api": ("config", "models", "sub.engine"),
    "config": (),
    "constants": (),
    "errors": ("constants",),
    "util": ("config", "constants"),
    "models": ("errors", "util"),
    "sub.__init__": ("sub.engine",),
    "sub.engine": ("config", "sub.parser", "sub.render"),
    "sub.helpers": ("constants", "util"),
    "sub.parser": ("errors", "sub.helpers"),
    "sub.render": ("models", "sub.helpers"),
}
#: Functions per module besides ``entry`` (and ``run`` in ``api``).
PACKAGE_HELPERS = 16
PACKAGE_ARG = 11


def _relative_import(module: str, dep: str) -> str:
    """``from ..x import entry as _x``: how ``module`` imports ``dep``'s entry point."""
    package = module.split(".")[:-1]  # "sub.parser" and "sub.__init__" live in "sub"
    target = dep.split(".")
    common = 0
    while common < min(len(package), len(target) - 1) and package[common] == target[common]:
        common += 1
    dots = "." * (len(package) - common + 1)
    return "from %s%s import entry as _%s" % (
        dots,
        ".".join(target[common:]),
        dep.replace(".", "_"),
    )


def _module_source(package: str, module: str, deps: Sequence[str], index: int) -> str:
    """Plain library-like code: a class, helpers, an ``entry`` that calls what it imports."""
    name = package if module == "__init__" else package + "." + module.replace(".__init__", "")
    lines = ['"""%s: generated by benchmarks/compare.py as a stand-in library."""' % name, ""]
    lines += [_relative_import(module, dep) for dep in deps]
    if module == "__init__":
        lines.append("from .api import run")
    lines += [
        "",
        "SCALE = %d" % (index + 3),
        "TABLE = {k: (k * SCALE) % 97 for k in range(64)}",
        "",
        "",
        "class Record:",
        '    """A small value object."""',
        "",
        '    __slots__ = ("key", "value")',
        "",
        "    def __init__(self, key, value):",
        "        self.key = key",
        "        self.value = value",
        "",
        "    def __repr__(self):",
        '        return "Record(%r, %r)" % (self.key, self.value)',
        "",
        "    def weight(self):",
        "        return (len(repr(self)) + self.value * SCALE) % 1009",
    ]
    for k in range(PACKAGE_HELPERS):
        lines += [
            "",
            "",
            "def helper_%d(x):" % k,
            '    """Helper %d: mixes x with the module\'s table."""' % k,
            "    total = 0",
            "    for j in range(x %% 17 + %d):" % k,
            "        if j % 3 == 0:",
            "            total += j * SCALE",
            "        elif j % 3 == 1:",
            "            total -= TABLE.get(j, 0)",
            "        else:",
            "            total ^= j",
            "    return total",
        ]
    lines += [
        "",
        "",
        "def entry(x):",
        '    """A checksum over this module\'s helpers and the modules it imports."""',
        "    total = Record(x, SCALE).weight()",
        "    for helper in (%s):" % ", ".join("helper_%d" % k for k in range(PACKAGE_HELPERS)),
        "        total += helper(x)",
    ]
    lines += ["    total += _%s(x)" % dep.replace(".", "_") for dep in deps]
    lines.append("    return total % 1000003")
    if module == "api":
        lines += [
            "",
            "",
            "def run(x):",
            '    """(checksum, the __file__ of every module of the package loaded here)."""',
            "    import sys",
            "",
            '    top = __name__.partition(".")[0]',
            "    files = sorted(",
            '        str(getattr(module, "__file__", None))',
            "        for name, module in list(sys.modules.items())",
            '        if name == top or name.startswith(top + ".")',
            "    )",
            "    return entry(x), files",
        ]
    return "\n".join(lines) + "\n"


def package_files(package: str) -> dict[str, str]:
    """Relative path -> source of every module of the generated package called ``package``."""
    return {
        os.path.join(package, *module.split(".")) + ".py": _module_source(package, module, deps, i)
        for i, (module, deps) in enumerate(PACKAGE_MODULES.items())
    }


class MasterOnlyPackages:
    """Fresh copies of the generated package, importable by this process only.

    Every measurement gets a new copy under a new name, so neither the master's module cache
    nor the child's has seen it.  The directory is put on this process's ``sys.path`` alone
    (no PYTHONPATH), so a child can get the package only over the wire; :meth:`check` proves it
    from the ``__file__`` of every module the child loaded.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._count = 0

    def new(self) -> tuple[Callable[[int], Any], int]:
        """Write and import a new copy; return its ``run`` and the checksum it must return."""
        package = "tmgbenchpkg%03d" % self._count
        self._count += 1
        for path, source in package_files(package).items():
            full = os.path.join(self.directory, path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w", encoding="utf-8") as f:
                f.write(source)
        importlib.invalidate_caches()
        module = importlib.import_module(package)
        run: Callable[[int], Any] = module.run
        expected: int = run(PACKAGE_ARG)[0]
        return run, expected

    def check(self, result: Any, expected: int) -> None:
        value, files = result
        if value != expected:
            raise RuntimeError("package call returned %r, expected %r" % (value, expected))
        if len(files) != len(PACKAGE_MODULES):
            raise RuntimeError(
                "the child loaded %d modules of the package, not %d: %r"
                % (len(files), len(PACKAGE_MODULES), files)
            )
        for path in files:
            if path.startswith(self.directory):
                raise RuntimeError(
                    "the child imported %s from disk: it must get the package over the wire" % path
                )


@contextlib.contextmanager
def master_only_packages() -> Iterator[MasterOnlyPackages]:
    with tempfile.TemporaryDirectory(prefix="trimitogen-bench-pkg-") as directory:
        directory = os.path.realpath(directory)
        sys.path.insert(0, directory)
        try:
            yield MasterOnlyPackages(directory)
        finally:
            sys.path.remove(directory)


# --------------------------------------------------------------------------------------------
# Workers: each runs in its own subprocess and imports only its own library.
# --------------------------------------------------------------------------------------------


def _check_length(what: str, got: int, want: int) -> None:
    if got != want:
        raise RuntimeError("%s: expected %d bytes, got %d" % (what, want, got))


def _check_uid(section: str, got: int, want: int) -> None:
    if got != want:
        raise RuntimeError("%s: the context runs as uid %d, expected %d" % (section, got, want))


def _error_text() -> str:
    """The current exception's traceback, trimmed to its last lines."""
    return "\n".join(traceback.format_exc().rstrip().splitlines()[-12:])


def _repeat(warmup: int, runs: int, once: Callable[[], float]) -> list[float]:
    """Call ``once`` ``warmup + runs`` times; return the seconds of the counted runs."""
    timings = [once() for _ in range(warmup + runs)]
    return timings[warmup:]


async def _repeat_async(
    warmup: int, runs: int, once: Callable[[], Awaitable[float]]
) -> list[float]:
    timings = [await once() for _ in range(warmup + runs)]
    return timings[warmup:]


#: The fork section's rows: (label, error key, Samples attribute prefix) per library; the first
#: row of each is the via= variant, where a started local context forks itself.
FORK_VARIANTS = {
    "trimitogen": (
        ("trimitogen, via=local", "fork, via=", "fork_via"),
        ("trimitogen, fork server", "fork, no via", "fork"),
    ),
    "mitogen": (
        ("mitogen, via=local", "fork, via=", "fork_via"),
        ("mitogen, master forks", "fork, no via", "fork"),
    ),
}


def _check_fork(pid: int, not_pids: set[int]) -> None:
    if pid in not_pids:
        raise RuntimeError("the forked context runs in process %d, not in a new one" % pid)


def _keep_fork(
    samples: Samples,
    prefix: str,
    runs: Sequence[tuple[float, float]],
    warmup: int,
    rtt: Sequence[float],
) -> None:
    """Store one fork variant: its first run apart, then (after ``warmup``) open and close."""
    getattr(samples, prefix + "_first").append(runs[0][0])
    for opened, closed in runs[1 + warmup :]:
        getattr(samples, prefix + "_open").append(opened)
        getattr(samples, prefix + "_close").append(closed)
    getattr(samples, prefix + "_rtt").extend(rtt)


def bench_trimitogen(
    python: str, plan: Plan, sections: Sequence[str], remote: Remote | None
) -> tuple[str, Samples]:
    """Measure trimitogen: ``open_context(method)`` and ``await ctx.call(...)``."""
    sys.path.insert(0, REPO_ROOT)  # measure this checkout, installed or not
    import trio

    import trimitogen as tm
    from trimitogen._context import RESPONDER

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

    async def local_section() -> None:
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

    async def package_call_once(
        packages: MasterOnlyPackages,
    ) -> tuple[float, float, list[float]]:
        """First call on a started context, then on a second one (the master's cache warm)."""
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

    async def package_startup_once(packages: MasterOnlyPackages) -> float:
        fn, expected = packages.new()
        t0 = time.perf_counter()
        async with tm.open_context(method) as ctx:
            result = await ctx.call(fn, PACKAGE_ARG)
            t1 = time.perf_counter()
        packages.check(result, expected)
        return t1 - t0

    async def import_section() -> None:
        # Compiled code (the default) and source only, interleaved run by run.
        variants = [
            (
                True,
                samples.package_call,
                samples.package_call_warm,
                samples.package_startup,
                samples.import_stats,
            )
        ]
        if hasattr(RESPONDER, "send_code"):
            variants.append(
                (
                    False,
                    samples.package_call_source,
                    samples.package_call_warm_source,
                    samples.package_startup_source,
                    samples.import_stats_source,
                )
            )
        else:
            samples.unsupported["import-source"] = (
                "trimitogen._context.RESPONDER has no send_code attribute"
            )
        with master_only_packages() as packages:
            for i in range(plan.package_warmup + plan.package_runs):
                keep = i >= plan.package_warmup
                for send_code, calls, warm_calls, startups, stats in variants:
                    RESPONDER.send_code = send_code
                    try:
                        call, warm, run_stats = await package_call_once(packages)
                        startup = await package_startup_once(packages)
                    finally:
                        RESPONDER.send_code = True
                    if keep:
                        calls.append(call)
                        warm_calls.append(warm)
                        startups.append(startup)
                        stats.append(run_stats)

    async def remote_section(section: str) -> None:
        assert remote is not None
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
            _check_uid(section, uid, remote.expected_uid(section))
            return t1 - t0

        timings = await _repeat_async(plan.remote_warmup, plan.remote_runs, once)
        getattr(samples, section).extend(timings)

    async def fork_once(via: tm.Context | None) -> tuple[float, float]:
        """Fork (from ``via``, or from the fork server) until the first reply; then close."""
        t0 = time.perf_counter()
        async with tm.open_context(tm.fork(), via=via) as ctx:
            await ctx.call(abs, 0)
            t1 = time.perf_counter()
        return t1 - t0, time.perf_counter() - t1

    async def fork_rtt(via: tm.Context | None, not_pids: set[int]) -> list[float]:
        timings = []
        async with tm.open_context(tm.fork(), via=via) as ctx:
            _check_fork(await ctx.call(os.getpid), not_pids)
            for _ in range(plan.rtt_warmup):
                await ctx.call(abs, 0)
            for _ in range(plan.rtt_calls):
                t0 = time.perf_counter()
                await ctx.call(abs, 0)
                timings.append(time.perf_counter() - t0)
        return timings

    async def fork_variant(key: str, prefix: str, via: tm.Context | None, pids: set[int]) -> None:
        # The first fork without via also starts the run's fork server: kept apart as "first".
        try:
            runs = [await fork_once(via) for _ in range(1 + plan.fork_warmup + plan.fork_runs)]
            rtt = await fork_rtt(via, pids)
        except Exception:
            samples.errors[key] = _error_text()
            return
        _keep_fork(samples, prefix, runs, plan.fork_warmup, rtt)

    async def fork_section() -> None:
        (_, via_key, via_prefix), (_, key, prefix) = FORK_VARIANTS["trimitogen"]
        async with tm.open_context(tm.local(python=python)) as parent:
            pids = {os.getpid(), await parent.call(os.getpid)}
            await fork_variant(via_key, via_prefix, parent, pids)
        await fork_variant(key, prefix, None, {os.getpid()})

    async def main() -> None:
        for section in sections:
            try:
                if section == "local":
                    await local_section()
                elif section == "import":
                    await import_section()
                elif section == "fork":
                    await fork_section()
                else:
                    await remote_section(section)
            except Exception:
                samples.errors[section] = _error_text()

    trio.run(main)
    return tm.__version__, samples


def bench_mitogen(
    python: str, plan: Plan, sections: Sequence[str], remote: Remote | None
) -> tuple[str, Samples]:
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

    def local_section() -> None:
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

    def import_section() -> None:
        # A new Broker and Router per run, so each run starts with a cold module responder.
        with master_only_packages() as packages:

            def call_once() -> tuple[float, float, list[float]]:
                """First call on a started context, then on a second one of the same router
                (its responder's cache warm)."""
                fn, expected = packages.new()
                timings = []
                stats: list[float] = []
                broker = mitogen.master.Broker()
                try:
                    router = mitogen.master.Router(broker)
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
                finally:
                    broker.shutdown()
                    broker.join()
                return timings[0], timings[1], stats

            def startup_once() -> float:
                fn, expected = packages.new()
                t0 = time.perf_counter()
                broker = mitogen.master.Broker()
                try:
                    router = mitogen.master.Router(broker)
                    ctx = router.local(python_path=python)
                    result = ctx.call(fn, PACKAGE_ARG)
                    t1 = time.perf_counter()
                finally:
                    broker.shutdown()
                    broker.join()
                packages.check(result, expected)
                return t1 - t0

            for i in range(plan.package_warmup + plan.package_runs):
                call, warm, stats = call_once()
                startup = startup_once()
                if i >= plan.package_warmup:
                    samples.package_call.append(call)
                    samples.package_call_warm.append(warm)
                    samples.package_startup.append(startup)
                    samples.import_stats.append(stats)

    def remote_section(section: str) -> None:
        assert remote is not None
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
            broker = mitogen.master.Broker()
            try:
                router = mitogen.master.Router(broker)
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
            finally:
                broker.shutdown()
                broker.join()
            _check_uid(section, uid, remote.expected_uid(section))
            return t1 - t0

        getattr(samples, section).extend(_repeat(plan.remote_warmup, plan.remote_runs, once))

    def fork_section() -> None:
        """``router.fork(via=local_ctx)`` (the local context forks) and ``router.fork()``
        (mitogen.fork: the master process forks itself), each closed with
        ``ctx.shutdown(wait=True)``; one Broker and Router for the whole section."""
        broker = mitogen.master.Broker()
        try:
            router = mitogen.master.Router(broker)

            def once(via: Any) -> tuple[float, float]:
                t0 = time.perf_counter()
                ctx = router.fork(via=via)
                ctx.call(abs, 0)
                t1 = time.perf_counter()
                ctx.shutdown(wait=True)
                return t1 - t0, time.perf_counter() - t1

            def rtt(via: Any, not_pids: set[int]) -> list[float]:
                timings = []
                ctx = router.fork(via=via)
                try:
                    _check_fork(int(ctx.call(os.getpid)), not_pids)
                    for _ in range(plan.rtt_warmup):
                        ctx.call(abs, 0)
                    for _ in range(plan.rtt_calls):
                        t0 = time.perf_counter()
                        ctx.call(abs, 0)
                        timings.append(time.perf_counter() - t0)
                finally:
                    ctx.shutdown(wait=True)
                return timings

            def variant(key: str, prefix: str, via: Any, pids: set[int]) -> None:
                # The first fork via= also upgrades the local context to a parent: kept apart.
                try:
                    runs = [once(via) for _ in range(1 + plan.fork_warmup + plan.fork_runs)]
                    timings = rtt(via, pids)
                except Exception:
                    samples.errors[key] = _error_text()
                    return
                _keep_fork(samples, prefix, runs, plan.fork_warmup, timings)

            (_, via_key, via_prefix), (_, key, prefix) = FORK_VARIANTS["mitogen"]
            parent = router.local(python_path=python)
            pids = {os.getpid(), int(parent.call(os.getpid))}
            variant(via_key, via_prefix, parent, pids)
            parent.shutdown(wait=True)
            variant(key, prefix, None, {os.getpid()})
        finally:
            broker.shutdown()
            broker.join()

    for section in sections:
        try:
            if section == "local":
                local_section()
            elif section == "import":
                import_section()
            elif section == "fork":
                fork_section()
            else:
                remote_section(section)
        except Exception:
            samples.errors[section] = _error_text()
    return ".".join(str(part) for part in mitogen.__version__), samples


def execnet_ssh_spec(remote: Remote, user: str) -> str:
    """``ssh=OPTIONS user@host``: execnet splits the value on whitespace into ssh's argv."""
    options = remote.ssh_options(user)
    for option in options:
        if not option or any(c.isspace() for c in option) or "//" in option:
            raise ValueError("cannot pass %r in an execnet spec" % option)
    return "ssh=" + " ".join(options)


def bench_execnet(
    python: str, plan: Plan, sections: Sequence[str], remote: Remote | None
) -> tuple[str, Samples]:
    """Measure execnet: gateways in a Group, ``remote_exec`` and channels.

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

    def local_section() -> None:
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

    def remote_once(section: str, specs: Sequence[str]) -> float:
        """Open ``specs`` in order (the last is the target); time until its first reply."""
        assert remote is not None
        group = execnet.Group()
        t0 = time.perf_counter()
        try:
            for one in specs:
                gw = group.makegateway(one)
            channel = gw.remote_exec("channel.send(abs(0))")
            channel.receive()
            t1 = time.perf_counter()
            uid = int(gw.remote_exec("import os; channel.send(os.getuid())").receive())
        finally:
            group.terminate(timeout=10.0)
        _check_uid(section, uid, remote.expected_uid(section))
        return t1 - t0

    def remote_section(section: str) -> None:
        assert remote is not None
        sudo_python = " ".join(remote.sudo_python())
        variants: list[tuple[list[float], list[str]]]
        if section == "ssh":
            ssh = execnet_ssh_spec(remote, remote.ssh_user)
            variants = [(samples.ssh, ["%s//python=%s" % (ssh, remote.python)])]
        elif section == "sudo":
            variants = [(samples.sudo, ["popen//python=%s" % sudo_python])]
        else:
            ssh = execnet_ssh_spec(remote, remote.hop_user)
            variants = [
                # One gateway: ssh runs sudo, which runs the interpreter.
                (samples.hop, ["%s//python=%s" % (ssh, sudo_python)]),
                # Two gateways, like the other libraries' chains: the second one via the first.
                (
                    samples.hop_via,
                    [
                        "%s//python=%s//id=login" % (ssh, remote.python),
                        "popen//python=%s//via=login" % sudo_python,
                    ],
                ),
            ]
        for timings, specs in variants:
            once = functools.partial(remote_once, section, specs)
            timings.extend(_repeat(plan.remote_warmup, plan.remote_runs, once))

    for section in sections:
        if ("execnet", section) in UNSUPPORTED:
            samples.unsupported[section] = UNSUPPORTED["execnet", section]
            continue
        try:
            if section == "local":
                local_section()
            else:
                remote_section(section)
        except Exception:
            samples.errors[section] = _error_text()
    return execnet.__version__, samples


BENCHMARKS: dict[str, Callable[[str, Plan, Sequence[str], Remote | None], tuple[str, Samples]]] = {
    "trimitogen": bench_trimitogen,
    "mitogen": bench_mitogen,
    "execnet": bench_execnet,
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
    # Before the driver gives up on this worker: print where every thread is, and exit.
    faulthandler.dump_traceback_later(max(timeout - 10.0, 1.0), exit=True)
    pin(cpu)
    remote = None
    if remote_json:
        with open(remote_json, encoding="utf-8") as f:
            remote = Remote(**json.load(f))
    version, samples = BENCHMARKS[library](python, plan, sections, remote)
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


def collect(
    library: str,
    python: str,
    quick: bool,
    cpu: int | None,
    timeout: float,
    sections: Sequence[str],
    remote_json: str | None,
) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="trimitogen-bench-") as tmp:
        json_out = os.path.join(tmp, "result.json")
        argv = [
            sys.executable,
            os.path.abspath(__file__),
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


def _row(
    label: str, cells: Sequence[str], width: int = LABEL_WIDTH, column: int = COLUMN_WIDTH
) -> str:
    return label.ljust(width) + "".join(cell.rjust(column) for cell in cells)


def _number(value: float) -> str:
    return "%.1f" % value if value < 10000 else "%.0f" % value


def _ratio(peer: float, base: float) -> str:
    return "%.2fx" % (peer / base) if base > 0 and peer >= 0 else "-"


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


# --------------------------------------------------------------------------------------------
# The import section's table
# --------------------------------------------------------------------------------------------

SECTION_LABEL_WIDTH = 26
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


def _state(outcome: Outcome, section: str) -> str | None:
    """Why ``outcome`` has no numbers for ``section``, or None if it has them."""
    if outcome.samples is None:
        return "failed (worker; see below)"
    if section in outcome.samples.unsupported:
        return "n/a: " + outcome.samples.unsupported[section]
    if section in outcome.samples.errors:
        return "failed (see below)"
    return None


def _import_cells(
    calls: list[float], warm_calls: list[float], startups: list[float], stats: list[list[float]]
) -> list[str]:
    columns = list(zip(*stats, strict=True)) if stats else [[math.nan]] * 4
    requests, modules, sent, seconds = (statistics.median(column) for column in columns)
    return [
        _number(statistics.median(calls) * 1e3),
        _number(statistics.median(warm_calls) * 1e3),
        _number(statistics.median(startups) * 1e3),
        "%.0f" % requests,
        "%.0f" % modules,
        _number(sent / 1024),
        _number(seconds * 1e3),
    ]


def format_import_section(outcomes: dict[str, Outcome], plan: Plan) -> list[str]:
    files = package_files("pkg")
    source_kib = sum(len(text.encode()) for text in files.values()) / 1024
    width = SECTION_LABEL_WIDTH
    lines = [
        "first call into a master-only package: %d modules (relative imports, one subpackage), "
        "%.0f KiB of source," % (len(files), source_kib),
        "on the master's sys.path only; a fresh copy per run; median of %d (+%d warm-up)"
        % (plan.package_runs, plan.package_warmup),
        "",
        _row("library", [header for header, _ in IMPORT_COLUMNS], width, IMPORT_WIDTH),
        _row("", [unit for _, unit in IMPORT_COLUMNS], width, IMPORT_WIDTH),
    ]
    times: dict[str, list[float]] = {}
    for library, outcome in outcomes.items():
        rows = [(library, "import", "")]
        if library == "trimitogen":
            rows.append(("trimitogen, source only", "import-source", "_source"))
        for label, key, suffix in rows:
            state = _state(outcome, "import") or _state(outcome, key)
            if state is not None:
                lines.append(label.ljust(width) + state)
                continue
            assert outcome.samples is not None
            timings = [
                getattr(outcome.samples, "package_call" + suffix),
                getattr(outcome.samples, "package_call_warm" + suffix),
                getattr(outcome.samples, "package_startup" + suffix),
            ]
            stats = getattr(outcome.samples, "import_stats" + suffix)
            cells = _import_cells(timings[0], timings[1], timings[2], stats)
            lines.append(_row(label, cells, width, IMPORT_WIDTH))
            times[label] = [statistics.median(t) for t in timings]
    base = times.get("trimitogen")
    if base is not None:
        for label, basis in [(peer, peer + "/trimitogen") for peer in PEERS] + [
            ("trimitogen, source only", "source only/compiled")
        ]:
            if label in times:
                cells = [_ratio(peer, mine) for peer, mine in zip(times[label], base, strict=True)]
                lines.append(_row(basis, cells, width, IMPORT_WIDTH))
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


# --------------------------------------------------------------------------------------------
# The fork section's table
# --------------------------------------------------------------------------------------------

FORK_COLUMNS = (("open+call", "ms"), ("close", "ms"), ("first", "ms"), ("round trip", "us"))


def format_fork_section(outcomes: dict[str, Outcome], plan: Plan) -> list[str]:
    width = SECTION_LABEL_WIDTH
    lines = [
        "fork: a forked copy, fork until the reply to its first no-op call, close, round trip;",
        "median of %d (+1 first, +%d warm-up); round trip: median of %d calls (+%d warm-up)"
        % (plan.fork_runs, plan.fork_warmup, plan.rtt_calls, plan.rtt_warmup),
        "",
        _row("", [header for header, _ in FORK_COLUMNS], width),
        _row("", [unit for _, unit in FORK_COLUMNS], width),
    ]
    values: dict[str, list[list[float]]] = {}  # library -> one row of medians per variant
    for library, outcome in outcomes.items():
        if library not in FORK_VARIANTS:
            lines.append(library.ljust(width) + (_state(outcome, "fork") or "n/a"))
            continue
        for label, key, prefix in FORK_VARIANTS[library]:
            state = _state(outcome, "fork") or _state(outcome, key)
            if state is not None:
                lines.append(label.ljust(width) + state)
                values.setdefault(library, []).append([])
                continue
            assert outcome.samples is not None
            row = [
                statistics.median(getattr(outcome.samples, prefix + "_open")) * 1e3,
                statistics.median(getattr(outcome.samples, prefix + "_close")) * 1e3,
                getattr(outcome.samples, prefix + "_first")[0] * 1e3,
                statistics.median(getattr(outcome.samples, prefix + "_rtt")) * 1e6,
            ]
            values.setdefault(library, []).append(row)
            lines.append(_row(label, [_number(value) for value in row], width))
    base = values.get("trimitogen")
    peer = values.get("mitogen")
    if base is not None and peer is not None:
        for basis, mine, theirs in zip(
            ("mitogen/trimitogen, via=", "mitogen/trimitogen, no via"), base, peer, strict=True
        ):
            if mine and theirs:
                cells = [_ratio(p, b) for p, b in zip(theirs, mine, strict=True)]
                lines.append(_row(basis, cells, width))
    if base is not None and len(base) > 1 and base[1]:
        opened, _, first, _ = base[1]
        lines += [
            "",
            "trimitogen's fork server: the run's first fork() without via took %s ms, %s ms more"
            % (_number(first), _number(first - opened)),
            "than a fork from the started server (the server's own start).",
        ]
    lines += [
        "",
        "open+call: fork until the reply to ctx.call(abs, 0); close: from that reply until the",
        "copy is gone (trimitogen: leaving open_context; mitogen: ctx.shutdown(wait=True));",
        "first: the variant's first fork of the run (open+call, one sample, not in the median);",
        "round trip: one no-op call on a forked context. via=local: a local context, started",
        "once, forks itself (open_context(fork(), via=ctx); router.fork(via=ctx)), the copy is",
        "its child. trimitogen's master never forks: fork() without via copies the run's fork",
        "server (a local context), whose own start is in that row's first. mitogen.fork without",
        "via forks the master process itself (one hop less for every call). The first via= fork",
        "of mitogen also makes the local context a parent (upgrade_router).",
    ]
    return lines


# --------------------------------------------------------------------------------------------
# The ssh, sudo and hop sections: infrastructure, floors, tables
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def remote_infrastructure(sections: Sequence[str]) -> Iterator[tuple[Remote | None, str]]:
    """Throwaway users (and an sshd) from tests/infra.py for the remote sections.

    Yields ``(remote, "")``, or ``(None, why)`` when they cannot be set up; removes everything
    it made on exit.
    """
    wanted = [section for section in sections if section in REMOTE_SECTIONS]
    if not wanted:
        yield None, ""
        return
    if os.geteuid() != 0:
        yield None, "needs root (creates throwaway users and runs an sshd with tests/infra.py)"
        return
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    try:
        import pytest

        from tests import infra
    except ImportError as exc:
        yield None, "cannot import tests/infra.py (pip install -e '.[dev]'): %s" % exc
        return

    with contextlib.ExitStack() as stack:
        remote: Remote | None = None
        reason = ""
        try:
            users = stack.enter_context(infra.provision_users())
            server = None
            if "ssh" in wanted or "hop" in wanted:
                server = stack.enter_context(infra.running_sshd(users))
            remote = Remote(
                host=server.host if server else "127.0.0.1",
                port=server.port if server else 0,
                identity_file=str(server.identity_file) if server else "",
                ssh_args=server.ssh_args() if server else [],
                ssh_user=users.ssh.name,
                ssh_uid=users.ssh.uid,
                hop_user=users.sudo.name,
                sudo_user=users.nopw.name,
                sudo_uid=users.nopw.uid,
            )
        except (Exception, pytest.skip.Exception, pytest.fail.Exception) as exc:
            reason = (
                "could not set up users and sshd with tests/infra.py: %s"
                % (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            )
        yield remote, reason


@dataclass
class Floor:
    """The same login without any library: the command, its timings or why there are none."""

    command: str
    timings: list[float] = field(default_factory=list)
    error: str = ""


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


def measure_floor(remote: Remote, section: str, plan: Plan) -> Floor:
    argv, shown = floor_commands(remote, section)
    floor = Floor(shown)

    def once() -> float:
        t0 = time.perf_counter()
        subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=True,
        )
        return time.perf_counter() - t0

    try:
        floor.timings = _repeat(plan.remote_warmup, plan.remote_runs, once)
    except (OSError, subprocess.SubprocessError) as exc:
        stderr = getattr(exc, "stderr", None) or b""
        floor.error = "%s %s" % (exc, stderr.decode(errors="replace").strip())
    return floor


REMOTE_TITLES = {
    "ssh": "ssh start-up to first call: key login as {ssh_user}@{host}:{port}, {python}",
    "sudo": "sudo start-up to first call: root -> sudo -u {sudo_user} {python}, no password",
    "hop": "ssh->sudo hop: key login as {hop_user}@{host}:{port}, then sudo -u {sudo_user} "
    "{python}, no password",
}
REMOTE_NOTES = {
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
REMOTE_COLUMNS = (("start-up", "ms"), ("above floor", "ms"), ("min", "ms"), ("max", "ms"))


def format_remote_section(
    section: str,
    outcomes: dict[str, Outcome],
    remote: Remote | None,
    reason: str,
    floor: Floor | None,
    plan: Plan,
) -> list[str]:
    width = SECTION_LABEL_WIDTH
    if remote is None:
        title = REMOTE_TITLES[section].partition(":")[0]
        return [title + ": not run: " + reason]
    title = REMOTE_TITLES[section].format(**asdict(remote))
    lines = [
        "%s; median of %d (+%d warm-up)" % (title, plan.remote_runs, plan.remote_warmup),
        "",
        _row("", [header for header, _ in REMOTE_COLUMNS], width),
        _row("", [unit for _, unit in REMOTE_COLUMNS], width),
    ]
    floor_ms: float | None = None
    if floor is not None and floor.timings:
        floor_ms = statistics.median(floor.timings) * 1e3
        cells = [_number(floor_ms), "-", _number(min(floor.timings) * 1e3)]
        cells.append(_number(max(floor.timings) * 1e3))
        lines.append(_row("floor (no library)", cells, width))
    elif floor is not None:
        lines.append("floor (no library)".ljust(width) + "failed: " + floor.error)
    medians: dict[str, float] = {}
    for library, outcome in outcomes.items():
        rows = [(library, section)]
        if library == "execnet" and section == "hop":
            rows.append(("execnet, via=", "hop_via"))
        for label, attribute in rows:
            state = _state(outcome, section)
            if state is not None:
                lines.append(label.ljust(width) + state)
                continue
            assert outcome.samples is not None
            timings = [t * 1e3 for t in getattr(outcome.samples, attribute)]
            median = medians[label] = statistics.median(timings)
            above = "-" if floor_ms is None else _number(median - floor_ms)
            cells = [_number(median), above, _number(min(timings)), _number(max(timings))]
            lines.append(_row(label, cells, width))
    base = medians.get("trimitogen")
    if base is not None:
        for label, median in medians.items():
            if label == "trimitogen":
                continue
            cells = [_ratio(median, base)]
            if floor_ms is not None:
                cells.append(_ratio(median - floor_ms, base - floor_ms))
            lines.append(_row("%s/trimitogen" % label.replace(", ", " "), cells, width))
    lines.append("")
    if floor is not None:
        lines.append("floor: " + floor.command)
    lines += REMOTE_NOTES[section]
    return lines


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


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
        default=",".join(SECTIONS),
        help="comma-separated sections to run (default: %(default)s); ssh, sudo and hop need "
        "root: they create throwaway users and an sshd with tests/infra.py, removed at the end",
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
    parser.add_argument("--remote-json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.libraries = _csv(args.only)
    unknown = sorted(set(args.libraries) - set(LIBRARIES))
    if unknown or not args.libraries:
        parser.error("--only takes a comma-separated subset of %s" % ",".join(LIBRARIES))
    chosen = set(_csv(args.sections))
    if not chosen or chosen - set(SECTIONS):
        parser.error("--sections takes a comma-separated subset of %s" % ",".join(SECTIONS))
    args.sections = [section for section in SECTIONS if section in chosen]
    return args


def print_header(args: argparse.Namespace, plan: Plan, python: str) -> None:
    print("trimitogen vs mitogen vs execnet (%s run)" % ("quick" if args.quick else "full"))
    print("sections: %s" % ", ".join(args.sections))
    print("child interpreter: %s (Python %s)" % (python, interpreter_version(python)))
    if any(section in REMOTE_SECTIONS for section in args.sections):
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
    if "local" in args.sections:
        print(
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
        )
    sys.stdout.flush()


def print_local_section(outcomes: dict[str, Outcome], plan: Plan) -> None:
    summaries: dict[str, Summary] = {}
    failed: dict[str, str] = {}
    for library, outcome in outcomes.items():
        if _state(outcome, "local") is not None:
            failed[library] = outcome.error
            continue
        assert outcome.samples is not None
        summaries[library] = summarize(outcome.samples, plan.nbytes)
    print("local: start-up, teardown, round trip, 64 MiB transfers")
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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK_PLAN if args.quick else FULL_PLAN
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
    outcomes: dict[str, Outcome] = {}
    floors: dict[str, Floor] = {}
    with (
        remote_infrastructure(args.sections) as (remote, reason),
        tempfile.TemporaryDirectory(prefix="trimitogen-bench-") as tmp,
    ):
        sections = [s for s in args.sections if s not in REMOTE_SECTIONS]
        remote_json = None
        if remote is not None:
            remote_json = os.path.join(tmp, "remote.json")
            with open(remote_json, "w", encoding="utf-8") as f:
                json.dump(asdict(remote), f)
            pin(args.pin)  # the floors run like the workers do
            for section in REMOTE_SECTIONS:
                if section in args.sections and (remote.port or section == "sudo"):
                    sections.append(section)
                    floors[section] = measure_floor(remote, section, plan)
        for library in LIBRARIES:
            if library in args.libraries:
                outcomes[library] = collect(
                    library, python, args.quick, args.pin, args.timeout, sections, remote_json
                )

    versions = ["%s %s" % (o.library, o.version) for o in outcomes.values() if o.samples]
    print("versions: %s" % (", ".join(versions) or "-"))
    if "local" in args.sections:
        print()
        print_local_section(outcomes, plan)
    if "import" in args.sections:
        print()
        for line in format_import_section(outcomes, plan):
            print(line)
    if "fork" in args.sections:
        print()
        for line in format_fork_section(outcomes, plan):
            print(line)
    for section in REMOTE_SECTIONS:
        if section in args.sections:
            print()
            lines = format_remote_section(
                section, outcomes, remote, reason, floors.get(section), plan
            )
            for line in lines:
                print(line)

    failures = 0
    for library, outcome in outcomes.items():
        if outcome.samples is None:
            failures += 1
            print()
            print("%s could not be measured: %s" % (library, outcome.error))
            continue
        for section, error in outcome.samples.errors.items():
            failures += 1
            print()
            print("%s, section %s, could not be measured:\n%s" % (library, section, error))
    failures += sum(1 for floor in floors.values() if floor.error)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
