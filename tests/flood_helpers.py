"""Child-side functions of the flood test (tests/test_flood.py).

Children receive this module over the wire, so it must run on Python 3.8 with the standard
library only.  Two threads flood the child's stdout and its logging while the main thread stays
free for calls; every line carries a sequence number so the master can check order and count.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

#: The threads of the running flood and what each has emitted so far.
_flood: dict[str, Any] = {}


def _printer(stop_at: float, counts: list[int]) -> None:
    i = 0
    while True:
        print("out %d" % i)
        i += 1
        counts[0] = i
        if i % 64 == 0 and time.monotonic() >= stop_at:
            break
    sys.stdout.flush()


def _logger(stop_at: float, counts: list[int]) -> None:
    logger = logging.getLogger("flood")
    i = 0
    while True:
        logger.warning("log %d", i)
        i += 1
        counts[1] = i
        if i % 64 == 0 and time.monotonic() >= stop_at:
            break


def start_flood(seconds: float) -> None:
    """Print and log as fast as two threads can for ``seconds`` (64 lines each at least);
    returns at once."""
    counts = [0, 0]
    stop_at = time.monotonic() + seconds
    threads = [
        threading.Thread(target=target, args=(stop_at, counts), daemon=True)
        for target in (_printer, _logger)
    ]
    _flood.update(counts=counts, threads=threads)
    for thread in threads:
        thread.start()


def flood_progress() -> list[int]:
    """Lines printed and records logged so far."""
    return list(_flood["counts"])


def finish_flood() -> list[int]:
    """Wait for the flood threads; the totals of lines printed and records logged."""
    for thread in _flood["threads"]:
        thread.join()
    return list(_flood["counts"])
