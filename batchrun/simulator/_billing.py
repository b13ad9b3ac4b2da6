"""How the simulator prices and bills, like the real service.

- Each model has several provider endpoints at different prices (the `/models` price is
  the top provider's, guides/overview/models.mdx), served at
  `/models/{author}/{slug}/endpoints`; routing (`routing`) picks the top provider, the
  dearest allowed endpoint, or spreads over the allowed ones. Provider settings `only`,
  `ignore`, `order` + `allow_fallbacks: false` and `max_price` filter them.
- `pricing.overrides` (long-context and time-window prices) apply when their conditions
  hold.
- Tokenizers: `light` counts a token per 4 characters; `heavy` a token per UTF-8 byte,
  the most a byte-level BPE can produce.
- A generation that finished is billed whether or not the client still listens (a
  non-streamed request the client abandons is billed, api_reference/streaming.mdx); a
  cancelled stream bills only what was generated before the cancel.
- `/generation?id=` returns a billed generation's cost; `/credits` the account's balance.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .._formats import utc_seconds
from ._config import SimConfig
from ._http import error_response, json_response
from ._keys import SimKey, bearer
from ._stats import SimStats

PER_MESSAGE_TOKENS = 4


@dataclass
class SimEndpoint:
    provider: str
    tag: str
    prompt: float
    completion: float
    request: float = 0.0
    overrides: list[dict[str, Any]] = field(default_factory=list)  # documented PricingOverride shapes

    def prices(self, prompt_tokens: int, now: float) -> tuple[float, float, float]:
        """Base prices with every applicable override on top, later entries winning per key."""
        prices = {"prompt": self.prompt, "completion": self.completion, "request": self.request}
        clock = int(time.strftime("%H%M", time.gmtime(now)))
        for entry in self.overrides:
            threshold = entry.get("min_prompt_tokens")
            if threshold is not None and not prompt_tokens > threshold:
                continue
            start, end = entry.get("utc_start"), entry.get("utc_end")
            if start is not None and end is not None:
                inside = start <= clock < end if start <= end else (clock >= start or clock < end)
                if not inside:
                    continue
            for key in prices:
                if key in entry:
                    prices[key] = float(entry[key])
        return prices["prompt"], prices["completion"], prices["request"]

    def as_json(self, model: str) -> dict[str, Any]:
        pricing: dict[str, Any] = {
            "prompt": f"{self.prompt:.12g}",
            "completion": f"{self.completion:.12g}",
            "request": f"{self.request:.12g}",
            "image": "0",
        }
        if self.overrides:
            pricing["overrides"] = [
                {k: (f"{v:.12g}" if k in ("prompt", "completion", "request") else v) for k, v in o.items()}
                for o in self.overrides
            ]
        return {
            "name": f"{self.provider} | {model}",
            "model_id": model,
            "model_name": model,
            "context_length": 131072,
            "pricing": pricing,
            "provider_name": self.provider,
            "tag": self.tag,
            "quantization": "fp16",
            "max_completion_tokens": 16384,
            "max_prompt_tokens": 131072,
            "supported_parameters": ["temperature", "max_tokens", "top_p", "seed"],
            "status": 0,
            "uptime_last_30m": 100,
            "uptime_last_5m": 100,
            "uptime_last_1d": 100,
            "supports_implicit_caching": False,
            "latency_last_30m": None,
            "throughput_last_30m": None,
        }


def endpoints_for(config: SimConfig, model: str) -> list[SimEndpoint]:
    """The top provider at the `/models` price, then a dearer and a cheaper one."""
    prompt, completion, request = config.prices[model]
    if prompt < 0:
        return []  # a router model: no endpoints of its own
    overrides = config.overrides.get(model, [])
    top = SimEndpoint("SimCloud", "simcloud", prompt, completion, request, overrides)
    if prompt == completion == 0:
        return [top]
    return [
        top,
        SimEndpoint("DearCloud", "dearcloud", prompt * 1.5, completion * 2.0, request, overrides),
        SimEndpoint("CheapCloud", "cheapcloud/turbo", prompt * 0.8, completion * 0.9, request, overrides),
    ]


def _matches(endpoint: SimEndpoint, slug: str) -> bool:
    slug = slug.lower()
    return slug in (endpoint.tag, endpoint.tag.split("/")[0])


def route(config: SimConfig, model: str, provider: Any, rng: random.Random) -> SimEndpoint | None:
    """The endpoint that serves a request; None when the provider settings leave none."""
    endpoints = endpoints_for(config, model)
    if not endpoints:
        return SimEndpoint("SimCloud", "simcloud", 0.0, 0.0, 0.0)
    settings = provider if isinstance(provider, dict) else {}
    allowed = endpoints
    if settings.get("only"):
        allowed = [e for e in allowed if any(_matches(e, s) for s in settings["only"])]
    if settings.get("ignore"):
        allowed = [e for e in allowed if not any(_matches(e, s) for s in settings["ignore"])]
    if settings.get("allow_fallbacks") is False and settings.get("order"):
        allowed = [e for e in allowed if any(_matches(e, s) for s in settings["order"])]
    max_price = settings.get("max_price") or {}
    allowed = [
        e
        for e in allowed
        if e.prompt <= max_price.get("prompt", math.inf) * 1e-6
        and e.completion <= max_price.get("completion", math.inf) * 1e-6
        and e.request <= max_price.get("request", math.inf)
    ]
    if not allowed:
        return None
    if config.routing == "dearest":
        return max(allowed, key=lambda e: (e.completion, e.prompt))
    if config.routing == "spread":
        return rng.choice(allowed)
    return allowed[0]


def count_tokens(config: SimConfig, text: str) -> int:
    if config.tokenizer == "heavy":
        return max(1, len(text.encode("utf-8")))
    return max(1, math.ceil(len(text) / 4))


def prompt_tokens(config: SimConfig, messages: list[dict[str, Any]]) -> int:
    return sum(count_tokens(config, str(m.get("content", ""))) + PER_MESSAGE_TOKENS for m in messages)


def generation_record(
    generation: str, model: str, provider: str, cost: float, upstream: float | None, byok: bool, **extra: Any
) -> dict[str, Any]:
    """The documented `/generation` data object (the fields batchrun and tests read)."""
    return {
        "id": generation,
        "model": model,
        "provider_name": provider,
        "total_cost": cost,
        "usage": cost,
        "is_byok": byok,
        "upstream_inference_cost": upstream,
        "created_at": utc_seconds(time.time()),
        **extra,
    }


class BillingRoutes:
    """Billing state and routes, mixed into the Simulator (which owns the state named here)."""

    config: SimConfig
    stats: SimStats
    generations: dict[str, dict[str, Any]]  # generation id -> its /generation record

    def add_billing_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/generation", self._generation)
        app.router.add_get("/api/v1/models/{author}/{slug}/endpoints", self._endpoints)
        app.router.add_get("/api/v1/credits", self._credits)

    def bill(
        self,
        key: SimKey,
        row: str | None,
        generation: str,
        model: str,
        provider: str,
        cost: float,
        abandoned: bool,
        tokens: tuple[int, int] = (0, 0),
    ) -> tuple[float, float | None]:
        """Charge one finished generation; returns (usage.cost, upstream_inference_cost). `tokens`:
        its (prompt, completion) counts, which its /generation record gives (openapi.yaml)."""
        config = self.config
        upstream = None
        if config.byok:
            upstream, cost = cost, cost * config.byok_fee  # the provider bills the user; OpenRouter its fee
        # Billed as reported: usage.cost (a BYOK fee too) carries 12 places; a key charged the
        # unrounded cost was charged up to 5e-13 a request more than any reply said (break48 F3).
        cost = round(cost, 12)
        key.usage += cost + config.unreported_usd
        key.byok_usage += upstream or 0.0
        charged = cost + (upstream or 0.0) + config.unreported_usd
        self.stats.billed_usd += charged
        self.stats.credits_used += cost + config.unreported_usd
        if row:
            self.stats.billed_by_row[row] += charged
        if abandoned:
            self.stats.abandoned_billed += 1
        prompt, completion = tokens
        self.generations[generation] = generation_record(
            generation,
            model,
            provider,
            cost,
            upstream,
            config.byok,
            cancelled=False,
            tokens_prompt=prompt,
            tokens_completion=completion,
            native_tokens_prompt=prompt,
            native_tokens_completion=completion,
        )
        # A lying server's answers say less than it charged (`reported_share`); /generation tells the truth.
        return cost * config.reported_share, upstream

    async def _generation(self, request: web.Request) -> web.Response:
        if bearer(request) is None:
            return error_response(401, "Missing Authentication header")
        found = self.generations.get(request.query.get("id", ""))
        if found is None:
            return error_response(404, "Resource not found")
        return json_response({"data": found})

    async def _endpoints(self, request: web.Request) -> web.Response:
        model = f"{request.match_info['author']}/{request.match_info['slug']}"
        if model not in self.config.prices:
            return error_response(404, "Resource not found")
        return json_response(
            {
                "data": {
                    "id": model,
                    "name": model,
                    "created": 1700000000,
                    "description": "A simulated model.",
                    "architecture": {"modality": "text->text", "tokenizer": self.config.tokenizer},
                    "endpoints": [e.as_json(model) for e in endpoints_for(self.config, model)],
                }
            }
        )

    async def _credits(self, request: web.Request) -> web.Response:
        if bearer(request) != self.config.management_key:
            return error_response(403, "Only management keys can perform this operation")
        return json_response(
            {"data": {"total_credits": self.config.account_credits, "total_usage": self.stats.credits_used}}
        )


def usage_block(
    prompt_tokens: int, completion_tokens: int, cost: float, byok: bool, upstream: float | None
) -> dict[str, Any]:
    """A reply's `usage`, streamed or not (OpenAPI ChatUsage: cost_details with its prompt and
    completion parts, or null)."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "cost": round(cost, 12),
        "is_byok": byok,
        "cost_details": None
        if upstream is None
        else {
            "upstream_inference_cost": upstream,
            "upstream_inference_prompt_cost": upstream,
            "upstream_inference_completions_cost": 0.0,
        },
    }
