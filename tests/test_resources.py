"""Package data over the wire: ``importlib.resources``, ``pkgutil.get_data`` and real-file copies
in children that received the package from the master, and what is refused."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio

import trimitogen as tm
from tests.conftest import WAIT, MasterOnly
from tests.test_real_packages import OLDEST_AND_NEWEST, _minor, isolated
from trimitogen._responder import ModuleResponder
from trimitogen.core.importer import ModulePolicy
from trimitogen.core.resources import ResourceForwarder, path_refusal

#: Runs in children: every way a package reads its own data (3.8-compatible code).
DATAPKG = """
    import importlib.resources
    import os
    import pkgutil
    import sys

    def files_api():
        root = importlib.resources.files(__name__)
        data = root / "data"
        with data.joinpath("hello.txt").open("rb") as f:
            opened = f.read()
        return {
            "hello": data.joinpath("hello.txt").read_bytes(),
            "text": (root / "notes.txt").read_text(encoding="utf-8"),
            "opened": opened,
            "kinds": [
                data.is_dir(),
                data.is_file(),
                (data / "hello.txt").is_file(),
                (root / "nope.txt").is_file(),
            ],
            "names": sorted(p.name for p in data.iterdir()),
            "nested": root.joinpath("data/sub", "deep.bin").read_bytes(),
        }

    def legacy_api():
        # The API of Python 3.8 (still there, deprecated or not, in later versions).
        return {
            "read_text": importlib.resources.read_text(__name__, "notes.txt"),
            "read_binary": importlib.resources.read_binary(__name__, "notes.txt"),
            "is_resource": [
                importlib.resources.is_resource(__name__, "notes.txt"),
                importlib.resources.is_resource(__name__, "data"),
            ],
            "contents": sorted(importlib.resources.contents(__name__)),
        }

    def get_data(resource):
        return pkgutil.get_data(__name__, resource)

    def real_file(resource):
        if hasattr(importlib.resources, "as_file"):
            context = importlib.resources.as_file(importlib.resources.files(__name__) / resource)
        else:
            context = importlib.resources.path(__name__, resource)
        with context as path:
            path = str(path)
            if os.path.isdir(path):
                content = sorted(os.listdir(path))
            else:
                with open(path, "rb") as f:
                    content = f.read()
        parts = path.split(os.sep)
        mine = [i for i, part in enumerate(parts) if part.startswith("trimitogen-resources-")]
        private = os.sep.join(parts[: mine[0] + 1]) if mine else "/"
        return path, content, oct(os.stat(private).st_mode & 0o777), os.path.exists(path)

    def error(how, package, resource):
        try:
            if how == "files":
                (importlib.resources.files(package) / resource).read_bytes()
            elif how == "get_data":
                pkgutil.get_data(package, resource)
            else:
                importer = next(f for f in sys.meta_path if type(f).__name__ == "Importer")
                if how == "loader":
                    importer.get_data(resource)  # what pkgutil calls, with any path
                else:
                    importer._served().read(package, resource)  # what a hostile child could ask
        except OSError as exc:
            return type(exc).__name__, str(exc)
        return None
"""


@pytest.fixture
def datapkg(master_only: MasterOnly) -> Any:
    root = master_only(
        {
            "datapkg_tmg/__init__.py": DATAPKG,
            "datapkg_tmg/notes.txt": "notes: ünïcode\n",
            "datapkg_tmg/data/hello.txt": "hello, world\n",
            "outside_tmg.txt": "a file beside the package, not in it\n",
            "otherpkg_tmg/__init__.py": "",
            "otherpkg_tmg/data.txt": "of a package the child was never sent\n",
        }
    )
    (root / "datapkg_tmg" / "data" / "sub").mkdir()
    (root / "datapkg_tmg" / "data" / "sub" / "deep.bin").write_bytes(bytes(range(256)) * 4)
    (root / "datapkg_tmg" / "leak.txt").symlink_to(root / "outside_tmg.txt")
    (root / "datapkg_tmg" / "data" / "etc").symlink_to("/etc")
    import datapkg_tmg  # type: ignore[import-not-found]

    return datapkg_tmg


@pytest.mark.parametrize("label", OLDEST_AND_NEWEST)
async def test_package_data_in_a_child_that_imported_the_package(datapkg: Any, label: str) -> None:
    with trio.fail_after(WAIT):
        async with tm.open_context(isolated(label)) as ctx:
            legacy = await ctx.call(datapkg.legacy_api)
            assert legacy["read_text"] == "notes: ünïcode\n"
            assert legacy["read_binary"] == "notes: ünïcode\n".encode()
            assert legacy["is_resource"] == [True, False]
            assert {"__init__.py", "data", "leak.txt", "notes.txt"} <= set(legacy["contents"])

            assert await ctx.call(datapkg.get_data, "data/hello.txt") == b"hello, world\n"
            assert await ctx.call(datapkg.get_data, "data/sub/deep.bin") == bytes(range(256)) * 4

            path, content, mode, exists = await ctx.call(datapkg.real_file, "notes.txt")
            assert content == "notes: ünïcode\n".encode()
            assert mode == "0o700"
            assert exists
            assert not path.startswith(os.path.dirname(datapkg.__file__))

            if _minor(label) >= (3, 10):  # 3.9's files() ignores loaders (see docs/import.rst)
                files = await ctx.call(datapkg.files_api)
                assert files["hello"] == files["opened"] == b"hello, world\n"
                assert files["text"] == "notes: ünïcode\n"
                assert files["kinds"] == [True, False, True, False]
                assert files["names"] == ["etc", "hello.txt", "sub"]
                assert files["nested"] == bytes(range(256)) * 4
            if _minor(label) >= (3, 12):  # as_file() of a directory came with 3.12
                _, names, _, _ = await ctx.call(datapkg.real_file, "data/sub")
                assert names == ["deep.bin"]
            sent = ctx.import_stats.resources_sent
            assert sent >= 3
    # The private directory of copies went with the context.
    assert not os.path.exists(path)


REFUSED = [
    ("../outside_tmg.txt", "PermissionError", "'..' part"),
    ("data/../../outside_tmg.txt", "PermissionError", "'..' part"),
    ("leak.txt", "PermissionError", "leads outside the package's directory"),
    ("data/etc/hostname", "PermissionError", "leads outside the package's directory"),
    ("data/missing.txt", "FileNotFoundError", "the package has no such file"),
]


@pytest.mark.parametrize("label", OLDEST_AND_NEWEST)
async def test_refused_package_data(datapkg: Any, label: str) -> None:
    hows = ["get_data", "wire"] + (["files"] if _minor(label) >= (3, 10) else [])
    with trio.fail_after(WAIT):
        async with tm.open_context(isolated(label)) as ctx:
            for how in hows:
                for resource, kind, reason in REFUSED:
                    error = await ctx.call(datapkg.error, how, "datapkg_tmg", resource)
                    assert error is not None, (how, resource)
                    assert error[0] == kind, (how, resource, error)
                    assert reason in error[1], (how, resource, error)
            # The loader asked for a path outside every package it loaded.
            error = await ctx.call(datapkg.error, "loader", "", "/etc/hostname")
            assert error[0] == "FileNotFoundError"
            assert "not in the directory of a package this context received" in error[1]
            # Packages the child was not sent (one only the master has, one of the standard
            # library): asked for straight over the wire, as a hostile child could.
            for package in ("otherpkg_tmg", "json"):
                error = await ctx.call(datapkg.error, "wire", package, "data.txt")
                assert error[0] == "PermissionError"
                assert "was not sent to this context" in error[1]
            # The context still serves what it may.
            assert await ctx.call(datapkg.get_data, "data/hello.txt") == b"hello, world\n"


async def test_a_file_larger_than_a_message_gets_a_clear_error(
    datapkg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trimitogen._context import RESPONDER

    monkeypatch.setattr(RESPONDER, "max_resource_size", 8)
    with trio.fail_after(WAIT):
        async with tm.open_context(tm.local()) as ctx:
            error = await ctx.call(datapkg.error, "get_data", "datapkg_tmg", "data/hello.txt")
    assert error[0] == "PermissionError"
    assert "13 bytes, more than the 8 bytes of package data one message may carry" in error[1]
    assert "install the package where the context runs" in error[1]


async def test_intermediates_forward_and_cache_package_data(datapkg: Any) -> None:
    with trio.fail_after(WAIT):
        async with tm.open_context(tm.local(), name="middle") as middle:
            for name in ("first", "second"):
                async with tm.open_context(tm.local(), via=middle, name=name) as leaf:
                    data = await leaf.call(datapkg.get_data, "data/hello.txt")
                    assert data == b"hello, world\n"
                    assert leaf.import_stats.resources_sent == 0  # nothing from the master
                    # Refused by the intermediate itself, like the master would.
                    error = await leaf.call(datapkg.error, "wire", "otherpkg_tmg", "data.txt")
                    assert error[0] == "PermissionError"
                    assert "was not sent to this context" in error[1]
                    error = await leaf.call(datapkg.error, "get_data", "datapkg_tmg", "leak.txt")
                    assert "leads outside the package's directory" in error[1]
            # Asked upward once, for both leaves; the refusals never left the intermediate
            # except the symbolic link, which only the master can see.
            assert middle.import_stats.resources_sent == 1


def test_paths_that_are_refused_before_any_file_is_looked_at() -> None:
    assert path_refusal("") is None
    assert path_refusal("data/hello.txt") is None
    for bad in ("/etc/passwd", "..", "a/../b", "a//b", "./a", "a/", "a\\b", "a\x00b", "x" * 2000):
        assert path_refusal(bad) is not None, bad


def test_the_responder_serves_only_inside_packages_sent(datapkg: Any, tmp_path: Path) -> None:
    responder = ModuleResponder()
    sent = {"datapkg_tmg"}
    allowed = ModulePolicy()

    def answer(package: str, path: str, policy: ModulePolicy = allowed) -> tuple[Any, ...]:
        return responder.resource(package, path, policy, sent)[0]

    assert answer("datapkg_tmg", "data/hello.txt")[2] == "file"
    listing = answer("datapkg_tmg", "data")
    assert listing[2:5] == ("dir", b"", ["etc/", "hello.txt", "sub/"])
    denied = answer("datapkg_tmg", "data/hello.txt", ModulePolicy(deny=["datapkg_tmg"]))
    assert denied[2] == "refused"
    assert "deny list" in denied[5]
    assert "allow list" in answer("datapkg_tmg", "notes.txt", ModulePolicy(allow=["other"]))[5]
    assert "was not sent" in answer("otherpkg_tmg", "data.txt")[5]
    # A FIFO in the package's directory is refused without opening it for long (no hang).
    os.mkfifo(Path(datapkg.__file__).parent / "fifo")
    fifo = answer("datapkg_tmg", "fifo")
    assert fifo[2] == "refused"
    assert "not a regular file" in fifo[5]
    # A module that is not a package has no directory of its own to serve.
    sent.add("datapkg_tmg.plain")
    (Path(datapkg.__file__).parent / "plain.py").write_text("")
    assert "not a package the master serves" in answer("datapkg_tmg.plain", "x")[5]


async def test_a_fork_reads_the_data_of_packages_its_original_imported(datapkg: Any) -> None:
    with trio.fail_after(WAIT):
        async with tm.open_context(tm.local(), name="original") as original:
            first, _, _, _ = await original.call(datapkg.real_file, "notes.txt")
            async with tm.open_context(tm.fork(), via=original, name="copy") as copy:
                # The copy inherited datapkg_tmg (nothing asked for it again) and reads its
                # data through its own parent link, into a private directory of its own.
                assert await copy.call(datapkg.get_data, "data/hello.txt") == b"hello, world\n"
                path, content, _, _ = await copy.call(datapkg.real_file, "notes.txt")
                assert content == "notes: ünïcode\n".encode()
                assert os.path.dirname(os.path.dirname(path)) != os.path.dirname(
                    os.path.dirname(first)
                )
                error = await copy.call(datapkg.error, "get_data", "datapkg_tmg", "leak.txt")
                assert "leads outside the package's directory" in error[1]
            assert not os.path.exists(path)  # the copy removed its own copies
            assert os.path.exists(first)  # and not the original's
            assert await original.call(datapkg.get_data, "notes.txt") == "notes: ünïcode\n".encode()


class _Child:
    """What the forwarder reads of a child: its module policy and the modules it was sent."""

    def __init__(self, *sent: str, policy: ModulePolicy | None = None) -> None:
        self.module_policy = policy or ModulePolicy()
        self.modules_sent = set(sent)


def test_the_forwarder_asks_upward_once_and_answers_from_its_cache() -> None:
    asked: list[tuple[str, str]] = []
    forwarder = ResourceForwarder(lambda package, path: asked.append((package, path)))
    one, two, three = _Child("pkg"), _Child("pkg"), _Child("pkg")
    assert forwarder.request(one, "pkg", "data.txt") is None
    assert forwarder.request(two, "pkg", "data.txt") is None
    assert asked == [("pkg", "data.txt")]
    answer: tuple[str, str, str, bytes, list[str], str] = ("pkg", "data.txt", "file", b"z", [], "")
    assert forwarder.on_load_resource(answer) == [(one, answer), (two, answer)]
    assert forwarder.request(three, "pkg", "data.txt") == answer
    assert asked == [("pkg", "data.txt")]
    # Refused by the intermediate, never asked upward: traversal, a package not sent to that
    # child (though sent to others), a package its lists deny.
    for child, package, path, reason in [
        (one, "pkg", "../secret", "'..' part"),
        (_Child("other"), "pkg", "data.txt", "was not sent to this context"),
        (_Child("pkg", policy=ModulePolicy(deny=["pkg"])), "pkg", "data.txt", "deny list"),
    ]:
        refusal = forwarder.request(child, package, path)
        assert refusal is not None
        assert refusal[2] == "refused"
        assert reason in refusal[5]
    assert asked == [("pkg", "data.txt")]
