"""A key's usage by period (openapi /key: `usage_daily`, `_weekly`, `_monthly`) and what its limit
counts by `limit_reset` (limits.mdx): the key window follows these as it follows `usage`."""

from __future__ import annotations

from typing import Any

from ._pricing import money

MISMATCH_USD = 0.01  # a fall this small is read as noise, not as a reset or a usage gone down


def period_usages(info: dict[str, Any] | None) -> tuple[tuple[str, float], ...]:
    """The key's usage of the day, week and month (openapi /key): each rises with every charge
    as `usage` does, until its period resets (a fall, which shows nothing)."""
    found = (
        (name, money(info.get(name)) if info else None) for name in ("usage_daily", "usage_weekly", "usage_monthly")
    )
    return tuple((name, value) for name, value in found if value is not None)


def usages_of(info: dict[str, Any] | None) -> tuple[tuple[str, float], ...]:
    """`usage` and the period usages as money: what limit_remaining counts, by limit_reset."""
    found = ((name, money(info.get(name)) if info else None) for name in ("usage", *_PERIOD_FIELDS.values()))
    return tuple((name, value) for name, value in found if value is not None)


_PERIOD_FIELDS = {"daily": "usage_daily", "weekly": "usage_weekly", "monthly": "usage_monthly"}


def period_field(reset: Any) -> str:
    """The usage a key's limit counts (limits.mdx): its period's, or all of it (null, unknown)."""
    return _PERIOD_FIELDS.get(str(reset).lower(), "usage")


def period_rise(last: float, now: float) -> float:
    """A period usage's rise from `last` to `now`: none for a fall within the tolerance; a fall
    past it is its period's reset, after which it counts from zero again."""
    if now >= last:
        return now - last
    return now if now < last - MISMATCH_USD else 0.0
