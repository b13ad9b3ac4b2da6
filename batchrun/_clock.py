"""Time as a dependency: the runner, the retry loop and the limiter take a Clock, so tests
run on a fake one that never sleeps for real."""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def utc(ts: float) -> str:
    """ISO 8601 UTC with milliseconds; strftime runs once a second, not twice a row."""
    return f"{_utc_second(int(ts))}.{int(ts % 1 * 1000):03d}Z"
