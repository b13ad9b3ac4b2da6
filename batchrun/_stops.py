"""What stops rows from being sent: the run's stop, a stopped model, a blocked limit scope.

One `Stops` per run, shared by the worker pool, grader requests (_judging) and batch mode
(_batch_run). A stop is requested once: dispatch ends, and each row in flight gets
`grace_s` through its own `asyncio.timeout`, rescheduled here (none after a results file
that fails: nothing more can be recorded).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from ._clock import Clock
from ._exceptions import (
    AuthFailed,
    CreditExhausted,
    DailyCapReached,
    ModelUnavailable,
    RateLimited,
    RequestFailed,
)
from ._matrix import Request
from ._retry import RetryPolicy
from ._status import Status, StopReason
from ._throttle import scope_of

# Stops for money: what the cache answers after one costs nothing.
FREE_AFTER = frozenset({StopReason.BUDGET, StopReason.CREDITS, StopReason.KEY_UNREADABLE})


class Stops:
    def __init__(self, clock: Clock, policy: RetryPolicy, grace_s: float, deadline_given_s: float | None) -> None:
        self.clock = clock
        self.policy = policy
        self.grace_s = grace_s
        self.deadline_given_s = deadline_given_s  # as the job or --deadline gave it
        self.reason: StopReason | None = None
        self.message = ""
        self.later: StopReason | None = None  # a stop asked for after the first (a signal after a budget stop)
        self.stopped_models: dict[str, str] = {}  # model -> skip reason, for the rest of the run
        # limit scope (a model, or the :free pool) -> (monotonic time it reopens, skip reason)
        self.blocked_scopes: dict[str, tuple[float, str]] = {}
        self.event = asyncio.Event()  # set by the stop: batch mode's waits end on it
        self.on_stop: list[Callable[[], None]] = []  # called once, at the stop (the throttle's halt)
        self.on_model_stop: list[Callable[[str], None]] = []  # a model's scope refused (the throttle's)
        self._deadline_at: float | None = None
        self._in_flight: set[asyncio.Timeout] = set()  # each dispatched row's own timeout
        self._grace_ends: float | None = None  # loop time when in-flight rows are cut off
        self.cut_by_deadline = 0  # rows whose next retry the deadline cut before any stop came
        self._held_by: list[tuple[str, float]] = []  # what requests wait on (a /key read), since when

    def account_failure(self, failure: RequestFailed) -> None:
        """A refused key (401) or an empty purse (402) stops the run, whichever call met it: a
        /key read mid-run too, which stopped it as key_unreadable, exit 5 for a revoked key
        where start-up said exit 9 (out-109 F3)."""
        if isinstance(failure, AuthFailed):
            self.request(StopReason.AUTH, f"the API key was refused: {failure.message}")
        elif isinstance(failure, CreditExhausted):
            self.request(StopReason.CREDITS, failure.message)

    def request(self, reason: StopReason, message: str = "") -> None:
        """Stop dispatching; rows in flight get `grace_s`."""
        if self.reason is not None:
            if reason != self.reason and self.later is None:
                self.later = reason  # ends the answers a stop for money still gives (free_now)
            return
        self.reason = reason
        self.message = message
        self.event.set()
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # before the run's loop exists: nothing is in flight
            loop = None
        if loop is not None:
            # A refused key ends nothing already sent: an answer on its way was billed, and cut off
            # it was bought again by the resume (out-160 F1). Nor does a results file that fails:
            # cut off at once, the answers on their way were billed, and the resume held each at
            # its worst case (236x an answer's cost: out-178 F4); let in, the attempt journal
            # keeps what each cost, and the resume records that.
            self._grace_ends = loop.time() + self.grace_s
            for limit in self._in_flight:
                limit.reschedule(self._grace_ends)
        for halt in self.on_stop:
            halt()

    def free_now(self) -> bool:
        """Whether what costs nothing (a cache hit, a grader's hit) is still answered: until a
        stop, and after a stop for money until any other stop (a signal, the deadline) comes.
        Hits were skipped with the rest after a budget stop: which survived hung on the matrix's
        order, and a resume whose budget was used up answered none (break63 F1)."""
        return self.reason is None or (self.reason in FREE_AFTER and self.later is None)

    @property
    def grace_ends(self) -> float | None:
        """The loop time rows in flight are cut off at, once stopped."""
        return self._grace_ends

    @asynccontextmanager
    async def row_time(self) -> AsyncIterator[asyncio.Timeout]:
        """A row's time: unbounded until a stop, then the grace (`expired()` says it ran out)."""
        async with asyncio.timeout_at(self._grace_ends) as limit:
            self._in_flight.add(limit)
            try:
                yield limit
            finally:
                self._in_flight.discard(limit)

    # -- the deadline -----------------------------------------------------------------------
    def start_deadline(self, seconds: float | None) -> None:
        if seconds is not None:
            self._deadline_at = self.clock.monotonic() + seconds

    def time_left(self) -> float | None:
        """Seconds until the run's deadline; None without one."""
        return None if self._deadline_at is None else self._deadline_at - self.clock.monotonic()

    def stopping(self) -> bool:
        """A stop was asked for, or the deadline has passed (its stop is on its way)."""
        left = self.time_left()
        return self.reason is not None or (left is not None and left <= 0)

    async def deadline(self, seconds: float) -> None:
        """Sleep until the deadline, then stop the run."""
        await self.clock.sleep(seconds)
        self.deadline_reached(seconds)

    def deadline_reached(self, seconds: float = 0.0) -> None:
        """Stop the run for its deadline, named as it was given (pre-flight used part of it:
        `seconds` is what was left), and what requests were held by then, if anything was."""
        given = self.deadline_given_s if self.deadline_given_s is not None else seconds
        held = ""
        if self._held_by:  # out-181 F3: "deadline" alone, where /key had hung for minutes
            what, since = self._held_by[0]
            held = f", with requests held {self.clock.monotonic() - since:.0f} s by {what} that had not answered"
        self.request(StopReason.DEADLINE, f"the run deadline of {given:g} s was reached{held}")

    async def held_by(self, what: str, wait: Awaitable[Any]) -> None:
        """Await `wait`, which holds requests back (a /key read under way): a deadline that comes
        meanwhile says so."""
        held = (what, self.clock.monotonic())
        self._held_by.append(held)
        try:
            await wait
        finally:
            self._held_by.remove(held)

    # -- models and limit scopes ------------------------------------------------------------
    def model_stop(self, model: str) -> str | None:
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

    def too_long(self, failure: RequestFailed) -> str | None:
        """Why the server's wait ended the retrying (over max_wait_s or past the deadline)."""
        wait, cap, left = failure.retry_after, self.policy.max_wait_s, self.time_left()
        if not failure.retryable or wait is None:
            return None
        if wait > cap:
            return f"server asked to wait {wait:.0f} s, over the {cap:g} s cap"
        if left is not None and wait > left:
            return f"server asked to wait {wait:.0f} s, past the run's deadline ({max(0.0, left):.0f} s left)"
        return None

    def _block_platform_scope(self, request: Request, failure: RateLimited) -> str:
        """A platform limit (X-RateLimit-*) that resets beyond the wait cap: the scope (the
        model, or every :free model) sends nothing until its reset. A reset past `max_elapsed_s`
        is a daily cap; a shorter one is a rate limit, even past the deadline: a per-minute
        limit's 60 s after a deadline of 20 was "a daily cap", exit 1 (break32 m1)."""
        wait = failure.limit_wait if failure.limit_wait is not None else failure.retry_after or 0.0
        return self._block_scope(request, wait, "daily_cap" if wait > self.policy.max_elapsed_s else "rate_limited")

    def _block_scope(self, request: Request, wait: float, reason: str) -> str:
        scope = scope_of(request.model)
        until = self.clock.monotonic() + wait
        current = self.blocked_scopes.get(scope)
        if current is None or current[0] < until:
            self.blocked_scopes[scope] = (until, reason)
        return reason

    def react(
        self,
        request: Request,
        failure: RequestFailed,
        too_long: str | None,
        attempts: int | None = None,
        cut_by_deadline: bool = False,
    ) -> tuple[Status, str]:
        """What a final failure stops, as (status, reason) for its record. A refused key and
        an empty purse stop the run; a model-wide condition stops the model; a platform
        limit past the wait cap stops its scope until the reset. Rows that never got an
        answer are `skipped` (a resume runs them again), as is one whose retries a stop cut
        (`attempts` made, fewer than the policy's), or whose next wait would pass the deadline
        (`cut_by_deadline`): an attempt timed out in the deadline's grace was a final error, which
        the resume exit 6 asks for never ran again (break55 F2, verify58 F2)."""
        status, reason = Status.ERROR, failure.kind
        if isinstance(failure, AuthFailed | CreditExhausted):
            # Never answered, as every row the stop left: skipped, for a resume once the key or
            # the purse is fixed (out-157 F1: the rows a 401 met stayed errors no resume sent).
            self.account_failure(failure)
            status = Status.SKIPPED
            reason = StopReason.CREDITS if isinstance(failure, CreditExhausted) else StopReason.AUTH
        elif isinstance(failure, ModelUnavailable):
            self.stopped_models.setdefault(request.model, failure.kind)
        elif isinstance(failure, DailyCapReached):
            self.stopped_models.setdefault(request.model, "daily_cap")
            status, reason = Status.SKIPPED, "daily_cap"
        elif isinstance(failure, RateLimited) and failure.platform and too_long:
            status, reason = Status.SKIPPED, self._block_platform_scope(request, failure)
        elif too_long and failure.retry_after is not None:
            # Any other server wait past the cap (a capacity_exhausted retry_after, a 503's or a
            # provider 429's Retry-After): the model's waiting rows went out one per max_wait_s,
            # each told the same (break45 F3: 40 rows in 78 s, a day for 1,000). Its scope waits
            # the server's time; its rows are skipped now, for a resume.
            status, reason = Status.SKIPPED, self._block_scope(request, failure.retry_after, failure.kind)
        elif (
            failure.retryable
            and attempts is not None
            and attempts < self.policy.max_attempts
            and (self.stopping() or cut_by_deadline)
        ):
            status, reason = Status.SKIPPED, self.reason or StopReason.DEADLINE
            self.cut_by_deadline += self.reason is None
        if self.model_stop(request.model) is not None:
            for refused in self.on_model_stop:
                refused(request.model)
        return status, reason

    def outcome(self) -> tuple[StopReason | None, str]:
        """The run's stop and its words; the deadline's when it cut rows' retries before its
        timer came: every row skipped "deadline", the run exited 12, not 6 (verify64 F5)."""
        if self.reason is None and self.cut_by_deadline:
            given = f" of {self.deadline_given_s:g} s" if self.deadline_given_s is not None else ""
            return StopReason.DEADLINE, f"the run deadline{given} came before {self.cut_by_deadline} row(s) could retry"
        return self.reason, self.message

    def why_not_sent(self, model: str) -> str:
        """Why an attempt waiting its turn was not sent (NotSent): the run's stop, its model's
        (or scope's), or the budget that could not hold it."""
        return self.reason or self.model_stop(model) or StopReason.BUDGET
