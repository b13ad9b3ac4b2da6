"""Server replies into typed values: the one place that reads what a server sent.

Every function here takes a `Reply` (status, headers, a body already size-capped) and a
`Scrubber`, and returns a typed value or raises a classified RequestFailed; no other
exception leaves it, whatever the bytes (a hypothesis test feeds it arbitrary JSON and
bytes). Every string kept is scrubbed of the keys before it is stored or cut. Shapes
follow OpenRouter's OpenAPI `ChatResult`, `ChatAssistantMessage` and `ChatUsage`
(openapi/openapi.yaml); money figures a server sends are checked, never trusted blindly.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from ._classify import NAME_LIMIT, classify
from ._exceptions import RequestFailed, Transient
from ._generation import generation_header, valid_generation_id
from ._json_text import valid_text
from ._pricing import charge, money
from ._routing import answering_provider
from ._scrub import Scrubber

ERROR_TEXT_CHARS = 200  # a non-JSON error body is kept this long, after scrubbing
ERROR_MESSAGE_CHARS = 2_000  # any server's error message (a record keeps 500 of it)
# A reply is untrusted: bound what one answer's tool calls can put in a row.
MAX_TOOL_CALLS = 32
MAX_TOOL_ARGUMENTS = 65536
MAX_TOOL_NAME = 200


class Reply(NamedTuple):
    """One HTTP exchange as read by the client: the body decoded and within the cap."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class ChatResult:
    generation_id: str | None
    model: str | None
    provider: str | None
    content: str  # the text: a string answer, or the text parts of an array joined
    finish_reason: str | None
    native_finish_reason: str | None
    usage: dict[str, Any]  # ChatUsage as returned, less fields of the wrong type; scrubbed
    refusal: str | None = None
    reasoning: str | None = None
    # usage.cost was sent but cannot be believed (negative, not finite, not a number): the
    # reply's token counts are not trusted either, so the worst case stays spent (issue 11).
    cost_rejected: bool = False
    # message.tool_calls as {id, name, arguments (the JSON string as sent)}, scrubbed (issue 17)
    tool_calls: tuple[dict[str, Any], ...] = ()
    # The reply's size as read (after decompression): what run.max_response_bytes counted.
    # A cached answer is a hit only for a run whose cap it fits (_cache_session).
    reply_bytes: int | None = None
    # The tier that served it (service-tiers.mdx: "billed at the actual served tier's rate").
    service_tier: str | None = None

    @property
    def cost(self) -> float | None:
        """usage.cost when it is a finite, non-negative number; else None (unknown)."""
        return charge(self.usage.get("cost"))


# -- small typed readers ---------------------------------------------------------------------
# No real count comes near 2**53 (the largest integer a float holds exactly); a bigger one
# is garbage, dropped like a count of the wrong type: it could not be priced (a float
# overflow) nor written (orjson refuses integers past 64 bits), and a row was lost (C11).
MAX_COUNT = 2**53


def count(value: Any) -> int | None:
    """A token count: an integer from 0 to MAX_COUNT (not a bool, not a string), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT else None


def str_of(value: Any, scrub: Scrubber) -> str | None:
    return scrub.text(value) if isinstance(value, str) else None


def name_of(value: Any, scrub: Scrubber) -> str | None:
    """A server's name for something, scrubbed and cut to NAME_LIMIT characters."""
    text = str_of(value, scrub)
    return None if text is None else text[:NAME_LIMIT]


def type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def bad_reply(what: str, status: int = 200) -> Transient:
    # A reply of the wrong shape: the next attempt may get a good one (a proxy hiccup, a
    # provider's glitch); the retry policy bounds how often.
    return Transient("bad_response", what, status)


def loads(body: bytes | str) -> Any:
    """JSON, as orjson reads it; failing that, as Python's json module does, which also takes
    the literals NaN and Infinity: a reply with `"cost": NaN` is an answer whose cost cannot
    be believed (unknown, its worst case held), not a bad reply to send again and pay twice.
    orjson refuses lone surrogate escapes; json takes them, and they become U+FFFD here. So
    are control characters left raw in a string (out-183 F11: a stream chunk holding an ESC was
    skipped as no JSON, and its row recorded `ok` with its content gone).
    Raises orjson.JSONDecodeError when neither can read it."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            return valid_text(json.loads(body, strict=False))
        except (ValueError, RecursionError):
            raise orjson.JSONDecodeError("not JSON", "", 0) from None


def after_comments(body: bytes) -> bytes:
    """The body without the SSE comment lines (": OPENROUTER PROCESSING" keep-alives,
    streaming.mdx) and blank lines before it: a JSON reply may come after them (break38 F7)."""
    lines = body.splitlines(keepends=True)
    start = 0
    while start < len(lines) and (not lines[start].strip() or lines[start].startswith(b":")):
        start += 1
    return b"".join(lines[start:])


def json_of(reply: Reply) -> Any:
    with contextlib.suppress(orjson.JSONDecodeError):
        return loads(reply.body)
    if reply.body.lstrip().startswith(b":"):  # keep-alive comments before it (after_comments)
        with contextlib.suppress(orjson.JSONDecodeError):
            return loads(after_comments(reply.body))
    raise bad_reply("the body was truncated or not JSON", reply.status)


def body_text(body: bytes) -> str:
    """A body that is no JSON, as text: UTF-8, or UTF-16 or UTF-32 as JSON's rules tell them by
    their NUL bytes (out-182: a UTF-16 error text read as UTF-8 held the key between NULs,
    which no search saw), what NULs are left dropped."""
    encoding = json.detect_encoding(body) if b"\x00" in body else "utf-8"
    return body.decode(encoding, "replace").replace("\x00", "")


def error_text(reply: Reply, scrub: Scrubber) -> str:
    """A non-JSON body as an error message: scrubbed first, then cut."""
    text = scrub.text(body_text(reply.body)).strip()
    return text[:ERROR_TEXT_CHARS] or f"HTTP {reply.status}"


def failure(reply: Reply, error: Any, scrub: Scrubber, now: float) -> RequestFailed:
    """A classified failure from a status and an OpenRouter error object (of any shape)."""
    if isinstance(error, str):
        error = {"message": error}
    # Scrubbed before classify reads it, so whatever part of it a message quotes is clean.
    failed = classify(reply.status, scrub.value(error) if isinstance(error, dict) else None, reply.headers, now)
    # Cut, after it is scrubbed: a 3 MB message was one line of stderr and of the CI step summary (out-178 F6).
    failed.message = scrub.text(failed.message)[:ERROR_MESSAGE_CHARS]
    failed.args = (failed.message,)
    return failed


def error_failure(reply: Reply, scrub: Scrubber, now: float) -> RequestFailed:
    """The failure a non-2xx reply stands for, whatever its body. Read as an answer is (`loads`):
    one lone surrogate in a provider's text hid the availability code, and a deprecated model's
    rows were all sent (break56 F4)."""
    try:
        data = loads(reply.body)
    except orjson.JSONDecodeError:
        return failure(reply, {"message": error_text(reply, scrub)}, scrub, now)
    return failure(reply, data.get("error") if isinstance(data, dict) else None, scrub, now)


# -- chat ------------------------------------------------------------------------------------
def _content(value: Any) -> str:
    """`content`: a string, an array of parts (text parts joined), or null."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if not isinstance(part, dict):
                raise bad_reply(f"choices[0].message.content holds {type_name(part)}, not a content part")
            if part.get("type") == "text":
                if not isinstance(part.get("text"), str):
                    raise bad_reply("a text part of choices[0].message.content has no text string")
                texts.append(part["text"])
        return "".join(texts)
    raise bad_reply(f"choices[0].message.content is {type_name(value)}, not text")


def tool_call(item: Any, scrub: Scrubber) -> dict[str, Any]:
    """One entry of `message.tool_calls` (openapi ChatMessageToolCall: id, type, function
    {name, arguments}). A malformed entry is kept as a call of no name, so a tool_call check
    fails on it, rather than being trusted or dropped silently. Scrubbed, then cut."""
    entry = item if isinstance(item, dict) else {}
    function: dict[str, Any] = entry["function"] if isinstance(entry.get("function"), dict) else {}
    name, arguments = function.get("name"), function.get("arguments")
    if isinstance(arguments, (dict, list)):  # some providers send an object, not a string
        try:
            arguments = orjson.dumps(scrub.value(arguments)).decode()
        except orjson.JSONEncodeError:  # an integer past 64 bits, say: not arguments we can keep
            arguments = None
    call_id = entry.get("id")
    return {
        "id": scrub.text(call_id)[:MAX_TOOL_NAME] if isinstance(call_id, str) else None,
        "name": scrub.text(name)[:MAX_TOOL_NAME] if isinstance(name, str) else None,
        "arguments": scrub.text(arguments)[:MAX_TOOL_ARGUMENTS] if isinstance(arguments, str) else None,
    }


def tool_calls_of(value: Any, scrub: Scrubber) -> tuple[dict[str, Any], ...]:
    """`message.tool_calls`: at most MAX_TOOL_CALLS calls; anything not a list is none."""
    if not isinstance(value, list):
        return ()
    return tuple(tool_call(item, scrub) for item in value[:MAX_TOOL_CALLS])


_USAGE_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")
_DETAIL_COUNTS = {
    "prompt_tokens_details": ("cached_tokens", "cache_write_tokens", "audio_tokens", "video_tokens"),
    "completion_tokens_details": (
        "reasoning_tokens",
        "audio_tokens",
        "accepted_prediction_tokens",
        "rejected_prediction_tokens",
    ),
    # openapi ServerToolUseDetails: what web search and other server tools ran (and billed).
    "server_tool_use_details": ("tool_calls_requested", "tool_calls_executed", "web_search_requests"),
    # overview.mdx's ResponseUsage and server-tools.mdx: the same count under this name (out-161).
    "server_tool_use": ("web_search_requests",),
}


def usage_of(value: Any, scrub: Scrubber) -> dict[str, Any]:
    """ChatUsage as returned, keeping only fields of the documented types: a count that is
    a string, or a cost that is negative, is dropped (then the cost is unknown)."""
    if not isinstance(value, dict):
        return {}
    usage: dict[str, Any] = {}
    for name in _USAGE_COUNTS:
        if count(value.get(name)) is not None:
            usage[name] = value[name]
    cost = charge(value.get("cost"))
    if cost is not None:
        usage["cost"] = cost  # at most MAX_CHARGE_USD: one past it is no charge (then the cost is unknown)
    for name, fields in _DETAIL_COUNTS.items():
        details = value.get(name)
        if isinstance(details, dict):
            usage[name] = {f: details[f] for f in fields if count(details.get(f)) is not None}
    details = value.get("cost_details")
    if isinstance(details, dict):
        usage["cost_details"] = {scrub.text(str(k)): money(v) for k, v in details.items()}
    flag = value.get("is_byok")
    if isinstance(flag, bool):
        usage["is_byok"] = flag
    elif flag is not None:
        # A flag that is not a boolean ("true", 1) cannot be believed to say "not BYOK": taken
        # as BYOK, the answer's cost counts its upstream charge or stays unknown (break-14b M3).
        usage["is_byok"] = True
    return usage


def billed(
    failure: RequestFailed, usage: Any, generation_id: Any, scrub: Scrubber, *, generated: bool, waived: bool
) -> RequestFailed:
    """A failure that came in a 200 reply, with what it may have cost. Zero completion
    insurance waives the model's tokens of a reply with an error finish reason (`waived`),
    or with no completion tokens and no finish reason; charges for work that already ran
    (web search, file parsing, web fetch) "may still be billed ... When billed, these
    charges appear in the request's usage breakdown" (zero-completion-insurance.mdx). So a
    usage.cost above 0 is charged (`reported_cost`); a reply not waived that generated
    tokens, or one whose cost cannot be read, may be billed: held like an abandoned attempt
    and looked up by its id (break14b C4, C10)."""
    cost = charge(usage.get("cost")) if isinstance(usage, dict) else None
    tokens = generated or (count(_field(usage, "completion_tokens")) or 0) > 0
    if cost is not None and cost > 0:
        failure.reported_cost = cost
    elif cost_rejected(usage) or (tokens and not waived):
        failure.maybe_billed = True
    if failure.reported_cost is not None or failure.maybe_billed:
        failure.generation_id = valid_generation_id(generation_id, scrub)
    return failure


def _field(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, dict) else None


def parse_chat(reply: Reply, scrub: Scrubber, now: float) -> ChatResult:
    """A chat completion reply: the answer, or the failure it stands for."""
    if reply.status != 200:
        raise error_failure(reply, scrub, now)
    data = json_of(reply)
    if not isinstance(data, dict):
        # Generated, maybe billed, as a 200 that is no JSON (out-111 F3: an array was $0, retried).
        wrong = bad_reply(f"the reply is {type_name(data)}, not an object")
        raise billed(wrong, None, generation_header(reply.headers, scrub), scrub, generated=True, waived=False)
    headers_scrub, scrub = scrub, scrub.for_body(reply.body)  # a clean body says nothing of its headers

    def charged(failed: RequestFailed, waived: bool = False, finished: Any = None) -> RequestFailed:
        # The header's id is the one /generation knows; a body's need not be (verify45 N1).
        generation_id = generation_header(reply.headers, headers_scrub) or data.get("id")
        # A choice that finished ("stop", "length") is no blank finish reason: insurance waives
        # none of it, so a wrong-shaped answer without usage may be billed (out-109 F2: $0).
        generated = isinstance(finished, str) and finished.strip() not in ("", "error")
        return billed(failed, data.get("usage"), generation_id, scrub, generated=generated, waived=waived)

    if data.get("error"):  # an error sent with HTTP 200
        raise charged(failure(reply, data["error"], scrub, now))
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise charged(bad_reply("the answer had no choices"))
    choice = choices[0]
    if not isinstance(choice, dict):
        raise charged(bad_reply(f"choices[0] is {type_name(choice)}, not an object"))
    if choice.get("finish_reason") == "error" or choice.get("error"):
        error = choice.get("error") or {"message": "finish_reason error"}
        raise charged(failure(reply, error, scrub, now), waived=choice.get("finish_reason") == "error")
    message = choice.get("message")
    if message is None:
        message = {}
    finished = choice.get("finish_reason")
    if not isinstance(message, dict):
        raise charged(bad_reply(f"choices[0].message is {type_name(message)}, not an object"), finished=finished)
    try:
        content = _content(message.get("content"))
    except RequestFailed as failed:
        raise charged(failed, finished=finished) from None
    refusal = str_of(message.get("refusal"), scrub)
    finish_reason = name_of(choice.get("finish_reason"), scrub)
    usage = usage_of(data.get("usage"), scrub)
    tool_calls = tool_calls_of(message.get("tool_calls"), scrub)
    if not content and not refusal and not finish_reason and not tool_calls:
        # errors-and-debugging.mdx "When no content is generated": a cold start or scaling;
        # zero-completion-insurance.mdx: no completion tokens and no finish reason is not
        # billed (with completion tokens, or a cost, it may be: `billed`).
        raise charged(Transient("empty_completion", "an empty completion with no finish reason (cold start?)", 200))
    return ChatResult(
        generation_id=str_of(data.get("id"), scrub),
        model=name_of(data.get("model"), scrub),
        provider=answering_provider(data, scrub.text),
        content=scrub.text(content),
        finish_reason=finish_reason,
        native_finish_reason=name_of(choice.get("native_finish_reason"), scrub),
        usage=usage,
        refusal=refusal,
        reasoning=str_of(message.get("reasoning"), scrub),
        cost_rejected=cost_rejected(data.get("usage")),
        tool_calls=tool_calls,
        reply_bytes=len(reply.body),
        service_tier=(str_of(data.get("service_tier"), scrub) or "")[:200] or None,
    )


def cost_rejected(usage: Any) -> bool:
    """usage.cost was sent, and is not a finite non-negative number, or is below what it says
    OpenRouter paid the provider out of it (`is_byok: false`: the upstream cost is part of it)."""
    if not isinstance(usage, dict) or usage.get("cost") is None:
        return False
    cost = charge(usage.get("cost"))
    return cost is None or below_upstream(usage, cost)


def upstream_cost(usage: dict[str, Any]) -> float | None:
    """usage.cost_details.upstream_inference_cost, when it is a usable figure."""
    details = usage.get("cost_details")
    return charge(details.get("upstream_inference_cost")) if isinstance(details, dict) else None


def below_upstream(usage: dict[str, Any], cost: float) -> bool:
    """A non-BYOK cost below its own upstream cost: not the charge (at least the upstream cost
    was paid), so it is not believed (verify31 V7: counted at the lower figure, +20% billed)."""
    upstream = upstream_cost(usage)
    return usage.get("is_byok") is False and upstream is not None and upstream > cost + 1e-12
