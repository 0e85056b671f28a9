"""ssh compression on or off: transfer times over the loopback sshd, on two kinds of data.

Sets up throwaway users and a real sshd on 127.0.0.1 with ``trimitogen.testing`` (root only; both
are removed at the end), then, for ``compression=False`` and ``compression=True``, opens an
ssh context and times calls that move data each way:

* *text*: Python source of the standard library, concatenated (compresses about 4:1);
* *random*: ``os.urandom`` bytes (does not compress at all).

Each figure is the median of ``--runs`` calls, in MiB/s.  Loopback has no bandwidth limit, so
this is the case where compression costs the most and gains the least: on a slow link the text
figures move in compression's favour.  Timings are informational and never make the script fail.

    python3 benchmarks/ssh_compression.py [--mib 16] [--runs 5]
"""

from __future__ import annotations

import argparse
import contextlib
import operator
import os
import pathlib
import statistics
import sys
import sysconfig
import time
import zlib
from collections.abc import Awaitable, Callable

import trio

REPO_ROOT = str(pathlib.Path(__file__).resolve().parent.parent)
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)  # measure this checkout, installed or not

import trimitogen as tm  # noqa: E402
from trimitogen import testing as infra  # noqa: E402


def text_data(size: int) -> bytes:
    """``size`` bytes of the standard library's source, repeated as often as needed."""
    chunks = []
    total = 0
    for path in sorted(pathlib.Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        chunk = path.read_bytes()
        chunks.append(chunk)
        total += len(chunk)
        if total >= size:
            break
    data = b"".join(chunks)
    return (data * (size // len(data) + 1))[:size]


async def median_seconds(runs: int, call: Callable[[], Awaitable[object]]) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


async def measure(
    server: infra.SshServer, compression: bool, mib: int, runs: int
) -> dict[str, float]:
    size = mib << 20
    text, noise = text_data(size), os.urandom(size)
    # Child to parent: the child repeats a 1 MiB piece it was sent (text), or draws random bytes.
    piece = text[: 1 << 20]
    method = tm.ssh(
        server.host,
        port=server.port,
        username=server.user,
        ssh_args=server.ssh_args(),
        python="/usr/bin/python3",
        compression=compression,
    )
    figures = {}
    async with tm.open_context(method, name="ssh-compression-%s" % compression) as ctx:
        await ctx.call(len, b"warm-up")
        cases = {
            "text up": lambda: ctx.call(len, text),
            "random up": lambda: ctx.call(len, noise),
            "text down": lambda: ctx.call(operator.mul, piece, mib),
            "random down": lambda: ctx.call(os.urandom, size),
        }
        for label, call in cases.items():
            figures[label] = mib / await median_seconds(runs, call)
    return figures


async def main_async(server: infra.SshServer, mib: int, runs: int) -> None:
    results = {flag: await measure(server, flag, mib, runs) for flag in (False, True)}
    ratio = len(text_data(mib << 20)) / len(zlib.compress(text_data(mib << 20), 6))
    print("ssh over loopback, %d MiB per call, median of %d calls, MiB/s" % (mib, runs))
    print("(text compresses %.1f:1 with zlib level 6; random data does not compress)" % ratio)
    print("%-12s %12s %12s %8s" % ("data", "compression", "no compr.", "off/on"))
    for label in results[False]:
        on, off = results[True][label], results[False][label]
        print("%-12s %12.1f %12.1f %7.2fx" % (label, on, off, off / on))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=16, help="MiB per call (default 16)")
    parser.add_argument("--runs", type=int, default=5, help="calls per figure (default 5)")
    options = parser.parse_args()
    with contextlib.ExitStack() as stack:
        users = stack.enter_context(infra.provision_users())
        server = stack.enter_context(infra.running_sshd(users))
        trio.run(main_async, server, options.mib, options.runs)


if __name__ == "__main__":
    main()
