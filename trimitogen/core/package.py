"""What ``import trimitogen`` gives code running in a child context.

A child has no trimitogen installed: the runtime makes a ``trimitogen`` module whose attributes
are looked up here on first use.  The names that make sense in a child are the real objects (the
errors, value-type registration, and the method factories, which only build data: a module can
say ``METHOD = trimitogen.ssh("web1")`` at top level and be imported anywhere).  Everything that
drives contexts (``open_context``, ``Context``, ``Latch``...) exists too, so the module imports,
but using it raises :class:`MasterOnlyError`.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict

#: Public names usable in a child, and the module each comes from.  The method modules come from
#: the master by import over the wire (they need nothing but the standard library until a
#: context is opened with them).
CHILD_NAMES: Dict[str, str] = {
    "Error": "trimitogen.core.errors",
    "CallError": "trimitogen.core.errors",
    "Cancelled": "trimitogen.core.errors",
    "event_loop": "trimitogen.core.aloop",
    "ChannelError": "trimitogen.core.errors",
    "ConnectError": "trimitogen.core.errors",
    "HostKeyError": "trimitogen.core.errors",
    "LatchError": "trimitogen.core.errors",
    "PasswordError": "trimitogen.core.errors",
    "StreamError": "trimitogen.core.errors",
    "TimeoutError": "trimitogen.core.errors",
    "register_value_type": "trimitogen.core.values",
    "minimize_source": "trimitogen.core.minify",
    "get_child_modules": "trimitogen.core.modules",
    "Side": "trimitogen.core.side",
    "io_op": "trimitogen.core.side",
    "local": "trimitogen._methods",
    "ssh": "trimitogen._methods",
    "sudo": "trimitogen._methods",
    "su": "trimitogen._methods",
    "fork": "trimitogen._methods",
    "Method": "trimitogen._methods",
    "buildah": "trimitogen._containers",
    "chroot": "trimitogen._containers",
    "docker": "trimitogen._containers",
    "doas": "trimitogen._containers",
    "incus": "trimitogen._containers",
    "jail": "trimitogen._containers",
    "kubectl": "trimitogen._containers",
    "lxc": "trimitogen._containers",
    "lxd": "trimitogen._containers",
    "machinectl": "trimitogen._containers",
    "podman": "trimitogen._containers",
    "setns": "trimitogen._containers",
}

#: Public names that need the master (Trio, the module responder): placeholders in a child.
MASTER_ONLY = frozenset(
    (
        "Context",
        "ContextStatistics",
        "TreeResult",
        "ImportStats",
        "Latch",
        "iter_read",
        "open_context",
        "write_all",
        # Many targets (issue 11): target strings, inventories, groups; they need the master.
        "FdLimitError",
        "Group",
        "GroupStatistics",
        "Inventory",
        "InventoryHost",
        "Result",
        "ResultStream",
        "Target",
        "expand_host_range",
        "load_inventory",
        "open_chain",
        "open_group",
        "parse_host_list",
        "parse_ini_inventory",
        "parse_target",
        "parse_yaml_inventory",
        "with_python",
    )
)


class MasterOnlyError(RuntimeError):
    """A part of trimitogen that runs only in the master process was used in a child context."""


class MasterOnly:
    """Stands for a master-only name in a child: importing it works, using it raises."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return "<trimitogen.%s: only in the master process>" % self.name

    def _refuse(self) -> MasterOnlyError:
        import sys

        where = sys.argv[0] if sys.argv and sys.argv[0].startswith("trimitogen:") else "a child"
        return MasterOnlyError(
            "trimitogen.%s runs only in the master process, not in %s: open contexts from the "
            "master (a context may be opened via=this one)" % (self.name, where)
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise self._refuse()

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise self._refuse()


def attribute(name: str) -> Any:
    """The ``trimitogen`` module's attribute ``name`` in a child (its ``__getattr__``)."""
    import sys

    package = sys.modules["trimitogen"]
    module_name = CHILD_NAMES.get(name)
    if module_name is not None:
        __import__(module_name)
        value = getattr(sys.modules[module_name], name)
    elif name in MASTER_ONLY:
        value = MasterOnly(name)
    else:
        raise AttributeError("module 'trimitogen' has no attribute %r" % (name,))
    setattr(package, name, value)
    return value
