"""Split messages: a large body as frames of one part each, joined again where it is delivered.

A body larger than :data:`SPLIT_ABOVE` travels as frames of :data:`PART_SIZE` bytes, each with
the message's own header fields and :data:`FLAG_PART` (:data:`FLAG_MORE` on all but the last), so
that writers can put other frames between them: one large message holds up the rest of a
connection for one part at most.  Intermediates pass parts on as they come (holding one part,
not the message); the destination joins them.  The parts of one message are never mixed with
another message to the same handle and reply handle from the same sender, so a receiver joins
by (src, handle, reply_to).
"""

from __future__ import annotations

import _thread

from .errors import StreamError
from .latch import FairLock
from .protocol import DEFAULT_MAX_MESSAGE_SIZE, HEADER, MAGIC, VERSION, Body, Message

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Set, Tuple

#: Flag: this frame is one part of a split message.
FLAG_PART = 0x02
#: Flag (with FLAG_PART): more parts of the same message follow.
FLAG_MORE = 0x04

#: Size of each part of a split message.
PART_SIZE = 1024 * 1024
#: Most messages a receiver remembers as refused, to drop the rest of their parts.
MAX_REFUSED = 1024
#: Bodies up to this size travel whole (a 1 MiB file chunk and its pickle framing stay one frame).
SPLIT_ABOVE = PART_SIZE + 64 * 1024


def split_frames(msg: Message) -> List[List[Any]]:
    """The frames of ``msg``: one for a body up to :data:`SPLIT_ABOVE`, else its parts.

    Parts are views of the body's buffers: nothing is copied.
    """
    size = len(msg.data)
    if size <= SPLIT_ABOVE:
        return [msg.frame_parts()]
    buffers = msg.data.parts if type(msg.data) is Body else [msg.data]
    frames = []
    pieces: List[Any] = []
    room = PART_SIZE
    sent = 0
    for buffer in buffers:
        view = memoryview(buffer).cast("B")
        while len(view):
            piece = view[:room]
            view = view[len(piece) :]
            pieces.append(piece)
            room -= len(piece)
            if room == 0 or sent + PART_SIZE - room == size:
                length = PART_SIZE - room
                sent += length
                flags = msg.flags | FLAG_PART | (FLAG_MORE if sent < size else 0)
                header = HEADER.pack(
                    MAGIC, VERSION, flags, msg.dst, msg.src, msg.handle, msg.reply_to, length
                )
                frames.append([header, *pieces])
                pieces = []
                room = PART_SIZE
    return frames


class Reassembler:
    """Joins the parts of split messages addressed to this process.

    :meth:`add` returns a message once it is whole (a frame that is not a part at once).  A part
    that is not the last and not :data:`PART_SIZE` bytes, that would make its message larger than
    ``max_message_size``, or the unfinished messages together larger than twice that, raises
    :class:`StreamError`, and the rest of that message is dropped as it comes: a peer cannot
    make the receiver hold more than that, nor deliver a message with a part missing.
    """

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.max_message_size = max_message_size
        self._partial: Dict[Tuple[int, int, int], List[Any]] = {}
        #: Messages a part of which was refused: their other parts are dropped up to the last.
        self._refused: Set[Tuple[int, int, int]] = set()
        self.pending_bytes = 0

    def add(self, msg: Message) -> Optional[Message]:
        if not msg.flags & FLAG_PART:
            return msg
        # Calls to one handle differ by their reply handle: two of them may be under way at once.
        key = (msg.src, msg.handle, msg.reply_to)
        more = msg.flags & FLAG_MORE
        if key in self._refused:
            if not more:
                self._refused.discard(key)
            return None
        size = len(msg.data)
        entry = self._partial.get(key) or [0]
        refusal = None
        if more and size != PART_SIZE:
            refusal = "a part of %d bytes (parts but the last are %d)" % (size, PART_SIZE)
        elif entry[0] + size > self.max_message_size:
            refusal = "a message over the limit of %d bytes" % self.max_message_size
        elif self.pending_bytes + size > 2 * self.max_message_size:
            refusal = "unfinished split messages over %d bytes" % (2 * self.max_message_size)
        if refusal is not None:
            self._drop(key)
            if more:
                if len(self._refused) >= MAX_REFUSED:
                    self._refused.clear()  # forgetting lets stray parts start anew: still bounded
                self._refused.add(key)
            raise StreamError(
                "refused a split message for handle %d from context %d: %s"
                % (msg.handle, msg.src, refusal)
            )
        self._partial[key] = entry
        entry[0] += size
        if type(msg.data) is Body:  # a raw part read as pieces
            entry.extend(msg.data.parts)
        else:
            entry.append(msg.data)
        self.pending_bytes += size
        if more:
            return None
        self._drop(key)
        data = Body()  # the parts as they are: the unpickler reads across them
        data.parts = entry[1:]
        data.size = entry[0]
        flags = msg.flags & ~(FLAG_PART | FLAG_MORE)
        return Message(msg.dst, msg.src, msg.handle, msg.reply_to, data, flags)

    def _drop(self, key: Tuple[int, int, int]) -> None:
        entry = self._partial.pop(key, None)
        if entry is not None:
            self.pending_bytes -= entry[0]

    def forget(self, src: int) -> None:
        """Context ``src`` is gone: drop what it left unfinished."""
        for key in [key for key in self._partial if key[0] == src]:
            self._drop(key)
        self._refused = {key for key in self._refused if key[0] != src}


class SplitSender:
    """Writes messages from several threads to one stream, large ones part by part.

    ``write(parts)`` writes one frame, blocking until it is written; False means the other end
    is gone.  Frames of different threads take turns (:class:`~.latch.FairLock`), so a thread
    writing a large message lets the others in after each part; two large messages for the same
    handle from the same sender go one after the other, so their parts never mix.
    """

    def __init__(self, write: Any) -> None:
        self._write = write
        self.lock = FairLock()
        self._guard = _thread.allocate_lock()
        self._lanes: Dict[Tuple[int, int, int], List[Any]] = {}

    def send(self, msg: Message) -> bool:
        if len(msg.data) <= SPLIT_ABOVE:
            with self.lock:
                return bool(self._write(msg.frame_parts()))
        key = (msg.src, msg.dst, msg.handle)
        with self._guard:
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = [_thread.allocate_lock(), 0]
            lane[1] += 1
        try:
            with lane[0]:
                for parts in split_frames(msg):
                    with self.lock:
                        if not self._write(parts):
                            return False
                return True
        finally:
            with self._guard:
                lane[1] -= 1
                if not lane[1]:
                    del self._lanes[key]
