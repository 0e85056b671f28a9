"""trimitogen.testing: the fixtures users enable to test their own remote code."""

from __future__ import annotations

import os
import sys

import trimitogen as tm
from tests import remote_helpers as rh
from trimitogen.testing import ContextFactory  # the fixtures: pytest_plugins in conftest.py


async def test_trimitogen_context_is_a_live_child(trimitogen_context: tm.Context) -> None:
    assert trimitogen_context.name == "pytest"
    assert await trimitogen_context.call(os.getpid) != os.getpid()
    assert await trimitogen_context.call(rh.echo, [1, b"2"]) == [1, b"2"]


async def test_factory_opens_and_closes_contexts(trimitogen_contexts: ContextFactory) -> None:
    first = await trimitogen_contexts(tm.local(), name="one")
    second = await trimitogen_contexts(tm.fork(), via=first, name="two")
    assert await second.call(rh.getppid) == first.pid
    assert await first.call(rh.version) == tuple(sys.version_info[:2])


# The example of docs/testing.rst, run here with the plugin's own sshd and users.
from examples.test_with_loopback_sshd import (  # noqa: E402
    test_each_host_answers as test_each_host_answers,
)
from examples.test_with_loopback_sshd import (  # noqa: E402
    test_ssh_login_by_key as test_ssh_login_by_key,
)
from examples.test_with_loopback_sshd import (  # noqa: E402
    test_sudo_through_ssh as test_sudo_through_ssh,
)
from examples.test_with_loopback_sshd import three_hosts as three_hosts  # noqa: E402


async def test_trimitogen_context_gets_the_code_under_test_over_the_wire(
    trimitogen_context: tm.Context,
) -> None:
    # tests.remote_helpers is on this process's path (working directory, PYTHONPATH), which the
    # isolated child does not see: it must have come from the master.
    assert await trimitogen_context.call(rh.version) == tuple(sys.version_info[:2])
    assert trimitogen_context.import_stats.modules_sent >= 2  # tests, tests.remote_helpers
    child_path = await trimitogen_context.call(eval, "__import__('sys').path")
    assert os.getcwd() not in child_path
