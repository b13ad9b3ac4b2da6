"""CreditLedger: spend can never pass the budget, whatever the concurrency.

Each request reserves its worst-case cost before it is sent and settles to its actual
cost when it ends (or releases on a failure that cost nothing). A reservation that does
not fit waits for in-flight requests to settle; when nothing in flight could free enough
room, the ledger says the budget is exhausted and the runner stops dispatching.
"""

from __future__ import annotations

import asyncio

from ._exceptions import BatchrunError


class BudgetExhausted(BatchrunError):
    """Internal signal to the runner: this reservation can never fit (never leaves it)."""


class CreditLedger:
    def __init__(self, limit_usd: float | None) -> None:
        self.limit = limit_usd  # None: no budget, reservations always fit
        self.spent = 0.0
        self.reserved = 0.0
        self.in_flight = 0
        self._changed = asyncio.Condition()
        self._waiting = 0

    @property
    def remaining(self) -> float | None:
        return None if self.limit is None else self.limit - self.spent - self.reserved

    def _fits(self, amount: float) -> bool:
        return self.limit is None or self.spent + self.reserved + amount <= self.limit + 1e-12

    async def reserve(self, amount: float) -> float:
        """Hold `amount` until settle/release; waits while others may free room."""
        # Single-threaded asyncio: the check and the update below happen without an
        # await between them, so no lock is needed on the fast path.
        while not self._fits(amount):
            if self.in_flight == 0:
                raise BudgetExhausted()
            self._waiting += 1
            try:
                async with self._changed:
                    await self._changed.wait()
            finally:
                self._waiting -= 1
        self.reserved += amount
        self.in_flight += 1
        return amount

    async def settle(self, reservation: float, actual: float) -> None:
        self.reserved -= reservation
        self.in_flight -= 1
        self.spent += actual
        await self._wake()

    async def release(self, reservation: float) -> None:
        await self.settle(reservation, 0.0)

    def hold(self, amount: float) -> None:
        """Hold money for a submitted batch. Unlike `reserve`, it never waits and is not
        "in flight": a batch settles only when collected, maybe in a later run, so sync
        requests must not wait for it."""
        self.reserved += amount

    async def settle_hold(self, amount: float, actual: float) -> None:
        self.reserved -= amount
        self.spent += actual
        await self._wake()

    async def lower_limit(self, limit_usd: float) -> None:
        """Tighten the limit (e.g. the key's remaining credit fell because a shard shares it)."""
        self.limit = limit_usd if self.limit is None else min(self.limit, limit_usd)
        await self._wake()

    async def _wake(self) -> None:
        if self._waiting:  # skip the lock when nobody waits: this is on every request's path
            async with self._changed:
                self._changed.notify_all()
