"""File transfers between the master and a context: streamed, atomic, mode and mtime kept.

``get_file`` reads the remote file as a stream (flow-controlled, see :mod:`._streams`) into a
temporary file beside the local target; ``put_file`` sends the local file over a channel to a
function that writes it there.  Chunks travel as raw bodies (never pickled), and each side
writes what it receives straight from its receive buffer, so no byte is copied in user space
on the way.  Both rename over the target only when the whole file arrived (see
:mod:`trimitogen.core.files` for the remote side).
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import trio

from ._streams import RemoteChannel, RemoteStream
from .core import files as remote
from .core.errors import CallError
from .core.messages import raw_pieces
from .core.readers import BufferPool
from .core.side import IOV_MAX, written

if TYPE_CHECKING:
    from ._context import Context

#: Bytes per chunk; read buffers a put keeps for use again (the channel's window, 4 MiB, is
#: in flight at most); received chunks a get writes at once at most.
CHUNK = remote.CHUNK
PUT_BUFFERS = 8
WRITE_BATCH = 8

#: ``progress(done_bytes, total_bytes)``, called after every chunk.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TreeResult:
    """What a tree transfer did: relative paths copied and skipped (already the same)."""

    copied: tuple[str, ...]
    skipped: tuple[str, ...]


class _Naming:
    """Puts the operation, the path and the context in front of a remote error's message."""

    def __init__(self, ctx: Context, verb: str, path: str) -> None:
        self.what = "%s %r in context %r" % (verb, path, ctx.name)

    def __enter__(self) -> None:
        pass

    def __exit__(self, _type: Any, exc: BaseException | None, _tb: Any) -> None:
        if isinstance(exc, CallError) and not exc.message.startswith(self.what):
            exc.message = "%s: %s" % (self.what, exc.message)


async def put_file(
    ctx: Context,
    local_path: str | os.PathLike[str],
    remote_path: str,
    *,
    mode: int | None = None,
    progress: Progress | None = None,
) -> int:
    """Copy a local file to ``remote_path`` in ``ctx``; the number of bytes copied.

    The file is written beside the target and renamed over it once complete, with ``mode``
    (default: the local file's) and the local file's modification time.  Cancelled or failed
    half-way, it leaves the target as it was and no temporary file.
    """
    local = os.fspath(local_path)
    with _Naming(ctx, "put_file to", remote_path), open(local, "rb", buffering=0) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError("%s is not a regular file" % local)
        total = st.st_size
        token = await ctx.call(remote.begin_write, remote_path)
        try:
            done = await _send_chunks(ctx, f, token, total, progress)
            await ctx.call(
                remote.commit_write,
                token,
                stat.S_IMODE(st.st_mode) if mode is None else mode,
                st.st_mtime,
            )
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                try:
                    await ctx.call(remote.abort_write, token)
                except Exception:
                    pass  # the context is gone: its own exit removes the file
            raise
    return done


async def _send_chunks(
    ctx: Context, f: Any, token: str, total: int, progress: Progress | None
) -> int:
    """Send the file's bytes as raw chunks over a channel to :func:`remote.receive_file`, each
    read into a buffer used again once written; the number of bytes the context wrote."""
    pool = BufferPool(CHUNK, PUT_BUFFERS)
    sent = 0
    async with ctx.open_channel(remote.receive_file, token) as opened:
        channel = cast(RemoteChannel, opened)
        try:
            while True:
                buffer = pool.take()
                n = await trio.to_thread.run_sync(f.readinto, buffer)
                if not n:
                    break
                await channel.send_bytes(buffer[:n])
                del buffer
                sent += n
                if progress is not None:
                    progress(sent, total)
            channel.send_eof()
        except trio.BrokenResourceError:
            pass  # the far end stopped (a write failed): its error comes next
        try:
            written = await channel.receive()  # the remote error, if it failed
        except trio.EndOfChannel:
            raise OSError("the writing function ended without saying what it wrote") from None
    if written != sent:
        raise OSError("%d bytes were sent but %d written" % (sent, written))
    return int(written)


async def get_file(
    ctx: Context,
    remote_path: str,
    local_path: str | os.PathLike[str],
    *,
    mode: int | None = None,
    progress: Progress | None = None,
) -> int:
    """Copy ``remote_path`` of ``ctx`` to a local file; the number of bytes copied.

    Streamed with flow control (a file larger than memory works), written beside the local
    target and renamed over it once complete, with ``mode`` (default: the remote file's) and
    the remote modification time.  Cancelled or failed half-way, it leaves no partial file.
    """
    local = os.path.abspath(os.fspath(local_path))
    directory, name = os.path.split(local)
    fd, temp = tempfile.mkstemp(prefix="." + name + ".", suffix=".part", dir=directory)
    done = 0
    try:
        with _Naming(ctx, "get_file from", remote_path):
            async with ctx.open_stream(remote.read_file, remote_path) as opened:
                items = cast("RemoteStream[Any]", opened)
                items.keep_raw_views()
                remote_mode, total, mtime = await items.receive()
                async for data in items:
                    # What else arrived meanwhile goes in the same write.
                    batch = [data]
                    while items.buffered and len(batch) < WRITE_BATCH:
                        batch.append(await items.receive())
                    pieces = [p for item in batch for p in raw_pieces(item)]
                    del data, batch
                    done += await trio.to_thread.run_sync(_write_all, fd, pieces)
                    del pieces  # the receive buffers may be used again
                    if progress is not None:
                        progress(done, total)
            os.fsync(fd)
        os.close(fd)
        fd = -1
        os.chmod(temp, remote_mode if mode is None else mode)
        os.utime(temp, (mtime, mtime))
        os.replace(temp, local)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    return done


def _write_all(fd: int, pieces: list[Any]) -> int:
    """Write every buffer of ``pieces`` to ``fd`` (gathered); the number of bytes."""
    views = [memoryview(p).cast("B") for p in pieces if len(p)]
    total = sum(len(v) for v in views)
    while views:
        n = os.writev(fd, views[:IOV_MAX])
        if not n:
            raise OSError(errno.EIO, "writing to the local file wrote nothing")
        views = written(views, n)
    return total


def _same(a: Any, b: Any) -> bool:
    """Same size and (to the second, which every filesystem keeps) the same mtime."""
    return bool(a[1] == b[1] and int(a[2]) == int(b[2]))


async def _copy_tree(
    ctx: Context,
    source_dir: str,
    dest_dir: str,
    *,
    put: bool,
    checksum: bool,
    progress: Progress | None,
) -> TreeResult:
    """Copy every regular file below ``source_dir`` (local if ``put``, else remote) to the
    same relative path below ``dest_dir``, skipping the ones that already match."""
    local_info = await trio.to_thread.run_sync(remote.tree_info, source_dir if put else dest_dir)
    remote_info = await ctx.call(remote.tree_info, dest_dir if put else source_dir)
    sources, dests = (local_info, remote_info) if put else (remote_info, local_info)
    total = sum(info[1] for info in sources.values())
    done = 0
    copied, skipped = [], []
    for rel, info in sorted(sources.items()):
        src, dst = os.path.join(source_dir, rel), os.path.join(dest_dir, rel)
        have = dests.get(rel)
        if have is not None and _same(info, have):
            local, far = (src, dst) if put else (dst, src)
            if not checksum or await ctx.call(remote.file_digest, far) == (
                await trio.to_thread.run_sync(remote.file_digest, local)
            ):
                skipped.append(rel)
                done += info[1]
                continue
        base = done

        def step(n: int, _total: int, base: int = base) -> None:
            if progress is not None:
                progress(base + n, total)

        if put:
            await ctx.call(remote.make_dirs, os.path.dirname(dst))
            done += await put_file(ctx, src, dst, progress=step)
        else:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            done += await get_file(ctx, src, dst, progress=step)
        copied.append(rel)
    if progress is not None:
        progress(done, total)
    return TreeResult(tuple(copied), tuple(skipped))


async def put_tree(
    ctx: Context,
    local_dir: str | os.PathLike[str],
    remote_dir: str,
    *,
    checksum: bool = False,
    progress: Progress | None = None,
) -> TreeResult:
    """Copy a local directory tree into ``remote_dir``, skipping files whose size and mtime
    (with ``checksum``, SHA-256) already match; each file is copied as by :func:`put_file`."""
    return await _copy_tree(
        ctx, os.fspath(local_dir), remote_dir, put=True, checksum=checksum, progress=progress
    )


async def get_tree(
    ctx: Context,
    remote_dir: str,
    local_dir: str | os.PathLike[str],
    *,
    checksum: bool = False,
    progress: Progress | None = None,
) -> TreeResult:
    """Copy a remote directory tree into ``local_dir``, skipping files that already match
    (as :func:`put_tree` does); each file is copied as by :func:`get_file`."""
    return await _copy_tree(
        ctx, remote_dir, os.fspath(local_dir), put=False, checksum=checksum, progress=progress
    )
