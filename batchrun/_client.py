"""The OpenRouter client: one httpx.AsyncClient over the aiohttp transport.

It builds requests, parses responses (including errors sent with HTTP 200) and turns
every failure into one exception of batchrun's tree, at this boundary. It does not
retry: the retry policy wraps `chat` from outside.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from ._classify import classify
from ._clock import Clock, SystemClock
from ._exceptions import ConfigError, RequestFailed, Transient
from ._routing import METADATA_HEADER, answering_provider

# A reply is untrusted: bound what one answer's tool calls can put in a row.
MAX_TOOL_CALLS = 32
MAX_TOOL_ARGUMENTS = 65536


@dataclass(frozen=True, slots=True)
class ChatResult:
    generation_id: str | None
    model: str | None
    provider: str | None
    content: str
    finish_reason: str | None
    native_finish_reason: str | None
    usage: dict[str, Any]
    tool_calls: tuple[dict[str, Any], ...] = ()  # [{id, name, arguments (the JSON string as sent)}]

    @property
    def cost(self) -> float | None:
        cost = self.usage.get("cost")
        return float(cost) if isinstance(cost, (int, float)) else None


@dataclass(frozen=True)
class ModelInfo:
    id: str
    prompt_price: float | None  # USD per token; None when the endpoint does not know (router models)
    completion_price: float | None
    request_price: float
    context_length: int | None
    max_completion_tokens: int | None

    @property
    def price_known(self) -> bool:
        return self.prompt_price is not None and self.completion_price is not None


def _price(value: Any) -> float | None:
    try:
        price = float(value)
    except (TypeError, ValueError):
        return None
    return None if price < 0 else price  # "-1" marks a router model whose price is not known


def default_transport(max_connections: int) -> httpx.AsyncBaseTransport:
    # httpx's own pool spends CPU per request that grows with concurrency (encode/httpx#3215);
    # the aiohttp transport keeps httpx's API at about five times the throughput here.
    from httpx_aiohttp import AiohttpTransport

    return AiohttpTransport(
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    )


class OpenRouterClient:
    """Chat completions and the account endpoints of one OpenAI-compatible base URL."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        app_url: str | None = None,
        app_title: str | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 10.0,
        max_connections: int = 16,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._clock = clock or SystemClock()
        headers = {"Content-Type": "application/json"}
        if app_url:
            headers["HTTP-Referer"] = app_url
        if app_title:
            headers["X-Title"] = app_title
            headers["X-OpenRouter-Title"] = app_title
        # Opt in to `openrouter_metadata` on replies: the documented record of which provider
        # answered (guides/features/router-metadata.mdx).
        headers[METADATA_HEADER] = "enabled"
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s, pool=timeout_s),
            transport=transport or default_transport(max_connections),
            # Proxies from the environment would replace the transport for matching URLs.
            trust_env=False,
        )
        self._prepare_chat()

    def __repr__(self) -> str:  # never show the key
        return f"OpenRouterClient({self.base_url!r})"

    def use_key(self, api_key: str) -> None:
        """Switch keys (the isolated per-run key) for all later requests."""
        self._api_key = api_key
        self._prepare_chat()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> OpenRouterClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _scrub(self, text: str) -> str:
        """A misbehaving server may echo the request; the key must not reach a row or a log."""
        if self._api_key and self._api_key in text:
            text = text.replace(self._api_key, "[key]")
        return text

    def _auth(self, key: str | None) -> dict[str, str]:
        if key is None:
            raise ConfigError("no API key is set")
        return {"Authorization": f"Bearer {key}"}

    def _prepare_chat(self) -> None:
        """Build the chat URL, headers and timeouts once per key, not once per request:
        httpx's request building (URL parsing, header merging) was an eighth of the CPU
        of a loopback run."""
        self._chat_url = httpx.URL(self.base_url + "/chat/completions")
        self._chat_headers = (
            httpx.Headers({**self._http.headers, **self._auth(self._api_key)}) if self._api_key is not None else None
        )
        self._chat_extensions = {"timeout": self._http.timeout.as_dict()}

    async def _exchange(self, request: httpx.Request) -> httpx.Response:
        """One HTTP exchange, body fully read, transport errors translated into Transient."""
        try:
            # httpx's timeouts are per read; this bounds the whole exchange, so a server
            # that drips bytes forever cannot hang a row (openrouter python-sdk #72).
            async with asyncio.timeout(self._timeout_s):
                response = await self._http.send(request)
                await response.aread()
        except TimeoutError:
            raise Transient("timeout", f"no complete answer within {self._timeout_s:g} s") from None
        except httpx.TimeoutException as exc:
            raise Transient("timeout", self._scrub(f"{type(exc).__name__}: {exc}") or "timed out") from None
        except httpx.TransportError as exc:
            raise Transient("network", self._scrub(f"{type(exc).__name__}: {exc}")) from None
        return response

    async def _send(self, method: str, path: str, key: str | None, body: Any = None) -> httpx.Response:
        content = None if body is None else orjson.dumps(body)
        request = self._http.build_request(method, self.base_url + path, content=content, headers=self._auth(key))
        return await self._exchange(request)

    def _failure(self, response: httpx.Response, error: Any) -> RequestFailed:
        failure = classify(
            response.status_code, error if isinstance(error, dict) else None, response.headers, self._clock.time()
        )
        failure.message = self._scrub(failure.message)
        failure.args = (failure.message,)
        return failure

    async def chat(self, body: dict[str, Any] | bytes, row_id: str | None = None) -> ChatResult:
        """POST /chat/completions (a body, or its JSON already encoded); returns the answer
        or raises a classified RequestFailed."""
        if self._chat_headers is None:
            raise ConfigError("no API key is set")
        request = httpx.Request(
            "POST",
            self._chat_url,
            headers=self._chat_headers,
            content=body if isinstance(body, bytes) else orjson.dumps(body),
            extensions=self._chat_extensions,
        )
        if row_id:
            # The row id travels as a header so logs (and the simulator) can tie re-sends together.
            request.headers["X-Batchrun-Row"] = row_id
        return self.read_chat_reply(await self._exchange(request))

    def read_chat_reply(self, response: httpx.Response) -> ChatResult:
        """A chat completion reply (sync, or one item of a batch) as a ChatResult, or a
        classified RequestFailed, including errors sent with HTTP 200."""
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            if response.status_code == 200:
                raise Transient("bad_response", "the body was truncated or not JSON", 200) from None
            raise self._failure(response, {"message": response.text[:200] or f"HTTP {response.status_code}"}) from None
        if response.status_code != 200 or not isinstance(data, dict):
            raise self._failure(response, data.get("error") if isinstance(data, dict) else None)
        if data.get("error"):
            raise self._failure(response, data["error"])
        choices = data.get("choices")
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            raise Transient("bad_response", "the answer had no choices", 200)
        choice = choices[0]
        if choice.get("finish_reason") == "error" or choice.get("error"):
            raise self._failure(response, choice.get("error") or {"message": "finish_reason error"})
        message = choice.get("message") or {}
        return ChatResult(
            generation_id=data.get("id"),
            model=data.get("model"),
            provider=answering_provider(data),
            content=self._scrub(message.get("content") or ""),
            finish_reason=choice.get("finish_reason"),
            native_finish_reason=choice.get("native_finish_reason"),
            usage=data.get("usage") or {},
            tool_calls=self._tool_calls(message.get("tool_calls")),
        )

    def _tool_calls(self, raw: Any) -> tuple[dict[str, Any], ...]:
        """`message.tool_calls` as {id, name, arguments}; a malformed entry is kept as a call
        of no name (a check then fails on it) rather than trusted or dropped silently."""
        if not isinstance(raw, list):
            return ()
        calls = []
        for item in raw[:MAX_TOOL_CALLS]:
            function = item.get("function") if isinstance(item, dict) else None
            function = function if isinstance(function, dict) else {}
            name, arguments = function.get("name"), function.get("arguments")
            if isinstance(arguments, (dict, list)):  # some providers send an object, not a string
                arguments = orjson.dumps(arguments).decode()
            calls.append(
                {
                    "id": self._scrub(str(item.get("id")))[:200] if isinstance(item, dict) and item.get("id") else None,
                    "name": self._scrub(name)[:200] if isinstance(name, str) else None,
                    "arguments": self._scrub(arguments)[:MAX_TOOL_ARGUMENTS] if isinstance(arguments, str) else None,
                }
            )
        return tuple(calls)

    async def _account_get(self, path: str, key: str | None) -> Any | None:
        """GET an account endpoint; None where the endpoint does not have it (404/405/501)."""
        response = await self._send("GET", path, key)
        if response.status_code in (404, 405, 501):
            return None
        if response.status_code != 200:
            raise self._failure(response, _error_of(response))
        try:
            return response.json()
        except ValueError:
            return None

    async def key_info(self) -> dict[str, Any] | None:
        """GET /key: limit, limit_remaining, usage...; None where the endpoint has no /key."""
        data = await self._account_get("/key", self._api_key)
        return data.get("data") if isinstance(data, dict) and isinstance(data.get("data"), dict) else None

    async def models(self) -> dict[str, ModelInfo] | None:
        """GET /models as {id: ModelInfo}; None where the endpoint does not list models with prices."""
        data = await self._account_get("/models", self._api_key)
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            return None
        out = {}
        for item in data["data"]:
            info = _model_info(item)
            if info is not None:
                out[info.id] = info
        return out

    async def model(self, model_id: str) -> tuple[str, ModelInfo | None]:
        """GET /model/{author}/{slug}, the single-model lookup (openapi.yaml `getModel`: it
        "supports variant suffixes" and "resolves known slug aliases"). Returns ("found",
        info), ("missing", None) when the API answers 404, or ("unknown", None) when the
        endpoint cannot say (not served here, or an answer without a model)."""
        author, _, slug = model_id.partition("/")
        if not author or not slug:
            return "missing", None
        path = f"/model/{quote(author, safe='~')}/{quote(slug, safe='~:.-_')}"
        response = await self._send("GET", path, self._api_key)
        if response.status_code == 404:
            return "missing", None
        if response.status_code in (405, 501):
            return "unknown", None
        if response.status_code != 200:
            raise self._failure(response, _error_of(response))
        try:
            data = response.json()
        except ValueError:
            return "unknown", None
        info = _model_info(data.get("data")) if isinstance(data, dict) else None
        return ("found", info) if info is not None else ("unknown", None)

    async def create_key(self, management_key: str, name: str, limit: float, expires_at: str) -> dict[str, Any]:
        """POST /keys with a management key: returns {"key": ..., "data": {...hash, label...}}."""
        response = await self._send(
            "POST", "/keys", management_key, {"name": name, "limit": limit, "expires_at": expires_at}
        )
        if response.status_code in (404, 405, 501):
            raise ConfigError(f"{self.base_url} has no /keys management API: --isolated-key cannot be used")
        if response.status_code not in (200, 201):
            raise self._failure(response, _error_of(response))
        data: dict[str, Any] = response.json()
        return data

    async def key_by_hash(self, management_key: str, key_hash: str) -> dict[str, Any] | None:
        data = await self._account_get(f"/keys/{key_hash}", management_key)
        return data.get("data") if isinstance(data, dict) else None

    async def delete_key(self, management_key: str, key_hash: str) -> None:
        response = await self._send("DELETE", f"/keys/{key_hash}", management_key)
        if response.status_code not in (200, 204):
            raise self._failure(response, _error_of(response))

    async def disable_key(self, management_key: str, key_hash: str) -> None:
        response = await self._send("PATCH", f"/keys/{key_hash}", management_key, {"disabled": True})
        if response.status_code != 200:
            raise self._failure(response, _error_of(response))


def _model_info(item: Any) -> ModelInfo | None:
    """One model of /models or /model/{author}/{slug}; None for an entry without an id."""
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        return None
    pricing: dict[str, Any] = item["pricing"] if isinstance(item.get("pricing"), dict) else {}
    top: dict[str, Any] = item["top_provider"] if isinstance(item.get("top_provider"), dict) else {}
    context = item.get("context_length")
    max_completion = top.get("max_completion_tokens")
    return ModelInfo(
        id=item["id"],
        prompt_price=_price(pricing.get("prompt")),
        completion_price=_price(pricing.get("completion")),
        request_price=_price(pricing.get("request")) or 0.0,
        context_length=context if isinstance(context, int) else None,
        max_completion_tokens=max_completion if isinstance(max_completion, int) else None,
    )


def _error_of(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return {"message": response.text[:200]}
    return data.get("error") if isinstance(data, dict) else None
