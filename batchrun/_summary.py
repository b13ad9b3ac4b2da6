"""Summaries of a run, built row by row (rendered as text and Markdown by _summary_text).

The same builder serves the end of a run, `report` on any results file (resumed or
merged), and the quality gate. It keeps counters and latencies, never the records.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Unpack

from ._batch_state import BatchEntry
from ._cache_values import saving
from ._failure_text import failure_reasons
from ._items import ItemGate, ItemTally
from ._pricing import money
from ._reader import spent_on
from ._row_cost import doubted_charges
from ._stats import wilson_interval
from ._stopped_checks import resumable_cut
from ._summary_types import FailingExample, GroupFigures, RunFigures, Summary

MAX_EXAMPLES = 10


def percentile(values: array[float] | list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = max(0, math.ceil(fraction * len(ordered)) - 1)
    return ordered[index]


def _known(record: dict[str, Any], field: str) -> float:
    """A cost field's known amount: the cost, or while it is unknown its known parts."""
    value = record.get(field)
    if value is None:
        value = record.get(f"{field}_known")
    return float(value or 0.0)


def _upstream(record: dict[str, Any]) -> float:
    """A BYOK answer's provider charge, beside OpenRouter's fee in `cost`: spent too, so every
    table counts it (verify14j N4: a BYOK file read as $0.000000 for $0.036 charged)."""
    value = record.get("upstream_inference_cost")
    if not record.get("is_byok") or record.get("cost") is None or not isinstance(value, (int, float)):
        return 0.0
    return float(value) if 0 < value < float("inf") else 0.0


@dataclass(slots=True)
class _Row:
    """What a record adds to a group, read from it once for the total, its model and its prompt."""

    status: Any
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency: float | None = None
    ttft: float | None = None
    answered_by: str = ""
    passed: bool | None = None
    score: float = 0.0
    undecided: bool = False
    regradable: bool = False  # a judge check a stop cut off: a resume grades it
    judge: float = 0.0
    known: float = 0.0
    judge_unknown: bool = False
    unknown: bool = False
    held: float = 0.0
    attempts: int = 0

    @classmethod
    def of(cls, record: dict[str, Any]) -> _Row:
        row = cls(record.get("status"))
        if row.status == "ok":
            # A cache hit used no tokens this time: only what was generated counts.
            usage = {} if record.get("cached") else (record.get("usage") or {})
            row.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            row.completion_tokens = int(usage.get("completion_tokens") or 0)
            if record.get("latency_ms") is not None:
                row.latency = float(record["latency_ms"])
            if record.get("ttft_ms") is not None:
                row.ttft = float(record["ttft_ms"])
            row.answered_by = f"{record.get('response_model')}@{record.get('provider')}"
            checks = record.get("checks")
            # A judge check a stop cut off is unfinished work whatever the row's verdict: one that
            # failed another check is failed, and a resume still grades it (verify63 F1: exit 3
            # for a run its deadline stopped, and `report` 0 on its file).
            row.regradable = isinstance(checks, list) and any(map(resumable_cut, checks))
            if record.get("passed") is not None:
                row.passed = bool(record["passed"])
                row.score = float(record.get("score", record["passed"]))
            else:
                row.undecided = bool(checks)
        # A record's `cost` is its answer's; its grading is `judge_cost`: both were spent. An
        # unknown one adds its known parts (`cost_known`): the figure stays a lower bound.
        row.judge = _known(record, "judge_cost")
        row.known = _known(record, "cost") + _upstream(record) + row.judge
        row.judge_unknown = record.get("judge_cost_status") == "unknown"
        if "unknown" in (record.get("cost_status"), record.get("judge_cost_status")):
            row.unknown = True
            # What the budget counted for the row beyond its known costs: worst cases held.
            row.held = max(0.0, spent_on(record) - row.known)
        row.attempts = int(record.get("attempts") or 0)
        return row


@dataclass
class _Group:
    ok: int = 0
    error: int = 0
    skipped: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    judge_cost: float = 0.0  # part of `cost`: what grading the answers cost
    judge_unknown: int = 0  # rows some of whose grading cost is unknown
    cost_unknown: int = 0  # rows that may have been billed an amount nobody reported
    cost_held: float = 0.0  # the worst cases counted as spent for those rows
    attempts: int = 0
    checked: int = 0
    passed: int = 0
    undecided: int = 0  # rows with a check whose grader failed: neither pass nor fail
    regradable: int = 0  # answered rows whose grader a stop cut (not a daily cap): a resume grades them
    score: float = 0.0  # sum of rows' weighted check scores
    latencies: array[float] = field(default_factory=lambda: array("d"))
    ttfts: array[float] = field(default_factory=lambda: array("d"))  # streaming mode only
    skipped_tried: int = 0  # skipped rows whose attempts went out (a stop or a 402 after them)
    answered_by: Counter[str] = field(default_factory=Counter)

    def add(self, row: _Row) -> None:
        if row.status == "ok":
            self.ok += 1
            self.prompt_tokens += row.prompt_tokens
            self.completion_tokens += row.completion_tokens
            if row.latency is not None:
                self.latencies.append(row.latency)
            if row.ttft is not None:
                self.ttfts.append(row.ttft)
            self.answered_by[row.answered_by] += 1
            if row.passed is not None:
                self.checked += 1
                self.passed += row.passed
                self.score += row.score
            elif row.undecided:
                self.undecided += 1
            self.regradable += row.regradable
        elif row.status == "error":
            self.error += 1
        else:
            self.skipped += 1
            self.skipped_tried += row.attempts > 0
        self.judge_cost += row.judge
        self.cost += row.known
        self.judge_unknown += row.judge_unknown
        if row.unknown:
            self.cost_unknown += 1
            self.cost_held += row.held
        self.attempts += row.attempts

    def as_json(self) -> GroupFigures:
        rows = self.ok + self.error + self.skipped
        # Every row that made an attempt: over answered rows alone, 2 answers and 2 rows a 402
        # skipped after one try each read as two tries per row (break25).
        sent = self.ok + self.error + self.skipped_tried
        return {
            "rows": rows,
            "ok": self.ok,
            "error": self.error,
            "skipped": self.skipped,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(self.cost, 8),
            "judge_cost_usd": round(self.judge_cost, 8),
            "judge_cost_unknown_rows": self.judge_unknown,
            "cost_unknown_rows": self.cost_unknown,
            "cost_held_usd": round(self.cost_held, 12),  # worst cases carry many digits
            "latency_p50_ms": percentile(self.latencies, 0.5),
            "latency_p95_ms": percentile(self.latencies, 0.95),
            "ttft_p50_ms": percentile(self.ttfts, 0.5),
            "ttft_p95_ms": percentile(self.ttfts, 0.95),
            "attempts_per_row": round(self.attempts / sent, 3) if sent else None,
            "checked": self.checked,
            "passed": self.passed,
            "pass_rate": round(self.passed / self.checked, 4) if self.checked else None,
            "pass_rate_ci95": _interval(self.passed, self.checked),
            "undecided": self.undecided,
            "regradable": self.regradable,
            "mean_score": round(self.score / self.checked, 4) if self.checked else None,
            "answered_by": dict(self.answered_by),
        }


class SummaryBuilder:
    def __init__(self, gate: ItemGate | None = None, items: bool = True) -> None:
        self.gate = gate or ItemGate()
        # Per item, for repeats (pass@k, flaky items): a job without repeats needs none, and a
        # dataset of 100,000 rows kept 100,000 tallies for nothing (bench/memory.py).
        # A per-item gate makes a file repeated even when it holds only the first repeats of its
        # items: the gate passed with no item decided (break40 F2).
        self.items = ItemTally(repeated=self.gate.configured) if items else None
        self.total = _Group()
        self.models: dict[str, _Group] = defaultdict(_Group)
        self.prompts: dict[str, _Group] = defaultdict(_Group)
        self.skip_reasons: Counter[str] = Counter()
        self.error_kinds: Counter[str] = Counter()
        self.examples: list[FailingExample] = []
        self.job: str | None = None
        self.job_fingerprint: str | None = None
        # The records added: a run's summary takes these from its own records only
        # (`cache_figures_of`), never from rows an earlier run left in a resumed file.
        self.cache_hits = 0  # rows answered from the cache
        self.cache_misses = 0  # rows answered by the endpoint (ok or error) while a cache was on
        self.cost_saved = 0.0
        self.cost_saved_bound = 0.0  # hits whose cost was only estimated: at most this more (saving)
        # Rows a resume re-grades, their answers kept from an earlier run: neither hits nor misses
        # of this run (README "Response cache"; verify66 9: 40 misses for 36 rows sent).
        self.kept: set[tuple[str, Any]] = set()
        self.uncounted = 0
        self.cost_doubted = 0
        self.uncounted_error = ""

    def add_pending_batches(self, entries: Iterable[BatchEntry]) -> SummaryBuilder:
        """Rows in batches still open or in doubt have no record yet, but may be billed: each
        counts as a row of unknown cost ("+?"), its batch's worst case held (break-14c N2)."""
        for entry in entries:
            for group in (self.total, self.models[entry.model]):
                group.cost_unknown += len(entry.rows)
                group.cost_held += entry.reserved_usd
        return self

    def add(self, record: dict[str, Any]) -> None:
        """Count one record. One the summary cannot count is itself counted, never dropped: a
        row lost here used to vanish from every gate, and a failing run exited 0 (break20 C2)."""
        try:
            self._add(record)
        except Exception as error:  # noqa: BLE001 - whatever the bug, the verdict must hear of it
            self.uncounted += 1
            self.uncounted_error = self.uncounted_error or f"{type(error).__name__}: {error}"[:300]

    def _add(self, record: dict[str, Any]) -> None:
        self.job = self.job or record.get("job")
        self.job_fingerprint = self.job_fingerprint or record.get("job_fingerprint")
        row = _Row.of(record)
        self.total.add(row)
        self.cost_doubted += doubted_charges(record)
        if self.items is not None:
            self.items.add(record)
        cached = record.get("cached") if (record["id"], record.get("fingerprint")) not in self.kept else None
        if cached is True:
            self.cache_hits += 1
            known, bound = saving(money(record.get("cost_saved")), record.get("cost_saved_status"))
            self.cost_saved, self.cost_saved_bound = self.cost_saved + known, self.cost_saved_bound + bound
        elif cached is False:
            self.cache_misses += 1
        self.models[record["model"]].add(row)
        self.prompts[record["prompt_id"]].add(row)
        status = record["status"]
        if status == "skipped":
            self.skip_reasons[record.get("reason") or "unknown"] += 1
        elif status == "error":
            self.error_kinds[record.get("reason") or "unknown"] += 1
        elif record.get("passed") is False and len(self.examples) < MAX_EXAMPLES:
            reasons = failure_reasons(record)  # in the report's and the history's words
            self.examples.append(
                {
                    "id": record["id"],
                    "model": record["model"],
                    "prompt_id": record["prompt_id"],
                    "why": reasons[0] if reasons else "failed",
                }
            )

    def add_all(self, records: Iterable[dict[str, Any]]) -> SummaryBuilder:
        for record in records:
            self.add(record)
        return self

    def result(self, **extra: Unpack[RunFigures]) -> Summary:
        prompts = {k: g.as_json() for k, g in sorted(self.prompts.items())}
        rated = sorted((rate, name) for name, g in prompts.items() if (rate := g["pass_rate"]) is not None)
        summary: Summary = {
            "job": self.job,
            "job_fingerprint": self.job_fingerprint,
            "total": self.total.as_json(),
            "models": {k: g.as_json() for k, g in sorted(self.models.items())},
            "prompts": prompts,
            "worst_prompts": [name for rate, name in rated[:5] if rate < 1],
            "failing_examples": self.examples,
            "skip_reasons": dict(self.skip_reasons),
            "error_kinds": dict(self.error_kinds),
            "cost_doubted_rows": self.cost_doubted,
            "items": self.items.result(self.gate) if self.items is not None else None,
        }
        # With repeats, each rate's interval takes an item's repeats as one cluster, not as
        # independent rows (break61 F3): every view reads it from here.
        clustered = self.items.intervals() if self.items is not None else {}
        groups = [
            ("", summary["total"]),
            *((f"model {name}", figures) for name, figures in summary["models"].items()),
            *((f"prompt {name}", figures) for name, figures in summary["prompts"].items()),
        ]
        for group, figures in groups:
            if group in clustered:
                figures["pass_rate_ci95"] = _rounded(clustered[group])
        if self.uncounted:
            summary["uncounted_rows"], summary["uncounted_error"] = self.uncounted, self.uncounted_error
        if self.cache_hits or self.cache_misses:
            summary["cache"] = {
                "hits": self.cache_hits,
                "misses": self.cache_misses,
                "saved_usd": round(self.cost_saved, 8),
            }
            if self.cost_saved_bound > 0:
                summary["cache"]["saved_estimated_usd"] = round(self.cost_saved_bound, 8)
        return {**summary, **extra}

    def cache_figures_of(self, run: SummaryBuilder) -> SummaryBuilder:
        """Cache hits, misses and savings as `run` counted them: this run's own rows."""
        self.cache_hits, self.cache_misses, self.cost_saved = run.cache_hits, run.cache_misses, run.cost_saved
        self.cost_saved_bound = run.cost_saved_bound
        return self


def _interval(passed: int, checked: int) -> list[float] | None:
    """Wilson 95% interval of a pass rate, as [low, high]. Kept to 6 places: at 4, a bound shown
    as a percentage to one place was rounded twice (1 of 1: 0.206549 kept as 0.2065, shown 20.6
    for 20.7: break34 m4)."""
    return _rounded(wilson_interval(passed, checked))


def _rounded(bounds: tuple[float, float] | None) -> list[float] | None:
    return None if bounds is None else [round(bounds[0], 6), round(bounds[1], 6)]
