"""The worker pool: streams Requests through throttle -> ledger -> retry -> client, one row each.

A fixed pool of workers in one `asyncio.TaskGroup` pulls from one lazy iterator of
Requests, so a 100,000-row job holds only as many requests as there are workers, and no
task outlives `run`. Every dispatched request ends as exactly one record, written in one
`try/finally` that knows whether it wrote: `ok`, `error` (the request failed, or kind
`internal` for an unexpected exception in that row) or `skipped` (stop, cap, budget, or
the grace after a stop ran out). A stop gives each in-flight row `grace_s` through its own
`asyncio.timeout`. A failure of the run itself (the results file cannot be written, the
dataset breaks) stops every worker at once and is raised from `run`.

The parts: `Stops` (_stops) says what may still be sent, `Dispatcher` (_dispatch) sends one
request and settles its cost, `RowRecords` (_row_records) makes and writes the record;
grader requests (_judging) use the same three.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from ._answer import Answer
from ._cache_grading import grade_hit, hit_fields, hit_grading
from ._cache_session import CacheSession
from ._cache_values import CachedAnswer
from ._charges import with_looked_up_usage
from ._checks import answer_of, grade, is_judge
from ._client import ChatResult, OpenRouterClient
from ._clock import Clock
from ._costs import CostModel
from ._dispatch import Dispatcher
from ._event_loop import off_the_loop
from ._exceptions import NotSent, OutputFailed, RequestFailed
from ._job import Job
from ._judge import GraderSettings
from ._judging import Judging
from ._ledger import BudgetExhausted, CreditLedger
from ._limit_parts import LimitParts
from ._matrix import Request
from ._reconcile import KeyStart
from ._results import ResultsWriter
from ._retry import RetryPolicy, retry_policy
from ._row import Row, RowGrading, answer_fields, first_failure, internal_error, settled
from ._row_cost import skipped_fields, uncharged
from ._row_records import RowRecords
from ._settings import DEFAULTS, RunSettings
from ._status import Status, StopReason
from ._stops import Stops
from ._throttle import Throttle
from ._ungraded import applied_checks, decided, kept_verdicts, regraded_fields


@dataclass(frozen=True)
class PoolConfig:
    """The worker pool's settings: the job's `run:` section as it is (one home for every setting
    and its default, _settings), and the two things only the run knows."""

    settings: RunSettings = DEFAULTS
    deadline_s: float | None = None  # what is left of the run's deadline when rows start
    model_caps: dict[str, int] = field(default_factory=dict)  # per-model concurrency caps

    @property
    def policy(self) -> RetryPolicy:
        return retry_policy(self.settings)


def run_config(job: Job, settings: RunSettings, elapsed_s: float) -> PoolConfig:
    """The pool's settings from the job's; `elapsed_s` is what pre-flight took of the deadline."""
    return PoolConfig(
        settings,
        # The deadline counts what pre-flight and the resume scan took already.
        deadline_s=None if settings.deadline_s is None else max(0.0, settings.deadline_s - elapsed_s),
        model_caps={m.id: m.concurrency for m in job.models if m.concurrency},
    )


@dataclass
class PoolOutcome:
    stop: StopReason | None
    stop_message: str
    spent_usd: float


# Checks whose search may take its whole time limit (a pattern that backtracks: 1 s each).
_SEARCHING = ("regex", "json_schema", "tool_call")


def searches(checks: list[dict[str, Any]]) -> bool:
    return any(kind in check for check in checks for kind in _SEARCHING)


async def _graded(checks: list[dict[str, Any]], answer: Answer) -> dict[str, Any]:
    """The deterministic checks' verdict; those that search, off the event loop: a pattern
    that backtracks to its 1 s limit on each of 40 rows held every request in flight, the
    deadline 6x over and 5 ms answers recorded at 12 s (break24 F7)."""
    if searches(checks):
        return await off_the_loop(grade, checks, answer)
    return grade(checks, answer)


@asynccontextmanager
async def _unbounded() -> AsyncIterator[asyncio.Timeout]:
    async with asyncio.timeout(None) as limit:
        yield limit


class Runner:
    def __init__(
        self,
        client: OpenRouterClient,
        writer: ResultsWriter | None,  # None: a runner that writes no rows (re-grading)
        config: PoolConfig,
        clock: Clock,
        *,
        job_name: str,
        job_fingerprint: str,
        shard: str | None = None,
        costs: CostModel | None = None,
        ledger: CreditLedger | None = None,
        limits: LimitParts | None = None,
        key_start: KeyStart | None = None,
        on_record: Callable[[dict[str, Any]], None] | None = None,
        judge: GraderSettings | None = None,
        cache: CacheSession | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.clock = clock
        self.costs = costs
        self.cache = cache
        self.ledger = ledger or CreditLedger(None)
        settings, policy = config.settings, config.policy
        self.stops = Stops(clock, policy, settings.grace_s, settings.deadline_s)
        self.throttle = Throttle(settings.concurrency, clock, config.model_caps, policy.max_wait_s)
        self.stops.on_stop.append(self.throttle.halt)  # nothing waiting for its turn goes out
        self.stops.on_model_stop.append(self.throttle.refused)  # nor for a model that is stopped
        self.throttle.refuses = self.stops.model_stop
        self.dispatch = Dispatcher(
            client,
            clock,
            self.stops,
            self.throttle,
            self.ledger,
            policy,
            settings,
            costs=costs,
            limits=limits or LimitParts(job=self.ledger.limit),
            key_start=key_start or KeyStart(),
        )
        self.charges = self.dispatch.charges
        row_lookups = self.charges.cut_off  # a row's cost lookup ends with its grace (break25 F6)
        self.stops.on_stop.append(lambda: row_lookups.set_at(self.stops.grace_ends or 0.0))
        self.records = RowRecords(
            writer,
            clock,
            self.stops,
            job_name=job_name,
            job_fingerprint=job_fingerprint,
            shard=shard,
            cache_on=cache is not None,
            on_record=on_record,
        )
        # Judge checks' grader requests go out through the same parts (issue 17).
        self.judging = Judging(self.dispatch, self.stops, cache, judge or GraderSettings())
        self.regrade: dict[str, dict[str, Any]] = {}  # a resume's answers whose judges a stop cut off

    @property
    def stop_reason(self) -> StopReason | None:
        return self.stops.reason

    @property
    def stop_message(self) -> str:
        return self.stops.message

    @property
    def limit_from_key(self) -> bool:
        """The binding limit is the key's credit, not the job's budget."""
        return self.dispatch.limits.from_key

    def request_stop(self, reason: StopReason, message: str = "") -> None:
        """Stop dispatching; in-flight requests get `grace_s` (_stops)."""
        self.stops.request(reason, message)

    def skip(self, request: Request, reason: str) -> None:
        self.records.skip(request, reason)

    # -- cache hits --------------------------------------------------------------------------
    def answered_from_cache(
        self, request: Request, answer: CachedAnswer, verdict: dict[str, Any] | None = None
    ) -> None:
        """A hit: a normal record of the stored answer, spending nothing and reserving
        nothing; checks run as on a fresh answer, with the original latency and cost, so
        verdicts come out the same (`verdict`: already graded)."""
        record = self.records.make(request, Status.OK, None, False, self.clock.time(), **hit_fields(answer))
        if request.checks:
            record.update(grade_hit(request.checks, answer) if verdict is None else verdict)
        self.records.emit(request, record)

    async def _graded_from_cache(self, row: Row, answer: CachedAnswer) -> None:
        """A hit whose judge checks need grader requests: those are paid like any (issue 17)."""
        request = row.request
        record = self.records.make(request, Status.OK, None, False, self.clock.time(), **hit_fields(answer))
        row.grading = hit_grading(request, record, answer)
        await self.judging.grade_row(row.grading)
        self.records.finish(row, row.grading.record_now())

    async def _graded_again(self, row: Row, stored: dict[str, Any]) -> None:
        """A kept answer whose judge checks a stop left ungraded: those are graded now, the
        stored verdicts stand (_ungraded)."""
        request = row.request
        record = self.records.make(request, Status.OK, None, False, self.clock.time(), **regraded_fields(stored))
        checks = applied_checks(stored, request)
        row.grading = RowGrading(
            request, record, answer_of(stored), checks, decided(stored, checks), kept=kept_verdicts(stored, checks)
        )
        await self.judging.grade_row(row.grading)
        self.records.finish(row, row.grading.record_now())

    # -- one row -----------------------------------------------------------------------------
    async def _process(self, row: Row) -> None:
        """Reserve, send with retries, settle, and write the row's record (or leave that to
        `_dispatch_row`'s finally when something cuts it short)."""
        request, dispatch, records = row.request, self.dispatch, self.records
        stored = self.regrade.pop(request.id, None)
        if stored is not None and stored.get("fingerprint") == request.fingerprint:
            await self._graded_again(row, stored)
            return
        # A hit needs neither budget nor the model's capacity: it is looked up first.
        cached = self.cache.lookup(request) if self.cache is not None else None
        if cached is not None and any(is_judge(c) for c in request.checks):
            await self._graded_from_cache(row, cached)
            return
        if cached is not None:
            # Off the loop as for a fresh answer (_graded): hits are graded as fast as they are read.
            row.hit = cached  # a stop's grace that cuts the grading writes it all the same
            verdict = await off_the_loop(grade_hit, request.checks, cached) if searches(request.checks) else None
            row.written = True  # set first, as in finish(): a failed write is not retried
            self.answered_from_cache(request, cached, verdict)
            # A turn for the loop: hits in a row never awaited, and a deadline or a SIGTERM came
            # only once every hit was written (verify66 4: 60,000 hits, a deadline of 3 s at 7.8 s).
            await asyncio.sleep(0)
            return
        model_stop = self.stops.model_stop(request.model) or self.stops.reason  # a hit that was not one
        if model_stop is not None:
            records.finish(row, records.make(request, Status.SKIPPED, model_stop, True, None, **uncharged(None)))
            return
        await dispatch.maybe_refresh_key()
        worst = dispatch.worst_case(request)
        row.reservation = await dispatch.reserve(worst)
        if row.reservation is None or self.stops.reason is not None:
            await dispatch.release(row)
            reason = self.stops.reason or StopReason.BUDGET
            records.finish(row, records.make(request, Status.SKIPPED, reason, True, None, **uncharged(None)))
            return
        row.started = self.clock.time()
        began = self.clock.monotonic()
        try:
            result, latency_s = await dispatch.send_with_retries(row, worst)
        except (RequestFailed, BudgetExhausted, NotSent) as failure:
            await dispatch.release(row)
            await settled(self._settle_failure(row, failure, worst))
            return
        latency_ms = round(latency_s * 1000, 1)  # the answering attempt: what the model took
        elapsed_ms = round((self.clock.monotonic() - began) * 1000, 1)  # with retries and waits
        await settled(self._settle_answer(row, result, latency_ms, elapsed_ms))
        if row.grading is not None:  # the answer is settled; its judge checks are graded now
            await self.judging.grade_row(row.grading)
            records.finish(row, row.grading.record_now())

    async def _settle_failure(
        self, row: Row, failure: RequestFailed | BudgetExhausted | NotSent, worst: float | None
    ) -> None:
        if isinstance(failure, BudgetExhausted):
            # No reservation fit for another attempt after one that may have been billed. Said
            # before the lookups below free holds: what was left when it did not fit (m2).
            self.dispatch.budget_stop(worst)
        await self.charges.look_up_row(row.charges)
        if isinstance(failure, RequestFailed):
            self.records.finish(row, self.records.failure(row.request, failure, row.log, row.started, row.charges))
            return
        fields = {"attempts": row.log.attempts, "attempt_errors": row.log.failures, **skipped_fields(row.charges)}
        reason = self.stops.why_not_sent(row.request.model)
        self.records.finish(row, self.records.make(row.request, Status.SKIPPED, reason, True, row.started, **fields))

    async def _settle_answer(self, row: Row, result: ChatResult, latency_ms: float, elapsed_ms: float) -> None:
        request = row.request
        await self.dispatch.charge_answer(row, result)  # on a failure, held by `_dispatch_row`
        await self.charges.look_up_row(row.charges)
        costs, result = row.charges.fields(), with_looked_up_usage(result, row.charges)
        record = self.records.make(
            request,
            Status.OK,
            None,
            False,
            row.started,
            **answer_fields(result),
            latency_ms=latency_ms,
            ttft_ms=getattr(result, "ttft_ms", None),  # streaming mode: time to the first token
            elapsed_ms=elapsed_ms,
            attempts=row.log.attempts,
            attempt_errors=row.log.failures,
            error=None,
            **costs,
        )
        if request.checks:
            answer = answer_of(record)  # as written: a cost estimated or unknown is known as such
            if not any(is_judge(c) for c in request.checks):
                record.update(await _graded(request.checks, answer))
            else:
                # Written once its graders answered (or, cut short, with those checks `error`).
                row.sent = False
                row.grading = RowGrading(request, record, answer)
        if self.cache is not None:
            # Queued before the row is written; batches are committed every 256 rows or half
            # a second (a kill -9 loses at most that batch: those rows are asked again).
            self.cache.store_row(request, result, latency_ms, record["finished_at"], row.charges)
        if row.grading is None:
            self.records.finish(row, record)

    async def _dispatch_row(self, request: Request, bounded: bool = True) -> None:
        """One row, one record, whatever happens: the finally writes it if nothing else did.
        `bounded`: cut at a stop's grace (a row that costs nothing after one is not)."""
        row = Row(request)
        outcome: BaseException | None = None
        cut = False
        stopped = self.stops
        try:
            async with stopped.row_time() if bounded else _unbounded() as limit:
                try:
                    await self._process(row)
                finally:
                    cut = limit.expired()  # the grace after a stop ran out
        except OutputFailed as failed_write:
            # The results file (or the journal) failed: the run stops, and the rows in flight end
            # within the stop's grace, their answers' costs journaled, where aborting every worker
            # cut them off after they were billed (out-178 F4).
            stopped.request(StopReason.IO, str(failed_write))
        except Exception as error:  # noqa: BLE001 - one row's bug must not end the run (issue 11)
            outcome = error
        except BaseException as cancelled:  # the run is going down (the group aborts, a signal)
            outcome = cancelled
            raise
        finally:
            self.dispatch.charges.undoubt(row.charges)  # whatever cut it short, its doubt holds back no other row
            if not row.written and row.hit is not None and stopped.reason != StopReason.IO:
                # A hit costs nothing and needs no server: cut while graded off the loop, it is
                # graded here and written, not skipped (a stop's grace of 0 lost one).
                row.written = True
                self.answered_from_cache(request, row.hit)
            elif not row.written and row.grading is not None and stopped.reason != StopReason.IO:
                # The answer is in and paid for: it is recorded, its ungraded checks `error`.
                failed = None if cut or isinstance(outcome, asyncio.CancelledError) else outcome
                why = f"not graded: {internal_error(failed, self.client.scrub)['message']}" if failed else None
                self.records.finish(row, row.grading.record_now(stopped.reason or StopReason.INTERRUPTED, why))
            elif not row.written and stopped.reason != StopReason.IO:
                # The request in flight was abandoned, so it may still be billed: hold it.
                self.dispatch.hold_in_flight(row)
                await self.dispatch.release(row)
                stopped_short = cut or isinstance(outcome, asyncio.CancelledError)
                failure = None if stopped_short else outcome
                self.records.finish(row, self.records.unfinished(row, failure, self.client.scrub))

    # -- the run -----------------------------------------------------------------------------
    async def _worker(self, source: Iterator[Request]) -> None:
        for request in source:
            if self.stops.reason == StopReason.IO:
                return  # nothing more can be written: the rows left are the resume's
            if self.stops.reason is None:
                await self._dispatch_row(request)
            elif self.stops.free_now() and self._may_be_free(request):
                # After a stop for money, what the cache answers is answered: the row, or a kept
                # answer's graders (_graded_again), for nothing, and not cut at the stop's grace,
                # which is for requests in flight (verify66 3: a regex check's thread handoff).
                await self._dispatch_row(request, bounded=False)
            elif self.regrade.pop(request.id, None) is None:
                self.skip(request, self.stops.reason)
            # else: an answer kept from an earlier run, its graders not sent: its record stands.
            # Written "skipped", the paid answer was dropped and bought again (verify66 1).

    def _may_be_free(self, request: Request) -> bool:
        return request.id in self.regrade or (self.cache is not None and self.cache.may_hit(request))

    async def run(self, requests: Iterator[Request]) -> PoolOutcome:
        self.dispatch.watch_key()
        self.stops.start_deadline(self.config.deadline_s)
        source = self.throttle.cooled_first(iter(requests), lambda request: request.model)
        try:
            async with asyncio.TaskGroup() as group:
                workers = [group.create_task(self._worker(source)) for _ in range(self.config.settings.concurrency)]
                deadline = self.config.deadline_s
                timer = group.create_task(self.stops.deadline(deadline)) if deadline is not None else None
                await asyncio.wait(workers)
                if timer is not None:
                    timer.cancel()
        except BaseExceptionGroup as failed:
            # A failure of the run itself ended every worker; rows written so far stay, and
            # the caller must not take the run for complete.
            raise first_failure(failed) from None
        finally:
            self.throttle.close()
        return PoolOutcome(*self.stops.outcome(), self.ledger.committed)
