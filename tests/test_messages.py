"""Message bodies (trimitogen.core.messages), tested with values and bytes only.

Every body class is checked the same way: what it encodes decodes to the same fields, a body of
the wrong shape or with a field of the wrong type raises :class:`StreamError` naming the body and
the field, and no byte string or plain value makes a decoder raise anything else.
"""

from __future__ import annotations

import importlib.util
import pickle
import sys
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trimitogen.core import messages, protocol
from trimitogen.core.errors import StreamError
from trimitogen.core.messages import (
    HANDLES,
    AddRoute,
    Call,
    Cancel,
    Credit,
    DelRoute,
    GetModule,
    GetResource,
    Kill,
    LoadModule,
    LoadResource,
    Log,
    OpenChannel,
    OpenStream,
    Ready,
    ReplyError,
    ReplyOk,
    Schema,
    Shutdown,
    Spawn,
    SpawnFailed,
    SpawnOk,
    StreamEnd,
    StreamItems,
    decode_reply,
    decode_spawn_answer,
    decode_stream,
)
from trimitogen.core.protocol import FrameDecoder, Message, dumps, frame

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)

MAGIC = importlib.util.MAGIC_NUMBER

RECORD = ("pkg.mod", False, "/src/pkg/mod.py", True, b"source = 1\n", b"\x00" * 16, "stamp")

#: Valid field values for every body class (several per class where a field has choices).
VALID: dict[type[Schema], list[tuple[Any, ...]]] = {
    Ready: [(4242, sys.hexversion, MAGIC), (1, 0x030800F0, b"")],
    Call: [
        ("os.path", "join", ("a", "b"), {}),
        ("pkg.mod", "Cls.method", (1, None, [2.5]), {"flag": True, "data": b"\xff"}),
    ],
    ReplyOk: [(True, None), (True, {"nested": [(1, b"x")]})],
    ReplyError: [(False, "builtins.ValueError", "bad value", "Traceback ...\n")],
    Log: [("stdout", "", 20, "a line"), ("log", "trimitogen.child", 40, "")],
    GetModule: [("pkg.sub.mod",)],
    LoadModule: [([RECORD],), ((),), ([RECORD, RECORD],)],
    Spawn: [
        (
            {"kind": "local", "python": ""},
            7,
            "local.7",
            b"payload",
            {"log_level": 20},
            30.0,
            ["secret"],
            None,
        ),
        ({"kind": "sudo"}, 8, "sudo", b"", {}, 5, (), ("pkg", "other")),
    ],
    SpawnOk: [(True, 99, sys.hexversion, MAGIC)],
    SpawnFailed: [
        (False, "password", "authentication", "the password was refused", ["line 1"]),
        (False, "connect", "spawn", "no such file", ()),
    ],
    Kill: [(12,)],
    AddRoute: [(3,)],
    DelRoute: [([3, 4], "its process exited with status 1"), ((), "")],
    Cancel: [(1000,), (2**40,)],
    OpenStream: [("os", "walk", ("/",), {}, 64, 1 << 20)],
    OpenChannel: [("pkg.mod", "serve", (1,), {"k": 2}, 64, 1 << 20)],
    Credit: [(1000, 32, 65536)],
    StreamEnd: [("end",)],
    StreamItems: [("items", [1]), ("items", [None, b"x" * 70000, {"k": (1, 2)}])],
    GetResource: [("certifi", "cacert.pem"), ("pkg.sub", "")],
    LoadResource: [
        ("certifi", "cacert.pem", "file", b"x\x9c\x03\x00\x00\x00\x00\x01", (), ""),
        ("pkg", "data", "dir", b"", ["a.txt", "sub/"], ""),
        ("pkg", "../x", "refused", b"", [], "its path has a '..' part"),
    ],
}

BODY_CLASSES = list(VALID)

CASES = [(cls, values) for cls, examples in VALID.items() for values in examples]
CASE_IDS = ["%s-%d" % (cls.__name__, i) for cls, ex in VALID.items() for i in range(len(ex))]

#: Every way a body reaches a decoder: each class's decode, and the two answer decoders.
DECODERS: list[tuple[str, Callable[[Any], Any], tuple[type[Schema], ...]]] = [
    (cls.__name__, cls.decode, (cls,)) for cls in BODY_CLASSES
] + [
    ("decode_reply", decode_reply, (ReplyOk, ReplyError)),
    ("decode_spawn_answer", decode_spawn_answer, (SpawnOk, SpawnFailed)),
    ("decode_stream", decode_stream, (ReplyOk, ReplyError, StreamEnd, StreamItems)),
]

#: One value of each plain type, to find values a field check refuses.
CANDIDATES: list[Any] = [None, True, False, 0, 1.5, "text", b"bytes", (), [], {}, ("x",), [1]]


def encoded(cls: type[Schema], values: tuple[Any, ...]) -> bytes:
    return bytes(cls(*values).encode())


def assert_valid(obj: Any, classes: tuple[type[Schema], ...]) -> None:
    """``obj`` is an instance of one of ``classes`` and every field passes its check."""
    assert type(obj) in classes
    fields = obj.astuple()
    assert len(fields) == len(obj.FIELDS)
    for (name, check), value in zip(obj.FIELDS, fields, strict=True):
        assert check(value), "field %s=%r passed decoding but fails its check" % (name, value)


# -- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "values"), CASES, ids=CASE_IDS)
def test_encode_then_decode_gives_the_same_fields(
    cls: type[Schema], values: tuple[Any, ...]
) -> None:
    obj = cls(*values)
    decoded = cls.decode(bytes(obj.encode()))
    assert type(decoded) is cls
    assert decoded.astuple() == values == obj.astuple()
    for (name, _check), value in zip(cls.FIELDS, values, strict=True):
        assert type(getattr(decoded, name)) is type(value)


@pytest.mark.parametrize(("cls", "values"), CASES, ids=CASE_IDS)
def test_pack_is_encode_without_the_object(cls: type[Schema], values: tuple[Any, ...]) -> None:
    assert bytes(cls.pack(*values)) == bytes(cls(*values).encode()) == dumps(values)


@pytest.mark.parametrize(("cls", "values"), CASES, ids=CASE_IDS)
def test_a_framed_body_decodes_from_the_received_frame(
    cls: type[Schema], values: tuple[Any, ...]
) -> None:
    handle = cls.HANDLE or protocol.FIRST_REPLY_HANDLE
    parts = Message(5, 0, handle, 0, cls.pack(*values)).frame_parts()
    decoder = FrameDecoder()
    decoder.receive_data(b"".join(bytes(part) for part in parts))
    [msg] = decoder.messages()
    assert msg.handle == handle
    assert cls.decode(msg.data).astuple() == values


def test_a_large_body_decodes_in_place_from_the_receive_buffer() -> None:
    record = (*RECORD[:4], b"x" * (FrameDecoder.DIRECT_READ_MIN * 3), *RECORD[5:])
    wire = frame(Message(5, 0, protocol.HANDLE_LOAD_MODULE, 0, LoadModule.pack([record])))
    decoder = FrameDecoder()
    decoder.receive_data(wire[: protocol.HEADER_SIZE + 10])
    view = decoder.body_view()
    assert view is not None
    rest = wire[protocol.HEADER_SIZE + 10 :]
    view[: len(rest)] = rest
    decoder.body_filled(len(rest))
    [msg] = decoder.messages()
    assert type(msg.data) is not bytes  # the receive buffer itself, not a copy
    assert LoadModule.decode(msg.data).records == [record]


def test_decoded_sequences_keep_their_type() -> None:
    assert type(DelRoute.decode(dumps(([1], "r"))).ids) is list
    assert type(DelRoute.decode(dumps(((1,), "r"))).ids) is tuple


def test_repr_names_every_field() -> None:
    assert repr(Kill(3)) == "Kill(context_id=3)"
    assert repr(DelRoute([1, 2], "gone")) == "DelRoute(ids=[1, 2], reason='gone')"


# -- the handle table -----------------------------------------------------------------------------


def test_handles_table_matches_the_protocol_numbers() -> None:
    for name, (number, direction, cls) in HANDLES.items():
        assert number == getattr(protocol, "HANDLE_" + name)
        assert number == cls.HANDLE
        assert "→" in direction
    assert len({number for number, _, _ in HANDLES.values()}) == len(HANDLES)
    answers = {ReplyOk, ReplyError, SpawnOk, SpawnFailed, StreamEnd, StreamItems}
    on_handles: set[type[Any]] = {cls for _, _, cls in HANDLES.values()}
    assert on_handles == (set(BODY_CLASSES) - answers) | {Shutdown}


def test_replies_travel_on_allocated_handles() -> None:
    for cls in (ReplyOk, ReplyError, SpawnOk, SpawnFailed):
        assert cls.HANDLE == 0
        assert cls.describe() == "%s (a reply)" % cls.__name__


def test_a_stream_handle_carries_an_item_a_batch_or_the_end() -> None:
    item = decode_stream(dumps((True, ("items", [1]))))
    assert type(item) is ReplyOk
    assert item.value == ("items", [1])
    batch = decode_stream(dumps(("items", [1, "two"])))
    assert type(batch) is StreamItems
    assert batch.values == [1, "two"]
    assert type(decode_stream(dumps(("end",)))) is StreamEnd
    with pytest.raises(StreamError, match="field 'values' must be a list of at least one item"):
        decode_stream(dumps(("items", [])))
    with pytest.raises(StreamError, match="field 'values'"):
        decode_stream(dumps(("items", (1, 2))))


def test_shutdown_has_no_body() -> None:
    assert Shutdown.encode() == b""
    assert Shutdown.FIELDS == ()


def test_describe_names_class_and_handle() -> None:
    assert Ready.describe() == "Ready (handle 1)"
    assert DelRoute.describe() == "DelRoute (handle 10)"


# -- wrong shapes and wrong types -----------------------------------------------------------------


def shape_errors(cls: type[Schema]) -> list[Any]:
    n = len(cls.FIELDS)
    good = VALID[cls][0]
    return [None, 1, "text", list(good), {}, good[:-1], (*good, None), ()] if n else []


@pytest.mark.parametrize("cls", BODY_CLASSES, ids=lambda c: c.__name__)
def test_a_body_of_the_wrong_shape_names_the_body_and_its_fields(cls: type[Schema]) -> None:
    for value in shape_errors(cls):
        with pytest.raises(StreamError) as info:
            cls.decode(dumps(value))
        text = str(info.value)
        assert cls.describe() in text
        assert "expected a tuple of %d fields" % len(cls.FIELDS) in text
        assert ", ".join(name for name, _ in cls.FIELDS) in text


def test_wrong_shape_says_what_arrived() -> None:
    with pytest.raises(StreamError, match=r"got a list$"):
        Ready.decode(dumps([1, 2, b""]))
    with pytest.raises(StreamError, match=r"got a tuple of 2$"):
        Ready.decode(dumps((1, 2)))
    with pytest.raises(StreamError, match=r"got a NoneType$"):
        Kill.decode(dumps(None))


FIELD_CASES = [
    (cls, index, name)
    for cls in BODY_CLASSES
    for index, (name, check) in enumerate(cls.FIELDS)
    if not all(check(candidate) for candidate in CANDIDATES)
]


@pytest.mark.parametrize(
    ("cls", "index", "name"),
    FIELD_CASES,
    ids=["%s.%s" % (cls.__name__, name) for cls, _, name in FIELD_CASES],
)
def test_a_field_of_the_wrong_type_names_the_body_and_the_field(
    cls: type[Schema], index: int, name: str
) -> None:
    check = cls.FIELDS[index][1]
    wrong = [candidate for candidate in CANDIDATES if not check(candidate)]
    assert wrong
    for candidate in wrong:
        values = list(VALID[cls][0])
        values[index] = candidate
        with pytest.raises(StreamError) as info:
            cls.decode(dumps(tuple(values)))
        text = str(info.value)
        assert text.startswith("malformed %s body: field %r must be " % (cls.describe(), name))
        assert text.endswith("got a %s" % type(candidate).__name__) or text.endswith(
            "got a tuple of %d" % len(candidate)
        )


def test_only_the_value_field_of_an_answer_takes_anything() -> None:
    untyped = [
        (cls.__name__, name)
        for cls in BODY_CLASSES
        for name, check in cls.FIELDS
        if all(check(candidate) for candidate in CANDIDATES)
    ]
    assert untyped == [("ReplyOk", "value")]


BOOL_FOR_INT: list[tuple[type[Schema], tuple[Any, ...]]] = [
    (Ready, (True, 1, b"")),
    (Ready, (1, False, b"")),
    (Log, ("stdout", "", True, "")),
    (Kill, (True,)),
    (AddRoute, (False,)),
    (SpawnOk, (True, True, 1, b"")),
    (Spawn, ({}, True, "n", b"", {}, 1.0, [], None)),
    (Spawn, ({}, 1, "n", b"", {}, True, [], None)),
]


@pytest.mark.parametrize(("cls", "values"), BOOL_FOR_INT, ids=lambda v: getattr(v, "__name__", ""))
def test_bool_is_not_an_int(cls: type[Schema], values: tuple[Any, ...]) -> None:
    with pytest.raises(StreamError, match="got a bool"):
        cls.decode(dumps(values))


def test_bool_is_not_an_int_inside_a_sequence() -> None:
    with pytest.raises(StreamError, match=r"DelRoute \(handle 10\) body: field 'ids'"):
        DelRoute.decode(dumps(([1, True], "")))


def test_decode_takes_what_encode_returns() -> None:
    assert Kill.decode(Kill(3).encode()).context_id == 3


def test_ok_flags_are_exactly_true_or_false() -> None:
    with pytest.raises(StreamError, match=r"ReplyOk \(a reply\) body: field 'ok'"):
        ReplyOk.decode(dumps((1, "value")))
    with pytest.raises(StreamError, match=r"ReplyError \(a reply\) body: field 'ok'"):
        ReplyError.decode(dumps((0, "t", "m", "tb")))
    with pytest.raises(StreamError, match=r"SpawnFailed \(a reply\) body: field 'ok'"):
        SpawnFailed.decode(dumps((True, "connect", "spawn", "r", [])))


def test_module_records_are_checked_field_by_field() -> None:
    for index in range(len(RECORD)):
        bad = list(RECORD)
        bad[index] = 1 if type(RECORD[index]) is bool else None
        with pytest.raises(StreamError, match=r"LoadModule \(handle 6\) body: field 'records'"):
            LoadModule.decode(dumps(([RECORD, tuple(bad)],)))
    with pytest.raises(StreamError, match="field 'records'"):
        LoadModule.decode(dumps(([list(RECORD)],)))  # a record is a tuple, not a list
    with pytest.raises(StreamError, match="field 'records'"):
        LoadModule.decode(dumps(([RECORD[:-1]],)))


def test_sequences_are_checked_item_by_item() -> None:
    with pytest.raises(StreamError, match="field 'deny'"):
        Spawn.decode(dumps(({}, 1, "n", b"", {}, 1.0, ["ok", b"not str"], None)))
    with pytest.raises(StreamError, match="field 'allow'"):
        Spawn.decode(dumps(({}, 1, "n", b"", {}, 1.0, [], "pkg")))
    with pytest.raises(StreamError, match="field 'lines'"):
        SpawnFailed.decode(dumps((False, "connect", "spawn", "r", "not a list")))
    with pytest.raises(StreamError, match="field 'ids'"):
        DelRoute.decode(dumps(({1, 2}, "a set is not a sequence")))


def test_bytes_fields_refuse_bytearray_and_str_fields_refuse_bytes() -> None:
    with pytest.raises(StreamError, match="field 'magic'"):
        Ready.decode(dumps((1, 2, bytearray(b"m"))))
    with pytest.raises(StreamError, match="field 'name'"):
        GetModule.decode(dumps((b"pkg",)))


def test_expected_types_are_named_in_plain_words() -> None:
    cases: list[tuple[type[Schema], tuple[Any, ...]]] = [
        (ReplyOk, (False, None)),
        (ReplyError, (True, "t", "m", "tb")),
        (Spawn, ({}, 1, "n", b"", {}, "soon", [], None)),
    ]
    for cls, values in cases:
        with pytest.raises(StreamError) as info:
            cls.decode(dumps(values))
        assert " must be _" not in str(info.value)


# -- the answer decoders --------------------------------------------------------------------------


def test_decode_reply_tells_a_value_from_an_error() -> None:
    ok = decode_reply(dumps((True, [1, 2])))
    assert type(ok) is ReplyOk
    assert ok.value == [1, 2]
    error = decode_reply(dumps((False, "builtins.KeyError", "'k'", "tb")))
    assert type(error) is ReplyError
    assert (error.type_name, error.message, error.traceback) == ("builtins.KeyError", "'k'", "tb")


@pytest.mark.parametrize("value", [None, (), (True,), (True, 1, 2), [True, 1], "x", (False,) * 5])
def test_decode_reply_refuses_what_is_not_a_reply(value: Any) -> None:
    with pytest.raises(StreamError, match="the body is not a reply"):
        decode_reply(dumps(value))


def test_decode_reply_names_the_field_of_a_reply_of_the_right_length() -> None:
    with pytest.raises(StreamError, match=r"ReplyOk \(a reply\) body: field 'ok'"):
        decode_reply(dumps((False, 1)))
    with pytest.raises(StreamError, match=r"ReplyError \(a reply\) body: field 'message'"):
        decode_reply(dumps((False, "t", 1, "tb")))


def test_decode_spawn_answer_tells_success_from_failure() -> None:
    ok = decode_spawn_answer(dumps((True, 5, 0x030C00F0, MAGIC)))
    assert type(ok) is SpawnOk
    assert (ok.pid, ok.hexversion, ok.magic) == (5, 0x030C00F0, MAGIC)
    failed = decode_spawn_answer(dumps((False, "hostkey", "host key", "refused", ["x"])))
    assert type(failed) is SpawnFailed
    assert (failed.kind, failed.phase, failed.reason, failed.lines) == (
        "hostkey",
        "host key",
        "refused",
        ["x"],
    )


@pytest.mark.parametrize(
    ("value", "body"),
    [
        ((True, 1, 2), "SpawnOk"),
        ((True, 1, 2, "magic"), "SpawnOk"),
        ((), "SpawnFailed"),
        (None, "SpawnFailed"),
        ((1, 2, 3, 4), "SpawnFailed"),
        ((False, "connect", "spawn", "r"), "SpawnFailed"),
    ],
)
def test_decode_spawn_answer_names_the_answer_it_expected(value: Any, body: str) -> None:
    with pytest.raises(StreamError, match=r"malformed %s \(a reply\) body" % body):
        decode_spawn_answer(dumps(value))


# -- bytes that are not a body --------------------------------------------------------------------


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("ran",))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        dumps((1, 2, b"m"))[:-3],
        pickle.dumps((1, 2, _Evil())),
        pickle.dumps((1, 2, bytearray(b"m")), protocol=2),
    ],
    ids=["empty", "garbage", "truncated", "global", "protocol-2-bytearray"],
)
def test_bytes_that_are_no_valid_body_raise_stream_error(data: bytes) -> None:
    for _name, decode, _classes in DECODERS:
        with pytest.raises(StreamError):
            decode(data)


def _huge(opcode: bytes, size: int, width: int) -> bytes:
    return b"\x80\x05" + opcode + size.to_bytes(width, "little") + b"."


@pytest.mark.parametrize(
    "data",
    [
        _huge(b"\x96", 2**62, 8),  # BYTEARRAY8
        _huge(b"\x96", 2**30, 8),
        _huge(b"\x8e", 2**62, 8),  # BINBYTES8
        _huge(b"\x8d", 2**62, 8),  # BINUNICODE8
        _huge(b"B", 2**32 - 1, 4),  # BINBYTES
        _huge(b"\x8b", 2**31 - 1, 4),  # LONG4
        _huge(b"\x95", 2**62, 8),  # FRAME
    ],
    ids=["bytearray8", "bytearray8-1g", "binbytes8", "binunicode8", "binbytes", "long4", "frame"],
)
def test_a_length_larger_than_the_body_is_a_stream_error(data: bytes) -> None:
    for _name, decode, _classes in DECODERS:
        with pytest.raises(StreamError, match="malformed message body"):
            decode(data)


# -- properties -----------------------------------------------------------------------------------

MUTATION = st.tuples(
    st.sampled_from(["flip", "insert", "delete", "truncate"]),
    st.integers(min_value=0, max_value=1 << 16),
    st.integers(min_value=0, max_value=255),
)


def mutate(data: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, where, byte in ops:
        at = where % (len(buf) + 1)
        if kind == "insert":
            buf[at:at] = bytes([byte])
        elif not buf:
            continue
        elif kind == "flip":
            buf[at % len(buf)] ^= 1 << (byte % 8)
        elif kind == "delete":
            del buf[at % len(buf)]
        else:
            del buf[at:]
    return bytes(buf)


def decode_or_stream_error(
    decode: Callable[[Any], Any], classes: tuple[type[Schema], ...], data: bytes
) -> None:
    try:
        obj = decode(data)
    except StreamError:
        return
    assert_valid(obj, classes)


@PROPERTY_SETTINGS
@given(
    case=st.sampled_from(CASES),
    ops=st.lists(MUTATION, min_size=1, max_size=6),
)
def test_mutated_bodies_decode_or_raise_stream_error(
    case: tuple[type[Schema], tuple[Any, ...]], ops: list[tuple[str, int, int]]
) -> None:
    cls, values = case
    data = mutate(encoded(cls, values), ops)
    decode_or_stream_error(cls.decode, (cls,), data)
    if cls in (ReplyOk, ReplyError):
        decode_or_stream_error(decode_reply, (ReplyOk, ReplyError), data)
    if cls in (SpawnOk, SpawnFailed):
        decode_or_stream_error(decode_spawn_answer, (SpawnOk, SpawnFailed), data)


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
KEYS = st.none() | st.booleans() | st.integers() | st.text(max_size=10) | st.binary(max_size=10)
PLAIN = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5).map(tuple)
        | st.lists(inner, max_size=5)
        | st.dictionaries(KEYS, inner, max_size=5)
    ),
    max_leaves=20,
)


def near_miss(case: tuple[type[Schema], tuple[Any, ...]]) -> st.SearchStrategy[Any]:
    """A valid body of the case's class with one field replaced by an arbitrary plain value."""
    _cls, values = case
    return st.tuples(st.integers(0, len(values) - 1), PLAIN).map(
        lambda change: (*values[: change[0]], change[1], *values[change[0] + 1 :])
    )


@PROPERTY_SETTINGS
@given(
    value=PLAIN
    | st.sampled_from(CASES).flatmap(near_miss)
    | st.sampled_from(BODY_CLASSES).flatmap(lambda cls: st.tuples(*[PLAIN] * len(cls.FIELDS)))
)
def test_arbitrary_plain_values_decode_or_raise_stream_error(value: Any) -> None:
    data = dumps(value)
    for _name, decode, classes in DECODERS:
        decode_or_stream_error(decode, classes, data)


def test_every_body_class_is_covered() -> None:
    schemas = {
        obj
        for obj in vars(messages).values()
        if isinstance(obj, type) and issubclass(obj, Schema) and obj is not Schema
    }
    assert schemas == set(BODY_CLASSES)


def test_a_resource_answer_has_one_of_the_known_kinds() -> None:
    body: tuple[Any, ...] = ("pkg", "a.txt", "symlink", b"", [], "")
    with pytest.raises(
        StreamError, match=r"LoadResource \(handle 16\) body: field 'kind' must be one"
    ):
        LoadResource.decode(dumps(body))
    with pytest.raises(StreamError, match="field 'kind'"):
        LoadResource.decode(dumps(("pkg", "a.txt", b"file", b"", [], "")))
