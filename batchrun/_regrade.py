"""`report --job` with judge checks: re-grade stored answers, graders included, under a budget.

Deterministic checks re-run for free (_checks.regrade). Judge checks cost money, so this
first works out the worst case of every grader request (from the stored answers, so the
estimate is of the real prompt sizes), hands it to the caller to print, then sends them
through a GraderPool of its own: a throttle, retries, and a ledger holding the budget
(`--budget`, `run.budget_usd` and the key's remaining credit, the smallest). When the
budget cannot hold the next grader request, the rest of the judge checks are `error`
("not graded: budget") and the summary's stop says so (exit 5).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._checks import answer_of, grade, is_judge, stored_judgements
from ._client import OpenRouterClient
from ._clock import Clock
from ._costs import CostModel
from ._items import ItemGate
from ._job import Job
from ._judge import answer_text, grader_body
from ._judging import GraderPool, grader_request, question_of
from ._ledger import CreditLedger
from ._limiter import Throttle
from ._matrix import Request, plan_requests
from ._retry import RetryPolicy
from ._summary import SummaryBuilder

if TYPE_CHECKING:
    from ._run import RunOptions


@dataclass
class RegradeEstimate:
    rows: int = 0  # rows with judge checks to re-grade
    requests: int = 0
    worst_usd: float = 0.0
    unknown_price: bool = False


def _judge_rows(records: Iterable[dict[str, Any]], job: Job) -> Iterator[tuple[dict[str, Any], Request | None]]:
    requests = {r.id: r for r in plan_requests(job)}  # one dict entry per row of the job
    for record in records:
        yield record, requests.get(record["id"])


def estimate_regrade(records: Iterable[dict[str, Any]], job: Job, costs: CostModel) -> RegradeEstimate:
    estimate = RegradeEstimate()
    for record, request in _judge_rows(records, job):
        if request is None or record.get("status") != "ok" or not any(is_judge(c) for c in request.checks):
            continue
        estimate.rows += 1
        shown = answer_text(record.get("content") or "", record.get("tool_calls") or ())
        for index, check in enumerate(request.checks):
            if not is_judge(check):
                continue
            for model in job.judge.graders_for(check):
                body = grader_body(job.judge, model, question_of(request.body), check["judge"], shown)
                worst = costs.worst_case(grader_request(request.id, index, body))
                estimate.requests += 1
                estimate.unknown_price = estimate.unknown_price or worst is None
                estimate.worst_usd += worst or 0.0
    return estimate


@dataclass
class RegradeOutcome:
    stop: str | None
    stop_message: str
    spent_usd: float


async def regrade_with_judges(
    records: Iterable[dict[str, Any]],
    job: Job,
    client: OpenRouterClient,
    costs: CostModel | None,
    budget: float | None,
    clock: Clock,
    emit: Callable[[dict[str, Any]], None],
) -> RegradeOutcome:
    """Re-grade every record (judges included) and pass each, in file order, to `emit`."""
    settings = job.run
    stop: list[tuple[str, str]] = []
    pool = GraderPool(
        job.judge,
        client,
        Throttle(settings.concurrency, clock),
        CreditLedger(budget),
        costs,
        RetryPolicy(settings.max_attempts, settings.max_elapsed_s, settings.max_wait_s),
        clock,
        on_stop=lambda reason, message: stop.append((reason, message)) if not stop else None,
        stopped=lambda: stop[0][0] if stop else None,
    )

    async def regrade_one(record: dict[str, Any], request: Request | None) -> dict[str, Any]:
        if request is None or record.get("status") != "ok" or not request.checks:
            return record
        answer = answer_of(record)
        judged = stored_judgements(record, request.checks)
        judge_cost = 0.0
        if any(is_judge(c) for c in request.checks):
            judged, judge_cost = await pool.judge_row(request.id, request.checks, question_of(request.body), answer)
        answer_cost = answer.cost or 0.0
        return {
            **record,
            "cost": round(answer_cost + judge_cost, 12),
            "judge_cost": round(judge_cost, 12),
            **grade(request.checks, answer, judged),
        }

    # Bounded batches keep memory flat on a big file and the order of records as written.
    batch: list[tuple[dict[str, Any], Request | None]] = []
    for pair in _judge_rows(records, job):
        batch.append(pair)
        if len(batch) >= settings.concurrency * 4:
            for record in await asyncio.gather(*(regrade_one(*p) for p in batch)):
                emit(record)
            batch = []
    for record in await asyncio.gather(*(regrade_one(*p) for p in batch)):
        emit(record)
    reason, message = stop[0] if stop else (None, "")
    return RegradeOutcome(reason, message, pool.ledger.spent)


async def regrade_file(
    job: Job,
    options: RunOptions,
    records: Iterable[dict[str, Any]],
    reread: Callable[[], Iterable[dict[str, Any]]],
    gate: ItemGate,
    show_worst_case: Callable[[str], None],
    keep: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """`report --job` with judges, end to end: prices and credit, the worst case (shown before
    anything is spent, from a first pass over `reread()`), then the re-grading of `records`
    within the budget. Returns the summary; `keep` receives each re-graded record."""
    from ._run import check_models, make_client

    settings = job.run
    builder = SummaryBuilder(gate)

    def emit(record: dict[str, Any]) -> None:
        builder.add(record)
        if keep is not None:
            keep(record)

    client = make_client(job, options, settings)
    try:
        models = await client.models()
        key = await client.key_info()
        if models is not None:
            models = (await check_models(job, models, client.model)).models
        costs = CostModel(models, settings.cost_margin) if models is not None else None
        budget = settings.budget_usd
        remaining = key.get("limit_remaining") if key else None
        if isinstance(remaining, (int, float)) and (budget is None or remaining < budget):
            budget = float(remaining)
        if costs is not None:
            worst = estimate_regrade(reread(), job, costs)
            show_worst_case(
                f"re-grading {worst.rows} row(s): {worst.requests} grader request(s), worst case "
                f"${worst.worst_usd:.6f}{' (some prices unknown)' if worst.unknown_price else ''}; budget "
                + ("none" if budget is None else f"${budget:.6f}")
            )
        else:
            show_worst_case("re-grading: the endpoint lists no prices, so no worst case can be shown")
        outcome = await regrade_with_judges(records, job, client, costs, budget, options.clock, emit)
    finally:
        await client.aclose()
    return builder.result(
        stop=outcome.stop,
        stop_message=outcome.stop_message,
        budget_usd=budget,
        spent_usd=round(outcome.spent_usd, 8),
    )
