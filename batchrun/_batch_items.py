"""A collected batch's rows, written: each from its result item, as sync mode writes its rows."""

from __future__ import annotations

import asyncio
import contextlib

from ._batch_api import BatchInfo, BatchItem, end_failure
from ._batch_state import BatchEntry
from ._checks import answer_of, grade, is_judge, without_latency_checks
from ._matrix import Request
from ._retry import AttemptLog
from ._row import RowGrading, answer_fields, first_failure
from ._row_cost import RowCharges, skipped_fields
from ._status import Status
from ._worker_pool import Runner


async def write_items(
    runner: Runner,
    entry: BatchEntry,
    due: list[tuple[Request, BatchItem | None, RowCharges]],
    info: BatchInfo,
    time_left: float | None,
) -> None:
    """The rows of a collected batch, graded as sync rows are: `concurrency` at a time, each cut
    at a stop's grace, and the deadline (`time_left`) stops the run while graders are out (one
    at a time and never cut, a grader that hung held the run hours past its deadline, exit 1 not
    6: break64 F1, F2). On the loop's clock: a sleep on the run's (a test's fake one) would move
    its time for everyone."""
    turns = asyncio.Semaphore(runner.config.settings.concurrency)
    stop = runner.stops.deadline_reached
    # Only graders take time: rows written without one are no stop for a deadline that passed
    # before their poll (out-185 F2: the last submission's 202 came after it, and the first
    # batch's collection then stopped the run at exit 6 where it was a submit tick's 10).
    graded = any(is_judge(c) for request, item, _ in due if item and item.result for c in request.checks)
    timer = (
        None if time_left is None or not graded else asyncio.get_running_loop().call_later(max(0.0, time_left), stop)
    )

    async def write(request: Request, item: BatchItem | None, charges: RowCharges) -> None:
        async with turns:
            with contextlib.suppress(TimeoutError):  # written all the same (write_item's finally)
                async with runner.stops.row_time():
                    await write_item(runner, entry, request, item, info, charges)

    try:
        async with asyncio.TaskGroup() as group:
            for request, item, charges in due:
                group.create_task(write(request, item, charges))
    except BaseExceptionGroup as failed:
        raise first_failure(failed) from None
    finally:
        if timer is not None:
            timer.cancel()


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
            fields = skipped_fields(charges)
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
        answer = answer_of(record)  # as written: a cost estimated or unknown is known as such
        if any(is_judge(c) for c in checks):
            grading = RowGrading(request, record, answer, checks=checks)
        else:
            record.update(grade(checks, answer))
    try:
        if grading is not None:
            await runner.judging.grade_row(grading)
    finally:
        # Written whatever ends the grading: the deadline's grace running out (the caller's
        # row_time) leaves the answer, paid for, with its unfinished checks "not graded".
        if grading is not None:
            record = grading.record_now(runner.stop_reason)
        if runner.cache is not None:  # as a sync answer is kept: its own charge (BYOK's whole), one believed
            runner.cache.store_row(request, result, None, record["finished_at"], charges)
        records.emit(request, record)
        records.late.remember(request, record, charges, grading.charges() if grading else None)
