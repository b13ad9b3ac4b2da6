"""The runner: streams Requests through throttle -> ledger -> retry -> client, one row each.

A fixed pool of workers pulls from one lazy iterator of Requests, so a 100,000-row job
holds only as many requests as there are workers. Every request ends as exactly one
record: `ok`, `error` (the request failed) or `skipped` (never sent: stop, cap, budget).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ._checks import Answer, grade, is_judge
from ._client import ChatResult, OpenRouterClient
from ._clock import Clock
from ._costs import CostModel
from ._exceptions import (
    AuthFailed,
    BatchrunError,
    CreditExhausted,
    DailyCapReached,
    ModelUnavailable,
    OutputFailed,
    RateLimited,
    RequestFailed,
)
from ._judge import GraderSettings
from ._judging import GraderPool, question_of, throttled_chat
from ._ledger import BudgetExhausted, CreditLedger
from ._limiter import Throttle, scope_of
from ._matrix import Request
from ._results import ResultsWriter, record_head
from ._retry import AttemptLog, RetryPolicy, call_with_retries

# Why a run stopped early; each maps to its own exit code in the CLI.
STOP_AUTH, STOP_CREDITS, STOP_BUDGET, STOP_DEADLINE, STOP_INTERRUPTED = (
    "auth",
    "credits",
    "budget",
    "deadline",
    "interrupted",
)
STOP_IO = "io"  # the results file cannot be written: stop at the first failed write


class _Recorded(BatchrunError):
    """Internal: a cancelled request whose row was already written (never leaves the runner)."""


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def utc(ts: float) -> str:
    """ISO 8601 UTC with milliseconds; strftime runs once a second, not twice a row."""
    return f"{_utc_second(int(ts))}.{int(ts % 1 * 1000):03d}Z"


@dataclass
class RunConfig:
    concurrency: int
    policy: RetryPolicy
    deadline_s: float | None = None
    grace_s: float = 10.0
    key_refresh_requests: int = 500
    key_refresh_s: float = 60.0
    budget_margin_usd: float = 0.0
    model_caps: dict[str, int] = field(default_factory=dict)


@dataclass
class RunOutcome:
    stop: str | None
    stop_message: str
    spent_usd: float


class Runner:
    def __init__(
        self,
        client: OpenRouterClient,
        writer: ResultsWriter,
        config: RunConfig,
        clock: Clock,
        *,
        job_name: str,
        job_fingerprint: str,
        costs: CostModel | None = None,
        ledger: CreditLedger | None = None,
        limit_from_key: bool = False,
        on_record: Callable[[dict[str, Any]], None] | None = None,
        judge: GraderSettings | None = None,
    ) -> None:
        self.client = client
        self.writer = writer
        self.config = config
        self.clock = clock
        self.job_name = job_name
        self.job_fingerprint = job_fingerprint
        self.costs = costs
        self.ledger = ledger or CreditLedger(None)
        self.limit_from_key = limit_from_key  # the binding limit is the key's credit, not our budget
        self.throttle = Throttle(config.concurrency, clock, config.model_caps, config.policy.max_wait_s)
        self.on_record = on_record
        self.stop_reason: str | None = None
        self.stop_message = ""
        self.stopped_models: dict[str, str] = {}  # model -> skip reason, for the rest of the run
        # limit scope (a model, or the :free pool) -> (monotonic time it reopens, skip reason)
        self.blocked_scopes: dict[str, tuple[float, str]] = {}
        self._deadline_at: float | None = None
        self._stop_event = asyncio.Event()
        self._sent_since_refresh = 0
        self._last_refresh = clock.monotonic()  # pre-flight has just read /key
        self._refreshing = False
        # Judge checks' grader requests share this run's throttle, ledger, retries and key.
        self.graders = GraderPool(
            judge or GraderSettings(),
            client,
            self.throttle,
            self.ledger,
            costs,
            config.policy,
            clock,
            on_stop=self.request_stop,
            stopped=lambda: self.stop_reason,
            limit_from_key=lambda: self.limit_from_key,
            attempt=self._attempt,
        )

    # -- stopping ----------------------------------------------------------------------------
    def request_stop(self, reason: str, message: str = "") -> None:
        """Stop dispatching; in-flight requests get `grace_s` (none for a refused key)."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.stop_message = message
            self._stop_event.set()

    # -- records -----------------------------------------------------------------------------
    def _record(
        self, request: Request, status: str, reason: str | None, retryable: bool, started: float | None, **fields: Any
    ) -> dict[str, Any]:
        record = record_head(request.id, request.fingerprint, status, reason, retryable, fields.pop("cost", None))
        record.update(
            job=self.job_name,
            job_fingerprint=self.job_fingerprint,
            model=request.model,
            prompt_id=request.prompt_id,
            vars=request.vars,
            repeat=request.repeat,
        )
        record.update(fields)
        now = self.clock.time()
        record["started_at"] = utc(started) if started is not None else None
        record["finished_at"] = utc(now)
        return record

    def _emit(self, request: Request, record: dict[str, Any]) -> None:
        try:
            self.writer.write(record, request.payload)
        except OutputFailed as failure:
            # The first failed write stops dispatch: nothing more is paid for that cannot be
            # recorded, and the writer refuses later lines, so none follows a torn one.
            self.request_stop(STOP_IO, str(failure))
            raise
        if self.on_record is not None:
            self.on_record(record)

    def skip(self, request: Request, reason: str) -> None:
        self._emit(request, self._record(request, "skipped", reason, True, None))

    # -- one request -------------------------------------------------------------------------
    async def _attempt(self, request: Request) -> tuple[ChatResult, float]:
        """One attempt through the throttle; returns the answer and this attempt's latency."""
        return await throttled_chat(self.throttle, self.client, self.clock, request)

    async def _reserve(self, request: Request) -> float | None:
        """Reserve the worst case; None (and a stop) when the budget cannot hold it."""
        worst = self.costs.worst_case(request) if self.costs else None
        try:
            return await self.ledger.reserve(worst or 0.0)
        except BudgetExhausted:
            reason = STOP_CREDITS if self.limit_from_key else STOP_BUDGET
            self.request_stop(
                reason,
                f"the next request needs up to ${worst or 0:.6f}, ${max(0.0, self.ledger.remaining or 0):.6f} is left",
            )
            return None

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

    async def _process(self, request: Request) -> None:
        model_stop = self._model_stop(request.model)
        if model_stop is not None:
            self.skip(request, model_stop)
            return
        await self._maybe_refresh_key()
        reservation = await self._reserve(request)
        if reservation is None or self.stop_reason is not None:
            if reservation is not None:
                await self.ledger.release(reservation)
            self.skip(request, self.stop_reason or STOP_BUDGET)
            return
        log = AttemptLog()
        started = self.clock.time()
        began = self.clock.monotonic()
        try:
            result, latency_s = await call_with_retries(
                lambda: self._attempt(request), self.config.policy, self.clock.sleep, log, time_left=self.time_left
            )
        except RequestFailed as failure:
            await self.ledger.release(reservation)
            self._failed(request, failure, log, started)
            return
        except asyncio.CancelledError:
            # The grace ran out mid-request: the row is skipped, with the attempts it made.
            await asyncio.shield(self.ledger.release(reservation))
            self._emit(
                request,
                self._record(
                    request,
                    "skipped",
                    self.stop_reason or STOP_INTERRUPTED,
                    True,
                    started,
                    attempts=log.attempts,
                    attempt_errors=log.failures,
                ),
            )
            raise _Recorded() from None
        latency_ms = round(latency_s * 1000, 1)  # the answering attempt: what the model took
        elapsed_ms = round((self.clock.monotonic() - began) * 1000, 1)  # with retries and waits
        cost = result.cost
        # Without a billed cost, keep the worst case as spent: never under-count.
        await self.ledger.settle(reservation, cost if cost is not None else reservation)
        record = self._record(
            request,
            "ok",
            None,
            False,
            started,
            response_model=result.model,
            provider=result.provider,
            generation_id=result.generation_id,
            content=result.content,
            tool_calls=list(result.tool_calls) or None,
            finish_reason=result.finish_reason,
            native_finish_reason=result.native_finish_reason,
            usage=result.usage,
            cost=cost,
            latency_ms=latency_ms,
            elapsed_ms=elapsed_ms,
            attempts=log.attempts,
            attempt_errors=log.failures,
            error=None,
        )
        if request.checks:
            answer = Answer(
                result.content,
                latency_ms,
                cost,
                result.usage.get("completion_tokens"),
                result.finish_reason,
                result.tool_calls,
            )
            await self._grade(request, answer, record)
        self._emit(request, record)

    async def _grade(self, request: Request, answer: Answer, record: dict[str, Any]) -> None:
        """Run the row's checks; judge checks send grader requests, whose cost joins the row's."""
        judged: dict[int, dict[str, Any]] = {}
        if any(is_judge(c) for c in request.checks):
            try:
                judged, judge_cost = await self.graders.judge_row(
                    request.id, request.checks, question_of(request.body), answer
                )
            except asyncio.CancelledError:
                # The grace ran out while grading: the answer was paid for, so its row is
                # written (judge checks ungraded) before the cancellation goes on.
                record.update(grade(request.checks, answer))
                self._emit(request, record)
                raise _Recorded() from None
            if judge_cost:
                record["cost"] = round((record["cost"] or 0.0) + judge_cost, 12)
            record["judge_cost"] = round(judge_cost, 12)
        record.update(grade(request.checks, answer, judged))

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

    def _failed(self, request: Request, failure: RequestFailed, log: AttemptLog, started: float) -> None:
        """One record for a failed request; the failure's class decides what else stops."""
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
        # A refused key and an empty purse stop the run; a model-wide condition stops the
        # model; a platform limit past the wait cap stops its scope until the reset. Rows
        # that never got an answer are `skipped` (a resume runs them again).
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
        skipped = status == "skipped"
        record = self._record(
            request,
            status,
            reason,
            skipped or failure.retryable,
            started,
            error=error,
            attempts=log.attempts,
            attempt_errors=log.failures,
            cost=None if skipped else 0.0,
        )
        self._emit(request, record)

    # -- key refresh -------------------------------------------------------------------------
    async def _maybe_refresh_key(self) -> None:
        """Other jobs and shards may share the key: every N requests or T seconds, one
        worker re-reads /key before its reservation, and the ledger follows the credit."""
        self._sent_since_refresh += 1
        now = self.clock.monotonic()
        due = (
            self._sent_since_refresh >= self.config.key_refresh_requests
            or now - self._last_refresh >= self.config.key_refresh_s
        )
        if not due or self.costs is None or self.costs.models is None or self._refreshing:
            return
        self._sent_since_refresh = 0
        self._last_refresh = now
        self._refreshing = True
        try:
            info = await self.client.key_info()
        except RequestFailed:
            return  # a failed refresh is not a reason to stop; the next one may work
        finally:
            self._refreshing = False
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
                continue
            try:
                await self._process(request)
            except (asyncio.CancelledError, _Recorded) as cancelled:
                # Cancelled by the grace timer (or the process is going down): the row
                # still gets its one record, and the loop drains the rest as skipped.
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                self.request_stop(STOP_INTERRUPTED)
                if not isinstance(cancelled, _Recorded):
                    self.skip(request, self.stop_reason or STOP_INTERRUPTED)

    async def _watch(self, workers: list[asyncio.Task[None]]) -> None:
        """Enforce the deadline, then the grace after any stop, by cancelling what is left."""
        deadline = self.config.deadline_s
        stop_wait = asyncio.ensure_future(self._stop_event.wait())
        try:
            if deadline is not None:
                timer = asyncio.ensure_future(self.clock.sleep(deadline))
                await asyncio.wait([stop_wait, timer], return_when=asyncio.FIRST_COMPLETED)
                timer.cancel()
                self.request_stop(STOP_DEADLINE, f"the run deadline of {deadline:g} s was reached")
            else:
                await stop_wait
        finally:
            stop_wait.cancel()
        grace = 0.0 if self.stop_reason in (STOP_AUTH, STOP_IO) else self.config.grace_s
        if grace > 0:
            all_done = asyncio.ensure_future(asyncio.wait(workers))
            sleeper = asyncio.ensure_future(self.clock.sleep(grace))
            await asyncio.wait([all_done, sleeper], return_when=asyncio.FIRST_COMPLETED)
            sleeper.cancel()
            all_done.cancel()
        for worker in workers:
            worker.cancel()

    async def run(self, requests: Iterator[Request]) -> RunOutcome:
        if self.config.deadline_s is not None:
            self._deadline_at = self.clock.monotonic() + self.config.deadline_s
        source = iter(requests)
        workers = [asyncio.ensure_future(self._worker(source)) for _ in range(self.config.concurrency)]
        watcher = asyncio.ensure_future(self._watch(workers))
        outcomes = await asyncio.gather(*workers, return_exceptions=True)
        watcher.cancel()
        failures = [o for o in outcomes if isinstance(o, Exception)]
        if failures:
            # A worker died (a dataset unreadable mid-run, a disk full): rows written so far
            # stay; the rest would be silently missing, so the run must not look complete.
            raise failures[0]
        # Rows never dispatched, and any a cancelled worker held, end as skipped.
        for request in source:
            self.skip(request, self.stop_reason or STOP_INTERRUPTED)
        return RunOutcome(self.stop_reason, self.stop_message, self.ledger.spent)
