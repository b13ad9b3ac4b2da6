"""Whether a request may reason, and how many reasoning tokens bound it.

Reasoning tokens "are counted as output tokens for billing purposes" (reasoning-tokens.mdx),
beyond the answer's `max_tokens` when a reasoning budget is larger, so the worst case's
completion is raised to the reasoning budget whenever reasoning may be on:

- `reasoning.max_tokens` "is used directly with a minimum of 1024 tokens", and an effort's
  budget is max(min(max_tokens * ratio, 128000), 1024): so at least REASONING_FLOOR;
- a `reasoning` object turns it on unless it turns it off (`enabled: false`, or `effort:
  "none"` with no `max_tokens`): `{}`, `{exclude: false}` or `{summary: auto}` are "reasoning
  with the default parameters" (the legacy `include_reasoning: true` is "Equivalent to
  `reasoning: {}`"), and `exclude: true` hides the reasoning while "the model will still use
  reasoning" (break14e E1);
- `include_reasoning`, either value: `false` is "Equivalent to `reasoning: { exclude: true }`",
  which still reasons;
- `reasoning_effort` other than "none", a `:thinking` model (model-variants/thinking.mdx),
  and a model /models lists as reasoning `mandatory` or `default_enabled`;
- a provider's own reasoning switch passed through `extra_body` (Anthropic's `thinking:
  {budget_tokens}`, Google's `thinkingConfig`, Qwen's `enable_thinking`...): the chat docs
  enable Anthropic reasoning "only" through `reasoning`, and say neither whether such keys
  reach the provider nor what they do there, so one counts as reasoning on with no documented
  bound (below), at least the largest integer it holds.

Reasoning with no documented token control is bounded only by the maximum completion tokens
the endpoints list (_costs): a passed-through switch, and Gemini 3 models (reasoning-tokens.mdx,
"Google Gemini 3 Models with Thinking Levels": the tokens per thinking level are "determined
internally by Google", and `reasoning.max_tokens` gives no "precise token control"), whose
thinkingLevel mapping has no way to turn reasoning off either.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from ._json_text import json_leaves
from ._pricing import endpoints_slug
from ._reply import count

REASONING_FLOOR = 1024
# Top-level body keys batchrun writes itself; with the job schema's params, every other key
# came from extra_body.
_OWN_KEYS = frozenset({"model", "messages", "n", "stream", "stream_options"})
_REASONING_NAME = re.compile(r"think|reason", re.IGNORECASE)
# Gemini 3 and later, also behind a `~google/...-latest` alias (it may point at one).
_THINKING_LEVELS = re.compile(r"^(google/gemini-([3-9]|[1-9]\d)|~google/gemini)", re.IGNORECASE)


@lru_cache(maxsize=1)
def _params() -> frozenset[str]:
    from ._jobfile import job_schema  # the schema names the params; anything else is extra_body

    return frozenset(job_schema()["$defs"]["params"]["properties"]) | _OWN_KEYS


def no_reasoning_control(model: str) -> bool:
    """A model whose reasoning tokens no request setting bounds (Gemini 3: thinking levels)."""
    base = endpoints_slug(model)
    return bool(_THINKING_LEVELS.match(base.removesuffix(":free")))


def uncontrolled(body: dict[str, Any], model: str) -> bool:
    """Whether `model` answering `body` may reason with no documented bound on its tokens."""
    return no_reasoning_control(model) or passed_through(body) is not None


def _named(value: Any) -> Iterator[Any]:
    """The values under keys that name reasoning or thinking, at any depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and _REASONING_NAME.search(key):
                yield item
            else:
                yield from _named(item)
    elif isinstance(value, list):
        for item in value:
            yield from _named(item)


def passed_through(body: dict[str, Any]) -> int | None:
    """The reasoning budget of a provider's own switch in extra_body; None without one."""
    extra = {k: v for k, v in body.items() if k not in _params()}
    found = list(_named(extra))
    if not found:
        return None
    integers = (n for n in json_leaves(found) if isinstance(n, int) and not isinstance(n, bool))
    return max(integers, default=0)


def reasoning_budget(body: dict[str, Any], default: str | None = None) -> int | None:
    """The reasoning tokens a request may bill beyond its answer's cap; None without reasoning.

    `default`: what /models says of a model that may answer: "mandatory" (it always reasons)
    or "enabled" (it reasons unless the request turns it off): reasoning-tokens.mdx,
    "Discovering per-model reasoning options" (break14c N6)."""
    reasoning = body.get("reasoning")
    top_effort = body.get("reasoning_effort")
    on = top_effort not in (None, "none") or "include_reasoning" in body
    off = top_effort == "none"
    budget = 0
    if isinstance(reasoning, dict):
        budget = count(reasoning.get("max_tokens")) or 0
        effort = reasoning.get("effort")
        if reasoning.get("enabled") is False or (effort == "none" and not budget):
            off = True
        else:
            on = True
    extra = passed_through(body)
    if extra is not None:
        on, budget = True, max(budget, extra)
    # The `:thinking` variant "enables extended reasoning" (model-variants/thinking.mdx),
    # whatever the body says, for the model or a fallback (break14c N6).
    models = [m for m in [body.get("model"), *(body.get("models") or [])] if isinstance(m, str)]
    on = on or any(m.endswith(":thinking") or no_reasoning_control(m) for m in models)
    on = on or default == "mandatory" or (default == "enabled" and not off)
    return max(budget, REASONING_FLOOR) if on else None
