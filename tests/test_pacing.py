"""The rate controller (`_pacing.ScopeControl`) and the throttle that applies it per limit
scope, on explicit times and on the fake clock: nothing here sleeps for real."""

from __future__ import annotations

import asyncio

import pytest

from batchrun._exceptions import NotSent
from batchrun._pacing import PacingPolicy, ScopeControl
from batchrun._throttle import Throttle

from .conftest import FakeClock


def answered(scope: ScopeControl, count: int, at: float, took: float = 0.001) -> None:
    for _ in range(count):
        scope.succeeded(at, took)


def limited_after(served: int, *, cap: float = 32, cooldown: float | None = 1.0) -> ScopeControl:
    """A scope that got `served` answers in its first 0.1 s, then a 429 (the cold start)."""
    scope = ScopeControl(cap, began=0.0)
    answered(scope, served, 0.1)
    scope.limited(0.1, 0.05, cooldown, pace=True)
    return scope


# -- slow start ------------------------------------------------------------------------------
def test_a_new_scope_starts_with_a_small_window_that_grows_with_the_answers() -> None:
    scope = ScopeControl(32, began=0.0)
    assert scope.slots(0.0) == 2  # not 32: a limit of 20 would answer 12 of them 429
    answered(scope, 8, 0.01)
    assert scope.slots(0.01) == 2  # a slot for every 4 answers: 8 answers -> 2
    answered(scope, 12, 0.02)
    assert scope.slots(0.02) == 5  # 20 answers -> 5: a limit of 20 sees at most 5 past it
    answered(scope, 108, 0.03)
    assert scope.slots(0.03) == 32 and not scope.ramping  # 128 answers: the whole run's concurrency


def test_slow_answers_grow_the_window_two_slots_an_answer() -> None:
    scope = ScopeControl(64, began=0.0)
    answered(scope, 2, 0.05, took=0.05)  # latency 50 ms: a 429 would come back well before
    assert scope.slots(0.05) == 2  # but 2 answers are not enough to tell (both paid a handshake)
    answered(scope, 2, 0.1, took=0.05)
    assert scope.slots(0.1) == 10
    answered(scope, 2, 0.1, took=0.05)
    assert scope.slots(0.1) == 14  # two slots per answer: tripling every round trip
    answered(scope, 1, 0.1, took=0.001)  # one quick answer: back to a quarter of the answers
    assert scope.slots(0.1) == 14  # (never shrinks: in flight is in flight)
    answered(scope, 60, 0.11)
    assert scope.slots(0.11) == 16  # 67 answers / 4


def test_at_50_ms_the_window_reaches_64_in_four_round_trips() -> None:
    # What bench/latency.py measures: a round trip at a time, every slot's answer back.
    scope, windows = ScopeControl(64, began=0.0), []
    for trip in range(1, 6):
        windows.append(scope.slots(0.05 * (trip - 1)))
        answered(scope, windows[-1], 0.05 * trip, took=0.05)
    assert windows == [2, 2, 10, 30, 64]


def test_the_slow_start_doubles_with_time_when_answers_take_seconds() -> None:
    scope = ScopeControl(32, began=0.0)
    assert [scope.slots(t) for t in (0.0, 0.49, 0.5, 1.0, 1.5, 2.0)] == [2, 2, 4, 8, 16, 32]
    assert scope.next_growth(2.0) is None  # at the cap: no more timers


def test_the_slow_start_never_exceeds_the_cap() -> None:
    scope = ScopeControl(3, began=0.0)
    answered(scope, 1000, 0.1)
    assert scope.slots(0.1) == 3
    assert ScopeControl(1, began=0.0).slots(0.0) == 1  # a run of concurrency 1 starts at 1


# -- back-off on a 429 -----------------------------------------------------------------------
def test_the_first_429_sets_the_pace_from_what_the_limit_let_through() -> None:
    scope = limited_after(20)
    assert scope.rate == pytest.approx(0.95 * 20) and scope.ceiling == 20
    assert not scope.ramping and scope.cooldown_until == pytest.approx(1.1)


def test_answers_sent_before_the_first_429_and_answered_after_it_raise_the_estimate() -> None:
    # 20 let through, 17 answered when the 429 came back: the pace was 16.2 for the whole hold.
    scope = limited_after(17)
    assert scope.ceiling == 17
    answered(scope, 3, 0.12, took=0.07)  # sent at 0.05, before the cut at 0.1
    assert scope.ceiling == 20 and scope.rate == pytest.approx(19)
    answered(scope, 5, 0.3, took=0.1)  # sent at 0.2, after the cut: paced sends, no estimate
    assert scope.ceiling == 20 and scope.rate == pytest.approx(19)


def test_late_answers_never_raise_the_estimate_past_the_limits_own_figure() -> None:
    scope = ScopeControl(32, began=0.0)
    answered(scope, 18, 0.1, took=0.01)
    scope.limited(0.1, 0.05, 0.5, pace=True, exact=True, limit=20)
    answered(scope, 6, 0.15, took=0.1)
    assert scope.ceiling == 20 and scope.rate == pytest.approx(19)


def test_the_estimate_counts_what_was_sent_in_the_last_window_not_what_was_answered() -> None:
    scope = ScopeControl(32, began=0.0)
    answered(scope, 7, 1.0, took=0.5)  # answered in the window before the cut at 1.8, sent before it
    answered(scope, 10, 1.6, took=0.5)  # sent at 1.1, in it
    scope.limited(1.8, 1.7, 1.0, pace=True)
    assert scope.ceiling == 10


def test_a_burst_of_429s_cuts_once() -> None:
    scope = limited_after(20)
    rate, window = scope.rate, scope.window
    for started in (0.06, 0.08, 0.1):  # sent before the cut: the same burst
        scope.limited(0.11, started, 1.0, pace=True)
    assert scope.rate == rate and scope.window == window


def test_the_window_halves_on_each_burst_and_grows_back_by_a_slot_a_window() -> None:
    scope = ScopeControl(8, began=0.0)
    answered(scope, 100, 0.1)
    scope.active = 8
    scope.limited(0.2, 0.15, None, pace=False)  # an overload (503): no pace, but the window halves
    assert scope.window == 4 and scope.rate is None
    scope.limited(0.4, 0.3, None, pace=False)
    assert scope.window == 2
    answered(scope, 2, 0.5)
    assert scope.window == pytest.approx(2.9, abs=0.05)  # + 1/window per answer
    answered(scope, 100, 0.6)
    assert scope.window == 8


def test_x_ratelimit_limit_caps_the_estimate() -> None:
    scope = ScopeControl(32, began=0.0)
    answered(scope, 38, 0.1)  # the first window just turned: 38 answers in the last second
    scope.limited(0.1, 0.05, 0.5, pace=True, exact=True, limit=20)
    assert scope.ceiling == 20 and scope.rate == pytest.approx(19)


def test_a_later_429_cuts_from_the_lower_of_the_pace_and_what_got_through() -> None:
    scope = ScopeControl(32, began=0.0)
    answered(scope, 38, 0.1)
    scope.limited(0.1, 0.05, 1.0, pace=True)  # straddled two fixed windows: 38 is too high
    assert scope.rate == pytest.approx(36.1)
    answered(scope, 20, 1.5)
    scope.limited(2.2, 2.1, 1.0, pace=True)  # a second later only 20 got through
    assert scope.rate == pytest.approx(19) and scope.ceiling == 20


def test_a_429_before_any_answer_starts_slow_and_recovers() -> None:
    scope = ScopeControl(32, began=0.0)
    scope.limited(0.01, 0.0, 1.0, pace=True)  # someone else had used the limit up
    assert scope.rate == 1.0 and scope.ceiling is None
    answered(scope, 10, 2.0)
    assert scope.rate == 11.0  # no estimate: grows by one a second per answer, e-folding


def test_sleeping_what_crowded_asks_always_makes_room() -> None:
    # 16.26378002012156 - 1.0 + the wait lands 2e-15 short of the first start: without the
    # slack the next wait was 2e-15, which does not move a clock at 16.9 (a fake clock that
    # advances by each sleep spun there for ever: the rate-limit ride-through's hang).
    scope = limited_after(20, cooldown=None)
    scope.rate = 1.0  # one start a window
    scope.started(15.762350434174865)
    now = 16.26378002012156
    wait = scope.crowded(now)
    assert wait == pytest.approx(0.4986, abs=1e-4)
    assert scope.crowded(now + wait) == 0


async def test_a_paced_attempt_on_a_clock_that_moves_only_by_its_sleeps_gets_its_slot() -> None:
    clock = FakeClock()
    clock.now = 16.26378002012156
    throttle = Throttle(4, clock)
    scope = throttle.scope("m")
    scope.ramping, scope.rate, scope.window = False, 1.0, 4.0
    scope.started(15.762350434174865)
    scope.next_slot = 0.0
    await asyncio.wait_for(throttle.acquire("m"), 10)  # spun for ever before
    assert clock.now == pytest.approx(16.762350434174865)


# -- the pace --------------------------------------------------------------------------------
def test_paced_slots_are_evenly_spaced_and_made_up_only_a_little() -> None:
    scope = limited_after(20, cooldown=None)
    interval = 1 / 19
    slots = [scope.reserve(0.1) for _ in range(4)]
    assert [b - a for a, b in zip(slots, slots[1:], strict=False)] == pytest.approx([interval] * 3)
    late = slots[-1] + interval + 0.5  # the next wake-up is half a second late
    assert scope.reserve(late) == pytest.approx(late - interval / 5)  # at most a fifth made up


def test_no_more_than_the_pace_starts_in_any_window() -> None:
    scope = limited_after(20, cooldown=None)
    for i in range(19):
        assert scope.crowded(0.2 + i * 0.01) == 0
        scope.started(0.2 + i * 0.01)
    assert scope.crowded(0.4) == pytest.approx(0.8)  # the 20th waits until the first is a second old
    assert scope.crowded(1.21) == 0


def test_the_pace_holds_after_a_cut_then_probes_slowly() -> None:
    scope = limited_after(20, cooldown=0.5)  # hold: 0.5 s / 5% = 10 s
    answered(scope, 100, 5.0)
    assert scope.rate == pytest.approx(19)  # held: no probing right after the limit bit
    answered(scope, 19, 10.2)
    assert scope.rate == pytest.approx(19 * 1.01, rel=1e-3)  # a second of answers: +1%


def test_a_cut_that_went_too_deep_recovers_fast() -> None:
    scope = limited_after(20, cooldown=0.5)
    scope.rate = 10.0
    answered(scope, 10, 1.0)
    assert scope.rate == pytest.approx(10.5)  # +5% a second below the ceiling, hold or not


def test_a_lone_429_while_paced_cuts_without_stopping_the_scope() -> None:
    scope = limited_after(20, cooldown=None)
    scope.limited(5.0, 4.9, 1.0, pace=True)  # Retry-After: 1, no reset: an overrun at the edge
    assert scope.cooldown_until < 5.0 and scope.rate == pytest.approx(19 * 0.95)
    scope.limited(5.3, 5.2, 1.0, pace=True)  # again within a second: the limit is full
    assert scope.cooldown_until == pytest.approx(6.3)


def test_a_429_with_the_limits_reset_always_cools_the_scope() -> None:
    scope = limited_after(20, cooldown=None)
    scope.limited(5.0, 4.9, 0.05, pace=True, exact=True)
    assert scope.cooldown_until == pytest.approx(5.05)


# -- the throttle: scopes, caps, timers ------------------------------------------------------
async def test_a_429_on_one_model_never_slows_another(clock: FakeClock) -> None:
    throttle = Throttle(8, clock)
    started = await throttle.acquire("m")
    await throttle.release("m")
    throttle.rate_limited("m", started, 5.0)
    throttle.rate_limited("m", started, 2.0)
    assert await throttle.acquire("other-model") == 0.0  # limits differ per model (limits.mdx)
    assert throttle.scope("other-model").rate is None and throttle.scope("other-model").ramping
    assert await throttle.acquire("m") >= 5.0  # the limited model waits the longest wait asked


async def test_a_clock_that_reads_below_zero_sends_at_once(clock: FakeClock) -> None:
    # A monotonic clock's origin is arbitrary: set 15 minutes back on a machine up for 10 (a test's
    # clock behind the server's), it reads below 0, and "no cooldown" as 0.0 held every row until
    # the clock passed 0: the run ended at its deadline with nothing sent.
    clock.now = -600.0
    throttle = Throttle(8, clock)
    assert await throttle.acquire("m") == -600.0  # acquire says when it started: at once
    await throttle.release("m")
    for _ in range(20):
        throttle.succeeded("m", clock.now)
    throttle.rate_limited("m", clock.now, None)  # paced from here: its slots read next_slot
    assert await throttle.acquire("m") < -599.0


async def test_free_models_share_one_account_wide_scope(clock: FakeClock) -> None:
    throttle = Throttle(8, clock)
    throttle.rate_limited("a/x:free", 0.0, 30.0)
    assert await throttle.acquire("paid/model") == 0.0  # a :free limit never pauses paid models
    assert await throttle.acquire("b/y:free") >= 30.0  # but pauses every :free model
    assert throttle.scope("a/x:free") is throttle.scope("b/y:free")


async def test_a_scope_cooldown_never_exceeds_max_wait(clock: FakeClock) -> None:
    throttle = Throttle(8, clock, max_wait_s=60)
    throttle.rate_limited("m", 0.0, 21_600.0)  # a daily cap's reset at UTC midnight
    assert await throttle.acquire("m") == pytest.approx(60.0)


async def test_the_scope_cools_until_the_limit_resets_not_the_rows_longer_wait(clock: FakeClock) -> None:
    throttle = Throttle(8, clock)
    throttle.rate_limited("m", 0.0, 1.0, limit_wait=0.05)  # Retry-After: 1, X-RateLimit-Reset in 50 ms
    assert await throttle.acquire("m") == pytest.approx(0.05)


async def test_the_throttle_paces_a_limited_scope(clock: FakeClock) -> None:
    throttle = Throttle(8, clock)
    for _ in range(20):
        throttle.succeeded("m", 0.0)
    throttle.rate_limited("m", 0.0, None)
    starts = []
    for _ in range(5):
        starts.append(await throttle.acquire("m"))
        await throttle.release("m")
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert gaps == pytest.approx([1 / 19] * 4, rel=0.05)


async def test_a_full_slow_start_window_opens_with_time_without_any_release(clock: FakeClock) -> None:
    throttle = Throttle(8, clock, policy=PacingPolicy(initial_window=1, patience_s=0.5))
    await throttle.acquire("m")  # in flight "for ever": no answer, no release
    second = await asyncio.wait_for(throttle.acquire("m"), 5)  # the fake clock's sleeps return at once
    assert second == pytest.approx(0.5)  # the timer woke it at the step
    throttle.close()


async def test_close_cancels_the_slow_start_timer(clock: FakeClock) -> None:
    never = asyncio.Event()

    class StuckClock(FakeClock):
        async def sleep(self, seconds: float) -> None:
            await never.wait()

    stuck = StuckClock()
    throttle = Throttle(8, stuck, policy=PacingPolicy(initial_window=1))
    await throttle.acquire("m")
    waiter = asyncio.ensure_future(throttle.acquire("m"))
    await asyncio.sleep(0)
    timer = throttle._ramp_timer
    assert timer is not None and not timer.done()
    throttle.close()
    await asyncio.sleep(0)
    assert timer.cancelled()
    waiter.cancel()


async def test_a_halt_ends_every_wait_for_a_turn_and_every_later_one() -> None:
    # A stop ends dispatch: what waits for a slot or a cooldown is NotSent at once, however
    # long the wait was to be (the clock here never wakes anyone), and so is anything after.
    never = asyncio.Event()

    class StuckClock(FakeClock):
        async def sleep(self, seconds: float) -> None:
            await never.wait()

    throttle = Throttle(1, StuckClock())
    await throttle.acquire("m")  # the only slot
    for_the_slot = asyncio.ensure_future(throttle.acquire("m"))
    throttle.rate_limited("cool", 0.0, 60.0)
    for_the_cooldown = asyncio.ensure_future(throttle.acquire("cool"))
    napping = asyncio.ensure_future(throttle.nap(3600))  # a retry's wait
    await asyncio.sleep(0)
    assert not (for_the_slot.done() or for_the_cooldown.done() or napping.done())
    throttle.halt()
    for waiter in (for_the_slot, for_the_cooldown):
        with pytest.raises(NotSent):
            await asyncio.wait_for(waiter, 5)
    await asyncio.wait_for(napping, 5)
    with pytest.raises(NotSent):
        await throttle.acquire("other")
    await throttle.nap(3600)  # returns at once: the run has stopped
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()] == []
