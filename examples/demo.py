"""A tour of trimitogen against local child interpreters.

Run from the repository root: ``python3 examples/demo.py``.
"""

from __future__ import annotations

import glob
import logging
import os
import platform
import sys
import time

import trio

import trimitogen as tm


def interpreters() -> list[str]:
    """One interpreter per Python version this machine has (the master's own first)."""
    by_minor: dict[int, str] = {}
    for path in glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3")):
        minor = int(path.split("/versions/3.")[1].split(".")[0])
        if minor >= 8:
            by_minor[minor] = path
    return [sys.executable] + [by_minor[m] for m in sorted(by_minor)]


def describe_process() -> dict[str, object]:
    """Defined only in this script: the child receives it over the connection."""
    return {"pid": os.getpid(), "python": platform.python_version(), "cwd": os.getcwd()}


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    started = time.perf_counter()
    async with tm.open_context(tm.local(), name="demo") as ctx:
        print(
            "started context %s (pid %s) in %.1f ms"
            % (ctx.name, ctx.pid, (time.perf_counter() - started) * 1000)
        )
        print("child's Python:", await ctx.call(platform.python_version))
        print("child's pid via os.getpid:", await ctx.call(os.getpid))
        print("a function of this script, run remotely:", await ctx.call(describe_process))
        print("modules sent to it so far:", ctx.import_stats)

        # Output of the child and of processes it starts arrives in the master's logging.
        await ctx.call(os.system, "echo hello from a shell inside the child")

        # A remote exception comes back as CallError, and the context stays usable.
        try:
            await ctx.call(int, "not a number")
        except tm.CallError as exc:
            print("remote error:", exc.type_name, "-", exc.message)

        # Many tasks may call at once.
        results: list[int] = []

        async def square(n: int) -> None:
            results.append(await ctx.call(pow, n, 2))

        async with trio.open_nursery() as nursery:
            for n in range(10):
                nursery.start_soon(square, n)
        print("squares computed remotely:", sorted(results))

        payload = os.urandom(1 << 20) * 32
        t = time.perf_counter()
        assert await ctx.call(len, payload) == len(payload)
        print("sent 32 MiB in %.1f ms" % ((time.perf_counter() - t) * 1000))

    print("context closed; child reaped")

    # fork(): copies of a running interpreter (here the library's fork server, started on first
    # use), with the modules it had imported ready.
    for _ in range(3):
        t = time.perf_counter()
        async with tm.open_context(tm.fork(preload=["json"])) as copy:
            pid = await copy.call(os.getpid)
        elapsed = (time.perf_counter() - t) * 1000
        print("forked pid %s, called and closed it in %.1f ms" % (pid, elapsed))

    for python in interpreters():
        async with tm.open_context(tm.local(python=python)) as ctx:
            print("%-45s -> Python %s" % (python, await ctx.call(platform.python_version)))


if __name__ == "__main__":
    trio.run(main)
