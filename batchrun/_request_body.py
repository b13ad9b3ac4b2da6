"""The chat body a request's params make: one definition for rows and graders alike."""

from __future__ import annotations

from typing import Any


def request_body(model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """The chat body. `extra_body` is the documented escape hatch: its keys go into the body
    verbatim, last, so a parameter OpenRouter adds later needs no batchrun release."""
    extra = params.get("extra_body")
    body = {"model": model, "messages": messages, **{k: v for k, v in params.items() if k != "extra_body"}}
    if isinstance(extra, dict):
        body.update(extra)
    return body
