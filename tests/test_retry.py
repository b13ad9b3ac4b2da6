"""The retry policy, the shared throttle and the credit ledger, on a fake clock."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest

from batchrun import CreditLedger, RateLimited, Rejected, Transient
from batchrun._ledger import BudgetExhausted
from batchrun._limiter import Throttle
from batchrun._retry import AttemptLog, RetryPolicy, call_with_retries

from .conftest import FakeClock


def failing(*failures: Exception) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    calls = [0]

    async def attempt() -> str:
        calls[0] += 1
        if calls[0] <= len(failures):
            raise failures[calls[0] - 1]
        return "answer"

    return calls, attempt


async def test_server_wait_goes_to_the_injected_sleep(clock: FakeClock) -> None:
    calls, attempt = failing(
        RateLimited("rate_limited", "slow down", 429, retry_after=7.0),
        RateLimited("rate_limited", "slow down", 429, retry_after=0.25),
    )
    log = AttemptLog()
    assert await call_with_retries(attempt, RetryPolicy(), clock.sleep, log) == "answer"
    assert clock.sleeps == [7.0, 0.25]
    assert log.attempts == 3
    assert log.failures == [
        {"kind": "rate_limited", "http_status": 429, "wait_s": 7.0},
        {"kind": "rate_limited", "http_status": 429, "wait_s": 0.25},
    ]


async def test_backoff_without_a_hint_is_jittered_and_capped(clock: FakeClock) -> None:
    random.seed(3)
    calls, attempt = failing(*[Transient("server_error", "boom", 500)] * 5)
    policy = RetryPolicy(max_attempts=6, max_wait_s=2.0, backoff_base_s=0.5, backoff_max_s=60)
    await call_with_retries(attempt, policy, clock.sleep, AttemptLog())
    assert len(clock.sleeps) == 5
    assert all(0 <= s <= 2.0 for s in clock.sleeps)


async def test_a_wait_above_the_cap_ends_the_retrying_instead_of_retrying_early(clock: FakeClock) -> None:
    calls, attempt = failing(RateLimited("rate_limited", "later", 429, retry_after=3600.0))
    log = AttemptLog()
    with pytest.raises(RateLimited):
        await call_with_retries(attempt, RetryPolicy(max_wait_s=60), clock.sleep, log)
    assert calls[0] == 1 and clock.sleeps == []
    assert log.failures[-1]["kind"] == "rate_limited"


async def test_max_attempts_and_max_elapsed(clock: FakeClock) -> None:
    calls, attempt = failing(*[Transient("network", "reset")] * 10)
    with pytest.raises(Transient):
        await call_with_retries(attempt, RetryPolicy(max_attempts=3), clock.sleep, AttemptLog())
    assert calls[0] == 3
    calls, attempt = failing(*[RateLimited("rate_limited", "x", 429, retry_after=4.0)] * 10)
    with pytest.raises(RateLimited):
        await call_with_retries(
            attempt,
            RetryPolicy(max_attempts=50, max_elapsed_s=10),
            clock.sleep,
            AttemptLog(),
        )
    assert clock.sleeps[-2:] == [4.0, 4.0] and sum(clock.sleeps[-2:]) <= 10 and calls[0] == 3


async def test_final_failures_are_not_retried(clock: FakeClock) -> None:
    calls, attempt = failing(Rejected("bad_request", "no", 400))
    log = AttemptLog()
    with pytest.raises(Rejected):
        await call_with_retries(attempt, RetryPolicy(), clock.sleep, log)
    assert (
        calls[0] == 1
        and clock.sleeps == []
        and log.failures == [{"kind": "bad_request", "http_status": 400, "wait_s": None}]
    )


async def test_throttle_cooldown_is_scoped_to_the_model_and_honours_the_longest_wait(clock: FakeClock) -> None:
    throttle = Throttle(8, clock)
    started = await throttle.acquire("m")
    await throttle.release("m")
    throttle.rate_limited("m", started, 5.0)
    throttle.rate_limited("m", started, 2.0)
    assert await throttle.acquire("other-model") == 0.0  # limits differ per model (limits.mdx)
    assert await throttle.acquire("m") >= 5.0  # the limited model waits the longest wait asked
    assert throttle.scope("m").limit == 4 and throttle.scope("other-model").limit == 8  # cut once, for m only


async def test_free_models_share_one_account_wide_scope(clock: FakeClock) -> None:
    throttle = Throttle(8, clock)
    throttle.rate_limited("a/x:free", 0.0, 30.0)
    assert await throttle.acquire("paid/model") == 0.0  # a :free limit never pauses paid models
    assert await throttle.acquire("b/y:free") >= 30.0  # but pauses every :free model


async def test_a_scope_cooldown_never_exceeds_max_wait(clock: FakeClock) -> None:
    throttle = Throttle(8, clock, max_wait_s=60)
    throttle.rate_limited("m", 0.0, 21_600.0)  # a daily cap's reset at UTC midnight
    assert await throttle.acquire("m") == pytest.approx(60.0)


async def test_the_scope_cools_until_the_limit_resets_not_the_rows_longer_wait(clock: FakeClock) -> None:
    throttle = Throttle(8, clock)
    throttle.rate_limited("m", 0.0, 1.0, limit_wait=0.05)  # Retry-After: 1, X-RateLimit-Reset in 50 ms
    assert await throttle.acquire("m") == pytest.approx(0.05)


async def test_throttle_concurrency_grows_back_slowly_and_never_above_cap(clock: FakeClock) -> None:
    throttle = Throttle(4, clock)
    throttle.rate_limited("m", 0.0, None, pace=False)
    throttle.rate_limited("m", clock.now + 1, None, pace=False)
    scope = throttle.scope("m")
    assert scope.limit == 1 and scope.rate is None
    for _ in range(100):
        throttle.succeeded("m")
    assert scope.limit == 4


async def test_throttle_paces_after_a_rate_limit(clock: FakeClock) -> None:
    throttle = Throttle(8, clock)
    for _ in range(20):
        throttle.succeeded("m")
    throttle.rate_limited("m", 0.0, None)
    scope = throttle.scope("m")
    assert scope.rate == pytest.approx(0.95 * 20) and scope.ceiling == 20
    starts = []
    for _ in range(5):
        starts.append(await throttle.acquire("m"))
        await throttle.release("m")
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    rate = scope.rate
    assert rate is not None and all(g == pytest.approx(1 / rate, rel=0.2) for g in gaps)


async def test_the_pace_grows_slowly_near_the_ceiling(clock: FakeClock) -> None:
    throttle = Throttle(8, clock)
    for _ in range(20):
        throttle.succeeded("m")
    throttle.rate_limited("m", 0.0, None)
    scope = throttle.scope("m")
    for _ in range(40):
        throttle.succeeded("m")
    assert scope.rate is not None and 0.97 * 20 <= scope.rate < 20  # 2 s of answers: fast up, then 0.2%/s


async def test_per_model_cap_holds(clock: FakeClock) -> None:
    throttle = Throttle(8, clock, {"slow": 1})
    await throttle.acquire("slow")
    waiter = asyncio.ensure_future(throttle.acquire("slow"))
    await asyncio.sleep(0)
    assert not waiter.done()
    await throttle.acquire("fast")  # other models are not held up
    await throttle.release("slow")
    await asyncio.wait_for(waiter, 1)


async def test_ledger_reserve_settle_release() -> None:
    ledger = CreditLedger(1.0)
    first = await ledger.reserve(0.6)
    assert ledger.remaining == pytest.approx(0.4)
    waiting = asyncio.ensure_future(ledger.reserve(0.6))
    await asyncio.sleep(0)
    assert not waiting.done()  # does not fit while the first is in flight
    await ledger.settle(first, 0.1)
    await asyncio.wait_for(waiting, 1)
    assert ledger.spent == pytest.approx(0.1) and ledger.reserved == pytest.approx(0.6)
    await ledger.release(0.6)
    assert ledger.reserved == 0 and ledger.spent == pytest.approx(0.1)
    with pytest.raises(BudgetExhausted):
        await ledger.reserve(2.0)


async def test_ledger_never_overspends_under_many_concurrent_tasks() -> None:
    ledger = CreditLedger(1.0)
    rng = random.Random(1)
    settled: list[float] = []

    async def task() -> None:
        worst = rng.uniform(0.01, 0.2)
        try:
            reservation = await ledger.reserve(worst)
        except BudgetExhausted:
            return
        await asyncio.sleep(0)
        actual = worst * rng.uniform(0.1, 1.0)
        settled.append(actual)
        await ledger.settle(reservation, actual)

    await asyncio.gather(*(task() for _ in range(500)))
    assert sum(settled) <= 1.0 + 1e-9
    assert ledger.spent == pytest.approx(sum(settled)) and ledger.reserved == pytest.approx(0) and ledger.in_flight == 0
