"""Stands in for a container tool that cannot run here: checks its argv, then runs the command.

Run as ``python container_stub.py TOOL ARGV...``: the argv is parsed with the syntax the real
tool documents for the subcommand trimitogen uses (options it does not know make it fail, as the
real tool would), the environment and directory options are applied, and the command is
executed here, in place of inside a container.  Every accepted argv is appended to the file named
by ``STUB_LOG`` (one JSON list a line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def split_dashes(argv: list[str], required: bool) -> tuple[list[str], list[str]]:
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], argv[at + 1 :]
    if required:
        raise SystemExit("stub: the command must follow --")
    return argv, []


def parser(prog: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, allow_abbrev=False, add_help=False)


def docker_like(tool: str, argv: list[str]) -> tuple[list[str], dict[str, str], str | None]:
    # docker [--host H] exec [OPTIONS] CONTAINER COMMAND [ARG...]
    p = parser(tool)
    if tool == "docker":
        p.add_argument("-H", "--host")
    p.add_argument("subcommand", choices=["exec"])
    p.add_argument("-i", "--interactive", action="store_true", required=True)
    p.add_argument("-u", "--user")
    p.add_argument("-w", "--workdir")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    return args.command, dict(v.split("=", 1) for v in args.env), args.workdir


def buildah(argv: list[str]) -> tuple[list[str], dict[str, str], str | None]:
    # buildah run [options] CONTAINER [--] COMMAND [ARG...]
    before, command = split_dashes(argv, True)
    p = parser("buildah")
    p.add_argument("subcommand", choices=["run"])
    p.add_argument("--user")
    p.add_argument("--workingdir")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("container")
    args = p.parse_args(before)
    return command, dict(v.split("=", 1) for v in args.env), args.workingdir


def kubectl(argv: list[str]) -> tuple[list[str], dict[str, str], str | None]:
    # kubectl [--context C] [-n NS] exec (POD | TYPE/NAME) [-c CONTAINER] [flags] -- COMMAND
    before, command = split_dashes(argv, True)
    p = parser("kubectl")
    p.add_argument("--context")
    p.add_argument("-n", "--namespace")
    p.add_argument("subcommand", choices=["exec"])
    p.add_argument("-i", "--stdin", action="store_true", required=True)
    p.add_argument("-c", "--container")
    p.add_argument("pod")
    p.parse_args(before)
    return command, {}, None


def lxc_attach(argv: list[str]) -> tuple[list[str], dict[str, str], str | None]:
    # lxc-attach -n NAME [--clear-env] [-u UID] [-g GID] [-v VAR=VALUE]... -- COMMAND
    before, command = split_dashes(argv, True)
    p = parser("lxc-attach")
    p.add_argument("-n", "--name", required=True)
    p.add_argument("--clear-env", action="store_true")
    p.add_argument("-v", "--set-var", action="append", default=[])
    p.add_argument("-u", "--uid", type=int)
    p.add_argument("-g", "--gid", type=int)
    args = p.parse_args(before)
    env = dict(v.split("=", 1) for v in args.set_var)
    if args.clear_env:
        # lxc-attach keeps nothing but a default PATH and what --set-var gives.
        for key in list(os.environ):
            del os.environ[key]
        os.environ["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return command, env, None


def lxc_exec(tool: str, argv: list[str]) -> tuple[list[str], dict[str, str], str | None]:
    # lxc|incus exec [REMOTE:]INSTANCE [flags] [--] COMMAND
    before, command = split_dashes(argv, True)
    p = parser(tool)
    p.add_argument("subcommand", choices=["exec"])
    p.add_argument("instance")
    p.add_argument("--mode", choices=["auto", "interactive", "non-interactive"])
    p.add_argument("--user", type=int)
    p.add_argument("--group", type=int)
    p.add_argument("--cwd")
    p.add_argument("--env", action="append", default=[])
    args = p.parse_args(before)
    return command, dict(v.split("=", 1) for v in args.env), args.cwd


def systemd_run(argv: list[str]) -> tuple[list[str], dict[str, str], str | None]:
    # systemd-run [OPTIONS...] COMMAND [ARGS...]
    before, command = split_dashes(argv, True)
    p = parser("systemd-run")
    p.add_argument("-M", "--machine", required=True)
    p.add_argument("-P", "--pipe", action="store_true", required=True)
    p.add_argument("--wait", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-G", "--collect", action="store_true")
    p.add_argument("--uid")
    p.add_argument("--working-directory")
    p.add_argument("-E", "--setenv", action="append", default=[])
    args = p.parse_args(before)
    return command, dict(v.split("=", 1) for v in args.setenv), args.working_directory


def jexec(argv: list[str]) -> tuple[list[str], dict[str, str], str | None]:
    # jexec [-l] [-u username | -U username] jail [command ...]  (getopt: options first)
    import getopt

    opts, rest = getopt.getopt(argv, "lu:U:")
    if len([o for o, _v in opts if o in ("-u", "-U")]) > 1 or not rest:
        raise SystemExit("usage: jexec [-l] [-u username | -U username] jail [command ...]")
    return rest[1:], {}, None


def inspect_pid(tool: str, argv: list[str]) -> None:
    # docker|podman inspect --format TEMPLATE NAME: prints the container's pid (STUB_PID).
    p = parser(tool)
    p.add_argument("subcommand", choices=["inspect"])
    p.add_argument("-f", "--format", required=True)
    p.add_argument("name")
    args = p.parse_args(argv)
    if args.format != "{{.State.Pid}}":
        raise SystemExit("stub: this stub only knows the template {{.State.Pid}}")
    if args.name != os.environ.get("STUB_CONTAINER"):
        raise SystemExit("Error: No such object: " + args.name)
    print(os.environ["STUB_PID"])


def main() -> None:
    tool, argv = sys.argv[1], sys.argv[2:]
    log = os.environ.get("STUB_LOG")
    if tool in ("docker", "podman") and argv[:1] == ["inspect"]:
        inspect_pid(tool, argv)
        return
    if tool in ("docker", "podman"):
        command, env, cwd = docker_like(tool, argv)
    elif tool == "buildah":
        command, env, cwd = buildah(argv)
    elif tool == "kubectl":
        command, env, cwd = kubectl(argv)
    elif tool == "lxc-attach":
        command, env, cwd = lxc_attach(argv)
    elif tool in ("lxc", "incus"):
        command, env, cwd = lxc_exec(tool, argv)
    elif tool == "systemd-run":
        command, env, cwd = systemd_run(argv)
    elif tool == "jexec":
        command, env, cwd = jexec(argv)
    else:
        raise SystemExit("stub: unknown tool " + tool)
    if not command:
        raise SystemExit("stub: no command")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps([tool, *argv]) + "\n")
    os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
