"""Shrink Python source for shipping: comments and docstrings go, line numbers stay."""

from __future__ import annotations

import ast
import io
import tokenize

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Tuple


def _docstring_nodes(tree: ast.AST) -> List[Tuple[ast.Expr, bool]]:
    """Each docstring, and whether it belongs to the module (not to a class or function)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        first = node.body[0] if node.body else None
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            found.append((first, isinstance(node, ast.Module)))
    return found


def _char_col(line: str, byte_col: int) -> int:
    """ast reports UTF-8 byte offsets; convert one to a character offset in ``line``."""
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", "replace"))


def minimize_source(source: str) -> str:
    """Return ``source`` without comments and docstrings.

    Every statement stays on the line it was on, so tracebacks from minimized code point at the
    same line numbers as the original.  A class or function docstring becomes ``pass`` (valid
    wherever such a docstring is, including before ``;`` and as a block's only statement); a
    module docstring is removed.  Trailing whitespace goes.
    """
    # Only "\\n" ends a line for ast and tokenize: str.splitlines() would also split on form
    # feeds and Unicode separators and put later edits on the wrong lines.
    lines = source.split("\n")
    edits: List[Tuple[int, int, int, int, str]] = []  # (row, col, end row, end col), in chars
    for node, of_module in _docstring_nodes(ast.parse(source)):
        assert node.end_lineno is not None
        assert node.end_col_offset is not None
        start = _char_col(lines[node.lineno - 1], node.col_offset)
        end = _char_col(lines[node.end_lineno - 1], node.end_col_offset)
        # A module docstring simply goes: "pass" there would push "from __future__" imports down.
        edits.append((node.lineno, start, node.end_lineno, end, "" if of_module else "pass"))
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            (row, col), (erow, ecol) = tok.start, tok.end
            edits.append((row, col, erow, ecol, ""))
    for row, col, erow, ecol, replacement in sorted(edits, reverse=True):
        head, tail = lines[row - 1], lines[erow - 1]
        # A multi-line docstring keeps its lines, emptied, so line numbers do not move.
        lines[row - 1 : erow] = (
            [head[:col] + replacement] + [""] * (erow - row - 1) + [tail[ecol:]]
            if erow > row
            else [head[:col] + replacement + tail[ecol:]]
        )
    return "\n".join(line.rstrip() for line in lines)
