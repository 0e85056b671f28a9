"""What a new child receives after stage 1: the runtime's modules, minimized and compressed."""

from __future__ import annotations

import ast
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
    "trimitogen.core.readers",
    "trimitogen.core.protocol",
    "trimitogen.core.parts",
    "trimitogen.core.messages",
    "trimitogen.core.importer",
    "trimitogen.core.loop",
    "trimitogen.core.iologger",
    "trimitogen.core.calls",
    "trimitogen.core.pgroup",
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
    "trimitogen.core.aloop",
    "trimitogen.core.streams",
    "trimitogen.core.files",
    "trimitogen.core.channels",
    "trimitogen.core.resources",
    "trimitogen.core.batching",
)

# The loader runs with either SOURCES/LAZY (module sources: any Python 3.6+ compiles them) or
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


class Package(M):
    # A method of the class rather than a module __getattr__ (PEP 562), which 3.6 lacks.
    def __getattr__(self, name):
        from trimitogen.core.package import attribute
        return attribute(name)


sys.meta_path.insert(0, LazyRuntime())


def asyncio_run(main):
    import asyncio
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


class AsyncioRun:
    # asyncio.run arrived in 3.7: 3.6's asyncio gets one when it is first imported (importing it
    # at start-up would cost 70 ms).
    def find_spec(self, name, path=None, target=None):
        if name != "asyncio":
            return None
        sys.meta_path.remove(self)
        from importlib.machinery import PathFinder
        spec = PathFinder.find_spec(name)
        if spec is not None:
            exec_module = spec.loader.exec_module

            def exec_and_add_run(module):
                exec_module(module)
                module.run = asyncio_run
            spec.loader.exec_module = exec_and_add_run
        return spec


if sys.version_info < (3, 7):
    sys.meta_path.insert(0, AsyncioRun())
for name in ("trimitogen", "trimitogen.core"):
    pkg = M(name)
    pkg.__path__ = []
    pkg.__package__ = name
    sys.modules[name] = pkg
sys.modules["trimitogen"].__class__ = Package
for name in EAGER:
    mod = M(name)
    mod.__package__ = "trimitogen.core"
    mod.__file__ = "<%s>" % name
    sys.modules[name] = mod
    exec(code_of(name, SOURCES), mod.__dict__)
    setattr(sys.modules["trimitogen.core"], name.rpartition(".")[2], mod)
del M, name, mod, pkg, Package, AsyncioRun
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
        return strip_annotations(minimize_source(f.read()))


def strip_annotations(source: str) -> str:
    """``source`` without annotations and without ``from __future__ import annotations``.

    That future import is a SyntaxError before Python 3.7, and without it an annotation at module
    or class level is evaluated, which fails for names imported only for the type checker.  So
    the runtime is shipped without either, and the same source runs on every child Python from
    3.6.  Every statement stays on its line (a removed annotation that spanned lines leaves
    backslash continuations), so tracebacks point at the lines of the original files.
    """
    tree = ast.parse(source)
    lines = source.split("\n")
    edits: list[tuple[tuple[int, int], tuple[int, int], str]] = []

    def char_pos(row: int, byte_col: int) -> tuple[int, int]:
        # ast counts columns in UTF-8 bytes, tokenize and str slicing in characters.
        line = lines[row - 1]
        return row, len(line.encode("utf-8")[:byte_col].decode("utf-8", "replace"))

    def start(node: ast.AST) -> tuple[int, int]:
        return char_pos(node.lineno, node.col_offset)  # type: ignore[attr-defined]

    def end(node: ast.AST) -> tuple[int, int]:
        return char_pos(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            kept = [alias.name for alias in node.names if alias.name != "annotations"]
            text = "from __future__ import " + ", ".join(kept) if kept else "pass"
            edits.append((start(node), end(node), text))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
                if arg is not None and arg.annotation is not None:
                    row, col = start(arg)
                    edits.append(((row, col + len(arg.arg)), end(arg.annotation), ""))
            if node.returns is not None:
                # Only blanks and line continuations stand between the arrow and the annotation.
                row, col = start(node.returns)
                while "->" not in lines[row - 1][:col]:
                    row, col = row - 1, len(lines[row - 2])
                edits.append(((row, lines[row - 1].rindex("->", 0, col)), end(node.returns), ""))
        elif isinstance(node, ast.AnnAssign):
            if node.value is None:
                edits.append((start(node), end(node), "pass"))
            else:
                edits.append((end(node.target), end(node.annotation), ""))
    for (row, col), (end_row, end_col), text in sorted(edits, reverse=True):
        head = lines[row - 1][:col]
        head, tail = (head + text if text else head.rstrip(" ")), lines[end_row - 1][end_col:]
        if end_row == row:
            lines[row - 1] = head + tail
        else:  # as many lines as before: continuations stand where the removed ones were
            lines[row - 1 : end_row] = [head + " \\", *[" \\"] * (end_row - row - 1), tail]
    return "\n".join(lines)


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
