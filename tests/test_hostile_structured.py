"""Hostile children, structure-aware: well-framed messages of every handle, with bodies of wrong
shapes and types, sent by a real child process.

hypothesis builds each message from the schemas in :mod:`trimitogen.core.messages`: bodies that
are valid, valid but for one field, of any other shape, hostile pickles (globals that would run
code, allocation bombs, persistent ids that would import), truncated pickles and plain garbage,
on every well-known handle, on reply handles nobody waits for, and as the answer to a waiting
call.  One child (tests/hostile_child.py in "relay" mode) sends them all, one per example.
After each, the master's reader still runs, nothing ran in the master, a message the master did
not act on left a log line naming it, and an honest call is answered.
"""

from __future__ import annotations

import collections
import logging
import os
import pickle
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import trimitogen as tm
from tests import hostile_child as hc
from tests import remote_helpers as rh
from tests.conftest import WAIT, MasterOnly
from trimitogen.core.messages import (
    HANDLES,
    RESOURCE_KINDS,
    GetModule,
    Log,
    ReplyError,
    ReplyOk,
    Schema,
    SpawnFailed,
    SpawnOk,
)
from trimitogen.core.protocol import FIRST_REPLY_HANDLE, FLAG_DEAD, HANDLE_GET_MODULE, HANDLE_LOG

HOSTILE = str(Path(__file__).with_name("hostile_child.py"))
NAME = "hostile-structured"
#: Examples per run: each is one message and two round trips to the child, a few ms.
EXAMPLES = 1000
#: What the master may say when it does not act on a message.
DROP_WORDS = ("dropped", "malformed", "refused", "ignored", "could not handle")


class Reduce:
    """Pickles as a call of ``func(*args)``: what a hostile peer would put in a body."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (self.func, self.args)


def hostile_objects(sentinel: Path) -> list[Any]:
    """Objects whose unpickling would run code, import a module or allocate without bound."""
    touch = "open(%r, 'w').close()" % str(sentinel)
    return [
        Reduce(os.system, "touch " + str(sentinel)),
        Reduce(exec, touch),
        Reduce(eval, "__import__('smuggled')"),
        Reduce(__import__, "smuggled"),
        Reduce(bytearray, 1 << 30),
        Reduce(getattr, Reduce(__import__, "os"), "system"),
        hc.Persistent(("enum", "smuggled", "Evil", "X")),
        hc.Persistent(("value", "smuggled.Evil", "smuggled", 1)),
        hc.Persistent(("date", Reduce(os.system, "touch " + str(sentinel)), 1, 1)),
        hc.Persistent("not a tuple"),
    ]


def plain_values(hostile: list[Any]) -> st.SearchStrategy[Any]:
    """Any value the restricted unpickler accepts, with hostile objects among the leaves."""
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=20),
        st.binary(max_size=20),
        st.sampled_from(hostile),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.lists(inner, max_size=4).map(tuple),
            st.dictionaries(st.text(max_size=5), inner, max_size=3),
            st.frozensets(st.integers(), max_size=3),
        ),
        max_leaves=8,
    )


_module_record = st.tuples(
    st.text(max_size=10),
    st.booleans(),
    st.text(max_size=10),
    st.booleans(),
    st.binary(max_size=10),
    st.binary(max_size=10),
    st.text(max_size=10),
)

#: A valid value for each field check of the schemas, by the check's name.
VALID_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "int": st.integers(min_value=-(2**40), max_value=2**40),
    "str": st.text(max_size=30),
    "bytes": st.binary(max_size=30),
    "tuple": st.lists(st.integers(), max_size=3).map(tuple),
    "dict": st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    "int or float": st.one_of(st.integers(), st.floats(allow_nan=False)),
    "True": st.just(True),
    "False": st.just(False),
    "_any": st.integers(),
    "sequence of str": st.lists(st.text(max_size=5), max_size=3),
    "None or sequence of str": st.one_of(st.none(), st.lists(st.text(max_size=5), max_size=3)),
    "sequence of int": st.lists(st.integers(min_value=0, max_value=2**32 - 1), max_size=3),
    "sequence of module record": st.lists(_module_record, max_size=2),
    "one of %s" % ", ".join(RESOURCE_KINDS): st.sampled_from(RESOURCE_KINDS),
}

#: Names a module request may ask for: ordinary ones, and ones whose finding would import
#: something into the master ("smuggled" exists only on the master's path and touches the
#: sentinel when imported).
MODULE_NAMES = st.one_of(
    st.sampled_from(
        ["smuggled", "smuggled.sub", "tests.remote_helpers", "os", "distutils", "", ".", "a..b"]
    ),
    st.text(max_size=40),
)


@st.composite
def schema_body(draw: st.DrawFn, schema: type[Any], hostile: list[Any]) -> Any:
    """A body value for ``schema``: valid, valid but for one field, or any other value."""
    fields = [draw(VALID_FIELDS[check.__name__]) for _name, check in schema.FIELDS]
    if schema is GetModule:
        fields = [draw(MODULE_NAMES)]
    elif schema is Log:
        fields[2] = draw(st.integers(-10, 60))  # mostly levels a logger shows
    how = draw(st.sampled_from(["valid", "valid", "one wrong field", "extra field", "any"]))
    if how == "valid":
        return tuple(fields)
    if how == "one wrong field" and fields:
        fields[draw(st.integers(0, len(fields) - 1))] = draw(plain_values(hostile))
        return tuple(fields)
    if how == "extra field":
        return (*fields, draw(plain_values(hostile)))
    return draw(plain_values(hostile))


@st.composite
def encoded(draw: st.DrawFn, value: Any) -> bytes:
    """``value`` pickled with any protocol, sometimes cut short or with garbage after it."""
    try:
        data = hc.dumps_persistent(value) if draw(st.booleans()) else pickle.dumps(value)
    except Exception:
        data = b""
    if draw(st.booleans()):
        data = pickle.dumps(value, protocol=draw(st.integers(0, 5))) if data else data
    damage = draw(st.sampled_from(["none", "none", "none", "truncate", "append", "garbage"]))
    if damage == "truncate" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if damage == "append":
        return data + draw(st.binary(min_size=1, max_size=10))
    if damage == "garbage":
        return draw(st.binary(max_size=64))
    return data


#: Well-known handles by number, and the schemas of reply bodies.
WELL_KNOWN = sorted((number, cls) for number, _direction, cls in HANDLES.values())
REPLY_SCHEMAS: list[type[Schema]] = [ReplyOk, ReplyError, SpawnOk, SpawnFailed]


@st.composite
def hostile_message(draw: st.DrawFn, hostile: list[Any]) -> tuple[int | None, int, bytes]:
    """``(handle, flags, body)``; handle None is the answer to the call that relays it."""
    where = draw(st.sampled_from(["well-known", "well-known", "answer", "stray reply", "other"]))
    if where == "well-known":
        handle, schema = draw(st.sampled_from(WELL_KNOWN))
    elif where == "answer":
        handle, schema = None, draw(st.sampled_from(REPLY_SCHEMAS))
    elif where == "stray reply":
        handle = draw(st.integers(FIRST_REPLY_HANDLE + 100_000, 2**32 - 1))
        schema = draw(st.sampled_from(REPLY_SCHEMAS))
    else:
        handle = draw(st.one_of(st.just(0), st.integers(11, FIRST_REPLY_HANDLE - 1)))
        schema = draw(st.sampled_from([cls for _, cls in WELL_KNOWN]))
    value = draw(schema_body(schema, hostile))
    flags = draw(st.sampled_from([0, 0, 0, FLAG_DEAD]))
    return handle, flags, draw(encoded(value))


class Records(logging.Handler):
    """Keeps the text of every record (the reader runs in the Trio thread, examples in another;
    ``handle`` holds the handler's lock around ``emit``)."""

    def __init__(self) -> None:
        super().__init__(level=1)
        self.texts: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append((record.levelno, record.getMessage()))

    def take(self) -> list[tuple[int, str]]:
        self.acquire()
        try:
            taken, self.texts = self.texts, []
        finally:
            self.release()
        return taken


@pytest.fixture
def records() -> Iterator[Records]:
    logger = logging.getLogger("trimitogen.ctx." + NAME)
    handler = Records()
    saved = (logger.level, logger.propagate)
    logger.setLevel(1)
    logger.propagate = False
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(saved[0])
    logger.propagate = saved[1]


def decodes(handle: int | None, body: bytes) -> Any:
    """The decoded body of a message the master acts on (a log record or a module request),
    or None for any other message."""
    schema = {HANDLE_LOG: Log, HANDLE_GET_MODULE: GetModule}.get(handle or 0)
    if schema is None:
        return None
    try:
        return schema.decode(body)
    except tm.StreamError:
        return None


async def check_one(
    ctx: tm.Context,
    records: Records,
    message: tuple[int | None, int, bytes],
    n: int,
    outcomes: collections.Counter[str],
) -> None:
    handle, flags, body = message
    records.take()
    with trio.fail_after(WAIT):
        try:
            result: Any = await ctx.call(hc.relay, [message])
        except (tm.StreamError, tm.CallError, tm.ChannelError) as exc:
            result = exc
    logged = records.take()
    if handle is None:
        # The answer to the call itself: the caller gets a value or one of these errors.
        if isinstance(result, tm.ChannelError):
            assert flags & FLAG_DEAD, result
        if isinstance(result, tm.StreamError):
            assert "was refused" in str(result), result
        outcomes[
            "answer: " + (type(result).__name__ if isinstance(result, tm.Error) else "value")
        ] += 1
    else:
        assert result == 1, result
        acted_on = decodes(handle, body)
        if acted_on is None:
            drops = [text for _, text in logged if any(word in text for word in DROP_WORDS)]
            assert drops, "no log line for %r: %r" % (message, logged)
            # ... and says where it came from.
            sender = re.compile(r"(context |from |src=)%d\b" % ctx.context_id)
            assert any(sender.search(text) for text in drops), (message, drops)
            outcomes["dropped, with a line"] += 1
        elif handle == HANDLE_GET_MODULE:
            assert any("module records" in text for _, text in logged), (message, logged)
            outcomes["module request answered"] += 1
        elif acted_on.levelno > 0:
            # A log record: logged as itself (under a prefix once a child used many names).
            assert (acted_on.levelno, acted_on.text) in logged or any(
                text.startswith("[") and text.endswith(acted_on.text) for _, text in logged
            ), (message, logged)
            outcomes["log record logged"] += 1
    # The reader still runs, and an honest call is answered.
    assert ctx.statistics().gone_reason is None, ctx.statistics()
    with trio.fail_after(WAIT):
        assert await ctx.call(hc.relay, []) == 0
        assert await ctx.call(rh.echo, n) == n


@pytest.fixture
def sentinel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "pwned"
    monkeypatch.setenv("HOSTILE_SENTINEL", str(path))
    return path


@pytest.mark.timeout(180)
async def test_structured_hostile_messages(
    records: Records, sentinel: Path, master_only: MasterOnly, no_leaked_fds: None
) -> None:
    touch = "import os, pathlib\npathlib.Path(os.environ['HOSTILE_SENTINEL']).touch()\n"
    master_only({"smuggled/__init__.py": touch, "smuggled/sub.py": touch})
    hostile = hostile_objects(sentinel)
    modules_before = set(sys.modules)
    examples = 0
    outcomes: collections.Counter[str] = collections.Counter()
    method = tm.local(python=[sys.executable, HOSTILE, "relay"])
    with trio.fail_after(2 * WAIT + 150):
        async with tm.open_context(method, name=NAME) as ctx:
            token = trio.lowlevel.current_trio_token()

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                database=None,
            )
            @given(message=hostile_message(hostile))
            # One message of each kind the master acts on, whatever hypothesis draws.
            @example(message=(HANDLE_LOG, 0, pickle.dumps(("log", "x", 30, "a record"))))
            @example(message=(HANDLE_GET_MODULE, 0, pickle.dumps(("tests.remote_helpers",))))
            @example(message=(None, 0, pickle.dumps((True, "an answer"))))
            @example(message=(None, 0, pickle.dumps((False, "ValueError", "no", "tb"))))
            @example(message=(None, FLAG_DEAD, b"the child says it is dead"))
            def run_examples(message: tuple[int | None, int, bytes]) -> None:
                nonlocal examples
                examples += 1
                trio.from_thread.run(
                    check_one, ctx, records, message, examples, outcomes, trio_token=token
                )

            await trio.to_thread.run_sync(run_examples, abandon_on_cancel=True)
    assert not sentinel.exists()
    assert not {m for m in set(sys.modules) - modules_before if m.startswith("smuggled")}
    print(
        "\nhostile structured: %d messages, the reader survived all of them: %s"
        % (examples, dict(sorted(outcomes.items())))
    )
    assert examples >= EXAMPLES
    # Every kind of outcome was met (the explicit examples make sure of it).
    assert set(outcomes) >= {
        "answer: value",
        "answer: StreamError",
        "answer: CallError",
        "answer: ChannelError",
        "dropped, with a line",
        "module request answered",
        "log record logged",
    }, outcomes
