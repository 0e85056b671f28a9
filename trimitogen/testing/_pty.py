"""Driving interactive commands on a pseudo-terminal, the way a person at a keyboard would."""

from __future__ import annotations

import dataclasses
import errno
import os
import select
import subprocess
import time
from collections.abc import Sequence

from ._tools import COMMAND_TIMEOUT, require_tools


@dataclasses.dataclass(frozen=True)
class PtyResult:
    """What :func:`run_on_pty` saw."""

    returncode: int  #: the command's exit status
    transcript: bytes  #: everything the command wrote to its terminal, as the pty delivered it
    unanswered: tuple[bytes, ...]  #: prompts from ``answers`` that never appeared


def run_on_pty(
    argv: Sequence[str],
    answers: Sequence[tuple[bytes, bytes]] = (),
    *,
    user: str | None = None,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
) -> PtyResult:
    """Run ``argv`` with a new pty as stdin, stdout, stderr and controlling terminal.

    ``answers`` are ``(prompt, reply)`` pairs taken in order: once ``prompt`` appears in the
    output (after the previous prompt), ``reply`` is written to the terminal.  With ``user`` the
    command runs as that user (through ``runuser``).  The pty's line discipline stays as is, so
    the transcript has ``\\r\\n`` line ends and echoed replies where the command echoes.  On
    timeout the command is killed and ``TimeoutError`` raised with the transcript so far.
    Needs ``setsid`` (and, with ``user``, root and ``runuser``); a missing tool calls
    :func:`skip_or_fail`.  It changes nothing on the machine.
    """
    tools = require_tools("setsid", *(("runuser",) if user else ()))
    command = [tools["setsid"], "--wait", "--ctty"]
    if user is not None:
        command += [tools["runuser"], "-u", user, "--"]
    command += list(argv)
    master, slave = os.openpty()
    try:
        try:
            proc = subprocess.Popen(
                command,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=env,
                close_fds=True,
            )
        finally:
            os.close(slave)
        try:
            transcript, pending = _converse(master, proc, list(answers), timeout)
        except BaseException:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=COMMAND_TIMEOUT)
            raise
    finally:
        os.close(master)
    return PtyResult(
        returncode=proc.returncode,
        transcript=transcript,
        unanswered=tuple(prompt for prompt, _ in pending),
    )


def _converse(
    master: int,
    proc: subprocess.Popen[bytes],
    pending: list[tuple[bytes, bytes]],
    timeout: float,
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    deadline = time.monotonic() + timeout
    buf = bytearray()
    searched = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                "command still running after %.0f s; its output: %r" % (timeout, buf)
            )
        ready, _, _ = select.select([master], [], [], min(remaining, 0.2))
        if not ready:
            continue
        try:
            data = os.read(master, 4096)
        except OSError as e:
            if e.errno != errno.EIO:  # EIO: every slave fd is closed, the command is gone
                raise
            data = b""
        if not data:
            break
        buf += data
        while pending:
            at = buf.find(pending[0][0], searched)
            if at < 0:
                break
            searched = at + len(pending[0][0])
            os.write(master, pending.pop(0)[1])
    proc.wait(timeout=max(deadline - time.monotonic(), 1.0))
    return bytes(buf), pending
