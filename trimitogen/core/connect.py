"""How to start each kind of child, and the conversation on its terminal while it starts.

Both the master and intermediate contexts start children, so everything here is plain data and
pure functions: :func:`build_plan` turns a method spec (a dict, so it can travel in a message)
into the argv and terminal needs of the process, and :class:`PromptDialog` reads what the process
prints on its terminal (or stderr) during start-up and decides what to answer or how it failed.
Neither touches a file descriptor.
"""

from __future__ import annotations

from .bootstrap import stage1_command
from .errors import ConnectError, HostKeyError, PasswordError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple

#: The prompt sudo is told to print, so a translated or customised prompt cannot confuse us.
SUDO_PROMPT = "trimitogen-sudo-password:"

#: Host-key policies of the ssh method, and the OpenSSH options that implement them.
HOST_KEY_OPTIONS = {
    "enforce": ["-o", "StrictHostKeyChecking=yes"],
    "accept": ["-o", "StrictHostKeyChecking=accept-new"],
    "ignore": [
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
    ],
}


def _shell_quote(word: str) -> str:
    if word and all(c.isalnum() or c in "@%+=:,./-_" for c in word):
        return word
    return "'" + word.replace("'", "'\"'\"'") + "'"


def python_command(python: Any) -> List[str]:
    """The argv that runs stage 1 with ``python`` (a path, or an argv prefix).

    An empty ``python`` means the system interpreter of the machine building the plan (the
    master for a direct child, the intermediate for ``via=``).
    """
    if not python:
        import os

        python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"
    prefix = [python] if isinstance(python, str) else list(python)
    return [*prefix, "-c", stage1_command()]


class Plan:
    """What to run for one method: the argv, whether it needs a terminal, and its dialog."""

    def __init__(
        self,
        argv: List[str],
        use_pty: bool,
        dialog: "PromptDialog",
        env: Optional[Dict[str, str]] = None,
        tty_stdin: bool = False,
        cwd: Optional[str] = None,
    ) -> None:
        self.argv = argv
        self.use_pty = use_pty
        #: su reads its password from stdin (through PAM), so stdin must be the terminal too; the
        #: child then speaks the protocol on fd 1, a socket, in both directions.
        self.tty_stdin = tty_stdin
        self.dialog = dialog
        self.env = env or {}
        #: The directory the process starts in (None: the parent's).
        self.cwd = cwd


def build_plan(spec: Dict[str, Any]) -> Plan:
    """The :class:`Plan` for a method spec, as produced by the master's method objects."""
    kind = spec["kind"]
    if kind == "local":
        env = dict(spec.get("env") or ())
        return Plan(
            python_command(spec["python"]),
            False,
            PromptDialog(kind, None),
            env,
            False,
            spec.get("cwd"),
        )
    if kind in CONTAINER_KINDS:
        from .containers import tool_command

        argv, tool_env, prompting = tool_command(spec, python_command(spec["python"]))
        if prompting is None:
            return Plan(argv, False, PromptDialog(spec["describe"], None), tool_env)
        dialog = PromptDialog(spec["describe"], spec["password"], *prompting)
        return Plan(argv, True, dialog, tool_env)
    if kind == "sudo":
        argv = [spec["sudo_path"], "-u", spec["username"], "-H", "-p", SUDO_PROMPT]
        argv += list(spec["sudo_args"]) + python_command(spec["python"])
        return Plan(argv, True, sudo_dialog(spec["username"], spec["password"]), {"LC_ALL": "C"})
    if kind == "su":
        command = " ".join(_shell_quote(w) for w in python_command(spec["python"]))
        argv = [spec["su_path"], spec["username"], "-c", command]
        dialog = su_dialog(spec["username"], spec["password"])
        return Plan(argv, True, dialog, {"LC_ALL": "C"}, tty_stdin=True)
    if kind == "ssh":
        return _ssh_plan(spec)
    raise ValueError("unknown connection method %r" % (kind,))


def _ssh_plan(spec: Dict[str, Any]) -> Plan:
    password = spec["password"]
    argv = [spec["ssh_path"]]
    if password is None:
        # Nobody can answer a prompt: fail at once instead of hanging on one.
        argv += ["-o", "BatchMode=yes"]
    else:
        argv += ["-o", "NumberOfPasswordPrompts=1", "-o", "PreferredAuthentications=password"]
    argv += HOST_KEY_OPTIONS[spec["check_host_keys"]]
    if spec["compression"]:
        argv.append("-C")
    if spec["port"] is not None:
        argv += ["-p", str(spec["port"])]
    if spec["identity_file"] is not None:
        argv += ["-i", spec["identity_file"], "-o", "IdentitiesOnly=yes"]
    if spec["username"] is not None:
        argv += ["-l", spec["username"]]
    argv += list(spec["ssh_args"])
    argv += ["--", spec["hostname"]]
    # The remote side joins the command's words with spaces and gives them to a shell.
    argv.append(" ".join(_shell_quote(w) for w in python_command(spec["python"])))
    target = (
        spec["hostname"]
        if spec["username"] is None
        else "%s@%s"
        % (
            spec["username"],
            spec["hostname"],
        )
    )
    return Plan(argv, password is not None, ssh_dialog(target, password))


#: Kinds whose plan core/containers.py builds.
CONTAINER_KINDS = frozenset(
    (
        "docker",
        "podman",
        "buildah",
        "kubectl",
        "lxc",
        "lxd",
        "incus",
        "setns",
        "chroot",
        "doas",
        "machinectl",
        "jail",
    )
)


class PromptDialog:
    """Reads a starting child's terminal output; says what to type and when it has failed.

    ``prompts`` are byte strings (compared case-insensitively) that ask for the password;
    ``failures`` map byte strings to the error they mean.  Feed output with
    :meth:`receive_data`; it returns bytes to write to the terminal (possibly empty) and sets
    :attr:`error` once the output shows the start-up failed.

    ``connect_status`` is the exit status with which the tool reports its own failure to reach
    the far side (ssh's 255): a child that exits with it before the bootstrap started failed in
    the connect phase, for the reason the tool printed last.
    """

    def __init__(
        self,
        what: str,
        password: Optional[str],
        prompts: Tuple[bytes, ...] = (),
        failures: Tuple[Tuple[bytes, Any, str], ...] = (),
        connect_status: Optional[int] = None,
    ) -> None:
        self.what = what
        self.connect_status = connect_status
        self.password = password
        self.prompts = tuple(p.lower() for p in prompts)
        self.failures = tuple((p.lower(), cls, text) for p, cls, text in failures)
        self.error: Optional[ConnectError] = None
        self.passwords_sent = 0
        self._pending = b""

    def redact(self, text: str) -> str:
        """``text`` with the password masked (a terminal may echo it before echo is off)."""
        if self.password:
            text = text.replace(self.password, "********")
        return text

    def phase_before_start(self, exit_status: Optional[int]) -> str:
        """The phase of a failure before the bootstrap started and before any password was
        typed, given the exit status if the process ended (None: still running)."""
        if self.connect_status is None:
            return "spawn"
        if exit_status is None or exit_status == self.connect_status:
            return "connect"  # the tool is (or was) still reaching the far side
        return "spawn"  # the tool reached it and reports the remote command's status

    def receive_data(self, data: bytes) -> bytes:
        if self.error is not None:
            return b""
        # Search all of what arrived (a verdict may be followed by kilobytes in the same read),
        # but keep only a tail, where a pattern split between two reads is found.
        window = self._pending + data
        lowered = window.lower()
        for pattern, cls, text in self.failures:
            if pattern in lowered:
                self.error = cls(text)
                return b""
        self._pending = window[-4096:]
        lowered = self._pending.lower()
        # A prompt is the last thing printed before the program waits: matching it only at the
        # end keeps a banner or message that mentions "password:" from being answered.
        tail = lowered.rstrip()
        for prompt in self.prompts:
            if not tail.endswith(prompt.rstrip()):
                continue
            at = lowered.rfind(prompt.rstrip())
            self._pending = self._pending[at + len(prompt) :]
            if self.password is None:
                self.error = PasswordError(
                    "asked for a password, but none was given (pass password=...)"
                )
                return b""
            if self.passwords_sent:
                self.error = PasswordError("the password was refused")
                return b""
            self.passwords_sent += 1
            return self.password.encode("utf-8") + b"\n"
        return b""


def ssh_dialog(target: str, password: Optional[str]) -> PromptDialog:
    what = "ssh to %s" % target
    return PromptDialog(
        what,
        password,
        prompts=(b"password:",),
        failures=(
            # Most specific first: every host-key failure ends in "verification failed".
            (
                b"remote host identification has changed",
                HostKeyError,
                "the host key has CHANGED since it was recorded (possible impersonation); "
                "check known_hosts",
            ),
            (
                b"host key is known for",
                HostKeyError,
                "the host key is unknown; add it to known_hosts or use check_host_keys='accept'",
            ),
            (b"host key verification failed", HostKeyError, "the host key was refused"),
            (
                b"continue connecting (yes/no",
                HostKeyError,
                "the host key is unknown; add it to known_hosts or use check_host_keys='accept'",
            ),
            # ssh's own words ("user@host: Permission denied (publickey,password)." or "...,
            # please try again."), not any line that says "permission denied".
            (
                b"permission denied (",
                PasswordError,
                "authentication was refused (permission denied)",
            ),
            (b"permission denied, please try again", PasswordError, "the password was refused"),
            (
                b"enter passphrase for key",
                PasswordError,
                "the identity file is protected by a passphrase, which cannot be given here",
            ),
            (b"connection refused", ConnectError, "the connection was refused"),
            (b"could not resolve hostname", ConnectError, "the host name could not be resolved"),
            (b"no route to host", ConnectError, "there is no route to the host"),
            (b"connection timed out", ConnectError, "the connection timed out"),
            (b"network is unreachable", ConnectError, "the network is unreachable"),
        ),
        # ssh: "exits with the exit status of the remote command or with 255 if an error
        # occurred" (ssh(1)).
        connect_status=255,
    )


def sudo_dialog(username: str, password: Optional[str]) -> PromptDialog:
    what = "sudo to %s" % username
    return PromptDialog(
        what,
        password,
        prompts=(SUDO_PROMPT.encode(),),
        failures=(
            (b"sorry, try again", PasswordError, "the password was refused"),
            (b"incorrect password attempt", PasswordError, "the password was refused"),
            (b"a password is required", PasswordError, "a password is required"),
            (
                b"is not in the sudoers file",
                ConnectError,
                "this user may not use sudo (not in the sudoers file)",
            ),
            (b"is not allowed to execute", ConnectError, "sudo does not allow this command"),
            (b"unknown user", ConnectError, "there is no such user"),
        ),
    )


def su_dialog(username: str, password: Optional[str]) -> PromptDialog:
    what = "su to %s" % username
    return PromptDialog(
        what,
        password,
        prompts=(b"password:",),
        failures=(
            (b"authentication failure", PasswordError, "the password was refused"),
            (b"does not exist", ConnectError, "there is no such user"),
        ),
    )


#: Socket buffer size asked for on a child's socketpair: larger buffers mean fewer wake-ups per
#: megabyte; the kernel caps the request.
SOCKET_BUFFER = 4 * 1024 * 1024


class ChildFds:
    """The descriptors a new child starts with, for ``subprocess.Popen`` or Trio's equivalent.

    Frames travel on a socketpair: the child's end is its fds 0 and 1 (only fd 1 for su, whose
    fd 0 is the terminal).  fd 2 is a pty where the method may prompt, else a pipe.  The pty is
    only for prompts: sudo, su and ssh open ``/dev/tty`` to ask for a password, so it must be the
    child's controlling terminal; framed data never crosses it (a line discipline rewrites
    bytes).  The child gets a session of its own, so a Ctrl-C meant for the master's terminal does
    not reach it.
    """

    def __init__(self, plan: Plan) -> None:
        import _socket
        import os

        self.parent_sock, self.child_sock = _socket.socketpair()
        for sock in (self.parent_sock, self.child_sock):
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, SOCKET_BUFFER)
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, SOCKET_BUFFER)
        preexec: Any = None
        if plan.use_pty:
            import fcntl
            import functools
            import termios

            self.term_r, self.term_w = os.openpty()
            preexec = functools.partial(fcntl.ioctl, 2, termios.TIOCSCTTY, 0)
        else:
            self.term_r, self.term_w = os.pipe()
        self.options = {
            "stdin": self.term_w if plan.tty_stdin else self.child_sock.fileno(),
            "stdout": self.child_sock.fileno(),
            "stderr": self.term_w,
            "start_new_session": True,
            "preexec_fn": preexec,
            "env": dict(os.environ, **plan.env) if plan.env else None,
            "cwd": plan.cwd,
        }

    def spawned(self) -> Tuple[int, int]:
        """After a successful spawn: close the child's ends; return (stream fd, terminal fd)."""
        import os

        self.child_sock.close()
        os.close(self.term_w)
        return self.parent_sock.detach(), self.term_r

    def failed(self) -> None:
        """After a failed spawn: close everything."""
        import os

        for sock in (self.parent_sock, self.child_sock):
            sock.close()
        for fd in (self.term_r, self.term_w):
            os.close(fd)
