"""Checked by ``mypy --strict`` (see ``tests/test_types.py``), never run: open_group's types."""

from __future__ import annotations

from typing import Literal

from typing_extensions import assert_type

import trimitogen as tm


def add(a: int, b: int) -> int:
    return a + b


async def fetch(url: str, *, retries: int = 3) -> bytes:
    return url.encode() * retries


async def uses_groups() -> None:
    target = tm.parse_target("ssh://web1/sudo://root")
    assert_type(target, tm.Target)
    assert_type(str(target), str)
    async with tm.open_group([target, "local://", tm.local()], max_connecting=4) as group:
        assert_type(group, tm.Group)
        results = await group.call(add, 1, 2)
        assert_type(results, list[tm.Result[int]])
        assert_type(results[0].value, int | None)
        assert_type(results[0].unwrap(), int)
        assert_type(results[0].phase, Literal["connect", "call", "cancelled"] | None)
        async for fetched in group.results(fetch, "x", retries=2):
            assert_type(fetched, tm.Result[bytes])
            assert_type(fetched.connect_seconds, float | None)
        assert_type(group.statistics(), tm.GroupStatistics)

        await group.call(add, 1, "2")  # type: ignore[call-overload]
        group.results(fetch, 1)  # type: ignore[call-overload]
    async with tm.open_chain(target, connect_timeout=5.0) as ctx:
        assert_type(ctx, tm.Context)
