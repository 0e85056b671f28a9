"""The driver's side of the sections that log in: throwaway users and a loopback sshd.

Made with trimitogen.testing (``provision_users()``, ``running_sshd()``), which need root; the
users stay afterwards with locked passwords, everything else is removed at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence

from .model import Remote, Section


@contextlib.contextmanager
def remote_infrastructure(
    sections: Sequence[Section], given: str | None = None
) -> Iterator[tuple[Remote | None, str]]:
    """What ``sections`` need (``users``, ``sshd``), set up for the length of the run.

    Yields ``(remote, "")``, or ``(None, why)`` when nothing is needed or it cannot be set up;
    removes everything it made on exit.  ``given``: a JSON file describing users and an sshd
    that already run (a test session's), used as they are.
    """
    needs = frozenset().union(*(section.needs for section in sections))
    if not needs:
        yield None, ""
        return
    if given is not None:
        with open(given, encoding="utf-8") as f:
            yield Remote(**json.load(f)), ""
        return
    if os.geteuid() != 0:
        yield None, "needs root (creates throwaway users and runs an sshd with trimitogen.testing)"
        return
    try:
        import pytest

        from trimitogen.testing import provision_users, running_sshd
    except ImportError as exc:
        yield None, "cannot import trimitogen.testing (pip install -e '.[test]'): %s" % exc
        return

    with contextlib.ExitStack() as stack:
        remote: Remote | None = None
        reason = ""
        try:
            users = stack.enter_context(provision_users())
            server = stack.enter_context(running_sshd(users)) if "sshd" in needs else None
            remote = Remote(
                host=server.host if server else "127.0.0.1",
                port=server.port if server else 0,
                identity_file=str(server.identity_file) if server else "",
                ssh_args=server.ssh_args() if server else [],
                ssh_user=users.ssh.name,
                ssh_uid=users.ssh.uid,
                hop_user=users.sudo.name,
                sudo_user=users.nopw.name,
                sudo_uid=users.nopw.uid,
            )
        except (Exception, pytest.skip.Exception, pytest.fail.Exception) as exc:
            reason = (
                "could not set up users and sshd with trimitogen.testing: %s"
                % (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            )
        yield remote, reason
