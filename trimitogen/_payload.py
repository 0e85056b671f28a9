"""What a new child receives after stage 1: the runtime's modules, minimized and compressed."""

from __future__ import annotations

import functools
import importlib
import zlib

from .core.bootstrap import length_prefixed
from .core.minify import minimize_source
from .core.protocol import dumps

#: The runtime modules a child needs, in an order where each one's imports come first.
RUNTIME_MODULES = (
    "trimitogen.core.errors",
    "trimitogen.core.side",
    "trimitogen.core.latch",
    "trimitogen.core.protocol",
    "trimitogen.core.importer",
    "trimitogen.core.child",
)

_LOADER = """\
import sys
M = type(sys)
for name in ("trimitogen", "trimitogen.core"):
    pkg = M(name)
    pkg.__path__ = []
    pkg.__package__ = name
    sys.modules[name] = pkg
for name, source in SOURCES:
    mod = M(name)
    mod.__package__ = "trimitogen.core"
    mod.__file__ = "<%s>" % name
    sys.modules[name] = mod
    exec(compile(source, mod.__file__, "exec"), mod.__dict__)
    setattr(sys.modules["trimitogen.core"], name.rpartition(".")[2], mod)
del M, name, source, mod, pkg
sys.modules["trimitogen.core.child"].main(read_exact)
"""


@functools.cache
def runtime_source() -> str:
    """Source of the second stage: every runtime module, then the loader that installs them."""
    sources = []
    for name in RUNTIME_MODULES:
        module = importlib.import_module(name)
        assert module.__file__ is not None
        with open(module.__file__, encoding="utf-8") as f:
            sources.append((name, minimize_source(f.read())))
    return "SOURCES = %r\n%s" % (sources, _LOADER)


@functools.cache
def runtime_payload() -> bytes:
    """The compressed second stage, length-prefixed as stage 1 reads it."""
    return length_prefixed(zlib.compress(runtime_source().encode("utf-8"), 9))


def config_payload(config: dict[str, object]) -> bytes:
    """The child's settings, length-prefixed as :func:`trimitogen.core.child.main` reads them."""
    return length_prefixed(dumps(config))
