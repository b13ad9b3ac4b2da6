"""The simulator's server: lifecycle, routes and the chat endpoint."""

from __future__ import annotations

import asyncio
import json
import math
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from aiohttp import web

from ._answers import answer_to
from ._batches import SimBatches
from ._billing import count_tokens, route
from ._billing import prompt_tokens as count_prompt
from ._config import VARIANTS, SimConfig
from ._errors import PROVIDER, availability_error, provider_error
from ._faults import broken_reply, draw_fault
from ._grader import VERDICT_SCHEMA_NAME, grade_as_judge, tool_calls_for
from ._http import error_response, json_response
from ._keys import KeyRoutes, SimKey, account_key, bearer
from ._limits import RateWindow
from ._sse import Generation, StreamReplies
from ._stats import SimStats


class Simulator(KeyRoutes, StreamReplies):
    """The server. Use `serve_in_thread()` from tests, `start()`/`stop()` from async code."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.stats = SimStats()
        self._rng = random.Random(self.config.seed)
        self._keys: dict[str, SimKey] = {}
        self._hashes: dict[str, str] = {}
        self.issued: list[str] = []
        self._generations = 0
        self.generations: dict[str, dict[str, Any]] = {}
        self.run_tag = secrets.token_hex(4)
        self.limits = RateWindow(self.config, lambda: self.clock())
        self._daily: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.host = "127.0.0.1"
        self.account_key = account_key(self.config)
        # Batch timing and rate windows; tests drive it with a fake clock.
        self.clock: Callable[[], float] = time.time
        self.batches = SimBatches(self)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/api/v1"

    # -- lifecycle ---------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/api/v1/chat/completions", self._chat)
        app.router.add_get("/__sim/stats", self._stats)
        app.router.add_post("/__sim/reset", self._reset)
        self.batches.add_routes(app)
        if self.config.account_api:
            app.router.add_get("/api/v1/models", self._models)
            self.add_key_routes(app)
            app.router.add_get("/api/v1/model/{author}/{slug}", self._model)
            self.add_billing_routes(app)
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

    # -- info --------------------------------------------------------------------------------
    def _model_entry(self, model: str, canonical: str) -> dict[str, Any]:
        p, c, r = self.config.prices[canonical]
        if model.endswith(":free"):
            p = c = r = 0.0
        return {
            "id": model,
            "canonical_slug": canonical,
            "name": model,
            "context_length": 131072,
            "pricing": {"prompt": f"{p:.12g}", "completion": f"{c:.12g}", "request": f"{r:.12g}", "image": "0"},
            "top_provider": {"context_length": 131072, "max_completion_tokens": 16384, "is_moderated": False},
            # The rest of what openapi.yaml's Model schema requires.
            "created": 1_700_000_000,
            "architecture": {
                "input_modalities": ["text"],
                "output_modalities": ["text"],
                "modality": "text->text",
                "tokenizer": "Other",
                "instruct_type": None,
            },
            "per_request_limits": None,
            "supported_parameters": ["temperature", "top_p", "max_tokens", "max_completion_tokens", "seed", "stop"],
            "default_parameters": None,
            "supported_voices": None,
            "links": {"details": f"/api/v1/models/{canonical}/endpoints"},
        }

    def canonical(self, model: str) -> str | None:
        """The priced model behind an id: itself, an alias's target, or a variant's base
        (model-variants/*.mdx); None when the simulator does not know it."""
        config = self.config
        model = config.aliases.get(model, model)
        if model in config.prices:
            return model
        base, sep, variant = model.rpartition(":")
        if sep and variant in VARIANTS and base in config.prices:
            return base
        return None

    async def _models(self, request: web.Request) -> web.Response:
        """GET /models (openapi `getModels`): the full list, or with `offset`/`limit` one page
        and `links.next` to the following one (null on the last)."""
        hidden = self.config.private_models
        data = [self._model_entry(model, model) for model in self.config.prices if model not in hidden]
        query = request.query
        if "offset" not in query and "limit" not in query and self.config.models_page is None:
            return json_response({"data": data, "total_count": len(data), "links": {"next": None}})
        try:
            offset = int(query.get("offset", "0"))
            limit = int(query.get("limit", str(self.config.models_page or 500)))
        except ValueError:
            return error_response(400, "offset and limit must be integers")
        if offset < 0 or not 1 <= limit <= 1000:
            return error_response(400, "offset must be >= 0 and limit 1 to 1000")
        end = offset + limit
        following = f"/api/v1/models?offset={end}&limit={limit}" if end < len(data) else None
        return json_response({"data": data[offset:end], "total_count": len(data), "links": {"next": following}})

    async def _model(self, request: web.Request) -> web.Response:
        """GET /model/{author}/{slug}: one model, variants and aliases resolved (openapi `getModel`)."""
        model = f"{request.match_info['author']}/{request.match_info['slug']}"
        canonical = self.canonical(model)
        if canonical is None:
            return error_response(404, "Resource not found")
        return json_response({"data": self._model_entry(model, canonical)})

    async def _stats(self, request: web.Request) -> web.Response:
        return json_response({**self.stats.as_json(), "batches": self.batches.stats.as_json()})

    async def _reset(self, request: web.Request) -> web.Response:
        """Fresh counters between benchmark rounds against one long-lived server."""
        self.stats = SimStats()
        self.account_key = account_key(self.config)
        self.limits.reset()
        return json_response({"ok": True})

    # -- chat --------------------------------------------------------------------------------
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

    def answer(self, model: str, messages: list[dict[str, Any]], body: dict[str, Any], row: str | None = None) -> str:
        user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        response_format = body.get("response_format") or {}
        if (response_format.get("json_schema") or {}).get("name") == VERDICT_SCHEMA_NAME:
            return grade_as_judge(model, str(user), self.config.judge_bias, self.config.judge_unparseable)
        wants_json = response_format.get("type") in ("json_object", "json_schema")
        # Sampling (temperature > 0) varies from one repeat to the next: each row id draws
        # its own luck, so repeats of an item can disagree, as real models' do.
        sampled = row if row and float(body.get("temperature") or 0) > 0 else ""
        return answer_to(model, str(user), wants_json, self.config.accuracy.get(model, 0.85), sampled)

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
        key = self.chat_key(bearer(request))
        if isinstance(key, web.Response):
            return key
        try:
            body = orjson.loads(await request.read())
            model, messages = body["model"], body["messages"]
        except (ValueError, KeyError, TypeError):
            return error_response(400, "Invalid request body: model and messages are required")
        self.stats.by_model[model] += 1
        self.stats.by_key_label[key.label] += 1
        row = request.headers.get("X-Batchrun-Row")
        if row:
            self.stats.by_row[row] += 1
        if model in config.unavailable:
            return availability_error(config.unavailable[model], model)
        canonical = self.canonical(model)
        if canonical is None:
            return availability_error("model_not_found", model)
        limited = self.limits.check(model)
        if limited is not None:
            return limited
        if model.endswith(":free") and config.free_daily_cap is not None:
            # limits.mdx: one daily cap for all free requests of the account.
            if sum(self._daily.values()) >= config.free_daily_cap:
                midnight = (math.floor(self.clock() / 86400) + 1) * 86400  # by its clock: tests pick the hour
                headers = {
                    "X-RateLimit-Limit": str(config.free_daily_cap),
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(midnight * 1000),
                }
                return error_response(429, "Rate limit exceeded: free-models-per-day", headers=headers)
            self._daily[model] += 1
        fault = draw_fault(self._rng, config.faults)
        if fault in ("capacity_exhausted", "temporarily_unavailable"):
            return availability_error(fault, model, retry_after=1)
        if fault is not None and fault.isdigit():
            status = int(fault)
            if status == 402:
                # limit_source is not documented (client issues): kept as the hint it is.
                return error_response(402, "Key limit exceeded", {"limit_source": "openrouter_key_limit"})
            if status == 429:
                # An upstream provider's limit: no X-RateLimit-* headers, and raw text that
                # happens to say "per day", which must not be read as a daily cap.
                raw = "Rate limit reached for requests per day (RPD) on this organization; retry shortly"
                return provider_error(429, "Rate limit exceeded", raw, {"Retry-After": "1"})
            return error_response(status, f"Simulated HTTP {status}")

        endpoint = route(config, canonical, body.get("provider"), self._rng)
        if endpoint is None:
            return error_response(404, "No endpoints found matching your provider settings.")
        prompt_tokens = count_prompt(config, messages)
        prompt_price, completion_price, request_price = endpoint.prices(prompt_tokens, time.time())
        if model.endswith(":free"):
            prompt_price = completion_price = request_price = 0.0
        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 16384)
        worst = max(0.0, prompt_tokens * prompt_price + max_tokens * completion_price + request_price)
        if key.limit is not None and key.usage + key.reserved + worst > key.limit:
            remaining = max(0.0, key.limit - key.usage - key.reserved)
            affordable = int(remaining / completion_price) if completion_price > 0 else 0
            message = (
                f"This request requires more credits, or fewer max_tokens. You requested up to {max_tokens} "
                f"tokens, but can only afford {affordable}."
            )
            return error_response(402, message, {"limit_source": "openrouter_key_limit"})
        key.reserved += worst
        try:
            delay = self._latency_s()
            if delay > 0:
                await asyncio.sleep(delay)
            content = self.answer(model, messages, body, row)
            calls = tool_calls_for(model, messages, body, self.config.accuracy.get(model, 0.85))
            finish: str | None = "tool_calls" if calls else "stop"
            if calls:
                content = ""
            else:
                content += " more" * config.stream_padding
            completion_tokens = count_tokens(config, content or json.dumps(calls))
            if completion_tokens > max_tokens:
                content, completion_tokens, finish = content[: max_tokens * 4], max_tokens, "length"
            if fault == "cold_start":
                # errors-and-debugging.mdx "When no content is generated": an empty answer.
                content, completion_tokens, finish = "", 0, None
            self._generations += 1
            generation = f"gen-{self.run_tag}-{self._generations:012d}"
            if body.get("stream") is True and fault not in ("error200", "choice_error", "reset", "cut", "truncate"):
                prices = (prompt_price, completion_price, request_price)
                streamed = Generation(
                    generation, model, endpoint.provider, content, prompt_tokens, prices, max_tokens, row, fault, calls
                )
                return await self.stream_answer(request, key, streamed)
            if fault in ("error200", "choice_error"):
                error = {
                    "code": 502,
                    "message": "Provider returned error",
                    "metadata": {"error_type": "provider_unavailable", "provider_name": PROVIDER, "raw": "502"},
                }
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
                return json_response(payload)
            cost = (
                0.0
                if prompt_price < 0
                else (prompt_tokens * prompt_price + completion_tokens * completion_price + request_price)
            )
            if config.cost_noise:
                cost = max(0.0, cost * (1 + self._rng.uniform(-config.cost_noise, config.cost_noise)))
            if fault == "cold_start":
                cost = 0.0  # such replies are not billed
            headers = {"X-Generation-Id": generation}
            upstream = None
            if fault not in ("reset", "cold_start"):  # a finished generation is billed, listened to or not
                cost, upstream = self.bill(key, row, generation, model, endpoint.provider, cost, fault is not None)
            payload = {
                "id": generation,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": canonical,
                "system_fingerprint": None,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": finish,
                        "native_finish_reason": finish,
                        "message": {"role": "assistant", "content": content or None, "tool_calls": calls}
                        if calls
                        else {
                            "role": "assistant",
                            "content": [{"type": "text", "text": content}] if config.content_parts else content,
                        },
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                    "cost": round(cost, 12),
                    "is_byok": config.byok,
                    # OpenAPI ChatUsage: cost_details (prompt and completion parts required) or null.
                    "cost_details": None
                    if upstream is None
                    else {
                        "upstream_inference_cost": upstream,
                        "upstream_inference_prompt_cost": upstream,
                        "upstream_inference_completions_cost": 0.0,
                    },
                    "prompt_tokens_details": {"cached_tokens": 0},
                },
            }
            if request.headers.get("X-OpenRouter-Metadata", "").lower() == "enabled":
                payload["openrouter_metadata"] = router_metadata(model, endpoint.provider)
            if fault in ("reset", "cut", "truncate", "hang", "stall"):
                return await broken_reply(request, fault, json.dumps(payload).encode(), config.hang_s, headers)
            if row:
                self.stats.ok_ids[row] += 1
            return json_response(payload, headers=headers)
        finally:
            key.reserved -= worst


def router_metadata(model: str, provider: str = PROVIDER) -> dict[str, Any]:
    """The opt-in `openrouter_metadata` of a reply (guides/features/router-metadata.mdx)."""
    return {
        "requested": model,
        "strategy": "direct",
        "region": None,
        "summary": f"available=1, selected={provider}",
        "attempt": 1,
        "is_byok": False,
        "endpoints": {"total": 1, "available": [{"provider": provider, "model": model, "selected": True}]},
        "attempts": [{"provider": provider, "model": model, "status": 200}],
    }


async def serve(config: SimConfig, host: str, port: int) -> None:
    """`batchrun simulate`: serve until cancelled."""
    simulator = Simulator(config)
    await simulator.start(host, port)
    try:
        await asyncio.Event().wait()
    finally:
        await simulator.stop()
