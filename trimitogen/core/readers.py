"""Buffers for large bodies: reused receive buffers, and read-only files over received bodies.

Fresh memory costs a page fault per 4 KiB when it is first written, a quarter of the time of a
stream of large items: :class:`BufferPool` hands out the same buffers again once nobody holds a
view of them.  A large body arrives in such a buffer, or as the parts of a split message; the
readers let the C unpickler read it where it is (see :func:`.protocol.loads`), without first
copying it into one ``bytes``.
"""

from __future__ import annotations

import mmap
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List

#: Buffers are anonymous mappings: zero pages cost nothing until written (a header alone,
#: however large the length it claims, commits no memory).
MMAP_FLAGS = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS


def _free_refs(buffers: List[Any]) -> int:
    """``sys.getrefcount`` of a buffer held by a list and a loop alone, measured as
    :meth:`BufferPool.take` looks (interpreters differ in what they count)."""
    for buffer in buffers:
        return sys.getrefcount(buffer)
    return 0


_FREE_REFS = _free_refs([bytearray(1)])


class BufferPool:
    """Buffers of ``size`` bytes, each handed out again once no view of it is left; at most
    ``spare`` are kept (more are made while all are in use, and dropped after)."""

    def __init__(self, size: int, spare: int) -> None:
        self.size = size
        self.spare = spare
        self._buffers: List[mmap.mmap] = []

    def take(self) -> memoryview:
        """A view of a buffer nobody holds; the buffer is free again when the view and every
        view made from it are gone."""
        for buffer in self._buffers:
            # Referenced by the list and the loop alone: nothing holds a view of it.
            if sys.getrefcount(buffer) == _FREE_REFS:
                return memoryview(buffer)
        buffer = mmap.mmap(-1, self.size, flags=MMAP_FLAGS)
        if len(self._buffers) < self.spare:
            self._buffers.append(buffer)
        return memoryview(buffer)


class BodyReader:
    """A read-only file over a received body for the unpickler, without copying the body.

    ``peek`` lets the C unpickler fetch its input in large blocks instead of calling ``read``
    per opcode; ``readinto`` lets it fill large ``bytes`` values in one copy.
    """

    __slots__ = ("pos", "view")

    def __init__(self, data: Any) -> None:
        self.view = memoryview(data).cast("B")
        self.pos = 0

    def peek(self, n: int = 0) -> bytes:
        return bytes(self.view[self.pos : self.pos + max(n, 1)])

    def read(self, n: int = -1) -> bytes:
        end = len(self.view) if n < 0 else self.pos + n
        data = bytes(self.view[self.pos : end])
        self.pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        chunk = self.view[self.pos : self.pos + len(buffer)]
        n = len(chunk)
        memoryview(buffer).cast("B")[:n] = chunk
        self.pos += n
        return n

    def readline(self) -> bytes:
        rest = self.view[self.pos :]
        end = bytes(rest[:4096]).find(b"\n")
        n = len(rest) if end < 0 else end + 1
        return self.read(n)


class PartsReader:
    """Like :class:`BodyReader` over several buffers in a row (the parts of a split message),
    so a joined message is never copied into one buffer before it is unpickled."""

    __slots__ = ("pos", "view", "views")

    def __init__(self, parts: List[Any]) -> None:
        self.views = [memoryview(part).cast("B") for part in reversed(parts) if len(part)]
        self.view = self.views.pop() if self.views else memoryview(b"")
        self.pos = 0

    def _next(self) -> bool:
        if self.views:
            self.view, self.pos = self.views.pop(), 0
        return bool(self.pos < len(self.view))

    def peek(self, n: int = 0) -> bytes:
        if self.pos == len(self.view) and not self._next():
            return b""
        return bytes(self.view[self.pos : self.pos + max(n, 1)])

    def read(self, n: int = -1) -> bytes:
        left = len(self.view) - self.pos + sum(len(view) for view in self.views)
        n = left if n < 0 else min(n, left)  # never the size a body claims: what it holds
        out = bytearray(n)
        return bytes(out[: self.readinto(out)])

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        done = 0
        while done < len(target):
            if self.pos == len(self.view) and not self._next():
                break
            chunk = self.view[self.pos : self.pos + len(target) - done]
            target[done : done + len(chunk)] = chunk
            done += len(chunk)
            self.pos += len(chunk)
        return done

    def readline(self) -> bytes:
        line = bytearray()
        while not line.endswith(b"\n"):
            piece = self.peek(4096)
            if not piece:
                break
            end = piece.find(b"\n")
            line += self.read(len(piece) if end < 0 else end + 1)
        return bytes(line)
