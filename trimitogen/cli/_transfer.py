"""``trimitogen put`` and ``trimitogen get``: files and trees to and from many targets at once.

Each target's transfer runs as soon as its context is up (:meth:`trimitogen.Group.each`).
Progress is a bar per target with bytes and speed on a terminal, a line per finished target
otherwise; the summary is a table, or one JSON object per target.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from typing import Any, TextIO

import trimitogen as tm

from ._output import Reporter, describe_failure, first_line, seconds


class TransferReporter(Reporter):
    """Bytes moved per target, while they move; a table at the end."""

    def __init__(self, stdout: TextIO, stderr: TextIO, *, as_json: bool, progress: str) -> None:
        super().__init__(stdout, stderr, as_json=as_json, progress=progress)
        self._tasks: dict[str, Any] = {}

    def start(self, title: str, total: int) -> None:
        self.total = total
        if self.mode != "live":
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._live = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=self.stderr),
        )
        self._live.start()
        self._live.console.print(title, markup=False, highlight=False)

    def progress(self, label: str) -> Callable[[int, int], None]:
        """The progress callback of ``label``'s transfer."""

        def update(done: int, total: int) -> None:
            if self._live is None:
                return
            task = self._tasks.get(label)
            if task is None:
                task = self._tasks[label] = self._live.add_task(label, total=total)
            self._live.update(task, completed=done, total=total)

        return update

    def result(self, result: tm.Result[int], verb: str) -> None:
        self.count += 1
        label = result.target.label
        if result.ok:
            moved = result.value or 0
            text = "%s: %s %s in %s%s" % (
                label,
                verb,
                _size(moved),
                seconds(result.call_seconds),
                _rate(moved, result.call_seconds),
            )
        else:
            error = first_line(str(result.error))
            text = "%s: %s: %s" % (label, describe_failure(result), error)
        if self._live is not None:
            style = None if result.ok else "red"
            self._live.console.print(text, style=style, markup=False, highlight=False)
        elif self.mode == "lines":
            print("[%d/%d] %s" % (self.count, self.total, text), file=self.stderr, flush=True)

    def finish_transfers(self, rows: list[dict[str, Any]]) -> None:
        self.finish(rows, kind="transfer", table=transfer_table)


def transfer_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    cells = []
    for row in rows:
        if row["ok"]:
            status, path = "ok", row["path"]
        else:
            status = "FAILED (%s)" % row["phase"]
            path = "%s: %s" % (row["error_type"], first_line(row["error"]))
        size = _size(row["bytes"]) if row["ok"] else "-"
        rate = _rate(row["bytes"], row["seconds"]).strip(" ()") or "-"
        cells.append([row["target"], status, size, seconds(row["seconds"]), rate, path])
    return ["TARGET", "STATUS", "BYTES", "TIME", "RATE", "PATH"], cells


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return "%.1f %s" % (n / scale, unit)
    return "%d B" % n


def _rate(n: int | None, elapsed: float | None) -> str:
    if not n or not elapsed:
        return ""
    return " (%.1f MB/s)" % (n / elapsed / 1e6)


def local_target(local: str, label: str, several: bool) -> str:
    """Where ``get`` writes: ``local`` itself for one target; ``local/LABEL/`` for several,
    with every character of the label but letters, digits, ``.``, ``_`` and ``-`` made ``_``."""
    if not several:
        return local
    return os.path.join(local, re.sub(r"[^A-Za-z0-9._-]", "_", label).strip("._") or "target")


async def transfer(
    options: argparse.Namespace,
    reporter: TransferReporter,
    targets: list[tm.Target],
    group_opener: Any,
) -> bool:
    """Run ``put`` or ``get`` (``options.command``) on ``targets``; True if all succeeded."""
    source, destination = options.paths
    putting = options.command == "put"
    several = len(targets) > 1
    if putting and not os.path.exists(source):
        raise FileNotFoundError("no such local file or directory: %s" % source)
    tree = options.recursive or (putting and os.path.isdir(source))
    if not putting and several:
        os.makedirs(destination, exist_ok=True)
    where: dict[str, str] = {}

    async def one(ctx: tm.Context, label: str) -> int:
        progress = reporter.progress(label)
        if putting:
            where[label] = destination
            if tree:
                result = await ctx.put_tree(source, destination, progress=progress)
                return sum(os.path.getsize(os.path.join(source, p)) for p in result.copied)
            return await ctx.put_file(source, destination, mode=options.mode, progress=progress)
        local = local_target(destination, label, several)
        if tree:
            where[label] = local
            result = await ctx.get_tree(source, local, progress=progress)
            return sum(os.path.getsize(os.path.join(local, p)) for p in result.copied)
        if several:
            os.makedirs(local, exist_ok=True)
        if os.path.isdir(local):
            local = os.path.join(local, os.path.basename(source.rstrip("/")))
        where[label] = local
        return await ctx.get_file(source, local, mode=options.mode, progress=progress)

    verb = "sent" if putting else "received"
    reporter.start("%s %s %s" % (options.command, source, destination), len(targets))
    rows = []
    async with group_opener(options, targets) as group:
        async for result in group.each(lambda ctx, target: one(ctx, target.label)):
            reporter.result(result, verb)
            rows.append(_row(result, where.get(result.target.label)))
    order = {target.label: n for n, target in enumerate(targets)}
    rows.sort(key=lambda row: order.get(row["target"], len(order)))
    reporter.finish_transfers(rows)
    return all(row["ok"] for row in rows)


def _row(result: tm.Result[int], path: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "target": result.target.label,
        "target_string": str(result.target),
        "ok": result.ok,
        "bytes": result.value if result.ok else None,
        "seconds": None if result.call_seconds is None else round(result.call_seconds, 6),
        "path": path,
    }
    if result.ok:
        row.update(phase=None, error=None, error_type=None)
    else:
        row.update(
            phase=result.phase, error=str(result.error), error_type=type(result.error).__name__
        )
    return row
