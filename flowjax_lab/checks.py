"""Argument checks shared by every floor of the package (no package imports)."""

from __future__ import annotations

import numbers


def positive_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as a Python int >= ``minimum`` (default 1), else a ValueError naming it.

    Booleans are refused; numpy integers are accepted.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


__all__ = ["positive_int"]
