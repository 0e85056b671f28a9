"""What a new child receives after stage 1: the runtime's modules, minimized and compressed."""

from __future__ import annotations

import functools
import importlib
import marshal
import zlib

from .core.bootstrap import length_prefixed
from .core.minify import minimize_source
from .core.protocol import dumps

#: The runtime modules every child runs at start-up, in an order where imports come first.
RUNTIME_MODULES = (
    "trimitogen.core.errors",
    "trimitogen.core.grace",
    "trimitogen.core.side",
    "trimitogen.core.latch",
    "trimitogen.core.protocol",
    "trimitogen.core.messages",
    "trimitogen.core.importer",
    "trimitogen.core.loop",
    "trimitogen.core.iologger",
    "trimitogen.core.calls",
    "trimitogen.core.child",
)

#: Modules shipped with the runtime but compiled only when first imported: what a context needs
#: to start children of its own (most contexts never do).
LAZY_MODULES = (
    "trimitogen.core.bootstrap",
    "trimitogen.core.connect",
    "trimitogen.core.routing",
    "trimitogen.core.link",
    "trimitogen.core.parent",
    "trimitogen.core.forking",
    "trimitogen.core.values",
    "trimitogen.core.package",
    "trimitogen.core.containers",
    "trimitogen.core.resources",
)

# The loader runs with either SOURCES/LAZY (module sources: any Python 3.8+ compiles them) or
# CODES (marshalled code objects, read as one more chunk: only for an interpreter of the master's
# own build, and several times faster to start because nothing is compiled).
_LOADER = """\
import sys
M = type(sys)


def code_of(name, table):
    if CODES is not None:
        return CODES[name]
    return compile(table[name], "<%s>" % name, "exec")


class LazyRuntime:
    def find_spec(self, name, path=None, target=None):
        if name in LAZY:
            from importlib.machinery import ModuleSpec
            return ModuleSpec(name, self, origin="<%s>" % name)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__package__ = "trimitogen.core"
        exec(code_of(module.__name__, LAZY), module.__dict__)
        LAZY.pop(module.__name__)


sys.meta_path.insert(0, LazyRuntime())
for name in ("trimitogen", "trimitogen.core"):
    pkg = M(name)
    pkg.__path__ = []
    pkg.__package__ = name
    sys.modules[name] = pkg


def public_name(name):
    from trimitogen.core.package import attribute
    return attribute(name)


sys.modules["trimitogen"].__getattr__ = public_name
for name in EAGER:
    mod = M(name)
    mod.__package__ = "trimitogen.core"
    mod.__file__ = "<%s>" % name
    sys.modules[name] = mod
    exec(code_of(name, SOURCES), mod.__dict__)
    setattr(sys.modules["trimitogen.core"], name.rpartition(".")[2], mod)
del M, name, mod, pkg, public_name
sys.modules["trimitogen.core.child"].main(read_exact, in_fd)
"""


@functools.cache
def runtime_source() -> str:
    """Source of the second stage: every runtime module, then the loader that installs them."""
    sources = {name: _minimized(name) for name in RUNTIME_MODULES}
    lazy = {name: _minimized(name) for name in LAZY_MODULES}
    return "EAGER = %r\nSOURCES = %r\nLAZY = %r\nCODES = None\n%s" % (
        RUNTIME_MODULES,
        sources,
        lazy,
        _LOADER,
    )


@functools.cache
def _compiled_loader() -> str:
    return (
        "import marshal, zlib\n"
        "CODES = marshal.loads(zlib.decompress(read_exact(int(read_exact(8), 16))))\n"
        "EAGER = %r\nSOURCES = LAZY = dict.fromkeys(CODES)\n%s" % (RUNTIME_MODULES, _LOADER)
    )


def _minimized(name: str) -> str:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    with open(module.__file__, encoding="utf-8") as f:
        return minimize_source(f.read())


@functools.cache
def runtime_payload(compiled: bool = False) -> bytes:
    """The compressed second stage, length-prefixed as stage 1 reads it.

    ``compiled`` sends the runtime as code objects of this interpreter's own bytecode: only for a
    child known to run the master's very interpreter.
    """
    if not compiled:
        return length_prefixed(zlib.compress(runtime_source().encode("utf-8"), 9))
    codes = {
        name: compile(_minimized(name), "<%s>" % name, "exec", dont_inherit=True)
        for name in RUNTIME_MODULES + LAZY_MODULES
    }
    loader = length_prefixed(zlib.compress(_compiled_loader().encode("utf-8"), 9))
    return loader + length_prefixed(zlib.compress(marshal.dumps(codes), 9))


def config_payload(config: dict[str, object]) -> bytes:
    """The child's settings, length-prefixed as :func:`trimitogen.core.child.main` reads them."""
    return length_prefixed(dumps(config))
