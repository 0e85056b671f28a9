"""Trio coroutine functions the cancellation tests call in child contexts.

The module uses Trio, so its coroutine functions run under Trio in a child unless marked.  The
child imports its own Trio, or receives the master's over the wire.
"""

from __future__ import annotations

import asyncio

import trio

import trimitogen
from tests.cancel_helpers import EVENTS


async def trio_sleep(seconds: float, tag: str) -> str:
    try:
        await trio.sleep(seconds)
    except trio.Cancelled:
        EVENTS.append("trio cancelled " + tag)
        raise
    EVENTS.append("trio finished " + tag)
    return tag


async def which_library() -> str:
    import sniffio

    return sniffio.current_async_library()


async def on_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


async def trio_origin() -> str:
    return trio.__file__ or ""


@trimitogen.event_loop("asyncio")
async def marked_asyncio() -> str:
    await asyncio.sleep(0)
    return asyncio.get_running_loop().__class__.__name__
