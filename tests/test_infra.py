"""The real test infrastructure of trimitogen.testing (users, sshd, ptys) works with the real tools.

These also pin down what the real tools print, which the ssh, sudo and su methods must recognise:
password prompts, host-key questions and the wrong-password messages.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from trimitogen.testing import (
    PtyResult,
    SshServer,
    Users,
    provision_users,
    run_on_pty,
    running_sshd,
    skip_or_fail,
)

TIMEOUT = 30.0
#: Prompts and messages in English, whatever the machine's locale.
ENV = {**os.environ, "LC_ALL": "C"}


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT, env=ENV
    )


def on_pty(
    argv: list[str], answers: list[tuple[bytes, bytes]], user: str | None = None
) -> PtyResult:
    result = run_on_pty(argv, answers, user=user, timeout=TIMEOUT, env=ENV)
    assert not result.unanswered, result
    return result


# ---- the fixtures themselves


def test_users_exist_with_bash_and_homes(users: Users) -> None:
    names = [user.name for user in users.all()]
    assert names == ["tmg-ssh", "tmg-sudo", "tmg-target", "tmg-nopw", "tmg-su"]
    assert len({user.password for user in users.all()}) == 5
    for user in users.all():
        result = run(["runuser", "-u", user.name, "--", "sh", "-c", 'id -un; echo "$HOME"'])
        assert result.stdout.split() == [user.name, str(user.home)], result
        assert user.home.is_dir()
    assert users.by_name("tmg-su") is users.su


def test_a_second_holder_of_the_users_waits_then_names_the_first(users: Users) -> None:
    second = provision_users(wait=0.3)
    with pytest.raises(RuntimeError, match="still in use by process %d " % os.getpid()):
        second.__enter__()
    # The first holder's users are untouched: the same passwords still work.
    result = on_pty(
        ["su", "tmg-su", "-c", "id -un"],
        [(b"Password: ", users.su.password.encode() + b"\n")],
        user="tmg-target",
    )
    assert (result.returncode, result.transcript) == (0, b"Password: \r\ntmg-su\r\n"), result
    assert users.sudoers_file.exists()


def test_sudoers_drop_in_is_valid(users: Users) -> None:
    assert stat.S_IMODE(users.sudoers_file.stat().st_mode) == 0o440
    result = run(["visudo", "-cf", str(users.sudoers_file)])
    assert result.returncode == 0, result
    rules = [line.strip() for line in run(["sudo", "-l", "-U", "tmg-sudo"]).stdout.splitlines()]
    assert "(tmg-target) ALL" in rules
    assert "(tmg-nopw) NOPASSWD: ALL" in rules


def test_sshd_files(sshd: SshServer) -> None:
    assert sshd.host == "127.0.0.1"
    assert sshd.user == "tmg-ssh"
    assert stat.S_IMODE(sshd.identity_file.stat().st_mode) == 0o600
    assert sshd.known_hosts.read_text() == "[127.0.0.1]:%d %s\n" % (
        sshd.port,
        sshd.host_public_key,
    )
    assert sshd.known_hosts_empty.read_text() == ""
    wrong = sshd.known_hosts_wrong.read_text().split()
    assert wrong[:2] == [sshd.host_pattern, "ssh-ed25519"]
    assert wrong[1:] != sshd.host_public_key.split()
    assert "-F" in sshd.ssh_args()
    assert "BatchMode" not in " ".join(sshd.ssh_args())


def test_sshd_fixture_is_the_plugins_one(sshd: SshServer, trimitogen_sshd: SshServer) -> None:
    assert sshd is trimitogen_sshd
    assert sshd.hosts == ("127.0.0.1",)


def test_sshd_on_several_addresses(users: Users, no_leaked_fds: None) -> None:
    hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    with running_sshd(users, hosts, max_startups=20, max_sessions=7) as server:
        assert (server.host, server.hosts) == ("127.0.0.2", tuple(hosts))
        config = (server.directory / "sshd_config").read_text().splitlines()
        assert ["ListenAddress %s" % host for host in hosts] == [
            line for line in config if line.startswith("ListenAddress ")
        ]
        assert "MaxStartups 20" in config
        assert "MaxSessions 7" in config
        assert server.known_hosts.read_text() == "".join(
            "[%s]:%d %s\n" % (host, server.port, server.host_public_key) for host in hosts
        )
        for host in hosts:
            options = ["-o", "StrictHostKeyChecking=yes"]
            result = run(server.argv("id", "-un", host=host, options=options))
            assert (result.returncode, result.stdout) == (0, "tmg-ssh\n"), result
        assert len(server.pids) == 1
        directory, pid = server.directory, server.pid
    assert not directory.exists()
    assert not os.path.exists("/proc/%d" % pid)


def test_sshd_on_more_addresses_than_one_sshd_takes(users: Users) -> None:
    hosts = ["127.0.0.%d" % i for i in range(2, 202)]  # 200 addresses: 13 sshd processes
    with running_sshd(users, hosts) as server:
        assert len(server.pids) == 13
        assert server.pids[0] == server.pid
        config = (server.directory / "sshd_config").read_text().splitlines()
        assert "MaxStartups 400:30:800" in config
        assert len(server.known_hosts.read_text().splitlines()) == 200
        for host in (hosts[0], hosts[16], hosts[-1]):
            result = run(server.argv("id", "-un", host=host, options=["-o", "BatchMode=yes"]))
            assert (result.returncode, result.stdout) == (0, "tmg-ssh\n"), result
        pids = server.pids
    assert not any(os.path.exists("/proc/%d" % pid) for pid in pids)


def test_skip_or_fail_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"^no widget$"):
        skip_or_fail("no widget")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"^CI=true but no widget$"):
        skip_or_fail("no widget")


# ---- ssh


def test_ssh_with_key_runs_as_tmg_ssh(sshd: SshServer) -> None:
    result = run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(sshd.identity_file),
            "-p",
            str(sshd.port),
            "-o",
            "UserKnownHostsFile=%s" % sshd.known_hosts,
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "tmg-ssh@127.0.0.1",
            "id",
            "-un",
        ]
    )
    assert (result.returncode, result.stdout) == (0, "tmg-ssh\n"), result


def test_ssh_argv_helper(sshd: SshServer) -> None:
    result = run(sshd.argv("id", "-un", options=["-o", "StrictHostKeyChecking=yes"]))
    assert (result.returncode, result.stdout) == (0, "tmg-ssh\n"), result


def test_system_python_runs_over_ssh(sshd: SshServer, users: Users) -> None:
    result = run(sshd.argv("/usr/bin/python3", "-c", "pass"))
    assert result.returncode == 0, result
    # ssh joins the command's words with spaces for the remote shell: quote them.
    code = shlex.join(["/usr/bin/python3", "-c", "import os; print(os.getuid())"])
    result = run(sshd.argv(code))
    assert result.stdout == "%d\n" % users.ssh.uid, result


def test_unknown_host_is_refused_under_strict_checking(sshd: SshServer) -> None:
    result = run(
        sshd.argv(
            "true", known_hosts=sshd.known_hosts_empty, options=["-o", "StrictHostKeyChecking=yes"]
        )
    )
    assert result.returncode == 255
    assert "No ED25519 host key is known for [127.0.0.1]:%d" % sshd.port in result.stderr
    assert "Host key verification failed." in result.stderr
    assert sshd.known_hosts_empty.read_text() == ""


def test_changed_host_key_is_refused(sshd: SshServer) -> None:
    result = run(
        sshd.argv(
            "true", known_hosts=sshd.known_hosts_wrong, options=["-o", "StrictHostKeyChecking=yes"]
        )
    )
    assert result.returncode == 255
    assert "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!" in result.stderr
    assert "Host key verification failed." in result.stderr


def test_accept_new_is_supported_and_records_the_key(sshd: SshServer, tmp_path: Path) -> None:
    known_hosts = sshd.new_known_hosts(tmp_path)
    options = ["-o", "StrictHostKeyChecking=accept-new"]
    result = run(sshd.argv("id", "-un", known_hosts=known_hosts, options=options))
    assert (result.returncode, result.stdout) == (0, "tmg-ssh\n"), result
    assert "Warning: Permanently added '[127.0.0.1]:%d' (ED25519)" % sshd.port in result.stderr
    assert known_hosts.read_text() == sshd.known_hosts.read_text()
    # accept-new never overrides a changed key.
    result = run(sshd.argv("true", known_hosts=sshd.known_hosts_wrong, options=options))
    assert result.returncode == 255
    assert "Host key verification failed." in result.stderr


def test_ssh_password_prompt(sshd: SshServer, no_leaked_fds: None) -> None:
    prompt = b"tmg-ssh@127.0.0.1's password: "
    result = on_pty(
        sshd.argv("id", "-un", use_key=False),
        [(prompt, b"wrong\n"), (prompt, sshd.password.encode() + b"\n")],
    )
    assert result.returncode == 0, result
    assert result.transcript == (
        b"\r" + prompt + b"\r\nPermission denied, please try again.\r\r\n"
        b"\r" + prompt + b"\r\ntmg-ssh\r\n"
    )


def test_ssh_wrong_passwords_exhausted(sshd: SshServer, no_leaked_fds: None) -> None:
    prompt = b"tmg-ssh@127.0.0.1's password: "
    result = on_pty(
        sshd.argv("true", use_key=False, options=["-o", "NumberOfPasswordPrompts=1"]),
        [(prompt, b"wrong\n")],
    )
    assert result.returncode == 255
    assert result.transcript.endswith(
        b"tmg-ssh@127.0.0.1: Permission denied (publickey,password).\r\r\n"
    )


def test_ssh_asks_about_unknown_host_key(
    sshd: SshServer, tmp_path: Path, no_leaked_fds: None
) -> None:
    known_hosts = sshd.new_known_hosts(tmp_path)
    question = b"Are you sure you want to continue connecting (yes/no/[fingerprint])? "
    result = on_pty(
        sshd.argv(
            "id", "-un", known_hosts=known_hosts, options=["-o", "StrictHostKeyChecking=ask"]
        ),
        [(question, b"yes\n")],
    )
    assert result.returncode == 0, result
    lines = result.transcript.split(b"\r\n")
    pattern = b"[127.0.0.1]:%d" % sshd.port
    assert lines[0] == b"\rThe authenticity of host '%s (%s)' can't be established." % (
        pattern,
        pattern,
    )
    assert lines[1].startswith(b"ED25519 key fingerprint is SHA256:")
    assert lines[2] == b"This key is not known by any other names."
    assert lines[3] == question + b"yes"  # the answer is echoed
    assert lines[
        4
    ] == b"Warning: Permanently added '%s' (ED25519) to the list of known hosts.\r" % (pattern)
    assert lines[5] == b"tmg-ssh"
    assert known_hosts.read_text() == sshd.known_hosts.read_text()


# ---- sudo


def test_sudo_nopasswd_rule(users: Users) -> None:
    result = run(["runuser", "-u", "tmg-sudo", "--", "sudo", "-n", "-u", "tmg-nopw", "id", "-un"])
    assert (result.returncode, result.stdout) == (0, "tmg-nopw\n"), result


def test_sudo_password_rule_needs_a_password(users: Users) -> None:
    result = run(["runuser", "-u", "tmg-sudo", "--", "sudo", "-n", "-u", "tmg-target", "true"])
    assert result.returncode == 1
    assert result.stderr == "sudo: a password is required\n"


def test_sudo_custom_prompt(users: Users, no_leaked_fds: None) -> None:
    prompt = b"TMG-SUDO-PROMPT:"
    result = on_pty(
        ["sudo", "-p", prompt.decode(), "-u", "tmg-target", "id", "-un"],
        [(prompt, b"wrong\n"), (prompt, users.sudo.password.encode() + b"\n")],
        user="tmg-sudo",
    )
    assert result.returncode == 0, result
    assert result.transcript == (
        prompt + b"\r\nSorry, try again.\r\n" + prompt + b"\r\ntmg-target\r\n"
    )


def test_sudo_default_prompt(users: Users, no_leaked_fds: None) -> None:
    prompt = b"[sudo] password for tmg-sudo: "
    result = on_pty(
        ["sudo", "-u", "tmg-target", "id", "-un"],
        [(prompt, users.sudo.password.encode() + b"\n")],
        user="tmg-sudo",
    )
    assert (result.returncode, result.transcript) == (0, prompt + b"\r\ntmg-target\r\n"), result


# ---- su


def test_su_with_password(users: Users, no_leaked_fds: None) -> None:
    result = on_pty(
        ["su", "tmg-su", "-c", "id -un"],
        [(b"Password: ", users.su.password.encode() + b"\n")],
        user="tmg-target",
    )
    assert (result.returncode, result.transcript) == (0, b"Password: \r\ntmg-su\r\n"), result


def test_su_wrong_password(users: Users, no_leaked_fds: None) -> None:
    result = on_pty(
        ["su", "tmg-su", "-c", "id -un"], [(b"Password: ", b"wrong\n")], user="tmg-target"
    )
    assert result.returncode == 1
    assert result.transcript == b"Password: \r\nsu: Authentication failure\r\n"


@pytest.mark.parametrize("user", ["tmg-sudo", "tmg-target", "tmg-nopw", "tmg-su"])
def test_system_python_runs_as_each_user(users: Users, user: str) -> None:
    result = run(["runuser", "-u", user, "--", "/usr/bin/python3", "-c", "pass"])
    assert result.returncode == 0, result
