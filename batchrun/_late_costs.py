"""Costs learned after their row was written: the row is appended again, never rewritten.

A row whose cost was unknown when its record was written (an attempt abandoned in flight,
a lookup that had not answered yet) may have its cost looked up later: at a /key refresh,
or in the end-of-run lookups. Results files are append-only, so that record stays as it
is; the row is written again, whole, with its cost fields as they are now and
`cost_resolved_at`. By the supersede rule (_results) every reader (summary, report,
history, diff, merge, resume) takes this last record as the row.

Its head carries `resolves`: the `spent` of the record it replaces. The resume scan adds
up the `spent` of every record (a retried row was paid for again) less each `resolves`,
so the row counts once, at what it is now known to have cost.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._checks import answer_of, grade, stored_judgements
from ._exceptions import OutputFailed
from ._matrix import Request
from ._reader import spent_on
from ._record_head import record_head
from ._results import ResultsWriter
from ._row import grading_spent, judge_cost_fields
from ._row_cost import RowCharges, counted
from ._ungraded import applied_checks


@dataclass
class _Written:
    request: Request
    record: dict[str, Any]
    charges: RowCharges  # the answer's
    judge: RowCharges | None  # its graders'
    judge_counted: float  # what the record's `spent` counted for its grading


MAX_ESTIMATED_KEPT = 10_000  # rows kept to be written again should their estimated cost be looked up


@dataclass
class LateCosts:
    """The rows written with an unknown cost (their answer's or their grading's), kept (record
    and charges) until the run ends."""

    rows: list[_Written] = field(default_factory=list)
    estimated_kept: int = 0

    def remember(
        self, request: Request, record: dict[str, Any], charges: RowCharges, judge: RowCharges | None = None
    ) -> None:
        # Unknown, or estimated (an upper bound that the run's end may look up: _charges); the
        # latter up to a bound, held whole in memory until the end (a server that never says).
        estimated = record.get("cost_status") == "estimated" and self.estimated_kept < MAX_ESTIMATED_KEPT
        answer_unknown = (record.get("cost_status") == "unknown" or estimated) and charges.parts
        self.estimated_kept += bool(estimated and answer_unknown)
        judge_unknown = record.get("judge_cost_status") == "unknown" and judge is not None and judge.parts
        if answer_unknown or judge_unknown:
            counted_then = grading_spent(judge) if judge is not None else 0.0
            self.rows.append(_Written(request, record, charges, judge, counted_then))

    def records(self, now: str) -> Iterator[tuple[dict[str, Any], bytes]]:
        """(record, request body) to append for each row whose cost fields changed since written."""
        for row in self.rows:
            fields = row.charges.fields()
            moved = counted(fields) - counted(row.record)
            if row.judge is not None:
                # A grader's cost looked up late: its row was said to be written again, yet kept
                # `judge_cost: null` and its graders' worst cases in `spent` (break14h H8).
                moved += grading_spent(row.judge) - row.judge_counted
                fields.update(judge_cost_fields(row.judge))
            if all(row.record.get(name) == value for name, value in fields.items()):
                continue  # nothing was learnt about this row
            yield graded_on_cost(resolved_record(row.record, fields, moved, now), row.request), row.request.payload


def resolved_record(old: dict[str, Any], fields: dict[str, Any], moved: float, now: str) -> dict[str, Any]:
    """`old` with the cost `fields` known now; `spent` moves by what its answer's and its
    grading's costs `moved`."""
    spent = max(0.0, spent_on(old) + moved)
    cost = fields.get("cost", old.get("cost"))  # the answer's as it was, where only its grading's was learnt
    record = record_head(old["id"], old["fingerprint"], old["status"], old["reason"], old["retryable"], cost, spent)
    record["resolves"] = spent_on(old)
    record.update((name, value) for name, value in old.items() if name not in record)
    if record.get("cost_doubted") and "cost" in fields:
        record["cost_doubted"] = None  # known now; `fields` say it again if it is still in doubt
    record.update(fields)
    record["cost_resolved_at"] = now
    return record


def graded_on_cost(record: dict[str, Any], request: Request) -> dict[str, Any]:
    """A row written again with its cost known, graded again on it: a max_cost_usd check left
    undecided by the unknown cost (or a record saying "got $None" beside its cost) is decided
    (break66 F1)."""
    if record["status"] == "ok" and request.checks:
        checks = applied_checks(record, request)
        record.update(grade(checks, answer_of(record), stored_judgements(record, checks)))
    return record


def append_late_costs(path: Path, late: LateCosts, now: str) -> tuple[int, str | None]:
    """Append the rows whose cost was learnt after they were written: (how many, and why
    not all of them could be, or None)."""
    written = 0
    rows = late.records(now)
    first = next(rows, None)
    if first is None:
        return 0, None  # nothing learnt late: the file is not opened again
    try:
        writer = ResultsWriter(path, create=False)
        try:
            for record, payload in itertools.chain([first], rows):
                writer.write(record, payload)
                written += 1
        finally:
            writer.close()
    except OutputFailed as failure:
        return written, f"costs looked up after their rows were written were not all appended: {failure}"
    except OSError as exc:
        why = exc.strerror or exc
        return written, f"{path}: costs looked up after their rows were written were not appended: {why}"
    return written, None
