"""Heavy traffic both ways through an intermediate at once must not stall either side."""

from __future__ import annotations

import trio

import trimitogen as tm
from tests import remote_helpers as rh
from tests.conftest import WAIT


async def test_big_message_down_while_output_floods_up(no_leaked_fds: None) -> None:
    # The intermediate's I/O thread writes a 50 MB argument down to the child while the child's
    # I/O thread forwards megabytes of output up: each waits for the other to read.
    with trio.fail_after(WAIT * 2):
        async with (
            tm.open_context(tm.local(), name="upper") as upper,
            tm.open_context(tm.local(), via=upper, name="lower") as lower,
        ):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lower.call, rh.print_many, 500_000)
                await trio.sleep(0.5)
                assert await lower.call(len, b"x" * 50_000_000) == 50_000_000
            assert await lower.call(rh.echo, "after") == "after"
