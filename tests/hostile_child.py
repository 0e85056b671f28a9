"""A child that speaks the protocol but misbehaves, to test the master's defences.

Run as the "interpreter" of a local context: ``python hostile_child.py MODE -c STAGE1``.  It
pretends to bootstrap, announces itself, then answers the first call according to MODE and any
later call honestly (in "relay" mode it echoes calls, and sends the frames :func:`relay` asks
for).  Nothing here may run in the master: the sentinel file named by ``HOSTILE_SENTINEL`` must
never appear.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys

HEADER = struct.Struct(">HBBIIIII")
MAGIC = 0x746D


def read_exact(n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk:
            sys.exit(0)
        data += chunk
    return data


def send(
    dst: int, src: int, handle: int, reply_to: int, body: bytes, length: int = -1, flags: int = 0
) -> None:
    size = len(body) if length < 0 else length
    data = HEADER.pack(MAGIC, 1, flags, dst, src, handle, reply_to, size) + body
    while data:
        data = data[os.write(1, data) :]


def relay(messages: list[tuple[int | None, int, bytes]]) -> int:
    """What the master calls on a child in "relay" mode; the child never runs it.

    Instead it sends each ``(handle, flags, body)`` to the master as a well-framed message from
    itself (handle None: as the answer to this very call), then answers with the count.
    """
    raise AssertionError("only the hostile child's relay mode interprets this")


def answer_relay(me: int, reply_to: int, body: bytes) -> None:
    _module, qualname, args, _kwargs = pickle.loads(body)
    if qualname != "relay":
        send(0, me, reply_to, 0, pickle.dumps((True, args[0] if args else None)))
        return
    answered = False
    for handle, flags, data in args[0]:
        if handle is None:
            handle, answered = reply_to, True
        send(0, me, handle, 0, data, flags=flags)
    if not answered:
        send(0, me, reply_to, 0, pickle.dumps((True, len(args[0]))))


class Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch " + os.environ["HOSTILE_SENTINEL"],))


class Persistent:
    """Written as a persistent id (``pid``): how values beyond plain data travel."""

    def __init__(self, pid: object) -> None:
        self.pid = pid


def dumps_persistent(obj: object) -> bytes:
    import io

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            return obj.pid if isinstance(obj, Persistent) else None

    out = io.BytesIO()
    Pickler(out, protocol=5).dump(obj)
    return out.getvalue()


#: Persistent ids that try to make the master import a module of the child's choosing (the test
#: puts a module named "smuggled" on the master's path that would create the sentinel) or load a
#: global through a value's parts.
SMUGGLERS = {
    "smuggle-enum": ("enum", "smuggled", "Evil", "X"),
    "smuggle-main": ("enum", "__main__", "Evil", "X"),
    "smuggle-value": ("value", "smuggled.Evil", "smuggled", 1),
    "smuggle-global": ("value", "smuggled.Evil", "smuggled", Evil()),
    "smuggle-date": ("date", Evil(), 1, 1),
}


def main() -> None:
    mode = sys.argv[1]
    os.write(1, b"TMG0 %x\n" % sys.hexversion)
    read_exact(int(read_exact(8), 16))  # the runtime, ignored
    config = pickle.loads(read_exact(int(read_exact(8), 16)))
    me = config["context_id"]
    parent = config["parent_id"]
    send(parent, me, 1, 0, pickle.dumps((os.getpid(), sys.hexversion, b"")))
    if mode == "forge":
        # Below an intermediate: try to answer the master's requests to other contexts, to
        # impersonate the intermediate, and to claim the id of a context not started yet.
        for handle in range(1000, 1200):
            send(0, me, handle, 0, pickle.dumps((True, "forged")))
            send(0, parent, handle, 0, pickle.dumps((True, "forged as parent")))
        send(0, me, 1, 0, pickle.dumps((4242, sys.hexversion, b"")))
        for claimed in range(me + 1, me + 5):
            send(0, me, 9, 0, pickle.dumps((claimed,)))
        os.write(1, b"")
    first = True
    parts: dict[int, bytes] = {}
    while True:
        fields = HEADER.unpack(read_exact(HEADER.size))
        body = read_exact(fields[-1])
        reply_to = fields[6]
        if fields[2] & 0x02:  # a part of a split message (FLAG_PART): join them
            body = parts.pop(fields[5], b"") + body
            if fields[2] & 0x04:  # FLAG_MORE
                parts[fields[5]] = body
                continue
        if mode == "relay":
            # Calls are echoed, or relay() sends what the master asks for; module answers and
            # anything else the master sends are ignored.
            if fields[5] == 2:
                answer_relay(me, reply_to, body)
            continue
        if not first or mode in ("honest", "forge"):
            send(0, me, reply_to, 0, pickle.dumps((True, "honest answer")))
            continue
        first = False
        if mode == "evil-reply":
            send(0, me, reply_to, 0, pickle.dumps((True, Evil())))
        elif mode == "evil-log":
            send(0, me, 3, 0, pickle.dumps(("log", "x", 40, Evil())))
            send(0, me, 3, 0, pickle.dumps((5, ["not", "a", "name"], "20", b"text")))
            send(0, me, reply_to, 0, pickle.dumps((True, "after evil log")))
        elif mode == "bad-requests":
            # Module requests no master should choke on, and a body that would allocate 1 GiB.
            send(0, me, 5, 0, pickle.dumps(("a." * 600 + "a",)))
            send(0, me, 5, 0, pickle.dumps(("distutils",)))
            send(0, me, 5, 0, pickle.dumps((b"not a name",)))
            send(0, me, reply_to, 0, b"cbuiltins\nbytearray\nJ\x00\x00\x00@\x85R.")
        elif mode == "garbage-up":
            # Below an intermediate: malformed bodies for the handles it reads itself.
            send(parent, me, 5, 0, b"garbage")
            send(0, me, 9, 0, pickle.dumps([1]))
            send(0, me, 10, 0, pickle.dumps(5))
            send(0, me, reply_to, 0, pickle.dumps((True, "still standing")))
        elif mode == "spoofed-origin":
            send(0, me + 1000, reply_to, 0, pickle.dumps((True, "spoofed")))
            send(5, me, reply_to, 0, pickle.dumps((True, "misaddressed")))
            send(0, me, reply_to, 0, pickle.dumps((True, "genuine")))
        elif mode in SMUGGLERS:
            send(0, me, reply_to, 0, dumps_persistent((True, Persistent(SMUGGLERS[mode]))))
        elif mode == "not-a-reply":
            send(0, me, reply_to, 0, pickle.dumps(["not", "a", "reply"]))
        elif mode == "bad-magic":
            os.write(1, b"\x00" * HEADER.size)
        elif mode == "oversized":
            send(0, me, reply_to, 0, b"", length=2**31)
            os.write(1, b"x" * 65536)
        else:
            raise SystemExit("unknown mode " + mode)


if __name__ == "__main__":
    main()
