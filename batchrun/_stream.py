"""Streaming mode: a chat request over server-sent events, read with httpx-sse.

Why stream (api_reference/streaming.mdx, "Stream cancellation"): aborting a stream stops
generation and billing on providers that support it, while a non-streamed request that
the client abandons may still finish and be billed. So in streaming mode a timeout, a
stop or the deadline really cancels the work: the connection is closed and only what
was generated is billed.

What is read: the generation id (the `X-Generation-Id` header, and each chunk's `id`),
content deltas, the last chunk's `finish_reason` and `usage` (usage-accounting.mdx: the
last SSE message carries it), and `data: [DONE]`. Comments (": OPENROUTER PROCESSING")
are skipped by the SSE parser. An error before any token is a plain JSON error reply; an
error after tokens is an event with a top-level `error` and `finish_reason: "error"`
(classified like any error body; not billed, zero-completion-insurance.mdx). The decoded
stream is capped at the client's `max_response_bytes` (run.max_response_bytes): past it
the stream is cut (cancelled) and the row is an error. Time to first token is measured
from sending to the first content or reasoning delta.
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, cast

import aiohttp
import httpx
import orjson
from httpx_sse import EventSource, SSEError

from ._body import read_capped
from ._classify import NAME_LIMIT, classify
from ._client import ChatResult, OpenRouterClient
from ._clock import Clock
from ._exceptions import RequestFailed, ResponseTooLarge, Transient, Undecodable
from ._generation import Flight, abandoned, generation_header
from ._reply import Reply, after_comments, billed, body_text, cost_rejected, loads, tool_calls_of, usage_of
from ._stream_reading import Reading, choice_error, read_chunk, shape_problem, streamed_calls
from ._transport import dropped_after_connecting

_ERROR_BODY_BYTES = 64 * 1024  # an error reply before the stream is small JSON


@dataclass(frozen=True, slots=True)
class StreamedChat(ChatResult):
    ttft_ms: float | None = None  # time to the first content (or reasoning) token


class _TooLong(Exception):
    """Internal: the stream passed the byte cap."""


class _CappedText:
    """What EventSource reads (headers, aiter_text), counting the bytes as they come, so a stream
    without newlines cannot grow a line buffer past the cap. An event stream is UTF-8 whatever its
    Content-Type's charset says (the SSE standard): `charset=iso-8859-1` made Zürich "ZÃ¼rich"
    (break55 F6)."""

    def __init__(self, response: httpx.Response, cap: int) -> None:
        self.headers = response.headers
        self._response = response
        self._cap = cap
        self.size = 0
        # What came before the first event (within the cap): a body that is no events at all
        # may be a plain JSON reply sent as text/event-stream. Dropped at the first event.
        self.kept: list[str] | None = []

    async def aiter_text(self) -> AsyncIterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        async for data in self._response.aiter_bytes():
            self.size += len(data)
            if self.size > self._cap:
                raise _TooLong()
            if text := decoder.decode(data):
                if self.kept is not None:
                    self.kept.append(text)
                yield text
        if text := decoder.decode(b"", final=True):
            yield text


def stream_body(payload: bytes) -> bytes:
    """The encoded body (a JSON object) with `"stream": true` added; the row's id and
    fingerprint stay those of `payload`, so a file can be resumed with or without streaming."""
    head = payload.rstrip()[:-1].rstrip()
    return head + (b'"stream":true}' if head.endswith(b"{") else b',"stream":true}')


async def stream_chat(
    client: OpenRouterClient,
    payload: bytes,
    row_id: str | None,
    clock: Clock,
    timeout_s: float,
    flight: Flight | None = None,
) -> StreamedChat:
    """POST /chat/completions with stream: true; the answer, or a classified RequestFailed.
    `flight` learns the generation id from the headers or the first chunk that names it."""
    # One cap for every reply, streamed or not: run.max_response_bytes (break-14 #9).
    cap = client.max_response_bytes
    request = client.chat_request(stream_body(payload), row_id)
    request.headers["Accept"] = "text/event-stream"
    reading = Reading(flight=flight or Flight())
    sent: list[Mapping[str, str]] = []  # the response's headers, once they are in
    started = clock.monotonic()
    plain: Reply | None = None
    cut: RequestFailed | None = None  # the stream was cut (a timeout, a dropped connection)
    try:
        async with asyncio.timeout(timeout_s):
            response = await client.send_unread(request)
            sent.append(response.headers)
            try:
                reading.generation_id = generation_header(response.headers, client.scrub)
                if response.status_code != 200:
                    raise await _error_reply(client, response, clock)
                if not _event_stream(response.headers):
                    # Not events: an error sent with 200, or an endpoint that ignores `stream`, as
                    # JSON, text/plain or no type at all. Read as a plain reply is (break34 m1,
                    # verify34 N2: a 402 in it was a retried "network" error, a whole answer bought twice).
                    plain = Reply(200, response.headers, await read_capped(response, cap))
                elif (whole := await _read_events(client, response, reading, clock, started, cap)) is not None:
                    plain = Reply(200, response.headers, whole)  # JSON labelled as events
            finally:
                await response.aclose()  # closing the connection is what cancels the generation
    except TimeoutError:
        cut = Transient("timeout", f"the stream did not end within {timeout_s:g} s")
    except (_TooLong, ResponseTooLarge):
        raise _billed(abandoned(ResponseTooLarge(cap, 200), sent, True, client.scrub), reading) from None
    except Undecodable as undecodable:  # a 200's body was generated, an error's not (break45 F4)
        raise _billed(abandoned(undecodable, sent, undecodable.http_status == 200, client.scrub), reading) from None
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        failure = Transient("network", client.scrub_text(f"{type(exc).__name__}: {exc}"))
        if not dropped_after_connecting(exc):  # never reached the server: nothing billed
            raise failure from None
        raise _billed(abandoned(failure, sent, True, client.scrub), reading) from None
    except (httpx.HTTPError, SSEError, aiohttp.ClientError, OSError) as exc:
        cut = Transient("network", client.scrub_text(f"{type(exc).__name__}: {exc}"))
    # Cut after the choice finished, the answer is whole: it was thrown away and bought twice more
    # when a server kept the stream open after its finish chunk (break55 F3). Cut after an error
    # event, that error is what failed, at a cost not yet said: looked up.
    if cut is not None and not reading.answered:
        if reading.choice_error is not None:
            cut = _event_failure(client, reading, sent[0], clock)
        raise _billed(abandoned(cut, sent, True, client.scrub), reading)
    if plain is not None:
        result = client.read_chat_reply(plain, billable=True)
        return StreamedChat(**{field.name: getattr(result, field.name) for field in fields(result)})
    if reading.choice_error is not None:
        event = _event_failure(client, reading, sent[0], clock)
        # A usage.cost sent is charged; tokens streamed are waived by the error finish reason
        # the docs' error event carries (streaming.mdx), else may be billed.
        waived, generated = reading.finish_reason == "error", reading.first_token
        raise billed(event, reading.usage, reading.generation_id, client.scrub, generated=generated, waived=waived)
    if not reading.done and reading.finish_reason is None:
        failure = Transient("bad_response", "the stream ended before its last chunk", 200)
        raise _billed(abandoned(failure, sent, True, client.scrub), reading)
    if not reading.parts and reading.finish_reason is None and not reading.calls and not reading.refusal:
        # As a plain reply's (errors-and-debugging.mdx "When no content is generated").
        failure = Transient("empty_completion", "an empty completion with no finish reason (cold start?)", 200)
        raise billed(failure, reading.usage, reading.generation_id, client.scrub, generated=False, waived=False)
    return StreamedChat(
        generation_id=reading.generation_id,
        # Every server string is scrubbed before it is stored, as the non-streamed parser does.
        model=_scrubbed(client, reading.model),
        provider=_scrubbed(client, reading.provider),
        service_tier=_scrubbed(client, reading.service_tier),
        content=client.scrub_text("".join(reading.parts)),
        reasoning=client.scrub_text("".join(reading.reasoning)) if reading.reasoning else None,
        refusal=client.scrub_text("".join(reading.refusal)) if reading.refusal else None,
        finish_reason=_scrubbed(client, reading.finish_reason),
        native_finish_reason=_scrubbed(client, reading.native_finish_reason),
        # The same type filter as a non-streamed reply: a count that is a string or a cost
        # that is negative is dropped, and a cost that cannot be believed keeps the worst case.
        usage=usage_of(reading.usage, client.scrub),
        cost_rejected=cost_rejected(reading.usage),
        ttft_ms=reading.ttft_ms,
        # The same typed reader (and scrubbing, before any cut) as a non-streamed reply's.
        tool_calls=tool_calls_of(streamed_calls(reading), client.scrub),
        reply_bytes=reading.size,
    )


def _event_stream(headers: Mapping[str, str]) -> bool:
    """A reply whose Content-Type says server-sent events (what httpx-sse reads)."""
    return headers.get("content-type", "").split(";")[0].strip().lower() == "text/event-stream"


def _billed(failure: RequestFailed, reading: Reading) -> RequestFailed:
    """A chunk's id is the generation id too, when the header had none."""
    if failure.maybe_billed and failure.generation_id is None:
        failure.generation_id = reading.generation_id
    return failure


async def _error_reply(client: OpenRouterClient, response: httpx.Response, clock: Clock) -> RequestFailed:
    """An error before any token: a plain JSON error body (api_reference/streaming.mdx)."""
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > _ERROR_BODY_BYTES:
            break
    try:
        data = loads(body)  # a lone surrogate in it as in any reply (break56 F4)
    except orjson.JSONDecodeError:
        data = {"error": {"message": body_text(body)[:200]}}
    error = data.get("error") if isinstance(data, dict) else None
    return _classified(client, response.status_code, error, response.headers, clock)


def _event_failure(
    client: OpenRouterClient, reading: Reading, headers: Mapping[str, str], clock: Clock
) -> RequestFailed:
    """The error a 200 stream carried: in its choice, or as the documented top-level event."""
    failure = _classified(client, 200, reading.choice_error, headers, clock)
    if reading.mid_stream:  # the status is already 200: the error came as an event
        failure.message = f"mid-stream: {failure.message}"
        failure.args = (failure.message,)
    return failure


def _classified(
    client: OpenRouterClient, status: int, error: Any, headers: Mapping[str, str], clock: Clock
) -> RequestFailed:
    failure = classify(status, error if isinstance(error, Mapping) else None, headers, clock.time())
    failure.message = client.scrub_text(failure.message)
    failure.args = (failure.message,)
    return failure


async def _read_events(
    client: OpenRouterClient,
    response: httpx.Response,
    reading: Reading,
    clock: Clock,
    started: float,
    max_bytes: int,
) -> bytes | None:
    """Read the events into `reading`; returns the body when it held no event and is a JSON
    object (read as a plain reply), else None."""
    capped = _CappedText(response, max_bytes)
    source = EventSource(cast(httpx.Response, capped))
    async for event in source.aiter_sse():
        capped.kept = None
        reading.size = capped.size
        if event.data == "[DONE]":
            reading.done = True
            return None
        try:
            chunk = loads(event.data)  # NaN in a usage chunk: an unknown cost, not a skipped chunk
        except orjson.JSONDecodeError:
            continue  # not JSON: nothing to read (the docs' own readers skip these)
        if not isinstance(chunk, dict):
            continue
        finished = reading.finish_reason is not None  # before this chunk: nothing may follow it
        read_chunk(chunk, reading, client.scrub)
        if chunk.get("error") and not reading.mid_stream:
            # The documented mid-stream error event (streaming.mdx): what failed.
            reading.choice_error, reading.mid_stream = chunk["error"], True
        elif (choice := choice_error(chunk)) or reading.finish_reason == "error":
            reading.choice_error = reading.choice_error or choice or {"message": "finish_reason error"}
        if reading.choice_error is not None:
            # As in a plain reply, a failure (break41 F1: recorded ok, never retried), raised once
            # the stream has ended, with the cost a usage chunk after it said (verify44, break55
            # F4: a charge sent after the error event was recorded as a known $0).
            continue
        shape = shape_problem(chunk, finished)
        if shape is not None:  # JSON of the wrong shape, as a plain reply's: not an answer
            wrong = Transient("bad_response", f"a stream chunk's {shape}", 200)
            raise billed(
                wrong, reading.usage, reading.generation_id, client.scrub, generated=reading.first_token, waived=False
            )
        if reading.ttft_ms is None and reading.first_token:
            reading.ttft_ms = round((clock.monotonic() - started) * 1000, 1)
    reading.size = capped.size
    # No event in the whole body, which is a JSON object: a plain reply (an answer, or an error
    # sent with 200) under text/event-stream; read as events it was a retried "bad_response".
    whole = after_comments("".join(capped.kept or ()).encode())  # SSE comments before it: no part of it
    return whole if capped.kept is not None and whole.lstrip().startswith(b"{") else None


def _scrubbed(client: Any, text: str | None) -> str | None:
    return None if text is None else client.scrub_text(text)[:NAME_LIMIT]  # a name (break53 F4)
