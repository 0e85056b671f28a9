"""Functions the version matrix calls in children of every Python from 3.6 up.

Children get this module by import over the wire, so it must compile and run on Python 3.6: no
``from __future__ import annotations`` (3.7+), and annotations are evaluated when each function
is defined there, so they name only what exists at run time (``Any``, the builtin classes).
"""

import datetime
import decimal
import enum
import fractions
import importlib.util
import os
import pathlib
import sys
import uuid
from typing import Any


class Colour(enum.Enum):
    RED = 1
    GREEN = 2


def version() -> Any:
    return tuple(sys.version_info[:2])


def echo(value: Any) -> Any:
    return value


async def async_add(a: int, b: int) -> int:
    return a + b


def fail(message: str) -> None:
    raise ValueError(message)


def return_object() -> Any:
    return object()


def magic() -> bytes:
    return importlib.util.MAGIC_NUMBER


def getppid() -> int:
    return os.getppid()


def rich_values() -> Any:
    """Values beyond plain data, made from the child's own classes."""
    zone = datetime.timezone(datetime.timedelta(hours=5, minutes=30), "IST")
    return [
        datetime.date(2020, 2, 29),
        datetime.datetime(2021, 3, 4, 5, 6, 7, 89, zone, fold=1),
        datetime.timedelta(days=-2, seconds=5),
        decimal.Decimal("-1.50"),
        uuid.UUID(int=2**100 + 7),
        fractions.Fraction(-3, 7),
        pathlib.PurePosixPath("/etc/hosts"),
        Colour.GREEN,
    ]


def type_names(values: Any) -> Any:
    return [type(value).__qualname__ for value in values]


def pool_reuse() -> Any:
    """Whether the runtime's reused buffers are handed out again once free, and only then
    (its check counts references, which interpreters count differently)."""
    from trimitogen.core.readers import BufferPool

    pool = BufferPool(4096, 2)
    first = pool.take()
    held = first[:10]
    first_id = id(first.obj)
    del first
    busy = id(pool.take().obj) == first_id  # a view of it is held: not again
    del held
    free = id(pool.take().obj) == first_id
    return [busy, free]
