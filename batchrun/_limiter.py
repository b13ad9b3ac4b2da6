"""Shared back-pressure: one Throttle for the whole run, with rate limits scoped per model.

OpenRouter's rate limits differ per model, and the free-model limits are account-wide
(api_reference/limits.mdx: "different rate limits for different models"; the `:free` limits
count every free request). So each limit scope keeps its own state: a model's own, or one
pool shared by every `:free` model. A rate limit on one scope never slows another.

Every attempt passes `acquire` first. Per scope, the throttle holds:
- a cooldown: no attempt of the scope starts before the limit that was hit has room again
  (X-RateLimit-Reset when given, else the server's wait), never longer than `max_wait_s`;
- an adaptive concurrency limit: halved on a rate limit, grown back by about one slot per
  window of successes, never above the run's cap (nor a model's own cap);
- a pace: after the first rate limit, attempts are spaced at 95% of the rate that was being
  served when it came, then sped up by about 2% a second while answers succeed, but only
  0.2% a second near the rate where the last limit came (the ceiling), so a steady limit is
  probed rarely instead of being overrun every few seconds.
Without the pace, a server with latency 0 is overrun at any concurrency, and a retry storm
follows each reset of its window.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field

from ._clock import Clock

_WINDOW_S = 1.0
FREE_SCOPE = ":free"  # the account-wide pool of every free model variant


def scope_of(model: str) -> str:
    """The limit scope of a model: its own, or the shared pool of `:free` variants."""
    return FREE_SCOPE if model.endswith(":free") else model


@dataclass
class _Scope:
    limit: float
    cooldown_until: float = 0.0
    rate: float | None = None  # attempts per second once paced
    ceiling: float | None = None  # the served rate when the last rate limit came
    next_slot: float = 0.0
    last_cut: float = -1.0
    active: int = 0
    successes: collections.deque[float] = field(default_factory=collections.deque)


class Throttle:
    def __init__(
        self, cap: int, clock: Clock, model_caps: dict[str, int] | None = None, max_wait_s: float | None = None
    ) -> None:
        self.cap = cap
        self.active = 0
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._model_caps = model_caps or {}
        self._model_active: collections.Counter[str] = collections.Counter()
        self._scopes: dict[str, _Scope] = {}
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def scope(self, model: str) -> _Scope:
        name = scope_of(model)
        state = self._scopes.get(name)
        if state is None:
            state = self._scopes[name] = _Scope(limit=float(self.cap))
        return state

    def _has_room(self, model: str, scope: _Scope) -> bool:
        cap = self._model_caps.get(model)
        return (
            self.active < self.cap
            and scope.active < max(1, int(scope.limit))
            and (cap is None or self._model_active[model] < cap)
        )

    async def acquire(self, model: str) -> float:
        """Wait for the scope's cooldown and pace and a free slot; returns the attempt's start."""
        clock = self._clock
        scope = self.scope(model)
        while True:
            now = clock.monotonic()
            wait = scope.cooldown_until - now
            if scope.rate is not None:
                wait = max(wait, scope.next_slot - now)
            if wait > 0:
                await clock.sleep(wait)
                continue
            if not self._has_room(model, scope):
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
            scope.active += 1
            self._model_active[model] += 1
            if scope.rate is not None:
                scope.next_slot = max(scope.next_slot, now) + 1.0 / scope.rate
            return now

    async def release(self, model: str) -> None:
        self.active -= 1
        self.scope(model).active -= 1
        self._model_active[model] -= 1
        # Wake every waiter: which of them has room depends on its model, and each re-checks.
        waiters, self._waiters = self._waiters, collections.deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def succeeded(self, model: str) -> None:
        scope = self.scope(model)
        now = self._clock.monotonic()
        scope.successes.append(now)
        while scope.successes and scope.successes[0] < now - _WINDOW_S:
            scope.successes.popleft()
        if scope.limit < self.cap:
            scope.limit = min(float(self.cap), scope.limit + 1.0 / scope.limit)
        if scope.rate is not None:
            near = scope.ceiling is not None and 0.97 * scope.ceiling <= scope.rate <= 1.03 * scope.ceiling
            scope.rate += 0.002 if near else 0.02  # per success: ~0.2% or ~2% of the rate per second

    def rate_limited(
        self, model: str, started: float, wait: float | None, pace: bool = True, limit_wait: float | None = None
    ) -> None:
        """A 429 (pace=True) or an overload: cool the model's scope down, and cut once per
        burst of such answers. Only a real rate limit turns on pacing. `limit_wait` is when
        the limit has room again, which may be sooner than the wait asked of the failed row."""
        scope = self.scope(model)
        now = self._clock.monotonic()
        cooldown = limit_wait if limit_wait is not None else wait
        if cooldown is not None:
            if self.max_wait_s is not None:
                cooldown = min(cooldown, self.max_wait_s)  # no wait, of a row or a scope, above the cap
            scope.cooldown_until = max(scope.cooldown_until, now + cooldown)
        if started <= scope.last_cut:
            return  # sent before the last cut: part of the same burst, already paid for
        scope.last_cut = now
        scope.limit = max(1.0, scope.limit / 2)
        if not pace:
            return
        served = sum(1 for t in scope.successes if t >= now - _WINDOW_S) / _WINDOW_S
        candidates = [r for r in (scope.rate, served) if r]
        scope.ceiling = served or scope.rate
        scope.rate = max(1.0 / 60, 0.95 * min(candidates)) if candidates else 1.0
