"""A model's price basis: the prices its worst case takes, per component, and where each
came from (the endpoints the request's provider settings allow, and the /models price).
See _costs for the rules; `plan` prints `describe`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._pricing import PRICE_KEYS, SERVICE_TIERS, EndpointPrice, Override

PER_M = 1e-6
_PER_TOKEN = ("prompt", "completion")  # max_price gives these in USD per million tokens


@dataclass
class PriceBasis:
    """The prices a model's requests are costed at, and where each came from (for `plan`)."""

    model: str
    source: str  # "endpoints", "endpoints and /models", "models list (top provider)"
    endpoints: list[EndpointPrice]  # the ones the provider settings allow, and the /models price
    excluded: int  # endpoints the provider settings rule out
    caps: dict[str, float]  # provider.max_price, per token / per unit
    problem: str = ""  # why the price is unknown; empty when known
    allowed: int = 1  # listed endpoints the provider settings allow

    def __post_init__(self) -> None:
        self._thresholds = sorted(
            {o.min_prompt_tokens for e in self.endpoints for o in e.overrides if o.min_prompt_tokens is not None}
        )
        self._cache: dict[int, tuple[dict[str, float], dict[str, str], list[str]]] = {}
        if not self.problem:
            bad = [e for e in self.endpoints if not e.known]
            if not self.endpoints:
                self.problem = "no endpoint has a price"
            elif bad:
                self.problem = "; ".join(f"{e.tag}: {e.problem or 'no price'}" for e in bad[:3])

    @property
    def known(self) -> bool:
        return not self.problem

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
                    # max_price caps base prices only: provider-selection.mdx does not say the
                    # router filters on override prices (break-14b m1).
                    capped = override is None and price > self.caps.get(key, price)
                    if capped:
                        price = self.caps[key]
                    if price > best.get(key, -1.0):
                        best[key] = price
                        source[key] = endpoint.tag + (f" [{override.describe()}]" if override else "")
                        if capped:
                            source[key] = "provider.max_price"
                        elif override is not None:
                            counted.append(f"{endpoint.tag}: {override.describe()}")
        return best, source, sorted(set(counted))

    def max_completion_tokens(self) -> int | None:
        """The most any allowed endpoint may generate; None when one of them has no known maximum."""
        values = [e.max_completion_tokens or e.context_length for e in self.endpoints]
        return None if not values or not all(values) else max(v for v in values if v)

    def describe(self, prompt_tokens: int, keys: dict[str, str] | None = None) -> str:
        if not self.known:
            return f"no known price ({self.problem})"
        prices, source, counted = self.prices(prompt_tokens)
        wanted = keys or {k: "" for k in PRICE_KEYS}
        parts = [
            f"{key} ${prices[key] / PER_M:.4g}/M from {source[key]}"
            for key in ("prompt", "completion")
            if key in prices
        ]
        parts += [
            f"{key} ${prices[key]:.4g} from {source[key]}"
            for key in PRICE_KEYS[2:]
            if prices.get(key) and key in wanted
        ]
        where = f"{self.source}, {self.allowed} endpoint(s) allowed"
        if self.excluded:
            where += f", {self.excluded} endpoint(s) excluded by provider settings or service tier"
        return f"{where}: " + "; ".join(parts) + (f"; overrides counted: {', '.join(counted)}" if counted else "")


def opted_tiers(body: dict[str, Any], model: str) -> frozenset[str]:
    """The service tiers a request opts into for `model` (service-tiers.mdx, "How Routing
    Works"): `service_tier` priority (or its alias fast) or flex, Anthropic's native `speed:
    "fast"` ("fully interchangeable" with priority; an extra_body key), and the `:nitro`
    (priority) and `:floor` (flex) variants. A value OpenRouter does not document ("scale")
    may opt into either; "auto" is the default, that is no opt-in."""
    tiers: set[str] = set()
    asked = body.get("service_tier")
    if asked in ("priority", "fast"):
        tiers.add("priority")
    elif asked == "flex":
        tiers.add("flex")
    elif asked not in (None, "auto", "default"):
        tiers.update(SERVICE_TIERS)
    if body.get("speed") not in (None, "standard"):
        tiers.add("priority")
    # An explicit `service_tier: "default"` or a `provider.order` disables a variant's tier
    # admission; counting the tier anyway only raises the bound.
    if model.endswith(":nitro"):
        tiers.add("priority")
    elif model.endswith(":floor"):
        tiers.add("flex")
    return frozenset(tiers)


def _named(endpoint: EndpointPrice, slugs: Any) -> bool:
    return isinstance(slugs, list) and any(isinstance(s, str) and endpoint.matches(s) for s in slugs)


def _routable(endpoint: EndpointPrice, provider: dict[str, Any], tiers: frozenset[str]) -> bool:
    """Whether the provider settings let the router use this endpoint (provider-selection.mdx).

    A service tier endpoint (`openai/priority`) is routed to only when the request opts into
    its tier or names it by its full slug in `only` or `order`, and base slugs (`openai`) do
    not match it (break14e E4). Once its tier is opted into, it is counted whatever `only` or
    `order` name (the docs do not say how they combine with `service_tier`): only an `ignore`
    naming it by its full slug rules it out."""
    only, ignore, order = provider.get("only"), provider.get("ignore"), provider.get("order")
    pinned = provider.get("allow_fallbacks") is False and bool(order)
    if endpoint.tier is not None and endpoint.tier in tiers:
        return not _named(endpoint, ignore)
    if endpoint.tier is not None and not (_named(endpoint, only) or _named(endpoint, order)):
        return False
    if only and not _named(endpoint, only):
        return False
    if ignore and _named(endpoint, ignore):
        return False
    return not (pinned and not _named(endpoint, order))


def allowed_endpoints(
    endpoints: list[EndpointPrice], provider: dict[str, Any], tiers: frozenset[str] = frozenset()
) -> tuple[list[EndpointPrice], dict[str, float]]:
    """The endpoints the request's `provider` object (and the service tiers it opts into) let
    the router use, and the max_price caps that may lower their prices (none when the
    settings rule out every endpoint: then nothing in our reading of them is trusted)."""
    allowed = [e for e in endpoints if _routable(e, provider, tiers)]
    quantizations = provider.get("quantizations")
    if quantizations:
        allowed = [e for e in allowed if e.quantization is None or e.quantization in quantizations]
    caps = max_price_caps(provider)
    # An endpoint priced above max_price is not routed to.
    allowed = [e for e in allowed if all(e.prices.get(k, 0.0) <= cap for k, cap in caps.items())]
    # Settings that rule out every endpoint make the request fail unbilled; costing all of
    # them, uncapped, instead keeps the bound safe if our reading of the settings is wrong
    # (capping them at max_price undid that: break-14b m1).
    return (allowed, caps) if allowed else (endpoints, {})


def max_price_caps(provider: dict[str, Any]) -> dict[str, float]:
    max_price = provider.get("max_price") or {}
    return {
        key: float(value) * (PER_M if key in _PER_TOKEN else 1.0)
        for key, value in max_price.items()
        if key in PRICE_KEYS and isinstance(value, (int, float))
    }
