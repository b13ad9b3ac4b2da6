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
    checks = [check for check in record.get("checks") or [] if isinstance(check, dict)]
    failed = [clip(f"{c.get('name')}: {c.get('reason') or 'failed'}", 500) for c in checks if c.get("pass") is False]
    # A check with no verdict beside them is said as such, not as one more failure: an undecided
    # judge read "judge: graded: failed" once a failed check made its row failed (verify63 F4).
    undecided = [
        clip(f"{c.get('name')}: undecided: {c.get('error') or 'not graded'}", 500)
        for c in checks
        if c.get("pass") is None
    ]
    return failed + undecided
