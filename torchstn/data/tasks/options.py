"""Validation of task options: each returns the resolved, JSON-serialisable value or raises
:class:`~torchstn.errors.InvalidInputError` naming the option, the expected and the actual value."""

from __future__ import annotations

import math
from typing import Any

from ..._checks import check_size
from ...errors import InvalidInputError

__all__ = ["as_bool", "as_canvas", "as_float", "as_int", "as_range"]


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInputError(f"option {name!r}: expected a finite number, got {value!r}")
    return float(value)


def as_range(
    value: Any, name: str, *, low: float | None = None, high: float | None = None
) -> list[float]:
    """A ``[lo, hi]`` range with ``lo <= hi`` inside ``[low, high]``; a single number ``v`` means
    ``[-v, v]`` (``[v, v]`` when ``low >= 0``).

    Example:
        >>> as_range(45, "angle"), as_range((0.7, 1.2), "scale", low=0.0)
        ([-45.0, 45.0], [0.7, 1.2])
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = _number(value, name)
        lo, hi = (v, v) if low is not None and low >= 0 else (-abs(v), abs(v))
    else:
        try:
            lo, hi = (_number(v, name) for v in value)
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"option {name!r}: expected a number or a pair [lo, hi], got {value!r}"
            ) from None
    if lo > hi:
        raise InvalidInputError(f"option {name!r}: expected lo <= hi, got [{lo}, {hi}]")
    if (low is not None and lo < low) or (high is not None and hi > high):
        raise InvalidInputError(
            f"option {name!r}: expected values in [{low}, {high}], got [{lo}, {hi}]"
        )
    return [lo, hi]


def as_float(value: Any, name: str, *, low: float = 0.0) -> float:
    """A finite number ``>= low``."""
    v = _number(value, name)
    if v < low:
        raise InvalidInputError(f"option {name!r}: expected a number >= {low}, got {value!r}")
    return v


def as_int(value: Any, name: str, *, low: int = 0, high: int | None = None) -> int:
    """An int in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"option {name!r}: expected an int, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise InvalidInputError(f"option {name!r}: expected an int {bound}, got {value}")
    return value


def as_bool(value: Any, name: str) -> bool:
    """A bool (``True``/``False`` only)."""
    if not isinstance(value, bool):
        raise InvalidInputError(f"option {name!r}: expected true or false, got {value!r}")
    return value


def as_canvas(value: Any, name: str, *, low: int) -> int:
    """A square canvas side ``>= low`` (an int, or ``[n, n]``)."""
    try:
        h, w = check_size(value, f"option {name!r}")
    except InvalidInputError:
        raise InvalidInputError(f"option {name!r}: expected an int, got {value!r}") from None
    if h != w or h < low:
        raise InvalidInputError(
            f"option {name!r}: expected a square canvas of side >= {low}, got {value!r}"
        )
    return h
