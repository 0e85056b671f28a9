"""Table formatting shared by the sections: rows, numbers, ratios, cells for missing values."""

from __future__ import annotations

from collections.abc import Sequence

from .model import Outcome

LABEL_WIDTH = 20
COLUMN_WIDTH = 15
#: Label width of every table but the local one (its labels are longer).
SECTION_LABEL_WIDTH = 26


def row(
    label: str, cells: Sequence[str], width: int = LABEL_WIDTH, column: int = COLUMN_WIDTH
) -> str:
    return label.ljust(width) + "".join(cell.rjust(column) for cell in cells)


def number(value: float) -> str:
    return "%.1f" % value if value < 10000 else "%.0f" % value


def ratio(peer: float, base: float) -> str:
    """``peer / base`` as ``1.23x``; ``-`` when it means nothing."""
    return "%.2fx" % (peer / base) if base > 0 and peer >= 0 else "-"


def state(outcome: Outcome, section: str) -> str | None:
    """Why ``outcome`` has no numbers for ``section``, or None if it has them."""
    if outcome.samples is None:
        return "failed (worker; see below)"
    if section in outcome.samples.unsupported:
        return "n/a: " + outcome.samples.unsupported[section]
    if section in outcome.samples.errors:
        return "failed (see below)"
    return None
