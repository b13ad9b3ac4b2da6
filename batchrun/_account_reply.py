"""Account replies into typed values: /models, /model, /key, /keys (the management API).

The same contract as `_reply` for chat replies: a typed value or a classified
RequestFailed, every string scrubbed, every money figure checked.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from ._exceptions import Transient
from ._formats import short
from ._key_periods import PERIOD_FIELDS, period_field
from ._pricing import EndpointPrice, money, price, read_pricing
from ._reply import Reply, bad_reply, count, json_of, str_of, type_name
from ._scrub import Scrubber


@dataclass(frozen=True)
class ModelInfo:
    id: str
    prompt_price: float | None  # USD per token; None when the endpoint does not know (router models)
    completion_price: float | None
    request_price: float
    context_length: int | None
    max_completion_tokens: int | None
    price: EndpointPrice | None = None  # the full pricing object, overrides included (issue 14)
    # "mandatory" / "enabled" when the model reasons without being asked (reasoning-tokens.mdx:
    # the model's `reasoning.mandatory` / `default_enabled`); None otherwise.
    reasoning_default: str | None = None

    @property
    def price_known(self) -> bool:
        return self.prompt_price is not None and self.completion_price is not None


@dataclass(frozen=True)
class CreatedKey:
    key: str | None  # None: the reply named the key it created (its hash) but not its secret
    hash: str
    label: str | None
    server_ahead_s: float = 0.0  # how far the server's clock (its reply's Date) is ahead of ours


# A key's hash as OpenRouter gives it (64 hex digits; older docs show a key-like text): it goes
# into /keys/{hash} URLs with the management key, so "../credits?x=" never does (break23 F5).
_KEY_HASH = re.compile(r"[A-Za-z0-9_-]{8,200}")


def data_of(reply: Reply, what: str) -> Any:
    """The `data` member of a JSON object reply."""
    try:
        body = json_of(reply)
    except Transient:
        # Which call, and the likeliest cause: a base URL of a web site (a page, 200) was "the
        # body was truncated or not JSON", naming neither (out-149 note).
        page = reply.body.lstrip()[:1] == b"<"
        raise bad_reply(
            f"the {what} reply is {'an HTML page' if page else 'not JSON'}: is the base URL the API's (it ends in "
            "/api/v1)?",
            reply.status,
        ) from None
    if not isinstance(body, dict) or "data" not in body:
        raise bad_reply(f"the {what} reply has no data")
    return body["data"]


def _positive(value: Any) -> int | None:
    number = count(value)
    return number if number else None


def _flag_on(value: Any) -> bool:
    """A /models reasoning flag, read the dear way: on unless it is `false` or absent (null).

    A flag of another type ("true", 1, "no") cannot be believed to mean the cheap reading, as
    with `is_byok` (_pricing.generation_cost): reasoning on only raises the worst case (break14e E17)."""
    return value is not None and value is not False


def model_info(item: Any, scrub: Scrubber) -> ModelInfo | None:
    """One model of /models or /model/{author}/{slug}; None for an entry without an id."""
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        return None
    pricing: dict[str, Any] = item["pricing"] if isinstance(item.get("pricing"), dict) else {}
    top: dict[str, Any] = item["top_provider"] if isinstance(item.get("top_provider"), dict) else {}
    prompt, completion = price(pricing.get("prompt")), price(pricing.get("completion"))
    request = price(pricing.get("request", 0))
    if request is None:  # a request price that is there but unreadable: the price is unknown
        prompt = completion = None
    context, max_completion = _positive(item.get("context_length")), _positive(top.get("max_completion_tokens"))
    prices, overrides, problems = read_pricing(item.get("pricing"))
    block = item.get("reasoning")
    # A block that is there but no object (true, "mandatory", a list) cannot be read as "off"
    # either: it counts as reasoning always (verification of break14e, F5).
    reasoning: dict[str, Any] = block if isinstance(block, dict) else {} if block is None else {"mandatory": True}
    default = "mandatory" if _flag_on(reasoning.get("mandatory")) else None
    default = default or ("enabled" if _flag_on(reasoning.get("default_enabled")) else None)
    return ModelInfo(
        id=scrub.text(item["id"]),
        prompt_price=prompt,
        completion_price=completion,
        request_price=request or 0.0,
        context_length=context,
        max_completion_tokens=max_completion,
        reasoning_default=default,
        # The /models price as a one-endpoint entry, for the worst case (issue 14).
        price=EndpointPrice(
            "top provider",
            "top provider",
            prices,
            overrides,
            max_completion_tokens=max_completion,
            context_length=context,
            known=not problems and prompt is not None and completion is not None,
            problem=", ".join(problems),
        ),
    )


def parse_models(reply: Reply, scrub: Scrubber) -> dict[str, ModelInfo]:
    """GET /models as {id: ModelInfo}; items without an id are not models anyone can ask for."""
    items = data_of(reply, "/models")
    if not isinstance(items, list):
        raise bad_reply("the /models data is not a list")
    infos = (model_info(item, scrub) for item in items)
    return merge_models({}, (info for info in infos if info is not None))


def merge_models(found: dict[str, ModelInfo], infos: Iterable[ModelInfo]) -> dict[str, ModelInfo]:
    """`found` with `infos` added; a model listed twice (in a page or across pages) keeps the
    dearer reading of each price, as every price basis does (break36 F1: the later, cheaper
    listing was believed: a $0.02 budget billed $0.12)."""
    for info in infos:
        found[info.id] = info if info.id not in found else _dearer(found[info.id], info)
    return found


def _dearer(a: ModelInfo, b: ModelInfo) -> ModelInfo:
    if a == b:
        return a

    def most(x: float | None, y: float | None) -> float | None:
        return None if x is None or y is None else max(x, y)  # an unknown price stays unknown

    price = a.price if b.price is None else b.price if a.price is None else _dearer_endpoint(a.price, b.price)
    return replace(
        a,
        prompt_price=most(a.prompt_price, b.prompt_price),
        completion_price=most(a.completion_price, b.completion_price),
        request_price=max(a.request_price, b.request_price),
        # The larger cap: a request without max_tokens is held at it.
        max_completion_tokens=None
        if None in (a.max_completion_tokens, b.max_completion_tokens)
        else max(a.max_completion_tokens or 0, b.max_completion_tokens or 0),
        price=price,
        reasoning_default=a.reasoning_default or b.reasoning_default,
    )


def _dearer_endpoint(a: EndpointPrice, b: EndpointPrice) -> EndpointPrice:
    """Each price at the larger of the two, every override of both (each raises what it applies to)."""
    prices = {k: max(a.prices.get(k, 0.0), b.prices.get(k, 0.0)) for k in a.prices.keys() | b.prices.keys()}
    problem = "; ".join(p for p in (a.problem, b.problem) if p)
    return replace(a, prices=prices, overrides=a.overrides + b.overrides, known=a.known and b.known, problem=problem)


def next_models_page(reply: Reply) -> str | None:
    """The next page of GET /models, as a path on our own base URL; None on the last page.

    openapi.yaml `getModels`: `offset` and `limit` page the list ("when both offset and limit
    are omitted, the full list is returned"), and `links.next` is "URL for the next page of
    results, or null if this is the last page" (the example: `/api/v1/models?offset=500&limit=500`).
    Only its offset and limit are taken, as numbers: the key never follows a server's URL
    to another host or path."""
    try:
        body = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        return None
    links = body.get("links") if isinstance(body, dict) else None
    link = links.get("next") if isinstance(links, dict) else None
    if not isinstance(link, str):
        return None
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)
    numbers: dict[str, int] = {}
    for name in ("offset", "limit"):
        values = query.get(name, [])
        if len(values) != 1 or not (values[0].isascii() and values[0].isdigit()) or len(values[0]) > 9:
            return None
        numbers[name] = int(values[0])
    if numbers["limit"] < 1:
        return None
    return f"/models?offset={numbers['offset']}&limit={numbers['limit']}"


# byok_usage too: a key whose limit includes BYOK counts it as spend (_reconcile.key_usage).
_KEY_MONEY = (
    "limit",
    "usage",
    "usage_daily",
    "usage_weekly",
    "usage_monthly",
    "byok_usage",
    "byok_usage_daily",
    "byok_usage_weekly",
    "byok_usage_monthly",
)


# limit_reset (limits.mdx, openapi's key schemas): the usage its limit is spent from. Another
# value than these three, or null, is read as never resetting: the all-time usage, the dearest.
def unknown_reset(key: dict[str, Any] | None) -> str | None:
    """The key's limit_reset when it is none of the documented ones: its all-time usage is
    taken as spent from its limit, which may refuse an honest key (said: verify49 N3)."""
    reset = key.get("limit_reset") if key and key.get("limit") is not None else None
    if reset is None or str(reset).lower() in PERIOD_FIELDS:
        return None
    shown = repr(short(reset, 40)) if isinstance(reset, str) else "not text"  # 1, true (verify50 N6)
    return (
        f"warning: the key's limit_reset ({shown}) is none of daily, weekly, monthly or null "
        "(limits.mdx): its all-time usage is counted against its limit"
    )


def _not_money(value: Any) -> str:
    kind = type_name(value)
    return "a negative or not finite number" if kind == "a number" else kind


def parse_key_data(data: Any, scrub: Scrubber, what: str) -> dict[str, Any]:
    """A key's data (GET /key, GET /keys/{hash}) with its money fields checked."""
    if not isinstance(data, dict):
        raise bad_reply(f"the {what} data is not an object")
    key: dict[str, Any] = {  # its texts (a label) cut after scrubbing: a 3 MB label was printed whole (out-178 F6)
        scrub.text(str(k))[:100]: scrub.text(v)[:200] if isinstance(v, str) else v
        for k, v in data.items()
        if isinstance(v, (str, bool, type(None)))
    }
    if not isinstance(data.get("limit_reset"), (str, bool, type(None))):
        key["limit_reset"] = True  # a number or an object: no reset the docs give, said (unknown_reset)
    for name in _KEY_MONEY:
        if name in data:
            key[name] = money(data[name])
    # Both required by OpenAPI's KeyResponse (GET /key), null when the key has no limit: a reply
    # with neither was read as a key without one, and a run spent 5x the key's limit (out-184 F5).
    # One of them bounds the credit (the other is read as the dearer of the two, below).
    if what == "/key" and "limit" not in data and "limit_remaining" not in data:
        raise bad_reply(f"the {what} data has no limit nor limit_remaining: whether the key has a limit is unknown")
    remaining = data.get("limit_remaining")
    # null means "no per-key limit"; anything else must be a number (it may be negative
    # once a key overspent), or the credit is unknown and nothing can be promised.
    if remaining is not None and (isinstance(remaining, bool) or not isinstance(remaining, (int, float))):
        raise bad_reply(f"the {what} limit_remaining is {type_name(remaining)}, not a number")
    try:
        credit = None if remaining is None else float(remaining)
    except OverflowError:  # an integer of hundreds of digits (break14b M8): no credit a key has
        raise bad_reply(f"the {what} limit_remaining is a number too large to be a credit") from None
    if credit is not None and not math.isfinite(credit):
        raise bad_reply(f"the {what} limit_remaining is not a finite number")
    limit = key.get("limit")
    if data.get("limit") is not None and limit is None:
        # null is "no per-key limit"; a limit of "0.0001", NaN or -1 was read as none, and a run
        # spent four times the key's limit (out-156 F1).
        raise bad_reply(f"the {what} limit is {_not_money(data['limit'])}, not an amount in USD")
    if limit is not None:
        # limit_remaining is the limit less the period's usage (limits.mdx): never above the
        # limit, and a key with a limit has one. A reply saying otherwise (more left than the
        # limit, or null beside it) is read as the dearer of the two (break44 F1: believed, a
        # run spent twice the key's limit).
        credit = limit if credit is None else min(credit, limit)
        # Nor above the limit less the usage of its period (break47 F1: a key at its limit said
        # 0.01 left, and a run spent 80% past the limit).
        period = period_field(data.get("limit_reset"))  # null: it never resets
        used = key.get(period)
        if used is None and data.get(period) is not None:  # what the limit has counted is unknown
            raise bad_reply(f"the {what} {period} is {_not_money(data[period])}, not an amount in USD")
        if used is not None:
            byok = key.get(f"byok_{period}") if data.get("include_byok_in_limit") is True else None
            credit = min(credit, limit - used - (byok or 0.0))
    if "limit_remaining" in data or limit is not None:
        key["limit_remaining"] = credit
    free = data.get("free_model_daily_requests")
    if isinstance(free, dict):
        key["free_model_daily_requests"] = {k: count(free.get(k)) for k in ("limit", "remaining", "used")}
    return key


def parse_created_key(reply: Reply, scrub: Scrubber) -> CreatedKey:
    """POST /keys: {"key": ..., "data": {"hash", "label", ...}}."""
    body = json_of(reply)
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("hash"), str) or not data["hash"]:
        raise bad_reply("the /keys reply had no key hash", reply.status)
    if not _KEY_HASH.fullmatch(data["hash"]):
        raise bad_reply("the /keys reply had a key hash that is not one", reply.status)
    key = body.get("key") if isinstance(body, dict) else None
    key = key if isinstance(key, str) and key else None
    if key is not None:
        # Known to the scrubber before its label is read: a label holding the key itself was
        # printed whole and written to the summary CI uploads (break53 F1).
        scrub.add(key)
    return CreatedKey(key, data["hash"], str_of(data.get("label"), scrub))
