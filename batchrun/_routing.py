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

from collections.abc import Callable, Iterable, Mapping
from typing import Any

METADATA_HEADER = "X-OpenRouter-Metadata"


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
    """Whether the request pins its routing: `order` or `only`, with `allow_fallbacks: false`."""
    provider = params.get("provider")
    if not isinstance(provider, Mapping):
        return False
    named = bool(provider.get("order")) or bool(provider.get("only"))
    return named and provider.get("allow_fallbacks") is False


def unpinned_models(models: Iterable[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """The models (with their effective params) whose routing is not pinned."""
    return sorted({model for model, params in models if not pinned(params)})


def routing_warning(models: list[str]) -> str | None:
    if not models:
        return None
    return (
        f"routing not pinned for {', '.join(models)}: OpenRouter may answer with another provider or "
        "quantization next time; set params.provider {order or only: [...], allow_fallbacks: false}"
    )
