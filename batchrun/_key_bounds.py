"""How far what a resume looks up may move what a file's earlier runs counted as spent, by what
the key's usage showed over them (the summary's `runs`, each with `/key` read at both ends).

Lower figures are taken only where the key's usage shows the runs were not charged more (a
/generation that under-reports was believed though the key had shown the charges: out-118 F1,
$0.0244 billed on a $0.02 budget, $0.0122 counted). Figures over 100 times their worst cases
are taken only where the key's usage can hold them (out-120 F4: $9,999 a row at a resume, the
key's usage up $0.00054). Without readings of every run, neither is (out-121 F1: a merged
file's resume took both)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._pricing import doubted, money
from ._report_data import run_spans
from ._summary_floor import results_size


def said_spent(summary: Mapping[str, Any]) -> float:
    """What `summary`'s runs counted as spent."""
    return (money(summary.get("spent_before_usd")) or 0.0) + (money(summary.get("spent_usd")) or 0.0)


def key_rise(summary: Mapping[str, Any], output: Path) -> float | None:
    """What the key's usage rose by over the file's earlier runs. None where a run of the file has
    no such readings (a merge's summary, no summary, a /key that failed at a run's end), the summary
    does not list every run (`runs_complete`: one killed, merged or of a summary lost came before),
    or records were written after it (a run killed since). On a key others spend too, it is more
    than these runs were charged: fewer lookups lower (the safe side)."""
    runs, spans = summary.get("runs"), run_spans(dict(summary))
    if not isinstance(runs, list) or not spans or len(spans) != len(runs) or summary.get("runs_complete") is not True:
        return None  # a run killed, merged or of a summary lost before these: out-122 F1
    if summary.get("results_bytes") != results_size(output):
        return None
    rises = [
        span.usage_at_end - span.usage_at_start
        for span in spans
        if span.usage_at_start is not None and span.usage_at_end is not None
    ]
    return sum(rises) if len(rises) == len(spans) else None


def refused(
    changes: list[tuple[float, float]], summary: Mapping[str, Any], key: float | None
) -> tuple[set[int], set[int]]:
    """Of lookups (what each row held for its unknown parts, how far its lookup moves what it
    counts), which are not taken: (those far above their worst cases, those lower). The first,
    where the key's usage cannot hold what the file would count (twice its rise and a cent:
    charges it showed late); the second, all or none (which under-reports is not known), where
    the rest would take the count below what the key showed."""
    said = said_spent(summary)
    absurd = {i for i, (held, change) in enumerate(changes) if held > 0 and doubted(held + change, held)}
    if key is not None and said + sum(change for _, change in changes) <= 2 * key + 0.01:
        absurd = set()
    lower = {i for i, (_, change) in enumerate(changes) if change < 0 and i not in absurd}
    net = sum(change for i, (_, change) in enumerate(changes) if i not in absurd)
    if key is not None and -net <= max(0.0, said - key) + max(1e-6, 0.005 * key):
        lower = set()
    return absurd, lower
