"""The parts of a run's spending limit, and which of them BYOK spend draws on.

The limit is the least of the job's budget for this run, the key's credit and the account's
balance (`/credits`), each less `budget_margin_usd`. The ledger counts what a BYOK answer cost
in full, OpenRouter's fee and the provider's own charge (`upstream_inference_cost`), as the
budget does. But the account's balance never pays a provider's BYOK charge (the provider bills
the user's own key: byok.mdx), and neither does the limit of a key created with
`include_byok_in_limit: false` (openapi /keys). Held to the least part as it was at the start,
a BYOK run was stopped "for credits" at a fraction of its key's limit (out-104 F2). So those two
parts rise by the key's `byok_usage` since the start, which the ledger counts as spent too; the
budget's part never rises.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LimitParts:
    job: float | None = None  # the job's budget for this run, less the margin: counts everything
    key: float | None = None  # the key's credit, less the margin and the BYOK rise its limit leaves out
    balance: float | None = None  # the account's balance at the start, less the margin: never BYOK
    key_leaves_byok_out: bool = False  # include_byok_in_limit is false: the key's part rises too
    byok_rise: float = 0.0  # the key's byok_usage since the start of the run
    margin: float = 0.0  # budget_margin_usd, off each part as it was off each at the start

    @property
    def limit(self) -> float | None:
        """What the ledger may commit: the least part, with the BYOK spend the part does not pay."""
        outside = self.byok_rise if self.key_leaves_byok_out else 0.0
        parts = [
            part
            for part in (
                self.job,
                None if self.key is None else self.key + outside,
                None if self.balance is None else self.balance + self.byok_rise,
            )
            if part is not None
        ]
        return max(0.0, min(parts)) if parts else None

    @property
    def from_key(self) -> bool:
        """The key's credit or the account's balance, not the job's budget, binds: a stop is
        "credits", not "budget"."""
        limit = self.limit
        return limit is not None and (self.job is None or limit < max(0.0, self.job))

    def follow(self, key_cap: float | None, byok_rise: float | None) -> float | None:
        """A /key read: `key_cap`, what the key lets the ledger commit now, before the margin
        (None: no per-key limit), and its `byok_usage` rise since the start (None: not followed, kept as it was).
        The key's part only ever falls, but for the BYOK spend it leaves out: a limit reset or
        raised mid-run is not spent (it shows as no spend either: _reconcile.key_spend)."""
        if byok_rise is not None:
            self.byok_rise = max(self.byok_rise, byok_rise)
        if key_cap is not None:
            own = key_cap - self.margin - (self.byok_rise if self.key_leaves_byok_out else 0.0)
            self.key = own if self.key is None else min(self.key, own)
        return self.limit
