"""Shrink Python source for shipping: comments and docstrings go, line numbers stay."""

from __future__ import annotations

import ast
import io
import tokenize
from typing import List, Tuple


def _docstring_spans(tree: ast.AST) -> List[Tuple[int, int, int, int, bool]]:
    """(start line, start col, end line, end col, only statement?) of every docstring."""
    spans = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = node.body
        if not body:
            continue
        first = body[0]
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
            and first.end_lineno is not None
            and first.end_col_offset is not None
        ):
            spans.append(
                (
                    first.lineno,
                    first.col_offset,
                    first.end_lineno,
                    first.end_col_offset,
                    len(body) == 1,
                )
            )
    return spans


def minimize_source(source: str) -> str:
    """Return ``source`` without comments and docstrings.

    Every statement stays on the line it was on, so tracebacks from minimized code point at the
    same line numbers as the original, and a block whose only statement was a docstring gets a
    ``pass`` so it still parses.  Trailing whitespace and trailing blank lines are dropped.
    """
    lines = source.splitlines(keepends=True)
    tree = ast.parse(source)
    # Edit from the end of the file backwards so earlier coordinates stay valid.
    edits: List[Tuple[int, int, int, int, str]] = []
    for start, scol, end, ecol, only in _docstring_spans(tree):
        replacement = ("pass" if only else "") + "\n" * (end - start)
        edits.append((start, scol, end, ecol, replacement))
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            (row, col), (erow, ecol) = tok.start, tok.end
            edits.append((row, col, erow, ecol, ""))
    edits.sort(reverse=True)
    for start, scol, end, ecol, replacement in edits:
        # ast columns are UTF-8 byte offsets; tokenize columns are characters.  Work in the
        # unit each producer uses: docstring edits (with newlines) use bytes.
        head = lines[start - 1]
        tail = lines[end - 1]
        if "\n" in replacement or replacement == "pass":
            head_b, tail_b = head.encode(), tail.encode()
            new = head_b[:scol].decode() + replacement + tail_b[ecol:].decode()
        else:
            new = head[:scol] + replacement + tail[ecol:]
        lines[start - 1 : end] = [new]
    text = "".join(lines)
    out = [line.rstrip() for line in text.split("\n")]
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n"
