"""Error bodies in OpenRouter's documented shapes (api_reference/errors-and-debugging.mdx).

Every error carries `error.metadata.error_type` (the typed code); provider errors add
`provider_name` and `raw`; model availability errors add `error.availability` with `code`,
`retryable`, `retry_after`, `requested_models`, `fallback_models` and `docs_url`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ._http import error_body, json_response

# "Model availability errors": code -> (HTTP status, error_type, retryable).
AVAILABILITY = {
    "model_not_found": (400, "invalid_request", False),
    "wrong_endpoint": (400, "invalid_request", False),
    "no_endpoints": (404, "not_found", False),
    "model_deprecated": (404, "not_found", False),
    "model_unavailable_upstream": (404, "not_found", False),
    "capacity_exhausted": (429, "rate_limit_exceeded", True),
    "temporarily_unavailable": (503, "provider_overloaded", True),
    "region_restricted": (403, "permission_denied", False),
    "privacy_restricted": (404, "not_found", False),
    "constraint_filtered": (404, "not_found", False),
    "free_variant_ended": (404, "not_found", False),
}
PROVIDER = "SimCloud"


def provider_error(status: int, message: str, raw: str, headers: dict[str, str] | None = None) -> web.Response:
    """An upstream provider's error: OpenRouter names the provider and passes its raw text."""
    return json_response(error_body(status, message, provider_name=PROVIDER, raw=raw), status, headers)


def availability_error(code: str, model: str, retry_after: int | None = None) -> web.Response:
    """A model availability error; retryable codes also send Retry-After (the docs: the
    body's retry_after "mirrors the Retry-After response header")."""
    status, error_type, retryable = AVAILABILITY[code]
    availability: dict[str, Any] = {
        "code": code,
        "retryable": retryable,
        "requested_models": [model],
        "docs_url": f"https://openrouter.ai/docs/errors#{code}",
    }
    headers = None
    if retryable and retry_after is not None:
        availability["retry_after"] = retry_after
        headers = {"Retry-After": str(retry_after)}
    if not retryable and code != "model_not_found":
        availability["fallback_models"] = ["openai/gpt-4o-mini"]
    body = error_body(status, f"{model}: {code.replace('_', ' ')}")
    body["error"]["metadata"]["error_type"] = error_type
    body["error"]["availability"] = availability
    return json_response(body, status, headers)
