"""Faults the simulator can inject, drawn from its seeded generator."""

from __future__ import annotations

import asyncio
import contextlib
import random

from aiohttp import web

# Set when the simulator closes: a handler asleep in a simulated hang ends then, or the
# runner's shutdown waits out its timeout for it (half a second per simulator, per test).
CLOSING = web.AppKey("closing", asyncio.Event)


async def hang(request: web.Request, seconds: float) -> None:
    """A simulated hang: `seconds`, or until the simulator closes."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(request.app[CLOSING].wait(), seconds)


def draw_fault(rng: random.Random, faults: dict[str, float]) -> str | None:
    """One fault name (an HTTP status or a FAULTS word) with its configured rate, or None."""
    if not faults:
        return None
    draw = rng.random()
    for name, rate in faults.items():
        if draw < rate:
            return name
        draw -= rate
    return None


async def broken_reply(
    request: web.Request, fault: str, payload: bytes, hang_s: float, headers: dict[str, str] | None = None
) -> web.StreamResponse:
    """A reply broken the way `fault` says: hang, stall after the headers, reset, cut
    mid-body, or truncated JSON. `headers` go out with replies that send headers."""
    try:
        return await _broken(request, fault, payload, hang_s, headers or {})
    except ConnectionResetError:  # the client gave up first: the generation is billed all the same
        return web.Response(status=499)


async def _broken(
    request: web.Request, fault: str, payload: bytes, hang_s: float, headers: dict[str, str]
) -> web.StreamResponse:
    if fault == "stall":
        response = web.StreamResponse(
            status=200, headers={**headers, "Content-Type": "application/json", "Content-Length": str(len(payload))}
        )
        await response.prepare(request)
        await response.write(payload[:10])
        await hang(request, hang_s)
        return response
    if fault == "hang":
        await hang(request, hang_s)
        return web.Response(status=504)
    if fault == "reset":
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)
    if fault == "cut":
        response = web.StreamResponse(
            status=200, headers={**headers, "Content-Type": "application/json", "Content-Length": str(len(payload))}
        )
        await response.prepare(request)
        await response.write(payload[: len(payload) // 2])
        if request.transport is not None:
            request.transport.abort()
        return response
    # truncate: a complete HTTP response whose JSON is cut short
    return web.Response(body=payload[: len(payload) // 2], content_type="application/json", headers=headers)
