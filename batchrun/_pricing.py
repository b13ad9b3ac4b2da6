"""Prices and charges as OpenRouter reports them, parsed and sanity-checked.

Sources (guides/overview/models.mdx, openapi `/models/{author}/{slug}/endpoints`,
`/generation`, `/credits`): prices are strings in USD per token (per request, image or
search for those components); `pricing.overrides` lists conditional prices (a prompt
token threshold, a daily UTC window); `discount` lowers an endpoint's price. A price
that is not a finite non-negative number is unknown ("-1" marks router models), and so is
a pricing object with any such price, or an override entry that cannot be read: a price
we cannot read is never silently replaced by a cheaper one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

# Price keys a worst case can involve; absent keys cost nothing (openapi.yaml, the
# endpoints' `pricing`: audio and audio_output per audio token, image_output per output
# image, image_token per image token, input_cache_write_1h per 1-hour cache-write token).
PRICE_KEYS = (
    "prompt",
    "completion",
    "request",
    "image",
    "web_search",
    "internal_reasoning",
    "input_cache_read",
    "input_cache_write",
    "input_cache_write_1h",
    "audio",
    "audio_output",
    "image_output",
    "image_token",
)
# A money figure above this is counted as this: more than any account holds, so a worst
# case that reaches it exceeds every budget anyway, and sums of such figures stay finite
# (1e308 twice is inf, which JSON cannot carry).
FLOAT_NOISE_USD = 1e-9  # a sum of money's float residue: below it, a figure is zero
MAX_USD = 1e12
# Service tiers with endpoints of their own (guides/features/service-tiers.mdx): listed with a
# tier-suffixed tag and the tier's price, routed to only when a request opts in.
SERVICE_TIERS = ("priority", "flex")
# Model-id suffixes that select routing, not another model (guides/routing/model-variants):
# their endpoints are the base model's. `:free` is a model of its own with its own endpoints.
_ROUTING_VARIANTS = (":nitro", ":floor", ":online", ":exacto", ":thinking", ":extended")


# A reply's charge this many times its attempt's worst case (and a cent above it) is not believed
# on its word: a server's "$9,999" for a $0.01 request, counted, stopped the run and every resume
# of it for good (out-109 F4). /generation, OpenRouter's own account of it, is asked first.
DOUBTED_TIMES = 100


# A charge above its attempt's worst case by more than this share (and a millionth of a
# dollar) contradicts the bound: it is counted as charged, and flagged (break-14b m6).
ABOVE_WORST_SHARE = 0.01


def above_worst(charge: float, worst: float) -> bool:
    """Whether a charge passed its attempt's worst case (a worst case of 0 is not one: an unknown price)."""
    return worst > 0 and charge > worst * (1 + ABOVE_WORST_SHARE) + 1e-6


def doubted(charge: float, worst: float) -> bool:
    """Whether a reported charge is too far above its worst case to be taken before a lookup."""
    return worst > 0 and charge > worst * DOUBTED_TIMES and charge > worst + 0.01


def money(value: Any) -> float | None:
    """A USD charge from a server: a finite, non-negative JSON number, or None (unknown).
    Booleans and strings are not numbers here (`true` once counted as $1, and a /generation
    cost sent as "0.0000001" was believed: break14c N4); an integer too large for a float
    is the most there is. At most MAX_USD, so sums of costs stay finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return MAX_USD if value > 0 else None
    # + 0.0: a -0.0 is 0.0, as the records write it (out-142 L4: usage.cost kept `-0.0`).
    return min(number, MAX_USD) + 0.0 if math.isfinite(number) and number >= 0 else None


# No one request costs this much (the dearest listed model's longest answer is under $100): a
# larger charge for one attempt is a lie, not believed (unknown, its worst case held, looked up),
# never counted in full: one reply's 1e300 made every later resume of its file stop at once, exit
# 5 "resumable once there is money", though the key showed $0.00025 charged (out-104 F3).
MAX_CHARGE_USD = 10_000.0


def charge(value: Any) -> float | None:
    """One attempt's charge from a server (a reply's usage.cost, a generation's total_cost): as
    `money`, and believable (at most MAX_CHARGE_USD); None otherwise."""
    usd = money(value)
    return None if usd is None or usd > MAX_CHARGE_USD else usd


def price(value: Any) -> float | None:
    """A price from /models or /endpoints: OpenRouter sends decimal strings ("0.000001");
    "-1" marks a router model whose price is not known. Anything not finite and non-negative
    is unknown."""
    if isinstance(value, str):
        # A decimal as JSON writes one: float() also takes "1_0" (10), "١" (an Arabic-Indic one),
        # " 1 " and "inf", each a price no listing means (out-109 F5: $10 a token, a budget stop).
        if not _DECIMAL.fullmatch(value):
            return None
        value = float(value)
    return money(value)


_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")


def usd(amount: float) -> str:
    """A dollar figure for people: six decimals, or four significant digits when huge."""
    return f"{amount:.6f}" if abs(amount) < 1e9 else f"{amount:.4g}"


def usd_apart(first: float, second: float) -> tuple[str, str]:
    """Two dollar figures with as many decimals as tell them apart (up to 12): "needs up to
    $0.000053, $0.000053 is left" read as a stop with money to spare (break25)."""
    if max(abs(first), abs(second)) >= 1e9 or first == second:
        return usd(first), usd(second)
    shown = usd(first), usd(second)
    for decimals in range(7, 13):
        if shown[0] != shown[1]:
            break
        shown = f"{first:.{decimals}f}", f"{second:.{decimals}f}"
    return shown


def budget_message(worst: float | None, remaining: float | None, from_key: float) -> str:
    """Why the next request is not sent: what it needs against what is left, or that nothing is
    left even for a $0 one (a model listed at $0 may bill); with the key's part of what is spent."""
    needs, left = usd_apart(worst or 0, max(0.0, remaining or 0))
    text = f"the next request needs up to ${needs}, ${left} is left" if worst else "all of the limit is spent"
    if from_key < 5e-7:  # not "$0.000000 of what is spent ...": a float's residue (break41 F6)
        return text
    return text + f" (${usd(from_key)} of what is spent is the key's usage beyond the reported costs)"


@dataclass(frozen=True)
class Override:
    """One `pricing.overrides` entry: its conditions and the prices it sets."""

    min_prompt_tokens: float | None
    window: tuple[float, float] | None  # (utc_start, utc_end) as HHMM
    prices: dict[str, float]

    def describe(self) -> str:
        parts = []
        if self.min_prompt_tokens is not None:
            parts.append(f"prompt > {self.min_prompt_tokens:g} tokens")
        if self.window is not None:
            parts.append(f"UTC {int(self.window[0]):04d}-{int(self.window[1]):04d}")
        return " and ".join(parts) or "always"


@dataclass(frozen=True)
class EndpointPrice:
    """One provider endpoint of a model, as far as costing it needs."""

    provider: str
    tag: str
    prices: dict[str, float]  # base prices; a key missing here was not a valid price
    overrides: tuple[Override, ...] = ()
    quantization: str | None = None
    max_completion_tokens: int | None = None
    context_length: int | None = None
    known: bool = True  # every price valid, prompt and completion among them
    problem: str = ""  # why it is not known, for `plan` and the refusal

    @property
    def tier(self) -> str | None:
        """The service tier of a tier endpoint ("priority", "flex"), from its tier-suffixed tag
        (service-tiers.mdx: "a tier-suffixed `tag` (e.g. `openai/priority`)"); None otherwise."""
        suffix = self.tag.lower().rpartition("/")[2] if "/" in self.tag else ""
        return suffix if suffix in SERVICE_TIERS else None

    def matches(self, slug: str) -> bool:
        """Base-slug matching (provider-selection.mdx): "deepinfra" matches "deepinfra/turbo";
        but a service tier endpoint only by its full slug: tier endpoints "are **not** matched
        by base slugs" (break14e E4)."""
        slug = slug.lower()
        tag = self.tag.lower()
        if self.tier is not None:
            return slug == tag
        return slug in (tag, tag.split("/")[0], self.provider.lower())


def _read_prices(pricing: dict[str, Any]) -> tuple[dict[str, float], list[str]]:
    """The valid prices among PRICE_KEYS, and the keys present that are not prices (null is absent)."""
    prices: dict[str, float] = {}
    bad: list[str] = []
    for key in PRICE_KEYS:
        if pricing.get(key) is None:
            continue
        value = price(pricing[key])
        if value is None:
            bad.append(key)
        else:
            prices[key] = value
    # openapi PublicPricing: "the price is multiplied by (1 - discount)". From 0 to 1 it only lowers
    # a price (left out: the bound stays one); below 0 it raises them all, and past 1 or unread no
    # price is known (out-104 F5: a discount of -1 doubled every price, unseen).
    if (discount := pricing.get("discount")) is not None:
        rate = _finite(discount)
        if rate is None or rate > 1:
            bad.append("discount")
        elif rate < 0:
            prices = {key: min(value * (1 - rate), MAX_USD) for key, value in prices.items()}  # out-105 F7: 1e308
    return prices, bad


def _finite(value: Any) -> float | None:
    """A finite number, sent as one or as a decimal string; None otherwise."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _override(entry: Any) -> tuple[Override | None, list[str]]:
    if not isinstance(entry, dict):
        return None, ["an override that is not an object"]
    prices, bad = _read_prices(entry)
    problems = [f"override {k}" for k in bad]
    conditions: dict[str, float | None] = {}
    for name in ("min_prompt_tokens", "utc_start", "utc_end"):
        value = entry.get(name)
        conditions[name] = None if value is None else price(value)
        if value is not None and conditions[name] is None:
            problems.append(f"override {name}")
    start, end = conditions["utc_start"], conditions["utc_end"]
    return Override(
        min_prompt_tokens=conditions["min_prompt_tokens"],
        # A half-given window is read as always applying: the safe reading.
        window=(start, end) if start is not None and end is not None else None,
        prices=prices,
    ), problems


def parse_prices(pricing: Any) -> tuple[dict[str, float], tuple[Override, ...], bool]:
    """A pricing object: its valid base prices, its overrides, and whether it is known:
    prompt and completion valid, and no price or override that cannot be read."""
    prices, _, problems = read_pricing(pricing)
    return prices, _, not problems


def read_pricing(pricing: Any) -> tuple[dict[str, float], tuple[Override, ...], list[str]]:
    """Like parse_prices, with what made the price unknown (empty when it is known)."""
    if not isinstance(pricing, dict):
        return {}, (), ["no pricing object"]
    prices, bad = _read_prices(pricing)
    problems = [f"{k} {str(pricing[k])[:20]!r}" for k in bad]
    problems += [f"no {k} price" for k in ("prompt", "completion") if k not in prices and k not in bad]
    overrides = []
    listed = pricing.get("overrides")
    if listed is not None and not isinstance(listed, list):
        problems.append("overrides that are not a list")
    for entry in listed if isinstance(listed, list) else []:
        override, why = _override(entry)
        problems += why
        if override is not None:
            overrides.append(override)
    return prices, tuple(overrides), problems


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def parse_endpoints(items: Any) -> list[EndpointPrice] | None:
    """The endpoints of a listing; None unless it is a list of objects (an entry that is not
    one may be the dearest endpoint: the listing cannot be read, break14b C6)."""
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        return None
    out = []
    for item in items:
        prices, overrides, problems = read_pricing(item.get("pricing"))
        out.append(
            EndpointPrice(
                provider=str(item.get("provider_name") or "?")[:100],
                tag=str(item.get("tag") or item.get("provider_name") or "?")[:100],
                prices=prices,
                overrides=overrides,
                quantization=item.get("quantization") if isinstance(item.get("quantization"), str) else None,
                max_completion_tokens=_int(item.get("max_completion_tokens")),
                context_length=_int(item.get("context_length")),
                known=not problems,
                problem=", ".join(problems),
            )
        )
    return out


def endpoints_slug(model: str) -> str:
    for suffix in _ROUTING_VARIANTS:
        if model.endswith(suffix):
            return model[: -len(suffix)]
    return model


@dataclass(frozen=True)
class GenerationCost:
    """What `/generation` says one generation cost."""

    total_cost: float
    is_byok: bool = False
    upstream_inference_cost: float | None = None
    # Its token counts (native, as a reply's usage counts them), where the lookup gave them: a
    # stream whose usage chunk never came had `max_tokens` checks it could not decide (break66 F2).
    usage: dict[str, int] | None = None
    # False for a `total_cost` above MAX_CHARGE_USD: never counted, but a caller says it was
    # given (a killed run's lookup of $20,000 kept its worst case in silence: out-127 F3).
    believed: bool = True

    @property
    def charged(self) -> float:
        """What counts against a limit that includes BYOK spend (include_byok_in_limit)."""
        upstream = (self.upstream_inference_cost or 0.0) if self.is_byok else 0.0
        return self.total_cost + upstream


def says_byok(flag: object) -> bool:
    """An `is_byok` that is true, or is not a boolean: neither can be believed to mean "the fee
    is all" (break-14b M3)."""
    return flag is True or (flag is not None and not isinstance(flag, bool))


def parse_generation(data: Any, asked: str) -> GenerationCost | None:
    """The `/generation?id=` reply's cost, or None while it cannot be believed: a reply about
    another generation (its `id` is not the one asked for: openapi.yaml's example carries it)
    is not this one's cost, and a BYOK generation without its upstream cost is not known
    (usage-accounting.mdx: the provider's charge is `upstream_inference_cost`)."""
    if not isinstance(data, dict) or data.get("id") != asked:
        return None
    total = charge(data.get("total_cost"))
    if total is None:
        sent = money(data.get("total_cost"))
        return None if sent is None else GenerationCost(sent, believed=False)
    # As for an answer's usage (break-14b M3): a flag that is not a boolean, or an upstream
    # charge above 0, says BYOK; an upstream cost that cannot be read is not "none" (break14c N4).
    flag, sent_upstream = data.get("is_byok"), data.get("upstream_inference_cost")
    upstream = charge(sent_upstream)
    if sent_upstream is not None and upstream is None:
        return None
    # `is_byok: false` with an upstream cost: part of `total_cost`, not beside it (break32 F1).
    is_byok = says_byok(flag) or (flag is not False and bool(upstream))
    if is_byok and upstream is None:
        return None
    counts = {
        name: data.get(f"native_tokens_{kind}")
        for name, kind in (("prompt_tokens", "prompt"), ("completion_tokens", "completion"))
    }
    known = {name: n for name, n in counts.items() if type(n) is int and 0 <= n <= 2**31}  # not a bool, not absurd
    return GenerationCost(total, is_byok, upstream, known if len(known) == len(counts) else None)


def parse_balance(data: Any) -> float | None:
    if not isinstance(data, dict):
        return None
    total, used = money(data.get("total_credits")), money(data.get("total_usage"))
    # Below 0 when overdrawn: nothing goes out then, free models included (_ledger._fits, verify39).
    return None if total is None or used is None else total - used
