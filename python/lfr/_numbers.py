"""Numbers read from files that lfr does not trust (logs, policies, records)."""

from __future__ import annotations

import math

__all__ = ["finite"]


def finite(value: object) -> float | None:
    """``value`` as a finite float, or ``None`` if it is not one.

    ``None`` for a bool, a non-number, NaN, an infinity, or an integer too large
    for a float (``10**400`` would raise ``OverflowError`` in ``float()``).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
