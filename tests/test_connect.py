"""The start-up dialog (core/connect.py), with bytes: prompts, failures and redaction."""

from __future__ import annotations

import trimitogen as tm
from trimitogen.core.connect import SUDO_PROMPT, build_plan, ssh_dialog, su_dialog, sudo_dialog
from trimitogen.core.errors import HostKeyError, PasswordError


def test_password_typed_at_the_prompt_once() -> None:
    dialog = ssh_dialog("deploy@web1", "s3cret")
    assert dialog.receive_data(b"\rdeploy@web1's password: ") == b"s3cret\n"
    assert dialog.receive_data(b"\r\n") == b""
    assert dialog.error is None
    assert dialog.receive_data(b"\rdeploy@web1's password: ") == b""
    assert isinstance(dialog.error, PasswordError)


def test_a_banner_that_mentions_passwords_is_not_answered() -> None:
    dialog = ssh_dialog("deploy@web1", "s3cret")
    assert dialog.receive_data(b"NOTICE: forgot your password: call the desk\r\n") == b""
    assert dialog.error is None
    assert dialog.receive_data(b"deploy@web1's password: ") == b"s3cret\n"


def test_password_is_redacted_from_echoed_output() -> None:
    dialog = su_dialog("tmg-su", "s3cret")
    assert dialog.redact("Password: s3cret") == "Password: ********"
    assert ssh_dialog("x", None).redact("s3cret") == "s3cret"


def test_only_sshs_own_refusal_is_a_password_error() -> None:
    harmless = ssh_dialog("deploy@web1", None)
    harmless.receive_data(b".bashrc: line 3: /opt/x: Permission denied\n")
    assert harmless.error is None
    refused = ssh_dialog("deploy@web1", None)
    refused.receive_data(b"deploy@web1: Permission denied (publickey,password).\r\n")
    assert isinstance(refused.error, PasswordError)


def test_missing_password_and_host_keys() -> None:
    dialog = sudo_dialog("root", None)
    dialog.receive_data(SUDO_PROMPT.encode())
    assert isinstance(dialog.error, PasswordError)
    assert "none was given" in str(dialog.error)
    changed = ssh_dialog("h", None)
    changed.receive_data(
        b"@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\r\n"
        b"Host key verification failed.\r\n"
    )
    assert isinstance(changed.error, HostKeyError)
    assert "CHANGED" in str(changed.error)
    unknown = ssh_dialog("h", None)
    unknown.receive_data(
        b"No ED25519 host key is known for [127.0.0.1]:22 and you have requested strict "
        b"checking.\r\nHost key verification failed.\r\n"
    )
    assert "check_host_keys='accept'" in str(unknown.error)


def test_ssh_compression_is_off_unless_asked_for() -> None:
    # Measured in benchmarks/ssh_compression.py: -C made loopback transfers 4-10x slower.
    assert "-C" not in build_plan(tm.ssh("web1").spec()).argv
    assert "-C" in build_plan(tm.ssh("web1", compression=True).spec()).argv


def test_a_failure_followed_by_much_more_in_one_read_is_seen() -> None:
    dialog = ssh_dialog("h", None)
    dialog.receive_data(b"Host key verification failed.\n" + b"and more\n" * 1000)
    assert isinstance(dialog.error, HostKeyError)
    split = ssh_dialog("h", None)
    split.receive_data(b"x" * 10000 + b"Host key verifi")
    assert split.error is None
    split.receive_data(b"cation failed.\n")
    assert isinstance(split.error, HostKeyError)
