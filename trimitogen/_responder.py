"""The master's answer to a child's module requests: :class:`ModuleResponder`."""

from __future__ import annotations

import importlib.util
import logging
import marshal
import os
import re
import stat
import sys
import sysconfig
import time
import types
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec, PathFinder

from .core.importer import MAIN_ALIAS, ModulePolicy
from .core.protocol import DEFAULT_MAX_MESSAGE_SIZE
from .core.resources import refused, request_refusal

log = logging.getLogger("trimitogen.importer")

#: (name, found, origin, is_package, source, code, reason), as core/importer.py reads it.
Record = tuple[str, bool, str, bool, bytes, bytes, str]

_STDLIB_DIRS = tuple(
    os.path.realpath(p)
    for p in {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]}
)
_SITE_DIRS = tuple(
    os.path.realpath(p)
    for p in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
)


@dataclass(frozen=True)
class ImportStats:
    """Traffic caused by a context's module requests, as seen by the master."""

    #: Requests received: one per module the child could not import itself and did not already
    #: have from an earlier answer (related modules are sent ahead, unasked).
    requests: int = 0
    #: Modules sent, including related modules sent ahead of a request.
    modules_sent: int = 0
    #: Bytes of the encoded answers (source, compiled code and their framing).
    bytes_sent: int = 0
    #: Seconds the master spent finding, reading and compiling what it sent.
    seconds: float = 0.0
    #: Files of package data sent (``importlib.resources``, ``pkgutil.get_data``, ...).
    resources_sent: int = 0
    #: Bytes of the encoded answers to package data requests.
    resource_bytes_sent: int = 0


@dataclass
class _Module:
    name: str
    found: bool
    origin: str = ""
    is_package: bool = False
    source: bytes = b""
    code: bytes = b""
    reason: str = ""
    related: tuple[str, ...] = ()
    search_path: tuple[str, ...] = ()
    stamp: tuple[str, int, int] | None = None

    def record(self, with_code: bool) -> Record:
        code = self.code if with_code else b""
        return (self.name, self.found, self.origin, self.is_package, self.source, code, self.reason)


def _is_stdlib(name: str, path: str | None) -> bool:
    top = name.partition(".")[0]
    if top in sys.stdlib_module_names:
        return True
    if path is None:
        return False
    real = os.path.realpath(path)
    in_stdlib = any(real.startswith(d + os.sep) for d in _STDLIB_DIRS)
    return in_stdlib and not any(real.startswith(d + os.sep) for d in _SITE_DIRS)


#: Import statements, found by a scan of the source text.  Cheap, and good enough for what it is
#: for: guessing which modules a child will ask for next (anything missed is simply asked for).
_IMPORT_RE = re.compile(
    r"^[ \t]*(?:from[ \t]+(\.*)([\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^#\n]*)"
    r"|import[ \t]+([^#\n]*))",
    re.MULTILINE,
)


def _names(clause: str) -> list[str]:
    """``a.b as c, d`` (or a parenthesised, multi-line list) -> ``["a.b", "d"]``."""
    names = []
    for item in clause.strip("()\\ \t\r\n").replace("\\\n", " ").split(","):
        word = item.split(" as ")[0].strip(" \t\r\n()\\")
        if word and word != "*" and all(part.isidentifier() for part in word.split(".")):
            names.append(word)
    return names


def imported_names(text: str, name: str, is_package: bool) -> set[str]:
    """Absolute names a module's import statements may load (modules or their attributes)."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for dots, module, imported, plain in _IMPORT_RE.findall(text):
        if plain:
            found.update(_names(plain))
            continue
        if dots:
            parts = package.split(".")
            if len(dots) - 1 >= len(parts):
                continue
            base = ".".join(parts[: len(parts) - (len(dots) - 1)])
            module = base + "." + module if module else base
        elif not module:
            continue
        found.add(module)
        found.update(module + "." + word for word in _names(imported))
    return found


def _retarget(code: types.CodeType, filename: str) -> types.CodeType:
    """``code`` with every nested code object's file name set to ``filename``."""
    consts = tuple(
        _retarget(const, filename) if isinstance(const, types.CodeType) else const
        for const in code.co_consts
    )
    return code.replace(co_filename=filename, co_consts=consts)


def _file_stamp(spec: ModuleSpec | None) -> tuple[str, int, int] | None:
    """The file a spec points at, with its mtime and size (None if it is not a plain file)."""
    path = spec.origin if spec is not None and spec.has_location else None
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (path, st.st_mtime_ns, st.st_size)


def _find_submodule(name: str, path: list[str]) -> ModuleSpec | None:
    """The spec of submodule ``name`` of a package whose search path is ``path``."""
    try:
        return PathFinder.find_spec(name, path)
    except KeyError:
        # Python's path finder reads the parent *module* to build a namespace package's path,
        # and the master may not have imported it (a namespace package inside another).  It
        # only gets that far when no entry holds a module or regular package of that name, so
        # the portions are the directories of that name.
        last = name.rpartition(".")[2]
        portions = [os.path.join(e, last) for e in path if os.path.isdir(os.path.join(e, last))]
        if not portions:
            return None
        spec = ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = portions
        return spec


def _is_namespace(spec: ModuleSpec) -> bool:
    """Whether ``spec`` is a namespace package's (found by the path search, no loader yet, or
    importlib's own namespace loader once imported)."""
    return spec.loader is None or type(spec.loader).__name__ in (
        "NamespaceLoader",
        "_NamespaceLoader",
    )


def _parents(name: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b"]``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


#: Longest module name the responder looks up (anything longer is not a real module).
MAX_NAME = 512

#: (package, path, kind, data, names, reason), as core/resources.py reads it.
ResourceAnswer = tuple[str, str, str, bytes, list[str], str]

#: Room left in a message for what travels beside a file's content.
_RESOURCE_OVERHEAD = 1024 * 1024

#: Most entries of one directory listing sent.
MAX_ENTRIES = 10_000


class ModuleResponder:
    """Finds, reads and compiles modules for children, caching what it learns.

    One responder serves every context of the process.  It never serves the standard library
    (children have their own), C extensions (they must be installed where they run), or modules
    a context's :class:`ModulePolicy` refuses.
    """

    def __init__(self) -> None:
        self._cache: dict[str, _Module] = {}
        #: Ship compiled code to children whose bytecode format matches (they skip compiling).
        #: Turn off to send only source, e.g. to measure what the compiled code saves.
        self.send_code = True
        #: Package data files read: (package, path) -> (file, mtime, size) and the answer.
        self._resources: dict[tuple[str, str], tuple[tuple[str, int, int], ResourceAnswer]] = {}
        #: Largest package data file sent, in bytes: what fits in the largest message a context
        #: accepts, with room for the rest of the answer.
        self.max_resource_size = DEFAULT_MAX_MESSAGE_SIZE - _RESOURCE_OVERHEAD

    def _find(self, name: str) -> _Module:
        """The module ``name`` as found now: cached while its file is the same and unchanged."""
        cached = self._cache.get(name)
        if cached is not None and cached.stamp == self._stamp(name):
            return cached
        module = self._load(name)
        if module.found and module.stamp is not None:
            self._cache[name] = module
        else:
            self._cache.pop(name, None)
        return module

    def _stamp(self, name: str) -> tuple[str, int, int] | None:
        """Which file provides ``name`` and its mtime and size (None if not a plain file)."""
        try:
            spec = self._load_main_spec() if name == MAIN_ALIAS else self._spec(name)
        except (ImportError, ValueError):
            return None
        return _file_stamp(spec)

    @staticmethod
    def _load_main_spec() -> ModuleSpec | None:
        path = getattr(sys.modules.get("__main__"), "__file__", None)
        if path is None:
            return None
        return importlib.util.spec_from_file_location("__main__", path)

    def _spec(self, name: str) -> ModuleSpec | None:
        """Find ``name`` without importing anything new into the master."""
        module = sys.modules.get(name)
        spec = getattr(module, "__spec__", None)
        # A module may have put another object under its name at import (sys.modules[__name__]
        # = ...): that object's spec describes something else, so the file is searched for.
        if isinstance(spec, ModuleSpec) and spec.name == name:
            return spec
        parent = name.rpartition(".")[0]
        if not parent:
            # The plain path search first: other finders on the master's meta path may do
            # things when asked (setuptools' distutils shim imports modules into the master).
            return PathFinder.find_spec(name) or importlib.util.find_spec(name)
        found = self._find(parent)
        if not (found.found and found.is_package):
            return None
        return _find_submodule(name, list(found.search_path))

    def _load(self, name: str) -> _Module:
        if name == MAIN_ALIAS:
            return self._load_main()
        if len(name) > MAX_NAME or not all(part.isidentifier() for part in name.split(".")):
            return _Module(name, False, reason="it is not a module name")
        if name.partition(".")[0] in sys.stdlib_module_names:
            # Decided before any finder runs: asking finders has side effects for some names.
            return _Module(name, False, reason="it is in the standard library, which is not sent")
        try:
            return self._load_found(name)
        except Exception as exc:
            # A file the master cannot read or decode must not break the master's side.
            return _Module(name, False, reason="the master cannot load it (%r)" % (exc,))

    def _load_found(self, name: str) -> _Module:
        try:
            spec = self._spec(name)
        except (ImportError, ValueError) as exc:
            return _Module(name, False, reason="the master cannot find it either (%s)" % exc)
        if spec is None:
            return _Module(name, False, reason="the master cannot find it either")
        origin = spec.origin
        if _is_stdlib(name, origin if spec.has_location else None):
            return _Module(name, False, reason="it is in the standard library, which is not sent")
        is_package = spec.submodule_search_locations is not None
        search_path = tuple(spec.submodule_search_locations or ())
        if origin is None or origin == "namespace" or not spec.has_location:
            if not _is_namespace(spec):
                # Made at run time by a finder of the package's own (six.moves): the child's
                # copy of that finder makes it there too, once the package is imported.
                return _Module(
                    name,
                    False,
                    reason="it is made at run time by %s, not read from a file"
                    % type(spec.loader).__qualname__,
                )
            if is_package:  # a namespace package: an empty package in the child
                return _Module(
                    name,
                    True,
                    "namespace:" + name,
                    True,
                    zlib.compress(b""),
                    search_path=search_path,
                )
            return _Module(name, False, reason="it is built into the master's interpreter")
        loader = spec.loader
        get_source = getattr(loader, "get_source", None)
        try:
            text = get_source(name) if get_source is not None else None
        except (ImportError, OSError) as exc:
            return _Module(name, False, reason="its source could not be read (%s)" % exc)
        if text is None:
            return _Module(
                name,
                False,
                reason="it is a compiled extension (%s); install it where the child runs" % origin,
            )
        get_code = getattr(loader, "get_code", None)
        module = self._from_source(name, origin, is_package, text, get_code)
        module.search_path = search_path
        module.stamp = _file_stamp(spec)
        return module

    def _load_main(self) -> _Module:
        main = sys.modules.get("__main__")
        path = getattr(main, "__file__", None)
        if path is None or not os.path.isfile(path):
            return _Module(MAIN_ALIAS, False, reason="the master's __main__ has no source file")
        with open(path, "rb") as f:
            text = importlib.util.decode_source(f.read())
        module = self._from_source(MAIN_ALIAS, path, False, text)
        module.stamp = self._stamp(MAIN_ALIAS)
        return module

    def _from_source(
        self,
        name: str,
        path: str,
        is_package: bool,
        text: str,
        get_code: Callable[[str], types.CodeType | None] | None = None,
    ) -> _Module:
        """Source and compiled code (compressed), and the names the module imports.

        The compiled code comes from the master's own bytecode cache when its loader has one
        (``get_code``), which is far cheaper than compiling; file names inside it are rewritten to
        ``master:<path>`` so tracebacks in the child say where the code came from.
        """
        origin = "master:" + path
        source = text.encode("utf-8")
        try:
            code = get_code(name) if get_code is not None else None
            if code is None:
                code = compile(source, origin, "exec", dont_inherit=True)
            code_bytes = zlib.compress(marshal.dumps(_retarget(code, origin)), 6)
        except (SyntaxError, ValueError):
            # Sent as source only: compiling it in the child raises the same error there.
            code_bytes = b""
        related = tuple(sorted(imported_names(text, name, is_package)))
        compressed = zlib.compress(source, 6)
        return _Module(name, True, origin, is_package, compressed, code_bytes, related=related)

    def _closure(self, name: str) -> list[_Module]:
        """The module and, within its top-level package, what it imports, transitively."""
        top = name.partition(".")[0]
        order = [self._find(name)]
        seen = {name}
        queue = [*order[0].related, *_parents(name)]
        while queue:
            other = queue.pop()
            if other in seen or other.partition(".")[0] != top:
                continue
            seen.add(other)
            module = self._find(other)
            if module.found:
                order.append(module)
                # A module's parent packages are imported before it: send them along.
                queue.extend(module.related)
                queue.extend(_parents(other))
        return order

    def answer(
        self,
        name: str,
        policy: ModulePolicy,
        already_sent: set[str],
        with_code: bool,
    ) -> tuple[list[Record], float]:
        """Records answering a request for ``name``; marks them in ``already_sent``."""
        started = time.perf_counter()
        refusal = policy.refusal(name)
        if refusal is not None:
            records = [_Module(name, False, reason=refusal).record(False)]
        else:
            records = []
            for module in self._closure(name):
                if module.name != name and (
                    module.name in already_sent or policy.refusal(module.name) is not None
                ):
                    continue
                records.append(module.record(with_code and self.send_code))
                if module.found:
                    already_sent.add(module.name)
        return records, time.perf_counter() - started

    # Package data ------------------------------------------------------------------------
    def resource(
        self, package: str, path: str, policy: ModulePolicy, already_sent: set[str]
    ) -> tuple[ResourceAnswer, float]:
        """The answer to a context's request for ``path`` of ``package`` (see
        core/resources.py): only inside the directory of a package that context was sent."""
        started = time.perf_counter()
        refusal = request_refusal(policy, already_sent, package, path)
        if refusal is not None:
            answer = refused(package, path, refusal)
        else:
            try:
                answer = self._read_resource(package, path)
            except Exception as exc:
                # A file the master cannot read must not break the master's side.
                answer = refused(package, path, "the master cannot read it (%r)" % (exc,))
        return answer, time.perf_counter() - started

    def _read_resource(self, package: str, path: str) -> ResourceAnswer:
        module = self._find(package)
        if not (module.found and module.is_package):
            return refused(package, path, "it is not a package the master serves")
        parts = path.split("/") if path else []
        for directory in module.search_path:
            base = os.path.realpath(directory)
            real = os.path.realpath(os.path.join(base, *parts))
            if real != base and not real.startswith(base + os.sep):
                # A symbolic link inside the package's directory that leads out of it.
                return refused(package, path, "it leads outside the package's directory")
            if os.path.isdir(real):
                return self._listing(package, path, real)
            try:
                return self._file(package, path, real)
            except (FileNotFoundError, NotADirectoryError):
                continue  # a namespace package's next portion may have it
        return (package, path, "missing", b"", [], "the package has no such file")

    @staticmethod
    def _listing(package: str, path: str, real: str) -> ResourceAnswer:
        with os.scandir(real) as entries:
            names = sorted(e.name + "/" if e.is_dir() else e.name for e in entries)
        if len(names) > MAX_ENTRIES:
            reason = "the directory has %d entries, more than the %d served" % (
                len(names),
                MAX_ENTRIES,
            )
            return refused(package, path, reason)
        return (package, path, "dir", b"", names, "")

    def _file(self, package: str, path: str, real: str) -> ResourceAnswer:
        # Not blocking: a FIFO put in the package's directory must not hang the master.
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return refused(package, path, "it is not a regular file")
            limit = self.max_resource_size
            if st.st_size > limit:
                return refused(package, path, _too_big(st.st_size, limit))
            stamp = (real, st.st_mtime_ns, st.st_size)
            cached = self._resources.get((package, path))
            if cached is not None and cached[0] == stamp:
                return cached[1]
            data = f.read(limit + 1)
        if len(data) > limit:  # it grew since fstat()
            return refused(package, path, _too_big(len(data), limit))
        answer: ResourceAnswer = (package, path, "file", zlib.compress(data, 6), [], "")
        self._resources[(package, path)] = (stamp, answer)
        return answer


def _too_big(size: int, limit: int) -> str:
    return (
        "it is %d bytes, more than the %d bytes of package data one message may carry; install "
        "the package where the context runs" % (size, limit)
    )


def module_names(names: Sequence[str] | str | None) -> tuple[str, ...] | None:
    """Normalise a user's prefix list (one name or many) into a tuple."""
    if names is None:
        return None
    if isinstance(names, str):
        return (names,)
    return tuple(names)
