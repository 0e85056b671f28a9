"""Every section, in the order the tables print: a new section is a module and a line here."""

from __future__ import annotations

from ..model import Section
from . import bulk, bytestream, cancellation, files, fork, imports, local, logins, streams

SECTIONS: tuple[Section, ...] = (
    local.SECTION,
    imports.SECTION,
    fork.SECTION,
    logins.SSH,
    logins.SUDO,
    logins.HOP,
    cancellation.SECTION,
    streams.SECTION,
    bulk.SECTION,
    bytestream.SECTION,
    files.SECTION,
)

NAMES = tuple(section.name for section in SECTIONS)


def by_name(names: list[str] | tuple[str, ...]) -> list[Section]:
    """The sections called ``names``, in the order of :data:`SECTIONS`."""
    return [section for section in SECTIONS if section.name in names]
