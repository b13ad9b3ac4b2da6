"""Worst-case cost of a request: a bound, not a guess.

Price: `/models` shows the top provider's price, but routing may pick any endpoint the
request's provider settings allow, so the worst case takes, per price component, the
highest price among those endpoints (`/models/{author}/{slug}/endpoints`, read once per
model), raised by every `pricing.overrides` entry that can apply to the request (a
long-context entry when the prompt bound passes its threshold; every time window, since
a run can span them). `provider.max_price` caps it: the router does not use an endpoint
above it (guides/routing/provider-selection.mdx, "Max Price"). Endpoint discounts are
ignored (they only lower a price).

Tokens: the prompt is bounded at one token per UTF-8 byte plus 8 per message. Byte-level
BPE tokenizers (and SentencePiece with byte fallback) never produce more tokens than
bytes, so this holds for any text; on English (about 4 bytes a token) it reserves about
four times the prompt's real cost. The completion is costed at `max_tokens` (or, when
unset, the endpoint's maximum completion tokens, which is what OpenRouter reserves) at
the dearer of the completion and internal-reasoning prices.

Components: the request price, the image price per image part, the web-search price
once for `:online` models or the web plugin (the docs do not bound the number of
searches per request; one is what the plugin's default does), and the cache-write price
when a message asks for caching (`cache_control`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from ._client import ModelInfo
from ._matrix import Request
from ._pricing import PRICE_KEYS, EndpointPrice, Override

PER_MESSAGE_TOKENS = 8
PER_M = 1e-6
_PER_TOKEN = ("prompt", "completion")  # max_price gives these in USD per million tokens


def message_bytes(content: Any) -> int:
    if isinstance(content, str):
        return len(content.encode("utf-8"))
    return len(json.dumps(content, ensure_ascii=False).encode("utf-8"))


def prompt_token_bound(request: Request) -> int:
    messages = request.body["messages"]
    return sum(message_bytes(m.get("content", "")) for m in messages) + PER_MESSAGE_TOKENS * len(messages)


def _images(request: Request) -> int:
    count = 0
    for message in request.body["messages"]:
        content = message.get("content")
        if isinstance(content, list):
            count += sum(1 for part in content if isinstance(part, dict) and part.get("type") == "image_url")
    return count


def _web_searches(request: Request, model: str) -> int:
    plugins = request.body.get("plugins") or []
    web = any(isinstance(p, dict) and p.get("id") == "web" for p in plugins)
    return 1 if web or model.endswith(":online") or request.body.get("web_search_options") else 0


def _caches(request: Request) -> bool:
    # cache_control sits in content parts; plain string messages cannot ask for caching.
    parts = [m.get("content") for m in request.body["messages"] if isinstance(m.get("content"), list)]
    return bool(parts) and "cache_control" in json.dumps(parts)


@dataclass
class PriceBasis:
    """The prices a model's requests are costed at, and where each came from (for `plan`)."""

    model: str
    source: str  # "endpoints" or "models list (top provider)"
    endpoints: list[EndpointPrice]  # the ones the provider settings allow
    excluded: int  # endpoints the provider settings rule out
    caps: dict[str, float]  # provider.max_price, per token / per unit

    def __post_init__(self) -> None:
        self._thresholds = sorted(
            {o.min_prompt_tokens for e in self.endpoints for o in e.overrides if o.min_prompt_tokens is not None}
        )
        self._cache: dict[int, tuple[dict[str, float], dict[str, str], list[str]]] = {}

    @property
    def known(self) -> bool:
        return bool(self.endpoints) and all(e.known for e in self.endpoints)

    def prices(self, prompt_tokens: int) -> tuple[dict[str, float], dict[str, str], list[str]]:
        """Highest price per component, which endpoint set it, and the overrides counted."""
        # Only the number of long-context thresholds the prompt passes changes the answer.
        tier = sum(1 for t in self._thresholds if prompt_tokens > t)
        if tier not in self._cache:
            self._cache[tier] = self._prices(prompt_tokens)
        return self._cache[tier]

    def _prices(self, prompt_tokens: int) -> tuple[dict[str, float], dict[str, str], list[str]]:
        best: dict[str, float] = {}
        source: dict[str, str] = {}
        counted: list[str] = []
        for endpoint in self.endpoints:
            candidates: list[tuple[dict[str, float], Override | None]] = [(endpoint.prices, None)]
            for entry in endpoint.overrides:
                if entry.min_prompt_tokens is None or prompt_tokens > entry.min_prompt_tokens:
                    candidates.append((entry.prices, entry))
            for prices, override in candidates:
                for key, price in prices.items():
                    if price > best.get(key, -1.0):
                        best[key] = price
                        source[key] = endpoint.tag + (f" [{override.describe()}]" if override else "")
                        if override is not None:
                            counted.append(f"{endpoint.tag}: {override.describe()}")
        for key, cap in self.caps.items():
            if key in best and best[key] > cap:
                best[key], source[key] = cap, "provider.max_price"
        return best, source, sorted(set(counted))

    def max_completion_tokens(self) -> int | None:
        values = [e.max_completion_tokens or e.context_length for e in self.endpoints]
        known = [v for v in values if v]
        return max(known) if known else None

    def describe(self, prompt_tokens: int) -> str:
        prices, source, counted = self.prices(prompt_tokens)
        if not self.known:
            return "no known price"
        parts = [
            f"{key} ${prices[key] / PER_M:.4g}/M from {source[key]}"
            for key in ("prompt", "completion")
            if key in prices
        ]
        parts += [f"{key} ${prices[key]:.4g} from {source[key]}" for key in PRICE_KEYS[2:] if prices.get(key)]
        where = f"{self.source}, {len(self.endpoints)} endpoint(s) allowed"
        if self.excluded:
            where += f", {self.excluded} excluded by provider settings"
        return f"{where}: " + "; ".join(parts) + (f"; overrides counted: {', '.join(counted)}" if counted else "")


def _allowed(endpoints: list[EndpointPrice], provider: dict[str, Any]) -> list[EndpointPrice]:
    """The endpoints the request's `provider` object lets the router use (provider-selection.mdx)."""
    allowed = endpoints
    only = provider.get("only")
    if only:
        allowed = [e for e in allowed if any(e.matches(s) for s in only)]
    ignore = provider.get("ignore")
    if ignore:
        allowed = [e for e in allowed if not any(e.matches(s) for s in ignore)]
    if provider.get("allow_fallbacks") is False and provider.get("order"):
        allowed = [e for e in allowed if any(e.matches(s) for s in provider["order"])]
    quantizations = provider.get("quantizations")
    if quantizations:
        allowed = [e for e in allowed if e.quantization is None or e.quantization in quantizations]
    caps = _caps(provider)
    # An endpoint priced above max_price is not routed to.
    allowed = [e for e in allowed if all(e.prices.get(k, 0.0) <= cap for k, cap in caps.items())]
    # Settings that rule out every endpoint make the request fail unbilled; costing all of
    # them instead keeps the bound safe if our reading of the settings is wrong.
    return allowed or endpoints


def _caps(provider: dict[str, Any]) -> dict[str, float]:
    max_price = provider.get("max_price") or {}
    return {
        key: float(value) * (PER_M if key in _PER_TOKEN else 1.0)
        for key, value in max_price.items()
        if key in PRICE_KEYS and isinstance(value, (int, float))
    }


class CostModel:
    def __init__(
        self,
        models: dict[str, ModelInfo] | None,
        cost_margin: float = 0.0,
        endpoints: dict[str, list[EndpointPrice] | None] | None = None,
    ) -> None:
        self.models = models
        self.cost_margin = cost_margin
        self.endpoints = endpoints or {}
        self._bases: dict[tuple[str, str], PriceBasis | None] = {}

    def basis(self, model: str, provider: dict[str, Any] | None) -> PriceBasis | None:
        # orjson: this runs for every request, and json.dumps was measurable there.
        key = (model, orjson.dumps(provider, option=orjson.OPT_SORT_KEYS).decode() if provider else "")
        if key not in self._bases:
            self._bases[key] = self._basis(model, provider or {})
        return self._bases[key]

    def _basis(self, model: str, provider: dict[str, Any]) -> PriceBasis | None:
        listed = self.endpoints.get(model)
        if listed:
            allowed = _allowed(listed, provider)
            return PriceBasis(model, "endpoints", allowed, len(listed) - len(allowed), _caps(provider))
        info = self.models.get(model) if self.models else None
        if info is None or info.price is None:
            return None
        return PriceBasis(model, "models list (top provider)", [info.price], 0, _caps(provider))

    def completion_cap(self, request: Request, basis: PriceBasis | None = None) -> int | None:
        # max_completion_tokens is the spec's name; max_tokens the deprecated one (parameters.mdx).
        max_tokens = request.body.get("max_completion_tokens") or request.body.get("max_tokens")
        if max_tokens:
            return int(max_tokens)
        from_endpoints = basis.max_completion_tokens() if basis is not None else None
        info = self.models.get(request.model) if self.models else None
        from_model = (info.max_completion_tokens or info.context_length) if info is not None else None
        return max(from_endpoints or 0, from_model or 0) or None

    def _cost(
        self, request: Request, model: str, prompt: int, completion: int, token_factor: float = 1.0
    ) -> float | None:
        basis = self.basis(model, request.body.get("provider"))
        if basis is None or not basis.known:
            return None
        prices, _, _ = basis.prices(prompt)
        prompt_price = prices.get("prompt", 0.0)
        if _caches(request):
            prompt_price = max(prompt_price, prices.get("input_cache_write", 0.0))
        per_token = prompt * prompt_price + completion * max(
            prices.get("completion", 0.0), prices.get("internal_reasoning", 0.0)
        )
        return (
            token_factor * per_token
            + prices.get("request", 0.0)
            + _images(request) * prices.get("image", 0.0)
            + _web_searches(request, model) * prices.get("web_search", 0.0)
        )

    def worst_case(self, request: Request, token_factor: float = 1.0) -> float | None:
        """USD at worst, margin included; None when a price involved is unknown.

        `token_factor` scales the per-token prices only: 0.5 for the Batch API, which bills
        "typically 50% of the model's standard per-token pricing" while non-token components
        are not uniformly discounted (batch-quickstart.mdx, Pricing), so they stay at full price.
        """
        if self.models is None:
            return None
        worst = 0.0
        prompt = prompt_token_bound(request)
        # With a fallback list, any of the models may answer: cost the dearest.
        for model in [request.model, *request.body.get("models", [])]:
            completion = self.completion_cap(request, self.basis(model, request.body.get("provider"))) or 0
            cost = self._cost(request, model, prompt, completion, token_factor)
            if cost is None:
                return None
            worst = max(worst, cost)
        return worst * (1 + self.cost_margin)

    def charge_from_usage(self, request: Request, usage: dict[str, Any]) -> float | None:
        """An upper bound of an answer's charge from its token counts, when it reported no cost."""
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if not isinstance(prompt, int) or not isinstance(completion, int) or self.models is None:
            return None
        costs = [self._cost(request, m, prompt, completion) for m in [request.model, *request.body.get("models", [])]]
        known = [c for c in costs if c is not None]
        return max(known) if known and len(known) == len(costs) else None

    def describe(self, request: Request) -> str:
        basis = self.basis(request.model, request.body.get("provider"))
        return "no price" if basis is None else basis.describe(prompt_token_bound(request))
