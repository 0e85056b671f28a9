"""Functions the group and CLI tests call on many targets; stdlib only (sent over the wire).

A target is told apart by an ``-X tmg=...`` option on its interpreter's command line, which the
child sees in ``sys._xoptions``.
"""

from __future__ import annotations

import sys
import time


def tag() -> str:
    """The target's ``-X tmg=`` value, or an empty string."""
    value = sys._xoptions.get("tmg", "")
    return value if isinstance(value, str) else ""


def fail_if_tagged(word: str, seconds: float) -> str:
    """Raise at once on targets tagged ``word``; elsewhere sleep ``seconds`` and answer."""
    if tag() == word:
        raise RuntimeError("tagged %s" % word)
    time.sleep(seconds)
    return tag()


def add(a: int, b: int) -> int:
    return a + b


async def async_tag() -> str:
    return tag()
