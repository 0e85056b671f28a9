"""Answers to a context's requests for modules and package data (GET_MODULE, GET_RESOURCE).

The responder (:mod:`._responder`) decides what may be sent; this module frames its answer for
the connection and keeps the context's :class:`~trimitogen.ImportStats`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import TYPE_CHECKING, Any

from ._route import Route
from .core.errors import ChannelError, StreamError
from .core.messages import GetModule, GetResource, LoadModule, LoadResource
from .core.protocol import HANDLE_LOAD_MODULE, HANDLE_LOAD_RESOURCE, MASTER_ID, Message
from .core.resources import refused

if TYPE_CHECKING:
    from ._connection import Connection


def answer_module(conn: Connection, route: Route, msg: Message) -> None:
    """A context asked for a module: answer with the responder's records."""
    try:
        name = GetModule.decode(msg.data).name
    except StreamError as exc:
        conn.logger.warning("dropped a malformed module request from %d: %s", msg.src, exc)
        return
    if conn.responder is None:
        records: list[Any] = [(name, False, "", False, b"", b"", "no module responder")]
        seconds = 0.0
    else:
        records, seconds = conn.responder.answer(
            name,
            route.module_policy,
            route.modules_sent,
            with_code=route.magic == importlib.util.MAGIC_NUMBER,
        )
    body = LoadModule.pack(records)
    stats = route.import_stats
    route.import_stats = dataclasses.replace(
        stats,
        requests=stats.requests + 1,
        modules_sent=stats.modules_sent + sum(1 for r in records if r[1]),
        bytes_sent=stats.bytes_sent + len(body),
        seconds=stats.seconds + seconds,
    )
    conn.logger.debug("sent %d module records for %r", len(records), name)
    try:
        conn.send(Message(msg.src, MASTER_ID, HANDLE_LOAD_MODULE, 0, body))
    except ChannelError:
        pass


def answer_resource(conn: Connection, route: Route, msg: Message) -> None:
    """A context asked for package data: answer with the file, a listing, or a refusal."""
    try:
        request = GetResource.decode(msg.data)
    except StreamError as exc:
        conn.logger.warning("dropped a malformed resource request from %d: %s", msg.src, exc)
        return
    if conn.responder is None:
        answer = refused(request.package, request.path, "no module responder")
        seconds = 0.0
    else:
        answer, seconds = conn.responder.resource(
            request.package, request.path, route.module_policy, route.modules_sent
        )
    body = LoadResource.pack(*answer)
    stats = route.import_stats
    route.import_stats = dataclasses.replace(
        stats,
        resources_sent=stats.resources_sent + (answer[2] == "file"),
        resource_bytes_sent=stats.resource_bytes_sent + len(body),
        seconds=stats.seconds + seconds,
    )
    if answer[2] == "refused":
        conn.logger.warning(
            "refused package data %r of %r to context %d (%r): %s",
            request.path,
            request.package,
            msg.src,
            route.name,
            answer[5],
        )
    try:
        conn.send(Message(msg.src, MASTER_ID, HANDLE_LOAD_RESOURCE, 0, body))
    except ChannelError:
        pass
