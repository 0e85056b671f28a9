"""A context's process group: everything it started goes when it goes.

Each child runtime leads a session of its own (:func:`lead_session`), so every process a call
starts (``subprocess``, ``os.system("... &")``, their children) is in the child's process group
unless it makes a session of its own.  When the runtime ends, :func:`end_group` has a small
helper, forked outside the group, wait until the runtime's process is gone, then send the rest of
the group SIGTERM and, after :attr:`Grace.KILL`, SIGKILL.  The helper holds none of the runtime's
descriptors, so the parent sees the end of the stream as soon as the runtime exits.
"""

from __future__ import annotations

import _signal
import os
import select

from .grace import Grace

#: How often the helper looks whether the runtime and then the group are gone.
POLL = 0.005


def lead_session() -> None:
    """Make this process the leader of a new session and process group, if it is not one."""
    try:
        os.setsid()
    except OSError:
        pass  # a group leader already (started with start_new_session, or by a job shell)


def end_group() -> None:
    """Terminate the rest of this process's group once this process exited (see the module)."""
    leader = os.getpid()
    if os.getpgrp() != leader:
        return  # not our group: it belongs to whoever started us
    import warnings

    try:
        with warnings.catch_warnings():
            # 3.12+ warns about forking with threads: the helper only makes system calls.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:
        return
    if pid:
        return
    try:
        _helper(leader)
    finally:
        os._exit(0)


def _helper(pgid: int) -> None:
    os.setsid()  # out of the group it will signal
    os.closerange(0, _max_fd())
    while os.getppid() == pgid:  # the runtime still runs
        select.select([], [], [], POLL)
    sweep_group(pgid)


def signal_group(pid: int, signum: int) -> None:
    """Send ``signum`` to the process group led by ``pid`` (a child started in a session of its
    own), or to the process alone if it leads none.  Only for a process not reaped yet, or a
    group known to be alive: a reaped pid may be reused."""
    try:
        os.killpg(pid, signum)
    except OSError:
        # No such group (a fork that has not made its session yet), or one we may not signal.
        try:
            os.kill(pid, signum)
        except OSError:
            pass


def group_alive(pgid: int) -> bool:
    """Whether any process is left in group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_group(pgid: int) -> None:
    """After the leader ``pgid`` was reaped: SIGTERM what is left of its group, then SIGKILL it
    after :attr:`Grace.KILL` (blocks meanwhile; for a thread of its own)."""
    for signum, wait in ((_signal.SIGTERM, Grace.KILL), (_signal.SIGKILL, 0.0)):
        if not group_alive(pgid):
            return
        signal_group(pgid, signum)
        waited = 0.0
        while waited < wait and group_alive(pgid):
            select.select([], [], [], POLL)
            waited += POLL


def _max_fd() -> int:
    try:
        return min(os.sysconf("SC_OPEN_MAX"), 1 << 16)
    except (OSError, ValueError):
        return 1024
