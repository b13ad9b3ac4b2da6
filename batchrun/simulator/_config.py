"""The simulator's settings: one SimConfig, also set as `--sim KEY=VALUE`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

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
VARIANTS = ("nitro", "floor", "exacto", "free", "online", "thinking", "extended")  # model-variants/*.mdx
# hang: billed, then no reply; stall: billed, headers (with X-Generation-Id) then no body;
# cut: billed, half the body then a reset; truncate: billed, JSON cut short; reset: not billed;
# midstream: a streamed answer ends with the documented mid-stream error event.
FAULTS = (
    "reset",
    "cut",
    "truncate",
    "hang",
    "stall",
    "midstream",
    "error200",
    "choice_error",
    "cold_start",  # an empty completion with finish_reason null (errors-and-debugging.mdx)
    "capacity_exhausted",  # 429 availability error, retryable, with retry_after
    "temporarily_unavailable",  # 503 availability error, retryable, with retry_after
)


def option_key(key: str) -> str:
    """A --sim setting's name as it is read: dashes become underscores in option names only,
    never in a model id after the dot (`judge-bias` is `judge_bias`)."""
    head, dot, tail = key.strip().partition(".")
    return head.replace("-", "_") + dot + tail


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
    rate_limit_header: str = "reset"  # reset (X-RateLimit-*, epoch ms) | retry-after | retry-after-ms | both | none
    rate_limit_window: str = "fixed"  # or "sliding": at most N requests in any window-long interval
    rate_limit_per_model: bool = False  # each model its own window; every :free model shares one
    free_rpm: float | None = None  # the :free pool's per-minute limit (limits.mdx)
    free_daily_cap: int | None = None  # requests per day for models ending in ":free"
    key_limit: float | None = None  # USD on the account key; None = no cap
    key_byok_in_limit: bool = False  # the account key's include_byok_in_limit: its limit counts BYOK spend
    require_key: str | None = None  # when set, any other bearer token gets a 401
    management_key: str = "sim-management-key"
    prices: dict[str, tuple[float, float, float]] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    accuracy: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_ACCURACY))
    cost_noise: float = 0.0  # billed cost = list cost x (1 + U(-noise, +noise))
    unreported_usd: float = 0.0  # charged to the key per answer but missing from usage.cost
    reported_share: float = 1.0  # usage.cost is the charge times this (0.1: under-reports 10x)
    models_page: int | None = None  # page GET /models even without offset/limit (a paging server)
    account_api: bool = True  # False: no /key, /models, /keys, like a local OpenAI-compatible server
    judge_bias: float = 0.0  # as a grader: share of failing answers it passes anyway (leniency)
    judge_unparseable: float = 0.0  # as a grader: share of replies that are prose, not the verdict JSON
    # `alias.X=Y`: X (an alias, or a ~author/family-latest slug) answers as the listed model Y
    aliases: dict[str, str] = field(default_factory=dict)
    # `private.MODEL=p,c`: priced and served, but not in /models (guides/routing/private-models.mdx)
    private_models: set[str] = field(default_factory=set)
    content_parts: bool = False  # answer `content` as an array of text parts (ChatAssistantMessage)
    # model -> availability code answered to every request for it (`unavailable.MODEL=CODE`); a
    # retryable one (capacity_exhausted, temporarily_unavailable) with a retry_after of 60 s
    unavailable: dict[str, str] = field(default_factory=dict)
    # Batch API (simulator/_batches.py): seconds in each state, by the simulator's clock.
    batch_validating_s: float = 1.0
    batch_in_progress_s: float = 2.0
    batch_finalizing_s: float = 1.0
    batch_outcome: str = "completed"  # or failed | expired | cancelled, after in_progress
    batch_item_error_rate: float = 0.0  # share of items answered with a per-item error
    batch_item_usage: bool = True  # result bodies carry usage (the quickstart's example has none)
    batch_usage: bool = True  # a completed batch carries `usage` (false: no cost anywhere; a server that omits it)
    batch_cancel_api: bool = False  # serve an (undocumented) OpenAI-shaped cancel endpoint
    batch_price_share: float = 0.5  # of per-token prices; the docs say "typically" 50%
    created_keys_unlimited: bool = False  # POST /keys ignores the limit asked for (a server that lies)
    # Billing (see _billing): routing over each model's endpoints: top | dearest | spread
    routing: str = "top"
    tokenizer: str = "light"  # light: 4 characters a token; heavy: a token per UTF-8 byte
    overrides: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # model -> pricing.overrides
    byok: bool = False  # answers are BYOK: usage.cost is the fee, upstream_inference_cost the provider's
    byok_fee: float = 0.05
    account_credits: float = 100.0  # total_credits at /credits
    stream_chunk_tokens: int = 4  # tokens per SSE chunk
    stream_chunk_ms: float = 0.0  # delay between SSE chunks (generation speed)
    stream_padding: int = 0  # extra words (" more") every answer carries: long answers and streams
    # Reasoning and web search (see _extras): `reasoning.MODEL=mandatory|enabled|optional` gives a
    # model the /models `reasoning` object; it reasons `reasoning_share` of its documented budget.
    reasoning: dict[str, dict[str, Any]] = field(default_factory=dict)
    reasoning_share: float = 1.0
    web_search_calls: int = 2  # searches a model runs with the web search server tool
    web_result_tokens: int = 500  # prompt tokens each search result adds

    def changes(self) -> dict[str, Any]:
        """What differs from a plain simulator, field by field (in a mapping, the entries that
        differ), JSON-ready: the settings in effect, however the options that made them were
        spelt or ordered (`price.X` and `private.X` both set X's price: the later one holds)."""
        plain = type(self)()
        found: dict[str, Any] = {}
        for item in fields(self):
            value, default = getattr(self, item.name), getattr(plain, item.name)
            if isinstance(value, dict):
                value = {k: v for k, v in value.items() if k not in default or default[k] != v}
            elif isinstance(value, set):
                value = sorted(value - default)
            elif value == default:
                continue
            if value != {} and value != []:
                found[item.name] = value
        return found

    def set_option(self, text: str) -> None:
        """Apply one KEY=VALUE; `fault.503=0.1` and `price.MODEL=p,c,r` address the dicts."""
        key, sep, value = text.partition("=")
        key = option_key(key)
        if not sep:
            raise ValueError(f"simulator option {text!r} is not KEY=VALUE")
        if key.startswith("fault."):
            name = key[6:]
            if not ((name.isascii() and name.isdigit() and 400 <= int(name) <= 599) or name in FAULTS):
                # A 1xx, 2xx or 3xx is not an error reply: a 100 left each attempt hanging (break27 m5).
                raise ValueError(
                    f"unknown fault {name!r}: use an HTTP error status (400-599) or one of {', '.join(FAULTS)}"
                )
            self.faults[name] = _number(key, value)
            return
        if key.startswith("price."):
            self.prices[key[6:]] = _prices(key, value)
            return
        if key.startswith("accuracy."):
            self.accuracy[key[9:]] = _number(key, value)
            return
        if key.startswith("alias."):
            self.aliases[key[6:]] = value
            return
        if key.startswith("private."):
            self.prices[key[8:]] = _prices(key, value)
            self.private_models.add(key[8:])
            return
        if key.startswith("reasoning."):
            self.reasoning[key[10:]] = reasoning_object(value)
            return
        if key.startswith("unavailable."):
            from ._errors import AVAILABILITY

            if value not in AVAILABILITY:
                raise ValueError(f"unknown availability code {value!r}: use one of {', '.join(AVAILABILITY)}")
            self.unavailable[key[12:]] = value
            return
        kinds = {f.name: f for f in fields(self)}
        if key not in kinds or key in (
            "faults",
            "prices",
            "accuracy",
            "unavailable",
            "aliases",
            "private_models",
            "overrides",
            "reasoning",
        ):
            raise ValueError(f"unknown simulator option {key!r}")
        current = getattr(self, key)
        if isinstance(current, bool):
            if value.lower() not in _TRUE + _FALSE:  # `byok=ture` simulated no BYOK, silently (out-102 F5)
                raise ValueError(f"use true or false, got {value!r}")
            setattr(self, key, value.lower() in _TRUE)
        elif key in (
            "rate_limit_header",
            "rate_limit_window",
            "require_key",
            "management_key",
            "jitter",
            "batch_outcome",
            "routing",
            "tokenizer",
        ):
            if value not in _TEXT_CHOICES.get(key, (value,)):  # a typo simulated nothing (break20 F23)
                raise ValueError(f"expected one of {' | '.join(_TEXT_CHOICES[key])}, got {value!r}")
            setattr(self, key, value)
        elif key in WHOLE_NUMBERS:
            setattr(self, key, int(_number(key, value)))
        else:
            setattr(self, key, _number(key, value))


# Options that name a behaviour: refused unless one of these (the keys are free text).
_TEXT_CHOICES = {
    "rate_limit_header": ("reset", "retry-after", "retry-after-ms", "both", "none"),
    "rate_limit_window": ("fixed", "sliding"),
    "jitter": ("uniform", "exponential"),
    "batch_outcome": ("completed", "failed", "expired", "cancelled"),
    "routing": ("top", "dearest", "spread"),
    "tokenizer": ("light", "heavy"),
}
# Options that are counts: refused unless whole.
WHOLE_NUMBERS = (
    "seed",
    "free_daily_cap",
    "stream_chunk_tokens",
    "stream_padding",
    "models_page",
    "web_search_calls",
    "web_result_tokens",
)
# The longest simulated wait an option may ask for: longer is a typo, not a test (and
# `latency_ms=inf` would hang the server's sleep for ever).
_MAX_MS = 3_600_000.0
_MAX_S = 86_400.0


def _number(key: str, text: str) -> float:
    """A simulator number: finite and 0 or more, and a duration at most a day (ms: an hour)."""
    try:
        # float() takes other scripts' digits ('٣': out-144 F8) and underscores ('1_0'), as the other options do not.
        if not text.isascii() or "_" in text:
            raise ValueError
        number = float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text.strip()!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"expected a finite number of 0 or more, got {text.strip()!r}")
    limit = _MAX_MS if key.endswith("_ms") else _MAX_S if key.endswith("_s") else None
    if limit is not None and number > limit:
        raise ValueError(f"must be at most {limit:,.0f}, got {text.strip()!r}")
    if key in WHOLE_NUMBERS and not number.is_integer():
        raise ValueError(f"expected a whole number, got {text.strip()!r}")
    return number


def reasoning_object(kind: str) -> dict[str, Any]:
    """The /models `reasoning` object (openapi ModelReasoning) of `mandatory`, `enabled` (on by
    default, may be turned off) or `optional` (off unless asked)."""
    if kind not in ("mandatory", "enabled", "optional"):
        raise ValueError(f"reasoning is mandatory, enabled or optional, got {kind!r}")
    return {
        "mandatory": kind == "mandatory",
        "default_enabled": kind != "optional",
        "default_effort": "medium",
        "supported_efforts": ["high", "medium", "low", "minimal"],
        "supports_max_tokens": True,
    }


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _prices(key: str, value: str) -> tuple[float, float, float]:
    """`prompt,completion[,request]`: $ per million tokens, and per request (one number was an IndexError)."""
    parts = [_number(key, p) for p in value.split(",")]
    if len(parts) not in (2, 3):
        raise ValueError(f"give prompt,completion[,request] (two or three numbers), got {value!r}")
    return (parts[0] * PER_M, parts[1] * PER_M, parts[2] if len(parts) > 2 else 0.0)
