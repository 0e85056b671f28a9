"""The ``trimitogen`` command: ``check`` and ``run`` on many targets.

It uses only the public API of :mod:`trimitogen`.  Progress goes to stderr (a live display on a
terminal, one line per target otherwise); the table, or one JSON object per target with
``--json``, goes to stdout.  The exit status is 0 only when every target succeeded, 1 when any
failed, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import math
import os
import statistics
import sys
import textwrap
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TextIO

import trio

import trimitogen as tm

from ._output import Reporter

USAGE_ERROR = 2
DEFAULT_MAX_CONNECTING = 64
#: No-op calls per target that ``check`` times; it reports their median.
ROUND_TRIPS = 5

DESCRIPTION = """\
Run Python functions on many machines, users and interpreters at once, with nothing
installed on the far side but Python.  A TARGET is a target string such as web1,
ssh://deploy@web1:2222/sudo://root or local:///usr/bin/python3.11; an inventory
(-i) is an Ansible INI or YAML inventory or a file of target strings, one a line."""

TARGET_HELP = """\
targets: ssh://[user@]host[:port] (or just host), local://[python], sudo://[user],
su://[user], fork://, joined with / into chains, outermost first; options as query
parameters, e.g. ssh://web1?python=/usr/bin/python3&check_host_keys=accept"""


class UsageError(Exception):
    """A mistake on the command line: reported on stderr with exit status 2."""


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-i",
        "--inventory",
        action="append",
        default=[],
        metavar="INVENTORY",
        help="an inventory file (Ansible INI or YAML, or one target string a line); repeatable",
    )
    parser.add_argument(
        "-l",
        "--limit",
        metavar="PATTERN",
        help="which inventory hosts, as Ansible's --limit: web*, web:&staging, all:!db1 "
        "(default: all)",
    )
    parser.add_argument(
        "--max-connecting",
        type=int,
        default=DEFAULT_MAX_CONNECTING,
        metavar="N",
        help="at most N connections being set up at once (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="time each hop may take to start (default: %(default)s)",
    )
    parser.add_argument(
        "--python",
        metavar="PATH",
        help="the interpreter on the targets, for every hop that does not name one",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per target (one a line) instead of a table",
    )
    parser.add_argument(
        "--fail-fast",
        action="store_true",
        help="stop every other target once one fails",
    )
    parser.add_argument(
        "--progress",
        choices=("auto", "live", "lines", "none"),
        default="auto",
        help="progress on stderr: a live display, a line per target, or none "
        "(default: live on a terminal, else lines)",
    )


def _fill(text: str) -> str:
    return textwrap.fill(text, 78)


def _command(
    commands: Any, name: str, summary: str, description: str, usage: str | None = None
) -> argparse.ArgumentParser:
    """A subcommand taking target strings, with its help texts."""
    command: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        usage=usage,
        description=_fill(description),
        epilog=TARGET_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument("targets", nargs="*", metavar="TARGET", help="target strings")
    return command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trimitogen",
        description=DESCRIPTION,
        epilog=TARGET_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version="trimitogen " + tm.__version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    check = _command(
        commands,
        "check",
        "connect to each target and report its Python and timings",
        "Connect to each target and print the remote Python's version and path, "
        "the start-up time of each hop, the first call and the median round trip of %d no-op "
        "calls.  Exit status 1 if any target failed." % ROUND_TRIPS,
    )
    _add_common(check)
    run = _command(
        commands,
        "run",
        "run a function on every target",
        "Run module:function(ARG, ...) on every target and print what each returned.  "
        "The function is imported on this machine (the current directory is on the path) "
        "and sent to the targets with the modules it needs.  Each ARG is a Python literal "
        "(1, 'text', [1, 2], {'k': None}; a word that is no literal, such as /tmp, is a "
        "string), or NAME=LITERAL for a keyword argument.  Exit status 1 if any target failed.",
        usage="trimitogen run [options] [TARGET ...] -- module:function [ARG ...]",
    )
    _add_common(run)
    for name, order, text in (
        ("put", "LOCAL REMOTE", "Copy the local file LOCAL to REMOTE on every target"),
        (
            "get",
            "REMOTE LOCAL",
            "Copy REMOTE from every target to LOCAL (with several "
            "targets, LOCAL is a directory: each target's copy goes in LOCAL/TARGET/)",
        ),
    ):
        command = _command(
            commands,
            name,
            "copy a file or tree %s the targets" % ("to" if name == "put" else "from"),
            text + ", with a progress bar per target.  The copy is written beside "
            "its destination and renamed into place, keeping the mode and modification "
            "time: nothing partial is left if it fails.  -r copies a directory tree, "
            "skipping files whose size and modification time already match.  Exit status "
            "1 if any target failed.",
            usage="trimitogen %s [options] [TARGET ...] -- %s" % (name, order),
        )
        command.add_argument("-r", "--recursive", action="store_true", help="copy a directory tree")
        command.add_argument(
            "--mode",
            type=lambda text: int(text, 8),
            metavar="OCTAL",
            help="the copy's permissions, e.g. 0640 (default: the source's)",
        )
        _add_common(command)
    return parser


def resolve_function(spec: str) -> Callable[..., Any]:
    """``module:function`` (or ``module:Class.method``), imported with the current directory
    first on the path."""
    module_name, colon, qualname = spec.partition(":")
    if not colon or not module_name or not qualname:
        raise UsageError("%r is not module:function (e.g. platform:python_version)" % spec)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError("cannot import %r: %s" % (module_name, exc)) from None
    for part in qualname.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise UsageError("%s has no %r" % (module_name, qualname)) from None
    if not callable(found):
        raise UsageError("%s is not callable" % spec)
    function: Callable[..., Any] = found
    return function


def parse_arguments(words: Sequence[str]) -> tuple[list[Any], dict[str, Any]]:
    """Positional and keyword arguments from ``ARG`` words, by :func:`ast.literal_eval`."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for word in words:
        name, equals, value = word.partition("=")
        if equals and name.isidentifier():
            kwargs[name] = _literal(value)
        elif kwargs:
            raise UsageError("positional argument %r after keyword arguments" % word)
        else:
            args.append(_literal(word))
    return args, kwargs


def _literal(word: str) -> Any:
    try:
        return ast.literal_eval(word)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        stripped = word.lstrip("+-")
        if (word[:1] and word[:1] in "[({'\"") or stripped[:1].isdigit():
            # Meant as a literal, but malformed: guessing would hide the typo.
            raise UsageError(
                "argument %r is not a Python literal (quote strings: \"'text'\")" % word
            ) from None
        return word  # a plain word such as /tmp or web-1: a string, as a shell user means it


def collect_targets(options: argparse.Namespace) -> list[tm.Target]:
    targets: list[tm.Target] = []
    for text in options.targets:
        try:
            targets.append(tm.parse_target(text, name=text))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if options.limit and not options.inventory:
        raise UsageError("--limit selects inventory hosts: give an inventory with -i")
    for path in options.inventory:
        try:
            inventory = tm.load_inventory(path)
            targets += inventory.targets(options.limit or "all")
        except (OSError, ValueError) as exc:
            raise UsageError("inventory %s: %s" % (path, exc)) from None
    if not targets:
        raise UsageError("no targets: name some, or give an inventory with -i")
    if options.python:
        targets = [tm.with_python(target, options.python) for target in targets]
    if options.max_connecting < 1:
        raise UsageError("--max-connecting must be at least 1")
    return targets


def _executable(raw: Any) -> str:
    return os.fsdecode(raw) if isinstance(raw, (bytes, str)) else str(raw)


def _open_group(
    options: argparse.Namespace, targets: list[tm.Target]
) -> AbstractAsyncContextManager[tm.Group]:
    """The group of ``targets`` with the command line's connection options."""
    return tm.open_group(
        targets,
        max_connecting=options.max_connecting,
        connect_timeout=options.timeout,
        fail_fast=options.fail_fast,
    )


async def check(options: argparse.Namespace, reporter: Reporter) -> bool:
    import multiprocessing.spawn
    import platform

    targets = collect_targets(options)
    reporter.start("checking", len(targets))
    async with _open_group(options, targets) as group:
        versions: dict[int, tm.Result[str]] = {}
        async for result in group.results(platform.python_version):
            versions[result.index] = result
            if result.ok:
                reporter.done(result)
            else:
                reporter.failed(result)
        executables = {r.index: r for r in await group.call(multiprocessing.spawn.get_executable)}
        trips: dict[int, list[float]] = {index: [] for index in versions}
        for _ in range(ROUND_TRIPS):
            for trip in await group.call(int):
                if trip.ok and trip.call_seconds is not None:
                    trips[trip.index].append(trip.call_seconds)
    rows = []
    for index in sorted(versions):
        first = versions[index]
        exe = executables[index]
        failure = first if not first.ok else exe if not exe.ok else None
        rows.append(
            {
                "target": first.target.label,
                "target_string": str(first.target),
                "hops": [hop.kind for hop in first.target.hops],
                "ok": failure is None,
                "python": first.value,
                "executable": _executable(exe.value) if exe.ok else None,
                "hop_seconds": [_rounded(s) for s in first.hop_seconds],
                "first_call_seconds": _rounded(first.call_seconds),
                "round_trip_seconds": _rounded(
                    statistics.median(trips[index]) if trips[index] else None
                ),
                **_failure_fields(failure),
            }
        )
    reporter.finish(rows, kind="check")
    return all(row["ok"] for row in rows)


async def run(
    options: argparse.Namespace,
    reporter: Reporter,
    function: Callable[..., Any],
    args: list[Any],
    kwargs: dict[str, Any],
) -> bool:
    targets = collect_targets(options)
    reporter.start("running %s" % options.function, len(targets))
    rows = []
    async with _open_group(options, targets) as group:
        async for result in group.results(function, *args, **kwargs):
            if result.ok:
                reporter.done(result)
            else:
                reporter.failed(result)
            rows.append(
                {
                    "target": result.target.label,
                    "target_string": str(result.target),
                    "ok": result.ok,
                    "value": result.value,
                    "hop_seconds": [_rounded(s) for s in result.hop_seconds],
                    "connect_seconds": _rounded(result.connect_seconds),
                    "call_seconds": _rounded(result.call_seconds),
                    **_failure_fields(result if not result.ok else None),
                }
            )
    order = {target.label: n for n, target in enumerate(targets)}
    rows.sort(key=lambda row: order.get(row["target"], math.inf))
    reporter.finish(rows, kind="run")
    return all(row["ok"] for row in rows)


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 6)


def _failure_fields(result: tm.Result[Any] | None) -> dict[str, Any]:
    if result is None:
        return {"phase": None, "hop": None, "error": None, "error_type": None}
    return {
        "phase": result.phase,
        "hop": result.hop,
        "error": str(result.error),
        "error_type": type(result.error).__name__,
    }


def _transfer_main(options: argparse.Namespace, after: list[str] | None, out: TextIO) -> int:
    from ._transfer import TransferReporter, transfer

    order = "LOCAL REMOTE" if options.command == "put" else "REMOTE LOCAL"
    if not after or len(after) != 2:
        raise UsageError(
            "give two paths after --: trimitogen %s TARGET... -- %s" % (options.command, order)
        )
    options.paths = after
    targets = collect_targets(options)
    reporter = TransferReporter(out, sys.stderr, as_json=options.json, progress=options.progress)
    try:
        ok = trio.run(transfer, options, reporter, targets, _open_group)
    except OSError as exc:
        raise UsageError(str(exc)) from None
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    words = list(sys.argv[1:] if argv is None else argv)
    out = stdout or sys.stdout
    parser = build_parser()
    after: list[str] | None = None
    if "--" in words:
        split = words.index("--")
        words, after = words[:split], words[split + 1 :]
    options = parser.parse_args(words)
    try:
        if options.command == "run":
            if not after:
                raise UsageError(
                    "give the function after --: trimitogen run TARGET... -- module:function ARG..."
                )
            options.function = after[0]
            function = resolve_function(after[0])
            args, kwargs = parse_arguments(after[1:])
        elif options.command in ("put", "get"):
            return _transfer_main(options, after, out)
        elif after is not None:
            raise UsageError("check takes no function: %s" % " ".join(after))
        reporter = Reporter(out, sys.stderr, as_json=options.json, progress=options.progress)
        if options.command == "check":
            ok = trio.run(check, options, reporter)
        else:
            ok = trio.run(run, options, reporter, function, args, kwargs)
    except UsageError as exc:
        parser.exit(USAGE_ERROR, "trimitogen %s: error: %s\n" % (options.command, exc))
    except tm.FdLimitError as exc:
        print("trimitogen %s: %s" % (options.command, exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("trimitogen %s: interrupted" % options.command, file=sys.stderr)
        return 130
    return 0 if ok else 1
