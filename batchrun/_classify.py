"""The one place that decides what a failed request means (README: "Failure classes").

| what came back                                   | class            | effect                      |
|--------------------------------------------------|------------------|-----------------------------|
| connect error, reset, closed mid-body, timeout   | Transient        | retry with backoff          |
| truncated or non-JSON body, empty choices        | Transient        | retry with backoff          |
| 408 409 425 500 502 504 524                      | Transient        | retry with backoff          |
| 429 503 529                                      | RateLimited      | retry; whole run cools down |
| 402 limit_source=openrouter_in_flight_budget     | RateLimited      | retry after Retry-After     |
| error.availability.retryable == true             | Transient        | retry                       |
| 400 404 413 422, 403 moderation/guardrail        | Rejected         | error row, run goes on      |
| 429 free-models-per-day / other daily cap        | DailyCapReached  | skip the rest of the model  |
| 401                                              | AuthFailed       | stop the run at once        |
| 402 key limit / credits / no source, 403 "Key limit exceeded" | CreditExhausted | stop dispatching |

Errors inside HTTP 200 bodies are classified by their embedded code exactly like these.
"""

from __future__ import annotations

import contextlib
import email.utils
import math
from collections.abc import Mapping
from typing import Any

from ._exceptions import (
    AuthFailed,
    CreditExhausted,
    DailyCapReached,
    RateLimited,
    Rejected,
    RequestFailed,
    Transient,
)

_TRANSIENT = {
    408: "timeout",
    409: "conflict",
    425: "too_early",
    500: "server_error",
    502: "upstream_error",
    504: "gateway_timeout",
    524: "upstream_timeout",
}
_SLOW_DOWN = {429: "rate_limited", 503: "no_provider", 529: "overloaded"}
_REJECTED = {400: "bad_request", 404: "not_found", 413: "too_large", 422: "unprocessable"}
_DAILY_MARKERS = ("free-models-per-day", "per-day", "per day", "daily")


def server_wait(headers: Mapping[str, str], now: float) -> float | None:
    """The longest wait the server asked for, in seconds, from any of its three headers."""
    waits: list[float] = []
    value = headers.get("retry-after")
    if value:
        value = value.strip()
        try:
            waits.append(float(value))
        except ValueError:
            with contextlib.suppress(TypeError, ValueError, IndexError):  # not a date either: no hint
                waits.append(email.utils.parsedate_to_datetime(value).timestamp() - now)
    value = headers.get("retry-after-ms")
    if value:
        with contextlib.suppress(ValueError):
            waits.append(float(value) / 1000)
    value = headers.get("x-ratelimit-reset")
    if value:
        try:
            reset = float(value)
            # OpenRouter sends epoch milliseconds; tolerate seconds from other gateways.
            waits.append((reset / 1000 if reset > 1e11 else reset) - now)
        except ValueError:
            pass
    finite = [w for w in waits if math.isfinite(w)]
    return max(0.0, max(finite)) if finite else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def classify(
    status: int | None, error: Mapping[str, Any] | None, headers: Mapping[str, str], now: float
) -> RequestFailed:
    """Turn an HTTP status and/or an OpenRouter error object into one exception of the tree."""
    error = error or {}
    code = error.get("code")
    if not isinstance(code, int) or not 100 <= code <= 599:
        code = status if status and status != 200 else 502
    message = _text(error.get("message")) or f"HTTP {code}"
    metadata = error.get("metadata") if isinstance(error.get("metadata"), Mapping) else {}
    assert isinstance(metadata, Mapping)
    wait = server_wait(headers, now)
    http_status = status if status and status != 200 else code
    lowered = (message + " " + _text(metadata.get("raw")) + " " + _text(metadata.get("limit_type"))).lower()

    if code == 401:
        return AuthFailed("auth", message, http_status)
    if code == 402:
        source = metadata.get("limit_source")
        if source == "openrouter_in_flight_budget":
            return RateLimited("in_flight_budget", message, http_status, wait)
        kind = "key_limit" if source == "openrouter_key_limit" else "credits"
        return CreditExhausted(kind, message, http_status)
    if code == 403 and "key limit exceeded" in lowered:
        return CreditExhausted("key_limit", message, http_status)
    if code == 429 and any(marker in lowered for marker in _DAILY_MARKERS):
        return DailyCapReached("daily_cap", message, http_status, wait)

    availability = error.get("availability")
    if isinstance(availability, Mapping) and availability.get("retryable") is True:
        return Transient(_TRANSIENT.get(code, f"http_{code}"), message, http_status, wait)
    if code in _SLOW_DOWN:
        return RateLimited(_SLOW_DOWN[code], message, http_status, wait)
    if code in _TRANSIENT:
        return Transient(_TRANSIENT[code], message, http_status, wait)
    if code == 403:
        return Rejected("moderation", message, http_status)
    if code in _REJECTED:
        return Rejected(_REJECTED[code], message, http_status)
    if code >= 500:
        return Transient(f"http_{code}", message, http_status, wait)
    return Rejected(f"http_{code}", message, http_status)
