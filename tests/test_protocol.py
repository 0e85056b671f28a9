"""Framing and restricted serialization (trimitogen.core.protocol), tested with bytes only."""

from __future__ import annotations

import collections
import enum
import itertools
import mmap
import os
import pathlib
import pickle
import shlex
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trimitogen import StreamError
from trimitogen.core import protocol
from trimitogen.core.protocol import FrameDecoder, Message, dumps, frame, loads

PLAIN_TYPES = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    bytearray,
    tuple,
    list,
    dict,
    set,
    frozenset,
)

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)


def canonical(obj: Any) -> Any:
    """A comparable picture of ``obj`` that records the exact type of every value.

    Floats are compared by their bits, so ``nan`` equals ``nan`` and ``-0.0`` differs from
    ``0.0``; sets are compared without regard to order.  Anything that is not plain data fails.
    """
    kind = type(obj)
    if kind is float:
        return ("float", struct.pack(">d", obj))
    if kind is complex:
        return ("complex", struct.pack(">dd", obj.real, obj.imag))
    if kind in (tuple, list):
        return (kind.__name__, tuple(canonical(item) for item in obj))
    if kind is dict:
        return ("dict", tuple((canonical(k), canonical(v)) for k, v in obj.items()))
    if kind in (set, frozenset):
        return (kind.__name__, tuple(sorted(repr(canonical(item)) for item in obj)))
    if kind is bytearray:
        return ("bytearray", bytes(obj))
    assert kind in PLAIN_TYPES, "not plain data: %r of type %s" % (obj, kind)
    return (kind.__name__, obj)


def assert_plain(obj: Any) -> None:
    """Fail unless ``obj`` and everything inside it is one of the plain types (cycles allowed)."""
    seen: set[int] = set()
    pending = [obj]
    while pending:
        item = pending.pop()
        assert type(item) in PLAIN_TYPES, "not plain data: %r of type %s" % (item, type(item))
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, (tuple, list, set, frozenset)):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())


NESTED: dict[Any, Any] = {
    "calls": [("mod", "fn", (1, 2.5, None), {"flag": True})],
    (1, frozenset({b"x"})): {"set": {1, 2}, "bytes": bytearray(b"\x00")},
    None: [[[[[[]]]]]],
}

ROUND_TRIP_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2**63,
    -(2**63) - 1,
    2**100_000 + 12345,
    -(7**5000),
    0.0,
    -0.0,
    1.5,
    5e-324,
    1.7976931348623157e308,
    float("inf"),
    float("-inf"),
    float("nan"),
    0j,
    complex(1.5, -2.25),
    complex(float("nan"), float("-inf")),
    "",
    "text",
    "ünïcødé \U0001f600 \x00",
    "\ud800 lone surrogate",
    "x" * 100_000,
    b"",
    b"\x00\xff",
    bytes(range(256)),
    bytearray(),
    bytearray(b"mutable"),
    (),
    (1,),
    (1, "a", b"b", 2.0),
    [],
    [1, [2, [3, []]]],
    {},
    {"a": 1, 2: [3], (4, 5): {6}},
    set(),
    {1, "a", (2, 3), frozenset({4})},
    frozenset(),
    frozenset({1, frozenset({2, (3,)})}),
    NESTED,
]


@pytest.mark.parametrize("value", ROUND_TRIP_VALUES, ids=lambda v: type(v).__name__)
def test_round_trip_preserves_value_and_exact_type(value: Any) -> None:
    assert canonical(loads(dumps(value))) == canonical(value)


#: Values whose bodies exceed FrameDecoder.DIRECT_READ_MIN, so they arrive in a mapping.
LARGE_VALUES: list[Any] = [
    bytes(200_000),
    ["y" * 70_000, b"z" * 70_000, bytearray(b"w" * 70_000)],
    {"key": "é" * 40_000},
    set(range(20_000)),
    tuple(float(i) for i in range(10_000)),
]


def as_mmap(data: bytes) -> Any:
    """``data`` in an anonymous mapping, as FrameDecoder holds a large received body (an empty
    mapping cannot exist: an empty body is returned as a bytearray)."""
    if not data:
        return bytearray()
    buf = mmap.mmap(-1, len(data))
    buf[:] = data
    return buf


#: The kinds of buffer a body may be handed to loads() in.
BUFFERS: dict[str, Callable[[bytes], Any]] = {
    "bytes": bytes,
    "bytearray": bytearray,
    "memoryview": memoryview,
    "mmap": as_mmap,
}


@pytest.mark.parametrize("convert", BUFFERS.values(), ids=list(BUFFERS))
@pytest.mark.parametrize("value", ROUND_TRIP_VALUES + LARGE_VALUES, ids=lambda v: type(v).__name__)
def test_loads_accepts_any_buffer(value: Any, convert: Callable[[bytes], Any]) -> None:
    assert canonical(loads(convert(dumps(value)))) == canonical(value)


@pytest.mark.parametrize("value", ROUND_TRIP_VALUES + LARGE_VALUES, ids=lambda v: type(v).__name__)
def test_round_trip_through_a_frame(value: Any) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(frame(Message(3, 0, protocol.HANDLE_CALL, 1000, dumps(value))))
    [msg] = decoder.messages()
    assert (msg.dst, msg.src, msg.handle, msg.reply_to, msg.flags) == (3, 0, 2, 1000, 0)
    assert canonical(msg.unpickle()) == canonical(value)


@pytest.mark.parametrize("value", ROUND_TRIP_VALUES + LARGE_VALUES, ids=lambda v: type(v).__name__)
def test_round_trip_through_a_frame_read_in_place(value: Any) -> None:
    data = frame(Message(3, 0, protocol.HANDLE_CALL, 1000, protocol.dumps_body(value)))
    decoder = FrameDecoder()
    decoder.receive_data(data[: protocol.HEADER_SIZE])
    view = decoder.body_view()
    if view is None:
        assert len(data) - protocol.HEADER_SIZE < FrameDecoder.DIRECT_READ_MIN
        decoder.receive_data(data[protocol.HEADER_SIZE :])
    else:
        view[:] = data[protocol.HEADER_SIZE :]
        decoder.body_filled(len(view))
    [msg] = decoder.messages()
    assert canonical(msg.unpickle()) == canonical(value)


def test_dumps_body_refers_to_large_bytes_without_copying() -> None:
    payload = bytes(range(256)) * 1024
    body = protocol.dumps_body(("result", payload))
    assert any(part is payload for part in body.parts)
    assert len(body) == len(bytes(body))
    assert bytes(body) == dumps(("result", payload))
    msg = Message(0, 5, 1000, 0, body)
    assert b"".join(msg.frame_parts()) == frame(msg)
    assert msg.unpickle() == ("result", payload)
    decoder = FrameDecoder()
    for part in msg.frame_parts():
        decoder.receive_data(part)
    [got] = decoder.messages()
    assert loads(got.data) == ("result", payload)


def test_dumps_body_copies_mutable_buffers() -> None:
    payload = bytearray(200_000)
    body = protocol.dumps_body([payload])
    payload[:5] = b"later"
    assert loads(bytes(body)) == [bytearray(200_000)]


def test_round_trip_keeps_shared_and_recursive_structure() -> None:
    shared = [1, 2]
    cyclic: list[Any] = [shared, shared]
    cyclic.append(cyclic)
    result = loads(dumps(cyclic))
    assert result[0] is result[1]
    assert result[2] is result
    assert result[0] == [1, 2]


hashable_leaves: st.SearchStrategy[Any] = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.complex_numbers()
    | st.text()
    | st.binary()
)
hashables: st.SearchStrategy[Any] = st.recursive(
    hashable_leaves,
    lambda inner: st.lists(inner, max_size=3).map(tuple) | st.frozensets(inner, max_size=3),
    max_leaves=8,
)
plain_data: st.SearchStrategy[Any] = st.recursive(
    hashable_leaves | st.binary().map(bytearray),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(hashables, inner, max_size=4)
        | st.sets(hashables, max_size=4)
        | st.frozensets(hashables, max_size=4)
    ),
    max_leaves=20,
)


@PROPERTY_SETTINGS
@given(plain_data)
def test_round_trip_property(value: Any) -> None:
    assert canonical(loads(dumps(value))) == canonical(value)


# --- framing ---------------------------------------------------------------------------------


def describe(msg: Message) -> tuple[int, int, int, int, int, bytes]:
    return (msg.dst, msg.src, msg.handle, msg.reply_to, msg.flags, bytes(msg.data))


SAMPLE_MESSAGES = [
    Message(5, 0, protocol.HANDLE_CALL, 1000, dumps(("mod", "fn", (1, "two"), {"k": b"v"}))),
    Message(0, 5, 1000, 0, b""),
    Message(7, 3, 1001, 0, dumps(list(range(40))), flags=protocol.FLAG_DEAD),
    Message(0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFC, b"\x00" * 3),
]
SAMPLE_STREAM = b"".join(frame(msg) for msg in SAMPLE_MESSAGES)
SAMPLE_EXPECTED = [describe(msg) for msg in SAMPLE_MESSAGES]
# Offsets in SAMPLE_STREAM at which each message's frame ends.
SAMPLE_ENDS = [
    sum(len(frame(msg)) for msg in SAMPLE_MESSAGES[: i + 1]) for i in range(len(SAMPLE_MESSAGES))
]


def test_frame_parts_are_header_and_body() -> None:
    msg = SAMPLE_MESSAGES[0]
    header, body = msg.frame_parts()
    assert len(header) == protocol.HEADER_SIZE
    assert header + body == frame(msg)
    assert not msg.is_dead
    assert SAMPLE_MESSAGES[2].is_dead


def test_whole_stream_decodes_in_one_feed() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(SAMPLE_STREAM)
    assert [describe(m) for m in decoder.messages()] == SAMPLE_EXPECTED
    assert decoder.pending_bytes == 0
    assert list(decoder.messages()) == []


@pytest.mark.parametrize("split", range(len(SAMPLE_STREAM) + 1))
def test_stream_split_at_any_byte_decodes_identically(split: int) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(SAMPLE_STREAM[:split])
    first = [describe(m) for m in decoder.messages()]
    assert first == [d for d, end in zip(SAMPLE_EXPECTED, SAMPLE_ENDS, strict=True) if end <= split]
    decoder.receive_data(SAMPLE_STREAM[split:])
    assert first + [describe(m) for m in decoder.messages()] == SAMPLE_EXPECTED
    assert decoder.pending_bytes == 0


def test_stream_fed_one_byte_at_a_time() -> None:
    decoder = FrameDecoder()
    decoded: list[tuple[int, int, int, int, int, bytes]] = []
    for i in range(len(SAMPLE_STREAM)):
        decoder.receive_data(SAMPLE_STREAM[i : i + 1])
        decoded.extend(describe(m) for m in decoder.messages())
        assert (decoder.pending_bytes == 0) == (i + 1 in SAMPLE_ENDS)
    assert decoded == SAMPLE_EXPECTED


def test_empty_feed_is_harmless() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"")
    decoder.receive_data(SAMPLE_STREAM[:10])
    decoder.receive_data(b"")
    decoder.receive_data(SAMPLE_STREAM[10:])
    assert [describe(m) for m in decoder.messages()] == SAMPLE_EXPECTED


@PROPERTY_SETTINGS
@given(st.lists(st.integers(0, len(SAMPLE_STREAM)), max_size=12))
def test_stream_split_anywhere_property(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(SAMPLE_STREAM)]
    decoder = FrameDecoder()
    decoded: list[tuple[int, int, int, int, int, bytes]] = []
    for start, end in itertools.pairwise(bounds):
        decoder.receive_data(SAMPLE_STREAM[start:end])
        decoded.extend(describe(m) for m in decoder.messages())
    assert decoded == SAMPLE_EXPECTED


LARGE_BODY = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4: well above DIRECT_READ_MIN


def test_large_body_is_read_in_place_through_body_view() -> None:
    msg = Message(1, 0, protocol.HANDLE_CALL, 0, LARGE_BODY)
    data = frame(msg)
    decoder = FrameDecoder()
    decoder.receive_data(data[: protocol.HEADER_SIZE + 100])
    view = decoder.body_view()
    assert view is not None
    assert len(view) == len(LARGE_BODY) - 100
    view[:5000] = LARGE_BODY[100:5100]
    decoder.body_filled(5000)
    assert list(decoder.messages()) == []
    assert decoder.pending_bytes == protocol.HEADER_SIZE + 5100
    rest = decoder.body_view()
    assert rest is not None
    assert len(rest) == len(LARGE_BODY) - 5100
    rest[:] = LARGE_BODY[5100:]
    decoder.body_filled(len(rest))
    assert decoder.body_view() is None
    [got] = decoder.messages()
    assert describe(got) == describe(msg)
    assert decoder.pending_bytes == 0


def test_large_body_completed_by_receive_data_with_following_frames() -> None:
    big = Message(1, 0, protocol.HANDLE_CALL, 0, LARGE_BODY)
    data = frame(big) + SAMPLE_STREAM
    decoder = FrameDecoder()
    decoder.receive_data(data[: protocol.HEADER_SIZE + 10])
    view = decoder.body_view()
    assert view is not None
    view[:1000] = LARGE_BODY[10:1010]
    decoder.body_filled(1000)
    # The rest of the body and every following frame arrive in one chunk.
    decoder.receive_data(data[protocol.HEADER_SIZE + 1010 :])
    assert decoder.body_view() is None
    assert [describe(m) for m in decoder.messages()] == [describe(big), *SAMPLE_EXPECTED]


@pytest.mark.parametrize("chunk", [1000, 4096, 65536, 300_001])
def test_large_body_fed_in_chunks(chunk: int) -> None:
    msgs = [
        Message(1, 0, 1000, 0, LARGE_BODY),
        SAMPLE_MESSAGES[0],
        Message(2, 0, 1001, 0, LARGE_BODY[::-1]),
    ]
    data = b"".join(frame(m) for m in msgs)
    decoder = FrameDecoder()
    decoded: list[tuple[int, int, int, int, int, bytes]] = []
    for start in range(0, len(data), chunk):
        decoder.receive_data(data[start : start + chunk])
        decoded.extend(describe(m) for m in decoder.messages())
    assert decoded == [describe(m) for m in msgs]


def test_small_pending_body_has_no_view() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(frame(SAMPLE_MESSAGES[0])[:-1])
    assert decoder.body_view() is None
    assert decoder.pending_bytes == len(frame(SAMPLE_MESSAGES[0])) - 1


def test_body_of_exactly_max_message_size_is_accepted() -> None:
    decoder = FrameDecoder(max_message_size=100)
    decoder.receive_data(frame(Message(1, 0, 1000, 0, b"x" * 100)))
    [msg] = decoder.messages()
    assert msg.data == b"x" * 100


def header(magic: int = protocol.MAGIC, version: int = protocol.VERSION, length: int = 0) -> bytes:
    return protocol.HEADER.pack(magic, version, 0, 1, 0, 1000, 0, length)


BAD_HEADERS = {
    "bad magic": (header(magic=0x4242), 1000),
    "bad version": (header(version=protocol.VERSION + 1), 1000),
    "version zero": (header(version=0), 1000),
    "too long": (header(length=1001), 1000),
    "too long for the default limit": (
        header(length=protocol.DEFAULT_MAX_MESSAGE_SIZE + 1),
        protocol.DEFAULT_MAX_MESSAGE_SIZE,
    ),
    "largest length": (header(length=0xFFFFFFFF), protocol.DEFAULT_MAX_MESSAGE_SIZE),
}


@pytest.mark.parametrize(("bad", "limit"), BAD_HEADERS.values(), ids=list(BAD_HEADERS))
def test_bad_header_fails_as_soon_as_it_is_complete(bad: bytes, limit: int) -> None:
    decoder = FrameDecoder(max_message_size=limit)
    for i in range(len(bad) - 1):
        decoder.receive_data(bad[i : i + 1])
    with pytest.raises(StreamError):
        decoder.receive_data(bad[-1:])
    assert decoder.body_view() is None


@pytest.mark.parametrize(("bad", "limit"), BAD_HEADERS.values(), ids=list(BAD_HEADERS))
def test_bad_header_after_good_frames(bad: bytes, limit: int) -> None:
    decoder = FrameDecoder(max_message_size=limit)
    with pytest.raises(StreamError):
        decoder.receive_data(SAMPLE_STREAM + bad)


@pytest.mark.parametrize(("bad", "limit"), BAD_HEADERS.values(), ids=list(BAD_HEADERS))
def test_decoder_stays_failed(bad: bytes, limit: int) -> None:
    decoder = FrameDecoder(max_message_size=limit)
    with pytest.raises(StreamError) as first:
        decoder.receive_data(bad)
    for more in (SAMPLE_STREAM, b"", frame(SAMPLE_MESSAGES[1])):
        with pytest.raises(StreamError) as again:
            decoder.receive_data(more)
        assert str(again.value) == str(first.value)
    assert list(decoder.messages()) == []


# --- what dumps() refuses ----------------------------------------------------------------------


class Colour(enum.IntEnum):
    RED = 1


class Point:
    def __init__(self, x: int) -> None:
        self.x = x


class RunsShell:
    """Pickles as a call of os.system: the classic hostile pickle."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


NOT_PLAIN: dict[str, tuple[Any, type]] = {
    "object": (object(), object),
    "instance": (Point(1), Point),
    "ordered dict": (collections.OrderedDict(a=1), collections.OrderedDict),
    "default dict": (collections.defaultdict(list), collections.defaultdict),
    "windows path": (pathlib.PureWindowsPath("c:/etc"), pathlib.PureWindowsPath),
    "builtin function": (len, type(len)),
    "function": (canonical, type(canonical)),
    "reduce to os.system": (RunsShell("true"), RunsShell),
    "message": (SAMPLE_MESSAGES[1], Message),
    "memoryview": (memoryview(b"abc"), memoryview),
    "range": (range(3), range),
    "slice": (slice(1, 2), slice),
    "exception": (ValueError("x"), ValueError),
    "the set class": (set, type),
    "the int class": (int, type),
    "the complex class": (complex, type),
    "nested in containers": ([1, {"key": (2, Point(3))}], Point),
    "as a dict key": ({range(3): 1}, range),
    "in a frozenset": (frozenset({range(3)}), range),
    "next to a value": ([Colour.RED, range(3)], range),
}


@pytest.mark.parametrize("encode", [dumps, protocol.dumps_body], ids=["dumps", "dumps_body"])
@pytest.mark.parametrize(("value", "kind"), NOT_PLAIN.values(), ids=list(NOT_PLAIN))
def test_dumps_refuses_what_is_not_plain_data(
    value: Any, kind: type, encode: Callable[[Any], object]
) -> None:
    with pytest.raises(TypeError) as info:
        encode(value)
    assert "%s.%s" % (kind.__module__, kind.__qualname__) in str(info.value)


# --- what loads() refuses ----------------------------------------------------------------------


@pytest.mark.parametrize("proto", range(pickle.HIGHEST_PROTOCOL + 1))
def test_loads_refuses_a_pickle_that_runs_os_system(proto: int, tmp_path: pathlib.Path) -> None:
    sentinel = tmp_path / "pwned"
    hostile = pickle.dumps(RunsShell("echo pwned > %s" % shlex.quote(str(sentinel))), proto)
    assert b"system" in hostile
    with pytest.raises(StreamError, match="system"):
        loads(hostile)
    decoder = FrameDecoder()
    decoder.receive_data(frame(Message(1, 0, protocol.HANDLE_CALL, 0, hostile)))
    [msg] = decoder.messages()
    with pytest.raises(StreamError):
        msg.unpickle()
    assert not sentinel.exists()


def _reduce_pickle(func: Any, *args: Any) -> bytes:
    class Call:
        def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
            return (func, args)

    return pickle.dumps(Call(), protocol=2)


HOSTILE_BODIES = {
    "eval": _reduce_pickle(eval, "1 + 1"),
    "getattr": _reduce_pickle(getattr, 1, "real"),
    "Point instance": pickle.dumps(Point(1), protocol=0),
    "Point instance protocol 5": pickle.dumps(Point(1), protocol=5),
    "OrderedDict": pickle.dumps(collections.OrderedDict(a=1), protocol=5),
    "int enum": pickle.dumps(Colour.RED, protocol=5),
    "global opcode": b"cos\nsystem\n(S'true'\ntR.",
    "inst opcode": b"(S'true'\nios\nsystem\n.",
    "extension code": b"\x80\x02\x82\x01.",
    "persistent id": b"\x80\x02U\x01xQ.",
}


@pytest.mark.parametrize("body", HOSTILE_BODIES.values(), ids=list(HOSTILE_BODIES))
def test_loads_refuses_globals_outside_the_allow_list(body: bytes) -> None:
    with pytest.raises(StreamError):
        loads(body)


MALFORMED_BODIES = {
    "empty": b"",
    "truncated": dumps([1, 2, 3])[:-3],
    "no stop": dumps("abc")[:-1],
    "garbage": b"\xff\xfe\xfd",
    "stack underflow": b"\x80\x05a.",
    "unhashable set item": b"\x80\x05\x8f(]\x90.",
}


@pytest.mark.parametrize("body", MALFORMED_BODIES.values(), ids=list(MALFORMED_BODIES))
def test_loads_turns_malformed_bodies_into_stream_error(body: bytes) -> None:
    with pytest.raises(StreamError):
        loads(body)


# Bodies that name only allowed globals or use only protocol-5 opcodes, but that unpickle to
# something other than plain data.
CRAFTED_BODIES = {
    "bare complex class": b"\x80\x05\x8c\x08builtins\x8c\x07complex\x93.",
    "bare set class": b"\x80\x05\x8c\x08builtins\x8c\x03set\x93.",
    "bare bytearray class in a list": b"\x80\x05]\x8c\x08builtins\x8c\tbytearray\x93a.",
    "readonly buffer of a bytearray": b"\x80\x05\x96\x01\x00\x00\x00\x00\x00\x00\x00a\x98.",
}


@pytest.mark.parametrize("body", CRAFTED_BODIES.values(), ids=list(CRAFTED_BODIES))
def test_loads_returns_only_plain_data(body: bytes) -> None:
    try:
        value = loads(body)
    except StreamError:
        return
    assert_plain(value)


# --- hostile and random input, property-based --------------------------------------------------


def feed_all(decoder: FrameDecoder, data: bytes, cuts: list[int]) -> list[Message]:
    """Feed ``data`` cut at ``cuts``; only StreamError may escape, and then the decoder stays
    failed."""
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    decoded: list[Message] = []
    try:
        for start, end in itertools.pairwise(bounds):
            decoder.receive_data(data[start:end])
            decoded.extend(decoder.messages())
    except StreamError:
        with pytest.raises(StreamError):
            decoder.receive_data(SAMPLE_STREAM)
    return decoded


def check_decoded(decoded: list[Message], limit: int) -> None:
    for msg in decoded:
        assert isinstance(msg, Message)
        assert len(msg.data) <= limit
        try:
            value = msg.unpickle()
        except StreamError:
            continue
        assert_plain(value)


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            del data[pos:]
    return bytes(data)


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    values = draw(st.lists(plain_data, min_size=1, max_size=3))
    original = b"".join(
        frame(Message(i, i + 1, 1000 + i, i, dumps(value))) for i, value in enumerate(values)
    )
    return draw(mutated(original))


@st.composite
def mutated_bodies(draw: st.DrawFn) -> bytes:
    return draw(mutated(dumps(draw(plain_data))))


LIMIT = 256 * 1024  # above DIRECT_READ_MIN, small enough for a fast test


@PROPERTY_SETTINGS
@given(st.binary(max_size=512), st.lists(st.integers(0, 512), max_size=8))
def test_random_bytes_fail_cleanly_or_wait(data: bytes, cuts: list[int]) -> None:
    check_decoded(feed_all(FrameDecoder(LIMIT), data, cuts), LIMIT)


@PROPERTY_SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes_after_a_valid_header(data: bytes) -> None:
    prefix = header(length=len(data) // 2)
    check_decoded(feed_all(FrameDecoder(LIMIT), prefix + data, []), LIMIT)


@PROPERTY_SETTINGS
@given(mutated_frames(), st.lists(st.integers(0, 4096), max_size=8))
def test_mutated_frames_fail_cleanly_or_wait(data: bytes, cuts: list[int]) -> None:
    check_decoded(feed_all(FrameDecoder(LIMIT), data, cuts), LIMIT)


buffers = st.sampled_from(list(BUFFERS.values()))


@PROPERTY_SETTINGS
@given(st.binary(max_size=256), buffers)
def test_loads_of_random_bytes(data: bytes, convert: Callable[[bytes], Any]) -> None:
    try:
        value = loads(convert(data))
    except StreamError:
        return
    assert_plain(value)


@PROPERTY_SETTINGS
@given(mutated_bodies(), buffers)
def test_loads_of_mutated_bodies(data: bytes, convert: Callable[[bytes], Any]) -> None:
    try:
        value = loads(convert(data))
    except StreamError:
        return
    assert_plain(value)


def test_bytearray_is_rebuilt_only_from_bytes() -> None:
    # Protocol 4 has no opcode for bytearray: its class is called with the bytes to copy.
    for value in (bytearray(), bytearray(b"abc"), [bytearray(3), 1 + 2j, {b"k": bytearray(b"v")}]):
        got = loads(dumps(value))
        assert got == value
        assert [type(x) for x in got] == [type(x) for x in value]
    # bytearray(2**31 - 1) would allocate 2 GiB for a body of 32 bytes.
    sized = b"\x80\x04\x8c\x08builtins\x8c\tbytearray\x93J\xff\xff\xff\x7f\x85R."
    with pytest.raises(StreamError, match="calls bytearray with int"):
        loads(sized)
    with pytest.raises(TypeError, match=r"cannot send an object of type builtins\.type"):
        dumps([bytearray(1), bytearray])


def test_every_body_is_written_with_a_protocol_python_3_6_reads() -> None:
    for value in ([1, "a"], bytearray(b"x"), {1, 2}, frozenset({3}), (1 + 2j,)):
        body = dumps(value)
        assert body[:2] == b"\x80\x04"
        assert pickle.loads(body) == value
