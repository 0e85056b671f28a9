"""Functions the streams section runs in children (imported there over the wire)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def items(n: int, size: int) -> Iterator[Any]:
    """trimitogen: ``n`` items, ints when ``size`` is 0, else ``size`` bytes each."""
    value: Any = b"x" * size if size else 1
    for _ in range(n):
        yield value


def send_items(sender: Any, n: int, size: int) -> None:
    """mitogen: the same items through a Sender, then close it."""
    value: Any = b"x" * size if size else 1
    for _ in range(n):
        sender.send(value)
    sender.close()


#: execnet: the same items through the channel (``n`` and ``size`` come first).
EXECNET_SOURCE = """
n, size = channel.receive()
value = b"x" * size if size else 1
for _ in range(n):
    channel.send(value)
"""
