"""A moment, perhaps not known yet, by which the calls waiting under it end.

After a stop the run's own account calls (a row's cost lookup, the wind-down's lookups, the
end-of-run `/key` read, removing the per-run key) get a grace, not their own timeouts and
retries: a `/generation` or `/key` that hangs otherwise held a stopping run for every
attempt's timeout. The stop may come while they wait (a SIGTERM during the wind-down was
ignored for 89 s, then exit 0: break25 F6), so calls already under way are cut at the moment
set later too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class CutOff:
    def __init__(self) -> None:
        self.at: float | None = None  # the loop time, once set
        self._waiting: set[asyncio.Timeout] = set()
        self._then: list[CutOff] = []

    def set_at(self, at: float) -> None:
        """End every call under this cut-off by `at` (an earlier moment set before stands), and
        the calls of the cut-offs made to come after it (`and_then`)."""
        for after in self._then:
            after.set_at(at)
        if self.at is not None and self.at <= at:
            return
        self.at = at
        for timeout in self._waiting:
            timeout.reschedule(at)

    def and_then(self, seconds: float | None) -> CutOff:
        """A cut-off of its own for the calls that come after these, `seconds` from now (None:
        none until set), cut with this one when it is set later (a signal during the wind-down).
        The per-run key's removal shared the wind-down with the reads before it: a /generation
        or a /key that hung used it all, and the key was never deleted (break60 F1)."""
        after = CutOff()
        if seconds is not None:
            after.set_in(seconds)
        self._then.append(after)
        return after

    def part(self, share: float) -> float | None:
        """The loop time `share` of the way from now to this moment; None until it is set."""
        if self.at is None:
            return None
        now = asyncio.get_running_loop().time()
        return now + max(0.0, self.at - now) * share

    def set_in(self, seconds: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # the run's loop is gone (a signal after it): nothing waits under it
            return
        self.set_at(loop.time() + seconds)

    @asynccontextmanager
    async def bound(self) -> AsyncIterator[None]:
        """A call's time: unbounded until the moment is set; TimeoutError when it comes."""
        async with asyncio.timeout_at(self.at) as timeout:
            self._waiting.add(timeout)
            try:
                yield
            finally:
                self._waiting.discard(timeout)


# What the wind-down after a signal or the deadline has at least, whatever the grace (`grace_s:
# 0` asks the rows to stop at once, not the summary to be written without its lookups and /key).
WIND_DOWN_FLOOR_S = 5.0


def wind_down_s(grace_s: float) -> float:
    return max(grace_s, WIND_DOWN_FLOOR_S)


def wind_down(grace_s: float, stopped: bool) -> CutOff:
    """When a run's wind-down calls must end: a grace from the stop, in real time (whatever clock
    the run was given: a test's fake one leaps); none after a run that ended by itself."""
    cut_off = CutOff()
    if stopped:
        cut_off.set_in(wind_down_s(grace_s))
    return cut_off


def cleanup_time(time_left: Callable[[], float | None], grace_s: float) -> Callable[[], float | None]:
    """What the wind-down has of a deadline: what is left of it plus the grace, as rows have."""

    def left() -> float | None:
        remaining = time_left()
        return None if remaining is None else remaining + grace_s

    return left


def wind_down_within(grace_s: float, stopped: bool, cleanup_left: float | None) -> CutOff:
    """`wind_down`, and with a deadline, by its end plus the grace (at least the floor): the
    end-of-run /key read in flight overran it by a whole timeout (verify25 N9)."""
    cut_off = wind_down(grace_s, stopped)
    if cleanup_left is not None:
        cut_off.set_in(wind_down_s(cleanup_left))
    return cut_off
