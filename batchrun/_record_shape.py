"""What a results line must hold to be read as a batchrun record.

Readers (report, diff, history, merge, JUnit, re-grading) add up, sort, hash and print a
record's fields. A field of another type (a hand-edited line, another tool's, a corrupt
one) was a traceback in one reader or another (break14b m7, verify20 V8, break21 R1-R6):
such a line is set aside with its reason, like a line that is not JSON.
"""

from __future__ import annotations

import math
from typing import Any

STATUSES = frozenset({"ok", "error", "skipped"})

# The money and time figures of a record: finite and not negative. A bound far above any real
# figure (a worst case held may be huge): three costs of 1.7e308 summed to `inf` in a report,
# shown as "inf" in text and as an unknown cost in JSON (break23 F3).
FIGURE_MAX = 1e100
_FIGURES = (
    "cost",
    "spent",
    "cost_held",
    "cost_known",
    "judge_cost",
    "judge_cost_known",
    "latency_ms",
    "ttft_ms",
    "elapsed_ms",
    "upstream_inference_cost",
)
_TEXTS = (
    "reason",
    "job_fingerprint",
    "checks_fingerprint",
    "shard",
    "fingerprint",
    "content",
    "reasoning",
    "refusal",
    "finish_reason",
    "native_finish_reason",
    "provider",
    "service_tier",
    "response_model",
    "generation_id",
    "cost_status",
    "judge_cost_status",
    "batch_id",
    "started_at",
    "finished_at",
)
_FLAGS = ("passed", "retryable", "cached", "cost_unknown", "is_byok", "cost_doubted")
_OBJECTS = ("usage", "vars", "error", "request")
_LISTS_OF_OBJECTS = ("checks", "attempt_errors", "abandoned_attempts", "tool_calls")


def figure(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (isinstance(value, int) or math.isfinite(value))
        and 0 <= value <= FIGURE_MAX
    )


def whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2**53


def _typed(record: dict[str, Any], names: tuple[str, ...], kind: type | tuple[type, ...]) -> str | None:
    for name in names:
        value = record.get(name)
        if value is not None and not isinstance(value, kind):
            return name
    return None


def head_problem(record: Any) -> str | None:
    """Why a parsed line's head (id, fingerprint, status, reason, retryable, cost, spent) is not
    a record's, or None: what the resume scan's pattern checks on the fast path, checked on
    lines it reads one by one (break35 F7: a `"cost": "cheap"` line was its row's last record
    for the resume, and set aside by every other reader)."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if not isinstance(record.get("id"), str):
        return "no 'id' string"
    if record.get("status") not in STATUSES:
        return "no status ok, error or skipped"
    for name in ("cost", "spent"):
        if record.get(name) is not None and not figure(record[name]):
            return f"{name!r} is not a number from 0 to {FIGURE_MAX:g}"
    if (wrong := _typed(record, ("fingerprint", "reason"), str) or _typed(record, ("retryable",), bool)) is not None:
        return f"{wrong!r} is not of its type"
    return None


def record_problem(record: Any) -> str | None:
    """Why a parsed line is not a batchrun record, or None when it has the fields readers use."""
    if not isinstance(record, dict):
        return "not a JSON object"
    for name in ("id", "job", "model", "prompt_id"):
        if not isinstance(record.get(name), str):
            return f"no {name!r} string"
    status = record.get("status")
    if not isinstance(status, str) or status not in STATUSES:
        return "no status ok, error or skipped"
    for name in _FIGURES:
        value = record.get(name)
        if value is not None and not figure(value):
            return f"{name!r} is not a number from 0 to {FIGURE_MAX:g}"
    for name in ("attempts", "repeat"):  # repeat: the item tally's int() was a traceback (verify20 V8)
        if record.get(name) is not None and not whole(record[name]):
            return f"{name!r} is not a whole number"
    for names, kind, what in ((_TEXTS, str, "text"), (_FLAGS, bool, "true or false"), (_OBJECTS, dict, "an object")):
        if (wrong := _typed(record, names, kind)) is not None:
            return f"{wrong!r} is not {what}"
    for name in _LISTS_OF_OBJECTS:
        value = record.get(name)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
            return f"{name!r} is not a list of objects"
    return _inner_problem(record)


def _inner_problem(record: dict[str, Any]) -> str | None:
    usage = record.get("usage") or {}
    for name in ("prompt_tokens", "completion_tokens"):
        if usage.get(name) is not None and not whole(usage[name]):
            return f"'usage.{name}' is not a whole number"
    if record.get("score") is not None and not (figure(record["score"]) and record["score"] <= 1):
        return "'score' is not a number from 0 to 1"  # a weighted share of the checks
    error = record.get("error") or {}
    if (wrong := _typed(error, ("message", "kind"), str)) is not None:
        return f"'error.{wrong}' is not text"
    if error.get("http_status") is not None and not whole(error["http_status"]):
        return "'error.http_status' is not a whole number"
    for number, check in enumerate(record.get("checks") or [], start=1):
        where = f"'checks' entry {number}"
        if not isinstance(check.get("name"), str):
            return f"{where} has no 'name' text"
        if check.get("pass") is not None and not isinstance(check["pass"], bool):
            return f"{where}: 'pass' is not true, false or null"
        if (wrong := _typed(check, ("reason", "error"), str)) is not None:
            return f"{where}: {wrong!r} is not text"
        if check.get("weight") is not None and not figure(check["weight"]):
            return f"{where}: 'weight' is not a number of at least 0"
    checks = record.get("checks")
    if record["status"] == "ok" and checks:
        # Readers count `passed`: edited to true over failed checks, a row passed the report
        # and made a "significant" improvement in diff (break27 m4). The rule is verdict_of's.
        verdicts = [check.get("pass") for check in checks]
        agreed = row_verdict(verdicts)
        # A file written before a failed check outranked an undecided one holds null there.
        legacy = agreed is False and None in verdicts and record.get("passed") is None
        if record.get("passed") != agreed and not legacy:
            return "'passed' does not agree with its checks"
    return None


def row_verdict(verdicts: list[bool | None]) -> bool | None:
    """A row's `passed` from its checks' `pass`: False when one failed, whatever a check not
    decided would say (a known failure was undecided beside a grader's error, out of the pass
    rate: break61 F1); None when none failed and one is undecided; else True."""
    if False in verdicts:
        return False
    return None if None in verdicts else True
