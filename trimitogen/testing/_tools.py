"""What the real-infrastructure helpers share: the skip-or-fail rule, root, tools, commands."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

import pytest


def _ci_from_environment() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


#: True when the environment variable ``CI`` said so (``1``, ``true`` or ``yes``) at import: a
#: real part that is missing is then a failure, not a skip.
IN_CI = _ci_from_environment()

#: Bound for each helper command (useradd, ssh-keygen, visudo, ...).
COMMAND_TIMEOUT = 30.0

#: Where sshd, useradd and visudo live when root's PATH lacks the sbin directories.
_EXTRA_PATH = ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin")


def skip_or_fail(reason: str) -> None:
    """Skip the current test because ``reason``; under ``CI=true`` fail it instead.

    A machine that lacks a real part (root, a tool) skips locally, so a developer's laptop can
    run the rest of a suite; a CI machine must have everything, so there a skip would hide a
    broken set-up.  ``CI`` is read at each call.  Raises pytest's skip or fail exception, so it
    also works inside fixtures.
    """
    if _ci_from_environment():
        pytest.fail("CI=true but " + reason)
    pytest.skip(reason)


def require_root(what: str) -> None:
    """:func:`skip_or_fail` unless this process runs as root."""
    if os.geteuid() != 0:
        skip_or_fail("%s needs root" % what)


def require_tools(*tools: str) -> dict[str, str]:
    """Absolute paths of ``tools`` (also looked up in the sbin directories).

    A missing tool calls :func:`skip_or_fail`, naming the packages that provide them.
    """
    search = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_PATH])
    found: dict[str, str] = {}
    missing = []
    for tool in tools:
        path = shutil.which(tool, path=search)
        if path is None:
            missing.append(tool)
        else:
            found[tool] = path
    if missing:
        skip_or_fail(
            "missing %s (the packages openssh-server, openssh-client and sudo provide them;"
            " trimitogen's scripts/setup.sh installs them)" % ", ".join(missing)
        )
    return found


def run_command(
    argv: Sequence[str], *, stdin_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a helper command under :data:`COMMAND_TIMEOUT`; raise with its output if it fails."""
    result = subprocess.run(
        list(argv),
        input=stdin_text,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        stdin=None if stdin_text is not None else subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise RuntimeError(
            "%s exited with %d\nstdout: %s\nstderr: %s"
            % (" ".join(argv), result.returncode, result.stdout, result.stderr)
        )
    return result
