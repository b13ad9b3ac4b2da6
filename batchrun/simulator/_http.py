"""Response helpers shared by the simulator's routes, errors in OpenRouter's shape
(errors-and-debugging.mdx: `error.metadata.error_type` is the typed code)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # orjson and a plain Response: web.json_response's stdlib json was a fifth of the
    # simulator's CPU, and the simulator must outrun batchrun several times over.
    return web.Response(body=orjson.dumps(payload), status=status, headers=headers, content_type="application/json")


# "Typed error codes": the error_type each HTTP status maps to.
ERROR_TYPES = {
    400: "invalid_request",
    401: "authentication",
    402: "payment_required",
    403: "permission_denied",
    404: "not_found",
    408: "timeout",
    413: "payload_too_large",
    422: "unprocessable",
    429: "rate_limit_exceeded",
    500: "server",
    502: "provider_unavailable",
    503: "provider_overloaded",
    504: "timeout",
}


def error_body(status: int, message: str, **metadata: Any) -> dict[str, Any]:
    meta = {"error_type": ERROR_TYPES.get(status, "unmapped" if status >= 500 else "invalid_request"), **metadata}
    return {"error": {"code": status, "message": message, "metadata": meta}}


def error_response(
    status: int, message: str, metadata: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    """An OpenRouter error body; `metadata.error_type` is the typed code of the status."""
    return json_response(error_body(status, message, **(metadata or {})), status, headers)
