"""Throwaway local users with sudo and su rules, for tests that change user."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import pwd
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ._tools import COMMAND_TIMEOUT, require_root, require_tools, run_command

#: The sudo rules of the throwaway users; removed when :func:`provision_users` ends.
SUDOERS_FILE = Path("/etc/sudoers.d/trimitogen-tests")
#: The throwaway users, in the order :meth:`Users.all` gives them.
USER_NAMES = ("tmg-ssh", "tmg-sudo", "tmg-target", "tmg-nopw", "tmg-su")
#: Locked (``flock``) while the users are in use: two holders would reset each other's
#: passwords and lock them under each other's feet.  It holds the holder's pid.
USERS_LOCK = Path(tempfile.gettempdir()) / "trimitogen-testing-users.lock"


@dataclasses.dataclass(frozen=True)
class LocalUser:
    """One throwaway user, as :func:`provision_users` left it."""

    name: str  #: the login name, e.g. ``tmg-ssh``
    password: str  #: a fresh random password (letters and digits), valid until the end
    uid: int  #: the user's uid
    gid: int  #: the gid of the user's own group
    home: Path  #: the home directory (it exists and belongs to the user)


@dataclasses.dataclass(frozen=True)
class Users:
    """The five throwaway users made by :func:`provision_users`, and their sudo rules."""

    ssh: LocalUser  #: tmg-ssh: ssh login by key or password
    sudo: LocalUser  #: tmg-sudo: sudo to tmg-target with a password, to tmg-nopw without
    target: LocalUser  #: tmg-target: target of the password rule
    nopw: LocalUser  #: tmg-nopw: target of the ``NOPASSWD`` rule
    su: LocalUser  #: tmg-su: su to it with its password
    sudoers_file: Path  #: the sudoers drop-in holding tmg-sudo's rules

    def all(self) -> tuple[LocalUser, ...]:
        """The users in a fixed order: ssh, sudo, target, nopw, su."""
        return (self.ssh, self.sudo, self.target, self.nopw, self.su)

    def by_name(self, name: str) -> LocalUser:
        """The user called ``name``; ``KeyError`` if it is not one of these."""
        for user in self.all():
            if user.name == name:
                return user
        raise KeyError(name)


def _sudoers_text() -> str:
    return (
        "# Written by trimitogen.testing for throwaway test users; removed at the end of each\n"
        "# test session and safe to delete at any time.\n"
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
        run_command([visudo, "-cf", str(tmp)])
        os.replace(tmp, SUDOERS_FILE)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    run_command([visudo, "-c"])


def _ensure_user(name: str, tools: dict[str, str]) -> pwd.struct_passwd:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        run_command(
            [tools["useradd"], "--create-home", "--user-group", "--shell", "/bin/bash", name]
        )
        entry = pwd.getpwnam(name)
    if entry.pw_shell != "/bin/bash":
        run_command([tools["usermod"], "--shell", "/bin/bash", name])
        entry = pwd.getpwnam(name)
    home = Path(entry.pw_dir)
    if not home.is_dir():
        home.mkdir(mode=0o700, parents=True)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    return entry


@contextlib.contextmanager
def _exclusive_use(wait: float) -> Iterator[None]:
    """Hold :data:`USERS_LOCK`, waiting up to ``wait`` seconds for another holder to finish."""
    fd = os.open(USERS_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                    raise
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise RuntimeError(
                    "the throwaway users are still in use by process %s (another test session"
                    " or benchmark run) after %.0f s; wait for it to end, or remove %s if that"
                    " process is gone" % (holder, wait, USERS_LOCK)
                )
            time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"%d\n" % os.getpid(), 0)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


@contextlib.contextmanager
def provision_users(*, wait: float = 90.0) -> Iterator[Users]:
    """Create (or reuse) five throwaway users with fresh passwords and sudo rules.

    Needs root, ``useradd``, ``usermod``, ``chpasswd``, ``sudo``, ``visudo``, ``su`` and
    ``runuser``; without them it calls :func:`skip_or_fail`.  What it changes on the machine:

    - the users ``tmg-ssh``, ``tmg-sudo``, ``tmg-target``, ``tmg-nopw`` and ``tmg-su``, each
      with a group of its own, a home directory and ``/bin/bash``, created on first use and
      reused afterwards; every entry sets a new random password for each of them;
    - ``/etc/sudoers.d/trimitogen-tests`` (checked with ``visudo`` before it is put in place):
      tmg-sudo may ``sudo -u tmg-target`` after typing its own password, every time
      (``timestamp_timeout=0``), and ``sudo -u tmg-nopw`` without one.

    On exit the drop-in is removed and the passwords are locked; the users, their groups and
    their home directories stay.  One holder at a time, on the whole machine: each resets the
    same users' passwords, so a second caller (another test session, a benchmark run, or a
    nested call) waits up to ``wait`` seconds for the first to finish, then raises
    ``RuntimeError`` naming the holder's pid.  The lock is an ``flock`` on
    ``trimitogen-testing-users.lock`` in the temporary directory.
    """
    require_root("provisioning throwaway users")
    tools = require_tools("useradd", "usermod", "chpasswd", "sudo", "visudo", "su", "runuser")
    with _exclusive_use(wait):
        yield from _provisioned(tools)


def _provisioned(tools: dict[str, str]) -> Iterator[Users]:
    entries = {name: _ensure_user(name, tools) for name in USER_NAMES}
    # Letters and digits only: nothing a shell, chpasswd or a prompt parser could misread.
    passwords = {name: "tmg" + secrets.token_hex(12) for name in USER_NAMES}
    run_command(
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
