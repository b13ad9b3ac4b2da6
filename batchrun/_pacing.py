"""How fast one limit scope may send: a congestion controller driven by 429s, with a fake-clockable `now`.

A rate limit counts requests per unit of time, so the controller steers two things per
scope (a model, or the pool every `:free` model shares; see `_throttle`):

- **a window** (how many attempts may be in flight). Until the first rate limit (slow
  start) it starts at `initial_window` and grows with the answers, and doubles every
  `patience_s` of time in any case; then it is halved once per burst of 429s and grows back
  by about one slot per window of answers. How it grows with the answers depends on how
  fast they come. The first burst of 429s is what was sent between the moment the limit
  was used up and the moment its first 429 came back. When answers take as long as a 429
  (latency 0: the issue 13 measurement had 32 requests in flight when the first 429 came
  back, and 12 of 240 rows answered 429 from that alone), that is the whole window, so the
  window is held to a quarter of the answers so far (`answers_per_slot`): the first burst
  is at most a quarter of what the limit let through, whatever the limit. When every answer
  takes longer (`slow_answer_s`), the sends are spread over the answers' round trip and a
  429 comes back long before it (errors-and-debugging.mdx: rate-limit checks run before any
  work), so a slow start like TCP's is safe: two slots more per answer (`slow_growth`),
  tripling every round trip (TCP's one, doubling, kept 64 in flight waiting ~6 round trips:
  at 50 ms, 5% of a 4 s run; bench/README.md). How many are in flight before the first
  answer stays `initial_window`: that also bounds what a server billing above the worst
  cases charges before its first answer says so. Time covers answers that take seconds:
  half a second with no 429 is evidence enough. Costs without any limit: at latency 0 the
  window reaches 32 after 128 answers (a few tens of ms); at 50 ms, 64 after 4 round trips;
  with answers that take seconds, after 2 s.
- **a pace** (seconds between attempt starts), off until the first 429 that says we sent
  too fast. It then starts at `backoff` (95%) of the rate the limit let through in the
  last second, and is cut the same way once per burst. After a cut it holds for
  `1 / probe_share` times the cooldown the 429 imposed (at least a second), so probing
  above a steady limit costs at most about `probe_share` of the time in cooldowns; then it
  creeps up by `probe_growth` a second. Below `backoff` of the last ceiling (a cut that
  went too deep) it grows by `recover_growth` a second, and without any estimate (limited
  before anything got through) it starts at one a second and e-folds every second.

The server's own figures (api_reference/limits.mdx): OpenRouter sends X-RateLimit-Limit,
-Remaining and -Reset only on a 429 for a platform limit, "describing the limit that was
hit", and never on successful responses. The docs do not give Reset's unit (epoch ms in
practice: `_classify.reset_wait`) nor the length of the limit's window. So Reset sets the
cooldown (when the limit has room again, `limit_wait`), and Limit only caps the estimate:
every documented window is at least a minute (free models: per minute and per day), so no
more than Limit requests a second can be sustained. Everything here also works with only
Retry-After (an upstream provider's 429 carries no X-RateLimit-* headers) or no hint at all.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field

SLACK_S = 1e-9  # far below any wait that matters, far above a float's rounding at these times


@dataclass(frozen=True)
class PacingPolicy:
    initial_window: int = 2
    answers_per_slot: float = 4.0  # slow start: a slot for every 4 answers so far ...
    patience_s: float = 0.5  # ... or double the window every half second without a 429
    # Answers never quicker than this (of 4 at least): a slot more per answer. Far above what a
    # 429 takes on loopback, and above what answers at latency 0 usually take on a loaded
    # machine (not on one loaded past its cores: see bench/README.md).
    slow_answer_s: float = 0.04
    slow_growth: float = 2.0  # slots more per such answer
    backoff: float = 0.95  # share of the served rate to pace at after a 429
    probe_share: float = 0.05  # time a probe above the limit may cost, in cooldowns
    probe_growth: float = 0.01  # pace growth per second, once the hold is over
    recover_growth: float = 0.05  # pace growth per second, below the last ceiling
    window_s: float = 1.0  # what "the served rate" is measured over
    min_rate: float = 1.0 / 60  # never pace slower than an attempt a minute


@dataclass
class ScopeControl:
    """The window and the pace of one limit scope; every method takes the time from the caller."""

    cap: float  # the run's concurrency: the window never grows above it
    began: float  # when the scope was first used
    policy: PacingPolicy = field(default_factory=PacingPolicy)
    window: float = 0.0
    ramping: bool = True  # slow start: no rate limit seen yet
    answers: int = 0  # answers during the slow start
    fastest: float = math.inf  # the quickest of them, in seconds
    active: int = 0
    cooldown_until: float = -math.inf  # not 0.0: a monotonic clock's origin is arbitrary, it may read below 0
    rate: float | None = None  # attempts per second once paced
    ceiling: float | None = None  # the rate the limit let through at the last cut
    hold_until: float = -math.inf  # no probing above the ceiling before this
    next_slot: float = -math.inf
    epoch: int = 0  # renewed at each cut: paced slots taken before it are void
    last_cut: float = -math.inf
    burst_cools: bool = True  # whether the 429s of the current burst cool the scope down
    ceiling_cap: float = math.inf  # the last cut's bound on its ceiling (X-RateLimit-Limit, the pace)
    # (answered, started) of the answers of the last window, in the order they came
    successes: collections.deque[tuple[float, float]] = field(default_factory=collections.deque)
    sent: collections.deque[float] = field(default_factory=collections.deque)  # paced starts

    def __post_init__(self) -> None:
        self.window = min(self.cap, float(self.policy.initial_window))
        if self.window >= self.cap:
            self.ramping = False

    # -- the window ----------------------------------------------------------------------------
    def slots(self, now: float) -> int:
        """How many attempts may be in flight now."""
        if self.ramping:
            policy = self.policy
            steps = math.floor((now - self.began) / policy.patience_s)
            timed = policy.initial_window * 2.0 ** min(steps, 32)
            if self.answers >= 4 and self.fastest >= policy.slow_answer_s:
                counted = policy.initial_window + policy.slow_growth * self.answers
            else:
                counted = self.answers / policy.answers_per_slot
            grown = max(counted, timed)
            if grown >= self.cap:
                self.window, self.ramping = self.cap, False
            else:
                self.window = max(self.window, grown)
        return max(1, int(self.window))

    def next_growth(self, now: float) -> float | None:
        """Seconds until the slow-start window doubles by time; None once it no longer ramps."""
        if not self.ramping:
            return None
        steps = math.floor((now - self.began) / self.policy.patience_s) + 1
        return max(self.began + steps * self.policy.patience_s - now, 1e-3)

    # -- the pace ------------------------------------------------------------------------------
    def reserve(self, now: float) -> float:
        """The start time of the next paced slot, taken for the caller (only when paced).

        Each waiting attempt takes its own slot and sleeps once, instead of every waiter
        waking at each slot to see who gets it (at 200 a second with 64 workers, that herd
        was 12,000 wake-ups a second). A cut renews `epoch`, and slots taken before it are
        taken again on the new schedule."""
        assert self.rate is not None
        interval = 1.0 / self.rate
        # Slots keep their schedule when a wake-up comes a little late (a busy event loop
        # is late by milliseconds every time, which would cost a few % of the rate), but at
        # most a fifth of a slot is made up: an idle spell never turns into a burst, and 21
        # attempts at 0.95 of a limit of 20 a second still span more than a second.
        slot = max(self.next_slot, now - interval / 5)
        self.next_slot = slot + interval
        return slot

    def crowded(self, now: float) -> float:
        """Seconds until a paced attempt may start without putting more than the pace's worth
        into one `window_s`. Slots are spaced evenly, but an attempt held up (a busy loop,
        a full window) followed by one on time would make a pair: a run of such pairs would
        overrun a sliding window, so the last window's starts are counted too."""
        if self.rate is None:
            return 0.0
        horizon = now - self.policy.window_s
        sent = self.sent
        # A start within SLACK_S of leaving the window has left it: after sleeping exactly
        # the wait returned below, `now - window_s` can land a rounding error short of that
        # start (1.4% of cases), and the wait asked again was too small to move a clock that
        # advances by each sleep (16.318 + 2e-15 == 16.318): the test's fake clock spun there
        # for ever, 1 run in ~50 of the rate-limit ride-through.
        while sent and sent[0] <= horizon + SLACK_S:
            sent.popleft()
        if len(sent) < max(1, math.floor(self.rate * self.policy.window_s)):
            return 0.0
        return sent[0] - horizon

    def started(self, now: float) -> None:
        self.active += 1
        if self.rate is not None:
            self.sent.append(now)

    def _forget(self, horizon: float) -> None:
        while self.successes and self.successes[0][0] <= horizon:
            self.successes.popleft()

    def served(self, now: float) -> float:
        """Answered attempts a second that were sent in the last `window_s`: the rate the limit
        let through. By the time they were sent, as the limit counts them: by the time they
        were answered, answers that take a while would be counted from an earlier window."""
        horizon = now - self.policy.window_s
        self._forget(horizon)
        return sum(1 for _, started in self.successes if started > horizon) / self.policy.window_s

    def succeeded(self, now: float, took: float) -> None:
        """An answer, `took` seconds after its attempt started."""
        started = now - took
        self.successes.append((now, started))
        self._forget(now - self.policy.window_s)  # keep one window: 100,000 rows, not their times
        if self.ramping:
            self.answers += 1
            self.fastest = min(self.fastest, took)
        elif self.window < self.cap:
            self.window = min(self.cap, self.window + 1.0 / self.window)
        rate, ceiling = self.rate, self.ceiling
        if rate is None:
            return
        if ceiling is not None and self.last_cut - self.policy.window_s < started <= self.last_cut + SLACK_S:
            # Sent in the window the last cut measured, and let through, but answered after the
            # 429 came back: what the limit let through is known only now. Left out, the attempts
            # in flight at the first 429 lowered the estimate for the whole hold (3 of 20: a pace
            # of 16.2 a second, 0.82 of the limit, for 20 s; test_rate_control 1 run in ~10).
            self.ceiling = min(self.ceiling_cap, ceiling + 1.0 / self.policy.window_s)
            self.rate = max(rate, self.policy.backoff * self.ceiling)
            return
        # A success arrives about `rate` times a second, so adding g per success grows the
        # rate by the share g every second.
        if ceiling is None:
            self.rate = rate + 1.0  # no estimate yet: e-fold a second
        elif rate < self.policy.backoff * ceiling * 0.99:
            self.rate = rate + self.policy.recover_growth
        elif now >= self.hold_until:
            self.rate = rate + self.policy.probe_growth

    def limited(
        self,
        now: float,
        started: float,
        cooldown: float | None,
        *,
        pace: bool,
        exact: bool = False,
        limit: float | None = None,
    ) -> None:
        """A 429 (pace=True) or an overload for an attempt started at `started`: cool the scope
        down for `cooldown` (already capped by the caller; `exact` when it is the limit's own
        reset, X-RateLimit-Reset), and cut once per burst, that is once for all the attempts
        sent before the last cut."""
        if started > self.last_cut:
            # A new burst. A lone 429 while paced, with no reset to say how long the limit is
            # full, is an overrun at its edge: the cut answers it, and only the row waits the
            # server's Retry-After (a whole second at least: the header counts seconds).
            # A second burst within a window says the limit is full: then the scope waits too.
            lone = pace and not exact and self.rate is not None and now - self.last_cut >= self.policy.window_s
            self.burst_cools = not lone
        if cooldown is not None and self.burst_cools:
            self.cooldown_until = max(self.cooldown_until, now + cooldown)
        if started <= self.last_cut:
            return
        self.last_cut = now
        self.slots(now)  # bring the slow-start window up to date before halving it
        self.window = max(1.0, min(self.window, float(max(self.active, 1))) / 2)
        self.ramping = False
        if not pace:
            return
        # What got through in the last window: at a 429 from a limit on that window, never
        # less than (our share of) the limit, and up to twice it when the window just turned.
        served = self.served(now)
        if limit is not None:
            served = min(served, limit)  # see the module docstring: Limit a second is an upper bound
        basis = served if self.rate is None else min(self.rate, served or self.rate)
        self.ceiling_cap = min(math.inf if limit is None else limit, math.inf if self.rate is None else self.rate)
        if basis > 0:
            self.ceiling = basis
            self.rate = max(self.policy.min_rate, self.policy.backoff * basis)
        else:
            # Limited before anything got through (another process had used the limit up):
            # no estimate, so one a second, growing like a slow start until the next cut.
            self.ceiling, self.rate = None, 1.0
        self.epoch += 1
        self.next_slot = max(now, self.cooldown_until)
        hold = (cooldown or 0.0) / self.policy.probe_share
        self.hold_until = now + max(self.policy.window_s, hold)
