"""``import trimitogen`` in a child: the names that make sense there work, the rest say why not."""

from __future__ import annotations

import sys

import pytest
import trio

import trimitogen as tm
from tests.conftest import WAIT, MasterOnly
from tests.test_values import EDGES, INTERPRETERS
from trimitogen.core import package

USER_MODULE = """\
    import trimitogen as tm
    from trimitogen import CallError, ConnectError, open_context, register_value_type

    # Methods are data: a module can hold them at top level, in the master and in a child.
    WEB = tm.ssh("web1", username="deploy", port=2222)
    BOX = tm.docker("box", user="app", env={"A": "1"})
    LOCAL = tm.local(python="/usr/bin/python3", cwd="/")


    def describe():
        return [
            type(WEB).__name__, WEB.hostname, WEB.port,
            type(BOX).__name__, BOX.container, BOX.env,
            LOCAL.cwd,
            CallError.__module__, issubclass(ConnectError, tm.Error),
            tm.minimize_source("x = 1  # a comment\\n"),
            repr(open_context),
        ]


    def open_from_child():
        open_context(LOCAL)


    def latch_from_child():
        return tm.Latch().get_sync()


    def raise_call_error():
        raise CallError("x.Y", "raised in a child", "")


    def missing():
        return tm.no_such_name
"""


@pytest.mark.parametrize("label", EDGES)
async def test_user_module_importing_trimitogen_works_in_a_child(
    label: str, master_only: MasterOnly, no_leaked_fds: None
) -> None:
    master_only({"usestm.py": USER_MODULE})
    import usestm  # type: ignore[import-not-found]

    with trio.fail_after(WAIT):
        async with tm.open_context(tm.local(python=INTERPRETERS[label]), name=label) as ctx:
            got = await ctx.call(usestm.describe)
            assert got[:-1] == [
                "Ssh", "web1", 2222,
                "Docker", "box", (("A", "1"),),
                "/",
                "trimitogen.core.errors", True,
                "x = 1\n",
            ]  # fmt: skip
            assert "only in the master" in got[-1]
            for fn in (usestm.open_from_child, usestm.latch_from_child):
                with pytest.raises(tm.CallError) as info:
                    await ctx.call(fn)
                assert info.value.type_name == "trimitogen.core.package.MasterOnlyError"
                assert "runs only in the master process, not in trimitogen:" + label in str(
                    info.value.message
                )
            with pytest.raises(tm.CallError, match="raised in a child") as raised:
                await ctx.call(usestm.raise_call_error)
            assert raised.value.type_name == "trimitogen.core.errors.CallError"
            with pytest.raises(tm.CallError, match="has no attribute 'no_such_name'"):
                await ctx.call(usestm.missing)


def test_every_public_name_is_placed_for_children() -> None:
    public = {
        name
        for name, value in vars(tm).items()
        if not name.startswith("_") and type(value) is not type(sys)
    }
    assert public == set(package.CHILD_NAMES) | package.MASTER_ONLY
    assert not set(package.CHILD_NAMES) & package.MASTER_ONLY
    for name, module in package.CHILD_NAMES.items():
        assert getattr(sys.modules[module], name) is getattr(tm, name), name
