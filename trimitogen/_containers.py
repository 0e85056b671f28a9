"""Methods that start a context inside a container, a set of namespaces, a chroot, or as another
user through doas: each the argv of its tool, as data.

The argv is built by :mod:`trimitogen.core.containers`, so the same method works as a hop
(``via=`` a context on the machine where the tool runs).  Every factory takes ``python`` (the
interpreter where the command runs, ``python3`` on that PATH by default), the tool's path and
extra arguments for it; ``env`` and ``cwd`` where the tool can carry them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ._methods import _directory, _Method, _python_argv, env_pairs

if TYPE_CHECKING:
    # Only in annotations: a child (Python 3.8) may import this module.
    Env = tuple[tuple[str, str], ...]


class _Tool(_Method):
    """Adds the description to the spec: the plan's error messages name the context with it."""

    def spec(self) -> dict[str, Any]:
        spec = super().spec()
        spec["describe"] = self.describe()
        return spec


def _args(args: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(args, str):
        raise TypeError("%s must be a sequence of arguments, not a str" % what)
    return tuple(args)


@dataclass(frozen=True)
class Docker(_Tool):
    """An interpreter in a running Docker container.  Made by :func:`docker`."""

    container: str
    user: str | None
    host: str | None
    env: Env
    cwd: str | None
    docker_path: str
    docker_args: tuple[str, ...]
    python: tuple[str, ...]

    kind = "docker"

    def describe(self) -> str:
        return "docker container %s" % self.container


@dataclass(frozen=True)
class Podman(_Tool):
    """An interpreter in a running Podman container.  Made by :func:`podman`."""

    container: str
    user: str | None
    env: Env
    cwd: str | None
    podman_path: str
    podman_args: tuple[str, ...]
    python: tuple[str, ...]

    kind = "podman"

    def describe(self) -> str:
        return "podman container %s" % self.container


@dataclass(frozen=True)
class Buildah(_Tool):
    """An interpreter in a Buildah working container.  Made by :func:`buildah`."""

    container: str
    user: str | None
    env: Env
    cwd: str | None
    buildah_path: str
    buildah_args: tuple[str, ...]
    python: tuple[str, ...]

    kind = "buildah"

    def describe(self) -> str:
        return "buildah container %s" % self.container


@dataclass(frozen=True)
class Kubectl(_Tool):
    """An interpreter in a container of a Kubernetes pod.  Made by :func:`kubectl`."""

    pod: str
    container: str | None
    namespace: str | None
    kube_context: str | None
    kubectl_path: str
    kubectl_args: tuple[str, ...]
    python: tuple[str, ...]

    kind = "kubectl"

    def describe(self) -> str:
        where = "%s/%s" % (self.namespace, self.pod) if self.namespace else self.pod
        return "kubernetes pod %s" % where


@dataclass(frozen=True)
class Lxc(_Tool):
    """An interpreter in an LXC container, through lxc-attach.  Made by :func:`lxc`."""

    container: str
    uid: int | None
    gid: int | None
    env: Env
    lxc_attach_path: str
    lxc_attach_args: tuple[str, ...]
    python: tuple[str, ...]

    kind = "lxc"

    def describe(self) -> str:
        return "lxc container %s" % self.container


@dataclass(frozen=True)
class Lxd(_Tool):
    """An interpreter in an LXD instance, through ``lxc exec``.  Made by :func:`lxd`."""

    container: str
    user: int | None
    env: Env
    cwd: str | None
    lxc_path: str
    lxc_args: tuple[str, ...]
    python: tuple[str, ...]

    kind = "lxd"

    def describe(self) -> str:
        return "lxd instance %s" % self.container


@dataclass(frozen=True)
class Incus(_Tool):
    """An interpreter in an Incus instance, through ``incus exec``.  Made by :func:`incus`."""

    container: str
    user: int | None
    env: Env
    cwd: str | None
    incus_path: str
    incus_args: tuple[str, ...]
    python: tuple[str, ...]

    kind = "incus"

    def describe(self) -> str:
        return "incus instance %s" % self.container


@dataclass(frozen=True)
class Setns(_Tool):
    """An interpreter in the namespaces of a running process, through nsenter.

    Made by :func:`setns`.
    """

    pid: int | None
    container: str | None
    container_kind: str
    query_path: str | None
    namespaces: tuple[str, ...] | None
    uid: int | None
    gid: int | None
    env: Env
    cwd: str | None
    nsenter_path: str
    nsenter_args: tuple[str, ...]
    python: tuple[str, ...]

    kind = "setns"

    def describe(self) -> str:
        if self.container is not None:
            return "namespaces of %s container %s" % (self.container_kind, self.container)
        return "namespaces of process %s" % self.pid


@dataclass(frozen=True)
class Chroot(_Tool):
    """An interpreter under another root directory.  Made by :func:`chroot`."""

    root: str
    user: str | None
    env: Env
    chroot_path: str
    chroot_args: tuple[str, ...]
    python: tuple[str, ...]

    kind = "chroot"

    def describe(self) -> str:
        return "chroot %s" % self.root


@dataclass(frozen=True)
class Doas(_Tool):
    """An interpreter run as another user through doas.  Made by :func:`doas`."""

    username: str
    password: str | None
    doas_path: str
    doas_args: tuple[str, ...]
    python: tuple[str, ...]

    kind = "doas"

    def describe(self) -> str:
        return "doas to %s" % self.username

    def __repr__(self) -> str:
        return "Doas(%s)" % self.username


@dataclass(frozen=True)
class Machinectl(_Tool):
    """An interpreter in a systemd-nspawn machine (or another machined guest).

    Made by :func:`machinectl`.
    """

    machine: str
    user: str | None
    env: Env
    cwd: str | None
    systemd_run_path: str
    systemd_run_args: tuple[str, ...]
    python: tuple[str, ...]

    kind = "machinectl"

    def describe(self) -> str:
        return "machine %s" % self.machine


@dataclass(frozen=True)
class Jail(_Tool):
    """An interpreter in a FreeBSD jail, through jexec.  Made by :func:`jail`."""

    jail: str
    user: str | None
    jexec_path: str
    jexec_args: tuple[str, ...]
    python: tuple[str, ...]

    kind = "jail"

    def describe(self) -> str:
        return "jail %s" % self.jail


def docker(
    container: str,
    *,
    user: str | None = None,
    host: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    docker_path: str = "docker",
    docker_args: Sequence[str] = (),
    python: str | Sequence[str] = "python3",
) -> Docker:
    """A method that starts an interpreter in a running Docker container.

    Runs ``docker [--host HOST] exec --interactive [--user USER] [--workdir CWD] [--env K=V]...
    DOCKER_ARGS... CONTAINER PYTHON``.  ``user`` is ``name``, ``uid`` or ``name:group``;
    ``host`` a daemon socket such as ``ssh://host`` or ``unix:///path``.
    """
    return Docker(
        container,
        user,
        host,
        env_pairs(env),
        _directory(cwd),
        docker_path,
        _args(docker_args, "docker_args"),
        _python_argv(python, "python3"),
    )


def podman(
    container: str,
    *,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    podman_path: str = "podman",
    podman_args: Sequence[str] = (),
    python: str | Sequence[str] = "python3",
) -> Podman:
    """A method that starts an interpreter in a running Podman container.

    Runs ``podman exec --interactive [--user USER] [--workdir CWD] [--env K=V]... PODMAN_ARGS...
    CONTAINER PYTHON``.
    """
    return Podman(
        container,
        user,
        env_pairs(env),
        _directory(cwd),
        podman_path,
        _args(podman_args, "podman_args"),
        _python_argv(python, "python3"),
    )


def buildah(
    container: str,
    *,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    buildah_path: str = "buildah",
    buildah_args: Sequence[str] = (),
    python: str | Sequence[str] = "python3",
) -> Buildah:
    """A method that starts an interpreter in a Buildah working container.

    Runs ``buildah run [--user USER] [--workingdir CWD] [--env K=V]... BUILDAH_ARGS... CONTAINER
    -- PYTHON``.
    """
    return Buildah(
        container,
        user,
        env_pairs(env),
        _directory(cwd),
        buildah_path,
        _args(buildah_args, "buildah_args"),
        _python_argv(python, "python3"),
    )


def kubectl(
    pod: str,
    *,
    container: str | None = None,
    namespace: str | None = None,
    kube_context: str | None = None,
    kubectl_path: str = "kubectl",
    kubectl_args: Sequence[str] = (),
    python: str | Sequence[str] = "python3",
) -> Kubectl:
    """A method that starts an interpreter in a container of a Kubernetes pod.

    Runs ``kubectl [--context CONTEXT] [--namespace NAMESPACE] exec --stdin POD [--container
    CONTAINER] KUBECTL_ARGS... -- PYTHON``.  ``kubectl exec`` cannot set variables or the
    directory, so there is no ``env`` or ``cwd``.
    """
    return Kubectl(
        pod,
        container,
        namespace,
        kube_context,
        kubectl_path,
        _args(kubectl_args, "kubectl_args"),
        _python_argv(python, "python3"),
    )


def lxc(
    container: str,
    *,
    uid: int | None = None,
    gid: int | None = None,
    env: Mapping[str, str] | None = None,
    lxc_attach_path: str = "lxc-attach",
    lxc_attach_args: Sequence[str] = (),
    python: str | Sequence[str] = "python3",
) -> Lxc:
    """A method that starts an interpreter in an LXC container with lxc-attach.

    Runs ``lxc-attach --name CONTAINER --clear-env [--uid UID] [--gid GID] [--set-var K=V]...
    LXC_ATTACH_ARGS... -- PYTHON``: the host's environment does not leak in, ``env`` is all the
    command gets.  lxc-attach cannot set the directory (no ``cwd``).
    """
    return Lxc(
        container,
        uid,
        gid,
        env_pairs(env),
        lxc_attach_path,
        _args(lxc_attach_args, "lxc_attach_args"),
        _python_argv(python, "python3"),
    )


def lxd(
    container: str,
    *,
    user: int | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    lxc_path: str = "lxc",
    lxc_args: Sequence[str] = (),
    python: str | Sequence[str] = "python3",
) -> Lxd:
    """A method that starts an interpreter in an LXD instance with ``lxc exec``.

    Runs ``lxc exec [REMOTE:]CONTAINER --mode=non-interactive [--user UID] [--cwd CWD] [--env
    K=V]... LXC_ARGS... -- PYTHON``.  ``user`` is a numeric uid, as ``lxc exec`` wants.
    """
    return Lxd(
        container,
        user,
        env_pairs(env),
        _directory(cwd),
        lxc_path,
        _args(lxc_args, "lxc_args"),
        _python_argv(python, "python3"),
    )


def incus(
    container: str,
    *,
    user: int | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    incus_path: str = "incus",
    incus_args: Sequence[str] = (),
    python: str | Sequence[str] = "python3",
) -> Incus:
    """A method that starts an interpreter in an Incus instance with ``incus exec``.

    Runs ``incus exec [REMOTE:]CONTAINER --mode=non-interactive [--user UID] [--cwd CWD] [--env
    K=V]... INCUS_ARGS... -- PYTHON``.
    """
    return Incus(
        container,
        user,
        env_pairs(env),
        _directory(cwd),
        incus_path,
        _args(incus_args, "incus_args"),
        _python_argv(python, "python3"),
    )


#: Namespace options of nsenter (util-linux).
NAMESPACES = ("mount", "uts", "ipc", "net", "pid", "user", "cgroup", "time")


def setns(
    pid: int | None = None,
    *,
    container: str | None = None,
    container_kind: Literal["docker", "podman", "lxc", "machinectl"] = "docker",
    query_path: str | None = None,
    namespaces: Sequence[str] | None = None,
    uid: int | None = None,
    gid: int | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    nsenter_path: str = "nsenter",
    nsenter_args: Sequence[str] = (),
    python: str | Sequence[str] = "python3",
) -> Setns:
    """A method that starts an interpreter in the namespaces of a running process.

    The process is ``pid``, or the first process of the running ``container`` of
    ``container_kind``, looked up as the context starts with ``docker inspect``,
    ``podman inspect``, ``lxc-info`` or ``machinectl show`` (``query_path``: that tool's path).
    Runs ``nsenter --target PID --all`` (or ``--mount --net ...`` for the ``namespaces`` named)
    ``[--setuid UID] [--setgid GID] [--wd=CWD] NSENTER_ARGS... -- PYTHON`` with ``env`` added to
    its environment.  ``--all`` enters every namespace of the process that differs from ours, and
    with the mount namespace comes the process's root directory.  Needs root (CAP_SYS_ADMIN).
    ``python`` is looked up in the target's mount namespace.
    """
    if (pid is None) == (container is None):
        raise ValueError("setns() needs either a pid or a container name")
    if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0):
        raise ValueError("pid must be a process id, not %r" % (pid,))
    if container_kind not in ("docker", "podman", "lxc", "machinectl"):
        raise ValueError(
            "container_kind must be 'docker', 'podman', 'lxc' or 'machinectl', not %r"
            % (container_kind,)
        )
    chosen = None
    if namespaces is not None:
        chosen = _args(namespaces, "namespaces")
        unknown = sorted(set(chosen) - set(NAMESPACES))
        if unknown or not chosen:
            raise ValueError("namespaces must be some of %s, not %r" % (NAMESPACES, namespaces))
    return Setns(
        pid,
        container,
        container_kind,
        query_path,
        chosen,
        uid,
        gid,
        env_pairs(env),
        _directory(cwd),
        nsenter_path,
        _args(nsenter_args, "nsenter_args"),
        _python_argv(python, "python3"),
    )


def chroot(
    root: str,
    *,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
    chroot_path: str = "chroot",
    chroot_args: Sequence[str] = (),
    python: str | Sequence[str] = "python3",
) -> Chroot:
    """A method that starts an interpreter with ``root`` as its root directory.

    Runs ``chroot [--userspec=USER] CHROOT_ARGS... ROOT PYTHON`` (``user`` is ``name``,
    ``name:group`` or ``uid:gid``) with ``env`` added to its environment; the command starts in
    the new ``/`` (no ``cwd``).  ``root`` must hold an interpreter and its libraries.
    """
    path = _directory(root)
    assert path is not None
    return Chroot(
        path,
        user,
        env_pairs(env),
        chroot_path,
        _args(chroot_args, "chroot_args"),
        _python_argv(python, "python3"),
    )


def doas(
    username: str = "root",
    *,
    password: str | None = None,
    doas_path: str = "doas",
    doas_args: Sequence[str] = (),
    python: str | Sequence[str] | None = None,
) -> Doas:
    """A method that starts an interpreter as ``username`` through doas, on a pty.

    Runs ``doas [-n] -u USERNAME DOAS_ARGS... PYTHON``.  With ``password`` (the password of the
    user running doas) its prompt is answered; without, ``-n`` makes doas fail at once where
    doas.conf does not say ``nopass``.  doas gives the command a fresh environment as doas.conf
    says (no ``env`` or ``cwd``).  ``python`` defaults as for :func:`~trimitogen.sudo`.
    """
    return Doas(
        username,
        password,
        doas_path,
        _args(doas_args, "doas_args"),
        _python_argv(python, None),
    )


def machinectl(
    machine: str,
    *,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    systemd_run_path: str = "systemd-run",
    systemd_run_args: Sequence[str] = (),
    python: str | Sequence[str] = "python3",
) -> Machinectl:
    """A method that starts an interpreter in a machine registered with systemd-machined.

    Runs ``systemd-run --machine=MACHINE --pipe --wait --quiet --collect [--uid=USER]
    [--working-directory=CWD] [--setenv=K=V]... SYSTEMD_RUN_ARGS... -- PYTHON``: the service
    ``machinectl shell`` would start, but on plain pipes (``machinectl shell`` puts a terminal in
    between, which would rewrite the framed bytes).
    """
    return Machinectl(
        machine,
        user,
        env_pairs(env),
        _directory(cwd),
        systemd_run_path,
        _args(systemd_run_args, "systemd_run_args"),
        _python_argv(python, "python3"),
    )


def jail(
    name: str,
    *,
    user: str | None = None,
    jexec_path: str = "jexec",
    jexec_args: Sequence[str] = (),
    python: str | Sequence[str] = "python3",
) -> Jail:
    """A method that starts an interpreter in the FreeBSD jail ``name`` (its name or jid).

    Runs ``jexec [-U USER] JEXEC_ARGS... NAME PYTHON``; ``user`` is a user of the jail.
    jexec has no options for the environment or the directory.
    """
    return Jail(
        name,
        user,
        jexec_path,
        _args(jexec_args, "jexec_args"),
        _python_argv(python, "python3"),
    )
