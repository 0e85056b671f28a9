"""What the command prints: progress on stderr, then a table or JSON lines on stdout."""

from __future__ import annotations

import json
from typing import Any, TextIO

import trimitogen as tm


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 0.01:
        return "%.2f ms" % (value * 1000)
    return "%.3f s" % value


def first_line(text: str | None) -> str:
    return (text or "").splitlines()[0] if text else ""


def describe_failure(result: tm.Result[Any]) -> str:
    """``connect failed at hop 2 (sudo)``, ``call failed``, ``cancelled``."""
    if result.phase == "connect" and result.hop is not None:
        kind = result.target.hops[result.hop - 1].kind
        return "connect failed at hop %d (%s)" % (result.hop, kind)
    if result.phase == "call":
        return "call failed"
    return str(result.phase)


class Reporter:
    """Progress while targets answer; the summary at the end."""

    def __init__(self, stdout: TextIO, stderr: TextIO, *, as_json: bool, progress: str) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.as_json = as_json
        if progress == "auto":
            progress = "live" if stderr.isatty() else "lines"
        self.mode = progress
        self.total = 0
        self.count = 0
        self.failures = 0
        self._live: Any = None
        self._task: Any = None

    def start(self, title: str, total: int) -> None:
        self.total = total
        if self.mode == "live":
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self._live = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(file=self.stderr),
                transient=True,
            )
            self._live.start()
            self._task = self._live.add_task(title, total=total)

    def _advance(self) -> None:
        self.count += 1
        if self._live is not None:
            failed = " [red]%d failed[/red]" % self.failures if self.failures else ""
            self._live.update(self._task, advance=1, description="answered%s" % failed)

    def done(self, result: tm.Result[Any]) -> None:
        self._advance()
        if self.mode == "lines":
            print(
                "[%d/%d] %s: ok in %s"
                % (self.count, self.total, result.target.label, seconds(_elapsed(result))),
                file=self.stderr,
                flush=True,
            )

    def failed(self, result: tm.Result[Any]) -> None:
        self.failures += 1
        self._advance()
        text = "%s: %s: %s" % (result.target.label, describe_failure(result), result.error)
        if self._live is not None:
            self._live.console.print(text, style="red", markup=False, highlight=False)
        elif self.mode == "lines":
            print("[%d/%d] %s" % (self.count, self.total, text), file=self.stderr, flush=True)

    def finish(self, rows: list[dict[str, Any]], *, kind: str, table: Any = None) -> None:
        """Print ``rows``: JSON lines, or the table of ``kind`` (or ``table(rows)``)."""
        if self._live is not None:
            self._live.stop()
        if self.as_json:
            for row in rows:
                print(json.dumps(row, default=repr), file=self.stdout)
        else:
            if table is None:
                table = check_table if kind == "check" else run_table
            headers, cells = table(rows)
            self._table(headers, cells)
        failed = sum(1 for row in rows if not row["ok"])
        summary = "%d ok, %d failed" % (len(rows) - failed, failed)
        print(summary, file=self.stderr if self.as_json else self.stdout, flush=True)

    def _table(self, headers: list[str], cells: list[list[str]]) -> None:
        if self.stdout.isatty():
            from rich.console import Console
            from rich.table import Table

            table = Table(*headers)
            for row in cells:
                table.add_row(*row)
            Console(file=self.stdout).print(table)
            return
        widths = [max(len(h), *(len(r[n]) for r in cells)) for n, h in enumerate(headers)]
        for row in [headers, *cells]:
            line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            print(line.rstrip(), file=self.stdout)


def _elapsed(result: tm.Result[Any]) -> float | None:
    parts = [s for s in (result.connect_seconds, result.call_seconds) if s is not None]
    return sum(parts) if parts else None


def run_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    cells = []
    for row in rows:
        if row["ok"]:
            status, shown = "ok", repr(row["value"])
        else:
            status = "FAILED (%s)" % row["phase"]
            shown = "%s: %s" % (row["error_type"], first_line(row["error"]))
        cells.append(
            [
                row["target"],
                status,
                seconds(row["connect_seconds"]),
                seconds(row["call_seconds"]),
                shown,
            ]
        )
    return ["TARGET", "STATUS", "CONNECT", "CALL", "RESULT"], cells


def check_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    cells = []
    for row in rows:
        hops = " + ".join(
            "%s %s" % (kind, seconds(value))
            for kind, value in zip(row["hops"], row["hop_seconds"], strict=False)
        )
        if row["ok"]:
            status = "ok"
            python = "%s %s" % (row["python"], row["executable"])
        else:
            status = "FAILED (%s)" % row["phase"]
            python = "%s: %s" % (row["error_type"], first_line(row["error"]))
        cells.append(
            [
                row["target"],
                status,
                hops,
                seconds(row["first_call_seconds"]),
                seconds(row["round_trip_seconds"]),
                python,
            ]
        )
    headers = ["TARGET", "STATUS", "START-UP", "FIRST CALL", "ROUND TRIP", "PYTHON"]
    return headers, cells
