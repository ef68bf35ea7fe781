"""Argument checks shared by every floor of the package (no package imports)."""

from __future__ import annotations

import numbers


def positive_int(value, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as a Python int in [``minimum``, ``maximum``], else a ValueError naming it.

    ``minimum`` defaults to 1 and ``maximum`` to no limit. Booleans are refused; numpy
    integers are accepted.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        if maximum is not None:
            what = f"an integer in [{minimum}, {maximum}]"
        elif minimum == 1:
            what = "a positive integer"
        else:
            what = f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


__all__ = ["positive_int"]
