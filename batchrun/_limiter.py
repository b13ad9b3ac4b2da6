"""Shared back-pressure: one Throttle for the whole run.

Every attempt passes `acquire` first. The throttle holds three things:
- a cooldown: no attempt starts before the longest wait any server answer asked for;
- an adaptive concurrency limit: halved on a rate limit, grown back by about one slot
  per window of successes, never above the configured cap (or a model's own cap);
- a pace: after the first rate limit, attempts are spaced at 95% of the rate that was
  being served when it came, then sped up by about 2% a second while answers succeed.
Without the pace, a server with latency 0 is overrun at any concurrency, and a retry
storm follows each reset of its window.
"""

from __future__ import annotations

import asyncio
import collections

from ._clock import Clock

_WINDOW_S = 1.0


class Throttle:
    def __init__(self, cap: int, clock: Clock, model_caps: dict[str, int] | None = None) -> None:
        self.cap = cap
        self.limit = float(cap)
        self.active = 0
        self._clock = clock
        self._model_caps = model_caps or {}
        self._model_active: collections.Counter[str] = collections.Counter()
        self.cooldown_until = 0.0
        self.rate: float | None = None  # attempts per second once paced
        self._next_slot = 0.0
        self._last_cut = -1.0
        self._successes: collections.deque[float] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def _has_room(self, model: str) -> bool:
        cap = self._model_caps.get(model)
        return self.active < max(1, int(self.limit)) and (cap is None or self._model_active[model] < cap)

    async def acquire(self, model: str) -> float:
        """Wait for cooldown, pace and a free slot; returns the time the attempt starts."""
        clock = self._clock
        while True:
            now = clock.monotonic()
            wait = self.cooldown_until - now
            if self.rate is not None:
                wait = max(wait, self._next_slot - now)
            if wait > 0:
                await clock.sleep(wait)
                continue
            if not self._has_room(model):
                # Single-threaded asyncio: nothing runs between this check and the wait
                # below, so a release cannot be missed.
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                try:
                    await waiter
                finally:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)
                continue
            self.active += 1
            self._model_active[model] += 1
            if self.rate is not None:
                self._next_slot = max(self._next_slot, now) + 1.0 / self.rate
            return now

    async def release(self, model: str) -> None:
        self.active -= 1
        self._model_active[model] -= 1
        # Wake every waiter: which of them has room depends on its model, and each re-checks.
        waiters, self._waiters = self._waiters, collections.deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def succeeded(self) -> None:
        now = self._clock.monotonic()
        self._successes.append(now)
        while self._successes and self._successes[0] < now - _WINDOW_S:
            self._successes.popleft()
        if self.limit < self.cap:
            self.limit = min(float(self.cap), self.limit + 1.0 / self.limit)
        if self.rate is not None:
            self.rate += 0.02  # per success: ~2% of the rate per second

    def rate_limited(self, started: float, wait: float | None, pace: bool = True) -> None:
        """A 429 (pace=True) or 503/529 overload: cool everyone down, and cut once per
        burst of such answers. Only a real rate limit turns on pacing."""
        now = self._clock.monotonic()
        if wait is not None:
            self.cooldown_until = max(self.cooldown_until, now + wait)
        if started <= self._last_cut:
            return  # sent before the last cut: part of the same burst, already paid for
        self._last_cut = now
        self.limit = max(1.0, self.limit / 2)
        if not pace:
            return
        served = sum(1 for t in self._successes if t >= now - _WINDOW_S) / _WINDOW_S
        candidates = [r for r in (self.rate, served) if r]
        self.rate = max(1.0, 0.95 * min(candidates)) if candidates else 1.0
