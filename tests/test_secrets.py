"""Secrets stay out of errors, logs and reprs: a user's object is only ever described briefly."""

from __future__ import annotations

import logging
import os
import secrets
import traceback
from typing import Any

import pytest
import trio

import trimitogen as tm
from tests.conftest import WAIT
from tests.infra import SshServer, Users
from trimitogen._funcref import DESCRIPTION_LIMIT, describe_object
from trimitogen._methods import Ssh

SYSTEM_PYTHON = "/usr/bin/python3"

SECRET = "tmg-secret-token-0123456789"


class Holder:
    """A callable instance whose repr would leak a secret."""

    def __repr__(self) -> str:
        return "Holder(token=%r)" % (SECRET * 100,)

    def __call__(self) -> None:
        pass

    def method(self) -> None:
        pass


async def test_refused_callables_are_described_without_their_repr(
    ctx: tm.Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    # os.environ.get's repr is the whole environment, tokens included.
    monkeypatch.setenv("TMG_TEST_TOKEN", SECRET * 100)
    holder = Holder()
    refused: list[Any] = [os.environ.get, holder, holder.method]
    for bad in refused:
        with pytest.raises(TypeError) as info:
            await ctx.call(bad)
        message = str(info.value)
        assert SECRET not in message
        # The fixed advice plus a description of at most DESCRIPTION_LIMIT characters.
        assert len(message) < 250 + DESCRIPTION_LIMIT, message
    with pytest.raises(TypeError, match=r"method Mapping\.get of a _Environ object"):
        await ctx.call(refused[0])


def test_descriptions_are_short_and_name_the_kind() -> None:
    long_name = type("N" * 500, (), {})
    assert describe_object(long_name()) == ("N" * 500 + " object")[: DESCRIPTION_LIMIT - 3] + "..."
    assert describe_object(os.getpid) == "builtin_function_or_method getpid"
    assert describe_object(Holder().method) == "method Holder.method of a Holder object"
    assert SECRET not in describe_object(Holder())


# -- passwords of ssh, sudo and su ----------------------------------------------------------------
def everything_said(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], extra: list[str]
) -> str:
    """Every log record (message, arguments, exception text), all fd output, and ``extra``."""
    parts = list(extra)
    for record in caplog.records:
        parts += [record.getMessage(), repr(record.args), record.exc_text or ""]
        if record.exc_info and record.exc_info[1] is not None:
            parts += traceback.format_exception(record.exc_info[1])
    captured = capfd.readouterr()
    parts += [captured.out, captured.err, caplog.text]
    return "\n".join(parts)


def error_texts(exc: BaseException) -> list[str]:
    """How an error can be shown: str, repr, the whole chained traceback, and its args."""
    return [str(exc), repr(exc), "".join(traceback.format_exception(exc)), repr(exc.args)]


async def test_passwords_never_appear_in_logs_errors_or_reprs(
    sshd: SshServer,
    users: Users,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(1)  # every level, DEBUG and below included
    for name in ("trimitogen", "trimitogen.ctx", "trimitogen.importer"):
        logging.getLogger(name).setLevel(1)
    wrong = "tmg-wrong-" + secrets.token_hex(8)  # a wrong password may be someone's real one
    secret_values = [users.ssh.password, users.sudo.password, users.su.password, wrong]
    said: list[str] = []

    def login(user: str, password: str) -> Ssh:
        return tm.ssh(
            sshd.host,
            port=sshd.port,
            username=user,
            password=password,
            ssh_args=sshd.ssh_args(use_key=False),
            python=SYSTEM_PYTHON,
        )

    async def refused(method: Any, via: tm.Context | None = None) -> None:
        with pytest.raises(tm.PasswordError) as info:
            async with tm.open_context(method, via=via, connect_timeout=600):
                pytest.fail("the login must be refused")
        said.extend(error_texts(info.value))

    with trio.fail_after(WAIT):
        await refused(login(users.ssh.name, wrong))
        async with tm.open_context(login(users.sudo.name, users.sudo.password)) as sudoer:
            said += [repr(sudoer), repr(login(users.sudo.name, users.sudo.password))]
            methods = [
                tm.sudo(users.target.name, password=users.sudo.password),
                tm.su(users.su.name, password=users.su.password),
            ]
            for method in methods:
                said.append(repr(method))
                async with tm.open_context(method, via=sudoer) as ctx:
                    said.append(repr(ctx))
                    assert await ctx.call(os.getuid) in (users.target.uid, users.su.uid)
            await refused(tm.sudo(users.target.name, password=wrong), via=sudoer)
            await refused(tm.su(users.su.name, password=wrong), via=sudoer)
    text = everything_said(caplog, capfd, said)
    assert caplog.records  # the run was logged at all
    leaked = [value for value in secret_values if value in text]
    assert leaked == [], "passwords appeared in what was logged or raised"
