"""Summaries of a run: built row by row, rendered as text, JSON and Markdown.

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
from ._cost_text import batch_hold_lines, cost_text, held_note, key_gap_lines
from ._formats import ms, pct
from ._items import ItemGate, ItemTally
from ._reader import failure_reasons, spent_on
from ._stats import wilson_interval
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
    score: float = 0.0  # sum of rows' weighted check scores
    latencies: array[float] = field(default_factory=lambda: array("d"))
    ttfts: array[float] = field(default_factory=lambda: array("d"))  # streaming mode only
    answered_by: Counter[str] = field(default_factory=Counter)

    def add(self, record: dict[str, Any]) -> None:
        status = record.get("status")
        if status == "ok":
            self.ok += 1
            # A cache hit used no tokens this time: only what was generated counts.
            usage = {} if record.get("cached") else (record.get("usage") or {})
            self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            self.completion_tokens += int(usage.get("completion_tokens") or 0)
            if record.get("latency_ms") is not None:
                self.latencies.append(float(record["latency_ms"]))
            if record.get("ttft_ms") is not None:
                self.ttfts.append(float(record["ttft_ms"]))
            self.answered_by[f"{record.get('response_model')}@{record.get('provider')}"] += 1
            if record.get("passed") is not None:
                self.checked += 1
                self.passed += bool(record["passed"])
                self.score += float(record.get("score", record["passed"]))
            elif record.get("checks"):
                self.undecided += 1
        elif status == "error":
            self.error += 1
        else:
            self.skipped += 1
        # A record's `cost` is its answer's; its grading is `judge_cost`: both were spent. An
        # unknown one adds its known parts (`cost_known`): the figure stays a lower bound.
        judge = _known(record, "judge_cost")
        known = _known(record, "cost") + judge
        self.judge_cost += judge
        self.cost += known
        self.judge_unknown += record.get("judge_cost_status") == "unknown"
        if "unknown" in (record.get("cost_status"), record.get("judge_cost_status")):
            self.cost_unknown += 1
            # What the budget counted for the row beyond its known costs: worst cases held.
            self.cost_held += max(0.0, spent_on(record) - known)
        self.attempts += int(record.get("attempts") or 0)

    def as_json(self) -> GroupFigures:
        rows = self.ok + self.error + self.skipped
        sent = self.ok + self.error
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
            "mean_score": round(self.score / self.checked, 4) if self.checked else None,
            "answered_by": dict(self.answered_by),
        }


class SummaryBuilder:
    def __init__(self, gate: ItemGate | None = None) -> None:
        self.gate = gate or ItemGate()
        self.items = ItemTally()
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

    def add_pending_batches(self, entries: Iterable[BatchEntry]) -> SummaryBuilder:
        """Rows in batches still open or in doubt have no record yet, but may be billed: each
        counts as a row of unknown cost ("+?"), its batch's worst case held (break-14c N2)."""
        for entry in entries:
            for group in (self.total, self.models[entry.model]):
                group.cost_unknown += len(entry.rows)
                group.cost_held += entry.reserved_usd
        return self

    def add(self, record: dict[str, Any]) -> None:
        self.job = self.job or record.get("job")
        self.job_fingerprint = self.job_fingerprint or record.get("job_fingerprint")
        self.total.add(record)
        self.items.add(record)
        cached = record.get("cached")
        if cached is True:
            self.cache_hits += 1
            self.cost_saved += float(record.get("cost_saved") or 0.0)
        elif cached is False:
            self.cache_misses += 1
        self.models[record["model"]].add(record)
        self.prompts[record["prompt_id"]].add(record)
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
            "items": self.items.result(self.gate),
        }
        if self.cache_hits or self.cache_misses:
            summary["cache"] = {
                "hits": self.cache_hits,
                "misses": self.cache_misses,
                "saved_usd": round(self.cost_saved, 8),
            }
        return {**summary, **extra}

    def cache_figures_of(self, run: SummaryBuilder) -> SummaryBuilder:
        """Cache hits, misses and savings as `run` counted them: this run's own rows."""
        self.cache_hits, self.cache_misses, self.cost_saved = run.cache_hits, run.cache_misses, run.cost_saved
        return self


def render_cache(summary: Summary) -> str | None:
    cache = summary.get("cache")
    if not cache:
        return None
    return f"cache: {cache['hits']} hit(s), {cache['misses']} miss(es), ${cache['saved_usd']:.6f} saved"


def _interval(passed: int, checked: int) -> list[float] | None:
    """Wilson 95% interval of a pass rate, as [low, high]."""
    bounds = wilson_interval(passed, checked)
    return None if bounds is None else [round(bounds[0], 4), round(bounds[1], 4)]


def _fmt_rate_ci(group: GroupFigures) -> str:
    """A pass rate with its Wilson 95% interval: 90.0% [84.2-93.8]."""
    ci = group.get("pass_rate_ci95")
    rate = pct(group["pass_rate"])
    return rate if not ci else f"{rate} [{ci[0] * 100:.1f}-{ci[1] * 100:.1f}]"


def _grading_lines(summary: Summary) -> list[str]:
    """Judging cost, undecided rows, and items across repeats: the same in text and Markdown."""
    total = summary["total"]
    lines = []
    unsure = total.get("judge_cost_unknown_rows")
    if total.get("judge_cost_usd") or unsure:
        # "+?": a grader's attempt of unknown cost (a kill -9 cut it off): a lower bound.
        lines.append(f"judging: ${total['judge_cost_usd']:.6f}{'+?' if unsure else ''} (of ${cost_text(total)} spent)")
    if total.get("undecided"):
        lines.append(
            f"undecided: {total['undecided']} row(s) with a check whose grader failed "
            "(neither pass nor fail; not in the pass rate)"
        )
    items = summary.get("items")
    if items:
        gate = items["gate"]
        rule = f"at least {gate['min']} of {gate['of']} repeats" if gate else "every repeat"
        lines.append(
            f"items: {items['count']}, {items['passed']} pass ({rule}), {items['failed']} fail, "
            f"{items['undecided']} undecided; flaky (passed and failed across repeats): {items['flaky_count']}"
        )
        for item in items["flaky"]:
            shown = ", ".join(f"{k}={v}" for k, v in item["vars"].items())
            lines.append(
                f"  flaky {item['model']} / {item['prompt_id']} [{shown[:60]}]: "
                f"passed {item['passed']} of {item['graded']}"
            )
    return lines


def _table_rows(summary: Summary) -> tuple[list[str], list[list[str]]]:
    header = [
        "model",
        "ok",
        "error",
        "skipped",
        "tokens",
        "cost $",
        "p50 ms",
        "p95 ms",
        "tries/row",
        "pass [95% CI]",
        "score",
    ]
    rows = []
    for name, g in [*summary["models"].items(), ("TOTAL", summary["total"])]:
        rows.append(
            [
                name,
                str(g["ok"]),
                str(g["error"]),
                str(g["skipped"]),
                f"{g['prompt_tokens'] + g['completion_tokens']:,}",
                # "+?": some rows' costs are unknown, so the figure is a lower bound, not a total.
                cost_text(g),
                ms(g["latency_p50_ms"]),
                ms(g["latency_p95_ms"]),
                "-" if g["attempts_per_row"] is None else f"{g['attempts_per_row']:.2f}",
                _fmt_rate_ci(g),
                pct(g["mean_score"]),
            ]
        )
    return header, rows


def render_text(summary: Summary) -> str:
    header, rows = _table_rows(summary)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in [header, *rows]
    ]
    if any(g["pass_rate"] is not None for g in summary["prompts"].values()):
        lines.append(
            "pass rate by prompt: "
            + ", ".join(
                f"{name} {_fmt_rate_ci(g)}" for name, g in summary["prompts"].items() if g["pass_rate"] is not None
            )
        )
    if summary["worst_prompts"]:
        lines.append("worst prompts: " + ", ".join(summary["worst_prompts"]))
    for example in summary["failing_examples"]:
        lines.append(f"  failed {example['model']} / {example['prompt_id']} [{example['id'][:8]}]: {example['why']}")
    failing = summary["total"]["checked"] - summary["total"]["passed"]
    if failing > len(summary["failing_examples"]):
        lines.append(
            f"  ... and {failing - len(summary['failing_examples'])} more failing row(s): "
            "`batchrun report RESULTS --json`, or the rows' `checks`, say why"
        )
    lines += _grading_lines(summary)
    if summary["error_kinds"]:
        lines.append("errors: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["error_kinds"].items())))
    if summary["skip_reasons"]:
        lines.append("skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["skip_reasons"].items())))
    # After a resume the file's rows cost more than this run spent: each figure says which it is.
    cache_line = render_cache(summary)
    if cache_line:
        lines.append(cache_line)
    if summary.get("estimate_usd") is not None:
        lines.append(
            f"this run: worst case ${summary['estimate_usd']:.6f}, spent ${summary.get('spent_usd') or 0.0:.6f}"
        )
    if summary.get("spent_before_usd"):
        lines.append(
            f"earlier runs of this file spent ${summary['spent_before_usd']:.6f}; "
            f"all rows in the file cost ${cost_text(summary['total'])}{held_note(summary['total'])}"
        )
    lines += key_gap_lines(summary)
    budget = summary.get("budget_usd")
    if budget is not None:
        spent = summary.get("spent_usd") or 0.0
        lines.append(
            f"budget left for this run: spent ${spent:.6f} of ${budget:.6f} (${max(0.0, budget - spent):.6f} left)"
        )
    lines += batch_hold_lines(summary)
    lines += _reconciliation_lines(summary)
    key = summary.get("isolated_key")
    if key:
        charged = "unknown" if key["usage_usd"] is None else f"${key['usage_usd']:.6f}"
        lines.append(
            f"per-run key {key['label']} ({key['hash_prefix']}...): charged {charged}, "
            f"{key['removed'] or 'NOT removed'}"
        )
    if summary.get("routing_warning"):
        lines.append(f"warning: {summary['routing_warning']}")
    if summary.get("stop"):
        lines.append(
            f"stopped: {summary['stop']}" + (f" ({summary['stop_message']})" if summary.get("stop_message") else "")
        )
    if summary.get("output"):
        lines.append(f"results: {summary['output']}")
    return "\n".join(lines)


def _reconciliation_lines(summary: Summary) -> list[str]:
    rec = summary.get("reconciliation")
    if not rec:
        return []
    lines = []
    if rec.get("unknown_cost_attempts"):
        attributed = rec.get("unattributed_usd")
        lines.append(
            f"{rec['unknown_cost_attempts']} attempt(s) may have been billed at an unknown cost "
            f"(held at up to ${rec['unknown_cost_held_usd']:.6f})"
            + ("" if attributed is None else f"; the key's usage attributes ${attributed:.6f} to them")
        )
    if rec.get("resolved_after_record_attempts"):
        # Those rows were appended again with the cost (_late_costs): the records say it too.
        lines.append(
            f"{rec['resolved_after_record_attempts']} attempt(s) recorded with an unknown cost were looked up "
            f"after their rows were written: ${rec['resolved_after_record_usd']:.6f} "
            f"(their rows were written again with it; {summary['total'].get('cost_unknown_rows', 0)} row(s) "
            "still have an unknown cost)"
        )
    if rec.get("warning"):
        lines.append(f"warning: {rec['warning']}")
    return lines


def render_markdown(summary: Summary, title: str | None = None) -> str:
    header, rows = _table_rows(summary)
    lines = [
        f"### {title or 'batchrun: ' + str(summary.get('job'))}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
    lines += [f"- {line.strip()}" for line in _grading_lines(summary)]
    if summary["worst_prompts"]:
        lines.append("**Worst prompts:** " + ", ".join(f"`{p}`" for p in summary["worst_prompts"]))
    for example in summary["failing_examples"]:
        lines.append(f"- `{example['model']}` / `{example['prompt_id']}`: {example['why']}")
    if summary.get("routing_warning"):
        lines.append(f"**Warning:** {summary['routing_warning']}")
    cache_line = render_cache(summary)
    if cache_line:
        lines.append(f"**{cache_line[:6]}**{cache_line[6:]}")
    for line in key_gap_lines(summary) + batch_hold_lines(summary) + _reconciliation_lines(summary):
        lines.append(f"**Cost:** {line}")
    if summary.get("stop"):
        lines.append(f"**Stopped:** {summary['stop']} {summary.get('stop_message') or ''}")
    return "\n".join(lines) + "\n"
