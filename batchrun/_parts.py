"""Content parts of a chat body that are not text (the Batch API refuses them; the job checks them)."""

from __future__ import annotations

from typing import Any

_NON_TEXT_PARTS = {"image_url", "input_image", "input_file", "file", "input_audio", "image", "document", "video"}


def non_text_part(body: dict[str, Any]) -> str | None:
    """The first non-text content part or output option of a chat body, or None."""
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") in _NON_TEXT_PARTS:
                    return str(part["type"])
    for key in ("audio", "image_config"):
        if key in body:
            return key
    modalities = body.get("modalities")
    if isinstance(modalities, list) and any(m != "text" for m in modalities):
        return "modalities"
    return None
