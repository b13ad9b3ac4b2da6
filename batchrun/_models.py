"""Model ids as OpenRouter accepts them, resolved before anything is spent.

An id the job names may be absent from GET /models and still be valid:
- a variant (guides/routing/model-variants/*.mdx): `:nitro`, `:floor`, `:exacto`, `:free`,
  `:online`, `:thinking`, `:extended` after a listed base id;
- an alias, a `~author/family-latest` slug (guides/routing/routers/latest-resolution.mdx; the
  list usually carries these too) or a private model (guides/routing/private-models.mdx:
  "never show up in public model lists").
So: an exact entry first; else the base id of a known variant suffix; else the single-model
lookup GET /model/{author}/{slug}, which "supports variant suffixes and resolves known slug
aliases" (openapi.yaml `getModel`). Only a 404 there refuses the id. When the lookup cannot
say (an endpoint without it), the id is kept with an unknown price.

Prices of variants: the base model's, except where the docs say otherwise.
- `:free` is free ("access to models without cost").
- `:nitro` admits priority-tier endpoints, billed at their priority rates (nitro.mdx,
  service-tiers.mdx); those rates are in the per-endpoint listing ("pricing with the tier
  multiplier already applied"), not in /models. The worst case takes the highest price of
  every listed endpoint, so it covers them where the listing is read; without it, the
  /models price is all there is (the docs give no multiplier), and `plan` warns.
- `:floor` admits flex endpoints, which are cheaper: the base price bounds it.
- `:online` adds the web plugin's charges (online.mdx; deprecated): its worst case is
  unknown (_unbounded: search results of no documented size), and `plan` warns.
- `:exacto`, `:thinking`: the docs give no separate price; base price.
- `:extended` names another model version ("model versions with extended context windows",
  extended.mdx), which can be priced differently: the single-model lookup prices it; without
  one its price is unknown, never the base model's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from ._client import ModelInfo

Lookup = Callable[[str], Awaitable[tuple[str, ModelInfo | None]]]

VARIANTS = ("nitro", "floor", "exacto", "free", "online", "thinking", "extended")
# Variants that are other model versions, not routing choices: the base price says nothing.
OWN_VERSIONS = ("extended",)
# Variants whose bill the base price may not bound, and why (for `plan`).
PRICE_CAVEATS = {
    "nitro": (
        "may be served by a priority-tier endpoint billed at its priority rate (model-variants/nitro.mdx);"
        " the worst case counts it only where the model's endpoint list shows it (service-tiers.mdx),"
        " else it uses the base price"
    ),
    "online": (
        "adds the web search plugin's charges (model-variants/online.mdx), whose results no documented"
        " figure bounds: its worst case is unknown"
    ),
}


@dataclass
class Resolution:
    models: dict[str, ModelInfo]  # every wanted id -> the info it is priced with
    how: dict[str, str] = field(default_factory=dict)  # id -> "variant of X", "lookup", "unknown"
    missing: dict[str, str] = field(default_factory=dict)  # id -> why it is refused


def variant_of(model_id: str) -> tuple[str, str] | None:
    """(base id, variant) when the id ends in a documented variant suffix."""
    base, sep, variant = model_id.rpartition(":")
    return (base, variant) if sep and base and variant in VARIANTS else None


def _unknown_price(model_id: str) -> ModelInfo:
    return ModelInfo(model_id, None, None, 0.0, None, None)


async def resolve_models(wanted: set[str], models: dict[str, ModelInfo], lookup: Lookup | None) -> Resolution:
    """Resolve each wanted id against the list, its variant base, or the single-model lookup.
    `lookup` makes the per-id call (retried by the caller's policy); None skips it."""
    result = Resolution(dict(models))
    for model_id in sorted(wanted):
        if model_id in models:
            continue
        variant = variant_of(model_id)
        if variant is not None and variant[1] in OWN_VERSIONS:
            # Another model version: its own lookup, never the base's price.
            await _look_up(model_id, lookup, result, f"a version of {variant[0]} the base price does not bound")
            continue
        if variant is not None and variant[0] in models:
            base = models[variant[0]]
            info = replace(base, id=model_id)
            if variant[1] == "free":
                # Its /models price too: the worst case never goes below the /models price.
                free = (
                    replace(info.price, prices=dict.fromkeys(info.price.prices, 0.0), overrides=())
                    if info.price
                    else None
                )
                info = replace(info, prompt_price=0.0, completion_price=0.0, request_price=0.0, price=free)
            result.models[model_id] = info
            result.how[model_id] = f"variant of {variant[0]}"
            continue
        if lookup is None:
            result.missing[model_id] = "not listed by /models"
            continue
        await _look_up(model_id, lookup, result, "no single-model lookup")
    return result


async def _look_up(model_id: str, lookup: Lookup | None, result: Resolution, unknown_why: str) -> None:
    """Price an id by the single-model lookup; a 404 refuses it; no answer keeps it unpriced.
    The docs are silent on endpoints without the lookup: keep the id, price unknown."""
    status, found = await lookup(model_id) if lookup is not None else ("unknown", None)
    if status == "found" and found is not None:
        result.models[model_id] = replace(found, id=model_id)
        result.how[model_id] = f"single-model lookup ({found.id})"
    elif status == "missing":
        result.missing[model_id] = f"not listed by /models, and GET /model/{model_id} answered 404"
    else:
        result.models[model_id] = _unknown_price(model_id)
        result.how[model_id] = f"unknown ({unknown_why})"
