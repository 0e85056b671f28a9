"""The argv of each container, namespace and privilege tool a context can start through.

Like the rest of :mod:`trimitogen.core.connect`, this is pure data in, data out:
:func:`tool_command` turns a method spec (see ``trimitogen/_containers.py``) into the tool's argv
and what the process needs besides, which :func:`~.connect.build_plan` makes a plan of, in the
master for a direct child or in an intermediate context for ``via=``.  The runtime's stream
crosses each tool on its stdin and stdout, so every tool is run the way that connects those to the
command without a terminal in between.
"""

from __future__ import annotations

from .errors import ConnectError, PasswordError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

#: Method kind -> the prefix of its spec's ``*_path`` and ``*_args`` fields.
TOOLS = {
    "docker": "docker",
    "podman": "podman",
    "buildah": "buildah",
    "kubectl": "kubectl",
    "lxc": "lxc_attach",
    "lxd": "lxc",
    "incus": "incus",
    "setns": "nsenter",
    "chroot": "chroot",
    "doas": "doas",
    "machinectl": "systemd_run",
    "jail": "jexec",
}


def _env_words(flag: str, env: Any) -> List[str]:
    words: List[str] = []
    for key, value in env:
        words += [flag, "%s=%s" % (key, value)]
    return words


def _docker_like(spec: Dict[str, Any], tool: str) -> List[str]:
    # docker|podman exec [OPTIONS] CONTAINER COMMAND [ARG...]
    argv = [spec[tool + "_path"]]
    if spec.get("host") is not None:
        argv += ["--host", spec["host"]]
    argv += ["exec", "--interactive"]
    if spec["user"] is not None:
        argv += ["--user", spec["user"]]
    if spec["cwd"] is not None:
        argv += ["--workdir", spec["cwd"]]
    argv += _env_words("--env", spec["env"])
    return argv + list(spec[tool + "_args"]) + [spec["container"]]


def _docker(spec: Dict[str, Any]) -> List[str]:
    return _docker_like(spec, "docker")


def _podman(spec: Dict[str, Any]) -> List[str]:
    return _docker_like(spec, "podman")


def _buildah(spec: Dict[str, Any]) -> List[str]:
    # buildah run [options] CONTAINER [--] COMMAND [ARG...]
    argv = [spec["buildah_path"], "run"]
    if spec["user"] is not None:
        argv += ["--user", spec["user"]]
    if spec["cwd"] is not None:
        argv += ["--workingdir", spec["cwd"]]
    argv += _env_words("--env", spec["env"])
    argv += [*spec["buildah_args"], spec["container"], "--"]
    return argv


def _kubectl(spec: Dict[str, Any]) -> List[str]:
    # kubectl [--context C] [--namespace N] exec --stdin POD [--container C] -- COMMAND [ARG...]
    argv = [spec["kubectl_path"]]
    if spec["kube_context"] is not None:
        argv += ["--context", spec["kube_context"]]
    if spec["namespace"] is not None:
        argv += ["--namespace", spec["namespace"]]
    argv += ["exec", "--stdin", spec["pod"]]
    if spec["container"] is not None:
        argv += ["--container", spec["container"]]
    argv += [*spec["kubectl_args"], "--"]
    return argv


def _lxc_attach(spec: Dict[str, Any]) -> List[str]:
    # lxc-attach --name NAME [--clear-env] [--uid U] [--gid G] [--set-var VAR=VALUE]... -- ...
    argv = [spec["lxc_attach_path"], "--name", spec["container"], "--clear-env"]
    if spec["uid"] is not None:
        argv += ["--uid", str(spec["uid"])]
    if spec["gid"] is not None:
        argv += ["--gid", str(spec["gid"])]
    argv += _env_words("--set-var", spec["env"])
    argv += [*spec["lxc_attach_args"], "--"]
    return argv


def _lxc_exec(spec: Dict[str, Any], tool: str) -> List[str]:
    # lxc|incus exec [REMOTE:]INSTANCE [flags] -- COMMAND [ARG...]; the mode keeps a terminal out
    # of the way even when the tool would guess "interactive".
    argv = [spec[tool + "_path"], "exec", spec["container"], "--mode=non-interactive"]
    if spec["user"] is not None:
        argv += ["--user", str(spec["user"])]
    if spec["cwd"] is not None:
        argv += ["--cwd", spec["cwd"]]
    argv += _env_words("--env", spec["env"])
    argv += [*spec[tool + "_args"], "--"]
    return argv


def _lxd(spec: Dict[str, Any]) -> List[str]:
    return _lxc_exec(spec, "lxc")


def _incus(spec: Dict[str, Any]) -> List[str]:
    return _lxc_exec(spec, "incus")


#: How each container tool prints the pid of a container's first process (its argv without
#: the tool's path, before the container's name).
PID_QUERIES = {
    "docker": ["inspect", "--format", "{{.State.Pid}}"],
    "podman": ["inspect", "--format", "{{.State.Pid}}"],
    "lxc": ["--no-humanize", "--pid", "--name"],
    "machinectl": ["show", "--property=Leader", "--value"],
}

#: The default path of each query tool.
PID_QUERY_TOOLS = {
    "docker": "docker",
    "podman": "podman",
    "lxc": "lxc-info",
    "machinectl": "machinectl",
}


def _setns(spec: Dict[str, Any]) -> List[str]:
    # nsenter --target PID (--all | --mount --uts ...) [--setuid U --setgid G] [--wd DIR] -- ...
    if spec["container"] is None:
        argv = [spec["nsenter_path"], "--target", str(spec["pid"])]
    else:
        # The pid is looked up when the command runs, by a shell in front of nsenter: the
        # process building the plan (the master, or an intermediate's I/O thread) never waits.
        kind = spec["container_kind"]
        query = [spec["query_path"] or PID_QUERY_TOOLS[kind], *PID_QUERIES[kind]]
        query.append(spec["container"])
        from shlex import quote

        failure = "trimitogen: %s container %s has no running process" % (kind, spec["container"])
        script = (
            'pid=$(%s) && [ -n "$pid" ] && [ "$pid" != 0 ] || { echo %s >&2; exit 1; }; '
            'exec %s --target "$pid" "$@"'
            % (
                " ".join(quote(word) for word in query),
                quote(failure),
                quote(spec["nsenter_path"]),
            )
        )
        argv = ["/bin/sh", "-c", script, "trimitogen-setns"]
    namespaces = spec["namespaces"]
    argv += ["--all"] if namespaces is None else ["--" + name for name in namespaces]
    if spec["uid"] is not None:
        argv += ["--setuid", str(spec["uid"])]
    if spec["gid"] is not None:
        argv += ["--setgid", str(spec["gid"])]
    if spec["cwd"] is not None:
        argv += ["--wd=" + spec["cwd"]]
    argv += [*spec["nsenter_args"], "--"]
    return argv


def _chroot(spec: Dict[str, Any]) -> List[str]:
    # chroot [--userspec=USER:GROUP] NEWROOT COMMAND [ARG...]
    argv = [spec["chroot_path"]]
    if spec["user"] is not None:
        argv.append("--userspec=" + spec["user"])
    argv += [*spec["chroot_args"], spec["root"]]
    return argv


def _doas(spec: Dict[str, Any]) -> List[str]:
    # doas [-n] -u USER COMMAND [ARG...]; -n: fail rather than prompt when nobody can answer.
    argv = [spec["doas_path"]]
    if spec["password"] is None:
        argv.append("-n")
    argv += ["-u", spec["username"], *spec["doas_args"]]
    return argv


def _machinectl(spec: Dict[str, Any]) -> List[str]:
    # `machinectl shell` puts a terminal between the command and us, which would rewrite framed
    # bytes; systemd-run --machine --pipe starts the same kind of process with plain pipes.
    argv = [spec["systemd_run_path"], "--machine=" + spec["machine"], "--pipe", "--wait"]
    argv += ["--quiet", "--collect"]
    if spec["user"] is not None:
        argv.append("--uid=" + spec["user"])
    if spec["cwd"] is not None:
        argv.append("--working-directory=" + spec["cwd"])
    argv += ["--setenv=%s=%s" % pair for pair in spec["env"]]
    argv += [*spec["systemd_run_args"], "--"]
    return argv


def _jail(spec: Dict[str, Any]) -> List[str]:
    # jexec [-U username] JAIL COMMAND [ARG...] (-U: a user of the jail, not of the host)
    argv = [spec["jexec_path"]]
    if spec["user"] is not None:
        argv += ["-U", spec["user"]]
    argv += [*spec["jexec_args"], spec["jail"]]
    return argv


_ARGV: Dict[str, Callable[[Dict[str, Any]], List[str]]] = {
    "docker": _docker,
    "podman": _podman,
    "buildah": _buildah,
    "kubectl": _kubectl,
    "lxc": _lxc_attach,
    "lxd": _lxd,
    "incus": _incus,
    "setns": _setns,
    "chroot": _chroot,
    "doas": _doas,
    "machinectl": _machinectl,
    "jail": _jail,
}


#: doas asks ``doas (user@host) password:`` on its terminal (OpenBSD's doas and OpenDoas alike);
#: what it prints when that fails.
DOAS_PROMPTS = (b"password:",)
DOAS_FAILURES = (
    (b"authentication failed", PasswordError, "the password was refused"),
    (b"authentication required", PasswordError, "a password is required (pass password=...)"),
    (b"operation not permitted", ConnectError, "doas.conf does not permit this"),
    (b"not permitted", ConnectError, "doas.conf does not permit this"),
    (b"unknown user", ConnectError, "there is no such user"),
)


def tool_command(
    spec: Dict[str, Any], python: List[str]
) -> Tuple[List[str], Optional[Dict[str, str]], Optional[Tuple[Any, Any]]]:
    """The argv of a container, namespace or doas method ``spec`` ending in ``python`` (the
    interpreter's command), the variables to add to the tool's environment, and for a tool that
    prompts on a terminal its (prompts, failures)."""
    kind = spec["kind"]
    argv = _ARGV[kind](spec) + python
    if kind == "doas":
        return argv, {"LC_ALL": "C"}, (DOAS_PROMPTS, DOAS_FAILURES)
    # Where the tool starts the command with its own environment (nsenter, chroot), the variables
    # are given to the tool; the others carry them in their own flags.
    return argv, dict(spec["env"]) if kind in ("setns", "chroot") else None, None
