"""A key's usage by period (openapi /key: `usage_daily`, `_weekly`, `_monthly`) and what its limit
counts by `limit_reset` (limits.mdx): the key window follows these as it follows `usage`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._pricing import money

MISMATCH_USD = 0.01  # a fall this small is read as noise, not as a reset or a usage gone down


PERIOD_FIELDS = {"daily": "usage_daily", "weekly": "usage_weekly", "monthly": "usage_monthly"}


def amounts(info: dict[str, Any] | None, names: Iterable[str]) -> tuple[tuple[str, float], ...]:
    """The named fields of a /key reply that read as money, in order; the others left out."""
    found = ((name, money(info.get(name)) if info else None) for name in names)
    return tuple((name, value) for name, value in found if value is not None)


def period_usages(info: dict[str, Any] | None) -> tuple[tuple[str, float], ...]:
    """The key's usage of the day, week and month (openapi /key): each rises with every charge
    as `usage` does, until its period resets (a fall, which shows nothing)."""
    return amounts(info, PERIOD_FIELDS.values())


def usages_of(info: dict[str, Any] | None) -> tuple[tuple[str, float], ...]:
    """`usage` and the period usages: what limit_remaining counts, by limit_reset."""
    return amounts(info, ("usage", *PERIOD_FIELDS.values()))


def period_field(reset: Any) -> str:
    """The usage a key's limit counts (limits.mdx): its period's, or all of it (null, unknown)."""
    return PERIOD_FIELDS.get(str(reset).lower(), "usage")


def period_rise(last: float, now: float) -> float:
    """A period usage's rise from `last` to `now`: none for a fall within the tolerance; a fall
    past it is its period's reset, after which it counts from zero again."""
    if now >= last:
        return now - last
    return now if now < last - MISMATCH_USD else 0.0
