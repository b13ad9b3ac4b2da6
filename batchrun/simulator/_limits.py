"""Rate limits the simulator enforces, answered with a 429 in OpenRouter's platform shape:
`error_type: rate_limit_exceeded` and the X-RateLimit-* headers (api_reference/limits.mdx).

Windows are fixed (counts reset at each whole second or minute) or sliding (at most N
requests in any window-long interval). One window serves the whole account, or, with
`rate_limit_per_model`, each model has its own (limits differ per model, limits.mdx) while
every `:free` model shares one pool. `free_rpm` adds the free models' per-minute limit.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable

from aiohttp import web

from ._config import SimConfig
from ._http import error_response


class _Window:
    def __init__(self, limit: float, length: float, sliding: bool) -> None:
        self.limit, self.length, self.sliding = limit, length, sliding
        self.start, self.count = 0.0, 0
        self.times: collections.deque[float] = collections.deque()

    def admit(self, now: float) -> float | None:
        """None when the request fits, else the epoch time the window has room again."""
        if self.sliding:
            while self.times and self.times[0] <= now - self.length:
                self.times.popleft()
            if len(self.times) < self.limit:
                self.times.append(now)
                return None
            return (self.times[0] if self.times else now) + self.length
        if now - self.start >= self.length:
            self.start, self.count = math.floor(now / self.length) * self.length, 0
        if self.count < self.limit:
            self.count += 1
            return None
        return self.start + self.length


class RateWindow:
    def __init__(self, config: SimConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock  # epoch seconds; tests drive it with virtual time
        self._windows: dict[tuple[str, str], _Window] = {}

    def reset(self) -> None:
        self._windows.clear()

    def _window(self, scope: str, kind: str, limit: float, length: float) -> _Window:
        window = self._windows.get((scope, kind))
        if window is None:
            sliding = self.config.rate_limit_window == "sliding"
            window = self._windows[(scope, kind)] = _Window(limit, length, sliding)
        return window

    def check(self, model: str) -> web.Response | None:
        """None when the request may go on, else the 429 to answer."""
        config = self.config
        now = self._clock()
        free = model.endswith(":free")
        scope = (":free" if free else model) if config.rate_limit_per_model else "account"
        limits: list[tuple[str, float, float, str]] = []
        if config.rate_limit_rpm is not None:
            limits.append(("rpm", config.rate_limit_rpm, 60.0, "minute"))
        elif config.rate_limit_rps is not None:
            limits.append(("rps", config.rate_limit_rps, 1.0, "second"))
        if free and config.free_rpm is not None:
            limits.append(("free_rpm", config.free_rpm, 60.0, "minute"))
        for kind, limit, length, unit in limits:
            reset = self._window(":free" if kind == "free_rpm" else scope, kind, limit, length).admit(now)
            if reset is not None:
                return self._limited(limit, reset, now, unit)
        return None

    def _limited(self, limit: float, reset: float, now: float, unit: str) -> web.Response:
        wait = reset - now
        header = self.config.rate_limit_header
        headers: dict[str, str] = {}
        if header in ("reset", "both"):
            headers.update(
                {
                    "X-RateLimit-Reset": str(int(math.ceil(reset * 1000))),
                    "X-RateLimit-Limit": str(int(limit)),
                    "X-RateLimit-Remaining": "0",
                }
            )
        if header in ("retry-after", "both"):
            headers["Retry-After"] = str(max(1, math.ceil(wait)))
        elif header == "retry-after-ms":
            headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
        return error_response(429, f"Rate limit exceeded: too many requests per {unit}", headers=headers)
