"""How the benchmarks print a figure: thin-spaced thousands, and median (min–max) over repetitions."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["num", "spread"]


def num(x: float, digits: int = 0) -> str:
    """``x`` with ``digits`` decimals and a space between thousands (``12 345.6``)."""
    return f"{x:,.{digits}f}".replace(",", " ")


def spread(values: Sequence[float | None], digits: int = 0) -> str:
    """``median (min–max)`` of the values that are not None; the value alone if only one; ``–`` if
    none."""
    present = [v for v in values if v is not None]
    if not present:
        return "–"
    med = statistics.median(present)
    if len(present) == 1:
        return num(med, digits)
    return f"{num(med, digits)} ({num(min(present), digits)}–{num(max(present), digits)})"
