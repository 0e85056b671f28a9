"""Target strings: a chain of connection methods written as one line, and back.

``ssh://deploy@web1:2222/sudo://root?python=/usr/bin/python3`` is two hops, outermost first:
an ssh login, then sudo on that machine.  Each hop is ``scheme://authority?options``; a new hop
starts wherever ``/`` is followed by ``scheme://``.  Option values are percent-encoded when
formatted (``:`` becomes ``%3A``), so a formatted hop never contains ``://`` and a chain splits
back into the same hops.

Every method has one entry in :data:`SCHEMES`: its scheme name, its class, the function that
makes it, how its authority is read and written, and which fields are query options.  A new
method is one more entry.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, unquote

from . import _containers as containers
from ._context import Context, open_context
from ._methods import Fork, Local, Method, Ssh, Su, Sudo, fork, local, ssh, su, sudo


@dataclass(frozen=True)
class Option:
    """How one query option is read from text and written back."""

    parse: Callable[[str], Any]
    format: Callable[[Any], str]


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise ValueError("expected yes or no, got %r" % text)


def _parse_argv(text: str) -> tuple[str, ...]:
    return tuple(shlex.split(text))


def _parse_names(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split(",") if part)


TEXT = Option(str, str)
#: An argv (interpreter and its options, extra ssh arguments): shell words.
ARGV = Option(_parse_argv, shlex.join)
BOOL = Option(_parse_bool, lambda value: "yes" if value else "no")
#: A list of names, comma-separated.
NAMES = Option(_parse_names, ",".join)


def _parse_env(text: str) -> dict[str, str]:
    env = {}
    for item in text.split(","):
        name, equals, value = item.partition("=")
        if not equals:
            raise ValueError("expected NAME=VALUE, got %r" % item)
        env[unquote(name)] = unquote(value)
    return env


def _format_env(pairs: Any) -> str:
    return ",".join("%s=%s" % (quote(k, safe=""), quote(v, safe="")) for k, v in pairs)


INT = Option(int, str)
#: Environment variables, ``NAME=VALUE,NAME=VALUE`` (each part percent-encoded).
ENV = Option(_parse_env, _format_env)


@dataclass(frozen=True)
class Authority:
    """How the part between ``scheme://`` and ``?`` maps to the method function's arguments.

    ``parse`` returns keyword arguments for the method function; ``format`` writes the part
    back from a method object.
    """

    parse: Callable[[str], dict[str, Any]]
    format: Callable[[Any], str]


_HOSTNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*|\[[0-9A-Fa-f:.]+\]")
_USERNAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.@-]*")


def _parse_host(text: str) -> dict[str, Any]:
    user, at, rest = text.rpartition("@")
    if not at:
        user, rest = "", text
    elif not user:
        raise ValueError("the user name before '@' is empty")
    host, port_text = rest, ""
    if rest.startswith("["):
        close = rest.find("]")
        if close > 0:
            host, port_text = rest[: close + 1], rest[close + 1 :]
            if port_text and not port_text.startswith(":"):
                raise ValueError("expected ':PORT' after %r, got %r" % (host, port_text))
            port_text = port_text[1:]
    elif ":" in rest:
        host, _, port_text = rest.partition(":")
    if not host:
        raise ValueError("the host name is missing")
    if not _HOSTNAME.fullmatch(host):
        raise ValueError("%r is not a host name or address" % host)
    kwargs: dict[str, Any] = {"hostname": host.strip("[]")}
    if user:
        user = unquote(user)
        if ":" in user:
            raise ValueError(
                "a password in a target string would show in ps and shell history: use a key, "
                "or pass password= to ssh()"
            )
        if not _USERNAME.fullmatch(user):
            raise ValueError("%r is not a user name" % user)
        kwargs["username"] = user
    if port_text or rest.endswith(":"):
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError("port %r is not a number from 1 to 65535" % port_text)
        kwargs["port"] = int(port_text)
    return kwargs


def _format_host(method: Any) -> str:
    host = method.hostname
    text = "[%s]" % host if ":" in host else host
    if method.username:
        text = "%s@%s" % (quote(method.username, safe=""), text)
    if method.port is not None:
        text += ":%d" % method.port
    return text


def _parse_user(text: str) -> dict[str, Any]:
    if not text:
        return {}
    user = unquote(text)
    if not _USERNAME.fullmatch(user):
        raise ValueError("%r is not a user name" % user)
    return {"username": user}


def _parse_python(text: str) -> dict[str, Any]:
    return {"python": unquote(text)} if text else {}


def _format_python(method: Any) -> str:
    python: tuple[str, ...] = method.python
    if len(python) != 1 or python[0] == sys.executable:
        # The master's interpreter is the default; an argv of several words is an option.
        return ""
    return quote(python[0], safe="/")


def _parse_nothing(text: str) -> dict[str, Any]:
    if text:
        raise ValueError("this scheme takes nothing before '?', got %r" % text)
    return {}


def _named(param: str, field: str | None = None) -> Authority:
    """The method function's first argument (a container, a pod, a root directory...)."""

    def parse(text: str) -> dict[str, Any]:
        if not text:
            raise ValueError("the %s is missing before '?'" % param)
        return {param: unquote(text)}

    return Authority(parse, lambda method: quote(str(getattr(method, field or param)), safe=""))


def _parse_setns(text: str) -> dict[str, Any]:
    """``PID``, or a container as ``NAME`` or ``KIND:NAME`` (kind docker, podman, lxc...)."""
    if not text:
        raise ValueError("a process id or a container name is missing before '?'")
    if text.isdigit():
        return {"pid": int(text)}
    kind, colon, name = unquote(text).rpartition(":")
    return {"container": name, "container_kind": kind} if colon else {"container": name}


def _format_setns(method: Any) -> str:
    if method.pid is not None:
        return str(method.pid)
    return quote("%s:%s" % (method.container_kind, method.container), safe=":")


#: ``[user@]host[:port]``, host names or addresses (IPv6 in brackets).
HOST = Authority(_parse_host, _format_host)
#: A user name; empty means the method function's default.
USER = Authority(_parse_user, lambda method: quote(method.username, safe=""))
#: An interpreter, as in ``local://python3.8`` or ``local:///usr/bin/python3``.
PYTHON = Authority(_parse_python, _format_python)
NOTHING = Authority(_parse_nothing, lambda method: "")


@dataclass(frozen=True)
class Scheme:
    """One connection method as target strings write it.

    ``options`` are the method's fields a user may set as query options; fields in neither the
    authority nor the options (passwords) are never written.
    """

    name: str
    method_type: type[Any]
    factory: Callable[..., Any]
    authority: Authority
    options: Mapping[str, Option]

    def parse(self, authority: str, options: Mapping[str, str]) -> Method:
        kwargs = self.authority.parse(authority)
        for key, text in options.items():
            option = self.options.get(key)
            if option is None:
                raise ValueError(
                    "unknown option %r for %s (known: %s)"
                    % (key, self.name, ", ".join(sorted(self.options)) or "none")
                )
            if key in kwargs:
                raise ValueError("%r is given both before '?' and as an option" % key)
            try:
                kwargs[key] = option.parse(text)
            except ValueError as exc:
                raise ValueError("option %s=%s: %s" % (key, text, exc)) from None
        method: Method = self.factory(**kwargs)
        return method

    def format(self, method: Method) -> str:
        authority = self.authority.format(method)
        # Options equal to what the authority alone gives are defaults: left out.
        base = self.factory(**self.authority.parse(authority))
        query = [
            "%s=%s" % (key, quote(option.format(getattr(method, key)), safe="/,"))
            for key, option in self.options.items()
            if getattr(method, key) != getattr(base, key)
        ]
        return "%s://%s%s" % (self.name, authority, "?" + "&".join(query) if query else "")


def _tool_schemes() -> list[Scheme]:
    """The container and namespace methods: ``docker://web?user=app``, ``chroot:///srv/root``,
    ``setns://1234`` or ``setns://podman:web``, ``doas://root``..."""
    common = {"python": ARGV}

    def tool(name: str, path: str, args: str, **options: Option) -> dict[str, Option]:
        return {**common, path: TEXT, args: ARGV, **options}

    c = containers
    return [
        Scheme(
            "docker",
            c.Docker,
            c.docker,
            _named("container"),
            tool("docker", "docker_path", "docker_args", user=TEXT, host=TEXT, env=ENV, cwd=TEXT),
        ),
        Scheme(
            "podman",
            c.Podman,
            c.podman,
            _named("container"),
            tool("podman", "podman_path", "podman_args", user=TEXT, env=ENV, cwd=TEXT),
        ),
        Scheme(
            "buildah",
            c.Buildah,
            c.buildah,
            _named("container"),
            tool("buildah", "buildah_path", "buildah_args", user=TEXT, env=ENV, cwd=TEXT),
        ),
        Scheme(
            "kubectl",
            c.Kubectl,
            c.kubectl,
            _named("pod"),
            tool(
                "kubectl",
                "kubectl_path",
                "kubectl_args",
                container=TEXT,
                namespace=TEXT,
                kube_context=TEXT,
            ),
        ),
        Scheme(
            "lxc",
            c.Lxc,
            c.lxc,
            _named("container"),
            tool("lxc", "lxc_attach_path", "lxc_attach_args", uid=INT, gid=INT, env=ENV),
        ),
        Scheme(
            "lxd",
            c.Lxd,
            c.lxd,
            _named("container"),
            tool("lxd", "lxc_path", "lxc_args", user=INT, env=ENV, cwd=TEXT),
        ),
        Scheme(
            "incus",
            c.Incus,
            c.incus,
            _named("container"),
            tool("incus", "incus_path", "incus_args", user=INT, env=ENV, cwd=TEXT),
        ),
        Scheme(
            "setns",
            c.Setns,
            c.setns,
            Authority(_parse_setns, _format_setns),
            tool(
                "setns",
                "nsenter_path",
                "nsenter_args",
                query_path=TEXT,
                namespaces=NAMES,
                uid=INT,
                gid=INT,
                env=ENV,
                cwd=TEXT,
            ),
        ),
        Scheme(
            "chroot",
            c.Chroot,
            c.chroot,
            Authority(_named("root").parse, lambda method: quote(method.root, safe="/")),
            tool("chroot", "chroot_path", "chroot_args", user=TEXT, env=ENV),
        ),
        Scheme("doas", c.Doas, c.doas, USER, tool("doas", "doas_path", "doas_args")),
        Scheme(
            "machinectl",
            c.Machinectl,
            c.machinectl,
            _named("machine"),
            tool(
                "machinectl", "systemd_run_path", "systemd_run_args", user=TEXT, env=ENV, cwd=TEXT
            ),
        ),
        Scheme(
            "jail",
            c.Jail,
            c.jail,
            _named("name", "jail"),
            tool("jail", "jexec_path", "jexec_args", user=TEXT),
        ),
    ]


SCHEMES: dict[str, Scheme] = {
    scheme.name: scheme
    for scheme in (
        Scheme("local", Local, local, PYTHON, {"python": ARGV}),
        Scheme(
            "ssh",
            Ssh,
            ssh,
            HOST,
            {
                "python": ARGV,
                "check_host_keys": TEXT,
                "identity_file": TEXT,
                "ssh_path": TEXT,
                "ssh_args": ARGV,
                "compression": BOOL,
            },
        ),
        Scheme("sudo", Sudo, sudo, USER, {"python": ARGV, "sudo_path": TEXT, "sudo_args": ARGV}),
        Scheme("su", Su, su, USER, {"python": ARGV, "su_path": TEXT}),
        Scheme("fork", Fork, fork, NOTHING, {"preload": NAMES}),
        *_tool_schemes(),
    )
}

_HOP_START = re.compile(r"/(?=[A-Za-z][A-Za-z0-9+.-]*://)")
_HOP = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^?]*)(?:\?(.*))?", re.DOTALL)


def scheme_of(method: Method) -> Scheme:
    """The :class:`Scheme` entry of a method object."""
    for scheme in SCHEMES.values():
        if type(method) is scheme.method_type:
            return scheme
    raise ValueError("%r has no target-string scheme" % (method,))


@dataclass(frozen=True)
class Target:
    """A chain of connection methods, outermost first: where one context runs.

    ``str(target)`` is its target string, which :func:`parse_target` reads back into an equal
    target (passwords are never written, so a method with one does not survive the trip).
    ``name`` labels it in results and logs (an inventory's host name); it does not take part in
    comparisons.
    """

    hops: tuple[Method, ...]
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.hops:
            raise ValueError("a target needs at least one method")

    def __str__(self) -> str:
        return "/".join(scheme_of(hop).format(hop) for hop in self.hops)

    @property
    def label(self) -> str:
        """``name`` if set, else the target string."""
        return self.name or str(self)


def _parse_query(text: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in text.split("&"):
        key, equals, value = item.partition("=")
        if not key or not equals:
            raise ValueError("option %r is not KEY=VALUE" % item)
        if key in options:
            raise ValueError("option %r is given twice" % key)
        options[key] = unquote(value)
    return options


def _parse_hop(text: str, first: bool) -> Method:
    match = _HOP.fullmatch(text)
    if match is None:
        if not first or "://" in text:
            raise ValueError("expected SCHEME://..., one of %s" % ", ".join(SCHEMES))
        # A bare [user@]host[:port] first hop is an ssh login.
        authority, _, query = text.partition("?")
        return SCHEMES["ssh"].parse(authority, _parse_query(query) if query else {})
    name, authority, query = match.group(1), match.group(2), match.group(3)
    scheme = SCHEMES.get(name.lower())
    if scheme is None:
        raise ValueError("unknown scheme %r (known: %s)" % (name, ", ".join(SCHEMES)))
    return scheme.parse(authority, _parse_query(query) if query else {})


def parse_target(text: str, *, name: str | None = None) -> Target:
    """Read a target string such as ``"ssh://deploy@web1:2222/sudo://root"``.

    Schemes: ``local://`` (the master's interpreter; ``local://python3.8`` or
    ``local:///usr/bin/python3`` for another), ``ssh://[user@]host[:port]``, ``sudo://[user]``
    and ``su://[user]`` (default root), ``fork://``.  A first hop without a scheme is ssh.  Query
    options set the method's other arguments: ``python`` (shell words), and for ssh
    ``check_host_keys``, ``identity_file``, ``ssh_path``, ``ssh_args``, ``compression``; for
    sudo ``sudo_path``, ``sudo_args``; for su ``su_path``; for fork ``preload`` (comma-separated).

    Raises :class:`ValueError` naming the hop and the part that is wrong.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty target string")
    text = text.strip()
    pieces = _HOP_START.split(text)
    hops = []
    for number, piece in enumerate(pieces, 1):
        try:
            hops.append(_parse_hop(piece, number == 1))
        except (ValueError, TypeError) as exc:
            raise ValueError("target %r, hop %d (%r): %s" % (text, number, piece, exc)) from None
    return Target(tuple(hops), name)


def as_target(target: Target | str | Method) -> Target:
    """``target`` as a :class:`Target`: parsed if a string, a one-hop chain if a method."""
    if isinstance(target, Target):
        return target
    if isinstance(target, str):
        return parse_target(target)
    return Target((target,))


def with_python(target: Target, python: str) -> Target:
    """``target`` with ``python`` as the interpreter of every hop that uses its default one."""
    hops = []
    for hop in target.hops:
        scheme = scheme_of(hop)
        if "python" in scheme.options:
            base = scheme.factory(**scheme.authority.parse(scheme.authority.format(hop)))
            if getattr(hop, "python") == base.python:  # noqa: B009 (not every method has it)
                hop = replace(hop, python=(python,))  # type: ignore[type-var]
        hops.append(hop)
    return Target(tuple(hops), target.name)


@asynccontextmanager
async def open_chain(
    target: Target | str | Method,
    *,
    connect_timeout: float = 30.0,
    name: str | None = None,
) -> AsyncIterator[Context]:
    """Open every hop of ``target`` in turn, each started by the one before; yield the last.

    ``connect_timeout`` bounds each hop's start-up.  ``name`` (default: the target's name) labels
    the innermost context.  Leaving the block closes the hops innermost first; an exception
    from the body propagates as itself.
    """
    chain = as_target(target)
    async with AsyncExitStack() as stack:
        context: Context | None = None
        for number, hop in enumerate(chain.hops, 1):
            context = await stack.enter_async_context(
                open_context(
                    hop,
                    via=context,
                    connect_timeout=connect_timeout,
                    name=(name or chain.name) if number == len(chain.hops) else None,
                )
            )
        assert context is not None
        yield context
