"""Sending judge requests: first-class requests of the run that grades with them.

A grader request goes through the same `Runner` as the rows (`Judging` holds it): the
model stops and blocked scopes, the key refresh, a worst-case reservation in the ledger,
the throttle and shared 429 cooldowns, the retry policy and deadline, held reservations
for attempts that may have been billed, cost lookups and `cost_status` (_charges), and
the classification of failures (a refused key or an empty purse stops the run). So the
isolated key, the budget, resume and shards apply as they do to rows. `report --job`
re-grades through a Runner of its own whose ledger holds `--budget` (_regrade).

A grader that fails (an error after retries, a reply that is not a verdict, no money
left, a stopped run) makes its check `error`, never `fail`: see _checks.ungraded.

Where a verdict is recorded: with its row (one record per row, as ever). The check's
entry carries `judge: {score, aggregate, graders: [{model, pass, score, reason,
generation_id, cost, cost_status} | {model, error, ...}], cost}`; the row carries
`judge_cost` and `judge_cost_status` next to its own `cost` (the answer's).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from ._cache_session import CacheSession
from ._checks import is_judge, ungraded
from ._dispatch import Dispatcher
from ._exceptions import AuthFailed, CreditExhausted, NotSent, RequestFailed
from ._formats import utc
from ._judge import GraderSettings, VerdictError, aggregate, answer_text, grader_body, parse_verdict
from ._ledger import BudgetExhausted
from ._matrix import Request, encode_body
from ._row import Row, RowGrading, first_failure, settled
from ._status import Status
from ._stops import Stops


def grader_request(row_id: str, index: int, body: dict[str, Any]) -> Request:
    payload = encode_body(body)
    fingerprint = hashlib.sha256(payload).hexdigest()[:20]
    # The id ties the grader's request to its row in server logs (X-Batchrun-Row).
    return Request(f"{row_id}.j{index}", fingerprint, body["model"], "judge", {}, 0, body, payload, [])


class Judging:
    """Grades rows' judge checks with grader requests sent like rows' (_dispatch)."""

    def __init__(
        self, dispatch: Dispatcher, stops: Stops, cache: CacheSession | None, settings: GraderSettings
    ) -> None:
        self.dispatch = dispatch
        self.stops = stops
        self.cache = cache
        self.settings = settings
        # With the cache on, the grader requests in flight, by body: an identical one asked
        # meanwhile (two models or two repeats giving the same answer) waits for its verdict and
        # is then a hit, where both were paid.
        self._asked: dict[bytes, asyncio.Future[None]] = {}

    async def grade_row(self, grading: RowGrading) -> None:
        """Grade each judge check of the row in turn (its graders at once); results go into
        `grading.judged` as they come, so a row cut short keeps the ones finished."""
        request = grading.request
        shown = answer_text(grading.answer.content, grading.answer.tool_calls)
        question = question_of(request.body)
        for index, check in enumerate(grading.applied):
            if not is_judge(check) or index in grading.judged:  # decided already (a resume's, _ungraded)
                continue
            graders = self.settings.graders_for(check)
            if not graders:
                grading.judged[index] = ungraded(check, "no grader: set judge.model or the check's grader")
                continue
            kept = {v["model"]: v for v in grading.kept.get(index, ())}
            sent = [
                grader_request(request.id, index, grader_body(self.settings, model, question, check["judge"], shown))
                for model in graders
                if model not in kept
            ]
            # A task group: if one grader fails unexpectedly, the others are cancelled (and
            # settle their reservations), never left running past the row.
            tasks: list[asyncio.Task[dict[str, Any]]] = []
            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(self._verdict(grader, grading)) for grader in sent]
            except BaseExceptionGroup as failed:
                raise first_failure(failed) from None
            except BaseException:
                # Cut short (a stop's grace ran out): the graders that answered, paid for, keep
                # their verdicts in the record; a resume asks only the others (break43 F6).
                cut = f"not graded: the run stopped ({self.stops.reason or 'interrupted'})"
                done = {
                    g.model: t.result()
                    for g, t in zip(sent, tasks, strict=False)  # no task yet: none done
                    if t.done() and not t.cancelled() and not t.exception()
                }
                if kept or done:  # none answered: the check is "not graded" as a whole (record_now)
                    verdicts = [kept.get(m) or done.get(m) or {"model": m, "error": cut} for m in graders]
                    grading.judged[index] = check_result(check, verdicts, self.settings)
                raise
            new = {g.model: t.result() for g, t in zip(sent, tasks, strict=True)}
            grading.judged[index] = check_result(check, [kept.get(m) or new[m] for m in graders], self.settings)

    async def _verdict(self, request: Request, grading: RowGrading) -> dict[str, Any]:
        """One grader's verdict with its cost; `error` instead when there is none."""
        if not self.stops.free_now():
            return {"model": request.model, "error": f"not graded: the run stopped ({self.stops.reason})"}
        twin = self._asked.get(request.payload)
        if twin is not None:
            # Shielded: this request cancelled (a stop's grace) never cancels the other one.
            await asyncio.shield(twin)
            return await self._verdict(request, grading)  # its verdict is stored now, or it had none
        # Free: it needs neither budget nor the grader, after a stop for money too (verify66 2).
        cached = self._cached_verdict(request)
        if cached is not None:
            return cached
        if self.cache is None:
            return await self._asked_verdict(request, grading)
        self._asked[request.payload] = asked = asyncio.get_running_loop().create_future()
        try:
            return await self._asked_verdict(request, grading)
        finally:
            del self._asked[request.payload]
            asked.set_result(None)

    async def _asked_verdict(self, request: Request, grading: RowGrading) -> dict[str, Any]:
        """A grader's verdict asked of the grader: budget, stops and charges as a row's."""
        dispatch, stops = self.dispatch, self.stops
        model = request.model
        if stops.reason is not None:
            return {"model": model, "error": f"not graded: the run stopped ({stops.reason})"}
        model_stop = stops.model_stop(model)
        if model_stop is not None:
            return {"model": model, "error": f"not graded: the grader is stopped ({model_stop})"}
        await dispatch.maybe_refresh_key()
        worst = dispatch.worst_case(request)
        row = Row(request, owner=grading.request.id)
        grading.graders.append(row)
        row.reservation = await dispatch.reserve(worst)
        if row.reservation is None or stops.reason is not None:
            await dispatch.release(row)
            return {"model": model, "error": f"not graded: the run stopped ({stops.reason or 'budget'})"}
        try:
            result, _ = await dispatch.send_with_retries(row, worst)
        except (RequestFailed, BudgetExhausted, NotSent) as failure:
            await dispatch.release(row)
            if isinstance(failure, BudgetExhausted):
                dispatch.budget_stop(worst)  # before lookups free holds: what was left then
            await dispatch.charges.look_up_row(row.charges)
            if isinstance(failure, NotSent) and stops.reason is None and stops.model_stop(model) is not None:
                why = f"not graded: the grader is stopped ({stops.model_stop(model)})"
            elif isinstance(failure, BudgetExhausted | NotSent):
                why = f"not graded: the run stopped ({stops.reason or 'budget'})"
            else:
                status, _ = stops.react(request, failure, stops.too_long(failure))
                why = f"{failure.kind}: {failure.message[:200]}"
                # A limit or a server's wait that closed the grader's scope (a row would be skipped):
                # it was never graded, as for the graders behind it, and a resume asks again
                # (verify25 N1; verify47: a capacity wait's grader was "failed", exit 1).
                if status == Status.SKIPPED and stops.model_stop(model) is not None:
                    why = f"not graded: the grader is stopped ({stops.model_stop(model)}): {why}"
                elif isinstance(failure, AuthFailed | CreditExhausted):
                    # The refusal that stopped the run is no failure of the grader's: as the
                    # graders behind it, a resume with the key or the credits fixed asks again
                    # (break64 F4: that one check stayed undecided for ever, exit 1 on every resume).
                    why = f"not graded: the run stopped ({stops.reason or failure.kind}): {why}"
            return {"model": model, "error": why, **_cost_of(row)}
        except BaseException:  # cancelled (a stop's grace ran out), or a bug: settle, then go on up
            dispatch.hold_in_flight(row)  # abandoned in flight: it may still be billed (streaming.mdx)
            await dispatch.release(row)
            raise

        async def settle() -> None:
            await dispatch.charge_answer(row, result)
            await dispatch.charges.look_up_row(row.charges)

        try:
            await settled(settle())
        except BaseException:  # the charge failed before it took the reservation: held, not leaked
            dispatch.hold_in_flight(row)
            await dispatch.release(row)
            raise
        base = {"model": model, "generation_id": result.generation_id, **_cost_of(row)}
        cut = " (cut at its max_tokens: raise judge.params.max_tokens)"
        try:
            verdict = {**base, **parse_verdict(result.content)}
        except VerdictError as exc:
            return {**base, "error": str(exc) + (cut if result.finish_reason == "length" else "")}
        if result.finish_reason == "length":
            # Whole JSON, yet not the grader's whole answer: no verdict to gate on (out-150 2: a fail).
            return {**base, "error": "not a whole verdict" + cut}
        if self.cache is not None:  # only a verdict is worth keeping, never a reply that was none
            self.cache.store_row(request, result, None, utc(dispatch.clock.time()), row.charges)
        return verdict

    def _cached_verdict(self, request: Request) -> dict[str, Any] | None:
        """With the response cache on, a grader request sent before (the same grader, prompt,
        rubric and answer, byte for byte) is answered from it: free, and marked `cached`."""
        cache = self.cache
        stored = cache.lookup(request, unplanned=True) if cache is not None else None
        if stored is None:
            return None
        try:
            verdict = parse_verdict(stored.content)
        except VerdictError:
            return None  # not stored by a grading run: ask the grader
        return {
            "model": request.model,
            "generation_id": stored.generation_id,
            "cost": 0.0,
            "cost_status": None,
            "cached": True,
            "cost_saved": stored.cost,
            "cost_saved_status": stored.cost_status,  # `estimated`: an upper bound (out-160 F4)
            **verdict,
        }


def _cost_of(row: Row) -> dict[str, Any]:
    if not row.charges.parts:
        return {"cost": 0.0, "cost_status": None}
    fields = row.charges.fields()
    cost = {"cost": fields["cost"], "cost_status": fields["cost_status"]}
    if byok := [part for part in row.charges.parts if part.is_byok]:
        # Its provider's charge beside OpenRouter's fee: a resume that learns a panel's other
        # grader sums the row's `judge_cost` from the entries (_earlier_costs, out-120 F3).
        upstream = sum(part.upstream_inference_cost or 0.0 for part in byok)
        cost.update(is_byok=True, upstream_inference_cost=upstream)
    if fields["cost_unknown"]:
        # What is held for it, and any attempt given up before it answered: a resume looks up a
        # grader of one attempt by its id (_earlier_costs; out-117 F3: held for good before).
        cost["cost_held"] = fields["cost_held"]
        if fields["abandoned_attempts"]:
            cost["abandoned_attempts"] = fields["abandoned_attempts"]
    answer = row.charges.answer
    if answer is not None and answer.doubted and answer.cost is not None:
        # A grader's $9,999 no lookup confirmed: said, with what it counted, so a resume can look it
        # up and give the rest back (out-118 F2: the row's judge_cost held it for good).
        upstream = (answer.upstream_inference_cost or 0.0) if answer.is_byok else 0.0
        cost.update(cost_doubted=True, doubted_cost=answer.cost, doubted_charged=answer.cost + upstream)
    return cost


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
    costs = [v.get("cost") for v in verdicts]
    entry["judge"] = {
        "score": score,
        "aggregate": settings.aggregate if len(verdicts) > 1 else None,
        "graders": verdicts,
        # Null when a grader's cost is unknown: never shown as less than it was.
        "cost": None if any(c is None for c in costs) else round(sum(c or 0.0 for c in costs), 10),
    }
    return entry


def question_of(body: dict[str, Any]) -> str:
    """The question graders see: the row's last user message (its text parts, joined)."""
    messages = body.get("messages") or []
    content = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content)


# Bytes per token of an answer not yet written, for `plan`. No number bounds it (one token
# can be many characters); English text averages about 4. When a grader request is sent,
# the ledger reserves the worst case of the real answer, whatever its length.
PLAN_BYTES_PER_TOKEN = 4


def placeholder_answer(tokens: int) -> str:
    """An answer of `tokens` tokens for `plan`'s worst case, before any answer exists."""
    return "x" * (PLAN_BYTES_PER_TOKEN * tokens)


def judge_requests_for(
    request: Request, settings: GraderSettings, answer_tokens: int, answer: str | None = None
) -> list[Request]:
    """The grader requests a row will need at most, with a worst-case answer (for `plan`), or
    those of `answer` (as the checks see it: answer_text) where it is known."""
    out = []
    answer = placeholder_answer(answer_tokens) if answer is None else answer
    question = question_of(request.body)
    for index, check in enumerate(request.checks):
        if is_judge(check):
            for model in settings.graders_for(check):
                body = grader_body(settings, model, question, check["judge"], answer)
                out.append(grader_request(request.id, index, body))
    return out
