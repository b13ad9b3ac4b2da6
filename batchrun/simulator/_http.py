"""Response helpers shared by the simulator's routes."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # orjson and a plain Response: web.json_response's stdlib json was a fifth of the
    # simulator's CPU, and the simulator must outrun batchrun several times over.
    return web.Response(body=orjson.dumps(payload), status=status, headers=headers, content_type="application/json")


def error_response(
    status: int, message: str, metadata: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    body: dict[str, Any] = {"error": {"code": status, "message": message}}
    if metadata:
        body["error"]["metadata"] = metadata
    return json_response(body, status, headers)
