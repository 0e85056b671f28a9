"""Values beyond plain data: dates and times, decimals, UUIDs, fractions, paths, enum members and
types users register, carried as plain parts and rebuilt by this module's own code.

On the wire such a value is a pickle *persistent id*: a tuple ``(tag, part, ...)`` of plain data
(or of other such values), never a global for the reader to import.  The reader looks the tag up
in :data:`_DECODERS`, checks every part's exact type and rebuilds the value itself.

Trust: a context may import a module its parent names (the parent may run any code there anyway),
never one a child names.  So an enum member or a registered type whose module is not loaded yet
is imported only when ``may_import`` is set, which the child runtime does for the bodies of calls
from its parent alone; the master looks enum classes up in ``sys.modules`` and nowhere else.

This module is loaded on first use (a child that never meets such a value never compiles it).
"""

from __future__ import annotations

import sys

from .errors import StreamError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

#: Name the child imports the master's ``__main__`` under (as in core/importer.py, which this
#: module does not import so that it stays loadable on its own).
_MAIN_ALIAS = "__trimitogen_main__"

#: Built-in value types: (module, class name, tag).  The classes are found in ``sys.modules``
#: when first met, so nothing here imports ``decimal`` or ``uuid`` in a child that has none.
_BUILTIN = (
    ("datetime", "date", "date"),
    ("datetime", "time", "time"),
    ("datetime", "datetime", "datetime"),
    ("datetime", "timedelta", "timedelta"),
    ("datetime", "timezone", "timezone"),
    ("decimal", "Decimal", "decimal"),
    ("uuid", "UUID", "uuid"),
    ("fractions", "Fraction", "fraction"),
    ("pathlib", "PurePosixPath", "purepath"),
    ("pathlib", "PosixPath", "path"),
)

#: Class -> function that turns an instance into its persistent id.  Filled as classes are met
#: (built-ins, enums) or registered (users' types).
_ENCODERS: Dict[type, Callable[[Any], Tuple[Any, ...]]] = {}

#: Users' types by wire name: (class, from_plain).
_USER_TYPES: Dict[str, Tuple[type, Callable[[Any], Any]]] = {}


# Sending -------------------------------------------------------------------------------------
def learn(obj: Any) -> bool:
    """True if ``obj`` is a value this module can carry (its class is remembered for next time)."""
    cls = type(obj)
    if cls in _ENCODERS:
        return True
    for module, name, tag in _BUILTIN:
        if getattr(sys.modules.get(module), name, None) is cls:
            _ENCODERS[cls] = _BUILTIN_ENCODERS[tag]
            return True
    enum = sys.modules.get("enum")
    if enum is not None and isinstance(cls, type) and issubclass(cls, enum.Enum):
        _ENCODERS[cls] = _encode_enum
        return True
    return False


def persistent_id(obj: Any) -> Any:
    """The persistent id of ``obj``, or None for anything else (the pickler's own business)."""
    encoder = _ENCODERS.get(type(obj))
    return None if encoder is None else encoder(obj)


def is_value(obj: Any) -> bool:
    return type(obj) in _ENCODERS


def _wire_module(module: str) -> str:
    # The master's __main__ is imported as _MAIN_ALIAS in children: both ends say "__main__".
    return "__main__" if module == _MAIN_ALIAS else module


def _encode_timezone(tz: Any) -> Tuple[Any, ...]:
    import datetime

    offset = tz.utcoffset(None)
    name = tz.tzname(None)
    # A name equal to the one timezone() makes up for the offset is not sent.
    return ("timezone", offset, None if datetime.timezone(offset).tzname(None) == name else name)


def _encode_enum(member: Any) -> Tuple[Any, ...]:
    cls = type(member)
    name: str = member._name_
    members = _member_map(cls)
    if members is None or members.get(name) is not member:
        raise TypeError(
            "cannot send %r: only members of an enum travel (send a combination of flags as its "
            "value)" % (member,)
        )
    return ("enum", _wire_module(cls.__module__), cls.__qualname__, name)


_BUILTIN_ENCODERS: Dict[str, Callable[[Any], Tuple[Any, ...]]] = {
    "date": lambda d: ("date", d.year, d.month, d.day),
    "time": lambda t: ("time", t.hour, t.minute, t.second, t.microsecond, t.tzinfo, t.fold),
    "datetime": lambda d: (
        "datetime",
        d.year,
        d.month,
        d.day,
        d.hour,
        d.minute,
        d.second,
        d.microsecond,
        d.tzinfo,
        d.fold,
    ),
    "timedelta": lambda d: ("timedelta", d.days, d.seconds, d.microseconds),
    "timezone": _encode_timezone,
    "decimal": lambda d: ("decimal", str(d)),
    "uuid": lambda u: ("uuid", u.int),
    "fraction": lambda f: ("fraction", f.numerator, f.denominator),
    "purepath": lambda p: ("purepath", str(p)),
    "path": lambda p: ("path", str(p)),
}


# Users' types ----------------------------------------------------------------------------------
def register_value_type(
    cls: type,
    to_plain: Callable[[Any], Any],
    from_plain: Callable[[Any], Any],
    name: Optional[str] = None,
) -> None:
    """Let instances of ``cls`` travel between contexts.

    ``to_plain(obj)`` returns plain data (or other values that travel), and ``from_plain(data)``
    rebuilds an instance of exactly ``cls`` from it; anything else it returns, and any exception it
    raises, makes the receiver refuse the whole message.  ``name`` identifies the type on the wire
    (by default ``module.qualname`` of ``cls``) and must be the same in every context.

    Call it at the top level of the module that defines ``cls``, in the master and in children
    alike (``import trimitogen`` works in a child): a child that receives a value of a type it does
    not know yet imports the class's module, which registers it.  The master never imports a module
    a child names, so a type reaches the master from a child only if the master registered it.
    """
    if not isinstance(cls, type):
        raise TypeError("register_value_type() needs a class, not %r" % (cls,))
    if not (callable(to_plain) and callable(from_plain)):
        raise TypeError("to_plain and from_plain must be callables")
    module = _wire_module(cls.__module__)
    if name is None:
        name = "%s.%s" % (module, cls.__qualname__)
    if type(name) is not str or not name:
        raise TypeError("the name of a value type must be a non-empty str, not %r" % (name,))
    for builtin_module, builtin_name, _tag in _BUILTIN:
        if (cls.__module__, cls.__qualname__) == (builtin_module, builtin_name):
            raise ValueError("%s.%s travels already" % (builtin_module, builtin_name))
    known = _USER_TYPES.get(name)
    if known is not None and (known[0].__module__, known[0].__qualname__) != (
        cls.__module__,
        cls.__qualname__,
    ):
        raise ValueError(
            "the value type name %r is taken by %s.%s"
            % (name, known[0].__module__, known[0].__qualname__)
        )

    def encode(obj: Any) -> Tuple[Any, ...]:
        plain = to_plain(obj)
        if type(plain) is cls:
            raise TypeError("to_plain of %s returned an instance of the class itself" % name)
        return ("value", name, module, plain)

    # A module reloaded registers its new class under the same name: the old one is forgotten.
    if known is not None:
        _ENCODERS.pop(known[0], None)
    _USER_TYPES[name] = (cls, from_plain)
    _ENCODERS[cls] = encode


# Receiving -----------------------------------------------------------------------------------
def decode(pid: Any, may_import: bool) -> Any:
    """The value a persistent id stands for; :class:`StreamError` if it is not a valid one."""
    if type(pid) is not tuple or not pid or type(pid[0]) is not str:
        raise StreamError("refused a value: its id %r is not a (tag, parts...) tuple" % (pid,))
    tag, parts = pid[0], pid[1:]
    decoder = _DECODERS.get(tag)
    if decoder is None:
        raise StreamError("refused a value of unknown kind %r" % (tag,))
    arity, types, build = decoder
    if len(parts) != arity or not all(_has_type(parts[i], types[i]) for i in range(arity)):
        raise StreamError("refused a malformed %s value: %r" % (tag, parts))
    try:
        return build(parts, may_import)
    except StreamError:
        raise
    except Exception as exc:
        raise StreamError(
            "refused a %s value built from %r: %s: %s" % (tag, parts, type(exc).__name__, exc)
        ) from None


def _has_type(part: Any, kind: Any) -> bool:
    if kind is None:  # anything: checked by the builder
        return True
    if type(kind) is str:  # a datetime class, or None
        return part is None or type(part) is getattr(sys.modules.get("datetime"), kind, None)
    return type(part) in kind


_INT = (int,)
_STR = (str,)


def _build_date(parts: Tuple[Any, ...], may_import: bool) -> Any:
    import datetime

    return datetime.date(*parts)


def _build_time(parts: Tuple[Any, ...], may_import: bool) -> Any:
    import datetime

    hour, minute, second, microsecond, tz, fold = parts
    return datetime.time(hour, minute, second, microsecond, tz, fold=fold)


def _build_datetime(parts: Tuple[Any, ...], may_import: bool) -> Any:
    import datetime

    *fields, tz, fold = parts
    return datetime.datetime(*fields, tz, fold=fold)  # type: ignore[misc]


def _build_timedelta(parts: Tuple[Any, ...], may_import: bool) -> Any:
    import datetime

    return datetime.timedelta(*parts)


def _build_timezone(parts: Tuple[Any, ...], may_import: bool) -> Any:
    import datetime

    offset, name = parts
    if offset is None:
        raise ValueError("a timezone needs an offset")
    return datetime.timezone(offset) if name is None else datetime.timezone(offset, name)


def _build_decimal(parts: Tuple[Any, ...], may_import: bool) -> Any:
    import decimal

    return decimal.Decimal(parts[0])


def _build_uuid(parts: Tuple[Any, ...], may_import: bool) -> Any:
    import uuid

    return uuid.UUID(int=parts[0])


def _build_fraction(parts: Tuple[Any, ...], may_import: bool) -> Any:
    import fractions

    return fractions.Fraction(*parts)


def _build_purepath(parts: Tuple[Any, ...], may_import: bool) -> Any:
    import pathlib

    return pathlib.PurePosixPath(parts[0])


def _build_path(parts: Tuple[Any, ...], may_import: bool) -> Any:
    import pathlib

    return pathlib.PosixPath(parts[0])


def _module(name: str, may_import: bool, what: str) -> Any:
    """The loaded module ``name``; imported only if ``may_import``."""
    if name == "__main__" and (may_import or _MAIN_ALIAS in sys.modules):
        name = _MAIN_ALIAS
    module = sys.modules.get(name)
    if module is None:
        if not may_import:
            raise StreamError(
                "refused %s: its module %r is not imported here, and a context never imports a "
                "module named by one of its children" % (what, name)
            )
        __import__(name)
        module = sys.modules[name]
    return module


def _member_map(cls: Any) -> Optional[Dict[str, Any]]:
    # Read from the class's own namespace: no property or metaclass code of the enum runs.
    import collections

    members = vars(cls).get("_member_map_")
    # A dict; an OrderedDict before Python 3.7.
    return members if type(members) in (dict, collections.OrderedDict) else None


def _build_enum(parts: Tuple[Any, ...], may_import: bool) -> Any:
    module_name, qualname, member = parts
    what = "the enum member %s.%s.%s" % (module_name, qualname, member)
    obj = _module(module_name, may_import, what)
    # vars() rather than getattr(): a module's __getattr__ or a class's descriptors must not run.
    for part in qualname.split("."):
        namespace = vars(obj) if hasattr(obj, "__dict__") else {}
        obj = namespace.get(part)
        if obj is None:
            raise StreamError("refused %s: there is no %r" % (what, part))
    enum = sys.modules.get("enum")
    if enum is None or not isinstance(obj, type) or enum.Enum not in obj.__mro__:
        raise StreamError("refused %s: it is not an enum class" % (what,))
    members = _member_map(obj)
    if members is None or type(members.get(member)) is not obj:
        raise StreamError("refused %s: the enum has no such member" % (what,))
    return members[member]


def _build_user(parts: Tuple[Any, ...], may_import: bool) -> Any:
    name, module_name, plain = parts
    known = _USER_TYPES.get(name)
    if known is None and may_import:
        _module(module_name, True, "a value of type %r" % (name,))
        known = _USER_TYPES.get(name)
    if known is None:
        raise StreamError(
            "refused a value of type %r: it is not registered in this context (call "
            "trimitogen.register_value_type at the top level of module %s, and import that "
            "module in the master)" % (name, module_name)
        )
    cls, from_plain = known
    value = from_plain(plain)
    if type(value) is not cls:
        raise StreamError(
            "refused a value of type %r: from_plain returned %s, not %s"
            % (name, type(value).__qualname__, cls.__qualname__)
        )
    return value


#: tag -> (number of parts, the type of each part, builder).  A part's type is a tuple of exact
#: types, the name of a datetime class (that or None), or None (the builder checks it).
_DECODERS: Dict[str, Tuple[int, Tuple[Any, ...], Callable[[Tuple[Any, ...], bool], Any]]] = {
    "date": (3, (_INT,) * 3, _build_date),
    "time": (6, (*(_INT,) * 4, "timezone", _INT), _build_time),
    "datetime": (9, (*(_INT,) * 7, "timezone", _INT), _build_datetime),
    "timedelta": (3, (_INT,) * 3, _build_timedelta),
    "timezone": (2, ("timedelta", (str, type(None))), _build_timezone),
    "decimal": (1, (_STR,), _build_decimal),
    "uuid": (1, (_INT,), _build_uuid),
    "fraction": (2, (_INT, _INT), _build_fraction),
    "purepath": (1, (_STR,), _build_purepath),
    "path": (1, (_STR,), _build_path),
    "enum": (3, (_STR, _STR, _STR), _build_enum),
    "value": (3, (_STR, _STR, None), _build_user),
}


#: Tags whose parts may hold other values (a tzinfo, an offset, a registered type's data): only
#: their parts are searched for placeholders; elsewhere one fails the part's type check.
NESTING = frozenset(("time", "datetime", "timezone", "value"))


# Placeholders --------------------------------------------------------------------------------
class Placeholder:
    """What the unpickler holds where a value goes, until the whole body is read.

    A body's opcodes may apply to any object on the unpickler's stack: set attributes (BUILD),
    call it (REDUCE), append to it.  A real enum member is shared by the whole process, so the
    unpickler only ever holds this inert object, which has no attributes, cannot be called and
    cannot be added to; :func:`substitute` puts the real values in afterwards.
    """

    __slots__ = ()


def substitute(obj: Any, values: Dict[int, Any], memo: Dict[int, Any]) -> Any:
    """``obj`` with every :class:`Placeholder` replaced by its value from ``values`` (by id).

    Lists, dicts and sets are changed in place (their identity is kept); tuples and frozensets
    are rebuilt only when an element of theirs changes.
    """
    kind = type(obj)
    if kind is Placeholder:
        return values[id(obj)]
    if kind not in _CONTAINERS:
        return obj
    key = id(obj)
    if key in memo:
        done = memo[key]
        if done is _IN_PROGRESS:
            raise StreamError("refused a body in which a tuple holding a value contains itself")
        return done
    if kind is list:
        memo[key] = obj
        for i, item in enumerate(obj):
            # Checked here rather than by a call per element: most elements are scalars.
            if type(item) in SPECIAL:
                obj[i] = substitute(item, values, memo)
        return obj
    if kind is dict:
        memo[key] = obj
        if any(type(k) in SPECIAL for k in obj):
            items: List[Any] = [
                (substitute(k, values, memo), substitute(v, values, memo)) for k, v in obj.items()
            ]
            obj.clear()
            obj.update(items)
        else:
            for k, v in obj.items():
                if type(v) in SPECIAL:
                    obj[k] = substitute(v, values, memo)
        return obj
    if kind is set:
        memo[key] = obj
        elements = [substitute(item, values, memo) for item in obj]
        obj.clear()
        obj.update(elements)
        return obj
    memo[key] = _IN_PROGRESS
    items = [substitute(item, values, memo) if type(item) in SPECIAL else item for item in obj]
    changed = any(new is not old for new, old in zip(items, obj))
    memo[key] = rebuilt = kind(items) if changed else obj
    return rebuilt


_CONTAINERS = frozenset((list, dict, set, tuple, frozenset))
SPECIAL = _CONTAINERS | {Placeholder}
_IN_PROGRESS = Placeholder()
