"""The child's side of file transfers: reading a file as a stream, writing one atomically.

A file is written beside its target under a temporary name and renamed over the target only
when complete, with its mode and modification time set first: a reader of the target sees the
old file or the new one, never part of one.  A transfer that is abandoned (the master's caller
cancelled, the connection died, the context ended) removes its temporary file.
"""

from __future__ import annotations

import _thread
import os
import stat

from .batching import Raw
from .readers import BufferPool

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Iterator, Optional, Tuple

CHUNK = 1024 * 1024
#: Read buffers kept for use again: a window's worth (4 MiB) is on its way at most.
READ_BUFFERS = 6


class _Partial:
    """A temporary file being written: its descriptor (-1 once closed), its path, the target.
    The lock makes closing wait for a write under way, so nothing is written to a descriptor
    after it was closed (and perhaps reused)."""

    __slots__ = ("fd", "lock", "path", "temp")

    def __init__(self, fd: int, temp: str, path: str) -> None:
        self.fd = fd
        self.temp = temp
        self.path = path
        self.lock = _thread.allocate_lock()

    def close(self) -> None:
        with self.lock:
            fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


#: Temporary files being written, by the token returned to the master.
_writing: Dict[str, _Partial] = {}
_cleanup_registered = False


def file_info(path: str) -> Optional[Tuple[int, int, float]]:
    """(mode, size, mtime) of a regular file, or None if there is none at ``path``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise IsADirectoryError("%s is not a regular file" % path)
    return (stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime)


def read_file(path: str, chunk: int = CHUNK) -> Iterator[Any]:
    """Yield ``(mode, size, mtime)``, then the file's bytes in raw chunks, each read into a
    buffer that is used again once the chunk is written to the master."""
    with open(path, "rb", buffering=0) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError("%s is not a regular file" % path)
        yield (stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime)
        pool = BufferPool(chunk, READ_BUFFERS)
        while True:
            buffer = pool.take()
            n = f.readinto(buffer)
            if not n:
                return
            yield Raw(buffer[:n])
            del buffer


def begin_write(path: str) -> str:
    """Open a temporary file beside ``path``; the token for the calls below."""
    import tempfile

    global _cleanup_registered
    if not _cleanup_registered:
        import atexit

        atexit.register(abort_all)
        _cleanup_registered = True
    directory, name = os.path.split(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError("%s is a directory" % path)
    fd, temp = tempfile.mkstemp(prefix="." + name + ".", suffix=".part", dir=directory)
    _writing[temp] = _Partial(fd, temp, path)
    return temp


def receive_file(channel: Any, token: str) -> None:
    """Write the raw chunks that arrive on ``channel`` to the file of ``token``, straight from
    the receive buffers, until the master's end of file; then send the number of bytes written."""
    channel.keeps_views = True
    partial = _writing[token]
    total = 0
    for data in channel:
        view = memoryview(data)
        with partial.lock:
            if partial.fd < 0:
                raise OSError("the transfer to %s was abandoned" % partial.path)
            while view:
                n = os.write(partial.fd, view)
                view = view[n:]
                total += n
        del data, view  # the receive buffer may be used again
    channel.send(total)


def commit_write(token: str, mode: int, mtime: Optional[float]) -> None:
    """Finish: flush to disk, set mode and mtime, rename over the target.  Interrupted (a
    cancellation) or failed before the rename, it removes the temporary file."""
    partial = _writing.pop(token)
    try:
        try:
            with partial.lock:
                os.fsync(partial.fd)
                os.fchmod(partial.fd, mode)
        finally:
            partial.close()
        if mtime is not None:
            os.utime(partial.temp, (mtime, mtime))
        os.replace(partial.temp, partial.path)
    except BaseException:
        _unlink(partial.temp)  # nothing, if the rename was done
        raise


def abort_write(token: str) -> None:
    """Give up: remove the temporary file."""
    partial = _writing.pop(token, None)
    if partial is not None:
        try:
            partial.close()
        finally:
            _unlink(partial.temp)


def abort_all() -> None:
    for token in list(_writing):
        abort_write(token)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def tree_info(top: str) -> Dict[str, Tuple[int, int, float]]:
    """Every regular file under directory ``top``: relative path -> (mode, size, mtime)."""
    found: Dict[str, Tuple[int, int, float]] = {}
    if not os.path.isdir(top):
        return found
    for root, _dirs, files in os.walk(top):
        for name in files:
            full = os.path.join(root, name)
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode):
                found[os.path.relpath(full, top)] = (
                    stat.S_IMODE(st.st_mode),
                    st.st_size,
                    st.st_mtime,
                )
    return found


def file_digest(path: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for data in iter(lambda: f.read(CHUNK), b""):
            digest.update(data)
    return digest.hexdigest()


def make_dirs(path: str) -> None:
    os.makedirs(path, exist_ok=True)
