"""The simulator's chat endpoint: who may ask, what is refused, the answer and its bill."""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from ._answers import answer_to
from ._billing import count_tokens, route, usage_block
from ._billing import prompt_tokens as count_prompt
from ._config import SimConfig
from ._errors import AVAILABILITY, PROVIDER, availability_error, provider_error
from ._extras import extras
from ._faults import CLOSING, broken_reply, draw_fault, hang
from ._grader import VERDICT_SCHEMA_NAME, grade_as_judge, tool_calls_for
from ._http import error_response, json_response
from ._keys import KeyRoutes, bearer
from ._limits import RateWindow
from ._sse import Generation, StreamReplies, router_metadata
from ._stats import SimStats

UNAVAILABLE_WAIT_S = 60  # the retry_after of a model `unavailable.` with a retryable code


def error_in_200(fault: str, generation: str, model: str) -> dict[str, Any]:
    """A provider's failure inside a 200: as the top-level `error`, or as a choice's."""
    error = {
        "code": 502,
        "message": "Provider returned error",
        "metadata": {"error_type": "provider_unavailable", "provider_name": PROVIDER, "raw": "502"},
    }
    if fault == "error200":
        return {"id": generation, "error": error, "choices": None}  # a hostile shape: no choices at all
    # errors-and-debugging.mdx "Skin-specific error formats", Chat Completions: the error in the
    # choice beside the partial output, in a whole openapi ChatResult (break41 F5: fields missing).
    error = {**error, "message": "Provider disconnected mid-stream"}
    choice = {"index": 0, "finish_reason": "error", "native_finish_reason": "error", "error": error}
    choice["message"] = {"role": "assistant", "content": "partial output..."}
    usage = {"prompt_tokens": 8, "completion_tokens": 0, "total_tokens": 8, "cost": 0}  # waived: not billed
    return {
        "id": generation,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [choice],
        "usage": usage,
    }


class ChatRoutes(KeyRoutes, StreamReplies):
    """The chat endpoint, mixed into the Simulator (which owns the state named here)."""

    config: SimConfig
    stats: SimStats
    limits: RateWindow
    clock: Callable[[], float]
    run_tag: str
    _rng: random.Random
    _daily: Counter[str]
    _daily_day: int
    _generations: int
    unanswered: set[int]  # chat requests (their ids) in hand, not yet answered nor streaming

    def canonical(self, model: str) -> str | None:
        raise NotImplementedError  # the Simulator's: it knows the models and their variants

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
        self.unanswered.add(id(request))
        try:
            response = await self._chat_response(request)
        finally:
            self.unanswered.discard(id(request))
        stats.by_status[response.status] += 1
        stats.last_response = time.perf_counter()
        return response

    def _refusal(self, model: str, canonical: str | None) -> tuple[web.Response | None, str | None]:
        """An error reply before anything is generated: an unavailable model, a rate or
        daily limit, a drawn fault (None when the request goes on), and the fault drawn."""
        config = self.config
        if model in config.unavailable:  # a retryable code for a while: the docs' example waits 40 s
            code = config.unavailable[model]
            return availability_error(
                code, model, retry_after=UNAVAILABLE_WAIT_S if AVAILABILITY[code][2] else None
            ), None
        if canonical is None:
            return availability_error("model_not_found", model), None
        limited = self.limits.check(model)
        if limited is not None:
            return limited, None
        if model.endswith(":free") and config.free_daily_cap is not None:
            # limits.mdx: one daily cap for all free requests of the account, for the UTC day of
            # the simulator's clock: it resets at the midnight its 429 names (break46 F4: never).
            today = math.floor(self.clock() / 86400)
            if self._daily_day != today:
                self._daily.clear()
                self._daily_day = today
            if sum(self._daily.values()) >= config.free_daily_cap:
                midnight = (today + 1) * 86400  # by its clock: tests pick the hour
                headers = {
                    "X-RateLimit-Limit": str(config.free_daily_cap),
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(midnight * 1000),
                }
                return error_response(429, "Rate limit exceeded: free-models-per-day", headers=headers), None
            self._daily[model] += 1
        fault = draw_fault(self._rng, config.faults)
        if fault in ("capacity_exhausted", "temporarily_unavailable"):
            return availability_error(fault, model, retry_after=1), None
        if fault is not None and fault.isdigit():
            status = int(fault)
            if status == 402:
                # limit_source is not documented (client issues): kept as the hint it is.
                return error_response(402, "Key limit exceeded", {"limit_source": "openrouter_key_limit"}), None
            if status == 429:
                # An upstream provider's limit: no X-RateLimit-* headers, and raw text that
                # happens to say "per day", which must not be read as a daily cap.
                raw = "Rate limit reached for requests per day (RPD) on this organization; retry shortly"
                return provider_error(429, "Rate limit exceeded", raw, {"Retry-After": "1"}), None
            return error_response(status, f"Simulated HTTP {status}"), None

        return None, fault

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
        if not _tools_usable(body.get("tools")):  # as a provider refuses them, not a traceback (verify20 V13)
            return error_response(400, "Invalid tools: each function's parameters must be a JSON Schema object")
        self.stats.by_model[model] += 1
        self.stats.by_key_label[key.label] += 1
        row = request.headers.get("X-Batchrun-Row")
        if row:
            self.stats.by_row[row] += 1
        canonical = self.canonical(model)
        refused, fault = self._refusal(model, canonical)
        if refused is not None:
            return refused
        assert canonical is not None  # a model without a canonical id is refused above
        endpoint = route(config, canonical, body.get("provider"), self._rng)
        if endpoint is None:
            return error_response(404, "No endpoints found matching your provider settings.")
        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 16384)
        more = extras(config, model, canonical, body, max_tokens)
        prompt_tokens = count_prompt(config, messages) + more.search_tokens
        prompt_price, completion_price, request_price = endpoint.prices(prompt_tokens, time.time())
        if model.endswith(":free"):
            prompt_price = completion_price = request_price = 0.0
        request_price += more.search_usd  # web search "costs extra, even with free models"
        longest = max(max_tokens, more.reasoning_tokens)
        worst = max(0.0, prompt_tokens * prompt_price + longest * completion_price + request_price)
        if key.limit is not None and key.counted + key.reserved + worst > key.limit:
            remaining = max(0.0, key.limit - key.counted - key.reserved)
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
                # A simulator closing ends its latencies as its hangs, unbilled: a runner's
                # shutdown waited out its half-second timeout for them (a test's minute-long latency).
                await hang(request, delay)
                if request.app[CLOSING].is_set():
                    return error_response(503, "The simulator is closing.")
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
            reasoning = more.reasoning_within(completion_tokens, max_tokens) if fault != "cold_start" else 0
            self._generations += 1
            generation = f"gen-{self.run_tag}-{self._generations:012d}"
            if body.get("stream") is True and fault not in ("error200", "choice_error", "reset", "cut", "truncate"):
                prices = (prompt_price, completion_price, request_price)
                streamed = Generation(
                    generation, model, endpoint.provider, content, prompt_tokens, prices, max_tokens, row, fault, calls
                )
                streamed.extras, streamed.tier = more, served_tier(body)
                self.unanswered.discard(id(request))  # a stream under way is not waited for at closing
                return await self.stream_answer(request, key, streamed)
            if fault in ("error200", "choice_error"):
                # The generation's id in its header "for all endpoints" (streaming.mdx), failures too.
                return json_response(error_in_200(fault, generation, model), headers={"X-Generation-Id": generation})
            cost = (
                0.0
                if prompt_price < 0
                else (prompt_tokens * prompt_price + (completion_tokens + reasoning) * completion_price + request_price)
            )
            if config.cost_noise:
                cost = max(0.0, cost * (1 + self._rng.uniform(-config.cost_noise, config.cost_noise)))
            if fault == "cold_start":
                cost = 0.0  # such replies are not billed
            headers = {"X-Generation-Id": generation}
            upstream = None
            if fault not in ("reset", "cold_start"):  # a finished generation is billed, listened to or not
                tokens = (prompt_tokens, completion_tokens + reasoning)
                cost, upstream = self.bill(
                    key, row, generation, model, endpoint.provider, cost, fault is not None, tokens
                )
            payload: dict[str, Any] = {
                "id": generation,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": canonical,
                "system_fingerprint": None,
                **served_tier(body),
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
                    **usage_block(prompt_tokens, completion_tokens + reasoning, cost, config.byok, upstream),
                    "prompt_tokens_details": {"cached_tokens": 0},
                    **more.usage(reasoning),
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


def _tools_usable(tools: Any) -> bool:
    """Whether the function tools' parameters have the shape the simulator reads: objects,
    their properties an object of objects (a server tool, `openrouter:web_search`, has none)."""
    for tool in tools if isinstance(tools, list) else ([] if tools is None else [None]):
        if isinstance(tool, dict) and tool.get("type") != "function" and "function" not in tool:
            continue
        function = tool.get("function") if isinstance(tool, dict) else None
        parameters = function.get("parameters", {}) if isinstance(function, dict) else None
        properties = parameters.get("properties", {}) if isinstance(parameters, dict) else None
        if not isinstance(properties, dict) or not all(isinstance(p, dict) for p in properties.values()):
            return False
    return True


def served_tier(body: dict[str, Any]) -> dict[str, str]:
    """The tier that served a request that asked for one (service-tiers.mdx: "the response will
    indicate which tier was actually used"; `fast` is reported as `priority`)."""
    tier = body.get("service_tier")
    return {"service_tier": "priority" if tier == "fast" else tier} if isinstance(tier, str) else {}
