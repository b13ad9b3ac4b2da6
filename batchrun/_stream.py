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
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, cast

import aiohttp
import httpx
import orjson
from httpx_sse import EventSource, SSEError

from ._body import read_capped
from ._charges import reported_charge
from ._classify import NAME_LIMIT, classify
from ._client import ChatResult, OpenRouterClient
from ._clock import Clock
from ._exceptions import RequestFailed, ResponseTooLarge, Transient, Undecodable
from ._generation import Flight, abandoned, generation_header, valid_generation_id
from ._reply import (
    MAX_TOOL_CALLS,
    Reply,
    after_comments,
    billed,
    cost_rejected,
    loads,
    tool_calls_of,
    type_name,
    usage_of,
)
from ._transport import dropped_after_connecting

_ERROR_BODY_BYTES = 64 * 1024  # an error reply before the stream is small JSON


@dataclass(frozen=True, slots=True)
class StreamedChat(ChatResult):
    ttft_ms: float | None = None  # time to the first content (or reasoning) token


class _TooLong(Exception):
    """Internal: the stream passed the byte cap."""


class _CappedText:
    """What EventSource reads (headers, aiter_text), counting decoded bytes as they come,
    so a stream without newlines cannot grow a line buffer past the cap."""

    def __init__(self, response: httpx.Response, cap: int) -> None:
        self.headers = response.headers
        self._response = response
        self._cap = cap
        self.size = 0
        # What came before the first event (within the cap): a body that is no events at all
        # may be a plain JSON reply sent as text/event-stream. Dropped at the first event.
        self.kept: list[str] | None = []

    async def aiter_text(self) -> AsyncIterator[str]:
        async for text in self._response.aiter_text():
            self.size += len(text.encode("utf-8"))
            if self.size > self._cap:
                raise _TooLong()
            if self.kept is not None:
                self.kept.append(text)
            yield text


def stream_body(payload: bytes) -> bytes:
    """The encoded body (a JSON object) with `"stream": true` added; the row's id and
    fingerprint stay those of `payload`, so a file can be resumed with or without streaming."""
    head = payload.rstrip()[:-1].rstrip()
    return head + (b'"stream":true}' if head.endswith(b"{") else b',"stream":true}')


@dataclass
class _Reading:
    """What the stream said so far."""

    flight: Flight
    model: str | None = None
    provider: str | None = None
    service_tier: str | None = None
    finish_reason: str | None = None
    native_finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    choice_error: Any = None  # an error in the choice, or the finish reason "error": raised at the end
    ttft_ms: float | None = None
    first_token: bool = False
    done: bool = False
    size: int = 0  # bytes read so far (after decompression), what the cap counts

    @property
    def generation_id(self) -> str | None:
        return self.flight.generation_id

    @generation_id.setter
    def generation_id(self, value: str | None) -> None:
        self.flight.generation_id = value

    def __post_init__(self) -> None:
        self.parts: list[str] = []
        # The other texts a delta carries, joined as content is: a plain reply records them too
        # (verify23: streams dropped them).
        self.reasoning: list[str] = []
        self.refusal: list[str] = []
        # Tool-call deltas by index: the first id and name, the arguments' pieces joined (the OpenAI
        # shape OpenRouter relays: streaming.mdx shows none), bounded as a reply's (MAX_TOOL_CALLS).
        self.tool_calls: dict[int, dict[str, Any]] = {}


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
    reading = _Reading(flight=flight or Flight())
    sent: list[Mapping[str, str]] = []  # the response's headers, once they are in
    started = clock.monotonic()
    plain: Reply | None = None
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
        failure: RequestFailed = Transient("timeout", f"the stream did not end within {timeout_s:g} s")
        raise _billed(abandoned(failure, sent, True, client.scrub), reading) from None
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
        failure = Transient("network", client.scrub_text(f"{type(exc).__name__}: {exc}"))
        raise _billed(abandoned(failure, sent, True, client.scrub), reading) from None
    if plain is not None:
        result = client.read_chat_reply(plain, billable=True)
        return StreamedChat(**{field.name: getattr(result, field.name) for field in fields(result)})
    if reading.choice_error is not None:
        failure = _classified(client, 200, reading.choice_error, response.headers, clock)
        waived, generated = reading.finish_reason == "error", reading.first_token
        raise billed(failure, reading.usage, reading.generation_id, client.scrub, generated=generated, waived=waived)
    if not reading.done and reading.finish_reason is None:
        failure = Transient("bad_response", "the stream ended before its last chunk", 200)
        raise _billed(abandoned(failure, sent, True, client.scrub), reading)
    if not reading.parts and reading.finish_reason is None and not reading.tool_calls and not reading.refusal:
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
        tool_calls=tool_calls_of(_tool_calls(reading), client.scrub),
        reply_bytes=reading.size,
    )


def _event_stream(headers: Mapping[str, str]) -> bool:
    """A reply whose Content-Type says server-sent events (what httpx-sse reads)."""
    return headers.get("content-type", "").split(";")[0].strip().lower() == "text/event-stream"


def _billed(failure: RequestFailed, reading: _Reading) -> RequestFailed:
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
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = {"error": {"message": body[:200].decode("utf-8", "replace")}}
    error = data.get("error") if isinstance(data, dict) else None
    return _classified(client, response.status_code, error, response.headers, clock)


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
    reading: _Reading,
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
        _read_chunk(chunk, reading, client)
        if (choice := _choice_error(chunk)) or reading.finish_reason == "error":
            # As in a plain reply, a failure (break41 F1: recorded ok, never retried), raised once
            # the usage chunk after it has said what it cost (verify44: $0 without it).
            reading.choice_error = reading.choice_error or choice or {"message": "finish_reason error"}
        if chunk.get("error"):
            # Mid-stream: the status is already 200, the error comes as an event.
            failure = _classified(client, 200, chunk["error"], response.headers, clock)
            failure.message = f"mid-stream: {failure.message}"
            failure.args = (failure.message,)
            # A usage.cost sent is charged; tokens streamed are waived by the error finish
            # reason the docs' error event carries (streaming.mdx), else may be billed.
            waived, generated = reading.finish_reason == "error", reading.first_token
            gen_id = reading.generation_id
            raise billed(failure, reading.usage, gen_id, client.scrub, generated=generated, waived=waived)
        shape = _shape_problem(chunk, finished)
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


def _shape_problem(chunk: dict[str, Any], finished: bool) -> str | None:
    """What is wrong with a chunk's `choices` (the documented ChatStreamChunk), if anything:
    the shapes, a choice other than the one asked for (verify23: merged into the answer), text
    that is not text (dropped), or text after the choice finished (appended)."""
    choices = chunk.get("choices", [])
    if not isinstance(choices, list):
        return f"choices is {type_name(choices)}, not a list"
    for choice in choices:
        if not isinstance(choice, dict):
            return f"choice is {type_name(choice)}, not an object"
        if choice.get("index", 0) != 0:
            return f"choice index is {str(choice['index'])[:20]}: one choice was asked for"
        delta = choice.get("delta", {})
        if not isinstance(delta, dict) and delta is not None:
            return f"delta is {type_name(delta)}, not an object"
        content = (delta or {}).get("content")
        if content is not None and not isinstance(content, str):
            return f"delta content is {type_name(content)}, not text"
        if finished and (content or (delta or {}).get("tool_calls")):
            return "delta after the choice's finish_reason"
    return None


def _choice_error(chunk: dict[str, Any]) -> Any:
    choices = chunk.get("choices")
    return choices[0].get("error") if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None


def _read_chunk(chunk: dict[str, Any], reading: _Reading, client: OpenRouterClient) -> None:
    if reading.generation_id is None:
        reading.generation_id = valid_generation_id(chunk.get("id"), client.scrub)
    for field in ("model", "provider", "service_tier"):
        if isinstance(chunk.get(field), str):
            setattr(reading, field, chunk[field][:200])
    usage = chunk.get("usage")
    if isinstance(usage, dict) and not _costs_less(usage, reading.usage):
        reading.usage = usage
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return
    choice = choices[0]
    delta = choice.get("delta")
    if isinstance(delta, dict):
        content = delta.get("content")
        if isinstance(content, str) and content:
            reading.parts.append(content)
            reading.first_token = True
        if isinstance(delta.get("tool_calls"), list):
            _read_tool_deltas(delta["tool_calls"], reading)
        if isinstance(delta.get("reasoning"), str) and delta["reasoning"]:
            reading.reasoning.append(delta["reasoning"])
            reading.first_token = True  # a reasoning token is a first token too
        if isinstance(delta.get("refusal"), str) and delta["refusal"]:
            reading.refusal.append(delta["refusal"])
    for field in ("finish_reason", "native_finish_reason"):
        if isinstance(choice.get(field), str):
            setattr(reading, field, choice[field])


def _read_tool_deltas(deltas: list[Any], reading: _Reading) -> None:
    for delta in deltas:
        if not isinstance(delta, dict):
            continue
        index = delta.get("index", 0)
        if not isinstance(index, int) or isinstance(index, bool):
            continue
        call = reading.tool_calls.get(index)
        if call is None:
            if len(reading.tool_calls) >= MAX_TOOL_CALLS:
                continue
            call = reading.tool_calls[index] = {"id": None, "name": None, "pieces": []}
        function: dict[str, Any] = delta["function"] if isinstance(delta.get("function"), dict) else {}
        if call["id"] is None and isinstance(delta.get("id"), str):
            call["id"] = delta["id"]
        if call["name"] is None and isinstance(function.get("name"), str):
            call["name"] = function["name"]
        if isinstance(function.get("arguments"), str):
            call["pieces"].append(function["arguments"])  # joined once at the end: no quadratic copying
        reading.first_token = True


def _tool_calls(reading: _Reading) -> list[dict[str, Any]]:
    """The streamed calls in the non-streamed shape, for _reply.tool_calls_of."""
    calls = [reading.tool_calls[i] for i in sorted(reading.tool_calls)]
    return [
        {"id": c["id"], "function": {"name": c["name"], "arguments": "".join(c["pieces"]) if c["pieces"] else None}}
        for c in calls
    ]


def _costs_less(usage: dict[str, Any], earlier: dict[str, Any] | None) -> bool:
    """A second usage chunk that reports a lower cost than the first is not believed over it:
    the last one won, and a `cost: 0` after the real one recorded the row at $0 (break14h H13).
    Batch mode takes the larger of two figures too (_batch_costs)."""
    if earlier is None:
        return False
    # What each counts (a BYOK answer's fee with its upstream cost), not the fee alone: a fee of
    # $0.0001 replaced a BYOK usage of $0 plus $0.012 upstream (verify14i V10).
    now, before = reported_charge(usage), reported_charge(earlier)
    return now is not None and before is not None and now < before
