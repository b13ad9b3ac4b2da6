"""The simulator's counters, served at GET /__sim/stats."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SimStats:
    chat_requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)
    by_key_label: Counter[str] = field(default_factory=Counter)
    ok_ids: Counter[str] = field(default_factory=Counter)  # row id (X-Batchrun-Row) -> 200 answers
    by_row: Counter[str] = field(default_factory=Counter)  # row id -> chat requests received
    first_request: float | None = None
    last_response: float | None = None
    billed_usd: float = 0.0
    keys_created: int = 0
    keys_deleted: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "chat_requests": self.chat_requests,
            "by_status": {str(k): v for k, v in self.by_status.items()},
            "by_model": dict(self.by_model),
            "by_key_label": dict(self.by_key_label),
            "ok_requests": sum(self.ok_ids.values()),
            "resent_ok": sum(v - 1 for v in self.ok_ids.values() if v > 1),
            "busy_s": (self.last_response - self.first_request)
            if self.first_request is not None and self.last_response is not None
            else None,
            "billed_usd": self.billed_usd,
            "keys_created": self.keys_created,
            "keys_deleted": self.keys_deleted,
        }
