"""One schema per message body: what each handle carries, checked the same way at both ends.

A body on the wire is a restricted pickle of a tuple (see :mod:`.protocol`).  Each class here names
the tuple's fields and checks their types when decoding, so a receiver never unpacks a tuple by
position or trusts a field's type: a body of the wrong shape raises :class:`StreamError` naming the
handle and the field, whatever a peer put in it.

Every well-known handle is listed in :data:`HANDLES` with the body class that travels on it;
``docs/internals.rst`` shows the same table (a test compares them).
"""

from __future__ import annotations

from .errors import StreamError
from .protocol import (
    HANDLE_ADD_ROUTE,
    HANDLE_CALL,
    HANDLE_CANCEL,
    HANDLE_CREDIT,
    HANDLE_DEL_ROUTE,
    HANDLE_GET_MODULE,
    HANDLE_GET_RESOURCE,
    HANDLE_KILL,
    HANDLE_LOAD_MODULE,
    HANDLE_LOAD_RESOURCE,
    HANDLE_LOG,
    HANDLE_OPEN_CHANNEL,
    HANDLE_OPEN_STREAM,
    HANDLE_READY,
    HANDLE_SHUTDOWN,
    HANDLE_SPAWN,
    Body,
    dumps_body,
    loads,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple, Type

    Check = Callable[[Any], bool]


# Field checks.  Types are compared exactly: a bool is not an int here, and a str subclass never
# arrives from a restricted pickle anyway.
def _is(kind: type) -> Check:
    def check(value: Any) -> bool:
        return type(value) is kind

    check.__name__ = kind.__name__
    return check


_int = _is(int)
_str = _is(str)
_bytes = _is(bytes)
_tuple = _is(tuple)
_dict = _is(dict)


def _number(value: Any) -> bool:
    return type(value) in (int, float)


def _true(value: Any) -> bool:
    return value is True


def _false(value: Any) -> bool:
    return value is False


# Error messages name what a field must be in plain words.
_number.__name__ = "int or float"
_true.__name__ = "True"
_false.__name__ = "False"


def _any(value: Any) -> bool:
    return True


def _sequence_of(item: Check) -> Check:
    def check(value: Any) -> bool:
        return type(value) in (list, tuple) and all(item(v) for v in value)

    check.__name__ = "sequence of %s" % item.__name__
    return check


def _optional(inner: Check) -> Check:
    def check(value: Any) -> bool:
        return value is None or inner(value)

    check.__name__ = "None or %s" % inner.__name__
    return check


_record_fields = (_str, _is(bool), _str, _is(bool), _bytes, _bytes, _str)


def _module_record(value: Any) -> bool:
    return (
        type(value) is tuple
        and len(value) == len(_record_fields)
        and all(check(field) for check, field in zip(_record_fields, value))
    )


_module_record.__name__ = "module record"


class Schema:
    """Base of every body class: a fixed tuple of named, checked fields."""

    __slots__ = ()

    #: The handle this body travels on (reply bodies travel on allocated handles: 0).
    HANDLE: ClassVar[int] = 0
    #: (field name, check) in wire order.
    FIELDS: ClassVar[Tuple[Tuple[str, Check], ...]] = ()

    def __init__(self, *values: Any) -> None:
        for (name, _check), value in zip(self.FIELDS, values):
            setattr(self, name, value)

    def __repr__(self) -> str:
        return "%s(%s)" % (
            type(self).__name__,
            ", ".join("%s=%r" % (name, getattr(self, name)) for name, _ in self.FIELDS),
        )

    def astuple(self) -> Tuple[Any, ...]:
        return tuple(getattr(self, name) for name, _ in self.FIELDS)

    def encode(self) -> Any:
        """The body as a zero-copy :class:`~.protocol.Body`, ready for a frame."""
        return dumps_body(self.astuple())

    @classmethod
    def pack(cls, *values: Any) -> Any:
        """Encode field values without building the object first (for hot paths)."""
        return dumps_body(values)

    @classmethod
    def decode(cls, data: Any, may_import: bool = False) -> Any:
        """Check and build from an encoded body; :class:`StreamError` names what is wrong.

        ``may_import``: the body comes from the parent, whose values may name modules to import
        (see :mod:`.values`).
        """
        return cls.from_value(loads(data, may_import))

    @classmethod
    def describe(cls) -> str:
        """The body's name and handle, for errors."""
        if cls.HANDLE:
            return "%s (handle %d)" % (cls.__name__, cls.HANDLE)
        return "%s (a reply)" % cls.__name__

    @classmethod
    def from_value(cls, value: Any) -> Any:
        fields = cls.FIELDS
        if type(value) is not tuple or len(value) != len(fields):
            raise StreamError(
                "malformed %s body: expected a tuple of %d fields (%s), got %s"
                % (cls.describe(), len(fields), ", ".join(n for n, _ in fields), _kind(value))
            )
        for (name, check), field in zip(fields, value):
            if not check(field):
                raise StreamError(
                    "malformed %s body: field %r must be %s, got %s"
                    % (cls.describe(), name, check.__name__, _kind(field))
                )
        return cls(*value)


def _kind(value: Any) -> str:
    if type(value) is tuple:
        return "a tuple of %d" % len(value)
    return "a %s" % type(value).__name__


class Ready(Schema):
    """Child to parent, once its runtime runs: who it is and which bytecode it runs."""

    __slots__ = ("hexversion", "magic", "pid")
    pid: int
    hexversion: int
    magic: bytes
    HANDLE = HANDLE_READY
    FIELDS = (("pid", _int), ("hexversion", _int), ("magic", _bytes))


class Call(Schema):
    """Master to a context: run ``module.qualname(*args, **kwargs)``."""

    __slots__ = ("args", "kwargs", "module", "qualname")
    module: str
    qualname: str
    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]
    HANDLE = HANDLE_CALL
    FIELDS = (("module", _str), ("qualname", _str), ("args", _tuple), ("kwargs", _dict))


class ReplyOk(Schema):
    """Answer to a call that returned: ``(True, value)``."""

    __slots__ = ("ok", "value")
    ok: bool
    value: Any
    FIELDS = (("ok", _true), ("value", _any))


class ReplyError(Schema):
    """Answer to a call that raised: ``(False, type name, message, traceback text)``."""

    __slots__ = ("message", "ok", "traceback", "type_name")
    ok: bool
    type_name: str
    message: str
    traceback: str
    FIELDS = (("ok", _false), ("type_name", _str), ("message", _str), ("traceback", _str))


class Log(Schema):
    """A line of output (kind ``stdout`` or ``stderr``) or a log record (kind ``log``)."""

    __slots__ = ("kind", "levelno", "name", "text")
    kind: str
    name: str
    levelno: int
    text: str
    HANDLE = HANDLE_LOG
    FIELDS = (("kind", _str), ("name", _str), ("levelno", _int), ("text", _str))


class GetModule(Schema):
    """Child to parent: the full name of a module the child cannot import itself."""

    __slots__ = ("name",)
    name: str
    HANDLE = HANDLE_GET_MODULE
    FIELDS = (("name", _str),)


class LoadModule(Schema):
    """Parent to child: module records (see :mod:`.importer`)."""

    __slots__ = ("records",)
    records: List[Tuple[str, bool, str, bool, bytes, bytes, str]]
    HANDLE = HANDLE_LOAD_MODULE
    FIELDS = (("records", _sequence_of(_module_record)),)


class Spawn(Schema):
    """Master to an intermediate: start a child with a method spec, an id, a name, the runtime
    to send it and the config its runtime starts with."""

    __slots__ = (
        "allow",
        "config",
        "connect_timeout",
        "context_id",
        "deny",
        "name",
        "payload",
        "spec",
    )
    spec: Dict[str, Any]
    context_id: int
    name: str
    payload: bytes
    config: Dict[str, Any]
    connect_timeout: float
    deny: List[str]
    allow: Optional[List[str]]
    HANDLE = HANDLE_SPAWN
    FIELDS = (
        ("spec", _dict),
        ("context_id", _int),
        ("name", _str),
        ("payload", _bytes),
        ("config", _dict),
        ("connect_timeout", _number),
        ("deny", _sequence_of(_str)),
        ("allow", _optional(_sequence_of(_str))),
    )


class SpawnOk(Schema):
    """Answer to a spawn request: the child runs."""

    __slots__ = ("hexversion", "magic", "ok", "pid")
    ok: bool
    pid: int
    hexversion: int
    magic: bytes
    FIELDS = (("ok", _true), ("pid", _int), ("hexversion", _int), ("magic", _bytes))


class SpawnFailed(Schema):
    """Answer to a spawn request: the child could not start (error kind, phase, last output)."""

    __slots__ = ("kind", "lines", "ok", "phase", "reason")
    ok: bool
    kind: str
    phase: str
    reason: str
    lines: List[str]
    FIELDS = (
        ("ok", _false),
        ("kind", _str),
        ("phase", _str),
        ("reason", _str),
        ("lines", _sequence_of(_str)),
    )


class Kill(Schema):
    """Master to an intermediate: stop a child of it by force."""

    __slots__ = ("context_id",)
    context_id: int
    HANDLE = HANDLE_KILL
    FIELDS = (("context_id", _int),)


class AddRoute(Schema):
    """Intermediate to master: a context it was asked to start now runs below it."""

    __slots__ = ("context_id",)
    context_id: int
    HANDLE = HANDLE_ADD_ROUTE
    FIELDS = (("context_id", _int),)


class DelRoute(Schema):
    """Intermediate to master: contexts below it are gone, and why."""

    __slots__ = ("ids", "reason")
    ids: List[int]
    reason: str
    HANDLE = HANDLE_DEL_ROUTE
    FIELDS = (("ids", _sequence_of(_int)), ("reason", _str))


class GetResource(Schema):
    """Child to parent: a file or directory of a package's data, by ``/``-separated path
    relative to the package's directory (``""``: the directory itself)."""

    __slots__ = ("package", "path")
    package: str
    path: str
    HANDLE = HANDLE_GET_RESOURCE
    FIELDS = (("package", _str), ("path", _str))


#: What a :class:`LoadResource` answer says the path is (see :mod:`.resources`).
RESOURCE_KINDS = ("file", "dir", "missing", "refused")


def _resource_kind(value: Any) -> bool:
    return value in RESOURCE_KINDS and type(value) is str


_resource_kind.__name__ = "one of %s" % ", ".join(RESOURCE_KINDS)


class LoadResource(Schema):
    """Parent to child: the answer to a :class:`GetResource`.  ``kind`` ``file``: ``data`` is
    its zlib-compressed content; ``dir``: ``names`` lists its entries (a directory's name ends
    in ``/``); ``missing`` or ``refused``: ``reason`` says why."""

    __slots__ = ("data", "kind", "names", "package", "path", "reason")
    package: str
    path: str
    kind: str
    data: bytes
    names: List[str]
    reason: str
    HANDLE = HANDLE_LOAD_RESOURCE
    FIELDS = (
        ("package", _str),
        ("path", _str),
        ("kind", _resource_kind),
        ("data", _bytes),
        ("names", _sequence_of(_str)),
        ("reason", _str),
    )


def decode_reply(data: Any) -> Any:
    """A call's answer: :class:`ReplyOk` or :class:`ReplyError`."""
    return _reply_from_value(loads(data))


def _reply_from_value(value: Any) -> Any:
    if type(value) is tuple and len(value) == 2:
        return ReplyOk.from_value(value)
    if type(value) is tuple and len(value) == 4:
        return ReplyError.from_value(value)
    raise StreamError(
        "the body is not a reply: expected (True, value) or (False, type name, message, "
        "traceback), got %s" % _kind(value)
    )


def decode_spawn_answer(data: Any) -> Any:
    """A spawn request's answer: :class:`SpawnOk` or :class:`SpawnFailed`."""
    value = loads(data)
    if type(value) is tuple and value and value[0] is True:
        return SpawnOk.from_value(value)
    return SpawnFailed.from_value(value)


class Cancel(Schema):
    """Master to a context: the caller of the call answering on ``reply_to`` gave up.

    A call still queued is dropped; a running one is interrupted (see :mod:`.calls`).
    """

    __slots__ = ("reply_to",)
    reply_to: int
    HANDLE = HANDLE_CANCEL
    FIELDS = (("reply_to", _int),)


class OpenStream(Schema):
    """Master to a context: iterate ``module.qualname(*args, **kwargs)`` (a generator or an
    async generator); its items go to the message's reply handle, at most ``items`` items and
    about ``nbytes`` bytes ahead of the consumer's :class:`Credit`."""

    __slots__ = ("args", "items", "kwargs", "module", "nbytes", "qualname")
    module: str
    qualname: str
    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]
    items: int
    nbytes: int
    HANDLE = HANDLE_OPEN_STREAM
    FIELDS = (
        ("module", _str),
        ("qualname", _str),
        ("args", _tuple),
        ("kwargs", _dict),
        ("items", _int),
        ("nbytes", _int),
    )


class OpenChannel(OpenStream):
    """Master to a context: run ``module.qualname(channel end, *args, **kwargs)``; items go
    both ways on the message's reply handle, each way within the receiver's :class:`Credit`."""

    __slots__ = ()
    HANDLE = HANDLE_OPEN_CHANNEL


class Credit(Schema):
    """The consumer of stream or channel ``reply_to`` took items; the other side may send more.
    Master to a context for streams and channels, context to master for channels."""

    __slots__ = ("items", "nbytes", "reply_to")
    reply_to: int
    items: int
    nbytes: int
    HANDLE = HANDLE_CREDIT
    FIELDS = (("reply_to", _int), ("items", _int), ("nbytes", _int))


class StreamEnd(Schema):
    """Context to master, on a stream's handle: the generator is exhausted (or was closed).
    Items travel as :class:`ReplyOk`, a failure as :class:`ReplyError`."""

    __slots__ = ("end",)
    end: str
    FIELDS = (("end", _is(str)),)


def _items_kind(value: Any) -> bool:
    return value == "items" and type(value) is str


_items_kind.__name__ = "'items'"


def _items(value: Any) -> bool:
    return type(value) is list and len(value) > 0


_items.__name__ = "a list of at least one item"


class StreamItems(Schema):
    """Context to master, on a stream's handle: several items in one frame, sent when the
    producer got ahead of the writes.  Each item counts against the window as one item; the
    body's size counts against its bytes."""

    __slots__ = ("kind", "values")
    kind: str
    values: List[Any]
    FIELDS = (("kind", _items_kind), ("values", _items))


def raw_value(data: Any) -> Any:
    """The item of a raw body: the received buffer itself (``bytes``, or a view of a receive
    buffer, which is used again once nobody holds the view), or one ``bytes`` for a message that
    came in parts."""
    return bytes(data) if type(data) is Body else data


def raw_pieces(item: Any) -> List[Any]:
    """The buffers of a raw item taken as it was read: the pieces of a :class:`Body`, or the
    item itself."""
    return item.parts if type(item) is Body else [item]


def decode_stream(data: Any) -> Any:
    """What arrives on a stream's handle: :class:`ReplyOk` (an item), :class:`StreamItems`
    (several), :class:`ReplyError` or :class:`StreamEnd`."""
    value = loads(data)
    if type(value) is tuple and len(value) == 1:
        return StreamEnd.from_value(value)
    if type(value) is tuple and len(value) == 2 and value[0] == "items":
        return StreamItems.from_value(value)
    return _reply_from_value(value)


class Shutdown:
    """Master to a context: exit once queued calls ran.  No body."""

    HANDLE = HANDLE_SHUTDOWN
    FIELDS: Tuple[Tuple[str, Check], ...] = ()

    @staticmethod
    def encode() -> bytes:
        return b""


#: Every well-known handle: name -> (number, direction, body class).
HANDLES: Dict[str, Tuple[int, str, Type[Any]]] = {
    "READY": (HANDLE_READY, "child → parent", Ready),
    "CALL": (HANDLE_CALL, "master → context", Call),
    "LOG": (HANDLE_LOG, "child → master", Log),
    "SHUTDOWN": (HANDLE_SHUTDOWN, "master → context", Shutdown),
    "GET_MODULE": (HANDLE_GET_MODULE, "child → parent", GetModule),
    "LOAD_MODULE": (HANDLE_LOAD_MODULE, "parent → child", LoadModule),
    "SPAWN": (HANDLE_SPAWN, "master → intermediate", Spawn),
    "KILL": (HANDLE_KILL, "master → intermediate", Kill),
    "ADD_ROUTE": (HANDLE_ADD_ROUTE, "intermediate → master", AddRoute),
    "DEL_ROUTE": (HANDLE_DEL_ROUTE, "intermediate → master", DelRoute),
    "CANCEL": (HANDLE_CANCEL, "master → context", Cancel),
    "OPEN_STREAM": (HANDLE_OPEN_STREAM, "master → context", OpenStream),
    "CREDIT": (HANDLE_CREDIT, "receiver → sender", Credit),
    "OPEN_CHANNEL": (HANDLE_OPEN_CHANNEL, "master → context", OpenChannel),
    "GET_RESOURCE": (HANDLE_GET_RESOURCE, "child → parent", GetResource),
    "LOAD_RESOURCE": (HANDLE_LOAD_RESOURCE, "parent → child", LoadResource),
}
