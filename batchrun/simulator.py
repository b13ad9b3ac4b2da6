"""OpenRouter in a box: a real HTTP server on loopback, for --simulate, tests and benchmarks.

Serves POST /api/v1/chat/completions, GET /api/v1/models, GET /api/v1/key and the
management API /api/v1/keys, with OpenRouter's shapes. Answers are deterministic
functions of the request. Faults (status codes, 200-with-error bodies, resets, truncated
bodies, hangs), rate limits, daily caps and key limits are drawn from a seeded generator,
so a scenario replays the same sequence of faults. GET /__sim/stats reports counters.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import math
import random
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

import orjson
from aiohttp import web

from ._sim_grader import VERDICT_SCHEMA_NAME, grade_as_judge, tool_calls_for

PER_M = 1e-6
# (prompt, completion, request) USD per token / per request, like OpenRouter's pricing strings.
DEFAULT_PRICES: dict[str, tuple[float, float, float]] = {
    "openai/gpt-4o-mini": (0.15 * PER_M, 0.60 * PER_M, 0.0),
    "anthropic/claude-3.5-haiku": (0.80 * PER_M, 4.00 * PER_M, 0.0),
    "google/gemini-2.0-flash-001": (0.10 * PER_M, 0.40 * PER_M, 0.0),
    "meta-llama/llama-3.1-8b-instruct": (0.02 * PER_M, 0.05 * PER_M, 0.0),
    "mistralai/mistral-small-3.1-24b-instruct": (0.05 * PER_M, 0.15 * PER_M, 0.0),
    "meta-llama/llama-3.3-70b-instruct:free": (0.0, 0.0, 0.0),
    "openrouter/auto": (-1.0, -1.0, -1.0),
}
# How often each model answers a known question right; others default to 0.85.
DEFAULT_ACCURACY = {
    "meta-llama/llama-3.1-8b-instruct": 0.6,
    "openai/gpt-4o-mini": 0.9,
    "anthropic/claude-3.5-haiku": 0.95,
}
_CAPITALS = {
    "france": "Paris",
    "japan": "Tokyo",
    "italy": "Rome",
    "germany": "Berlin",
    "spain": "Madrid",
    "canada": "Ottawa",
    "australia": "Canberra",
    "brazil": "Brasília",
    "egypt": "Cairo",
    "kenya": "Nairobi",
    "norway": "Oslo",
    "peru": "Lima",
    "india": "New Delhi",
    "mexico": "Mexico City",
}
_ARITHMETIC = re.compile(r"(-?\d+)\s*([+*x×-])\s*(-?\d+)")
_FAULTS = ("reset", "cut", "truncate", "hang", "error200", "choice_error")


@dataclass
class SimConfig:
    """Everything a scenario can set. `batchrun simulate --sim KEY=VALUE` sets the same fields."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    seed: int = 0
    faults: dict[str, float] = field(default_factory=dict)  # "500": 0.1, "reset": 0.05, "hang": 0.01...
    hang_s: float = 3600.0
    jitter: str = "uniform"  # or "exponential": a long tail of slow answers
    rate_limit_rps: float | None = None
    rate_limit_rpm: float | None = None
    rate_limit_header: str = "reset"  # reset (X-RateLimit-Reset, epoch ms) | retry-after | retry-after-ms | none
    free_daily_cap: int | None = None  # requests per day for models ending in ":free"
    key_limit: float | None = None  # USD on the account key; None = no cap
    require_key: str | None = None  # when set, any other bearer token gets a 401
    management_key: str = "sim-management-key"
    prices: dict[str, tuple[float, float, float]] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    accuracy: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_ACCURACY))
    cost_noise: float = 0.0  # billed cost = list cost x (1 + U(-noise, +noise))
    unreported_usd: float = 0.0  # charged to the key per answer but missing from usage.cost
    account_api: bool = True  # False: no /key, /models, /keys, like a local OpenAI-compatible server
    judge_bias: float = 0.0  # as a grader: share of failing answers it passes anyway (leniency)
    judge_unparseable: float = 0.0  # as a grader: share of replies that are prose, not the verdict JSON

    def set_option(self, text: str) -> None:
        """Apply one KEY=VALUE; `fault.503=0.1` and `price.MODEL=p,c,r` address the dicts."""
        key, sep, value = text.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ValueError(f"simulator option {text!r} is not KEY=VALUE")
        if key.startswith("fault."):
            name = key[6:]
            if not (name.isdigit() or name in _FAULTS):
                raise ValueError(f"unknown fault {name!r}: use an HTTP status or one of {', '.join(_FAULTS)}")
            self.faults[name] = float(value)
            return
        if key.startswith("price."):
            parts = [float(p) for p in value.split(",")]
            self.prices[key[6:]] = (parts[0] * PER_M, parts[1] * PER_M, parts[2] if len(parts) > 2 else 0.0)
            return
        if key.startswith("accuracy."):
            self.accuracy[key[9:]] = float(value)
            return
        kinds = {f.name: f for f in fields(self)}
        if key not in kinds or key in ("faults", "prices", "accuracy"):
            raise ValueError(f"unknown simulator option {key!r}")
        current = getattr(self, key)
        if isinstance(current, bool):
            setattr(self, key, value.lower() in ("1", "true", "yes", "on"))
        elif key in ("rate_limit_header", "require_key", "management_key", "jitter"):
            setattr(self, key, value)
        elif key in ("seed", "free_daily_cap"):
            setattr(self, key, int(value))
        else:
            setattr(self, key, float(value))


@dataclass
class _Key:
    limit: float | None
    label: str
    hash: str
    name: str = ""
    usage: float = 0.0
    reserved: float = 0.0
    disabled: bool = False
    expires_at: float | None = None
    created: bool = False  # made through /keys


@dataclass
class SimStats:
    chat_requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)
    by_key_label: Counter[str] = field(default_factory=Counter)
    ok_ids: Counter[str] = field(default_factory=Counter)  # row id (X-Batchrun-Row) -> 200 answers
    by_row: Counter[str] = field(default_factory=Counter)  # row id -> chat requests received
    first_request: float | None = None
    last_response: float | None = None
    billed_usd: float = 0.0
    keys_created: int = 0
    keys_deleted: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "chat_requests": self.chat_requests,
            "by_status": {str(k): v for k, v in self.by_status.items()},
            "by_model": dict(self.by_model),
            "by_key_label": dict(self.by_key_label),
            "ok_requests": sum(self.ok_ids.values()),
            "resent_ok": sum(v - 1 for v in self.ok_ids.values() if v > 1),
            "busy_s": (self.last_response - self.first_request)
            if self.first_request is not None and self.last_response is not None
            else None,
            "billed_usd": self.billed_usd,
            "keys_created": self.keys_created,
            "keys_deleted": self.keys_deleted,
        }


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # orjson and a plain Response: web.json_response's stdlib json was a fifth of the
    # simulator's CPU, and the simulator must outrun batchrun several times over.
    return web.Response(body=orjson.dumps(payload), status=status, headers=headers, content_type="application/json")


def _error(
    status: int, message: str, metadata: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    body: dict[str, Any] = {"error": {"code": status, "message": message}}
    if metadata:
        body["error"]["metadata"] = metadata
    return _json(body, status, headers)


class Simulator:
    """The server. Use `serve_in_thread()` from tests, `start()`/`stop()` from async code."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.stats = SimStats()
        self._rng = random.Random(self.config.seed)
        self._keys: dict[str, _Key] = {}
        self._hashes: dict[str, str] = {}  # hash -> key
        self.issued: list[str] = []  # every key /keys created, kept for tests that look for leaks
        self._generations = 0
        self._run_tag = secrets.token_hex(4)
        self._window = (0.0, 0)
        self._daily: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.host = "127.0.0.1"
        self.account_key = self._account_key()

    def _account_key(self) -> _Key:
        return _Key(limit=self.config.key_limit, label="sk-or-v1-sim...acct", hash="acct" + "0" * 60)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/api/v1"

    # -- lifecycle ---------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/api/v1/chat/completions", self._chat)
        app.router.add_get("/__sim/stats", self._stats)
        app.router.add_post("/__sim/reset", self._reset)
        if self.config.account_api:
            app.router.add_get("/api/v1/models", self._models)
            app.router.add_get("/api/v1/key", self._key)
            app.router.add_post("/api/v1/keys", self._create_key)
            app.router.add_get("/api/v1/keys/{hash}", self._get_key)
            app.router.add_patch("/api/v1/keys/{hash}", self._patch_key)
            app.router.add_delete("/api/v1/keys/{hash}", self._delete_key)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here
        assert server is not None and hasattr(server, "sockets")
        self.host, self.port = host, server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _stop_everything(self) -> None:
        """Stop, then end handlers still asleep in a simulated hang, so the loop closes clean."""
        await self.stop()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    @contextmanager
    def serve_in_thread(self) -> Iterator[Simulator]:
        """Run on a loopback port in a daemon thread for the duration of the block."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=serve, name="batchrun-simulator", daemon=True)
        thread.start()
        if not ready.wait(10):
            raise RuntimeError("simulator did not start")
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self._stop_everything(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    # -- keys --------------------------------------------------------------------------------
    def _bearer(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        return header[7:].strip() or None if header.startswith("Bearer ") else None

    def _chat_key(self, token: str | None) -> _Key | web.Response:
        if token is None:
            return _error(401, "No auth credentials found")
        if token == self.config.management_key:
            return _error(401, "Management keys cannot be used for completions")
        key = self._keys.get(token)
        if key is not None:
            if key.disabled:
                return _error(401, "This key is disabled")
            if key.expires_at is not None and time.time() >= key.expires_at:
                return _error(401, "This key has expired")
            return key
        if self.config.require_key is not None and token != self.config.require_key:
            return _error(401, "Invalid API key")
        return self.account_key

    def _management(self, request: web.Request) -> web.Response | None:
        if self._bearer(request) != self.config.management_key:
            return _error(401, "A management key is required for /keys")
        return None

    def _key_data(self, key: _Key) -> dict[str, Any]:
        remaining = None if key.limit is None else max(0.0, key.limit - key.usage)
        return {
            "hash": key.hash,
            "name": key.name,
            "label": key.label,
            "limit": key.limit,
            "limit_remaining": remaining,
            "limit_reset": None,
            "usage": key.usage,
            "usage_daily": key.usage,
            "usage_weekly": key.usage,
            "usage_monthly": key.usage,
            "disabled": key.disabled,
            "is_free_tier": False,
            "expires_at": None
            if key.expires_at is None
            else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(key.expires_at)),
        }

    async def _key(self, request: web.Request) -> web.Response:
        key = self._chat_key(self._bearer(request))
        if isinstance(key, web.Response):
            return key
        data = self._key_data(key)
        if self.config.free_daily_cap is not None:
            used = sum(self._daily.values())
            data["free_model_daily_requests"] = {
                "limit": self.config.free_daily_cap,
                "remaining": max(0, self.config.free_daily_cap - used),
                "used": used,
            }
        return _json({"data": data})

    async def _create_key(self, request: web.Request) -> web.Response:
        denied = self._management(request)
        if denied:
            return denied
        body = await request.json()
        if not isinstance(body.get("name"), str) or not body["name"]:
            return _error(400, "name is required")
        limit = body.get("limit")
        if limit is not None and (not isinstance(limit, (int, float)) or limit < 0):
            return _error(400, "limit must be a non-negative number")
        expires_at = None
        if body.get("expires_at"):
            try:
                expires_at = time.mktime(time.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
            except ValueError:
                return _error(400, "expires_at must be an ISO 8601 UTC time")
        token = "sk-or-v1-" + secrets.token_hex(32)
        key = _Key(
            limit=limit,
            label=f"{token[:12]}...{token[-3:]}",
            hash=hashlib.sha256(token.encode()).hexdigest(),
            name=body["name"],
            expires_at=expires_at,
            created=True,
        )
        self._keys[token] = key
        self._hashes[key.hash] = token
        self.issued.append(token)
        self.stats.keys_created += 1
        return _json({"key": token, "data": self._key_data(key)}, status=201)

    def _by_hash(self, request: web.Request) -> _Key | web.Response:
        denied = self._management(request)
        if denied:
            return denied
        token = self._hashes.get(request.match_info["hash"])
        if token is None or token not in self._keys:
            return _error(404, "No key with that hash")
        return self._keys[token]

    async def _get_key(self, request: web.Request) -> web.Response:
        key = self._by_hash(request)
        return key if isinstance(key, web.Response) else _json({"data": self._key_data(key)})

    async def _patch_key(self, request: web.Request) -> web.Response:
        key = self._by_hash(request)
        if isinstance(key, web.Response):
            return key
        body = await request.json()
        if "disabled" in body:
            key.disabled = bool(body["disabled"])
        if "limit" in body:
            key.limit = body["limit"]
        return _json({"data": self._key_data(key)})

    async def _delete_key(self, request: web.Request) -> web.Response:
        key = self._by_hash(request)
        if isinstance(key, web.Response):
            return key
        del self._keys[self._hashes.pop(key.hash)]
        self.stats.keys_deleted += 1
        return _json({"data": {"success": True}})

    # -- info --------------------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.Response:
        data = [
            {
                "id": model,
                "name": model,
                "context_length": 131072,
                "pricing": {"prompt": f"{p:.12g}", "completion": f"{c:.12g}", "request": f"{r:.12g}", "image": "0"},
                "top_provider": {"context_length": 131072, "max_completion_tokens": 16384},
            }
            for model, (p, c, r) in self.config.prices.items()
        ]
        return _json({"data": data})

    async def _stats(self, request: web.Request) -> web.Response:
        return _json(self.stats.as_json())

    async def _reset(self, request: web.Request) -> web.Response:
        """Fresh counters between benchmark rounds against one long-lived server."""
        self.stats = SimStats()
        self.account_key = self._account_key()
        self._window = (0.0, 0)
        return _json({"ok": True})

    # -- chat --------------------------------------------------------------------------------
    def _rate_limited(self) -> web.Response | None:
        """Fixed windows: `rate_limit_rps` per second, or `rate_limit_rpm` per minute."""
        config = self.config
        if config.rate_limit_rpm is not None:
            limit, window, unit = config.rate_limit_rpm, 60.0, "minute"
        elif config.rate_limit_rps is not None:
            limit, window, unit = config.rate_limit_rps, 1.0, "second"
        else:
            return None
        now = time.time()
        start, count = self._window
        if now - start >= window:
            start, count = math.floor(now / window) * window, 0
        if count < limit:
            self._window = (start, count + 1)
            return None
        self._window = (start, count)
        reset = start + window
        wait = reset - now
        header = config.rate_limit_header
        if header == "reset":
            headers = {
                "X-RateLimit-Reset": str(int(reset * 1000)),
                "X-RateLimit-Limit": str(int(limit)),
                "X-RateLimit-Remaining": "0",
            }
        elif header == "retry-after":
            headers = {"Retry-After": str(max(1, math.ceil(wait)))}
        elif header == "retry-after-ms":
            headers = {"retry-after-ms": str(max(1, math.ceil(wait * 1000)))}
        else:
            headers = {}
        return _error(429, f"Rate limit exceeded: too many requests per {unit}", headers=headers)

    def _latency_s(self) -> float:
        """latency_ms plus jitter: uniform within +-jitter_ms, or exponential with that mean."""
        config = self.config
        delay = config.latency_ms
        if config.jitter_ms:
            if config.jitter == "exponential":
                delay += self._rng.expovariate(1 / config.jitter_ms)
            else:
                delay += self._rng.uniform(-1, 1) * config.jitter_ms
        return max(0.0, delay) / 1000

    def _answer(self, model: str, messages: list[dict[str, Any]], body: dict[str, Any], row: str | None) -> str:
        user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        response_format = body.get("response_format") or {}
        if (response_format.get("json_schema") or {}).get("name") == VERDICT_SCHEMA_NAME:
            return grade_as_judge(model, str(user), self.config.judge_bias, self.config.judge_unparseable)
        wants_json = response_format.get("type") in ("json_object", "json_schema")
        # Sampling (temperature > 0) varies from one repeat to the next: each row id draws
        # its own luck, so repeats of an item can disagree, as real models' do.
        sampled = row if row and float(body.get("temperature") or 0) > 0 else ""
        return self._answer_to(model, str(user), wants_json, sampled)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one simulator per process; answers are pure
    def _answer_to(self, model: str, user: str, json_format: bool, sampled: str = "") -> str:
        digest = hashlib.sha256(f"{model}\n{user}{sampled}".encode()).digest()
        correct = int.from_bytes(digest[:2], "big") / 65535 < self.config.accuracy.get(model, 0.85)
        lowered = str(user).lower()
        answer = None
        for country, capital in _CAPITALS.items():
            if country in lowered:
                answer = capital
        match = _ARITHMETIC.search(str(user))
        if answer is None and match:
            a, op, b = int(match.group(1)), match.group(2), int(match.group(3))
            answer = str(a + b if op == "+" else a - b if op == "-" else a * b)
        if answer is not None and not correct:
            answer = "I am not sure." if digest[2] % 2 else "Unknown"
        if json_format or "json" in lowered:
            if not correct and digest[3] % 2:
                return "Sure! Here is the answer: " + (answer or "42")
            return json.dumps(
                {"answer": answer or f"item-{digest.hex()[:6]}", "confidence": round(0.5 + digest[4] / 512, 3)}
            )
        if answer is not None:
            return answer
        words = re.findall(r"[A-Za-z]+", str(user))[:12]
        return f"Simulated reply {digest.hex()[:8]}: " + " ".join(reversed(words))

    async def _hang_or_fault(self, request: web.Request, fault: str, payload: bytes) -> web.StreamResponse:
        if fault == "hang":
            await asyncio.sleep(self.config.hang_s)
            return web.Response(status=504)
        if fault == "reset":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        if fault == "cut":
            response = web.StreamResponse(
                status=200, headers={"Content-Type": "application/json", "Content-Length": str(len(payload))}
            )
            await response.prepare(request)
            await response.write(payload[: len(payload) // 2])
            if request.transport is not None:
                request.transport.abort()
            return response
        # truncate: a complete HTTP response whose JSON is cut short
        return web.Response(body=payload[: len(payload) // 2], content_type="application/json")

    def _draw_fault(self) -> str | None:
        if not self.config.faults:
            return None
        draw = self._rng.random()
        for name, rate in self.config.faults.items():
            if draw < rate:
                return name
            draw -= rate
        return None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        stats.chat_requests += 1
        now = time.perf_counter()
        if stats.first_request is None:
            stats.first_request = now
        response = await self._chat_response(request)
        stats.by_status[response.status] += 1
        stats.last_response = time.perf_counter()
        return response

    async def _chat_response(self, request: web.Request) -> web.StreamResponse:
        config = self.config
        key = self._chat_key(self._bearer(request))
        if isinstance(key, web.Response):
            return key
        try:
            body = orjson.loads(await request.read())
            model, messages = body["model"], body["messages"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "Invalid request body: model and messages are required")
        self.stats.by_model[model] += 1
        self.stats.by_key_label[key.label] += 1
        row = request.headers.get("X-Batchrun-Row")
        if row:
            self.stats.by_row[row] += 1
        if model not in config.prices:
            return _error(400, f"{model} is not a valid model ID")
        limited = self._rate_limited()
        if limited is not None:
            return limited
        if model.endswith(":free") and config.free_daily_cap is not None:
            if self._daily[model] >= config.free_daily_cap:
                return _error(
                    429,
                    "Rate limit exceeded: free-models-per-day. Add credits to unlock more requests.",
                    {"limit_type": "free-models-per-day"},
                    {"X-RateLimit-Reset": str(int((math.floor(time.time() / 86400) + 1) * 86400 * 1000))},
                )
            self._daily[model] += 1
        fault = self._draw_fault()
        if fault is not None and fault.isdigit():
            status = int(fault)
            if status == 402:
                return _error(402, "Key limit exceeded", {"limit_source": "openrouter_key_limit"})
            if status == 429:
                return _error(429, "Rate limit exceeded", headers={"Retry-After": "1"})
            return _error(status, f"Simulated HTTP {status}")

        prompt_price, completion_price, request_price = config.prices[model]
        prompt_tokens = sum(_tokens(str(m.get("content", ""))) + 4 for m in messages)
        max_tokens = int(body.get("max_tokens") or 16384)
        worst = max(0.0, prompt_tokens * prompt_price + max_tokens * completion_price + request_price)
        if key.limit is not None and key.usage + key.reserved + worst > key.limit:
            remaining = max(0.0, key.limit - key.usage - key.reserved)
            affordable = int(remaining / completion_price) if completion_price > 0 else 0
            message = (
                f"This request requires more credits, or fewer max_tokens. You requested up to {max_tokens} "
                f"tokens, but can only afford {affordable}."
            )
            return _error(402, message, {"limit_source": "openrouter_key_limit"})
        key.reserved += worst
        try:
            delay = self._latency_s()
            if delay > 0:
                await asyncio.sleep(delay)
            content = self._answer(model, messages, body, row)
            calls = tool_calls_for(model, messages, body, self.config.accuracy.get(model, 0.85))
            finish = "tool_calls" if calls else "stop"
            if calls:
                content = ""
            completion_tokens = _tokens(content or json.dumps(calls))
            if completion_tokens > max_tokens:
                content, completion_tokens, finish = content[: max_tokens * 4], max_tokens, "length"
            self._generations += 1
            generation = f"gen-{self._run_tag}-{self._generations:012d}"
            if fault in ("error200", "choice_error"):
                error = {"code": 502, "message": "Provider returned error", "metadata": {"provider_name": "SimCloud"}}
                payload: dict[str, Any] = (
                    {"id": generation, "error": error, "choices": None}
                    if fault == "error200"
                    else {
                        "id": generation,
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "error",
                                "error": error,
                                "message": {"role": "assistant", "content": ""},
                            }
                        ],
                    }
                )
                return _json(payload)
            cost = (
                0.0
                if prompt_price < 0
                else (prompt_tokens * prompt_price + completion_tokens * completion_price + request_price)
            )
            if config.cost_noise:
                cost = max(0.0, cost * (1 + self._rng.uniform(-config.cost_noise, config.cost_noise)))
            payload = {
                "id": generation,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "provider": "SimCloud",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": finish,
                        "native_finish_reason": finish,
                        "message": {"role": "assistant", "content": content or None, "tool_calls": calls}
                        if calls
                        else {"role": "assistant", "content": content},
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                    "cost": round(cost, 12),
                    "prompt_tokens_details": {"cached_tokens": 0},
                },
            }
            if fault in ("reset", "cut", "truncate", "hang"):
                return await self._hang_or_fault(request, fault, json.dumps(payload).encode())
            key.usage += cost + config.unreported_usd
            self.stats.billed_usd += cost + config.unreported_usd
            if row:
                self.stats.ok_ids[row] += 1
            return _json(payload)
        finally:
            key.reserved -= worst


async def serve(config: SimConfig, host: str, port: int) -> None:
    """`batchrun simulate`: serve until cancelled."""
    simulator = Simulator(config)
    await simulator.start(host, port)
    try:
        await asyncio.Event().wait()
    finally:
        await simulator.stop()
