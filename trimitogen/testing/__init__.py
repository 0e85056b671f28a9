"""Pytest fixtures and real infrastructure for testing code that runs in trimitogen contexts.

Enable the fixtures in the suite's top ``conftest.py`` with
``pytest_plugins = ["trimitogen.testing"]``; they are async where they open contexts, so the
suite runs with pytest-trio in ``trio_mode``.

``trimitogen_context``
    A fresh local context on the test's own interpreter, shut down and reaped after the test.
    Functions of the code under test reach it by import over the wire, so nothing needs
    installing for the child.

``trimitogen_contexts``
    A factory, ``await trimitogen_contexts(method, **open_context_options)``, for contexts of
    any method (another interpreter, sudo, ssh, a chain with ``via=``); every context it opened
    is closed after the test, newest first.

``trimitogen_users`` (session scope)
    Five throwaway local users with sudo and su rules: :func:`provision_users`.

``trimitogen_sshd`` (session scope)
    A real sshd on 127.0.0.1 that those users log in to: :func:`running_sshd`.

The last two need root and change the machine (users created and kept, a sudoers drop-in
and ``/run/sshd`` while they run); without root or a tool they skip the test, or fail it
under ``CI=true`` (:func:`skip_or_fail`).  :func:`provision_users`, :func:`running_sshd` and
:func:`run_on_pty` work outside pytest too.

PYTEST_DONT_REWRITE: this marker tells pytest not to rewrite the plugin's assertions (it has
none), so a ``conftest.py`` may import names from it before ``pytest_plugins`` enables it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._contexts import ContextFactory as ContextFactory
from ._contexts import trimitogen_context as trimitogen_context
from ._contexts import trimitogen_contexts as trimitogen_contexts
from ._pty import PtyResult as PtyResult
from ._pty import run_on_pty as run_on_pty
from ._sshd import SshServer as SshServer
from ._sshd import running_sshd as running_sshd
from ._tools import IN_CI as IN_CI
from ._tools import skip_or_fail as skip_or_fail
from ._users import LocalUser as LocalUser
from ._users import Users as Users
from ._users import provision_users as provision_users

__all__ = [
    "IN_CI",
    "ContextFactory",
    "LocalUser",
    "PtyResult",
    "SshServer",
    "Users",
    "provision_users",
    "run_on_pty",
    "running_sshd",
    "skip_or_fail",
    "trimitogen_context",
    "trimitogen_contexts",
    "trimitogen_sshd",
    "trimitogen_users",
]


@pytest.fixture(scope="session")
def trimitogen_users() -> Iterator[Users]:
    """The throwaway users of :func:`provision_users`, once per test session.

    Needs root; creates (and keeps) five ``tmg-*`` users and installs a sudoers drop-in for the
    session.  Skips the test without root or a tool, fails it under ``CI=true``.
    """
    with provision_users() as users:
        yield users


@pytest.fixture(scope="session")
def trimitogen_sshd(trimitogen_users: Users) -> Iterator[SshServer]:
    """A :func:`running_sshd` on 127.0.0.1 for the throwaway users, once per test session.

    Needs root (and ``trimitogen_users``); uses ``/run/sshd`` and a temporary directory, both
    removed at the end of the session if it made them.
    """
    with running_sshd(trimitogen_users) as server:
        yield server
