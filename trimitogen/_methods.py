"""Connection methods: how to start a child, described as data.

Each method object is immutable and small.  :meth:`spec` renders it as a plain dict, which
:func:`trimitogen.core.connect.build_plan` turns into an argv and a prompt dialog, in the master
for a direct child or in an intermediate context for ``via=``.

Nothing here needs Trio or the master: code in a child context imports this module too
(``import trimitogen`` there) and builds methods as data.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

HostKeyPolicy = Literal["enforce", "accept", "ignore"]


def _python_argv(python: str | Sequence[str] | None, default: str | None) -> tuple[str, ...]:
    """The interpreter argv; ``()`` means "the system's python3, wherever the child starts"."""
    if python is None:
        return () if default is None else (default,)
    if isinstance(python, str):
        argv: tuple[str, ...] = (python,)
    else:
        argv = tuple(python)
    if not argv or not all(isinstance(arg, str) and arg for arg in argv):
        raise ValueError("python must be a non-empty path or argv list, got %r" % (python,))
    return argv


class Method(Protocol):
    """What :func:`~trimitogen.open_context` needs of a connection method: a ``kind`` (such as
    ``"ssh"``), a description for messages, and the spec -- a plain dict that
    :func:`trimitogen.core.connect.build_plan` turns into an argv, in the master or in an
    intermediate.  Methods are data: the driver does the spawning."""

    @property
    def kind(self) -> str: ...

    def describe(self) -> str: ...

    def spec(self) -> dict[str, Any]: ...


class _Method:
    """Shared behaviour of the built-in methods: the spec is the dataclass's fields."""

    kind = ""

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = asdict(self)  # type: ignore[call-overload]
        spec["kind"] = self.kind
        return spec

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Local(_Method):
    """A new local interpreter.  Made by :func:`local`."""

    python: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None

    kind = "local"

    def describe(self) -> str:
        return "local interpreter %s" % " ".join(self.python)


@dataclass(frozen=True)
class Ssh(_Method):
    """An interpreter on another machine, through the OpenSSH client.  Made by :func:`ssh`."""

    hostname: str
    username: str | None
    port: int | None
    identity_file: str | None
    password: str | None
    check_host_keys: HostKeyPolicy
    ssh_path: str
    ssh_args: tuple[str, ...]
    python: tuple[str, ...]
    compression: bool

    kind = "ssh"

    def describe(self) -> str:
        user = "%s@" % self.username if self.username else ""
        port = ":%d" % self.port if self.port else ""
        return "ssh to %s%s%s" % (user, self.hostname, port)

    def __repr__(self) -> str:
        return "Ssh(%s)" % self.describe()


@dataclass(frozen=True)
class Sudo(_Method):
    """An interpreter run as another user through sudo.  Made by :func:`sudo`."""

    username: str
    password: str | None
    sudo_path: str
    sudo_args: tuple[str, ...]
    python: tuple[str, ...]

    kind = "sudo"

    def describe(self) -> str:
        return "sudo to %s" % self.username

    def __repr__(self) -> str:
        return "Sudo(%s)" % self.username


@dataclass(frozen=True)
class Su(_Method):
    """An interpreter run as another user through su.  Made by :func:`su`."""

    username: str
    password: str | None
    su_path: str
    python: tuple[str, ...]

    kind = "su"

    def describe(self) -> str:
        return "su to %s" % self.username

    def __repr__(self) -> str:
        return "Su(%s)" % self.username


@dataclass(frozen=True)
class Fork(_Method):
    """A copy of a running context, made by os.fork() in it.  Made by :func:`fork`."""

    preload: tuple[str, ...] = ()

    kind = "fork"

    def describe(self) -> str:
        return "fork"


def local(
    *,
    python: str | Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Local:
    """A method that starts a new local Python interpreter.

    ``python`` is the interpreter's path or a whole argv prefix such as
    ``["/usr/bin/python3", "-I", "-S"]``; by default the master's own ``sys.executable``.
    Any CPython 3.6 or newer works: nothing needs to be installed for it.  ``env`` adds (or
    replaces) environment variables of the new process, and ``cwd`` is the directory it starts
    in; both apply before the interpreter starts (via ``via=``, on the intermediate's machine).
    """
    return Local(_python_argv(python, sys.executable), env_pairs(env), _directory(cwd))


def env_pairs(env: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """``env`` as sorted (name, value) pairs, checked: a method object stays hashable data."""
    if env is None:
        return ()
    pairs = tuple(sorted(env.items()))
    for key, value in pairs:
        if not (isinstance(key, str) and key and "=" not in key and "\0" not in key):
            raise ValueError("environment variable names must be non-empty, without '=': %r" % key)
        if not isinstance(value, str) or "\0" in value:
            raise ValueError("the value of environment variable %s must be a str" % key)
    return pairs


def _directory(cwd: str | os.PathLike[str] | None) -> str | None:
    if cwd is None:
        return None
    path = os.fspath(cwd)
    if not isinstance(path, str) or not path:
        raise ValueError("cwd must be a non-empty path, got %r" % (cwd,))
    return path


def ssh(
    hostname: str,
    *,
    username: str | None = None,
    port: int | None = None,
    identity_file: str | None = None,
    password: str | None = None,
    check_host_keys: HostKeyPolicy = "enforce",
    ssh_path: str = "ssh",
    ssh_args: Sequence[str] = (),
    python: str | Sequence[str] = "python3",
    compression: bool = False,
) -> Ssh:
    """A method that starts an interpreter on ``hostname`` with the OpenSSH client.

    Key authentication runs ssh without a terminal and in batch mode, so a missing key fails at
    once.  With ``password``, ssh runs under a pty and the password is typed at its prompt.
    ``check_host_keys``: ``"enforce"`` refuses unknown and changed host keys, ``"accept"`` records
    unknown keys and refuses changed ones, ``"ignore"`` checks nothing.  ``ssh_args`` are added
    as they are (your ssh config still applies).  ``python`` is the remote interpreter.
    ``compression=True`` passes ``-C``; off by default, as in OpenSSH, because it cut transfers
    to a tenth of their speed over the loopback (``benchmarks/ssh_compression.py``) and pays
    only on links slower than its own ~25 MiB/s, with compressible data.  Without ``-C`` your
    ssh config's ``Compression`` setting still applies.
    """
    if check_host_keys not in ("enforce", "accept", "ignore"):
        raise ValueError(
            "check_host_keys must be 'enforce', 'accept' or 'ignore', not %r" % (check_host_keys,)
        )
    return Ssh(
        hostname,
        username,
        port,
        identity_file,
        password,
        check_host_keys,
        ssh_path,
        tuple(ssh_args),
        _python_argv(python, "python3"),
        compression,
    )


def sudo(
    username: str = "root",
    *,
    password: str | None = None,
    sudo_path: str = "sudo",
    sudo_args: Sequence[str] = (),
    python: str | Sequence[str] | None = None,
) -> Sudo:
    """A method that starts an interpreter as ``username`` through sudo.

    sudo is told to print a fixed prompt, answered with ``password`` on a pty, so a translated or
    customised prompt does not matter.  A wrong or missing password raises
    :class:`~trimitogen.PasswordError` as soon as sudo says so.  ``password`` is the password of
    the user running sudo.  ``python`` defaults to ``/usr/bin/python3`` (every user can run it;
    the master's own interpreter may live where the target user cannot enter), looked up on the
    machine where sudo runs, or ``python3`` on the PATH if it is not there.
    """
    return Sudo(username, password, sudo_path, tuple(sudo_args), _python_argv(python, None))


def su(
    username: str = "root",
    *,
    password: str | None = None,
    su_path: str = "su",
    python: str | Sequence[str] | None = None,
) -> Su:
    """A method that starts an interpreter as ``username`` through su, on a pty.

    ``password`` is the target user's password (su asks for it unless root runs su).
    ``python`` defaults as for :func:`sudo`.
    """
    return Su(username, password, su_path, _python_argv(python, None))


def fork(*, preload: Sequence[str] = ()) -> Fork:
    """A method that makes a new context as a copy of a running one.

    With ``open_context(fork(), via=ctx)`` the context ``ctx`` forks itself: the copy has every
    module ``ctx`` had imported, with its state, and is routed as a child of ``ctx``.  Without
    ``via``, the copy is made from a fork server: a local context this library starts on first
    use and keeps for the rest of the Trio run.  ``preload`` names modules the parent imports
    before forking, so copies start with them ready.  The master process itself never forks.
    """
    if isinstance(preload, str):
        preload = (preload,)
    return Fork(tuple(preload))
