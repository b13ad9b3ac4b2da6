"""The one place that decides what a failed request means (README: "OpenRouter behaviour").

It switches on what OpenRouter documents (api_reference/errors-and-debugging.mdx), never on
words in a message: `error.availability.{code, retryable, retry_after}` first, then the
typed `error_type` (in `error.metadata.error_type`, or beside `code` in the availability
examples of the same page), then the HTTP status.

| what came back                                        | class            | effect                           |
|-------------------------------------------------------|------------------|----------------------------------|
| connect error, reset, closed mid-body, timeout        | Transient        | retry with backoff               |
| truncated or non-JSON body, empty choices             | Transient        | retry with backoff               |
| availability.retryable true (capacity_exhausted, ...) | Transient        | retry after availability.retry_after |
| availability code that is model-wide, not retryable   | ModelUnavailable | the model's other rows are skipped |
| other availability code with retryable false          | Rejected         | error row (retryable: false is honoured) |
| 401 / authentication                                  | AuthFailed       | stop the run at once             |
| 402 / payment_required (in-flight budget: wait)       | CreditExhausted  | stop dispatching                 |
| 403 permission_denied (guardrail), moderation         | Rejected         | error row                        |
| 429 / rate_limit_exceeded                             | RateLimited      | the model (or the :free pool) cools down |
| 503 / provider_overloaded, 529                        | RateLimited      | the model cools down, no pacing  |
| 408 425 500 502 504 524 / server, timeout, provider_unavailable, unmapped | Transient | retry |
| 400 404 413 422 / invalid_request, not_found, ...     | Rejected         | error row, run goes on           |

A daily cap is not decided here: a 429 carrying OpenRouter's X-RateLimit-* headers (a
platform limit, limits.mdx) whose reset lies past the run's horizon is one, and only the
runner knows the horizon. Errors inside HTTP 200 bodies are classified exactly like these.
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import re
from collections.abc import Mapping
from typing import Any

from ._exceptions import (
    AuthFailed,
    CreditExhausted,
    ModelUnavailable,
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
# A 403 that names a spending budget or limit as used up (a workspace's, a guardrail's): the docs
# give one message, "Workspace monthly budget of $500.00 exceeded", and say guardrail budgets
# reject requests "when the limit is reached" (guardrails.mdx), so the wordings near it count.
_SPENT = r"(?:exceeded|exceeds|reached|exhausted|met|used up|over)"
_LIMIT = r"(?:budget|spending limit|spend limit|spending cap|spend cap)"
_BUDGET_EXCEEDED = re.compile(
    rf"\b{_LIMIT}\b.{{0,80}}\b{_SPENT}\b|\b{_SPENT}\b.{{0,80}}\b{_LIMIT}\b", re.IGNORECASE | re.DOTALL
)
_REJECTED = {400: "bad_request", 404: "not_found", 413: "too_large", 422: "unprocessable"}
# errors-and-debugging.mdx "Typed error codes": the ones another attempt may get past.
_TRANSIENT_TYPES = {"provider_overloaded", "provider_unavailable", "server", "timeout", "unmapped"}
# "Model availability errors": codes that hold for every request to the model, so its other
# rows are skipped without being sent. wrong_endpoint is not in the list, but it too
# holds for every row of the model (the docs: "called on the wrong endpoint"). Not
# constraint_filtered, though the issue listed it: its constraint is the request's (a prompt's
# context length, its max_price, require_parameters: "relax the constraint ... and retry"), and
# one long prompt skipped every other row of its model, which each resume met again (out-161 F1).
MODEL_WIDE_CODES = frozenset(
    {
        "model_not_found",
        "no_endpoints",
        "model_deprecated",
        "model_unavailable_upstream",
        "privacy_restricted",
        "free_variant_ended",
        "region_restricted",
        "wrong_endpoint",
    }
)


FOREVER_S = 1e12  # a wait past any cap: what a header's `inf` or `1e400` asks for


def _number(value: Any, endless: bool = False) -> float | None:
    """A header's number; `endless`: +inf (`inf`, `1e400`) is a wait past any cap, as 999999999
    is (out-142 L2: read as no hint, the rows were sent again at once)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if endless and number == math.inf:
        return FOREVER_S
    return number if math.isfinite(number) else None


# How far our clock may stand from the server's Date before the Date is the one believed: its
# one-second resolution, and a little more.
CLOCK_SKEW_S = 2.0


# A server's name for something (a model, a finish reason, an availability code): kept whole, a
# megabyte of one was copied into each record several times, the summary, the terminal and the
# step summary (past GitHub's 1 MiB), and a retryable one made a record past the readers' line
# limit, exit 11 with no row written (break53 F4).
NAME_LIMIT = 200


def server_now(headers: Mapping[str, str], now: float) -> float:
    """The time the server's absolute waits (X-RateLimit-Reset, an HTTP-date Retry-After) are
    measured from: ours, or the reply's Date where that is ahead of ours by more than its
    resolution. A cron box behind by five minutes read a reset one second away as a 300 s
    wait: every row skipped, or "a daily cap" (exit 1) at an hour (break46 F1). Never a Date
    behind ours (a proxy's stale one, 1970 from an unset clock: verify48 N1): the shorter wait
    is the one taken, and a wait too short costs one more 429, one too long a night."""
    date = reply_date(headers)
    if date is not None and date - now > CLOCK_SKEW_S:
        return date + 0.5  # within its second
    return now


def reply_date(headers: Mapping[str, str]) -> float | None:
    """The reply's Date as epoch seconds; None without a readable one."""
    with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
        date = email.utils.parsedate_to_datetime(headers.get("date") or "").timestamp()
        return date if math.isfinite(date) else None
    return None


# A time the server names that is past by our clock but ahead by its reply's Date by at most
# this is waited for: our clock fast (a cron box without NTP, break51 F1).
PAST_BY_OUR_CLOCK_MAX_S = 60.0


def _until(at: float, headers: Mapping[str, str], now: float) -> float:
    """Seconds until `at`, a time on the server's clock (a reset, an HTTP-date Retry-After).
    Past by our clock but ahead by the reply's Date, our clock is fast: each retry read the reset
    as past and came back within the limit's window (36 429s, half the rows in error, 30 s fast:
    break51 F1), so the Date's figure is taken when it is at most a minute (the shortest limit
    window the docs give: a reset is never further ahead of the server's now). A figure beyond
    that is a stale Date (a proxy's, 1970), not a fast clock: not believed, as a reset already
    past. Ahead by our clock, ours is taken (server_now: a Date behind ours is not believed)."""
    left = at - now
    if left > 0:
        return left
    date = reply_date(headers)
    by_date = 0.0 if date is None else at - date
    return by_date if 0.0 < by_date <= PAST_BY_OUR_CLOCK_MAX_S else 0.0


def reset_wait(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds until X-RateLimit-Reset: when the limit that was hit has room again."""
    reset = _number(headers.get("x-ratelimit-reset"), endless=True)
    if reset is None or reset == FOREVER_S:  # `inf`: never, past any cap (out-144 F2)
        return reset
    # OpenRouter sends epoch milliseconds (not documented; seen in practice); tolerate seconds.
    return _until(reset / 1000 if reset > 1e11 else reset, headers, now)


def server_wait(headers: Mapping[str, str], now: float) -> float | None:
    """The longest wait the server asked for, in seconds, from any of its three headers."""
    waits: list[float] = []
    value = headers.get("retry-after")
    if value:
        value = value.strip()
        seconds = _number(value, endless=True)
        if seconds is not None:
            waits.append(seconds)
        else:
            with contextlib.suppress(TypeError, ValueError, IndexError):  # not a date either: no hint
                waits.append(_until(email.utils.parsedate_to_datetime(value).timestamp(), headers, now))
    milliseconds = _number(headers.get("retry-after-ms"), endless=True)
    if milliseconds is not None:
        waits.append(milliseconds / 1000)
    reset = reset_wait(headers, now)
    if reset is not None:
        waits.append(reset)
    finite = [w for w in waits if math.isfinite(w)]
    return max(0.0, max(finite)) if finite else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _availability_message(message: str, availability: Mapping[str, Any]) -> str:
    fallbacks = availability.get("fallback_models")
    if isinstance(fallbacks, list) and fallbacks:
        message += f" (fallback_models: {', '.join(_text(m) for m in fallbacks[:5])})"
    return message


def classify(
    status: int | None, error: Mapping[str, Any] | None, headers: Mapping[str, str], now: float
) -> RequestFailed:
    """Turn an HTTP status and/or an OpenRouter error object into one exception of the tree."""
    error = error or {}
    code = error.get("code")
    if not isinstance(code, int) or not 100 <= code <= 599:
        code = error.get("http_status")  # the availability examples carry the status here
    if not isinstance(code, int) or not 100 <= code <= 599:
        code = status if status and status != 200 else 502
    message = _text(error.get("message")) or f"HTTP {code}"
    metadata = _mapping(error.get("metadata"))
    availability = _mapping(error.get("availability"))
    error_type = metadata.get("error_type") or error.get("error_type")
    error_type = error_type[:NAME_LIMIT] if isinstance(error_type, str) else None  # names, cut (break53 F4)
    avail_code = availability["code"][:NAME_LIMIT] if isinstance(availability.get("code"), str) else None
    now = server_now(headers, now)
    wait = server_wait(headers, now)
    body_wait = _number(availability.get("retry_after"), endless=True)
    if body_wait is not None and body_wait >= 0:
        wait = body_wait if wait is None else max(wait, body_wait)
    http_status = status if status and status != 200 else code
    failure = _decide(code, http_status, message, metadata, availability, error_type, avail_code, headers, now, wait)
    failure.error_type, failure.availability_code = error_type, avail_code
    return failure


def _decide(
    code: int,
    http_status: int,
    message: str,
    metadata: Mapping[str, Any],
    availability: Mapping[str, Any],
    error_type: str | None,
    avail_code: str | None,
    headers: Mapping[str, str],
    now: float,
    wait: float | None,
) -> RequestFailed:

    if code == 401 or error_type == "authentication":
        return AuthFailed("auth", message, http_status)
    # limit_source is not in the docs (seen in client issues): a hint, never required.
    source = metadata.get("limit_source")
    if code == 402 or error_type == "payment_required":
        if source == "openrouter_in_flight_budget":
            return RateLimited("in_flight_budget", message, http_status, wait)
        kind = "key_limit" if source == "openrouter_key_limit" else "credits"
        return CreditExhausted(kind, message, http_status)
    if code == 403 and ("key limit exceeded" in message.lower() or source == "openrouter_key_limit"):
        # Not documented either (openrouter client issues): a 403 naming the key limit.
        return CreditExhausted("key_limit", message, http_status)
    # A moderation flag or a missing permission is what it says, whatever text it quotes (a
    # flagged answer about a budget "exceeded" stopped a run as a spend limit: verify32 n3).
    judged = "reasons" in metadata or "flagged_input" in metadata or error_type == "permission_denied"
    spend_source = isinstance(source, str) and source.endswith("budget") and "in_flight" not in source
    if code == 403 and not judged and (_BUDGET_EXCEEDED.search(message) or spend_source):
        # workspace-budgets.mdx: "Workspace monthly budget of $500.00 exceeded. Contact your org
        # admin." (a guardrail's budget is a 403 too: guardrails.mdx). A limit on spend, as a 402
        # is: the run stops, its rows are skipped and resumable once the budget resets. As a
        # final `forbidden` error each, every row was sent and none ever ran again (break32 F3).
        return CreditExhausted("spend_limit", message, http_status)

    if avail_code is not None or "retryable" in availability:
        retryable = availability.get("retryable")
        if retryable is True:
            if code == 429:
                limited = RateLimited(avail_code or "rate_limited", message, http_status, wait)
                limited.paces = False  # every provider is at capacity: not a sign we send too fast
                return limited
            return Transient(avail_code or _TRANSIENT.get(code, f"http_{code}"), message, http_status, wait)
        message = _availability_message(message, availability)
        if avail_code in MODEL_WIDE_CODES:
            return ModelUnavailable(avail_code, message, http_status)
        # An unknown code with retryable false: final for this row ("fall back to retryable").
        return Rejected(avail_code or _REJECTED.get(code, f"http_{code}"), message, http_status)

    if code == 429 or error_type == "rate_limit_exceeded":
        limited = RateLimited(_SLOW_DOWN[429], message, http_status, wait)
        limited.limit_wait = reset_wait(headers, now)
        count = _number(headers.get("x-ratelimit-limit"))
        if count is not None and math.isfinite(count) and count >= 1:
            limited.limit_count = count  # a server's number: only ever used as an upper bound
        # limits.mdx: OpenRouter's own limits answer with X-RateLimit-* headers; a provider's
        # 429 does not (it may carry metadata.provider_code instead).
        limited.platform = limited.limit_wait is not None
        return limited
    if code in (503, 529) or error_type == "provider_overloaded":
        overloaded = RateLimited(_SLOW_DOWN.get(code, "overloaded"), message, http_status, wait)
        overloaded.paces = False
        return overloaded
    if code in _TRANSIENT or error_type in _TRANSIENT_TYPES:
        return Transient(_TRANSIENT.get(code, error_type or f"http_{code}"), message, http_status, wait)
    if code == 403:
        # errors-and-debugging.mdx: 403 is a guardrail block or a missing permission
        # (permission_denied), or a moderation flag (metadata.reasons / flagged_input).
        if "reasons" in metadata or "flagged_input" in metadata:
            kind = "moderation"
        elif error_type == "permission_denied":
            kind = "permission_denied"
        else:
            kind = "forbidden"
        return Rejected(kind, message, http_status)
    if code in _REJECTED:
        return Rejected(_REJECTED[code], message, http_status)
    if code >= 500:
        return Transient(f"http_{code}", message, http_status, wait)
    return Rejected(f"http_{code}", message, http_status)
