"""Turning a callable into the (module, qualified name) pair a child can look up."""

from __future__ import annotations

import sys
import types
from typing import Any

from .core.importer import MAIN_ALIAS

#: Longest description of a user's object that goes into an error message or a log line.
DESCRIPTION_LIMIT = 80


def describe_object(obj: Any) -> str:
    """A short description of ``obj`` for messages: its kind and name, never its ``repr()``.

    A repr can hold anything (``os.environ.get`` shows the whole environment, tokens and
    all), so only type and qualified names are used, truncated to :data:`DESCRIPTION_LIMIT`.
    """
    kind = type(obj).__name__
    name = getattr(obj, "__qualname__", None)
    text = "%s %s" % (kind, name) if isinstance(name, str) else "%s object" % kind
    owner = getattr(obj, "__self__", None)
    if isinstance(obj, (types.MethodType, types.BuiltinMethodType)) and not isinstance(
        owner, (type, types.ModuleType, type(None))
    ):
        text += " of a %s object" % type(owner).__qualname__
    if len(text) > DESCRIPTION_LIMIT:
        text = text[: DESCRIPTION_LIMIT - 3] + "..."
    return text


def _refuse(fn: Any, why: str) -> TypeError:
    return TypeError(
        "cannot call %s in another context: %s; pass a module-level function, a builtin, a "
        "static or class method of a module-level class, or a method its module exports under "
        "its own name (such as random.randint)" % (describe_object(fn), why)
    )


def function_reference(fn: Any) -> tuple[str, str]:
    """Return ``(module, qualname)`` naming ``fn``, or raise :class:`TypeError`.

    Only callables that the child can find again by name are accepted: the name must lead back
    to this very object in its module.  Lambdas, closures, bound methods of instances and
    callable instances are refused before anything is sent, except a method of a module-level
    instance that its module exports under the method's name (``random.randint``), which the
    child finds the same way.
    """
    if isinstance(fn, (types.MethodType, types.BuiltinFunctionType)) and not isinstance(
        fn.__self__, (type, types.ModuleType, type(None))
    ):
        return _exported_method(fn)
    if isinstance(fn, types.MethodType):
        holder: Any = fn.__self__
        module = holder.__module__
        qualname = "%s.%s" % (holder.__qualname__, fn.__name__)
    elif isinstance(fn, types.BuiltinFunctionType):
        owner = fn.__self__
        module = fn.__module__ or getattr(owner, "__module__", None) or "builtins"
        if isinstance(owner, type):
            module = owner.__module__
            qualname = "%s.%s" % (owner.__qualname__, fn.__name__)
        else:
            qualname = fn.__qualname__
    elif isinstance(fn, types.FunctionType):
        module, qualname = fn.__module__, fn.__qualname__
        if "<lambda>" in qualname:
            raise _refuse(fn, "it is a lambda")
        if "<locals>" in qualname:
            raise _refuse(fn, "it is defined inside another function")
    elif isinstance(fn, type):
        module, qualname = fn.__module__, fn.__qualname__
    else:
        raise _refuse(fn, "it is a %s, not a function" % type(fn).__name__)
    found: Any = sys.modules.get(module)
    if module == "__main__":
        module = _main_module_name(fn)
    try:
        for part in qualname.split("."):
            found = getattr(found, part)
    except AttributeError:
        found = None
    if not _same_callable(found, fn):
        raise _refuse(fn, "%s.%s does not lead back to it" % (module, qualname))
    return module, qualname


def _exported_method(fn: Any) -> tuple[str, str]:
    module = getattr(type(fn.__self__), "__module__", None)
    exported = getattr(sys.modules.get(module or ""), fn.__name__, None)
    if module is None or module == "__main__" or not _same_callable(exported, fn):
        raise _refuse(fn, "it is a method bound to an instance")
    return module, fn.__name__


def _main_module_name(fn: Any) -> str:
    """The name the child imports the master's ``__main__`` under.

    ``python -m pkg.tool`` has a real module name; a script is served under an alias so its
    ``if __name__ == "__main__":`` block does not run in the child.
    """
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return str(spec.name)
    if getattr(main, "__file__", None):
        return MAIN_ALIAS
    raise _refuse(fn, "it is defined in an interactive __main__ that has no source file")


def _same_callable(found: Any, fn: Any) -> bool:
    if found is fn:
        return True
    # Class methods are re-bound on each attribute access: compare what they are bound to.
    if isinstance(found, types.MethodType) and isinstance(fn, types.MethodType):
        return found.__func__ is fn.__func__ and found.__self__ is fn.__self__
    if isinstance(found, types.BuiltinFunctionType) and isinstance(fn, types.BuiltinFunctionType):
        return found.__self__ is fn.__self__ and found.__name__ == fn.__name__
    return False
