"""The child's side of file transfers: reading a file as a stream, writing one atomically.

A file is written beside its target under a temporary name and renamed over the target only
when complete, with its mode and modification time set first: a reader of the target sees the
old file or the new one, never part of one.  A transfer that is abandoned (the master's caller
cancelled, the connection died, the context ended) removes its temporary file.
"""

from __future__ import annotations

import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Iterator, List, Optional, Tuple

CHUNK = 1024 * 1024

#: Temporary files being written, by the token returned to the master: (fd, temp path, target).
_writing: Dict[str, Tuple[int, str, str]] = {}
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
    """Yield ``(mode, size, mtime)``, then the file's bytes in chunks."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError("%s is not a regular file" % path)
        yield (stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime)
        while True:
            data = f.read(chunk)
            if not data:
                return
            yield data


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
    _writing[temp] = (fd, temp, path)
    return temp


def write_chunks(token: str, offset: int, chunks: List[bytes]) -> int:
    """Write ``chunks`` one after another from byte ``offset`` of the file; the number of
    bytes written.  The offset makes the order of calls irrelevant: the master keeps more
    than one of them in flight."""
    fd = _writing[token][0]
    total = 0
    for data in chunks:
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, offset + total)
            view = view[n:]
            total += n
    return total


def commit_write(token: str, mode: int, mtime: Optional[float]) -> None:
    """Finish: flush to disk, set mode and mtime, rename over the target."""
    fd, temp, path = _writing.pop(token)
    try:
        os.fsync(fd)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    try:
        if mtime is not None:
            os.utime(temp, (mtime, mtime))
        os.replace(temp, path)
    except BaseException:
        _unlink(temp)
        raise


def abort_write(token: str) -> None:
    """Give up: remove the temporary file."""
    entry = _writing.pop(token, None)
    if entry is not None:
        try:
            os.close(entry[0])
        finally:
            _unlink(entry[1])


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
