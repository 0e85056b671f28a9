"""The first stage of a child and the parser for what a child prints before framing starts.

The master starts ``python -c STAGE1`` (see :func:`stage1_command`).  Stage 1 announces itself by
writing the marker line ``TMG0 <hexversion>`` to fd 1, then reads from fd 0 an 8-hex-digit length
and that many bytes of zlib-compressed Python source, and runs it.  When fd 0 is a terminal (su
reads its password from stdin, so stdin must be the pty), fd 1 is a socket and carries both
directions.  That second stage installs the
runtime modules and calls :func:`trimitogen.core.child.main`.

Stage 1 reads fd 0 with ``os.read`` directly: ``sys.stdin`` is unbuffered in some environments and
would then cost one system call per byte.

:class:`BootstrapParser` watches the child's output for the marker; everything before it (login
banners, warnings, error messages) is kept so a failure can show it.
"""

from __future__ import annotations

import binascii
import zlib
from typing import List, Optional

MARKER = b"TMG0 "

#: The oldest Python the child runtime runs on.
MIN_VERSION = (3, 6)

# Stage 1 itself runs on any Python (2.7 included): an older one announces its version, then
# exits instead of failing on the runtime's syntax; the master names both versions in its error.
_STAGE1 = """\
import os,sys,zlib
i=1 if os.isatty(0) else 0
def r(n):
 b=b""
 while len(b)<n:
  c=os.read(i,n-len(b))
  if not c:raise SystemExit("trimitogen: connection closed during bootstrap")
  b+=c
 return b
os.write(1,("TMG0 %x\\n"%sys.hexversion).encode())
if sys.version_info<OLDEST:raise SystemExit("trimitogen needs Python OLDEST or newer")
exec(zlib.decompress(r(int(r(8),16))),{"__name__":"__trimitogen_bootstrap__","read_exact":r,"in_fd":i})
"""


def stage1_command() -> str:
    """The ``-c`` argument that starts a child: shell-safe, a single line."""
    oldest = "%d.%d" % MIN_VERSION
    stage1 = _STAGE1.replace("<OLDEST", "<(%s)" % oldest.replace(".", ",")).replace(
        "OLDEST", oldest
    )
    encoded = binascii.b2a_base64(zlib.compress(stage1.encode(), 9), newline=False).decode()
    return "import binascii,zlib;exec(zlib.decompress(binascii.a2b_base64('%s')))" % encoded


def length_prefixed(data: bytes) -> bytes:
    """``data`` preceded by its length as 8 hex digits, as stage 1 and the runtime read it."""
    if len(data) >= 1 << 32:
        raise ValueError("bootstrap chunk too large")
    return b"%08x" % len(data) + data


class BootstrapParser:
    """Finds the stage-1 marker in a child's output, keeping what came before it."""

    #: How many bytes of pre-marker output to keep for error messages.
    KEEP = 8192

    def __init__(self) -> None:
        self._buf = b""
        self.hexversion: Optional[int] = None
        self.remainder = b""

    def receive_data(self, data: bytes) -> bool:
        """Feed output; True once the marker line has been seen (then :attr:`remainder` holds
        the bytes that followed it)."""
        if self.hexversion is not None:
            self.remainder += data
            return True
        self._buf += data
        start = self._buf.find(MARKER)
        while start != -1:
            end = self._buf.find(b"\n", start)
            if end == -1:
                break
            try:
                self.hexversion = int(self._buf[start + len(MARKER) : end].strip(), 16)
            except ValueError:
                start = self._buf.find(MARKER, start + 1)
                continue
            self.remainder = self._buf[end + 1 :]
            self._buf = self._buf[:start]
            return True
        if len(self._buf) > self.KEEP * 2:
            self._buf = self._buf[-self.KEEP :]
        return False

    def output_lines(self) -> List[str]:
        """What the child printed before the marker, as text lines."""
        text = self._buf[-self.KEEP :].decode("utf-8", "replace").replace("\r", "")
        return [line for line in text.split("\n") if line.strip()]
