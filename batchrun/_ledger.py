"""CreditLedger: spend can never pass the budget, whatever the concurrency.

Each request reserves its worst-case cost before it is sent and settles to its actual
cost when it ends (or releases on a failure that cost nothing). A reservation that does
not fit waits for in-flight requests to settle; when nothing in flight could free enough
room, the ledger says the budget is exhausted and the runner stops dispatching.
"""

from __future__ import annotations

import asyncio


class BudgetExhausted(Exception):
    """Internal signal to the runner: this reservation can never fit."""


class CreditLedger:
    def __init__(self, limit_usd: float | None) -> None:
        self.limit = limit_usd  # None: no budget, reservations always fit
        self.spent = 0.0
        self.reserved = 0.0
        self.in_flight = 0
        self._changed = asyncio.Condition()

    @property
    def remaining(self) -> float | None:
        return None if self.limit is None else self.limit - self.spent - self.reserved

    def _fits(self, amount: float) -> bool:
        return self.limit is None or self.spent + self.reserved + amount <= self.limit + 1e-12

    async def reserve(self, amount: float) -> float:
        """Hold `amount` until settle/release; waits while others may free room."""
        async with self._changed:
            while not self._fits(amount):
                if self.in_flight == 0:
                    raise BudgetExhausted()
                await self._changed.wait()
            self.reserved += amount
            self.in_flight += 1
            return amount

    async def settle(self, reservation: float, actual: float) -> None:
        async with self._changed:
            self.reserved -= reservation
            self.in_flight -= 1
            self.spent += actual
            self._changed.notify_all()

    async def release(self, reservation: float) -> None:
        await self.settle(reservation, 0.0)

    async def lower_limit(self, limit_usd: float) -> None:
        """Tighten the limit (e.g. the key's remaining credit fell because a shard shares it)."""
        async with self._changed:
            self.limit = limit_usd if self.limit is None else min(self.limit, limit_usd)
            self._changed.notify_all()
