"""Rows a stop left ungraded: their answers kept, their judge checks graded on `--resume`.

A SIGTERM or a deadline while a row's graders were out writes the row `ok`, paid for, with
those judge checks "not graded: the run stopped". A resume kept the row (it is answered), so
nothing ever graded it: the file stayed undecided and every later resume exited 1, "a grader
failed" (verify23 N5), while a kill -9 at the same moment was graded on resume. Now a resume
sends the missing graders for the stored answer and writes the row again: a new record whose
answer costs nothing this time (the earlier record's cost is folded into it, _fold) and whose
judge checks are the stored verdicts plus the new ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from ._checks import stored_judgements, without_latency_checks
from ._files import file_mentions
from ._fold import ANSWER_COST
from ._judge import VerdictError, parse_verdict
from ._matrix import Request
from ._pricing import money
from ._reader import final_records
from ._row_cost import uncharged
from ._status import Status
from ._stopped_checks import EITHER, cut_by_stop, stop_text

MAX_KEPT_ERROR = 400  # a grader's failure as the file holds it: more than a run writes, never a file's worth

# What a stored ok record says of its answer, copied into the record written on regrading.
_ANSWER = (
    "response_model",
    "provider",
    "service_tier",
    "generation_id",
    "content",
    "tool_calls",
    "refusal",
    "reasoning",
    "finish_reason",
    "native_finish_reason",
    "usage",
    "latency_ms",
    "ttft_ms",
    "elapsed_ms",
)


def stopped_gradings(output: Path) -> dict[str, dict[str, Any]]:
    """The final records of `output` (costs folded) that are `ok` with a judge check a stop
    left ungraded, by row id. Most files have none: they are read whole only when a line
    mentions such a check."""
    if not file_mentions(output, EITHER):  # one read for both
        return {}
    return {
        record["id"]: record
        for record in final_records(output)
        if record["status"] == Status.OK and any(cut_by_stop(c) for c in record.get("checks") or [])
    }


def applied_checks(record: dict[str, Any], request: Request) -> list[dict[str, Any]]:
    """The checks that apply to a stored answer: a batch answer has no latency to check."""
    return without_latency_checks(request.checks) if record.get("batch_id") else request.checks


def decided(record: dict[str, Any], checks: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The stored judge verdicts that stand (paid for and decided, or a grader's failure):
    every judge check but those a stop left ungraded."""
    return {i: entry for i, entry in stored_judgements(record, checks).items() if not cut_by_stop(entry)}


def kept_verdicts(record: dict[str, Any], checks: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Of each judge check a stop left ungraded, the verdicts of the graders that did answer
    (paid for): a resume asks only the others."""
    kept = {}
    for index, entry in stored_judgements(record, checks).items():
        graders = (entry.get("judge") or {}).get("graders") if isinstance(entry.get("judge"), dict) else None
        if cut_by_stop(entry) and isinstance(graders, list):
            answered = [verdict for verdict in map(_kept, graders) if verdict is not None]
            if answered:
                kept[index] = answered
    return kept


def _kept(grader: Any) -> dict[str, Any] | None:
    """A grader's stored verdict, read as its reply was (`parse_verdict`), its cost as money;
    None for one that is not a verdict (an edited file: that grader is asked again). A grader
    that failed for good before the stop (a reply that is no verdict, paid for) keeps its
    failure, as a check no stop cut does (verify46 N5); one the stop cut is asked again."""
    if not isinstance(grader, dict) or not isinstance(grader.get("model"), str):
        return None
    if "error" in grader:
        error = grader["error"]
        if not isinstance(error, str) or stop_text(error):
            return None
        return {**grader, "error": error[:MAX_KEPT_ERROR], "cost": money(grader.get("cost"))}
    try:
        verdict = parse_verdict(orjson.dumps({name: grader.get(name) for name in ("pass", "score", "reason")}).decode())
    except (VerdictError, TypeError):  # TypeError: orjson's, for an integer past 64 bits
        return None
    return {**grader, **verdict, "cost": money(grader.get("cost"))}


def regraded_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The new record's fields: the stored answer, bought by the earlier record (whose cost is
    folded in by every reader), so nothing of it is bought or held again here."""
    fields: dict[str, Any] = {name: record.get(name) for name in _ANSWER}
    # The attempts that bought it, as the record it replaces said (tries/row read 0.00: break33 m8);
    # its cost is the earlier record's, folded in by every reader.
    attempts = record.get("attempts") if isinstance(record.get("attempts"), int) else 0
    fields.update(attempts=attempts, attempt_errors=[], error=None, **uncharged(0.0))
    fields.update(is_byok=None, upstream_inference_cost=None, abandoned_attempts=None)
    # What its checks grade `max_cost_usd` on: the answer's cost, as the record that bought it had
    # it, never this record's 0 (verify out-103 F1: failed rows passed the gate, exit 0).
    bought = record.get("answer_cost")
    fields["answer_cost"] = bought if isinstance(bought, dict) else {k: record.get(k) for k in ANSWER_COST}
    if record.get("cost_doubted") is True:  # its charge in doubt: max_cost_usd undecided (out-119 F1)
        fields["answer_cost"] = {**fields["answer_cost"], "cost_doubted": True}
    if record.get("batch_id"):
        fields["batch_id"] = record["batch_id"]
    if record.get("cached") is True:  # a hit stays one: it had lost `cached` and its saving (verify66 9)
        fields.update(cached=True, cost_saved=money(record.get("cost_saved")))
        fields.update(cost_saved_status=record.get("cost_saved_status"), generated_at=record.get("generated_at"))
    return fields
