"""A collected batch's rows, written: each from its result item, as sync mode writes its rows."""

from __future__ import annotations

from ._batch_api import BatchInfo, BatchItem, end_failure
from ._batch_state import BatchEntry
from ._checks import Answer, grade, is_judge, without_latency_checks
from ._matrix import Request
from ._retry import AttemptLog
from ._row import RowGrading, answer_fields
from ._row_cost import RowCharges, uncharged
from ._status import Status
from ._worker_pool import Runner


async def write_item(
    runner: Runner, entry: BatchEntry, request: Request, item: BatchItem | None, info: BatchInfo, charges: RowCharges
) -> None:
    """One row's record from its batch item and its part of the batch's charge. Judge
    checks are graded by sync grader requests through the runner (_judging), like a sync row's."""
    records = runner.records
    started = entry.intent_at
    log = AttemptLog()
    log.attempts = 1
    if item is None or item.result is None:
        failure = item.failure if item is not None else None
        if failure is None and info.status == "cancelled":
            fields = charges.fields() if charges.parts else uncharged(None)
            record = records.make(request, Status.SKIPPED, "batch_cancelled", True, started, **fields)
        else:
            if failure is None:
                failure = end_failure(info)
            record = records.failure(request, failure, log, started, charges)
        records.emit(request, record)
        records.late.remember(request, record, charges)
        return
    result = item.result
    elapsed_ms = round((runner.clock.time() - started) * 1000, 1)
    costs = charges.fields()
    record = records.make(
        request,
        Status.OK,
        None,
        False,
        started,
        **answer_fields(result),
        latency_ms=None,
        ttft_ms=None,
        elapsed_ms=elapsed_ms,
        attempts=1,
        attempt_errors=[],
        error=None,
        **costs,
        batch_id=entry.batch_id,
    )
    checks = without_latency_checks(request.checks)
    grading = None
    if checks:
        tokens = result.usage.get("completion_tokens")
        answer = Answer(result.content, None, costs["cost"], tokens, result.finish_reason, result.tool_calls)
        if any(is_judge(c) for c in checks):
            grading = RowGrading(request, record, answer, checks=checks)
            await runner.judging.grade_row(grading)
            record = grading.record_now(runner.stop_reason)
        else:
            record.update(grade(checks, answer))
    if runner.cache is not None:  # as a sync answer is kept: its own charge (BYOK's whole), one believed
        runner.cache.store_row(request, result, None, record["finished_at"], charges)
    records.emit(request, record)
    records.late.remember(request, record, charges, grading.charges() if grading else None)
