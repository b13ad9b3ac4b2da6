"""One dispatched row while the runner works on it, and the record fields it is made of.

The runner gives each dispatched request a `Row` and writes exactly one record for it:
the answer's fields (`answer_fields`), a failure's, or, when something cut it short, a
skipped or `internal` record (`cut_short_fields`, `internal_error`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from ._answer import Answer
from ._checks import grade, is_judge, ungraded
from ._client import ChatResult, Flight
from ._matrix import Request
from ._reader import spent_on
from ._retry import AttemptLog
from ._row_cost import RowCharges, counted
from ._scrub import Scrubber


@dataclass
class Row:
    """One dispatched request while it runs: what its single record needs."""

    request: Request
    log: AttemptLog = field(default_factory=AttemptLog)
    started: float | None = None
    reservation: float | None = None  # held in the ledger until settled or released
    sent: bool = False  # a request went out: it may be billed even if abandoned
    written: bool = False
    charges: RowCharges = field(default_factory=RowCharges)  # what each attempt cost (issue 14)
    grading: RowGrading | None = None  # answered, its judge checks being graded (issue 17)
    flight: Flight = field(default_factory=Flight)  # the attempt in flight (its generation id)
    owner: str | None = None  # a grader request's: the row it grades (whose record covers its attempts)
    hit: Any = None  # the cache's answer (a CachedAnswer) while its checks are graded


@dataclass
class RowGrading:
    """A row whose answer is in, while its judge checks are graded."""

    request: Request
    record: dict[str, Any]  # the ok record, checks not yet graded
    answer: Answer
    checks: list[dict[str, Any]] | None = None  # the request's, unless some do not apply
    judged: dict[int, dict[str, Any]] = field(default_factory=dict)  # check index -> result
    # check index -> the verdicts of its graders that answered before a stop cut the panel short:
    # a resume asks only the others (break43 F6: each finished grader was bought twice).
    kept: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    graders: list[Row] = field(default_factory=list)  # every grader request sent for it

    @property
    def applied(self) -> list[dict[str, Any]]:
        return self.request.checks if self.checks is None else self.checks

    def record_now(self, stopped: str | None = None, why: str | None = None) -> dict[str, Any]:
        """The row's record: judge checks not graded yet (the run `stopped`, or `why` not)
        are `error`, so the row neither passes nor fails."""
        checks = self.applied
        judged = dict(self.judged)
        why = why or f"not graded: the run stopped ({stopped or 'interrupted'})"
        for index, check in enumerate(checks):
            if is_judge(check) and index not in judged:
                judged[index] = ungraded(check, why)
        charges = self.charges()
        # The row's `spent` (in the record head, what a resume counts) includes its grading.
        return {
            **self.record,
            "spent": spent_on(self.record) + grading_spent(charges),  # a re-graded old record may lack it
            **judge_cost_fields(charges),
            **grade(checks, self.answer, judged),
        }

    def charges(self) -> RowCharges:
        """Every grader attempt's charge: the row's `judge_cost`."""
        return RowCharges([part for grader in self.graders for part in grader.charges.parts])


def grading_spent(charges: RowCharges) -> float:
    """What a row's grading counts as spent: its graders' charges (BYOK upstream costs too), or
    while one is unknown what is held for them."""
    charged = charges.charged
    return charged if charged is not None else counted(charges.fields())


def judge_cost_fields(charges: RowCharges) -> dict[str, Any]:
    """A record's judge cost fields from its graders' charges."""
    costs = charges.fields()
    return {
        "judge_cost": charges.charged,  # 0 when no grader was sent, None while one's is unknown
        "judge_cost_status": costs["cost_status"],
        "judge_cost_known": costs["cost_known"],
    }


def answer_fields(result: ChatResult) -> dict[str, Any]:
    """The fields of an ok record that come from the answer, in record order."""
    return {
        "response_model": result.model,
        "provider": result.provider,
        "service_tier": result.service_tier,  # what the answer was billed at (break32 m3)
        "generation_id": result.generation_id,
        "content": result.content,
        "tool_calls": list(result.tool_calls) or None,  # as _reply parsed and scrubbed them
        "refusal": result.refusal,
        "reasoning": result.reasoning,
        "finish_reason": result.finish_reason,
        "native_finish_reason": result.native_finish_reason,
        "usage": result.usage,
    }


def internal_error(error: BaseException, scrub: Scrubber) -> dict[str, Any]:
    """An unexpected exception as a row's error: its type and text, scrubbed, cut."""
    message = scrub.text(f"{type(error).__name__}: {error}")[:300]
    return {"kind": "internal", "http_status": None, "message": message}


def first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real failure in a task group's exceptions (cancellations come last)."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        item = pending.pop(0)
        if isinstance(item, BaseExceptionGroup):
            pending.extend(item.exceptions)
        else:
            leaves.append(item)
    leaves.sort(key=lambda e: isinstance(e, asyncio.CancelledError))
    return leaves[0]


async def settled(work: Coroutine[Any, Any, None]) -> None:
    """Settle and record a row whose outcome is in. A cancel (the grace is over) waits for
    this bookkeeping, a cost lookup at most, so the record keeps what the row cost."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise
