"""Lines a child prints, in the master: logging records, or the master's stderr if nobody listens.

A child's stdout and stderr lines arrive as ``INFO`` records on ``trimitogen.ctx.<name>.stdout``
and ``….stderr``.  In a program that never configured :mod:`logging` no handler sees them, and
logging's last resort shows only warnings and worse, so a ``print()`` in a remote function would
vanish.  :func:`show_output` makes the same decision as that last resort (no handler anywhere up
the logger's hierarchy, :meth:`logging.Logger.hasHandlers`) and then writes the line to the
master's stderr, prefixed with the context's name, so a user sees what a terminal would have shown.
"""

from __future__ import annotations

import logging
import sys


def show_output(logger: logging.Logger, context_name: str, level: int, text: str) -> None:
    """Log ``text``, a line context ``context_name`` printed, on ``logger`` at ``level``; with no
    handler configured for ``logger`` write it to ``sys.stderr`` as ``[context_name] text``."""
    if logger.hasHandlers():
        logger.log(level, "%s", text)
        return
    stream = sys.stderr
    if stream is None:  # pythonw, or a daemon that closed it: nowhere to show it
        return
    try:
        stream.write("[%s] %s\n" % (context_name, text))
        stream.flush()
    except (OSError, ValueError):  # a closed or broken stderr must not break the connection
        pass
