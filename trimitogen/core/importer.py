"""The child's importer: modules the child lacks are fetched from its parent.

:class:`Importer` sits at the end of ``sys.meta_path``, so the child's own modules (standard
library and anything installed) always win and only what would otherwise fail to import is
requested.  The parent answers with a list of records, the requested module plus modules it
will probably need next, which are kept until imported::

    (name, found, origin, is_package, source, code, reason)

``source`` is the module's text and ``code`` a marshalled code object when the master's bytecode
format matches ours (or ``b""``), both zlib-compressed; ``reason`` says why ``found`` is False.
"""

from __future__ import annotations

import _imp
import _thread
import errno
import marshal
import sys
import zlib

from .errors import LatchError
from .latch import Latch
from .messages import GetModule
from .protocol import HANDLE_GET_MODULE, Message

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Set, Tuple

    Record = Tuple[str, bool, str, bool, bytes, bytes, str]

#: Name under which the master's ``__main__`` script is imported, so that its
#: ``if __name__ == "__main__":`` block does not run in the child.
MAIN_ALIAS = "__trimitogen_main__"


class Importer:
    """A meta path finder and loader backed by the parent context."""

    def __init__(
        self,
        send: Callable[[Message], None],
        context_id: int,
        parent_id: int,
        never_ask: Any = frozenset(),
        before_wait: Callable[[], None] = lambda: None,
    ) -> None:
        #: Sends a message to the parent (also used by :mod:`.resources`).
        self.send = send
        #: Called before waiting for an answer, so that the answer will be read.
        self._before_wait = before_wait
        #: Top-level names not worth a round trip: the parent never sends the standard library
        #: (the child's own is found before this importer is asked), and probes for other
        #: platforms' modules ("msvcrt", Jython's "org") would each cost one.
        self.never_ask = never_ask
        self.context_id = context_id
        self.parent_id = parent_id
        self._lock = _thread.allocate_lock()
        self._records: Dict[str, Record] = {}
        self._waiting: Dict[str, List[Latch]] = {}
        self._sources: Dict[str, bytes] = {}
        #: Why the parent could not send a module, by name, for :meth:`explain`.
        self._reasons: Dict[str, str] = {}
        #: Directory (as in ``__file__``) of each package received -> its name, for get_data().
        self._package_dirs: Dict[str, str] = {}
        #: Package data read from the parent (see core/resources.py), made on first use.
        self.resources: Any = None
        #: Names of the modules this importer ran (a fork's children have them already).
        self.received: Set[str] = set()
        #: In a forked copy, the importer of the copy's own runtime (see hand_over).
        self._successor: Any = None
        self.closed = False

    def __repr__(self) -> str:
        return "Importer(parent=%d)" % (self.parent_id,)

    # Called by the I/O thread ----------------------------------------------------------------
    def on_load_module(self, records: List[Record]) -> None:
        with self._lock:
            for record in records:
                self._records[record[0]] = record
                for latch in self._waiting.pop(record[0], ()):
                    latch.put(record)

    def close(self) -> None:
        """The parent is gone: fail every waiting and future request."""
        with self._lock:
            self.closed = True
            waiting, self._waiting = self._waiting, {}
        for latches in waiting.values():
            for latch in latches:
                latch.close()
        if self.resources is not None:
            self.resources.close()

    def on_load_resource(self, answer: Any) -> None:
        if self.resources is not None:
            self.resources.on_load_resource(answer)

    # Called by importing threads -------------------------------------------------------------
    def _fetch(self, fullname: str) -> Record:
        with self._lock:
            cached = self._records.get(fullname)
            if cached is not None:
                return cached
            if self.closed:
                raise ImportError(
                    "cannot import %r: the parent context is gone" % fullname, name=fullname
                )
            latch = Latch()
            first = fullname not in self._waiting
            self._waiting.setdefault(fullname, []).append(latch)
        try:
            return self._ask(fullname, latch, first)
        except BaseException:
            # A cancelled call (trimitogen.Cancelled) stops waiting here: the next request for
            # the module must not wait for an answer to a request that was never sent.
            with self._lock:
                latches = self._waiting.get(fullname, [])
                if latch in latches:
                    latches.remove(latch)
                if not latches:
                    self._waiting.pop(fullname, None)
            raise

    def _ask(self, fullname: str, latch: Latch, first: bool) -> Record:
        if first:
            self.send(
                Message(
                    self.parent_id, self.context_id, HANDLE_GET_MODULE, 0, GetModule.pack(fullname)
                )
            )
        try:
            answer: Record = self.wait(latch)
        except LatchError:
            raise ImportError(
                "cannot import %r: the parent context disconnected" % fullname, name=fullname
            ) from None
        return answer

    def wait(self, latch: Latch) -> Any:
        """What the I/O thread puts in ``latch`` for a request sent to the parent."""
        self._before_wait()
        # importlib calls find_spec() holding its global import lock.  Keeping it while waiting
        # for the parent would stall every other thread that imports anything, the I/O thread
        # that must deliver the answer included, so it is released for the wait.
        released = False
        if _imp.lock_held():
            try:
                _imp.release_lock()
                released = True
            except RuntimeError:
                pass  # held by another thread, not this one
        try:
            return latch.get_sync()
        finally:
            if released:
                _imp.acquire_lock()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname.partition(".")[0] in self.never_ask:
            return None
        if self.closed and fullname not in self._records:
            return None
        _name, found, origin, is_package, _source, _code, reason = self._fetch(fullname)
        if not found:
            # Not found is None, never an exception: finders a package appends to the meta path
            # after this one (six does) must still be asked, and importlib.util.find_spec() must
            # answer None for a probe.  The reason is kept for the error report.
            self._reasons[fullname] = reason
            return None
        from importlib.machinery import ModuleSpec

        loader: Any = self
        spec = ModuleSpec(fullname, loader, origin=origin, is_package=is_package)
        spec.has_location = True
        return spec

    def explain(self, exc: BaseException) -> str:
        """``str(exc)``, with the parent's reason when ``exc`` is about a module it did not send."""
        message = str(exc)
        name = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
        reason = self._reasons.get(name) if isinstance(name, str) else None
        return message if reason is None else "%s: %s" % (message, reason)

    def create_module(self, spec: Any) -> Any:
        return None

    def exec_module(self, module: Any) -> None:
        name = module.__spec__.name
        with self._lock:
            record = self._records.pop(name)
        _name, _found, origin, is_package, source, code, _reason = record
        self._sources[name] = source
        self.received.add(name)
        module.__file__ = origin
        if is_package:
            module.__path__ = []
            if origin.startswith("master:"):
                self._package_dirs[origin.rpartition("/")[0]] = name
        if code:
            compiled = marshal.loads(zlib.decompress(code))
        else:
            try:
                compiled = compile(zlib.decompress(source), origin, "exec", dont_inherit=True)
            except SyntaxError as exc:
                # Often a module written for the master's newer Python: say which one runs here.
                here = "module %s from the master, and Python %s here" % (
                    name,
                    sys.version.split()[0],
                )
                exc.msg = "%s (%s)" % (exc.msg, here)
                raise
        try:
            exec(compiled, module.__dict__)
        except (Exception, SystemExit) as exc:
            if name != MAIN_ALIAS:
                raise
            raise ImportError(_main_failure(origin, exc, self.get_source(name)), name=name) from exc

    def get_source(self, fullname: str) -> Optional[str]:
        """Source text for tracebacks (``linecache`` asks for it lazily)."""
        source = self._sources.get(fullname)
        return None if source is None else zlib.decompress(source).decode("utf-8", "replace")

    def is_package(self, fullname: str) -> bool:
        module = sys.modules.get(fullname)
        return module is not None and hasattr(module, "__path__")

    # Package data (core/resources.py) --------------------------------------------------------
    def _served(self) -> Any:
        # Imported outside the lock: an import may consult this importer, which takes it.
        from .resources import ServedResources

        with self._lock:
            if self.resources is None:
                self.resources = ServedResources(self)
                if self.closed:
                    self.resources.close()
            return self.resources

    def hand_over(self, successor: Importer) -> None:
        """In a forked copy: modules imported before the fork keep this importer as their
        loader, but this one's parent is not the copy's; their package data is read through
        ``successor``, the copy's own importer."""
        self._successor = successor
        successor._package_dirs.update(self._package_dirs)
        successor.received.update(self.received)

    def get_resource_reader(self, fullname: str) -> Any:
        """The reader of ``importlib.resources`` for a package (or a module: its package's)."""
        if self._successor is not None:
            return self._successor.get_resource_reader(fullname)
        if not self.is_package(fullname):
            fullname = fullname.rpartition(".")[0]
            if not fullname:
                return None
        from .resources import ServedReader, register_as_file

        register_as_file()  # importlib.resources may have been imported after the first read
        return ServedReader(self._served(), fullname)

    def get_data(self, path: str) -> bytes:
        """A file of a package received, by the path ``pkgutil.get_data`` makes from its
        ``__file__`` (``master:<directory>/<resource>``)."""
        if self._successor is not None:
            return bytes(self._successor.get_data(path))
        best = ""
        for directory in self._package_dirs:
            if path.startswith(directory + "/") and len(directory) > len(best):
                best = directory
        if not best:
            raise FileNotFoundError(
                errno.ENOENT,
                "cannot read %s: it is not in the directory of a package this context "
                "received from its parent" % path,
            )
        return bytes(self._served().read(self._package_dirs[best], path[len(best) + 1 :]))

    def remove_files(self) -> None:
        """Remove the local copies of package data (see core/resources.py), if any."""
        if self.resources is not None:
            self.resources.remove_copies()


def _main_failure(origin: str, exc: BaseException, source: Optional[str]) -> str:
    """What happened when the master's script, imported here, failed in its top-level code."""
    where = ""
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == origin and code.co_name == "<module>":
            lines = (source or "").split("\n")
            line = lines[tb.tb_lineno - 1].strip() if tb.tb_lineno <= len(lines) else ""
            where = " at line %d (%s)" % (tb.tb_lineno, line)
        tb = tb.tb_next
    return (
        "the function called lives in the master's script %s, which this context imported as "
        "%s to find it; the script's top-level code then ran here and failed%s: %s: %s.  "
        "Start the script's work under 'if __name__ == \"__main__\":' (it does not run in "
        "other contexts)"
        % (origin.replace("master:", "", 1), MAIN_ALIAS, where, type(exc).__name__, exc)
    )


class ModulePolicy:
    """Which modules a context may receive, by dotted-name prefix.

    ``deny`` wins over ``allow``; ``allow=None`` allows every module that can be served.  The
    master applies it when serving a context, an intermediate when forwarding to its children.
    """

    __slots__ = ("allow", "deny")

    def __init__(self, deny: Any = (), allow: Any = None) -> None:
        self.deny: Tuple[str, ...] = tuple(deny)
        self.allow: Optional[Tuple[str, ...]] = None if allow is None else tuple(allow)

    def __repr__(self) -> str:
        return "ModulePolicy(deny=%r, allow=%r)" % (self.deny, self.allow)

    def __eq__(self, other: Any) -> bool:
        return type(other) is ModulePolicy and (self.deny, self.allow) == (other.deny, other.allow)

    def __hash__(self) -> int:
        return hash((self.deny, self.allow))

    @staticmethod
    def _matches(name: str, prefixes: Any) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    def refusal(self, name: str) -> Optional[str]:
        """Why module ``name`` may not be sent under this policy, or None."""
        if self._matches(name, self.deny):
            return "it is on this context's deny list"
        if self.allow is not None and not self._matches(name, self.allow):
            return "it is not on this context's allow list"
        return None


class ModuleForwarder:
    """Serves module requests of an intermediate context's children from what it received.

    Every module record the intermediate gets from its parent is kept; a child's request is
    answered from that cache when possible (with the cached modules of the same top-level package
    the child has not had yet, as the master would) and otherwise asked upward once, however many
    children wait for it.  Compiled code is only passed to children whose bytecode matches the
    master's.
    """

    def __init__(self, send_up: Callable[[str], None], master_magic: bytes) -> None:
        self._send_up = send_up
        self.master_magic = master_magic
        self._cache: Dict[str, Record] = {}
        self._waiting: Dict[str, List[Any]] = {}

    def on_load_module(self, records: List[Record]) -> List[Tuple[Any, List[Record]]]:
        """Cache ``records``; return (child, records) answers now possible for waiting children."""
        for record in records:
            self._cache[record[0]] = record
        answers = []
        for record in records:
            for child in self._waiting.pop(record[0], ()):
                answers.append((child, self.answer(child, record[0])))
        return answers

    def request(self, child: Any, name: str) -> Optional[List[Record]]:
        """Records answering ``child``'s request now, or None after asking upward."""
        refusal = child.module_policy.refusal(name)
        if refusal is not None:
            return [(name, False, "", False, b"", b"", refusal)]
        if name in self._cache:
            return self.answer(child, name)
        first = name not in self._waiting
        self._waiting.setdefault(name, []).append(child)
        if first:
            self._send_up(name)
        return None

    def answer(self, child: Any, name: str) -> List[Record]:
        top = name.partition(".")[0]
        names = [
            name,
            *sorted(
                other
                for other, record in self._cache.items()
                if other != name
                and record[1]
                and other.partition(".")[0] == top
                and other not in child.modules_sent
                and child.module_policy.refusal(other) is None
            ),
        ]
        with_code = child.magic == self.master_magic
        out = []
        for other in names:
            record = self._cache[other]
            if not with_code and record[5]:
                record = (*record[:5], b"", *record[6:])
            out.append(record)
            if record[1]:
                child.modules_sent.add(other)
        return out
