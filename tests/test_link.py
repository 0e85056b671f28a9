"""One child's link (trimitogen.core.link), tested h11-style: bytes in, messages and verdicts out.

No process and no descriptor: the stream is fed the bytes a child would write to its socket (the
stage-1 marker line, then frames) and the terminal the bytes its tool would print.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trimitogen.core import link as link_module
from trimitogen.core.connect import PromptDialog, ssh_dialog, su_dialog, sudo_dialog
from trimitogen.core.errors import ConnectError, HostKeyError, PasswordError, StreamError
from trimitogen.core.link import (
    CONNECTING,
    ERROR_CLASSES,
    ERROR_KINDS,
    FAILED,
    GONE,
    MAX_LINE,
    READY,
    TAIL_LINES,
    Failed,
    Link,
    connect_failure,
    describe_status,
)
from trimitogen.core.messages import Ready
from trimitogen.core.protocol import (
    HANDLE_CALL,
    HANDLE_LOG,
    HANDLE_READY,
    HEADER_SIZE,
    MASTER_ID,
    Message,
    dumps,
    frame,
)

CHILD = 7
MAGIC = importlib.util.MAGIC_NUMBER
MARKER = b"TMG0 %x\n" % sys.hexversion
PROMPT = b"trimitogen-sudo-password:"


def ready_frame(src: int = CHILD, pid: int = 4242, hexversion: int = sys.hexversion) -> bytes:
    """The READY a child sends once its runtime runs, built from the frame's separate parts."""
    msg = Message(MASTER_ID, src, HANDLE_READY, 0, Ready.pack(pid, hexversion, MAGIC))
    return b"".join(bytes(part) for part in msg.frame_parts())


def raw_ready(body: bytes, src: int = CHILD) -> bytes:
    return frame(Message(MASTER_ID, src, HANDLE_READY, 0, body))


def call_frame(text: str, src: int = CHILD) -> bytes:
    return frame(Message(MASTER_ID, src, HANDLE_CALL, 1000, dumps(("mod", text, (), {}))))


def sudo_link() -> Link:
    return Link(CHILD, sudo_dialog("bob", "s3cret"))


def ready_link() -> Link:
    link = Link(CHILD)
    link.receive_stream(MARKER + ready_frame())
    assert list(link.messages()) == []
    assert link.state == READY
    return link


# -- the stream: marker, frames, READY ------------------------------------------------------------


def test_marker_then_ready_makes_the_link_ready() -> None:
    link = Link(CHILD)
    assert link.state == CONNECTING
    assert not link.started
    assert link.hexversion is None
    link.receive_stream(MARKER + ready_frame(pid=99, hexversion=0x030800F0))
    assert list(link.messages()) == []  # READY is consumed by the link
    assert link.state == READY
    assert link.ready is not None
    assert link.ready.astuple() == (99, 0x030800F0, MAGIC)
    assert link.hexversion == 0x030800F0  # READY's word wins over the marker's
    assert link.failure is None
    assert repr(link) == "Link(7, ready)"


def test_the_marker_alone_starts_the_bootstrap() -> None:
    link = Link(CHILD)
    link.receive_stream(b"Last login: yesterday\nTMG0 30800f0\n")
    assert link.started
    assert link.state == CONNECTING
    assert link.hexversion == 0x030800F0
    assert list(link.messages()) == []


def test_output_before_the_marker_is_kept_and_never_decoded() -> None:
    link = Link(CHILD)
    link.receive_stream(b"motd line\n" + call_frame("early") + b"\nwarning: x\n")
    assert not link.started
    assert list(link.messages()) == []
    link.receive_stream(MARKER + call_frame("after"))
    [msg] = link.messages()
    assert msg.unpickle()[1] == "after"
    tail = link.output_tail()
    assert tail[0] == "motd line"
    assert tail[-1] == "warning: x"


def test_stream_fed_one_byte_at_a_time() -> None:
    link = Link(CHILD)
    wire = b"banner\r\n" + MARKER + ready_frame() + call_frame("one") + call_frame("two")
    seen = []
    for i in range(len(wire)):
        link.receive_stream(wire[i : i + 1])
        seen += [msg.unpickle()[1] for msg in link.messages()]
    assert link.state == READY
    assert seen == ["one", "two"]
    assert link.output_tail() == ["banner"]


def test_frames_after_ready_in_the_same_chunk_are_delivered_intact() -> None:
    link = Link(CHILD)
    log = frame(Message(MASTER_ID, CHILD, HANDLE_LOG, 0, dumps(("stdout", "", 20, "hi"))))
    link.receive_stream(MARKER + ready_frame() + log + call_frame("x", src=9))
    first, second = link.messages()
    assert (first.dst, first.src, first.handle, first.reply_to) == (MASTER_ID, CHILD, HANDLE_LOG, 0)
    assert first.unpickle() == ("stdout", "", 20, "hi")
    assert (second.src, second.handle, second.reply_to) == (9, HANDLE_CALL, 1000)


def test_a_marker_with_a_bad_version_is_output_not_the_marker() -> None:
    link = Link(CHILD)
    link.receive_stream(b"TMG0 zz\n")
    assert not link.started
    link.receive_stream(MARKER + ready_frame())
    list(link.messages())
    assert link.state == READY


def test_ready_is_consumed_only_from_the_child_itself() -> None:
    link = Link(CHILD)
    link.receive_stream(MARKER + ready_frame(src=CHILD + 1) + ready_frame(src=MASTER_ID))
    assert list(link.messages()) == []  # neither consumed nor passed on
    assert link.state == CONNECTING
    assert link.ready is None
    link.receive_stream(ready_frame(pid=5))
    assert list(link.messages()) == []
    assert link.state == READY
    assert link.ready is not None
    assert link.ready.pid == 5


def test_ready_is_consumed_only_while_connecting() -> None:
    link = ready_link()
    link.receive_stream(ready_frame(pid=1))
    [msg] = link.messages()
    assert msg.handle == HANDLE_READY
    assert link.ready is not None
    assert link.ready.pid == 4242  # the first READY stays


def test_a_ready_after_a_failure_does_not_revive_the_link() -> None:
    link = Link(CHILD)
    link.receive_stream(MARKER)
    link.timed_out(10)
    link.receive_stream(ready_frame())
    [msg] = link.messages()
    assert msg.handle == HANDLE_READY
    assert link.state == FAILED
    assert link.ready is None


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (dumps((1, 2)), "expected a tuple of 3 fields"),
        (dumps((True, 2, b"")), "field 'pid'"),
        (dumps((1, 2, "magic")), "field 'magic'"),
        (b"\x80\x05garbage", "malformed message body"),
        (b"", "malformed message body"),
    ],
    ids=["short", "bool-pid", "str-magic", "garbage", "empty"],
)
def test_a_malformed_ready_fails_the_link(body: bytes, words: str) -> None:
    link = Link(CHILD)
    link.receive_stream(b"hello\n" + MARKER + raw_ready(body) + call_frame("after"))
    [msg] = link.messages()
    assert msg.handle == HANDLE_CALL
    assert link.state == FAILED
    assert link.ready is None
    failure = link.failure
    assert failure is not None
    assert failure.kind == "connect"
    assert failure.phase == "bootstrap"
    assert failure.reason.startswith("it announced itself wrongly: ")
    assert words in failure.reason
    assert failure.last_lines == ["hello"]
    assert failure.error_class is ConnectError


def test_a_frame_that_breaks_the_protocol_raises_stream_error() -> None:
    link = Link(CHILD)
    link.receive_stream(MARKER)
    with pytest.raises(StreamError, match="bad frame header: magic"):
        link.receive_stream(b"\x00" * HEADER_SIZE)
    with pytest.raises(StreamError):  # the decoder stays failed
        link.receive_stream(ready_frame())


def test_the_message_size_limit_applies_as_soon_as_the_header_arrives() -> None:
    link = Link(CHILD, max_message_size=100)
    link.receive_stream(MARKER)
    big = frame(Message(MASTER_ID, CHILD, HANDLE_CALL, 0, b"x" * 101))
    with pytest.raises(StreamError, match="exceeds the limit of 100 bytes"):
        link.receive_stream(big[:HEADER_SIZE])


def test_a_large_body_is_read_in_place() -> None:
    link = ready_link()
    assert link.body_view() is None
    payload = b"p" * (256 * 1024)
    wire = frame(Message(MASTER_ID, CHILD, HANDLE_CALL, 0, dumps(("m", "f", (payload,), {}))))
    link.receive_stream(wire[: HEADER_SIZE + 100])
    view = link.body_view()
    assert view is not None
    rest = wire[HEADER_SIZE + 100 :]
    assert len(view) == len(rest)
    view[:] = rest
    link.body_filled(len(rest))
    [msg] = link.messages()
    assert msg.unpickle()[2] == (payload,)
    assert link.body_view() is None


def test_a_fork_link_takes_frames_at_once() -> None:
    link = Link(CHILD, expect_marker=False)
    assert link.started
    assert link.hexversion is None
    link.receive_stream(ready_frame(hexversion=0x030C00F0) + call_frame("x"))
    [msg] = link.messages()
    assert msg.handle == HANDLE_CALL
    assert link.state == READY
    assert link.hexversion == 0x030C00F0


def test_a_fork_link_does_not_look_for_a_marker() -> None:
    link = Link(CHILD, expect_marker=False)
    with pytest.raises(StreamError, match="bad frame header"):
        link.receive_stream(MARKER + b"\x00" * HEADER_SIZE)


def test_a_fork_link_fails_in_the_bootstrap_phase() -> None:
    link = Link(CHILD, expect_marker=False)
    link.timed_out(3)
    assert link.failure is not None
    assert link.failure.phase == "bootstrap"
    assert link.failure.reason == "the bootstrap did not complete within 3s"


# -- the terminal: lines --------------------------------------------------------------------------


def test_output_is_split_into_lines_across_chunks() -> None:
    link = Link(CHILD)
    assert link.receive_output(b"one\ntw") == (["one"], b"")
    assert link.receive_output(b"o\n\nthr") == (["two", ""], b"")
    assert link.output_closed() == ["thr"]
    assert link.output_closed() == []


def test_carriage_returns_at_line_ends_are_stripped() -> None:
    link = Link(CHILD)
    lines, _ = link.receive_output(b"dos\r\ndouble\r\r\nin\rside\r\n")
    assert lines == ["dos", "double", "in\rside"]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    link = Link(CHILD)
    lines, _ = link.receive_output(b"caf\xc3\xa9 \xff\n")
    assert lines == ["café \ufffd"]


def test_an_over_long_line_is_passed_on_in_pieces() -> None:
    link = Link(CHILD)
    lines, _ = link.receive_output(b"a" * (2 * MAX_LINE + 10))
    assert lines == ["a" * MAX_LINE, "a" * MAX_LINE]
    lines, _ = link.receive_output(b"b\n")
    assert lines == ["a" * 10 + "b"]


def test_a_line_of_exactly_max_line_is_one_line() -> None:
    link = Link(CHILD)
    assert link.receive_output(b"c" * MAX_LINE) == ([], b"")
    assert link.receive_output(b"\n") == (["c" * MAX_LINE], b"")


def test_an_over_long_line_is_split_when_it_arrives_whole() -> None:
    link = Link(CHILD)
    lines, _ = link.receive_output(b"a" * (2 * MAX_LINE + 1) + b"\nnext\n")
    assert lines == ["a" * MAX_LINE, "a" * MAX_LINE, "a", "next"]


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=60).map(lambda b: b.replace(b"x", b"\n")),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=6),
)
def test_lines_do_not_depend_on_how_output_is_chunked(data: bytes, cuts: list[int]) -> None:
    def feed(chunks: list[bytes]) -> list[str]:
        link = Link(CHILD)
        lines: list[str] = []
        for chunk in chunks:
            lines += link.receive_output(chunk)[0]
        return lines + link.output_closed()

    bounds = [0, *sorted(min(cut, len(data)) for cut in cuts), len(data)]
    chunks = [data[start:end] for start, end in itertools.pairwise(bounds)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(link_module, "MAX_LINE", 8)
        whole = feed([data])
        assert feed(chunks) == whole
        for line in whole:
            assert len(line) <= 8


# -- the terminal: prompts and passwords ----------------------------------------------------------


def test_the_prompt_gets_the_password_once() -> None:
    link = sudo_link()
    assert link.receive_output(b"[sudo] " + PROMPT) == ([], b"s3cret\n")
    assert link.dialog.passwords_sent == 1
    assert link.state == CONNECTING
    assert link.receive_output(b"\r\n") == (["[sudo] " + PROMPT.decode()], b"")


def test_a_prompt_split_across_chunks_is_answered() -> None:
    link = sudo_link()
    assert link.receive_output(PROMPT[:7]) == ([], b"")
    assert link.receive_output(PROMPT[7:]) == ([], b"s3cret\n")


def test_a_prompt_that_is_not_the_last_thing_printed_is_not_answered() -> None:
    link = sudo_link()
    lines, answer = link.receive_output(b"motd: " + PROMPT + b" is what we ask\n")
    assert lines == ["motd: %s is what we ask" % PROMPT.decode()]
    assert answer == b""
    assert link.dialog.passwords_sent == 0
    assert link.state == CONNECTING


def test_a_second_prompt_fails_with_a_password_error() -> None:
    link = sudo_link()
    assert link.receive_output(PROMPT)[1] == b"s3cret\n"
    assert link.receive_output(b"\r\n" + PROMPT) == ([PROMPT.decode()], b"")
    assert link.state == FAILED
    failure = link.failure
    assert failure is not None
    assert failure.kind == "password"
    assert failure.phase == "authentication"
    assert failure.reason == "the password was refused"
    assert failure.error_class is PasswordError
    assert failure.last_lines == [PROMPT.decode(), PROMPT.decode()]


def test_a_prompt_without_a_password_fails_at_once() -> None:
    link = Link(CHILD, sudo_dialog("bob", None))
    assert link.receive_output(PROMPT) == ([], b"")
    assert link.failure is not None
    assert (link.failure.kind, link.failure.phase) == ("password", "authentication")
    assert "none was given" in link.failure.reason


def test_the_password_is_masked_in_lines_and_in_the_tail() -> None:
    link = sudo_link()
    link.receive_output(PROMPT)
    lines, _ = link.receive_output(b"s3cret\r\nsudo: s3cret? Sorry, try again.\r\nhalf s3cret")
    # The prompt was still a partial line: the echoed password completes it.
    assert lines == [PROMPT.decode() + "********", "sudo: ********? Sorry, try again."]
    assert link.failure is not None
    assert link.failure.kind == "password"
    assert link.failure.last_lines == [*lines, "half ********"]
    assert all("s3cret" not in line for line in link.output_tail())
    assert link.output_closed() == ["half ********"]


def test_the_password_is_masked_in_output_before_the_marker() -> None:
    link = sudo_link()
    link.receive_stream(b"echoed s3cret\n")
    assert all("s3cret" not in line for line in link.output_tail())


def test_a_host_key_failure_is_a_host_key_error() -> None:
    link = Link(CHILD, ssh_dialog("bob@host", None))
    lines, answer = link.receive_output(b"@@@ WARNING\r\nHost key verification failed.\r\n")
    assert answer == b""
    assert lines == ["@@@ WARNING", "Host key verification failed."]
    assert link.state == FAILED
    failure = link.failure
    assert failure is not None
    assert failure.kind == "hostkey"
    assert failure.phase == "host key"
    assert failure.reason == "the host key was refused"
    assert failure.error_class is HostKeyError
    assert failure.last_lines == lines


def test_a_dialog_connect_failure_is_in_the_connect_phase() -> None:
    link = Link(CHILD, ssh_dialog("host", None))
    link.receive_output(b"ssh: connect to host host port 22: Connection refused\r\n")
    assert link.failure is not None
    assert (link.failure.kind, link.failure.phase) == ("connect", "connect")
    assert link.failure.reason == "the connection was refused"
    assert link.failure.error_class is ConnectError


def test_su_refusal_after_the_password_is_a_password_error() -> None:
    link = Link(CHILD, su_dialog("alice", "pw"))
    assert link.receive_output(b"Password: ")[1] == b"pw\n"
    link.receive_output(b"\r\nsu: Authentication failure\r\n")
    assert link.failure is not None
    assert (link.failure.kind, link.failure.phase) == ("password", "authentication")


def test_output_after_ready_is_not_part_of_the_dialog() -> None:
    link = Link(CHILD, sudo_dialog("bob", "s3cret"))
    link.receive_stream(MARKER + ready_frame())
    list(link.messages())
    assert link.receive_output(PROMPT + b"\n") == ([PROMPT.decode()], b"")
    assert link.receive_output(b"Sorry, try again.\n")[1] == b""
    assert link.state == READY
    assert link.failure is None
    assert link.dialog.passwords_sent == 0


def test_only_the_first_failure_counts() -> None:
    link = Link(CHILD, ssh_dialog("host", None))
    link.receive_output(b"Host key verification failed.\n")
    link.receive_output(b"Permission denied (publickey).\n")
    link.timed_out(5)
    link.gone("its process exited with status 255")
    assert link.state == GONE
    assert link.failure is not None
    assert link.failure.kind == "hostkey"


# -- the tail -------------------------------------------------------------------------------------


def test_output_tail_keeps_the_last_lines_of_both_streams() -> None:
    link = Link(CHILD)
    link.receive_stream(b"pre 1\r\n\npre 2\n" + MARKER)
    link.receive_output(b"term 1\nterm 2\npartial  ")
    assert link.output_tail() == ["pre 1", "pre 2", "term 1", "term 2", "partial"]


def test_output_tail_keeps_only_tail_lines() -> None:
    link = Link(CHILD)
    link.receive_stream(b"".join(b"pre %d\n" % i for i in range(5)))
    link.receive_output(b"".join(b"term %d\n" % i for i in range(TAIL_LINES + 10)))
    expected = ["term %d" % i for i in range(10, TAIL_LINES + 10)]
    assert link.output_tail() == expected
    link.timed_out(1)
    assert link.failure is not None
    assert link.failure.last_lines == expected


def test_output_tail_before_any_output_is_empty() -> None:
    assert Link(CHILD).output_tail() == []


# -- timeouts, phases and the end -----------------------------------------------------------------


def test_timed_out_before_the_marker_is_in_the_spawn_phase() -> None:
    link = Link(CHILD)
    link.receive_stream(b"python: can't open file\n")
    link.timed_out(5)
    assert link.state == FAILED
    failure = link.failure
    assert failure is not None
    assert (failure.kind, failure.phase) == ("connect", "spawn")
    assert failure.reason == "the interpreter did not start the bootstrap within 5s"
    assert failure.last_lines == ["python: can't open file"]
    assert repr(failure) == (
        "Failed('connect', phase='spawn', 'the interpreter did not start the bootstrap within 5s')"
    )


def test_timed_out_after_the_password_is_in_the_authentication_phase() -> None:
    link = sudo_link()
    link.receive_output(PROMPT)
    link.timed_out(2.5)
    assert link.failure is not None
    assert (link.failure.kind, link.failure.phase) == ("connect", "authentication")


def test_timed_out_after_the_marker_is_in_the_bootstrap_phase() -> None:
    link = Link(CHILD)
    link.receive_stream(MARKER)
    link.timed_out(2.5)
    assert link.failure is not None
    assert link.failure.phase == "bootstrap"
    assert link.failure.reason == "the bootstrap did not complete within 2.5s"


def test_timed_out_after_ready_changes_nothing() -> None:
    link = ready_link()
    link.timed_out(1)
    assert link.state == READY
    assert link.failure is None


def test_gone_after_ready_is_no_failure() -> None:
    link = ready_link()
    link.gone("its process exited with status 0")
    assert link.state == GONE
    assert link.failure is None
    assert link.ready is not None


def test_gone_while_connecting_fails_with_the_reason() -> None:
    link = Link(CHILD)
    link.receive_output(b"bash: python9: command not found\n")
    link.gone("its process exited with status 127")
    assert link.state == GONE
    failure = link.failure
    assert failure is not None
    assert (failure.kind, failure.phase) == ("connect", "spawn")
    assert failure.reason == "its process exited with status 127"
    assert failure.last_lines == ["bash: python9: command not found"]


def test_gone_while_bootstrapping_is_in_the_bootstrap_phase() -> None:
    link = Link(CHILD)
    link.receive_stream(MARKER)
    link.gone("the stream closed")
    assert link.failure is not None
    assert link.failure.phase == "bootstrap"


def test_fail_is_ignored_once_ready() -> None:
    link = ready_link()
    link.fail(PasswordError("late"))
    assert link.state == READY
    assert link.failure is None


@pytest.mark.parametrize(
    ("error", "kind", "phase"),
    [
        (PasswordError("p"), "password", "authentication"),
        (HostKeyError("h"), "hostkey", "host key"),
        (ConnectError("c"), "connect", "spawn"),
    ],
)
def test_fail_takes_kind_and_phase_from_the_error(
    error: ConnectError, kind: str, phase: str
) -> None:
    link = Link(CHILD)
    link.fail(error)
    assert link.failure is not None
    assert (link.failure.kind, link.failure.phase, link.failure.reason) == (
        kind,
        phase,
        str(error),
    )
    assert link.failure.error_class is type(error)


def test_process_and_stream_facts_are_recorded() -> None:
    link = Link(CHILD)
    assert (link.exit_status, link.stream_eof) == (None, False)
    link.process_exited(-9)
    link.stream_closed()
    assert (link.exit_status, link.stream_eof) == (-9, True)
    assert link.state == CONNECTING  # facts alone decide nothing


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (None, "the stream closed"),
        (0, "its process exited with status 0"),
        (3, "its process exited with status 3"),
        (-9, "its process was killed by signal SIGKILL"),
        (-15, "its process was killed by signal SIGTERM"),
        (-200, "its process was killed by signal 200"),
    ],
)
def test_end_reason_says_how_the_process_ended(status: int | None, words: str) -> None:
    link = Link(CHILD)
    if status is not None:
        link.process_exited(status)
    assert link.end_reason("the stream closed") == words


def test_describe_status() -> None:
    assert describe_status(1) == "exited with status 1"
    assert describe_status(-2) == "was killed by signal SIGINT"


# -- error formats --------------------------------------------------------------------------------


def test_connect_failure_format() -> None:
    text = connect_failure(
        "sudo to bob", "sudo.3", "authentication", "the password was refused", ["a", "b"]
    )
    assert text == (
        "sudo to bob: could not start context 'sudo.3' (phase: authentication): "
        "the password was refused; last output:\n    a\n    b"
    )


def test_connect_failure_without_output() -> None:
    text = connect_failure("local", "local.1", "spawn", "no such file", [])
    assert text == (
        "local: could not start context 'local.1' (phase: spawn): no such file; last output:\n"
        "    (it printed nothing)"
    )


def test_failed_error_class_for_every_kind() -> None:
    assert Failed("password", "authentication", "r", []).error_class is PasswordError
    assert Failed("hostkey", "host key", "r", []).error_class is HostKeyError
    assert Failed("connect", "spawn", "r", []).error_class is ConnectError
    assert Failed("no such kind", "spawn", "r", []).error_class is ConnectError


def test_error_kinds_and_classes_are_inverse() -> None:
    assert {ERROR_KINDS[cls]: cls for cls in ERROR_KINDS} == ERROR_CLASSES
    assert set(ERROR_CLASSES) == {"password", "hostkey", "connect"}


def test_a_default_link_has_a_dialog_that_never_answers() -> None:
    link = Link(CHILD)
    assert isinstance(link.dialog, PromptDialog)
    assert link.receive_output(b"Password: ") == ([], b"")
    assert link.state == CONNECTING


def test_grace_times_are_positive() -> None:
    grace = link_module.Grace
    for name in (
        "CALL_FINISH",
        "EXIT",
        "KILL",
        "EXIT_AFTER_EOF",
        "OUTPUT_AFTER_EXIT",
        "LAST_WORDS",
    ):
        assert getattr(grace, name) > 0


@pytest.mark.parametrize(
    ("hexversion", "found"), [(0x020712F0, "2.7.18"), (0x03050AF0, "3.5.10"), (0x030000F0, "3.0.0")]
)
def test_a_child_python_older_than_3_6_fails_naming_both_versions(
    hexversion: int, found: str
) -> None:
    link = Link(CHILD)
    link.receive_stream(b"TMG0 %x\n" % hexversion)
    assert link.state == FAILED
    assert link.failure is not None
    assert link.failure.phase == "bootstrap"
    assert link.failure.error_class is ConnectError
    assert "Python %s" % found in link.failure.reason
    assert "needs Python 3.6 or newer" in link.failure.reason


def test_a_child_of_python_3_6_is_not_refused() -> None:
    link = Link(CHILD)
    link.receive_stream(b"TMG0 30600f0\n" + ready_frame(hexversion=0x030600F0))
    assert list(link.messages()) == []
    assert link.state == READY


# -- hearing the tool out, and ssh's own failures (issue 13, items 3 and 4) -----------------------

CHANGED = b"@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\r\n"
ADVICE = (
    b"Offending ED25519 key in /k/known_hosts:1\r\n"
    b'  remove with:\r\n  ssh-keygen -f "/k/known_hosts" -R "[h]:22"\r\n'
    b"Host key verification failed.\r\n"
)


def test_a_failure_waits_for_the_rest_of_the_terminal() -> None:
    link = Link(CHILD, ssh_dialog("h", None))
    link.receive_output(CHANGED)
    assert link.state == FAILED
    assert not link.last_words_heard  # ssh has more to say: the driver keeps reading
    link.receive_output(ADVICE)
    assert not link.last_words_heard
    assert link.output_closed() == []
    assert link.last_words_heard
    failure = link.failure
    assert failure is not None
    assert failure.kind == "hostkey"
    assert "CHANGED" in failure.reason  # the first matching line decided
    # ... and the lines after it are part of the failure too.
    assert failure.last_lines == [
        CHANGED.decode().strip(),
        "Offending ED25519 key in /k/known_hosts:1",
        "  remove with:",
        '  ssh-keygen -f "/k/known_hosts" -R "[h]:22"',
        "Host key verification failed.",
    ]


def test_a_failure_waits_for_a_bounded_number_of_bytes() -> None:
    link = Link(CHILD, ssh_dialog("h", None))
    link.receive_output(CHANGED)
    chunk = b"more and more\n" * 1000
    sent = 0
    while not link.last_words_heard:
        link.receive_output(chunk)
        sent += len(chunk)
        assert sent <= link_module.LAST_WORDS_BYTES + len(chunk)
    assert link.failure is not None
    assert link.failure.last_lines[-1] == "more and more"


def test_a_driver_may_stop_waiting_for_last_words() -> None:
    link = Link(CHILD, ssh_dialog("h", None))
    link.receive_output(CHANGED)
    link.heard_out()
    assert link.last_words_heard
    assert Link(CHILD).last_words_heard is False  # nothing decided, terminal still open


def test_ssh_giving_up_by_itself_is_a_connect_failure_with_its_words() -> None:
    link = Link(CHILD, ssh_dialog("h", None))
    link.receive_output(
        b"kex_exchange_identification: Connection closed by remote host\r\n"
        b"Connection closed by 127.0.0.1 port 2222\r\n"
    )
    assert link.state == CONNECTING  # no pattern decided: ssh's words are new to the dialog
    link.process_exited(255)
    link.gone(link.end_reason("its stream closed"))
    failure = link.failure
    assert failure is not None
    assert (failure.kind, failure.phase) == ("connect", "connect")
    assert failure.reason == (
        "its process exited with status 255, after it said: "
        "Connection closed by 127.0.0.1 port 2222"
    )


def test_the_remote_commands_status_through_ssh_is_a_spawn_failure() -> None:
    link = Link(CHILD, ssh_dialog("h", None))
    link.receive_output(b"bash: line 1: python9: command not found\n")
    link.process_exited(127)
    link.gone(link.end_reason("its stream closed"))
    assert link.failure is not None
    assert link.failure.phase == "spawn"
    assert link.failure.reason == "its process exited with status 127"


def test_ssh_silent_until_the_timeout_is_still_connecting() -> None:
    link = Link(CHILD, ssh_dialog("h", None))
    link.timed_out(30)
    assert link.failure is not None
    assert link.failure.phase == "connect"
    assert link.failure.reason == (
        "it did not reach the far side and start the interpreter within 30s"
    )
    after_password = Link(CHILD, ssh_dialog("h", "pw"))
    assert after_password.receive_output(b"h's password: ")[1] == b"pw\n"
    after_password.timed_out(30)
    assert after_password.failure is not None
    assert after_password.failure.phase == "authentication"
