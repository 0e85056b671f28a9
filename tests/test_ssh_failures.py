"""How a failed ssh start is reported: with all of ssh's explanation, at once, in the right phase.

The real OpenSSH client against the suite's sshd (a changed host key), against loopback ports where
nothing listens or where a listener hangs up or stays silent, and against a name that does not
resolve.  Where the order of ssh's output against our reading is a race, a stand-in for ssh (a
small shell script given as ``ssh_path``) prints its verdict, pauses, then explains, so the test
fails every time the explanation is cut off, not one time in five.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
import trio

import trimitogen as tm
from tests.conftest import WAIT
from tests.infra import SshServer
from tests.test_methods import SYSTEM_PYTHON, ssh_method

#: Far less than the connect timeout the tests give: an error that arrives sooner than this did not
#: wait for the connect timeout (a logic check, not a speed check).
NOT_THE_TIMEOUT = 10.0

#: How often the real changed-host-key scenario is repeated: the loss showed in 1 to 11 of 20.
REPEAT = 10


@asynccontextmanager
async def opened(method: tm._methods._Method, via: bool, **kwargs: object) -> AsyncIterator[None]:
    """Open a context with ``method`` directly, or through a local intermediate (``via``)."""
    if via:
        async with (
            tm.open_context(tm.local(python=SYSTEM_PYTHON), name="hop") as hop,
            tm.open_context(method, via=hop, **kwargs),  # type: ignore[arg-type]
        ):
            yield
    else:
        async with tm.open_context(method, **kwargs):  # type: ignore[arg-type]
            yield


async def start_failure(
    method: tm._methods._Method, via: bool, error: type[tm.ConnectError], connect_timeout: float
) -> tuple[str, float]:
    """The text of the error a start raises, and the seconds it took."""
    started = time.monotonic()
    with trio.fail_after(WAIT), pytest.raises(error) as info:
        async with opened(method, via, connect_timeout=connect_timeout):
            pass
    return str(info.value), time.monotonic() - started


# -- item 3: the whole of ssh's explanation ------------------------------------------------------


@pytest.mark.parametrize("via", [False, True], ids=["direct", "via"])
async def test_a_changed_host_key_error_keeps_the_remedy(sshd: SshServer, via: bool) -> None:
    method = ssh_method(sshd, known_hosts=sshd.known_hosts_wrong, check_host_keys="accept")
    for attempt in range(REPEAT):
        text, _ = await start_failure(method, via, tm.HostKeyError, 30)
        assert "phase: host key" in text, attempt
        assert "CHANGED" in text, attempt
        assert "Offending ED25519 key in %s:1" % sshd.known_hosts_wrong in text, (attempt, text)
        assert '-R "%s"' % sshd.host_pattern in text, (attempt, text)
        assert text.endswith("Host key verification failed."), (attempt, text)


def stand_in_ssh(tmp_path: Path, body: str) -> str:
    """An executable that takes ssh's arguments and runs the shell ``body`` instead."""
    path = tmp_path / "ssh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("via", [False, True], ids=["direct", "via"])
async def test_a_tool_that_explains_after_its_verdict_is_heard_out(
    tmp_path: Path, via: bool
) -> None:
    tool = stand_in_ssh(
        tmp_path,
        "echo '@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@' >&2\n"
        "sleep 0.3\n"
        "echo 'Offending ED25519 key in /k/known_hosts:1' >&2\n"
        "echo '  ssh-keygen -f /k/known_hosts -R [h]:22' >&2\n"
        "echo 'Host key verification failed.' >&2\n"
        "exit 255\n",
    )
    method = tm.ssh("h", ssh_path=tool, python=SYSTEM_PYTHON)
    text, _ = await start_failure(method, via, tm.HostKeyError, 30)
    assert "phase: host key" in text
    assert "ssh-keygen -f /k/known_hosts -R [h]:22" in text
    assert text.endswith("Host key verification failed.")


@pytest.mark.parametrize("via", [False, True], ids=["direct", "via"])
async def test_a_tool_that_lingers_after_its_verdict_is_not_waited_for(
    tmp_path: Path, via: bool
) -> None:
    # ssh asking "continue connecting (yes/no)?" waits for an answer that never comes.
    tool = stand_in_ssh(
        tmp_path,
        "echo 'The authenticity of host h cannot be established.' >&2\n"
        "printf 'Are you sure you want to continue connecting (yes/no/[fingerprint])? ' >&2\n"
        "exec sleep 600\n",
    )
    method = tm.ssh("h", ssh_path=tool, python=SYSTEM_PYTHON)
    text, seconds = await start_failure(method, via, tm.HostKeyError, 30)
    assert seconds < NOT_THE_TIMEOUT
    assert "the host key is unknown" in text
    assert "The authenticity of host h cannot be established." in text


@pytest.mark.parametrize("via", [False, True], ids=["direct", "via"])
async def test_a_tool_that_floods_after_its_verdict_is_not_waited_for(
    tmp_path: Path, via: bool
) -> None:
    tool = stand_in_ssh(
        tmp_path,
        "echo 'Host key verification failed.' >&2\n"
        "while :; do echo 'and more, and more, and more' >&2; done\n",
    )
    method = tm.ssh("h", ssh_path=tool, python=SYSTEM_PYTHON)
    text, seconds = await start_failure(method, via, tm.HostKeyError, 30)
    assert seconds < NOT_THE_TIMEOUT
    assert "phase: host key" in text
    assert "the host key was refused" in text


# -- item 4: ssh's own failure, as soon as ssh exits ---------------------------------------------


def free_port() -> int:
    """A loopback port where nothing listens (bound once, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def listener() -> Iterator[socket.socket]:
    """A loopback listener that accepts nothing by itself (the kernel completes handshakes)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock


async def hang_up_on_everyone(sock: socket.socket) -> None:
    while True:
        await trio.lowlevel.wait_readable(sock)
        conn, _ = sock.accept()
        conn.close()


def plain_ssh(host: str, port: int | None = None, *options: str) -> tm._methods.Ssh:
    return tm.ssh(host, port=port, ssh_args=["-F", "/dev/null", *options], python=SYSTEM_PYTHON)


@pytest.mark.parametrize("via", [False, True], ids=["direct", "via"])
async def test_an_unreachable_host_fails_when_ssh_does(via: bool) -> None:
    refused = free_port()
    with listener() as hangs_up, listener() as silent:
        cases = [
            (plain_ssh("127.0.0.1", refused), "Connection refused"),
            (plain_ssh("no-such-host.invalid"), "Could not resolve hostname no-such-host.invalid"),
            # A hang-up reaches ssh as a close or a reset, depending on what it had sent.
            (
                plain_ssh("127.0.0.1", hangs_up.getsockname()[1]),
                r"Connection (closed|reset) by 127\.0\.0\.1 port %d" % hangs_up.getsockname()[1],
            ),
            # A host that never answers, with ssh's own (shorter) timeout.
            (
                plain_ssh("127.0.0.1", silent.getsockname()[1], "-o", "ConnectTimeout=1"),
                "Connection timed out during banner exchange",
            ),
        ]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hang_up_on_everyone, hangs_up)
            for method, said in cases:
                text, seconds = await start_failure(method, via, tm.ConnectError, 30)
                assert seconds < NOT_THE_TIMEOUT, text
                assert "(phase: connect)" in text, text
                assert re.search(said, text), text
            nursery.cancel_scope.cancel()


async def test_ssh_giving_up_on_its_own_is_reported_with_its_reason() -> None:
    with listener() as hangs_up:
        port = hangs_up.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hang_up_on_everyone, hangs_up)
            text, _ = await start_failure(plain_ssh("127.0.0.1", port), False, tm.ConnectError, 30)
            nursery.cancel_scope.cancel()
    assert re.search(
        r"\(phase: connect\): its process exited with status 255, after it said: "
        r"Connection (closed|reset) by 127\.0\.0\.1 port %d;" % port,
        text,
    ), text


async def test_ssh_silent_until_the_connect_timeout_is_in_the_connect_phase() -> None:
    with listener() as silent:
        method = plain_ssh("127.0.0.1", silent.getsockname()[1])
        text, _ = await start_failure(method, False, tm.ConnectError, 1)
    assert (
        "(phase: connect): it did not reach the far side and start the interpreter within 1s"
        in text
    )
