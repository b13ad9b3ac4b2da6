"""A cache hit as its row's record and as its checks see it: nothing sent, nothing spent, the
answer graded as the original was (its latency, cost and tool calls)."""

from __future__ import annotations

from typing import Any

from ._answer import Answer
from ._cache_values import CachedAnswer
from ._checks import grade, without_latency_checks
from ._matrix import Request
from ._row import RowGrading
from ._row_cost import uncharged


def hit_fields(answer: CachedAnswer) -> dict[str, Any]:
    """The fields of a hit's record, in the order of a fresh ok record's: nothing was sent,
    so nothing was spent (cost 0, no cost status); what the answer first cost is
    `cost_saved` (with its `cost_saved_status`)."""
    return {
        "response_model": answer.response_model,
        "provider": answer.provider,
        "service_tier": None,  # the README's null for a hit, not a field left out (break56 F6)
        "generation_id": answer.generation_id,
        "content": answer.content,
        "tool_calls": list(answer.tool_calls) or None,
        "refusal": answer.refusal,
        "reasoning": answer.reasoning,
        "finish_reason": answer.finish_reason,
        "native_finish_reason": answer.native_finish_reason,
        "usage": answer.usage,
        "latency_ms": answer.latency_ms,
        "ttft_ms": None,
        "elapsed_ms": 0.0,
        "attempts": 0,
        "attempt_errors": [],
        "error": None,
        **uncharged(0.0),
        "is_byok": None,
        "upstream_inference_cost": None,
        "abandoned_attempts": None,
        "cached": True,
        "cost_saved": answer.cost,
        "cost_saved_status": answer.cost_status,
        "generated_at": answer.generated_at,
    }


def grade_hit(checks: list[dict[str, Any]], answer: CachedAnswer) -> dict[str, Any]:
    """The checks run on a hit as on the original answer, with its latency and cost. An
    answer first collected in batch mode has no latency: its latency checks are left out,
    as they were then."""
    if answer.latency_ms is None:
        checks = without_latency_checks(checks)
    if not checks:
        return {}
    return grade(checks, graded_answer(answer))


def graded_answer(answer: CachedAnswer) -> Answer:
    """The answer as checks see it: the original latency, cost and tool calls."""
    tokens = answer.usage.get("completion_tokens")
    return Answer(
        answer.content,
        answer.latency_ms,
        answer.cost,
        tokens if isinstance(tokens, int) else None,
        answer.finish_reason,
        answer.tool_calls,
    )


def hit_grading(request: Request, record: dict[str, Any], answer: CachedAnswer) -> RowGrading:
    """A hit's judge checks, to be graded (_judging): the other checks as in `grade_hit`."""
    checks = without_latency_checks(request.checks) if answer.latency_ms is None else request.checks
    return RowGrading(request, record, graded_answer(answer), checks=checks)
