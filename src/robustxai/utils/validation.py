"""Argument checks shared by every component: each raises a ValueError that names the argument and the fix."""

from __future__ import annotations


def check_range(name: str, value: float, low: float | None = None, high: float | None = None,
                low_open: bool = False) -> None:
    """Raise a ValueError naming the argument when ``value`` is outside ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high:g}, got {value}")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise a ValueError naming the argument when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


__all__ = ["check_choice", "check_range"]
