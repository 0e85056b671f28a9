"""Functions the split-message tests run in child contexts (sent over the wire)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

ORDER: list[str] = []
RELEASED = threading.Event()


def reset() -> None:
    del ORDER[:]
    RELEASED.clear()


def record(tag: str, data: bytes = b"") -> int:
    """Note that the call tagged ``tag`` ran; the size of what it was given."""
    ORDER.append(tag)
    return len(data)


def order() -> list[str]:
    return list(ORDER)


def release() -> None:
    RELEASED.set()


def big_when_released(size: int) -> Iterator[bytes]:
    """One item of ``size`` bytes, once :func:`release` was called (by another call): made
    beforehand, so that its writing starts at once."""
    data = b"x" * size
    RELEASED.wait(60)
    yield data


def peak_kib() -> int:
    """This process's peak resident memory (VmHWM), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0
