"""Shared back-pressure: one Throttle for the whole run, with rate limits scoped per model.

OpenRouter's rate limits differ per model, and the free-model limits are account-wide
(api_reference/limits.mdx: "different rate limits for different models"; the `:free` limits
count every free request). So each limit scope keeps its own `ScopeControl` (`_pacing`: a
slow-start window, a cooldown and a pace): a model's own, or one pool shared by every
`:free` model. A rate limit on one scope never slows another. Above the scopes sit the
run's concurrency and each model's own `concurrency` from the job file.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterator
from typing import TypeVar

from ._clock import Clock
from ._exceptions import NotSent
from ._pacing import PacingPolicy, ScopeControl

FREE_SCOPE = ":free"  # the account-wide pool of every free model variant
HELD_MAX = 1024  # rows held back from a cooling scope at most: a bound on what they hold in memory
T = TypeVar("T")


def scope_of(model: str) -> str:
    """The limit scope of a model: its own, or the shared pool of `:free` variants."""
    return FREE_SCOPE if model.endswith(":free") else model


class Throttle:
    def __init__(
        self,
        cap: int,
        clock: Clock,
        model_caps: dict[str, int] | None = None,
        max_wait_s: float | None = None,
        policy: PacingPolicy | None = None,
    ) -> None:
        self.cap = cap
        self.active = 0
        self.max_wait_s = max_wait_s
        self.policy = policy or PacingPolicy()
        self._clock = clock
        self._model_caps = model_caps or {}
        self._model_active: collections.Counter[str] = collections.Counter()
        self._scopes: dict[str, ScopeControl] = {}
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._ramp_timer: asyncio.Future[None] | None = None
        self._halted = False  # the run stopped: nothing waiting for its turn goes out
        self._halt: asyncio.Future[None] | None = None  # done at the halt: ends every nap
        self._alarms: dict[str, asyncio.Future[None]] = {}  # per scope: done when it is refused
        self.refuses: Callable[[str], str | None] = lambda _model: None  # why a model sends nothing now

    def scope(self, model: str) -> ScopeControl:
        name = scope_of(model)
        state = self._scopes.get(name)
        if state is None:
            state = self._scopes[name] = ScopeControl(float(self.cap), self._clock.monotonic(), self.policy)
        return state

    def cooling(self, model: str) -> bool:
        """Whether the model's scope is waiting out a cooldown (a server asked it to wait)."""
        return self.scope(model).cooldown_until > self._clock.monotonic()

    def cooled_first(self, items: Iterator[T], model_of: Callable[[T], str]) -> Iterator[T]:
        """`items` in order, but one whose model's scope is cooling down is held back while
        others can go (at most HELD_MAX): each worker that took one waited the cooldown out,
        and one model at capacity ("retry after 60 s") held every worker, the other models' rows
        unsent for ten minutes (verify48 N5). Held ones go once the scope at their head has
        cooled, or when nothing else is left."""
        held: collections.deque[T] = collections.deque()
        for item in items:
            while held and not self.cooling(model_of(held[0])):
                yield held.popleft()
            if len(held) < HELD_MAX and self.cooling(model_of(item)):
                held.append(item)
                continue
            yield item
        while held:
            yield held.popleft()

    async def acquire(self, model: str) -> float:
        """Wait for the scope's cooldown and pace and a free slot; returns the attempt's start.
        Raises NotSent once the run has stopped (`halt`), however long the wait was to be."""
        clock = self._clock
        scope = self.scope(model)
        cap = self._model_caps.get(model)
        paced_in: int | None = None  # the pace epoch this attempt holds a slot in
        while True:
            if self._halted or self.refuses(model) is not None:
                raise NotSent(model)
            now = clock.monotonic()
            if now < scope.cooldown_until:
                await self.nap(scope.cooldown_until - now, model)
                continue
            if scope.rate is not None and paced_in != scope.epoch:
                paced_in = scope.epoch
                slot = scope.reserve(now)
                if slot > now:
                    await self.nap(slot - now, model)
                    continue
            if scope.active >= scope.slots(now):
                grows = scope.next_growth(now)
                if grows is not None and self._ramp_timer is None:
                    # The slow-start window also grows with time, when no release wakes anyone.
                    self._ramp_timer = asyncio.ensure_future(self._wake_after(grows))
            elif self.active < self.cap and (cap is None or self._model_active[model] < cap):
                crowded = scope.crowded(now)
                if crowded > 0:
                    await self.nap(crowded, model)
                    continue
                self.active += 1
                self._model_active[model] += 1
                scope.started(now)
                return now
            # Single-threaded asyncio: nothing runs between the check above and this wait,
            # so a release cannot be missed.
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    async def release(self, model: str) -> None:
        self.active -= 1
        self.scope(model).active -= 1
        self._model_active[model] -= 1
        self._wake_all()

    def halt(self) -> None:
        """The run stopped: every attempt waiting for its turn, and every later one, is NotSent
        (a stop ends dispatch: what waited for a model's slot, a cooldown or a retry's wait went
        out inside the grace, after the stop; a re-grading's graders have no grace and all went)."""
        self._halted = True
        if self._halt is not None and not self._halt.done():
            self._halt.set_result(None)
        self._wake_all()

    def refused(self, model: str) -> None:
        """`model`'s scope sends nothing more for now (a daily cap, a limit past the wait cap, the
        model stopped: `refuses` says so): the attempts waiting their turn on it end, NotSent.
        They went out one every max_wait_s into a limit known to be closed (break25 F4)."""
        alarm = self._alarms.pop(scope_of(model), None)
        if alarm is not None and not alarm.done():
            alarm.set_result(None)
        self._wake_all()

    async def nap(self, seconds: float, model: str | None = None) -> None:
        """The clock's sleep, ended early by a halt, or by `model`'s scope being refused (the
        caller then finds out which)."""
        if self._halted:
            return
        loop = asyncio.get_running_loop()
        if self._halt is None:
            self._halt = loop.create_future()
        ends: list[asyncio.Future[None]] = [self._halt]
        if model is not None:
            alarm = self._alarms.get(scope_of(model))
            if alarm is None:
                alarm = self._alarms[scope_of(model)] = loop.create_future()
            ends.append(alarm)
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        try:
            await asyncio.wait((sleeper, *ends), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()  # ended by the halt or a cancel: no sleep outlives its wait
        if sleeper.done() and not sleeper.cancelled():
            sleeper.result()  # a clock whose sleep failed says so, as when it was awaited

    def close(self) -> None:
        """Cancel the slow-start timer, so no task outlives the run."""
        if self._ramp_timer is not None:
            self._ramp_timer.cancel()
            self._ramp_timer = None

    def _wake_all(self) -> None:
        # Wake every waiter: which of them has room depends on its model, and each re-checks.
        waiters, self._waiters = self._waiters, collections.deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _wake_after(self, seconds: float) -> None:
        try:
            await self._clock.sleep(seconds)
        finally:
            self._ramp_timer = None
        self._wake_all()

    def succeeded(self, model: str, started: float) -> None:
        now = self._clock.monotonic()
        self.scope(model).succeeded(now, now - started)

    def rate_limited(
        self,
        model: str,
        started: float,
        wait: float | None,
        pace: bool = True,
        limit_wait: float | None = None,
        limit: float | None = None,
    ) -> None:
        """A 429 (pace=True) or an overload: cool the model's scope down, and cut once per
        burst of such answers. Only a real rate limit turns on pacing. `limit_wait` is when
        the limit has room again (X-RateLimit-Reset), which may be sooner than the wait asked
        of the failed row; `limit` is X-RateLimit-Limit."""
        cooldown = limit_wait if limit_wait is not None else wait
        if cooldown is not None and self.max_wait_s is not None:
            cooldown = min(cooldown, self.max_wait_s)  # no wait, of a row or a scope, above the cap
        now = self._clock.monotonic()
        self.scope(model).limited(now, started, cooldown, pace=pace, exact=limit_wait is not None, limit=limit)
