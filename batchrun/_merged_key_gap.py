"""What the runs of several files spent beyond their records, counted once: a merged file's
key gap (`merge`), from each file's summary or journal."""

from __future__ import annotations

from pathlib import Path

from ._report_data import RunSpan, run_spans
from ._summary_beside import file_key_gap, read_run_summary


def merged_key_gap(shards: list[Path]) -> float:
    """Spent beyond the records, in each file's summary or journal: the merged file's readers
    showed only its records' costs (break14h H10). Runs at once on one key each count the
    others' charges (verify14i V9: the sum showed $8.58 for $2.40), while runs one after
    another each count their own (verify14j N11: the largest showed $1.25 for $2.40). So the
    runs (each summary's `runs`) that overlapped in time count their largest gap, and such
    groups add up (a file's run in two parts around another is two runs: verify14k K4). A gap
    whose time is not known (a summary without `runs`, a crashed run's journal) is added on
    its own: safe side.

    Overlap is judged on the key's usage where every run read it at both ends: a clock stepped
    back, or two runners' skew, made runs one after another look simultaneous, and the merged
    spend fell below what was billed (break46 F3). Runs whose usage intervals only touch did
    not count each other's charges. A run on a key of its own (--isolated-key) counted no other
    run's: its gap is added."""
    spans: list[RunSpan] = []
    loose = 0.0
    for shard in shards:
        runs = run_spans(read_run_summary(shard))
        # A run that spent nothing and read the key at no end (stopped in its pre-flight) counted
        # no one's charges: the others' usage still tells their overlap (out-157 F2: by the clock,
        # a shard's gap of its twin's charges was counted on top of their rows, 34% over the bill).
        spans += [run for run in runs if not (run.spent_usd == 0 == run.key_gap_usd and run.usage_at_start is None)]
        loose += max(0.0, file_key_gap(shard) - sum(run.key_gap_usd for run in runs))
    shared = [run for run in spans if not run.own_key]
    total = loose + sum(run.key_gap_usd for run in spans if run.own_key)
    if all(run.usage_at_start is not None and run.usage_at_end is not None and run.key_id for run in shared):
        keys = {run.key_id for run in shared}  # runs on another key never counted these charges
        return total + sum(_by_usage([run for run in shared if run.key_id == key]) for key in keys)
    return total + _by_clock(shared)


def _by_usage(runs: list[RunSpan]) -> float:
    """Runs on one key, grouped where their usage intervals overlap. A group's gap is what the
    key was charged over the group beyond what its runs knew of (each run's usage rise less its
    gap): runs that overlapped only in part counted part of each other's charges, and the largest
    gap fell below the bill (verify48 N3); shards side by side each counted all of the other's,
    and the largest came on top of rows that hold it (out-122 F3: $0.014 for $0.010 billed)."""
    intervals = sorted((run.usage_at_start or 0.0, run.usage_at_end or 0.0, run.key_gap_usd) for run in runs)
    # Runs of earlier versions read their usage on two scales (RunSpan.aligned): their groups keep
    # the largest gap as a floor, lest a run after another seem at once with it and its gap go.
    floor = not all(run.aligned for run in runs)
    total, group = 0.0, intervals[:1]
    group_end = intervals[0][1] if intervals else 0.0
    for interval in intervals[1:]:
        if interval[0] >= group_end:  # only touching: neither counted the other's charges
            total, group = total + _group_gap(group, floor), []
        group.append(interval)
        group_end = max(group_end, interval[1]) if len(group) > 1 else interval[1]
    return total + (_group_gap(group, floor) if group else 0.0)


def _group_gap(group: list[tuple[float, float, float]], floor: bool) -> float:
    known = sum(max(0.0, end - start - gap) for start, end, gap in group)
    rise = max(end for _, end, _ in group) - min(start for start, _, _ in group)
    # A gap beyond its run's own rise (no reading explains it: an edited summary) is kept whole.
    largest = max(gap for *_, gap in group) if floor else 0.0
    return max(0.0, largest, rise - known, *(gap - (end - start) for start, end, gap in group))


def _by_clock(runs: list[RunSpan]) -> float:
    """The largest gap of each group of runs whose spans overlap in time, added up (summaries
    of older versions, or runs that did not read /key at both ends); spans that only meet
    overlap (stamps to the millisecond: they may have)."""
    total, group_end, group_gap = 0.0, "", 0.0
    for start, end, gap, *_ in sorted(runs):
        if group_end and start > group_end:
            total, group_gap = total + group_gap, 0.0
        group_gap, group_end = max(group_gap, gap), max(group_end, end)
    return total + group_gap
