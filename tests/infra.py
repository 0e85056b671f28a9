"""The suite's real infrastructure: the public helpers of trimitogen.testing, and two aliases.

``tests/conftest.py`` loads this module as a plugin (with ``trimitogen.testing``), so every test
module gets the session-scoped fixtures ``users`` and ``sshd``: short names for
``trimitogen_users`` and ``trimitogen_sshd``.  They only hand on the plugin's values, so a test
module that also imports ``sshd_fixture`` or ``users_fixture`` still shares the one sshd and the
one set of users of the session.  See docs/testing.rst.
"""

from __future__ import annotations

import pytest

from trimitogen.testing import LocalUser as LocalUser
from trimitogen.testing import PtyResult as PtyResult
from trimitogen.testing import SshServer as SshServer
from trimitogen.testing import Users as Users
from trimitogen.testing import provision_users as provision_users
from trimitogen.testing import run_on_pty as run_on_pty
from trimitogen.testing import running_sshd as running_sshd

__all__ = [
    "LocalUser",
    "PtyResult",
    "SshServer",
    "Users",
    "provision_users",
    "run_on_pty",
    "running_sshd",
    "sshd_fixture",
    "users_fixture",
]


@pytest.fixture(scope="session", name="users")
def users_fixture(trimitogen_users: Users) -> Users:
    """The session's throwaway users (``trimitogen_users``)."""
    return trimitogen_users


@pytest.fixture(scope="session", name="sshd")
def sshd_fixture(trimitogen_sshd: SshServer) -> SshServer:
    """The session's sshd on 127.0.0.1 (``trimitogen_sshd``)."""
    return trimitogen_sshd
