"""Compare trimitogen with mitogen and execnet, side by side in one run.

Each library is measured in a subprocess of its own, which writes its raw samples as JSON; the
driver then prints one table per section with absolute numbers, ratios relative to trimitogen
and, for the local section, whether the design targets are met.  Timings never make the script
fail: it exits non-zero only if a measurement could not be taken at all.

Sections (``--sections``): ``local`` (start-up, teardown, round trip, transfers), ``import``
(first call into a package that only the master has), ``fork`` (a forked copy: start-up to first
call, close, round trip), ``ssh``, ``sudo`` and ``hop`` (ssh then sudo) start-up to first call,
``cancellation``, ``streams`` (items per second), ``bytestream`` (a TCP stream through a context
against a raw pipe) and ``files`` (put_file/get_file against cp, scp and rsync).  ssh, sudo, hop
and files create throwaway users and a real sshd with ``trimitogen.testing`` (root only) and
remove them again at the end.  The code is the package ``benchmarks/comparison``.

Run ``python benchmarks/compare.py --help`` for the options.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # This checkout first: it is what gets measured, and where the comparison package lives.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks.comparison.cli import main

    sys.exit(main())
