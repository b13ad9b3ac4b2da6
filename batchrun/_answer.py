"""What a check can look at (`Answer`), and the checks on its figures: latency, cost, tokens.

A figure the endpoint did not report, or reported only as a bound, may leave its check
undecided (`NotKnown`): neither pass nor fail. A transport fault that left a cost unknown had
failed right, cheap answers, and the run exited 3 (break66 F1, F2); an estimate, an upper bound,
failed a row whose real cost was under the limit (verify69 F2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

Outcome = tuple[bool, str]


@dataclass(frozen=True)
class Answer:
    """What a check can look at."""

    content: str
    latency_ms: float | None
    cost: float | None
    completion_tokens: int | None
    finish_reason: str | None
    tool_calls: tuple[dict[str, Any], ...] = ()  # [{id, name, arguments}] as the client parsed them
    cost_status: str | None = None  # "estimated": `cost` is an upper bound, not the charge
    cost_held: float | None = None  # with `cost` unknown, at most this (its known parts and worst cases)
    cost_doubted: bool = False  # `cost` as a reply said it, far above its worst case, no lookup confirming it


class NotKnown(NamedTuple):
    """Undecided, not failed: the figure checked was not reported, or only as a bound above the limit."""

    passed: None
    reason: str


def max_latency(answer: Answer, value: Any, check: dict[str, Any]) -> Outcome:
    return (
        answer.latency_ms is not None and answer.latency_ms <= value,
        f"expected latency <= {value} ms, got {answer.latency_ms} ms",
    )


def max_cost(answer: Answer, value: Any, check: dict[str, Any]) -> Outcome | NotKnown:
    cost = answer.cost
    if cost is not None and answer.cost_doubted and cost > value:
        # Not a failure on a figure the run itself does not believe: exit 3 on a night /generation
        # lagged, a pass once a resume looked it up (out-118 F4).
        return NotKnown(None, f"not graded: the answer's cost ${cost} is far above its worst case, unconfirmed")
    if cost is not None and answer.cost_status != "estimated":
        return cost <= value, f"expected cost <= ${value}, got ${cost}"
    bound = cost if cost is not None else answer.cost_held  # what it cost at most
    if bound is not None and bound <= value:
        return True, ""
    if cost is not None:
        return NotKnown(None, f"not graded: the answer's cost is estimated at up to ${cost}, not known")
    return NotKnown(None, "not graded: the answer's cost is not known")


def max_tokens(answer: Answer, value: Any, check: dict[str, Any]) -> Outcome | NotKnown:
    tokens = answer.completion_tokens
    if tokens is None:
        return NotKnown(None, "not graded: the endpoint reported no completion tokens")
    return tokens <= value, f"expected <= {value} completion tokens, got {tokens}"
