"""The simulator's counters, served at GET /__sim/stats."""

from __future__ import annotations

from collections import Counter, defaultdict
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
    billed_usd: float = 0.0  # what counts against key limits: cost, plus upstream for BYOK
    billed_by_row: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))  # row id -> USD
    credits_used: float = 0.0  # billed_usd less BYOK upstream spend: what /credits counts
    abandoned_billed: int = 0  # generations billed though the client did not take the answer
    cancelled_streams: int = 0  # streams the client cancelled before the end (billed in part)
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
            "abandoned_billed": self.abandoned_billed,
            "cancelled_streams": self.cancelled_streams,
            "keys_created": self.keys_created,
            "keys_deleted": self.keys_deleted,
        }
