"""Rate limits the simulator enforces: requests per window, answered with a 429."""

from __future__ import annotations

import math
import time

from aiohttp import web

from ._config import SimConfig
from ._http import error_response


class RateWindow:
    """Fixed windows: `rate_limit_rps` per second, or `rate_limit_rpm` per minute."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._window = (0.0, 0)

    def reset(self) -> None:
        self._window = (0.0, 0)

    def check(self) -> web.Response | None:
        """None when the request may go on, else the 429 to answer."""
        config = self.config
        if config.rate_limit_rpm is not None:
            limit, window, unit = config.rate_limit_rpm, 60.0, "minute"
        elif config.rate_limit_rps is not None:
            limit, window, unit = config.rate_limit_rps, 1.0, "second"
        else:
            return None
        now = time.time()
        start, count = self._window
        if now - start >= window:
            start, count = math.floor(now / window) * window, 0
        if count < limit:
            self._window = (start, count + 1)
            return None
        self._window = (start, count)
        reset = start + window
        wait = reset - now
        header = config.rate_limit_header
        if header == "reset":
            headers = {
                "X-RateLimit-Reset": str(int(reset * 1000)),
                "X-RateLimit-Limit": str(int(limit)),
                "X-RateLimit-Remaining": "0",
            }
        elif header == "retry-after":
            headers = {"Retry-After": str(max(1, math.ceil(wait)))}
        elif header == "retry-after-ms":
            headers = {"retry-after-ms": str(max(1, math.ceil(wait * 1000)))}
        else:
            headers = {}
        return error_response(429, f"Rate limit exceeded: too many requests per {unit}", headers=headers)
