"""What batchrun records and warns about routing: who answered, and whether that can drift.

OpenRouter routes a model to one of several providers (and quantizations) unless the
request pins it (guides/routing/provider-selection.mdx): an eval run twice may then be
answered by different providers. A model counts as pinned when its `provider` options
name the providers (`order` or `only`) and forbid falling back (`allow_fallbacks: false`).

Who answered comes from a documented source only: the opt-in `openrouter_metadata` of the
reply (guides/features/router-metadata.mdx; the client sends `X-OpenRouter-Metadata:
enabled`), whose selected endpoint names the provider; else the `provider` field, which the
docs show on streamed chunks and errors (errors-and-debugging.mdx) though the OpenAPI
ChatResult does not list it; else nothing (GET /generation also names it, but costs one
request per row, so it is not read here).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ._formats import one_line

METADATA_HEADER = "X-OpenRouter-Metadata"
PIN_BROKEN = "routing pinned (params.provider) but answered outside the pin"
OTHER_MODEL = "answered by another author's model than the one asked for"


def answering_provider(reply: Mapping[str, Any], scrub: Callable[[str], str] = str) -> str | None:
    """The provider that served a chat reply, from its documented fields; `scrub` masks
    keys in the name found before it is cut to length (a cut key would leave a fragment)."""
    metadata = reply.get("openrouter_metadata")
    if isinstance(metadata, Mapping):
        endpoints = metadata.get("endpoints")
        available = endpoints.get("available") if isinstance(endpoints, Mapping) else None
        for endpoint in available if isinstance(available, list) else []:
            if isinstance(endpoint, Mapping) and endpoint.get("selected") is True:
                provider = endpoint.get("provider")
                if isinstance(provider, str) and provider:
                    return scrub(provider)[:100]
        attempts = metadata.get("attempts")
        if isinstance(attempts, list):
            for attempt in reversed(attempts):
                if isinstance(attempt, Mapping) and attempt.get("status") == 200:
                    provider = attempt.get("provider")
                    if isinstance(provider, str) and provider:
                        return scrub(provider)[:100]
    provider = reply.get("provider")
    return scrub(provider)[:100] if isinstance(provider, str) and provider else None


def pinned(params: Mapping[str, Any]) -> bool:
    """Whether the request pins its routing: `only` (provider-selection.mdx: "List of provider
    slugs to allow for this request", fallbacks or not: out-161 F3), or `order` with
    `allow_fallbacks: false` ("restrict the providers ... to just your chosen list")."""
    provider = params.get("provider")
    if not isinstance(provider, Mapping):
        return False
    return bool(provider.get("only")) or (bool(provider.get("order")) and provider.get("allow_fallbacks") is False)


def unpinned_models(models: Iterable[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """The models (with their effective params) whose routing is not pinned."""
    return sorted({model for model, params in models if not pinned(params)})


def routing_warning(models: list[str]) -> str | None:
    if not models:
        return None
    return (
        f"routing not pinned for {', '.join(models)}: OpenRouter may answer with another provider or "
        "quantization next time; set params.provider {only: [...]} (or {order: [...], allow_fallbacks: false})"
    )


def outside_pin(params: Mapping[str, Any], provider: str | None) -> bool:
    """Whether a reply's provider is none a pinned request allowed (`only`, else `order` with
    `allow_fallbacks: false`). Replies name providers ("Google Vertex"), requests slugs
    ("google-vertex/us-east5"): compared squashed, base slug, either a prefix of the other."""
    if provider is None or not pinned(params):
        return False
    options = params["provider"]
    allowed = [a for a in options.get("only") or options.get("order") or () if isinstance(a, str)]
    name = _squashed(provider)
    name = _NAMED_UNLIKE_SLUG.get(name, name)
    bases = [_squashed(a.split("/")[0]) for a in allowed]
    return bool(name) and not any(b and (name.startswith(b) or b.startswith(name)) for b in bases)


# Provider names whose squashed form is not their slug's (the docs' ProviderName list against the
# slugs of `provider.only`): "Google" is Google Vertex, and as a bare prefix it would pass a pin to
# google-ai-studio too (verify70 F5). Every other documented name starts as its slug does.
_NAMED_UNLIKE_SLUG = {"google": "googlevertex"}


def _squashed(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _author(model: str) -> str:
    return model.lstrip("~").partition("/")[0].lower()


def another_author(model: str, body: Mapping[str, Any], answered: Any) -> bool:
    """Whether a reply's `model` is of another author than the model asked for and its `models`
    fallbacks: the model under evaluation did not answer. A dated or variant id of the same
    author (openai/gpt-4o-mini-2024-07-18) is its own; a router (openrouter/auto) may pick any."""
    if not isinstance(answered, str) or "/" not in answered or "/" not in model:
        return False  # no author to tell: an OpenAI-compatible endpoint's `gpt-4o-mini` (out-133 F1)
    fallbacks = body.get("models")
    asked = {_author(m) for m in [model, *(fallbacks if isinstance(fallbacks, list) else ())] if isinstance(m, str)}
    return "openrouter" not in asked and _author(answered) not in asked


class PinWatch:
    """Rows a pinned request got from a provider it did not allow: the pin the README asks for
    was not kept, and nothing said so (break66 F3: all 4 rows from another provider, exit 0).
    And rows another author's model answered (out-129 F4: every reply to openai/gpt-4o-mini
    said meta-llama/llama-3.1-8b-instruct, exit 0, in the summary's `answered_by` alone)."""

    def __init__(self) -> None:
        self.rows: Counter[str] = Counter()
        self.providers: dict[str, set[str]] = {}
        self.others: dict[str, Counter[str]] = {}
        self.answered = 0  # replies that named the model that answered
        self.named_provider = False  # any that named its provider, as OpenRouter's replies do

    def note(self, model: str, body: Mapping[str, Any], provider: Any, answered: Any = None) -> None:
        # The names as said on one line: a newline in a reply's model forged lines of batchrun's
        # own before its `results:` line (out-158 F3).
        self.answered += isinstance(answered, str)
        self.named_provider = self.named_provider or isinstance(provider, str)
        if isinstance(provider, str) and outside_pin(body, provider):
            self.rows[model] += 1
            self.providers.setdefault(model, set()).add(one_line(provider[:100]))
        if another_author(model, body, answered):
            self.others.setdefault(model, Counter())[one_line(answered[:100])] += 1

    def warning(self, before: str | None) -> str | None:
        """`before` (the job's own routing warning), with what the replies broke of a pin. An
        endpoint whose answers name no provider routes nothing OpenRouter's `provider` settings
        could pin (a plain OpenAI-compatible server): no advice to pin it (out-152 F4)."""
        said = [before] if before and (self.named_provider or not self.answered) else []
        if self.rows:
            broken = "; ".join(
                f"{model}: {n} row(s) answered by {', '.join(sorted(self.providers[model]))}"
                for model, n in sorted(self.rows.items())
            )
            said.append(f"{PIN_BROKEN}: {broken}")
        if self.others:
            other = "; ".join(
                f"{model}: {sum(by.values())} row(s) by {', '.join(sorted(by)[:5])}"
                + (f" and {len(by) - 5} more" if len(by) > 5 else "")  # 100 models made 3.4 KB (out-133 F10)
                for model, by in sorted(self.others.items())
            )
            said.append(f"{OTHER_MODEL}: {other}")
        return "; ".join(said) or None
