"""Framing and serialization, without I/O.

A frame is a fixed 24-byte header followed by a pickled body::

    magic u16 | version u8 | flags u8 | dst u32 | src u32 | handle u32 | reply_to u32 | length u32

``dst`` and ``src`` are context ids (the master is 0), ``handle`` says which receiver in ``dst``
gets the message and ``reply_to`` where an answer goes (0: no answer wanted).  The length is checked
against the receiver's limit as soon as the header is complete, before any body is buffered.

Bodies are pickles restricted in both directions: :func:`dumps` refuses to write any object that
would need a class to rebuild it (except ``complex``), and :func:`loads` refuses to resolve any
global outside a fixed allow-list, so a hostile peer cannot make the reader import or call anything.
Dates, decimals, enum members and the like travel as persistent ids of plain parts, rebuilt by
:mod:`trimitogen.core.values`.
"""

from __future__ import annotations

import _pickle
import io
import mmap
import struct
import sys

from .errors import StreamError
from .readers import MMAP_FLAGS, BodyReader, BufferPool, PartsReader

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Iterator, List, Optional, Set, Tuple


MAGIC = 0x746D  # b"tm"
VERSION = 1
HEADER = struct.Struct(">HBBIIIII")
HEADER_SIZE = HEADER.size

#: Default largest body a receiver accepts.  Large enough for a 128 MiB payload plus framing.
DEFAULT_MAX_MESSAGE_SIZE = 256 * 1024 * 1024

#: Context id of the master.
MASTER_ID = 0

# Well-known handles.  Reply handles are allocated from FIRST_REPLY_HANDLE upwards.
HANDLE_READY = 1  # child -> parent once the runtime is up: (pid, hexversion, bytecode magic)
HANDLE_CALL = 2  # parent -> child: (module, qualname, args, kwargs)
HANDLE_LOG = 3  # child -> parent: (kind, logger_name, levelno, text)
HANDLE_SHUTDOWN = 4  # parent -> child: no body
HANDLE_GET_MODULE = 5  # child -> parent: the name of a module the child cannot import itself
HANDLE_LOAD_MODULE = 6  # parent -> child: a list of module records (see core/importer.py)
HANDLE_SPAWN = 7  # master -> intermediate: start a child (a dict, see core/parent.py)
HANDLE_KILL = 8  # master -> intermediate: stop a child by force (its context id)
HANDLE_ADD_ROUTE = 9  # intermediate -> master: a context now exists below (its id)
HANDLE_DEL_ROUTE = 10  # intermediate -> master: contexts below are gone ([ids], reason)
HANDLE_CANCEL = 11  # master -> context: stop the call that expects its reply on this handle
HANDLE_OPEN_STREAM = 12  # master -> context: iterate a generator, items to the reply handle
HANDLE_CREDIT = 13  # master -> context: the consumer of a stream may take this much more
HANDLE_OPEN_CHANNEL = 14  # master -> context: run fn(channel end, *args), items both ways
HANDLE_GET_RESOURCE = 15  # child -> parent: (package, path) of package data (core/resources.py)
HANDLE_LOAD_RESOURCE = 16  # parent -> child: that data, a directory listing, or why not
FIRST_REPLY_HANDLE = 1000

#: Flag: the message could not be delivered; its body is the reason (a str).
FLAG_DEAD = 0x01
#: Flag: the body is one ``bytes`` item of a stream or channel as it is, not a pickle.  Byte
#: streams and file transfers send their bytes so: the receiver writes them out from where they
#: were read instead of unpickling a copy.  Only stream and channel handles accept it; a raw body
#: is bytes, so it cannot name anything to import or call.  (0x02 and 0x04: see :mod:`.parts`.)
FLAG_RAW = 0x08

#: The newest protocol every supported child reads (3.6 and 3.7 stop at 4); 5 is no faster here.
PICKLE_PROTOCOL = 4

#: Globals that a body may name.  set and frozenset have opcodes since protocol 4; they are listed
#: for peers that send older protocols.  bytearray is not: called with a number it allocates that
#: many bytes, which would let a tiny body take gigabytes (see _bytearray).
_ALLOWED_GLOBALS = frozenset(
    (
        ("builtins", "complex"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
    )
)


class Message:
    """One framed message; ``data`` is the still-encoded body."""

    __slots__ = ("data", "dst", "flags", "handle", "reply_to", "src")

    def __init__(
        self,
        dst: int,
        src: int,
        handle: int,
        reply_to: int = 0,
        data: Any = b"",
        flags: int = 0,
    ) -> None:
        self.dst = dst
        self.src = src
        self.handle = handle
        self.reply_to = reply_to
        self.flags = flags
        self.data = data

    def __repr__(self) -> str:
        return "Message(dst=%d, src=%d, handle=%d, reply_to=%d, flags=%#x, %d bytes)" % (
            self.dst,
            self.src,
            self.handle,
            self.reply_to,
            self.flags,
            len(self.data),
        )

    @property
    def is_dead(self) -> bool:
        return bool(self.flags & FLAG_DEAD)

    def header(self) -> bytes:
        return HEADER.pack(
            MAGIC,
            VERSION,
            self.flags,
            self.dst,
            self.src,
            self.handle,
            self.reply_to,
            len(self.data),
        )

    def frame_parts(self) -> List[Any]:
        """Header and body as separate buffers, for a gathered write without concatenation."""
        if type(self.data) is Body:
            return [self.header(), *self.data.parts]
        return [self.header(), self.data]

    def unpickle(self, may_import: bool = False) -> Any:
        return loads(self.data, may_import)


_PLAIN_SCALARS = frozenset((type(None), bool, int, float, complex, str, bytes, bytearray))
_PLAIN_CONTAINERS = frozenset((tuple, list, set, frozenset, dict))

#: Opcode READONLY_BUFFER: turns a buffer into a memoryview, which is not plain data.
_READONLY_BUFFER = b"\x98"


def _first_non_plain(obj: Any, is_value: Any = None) -> Any:
    """The first object inside ``obj`` that is not plain data, or ``_PLAIN`` if there is none.

    ``is_value(item)`` says which other objects are values that travel (they are not walked).
    """
    stack = [obj]
    seen = set()
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in _PLAIN_SCALARS:
            continue
        if kind not in _PLAIN_CONTAINERS:
            if is_value is not None and is_value(item):
                continue
            return item
        if id(item) in seen:
            continue
        seen.add(id(item))
        if kind is dict:
            stack.extend(item.keys())
            stack.extend(item.values())
        else:
            stack.extend(item)
    return _PLAIN


def _refusal(obj: Any) -> str:
    return (
        "cannot send an object of type %s.%s%s: only None, bool, int, float, complex, str, bytes, "
        "bytearray, tuple, list, dict, set, frozenset, the datetime types, Decimal, UUID, "
        "Fraction, PurePosixPath, PosixPath, enum members and types registered with "
        "trimitogen.register_value_type travel between contexts"
        % (
            type(obj).__module__,
            type(obj).__qualname__,
            " (the class complex)" if obj is complex else "",
        )
    )


class _Plain:
    __slots__ = ()


_PLAIN: Any = _Plain()


class _RestrictedPickler(_pickle.Pickler):
    # reducer_override is consulted only for objects the C pickler has no opcode for.  A complex
    # number (and, under protocol 4, a bytearray) is rebuilt by calling its class, so the class
    # itself is written once too; whether it also appears on its own is checked after the dump.
    saw_class = False

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is complex:
            return NotImplemented
        if obj is complex or obj is bytearray:
            self.saw_class = True
            return NotImplemented
        from . import values

        if values.learn(obj):
            raise _ValuesFound
        raise TypeError(_refusal(obj))

    if sys.version_info < (3, 8):  # noqa: UP036 - children run 3.6 and 3.7 too

        def persistent_id(self, obj: Any) -> Any:
            # The same decisions as reducer_override, asked for every object (slower).
            if type(obj) in _PLAIN_SCALARS or type(obj) in _PLAIN_CONTAINERS:
                return None
            if obj is complex or obj is bytearray:
                self.saw_class = True
                return None
            from . import values

            if values.learn(obj):
                return values.persistent_id(obj)
            raise TypeError(_refusal(obj))


def _bytearray(data: Any = b"") -> bytearray:
    # Protocol 4 rebuilds a bytearray by calling its class: only with the bytes to copy.
    if type(data) is not bytes:
        raise StreamError("refused a body that calls bytearray with %s" % type(data).__name__)
    return bytearray(data)


class _ValuesFound(Exception):
    """A body holds values beyond plain data: it is written again, with persistent ids."""


class _RestrictedUnpickler(_pickle.Unpickler):
    saw_global = False
    #: Whether the body may name a module to import (only calls from the parent: see values.py).
    may_import = False
    #: id(placeholder) -> value, for every persistent id read; the placeholders, kept alive.
    values: Optional[Dict[int, Any]] = None
    placeholders: List[Any] = []

    def persistent_load(self, pid: Any) -> Any:
        from . import values

        if self.values is None:
            self.values = {}
            self.placeholders = []
        if type(pid) is tuple and pid and pid[0] in values.NESTING:
            pid = values.substitute(pid, self.values, {})
        value = values.decode(pid, self.may_import)
        placeholder = values.Placeholder()
        self.placeholders.append(placeholder)
        self.values[id(placeholder)] = value
        return placeholder

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("builtins", "bytearray"):
            self.saw_global = True
            return _bytearray
        if (module, name) in _ALLOWED_GLOBALS:
            self.saw_global = True
            return super().find_class(module, name)
        raise StreamError(
            "refused to load global %s.%s: it is not on the allow-list, nothing was run"
            % (module, name)
        )


class Body:
    """An encoded body as a list of buffers, so large ``bytes`` values are never copied.

    The pickler hands big ``bytes`` payloads to :meth:`write` as the objects themselves; they are
    immutable, so the body can refer to them until the frame is written.
    """

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: List[Any] = []
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def write(self, data: Any) -> int:
        if type(data) is not bytes:
            data = bytes(data)  # a bytearray or buffer may change before it is sent
        self.parts.append(data)
        self.size += len(data)
        return len(data)

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)


def _holds(data: Any, byte: bytes) -> bool:
    """Whether a body (bytes, a buffer, or the parts of a :class:`Body`) holds ``byte``."""
    if type(data) is Body:
        return any(_holds(part, byte) for part in data.parts)
    if type(data) is memoryview and hasattr(data.obj, "find"):  # a reused buffer's start
        return bool(data.obj.find(byte, 0, data.nbytes) != -1)
    searchable = data if hasattr(data, "find") else bytes(data)
    return bool(searchable.find(byte) != -1)


def dumps_body(obj: Any) -> Body:
    """Pickle plain data into a :class:`Body`; :class:`TypeError` names a non-plain value."""
    persistent_id: Any = None
    while True:
        body = Body()
        pickler = _RestrictedPickler(body, protocol=PICKLE_PROTOCOL)
        if persistent_id is not None:
            setattr(pickler, "persistent_id", persistent_id)  # noqa: B010 - mypy: a method
        try:
            pickler.dump(obj)
            break
        except _ValuesFound:
            # The pickler calls persistent_id for every object, plain ones included (several
            # times slower on a list of ints), so only a body known to hold values is written
            # with it: again, and once more for each kind of value first met on the way.
            from .values import persistent_id
    if pickler.saw_class:
        from .values import is_value

        bad = _first_non_plain(obj, is_value)
        if bad is not _PLAIN:
            raise TypeError(_refusal(bad))
    return body


def dumps(obj: Any) -> bytes:
    """Pickle plain data to bytes; :class:`TypeError` names the first non-plain value."""
    return bytes(dumps_body(obj))


def loads(data: Any, may_import: bool = False) -> Any:
    """Unpickle a body with the allow-list; any failure is a :class:`StreamError`.

    ``may_import``: the body comes from this context's parent, which may name modules to import
    for the values it holds (see :mod:`trimitogen.core.values`).
    """
    # BytesIO shares an immutable bytes object without copying, and the C unpickler reads it
    # without calling back into Python; other buffers (large received bodies) use BodyReader.
    try:
        if type(data) is bytes:
            source: Any = io.BytesIO(data)
        elif type(data) is Body:
            source = PartsReader(data.parts)
        else:
            source = BodyReader(data)
        unpickler = _RestrictedUnpickler(source)
        if may_import:
            unpickler.may_import = True
        result = unpickler.load()
        is_value = None
        if unpickler.values is not None:
            from .values import substitute

            result = substitute(result, unpickler.values, {})
            value_ids = {id(v) for v in unpickler.values.values()}

            def is_value(item: Any) -> bool:
                return id(item) in value_ids

        # Walking the result costs time, so only when the body could hold something non-plain:
        # a class named by a global, or a memoryview made by READONLY_BUFFER.
        if unpickler.saw_global or _holds(data, _READONLY_BUFFER):
            bad = _first_non_plain(result, is_value)
            if bad is not _PLAIN:
                # The type, never the object's repr: a peer's object may be huge or hostile.
                raise StreamError(
                    "refused a body holding an object of type %s.%s, which is not plain data"
                    % (type(bad).__module__, type(bad).__qualname__)
                )
        return result
    except StreamError:
        raise
    except Exception as exc:
        raise StreamError("malformed message body: %s: %s" % (type(exc).__name__, exc)) from None


class FrameDecoder:
    """Turns a byte stream into :class:`Message` objects.

    Feed bytes with :meth:`receive_data` and collect messages with :meth:`messages`.  When a large
    body is pending, :meth:`body_view` exposes the part of it still missing so the caller can read
    into it directly (then reports the count to :meth:`body_filled`), which saves a copy per byte.
    With ``raw_pieces``, a large raw body (:data:`FLAG_RAW`) is read instead as the ``bytes`` of
    each read (:meth:`piece_wanted`, :meth:`add_piece`) and arrives as a :class:`Body` of them:
    the reader hands those on, read once by the kernel and never copied (except raw bodies for a
    handle in ``view_handles``, whose consumer writes them out from the reused buffer).  A bad
    header or an oversized length raises :class:`StreamError`; after that the decoder stays
    failed, because the stream position can no longer be trusted.
    """

    #: Bodies at least this large are read in place rather than through the shared buffer.
    DIRECT_READ_MIN = 64 * 1024
    #: Bodies up to this size are read into buffers used again once nobody holds the message
    #: (fresh memory costs a page fault per 4 KiB: a quarter of the time of a stream of large
    #: items); at most SPARE_BUFFERS of them are kept.
    REUSED_BUFFER = 2 * 1024 * 1024
    SPARE_BUFFERS = 8
    #: Size of :attr:`scratch`, and the largest read of one piece of a raw body.
    SCRATCH = 64 * 1024
    PIECE_READ = 1024 * 1024
    SMALL_PIECE = 4096

    def __init__(
        self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, raw_pieces: bool = False
    ) -> None:
        self.max_message_size = max_message_size
        self.raw_pieces = raw_pieces
        self.view_handles: Set[int] = set()
        #: A buffer for the caller to read into between bodies, then to pass to
        #: :meth:`receive_data`: no fresh memory per read, and at most this much of the next
        #: large body goes through the shared buffer instead of straight into its own.
        self.scratch = memoryview(bytearray(self.SCRATCH))
        self._buf = bytearray()
        self._header: Optional[Tuple[int, ...]] = None
        self._body: Any = None
        self._buffers = BufferPool(self.REUSED_BUFFER, self.SPARE_BUFFERS)
        self._body_filled = 0
        self._ready: List[Message] = []
        self._error: Optional[StreamError] = None

    def _fail(self, text: str) -> None:
        self._error = StreamError(text)
        raise self._error

    def _check_header(self, fields: Tuple[int, ...]) -> None:
        magic, version, _flags, _dst, _src, _handle, _reply_to, length = fields
        if magic != MAGIC:
            self._fail("bad frame header: magic %#06x, expected %#06x" % (magic, MAGIC))
        if version != VERSION:
            self._fail("bad frame header: protocol version %d, expected %d" % (version, VERSION))
        if length > self.max_message_size:
            self._fail(
                "frame of %d bytes exceeds the limit of %d bytes" % (length, self.max_message_size)
            )

    def _finish(self, fields: Tuple[int, ...], body: Any) -> None:
        _magic, _version, flags, dst, src, handle, reply_to, _length = fields
        self._ready.append(Message(dst, src, handle, reply_to, body, flags))

    def receive_data(self, data: Any) -> None:
        """Add bytes read from the stream; decoded messages queue up for :meth:`messages`."""
        if self._error is not None:
            raise self._error
        if self._body is not None:
            assert self._header is not None
            take = min(len(data), self._header[-1] - self._body_filled)
            if type(self._body) is Body:
                self.add_piece(bytes(data[:take]))
            else:
                self._body[self._body_filled : self._body_filled + take] = data[:take]
                self.body_filled(take)
            data = data[take:]
            if not data:
                return
        buf = self._buf
        buf += data
        pos = 0
        while True:
            if self._header is None:
                if len(buf) - pos < HEADER_SIZE:
                    break
                fields = HEADER.unpack_from(buf, pos)
                self._check_header(fields)
                pos += HEADER_SIZE
                self._header = fields
            length = self._header[-1]
            available = len(buf) - pos
            if available >= length:
                self._finish(self._header, bytes(buf[pos : pos + length]))
                self._header = None
                pos += length
                continue
            if length >= self.DIRECT_READ_MIN:
                flags, handle = self._header[2], self._header[5]
                if self.raw_pieces and flags & FLAG_RAW and handle not in self.view_handles:
                    body = Body()
                    if available:
                        body.parts.append(bytes(buf[pos:]))
                        body.size = available
                else:
                    body = self._body_buffer(length)
                    body[:available] = buf[pos:]
                pos = len(buf)
                self._body = body
                self._body_filled = available
            break
        del buf[:pos]

    def _body_buffer(self, length: int) -> Any:
        """Somewhere to read a body of ``length`` bytes: a view of a reused buffer, or, for a
        large body, an anonymous mapping of its own."""
        if length > self.REUSED_BUFFER:
            return mmap.mmap(-1, length, flags=MMAP_FLAGS)
        return self._buffers.take()[:length]

    def body_view(self) -> Optional[memoryview]:
        """The missing part of a large pending body, or ``None`` when none is pending."""
        if self._body is None or type(self._body) is Body:
            return None
        return memoryview(self._body)[self._body_filled :]

    def read_from(self, side: Any) -> Tuple[int, int]:
        """One read from ``side`` (a :class:`~.side.Side`) to where the next bytes go: a raw
        body's next piece, the missing part of a large body, or :attr:`scratch`.  ``(bytes
        read, bytes asked for)``; 0 read is the end of the stream.  ``BlockingIOError``
        (nothing to read) goes to the caller."""
        want = self.piece_wanted()
        if want:
            asked = min(want, self.PIECE_READ)
            data = side.read(asked)
            if data:
                self.add_piece(data)
            return len(data), asked
        view = self.body_view()
        if view is not None:
            n = side.readinto(view)
            if n:
                self.body_filled(n)
            return n, len(view)
        n = side.readinto(self.scratch)
        if n:
            self.receive_data(self.scratch[:n])
        return n, len(self.scratch)

    def piece_wanted(self) -> int:
        """Bytes still missing of a raw body read as pieces (0: none is pending)."""
        if type(self._body) is not Body or self._header is None:
            return 0
        return int(self._header[-1] - self._body_filled)

    def add_piece(self, data: bytes) -> None:
        """The next ``data`` of a raw body read as pieces (at most :meth:`piece_wanted`).
        Reads shorter than a page are gathered into one ``bytearray`` of up to a page, so a
        peer that trickles a body a byte per write costs a page per page, not an object."""
        parts = self._body.parts
        if len(data) < self.SMALL_PIECE:
            if parts and type(parts[-1]) is bytearray and len(parts[-1]) < self.SMALL_PIECE:
                parts[-1] += data
            else:
                parts.append(bytearray(data))
        else:
            parts.append(data)
        self._body.size += len(data)
        self.body_filled(len(data))

    def body_filled(self, n: int) -> None:
        """Record that ``n`` bytes were written into the view from :meth:`body_view`."""
        assert self._body is not None
        assert self._header is not None
        self._body_filled += n
        if self._body_filled == self._header[-1]:
            self._finish(self._header, self._body)
            self._header = None
            self._body = None
            self._body_filled = 0

    def messages(self) -> Iterator[Message]:
        """Yield and forget the messages decoded so far."""
        while self._ready:
            ready, self._ready = self._ready, []
            yield from ready

    @property
    def pending_bytes(self) -> int:
        """Bytes held for a message not yet complete (0 at a clean message boundary)."""
        partial = HEADER_SIZE if self._header is not None else 0
        return len(self._buf) + partial + self._body_filled


def frame(msg: Message) -> bytes:
    """The whole frame of ``msg`` as one bytes object (for tests and small messages)."""
    return msg.header() + bytes(msg.data)
