"""The child's stream sender (core/batching.py): batching, credit, failures, recorded.

The sender thread is real; the parent is a list of the frames it was sent, whose first write can
be held back to show what a write in flight does to the items handed over meanwhile.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from trimitogen.core.batching import BATCH_BYTES, Sender, Window
from trimitogen.core.errors import ChannelError
from trimitogen.core.messages import ReplyOk, StreamEnd, StreamItems, decode_stream
from trimitogen.core.protocol import Message

KEY = (0, 1000)
WAIT = 10.0


class Calls:
    max_message_size = 1024 * 1024

    @staticmethod
    def explain(exc: BaseException) -> str:
        return str(exc)


class Parent:
    """Stands in for the child's context: records each frame; may hold the first write."""

    context_id = 5

    def __init__(self, hold_first: bool = False, fail: bool = False) -> None:
        self.calls = Calls()
        self.frames: list[Any] = []
        self.release = threading.Event()
        self.writing = threading.Event()
        self._hold = hold_first
        self._fail = fail
        self._lock = threading.Lock()

    def send(self, msg: Message) -> None:
        if self._fail:
            raise ChannelError("the parent of context 'test' disconnected")
        self.writing.set()
        if self._hold:
            self._hold = False
            assert self.release.wait(WAIT)
        with self._lock:
            self.frames.append(decode_stream(bytes(b"".join(msg.frame_parts()[1:]))))

    def bodies(self, count: int) -> list[Any]:
        """The first ``count`` frames' bodies, once written."""
        deadline = time.monotonic() + WAIT
        while len(self.frames) < count:
            assert time.monotonic() < deadline, self.frames
            time.sleep(0.001)
        return self.frames[:count]


def items_of(bodies: list[Any]) -> list[Any]:
    found: list[Any] = []
    for body in bodies:
        if type(body) is ReplyOk:
            found.append(body.value)
        elif type(body) is StreamItems:
            found.extend(body.values)
    return found


def test_a_lone_item_goes_alone_and_at_once() -> None:
    parent = Parent()
    window = Window(Sender(parent), KEY, 64, 1 << 20)
    assert window.put_sync("only")
    (body,) = parent.bodies(1)
    assert type(body) is ReplyOk
    assert body.value == "only"


def test_items_handed_over_during_a_write_go_in_one_frame() -> None:
    parent = Parent(hold_first=True)
    window = Window(Sender(parent), KEY, 64, 1 << 20)
    window.put_sync(0)
    assert parent.writing.wait(WAIT)  # item 0 is being written
    for i in range(1, 10):
        assert window.put_sync(i)
    parent.release.set()
    first, second = parent.bodies(2)
    assert type(first) is ReplyOk
    assert first.value == 0
    assert type(second) is StreamItems
    assert second.values == list(range(1, 10))


def test_a_batch_stays_within_the_item_credit() -> None:
    parent = Parent(hold_first=True)
    window = Window(Sender(parent), KEY, 5, 1 << 20)
    window.put_sync(0)
    assert parent.writing.wait(WAIT)
    for i in range(1, 5):
        assert window.put_sync(i)
    assert not window.ready()  # a sixth would wait
    parent.release.set()
    assert items_of(parent.bodies(2)) == list(range(5))
    time.sleep(0.05)
    assert len(parent.frames) == 2
    window.grant(3, 1 << 20)
    assert window.ready()
    window.put(5)
    assert items_of(parent.bodies(3)) == list(range(6))


def test_the_bytes_credit_counts_encoded_sizes() -> None:
    """Every frame begins within the bytes credit (the master's rule); what does not fit waits
    for a grant."""
    parent = Parent(hold_first=True)
    size = 100_000
    window = Window(Sender(parent), KEY, 64, 3 * size)
    window.put_sync(b"\0" * size)
    assert parent.writing.wait(WAIT)
    for i in (1, 2):
        assert window.put_sync(bytes([i]) * size)
    assert not window.ready()  # the estimate says the credit is spent
    parent.release.set()
    assert [len(v) for v in items_of(parent.bodies(2))] == [size] * 3
    assert window.nbytes < 0  # the last item went past the credit, as one item may
    window.grant(0, 4 * size)
    assert window.ready()


def test_a_batch_is_capped_in_bytes() -> None:
    parent = Parent(hold_first=True)
    window = Window(Sender(parent), KEY, 64, 64 << 20)
    piece = b"x" * (BATCH_BYTES // 4)
    window.put_sync(b"first")
    assert parent.writing.wait(WAIT)
    for _ in range(8):
        window.put_sync(piece)
    parent.release.set()
    bodies = parent.bodies(3)
    assert [len(b.values) for b in bodies[1:]] == [3, 3]
    assert len(items_of(parent.bodies(4))) == 9


@pytest.mark.parametrize("end_queued", [False, True])
def test_an_item_that_cannot_travel_ends_the_stream_after_the_items_before_it(
    end_queued: bool,
) -> None:
    """... in place of the end, if the producer finished before the sender met the item."""
    parent = Parent(hold_first=True)
    window = Window(Sender(parent), KEY, 64, 1 << 20)
    window.put_sync(0)
    assert parent.writing.wait(WAIT)
    for value in (1, 2, object(), 4):
        window.put_sync(value)
    if end_queued:
        window.put_body(StreamEnd.pack("end"), final=True)
    parent.release.set()
    deadline = time.monotonic() + WAIT
    while window.failure is None:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert isinstance(window.failure, TypeError)
    assert not window.put_sync(5)
    bodies = parent.bodies(len(parent.frames))
    assert items_of(bodies) == [0, 1, 2]
    assert bodies[-1].type_name == "builtins.TypeError"
    assert "cannot send an object of type builtins.object" in bodies[-1].message
    window.put_body(StreamEnd.pack("end"), final=True)  # the stream ended already: nothing follows
    time.sleep(0.05)
    assert parent.bodies(len(parent.frames)) == bodies


def test_a_lost_parent_stops_the_producer() -> None:
    window = Window(Sender(Parent(fail=True)), KEY, 64, 1 << 20)
    window.put_sync(0)
    deadline = time.monotonic() + WAIT
    while not window.closed:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert not window.put_sync(1)


@pytest.mark.parametrize("closed_first", [False, True])
def test_the_end_follows_the_items_and_a_close_drops_what_waits(closed_first: bool) -> None:
    parent = Parent(hold_first=True)
    window = Window(Sender(parent), KEY, 64, 1 << 20)
    window.put_sync(0)
    assert parent.writing.wait(WAIT)
    window.put_sync(1)
    if closed_first:
        window.close()
    window.put_body(StreamEnd.pack("end"), final=True)
    parent.release.set()
    bodies = parent.bodies(2 if closed_first else 3)
    assert items_of(bodies) == ([0] if closed_first else [0, 1])
    assert type(bodies[-1]) is StreamEnd


def test_no_item_follows_a_half_close() -> None:
    parent = Parent()
    window = Window(Sender(parent), KEY, 64, 1 << 20)
    assert window.put_sync("before")
    window.put_body(StreamEnd.pack("eof"), final=False)
    assert not window.put_sync("after")
    first, second = parent.bodies(2)
    assert first.value == "before"
    assert second.end == "eof"
