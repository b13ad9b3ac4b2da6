"""Why a row failed, in the words every reader shows (report, history, diff, the summary)."""

from __future__ import annotations

from typing import Any


def clip(text: str, limit: int = 500) -> str:
    """Text cut to `limit` characters, saying how many more there were."""
    return text if len(text) <= limit else text[:limit] + f" ... [{len(text) - limit:,} more characters]"


def failure_reasons(record: dict[str, Any]) -> list[str]:
    """Why a row is listed: each failed check with its reason, or the error."""
    if record.get("status") == "error":
        error = record.get("error") or {}
        status = f" (HTTP {error['http_status']})" if error.get("http_status") else ""
        kind = error.get("kind") or record.get("reason") or "error"
        return [clip(f"{kind}{status}: {error.get('message') or ''}".rstrip(": "), 500)]
    return [
        clip(f"{check.get('name')}: {check.get('reason') or 'failed'}", 500)
        for check in record.get("checks") or []
        if isinstance(check, dict) and not check.get("pass")
    ]
