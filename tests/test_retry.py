"""The retry policy, the throttle's model caps and the credit ledger, on a fake clock
(the throttle's pacing is in test_pacing.py)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from batchrun import CreditLedger, RateLimited, Rejected, Transient, load_job, matrix_requests
from batchrun._exceptions import RequestFailed
from batchrun._ledger import BudgetExhausted
from batchrun._retry import ACCOUNT_TIMEOUTS, AttemptLog, RetryPolicy, call_with_retries, retry_call
from batchrun._status import Status, StopReason
from batchrun._stops import Stops
from batchrun._throttle import Throttle

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


async def test_a_wait_of_zero_is_no_hint_and_the_backoff_applies(clock: FakeClock) -> None:
    # out-108 F3: `Retry-After: 0` (or a date or reset already past) on a 503 storm spent all six
    # attempts in ~30 ms, and the rows ended in error where the backoff rode the blip out.
    random.seed(5)
    calls, attempt = failing(*[Transient("server_error", "busy", 503, retry_after=0.0)] * 5)
    await call_with_retries(attempt, RetryPolicy(max_attempts=6), clock.sleep, AttemptLog())
    assert len(clock.sleeps) == 5 and sum(clock.sleeps) > 1.0 and all(0 <= s <= 30 for s in clock.sleeps)
    # out-111 F4: nor is one of 1 ms: below the backoff's base, the longer of the two
    random.seed(5)
    calls, attempt = failing(*[Transient("server_error", "busy", 503, retry_after=0.001)] * 5)
    await call_with_retries(attempt, RetryPolicy(max_attempts=6), clock.sleep, AttemptLog())
    assert sum(clock.sleeps[5:]) > 1.0 and all(0.001 <= s <= 30 for s in clock.sleeps[5:])


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


async def test_retries_ended_by_the_deadline_alone_are_said_so(clock: FakeClock) -> None:
    # verify58 F2: a row failing just before the deadline, its next backoff past it, was a final
    # error (the resume exit 6 asks for never ran it again): the log says the deadline cut it.
    policy = RetryPolicy(max_attempts=5, backoff_base_s=1.0, backoff_max_s=1.0, max_wait_s=1.0)
    calls, attempt = failing(*[RateLimited("rate_limited", "x", 429, retry_after=0.8)] * 10)
    log = AttemptLog()
    with pytest.raises(RateLimited):
        await call_with_retries(attempt, policy, clock.sleep, log, time_left=lambda: 0.5)
    assert calls[0] == 1 and log.cut_by_deadline
    # Out of attempts first: the row's own end, however near the deadline.
    calls, attempt = failing(*[RateLimited("rate_limited", "x", 429, retry_after=0.8)] * 10)
    log = AttemptLog()
    with pytest.raises(RateLimited):
        await call_with_retries(attempt, replace(policy, max_attempts=1), clock.sleep, log, time_left=lambda: 0.5)
    assert calls[0] == 1 and not log.cut_by_deadline


def test_a_row_whose_retries_a_stop_or_the_deadline_cut_is_skipped_for_the_resume(clock: FakeClock) -> None:
    stops = Stops(clock, RetryPolicy(max_attempts=3), grace_s=10, deadline_given_s=None)
    request = next(matrix_requests(load_job(Path(__file__).parents[1] / "jobs" / "eval.yaml")))
    timeout = Transient("timeout", "slow")
    assert stops.react(request, timeout, None, attempts=1) == (Status.ERROR, "timeout")
    assert stops.react(request, timeout, None, attempts=1, cut_by_deadline=True) == (Status.SKIPPED, "deadline")
    assert stops.react(request, timeout, None, attempts=3, cut_by_deadline=True) == (Status.ERROR, "timeout")
    assert stops.react(request, Rejected("bad_request", "no", 400), None, 1, True) == (Status.ERROR, "bad_request")
    # A row cut so before the deadline's timer came is the deadline's stop of the run, exit 6: with
    # every row skipped "deadline" and no stop, the run was "rows skipped although nothing stopped
    # it", 12 (verify64 F5).
    assert stops.outcome() == (StopReason.DEADLINE, "the run deadline came before 1 row(s) could retry")
    stops.request(StopReason.INTERRUPTED)
    assert stops.outcome()[0] == StopReason.INTERRUPTED
    assert stops.react(request, timeout, None, attempts=1) == (Status.SKIPPED, "interrupted")


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


async def test_an_account_call_gives_up_at_its_second_timeout(clock: FakeClock) -> None:
    # break36 F4: a /key that never answered held a run's start-up six timeouts (6 x 60 s),
    # silent, before exit 1. Other transient failures are retried as ever.
    calls, attempt = failing(*[Transient("timeout", "no complete answer within 60 s")] * 10)
    with pytest.raises(RequestFailed) as caught:
        await retry_call(attempt, RetryPolicy(), clock.sleep)
    assert calls[0] == ACCOUNT_TIMEOUTS == 2 and caught.value.kind == "timeout"
    assert "(2 times)" in caught.value.message
    calls, attempt = failing(Transient("network", "reset"), Transient("timeout", "slow"), Transient("network", "x"))
    with pytest.raises(Transient):
        await retry_call(attempt, RetryPolicy(max_attempts=3), clock.sleep)
    assert calls[0] == 3


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


def test_rows_of_a_cooling_scope_are_held_back_while_others_can_go(clock: FakeClock) -> None:
    # verify48 N5: one model at capacity ("retry after 60 s") held every worker, each waiting the
    # cooldown out with a row of it, and the other models' rows went unsent for ten minutes.
    throttle = Throttle(4, clock)
    throttle.scope("a").cooldown_until = 10.0
    items = iter(["a1", "b1", "a2", "b2", "a3"])
    feed = throttle.cooled_first(items, lambda item: item[0])
    assert [next(feed), next(feed)] == ["b1", "b2"]  # a's rows held while its scope cools
    clock.now = 10.0  # cooled: the held rows go first, in order
    assert list(feed) == ["a1", "a2", "a3"]
    # Nothing else left: held rows go anyway (they wait in `acquire`, as before).
    throttle.scope("c").cooldown_until = 99.0
    assert list(throttle.cooled_first(iter(["c1", "c2"]), lambda item: item[0])) == ["c1", "c2"]
