"""The child runtime on every CPython 3.6+ the machine has: alone, as an intermediate, below one.

Children of 3.6 and 3.7 call functions of :mod:`tests.version_helpers`, which is written to run
there; an interpreter older than 3.6 (2.7 is installed) must be refused with a clear error.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import trio

import trimitogen as tm
from tests import version_helpers as vh
from tests.conftest import IN_CI, WAIT, MasterOnly, discover_interpreters, skip_or_fail
from tests.test_context import SAMPLE_VALUES, assert_identical

INTERPRETERS = discover_interpreters(oldest=(3, 6))
REQUIRED_MINORS = {6, 7, 8, 9, 10, 11, 12, 13}
PYENV_VERSIONS = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"

#: A package only the master has, written for Python 3.6: it is imported over the wire.  The
#: functions give the module enough code that shipping it compiled shows in the byte count.
VERPKG = {
    "verpkg/__init__.py": """
        from verpkg import sub
        NAME = "verpkg"
    """,
    "verpkg/walrus.py": """
        def first_positive(values, /):
            return next((y for x in values if (y := x) > 0), None)
    """,
    "verpkg/sub.py": """
        import sys

        def run(x):
            return [x, __name__, tuple(sys.version_info[:2])]
    """
    + "".join(
        "\n        def f%d(a, b=%d):\n            return [a, b, a * b, str(a) + 'x%d']\n"
        % (i, i, i)
        for i in range(40)
    ),
}


def _minor(label: str) -> int | None:
    version = label.rsplit("-", 1)[-1].replace("python", "")
    parts = version.split(".")
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


def _by_minor(minor: int) -> str:
    """The interpreter path of 3.<minor> (skipped, or failed in CI, if the machine has none)."""
    for label in sorted(INTERPRETERS):
        if _minor(label) == minor:
            return INTERPRETERS[label]
    skip_or_fail("no Python 3.%d on this machine" % minor)
    raise AssertionError("unreachable")


def test_machine_has_the_expected_interpreters() -> None:
    """In CI every supported version must be present, so no version is silently untested."""
    minors = {_minor(label) for label in INTERPRETERS}
    missing = REQUIRED_MINORS - minors
    if missing and IN_CI:
        pytest.fail("interpreters for 3.%s are missing" % sorted(missing))
    assert len(INTERPRETERS) >= 1


async def _check_calls(ctx: tm.Context, label: str) -> None:
    major, minor = await ctx.call(vh.version)
    assert (major, minor) >= (3, 6)
    if label.startswith("pyenv-"):
        assert "%d.%d." % (major, minor) in label + "."
    for value in SAMPLE_VALUES:
        assert_identical(await ctx.call(vh.echo, value), value)
    assert await ctx.call(vh.async_add, 40, 2) == 42
    assert await ctx.call(vh.pool_reuse) == [False, True]
    with pytest.raises(tm.CallError, match="from " + label):
        await ctx.call(vh.fail, "from " + label)
    with pytest.raises(tm.CallError, match=r"cannot send an object of type builtins\.object"):
        await ctx.call(vh.return_object)
    # Values beyond plain data, both ways: the master's, and ones the child made itself.
    rich = vh.rich_values()
    assert await ctx.call(vh.echo, rich) == rich
    assert await ctx.call(vh.type_names, rich) == vh.type_names(rich)
    from_child = await ctx.call(vh.rich_values)
    assert from_child == rich
    assert vh.type_names(from_child) == vh.type_names(rich)


@pytest.mark.parametrize("label", sorted(INTERPRETERS))
async def test_calls_imports_and_fork_on_each_interpreter(
    label: str, master_only: MasterOnly, no_leaked_fds: None
) -> None:
    master_only(VERPKG)
    import verpkg.sub  # type: ignore[import-not-found]

    python = INTERPRETERS[label]
    with trio.fail_after(WAIT):
        async with tm.open_context(tm.local(python=python), name=label) as ctx:
            await _check_calls(ctx, label)
            big = os.urandom(1 << 20) * 8
            assert await ctx.call(len, big) == len(big)
            assert await ctx.call(vh.getppid) == os.getpid()
            # Imports over the wire: the package and its submodule.
            version = tuple(await ctx.call(vh.version))
            assert await ctx.call(verpkg.sub.run, 7) == [7, "verpkg.sub", version]
            assert ctx.import_stats.modules_sent == 2
            # A module of the master's that needs 3.8 syntax: an older child says so clearly.
            import verpkg.walrus  # type: ignore[import-not-found]

            if version >= (3, 8):
                assert await ctx.call(verpkg.walrus.first_positive, [-1, 5]) == 5
            else:
                with pytest.raises(tm.CallError) as info:
                    await ctx.call(verpkg.walrus.first_positive, [-1, 5])
                assert info.value.type_name == "builtins.SyntaxError"
                assert "module verpkg.walrus from the master" in info.value.message
                assert "and Python %d.%d." % version in info.value.message
            # A fork of this child: a copy of its interpreter, with what it imported.
            async with tm.open_context(tm.fork(), via=ctx) as copy:
                assert await copy.call(vh.getppid) == ctx.pid
                assert tuple(await copy.call(vh.version)) == version
                assert await copy.call(verpkg.sub.run, 8) == [8, "verpkg.sub", version]
                assert_identical(await copy.call(vh.echo, SAMPLE_VALUES), SAMPLE_VALUES)


async def test_compiled_code_goes_only_to_children_of_the_masters_bytecode(
    master_only: MasterOnly,
) -> None:
    """Source always; compiled code only where the child's bytecode magic is the master's."""
    master_only(VERPKG)
    import verpkg.sub

    sent: dict[str, tuple[bool, int]] = {}
    with trio.fail_after(WAIT):
        for label in sorted(INTERPRETERS):
            async with tm.open_context(tm.local(python=INTERPRETERS[label])) as ctx:
                assert (await ctx.call(verpkg.sub.run, 1))[0] == 1
                same = await ctx.call(vh.magic) == importlib.util.MAGIC_NUMBER
                sent[label] = (same, ctx.import_stats.bytes_sent)
    with_code = {size for same, size in sent.values() if same}
    source_only = [size for same, size in sent.values() if not same]
    assert len(with_code) == 1, sent  # the same answers to the master's own interpreter and its kin
    assert source_only or not IN_CI, sent
    if source_only:
        assert min(with_code) > max(source_only) * 2, sent


INTERMEDIATE_PAIRS = [(6, 11), (11, 6), (7, 13), (13, 7)]


@pytest.mark.parametrize(
    ("upper", "lower"),
    INTERMEDIATE_PAIRS,
    ids=["3.%d-via-3.%d" % (b, a) for a, b in INTERMEDIATE_PAIRS],
)
async def test_old_and_new_pythons_as_intermediate_and_below_one(
    upper: int, lower: int, master_only: MasterOnly, no_leaked_fds: None
) -> None:
    master_only(VERPKG)
    import verpkg.sub

    upper_python, lower_python = _by_minor(upper), _by_minor(lower)
    with trio.fail_after(WAIT):
        async with (
            tm.open_context(tm.local(python=upper_python), name="upper") as mid,
            tm.open_context(tm.local(python=lower_python), via=mid, name="lower") as child,
        ):
            assert tuple(await mid.call(vh.version)) == (3, upper)
            assert tuple(await child.call(vh.version)) == (3, lower)
            assert await child.call(vh.getppid) == mid.pid
            await _check_calls(child, "lower")
            # Imported over the wire through the intermediate, which does not import it itself.
            assert await child.call(verpkg.sub.run, 3) == [3, "verpkg.sub", (3, lower)]
            assert await mid.call(verpkg.sub.run, 4) == [4, "verpkg.sub", (3, upper)]
            async with tm.open_context(tm.fork(), via=child) as copy:
                assert await copy.call(vh.getppid) == child.pid


def _python27() -> str:
    path = PYENV_VERSIONS / "2.7.18" / "bin" / "python2.7"
    if not path.exists():
        skip_or_fail("no Python 2.7 at %s" % path)
    return str(path)


async def test_too_old_an_interpreter_is_a_clear_connect_error(ctx: tm.Context) -> None:
    python = _python27()
    with trio.fail_after(WAIT):
        for via in (None, ctx):
            with pytest.raises(tm.ConnectError) as info:
                async with tm.open_context(tm.local(python=python), via=via):
                    pass
            message = str(info.value)
            assert "Python 2.7.18" in message
            assert "needs Python 3.6 or newer" in message
            assert "SyntaxError" not in message
        assert await ctx.call(vh.version) >= (3, 8)  # the intermediate is unharmed
