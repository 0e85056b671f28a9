"""execnet's worker: sections run in turn; gateways live in a Group that is terminated after."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from ..model import Job, Remote, Section, run_sync_sections

if TYPE_CHECKING:
    import execnet

#: How long ``group.terminate`` waits for a gateway's process.
TERMINATE_TIMEOUT = 10.0


def run(job: Job, sections: Sequence[Section]) -> str:
    """Measure ``sections`` with execnet; return its version."""
    import execnet

    run_sync_sections(job, sections, lambda section: section.execnet)
    return execnet.__version__


@contextlib.contextmanager
def group() -> Iterator[execnet.Group]:
    """A new Group; on exit ``group.terminate()``, which sends each gateway's exit message and
    waits for its process."""
    import execnet

    made = execnet.Group()
    try:
        yield made
    finally:
        made.terminate(timeout=TERMINATE_TIMEOUT)


def local_spec(job: Job) -> str:
    return "popen//python=%s" % job.python


def ssh_spec(remote: Remote, user: str) -> str:
    """``ssh=OPTIONS user@host``: execnet splits the value on whitespace into ssh's argv."""
    options = remote.ssh_options(user)
    for option in options:
        if not option or any(c.isspace() for c in option) or "//" in option:
            raise ValueError("cannot pass %r in an execnet spec" % option)
    return "ssh=" + " ".join(options)
