"""Unit tests of the OpenRouter client and the failure classification, with respx."""

from __future__ import annotations

import email.utils
import json
import math
import re
import threading
import unicodedata
from typing import Any

import httpx
import pytest
import respx

from batchrun import (
    AuthFailed,
    CreditExhausted,
    OpenRouterClient,
    RateLimited,
    Rejected,
    RequestFailed,
    Transient,
    _client,
    _reply,
)
from batchrun._classify import FOREVER_S, classify, server_now, server_wait
from batchrun._management import ManagementApi

from .conftest import FAKE_KEY, FakeClock

BASE = "https://openrouter.test/api/v1"
CHAT = f"{BASE}/chat/completions"
BODY = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
OK = {
    "id": "gen-123",
    "model": "openai/gpt-4o-mini-2024",
    "provider": "OpenAI",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "native_finish_reason": "stop",
            "message": {"role": "assistant", "content": "Hello"},
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6, "cost": 0.00012},
}


def client(clock: FakeClock | None = None, key: str = FAKE_KEY) -> OpenRouterClient:
    # The client is built on the aiohttp transport; respx intercepts it with using="httpx".
    return OpenRouterClient(BASE, key, app_url="https://example.org", app_title="Nightly", clock=clock or FakeClock())


async def chat(response: httpx.Response, clock: FakeClock | None = None) -> Any:
    with respx.mock(using="httpx") as mock:
        route = mock.post(CHAT).mock(return_value=response)
        async with client(clock) as c:
            try:
                return await c.chat(BODY, row_id="abc"), route
            except Exception as exc:  # noqa: BLE001 - returned for the test to inspect
                return exc, route


async def test_request_headers_and_body() -> None:
    result, route = await chat(httpx.Response(200, json=OK))
    sent = route.calls.last.request
    assert sent.headers["Authorization"] == f"Bearer {FAKE_KEY}"
    assert sent.headers["HTTP-Referer"] == "https://example.org"
    assert sent.headers["X-Title"] == "Nightly" and sent.headers["X-OpenRouter-Title"] == "Nightly"
    assert sent.headers["X-Batchrun-Row"] == "abc"
    assert json.loads(sent.content) == BODY


async def test_normal_response_is_parsed() -> None:
    result, _ = await chat(httpx.Response(200, json=OK))
    assert (result.generation_id, result.model, result.provider) == ("gen-123", "openai/gpt-4o-mini-2024", "OpenAI")
    assert (result.content, result.finish_reason, result.cost) == ("Hello", "stop", 0.00012)
    assert result.usage["total_tokens"] == 6


@pytest.mark.parametrize("padding", [0, 300_000])
async def test_a_large_reply_is_read_off_the_event_loop_and_a_small_one_on_it(
    monkeypatch: pytest.MonkeyPatch, padding: int
) -> None:
    # out-179 F2: replies of short escapes, ~0.4 s each to read, came in together and were read
    # one after another with the loop held: a run overran its deadline and grace by their sum.
    readers: list[threading.Thread] = []
    read = _reply.parse_chat

    def parse(*args: Any) -> Any:
        readers.append(threading.current_thread())
        return read(*args)

    monkeypatch.setattr(_client, "parse_chat", parse)
    message = {"role": "assistant", "content": "Hello" + "%41x" * (padding // 4)}
    choice = {"index": 0, "finish_reason": "stop", "message": message}
    result, _ = await chat(httpx.Response(200, json={**OK, "choices": [choice]}))
    assert result.content.startswith("Hello") and len(result.content) == 5 + padding
    assert (readers == [threading.main_thread()]) is (padding == 0), readers


def err(
    status: int,
    message: str = "m",
    metadata: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> httpx.Response:
    error: dict[str, Any] = {"code": status, "message": message, **extra}
    if metadata:
        error["metadata"] = metadata
    return httpx.Response(status, json={"error": error}, headers=headers)


@pytest.mark.parametrize(
    ("response", "cls", "kind"),
    [
        (err(400), Rejected, "bad_request"),
        (err(404), Rejected, "not_found"),
        (err(413), Rejected, "too_large"),
        (err(422), Rejected, "unprocessable"),
        (err(403, "Input flagged by moderation", {"reasons": ["x"]}), Rejected, "moderation"),
        (err(401, "No auth credentials found"), AuthFailed, "auth"),
        (err(402, "Insufficient credits", {"limit_source": "openrouter_credits"}), CreditExhausted, "credits"),
        (err(402, "Key limit", {"limit_source": "openrouter_key_limit"}), CreditExhausted, "key_limit"),
        (err(402, "Insufficient credits"), CreditExhausted, "credits"),
        (err(402, "busy", {"limit_source": "openrouter_in_flight_budget"}), RateLimited, "in_flight_budget"),
        (err(403, "Key limit exceeded"), CreditExhausted, "key_limit"),
        # workspace-budgets.mdx, verbatim (break32 F3: every row a final `forbidden` error).
        (
            err(403, "Workspace monthly budget of $500.00 exceeded. Contact your org admin."),
            CreditExhausted,
            "spend_limit",
        ),
        (err(403, "Guardrail daily budget exceeded"), CreditExhausted, "spend_limit"),
        (err(403, "Guardrail budget limit reached"), CreditExhausted, "spend_limit"),  # guardrails.mdx's words
        (err(403, "Spending limit reached for this key"), CreditExhausted, "spend_limit"),
        (err(403, "Forbidden", {"limit_source": "openrouter_workspace_budget"}), CreditExhausted, "spend_limit"),
        # verify32 n2, n3: other wordings and the key limit by metadata stop; a moderation flag
        # quoting such words, or a wait's limit source, does not.
        (err(403, "Request exceeds the workspace's monthly budget"), CreditExhausted, "spend_limit"),
        (err(403, "Forbidden", {"limit_source": "openrouter_key_limit"}), CreditExhausted, "key_limit"),
        (err(403, "flagged: 'my budget was exceeded'", {"reasons": ["x"]}), Rejected, "moderation"),
        (err(403, "busy", {"limit_source": "openrouter_in_flight_budget"}), Rejected, "forbidden"),
        (err(403, "Model not in the allowlist"), Rejected, "forbidden"),
        # Words in the message decide nothing (errors-and-debugging.mdx: switch on error_type).
        (err(429, "Rate limit exceeded: free-models-per-day"), RateLimited, "rate_limited"),
        (err(429, "Rate limit exceeded"), RateLimited, "rate_limited"),
        (err(503), RateLimited, "no_provider"),
        (err(529), RateLimited, "overloaded"),
        (err(408), Transient, "timeout"),
        (err(409), Transient, "conflict"),
        (err(425), Transient, "too_early"),
        (err(500), Transient, "server_error"),
        (err(502), Transient, "upstream_error"),
        (err(504), Transient, "gateway_timeout"),
        (err(524), Transient, "upstream_timeout"),
        (err(400, "retry me", availability={"retryable": True}), Transient, "http_400"),
        (httpx.Response(502, text="<html>Bad gateway</html>"), Transient, "upstream_error"),
    ],
)
async def test_error_classes(response: httpx.Response, cls: type, kind: str) -> None:
    result, _ = await chat(response)
    assert type(result) is cls and isinstance(result, RequestFailed) and result.kind == kind
    assert result.http_status == response.status_code


@pytest.mark.parametrize(
    "payload",
    [
        {"id": "gen-1", "error": {"code": 502, "message": "Provider returned error"}, "choices": None},
        {
            "id": "gen-1",
            "choices": [
                {
                    "finish_reason": "error",
                    "error": {"code": 502, "message": "upstream died"},
                    "message": {"role": "assistant", "content": ""},
                }
            ],
        },
    ],
)
async def test_errors_inside_http_200_are_classified_by_their_code(payload: dict[str, Any]) -> None:
    result, _ = await chat(httpx.Response(200, json=payload))
    assert isinstance(result, Transient) and result.kind == "upstream_error" and result.http_status == 502


async def test_error_200_with_a_final_code_is_final() -> None:
    result, _ = await chat(httpx.Response(200, json={"error": {"code": 400, "message": "bad"}, "choices": None}))
    assert isinstance(result, Rejected) and result.http_status == 400


@pytest.mark.parametrize("content", [b'{"id": "gen-1", "choi', b"not json at all", b'{"choices": []}'])
async def test_truncated_or_empty_200_is_retryable(content: bytes) -> None:
    result, _ = await chat(httpx.Response(200, content=content))
    assert isinstance(result, Transient) and result.kind == "bad_response"


async def test_network_errors_and_timeouts_are_transient() -> None:
    for exc, kind in (
        (httpx.ConnectError("refused"), "connect"),
        (httpx.ReadError("reset"), "network"),
        (httpx.ReadTimeout("slow"), "timeout"),
        (httpx.RemoteProtocolError("closed"), "network"),
    ):
        with respx.mock(using="httpx") as mock:
            mock.post(CHAT).mock(side_effect=exc)
            async with client() as c:
                with pytest.raises(Transient) as caught:
                    await c.chat(BODY)
        assert caught.value.kind == kind


async def test_a_refused_connection_over_loopback_is_connect_not_timeout() -> None:
    # The real (aiohttp) transport, which reports a refused connection as ConnectTimeout.
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    async with OpenRouterClient(f"http://127.0.0.1:{port}/api/v1", FAKE_KEY) as c:
        with pytest.raises(Transient) as caught:
            await c.chat(BODY)
    assert caught.value.kind == "connect" and caught.value.retryable
    assert "timeout" not in caught.value.message.lower() and FAKE_KEY not in caught.value.message


def test_server_wait_header_forms() -> None:
    now = 1_800_000_000.0
    assert server_wait({"retry-after": "7"}, now) == 7
    # An HTTP date: 1_800_000_000 is Fri, 15 Jan 2027 08:00:00 GMT, so 08:00:10 is 20 s after `now`.
    assert server_wait({"retry-after": "Fri, 15 Jan 2027 08:00:10 GMT"}, 1_799_999_990) == 20
    assert server_wait({"retry-after": "Thu, 01 Jan 1970 00:00:10 GMT"}, 0.0) == 10
    assert server_wait({"retry-after-ms": "1500"}, now) == 1.5
    assert server_wait({"x-ratelimit-reset": str(int((now + 12) * 1000))}, now) == pytest.approx(12)
    assert server_wait({"retry-after": "2", "x-ratelimit-reset": str(int((now + 5) * 1000))}, now) == pytest.approx(5)
    assert server_wait({"retry-after": "soon"}, now) is None
    assert server_wait({"retry-after": "-3"}, now) == 0
    # out-142 L2: `inf` and `1e400` were no hint (sent again at once); 999999999 is past any cap, so are they.
    for endless in ("inf", "1e400", "Infinity"):
        assert server_wait({"retry-after": endless}, now) == FOREVER_S
        assert server_wait({"retry-after-ms": endless}, now) == FOREVER_S / 1000
        assert server_wait({"x-ratelimit-reset": endless}, now) == FOREVER_S  # out-144 F2
    assert server_wait({"retry-after": "-inf"}, now) is None and server_wait({"retry-after": "nan"}, now) is None


@pytest.mark.parametrize("behind_s", [0.0, 1.0, 90.0, 300.0, 3600.0, -3600.0])
async def test_a_reset_is_measured_against_the_servers_date_when_our_clock_is_off(behind_s: float) -> None:
    # break46 F1: a cron box behind the server by 300 s read a reset 1 s away as a 301 s wait:
    # every row skipped in a second, or "a daily cap" (exit 1) when an hour behind.
    clock = FakeClock()
    server_time = clock.time() + behind_s
    headers = {
        "X-RateLimit-Reset": str(int((server_time + 1) * 1000)),
        "X-RateLimit-Limit": "20",
        "Date": email.utils.formatdate(server_time, usegmt=True),
    }
    result, _ = await chat(err(429, headers=headers), clock)
    assert isinstance(result, RateLimited) and result.limit_wait is not None
    # Our clock where the Date is not ahead of it by more than its resolution; else the Date's
    # (taken half a second into its second). A server behind us (our clock fast): the reset is
    # past by our clock, 1 s ahead by the Date, which is waited for (break51 F1: no wait before).
    expected = 0.5 if behind_s > 2 else 1.0 if behind_s < 0 else 1.0 + behind_s
    assert result.limit_wait == pytest.approx(expected)
    assert result.retry_after is not None and result.retry_after <= 2.0


@pytest.mark.parametrize("date_s", [-300.0, -3600.0, -1_800_000_000.0])
async def test_a_date_behind_our_clock_never_stretches_a_wait(date_s: float) -> None:
    # verify48 N1: a proxy's stale Date, or 1970 from an unset clock, on replies whose reset is
    # right: believed, a one-second limit read as a 300 s wait, or a daily cap (exit 1).
    clock = FakeClock()
    headers = {
        "X-RateLimit-Reset": str(int((clock.time() + 1) * 1000)),
        "X-RateLimit-Limit": "20",
        "Date": email.utils.formatdate(clock.time() + date_s, usegmt=True),
    }
    result, _ = await chat(err(429, headers=headers), clock)
    assert isinstance(result, RateLimited) and result.limit_wait == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("fast_s", "reset_in_s", "expected"), [(30, 20, 20), (60, 59, 59), (600, 20, 20), (30, 90, 60)]
)
async def test_a_reset_past_by_our_fast_clock_is_waited_for_by_the_date(
    fast_s: float, reset_in_s: float, expected: float
) -> None:
    # break51 F1: a client clock 30 s fast read every reset as past: each retry came back inside
    # the limit's window, 36 429s and half the rows in error. The Date's figure is waited for, at
    # most a minute (a stale Date then costs no more than that).
    clock = FakeClock()
    server_time = clock.time() - fast_s
    headers = {
        "X-RateLimit-Reset": str(int((server_time + reset_in_s) * 1000)),
        "Date": email.utils.formatdate(server_time, usegmt=True),
    }
    result, _ = await chat(err(429, headers=headers), clock)
    assert isinstance(result, RateLimited) and result.limit_wait == pytest.approx(expected)
    assert result.retry_after == pytest.approx(expected)
    date_form = {"Retry-After": email.utils.formatdate(server_time + reset_in_s, usegmt=True), "Date": headers["Date"]}
    result, _ = await chat(err(429, headers=date_form), clock)
    assert isinstance(result, RateLimited) and result.retry_after == pytest.approx(expected)


@pytest.mark.parametrize("stale_s", [3600.0, 1_800_000_000.0])
async def test_a_past_reset_beside_a_stale_date_is_not_waited_for(stale_s: float) -> None:
    # A reset past by our clock, and an hour (or 1970) ahead of a stale Date: no clock is that
    # fast against a minute's window, so the Date is not believed (verify52 of break51 F1).
    clock = FakeClock()
    headers = {
        "X-RateLimit-Reset": str(int((clock.time() - 1) * 1000)),
        "Date": email.utils.formatdate(clock.time() - stale_s, usegmt=True),
    }
    result, _ = await chat(err(429, headers=headers), clock)
    assert isinstance(result, RateLimited) and result.limit_wait == 0.0


@pytest.mark.parametrize("date", ["yesterday", "Fri, 15 Jan 99999 08:00:10 GMT", "", "Thu, 01 Jan 1970 00:00:00 GMT"])
def test_a_date_that_is_no_date_or_far_off_is_no_crash(date: str) -> None:
    now = 1_800_000_000.0
    headers = {"date": date, "x-ratelimit-reset": str(int((now + 12) * 1000))}
    wait = server_wait(headers, server_now(headers, now))
    assert wait is not None and wait >= 0


async def test_rate_limit_carries_the_server_wait() -> None:
    clock = FakeClock()
    reset_ms = str(int((clock.time() + 30) * 1000))
    result, _ = await chat(err(429, headers={"X-RateLimit-Reset": reset_ms}), clock)
    assert isinstance(result, RateLimited) and result.retry_after == pytest.approx(30)


def test_a_providers_per_day_429_is_not_a_platform_limit() -> None:
    """An upstream provider's 429 whose raw text says "per day" carries no X-RateLimit-*
    headers (limits.mdx), so it is an ordinary rate limit, never a daily cap."""
    error = {
        "code": 429,
        "message": "Rate limit exceeded",
        "metadata": {"error_type": "rate_limit_exceeded", "provider_name": "Acme", "raw": "requests per day exceeded"},
    }
    failure = classify(429, error, {"retry-after": "30"}, 0)
    assert isinstance(failure, RateLimited) and not failure.platform and failure.retry_after == 30
    platform = classify(429, error, {"x-ratelimit-reset": "90000", "x-ratelimit-remaining": "0"}, 0)
    assert isinstance(platform, RateLimited) and platform.platform and platform.limit_wait == 90000


async def test_key_is_scrubbed_from_echoed_messages() -> None:
    result, _ = await chat(err(400, f"bad header Bearer {FAKE_KEY}"))
    assert FAKE_KEY not in str(result) and "[key]" in str(result)
    assert FAKE_KEY not in repr(client())


@pytest.mark.parametrize("before", ["", "a", "ab", "Bearer "])
async def test_the_key_one_step_from_its_form_is_scrubbed_too(before: str) -> None:
    # out-110 F7: a server echoing the key base64-encoded (after any text: each alignment) or
    # reversed put it in the results, pages and JUnit files.
    import base64

    secret = (before + FAKE_KEY).encode()
    for echo in (base64.b64encode(secret), base64.urlsafe_b64encode(secret), FAKE_KEY[::-1].encode()):
        result, _ = await chat(err(400, f"you sent {echo.decode()}"))
        assert "[key]" in str(result) and echo.decode()[8:40] not in str(result)


ESCAPED_ECHOES = {
    "percent": "".join(f"%{b:02X}" for b in FAKE_KEY.encode()),
    "percent-dashes": FAKE_KEY.replace("-", "%2d"),
    "html-decimal": "".join(f"&#{ord(c)};" for c in FAKE_KEY),
    "html-hex": "".join(f"&#x{ord(c):x};" for c in FAKE_KEY),
    # out-128 F2: references without their `;` (browsers read them), and escapes of escapes.
    "html-no-semicolon": "".join(f"&#{ord(c)}" for c in FAKE_KEY),
    "html-of-percent": "".join(f"&#37;{b:02x}" for b in FAKE_KEY.encode()),
    "percent-twice": "".join(f"%25{b:02X}" for b in FAKE_KEY.encode()),
    "hex": FAKE_KEY.encode().hex(),
    "HEX": FAKE_KEY.encode().hex().upper(),
    # out-176 F5: a legacy URL escape, and full-width forms (which NFKC reads as the key).
    "percent-u": "".join(f"%u{ord(c):04X}" for c in FAKE_KEY),
    "fullwidth": "".join(chr(ord(c) + 0xFEE0) for c in FAKE_KEY),
    # out-178 F1, F2: reversed and upper-cased at once, mixed case, references with leading
    # zeros, a JSON escape escaped again, references written as HTML text (`&amp;#115;`).
    "reversed-upper": FAKE_KEY[::-1].upper(),
    "mixed-case": "".join(c.upper() if i % 2 else c for i, c in enumerate(FAKE_KEY)),
    "html-leading-zeros": "".join(f"&#x{ord(c):08x};" for c in FAKE_KEY),
    "json-twice": "".join(f"\\\\u{ord(c):04x}" for c in FAKE_KEY),
    "html-of-html": "".join(f"&amp;#{ord(c)};" for c in FAKE_KEY),
    # out-179 F3: escaped again three times (four readings), as the README says.
    "percent-four-times": "".join(f"%252525{b:02X}" for b in FAKE_KEY.encode()),
    "html-four-times": "".join(f"&amp;amp;amp;#{ord(c)};" for c in FAKE_KEY),
    # out-182: full-width forms escaped (NFKC read only the text as it came), and JSON escapes
    # whose backslash is escaped (the backslash alone is not read: it would change a JSON text).
    "fullwidth-json": "".join(f"\\u{ord(c) + 0xFEE0:04x}" for c in FAKE_KEY),
    "fullwidth-html": "".join(f"&#{ord(c) + 0xFEE0};" for c in FAKE_KEY),
    "fullwidth-percent-utf8": "".join(f"%{b:02X}" for c in FAKE_KEY for b in chr(ord(c) + 0xFEE0).encode()),
    "fullwidth-percent-u": "".join(f"%u{ord(c) + 0xFEE0:04X}" for c in FAKE_KEY),
    "json-percent": "".join(f"%5Cu{ord(c):04x}" for c in FAKE_KEY),
    "json-html": "".join(f"&#92;u{ord(c):04x}" for c in FAKE_KEY),
    "json-html-named": "".join(f"&bsol;u{ord(c):04x}" for c in FAKE_KEY),
    "json-both-html": "".join(f"&#92;&#117;{ord(c):04x}" for c in FAKE_KEY),
    "json-both-percent-u": "".join(f"%u005C%u0075{ord(c):04x}" for c in FAKE_KEY),
    "json-both-json": "".join(f"\\u005c\\u0075{ord(c):04x}" for c in FAKE_KEY),
    # out-182: characters a reader does not see between the key's: it shows as the key.
    "nul-between": "\x00".join(FAKE_KEY),
    "zero-width-between": "\u200b".join(FAKE_KEY),
    "del-between": "\x7f".join(FAKE_KEY),
    "backspace-between": "\b".join(FAKE_KEY),  # JSON writes it `\b`, no \u escape
    "soft-hyphens-and-bidi": "".join(c + "\u00ad\u202c" for c in FAKE_KEY),
    # out-183 F1, F2: those characters escaped (as JSON writes them in tool-call arguments), and
    # F3: the rest of Unicode's default-ignorable ones, C1 controls, a vertical tab, a form feed.
    "zero-width-json": "\\u200b".join(FAKE_KEY),
    "nul-json": "\\u0000".join(FAKE_KEY),
    "zero-width-html": "&#8203;".join(FAKE_KEY),
    "soft-hyphen-html-named": "&shy;".join(FAKE_KEY),
    "zero-width-joiner-html-named": "&zwj;".join(FAKE_KEY),
    "zero-width-percent-utf8": "%E2%80%8B".join(FAKE_KEY),
    "zero-width-percent-u": "%u200B".join(FAKE_KEY),
    "variation-selector-between": "\ufe0f".join(FAKE_KEY),
    "hangul-filler-between": "\u3164".join(FAKE_KEY),
    "c1-control-between": "\x85".join(FAKE_KEY),
    "vertical-tab-between": "\x0b".join(FAKE_KEY),
    "form-feed-between": "\x0c".join(FAKE_KEY),  # JSON writes it `\f`
    "language-tag-between": "\U000e0001".join(FAKE_KEY),
    "lone-surrogate-json": "\\ud800".join(FAKE_KEY),
    # Tag characters spell ASCII out of sight ("ASCII smuggling"), raw or as JSON's surrogate pairs.
    "tags": "".join(chr(0xE0000 + ord(c)) for c in FAKE_KEY),
    "tags-json": "".join(f"\\udb40\\udc{ord(c):02x}" for c in FAKE_KEY),
    # F4: Python's escapes of bytes, as an exception quotes what a server sent (a bad status line).
    "python-bytes-nul": repr("\x00".join(FAKE_KEY).encode()),
    "python-bytes-zero-width": repr("\u200b".join(FAKE_KEY).encode()),
    "python-bytes-fullwidth": repr("".join(chr(ord(c) + 0xFEE0) for c in FAKE_KEY).encode()),
}


def _decoded(text: str) -> str:
    """Every way back to the key a reader of the text might take."""
    import html
    import urllib.parse

    hex_runs = re.sub(
        r"[0-9a-fA-F]{16,}", lambda m: bytes.fromhex(m.group(0)[: len(m.group(0)) // 2 * 2]).decode("latin-1"), text
    )
    legacy = re.sub(r"%u([0-9a-fA-F]{4})|\\+u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1) or m.group(2), 16)), text)
    unescaped = text
    for _ in range(4):
        unescaped = urllib.parse.unquote(html.unescape(unescaped))
    read = unescaped + hex_runs + unicodedata.normalize("NFKC", legacy)
    # What a reader does not see: format characters, controls, variation selectors, fillers.
    read = "".join(c for c in read if unicodedata.category(c) not in ("Cf", "Cc", "Mn", "Cs") and c != "\u3164")
    return read.lower() + read[::-1].lower()


@pytest.mark.parametrize("form", ESCAPED_ECHOES)
async def test_the_key_echoed_escaped_or_in_hex_is_scrubbed(form: str) -> None:
    # out-125 F3: a server echoing the header percent-encoded, as HTML character references or
    # in hex put the whole key into the results, in an error's message and in an answer.
    echo = ESCAPED_ECHOES[form]
    failure, _ = await chat(err(400, f"you sent Bearer {echo} (rejected)"))
    said = json.loads(json.dumps(OK).replace('"Hello"', json.dumps(f"your key: {echo}")))
    answer, _ = await chat(httpx.Response(200, json=said))
    for result in (str(failure), answer.content):
        assert "[key]" in result and FAKE_KEY[9:25] not in _decoded(result), result
    # Escapes of other characters, and text with a bare %, are left as they were.
    plain, _ = await chat(err(400, "100% sure: a&#60;b, %zz, &#x1F600;"))
    assert "100% sure: a&#60;b, %zz, &#x1F600;" in str(plain)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-be"])
async def test_the_key_echoed_in_an_error_text_in_utf16_or_utf32_is_scrubbed(encoding: str) -> None:
    # out-182: a body that is no JSON was read as UTF-8: in UTF-16 the key stood with a NUL
    # between its characters, which no search saw, and reached the error message whole.
    body = f"upstream said: Bearer {FAKE_KEY} (rejected)".encode(encoding)
    failure, _ = await chat(httpx.Response(400, content=body, headers={"Content-Type": "text/plain"}))
    assert "[key]" in str(failure) and "upstream said" in str(failure)
    assert FAKE_KEY[9:25] not in str(failure).replace("\x00", "")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-32-le"])
async def test_the_key_echoed_in_a_reply_in_utf16_or_utf32_is_scrubbed(encoding: str) -> None:
    # out-180 F1: JSON in UTF-16 or UTF-32 is read (Python's json detects it), but its bytes were
    # searched as UTF-8, found clean, and its strings kept unscrubbed: the key reached the
    # response cache and the grader's request.
    said = json.loads(json.dumps(OK).replace('"Hello"', json.dumps(f"your key: {FAKE_KEY}")))
    answer, _ = await chat(httpx.Response(200, content=json.dumps(said).encode(encoding)))
    assert answer.content == "your key: [key]"


async def test_the_key_echoed_in_the_generation_header_of_an_error_in_a_200_is_scrubbed() -> None:
    # out-180 F7: the header was scrubbed with the body's scrubber, which masks nothing when the
    # body holds no key: the abandoned attempt's generation id was the key.
    body = {"id": "gen-1", "error": {"code": 502, "message": "upstream"}, "usage": {"completion_tokens": 5}}
    failure, _ = await chat(httpx.Response(200, json=body, headers={"X-Generation-Id": FAKE_KEY}))
    assert isinstance(failure, RequestFailed) and failure.maybe_billed
    assert FAKE_KEY[9:25] not in str(failure.generation_id)


async def test_models_and_key_endpoints() -> None:
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/models").mock(
            return_value=httpx.Response(
                200,
                json={
                    "data": [
                        {
                            "id": "a/b",
                            "context_length": 1000,
                            "pricing": {"prompt": "0.000001", "completion": "0.000002", "request": "0"},
                            "top_provider": {"max_completion_tokens": 500},
                        },
                        {"id": "openrouter/auto", "pricing": {"prompt": "-1", "completion": "-1"}},
                    ]
                },
            )
        )
        mock.get(f"{BASE}/key").mock(
            return_value=httpx.Response(200, json={"data": {"limit": 5, "limit_remaining": 4.5}})
        )
        async with client() as c:
            models = await c.models()
            key = await c.key_info()
    assert (
        models is not None and models["a/b"].completion_price == 0.000002 and models["a/b"].max_completion_tokens == 500
    )
    assert not models["openrouter/auto"].price_known
    assert key == {"limit": 5, "limit_remaining": 4.5}


@pytest.mark.parametrize(
    ("data", "left"),
    [
        ({"limit": 5, "limit_remaining": 4.5}, 4.5),
        ({"limit": 5, "limit_remaining": 1000}, 5),  # more left than the limit: the limit (break44 F1)
        ({"limit": 5, "limit_remaining": None}, 5),  # a limit, yet "no limit": the limit
        ({"limit": 5}, 5),
        ({"limit": None, "limit_remaining": None}, None),  # no limit on the key
        # A limit that is no number is a bad reply (out-156 F1: test_key_window), not "no limit".
        # Nor more than the limit less its period's usage (break47 F1: a key at its limit said
        # 0.01 left): all-time when it never resets, the period's when it does.
        ({"limit": 5, "limit_remaining": 4, "usage": 5, "limit_reset": None}, 0),
        ({"limit": 5, "limit_remaining": None, "usage": 4.5}, 0.5),
        ({"limit": 5, "limit_remaining": 4, "usage": 9, "usage_daily": 2, "limit_reset": "daily"}, 3),
        ({"limit": 5, "limit_remaining": 4, "usage": 9, "usage_weekly": 4.5, "limit_reset": "weekly"}, 0.5),
        ({"limit": 5, "limit_remaining": 4, "usage": 9, "usage_monthly": 3, "limit_reset": "monthly"}, 2),
        ({"limit": 5, "limit_remaining": 4, "usage": 9, "usage_daily": 2, "limit_reset": "Daily"}, 3),  # any case
        (
            {"limit": 5, "limit_remaining": 4, "usage": 9, "usage_daily": 0, "limit_reset": "hourly"},
            -4,
        ),  # unknown: all time
        (
            {"limit": 5, "limit_remaining": 4, "usage": 2, "byok_usage": 2.5, "include_byok_in_limit": True},
            0.5,
        ),
        ({"limit": 5, "limit_remaining": 4, "usage": 2, "byok_usage": 2.5, "include_byok_in_limit": False}, 3),
        ({"limit": 5, "limit_remaining": 1, "usage": 2}, 1),  # a reading below both stands
    ],
)
async def test_what_is_left_on_a_key_is_never_more_than_its_limit(data: dict[str, Any], left: float | None) -> None:
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/key").mock(return_value=httpx.Response(200, json={"data": data}))
        async with client() as c:
            key = await c.key_info()
    assert key is not None and key["limit_remaining"] == left


async def test_endpoint_without_account_api() -> None:
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/models").mock(return_value=httpx.Response(404))
        mock.get(f"{BASE}/key").mock(return_value=httpx.Response(404))
        async with client() as c:
            assert await c.models() is None
            assert await c.key_info() is None


async def test_an_account_call_that_fails_names_its_path() -> None:
    # break38: "the endpoint failed before the run started: timeout: no complete answer within
    # 2 s (2 times)" named no call: /models, /key, /credits?
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/key").mock(side_effect=httpx.ReadTimeout("slow"))
        mock.get(f"{BASE}/models").mock(return_value=httpx.Response(503, json={"error": {"code": 503, "message": "x"}}))
        async with client() as c:
            with pytest.raises(RequestFailed) as timed_out:
                await c.key_info()
            with pytest.raises(RequestFailed) as failed:
                await c.models()
    assert timed_out.value.kind == "timeout" and timed_out.value.message.startswith("/key: ")
    assert str(failed.value).startswith("/models: ")


async def test_management_api_request_shapes() -> None:
    with respx.mock(using="httpx") as mock:
        create = mock.post(f"{BASE}/keys").mock(
            return_value=httpx.Response(
                201, json={"key": "sk-or-v1-new", "data": {"hash": "h" * 64, "label": "sk-or-v1-new...", "limit": 1.5}}
            )
        )
        get = mock.get(f"{BASE}/keys/{'h' * 64}").mock(return_value=httpx.Response(200, json={"data": {"usage": 0.2}}))
        delete = mock.delete(f"{BASE}/keys/{'h' * 64}").mock(
            return_value=httpx.Response(200, json={"data": {"success": True}})
        )
        patch = mock.patch(f"{BASE}/keys/{'h' * 64}").mock(return_value=httpx.Response(200, json={"data": {}}))
        async with client() as c:
            management = ManagementApi(c, "mgmt-key")
            created = await management.create_key("batchrun job 1", 1.5, "2027-01-01T00:00:00Z")
            info = await management.key_by_hash("h" * 64)
            await management.disable_key("h" * 64)
            await management.delete_key("h" * 64)
    sent = create.calls.last.request
    assert sent.headers["Authorization"] == "Bearer mgmt-key"
    # include_byok_in_limit: the per-run limit covers BYOK spend too (openapi POST /keys).
    assert json.loads(sent.content) == {
        "name": "batchrun job 1",
        "limit": 1.5,
        "expires_at": "2027-01-01T00:00:00Z",
        "include_byok_in_limit": True,
    }
    assert created.key == "sk-or-v1-new" and info == {"usage": 0.2}
    assert json.loads(patch.calls.last.request.content) == {"disabled": True}
    assert delete.called and get.calls.last.request.headers["Authorization"] == "Bearer mgmt-key"


async def test_an_error_body_becomes_an_error_row(tmp_path: Any) -> None:
    from batchrun import load_job, matrix_requests
    from batchrun._results import ResultsWriter, final_records
    from batchrun._settings import RunSettings
    from batchrun._worker_pool import PoolConfig, Runner

    from .conftest import SMALL_JOB, write_job

    job = load_job(write_job(tmp_path, SMALL_JOB))
    out = tmp_path / "rows.jsonl"
    with respx.mock(using="httpx") as mock:
        mock.post(CHAT).mock(return_value=err(422, "max_tokens must be positive"))
        async with client() as c:
            writer = ResultsWriter(out)
            runner = Runner(
                c,
                writer,
                PoolConfig(RunSettings(concurrency=2)),
                FakeClock(),
                job_name="small",
                job_fingerprint=job.fingerprint,
            )
            outcome = await runner.run(matrix_requests(job))
            writer.close()
    rows = list(final_records(out))
    assert outcome.stop is None and len(rows) == 20
    assert {(r["status"], r["reason"], r["retryable"], r["attempts"]) for r in rows} == {
        ("error", "unprocessable", False, 1)
    }
    assert rows[0]["error"] == {"kind": "unprocessable", "http_status": 422, "message": "max_tokens must be positive"}
    assert rows[0]["request"]["model"] == rows[0]["model"]


def test_an_endless_availability_retry_after_is_past_any_cap() -> None:
    # out-144 F2: `availability.retry_after` of 1e400 (read as inf) was no hint: retried at backoff.
    error = {
        "code": 503,
        "message": "busy",
        "availability": {"code": "capacity_exhausted", "retryable": True, "retry_after": math.inf},
    }
    failure = classify(503, error, {}, 0)
    assert failure.retry_after == FOREVER_S
