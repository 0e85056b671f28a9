"""The master's queue of frames for one connection: large messages take turns with the rest.

Every message belongs to a *lane*: the traffic of one call, stream or channel (the context and
the reply handle), or the context's control lane (handle 0: calls without an answer, modules,
package data, shutdown).  Within a lane, messages go in the order they were sent.  A message
split into parts (see :mod:`trimitogen.core.parts`) does not hold up other lanes: between two of
its parts, the writer sends up to one part's worth of whatever was queued behind it, so a call,
a reply or another stream waits for one part at most, however large the transfer.

Calls, stream and channel openings and cancellations never pass a split message on their
context's control lane: a call sent after a large call without an answer runs after it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from .core.parts import PART_SIZE, SPLIT_ABOVE, split_frames
from .core.protocol import (
    FIRST_REPLY_HANDLE,
    HANDLE_CALL,
    HANDLE_CANCEL,
    HANDLE_OPEN_CHANNEL,
    HANDLE_OPEN_STREAM,
    HANDLE_SHUTDOWN,
    HEADER_SIZE,
    Message,
)
from .core.side import IOV_MAX, Side, written

Key = tuple[int, int]
Frames = list[list[Any]]

#: Handles that start or stop the work of a call: they follow the control lane if it is busy.
_CALLISH = frozenset((HANDLE_CALL, HANDLE_OPEN_STREAM, HANDLE_OPEN_CHANNEL, HANDLE_CANCEL))

#: "Lane to follow" of a shutdown: every lane of its context (what was sent before it arrives
#: before it, so a call sent before the end of a block still runs).
EVERY_LANE = -1


def lane_of(msg: Message, lane: int | None = None) -> tuple[Key, Key | None]:
    """The lane of ``msg`` and the lane it must not overtake (None: any).

    ``lane`` names the reply handle a message is about when its header does not say it (a
    cancellation, a credit).
    """
    if lane is None:
        if msg.handle >= FIRST_REPLY_HANDLE:
            lane = msg.handle
        elif msg.handle in _CALLISH:
            lane = msg.reply_to
        else:
            lane = 0
    if lane and msg.handle in _CALLISH:
        return (msg.dst, lane), (msg.dst, 0)
    if msg.handle == HANDLE_SHUTDOWN:
        return (msg.dst, lane), (msg.dst, EVERY_LANE)
    return (msg.dst, lane), None


def frame_size(frame: list[Any]) -> int:
    return sum(len(part) for part in frame)


class Outbox:
    """Frames waiting for one connection's descriptor, and the non-blocking writes of them.

    :meth:`send` writes what the descriptor takes at once and queues the rest; :meth:`flush`
    goes on when it is writable again.  ``current`` is the frame being written, finished before
    any other starts (a frame is never interleaved with another).  ``queued`` counts the bytes
    not yet written, ``current`` included.  A failed write calls ``failed(reason)`` and drops
    everything queued.
    """

    def __init__(self, side: Side, failed: Callable[[str], None]) -> None:
        self.side = side
        self._failed = failed
        self._reset()

    def _reset(self) -> None:
        #: Messages not yet started, in the order they were sent: (lane, lane to follow, frames).
        self._fifo: collections.deque[tuple[Key, Key | None, Frames]] = collections.deque()
        #: Lanes with a split message started: their messages, the first one partly sent.
        self._busy: dict[Key, collections.deque[Frames]] = {}
        #: Where the messages of a lane go while a busy lane holds some of them.
        self._home: dict[Key, Key] = {}
        self._guests: dict[Key, list[Key]] = {}
        #: Busy lanes in turn.
        self._ring: collections.deque[Key] = collections.deque()
        #: Shutdowns waiting for their context's busy lanes to finish.
        self._held: list[tuple[Key, Key | None, Frames]] = []
        #: What the FIFO may still send before the next part of a busy lane.
        self._budget = PART_SIZE
        self.current: list[Any] = []
        self.queued = 0

    def __bool__(self) -> bool:
        return bool(self.current or self._fifo or self._ring or self._held)

    def send(self, msg: Message, lane: int | None = None) -> None:
        """Write ``msg`` now as far as the descriptor takes it; queue the rest."""
        if len(msg.data) <= SPLIT_ABOVE and not self:  # the common case, at once
            self._write_now(msg.frame_parts())
            return
        frames = split_frames(msg)
        key, after = lane_of(msg, lane)
        self._fifo.append((key, after, frames))
        self.queued += len(msg.data) + HEADER_SIZE * len(frames)
        if not self.current:
            self.flush()

    def send_frame(self, parts: list[Any]) -> None:
        """Write bytes now as far as they go (a frame, or the bootstrap); queue the rest."""
        if self:
            self._fifo.append(((-1, 0), None, [parts]))
            self.queued += frame_size(parts)
            return
        self._write_now(parts)

    def _write_now(self, parts: list[Any]) -> None:
        """With nothing queued: write what the fd takes, and keep the rest as ``current``."""
        left = self._write_some(parts)
        if left:
            self.current = left
            self.queued += frame_size(left)

    def flush(self) -> None:
        """Write queued frames, one after another, until the fd is full or nothing is left."""
        while self:
            if not self.current:
                frame = self.next()
                if frame is None:
                    return
                self.current = frame
            before = frame_size(self.current)
            left = self._write_some(self.current)
            if not self.current:  # the write failed, and the queue with it
                return
            self.queued -= before - frame_size(left)
            self.current = left
            if left:
                return

    def _write_some(self, parts: list[Any]) -> list[Any]:
        """Write what the fd takes now; return what is left (``[]`` when done)."""
        while parts:
            try:
                n = self.side.writev(parts[:IOV_MAX])
            except BlockingIOError:
                return parts
            except OSError as exc:
                self.drop("writing to it failed: %s" % exc)
                return []
            if n is None:
                self.drop("it disconnected while a message was being sent")
                return []
            parts = written(parts, n)
        return parts

    def drop(self, reason: str | None = None) -> None:
        """Forget everything queued; with a reason, report the write that failed."""
        self._reset()
        if reason is not None:
            self._failed(reason)

    def next(self) -> list[Any] | None:
        """The frame to write after ``current``, or None when nothing waits."""
        while True:
            if self._budget > 0 and self._fifo:
                frame = self._from_fifo()
                if frame is not None:
                    return frame
            self._budget = PART_SIZE
            if self._ring:
                return self._from_ring()
            if not self._fifo:
                return None

    def _from_fifo(self) -> list[Any] | None:
        while self._fifo:
            lane, after, frames = self._fifo.popleft()
            if after is not None and after[1] == EVERY_LANE:
                if any(busy[0] == lane[0] for busy in self._busy):
                    self._held.append((lane, after, frames))
                    continue
                after = None
            home = self._home.get(lane)
            if home is None and after is not None and after in self._busy:
                home = after
            if home is not None:  # behind a split message of its own lane: wait in turn
                self._busy[home].append(frames)
                if lane not in self._home:
                    self._home[lane] = home
                    self._guests[home].append(lane)
                continue
            if len(frames) > 1:  # a split message: it takes turns from now on
                self._busy[lane] = collections.deque([frames])
                self._home[lane] = lane
                self._guests[lane] = [lane]
                self._ring.append(lane)
                continue
            frame = frames[0]
            self._budget -= frame_size(frame)
            return frame
        return None

    def _from_ring(self) -> list[Any]:
        lane = self._ring.popleft()
        messages = self._busy[lane]
        frames = messages[0]
        frame = frames.pop(0)
        if not frames:
            messages.popleft()
        if messages:
            self._ring.append(lane)
        else:
            del self._busy[lane]
            for guest in self._guests.pop(lane):
                del self._home[guest]
            for held in [h for h in self._held if h[0][0] == lane[0]]:
                self._held.remove(held)
                self._fifo.appendleft(held)  # looked at again: it goes once none is busy
        return frame
