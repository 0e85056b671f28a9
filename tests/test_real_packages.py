"""Real third-party packages imported over the wire into children that do not have them."""

from __future__ import annotations

import pytest
import trio

import trimitogen as tm
from tests.conftest import WAIT, MasterOnly, discover_interpreters
from trimitogen._methods import Local


def _minor(label: str) -> tuple[int, ...]:
    version = label.rsplit("-", 1)[-1].replace("python", "")
    return tuple(int(part) for part in version.split(".") if part.isdigit())


_VERSIONED = {label: path for label, path in discover_interpreters().items() if _minor(label)}
#: The oldest and the newest child Python on the machine (3.8 and 3.13 here).
OLDEST_AND_NEWEST = sorted({min(_VERSIONED, key=_minor), max(_VERSIONED, key=_minor)})


def isolated(label: str) -> Local:
    """A child that sees no site-packages (``-I -S``), so it must get packages over the wire."""
    return tm.local(python=[_VERSIONED[label], "-I", "-S"])


USES_SIX = """
    from six.moves import range
    from six.moves.urllib.parse import quote
    import six  # type: ignore[import-untyped]

    def run():
        return (list(range(3)), quote("a b"), six.PY3, six.moves.__name__)
"""


@pytest.mark.parametrize("label", OLDEST_AND_NEWEST)
async def test_six_moves_work_over_the_wire(master_only: MasterOnly, label: str) -> None:
    # six puts its own finder at the end of sys.meta_path, after the child's importer: that
    # importer must let it answer for six.moves rather than end the search.
    import six  # type: ignore[import-untyped]

    master_only({"uses_six_tmg.py": USES_SIX})
    import uses_six_tmg  # type: ignore[import-not-found]

    with trio.fail_after(WAIT):
        async with tm.open_context(isolated(label)) as ctx:
            assert await ctx.call(uses_six_tmg.run) == ([0, 1, 2], "a%20b", True, "six.moves")
            origin = await ctx.call(eval, "__import__('six').__file__")
            assert origin == "master:" + six.__file__
