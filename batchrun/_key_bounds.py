"""How far what a resume looks up may move what a file's earlier runs counted as spent, by what
the key's usage showed over them (the summary's `runs`, each with `/key` read at both ends)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._pricing import money
from ._report_data import run_spans
from ._summary_floor import results_size


def said_spent(summary: Mapping[str, Any]) -> float:
    """What `summary`'s runs counted as spent."""
    return (money(summary.get("spent_before_usd")) or 0.0) + (money(summary.get("spent_usd")) or 0.0)


def raising_ceiling(summary: Mapping[str, Any], output: Path) -> float | None:
    """The most the earlier runs can have been charged, by the key: what its usage rose by over
    each of them, as much again for charges it showed late, and a cent. None where a run of the
    file has no such readings (a merge's, a file with no summary), or records were written after
    the summary (a run killed since)."""
    runs, spans = summary.get("runs"), run_spans(dict(summary))
    if not isinstance(runs, list) or not spans or len(spans) != len(runs):
        return None
    if summary.get("results_bytes") != results_size(output):
        return None
    rises = [
        span.usage_at_end - span.usage_at_start
        for span in spans
        if span.usage_at_start is not None and span.usage_at_end is not None
    ]
    return 2 * sum(rises) + 0.01 if len(rises) == len(spans) else None


def lowering_room(summary: Mapping[str, Any]) -> tuple[float | None, float]:
    """How far lookups may lower what `summary`'s runs counted as spent, and what the key's usage
    rose by over those runs (where /key was read at both ends of a run); None: no reading to
    bound it. A /generation that under-reports at a resume was believed, though the key had shown
    the charges (out-118 F1: $0.0244 billed on a $0.02 budget, $0.0122 counted). On a key others
    spend too, its rise is more than these runs charged: fewer lookups lower it (the safe side)."""
    rises = [
        span.usage_at_end - span.usage_at_start
        for span in run_spans(dict(summary))
        if span.usage_at_start is not None and span.usage_at_end is not None
    ]
    if not rises:
        return None, 0.0
    key = sum(rises)
    return max(0.0, said_spent(summary) - key), key
