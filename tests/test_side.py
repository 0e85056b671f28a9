"""io_op, Side on pipes, sockets and ptys, and the Trio fd helpers iter_read and write_all."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import select
import socket
import struct
import time
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import NoReturn

import pytest
import trio
import trio.testing

import trimitogen
from trimitogen import Side, io_op

#: Upper bound on any single wait in these tests; reaching it means the test failed.
PATIENCE = 30.0


class OpenFds:
    """The fds a test opened; whatever the test did not close is closed at teardown."""

    def __init__(self) -> None:
        self.fds: set[int] = set()

    def add(self, *fds: int) -> tuple[int, ...]:
        self.fds.update(fds)
        return fds

    def pipe(self) -> tuple[int, int]:
        r, w = os.pipe()
        self.add(r, w)
        return r, w

    def socketpair(self) -> tuple[int, int]:
        a, b = socket.socketpair()
        fds = a.detach(), b.detach()
        self.add(*fds)
        return fds

    def openpty(self) -> tuple[int, int]:
        master, slave = os.openpty()
        self.add(master, slave)
        return master, slave

    def close(self, fd: int) -> None:
        self.fds.remove(fd)
        os.close(fd)

    def close_side(self, side: Side) -> None:
        """Close ``side`` (through Side.close) and forget its fd."""
        self.fds.remove(side.fileno())
        side.close()

    def close_all(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


@pytest.fixture
def fds(no_leaked_fds: None) -> Iterator[OpenFds]:
    opened = OpenFds()
    try:
        yield opened
    finally:
        opened.close_all()


def is_nonblocking(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK)


def wait_readable(fd: int) -> None:
    ready, _, _ = select.select([fd], [], [], PATIENCE)
    assert ready, "fd %d never became readable" % fd


def read_until_disconnected(side: Side) -> bytes:
    """Everything ``side`` reads until it reports disconnection (``b""``)."""
    received = b""
    while True:
        wait_readable(side.fileno())
        data = side.read()
        if not data:
            return received
        received += data


def fill(side: Side) -> int:
    """Write to ``side`` until it would block; the count written."""
    total = 0
    chunk = b"x" * 65536
    while True:
        try:
            n = side.write(chunk)
        except BlockingIOError:
            return total
        assert n is not None
        total += n


# --- io_op -------------------------------------------------------------------------------------


def test_io_op_returns_the_result() -> None:
    assert io_op(divmod, 7, 2) == ((3, 1), False)


def test_io_op_retries_eintr() -> None:
    calls: list[int] = []

    def interrupted_twice(x: int) -> int:
        calls.append(x)
        if len(calls) < 3:
            raise OSError(errno.EINTR, os.strerror(errno.EINTR))
        return x * 2

    assert io_op(interrupted_twice, 21) == (42, False)
    assert calls == [21, 21, 21]


@pytest.mark.parametrize("code", [errno.EPIPE, errno.ECONNRESET, errno.EIO])
def test_io_op_reports_disconnection(code: int) -> None:
    def disconnected() -> NoReturn:
        raise OSError(code, os.strerror(code))

    assert io_op(disconnected) == (None, True)


@pytest.mark.parametrize(
    "code", [errno.EBADF, errno.ENOENT, errno.EAGAIN, errno.EINVAL, errno.ENOSPC]
)
def test_io_op_raises_other_errors(code: int) -> None:
    def failing() -> NoReturn:
        raise OSError(code, os.strerror(code))

    with pytest.raises(OSError, match=re.escape(os.strerror(code))) as info:
        io_op(failing)
    assert info.value.errno == code


def test_io_op_lets_non_os_errors_through() -> None:
    def failing() -> NoReturn:
        raise ValueError("not an OSError")

    with pytest.raises(ValueError, match="not an OSError"):
        io_op(failing)


def test_io_op_on_real_fds(fds: OpenFds) -> None:
    r, w = fds.pipe()
    assert io_op(os.write, w, b"abc") == (3, False)
    assert io_op(os.read, r, 10) == (b"abc", False)
    fds.close(r)
    assert io_op(os.write, w, b"abc") == (None, True)
    with pytest.raises(OSError, match="Bad file descriptor") as info:
        io_op(os.read, w, 1)  # the write end of a pipe cannot be read: EBADF
    assert info.value.errno == errno.EBADF


# --- Side --------------------------------------------------------------------------------------


def test_side_sets_nonblocking(fds: OpenFds) -> None:
    r, w = fds.pipe()
    assert not is_nonblocking(r)
    side = Side(None, r)
    assert is_nonblocking(r)
    assert not is_nonblocking(w)
    assert side.fileno() == r
    assert not side.closed
    Side(None, r)  # already non-blocking: no change, no error
    assert is_nonblocking(r)


def test_side_attributes(fds: OpenFds) -> None:
    r, _ = fds.pipe()
    owner = object()
    side = Side(owner, r, keep_alive=False)
    assert side.stream is owner
    assert not side.keep_alive
    assert Side(owner, r).keep_alive
    assert "fd=%d" % r in repr(side)


def test_side_close(fds: OpenFds) -> None:
    r, _ = fds.pipe()
    side = Side(None, r)
    fds.close_side(side)
    assert side.closed
    with pytest.raises(OSError, match="Bad file descriptor") as info:
        os.fstat(r)
    assert info.value.errno == errno.EBADF
    side.close()  # idempotent
    assert side.closed
    with pytest.raises(trimitogen.StreamError):
        side.fileno()
    for op in (side.read, lambda: side.write(b"x"), lambda: side.readinto(bytearray(1))):
        with pytest.raises(trimitogen.StreamError):
            op()


def test_side_on_a_pipe(fds: OpenFds) -> None:
    r, w = fds.pipe()
    reader, writer = Side(None, r), Side(None, w)
    with pytest.raises(BlockingIOError):
        reader.read()
    assert writer.write(b"hello") == 5
    assert writer.writev([b" ", memoryview(b"world")]) == 6
    assert reader.read(5) == b"hello"
    buffer = bytearray(10)
    assert reader.readinto(buffer) == 6
    assert buffer[:6] == b" world"
    assert fill(writer) > 0
    with pytest.raises(BlockingIOError):
        writer.write(b"x")
    while True:  # drain, so the end of file is seen next
        try:
            reader.read()
        except BlockingIOError:
            break
    fds.close_side(writer)
    assert reader.read() == b""
    assert reader.readinto(buffer) == 0


def test_side_write_to_a_pipe_without_reader(fds: OpenFds) -> None:
    r, w = fds.pipe()
    writer = Side(None, w)
    fds.close(r)
    assert writer.write(b"data") is None
    assert writer.writev([b"da", b"ta"]) is None


def test_side_on_a_socketpair(fds: OpenFds) -> None:
    a, b = fds.socketpair()
    left, right = Side(None, a), Side(None, b)
    assert is_nonblocking(a)
    assert is_nonblocking(b)
    assert left.write(b"ping") == 4
    assert right.read() == b"ping"
    assert right.writev([b"po", b"ng"]) == 4
    buffer = bytearray(4)
    assert left.readinto(buffer) == 4
    assert buffer == b"pong"
    with pytest.raises(BlockingIOError):
        left.read()
    assert fill(left) > 0
    fds.close_side(right)
    assert left.read() == b""
    assert left.write(b"x") is None


def reset_connection(fds: OpenFds) -> int:
    """The fd of a loopback TCP connection whose peer has reset it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname(), timeout=PATIENCE)
        (fd,) = fds.add(client.detach())
        server, _ = listener.accept()
        with server:
            # Closing with a zero linger time sends a reset instead of an orderly end of stream.
            server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    wait_readable(fd)
    return fd


def test_a_reset_connection_raises_econnreset(fds: OpenFds) -> None:
    # The premise of the next test: reading a reset connection fails with ECONNRESET.
    with pytest.raises(ConnectionResetError):
        os.read(reset_connection(fds), 1)


def test_side_reports_a_connection_reset(fds: OpenFds) -> None:
    assert Side(None, reset_connection(fds)).read() == b""
    assert Side(None, reset_connection(fds)).readinto(bytearray(1)) == 0
    assert Side(None, reset_connection(fds)).write(b"x") is None


def test_side_on_a_pty_master(fds: OpenFds) -> None:
    master, slave = fds.openpty()
    side = Side(None, master)
    assert is_nonblocking(master)
    with pytest.raises(BlockingIOError):
        side.read()
    os.write(slave, b"from the slave")
    received = b""
    while len(received) < len(b"from the slave"):
        wait_readable(master)
        received += side.read()
    assert received == b"from the slave"
    fds.close(slave)
    with pytest.raises(OSError, match="Input/output error") as info:
        os.read(master, 1)  # what Side turns into a disconnection
    assert info.value.errno == errno.EIO
    assert side.read() == b""
    assert side.readinto(bytearray(4)) == 0


def test_side_on_a_pty_master_reads_what_was_written_before_the_slave_closed(
    fds: OpenFds,
) -> None:
    master, slave = fds.openpty()
    side = Side(None, master)
    os.write(slave, b"last words")
    fds.close(slave)
    assert read_until_disconnected(side) == b"last words"


def test_side_writes_to_a_pty_master(fds: OpenFds) -> None:
    master, slave = fds.openpty()
    side = Side(None, master)
    assert side.write(b"typed\n") == 6
    wait_readable(slave)
    assert os.read(slave, 100) == b"typed\n"


# --- iter_read and write_all -------------------------------------------------------------------


def read_chunks(fd: int, deadline: float | None = None) -> aclosing[AsyncGenerator[bytes, None]]:
    """iter_read, closed when the block ends."""
    return aclosing(trimitogen.iter_read(fd, deadline))


async def collect(
    fd: int,
    deadline: float | None = None,
    until: int | None = None,
    into: list[bytes] | None = None,
) -> bytes:
    """Chunks from iter_read (appended to ``into`` as they come) joined; stops after ``until``
    bytes, or raises what iter_read raises."""
    chunks = [] if into is None else into
    async with read_chunks(fd, deadline) as reader:
        async for chunk in reader:
            assert chunk
            chunks.append(chunk)
            if until is not None and sum(map(len, chunks)) >= until:
                break
    return b"".join(chunks)


async def test_iter_read_yields_chunks_as_they_arrive(
    fds: OpenFds, autojump_clock: trio.testing.MockClock
) -> None:
    r, w = fds.pipe()
    chunks: list[bytes] = []
    with trio.fail_after(PATIENCE):
        async with read_chunks(r) as reader:
            for word in (b"one", b"two", b"three"):
                os.write(w, word)
                chunks.append(await reader.__anext__())
    assert chunks == [b"one", b"two", b"three"]
    assert is_nonblocking(r)


async def test_iter_read_chunks_are_at_most_4096_bytes(fds: OpenFds) -> None:
    r, w = fds.pipe()
    data = bytes(range(256)) * 40
    os.write(w, data)
    fds.close(w)
    received: list[bytes] = []
    with trio.fail_after(PATIENCE), pytest.raises(trimitogen.StreamError):
        await collect(r, into=received)
    assert b"".join(received) == data
    assert all(0 < len(chunk) <= 4096 for chunk in received)


async def test_iter_read_raises_stream_error_at_end_of_file(fds: OpenFds) -> None:
    r, w = fds.pipe()
    fds.close(w)
    with trio.fail_after(PATIENCE), pytest.raises(trimitogen.StreamError):
        await collect(r)


async def test_iter_read_raises_stream_error_when_a_pty_slave_closes(fds: OpenFds) -> None:
    master, slave = fds.openpty()
    os.write(slave, b"bye")
    fds.close(slave)
    received: list[bytes] = []
    with trio.fail_after(PATIENCE), pytest.raises(trimitogen.StreamError):
        await collect(master, into=received)
    assert b"".join(received) == b"bye"


async def test_iter_read_waits_for_a_later_writer(
    fds: OpenFds, autojump_clock: trio.testing.MockClock
) -> None:
    r, w = fds.pipe()

    async def write_later() -> None:
        await trio.sleep(10)
        os.write(w, b"late")
        fds.close(w)

    with trio.fail_after(PATIENCE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_later)
            assert await collect(r, until=4) == b"late"


async def test_iter_read_times_out(fds: OpenFds, autojump_clock: trio.testing.MockClock) -> None:
    r, _ = fds.pipe()
    with trio.fail_after(PATIENCE), pytest.raises(trimitogen.TimeoutError) as info:
        await collect(r, deadline=time.time() + 5)
    assert isinstance(info.value, TimeoutError)


async def test_iter_read_deadline_in_the_past_still_yields_what_is_there(
    fds: OpenFds, autojump_clock: trio.testing.MockClock
) -> None:
    r, w = fds.pipe()
    os.write(w, b"ready")
    received: list[bytes] = []
    with trio.fail_after(PATIENCE), pytest.raises(trimitogen.TimeoutError):
        await collect(r, time.time() - 1, into=received)
    assert received == [b"ready"]


async def test_iter_read_deadline_is_absolute(
    fds: OpenFds, autojump_clock: trio.testing.MockClock
) -> None:
    # A chunk arrives every second for ever; a per-wait timeout would never expire, the absolute
    # deadline between the third and the fourth chunk does.
    r, w = fds.pipe()
    received: list[bytes] = []

    async def trickle() -> None:
        while True:
            await trio.sleep(1)
            os.write(w, b".")

    with trio.fail_after(PATIENCE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            with pytest.raises(trimitogen.TimeoutError):
                await collect(r, time.time() + 3.5, into=received)
            nursery.cancel_scope.cancel()
    assert received == [b".", b".", b"."]


async def test_write_all_writes_everything(fds: OpenFds) -> None:
    r, w = fds.pipe()
    data = bytes(range(256)) * 4096  # 1 MiB, far more than the pipe holds
    received = b""

    async def read_all() -> None:
        nonlocal received
        received = await collect(r, until=len(data))

    with trio.fail_after(PATIENCE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            await trimitogen.write_all(w, data)
    assert received == data
    assert is_nonblocking(w)


async def test_write_all_of_nothing(fds: OpenFds) -> None:
    _, w = fds.pipe()
    with trio.fail_after(PATIENCE):
        await trimitogen.write_all(w, b"")


async def test_write_all_to_a_socket(fds: OpenFds) -> None:
    a, b = fds.socketpair()
    with trio.fail_after(PATIENCE):
        await trimitogen.write_all(a, b"over a socket")
        assert await collect(b, until=13) == b"over a socket"


async def test_write_all_times_out(fds: OpenFds, autojump_clock: trio.testing.MockClock) -> None:
    _, w = fds.pipe()
    with trio.fail_after(PATIENCE), pytest.raises(trimitogen.TimeoutError) as info:
        await trimitogen.write_all(w, b"x" * (4 << 20), deadline=time.time() + 5)
    assert isinstance(info.value, TimeoutError)


async def test_write_all_raises_stream_error_without_reader(fds: OpenFds) -> None:
    r, w = fds.pipe()
    fds.close(r)
    with trio.fail_after(PATIENCE), pytest.raises(trimitogen.StreamError):
        await trimitogen.write_all(w, b"data")


async def test_write_all_raises_stream_error_when_the_reader_goes_away(
    fds: OpenFds, autojump_clock: trio.testing.MockClock
) -> None:
    r, w = fds.pipe()

    async def close_reader_later() -> None:
        await trio.sleep(5)
        fds.close(r)

    with trio.fail_after(PATIENCE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(close_reader_later)
            with pytest.raises(trimitogen.StreamError):
                await trimitogen.write_all(w, b"x" * (4 << 20))


async def test_write_all_raises_stream_error_when_a_socket_peer_closes(fds: OpenFds) -> None:
    a, b = fds.socketpair()
    fds.close(b)
    with trio.fail_after(PATIENCE), pytest.raises(trimitogen.StreamError):
        await trimitogen.write_all(a, b"data")


async def test_write_all_honours_cancellation(
    fds: OpenFds, autojump_clock: trio.testing.MockClock
) -> None:
    _, w = fds.pipe()
    with trio.move_on_after(5) as scope:
        await trimitogen.write_all(w, b"x" * (4 << 20))
    assert scope.cancelled_caught


async def test_deadlines_are_unix_timestamps_on_the_real_clock(fds: OpenFds) -> None:
    # The contract's deadline is time.time() based: one a fraction of a second from now must
    # end both a write into a full pipe and a read from a silent one, on Trio's real clock.
    _, w = fds.pipe()
    r, _ = fds.pipe()
    with trio.fail_after(PATIENCE):
        with pytest.raises(trimitogen.TimeoutError):
            await trimitogen.write_all(w, b"x" * (4 << 20), deadline=time.time() + 0.3)
        with pytest.raises(trimitogen.TimeoutError):
            await collect(r, deadline=time.time() + 0.3)


def test_widen_pipe_grows_a_pipe_and_leaves_other_fds_alone(tmp_path: Path) -> None:
    from trimitogen.core.side import PIPE_SIZE, widen_pipe

    get_size = 1032  # F_GETPIPE_SZ
    limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    r, w = os.pipe()
    try:
        before = fcntl.fcntl(w, get_size)
        widen_pipe(w)
        assert fcntl.fcntl(w, get_size) == max(before, min(PIPE_SIZE, limit))
        assert fcntl.fcntl(r, get_size) == fcntl.fcntl(w, get_size)  # one pipe, both ends
    finally:
        os.close(r)
        os.close(w)
    a, b = socket.socketpair()
    with a, b, open(tmp_path / "file", "wb") as f:
        widen_pipe(a.fileno())  # not a pipe: nothing happens, nothing is raised
        widen_pipe(f.fileno())
