"""Package data over the wire: the files that ``importlib.resources``, ``pkgutil.get_data`` and
the like read from a package the child imported from its parent.

A module the child received has its parent's :class:`~.importer.Importer` as loader, so reads of
the package's data come to the importer too, and from there to :class:`ServedResources`, which
asks the parent with a GET_RESOURCE ``(package, path)`` and waits for the LOAD_RESOURCE answer::

    (package, path, kind, data, names, reason)

``path`` is ``/``-separated and relative to the package's directory (``""`` is the directory
itself).  ``kind`` is ``file`` (``data``: the content, zlib-compressed), ``dir`` (``names``: its
entries, a directory's name ending in ``/``), ``missing`` or ``refused`` (``reason`` says why).

The rules of what may be served are :func:`request_refusal`'s, applied by the master and by every
intermediate: only packages sent to the asking context, only what its module policy allows, and
only paths inside the package's directory.

Some readers need a real file (``certifi.where()`` hands a path to OpenSSL): those get a copy in
a directory private to this context (mode 0700, made on first use), removed when the context's
process exits.  A process killed by force (SIGKILL) cannot remove it.

This module is shipped with the runtime but only compiled when a child first reads package data.
"""

from __future__ import annotations

import _thread
import contextlib
import errno
import io
import os
import sys
import zlib

from .errors import LatchError
from .latch import Latch
from .messages import GetResource
from .protocol import HANDLE_GET_RESOURCE, Message

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Iterator, List, Optional, Tuple

    Answer = Tuple[str, str, str, bytes, List[str], str]

#: Longest resource path served, in characters.
MAX_PATH = 1024


def path_refusal(path: str) -> Optional[str]:
    """Why ``path`` (relative to a package's directory) is not a path that is served, or None."""
    if len(path) > MAX_PATH:
        return "its path is longer than %d characters" % MAX_PATH
    if path == "":
        return None
    for part in path.split("/"):
        if part in ("", ".", ".."):
            return (
                "its path %r has an empty, '.' or '..' part: only files inside the package's "
                "directory are served, named relative to it" % path
            )
        if "\\" in part or "\x00" in part:
            return "its path %r holds a backslash or a NUL character" % path
    return None


def request_refusal(policy: Any, sent: Any, package: str, path: str) -> Optional[str]:
    """Why a context with module ``policy``, sent the modules ``sent``, may not read ``path`` of
    ``package``, or None.  The master and every intermediate ask this before serving."""
    refusal = path_refusal(path)
    if refusal is not None:
        return refusal
    refusal = policy.refusal(package)
    if refusal is not None:
        return "the package %r may not be sent to this context: %s" % (package, refusal)
    if package not in sent:
        return "the package %r was not sent to this context, so neither is its data" % package
    return None


def refused(package: str, path: str, reason: str) -> Answer:
    """The answer that ``path`` of ``package`` is not served, and why."""
    return (package, path, "refused", b"", [], reason)


class ServedResources:
    """The package data one context reads from its parent: requests, answers, local copies."""

    def __init__(self, importer: Any) -> None:
        self._importer = importer
        self._lock = _thread.allocate_lock()
        self._answers: Dict[Tuple[str, str], Answer] = {}
        self._waiting: Dict[Tuple[str, str], List[Latch]] = {}
        #: Copies written for readers that need a real file: (package, path) -> local path.
        self._copies: Dict[Tuple[str, str], str] = {}
        self._directory: Optional[str] = None
        self._directory_pid = 0
        self.closed = False
        register_as_file()

    # Called by the I/O thread ----------------------------------------------------------------
    def on_load_resource(self, answer: Answer) -> None:
        key = (answer[0], answer[1])
        with self._lock:
            latches = self._waiting.pop(key, None)
            if latches is None:
                return  # asked by a child of this context, not by this one
            self._answers[key] = answer
        for latch in latches:
            latch.put(answer)

    def close(self) -> None:
        """The parent is gone: fail every waiting and future request."""
        with self._lock:
            self.closed = True
            waiting, self._waiting = self._waiting, {}
        for latches in waiting.values():
            for latch in latches:
                latch.close()

    # Called by reading threads ---------------------------------------------------------------
    def _fetch(self, package: str, path: str) -> Answer:
        key = (package, path)
        with self._lock:
            cached = self._answers.get(key)
            if cached is not None:
                return cached
            if self.closed:
                raise _error(errno.ENOTCONN, package, path, "the parent context is gone")
            latch = Latch()
            first = key not in self._waiting
            self._waiting.setdefault(key, []).append(latch)
        importer = self._importer
        if first:
            importer.send(
                Message(
                    importer.parent_id,
                    importer.context_id,
                    HANDLE_GET_RESOURCE,
                    0,
                    GetResource.pack(package, path),
                )
            )
        try:
            answer: Answer = importer.wait(latch)
        except LatchError:
            raise _error(errno.ENOTCONN, package, path, "the parent context disconnected") from None
        return answer

    def read(self, package: str, path: str) -> bytes:
        """The content of file ``path`` of ``package``; OSError if there is none to read."""
        answer = self._fetch(package, path)
        if answer[2] == "file":
            return zlib.decompress(answer[3])
        if answer[2] == "dir":
            raise _error(errno.EISDIR, package, path, "it is a directory")
        raise _failure(answer)

    def listing(self, package: str, path: str) -> List[str]:
        """The entries of directory ``path`` of ``package`` (directories end in ``/``)."""
        answer = self._fetch(package, path)
        if answer[2] == "dir":
            return list(answer[4])
        if answer[2] == "file":
            raise _error(errno.ENOTDIR, package, path, "it is a file")
        raise _failure(answer)

    def kind(self, package: str, path: str) -> str:
        """``file``, ``dir`` or ``""`` (neither, or not served), from the parent directory's
        listing: asking for the file itself would fetch its content."""
        if path == "":
            return "dir"
        parent, _, name = path.rpartition("/")
        try:
            names = self.listing(package, parent)
        except OSError:
            return ""
        if name + "/" in names:
            return "dir"
        return "file" if name in names else ""

    def local_copy(self, package: str, path: str) -> str:
        """A real file (or directory tree) holding ``path`` of ``package``, in this context's
        private directory; written once, removed when the process exits."""
        key = (package, path)
        with self._lock:
            done = self._copies.get(key)
            base = self._private_directory()
        if done is not None:
            return done
        target = os.path.join(base, package, *path.split("/"))
        if self.kind(package, path) == "dir":
            os.makedirs(target, mode=0o700, exist_ok=True)
            prefix = path + "/" if path else ""
            for name in self.listing(package, path):
                self.local_copy(package, prefix + name.rstrip("/"))
        else:
            data = self.read(package, path)
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            # Written aside and renamed: another thread may be reading the same copy.
            partial = "%s.%d.partial" % (target, _thread.get_ident())
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(partial, target)
        with self._lock:
            self._copies[key] = target
        return target

    def _private_directory(self) -> str:
        # A forked copy of this process must not write into, nor remove, the original's.
        if self._directory is None or self._directory_pid != os.getpid():
            import atexit
            import tempfile

            self._directory = tempfile.mkdtemp(prefix="trimitogen-resources-")
            self._directory_pid = os.getpid()
            self._copies = {}
            atexit.register(self.remove_copies)
        return self._directory

    def remove_copies(self) -> None:
        """Remove the local copies (at exit; only in the process that wrote them)."""
        directory = self._directory
        if directory is not None and self._directory_pid == os.getpid():
            import shutil

            self._directory = None
            shutil.rmtree(directory, ignore_errors=True)


def _error(code: int, package: str, path: str, reason: str) -> OSError:
    where = (
        "%r of package %r" % (path, package) if path else "the directory of package %r" % (package,)
    )
    return OSError(code, "cannot read %s from the parent context: %s" % (where, reason))


def _failure(answer: Answer) -> OSError:
    package, path, kind, _data, _names, reason = answer
    code = errno.ENOENT if kind == "missing" else errno.EACCES
    # OSError(errno, ...) builds the matching subclass: FileNotFoundError, PermissionError.
    return _error(code, package, path, reason)


class ServedPath:
    """A file or directory of a package's data as the parent serves it: what
    ``importlib.resources.files()`` returns for a package imported over the wire (it has the
    methods of ``importlib.resources.abc.Traversable``)."""

    def __init__(self, store: ServedResources, package: str, path: str) -> None:
        self._store = store
        self.package = package
        self.path = path

    def __repr__(self) -> str:
        return "ServedPath(%r, %r)" % (self.package, self.path)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, ServedPath) and (other.package, other.path) == (
            self.package,
            self.path,
        )

    def __hash__(self) -> int:
        return hash((self.package, self.path))

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2] or self.package.rpartition(".")[2]

    def joinpath(self, *descendants: str) -> ServedPath:
        # Kept as given: a '..' or an absolute part is refused by the parent, not resolved here.
        parts = [self.path] if self.path else []
        parts.extend(str(d) for d in descendants)
        return ServedPath(self._store, self.package, "/".join(parts))

    def __truediv__(self, child: str) -> ServedPath:
        return self.joinpath(child)

    def is_dir(self) -> bool:
        return self._store.kind(self.package, self.path) == "dir"

    def is_file(self) -> bool:
        return self._store.kind(self.package, self.path) == "file"

    def iterdir(self) -> Iterator[ServedPath]:
        for name in self._store.listing(self.package, self.path):
            yield self.joinpath(name.rstrip("/"))

    def read_bytes(self) -> bytes:
        return self._store.read(self.package, self.path)

    def read_text(self, encoding: Optional[str] = None, errors: Optional[str] = None) -> str:
        with self.open("r", encoding=encoding, errors=errors) as f:
            text: str = f.read()
        return text

    def open(self, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if mode == "rb":
            return io.BytesIO(self.read_bytes())
        if mode == "r":
            return io.TextIOWrapper(io.BytesIO(self.read_bytes()), *args, **kwargs)
        raise ValueError("package data served by the parent is read-only: mode %r" % (mode,))


class ServedReader:
    """The resource reader of one package imported over the wire: the ``files()`` of Python
    3.10+ and the older ``open_resource``/``resource_path``/``is_resource``/``contents``."""

    def __init__(self, store: ServedResources, package: str) -> None:
        self._store = store
        self.package = package

    def files(self) -> ServedPath:
        return ServedPath(self._store, self.package, "")

    def open_resource(self, resource: str) -> Any:
        return io.BytesIO(self._store.read(self.package, resource))

    def resource_path(self, resource: str) -> str:
        return self._store.local_copy(self.package, resource)

    def is_resource(self, name: str) -> bool:
        return self._store.kind(self.package, name) == "file"

    def contents(self) -> Iterator[str]:
        return iter([name.rstrip("/") for name in self._store.listing(self.package, "")])


@contextlib.contextmanager
def _as_local_file(path: ServedPath) -> Any:
    import pathlib

    yield pathlib.Path(path._store.local_copy(path.package, path.path))


_registered: List[Any] = []


def register_as_file() -> None:
    """Make ``importlib.resources.as_file()`` give served data as a copy in the private
    directory, removed at exit, rather than as a temporary file left behind if the process
    ends without unwinding (Python 3.9+; 3.8 asks the reader's ``resource_path``)."""
    module = sys.modules.get("importlib.resources")
    as_file = getattr(module, "as_file", None)
    register = getattr(as_file, "register", None)
    if register is not None and as_file not in _registered:
        register(ServedPath, _as_local_file)
        _registered.append(as_file)


class ResourceForwarder:
    """Serves the resource requests of an intermediate context's children: each answer it gets
    from its parent is kept, and a request is asked upward once, however many children wait."""

    def __init__(self, send_up: Any) -> None:
        self._send_up = send_up
        self._cache: Dict[Tuple[str, str], Answer] = {}
        self._waiting: Dict[Tuple[str, str], List[Any]] = {}

    def request(self, child: Any, package: str, path: str) -> Optional[Answer]:
        """The answer to ``child``'s request now, or None after asking upward."""
        refusal = request_refusal(child.module_policy, child.modules_sent, package, path)
        if refusal is not None:
            return refused(package, path, refusal)
        key = (package, path)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        first = key not in self._waiting
        self._waiting.setdefault(key, []).append(child)
        if first:
            self._send_up(package, path)
        return None

    def on_load_resource(self, answer: Answer) -> List[Tuple[Any, Answer]]:
        """Cache ``answer``; return (child, answer) for the children waiting for it."""
        key = (answer[0], answer[1])
        self._cache[key] = answer
        return [(child, answer) for child in self._waiting.pop(key, ())]
