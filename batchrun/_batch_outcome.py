"""What a batch-mode run says about its batches in the summary, beside the usual counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class BatchOutcome:
    """What the summary says about batches, beside the usual counts."""

    submitted: int = 0  # batches submitted by this run
    collected: int = 0  # batches collected by this run
    open: int = 0  # still running at the end of this run
    open_rows: int = 0
    in_doubt: list[str] = field(default_factory=list)  # keys of intents whose submission is unknown
    sync_rows: int = 0  # rows this run sent through sync mode instead
    held_usd: float = 0.0  # worst cases of the batches open or in doubt at the end, counted as spent

    def as_json(self, state_file: str) -> dict[str, Any]:
        return {
            "state_file": state_file,
            "submitted": self.submitted,
            "collected": self.collected,
            "open": self.open,
            "open_rows": self.open_rows,
            "in_doubt": self.in_doubt,
            "sync_rows": self.sync_rows,
            "held_usd": round(self.held_usd, 12),
        }
