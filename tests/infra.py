"""Real infrastructure for the ssh, sudo and su integration tests: throwaway users and an sshd.

Everything here needs root, and uses the real tools (``useradd``, ``chpasswd``, ``visudo``,
``ssh-keygen``, ``sshd``).  A missing tool calls ``skip_or_fail``: a skip locally, a failure
under ``CI=true``.

Fixtures (both session-scoped; the functions are ``users_fixture`` and ``sshd_fixture``, named so
that test arguments called ``users`` and ``sshd`` do not shadow an import):

``users`` -> :class:`Users`
    Five local users, created once and reused by later runs; their passwords are reset to fresh
    random ones at every session start and locked again at session end:

    - ``tmg-ssh``: logs in over the test sshd by key (``SshServer.identity_file``) or password.
    - ``tmg-sudo``: may ``sudo -u tmg-target ANY`` after typing its own password, and
      ``sudo -u tmg-nopw ANY`` without one (``/etc/sudoers.d/trimitogen-tests``, with
      ``lecture=never`` and ``timestamp_timeout=0``: the password rule prompts every time).
      Also logs in over the test sshd by the same key as tmg-ssh, or by password (for ssh->sudo
      hops, e.g. in benchmarks/compare.py).
    - ``tmg-target``, ``tmg-nopw``: targets of those rules.
    - ``tmg-su``: ``su tmg-su`` works from any user with its password.

``sshd`` -> :class:`SshServer`
    A real OpenSSH server on 127.0.0.1 and a free port, with its own config, host key, client key
    and known_hosts files in a temporary directory; stopped at session end.

What is left on the machine after a session: the five users, their groups and home directories
(passwords locked), and ``/run/sshd`` if it existed before.  Removed: the sudoers drop-in, the
temporary directory, ``/run/sshd`` when this module created it, and the sshd process.

Helpers: :func:`run_on_pty` runs a command with a pty as its controlling terminal and answers its
prompts, to drive ssh, sudo and su the way a person would.

Not safe for two concurrent test sessions on one machine: each resets the shared users' passwords.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import pwd
import secrets
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Generic, TypeVar

import pytest

__all__ = [
    "LocalUser",
    "PtyResult",
    "SshServer",
    "Users",
    "provision_users",
    "run_on_pty",
    "running_sshd",
    "sshd_fixture",
    "users_fixture",
]

#: Bound for each helper command (useradd, ssh-keygen, visudo, ...).
COMMAND_TIMEOUT = 30.0
#: Bound for sshd to start accepting connections.
SSHD_START_TIMEOUT = 10.0
#: Bound for sshd to exit after SIGTERM before it gets SIGKILL.
SSHD_STOP_TIMEOUT = 10.0

SUDOERS_FILE = Path("/etc/sudoers.d/trimitogen-tests")
PRIVSEP_DIR = Path("/run/sshd")
USER_NAMES = ("tmg-ssh", "tmg-sudo", "tmg-target", "tmg-nopw", "tmg-su")


def _skip_or_fail(reason: str) -> None:
    # Imported late: tests/conftest.py star-imports this module, so a top-level import of
    # tests.conftest here would find it half-initialised.
    from tests.conftest import skip_or_fail

    skip_or_fail(reason)


def _require_root() -> None:
    if os.geteuid() != 0:
        _skip_or_fail("the ssh/sudo/su test infrastructure needs root")


def _require(*tools: str) -> dict[str, str]:
    """Absolute paths of ``tools`` (also looked up in the sbin directories)."""
    search = os.pathsep.join(
        [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]
    )
    found: dict[str, str] = {}
    missing = []
    for tool in tools:
        path = shutil.which(tool, path=search)
        if path is None:
            missing.append(tool)
        else:
            found[tool] = path
    if missing:
        _skip_or_fail(
            "missing %s (scripts/setup.sh installs openssh-server, openssh-client and sudo)"
            % ", ".join(missing)
        )
    return found


def _run(argv: Sequence[str], *, stdin_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a helper command under a timeout; raise with its output if it fails."""
    result = subprocess.run(
        list(argv),
        input=stdin_text,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        stdin=None if stdin_text is not None else subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise RuntimeError(
            "%s exited with %d\nstdout: %s\nstderr: %s"
            % (" ".join(argv), result.returncode, result.stdout, result.stderr)
        )
    return result


T = TypeVar("T")


class _Shared(Generic[T]):
    """One instance of a resource however many fixture definitions ask for it.

    ``from tests.infra import *`` in conftest.py plus an explicit import in a test module makes
    two session-scoped fixture definitions of one name; without sharing they would provision the
    users twice (the second resetting the passwords the first handed out) and start two sshds.
    """

    def __init__(self) -> None:
        self._users = 0
        self._value: T | None = None
        self._stack: contextlib.ExitStack | None = None

    @contextlib.contextmanager
    def use(self, factory: Callable[[], AbstractContextManager[T]]) -> Iterator[T]:
        if self._users == 0:
            with contextlib.ExitStack() as stack:
                self._value = stack.enter_context(factory())
                self._stack = stack.pop_all()
        self._users += 1
        try:
            assert self._value is not None
            yield self._value
        finally:
            self._users -= 1
            if self._users == 0:
                to_close, self._stack, self._value = self._stack, None, None
                if to_close is not None:
                    to_close.close()


_shared_users: _Shared[Users] = _Shared()
_shared_sshd: _Shared[SshServer] = _Shared()


# --------------------------------------------------------------------------------------------
# Users


@dataclasses.dataclass(frozen=True)
class LocalUser:
    name: str
    password: str
    uid: int
    gid: int
    home: Path


@dataclasses.dataclass(frozen=True)
class Users:
    ssh: LocalUser  #: tmg-ssh: ssh login by key or password
    sudo: LocalUser  #: tmg-sudo: sudo to tmg-target with a password, to tmg-nopw without
    target: LocalUser  #: tmg-target
    nopw: LocalUser  #: tmg-nopw
    su: LocalUser  #: tmg-su: su to it with its password
    sudoers_file: Path

    def all(self) -> tuple[LocalUser, ...]:
        return (self.ssh, self.sudo, self.target, self.nopw, self.su)

    def by_name(self, name: str) -> LocalUser:
        for user in self.all():
            if user.name == name:
                return user
        raise KeyError(name)


def _sudoers_text() -> str:
    return (
        "# Written by trimitogen's tests/infra.py for throwaway test users; removed at the end\n"
        "# of each test session and safe to delete at any time.\n"
        "Defaults:tmg-sudo lecture=never, timestamp_timeout=0\n"
        "tmg-sudo ALL=(tmg-target) ALL\n"
        "tmg-sudo ALL=(tmg-nopw) NOPASSWD: ALL\n"
    )


def _install_sudoers(visudo: str) -> None:
    # sudo ignores files in sudoers.d whose names contain a dot: the temporary name is inert.
    tmp = SUDOERS_FILE.with_name("." + SUDOERS_FILE.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o440)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(_sudoers_text())
        os.chown(tmp, 0, 0)
        os.chmod(tmp, 0o440)
        _run([visudo, "-cf", str(tmp)])
        os.replace(tmp, SUDOERS_FILE)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _run([visudo, "-c"])


def _ensure_user(name: str, tools: dict[str, str]) -> pwd.struct_passwd:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        _run([tools["useradd"], "--create-home", "--user-group", "--shell", "/bin/bash", name])
        entry = pwd.getpwnam(name)
    if entry.pw_shell != "/bin/bash":
        _run([tools["usermod"], "--shell", "/bin/bash", name])
        entry = pwd.getpwnam(name)
    home = Path(entry.pw_dir)
    if not home.is_dir():
        home.mkdir(mode=0o700, parents=True)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    return entry


@contextlib.contextmanager
def provision_users() -> Iterator[Users]:
    """Create (or reuse) the throwaway users, set fresh passwords, install the sudoers drop-in."""
    _require_root()
    tools = _require("useradd", "usermod", "chpasswd", "sudo", "visudo", "su", "runuser")
    entries = {name: _ensure_user(name, tools) for name in USER_NAMES}
    # Letters and digits only: nothing a shell, chpasswd or a prompt parser could misread.
    passwords = {name: "tmg" + secrets.token_hex(12) for name in USER_NAMES}
    _run(
        [tools["chpasswd"]],
        stdin_text="".join("%s:%s\n" % (name, passwords[name]) for name in USER_NAMES),
    )
    made = {
        name: LocalUser(
            name=name,
            password=passwords[name],
            uid=entries[name].pw_uid,
            gid=entries[name].pw_gid,
            home=Path(entries[name].pw_dir),
        )
        for name in USER_NAMES
    }
    try:
        _install_sudoers(tools["visudo"])
        yield Users(
            ssh=made["tmg-ssh"],
            sudo=made["tmg-sudo"],
            target=made["tmg-target"],
            nopw=made["tmg-nopw"],
            su=made["tmg-su"],
            sudoers_file=SUDOERS_FILE,
        )
    finally:
        with contextlib.suppress(FileNotFoundError):
            SUDOERS_FILE.unlink()
        # Leave the users, but with locked passwords: nobody knows the old ones anyway.
        for name in USER_NAMES:
            subprocess.run(
                [tools["usermod"], "--lock", name],
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )


@pytest.fixture(scope="session", name="users")
def users_fixture() -> Iterator[Users]:
    with _shared_users.use(provision_users) as made:
        yield made


# --------------------------------------------------------------------------------------------
# sshd


@dataclasses.dataclass(frozen=True)
class SshServer:
    host: str  #: "127.0.0.1"
    port: int
    user: str  #: "tmg-ssh", the user whose key is authorised (tmg-sudo accepts it too)
    password: str  #: tmg-ssh's password
    identity_file: Path  #: client private key (ed25519, no passphrase, mode 0600)
    known_hosts: Path  #: the server's real host key for [127.0.0.1]:PORT
    known_hosts_empty: Path  #: empty: the host is unknown (see new_known_hosts)
    known_hosts_wrong: Path  #: another ed25519 key for [127.0.0.1]:PORT: "changed host key"
    host_public_key: str  #: "ssh-ed25519 AAAA..."
    directory: Path  #: the temporary directory holding all of the above
    log_file: Path  #: sshd's stderr (LogLevel VERBOSE)
    pid: int

    @property
    def host_pattern(self) -> str:
        """How known_hosts names this server: ``[127.0.0.1]:PORT``."""
        return "[%s]:%d" % (self.host, self.port)

    def ssh_args(self, known_hosts: Path | None = None, *, use_key: bool = True) -> list[str]:
        """ssh options that make a client hermetic and point it at this server's files.

        ``-F /dev/null`` ignores ~/.ssh/config and /etc/ssh/ssh_config; known hosts come only from
        ``known_hosts`` (default: the good file); no agent.  With ``use_key`` the client offers
        only ``identity_file``; without it public-key authentication is off, so ssh falls back to
        asking for the password.  Neither the port, the user nor ``StrictHostKeyChecking`` is
        included, and no ``BatchMode``: passwords must still be asked for.
        """
        args = [
            "-F",
            "/dev/null",
            "-o",
            "UserKnownHostsFile=%s" % (known_hosts or self.known_hosts),
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "IdentityAgent=none",
            "-o",
            "IdentitiesOnly=yes",
        ]
        if use_key:
            args += ["-o", "IdentityFile=%s" % self.identity_file]
        else:
            args += ["-o", "PubkeyAuthentication=no"]
        return args

    def argv(
        self,
        *command: str,
        known_hosts: Path | None = None,
        use_key: bool = True,
        user: str | None = None,
        options: Sequence[str] = (),
    ) -> list[str]:
        """A complete ``ssh`` command line running ``command`` on this server."""
        return [
            "ssh",
            *self.ssh_args(known_hosts, use_key=use_key),
            *options,
            "-p",
            str(self.port),
            "%s@%s" % (user or self.user, self.host),
            *command,
        ]

    def new_known_hosts(self, directory: Path, *, good: bool = False) -> Path:
        """A fresh known_hosts file in ``directory`` (empty, or with the good key).

        For tests that let ssh write to the file (``StrictHostKeyChecking=accept-new`` or a "yes"
        to the prompt), which would spoil the shared ``known_hosts_empty``.
        """
        path = directory / ("known_hosts_good" if good else "known_hosts_empty")
        path.write_text(self.known_hosts.read_text() if good else "")
        return path

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _keygen(ssh_keygen: str, path: Path, comment: str) -> str:
    """Make an ed25519 key pair without passphrase; return the public key line."""
    _run([ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    os.chmod(path, 0o600)
    public = path.with_name(path.name + ".pub").read_text().split()
    return "%s %s" % (public[0], public[1])


def _sshd_config(directory: Path, port: int, host: str) -> str:
    return "\n".join(
        [
            "Port %d" % port,
            "ListenAddress %s" % host,
            "HostKey %s" % (directory / "ssh_host_ed25519_key"),
            "PidFile %s" % (directory / "sshd.pid"),
            "AuthorizedKeysFile %s/%%u" % (directory / "authorized_keys"),
            "AllowUsers %s" % " ".join(USER_NAMES),
            "UsePAM no",
            "StrictModes no",
            "PasswordAuthentication yes",
            "PubkeyAuthentication yes",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "MaxStartups 100:30:200",
            "MaxSessions 50",
            "LogLevel VERBOSE",
            "",
        ]
    )


def _wait_for_banner(proc: subprocess.Popen[bytes], host: str, port: int, log: Path) -> bool:
    """True once sshd answers with its banner; False if it exited; raise on timeout."""
    deadline = time.monotonic() + SSHD_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=1.0) as s:
                banner = s.recv(256)
        except OSError:
            time.sleep(0.05)
            continue
        if banner.startswith(b"SSH-2.0-"):
            return True
        time.sleep(0.05)
    raise RuntimeError(
        "sshd did not accept connections on %s:%d within %.0f s; its log:\n%s"
        % (host, port, SSHD_START_TIMEOUT, log.read_text(errors="replace"))
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=SSHD_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=SSHD_STOP_TIMEOUT)


@contextlib.contextmanager
def running_sshd(users: Users, host: str = "127.0.0.1") -> Iterator[SshServer]:
    """Start sshd on ``host`` and a free port; stop it (and remove its files) on exit."""
    _require_root()
    tools = _require("sshd", "ssh", "ssh-keygen")
    created_privsep = False
    if not PRIVSEP_DIR.is_dir():
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True)
        created_privsep = True
    directory = Path(tempfile.mkdtemp(prefix="tmg-sshd-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        # sshd reads AuthorizedKeysFile as the logging-in user: let it through the directory.
        os.chmod(directory, 0o755)
        host_public = _keygen(tools["ssh-keygen"], directory / "ssh_host_ed25519_key", "tmg-host")
        wrong_public = _keygen(tools["ssh-keygen"], directory / "wrong_host_key", "tmg-wrong")
        client_public = _keygen(tools["ssh-keygen"], directory / "id_ed25519", "tmg-client")
        keys_dir = directory / "authorized_keys"
        keys_dir.mkdir(mode=0o755)
        for key_user in (users.ssh, users.sudo):
            (keys_dir / key_user.name).write_text(client_public + "\n")
            os.chmod(keys_dir / key_user.name, 0o644)
        config = directory / "sshd_config"
        log_file = directory / "sshd.log"

        port = 0
        for _attempt in range(5):
            port = _free_port(host)
            config.write_text(_sshd_config(directory, port, host))
            _run([tools["sshd"], "-t", "-f", str(config)])
            with open(log_file, "wb") as log:
                proc = subprocess.Popen(
                    [tools["sshd"], "-D", "-e", "-f", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    # Its own session: nothing sshd does to its process group can reach pytest.
                    start_new_session=True,
                )
            if _wait_for_banner(proc, host, port, log_file):
                break
            proc.wait(timeout=SSHD_STOP_TIMEOUT)
            text = log_file.read_text(errors="replace")
            proc = None
            if "Address already in use" not in text:
                raise RuntimeError("sshd exited at start-up; its log:\n" + text)
        else:
            raise RuntimeError("sshd found no free port after 5 attempts")

        pattern = "[%s]:%d" % (host, port)
        known_hosts = directory / "known_hosts"
        known_hosts.write_text("%s %s\n" % (pattern, host_public))
        known_hosts_empty = directory / "known_hosts_empty"
        known_hosts_empty.write_text("")
        known_hosts_wrong = directory / "known_hosts_wrong"
        known_hosts_wrong.write_text("%s %s\n" % (pattern, wrong_public))
        yield SshServer(
            host=host,
            port=port,
            user=users.ssh.name,
            password=users.ssh.password,
            identity_file=directory / "id_ed25519",
            known_hosts=known_hosts,
            known_hosts_empty=known_hosts_empty,
            known_hosts_wrong=known_hosts_wrong,
            host_public_key=host_public,
            directory=directory,
            log_file=log_file,
            pid=proc.pid,
        )
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(directory, ignore_errors=True)
        if created_privsep:
            with contextlib.suppress(OSError):
                PRIVSEP_DIR.rmdir()


@pytest.fixture(scope="session", name="sshd")
def sshd_fixture(users: Users) -> Iterator[SshServer]:
    with _shared_sshd.use(lambda: running_sshd(users)) as server:
        yield server


# --------------------------------------------------------------------------------------------
# Driving prompts on a pty


@dataclasses.dataclass(frozen=True)
class PtyResult:
    returncode: int
    transcript: bytes  #: everything the command wrote to its terminal, as the pty delivered it
    unanswered: tuple[bytes, ...]  #: prompts from ``answers`` that never appeared


def run_on_pty(
    argv: Sequence[str],
    answers: Sequence[tuple[bytes, bytes]] = (),
    *,
    user: str | None = None,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
) -> PtyResult:
    """Run ``argv`` with a new pty as stdin, stdout, stderr and controlling terminal.

    ``answers`` are ``(prompt, reply)`` pairs taken in order: once ``prompt`` appears in the
    output (after the previous prompt), ``reply`` is written to the terminal.  With ``user`` the
    command runs as that user (through ``runuser``).  The pty's line discipline stays as is, so
    the transcript has ``\\r\\n`` line ends and echoed replies where the command echoes.  On
    timeout the command is killed and ``TimeoutError`` raised with the transcript so far.
    """
    tools = _require("setsid", *(("runuser",) if user else ()))
    command = [tools["setsid"], "--wait", "--ctty"]
    if user is not None:
        command += [tools["runuser"], "-u", user, "--"]
    command += list(argv)
    master, slave = os.openpty()
    try:
        try:
            proc = subprocess.Popen(
                command,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=env,
                close_fds=True,
            )
        finally:
            os.close(slave)
        try:
            transcript, pending = _converse(master, proc, list(answers), timeout)
        except BaseException:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=COMMAND_TIMEOUT)
            raise
    finally:
        os.close(master)
    return PtyResult(
        returncode=proc.returncode,
        transcript=transcript,
        unanswered=tuple(prompt for prompt, _ in pending),
    )


def _converse(
    master: int,
    proc: subprocess.Popen[bytes],
    pending: list[tuple[bytes, bytes]],
    timeout: float,
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    deadline = time.monotonic() + timeout
    buf = bytearray()
    searched = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                "command still running after %.0f s; its output: %r" % (timeout, buf)
            )
        ready, _, _ = select.select([master], [], [], min(remaining, 0.2))
        if not ready:
            continue
        try:
            data = os.read(master, 4096)
        except OSError as e:
            if e.errno != errno.EIO:  # EIO: every slave fd is closed, the command is gone
                raise
            data = b""
        if not data:
            break
        buf += data
        while pending:
            at = buf.find(pending[0][0], searched)
            if at < 0:
                break
            searched = at + len(pending[0][0])
            os.write(master, pending.pop(0)[1])
    proc.wait(timeout=max(deadline - time.monotonic(), 1.0))
    return bytes(buf), pending
