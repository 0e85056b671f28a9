"""The stdlib-only half of trimitogen.

Everything in this package runs on CPython 3.6 and newer, imports nothing outside the standard
library and never imports Trio: it is what a child interpreter receives over the connection at
bootstrap.  The master imports the same modules, so both ends agree on framing and serialization by
construction.

What is shipped has its annotations and ``from __future__ import annotations`` removed (by
``trimitogen/_payload.py``); the rest must be Python 3.6: no walrus, no positional-only
parameters, no ``f"{x=}"``, and library calls newer than 3.6 behind a version check.
"""
