"""`report --job` with judge checks: re-grade stored answers, graders included, under a budget.

Deterministic checks re-run for free (_gate). Judge checks cost money, so this first prices
the job as a run's pre-flight does (prices per endpoint, the key's credit, the account's
balance with a management key), works out the worst case of every grader request from
the stored answers (the real prompt sizes), hands it to the caller to print, and only
then sends them, through a `Runner` of its own: its throttle, retries, classification,
held reservations and a ledger holding the budget (`--budget`, `run.budget_usd`, the
key's remaining credit: the smallest). When the budget cannot hold the next grader
request, the run stops (`budget`, exit 5) and the judge checks not graded are `error`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ._account import counted_at_end, reconcile_run
from ._checks import answer_of, graded_now, is_judge, stored_judgements
from ._costs import CostModel
from ._cut_off import cleanup_time, wind_down_s, wind_down_within
from ._exceptions import ConfigError
from ._fd_limit import within_fd_limit
from ._items import ItemGate
from ._job import Job
from ._judge import answer_text, grader_body
from ._judging import grader_request, question_of
from ._ledger import CreditLedger
from ._matrix import Request, matrix_requests, run_size_problem
from ._options import RunOptions
from ._preflight import make_client, preflight, unpriced
from ._retry import retry_policy
from ._row import RowGrading
from ._run_control import RunControl
from ._status import Status, StopReason
from ._summary import SummaryBuilder
from ._summary_types import Summary
from ._ungraded import applied_checks
from ._worker_pool import Runner, run_config


@dataclass
class RegradeEstimate:
    rows: int = 0  # rows with judge checks to re-grade
    requests: int = 0
    worst_usd: float = 0.0
    unknown_price: bool = False
    kept: int = 0  # judge verdicts kept: their checks unchanged since they were graded
    changed: int = 0  # of `rows`, those due for checks changed since (or --regrade-all), not undecided verdicts


def kept_verdicts_of(
    record: dict[str, Any], request: Request, checks: list[dict[str, Any]]
) -> dict[int, dict[str, Any]]:
    """The judge verdicts a row holds that stand for its checks now: decided (pass or fail) under
    the same checks, rubric and grader settings (`checks_fingerprint`). The README's CI gate, merge
    then `report --job`, bought every verdict a second time, and gated on that second grading
    (break68 F8); what a grader left undecided is asked again."""
    return {i: e for i, e in held_verdicts_of(record, request, checks).items() if e.get("pass") in (True, False)}


def held_verdicts_of(
    record: dict[str, Any], request: Request, checks: list[dict[str, Any]]
) -> dict[int, dict[str, Any]]:
    """The judge results a row holds under the same checks as now, undecided ones included."""
    if not request.checks_fingerprint or record.get("checks_fingerprint") != request.checks_fingerprint:
        return {}
    return stored_judgements(record, checks)


def _judge_rows(records: Iterable[dict[str, Any]], job: Job) -> Iterator[tuple[dict[str, Any], Request | None]]:
    requests = {r.id: r for r in matrix_requests(job)}  # one dict entry per row of the job
    for record in records:
        request = requests.get(record["id"])
        # An answer to an earlier version of its request is not graded (_gate: stale), nor
        # counted in the worst case shown first (verify27 N2: 4 announced, none sent).
        current = request is not None and record.get("fingerprint") == request.fingerprint
        yield record, request if current else None


def _judged_rows(
    records: Iterable[dict[str, Any]], job: Job, regrade_all: bool
) -> Iterator[tuple[dict[str, Any], Request, list[dict[str, Any]], dict[int, Any]]]:
    """(record, request, checks, verdicts kept) of each answered row a judge check of the job grades."""
    for record, request in _judge_rows(records, job):
        if request is None or record.get("status") != Status.OK or not any(is_judge(c) for c in request.checks):
            continue
        checks = applied_checks(record, request)
        yield record, request, checks, {} if regrade_all else kept_verdicts_of(record, request, checks)


def _all_kept(checks: list[dict[str, Any]], kept: dict[int, Any]) -> bool:
    return all(index in kept for index, check in enumerate(checks) if is_judge(check))


def regrade_kept(
    records: Iterable[dict[str, Any]],
    job: Job,
    gate: ItemGate,
    emit: Callable[[dict[str, Any]], None],
    undecided: bool = False,
) -> Summary:
    """`report --job` when no grader is due: every row graded again with the verdicts it holds
    (out-102 F2: the README's CI gate, without a key, was exit 2 "no API key" for it). With
    `undecided`, when only verdicts a grader left undecided are due and no grader can be asked
    (no key): those are kept undecided, as the run counted them."""
    held = held_verdicts_of if undecided else kept_verdicts_of
    builder = SummaryBuilder(gate)
    for record, request in _judge_rows(records, job):
        if request is not None and record.get("status") == Status.OK:
            checks = applied_checks(record, request)
            record = graded_now(record, checks, held(record, request, checks))
        builder.add(record)
        emit(record)
    return builder.result(budget_usd=job.run.budget_usd, spent_usd=0.0)


def estimate_regrade(
    records: Iterable[dict[str, Any]], job: Job, costs: CostModel | None, regrade_all: bool = False
) -> RegradeEstimate:
    """The rows and grader requests re-grading `records` asks, and their worst case (`costs`: None,
    the rows alone: with none due, `report --job` needs no key, no endpoint, as `regrade_kept`)."""
    estimate = RegradeEstimate()
    for record, request, checks, kept in _judged_rows(records, job, regrade_all):
        estimate.kept += len(kept)
        if _all_kept(checks, kept):
            continue
        estimate.rows += 1
        estimate.changed += regrade_all or record.get("checks_fingerprint") != request.checks_fingerprint
        if costs is None:
            continue
        shown = answer_text(record.get("content") or "", record.get("tool_calls") or ())
        for index, check in enumerate(checks):
            if not is_judge(check) or index in kept:
                continue
            for model in job.judge.graders_for(check):
                body = grader_body(job.judge, model, question_of(request.body), check["judge"], shown)
                worst = costs.worst_case(grader_request(request.id, index, body))
                estimate.requests += 1
                estimate.unknown_price = estimate.unknown_price or worst is None
                estimate.worst_usd += worst or 0.0
    return estimate


async def regrade_with_judges(
    records: Iterable[dict[str, Any]],
    job: Job,
    runner: Runner,
    emit: Callable[[dict[str, Any]], None],
    regrade_all: bool = False,
) -> None:
    """Re-grade every record (judges included, but for verdicts that stand unless `regrade_all`)
    and pass each, in file order, to `emit`."""

    async def regrade_one(record: dict[str, Any], request: Request | None) -> dict[str, Any]:
        if request is None or record.get("status") != Status.OK:
            return record
        checks, answer = applied_checks(record, request), answer_of(record)
        kept = {} if regrade_all else kept_verdicts_of(record, request, checks)
        if _all_kept(checks, kept):
            return graded_now(record, checks, kept)  # nothing to ask: no grader is sent
        grading = RowGrading(request, record, answer, checks=checks, judged=kept)
        # In flight at a stop, graders get the grace, as a run's rows do; then each cut one is
        # held as maybe billed (_judging) and its check is `error` (a SIGTERM waited them out).
        limit = None
        try:
            async with runner.stops.row_time() as limit:
                await runner.judging.grade_row(grading)
        except TimeoutError:
            if limit is None or not limit.expired():
                raise
        return grading.record_now(runner.stop_reason)

    # Bounded batches keep memory flat on a big file and the order of records as written.
    batch: list[tuple[dict[str, Any], Request | None]] = []
    for pair in _judge_rows(records, job):
        batch.append(pair)
        if len(batch) >= runner.config.settings.concurrency * 4:
            for record in await asyncio.gather(*(regrade_one(*p) for p in batch)):
                emit(record)
            batch = []
    for record in await asyncio.gather(*(regrade_one(*p) for p in batch)):
        emit(record)


async def _within_deadline(runner: Runner, grading: Coroutine[Any, Any, None]) -> None:
    """`grading`, with the runner's deadline running as a run's does: when it comes, graders
    not sent are not graded ("the run stopped"), those in flight get the grace."""
    deadline = runner.config.deadline_s
    runner.stops.start_deadline(deadline)
    timer = None if deadline is None else asyncio.ensure_future(runner.stops.deadline(deadline))
    try:
        await grading
    finally:
        if timer is not None:
            timer.cancel()


async def regrade_file(
    job: Job,
    options: RunOptions,
    records: Iterable[dict[str, Any]],
    reread: Callable[[], Iterable[dict[str, Any]]],
    gate: ItemGate,
    show_worst_case: Callable[[str], None],
    keep: Callable[[dict[str, Any]], None] | None = None,
    control: RunControl | None = None,
    regrade_all: bool = False,
) -> Summary:
    """`report --job` with judges, end to end: prices and credit, the worst case (shown before
    anything is spent, from a first pass over `reread()`), then the re-grading of `records`
    within the budget. Returns the summary; `keep` receives each re-graded record."""
    # Graders' requests hold connections as a run's do (verify52 F1: 815 of 10,000 ungraded, EMFILE).
    settings = within_fd_limit(job.run, options.fresh_simulator, show_worst_case)
    builder = SummaryBuilder(gate)
    if (too_large := run_size_problem(job, None)) is not None:
        raise ConfigError(too_large)  # the re-grading maps every row of the matrix

    def emit(record: dict[str, Any]) -> None:
        builder.add(record)
        if keep is not None:
            keep(record)

    started = options.clock.monotonic()

    def time_left() -> float | None:  # the deadline counts pre-flight, as a run's does
        deadline = settings.deadline_s
        return None if deadline is None else deadline - (options.clock.monotonic() - started)

    client = make_client(job, options, settings)
    try:
        start_up = preflight(client, job, options, None, settings.budget_usd, show_worst_case, time_left, None)
        pre = (await start_up if control is None else await control.before_start(start_up, time_left)) or unpriced(
            settings.budget_usd
        )
        for warning in pre.fit_warnings(settings):
            show_worst_case(warning)
        costs = pre.costs if pre.models is not None else None
        if costs is not None:
            worst = estimate_regrade(reread(), job, costs, regrade_all)
            kept = f"; {worst.kept} verdict(s) kept: graded under the same checks (--regrade-all asks again)"
            show_worst_case(
                f"re-grading {worst.rows} row(s): {worst.requests} grader request(s), worst case "
                f"${worst.worst_usd:.6f}{' (some prices unknown)' if worst.unknown_price else ''}; budget "
                + ("none" if pre.budget is None else f"${pre.budget:.6f}")
                + (kept if worst.kept else "")
            )
        elif control is None or control.pending is None:  # stopped before its prices: nothing is sent
            show_worst_case("re-grading: the endpoint lists no prices, so no worst case can be shown")
        runner = Runner(
            client,
            None,  # the records are re-graded in memory; the results file is not touched
            run_config(job, settings, options.clock.monotonic() - started),
            options.clock,
            job_name=job.name,
            job_fingerprint=job.fingerprint,
            costs=costs,
            ledger=CreditLedger(pre.budget),
            limits=pre.limits,
            key_start=pre.key_start,
            judge=job.judge,
        )
        # Grader requests are paid like a run's: the key window and its probe follow them, and
        # the key is reconciled at the end (break14h H1: graders under-reporting, or listed at
        # $0 and billing, spent $2.40 on a $0.05 budget, exit 0, /key read once).
        if control is not None:  # a signal stops the graders as it stops a run (verify14i V8)
            control.runner = runner
            if control.pending:
                runner.request_stop(control.pending)
        runner.dispatch.watch_key()
        await _within_deadline(runner, regrade_with_judges(records, job, runner, emit, regrade_all))
        # As a run's: after a stop, or a signal while they wait, the wind-down's lookups and its
        # /key read end within a grace (verify25 N6: 38 s of /key timeouts after the SIGTERM),
        # and with a deadline, by its end plus the grace (verify26 R2: 325 s for 4 rows).
        stopped = runner.stop_reason in (StopReason.INTERRUPTED, StopReason.DEADLINE)
        cleanup_left = cleanup_time(time_left, settings.grace_s)
        runner.charges.cut_off = ends = wind_down_within(settings.grace_s, stopped, cleanup_left())
        if control is not None:
            control.winding_down = lambda: ends.set_in(wind_down_s(settings.grace_s))
        # As a run's (_orchestration): after a stop, half the wind-down, the rest the /key read's (verify64 F2).
        await runner.charges.retry_lookups(final=not stopped, until=ends.part(0.5))
        policy = retry_policy(settings)
        reconciliation = await reconcile_run(
            client,
            runner.ledger,
            runner.charges,
            pre.key_start,
            policy,
            options.clock.sleep,
            cleanup_left,
            ends,
            runner.dispatch.key_seen,
        )
        late_gap = counted_at_end(reconciliation, runner.ledger)
    finally:
        await client.aclose()
    return builder.result(
        stop=runner.stop_reason,
        stop_message=runner.stop_message,
        budget_usd=pre.budget,
        spent_usd=round(runner.ledger.committed + late_gap, 8),
        reconciliation=reconciliation,
    )
