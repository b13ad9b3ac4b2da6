"""The retry policy, built from tenacity's strategies.

Server hints (Retry-After, retry-after-ms, X-RateLimit-Reset) take precedence over the
exponential full-jitter backoff, and are never shortened: a hint longer than the cap on
a single wait ends the retrying instead of retrying early.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_random_exponential

from ._exceptions import RequestFailed, Transient
from ._settings import DEFAULTS, RunSettings

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = DEFAULTS.max_attempts
    max_elapsed_s: float = DEFAULTS.max_elapsed_s
    max_wait_s: float = DEFAULTS.max_wait_s
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0


def _failure(state: RetryCallState) -> RequestFailed | None:
    exc = state.outcome.exception() if state.outcome is not None else None
    return exc if isinstance(exc, RequestFailed) else None


MIN_HINT_S = 0.1  # a server's wait below this (1 ms, a Retry-After of 0) is no hint: the backoff applies


class wait_server_hint(wait_base):
    """The server's wait when it gave one; otherwise the backoff, capped."""

    def __init__(self, backoff: wait_base, cap: float) -> None:
        self.backoff = backoff
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        failure = _failure(retry_state)
        hint = failure.retry_after if failure is not None else None
        if hint is not None and hint >= MIN_HINT_S:
            return hint
        # A wait of 0 (a Retry-After of 0, a date or a reset already past) is no hint: it spent
        # every attempt within milliseconds of a 503 (out-108 F3), and so did one of 1 ms (out-111
        # F4). The docs' own retry loop takes only a positive one, and backs off without
        # (errors-and-debugging.mdx); a hint below MIN_HINT_S is never shortened either.
        return max(hint or 0.0, min(self.backoff(retry_state), self.cap))


class stop_when_exhausted(stop_base):
    """Out of attempts, out of elapsed time, or the server asked for a wait above the cap
    or past the run's deadline (`time_left`: seconds until it, None without one)."""

    def __init__(
        self, policy: RetryPolicy, time_left: Callable[[], float | None] | None = None, log: AttemptLog | None = None
    ) -> None:
        self.policy = policy
        self.time_left = time_left
        self.log = log  # told when the deadline alone ended the retries

    def __call__(self, retry_state: RetryCallState) -> bool:
        policy = self.policy
        upcoming = retry_state.upcoming_sleep
        left = self.time_left() if self.time_left is not None else None
        exhausted = (
            retry_state.attempt_number >= policy.max_attempts
            or upcoming > policy.max_wait_s
            or retry_state.idle_for + upcoming > policy.max_elapsed_s
        )
        if not exhausted and left is not None and upcoming > left:
            if self.log is not None:
                self.log.cut_by_deadline = True
            return True
        return exhausted


@dataclass
class AttemptLog:
    """How many attempts a request took, and each failed attempt's kind, status and wait."""

    attempts: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    # The retries ended only because the next wait would pass the run's deadline: the stop, not
    # the row, ended them (a final error that the resume exit 6 asks for never ran: verify58 F2).
    cut_by_deadline: bool = False

    def record(self, failure: RequestFailed, wait: float | None) -> None:
        self.failures.append(
            {
                "kind": failure.kind,
                "http_status": failure.http_status,
                "wait_s": None if wait is None else round(wait, 3),
            }
        )


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]],
    log: AttemptLog,
    on_retry: Callable[[RequestFailed, float], Awaitable[None]] | None = None,
    time_left: Callable[[], float | None] | None = None,
    retried: type[Transient] = Transient,
) -> T:
    """Run `attempt` until it succeeds, fails finally, or the policy gives up (re-raising).
    `retried`: the failures tried again (a narrower kind where any other may have done what
    was asked: a batch submission)."""
    # Fast path: most requests succeed at once, and building tenacity's machinery for
    # each of them cost a fifth of the run's CPU at 3,000 requests/s. The retry loop
    # starts only after a transient failure, replaying that failure as its first attempt,
    # so tenacity sees exactly the sequence it would have seen.
    log.attempts += 1
    try:
        return await attempt()
    except retried as failure:
        replay: list[Transient] = [failure]
    except RequestFailed as failure:
        log.record(failure, None)
        raise

    async def before_sleep(state: RetryCallState) -> None:
        failure = _failure(state)
        if failure is not None:
            log.record(failure, state.upcoming_sleep)
            if on_retry is not None:
                await on_retry(failure, state.upcoming_sleep)

    async def counted() -> T:
        if replay:
            raise replay.pop()
        log.attempts += 1
        try:
            return await attempt()
        except RequestFailed as failure:
            if not failure.retryable:
                log.record(failure, None)
            raise

    retrying = AsyncRetrying(
        stop=stop_when_exhausted(policy, time_left, log),
        wait=wait_server_hint(
            wait_random_exponential(multiplier=policy.backoff_base_s, max=policy.backoff_max_s), policy.max_wait_s
        ),
        retry=retry_if_exception_type(retried),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return await retrying(counted)
    except Transient as failure:
        log.record(failure, None)  # the attempt the policy gave up after
        raise


ACCOUNT_TIMEOUTS = 2


async def retry_call(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]],
    time_left: Callable[[], float | None] | None = None,
    retried: type[Transient] = Transient,
) -> T:
    """A start-up or management call (/models, /key, /keys) retried like a chat request:
    one 503 from /models must not end a nightly run before it starts. But not past its
    ACCOUNT_TIMEOUTS-th timeout: an account endpoint that lets timeout_s pass twice is down,
    not slow (break36 F4: a /key that never answered held a run's start-up 6 x 60 s, silent)."""
    timeouts = 0

    async def once() -> T:
        nonlocal timeouts
        try:
            return await call()
        except Transient as failure:
            timeouts += failure.kind == "timeout"
            if timeouts >= ACCOUNT_TIMEOUTS:
                raise RequestFailed(
                    failure.kind, f"{failure.message} ({timeouts} times)", failure.http_status
                ) from None
            raise

    return await call_with_retries(once, policy, sleep, AttemptLog(), time_left=time_left, retried=retried)


def retry_policy(settings: RunSettings) -> RetryPolicy:
    return RetryPolicy(settings.max_attempts, settings.max_elapsed_s, settings.max_wait_s)
