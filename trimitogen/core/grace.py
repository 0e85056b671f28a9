"""The grace times of the project, in one table (see :class:`Grace`)."""

from __future__ import annotations


class Grace:
    """Every grace time of the project, in seconds, in one table."""

    #: A child's running call may finish this long after a shutdown or the loss of its parent.
    CALL_FINISH = 1.0
    #: The master waits this long for a child to exit after SHUTDOWN before SIGTERM, and as long
    #: again after SIGTERM before SIGKILL; for a context below an intermediate, this long after
    #: SHUTDOWN before asking the intermediate to kill it, and again for the kill to be reported.
    EXIT = 3.0
    #: An intermediate sends SIGKILL this long after SIGTERM.
    KILL = 2.0
    #: After a child's stream ends, how long to wait for its exit status (to say how it ended).
    EXIT_AFTER_EOF = 2.0
    #: After a child's process ends, how long its stream may still deliver what it wrote.
    OUTPUT_AFTER_EXIT = 1.0
    #: After a failed start, how long to wait for the rest of the child's terminal output (it ends
    #: sooner when the terminal closes).
    LAST_WORDS = 1.0
