"""Worst-case cost of a request: a bound, not a guess.

Price: `/models` shows the top provider's price, but routing may pick any endpoint the
request's provider settings allow, so the worst case takes, per price component, the
highest price among those endpoints (`/models/{author}/{slug}/endpoints`, read once per
model) and the `/models` price itself (an endpoints list cheaper than `/models` does not
lower it), raised by every `pricing.overrides` entry that can apply to the request (a
long-context entry when the prompt bound passes its threshold; every time window, since
a run can span them). `provider.max_price` caps it: the router does not use an endpoint
above it (guides/routing/provider-selection.mdx, "Max Price"). Endpoint discounts are
ignored (they only lower a price). A price that cannot be read, an endpoints list that
could not be read, or a completion with no known maximum makes the worst case unknown:
a budget cannot be kept with it (refused unless `run.allow_unknown_prices`).

Tokens: the prompt is bounded at one token per byte of the whole encoded request body
(messages, tools, response_format, extra_body keys: all of it may reach the model as
prompt tokens) plus 8 per message. Byte-level BPE tokenizers (and SentencePiece with
byte fallback) never produce more tokens than bytes, so this holds for any text; on
English (about 4 bytes a token) it reserves about four times the prompt's real cost. The
completion is costed at `max_tokens` (or, when unset, the endpoint's maximum completion
tokens or context length, which is what OpenRouter reserves), raised to the reasoning budget
when the request may reason (_reasoning_bound; a model whose reasoning nothing bounds, Gemini
3, at its listed maximum), times `n`, at the dearest of the completion, internal-reasoning
and (when the request asks for image or audio output) image-token and audio-output prices.
The endpoints are those the provider settings allow and the service tiers the request opts
into (_price_basis).

Components: the request price, the image price per image part, the cache-write prices
when a message asks for caching (`cache_control`), the audio price for prompts with
audio parts, and with image output the image_output price for up to 10 images per answer
(the chat docs are silent on a count; 10 is the Image API's maximum `n`,
guides/overview/multimodal/image-generation.mdx).

A request whose inputs OpenRouter fetches or generates (an image or file by URL, web
search, server tools) has no bound from what it sends: its worst case is unknown
(_unbounded).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import orjson

from ._client import ChatResult, ModelInfo
from ._image_tokens import image_part_tokens
from ._matrix import Request
from ._price_basis import PriceBasis, allowed_endpoints, max_price_caps, opted_tiers
from ._pricing import EndpointPrice
from ._reasoning_bound import reasoning_budget, uncontrolled
from ._reply import count
from ._unbounded import unbounded_input

PER_MESSAGE_TOKENS = 8
IMAGES_PER_ANSWER = 10
# No tokenizer has a token longer than this many bytes: a token count below the answer's
# bytes / this is not a count (used to refuse implausible usage figures, never to reserve).
MAX_TOKEN_BYTES = 64

# An endpoints list that could not be read: its error kind, in place of the list.
EndpointsRead = list[EndpointPrice] | str | None


def message_bytes(content: Any) -> int:
    if isinstance(content, str):
        return len(content.encode("utf-8"))
    return len(json.dumps(content, ensure_ascii=False).encode("utf-8"))


def prompt_token_bound(request: Request) -> int:
    """Every byte of the body as sent, not only the messages: tool definitions, a JSON
    schema or extra_body keys are prompt tokens too (break-14 finding 1); and each inline
    image at its ceiling, since vision tokenizers count pixels, not bytes (break-14c N8)."""
    return len(request.payload) + PER_MESSAGE_TOKENS * len(request.body["messages"]) + image_part_tokens(request.body)


def _text_bytes(content: Any) -> int:
    if isinstance(content, str):
        return len(content.encode("utf-8"))
    if isinstance(content, list):
        return sum(
            len(p["text"].encode("utf-8"))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    return 0


def prompt_token_floor(request: Request) -> int:
    """Fewer prompt tokens than this cannot be: the messages' text at MAX_TOKEN_BYTES a token."""
    return math.ceil(sum(_text_bytes(m.get("content")) for m in request.body["messages"]) / MAX_TOKEN_BYTES)


def _parts(request: Request, kind: str) -> int:
    count = 0
    for message in request.body["messages"]:
        content = message.get("content")
        if isinstance(content, list):
            count += sum(1 for part in content if isinstance(part, dict) and part.get("type") == kind)
    return count


def _outputs(request: Request, modality: str) -> bool:
    modalities = request.body.get("modalities")
    return isinstance(modalities, list) and modality in modalities


def _choices(request: Request) -> int:
    n = request.body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def prediction_tokens(body: dict[str, Any]) -> int:
    """Predicted-output tokens a request may be billed beyond its answer: the predicted tokens
    not used are billed "at completion token rates" and max_tokens does not cap them
    (openapi.yaml: Prediction, completion_tokens_details.rejected_prediction_tokens; break14c
    N13). At most one token a byte of the prediction as sent."""
    prediction = body.get("prediction")
    return 0 if prediction is None else len(orjson.dumps(prediction))


def applicable_keys(request: Request, model: str) -> dict[str, str]:
    """The price components this request can be charged, and what each is charged on."""
    # A cache write is possible on any request where the endpoint lists its price: with
    # cache_control in a part, at the top level ("automatic caching"), or with none at all on
    # models that write caches without opt-in (prompt-caching.mdx; break14c N14).
    keys = {
        "prompt": "prompt",
        "completion": "completion",
        "internal_reasoning": "completion",
        "request": "once",
        "input_cache_read": "prompt",  # caching may be automatic (prompt-caching.mdx): any request may read
        "input_cache_write": "prompt",
        "input_cache_write_1h": "prompt",
    }
    if _parts(request, "input_audio"):
        keys["audio"] = "prompt"
    images = _parts(request, "image_url")
    if images:
        keys.update(image="per image", image_token="prompt")
    if _outputs(request, "image"):
        keys.update(image_token="completion", image_output="per output image")
    if _outputs(request, "audio"):
        keys["audio_output"] = "completion"
    return keys


def unknown_price_refusal(unknown: dict[str, str], bounded: bool, allowed: bool) -> str | None:
    """The one refusal of `plan` and the run: a limit to keep and a worst case that is not known."""
    if not unknown or not bounded or allowed:
        return None
    reasons = "; ".join(f"{model} ({why})" for model, why in sorted(unknown.items()))
    return (
        f"no known price for {reasons}: the worst case is not a bound, so a budget or credit limit "
        "cannot be kept; "
        "set run.allow_unknown_prices to run them anyway (reserved at $0)"
    )


def _no_completion_bound(request: Request, model: str) -> str:
    capped = any(count(request.body.get(k)) for k in ("max_tokens", "max_completion_tokens"))
    if capped and uncontrolled(request.body, model):
        return (
            "its reasoning tokens have no documented bound (a Gemini 3 thinking level, or a provider's "
            "reasoning switch in extra_body) and no maximum completion length is listed"
        )
    return "no max_tokens and no maximum completion length listed: set max_tokens"


@dataclass(frozen=True)
class Worst:
    """A request's worst case: the dearest model's cost, or why it cannot be bounded."""

    usd: float | None
    model: str
    why: str = ""


WORST_CACHE = 1024  # bodies whose worst case is kept


class CostModel:
    def __init__(
        self,
        models: dict[str, ModelInfo] | None,
        cost_margin: float = 0.0,
        endpoints: dict[str, EndpointsRead] | None = None,
    ) -> None:
        self.models = models
        self.cost_margin = cost_margin
        self.endpoints = endpoints or {}
        self._bases: dict[tuple[str, str, frozenset[str]], PriceBasis | None] = {}
        # Worst cases by request body (its fingerprint: a hash of the exact bytes; the bytes
        # themselves keep orjson's 4 KiB buffer each): repeats and the plan's estimate ask again
        # for the same body, and each answer costs tens of microseconds of walking it (issue 15).
        self._worst: dict[tuple[str, float], Worst] = {}

    def request_basis(self, request: Request, model: str) -> PriceBasis | None:
        """The price basis of `model` answering `request`: its provider settings and the
        service tiers it opts into decide the endpoints."""
        return self.basis(model, request.body.get("provider"), opted_tiers(request.body, model))

    def basis(
        self, model: str, provider: dict[str, Any] | None, tiers: frozenset[str] = frozenset()
    ) -> PriceBasis | None:
        # orjson: this runs for every request, and json.dumps was measurable there.
        key = (model, orjson.dumps(provider, option=orjson.OPT_SORT_KEYS).decode() if provider else "", tiers)
        if key not in self._bases:
            self._bases[key] = self._basis(model, provider or {}, tiers)
        return self._bases[key]

    def _basis(self, model: str, provider: dict[str, Any], tiers: frozenset[str]) -> PriceBasis | None:
        listed = self.endpoints.get(model)
        info = self.models.get(model) if self.models else None
        top = info.price if info is not None else None
        if isinstance(listed, str):
            # Costing at the /models price alone would not bound a dearer endpoint.
            return PriceBasis(
                model, "endpoints", [], 0, max_price_caps(provider), f"/endpoints could not be read: {listed}"
            )
        if listed:
            allowed, caps = allowed_endpoints(listed, provider, tiers)
            # /models prices are the top provider's: never below what the list says (break-14 3).
            entries = allowed + ([top] if top is not None else [])
            source = "endpoints and /models" if top is not None else "endpoints"
            return PriceBasis(model, source, entries, len(listed) - len(allowed), caps, allowed=len(allowed))
        if info is None or top is None:
            return None
        return PriceBasis(model, "models list (top provider)", [top], 0, max_price_caps(provider))

    def completion_cap(self, request: Request, model: str | None = None) -> int | None:
        """Completion tokens per choice at most, reasoning included, for `model` answering
        (any model that may answer when None); None when nothing bounds them."""
        caps = [self._completion_cap(request, m) for m in ([model] if model else self._answering(request))]
        return None if any(c is None for c in caps) else max(c for c in caps if c is not None)

    def _completion_cap(self, request: Request, model: str) -> int | None:
        # max_completion_tokens is the spec's name, max_tokens the deprecated one (parameters.mdx):
        # a provider may honour either, so the larger bounds (break-14b C7).
        caps = [count(request.body.get(name)) for name in ("max_completion_tokens", "max_tokens")]
        cap = max((c for c in caps if c), default=None)
        reasoning = reasoning_budget(request.body, self._reasoning_default(request))
        bounded = reasoning is not None and uncontrolled(request.body, model)
        if cap is None or bounded:
            # Without max_tokens, what OpenRouter reserves; and reasoning no documented setting
            # bounds (Gemini 3, a switch in extra_body) may go up to the listed maximum (break14e E12).
            basis = self.request_basis(request, model)
            listed = basis.max_completion_tokens() if basis is not None else None
            if listed is None:
                return None
            cap = max(cap or 0, listed)
        if reasoning is not None and not bounded and reasoning >= cap:
            # A budget the answer's cap does not hold: reasoning-tokens.mdx (Anthropic) has
            # "max_tokens must be strictly higher than the reasoning budget", so the answer's
            # tokens may come on top of it (break32 m4: 1,124 billed against a bound of 1,024).
            cap += reasoning
        return (cap if reasoning is None else max(cap, reasoning)) + prediction_tokens(request.body)

    @staticmethod
    def _answering(request: Request) -> list[str]:
        return [request.model, *request.body.get("models", [])]

    def _reasoning_default(self, request: Request) -> str | None:
        """The strongest reasoning default /models gives a model that may answer the request."""
        infos = [self.models.get(m) if self.models else None for m in self._answering(request)]
        defaults = {info.reasoning_default for info in infos if info is not None}
        return "mandatory" if "mandatory" in defaults else "enabled" if "enabled" in defaults else None

    def _cost(
        self, request: Request, model: str, prompt: int, completion: int | None, token_factor: float = 1.0
    ) -> Worst:
        basis = self.request_basis(request, model)
        if basis is None:
            return Worst(None, model, "no price listed")
        if not basis.known:
            return Worst(None, model, basis.problem)
        if completion is None:
            completion = self.completion_cap(request, model)
            if completion is None:
                return Worst(None, model, _no_completion_bound(request, model))
            completion *= _choices(request)
        prices, _, _ = basis.prices(prompt)
        keys = applicable_keys(request, model)
        prompt_price = max(prices.get(k, 0.0) for k, on in keys.items() if on == "prompt")
        completion_price = max(prices.get(k, 0.0) for k, on in keys.items() if on == "completion")
        per_token = prompt * prompt_price + completion * completion_price
        images_out = IMAGES_PER_ANSWER * _choices(request) if "image_output" in keys else 0
        return Worst(
            token_factor * per_token
            + prices.get("request", 0.0)
            + _parts(request, "image_url") * prices.get("image", 0.0)
            + images_out * prices.get("image_output", 0.0),
            model,
        )

    def worst(self, request: Request, token_factor: float = 1.0) -> Worst:
        """The dearest of the models that may answer (a fallback list), margin included: a
        function of the body alone (its model is in it) once the prices are read."""
        key = (request.fingerprint, token_factor)
        found = self._worst.get(key)
        if found is None:
            if len(self._worst) >= WORST_CACHE:
                self._worst.clear()  # bounded: a dataset of distinct rows gains nothing from it
            found = self._worst[key] = self._worst_of(request, token_factor)
        return found

    def _worst_of(self, request: Request, token_factor: float) -> Worst:
        if self.models is None:
            return Worst(None, request.model, "the endpoint lists no models")
        unbounded = unbounded_input(request.body, request.model)
        if unbounded is not None:
            return Worst(None, request.model, unbounded)
        prompt = prompt_token_bound(request)
        dearest = Worst(0.0, request.model)
        for model in [request.model, *request.body.get("models", [])]:
            cost = self._cost(request, model, prompt, None, token_factor)
            if cost.usd is None:
                return cost
            if cost.usd > (dearest.usd or 0.0):
                dearest = cost
        return Worst((dearest.usd or 0.0) * (1 + self.cost_margin), dearest.model)

    def worst_case(self, request: Request, token_factor: float = 1.0) -> float | None:
        """USD at worst, margin included; None when it cannot be bounded.

        `token_factor` scales the per-token prices only: 0.5 for the Batch API, which bills
        "typically 50% of the model's standard per-token pricing" while non-token components
        are not uniformly discounted (batch-quickstart.mdx, Pricing), so they stay at full price.
        """
        return self.worst(request, token_factor).usd

    def charge_from_usage(self, request: Request, usage: dict[str, Any], answer_bytes: int = 0) -> float | None:
        """An upper bound of an answer's charge from its token counts, when it reported no
        cost; None when the counts are missing or cannot be true (fewer tokens than the
        prompt's or the answer's text must have, a total above their sum, or more completion
        tokens than the request allowed), or when the
        request's inputs have no bound (_unbounded).

        The counts are never believed below our own bounds (break-14b M6): the prompt is
        costed at the larger of `prompt_tokens` and the body's bytes (prompt_token_bound),
        the completion at the largest of `completion_tokens`, the reasoning tokens it
        counts and the answer's bytes. Tokens a reply neither shows nor counts (hidden
        reasoning it under-counts) cannot be seen here: the key window catches them."""
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if not isinstance(prompt, int) or not isinstance(completion, int) or self.models is None:
            return None
        if unbounded_input(request.body, request.model) is not None:
            return None
        total = usage.get("total_tokens")
        if (
            prompt < prompt_token_floor(request)
            or completion < math.ceil(answer_bytes / MAX_TOKEN_BYTES)
            or (isinstance(total, int) and total > prompt + completion)
        ):
            return None
        # Reasoning tokens are part of the completion (usage-accounting.mdx): a reply that counts
        # more of them than completion tokens has them costed too.
        details = usage.get("completion_tokens_details")
        hidden = count(details.get("reasoning_tokens")) if isinstance(details, dict) else None
        cap = self.completion_cap(request)
        if cap is not None and max(completion, hidden or 0) > cap * _choices(request):
            # More than the request let the model write: counts that cannot be true give no
            # estimate (a million tokens for max_tokens 50 was "estimated" at $200: break14c N5).
            return None
        prompt = max(prompt, prompt_token_bound(request))
        completion = max(completion, answer_bytes, hidden or 0)
        costs = [self._cost(request, m, prompt, completion).usd for m in self._answering(request)]
        known = [c for c in costs if c is not None]
        return max(known) if known and len(known) == len(costs) else None

    def estimate(self, request: Request, result: ChatResult) -> float | None:
        """charge_from_usage for an answer, its text (answer, reasoning, tool calls) counted."""
        texts = [result.content, result.reasoning or "", result.refusal or ""]
        texts += [str(call.get("arguments") or "") for call in result.tool_calls]
        # surrogatepass: the size of any text, whatever a reply put in it, never an error.
        size = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
        return self.charge_from_usage(request, result.usage, size)

    def describe(self, request: Request) -> str:
        """The price basis of the model that sets the request's worst case (a fallback may)."""
        worst = self.worst(request)
        basis = self.request_basis(request, worst.model)
        if basis is None:
            return "no price"
        text = basis.describe(prompt_token_bound(request), applicable_keys(request, worst.model))
        if worst.usd is None and basis.known:
            text = f"no known worst case ({worst.why})"
        elif uncontrolled(request.body, worst.model):
            text += (
                f"; completion at the listed maximum, {self.completion_cap(request, worst.model)} tokens "
                "(its reasoning has no documented bound)"
            )
        return (f"{worst.model} (a fallback) sets the worst case: " if worst.model != request.model else "") + text
