"""What the HTML report shows of one run, gathered in one pass over its final records.

Everything here is aggregated (counts, rates, percentiles, histogram bins) except the
failing-rows table, which keeps at most `ROW_CAP` rows, so a 100,000-row run makes a page
of about the same size as a 100-row one. The counters come from `SummaryBuilder`, the same
builder `report` prints, so the page and the terminal never disagree.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ._exceptions import ResultsError
from ._failure_text import clip, failure_reasons
from ._pricing import money
from ._results import first_record
from ._summary import SummaryBuilder
from ._summary_beside import read_run_summary

ROW_CAP = 1000  # failing and error rows listed on the page; the page says when more exist
TEXT_CAP = 2000  # characters of an answer or a message kept in a table cell
PROMPT_CAP = 40  # prompts charted one by one; beyond that, the worst ones (stated on the page)
HISTOGRAM_BINS = 30


def _as_text(value: Any) -> str:
    """An answer or variables as display text (content may be a list of parts, or null)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _table_row(record: dict[str, Any]) -> dict[str, Any]:
    provider = record.get("provider")
    answered = record.get("response_model")
    return {
        "kind": {"error": "error", "undecided": "undecided"}.get(_row_state(record), "failed"),
        "id": str(record.get("id", ""))[:12],
        "model": str(record.get("model", "")),
        "prompt": str(record.get("prompt_id", "")),
        "vars": clip(_as_text(record.get("vars") or {}), 500),
        "answer": clip(_as_text(record.get("content")), TEXT_CAP),
        "reasons": failure_reasons(record),
        "provider": " @ ".join(str(part) for part in (answered, provider) if part),
    }


def _row_state(record: dict[str, Any]) -> str:
    """pass, fail, undecided (a check not graded decides it), error, skipped, or ok (answered, with no checks)."""
    status = record.get("status")
    if status != "ok":
        return str(status)
    passed = record.get("passed")
    if passed is None:
        return "undecided" if record.get("checks") else "ok"
    return "pass" if passed else "fail"


@dataclass
class RunDigest:
    """The aggregates of one run and its capped failing-rows table."""

    builder: SummaryBuilder = field(default_factory=SummaryBuilder)
    pairs: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # (model, prompt) -> [checked, passed]
    rows: list[dict[str, Any]] = field(default_factory=list)
    failing_total: int = 0
    first_start: str | None = None
    last_finish: str | None = None

    def add(self, record: dict[str, Any]) -> None:
        self.builder.add(record)
        started, finished = record.get("started_at"), record.get("finished_at")
        if isinstance(started, str) and (self.first_start is None or started < self.first_start):
            self.first_start = started
        if isinstance(finished, str) and (self.last_finish is None or finished > self.last_finish):
            self.last_finish = finished
        state = _row_state(record)
        if state in ("pass", "fail"):
            pair = self.pairs.setdefault((str(record.get("model")), str(record.get("prompt_id"))), [0, 0])
            pair[0] += 1
            pair[1] += state == "pass"
        if state in ("fail", "error", "undecided"):  # a grader outage listed, not a clean page (out-101 F2)
            self.failing_total += 1
            if len(self.rows) < ROW_CAP:
                self.rows.append(_table_row(record))

    def watch(self, records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """The records, unchanged, taken in on the way: the page and the summary share one read."""
        for record in records:
            self.add(record)
            yield record

    def latencies(self) -> dict[str, list[float]]:
        return {name: list(group.latencies) for name, group in sorted(self.builder.models.items())}


def missing_since_summary(
    results: Path, summary: dict[str, Any], rows: int, unread: int, awaiting: int = 0
) -> str | None:
    """Why `results` is known to miss records its run's `summary` counted (`rows`: the records it
    holds; `unread`: lines set aside or cut); None when it is not, or the summary is not this very
    file's (`r.bak` beside `r.jsonl` finds r.jsonl's: verify43 F1). A file only grows after its
    summary (a resume appends): fewer rows are records gone (break40 F6, verify41
    F-4a: exit 0, a CI step read it as whole). Nor may a whole run's file hold fewer rows than its
    job's matrix (`awaiting`: rows its batch record says are at OpenRouter): a submit tick's
    file whose batch record was not kept (out-129 F1: half the rows in an open batch, exit 0)."""
    named, total = summary.get("output"), summary.get("total")
    if not isinstance(named, str) or Path(named).name != results.name or not isinstance(total, dict):
        return None
    counts = total.get("rows")
    if type(counts) is int and counts > rows:
        why = f"{unread} line(s) set aside or cut" if unread else "lines removed since it was written?"
        return f"{results}: {counts - rows} of the {counts} row(s) its summary counts have no readable record ({why})"
    matrix, whole = summary.get("matrix_rows"), summary.get("shard") is None and not summary.get("merged_from")
    if whole and type(matrix) is int and matrix > rows + awaiting:
        # A run whose writes failed (a full disk, a file-size limit) was read as a batch record lost
        # or records removed (out-174 F6): its summary says exit 11.
        why = (
            "its run stopped when writing its results failed (exit 11): --resume runs them"
            if summary.get("exit_code") == 11
            else "in batches still open at OpenRouter whose batch record is gone, or records removed"
        )
        return f"{results}: {matrix - rows - awaiting} of the {matrix} row(s) of its run's job have no record ({why})"
    # Fewer bytes (lines gone whose rows still have a record: a retry's first attempt), or other
    # bytes: SummaryBeside.changed, which its callers ask next.
    return None


def shard_of(results: Path) -> str | None:
    """The shard ("K/N") whose run `results` is: its summary says so, or, for a shard killed
    before its summary, its first record (every record of a shard names it); None for a whole run."""
    if shard := read_run_summary(results).get("shard"):
        return str(shard)
    with contextlib.suppress(OSError, ResultsError):
        shard = (first_record(results) or {}).get("shard")
        return shard if isinstance(shard, str) and shard else None
    return None


def is_shard_file(results: Path) -> bool:
    return shard_of(results) is not None


class RunSpan(NamedTuple):
    """One run of a file, as its summary's `runs` keep it: its wall-clock span and its own key
    gap; and, where /key was read at both ends, the key's usage then (a clock no skew moves:
    merge tells runs that overlapped by it, break46 F3), and whether it spent a key of its own."""

    started_at: str
    finished_at: str
    key_gap_usd: float
    usage_at_start: float | None = None
    usage_at_end: float | None = None
    own_key: bool = False
    key_id: str | None = None  # which key the usage is of (`key_id`): another key's is on another scale
    # Both readings on one scale, BYOK usage outside the key's limit included at each end: earlier
    # versions added it at the end only, and a run after one seemed to overlap it (out-123 F1).
    aligned: bool = False
    spent_usd: float | None = None  # what the run spent (None: a summary of before it was kept)

    def entry(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "key_gap_usd": self.key_gap_usd,
            "key_usage_at_start": self.usage_at_start,
            "key_usage_at_end": self.usage_at_end,
            "own_key": self.own_key,
            "key_id": self.key_id,
            "usage_aligned": self.aligned,
            "spent_usd": self.spent_usd,
        }


def key_id(api_key: str | None) -> str | None:
    """A name for the key a run spent, to tell runs on one key from runs on others (verify48 N2:
    two accounts' usage ranges overlapped, and sequential shards were merged as simultaneous). 48
    bits of a salted SHA-256: nothing of the key, and not a prefix of the hash OpenRouter gives it."""
    if not api_key:
        return None
    return hashlib.sha256(b"batchrun key id\0" + api_key.encode()).hexdigest()[:12]


def run_spans(summary: dict[str, Any]) -> list[RunSpan]:
    """A summary's `runs` that can be read, for merge (which runs overlapped) and for the next
    run's summary. Usage readings that are not an ordered pair of numbers are left out."""
    runs = summary.get("runs")
    spans = []
    for run in runs if isinstance(runs, list) else []:
        if not isinstance(run, dict):
            continue
        start, end, gap = run.get("started_at"), run.get("finished_at"), money(run.get("key_gap_usd"))
        if isinstance(start, str) and isinstance(end, str) and start <= end and gap is not None:
            first, last = money(run.get("key_usage_at_start")), money(run.get("key_usage_at_end"))
            if first is None or last is None or last < first:
                first = last = None
            name = run.get("key_id") if isinstance(run.get("key_id"), str) else None
            own, aligned = run.get("own_key") is True, run.get("usage_aligned") is True
            spans.append(RunSpan(start, end, gap, first, last, own, name, aligned, money(run.get("spent_usd"))))
    return spans


def histogram(values: dict[str, list[float]], bins: int = HISTOGRAM_BINS) -> list[dict[str, Any]]:
    """Counts per model in shared bins over the whole range: what the latency chart draws."""
    everything = [v for series in values.values() for v in series]
    if not everything:
        return []
    low, high = min(everything), max(everything)
    width = (high - low) / bins or 1.0
    out = []
    for name, series in values.items():
        counts = [0] * bins
        for value in series:
            counts[min(bins - 1, int((value - low) / width))] += 1
        out += [
            {"model": name, "from_ms": round(low + i * width, 1), "to_ms": round(low + (i + 1) * width, 1), "rows": n}
            for i, n in enumerate(counts)
        ]
    return out
