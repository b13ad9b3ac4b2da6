"""Sending judge requests: first-class requests through the run's throttle, ledger and retries.

A `GraderPool` is given the run's own throttle, ledger, cost model, retry policy and
client (so the isolated key, the budget and the shared 429 cooldown all apply), and grades
one row's judge checks after its answer arrived. `report --job` builds one of its own
around a fresh ledger holding `--budget`.

A grader that fails (an error after retries, a reply that is not a verdict, no money
left, a stopped run) makes its check `error`, never `fail`: see _checks.ungraded.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ._checks import Answer, is_judge, ungraded
from ._client import ChatResult, OpenRouterClient
from ._clock import Clock
from ._costs import CostModel
from ._exceptions import AuthFailed, CreditExhausted, RateLimited, RequestFailed
from ._judge import GraderSettings, VerdictError, aggregate, answer_text, grader_body, parse_verdict
from ._ledger import BudgetExhausted, CreditLedger
from ._limiter import Throttle
from ._matrix import Request, encode_body
from ._retry import AttemptLog, RetryPolicy, call_with_retries

StopHook = Callable[[str, str], None]


async def throttled_chat(
    throttle: Throttle, client: OpenRouterClient, clock: Clock, request: Request
) -> tuple[ChatResult, float]:
    """One attempt through the throttle; returns the answer and this attempt's latency in s."""
    started = await throttle.acquire(request.model)
    try:
        result = await client.chat(request.payload, row_id=request.id)
    except RateLimited as failure:
        throttle.rate_limited(
            request.model, started, failure.retry_after, pace=failure.paces, limit_wait=failure.limit_wait
        )
        raise
    finally:
        await throttle.release(request.model)
    throttle.succeeded(request.model)
    return result, clock.monotonic() - started


def grader_request(row_id: str, index: int, body: dict[str, Any]) -> Request:
    payload = encode_body(body)
    fingerprint = hashlib.sha256(payload).hexdigest()[:20]
    # The id ties the grader's request to its row in server logs (X-Batchrun-Row).
    return Request(f"{row_id}.j{index}", fingerprint, body["model"], "judge", {}, 0, body, payload, [])


@dataclass
class GraderPool:
    settings: GraderSettings
    client: OpenRouterClient
    throttle: Throttle
    ledger: CreditLedger
    costs: CostModel | None
    policy: RetryPolicy
    clock: Clock
    on_stop: StopHook
    stopped: Callable[[], str | None]  # the run's stop reason, if it is stopping
    limit_from_key: Callable[[], bool] = lambda: False
    attempt: Callable[[Request], Awaitable[tuple[ChatResult, float]]] | None = None

    async def _send(self, request: Request) -> tuple[ChatResult, float]:
        if self.attempt is not None:
            return await self.attempt(request)
        return await throttled_chat(self.throttle, self.client, self.clock, request)

    async def verdict(self, request: Request) -> dict[str, Any]:
        """One grader's verdict, with its cost and generation id; `error` when there is none."""
        model = request.model
        stop = self.stopped()
        if stop is not None:
            return {"model": model, "error": f"not graded: the run stopped ({stop})", "cost": None}
        worst = self.costs.worst_case(request) if self.costs else None
        try:
            reservation = await self.ledger.reserve(worst or 0.0)
        except BudgetExhausted:
            reason = "credits" if self.limit_from_key() else "budget"
            self.on_stop(reason, f"a grader request needs up to ${worst or 0:.6f}")
            return {"model": model, "error": f"not graded: {reason}", "cost": None}
        log = AttemptLog()
        try:
            result, _ = await call_with_retries(lambda: self._send(request), self.policy, self.clock.sleep, log)
        except RequestFailed as failure:
            await self.ledger.release(reservation)
            if isinstance(failure, AuthFailed):
                self.on_stop("auth", f"the API key was refused: {failure.message}")
            elif isinstance(failure, CreditExhausted):
                self.on_stop("credits", failure.message)
            return {"model": model, "error": f"{failure.kind}: {failure.message[:200]}", "cost": 0.0}
        except asyncio.CancelledError:
            await asyncio.shield(self.ledger.release(reservation))
            raise
        # Without a billed cost keep the worst case as spent; a negative one is a lying server.
        cost = result.cost
        spent = max(0.0, cost) if cost is not None else reservation
        await self.ledger.settle(reservation, spent)
        base = {"model": model, "generation_id": result.generation_id, "cost": spent}
        try:
            return {**base, **parse_verdict(result.content)}
        except VerdictError as exc:
            return {**base, "error": str(exc)}

    async def judge_row(
        self, row_id: str, checks: list[dict[str, Any]], question: str, answer: Answer
    ) -> tuple[dict[int, dict[str, Any]], float]:
        """Results of a row's judge checks by index, and what grading it cost."""
        shown = answer_text(answer.content, answer.tool_calls)
        results: dict[int, dict[str, Any]] = {}
        total = 0.0
        for index, check in enumerate(checks):
            if not is_judge(check):
                continue
            graders = self.settings.graders_for(check)
            if not graders:
                results[index] = ungraded(check, "no grader: set judge.model or the check's grader")
                continue
            requests = [
                grader_request(row_id, index, grader_body(self.settings, model, question, check["judge"], shown))
                for model in graders
            ]
            verdicts = list(await asyncio.gather(*(self.verdict(r) for r in requests)))
            total += sum(v.get("cost") or 0.0 for v in verdicts)
            results[index] = check_result(check, verdicts, self.settings)
        return results, total


def check_result(check: dict[str, Any], verdicts: list[dict[str, Any]], settings: GraderSettings) -> dict[str, Any]:
    """A judge check's entry in the row: the panel's verdict, and every grader's."""
    passed, score, reason = aggregate(verdicts, settings.aggregate, settings.pass_score)
    entry: dict[str, Any] = {
        "name": check.get("name", "judge"),
        "pass": passed,
        "reason": "",
        "weight": check.get("weight", 1),
    }
    if passed is None:
        entry["error"] = reason
    else:
        if check.get("not"):
            passed = not passed
            reason = "negated: " + reason
        entry["pass"] = passed
        entry["reason"] = "" if passed else reason
    entry["judge"] = {
        "score": score,
        "aggregate": settings.aggregate if len(verdicts) > 1 else None,
        "graders": verdicts,
        "cost": round(sum(v.get("cost") or 0.0 for v in verdicts), 10),
    }
    return entry


def question_of(body: dict[str, Any]) -> str:
    """The question graders see: the row's last user message."""
    messages = body.get("messages") or []
    return next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")


def placeholder_answer(tokens: int) -> str:
    """For the worst case before an answer exists: prompt tokens are estimated at one per 2
    characters, so 2 characters per token of the answer's completion cap."""
    return "x" * (2 * tokens)


def judge_requests_for(request: Request, settings: GraderSettings, answer_tokens: int) -> list[Request]:
    """The grader requests a row will need at most, with a worst-case answer (for `plan`)."""
    out = []
    answer = placeholder_answer(answer_tokens)
    question = question_of(request.body)
    for index, check in enumerate(request.checks):
        if is_judge(check):
            for model in settings.graders_for(check):
                body = grader_body(settings, model, question, check["judge"], answer)
                out.append(grader_request(request.id, index, body))
    return out
