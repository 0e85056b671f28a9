"""File transfers between the master and a context: streamed, atomic, mode and mtime kept.

``get_file`` reads the remote file as a stream (flow-controlled, see :mod:`._streams`) into a
temporary file beside the local target; ``put_file`` sends the local file in batches of chunks,
each batch a call that writes at its own offset, with :data:`PUT_CALLS` calls in flight so that
reading and sending the next batch overlaps the child's writing of the last one: at most
``PUT_CALLS * PUT_BATCH`` chunks are ever in flight.  Both rename over the
target only when the whole file arrived (see :mod:`trimitogen.core.files` for the remote side).
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from .core import files as remote
from .core.errors import CallError

if TYPE_CHECKING:
    from ._context import Context

#: Bytes per chunk, and chunks per call of a put (the most a put has in flight).
CHUNK = remote.CHUNK
PUT_BATCH = 4
PUT_CALLS = 2

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
    with _Naming(ctx, "put_file to", remote_path), open(local, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError("%s is not a regular file" % local)
        total = st.st_size
        token = await ctx.call(remote.begin_write, remote_path)
        done = 0
        # The first error of a read or a call, raised as itself once the others are cancelled
        # (a nursery would wrap it in an exception group).
        failure: list[Exception] = []
        slots = trio.Semaphore(PUT_CALLS)

        async def write(offset: int, batch: list[bytes], scope: trio.CancelScope) -> None:
            nonlocal done
            try:
                done += await ctx.call(remote.write_chunks, token, offset, batch)
            except Exception as exc:
                failure.append(exc)
                scope.cancel()
                return
            finally:
                slots.release()
            if progress is not None:
                progress(done, total)

        try:
            async with trio.open_nursery() as nursery:
                try:
                    offset = 0
                    while True:
                        batch = []
                        for _ in range(PUT_BATCH):
                            data = await trio.to_thread.run_sync(f.read, CHUNK)
                            if not data:
                                break
                            batch.append(data)
                        if not batch:
                            break
                        await slots.acquire()
                        nursery.start_soon(write, offset, batch, nursery.cancel_scope)
                        offset += sum(len(data) for data in batch)
                except Exception as exc:
                    failure.append(exc)
                    nursery.cancel_scope.cancel()
            if failure:
                raise failure[0]
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
        with _Naming(ctx, "get_file from", remote_path), os.fdopen(fd, "wb") as out:
            async with ctx.open_stream(remote.read_file, remote_path) as items:
                remote_mode, total, mtime = await items.receive()
                async for data in items:
                    await trio.to_thread.run_sync(out.write, data)
                    done += len(data)
                    if progress is not None:
                        progress(done, total)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, remote_mode if mode is None else mode)
        os.utime(temp, (mtime, mtime))
        os.replace(temp, local)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    return done


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
