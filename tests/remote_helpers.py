"""Functions the tests call in child contexts.

Children receive this module from the master by import over the wire, so everything here must
run on Python 3.8 and use only the standard library.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from typing import Any


def echo(value: Any) -> Any:
    return value


def echo_kwargs(*args: Any, **kwargs: Any) -> Any:
    return (args, kwargs)


def fail(message: str) -> None:
    raise ValueError(message)


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


def print_lines(*lines: str) -> None:
    for line in lines:
        print(line)


def print_stderr(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def run_subprocess_echo(text: str) -> int:
    return subprocess.call(["/bin/sh", "-c", "echo %s; echo %s-err >&2" % (text, text)])


def log_record(logger_name: str, level: int, text: str) -> None:
    logging.getLogger(logger_name).log(level, "%s", text)


def exit_now(status: int) -> None:
    sys.stdout.flush()
    os._exit(status)


def kill_self(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(30)


def return_object() -> object:
    return object()


def getpid() -> int:
    return os.getpid()


def getppid() -> int:
    return os.getppid()


def version() -> tuple[int, int]:
    return (sys.version_info[0], sys.version_info[1])


class Tools:
    @staticmethod
    def double(x: int) -> int:
        return 2 * x

    @classmethod
    def name(cls) -> str:
        return cls.__qualname__

    def bound(self) -> None:
        """An instance method: refused when bound."""


STATE: dict[str, Any] = {}


def set_state(key: str, value: Any) -> None:
    STATE[key] = value


def get_state(key: str) -> Any:
    return STATE.get(key)


def random_draws(n: int) -> list[float]:
    import random

    return [random.random() for _ in range(n)]


def is_imported(name: str) -> bool:
    return name in sys.modules


def child_pids() -> list[int]:
    """Processes whose parent is this one (zombies included)."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry, "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rfind(b")") + 2 :].split()[1]) == me:
                found.append(int(entry))
    return found


def print_many(lines: int) -> None:
    line = "x" * 99
    for _ in range(lines):
        print(line)


def read_text(path: str) -> str:
    with open(path) as f:
        return f.read()
