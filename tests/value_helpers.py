"""Functions and types the value tests use in child contexts (Python 3.8, standard library)."""

from __future__ import annotations

import datetime
import decimal
import enum
import fractions
import importlib
import pathlib
import uuid
from typing import Any


class Colour(enum.Enum):
    RED = "red"
    GREEN = (0, 255, 0)


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    READ = 1
    WRITE = 2


def rich_values() -> list[Any]:
    """One of each value type that travels, made the same way in every context."""
    ist = datetime.timezone(datetime.timedelta(hours=5, minutes=30), "IST")
    return [
        datetime.date(2024, 2, 29),
        datetime.time(23, 59, 58, 999999),
        datetime.time(1, 2, 3, 4, ist, fold=1),
        datetime.datetime(2024, 2, 29, 12, 30, 45, 123456),
        datetime.datetime(2021, 11, 7, 1, 30, tzinfo=datetime.timezone.utc, fold=1),
        datetime.datetime(1, 1, 1, tzinfo=ist),
        datetime.timedelta(days=-3, seconds=5, microseconds=7),
        datetime.timezone.utc,
        ist,
        datetime.timezone(-datetime.timedelta(hours=3)),
        decimal.Decimal("3.14159265358979323846264338327950288"),
        decimal.Decimal("-0.00"),
        decimal.Decimal("-Infinity"),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        fractions.Fraction(-22, 7),
        pathlib.PurePosixPath("/etc/../usr/lib"),
        pathlib.PosixPath("relative/dir"),
        Colour.RED,
        Colour.GREEN,
        Level.HIGH,
        Perm.WRITE,
        {"nested": [(datetime.date(2000, 1, 1), {decimal.Decimal(1)})], "path": Colour.RED},
    ]


def describe(values: list[Any]) -> list[Any]:
    """What the child sees: each value's class and text, so the test can check the types."""
    return [(type(v).__module__, type(v).__qualname__, repr(v)) for v in values]


def call_by_name(module: str, function: str, *args: Any) -> Any:
    """Import ``module`` here (not in the master) and call one of its functions."""
    return getattr(importlib.import_module(module), function)(*args)


def echo(value: Any) -> Any:
    return value
