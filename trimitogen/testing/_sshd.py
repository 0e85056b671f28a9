"""A real OpenSSH server on loopback addresses, with throwaway keys and known-hosts files."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ._tools import require_root, require_tools, run_command
from ._users import USER_NAMES, Users

#: Bound for sshd to start accepting connections.
SSHD_START_TIMEOUT = 10.0
#: Bound for sshd to exit after SIGTERM before it gets SIGKILL.
SSHD_STOP_TIMEOUT = 10.0
#: sshd's privilege-separation directory, which it refuses to start without.
PRIVSEP_DIR = Path("/run/sshd")
#: Attempts at a port that is free on every listening address.
PORT_ATTEMPTS = 5
#: Listening addresses per sshd process: OpenSSH's compiled-in MAX_LISTEN_SOCKS is 16.
ADDRESSES_PER_SSHD = 16


@dataclasses.dataclass(frozen=True)
class SshServer:
    """A running sshd made by :func:`running_sshd`, and the client files that fit it."""

    host: str  #: the first listening address, "127.0.0.1" by default
    hosts: tuple[str, ...]  #: every listening address (``host`` first), all on ``port``
    port: int  #: the port, the same on every address
    user: str  #: "tmg-ssh", the user whose key is authorised (tmg-sudo accepts it too)
    password: str  #: tmg-ssh's password
    identity_file: Path  #: client private key (ed25519, no passphrase, mode 0600)
    known_hosts: Path  #: the server's real host key, one line per address: ``[HOST]:PORT KEY``
    known_hosts_empty: Path  #: empty: the host is unknown (see new_known_hosts)
    known_hosts_wrong: Path  #: another ed25519 key for every address: "changed host key"
    host_public_key: str  #: "ssh-ed25519 AAAA..."
    directory: Path  #: the temporary directory holding all of the above
    log_file: Path  #: sshd's stderr (LogLevel VERBOSE)
    pid: int  #: the process id of the sshd listening on ``host``
    pids: tuple[int, ...]  #: every sshd process (one per 16 addresses), ``pid`` first

    @property
    def host_pattern(self) -> str:
        """How known_hosts names the first address: ``[127.0.0.1]:PORT``."""
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
        host: str | None = None,
    ) -> list[str]:
        """A complete ``ssh`` command line running ``command`` on this server.

        ``host`` picks one of :attr:`hosts` (default: :attr:`host`); ``user`` defaults to
        :attr:`user`; ``options`` go before the destination.
        """
        return [
            "ssh",
            *self.ssh_args(known_hosts, use_key=use_key),
            *options,
            "-p",
            str(self.port),
            "%s@%s" % (user or self.user, host or self.host),
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
        """sshd's log so far (connections, logins, errors)."""
        return self.log_file.read_text(errors="replace")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _keygen(ssh_keygen: str, path: Path, comment: str) -> str:
    """Make an ed25519 key pair without passphrase; return the public key line."""
    run_command([ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    os.chmod(path, 0o600)
    public = path.with_name(path.name + ".pub").read_text().split()
    return "%s %s" % (public[0], public[1])


def _sshd_config(
    directory: Path,
    port: int,
    hosts: Sequence[str],
    max_startups: str,
    max_sessions: int,
    pid_file: Path,
) -> str:
    return "\n".join(
        [
            "Port %d" % port,
            *("ListenAddress %s" % host for host in hosts),
            "HostKey %s" % (directory / "ssh_host_ed25519_key"),
            "PidFile %s" % pid_file,
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
            "MaxStartups %s" % max_startups,
            "MaxSessions %d" % max_sessions,
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


def _not_listening(log_text: str, hosts: Sequence[str], port: int) -> list[str]:
    # sshd carries on when some of several ListenAddress binds fail; it logs each success.
    return [h for h in hosts if "Server listening on %s port %d." % (h, port) not in log_text]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=SSHD_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=SSHD_STOP_TIMEOUT)


def _config_path(directory: Path, index: int) -> Path:
    return directory / ("sshd_config" if index == 0 else "sshd_config.%d" % index)


def _start_all(
    sshd: str, directory: Path, hosts: Sequence[str], max_startups: str, max_sessions: int
) -> tuple[list[subprocess.Popen[bytes]], int]:
    """Start sshd on a port free on every address of ``hosts``; return them and the port.

    One process per :data:`ADDRESSES_PER_SSHD` addresses, all on the same port and logging to
    the same file.  On failure every process started is stopped again.
    """
    log_file = directory / "sshd.log"
    groups = [hosts[i : i + ADDRESSES_PER_SSHD] for i in range(0, len(hosts), ADDRESSES_PER_SSHD)]
    for _attempt in range(PORT_ATTEMPTS):
        port = _free_port(hosts[0])
        procs: list[subprocess.Popen[bytes]] = []
        log_file.write_bytes(b"")
        try:
            for index, group in enumerate(groups):
                config = _config_path(directory, index)
                pid_file = directory / ("sshd.%d.pid" % index)
                config.write_text(
                    _sshd_config(directory, port, group, max_startups, max_sessions, pid_file)
                )
                run_command([sshd, "-t", "-f", str(config)])
                # Appending: the processes share the log file without overwriting each other.
                with open(log_file, "ab") as log:
                    procs.append(
                        subprocess.Popen(
                            [sshd, "-D", "-e", "-f", str(config)],
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL,
                            stderr=log,
                            # Its own session: nothing sshd does to its process group can reach
                            # pytest.
                            start_new_session=True,
                        )
                    )
                if not _wait_for_banner(procs[-1], group[0], port, log_file):
                    break
            else:
                if not _not_listening(log_file.read_text(errors="replace"), hosts, port):
                    return procs, port
        except BaseException:
            for proc in procs:
                _stop(proc)
            raise
        # An address refused the port (sshd exited, or carried on without that address).
        for proc in procs:
            _stop(proc)
        text = log_file.read_text(errors="replace")
        if "Address already in use" not in text:
            raise RuntimeError("sshd could not listen on every address; its log:\n" + text)
    raise RuntimeError(
        "sshd found no port free on all of %s after %d attempts" % (", ".join(hosts), PORT_ATTEMPTS)
    )


@contextlib.contextmanager
def running_sshd(
    users: Users,
    host: str | Sequence[str] = "127.0.0.1",
    *,
    max_startups: int | None = None,
    max_sessions: int = 50,
) -> Iterator[SshServer]:
    """Start a real sshd on loopback and a free port; stop it and remove its files on exit.

    ``host`` is one listening address or a sequence of them (one ``ListenAddress`` each, all
    on one port): the whole of 127.0.0.0/8 is loopback, so ``[f"127.0.0.{i}" for i in
    range(2, 202)]`` gives 200 hosts for fan-out tests.  ``max_startups`` is how many
    unauthenticated connections sshd takes at once (default: at least 100, twice the number of
    addresses, before it starts refusing some); ``max_sessions`` is sshd's ``MaxSessions``, the
    sessions one multiplexed connection may carry.

    Needs root (from ``users``, made by :func:`provision_users`), ``sshd``, ``ssh`` and
    ``ssh-keygen``; without them it calls :func:`skip_or_fail`.  The server has a config, host
    key, client key and known-hosts files of its own in a new temporary directory, logs at
    ``VERBOSE`` to ``log_file``, and lets in only the throwaway users, by password, or by the
    client key for tmg-ssh and tmg-sudo.  It needs ``/run/sshd``: created if missing, and then
    removed on exit.  OpenSSH listens on at most 16 addresses per process, so there is one
    sshd process per 16 addresses, all on the same port (``pids``).  On exit each is stopped
    (SIGTERM, then SIGKILL) and the temporary directory removed; nothing else is left.
    """
    hosts = (host,) if isinstance(host, str) else tuple(host)
    if not hosts:
        raise ValueError("running_sshd needs at least one address to listen on")
    startups = max(100, 2 * len(hosts))
    startups_spec = (
        "%d:30:%d" % (startups, 2 * startups) if max_startups is None else str(max_startups)
    )
    require_root("running an sshd")
    tools = require_tools("sshd", "ssh", "ssh-keygen")
    created_privsep = False
    if not PRIVSEP_DIR.is_dir():
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True)
        created_privsep = True
    directory = Path(tempfile.mkdtemp(prefix="tmg-sshd-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # sshd reads AuthorizedKeysFile as the logging-in user: let it through the directory.
        os.chmod(directory, 0o755)
        keygen = tools["ssh-keygen"]
        host_public = _keygen(keygen, directory / "ssh_host_ed25519_key", "tmg-host")
        wrong_public = _keygen(keygen, directory / "wrong_host_key", "tmg-wrong")
        client_public = _keygen(keygen, directory / "id_ed25519", "tmg-client")
        keys_dir = directory / "authorized_keys"
        keys_dir.mkdir(mode=0o755)
        for key_user in (users.ssh, users.sudo):
            (keys_dir / key_user.name).write_text(client_public + "\n")
            os.chmod(keys_dir / key_user.name, 0o644)
        procs, port = _start_all(tools["sshd"], directory, hosts, startups_spec, max_sessions)

        patterns = ["[%s]:%d" % (h, port) for h in hosts]
        known_hosts = directory / "known_hosts"
        known_hosts.write_text("".join("%s %s\n" % (p, host_public) for p in patterns))
        known_hosts_empty = directory / "known_hosts_empty"
        known_hosts_empty.write_text("")
        known_hosts_wrong = directory / "known_hosts_wrong"
        known_hosts_wrong.write_text("".join("%s %s\n" % (p, wrong_public) for p in patterns))
        yield SshServer(
            host=hosts[0],
            hosts=hosts,
            port=port,
            user=users.ssh.name,
            password=users.ssh.password,
            identity_file=directory / "id_ed25519",
            known_hosts=known_hosts,
            known_hosts_empty=known_hosts_empty,
            known_hosts_wrong=known_hosts_wrong,
            host_public_key=host_public,
            directory=directory,
            log_file=directory / "sshd.log",
            pid=procs[0].pid,
            pids=tuple(proc.pid for proc in procs),
        )
    finally:
        for proc in procs:
            _stop(proc)
        shutil.rmtree(directory, ignore_errors=True)
        if created_privsep:
            with contextlib.suppress(OSError):
                PRIVSEP_DIR.rmdir()
