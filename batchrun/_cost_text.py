"""A group's cost for people: exact when every row's cost is known, else a lower bound.

A row of unknown cost (an attempt that may have been billed, nothing says how much) has
`cost` null and its worst case held (`spent`, `cost_held`); a summary group counts those
rows (`cost_unknown_rows`) and the worst cases held beyond their known parts
(`cost_held_usd`). Every view (the run summary, the HTML report, history, diff, a resume's
line) shows such a cost as its known part followed by "+?", and the held amount, never as
a plain figure that reads as the whole cost (break-14 #16).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STATUS_ORDER = ("reported", "estimated", "looked_up", "unknown")  # a row takes its least sure part's


def unknown_rows(group: Mapping[str, Any]) -> int:
    return int(group.get("cost_unknown_rows") or 0)


def cost_text(group: Mapping[str, Any]) -> str:
    """The group's known cost ("0.001234"), followed by "+?" when some of its costs are unknown."""
    return f"{group['cost_usd']:.6f}" + ("+?" if unknown_rows(group) else "")


def run_cost_text(group: Mapping[str, Any], key_gap: float) -> str:
    """A group's cost with what is held for its unknown costs, and what the run's key was charged
    beyond its rows' records (`key_gap_usd`: a run's, in no model's cost)."""
    gap = f" (+${key_gap:.6f} charged to the key beyond the run's records)" if key_gap > 0 else ""
    return cost_text(group) + held_note(group) + gap


def held_note(group: Mapping[str, Any], short: bool = False) -> str:
    """What is held for the unknown costs, " (3 row(s) of unknown cost, up to $0.012000 more
    held)"; `short` for a table cell, " (held $0.012000)"; "" when every cost is known."""
    rows = unknown_rows(group)
    if not rows:
        return ""
    held = float(group.get("cost_held_usd") or 0.0)
    if short:
        return f" (held ${held:.6f})"
    return f" ({rows} row(s) of unknown cost, up to ${held:.6f} more held)"


def batch_hold_lines(summary: Mapping[str, Any]) -> list[str]:
    """Batches still open or in doubt: their worst cases are in `spent` (held), not yet charged
    as far as anyone knows (break-14c N2: "spent $0.000000" beside a running batch)."""
    batches = summary.get("batches") or {}
    held = float(batches.get("held_usd") or 0.0)
    if held <= 0:
        return []
    doubt = len(batches.get("in_doubt") or [])
    return [
        f"held for batches: ${held:.6f} (worst cases at full prices) for {batches.get('open', 0)} batch(es) not "
        f"collected and {doubt} in doubt, {batches.get('open_rows', 0)} row(s) of unknown cost (+?); counted as "
        "spent until they are collected (or adopted or released: `batchrun batches list`)"
    ]


def key_gap_lines(summary: Mapping[str, Any]) -> list[str]:
    """What was counted as spent beyond the rows' records (`key_gap_usd`): the key's usage above
    their reported costs, and the attempts of rows a job no longer has (break14c N12; E16). The
    table's cost leaves it out."""
    gap = summary.get("key_gap_usd") or 0.0
    if gap <= 0:
        return []
    return [
        f"${gap:.6f} counted as spent beyond the rows' records (the key's usage above their reported costs: "
        "answers that under-reported, a key that rounds charges up, or another process on the key; attempts "
        "of rows the job no longer has; or, at their worst cases, answers no /key read confirmed before the key "
        "could not be read, and batches of a run killed before it read the key)"
    ]
