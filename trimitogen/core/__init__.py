"""The stdlib-only half of trimitogen.

Everything in this package runs on CPython 3.8 and newer, imports nothing outside the standard
library and never imports Trio: it is what a child interpreter receives over the connection at
bootstrap.  The master imports the same modules, so both ends agree on framing and serialization by
construction.
"""
