"""put_file / get_file and the tree transfers: content, mode and mtime kept, atomic at the target,
nothing partial left by an interrupted transfer, errors that name the context and the path,
progress, and trees that skip what already matches; locally and through ssh → sudo."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
import trio

import trimitogen as tm
from tests import stream_helpers as sh
from tests.chains import shared_directory
from tests.conftest import WAIT
from tests.infra import SshServer, Users
from tests.test_methods import SYSTEM_PYTHON

MIB = 1024 * 1024


pytestmark = pytest.mark.usefixtures("servers_first")


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    return shared_directory(tmp_path)


def make_file(path: Path, size: int, mode: int = 0o640, mtime: float = 1_600_000_000.5) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    path.chmod(mode)
    os.utime(path, (mtime, mtime))
    return data


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


async def test_put_and_get_keep_content_mode_and_mtime(where: tm.Context, shared: Path) -> None:
    data = make_file(shared / "src.bin", 3 * MIB + 17)
    marks: list[tuple[int, int]] = []
    with trio.fail_after(WAIT):
        sent = await where.put_file(
            shared / "src.bin",
            str(shared / "remote.bin"),
            progress=lambda d, t: marks.append((d, t)),
        )
        assert sent == len(data)
        assert (shared / "remote.bin").read_bytes() == data
        st = (shared / "remote.bin").stat()
        assert (st.st_mode & 0o777, st.st_mtime) == (0o640, 1_600_000_000.5)
        assert marks[-1] == (len(data), len(data))
        assert [d for d, _ in marks] == sorted(d for d, _ in marks)
        got = await where.get_file(str(shared / "remote.bin"), shared / "back.bin", mode=0o600)
    assert got == len(data)
    assert (shared / "back.bin").read_bytes() == data
    back = (shared / "back.bin").stat()
    assert (back.st_mode & 0o777, back.st_mtime) == (0o600, 1_600_000_000.5)
    assert leftovers(shared) == []


async def test_an_interrupted_put_leaves_the_target_and_no_part_file(
    ctx: tm.Context, shared: Path
) -> None:
    make_file(shared / "big.bin", 64 * MIB)
    (shared / "target.bin").write_bytes(b"old contents")
    # Cancelled once the first chunk is on its way: always half-way, however fast the copy.
    with trio.CancelScope() as scope:
        await ctx.put_file(
            shared / "big.bin", str(shared / "target.bin"), progress=lambda *_: scope.cancel()
        )
    assert scope.cancelled_caught
    assert (shared / "target.bin").read_bytes() == b"old contents"
    with trio.fail_after(WAIT):
        while leftovers(shared):  # the abort call runs in the child
            await trio.sleep(0.01)


def test_a_commit_interrupted_before_its_rename_removes_the_part_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancellation reaches the child's commit as an exception in the middle of it (here in
    its fsync): the temporary file goes, the target stays."""
    from trimitogen.core import files

    target = tmp_path / "target.bin"
    target.write_bytes(b"old contents")
    token = files.begin_write(str(target))

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt("cancelled")

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        files.commit_write(token, 0o644, None)
    assert leftovers(tmp_path) == []
    assert target.read_bytes() == b"old contents"


def test_nothing_is_written_once_a_put_was_abandoned(tmp_path: Path) -> None:
    """The abort closes the descriptor while the writing function may still have chunks: it
    must stop with an error, never write to a closed (perhaps reused) descriptor."""
    from trimitogen.core import files

    token = files.begin_write(str(tmp_path / "target.bin"))

    class Channel:
        keeps_views = False

        def __iter__(self) -> Any:
            yield b"first"
            files.abort_write(token)  # as the master's abort call does, meanwhile
            yield b"second"

        def send(self, value: Any) -> None:
            raise AssertionError("no total after an abort")

    with pytest.raises(OSError, match="abandoned"):
        files.receive_file(Channel(), token)
    assert leftovers(tmp_path) == []


async def test_an_interrupted_get_leaves_no_part_file(ctx: tm.Context, shared: Path) -> None:
    make_file(shared / "big.bin", 64 * MIB)
    with trio.CancelScope() as scope:
        await ctx.get_file(
            str(shared / "big.bin"), shared / "copy.bin", progress=lambda *_: scope.cancel()
        )
    assert scope.cancelled_caught
    assert not (shared / "copy.bin").exists()
    assert leftovers(shared) == []


async def test_a_put_whose_writes_fail_half_way_raises_the_error(
    ctx: tm.Context, shared: Path
) -> None:
    """A write call failing while others are in flight: the remote error itself (not a group),
    naming the path; the target is unchanged, no part file is left, the context answers."""
    make_file(shared / "big.bin", 32 * MIB)
    (shared / "target.bin").write_bytes(b"old contents")
    with trio.fail_after(WAIT):
        await ctx.call(sh.limit_file_size, 9 * MIB)
        with pytest.raises(OSError, match=r"target\.bin") as failed:
            await ctx.put_file(shared / "big.bin", str(shared / "target.bin"))
        assert isinstance(failed.value, tm.CallError)
        assert failed.value.errno == errno.EFBIG
        while leftovers(shared):  # the abort call runs in the child
            await trio.sleep(0.01)
        assert await ctx.call(sh.echo, "still here") == "still here"
    assert (shared / "target.bin").read_bytes() == b"old contents"


async def test_a_get_streams_with_bounded_memory(ctx: tm.Context, shared: Path) -> None:
    make_file(shared / "big.bin", 128 * MIB)
    before = sh.rss_kib()
    with trio.fail_after(WAIT):
        await ctx.get_file(str(shared / "big.bin"), shared / "copy.bin")
    growth = (sh.rss_kib() - before) * 1024
    assert growth < 48 * MIB, growth
    assert (shared / "copy.bin").stat().st_size == 128 * MIB


async def test_errors_name_the_context_and_the_path(where: tm.Context, shared: Path) -> None:
    with trio.fail_after(WAIT):
        with pytest.raises(FileNotFoundError) as missing:
            await where.get_file("/nonexistent/file", shared / "x")
        assert "/nonexistent/file" in str(missing.value)
        assert where.name in str(missing.value)
        make_file(shared / "src.bin", 10)
        with pytest.raises(FileNotFoundError) as no_dir:
            await where.put_file(shared / "src.bin", "/nonexistent/dir/file")
        assert "/nonexistent/dir/file" in str(no_dir.value)
        with pytest.raises(IsADirectoryError):
            await where.put_file(shared / "src.bin", str(shared))
    assert leftovers(shared) == []


async def test_permission_denied_through_sudo(shared: Path, sshd: SshServer, users: Users) -> None:
    locked = shared / "locked"
    locked.mkdir(mode=0o755)
    make_file(shared / "src.bin", 10)
    with trio.fail_after(WAIT):
        async with tm.open_context(tm.sudo(users.nopw.name, python=SYSTEM_PYTHON)) as ctx:
            with pytest.raises(PermissionError) as info:
                await ctx.put_file(shared / "src.bin", str(locked / "file"))
    assert str(locked / "file") in str(info.value)
    assert ctx.name in str(info.value)


async def test_trees_copy_once_then_skip_what_matches(where: tm.Context, shared: Path) -> None:
    src = shared / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    for i, rel in enumerate(("a.txt", "sub/b.bin", "sub/deeper/c.bin")):
        make_file(src / rel, 1000 * (i + 1), mtime=1_600_000_000 + i)
    dst = str(shared / "dst")
    with trio.fail_after(WAIT):
        first = await where.put_tree(src, dst)
        assert sorted(first.copied) == ["a.txt", "sub/b.bin", "sub/deeper/c.bin"]
        again = await where.put_tree(src, dst)
        assert again.copied == ()
        assert len(again.skipped) == 3
        # Same size and mtime, other bytes: only a checksum sees it.
        changed = src / "sub" / "b.bin"
        make_file(changed, 2000, mtime=1_600_000_001)
        assert (await where.put_tree(src, dst)).copied == ()
        assert (await where.put_tree(src, dst, checksum=True)).copied == ("sub/b.bin",)
        assert Path(dst, "sub", "b.bin").read_bytes() == changed.read_bytes()
        back = await where.get_tree(dst, shared / "back")
        assert sorted(back.copied) == ["a.txt", "sub/b.bin", "sub/deeper/c.bin"]
    assert (shared / "back" / "sub" / "deeper" / "c.bin").read_bytes() == (
        src / "sub" / "deeper" / "c.bin"
    ).read_bytes()
