"""The child runtime on every CPython 3.8+ this machine has."""

from __future__ import annotations

import os

import pytest
import trio

import trimitogen as tm
from tests import remote_helpers as rh
from tests.conftest import IN_CI, WAIT, discover_interpreters
from tests.test_context import SAMPLE_VALUES, assert_identical

INTERPRETERS = discover_interpreters()
REQUIRED_MINORS = {8, 9, 10, 11, 12, 13}


def test_machine_has_the_expected_interpreters() -> None:
    """In CI every supported version must be present, so no version is silently untested."""
    minors = set()
    for label in INTERPRETERS:
        version = label.rsplit("-", 1)[-1]
        parts = version.replace("python", "").split(".")
        if len(parts) >= 2 and parts[1].isdigit():
            minors.add(int(parts[1]))
    missing = REQUIRED_MINORS - minors
    if missing and IN_CI:
        pytest.fail("interpreters for 3.%s are missing" % sorted(missing))
    assert len(INTERPRETERS) >= 1


@pytest.mark.parametrize("label", sorted(INTERPRETERS))
async def test_calls_on_each_interpreter(label: str, no_leaked_fds: None) -> None:
    python = INTERPRETERS[label]
    with trio.fail_after(WAIT):
        async with tm.open_context(tm.local(python=python), name=label) as ctx:
            major, minor = await ctx.call(rh.version)
            assert (major, minor) >= (3, 8)
            if label.startswith("pyenv-"):
                assert "%d.%d." % (major, minor) in label + "."
            for value in SAMPLE_VALUES:
                assert_identical(await ctx.call(rh.echo, value), value)
            assert await ctx.call(rh.async_add, 40, 2) == 42
            with pytest.raises(tm.CallError, match="from " + label):
                await ctx.call(rh.fail, "from " + label)
            big = os.urandom(1 << 20) * 8
            assert await ctx.call(len, big) == len(big)
            assert await ctx.call(rh.getppid) == os.getpid()
