"""The OpenRouter client: httpx.AsyncClients over the aiohttp transport (chat, and the account endpoints).

It builds requests, reads each reply under the size cap (`_body`), and parses it into a
typed result or one exception of batchrun's tree (`_reply`), at this boundary: no
transport exception and no reply shape gets past it, and every string it hands on is
scrubbed of every key it knows (the API key, a per-run key, the management key). It does
not retry: the retry policy wraps `chat` from outside.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import httpx
import orjson

from ._account_reply import (
    ModelInfo,
    data_of,
    merge_models,
    model_info,
    next_models_page,
    parse_key_data,
    parse_models,
)
from ._api_key import sendable_key
from ._body import ACCEPT_ENCODING, read_capped
from ._clock import Clock, SystemClock
from ._event_loop import off_the_loop
from ._exceptions import ConfigError, RequestFailed, ResponseTooLarge, Transient, Undecodable
from ._generation import MESSAGE_LIMIT, Flight, abandoned, generation_header, valid_generation_id
from ._json_text import is_json
from ._pricing import EndpointPrice, GenerationCost, endpoints_slug, parse_endpoints, parse_generation
from ._reply import ChatResult, Reply, error_failure, failure, parse_chat
from ._routing import METADATA_HEADER
from ._scrub import Scrubber
from ._settings import DEFAULTS
from ._transport import default_transport, dropped_after_connecting, not_a_timeout, send_unread

LOOKUP_CONNECTIONS = 8  # /generation lookups at once, each on a connection of the account pool
# A reply this large is read (parsed, scrubbed) off the event loop: replies of a hostile server's
# short escapes (4 MB: ~0.4 s) were read one after another with the loop held, a run overrunning
# its deadline and grace by their sum (out-179 F2). Off it, a stop cancels those not yet read.
OFF_LOOP_BYTES = 256 * 1024
MAX_MODEL_PAGES = 100  # 100 pages of up to 1,000 models: far more than OpenRouter lists

__all__ = ["ChatResult", "DEFAULT_MAX_RESPONSE_BYTES", "Flight", "ModelInfo", "OpenRouterClient", "default_transport"]

DEFAULT_MAX_RESPONSE_BYTES = DEFAULTS.max_response_bytes
ACCOUNT_MAX_BYTES = 32 * 1024 * 1024  # /models, /key, /credits: bounded, whatever the cap on answers


class OpenRouterClient:
    """Chat completions and the account endpoints of one OpenAI-compatible base URL."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        app_url: str | None = None,
        app_title: str | None = None,
        timeout_s: float = DEFAULTS.timeout_s,
        connect_timeout_s: float = DEFAULTS.connect_timeout_s,
        max_connections: int = DEFAULTS.concurrency,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._max_response_bytes = max_response_bytes
        self._clock = clock or SystemClock()
        self.scrub = Scrubber(sendable_key(api_key))
        # Only encodings the capped reader can decode piece by piece (no br, no zstd).
        headers = {"Content-Type": "application/json", "Accept-Encoding": ACCEPT_ENCODING}
        if app_url:
            headers["HTTP-Referer"] = app_url
        if app_title:
            headers["X-Title"] = app_title
            headers["X-OpenRouter-Title"] = app_title
        # Opt in to `openrouter_metadata` on replies: the documented record of which provider
        # answered (guides/features/router-metadata.mdx).
        headers[METADATA_HEADER] = "enabled"
        timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s, pool=timeout_s)
        # Proxies from the environment would replace the transport for matching URLs: trust_env off.
        self._http = httpx.AsyncClient(
            headers=headers, timeout=timeout, transport=transport or default_transport(max_connections), trust_env=False
        )
        # The account endpoints (/key, /generation, /models, /credits, keys) have a pool of their
        # own: lookups of a /generation that never answered held the chat requests' connections,
        # and an answer that waited for one ran out its time once sent, was held as maybe billed
        # and sent again (break36 F4: 3 of 100 rows billed twice). Lookups take at most
        # LOOKUP_CONNECTIONS of it, so /key always finds one.
        self._account_http = self._http
        if transport is None:
            account = default_transport(LOOKUP_CONNECTIONS + 4)
            self._account_http = httpx.AsyncClient(headers=headers, timeout=timeout, transport=account, trust_env=False)
        self._lookups = asyncio.Semaphore(LOOKUP_CONNECTIONS)
        self._prepare_chat()

    def __repr__(self) -> str:  # never show the key
        return f"OpenRouterClient({self.base_url!r})"

    def protect(self, secret: str) -> None:
        """Scrub this secret too (the management key) from everything a server sends."""
        self.scrub.add(secret)

    def use_key(self, api_key: str) -> None:
        """Switch keys (the isolated per-run key) for all later requests."""
        self._api_key = api_key
        self.scrub.add(api_key)
        self._prepare_chat()

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._account_http is not self._http:
            await self._account_http.aclose()

    async def __aenter__(self) -> OpenRouterClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _auth(self, key: str | None) -> dict[str, str]:
        if key is None:
            raise ConfigError("no API key is set")
        return {"Authorization": f"Bearer {sendable_key(key, 'a key')}"}

    def _prepare_chat(self) -> None:
        """Build the chat URL, headers and timeouts once per key, not once per request:
        httpx's request building (URL parsing, header merging) was an eighth of the CPU
        of a loopback run."""
        self._chat_url = httpx.URL(self.base_url + "/chat/completions")
        self._chat_headers: list[tuple[bytes, bytes]] | None = None
        self._chat_encoding = "ascii"
        if self._api_key is not None:
            prepared = httpx.Headers({**self._http.headers, **self._auth(self._api_key)})
            self._chat_headers = prepared.raw
            # What httpx would find by decoding every header (twice) on each request's first read.
            self._chat_encoding = prepared.encoding
        self._chat_host = self._chat_url.netloc
        self._chat_extensions = {"timeout": self._http.timeout.as_dict()}

    async def _exchange(
        self,
        request: httpx.Request,
        billable: bool = False,
        flight: Flight | None = None,
        max_bytes: int = 0,
        http: httpx.AsyncClient | None = None,
    ) -> Reply:
        """One HTTP exchange, its body read under the cap; every transport failure (an
        invalid status line, a TLS or SSH banner included) becomes a Transient.

        `billable`: the request may be charged once the server has it, so a failure after
        sending marks the attempt `maybe_billed` (with the generation id, if headers came).
        `max_bytes`: another cap than max_response_bytes (a batch's results come in one reply).
        `http`: the client whose pool sends it (the chat requests' by default).
        """
        headers: list[Mapping[str, str]] = []  # the response's headers, once they are in
        status = 0
        try:
            # httpx's timeouts are per read; this bounds the whole exchange, so a server
            # that drips bytes forever cannot hang a row (openrouter python-sdk #72).
            async with asyncio.timeout(self._timeout_s):
                response = await send_unread(http or self._http, request)
                headers.append(response.headers)
                status = response.status_code
                if flight is not None:
                    flight.generation_id = generation_header(response.headers, self.scrub)
                try:
                    body = await read_capped(response, max_bytes or self._max_response_bytes)
                except ResponseTooLarge as too_large:
                    if not max_bytes:
                        raise
                    # Not the setting's cap: an account read's or a batch's own (verify29 n2).
                    raise ResponseTooLarge(
                        max_bytes, status, too_large.declared, "a cap of this endpoint's own"
                    ) from None
                finally:
                    # Closing a response not read to its end drops its connection: the rest
                    # of an oversized body is never received.
                    await response.aclose()
        except TimeoutError:
            failure = Transient("timeout", f"no complete answer within {self._timeout_s:g} s")
            raise abandoned(failure, headers, billable, self.scrub) from None
        except (ResponseTooLarge, Undecodable) as unread:
            # A 200 answer too large to read, or whose body does not decode (break45 F4: $0), was
            # generated all the same: it may be billed (an error reply is not: zero-completion-insurance.mdx).
            raise abandoned(unread, headers, billable and status == 200, self.scrub) from None
        except httpx.ConnectError as exc:
            # Never reached the server: nothing can have been billed.
            raise Transient("connect", self._describe_connect(exc)) from None
        except httpx.TimeoutException as exc:
            if dropped_after_connecting(exc):
                # The server (or a proxy) closed the connection, or it was reset, once it was
                # made: the request may have reached it, so it may be billed. Read as "never
                # reached" (httpx-aiohttp maps these to ConnectTimeout), it was recorded as $0
                # and its room handed to the retry (break32 F4).
                failure = Transient("network", self._describe(exc))
                raise abandoned(failure, headers, billable, self.scrub) from None
            if not_a_timeout(exc):
                raise Transient("connect", self._describe_connect(exc)) from None
            failure = Transient("timeout", self._describe(exc) or "timed out")
            if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):
                raise failure from None  # never reached the server: nothing can have been billed
            raise abandoned(failure, headers, billable, self.scrub) from None
        except (httpx.HTTPError, aiohttp.ClientError, OSError, ValueError) as exc:
            # aiohttp's ClientResponseError (a bad status line, bytes that are not HTTP)
            # is not mapped by the transport: it arrives here as itself.
            failure = Transient("network", self._describe(exc))
            raise abandoned(failure, headers, billable, self.scrub) from None
        return Reply(response.status_code, response.headers, body)

    async def send_unread(self, request: httpx.Request) -> httpx.Response:
        """The response, its body not read yet (_transport.send_unread)."""
        return await send_unread(self._http, request)

    def _describe_connect(self, exc: BaseException) -> str:
        return self.scrub.text(f"connection failed: {exc}")[:MESSAGE_LIMIT]

    def _describe(self, exc: BaseException) -> str:
        return self.scrub.text(f"{type(exc).__name__}: {exc}")[:MESSAGE_LIMIT]

    async def _send(self, method: str, path: str, key: str | None, body: Any = None, max_bytes: int = 0) -> Reply:
        content = None if body is None else orjson.dumps(body)
        http = self._account_http  # its own pool (__init__)
        request = http.build_request(method, self.base_url + path, content=content, headers=self._auth(key))
        try:
            return await self._exchange(request, max_bytes=max_bytes, http=http)
        except RequestFailed as failure:
            raise _named(failure, path) from None

    @property
    def max_response_bytes(self) -> int:
        """The cap on one reply's body (run.max_response_bytes), a stream's too."""
        return self._max_response_bytes

    @property
    def http(self) -> httpx.AsyncClient:
        return self._http

    def scrub_text(self, text: str) -> str:
        return self.scrub.text(text)

    def chat_request(self, body: dict[str, Any] | bytes, row_id: str | None = None) -> httpx.Request:
        """The POST /chat/completions request, built from the headers prepared once per key."""
        if self._chat_headers is None:
            raise ConfigError("no API key is set")
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        # Raw header pairs with Host and Content-Length, the body a stream already made: httpx has
        # nothing to add or encode, and builds its Headers once, not three times (~4% of a request's CPU).
        headers = [(b"Host", self._chat_host), *self._chat_headers, (b"Content-Length", b"%d" % len(content))]
        if row_id:  # the row id as a header: logs (and the simulator) can tie re-sends together
            headers.append((b"X-Batchrun-Row", row_id.encode()))
        stream, extensions = httpx.ByteStream(content), self._chat_extensions
        request = httpx.Request("POST", self._chat_url, headers=headers, stream=stream, extensions=extensions)
        request.headers.encoding = self._chat_encoding if not row_id or row_id.isascii() else "utf-8"
        request.read()  # `content` as httpx's own building leaves it: the transport sends it whole
        return request

    async def chat(
        self, body: dict[str, Any] | bytes, row_id: str | None = None, flight: Flight | None = None
    ) -> ChatResult:
        """POST /chat/completions (a body, or its JSON already encoded); returns the answer
        or raises a classified RequestFailed. `flight` learns the generation id from the headers."""
        request = self.chat_request(body, row_id)
        reply = await self._exchange(request, billable=True, flight=flight)
        if len(reply.body) >= OFF_LOOP_BYTES:
            return await off_the_loop(self.read_chat_reply, reply, True, one_at_a_time=True)
        return self.read_chat_reply(reply, billable=True)

    def read_chat_reply(self, reply: Reply, billable: bool = False) -> ChatResult:
        """A chat completion reply (sync, or one item of a batch) as a ChatResult, or a
        classified RequestFailed, including errors sent with HTTP 200. `billable`: a cut
        body marks the failure as possibly billed (a sync attempt)."""
        try:
            result = parse_chat(reply, self.scrub, self._clock.time())
        except Transient as failed:
            if reply.status == 200 and failed.kind == "bad_response" and not is_json(reply.body):
                # A cut answer was generated, so it may well be billed.
                raise abandoned(failed, [reply.headers], billable, self.scrub) from None
            raise
        # Only a well-formed id goes into a /generation URL. The X-Generation-Id header is the id "for
        # all endpoints" (streaming.mdx); a body's need not be (break41 F2: `chatcmpl-123`, every lookup 404).
        header = generation_header(reply.headers, self.scrub)
        body_id = valid_generation_id(result.generation_id, self.scrub)
        return result if header is None and body_id else dataclasses.replace(result, generation_id=header)

    def _failure(self, reply: Reply) -> RequestFailed:
        return error_failure(reply, self.scrub, self._clock.time())

    def error_object_failure(self, error: Any, status: int = 200) -> RequestFailed:
        """An OpenRouter error object met outside a reply of its own (a batch item's error)."""
        return failure(Reply(status, {}, b""), error, self.scrub, self._clock.time())

    async def _account_get(self, path: str, key: str | None) -> Reply | None:
        """GET an account endpoint; None where the endpoint does not have it (404/405/501).

        Under a cap of its own, not run.max_response_bytes (a cap on answers): OpenRouter's
        model list is megabytes, and a small cap set for answers failed every run before it
        started, "the endpoint failed" (break28 m9)."""
        reply = await self._send("GET", path, key, max_bytes=max(self._max_response_bytes, ACCOUNT_MAX_BYTES))
        if reply.status in (404, 405, 501):
            return None
        if reply.status != 200:
            raise _named(self._failure(reply), path)
        return reply

    async def key_info(self) -> dict[str, Any] | None:
        """GET /key: limit, limit_remaining, usage...; None where the endpoint has no /key."""
        reply = await self._account_get("/key", self._api_key)
        return None if reply is None else parse_key_data(data_of(reply, "/key"), self.scrub, "/key")

    async def models(self) -> dict[str, ModelInfo] | None:
        """GET /models as {id: ModelInfo}; None where the endpoint does not list models.
        Pages (`links.next`, `next_models_page`) are followed, at most MAX_MODEL_PAGES of them,
        each once: a server whose next page never ends cannot hold the start-up."""
        reply = await self._account_get("/models", self._api_key)
        if reply is None:
            return None
        found = parse_models(reply, self.scrub)
        seen: set[str] = set()
        page = next_models_page(reply)
        while page is not None and page not in seen and len(seen) < MAX_MODEL_PAGES:
            seen.add(page)
            reply = await self._account_get(page, self._api_key)
            if reply is None:
                break
            found = merge_models(found, parse_models(reply, self.scrub).values())
            page = next_models_page(reply)
        return found

    async def _account_json(self, path: str, key: str | None) -> Any:
        """The `data` of an account endpoint's JSON reply; None where it is absent or unreadable."""
        reply = await self._account_get(path, key)
        if reply is None:
            return None
        try:
            body = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            return None
        return body.get("data") if isinstance(body, dict) else None

    async def model(self, model_id: str) -> tuple[str, ModelInfo | None]:
        """GET /model/{author}/{slug}, the single-model lookup (openapi.yaml `getModel`: it
        "supports variant suffixes" and "resolves known slug aliases"). Returns ("found",
        info), ("missing", None) when the API answers 404, or ("unknown", None) when the
        endpoint cannot say (not served here, or an answer without a model)."""
        author, _, slug = model_id.partition("/")
        if not author or not slug:
            return "missing", None
        path = f"/model/{quote(author, safe='~')}/{quote(slug, safe='~:.-_')}"
        reply = await self._send("GET", path, self._api_key)
        if reply.status == 404:
            return "missing", None
        if reply.status in (405, 501):
            return "unknown", None
        if reply.status != 200:
            raise self._failure(reply)
        try:
            body = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            return "unknown", None
        info = model_info(body.get("data"), self.scrub) if isinstance(body, dict) else None
        return ("found", info) if info is not None else ("unknown", None)

    async def generation(self, generation_id: str) -> GenerationCost | None:
        """GET /generation?id=: the exact charge of one generation; None while it is not known."""
        if valid_generation_id(generation_id, self.scrub) is None:
            return None  # not an id: never put it in a URL
        async with self._lookups:
            data = await self._account_json(f"/generation?id={generation_id}", self._api_key)
        return parse_generation(data, generation_id)

    async def endpoints(self, model: str) -> list[EndpointPrice] | None:
        """GET /models/{author}/{slug}/endpoints: each provider's price; None where not served."""
        reply = await self._account_get(f"/models/{endpoints_slug(model)}/endpoints", self._api_key)
        if reply is None:
            return None  # no listing here (404): priced from /models
        inner = data_of(reply, "/endpoints")  # unreadable: a failure like a 500 (break14b C6)
        found = parse_endpoints(inner.get("endpoints") if isinstance(inner, dict) else None)
        if found is None:
            raise Transient("bad_response", "the /endpoints reply has no readable list of endpoints", reply.status)
        # Their names are printed by `plan` and stored in price bases: scrubbed like any
        # server string (break-14 #6: a provider tag echoing the key was printed).
        return [
            dataclasses.replace(
                e,
                provider=self.scrub.text(e.provider),
                tag=self.scrub.text(e.tag),
                quantization=None if e.quantization is None else self.scrub.text(e.quantization)[:100],
            )
            for e in found
        ]


def _named(failure: RequestFailed, path: str) -> RequestFailed:
    """An account call's failure, saying which call it was: "timeout" alone named none (break38)."""
    failure.message = f"{path.split('?')[0]}: {failure.message}"
    failure.args = (failure.message,)
    return failure
