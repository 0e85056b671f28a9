"""Import over the wire: modules that exist only on the master reach the child on demand."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

import trimitogen as tm
from tests.conftest import REPO, WAIT, MasterOnly, discover_interpreters

INTERPRETERS = discover_interpreters()

#: A package of a dozen modules that import each other, with relative imports, a subpackage,
#: side effects in ``__init__`` and module-level state.
GENERATED_PACKAGE = {
    "__init__.py": """
        from . import registry
        registry.record("genpkg imported")
        VERSION = "1.0"
    """,
    "registry.py": """
        EVENTS = []
        def record(event):
            EVENTS.append(event)
            return len(EVENTS)
    """,
    "api.py": """
        from . import models, services
        from .util import text
        from .sub import deep
        import genpkg
        def run(x):
            return {
                "value": services.compute(x),
                "label": text.shout(models.name()),
                "deep": deep.depth(),
                "file": __file__,
                "events": list(genpkg.registry.EVENTS),
                "version": genpkg.VERSION,
            }
        def count_calls():
            global CALLS
            CALLS = globals().get("CALLS", 0) + 1
            return CALLS
    """,
    "models.py": """
        from .util.text import lower
        def name():
            return lower("Model")
    """,
    "services.py": """
        from .util import numbers
        from . import config
        def compute(x):
            return numbers.double(x) + config.OFFSET
    """,
    "config.py": """
        OFFSET = 100
    """,
    "util/__init__.py": """
        from .numbers import double
    """,
    "util/numbers.py": """
        def double(x):
            return 2 * x
    """,
    "util/text.py": """
        def shout(s):
            return s.upper() + "!"
        def lower(s):
            return s.lower()
    """,
    "sub/__init__.py": "",
    "sub/deep.py": """
        from ..registry import record
        from . import deeper
        def depth():
            record("deep used")
            return deeper.LEVEL
    """,
    "sub/deeper.py": """
        LEVEL = 3
    """,
    "secret.py": """
        TOKEN = "must not leave the master"
        def token():
            return TOKEN
    """,
    "broken.py": """
        def oops(:
            pass
    """,
    "uses_missing.py": """
        import genpkg_no_such_module
    """,
    "uses_ext.py": """
        import genpkg_fake_ext
        def f():
            return 1
    """,
}


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def genpkg_files() -> dict[str, str]:
    return {"genpkg/" + rel: text for rel, text in GENERATED_PACKAGE.items()}


@pytest.fixture
def genpkg_root(master_only: MasterOnly) -> Path:
    """``genpkg`` on the master's sys.path only (children do not see this directory)."""
    root = master_only(genpkg_files())
    # A file that looks like a compiled extension: the master finds it but cannot send it.
    suffix = __import__("importlib.machinery").machinery.EXTENSION_SUFFIXES[0]
    (root / ("genpkg_fake_ext" + suffix)).write_bytes(b"\x7fELF not really")
    return root


async def test_master_only_package_is_imported_on_demand(genpkg_root: Path) -> None:
    import genpkg.api

    with trio.fail_after(WAIT):
        async with tm.open_context(tm.local()) as ctx:
            result = await ctx.call(genpkg.api.run, 5)
            stats = ctx.import_stats
            assert result["value"] == 110
            assert result["label"] == "MODEL!"
            assert result["deep"] == 3
            assert result["version"] == "1.0"
            assert result["events"] == ["genpkg imported", "deep used"]
            assert result["file"] == "master:" + str(genpkg_root / "genpkg" / "api.py")
            # genpkg (with what its __init__ imports), then genpkg.api with its whole closure.
            assert stats.requests == 2
            assert stats.modules_sent == 12
            assert stats.bytes_sent > 0
            assert stats.seconds > 0
            # Module-level state lives on in the child between calls.
            assert await ctx.call(genpkg.api.count_calls) == 1
            assert await ctx.call(genpkg.api.count_calls) == 2
            assert ctx.import_stats.requests == 2
    # The master's own copy was not touched by the child's calls.
    assert genpkg.registry.EVENTS == ["genpkg imported"]


@pytest.mark.parametrize("label", sorted(INTERPRETERS))
async def test_master_only_package_on_each_interpreter(genpkg_root: Path, label: str) -> None:
    import genpkg.api

    with trio.fail_after(WAIT):
        async with tm.open_context(tm.local(python=INTERPRETERS[label])) as ctx:
            result = await ctx.call(genpkg.api.run, 1)
            assert result["value"] == 102
            assert result["events"] == ["genpkg imported", "deep used"]
            assert ctx.import_stats.requests == 2


async def test_standard_library_is_never_sent(ctx: tm.Context) -> None:
    import json

    before = ctx.import_stats.requests
    assert await ctx.call(json.dumps, [1]) == "[1]"
    assert ctx.import_stats.requests == before


async def test_child_installed_module_wins(
    genpkg_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    child_only = tmp_path / "child_only"
    write_tree(child_only / "genpkg", {"__init__.py": "", "config.py": "OFFSET = -1\n"})
    monkeypatch.setenv("PYTHONPATH", str(child_only))
    async with tm.open_context(tm.local()) as ctx:
        offset = await ctx.call(eval, "__import__('genpkg.config').config.OFFSET")
        assert offset == -1
        assert ctx.import_stats.requests == 0


async def test_unservable_modules_fail_with_clear_import_errors(genpkg_root: Path) -> None:
    import genpkg.api

    async with tm.open_context(tm.local()) as ctx:
        with pytest.raises(tm.CallError) as missing:
            await ctx.call(__import__, "genpkg.uses_missing")
        assert missing.value.type_name == "builtins.ModuleNotFoundError"
        assert "genpkg_no_such_module" in missing.value.message
        assert "master cannot find it" in missing.value.message

        with pytest.raises(tm.CallError) as ext:
            await ctx.call(__import__, "genpkg.uses_ext")
        assert ext.value.type_name == "builtins.ModuleNotFoundError"
        assert "genpkg_fake_ext" in ext.value.message
        assert "compiled extension" in ext.value.message

        with pytest.raises(tm.CallError) as broken:
            await ctx.call(__import__, "genpkg.broken")
        assert broken.value.type_name == "builtins.SyntaxError"
        assert "broken.py" in broken.value.remote_traceback

        # The context is still usable.
        assert (await ctx.call(genpkg.api.run, 0))["value"] == 100


async def test_deny_and_allow_lists(genpkg_root: Path) -> None:
    import genpkg.api
    import genpkg.secret

    async with tm.open_context(tm.local(), deny_modules=["genpkg.secret"]) as ctx:
        assert (await ctx.call(genpkg.api.run, 1))["value"] == 102
        with pytest.raises(tm.CallError) as denied:
            await ctx.call(genpkg.secret.token)
        assert denied.value.type_name == "builtins.ModuleNotFoundError"
        assert "deny list" in denied.value.message

    async with tm.open_context(tm.local(), allow_modules="tests") as ctx:
        with pytest.raises(tm.CallError, match="allow list"):
            await ctx.call(genpkg.api.run, 1)


async def test_compiled_code_only_for_matching_bytecode() -> None:
    from trimitogen._context import RESPONDER
    from trimitogen.core.importer import ModulePolicy

    with_code, _ = RESPONDER.answer("tests.remote_helpers", ModulePolicy(), set(), True)
    source_only, _ = RESPONDER.answer("tests.remote_helpers", ModulePolicy(), set(), False)
    record = next(r for r in with_code if r[0] == "tests.remote_helpers")
    assert record[5]  # marshalled code
    assert record[4]  # and the source, for tracebacks
    assert all(not r[5] for r in source_only)


def test_functions_of_the_main_script(tmp_path: Path) -> None:
    script = tmp_path / "tool.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            import trio
            import trimitogen as tm

            print("tool.py imported as", __name__, "in", os.getpid(), flush=True)

            def where(x):
                return (__name__, os.getpid(), x * 2)

            async def main():
                async with tm.open_context(tm.local()) as ctx:
                    print("result", await ctx.call(where, 21), ctx.pid, flush=True)

            if __name__ == "__main__":
                trio.run(main)
            """
        )
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=WAIT
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    result_line = next(line for line in lines if line.startswith("result"))
    name, child_pid, doubled = eval(result_line.split(" ", 1)[1].rsplit(" ", 1)[0])
    assert name == "__trimitogen_main__"
    assert doubled == 42
    assert str(child_pid) == result_line.rsplit(" ", 1)[1]
    assert child_pid != os.getpid()


async def test_namespace_packages(master_only: MasterOnly) -> None:
    master_only({"nspkg_tmg/sub/mod.py": "def value():\n    return 'from a namespace'\n"})
    import nspkg_tmg.sub.mod  # type: ignore[import-not-found]

    async with tm.open_context(tm.local()) as ctx:
        assert await ctx.call(nspkg_tmg.sub.mod.value) == "from a namespace"


async def test_a_probe_for_a_missing_module_answers_none(ctx: tm.Context) -> None:
    # Code that checks for optional dependencies with find_spec() expects None, not an error.
    probe = "__import__('importlib.util').util.find_spec('tmg_no_such_module') is None"
    assert await ctx.call(eval, probe) is True
    with pytest.raises(tm.CallError, match="master cannot find it"):
        await ctx.call(__import__, "tmg_no_such_module")


async def test_a_module_that_replaces_itself_in_sys_modules(master_only: MasterOnly) -> None:
    # Importing replaced_tmg leaves another module under its name in the master's sys.modules;
    # the child must still get replaced_tmg's own source, which does the same there.
    master_only(
        {
            "replaced_tmg.py": """
                import sys
                import replacement_tmg
                sys.modules[__name__] = replacement_tmg
            """,
            "replacement_tmg.py": """
                def value():
                    return "from the replacement"
            """,
            "uses_replaced_tmg.py": """
                import replaced_tmg
                def run():
                    return (replaced_tmg.__name__, replaced_tmg.value())
            """,
        }
    )
    import uses_replaced_tmg  # type: ignore[import-not-found]

    assert uses_replaced_tmg.run() == ("replacement_tmg", "from the replacement")
    with trio.fail_after(WAIT):
        async with tm.open_context(tm.local()) as ctx:
            assert await ctx.call(uses_replaced_tmg.run) == (
                "replacement_tmg",
                "from the replacement",
            )


async def test_namespace_package_the_master_has_not_imported(master_only: MasterOnly) -> None:
    # Two nested namespace packages: the inner one's path is computed from the outer *module*,
    # which the master never imported.
    master_only(
        {
            "outer_ns_tmg/inner/mod.py": "def value():\n    return 'nested namespaces'\n",
            "ns_user_tmg.py": """
                def run():
                    import outer_ns_tmg.inner.mod
                    return outer_ns_tmg.inner.mod.value()
            """,
        }
    )
    import ns_user_tmg  # type: ignore[import-not-found]

    assert "outer_ns_tmg" not in sys.modules
    with trio.fail_after(WAIT):
        async with tm.open_context(tm.local()) as ctx:
            assert await ctx.call(ns_user_tmg.run) == "nested namespaces"
    assert "outer_ns_tmg" not in sys.modules


def test_a_script_that_starts_work_at_import_gets_a_clear_error(tmp_path: Path) -> None:
    # The child imports the script to find where(); without a __main__ guard, trio.run(main)
    # runs there too, and the error must say so rather than show only what failed next.
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            import trio
            import trimitogen as tm

            def where():
                return os.getpid()

            async def main():
                async with tm.open_context(tm.local()) as ctx:
                    print(await ctx.call(where))

            trio.run(main)
            """
        )
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=WAIT
    )
    assert result.returncode != 0
    error = next(line for line in result.stderr.splitlines() if line.startswith("trimitogen."))
    assert "CallError: builtins.ImportError" in error
    assert "master's script %s" % script in error
    assert "at line 13 (trio.run(main))" in error
    assert 'if __name__ == "__main__":' in error
