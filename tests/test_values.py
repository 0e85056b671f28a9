"""Values beyond plain data: each travels both ways with its type, rebuilt by trimitogen's code."""

from __future__ import annotations

import datetime
import decimal
import enum
import pickle
import sys
from typing import Any

import pytest
import trio

import trimitogen as tm
from tests import value_helpers as vh
from tests.conftest import WAIT, MasterOnly, discover_interpreters
from tests.test_context import assert_identical
from trimitogen.core import values
from trimitogen.core.protocol import PICKLE_PROTOCOL, dumps, loads


def _version(label: str, python: str) -> tuple[int, ...]:
    tail = label.rsplit("-", 1)[-1].replace("python", "")
    parts = tail.split(".")
    if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
        return (int(parts[0]), int(parts[1]))
    return sys.version_info[:2]


def _oldest_and_newest() -> list[str]:
    found = discover_interpreters()
    ordered = sorted(found, key=lambda label: _version(label, found[label]))
    return sorted({ordered[0], ordered[-1]})


INTERPRETERS = discover_interpreters()
EDGES = _oldest_and_newest()


def assert_same_values(got: list[Any], want: list[Any]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert_identical(g, w)
        if isinstance(w, datetime.tzinfo):
            assert g.tzname(None) == w.tzname(None)
        if isinstance(w, (datetime.time, datetime.datetime)):
            assert (g.fold, g.tzname()) == (w.fold, w.tzname())
        if isinstance(w, decimal.Decimal):
            assert str(g) == str(w)  # same digits, exponent and sign, not only equal


@pytest.mark.parametrize("value", vh.rich_values(), ids=lambda v: type(v).__name__)
def test_each_value_round_trips_through_the_codec(value: Any) -> None:
    assert_same_values([loads(dumps(value))], [value])


def test_enum_members_keep_their_identity() -> None:
    got = loads(dumps([vh.Colour.RED, vh.Level.LOW, (vh.Perm.READ,)]))
    assert got[0] is vh.Colour.RED
    assert got[1] is vh.Level.LOW
    assert got[2][0] is vh.Perm.READ


def test_shared_and_cyclic_containers_keep_their_shape() -> None:
    day = datetime.date(2020, 1, 1)
    inner = [day]
    outer: list[Any] = [inner, inner, (inner,), {day: inner}]
    outer.append(outer)
    got = loads(dumps(outer))
    assert got[0] is got[1] is got[2][0] is got[3][day]
    assert got[4] is got
    assert type(got[0][0]) is datetime.date


def test_plain_data_does_not_use_persistent_ids() -> None:
    # The opcode BINPERSID (b"Q") must not appear: plain bodies take the fast path unchanged.
    plain = [1, "a", (2.0, None)]
    assert dumps(plain) == pickle.dumps(plain, protocol=PICKLE_PROTOCOL)


def test_combined_flags_are_refused_with_a_hint() -> None:
    with pytest.raises(TypeError, match="combination of flags"):
        dumps(vh.Perm.READ | vh.Perm.WRITE)


def test_unsupported_values_are_still_refused() -> None:
    class Local:
        pass

    with pytest.raises(TypeError, match=r"Local.*register_value_type"):
        dumps([datetime.date.today(), Local()])
    with pytest.raises(TypeError, match="class complex"):
        dumps([datetime.date.today(), complex])


def _body(pid: Any, tail: bytes = b"") -> bytes:
    """A body that is the persistent id ``pid`` (then ``tail``'s opcodes), as a peer may send."""
    return b"\x80\x05" + pickle.dumps(pid, protocol=3)[2:-1] + b"Q" + tail + b"."


@pytest.mark.parametrize(
    ("pid", "match"),
    [
        (("date", "2020", 1, 1), "malformed date"),
        (("date", 2020, 13, 1), "month must be in 1..12"),
        (("date", 2020, 1), "malformed date"),
        (("datetime", 1, 1, 1, 0, 0, 0, 0, "UTC", 0), "malformed datetime"),
        (("time", 0, 0, 0, 0, None, 2), "fold must be either 0 or 1"),
        (("decimal", b"1"), "malformed decimal"),
        (("decimal", "one"), "InvalidOperation"),
        (("uuid", -1), "refused a uuid"),
        (("fraction", 1, 0), "ZeroDivisionError"),
        (("no-such-kind", 1), "unknown kind"),
        ("date", "not a .tag, parts.... tuple"),
        (("enum", "os", "system", "x"), "no 'system'|not an enum"),
        (("enum", "tests.value_helpers", "Colour", "BLUE"), "no such member"),
        (("enum", "tests.value_helpers", "Colour", "_value2member_map_"), "no such member"),
        (("enum", "antigravity", "Thing", "X"), "not imported here"),
        (("value", "nobody.Type", "antigravity", 1), "not registered in this context"),
    ],
)
def test_malformed_values_are_refused(pid: Any, match: str) -> None:
    with pytest.raises(tm.StreamError, match=match):
        loads(_body(pid))
    assert "antigravity" not in sys.modules


def test_a_body_cannot_change_a_shared_enum_member() -> None:
    # BUILD with {"_value_": 99} on what the persistent id gave: the reader only ever holds an
    # inert placeholder there, so the real member is out of reach.
    build = b"}\x8c\x07_value_K\x63sb"
    with pytest.raises(tm.StreamError):
        loads(_body(("enum", "tests.value_helpers", "Colour", "RED"), build))
    assert vh.Colour.RED.value == "red"
    call = b")R"  # REDUCE: call it with no arguments
    with pytest.raises(tm.StreamError):
        loads(_body(("enum", "tests.value_helpers", "Colour", "RED"), call))


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return type(other) is Point and (self.x, self.y) == (other.x, other.y)

    __hash__ = None  # type: ignore[assignment]


def test_registered_types_are_checked() -> None:
    tm.register_value_type(Point, lambda p: (p.x, p.y), lambda xy: Point(*xy), name="test.Point")
    assert loads(dumps([Point(1, 2)])) == [Point(1, 2)]
    tm.register_value_type(Point, lambda p: (p.x, p.y), lambda xy: xy, name="test.Point")
    with pytest.raises(tm.StreamError, match="from_plain returned tuple, not Point"):
        loads(dumps(Point(1, 2)))
    tm.register_value_type(Point, lambda p: object(), lambda xy: xy, name="test.Point")
    with pytest.raises(TypeError, match=r"builtins.object"):
        dumps(Point(1, 2))

    class Other:
        pass

    with pytest.raises(ValueError, match="is taken by"):
        tm.register_value_type(Other, repr, repr, name="test.Point")
    with pytest.raises(ValueError, match="travels already"):
        tm.register_value_type(datetime.date, repr, repr)


POINTS = """\
    import trimitogen
    from trimitogen import CallError, register_value_type


    class Vector:
        def __init__(self, x, y):
            self.x, self.y = x, y

        def __eq__(self, other):
            return type(other) is Vector and (self.x, self.y) == (other.x, other.y)

        def __repr__(self):
            return "Vector(%r, %r)" % (self.x, self.y)


    register_value_type(Vector, lambda v: [v.x, v.y], lambda xy: Vector(*xy))


    def scale(vector, k):
        return Vector(vector.x * k, vector.y * k)


    def error_class():
        return CallError.__module__
"""

CHILD_ONLY = """\
    import enum
    import trimitogen


    class Mood(enum.Enum):
        HAPPY = 1


    class Secret:
        pass


    trimitogen.register_value_type(Secret, lambda s: 1, lambda one: Secret())


    def mood():
        return Mood.HAPPY


    def secret():
        return Secret()
"""


@pytest.mark.parametrize("label", EDGES)
async def test_values_travel_both_ways_on_oldest_and_newest_child(
    label: str, master_only: MasterOnly, no_leaked_fds: None
) -> None:
    master_only({"vectors.py": POINTS, "childonly.py": CHILD_ONLY})
    import vectors  # type: ignore[import-not-found]

    want = vh.rich_values()
    with trio.fail_after(WAIT):
        async with tm.open_context(tm.local(python=INTERPRETERS[label]), name=label) as ctx:
            # master -> child -> master
            assert_same_values(await ctx.call(vh.echo, want), want)
            # made in the child, from the child's own classes
            assert_same_values(await ctx.call(vh.rich_values), want)
            # the child saw the real types, not look-alikes
            seen = await ctx.call(vh.describe, want)
            assert [qualname for _m, qualname, _r in seen] == [type(v).__qualname__ for v in want]
            # a registered type: the child imports its module to learn it, which registers it
            got = await ctx.call(vectors.scale, vectors.Vector(2, 3), 10)
            assert type(got) is vectors.Vector
            assert got == vectors.Vector(20, 30)
            assert await ctx.call(vectors.error_class) == "trimitogen.core.errors"
            # from a module the master never imported: refused, and still not imported
            with pytest.raises(tm.StreamError, match="'childonly' is not imported here"):
                await ctx.call(vh.call_by_name, "childonly", "mood")
            with pytest.raises(tm.StreamError, match=r"'childonly.Secret'.*not registered"):
                await ctx.call(vh.call_by_name, "childonly", "secret")
            assert "childonly" not in sys.modules
            assert await ctx.call(vh.echo, 1) == 1


class Shade(enum.Enum):
    DARK = 1


async def test_enum_of_the_masters_main_module_travels(ctx: tm.Context) -> None:
    # Members of an enum in a module both ends import by the same name keep their identity.
    assert await ctx.call(vh.echo, Shade.DARK) is Shade.DARK
    assert values.is_value(Shade.DARK)


def test_a_value_where_its_kind_takes_none_is_refused() -> None:
    from tests.hostile_child import Persistent, dumps_persistent

    inner = Persistent(("date", 2020, 1, 1))
    with pytest.raises(tm.StreamError, match="malformed date"):
        loads(dumps_persistent(Persistent(("date", inner, 1, 1))))
    with pytest.raises(tm.StreamError, match="malformed time"):
        loads(dumps_persistent(Persistent(("time", 0, 0, 0, 0, inner, 0))))
    # Where a value is expected, a nested one is fine.
    tz = Persistent(("timezone", Persistent(("timedelta", 0, 3600, 0)), None))
    got = loads(dumps_persistent([Persistent(("time", 1, 2, 3, 4, tz, 0))]))
    assert got == [datetime.time(1, 2, 3, 4, datetime.timezone(datetime.timedelta(hours=1)))]
