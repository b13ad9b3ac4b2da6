"""The runner: streams Requests through throttle -> ledger -> retry -> client, one row each.

A fixed pool of workers in one `asyncio.TaskGroup` pulls from one lazy iterator of
Requests, so a 100,000-row job holds only as many requests as there are workers, and no
task outlives `run`. Every dispatched request ends as exactly one record, written in one
`try/finally` that knows whether it wrote: `ok`, `error` (the request failed, or kind
`internal` for an unexpected exception in that row) or `skipped` (stop, cap, budget, or
the grace after a stop ran out). A stop gives each in-flight row `grace_s` through its own
`asyncio.timeout`. A failure of the run itself (the results file cannot be written, the
dataset breaks) stops every worker at once and is raised from `run`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

from ._cache_session import CacheSession, grade_hit, hit_fields, hit_grading
from ._cache_values import CachedAnswer
from ._charges import AbandonedAttempt, ChargeBook, uncharged
from ._checks import Answer, grade, is_judge
from ._client import ChatResult, Flight, OpenRouterClient
from ._clock import Clock, utc
from ._costs import CostModel
from ._exceptions import (
    AuthFailed,
    CreditExhausted,
    DailyCapReached,
    ModelUnavailable,
    OutputFailed,
    RateLimited,
    RequestFailed,
)
from ._judge import GraderSettings
from ._judging import Judging, RowGrading
from ._late_costs import LateCosts
from ._ledger import BudgetExhausted, CreditLedger
from ._limiter import Throttle, scope_of
from ._matrix import Request
from ._pricing import usd
from ._reconcile import key_usage
from ._results import ResultsWriter, record_head
from ._retry import AttemptLog, RetryPolicy, call_with_retries
from ._row import Row, answer_fields, first_failure, internal_error
from ._stream import stream_chat

# Why a run stopped early; each maps to its own exit code in the CLI.
STOP_AUTH, STOP_CREDITS, STOP_BUDGET, STOP_DEADLINE = "auth", "credits", "budget", "deadline"
STOP_INTERRUPTED = "interrupted"
STOP_IO = "io"  # the results file cannot be written: stop at the first failed write


@dataclass
class RunConfig:
    concurrency: int
    policy: RetryPolicy
    deadline_s: float | None = None  # what is left of the run's deadline when rows start
    deadline_given_s: float | None = None  # the deadline as the job or --deadline gave it
    grace_s: float = 10.0
    key_refresh_requests: int = 500
    key_refresh_s: float = 60.0
    budget_margin_usd: float = 0.0
    model_caps: dict[str, int] = field(default_factory=dict)
    stream: bool = False  # streaming mode (_stream): a cancel stops generation and billing
    timeout_s: float = 60.0  # per attempt; the streaming reader bounds the whole stream by it


@dataclass
class RunOutcome:
    stop: str | None
    stop_message: str
    spent_usd: float


class Runner:
    def __init__(
        self,
        client: OpenRouterClient,
        writer: ResultsWriter | None,  # None: a runner that writes no rows (re-grading)
        config: RunConfig,
        clock: Clock,
        *,
        job_name: str,
        job_fingerprint: str,
        costs: CostModel | None = None,
        ledger: CreditLedger | None = None,
        limit_from_key: bool = False,
        key_usage_start: float | None = None,
        on_record: Callable[[dict[str, Any]], None] | None = None,
        judge: GraderSettings | None = None,
        cache: CacheSession | None = None,
    ) -> None:
        self.client = client
        self.writer = writer
        self.config = config
        self.clock = clock
        self.job_name = job_name
        self.job_fingerprint = job_fingerprint
        self.costs = costs
        self.ledger = ledger or CreditLedger(None)
        self.charges = ChargeBook(client, self.ledger)
        self.late = LateCosts()  # rows written with an unknown cost: written again once it is known
        self.limit_from_key = limit_from_key  # the binding limit is the key's credit, not our budget
        self.key_usage_start = key_usage_start  # the key's usage before the first request (_ledger.follow_key)
        self.throttle = Throttle(config.concurrency, clock, config.model_caps, config.policy.max_wait_s)
        self.on_record = on_record
        self.cache = cache
        self.stop_reason: str | None = None
        self.stop_message = ""
        self.stopped_models: dict[str, str] = {}  # model -> skip reason, for the rest of the run
        # limit scope (a model, or the :free pool) -> (monotonic time it reopens, skip reason)
        self.blocked_scopes: dict[str, tuple[float, str]] = {}
        self._deadline_at: float | None = None
        self._stop_event = asyncio.Event()  # for batch mode's waits
        self._sent_since_refresh = 0
        self._last_refresh = clock.monotonic()  # pre-flight has just read /key
        self._refreshing = False
        self._in_flight: set[asyncio.Timeout] = set()  # each dispatched row's own timeout
        self._grace_ends: float | None = None  # loop time when in-flight rows are cut off
        # Judge checks' grader requests go through this runner's own machinery (issue 17).
        self.judging = Judging(self, judge or GraderSettings())

    # -- stopping ----------------------------------------------------------------------------
    def request_stop(self, reason: str, message: str = "") -> None:
        """Stop dispatching; in-flight requests get `grace_s` (none for a refused key or a
        results file that fails: nothing more can be recorded)."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        self.stop_message = message
        self._stop_event.set()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # before the run's loop exists: nothing is in flight
            return
        grace = 0.0 if reason in (STOP_AUTH, STOP_IO) else self.config.grace_s
        self._grace_ends = loop.time() + grace
        for limit in self._in_flight:
            limit.reschedule(self._grace_ends)

    # -- records -----------------------------------------------------------------------------
    def _record(
        self, request: Request, status: str, reason: str | None, retryable: bool, started: float | None, **fields: Any
    ) -> dict[str, Any]:
        cost = fields.pop("cost", None)
        spent = cost if cost is not None else fields.get("cost_held") or 0.0
        record = record_head(request.id, request.fingerprint, status, reason, retryable, cost, spent)
        record.update(
            job=self.job_name,
            job_fingerprint=self.job_fingerprint,
            model=request.model,
            prompt_id=request.prompt_id,
            vars=request.vars,
            repeat=request.repeat,
        )
        if self.cache is not None and status != "skipped":
            record["cached"] = False  # with a cache on, every answered row says whether it was a hit
        record.update(fields)
        now = self.clock.time()
        record["started_at"] = utc(started) if started is not None else None
        record["finished_at"] = utc(now)
        return record

    def _emit(self, request: Request, record: dict[str, Any]) -> None:
        try:
            if self.writer is not None:
                self.writer.write(record, request.payload)
        except OutputFailed as failure:
            # The first failed write stops dispatch: nothing more is paid for that cannot be
            # recorded, and the writer refuses later lines, so none follows a torn one.
            self.request_stop(STOP_IO, str(failure))
            raise
        if self.on_record is not None:
            self.on_record(record)

    def skip(self, request: Request, reason: str) -> None:
        self._emit(request, self._record(request, "skipped", reason, True, None, **uncharged(None)))

    # -- one request -------------------------------------------------------------------------
    async def _attempt(self, request: Request, flight: Flight) -> tuple[ChatResult, float]:
        """One attempt through the throttle; returns the answer and this attempt's latency."""
        started = await self.throttle.acquire(request.model)
        try:
            if self.config.stream:
                result: ChatResult = await stream_chat(
                    self.client,
                    request.payload,
                    request.id,
                    self.clock,
                    self.config.timeout_s,
                    flight=flight,
                )
            else:
                result = await self.client.chat(request.payload, row_id=request.id, flight=flight)
        except RateLimited as failure:
            self.throttle.rate_limited(
                request.model,
                started,
                failure.retry_after,
                pace=failure.paces,
                limit_wait=failure.limit_wait,
                limit=failure.limit_count,
            )
            raise
        finally:
            await self.throttle.release(request.model)
        self.throttle.succeeded(request.model, started)
        return result, self.clock.monotonic() - started

    def _budget_stop(self, worst: float | None) -> None:
        reason = STOP_CREDITS if self.limit_from_key else STOP_BUDGET
        self.request_stop(
            reason,
            f"the next request needs up to ${usd(worst or 0)}, ${usd(max(0.0, self.ledger.remaining or 0))} is left"
            + (
                f" (${usd(self.ledger.from_key)} of what is spent is the key's usage beyond the reported costs)"
                if self.ledger.from_key
                else ""
            ),
        )

    async def _reserve(self, worst: float | None) -> float | None:
        """Reserve the worst case; None (and a stop) when the budget cannot hold it."""
        try:
            return await self.ledger.reserve(worst or 0.0)
        except BudgetExhausted:
            self._budget_stop(worst)
            return None

    def _answered_from_cache(self, request: Request, answer: CachedAnswer) -> None:
        """A hit: a normal record of the stored answer, spending nothing and reserving
        nothing; checks run as on a fresh answer, with the original latency and cost, so
        verdicts come out the same."""
        record = self._record(request, "ok", None, False, self.clock.time(), **hit_fields(answer))
        if request.checks:
            record.update(grade_hit(request.checks, answer))
        self._emit(request, record)

    async def _graded_from_cache(self, row: Row, answer: CachedAnswer) -> None:
        """A hit whose judge checks need grader requests: those are paid like any (issue 17)."""
        request = row.request
        record = self._record(request, "ok", None, False, self.clock.time(), **hit_fields(answer))
        row.grading = hit_grading(request, record, answer)
        await self.judging.grade_row(row.grading)
        self._finish(row, row.grading.record_now())

    def time_left(self) -> float | None:
        """Seconds until the run's deadline; None without one."""
        return None if self._deadline_at is None else self._deadline_at - self.clock.monotonic()

    def _model_stop(self, model: str) -> str | None:
        """Why this model's rows are not sent now: a model-wide condition, or a blocked scope."""
        stop = self.stopped_models.get(model)
        if stop is not None:
            return stop
        block = self.blocked_scopes.get(scope_of(model))
        if block is not None:
            if self.clock.monotonic() < block[0]:
                return block[1]
            del self.blocked_scopes[scope_of(model)]  # the limit has reset: send again
        return None

    async def _process(self, row: Row) -> None:
        """Reserve, send with retries, settle, and write the row's record (or leave that to
        `_dispatch`'s finally when something cuts it short)."""
        request = row.request
        # A hit needs neither budget nor the model's capacity: it is looked up first.
        cached = self.cache.lookup(request) if self.cache is not None else None
        if cached is not None and any(is_judge(c) for c in request.checks):
            await self._graded_from_cache(row, cached)
            return
        if cached is not None:
            row.written = True  # set first, as in _finish: a failed write is not retried
            self._answered_from_cache(request, cached)
            return
        model_stop = self._model_stop(request.model)
        if model_stop is not None:
            self._finish(row, self._record(request, "skipped", model_stop, True, None, **uncharged(None)))
            return
        await self._maybe_refresh_key()
        worst = self.costs.worst_case(request) if self.costs else None
        row.reservation = await self._reserve(worst)
        if row.reservation is None or self.stop_reason is not None:
            await self._release(row)
            reason = self.stop_reason or STOP_BUDGET
            self._finish(row, self._record(request, "skipped", reason, True, None, **uncharged(None)))
            return
        row.started = self.clock.time()
        began = self.clock.monotonic()
        try:
            result, latency_s = await self.send_with_retries(row, worst)
        except (RequestFailed, BudgetExhausted) as failure:
            await self._release(row)
            await self._settled(self._settle_failure(row, failure, worst))
            return
        latency_ms = round(latency_s * 1000, 1)  # the answering attempt: what the model took
        elapsed_ms = round((self.clock.monotonic() - began) * 1000, 1)  # with retries and waits
        reservation, row.reservation = row.reservation or 0.0, None
        await self._settled(self._settle_answer(row, result, reservation, latency_ms, elapsed_ms))
        if row.grading is not None:  # the answer is settled; its judge checks are graded now
            await self.judging.grade_row(row.grading)
            self._finish(row, row.grading.record_now())

    async def send_with_retries(self, row: Row, worst: float | None) -> tuple[ChatResult, float]:
        """The row's attempts under the retry policy, each holding a reservation (the row's
        first is reserved by the caller); raises RequestFailed or BudgetExhausted."""

        async def attempt() -> tuple[ChatResult, float]:
            if row.reservation is None:
                # The last attempt may have been billed and keeps its reservation as spent:
                # this one needs its own (BudgetExhausted ends the row when none fits).
                row.reservation = await self.ledger.reserve(worst or 0.0)
            row.sent = True
            row.flight = Flight()
            try:
                return await self._attempt(row.request, row.flight)
            except RequestFailed as failure:
                if failure.maybe_billed:
                    self._hold(row, failure)
                raise

        return await call_with_retries(attempt, self.config.policy, self.clock.sleep, row.log, time_left=self.time_left)

    def _hold(self, row: Row, failure: RequestFailed) -> None:
        """An attempt that may have been billed keeps its reservation as spent until its cost
        is known (streaming.mdx: only a cancelled stream stops billing)."""
        if row.reservation is not None:
            reservation, row.reservation = row.reservation, None
            self.charges.abandoned(failure, reservation, row.charges)
        row.sent = False

    def hold_in_flight(self, row: Row) -> None:
        """The attempt in flight was cancelled (grace over, deadline, a signal): it may still
        be billed, so it is held, with the generation id its headers already gave, if any."""
        if row.sent:
            self._hold(row, AbandonedAttempt(row.flight.generation_id))

    async def _settled(self, work: Coroutine[Any, Any, None]) -> None:
        """Settle and record a row whose outcome is in. A cancel (the grace is over) waits
        for this bookkeeping, a cost lookup at most, so the record keeps what the row cost."""
        task = asyncio.ensure_future(work)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise

    async def _settle_failure(self, row: Row, failure: RequestFailed | BudgetExhausted, worst: float | None) -> None:
        await self.charges.look_up_row(row.charges)
        if isinstance(failure, RequestFailed):
            self._finish(row, self._failure_record(row.request, failure, row.log, row.started, row))
            return
        # No reservation fit for another attempt after one that may have been billed.
        self._budget_stop(worst)
        fields = {"attempts": row.log.attempts, "attempt_errors": row.log.failures, **row.charges.fields()}
        reason = self.stop_reason or STOP_BUDGET
        self._finish(row, self._record(row.request, "skipped", reason, True, row.started, **fields))

    async def _settle_answer(
        self, row: Row, result: ChatResult, reservation: float, latency_ms: float, elapsed_ms: float
    ) -> None:
        request = row.request
        estimate = self.costs.estimate(request, result) if self.costs else None
        await self.charges.answered(result, reservation, row.charges, estimate)
        await self.charges.look_up_row(row.charges)
        costs = row.charges.fields()
        record = self._record(
            request,
            "ok",
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
            answer = Answer(
                result.content,
                latency_ms,
                costs["cost"],
                result.usage.get("completion_tokens"),
                result.finish_reason,
                result.tool_calls,
            )
            if not any(is_judge(c) for c in request.checks):
                record.update(grade(request.checks, answer))
            else:
                # Written once its graders answered (or, cut short, with those checks `error`).
                row.sent = False
                row.grading = RowGrading(request, record, answer)
        if self.cache is not None:
            # Queued before the row is written; batches are committed every 256 rows or half
            # a second (a kill -9 loses at most that batch: those rows are asked again).
            self.cache.store_row(request, result, latency_ms, record["finished_at"], row.charges)
        if row.grading is None:
            self._finish(row, record)

    def _finish(self, row: Row, record: dict[str, Any]) -> None:
        row.written = True  # set first: a row whose write failed must not be written twice
        self._emit(row.request, record)
        self.late.remember(row.request, record, row.charges)

    async def _release(self, row: Row, *, keep: bool = False) -> None:
        """Give back the row's reservation; `keep` counts it as spent (a request abandoned in
        flight may still be billed: streaming.mdx, only a cancelled stream stops billing)."""
        if row.reservation is not None:
            reservation, row.reservation = row.reservation, None
            await asyncio.shield(self.ledger.settle(reservation, reservation if keep else 0.0))

    async def _dispatch(self, request: Request) -> None:
        """One row, one record, whatever happens: the finally writes it if nothing else did."""
        row = Row(request)
        outcome: BaseException | None = None
        cut = False
        try:
            async with asyncio.timeout(self._grace_ends) as limit:
                self._in_flight.add(limit)
                try:
                    await self._process(row)
                finally:
                    self._in_flight.discard(limit)
                    cut = limit.expired()  # the grace after a stop ran out
        except OutputFailed:
            raise  # the results file failed: the run stops, not just this row
        except Exception as error:  # noqa: BLE001 - one row's bug must not end the run (issue 11)
            outcome = error
        except BaseException as cancelled:  # the run is going down (the group aborts, a signal)
            outcome = cancelled
            raise
        finally:
            if not row.written and row.grading is not None and self.stop_reason != STOP_IO:
                # The answer is in and paid for: it is recorded, its ungraded checks `error`.
                failed = None if cut or isinstance(outcome, asyncio.CancelledError) else outcome
                why = f"not graded: {internal_error(failed, self.client.scrub)['message']}" if failed else None
                self._finish(row, row.grading.record_now(self.stop_reason or STOP_INTERRUPTED, why))
            elif not row.written and self.stop_reason != STOP_IO:
                # The request in flight was abandoned, so it may still be billed: hold it.
                self.hold_in_flight(row)
                await self._release(row)
                stopped = cut or isinstance(outcome, asyncio.CancelledError)
                self._finish(row, self._unfinished(row, None if stopped else outcome))

    def _unfinished(self, row: Row, error: BaseException | None) -> dict[str, Any]:
        """The record of a row cut short: skipped by a stop (`error` None), or `internal`.
        A request that went out is held as an abandoned attempt: its cost is unknown, and
        its worst case stays spent (`cost_held`), since it may be billed."""
        fields = {**row.charges.fields(), "attempts": row.log.attempts, "attempt_errors": row.log.failures}
        if error is None:
            reason = self.stop_reason or STOP_INTERRUPTED
            return self._record(row.request, "skipped", reason, True, row.started, **fields)
        error_field = internal_error(error, self.client.scrub)
        if not row.charges.parts:
            fields.update(uncharged(0.0))
        return self._record(row.request, "error", "internal", True, row.started, error=error_field, **fields)

    def _too_long(self, failure: RequestFailed) -> str | None:
        """Why the server's wait ended the retrying (over max_wait_s or past the deadline)."""
        wait, cap, left = failure.retry_after, self.config.policy.max_wait_s, self.time_left()
        if not failure.retryable or wait is None:
            return None
        if wait > cap:
            return f"server asked to wait {wait:.0f} s, over the {cap:g} s cap"
        if left is not None and wait > left:
            return f"server asked to wait {wait:.0f} s, past the run's deadline ({max(0.0, left):.0f} s left)"
        return None

    def _block_scope(self, request: Request, failure: RateLimited) -> str:
        """A platform limit (X-RateLimit-*) that resets beyond the wait cap: the scope (the
        model, or every :free model) sends nothing until its reset. A reset past the run's
        horizon (the deadline, or max_elapsed_s without one) is a daily cap."""
        wait = failure.limit_wait if failure.limit_wait is not None else failure.retry_after or 0.0
        left = self.time_left()
        horizon = left if left is not None else self.config.policy.max_elapsed_s
        reason = "daily_cap" if wait > horizon else "rate_limited"
        scope = scope_of(request.model)
        until = self.clock.monotonic() + wait
        current = self.blocked_scopes.get(scope)
        if current is None or current[0] < until:
            self.blocked_scopes[scope] = (until, reason)
        return reason

    def _failed(self, request: Request, failure: RequestFailed, log: AttemptLog, started: float | None) -> None:
        """Write the record of a failed request (batch mode's entry point)."""
        self._emit(request, self._failure_record(request, failure, log, started))

    def _failure_record(
        self, request: Request, failure: RequestFailed, log: AttemptLog, started: float | None, row: Row | None = None
    ) -> dict[str, Any]:
        """The record of a failed request; the failure's class decides what else stops."""
        message = failure.message[:500]
        too_long = self._too_long(failure)
        if too_long:
            message += f" ({too_long})"
        error: dict[str, Any] = {"kind": failure.kind, "http_status": failure.http_status, "message": message}
        # What OpenRouter said, when it said it (errors-and-debugging.mdx "Typed error codes").
        if failure.error_type:
            error["error_type"] = failure.error_type
        if failure.availability_code:
            error["availability_code"] = failure.availability_code
        status, reason = self.react(request, failure, too_long)
        skipped = status == "skipped"
        return self._record(
            request,
            status,
            reason,
            skipped or failure.retryable,
            started,
            error=error,
            attempts=log.attempts,
            attempt_errors=log.failures,
            # An error without a billable attempt cost nothing (zero-completion-insurance.mdx).
            **(row.charges.fields() if row is not None and row.charges.parts else uncharged(None if skipped else 0.0)),
        )

    def react(self, request: Request, failure: RequestFailed, too_long: str | None) -> tuple[str, str]:
        """What a final failure stops, as (status, reason) for its record. A refused key and
        an empty purse stop the run; a model-wide condition stops the model; a platform
        limit past the wait cap stops its scope until the reset. Rows that never got an
        answer are `skipped` (a resume runs them again)."""
        status, reason = "error", failure.kind
        if isinstance(failure, AuthFailed):
            self.request_stop(STOP_AUTH, f"the API key was refused: {failure.message}")
        elif isinstance(failure, CreditExhausted):
            self.request_stop(STOP_CREDITS, failure.message)
            status, reason = "skipped", STOP_CREDITS
        elif isinstance(failure, ModelUnavailable):
            self.stopped_models.setdefault(request.model, failure.kind)
        elif isinstance(failure, DailyCapReached):
            self.stopped_models.setdefault(request.model, "daily_cap")
            status, reason = "skipped", "daily_cap"
        elif isinstance(failure, RateLimited) and failure.platform and too_long:
            status, reason = "skipped", self._block_scope(request, failure)
        return status, reason

    # -- key refresh -------------------------------------------------------------------------
    def watch_key(self) -> None:
        """With a limit and the key's usage to follow, every reservation draws on the ledger's
        key window, and /key is read again before one that it cannot hold (_ledger)."""
        if self.key_usage_start is None or self.costs is None or self.costs.models is None:
            return
        self.ledger.read_key = self._read_key
        self.ledger.open_key_window()

    async def _maybe_refresh_key(self) -> None:
        """Other jobs and shards may share the key: every N requests or T seconds, one
        worker re-reads /key before its reservation, and the ledger follows the credit
        (and retries the lookups of costs still unknown)."""
        self._sent_since_refresh += 1
        now = self.clock.monotonic()
        due = (
            self._sent_since_refresh >= self.config.key_refresh_requests
            or now - self._last_refresh >= self.config.key_refresh_s
        )
        if not due or self.costs is None or self.costs.models is None or self._refreshing:
            return
        self._refreshing = True
        try:
            await self.charges.retry_lookups()
            await self._read_key()
        finally:
            self._refreshing = False

    async def _read_key(self) -> None:
        """Read /key; the ledger follows its usage and its credit, and opens a new key window
        (also when the read failed: a failed refresh is not a reason to stop, and the next
        window reads again). The docs give /key no rate limit of its own (limits.mdx: only
        DDoS protection, and "call GET /api/v1/key ... to track limit_remaining"); the
        window asks at most one read per reservation, near the end of the budget."""
        self._sent_since_refresh = 0
        self._last_refresh = self.clock.monotonic()
        try:
            info = await self.client.key_info()
        except RequestFailed:
            info = None
        try:
            await self._follow_key(info)
        finally:
            self.ledger.open_key_window()

    async def _follow_key(self, info: dict[str, Any] | None) -> None:
        usage = key_usage(info)
        if usage is not None and self.key_usage_start is not None:
            self.ledger.follow_key(usage - self.key_usage_start)
        remaining = info.get("limit_remaining") if info else None
        if isinstance(remaining, (int, float)):
            new_limit = self.ledger.spent + remaining - self.config.budget_margin_usd
            if self.ledger.limit is None or new_limit < self.ledger.limit:
                self.limit_from_key = True
                await self.ledger.lower_limit(new_limit)

    # -- the run -----------------------------------------------------------------------------
    async def _worker(self, source: Iterator[Request]) -> None:
        for request in source:
            if self.stop_reason is not None:
                self.skip(request, self.stop_reason)
            else:
                await self._dispatch(request)

    async def _deadline(self, seconds: float) -> None:
        await self.clock.sleep(seconds)
        # Named as it was given (pre-flight used part of it: `seconds` is what was left).
        given = self.config.deadline_given_s if self.config.deadline_given_s is not None else seconds
        self.request_stop(STOP_DEADLINE, f"the run deadline of {given:g} s was reached")

    async def run(self, requests: Iterator[Request]) -> RunOutcome:
        self.watch_key()
        if self.config.deadline_s is not None:
            self._deadline_at = self.clock.monotonic() + self.config.deadline_s
        source = iter(requests)
        try:
            async with asyncio.TaskGroup() as group:
                workers = [group.create_task(self._worker(source)) for _ in range(self.config.concurrency)]
                deadline = self.config.deadline_s
                timer = group.create_task(self._deadline(deadline)) if deadline is not None else None
                await asyncio.wait(workers)
                if timer is not None:
                    timer.cancel()
        except BaseExceptionGroup as failed:
            # A failure of the run itself ended every worker; rows written so far stay, and
            # the caller must not take the run for complete.
            raise first_failure(failed) from None
        finally:
            self.throttle.close()
        return RunOutcome(self.stop_reason, self.stop_message, self.ledger.committed)
