"""Functions the cancellation tests call in child contexts (sent over the wire, Python 3.8+).

The module uses asyncio and not Trio, so its coroutine functions run under asyncio unless marked
(``tests/trio_helpers.py`` has the Trio ones); what a function saw (a cancellation, a cleanup) is
kept in ``EVENTS`` for a later call to read.  It runs on every child Python from 3.6: no
``from __future__ import annotations``, and annotations name only what exists at run time.
"""

import asyncio
import os
import select
import socket
import subprocess
import time
from typing import Any, Dict, List

import trimitogen

EVENTS: List[str] = []


def events() -> List[str]:
    return list(EVENTS)


def clear() -> None:
    del EVENTS[:]


def record(event: str) -> str:
    EVENTS.append(event)
    return event


def sleep_noting(seconds: float, tag: str) -> str:
    try:
        time.sleep(seconds)
    except trimitogen.Cancelled:
        EVENTS.append("cancelled " + tag)
        raise
    EVENTS.append("finished " + tag)
    return tag


def sleep_catching_exception(seconds: float) -> str:
    """``except Exception`` must not swallow the cancellation."""
    try:
        time.sleep(seconds)
    except Exception:
        EVENTS.append("swallowed by except Exception")
    return "not cancelled"


def block_in_select(seconds: float) -> None:
    select.select([], [], [], seconds)


def block_in_socket_read() -> bytes:
    left, right = socket.socketpair()
    try:
        return left.recv(1)
    finally:
        left.close()
        right.close()


def block_in_subprocess(seconds: float) -> int:
    """Start ``sleep``; its pid is kept in EVENTS so the test can check it was killed."""
    process = subprocess.Popen(["sleep", str(seconds)])
    EVENTS.append("pid %d" % process.pid)
    try:
        return process.wait()
    except BaseException:
        process.kill()
        process.wait()
        raise


def block_in_subprocess_run(seconds: float) -> int:
    return subprocess.run(["sleep", str(seconds)]).returncode


def spin(seconds: float) -> int:
    """Pure Python busy loop: the interrupt lands between two bytecodes."""
    deadline = time.monotonic() + seconds
    count = 0
    while time.monotonic() < deadline:
        count += 1
    return count


def swallow_cancel(seconds: float) -> str:
    """Ignores the first cancellation and goes on for ``seconds`` more."""
    try:
        time.sleep(60)
    except trimitogen.Cancelled:
        EVENTS.append("ignored a cancel")
    time.sleep(seconds)
    return "done anyway"


def quick(value: int) -> int:
    return value


def start_background(tmp: str) -> List[int]:
    """Processes the test expects to die with the context: a child, a shell's background job
    (reparented to init once the shell exits) and one that ignores SIGTERM."""
    plain = subprocess.Popen(["sleep", "60"])
    os.system("sleep 61 & echo $! > %s/bg.pid" % tmp)
    stubborn = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 62"])
    time.sleep(0.2)  # let the shell install its trap
    with open(os.path.join(tmp, "bg.pid")) as f:
        background = int(f.read())
    return [plain.pid, background, stubborn.pid]


def raise_builtin(name: str, *args: Any) -> None:
    import builtins

    raise getattr(builtins, name)(*args)


class CustomError(ValueError):
    pass


def raise_custom() -> None:
    raise CustomError("custom")


def raise_chained() -> None:
    try:
        empty: Dict[str, int] = {}
        empty["missing"]
    except KeyError as exc:
        raise RuntimeError("lookup failed") from exc


def missing_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# -- coroutine functions ------------------------------------------------------------------------
async def asyncio_sleep(seconds: float, tag: str) -> str:
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        EVENTS.append("asyncio cancelled " + tag)
        raise
    EVENTS.append("asyncio finished " + tag)
    return asyncio.get_event_loop().__class__.__name__


@trimitogen.event_loop("trio")
async def marked_trio() -> str:
    import sniffio

    return sniffio.current_async_library()
