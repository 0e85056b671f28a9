"""Shrink Python source for shipping: comments and docstrings go, line numbers stay."""

from __future__ import annotations

import ast
import io
import tokenize

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Set, Tuple


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


#: Token types that open and close an f-string (3.12+) or t-string (3.14+), whose parts span
#: several tokens; older Pythons give the whole literal as one STRING token.
_STRING_OPENERS = tuple(
    getattr(tokenize, k) for k in ("FSTRING_START", "TSTRING_START") if hasattr(tokenize, k)
)
_STRING_CLOSERS = tuple(
    getattr(tokenize, k) for k in ("FSTRING_END", "TSTRING_END") if hasattr(tokenize, k)
)
_SKIPPED = (tokenize.NL, tokenize.COMMENT)


def minimize_source(source: str) -> str:
    """Return ``source`` without comments and docstrings.

    Every statement stays on the line it was on, so tracebacks from minimized code point at the
    same line numbers as the original.  A class or function docstring becomes ``pass`` (valid
    wherever such a docstring is, including before ``;`` and as a block's only statement); a
    module docstring is removed, with a ``;`` that follows it.  Trailing whitespace goes, except
    where a line ends inside a string literal: no literal is ever changed.
    """
    # Only "\n" ends a line for ast and tokenize: str.splitlines() would also split on form
    # feeds and Unicode separators and put later edits on the wrong lines.
    lines = source.split("\n")
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    edits: List[Tuple[int, int, int, int, str]] = []  # (row, col, end row, end col), in chars
    for node, of_module in _docstring_nodes(ast.parse(source)):
        assert node.end_lineno is not None
        assert node.end_col_offset is not None
        start = _char_col(lines[node.lineno - 1], node.col_offset)
        end_row = node.end_lineno
        end = _char_col(lines[end_row - 1], node.end_col_offset)
        if of_module:
            # A module docstring simply goes ("pass" there would push "from __future__"
            # imports down), and so does a ";" after it, up to the next statement.
            end_row, end = _past_semicolon(tokens, (end_row, end))
        edits.append((node.lineno, start, end_row, end, "" if of_module else "pass"))
    # Lines whose end is inside a literal keep their trailing whitespace: it is the literal's.
    in_literal: Set[int] = set()
    opened: List[int] = []
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            (row, col), (erow, ecol) = tok.start, tok.end
            edits.append((row, col, erow, ecol, ""))
        elif tok.type == tokenize.STRING:
            in_literal.update(range(tok.start[0], tok.end[0]))
        elif tok.type in _STRING_OPENERS:
            opened.append(tok.start[0])
        elif tok.type in _STRING_CLOSERS and opened:
            in_literal.update(range(opened.pop(), tok.end[0]))
    for row, col, erow, ecol, replacement in sorted(edits, reverse=True):
        head, tail = lines[row - 1], lines[erow - 1]
        # A multi-line docstring keeps its lines, emptied, so line numbers do not move.
        lines[row - 1 : erow] = (
            [head[:col] + replacement] + [""] * (erow - row - 1) + [tail[ecol:]]
            if erow > row
            else [head[:col] + replacement + tail[ecol:]]
        )
    return "\n".join(
        line if row in in_literal else line.rstrip() for row, line in enumerate(lines, 1)
    )


def _past_semicolon(tokens: List[tokenize.TokenInfo], end: Tuple[int, int]) -> Tuple[int, int]:
    """Where the next statement starts if a ``;`` follows ``end``; else ``end`` itself."""
    following = [tok for tok in tokens if tok.start >= end and tok.type not in _SKIPPED]
    if len(following) < 2 or following[0].string != ";" or following[0].type != tokenize.OP:
        return end
    return following[1].start
