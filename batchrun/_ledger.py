"""CreditLedger: spend can never pass the budget, whatever the concurrency.

Each attempt reserves its worst-case cost before it is sent. An attempt that answered
settles to its actual cost; one that failed before the server had it releases its
reservation. An attempt that may have been billed without saying so (a non-streamed
request abandoned on a timeout or a cut body: OpenRouter may finish and charge it,
api_reference/streaming.mdx) is *held*: its worst case stays counted as spent until its
cost is known (a /generation lookup, or the key's usage at the end), then resolves.

The answers' own figures may lie low (an under-reported `usage.cost`), which only the
key's usage shows. At each /key refresh the ledger follows the key: when the key's usage
since the run began is more than everything the ledger counts (spent, held and in flight),
the gap is counted as spent (`from_key`), so the budget stops the run. Another process
spending on the same key shows the same way, and is counted against this run too.

So that a lie is seen before it can matter, the room a reported cost frees is only trusted
once the key confirms it: after each /key read the ledger opens a *key window* of what was
then left, and every reservation draws its worst case from it. A reservation the window
cannot hold first has the key read again (`read_key`, one read shared by every waiter).
A failed attempt's released reservation returns its room to the ledger but not to the
window: the next attempt reserves again. When the key cannot be read (after retries), or
its usage fell or is not a number, the window is lost for good and nothing more is reserved.
Whatever the answers claim, what is charged after a read is at most the worst cases
reserved after it, which never pass what the key showed was left; the run can pass the
budget only by charges the key did not show yet when it was read (attempts then in flight
or held), each at most its worst case.

A reservation that does not fit waits for in-flight requests to settle; when nothing in
flight could free enough room, the ledger says the budget is exhausted and the runner
stops dispatching.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ._exceptions import BatchrunError
from ._pricing import FLOAT_NOISE_USD


class BudgetExhausted(BatchrunError):
    """Internal signal to the runner: this reservation can never fit (never leaves it)."""


class _Shared:
    """One task at a time that every reservation needing it waits for: started by the first,
    awaited shielded (a cancelled waiter does not cancel what the others wait for)."""

    def __init__(self) -> None:
        self._task: asyncio.Future[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def run(self, start: Callable[[], Awaitable[None]]) -> None:
        if not self.running:
            self._task = asyncio.ensure_future(start())
        assert self._task is not None
        await asyncio.shield(self._task)


class CreditLedger:
    def __init__(self, limit_usd: float | None) -> None:
        self.limit = limit_usd  # None: no budget, reservations always fit
        self.spent_out = False  # earlier runs of the file spent the whole budget (_fits)
        self.spent = 0.0  # charges known (reported, looked up or estimated from tokens)
        self.held = 0.0  # worst cases of attempts that may have been billed, cost not yet known
        self.reserved = 0.0
        self.from_key = 0.0  # the key's usage beyond all of the above, counted as spent
        self.unconfirmed = 0.0  # worst cases beyond answers' reported costs since the last /key read
        self.from_earlier = 0.0  # charges earlier runs saw for batches this one collected (count_earlier_charge)
        self.unconfirmed_lost = 0.0  # worst cases counted as spent when the key's usage could not be followed
        # Part of `spent` (or `held`, for a cost unknown) that no record carries: a batch's answers
        # to rows edited or removed since it was sent. In the key gap, so the summary and journal
        # keep it for a resume (verify22 N10: counted only by the run that collected them, then
        # forgotten).
        self.unrecorded = 0.0
        self.gap_changed: Callable[[], None] = lambda: None  # from_key moved at a settle (the journal notes it)
        self.in_flight = 0
        self._changed = asyncio.Event()  # set (and replaced) whenever room may have been made
        self._changes = 0  # how many times the ledger changed (not counting the window opening)
        self._waiting = 0
        # Worst cases that may still be reserved before /key is read again; None: no window
        # (no limit, or no key usage to follow). `read_key` reads the key and reopens it.
        self.key_window: float | None = None
        self.read_key: Callable[[], Awaitable[None]] | None = None
        self._key_read = _Shared()
        self.key_reads = 0  # reads the window asked for
        # Looks up the charges whose worst cases are held (ChargeBook): asked before a reservation
        # that finds no room stops the run, as a held worst case is mostly not what was charged.
        self.look_up_held: Callable[[], Awaitable[None]] | None = None
        self._held_lookup = _Shared()
        # The key's usage can no longer be followed (a read failed, or its usage fell): no
        # window can be trusted, so nothing more is reserved (`lose_key_window`).
        self.key_lost = False
        # The part of `held` that is batches open or in doubt (`hold`): not collected yet.
        self.batches_open = 0.0
        # Known charges of batches an earlier run submitted, collected by this one: part of
        # `spent`, but the key may have been charged for them before this run began.
        self.earlier_batches = 0.0
        # The part of `earlier_batches` the key showed charged before this run began (what an
        # earlier read saw for the batch, or the key's rise between runs it drew): never set
        # against this run's usage, where it hid as much of this run's own unreported charges.
        self.before_run = 0.0

    @property
    def committed(self) -> float:
        """Spent as far as the budget is concerned: known charges, held worst cases, and
        what the key's usage showed beyond them."""
        return self.spent + self.held + self.from_key + self.from_earlier

    @property
    def remaining(self) -> float | None:
        return None if self.limit is None else self.limit - self.committed - self.reserved

    def over_limit(self) -> bool:
        """Whether what is committed and reserved is past the limit: a charge above its worst
        case (or the key's usage) came in after these reservations were made, so the attempts
        holding them and not sent yet are not sent (break31 C2: reserved at the start, 28 graders
        went out after $10 of a $0.10 budget was spent)."""
        return self.would_pass(0.0, 0.0)

    def would_pass(self, reservation: float, actual: float) -> bool:
        """Whether settling `reservation` at `actual` would put the run past its limit."""
        return self.limit is not None and self.committed + self.reserved - reservation + actual > self.limit + 1e-12

    def _fits(self, amount: float) -> bool:
        """Within the limit; and nothing goes out, not even at a worst case of $0, once all of
        it has been spent (here, or by earlier runs of the file: `spent_out`): a model listed at
        $0 that bills was sent on by every resume of a run that had spent its budget (break37
        F2: $0.007 a resume of $0 left). A limit of $0 with nothing spent (a key or an account
        at $0) still lets free models run, as OpenRouter does (limits.mdx)."""
        if self.limit is None:
            return True
        if self.committed + self.reserved + amount > self.limit + 1e-12:
            return False
        spent = self.spent_out or self.committed > 1e-12
        return amount > 0 or not spent or self.committed < self.limit - 1e-12

    async def reserve(self, amount: float) -> float:
        """Hold `amount` until settle/release/hold; waits while others may free room."""
        # Single-threaded asyncio: the check and the update below happen without an
        # await between them, so no lock is needed on the fast path.
        read_at: int | None = None  # the ledger's change count when this reservation last read /key
        looked_at: int | None = None  # ... when it last had the held charges looked up
        while True:
            if self.key_lost:
                raise BudgetExhausted()
            if self._beyond_window(amount) and read_at != self._changes:
                # Read /key again only after the ledger changed since the last read: opening the
                # window wakes every waiter, and each re-read the key in a loop, about a thousand
                # times a second while an attempt stayed in flight (break14c verification NEW-1).
                read_at = self._changes
                await self._read_key_once()
                continue  # re-check: room may have been made while the key was read
            if self._fits(amount) and not self._beyond_window(amount):
                break
            if self.in_flight == 0:
                if self.held > self.batches_open and self.look_up_held is not None and looked_at != self._changes:
                    # Worst cases held for attempts that may have been billed took the room: their
                    # costs are asked first, and a stop comes only if they took it (out-124 F1: a
                    # run of stalls stopped at $0.024 of $0.10, its holds looked up only after).
                    looked_at = self._changes
                    await self._held_lookup.run(self.look_up_held)
                    continue
                raise BudgetExhausted()
            self._waiting += 1
            try:
                await self._changed.wait()
            finally:
                self._waiting -= 1
        self.reserved += amount
        self.in_flight += 1
        if self.key_window is not None:
            self.key_window -= amount
        return amount

    def _beyond_window(self, amount: float) -> bool:
        return self.key_window is not None and self.read_key is not None and amount > self.key_window + 1e-12

    def open_key_window(self) -> None:
        """The key was just read and followed: what is left now may be reserved before the
        next read. Called by `read_key` (also when the read failed: then the ledger's own
        figures are all there is, and the next window asks again)."""
        self.key_window = self.remaining
        self.unconfirmed = 0.0
        self._wake(change=False)

    def lose_key_window(self) -> None:
        """The key's usage cannot be followed any more (_dispatch.key_lost): the window stays
        shut, and every reservation from now on, waiting or not, is refused."""
        self.key_window = 0.0
        self.key_lost = True
        # What answers since the last read said they cost was never confirmed: each may have
        # been charged up to its worst case, so that counts as spent (verify14j N6: a stop
        # key_unreadable left $0.036 charged as $0.0006, and the resume spent the budget again).
        self.from_key += self.unconfirmed
        self.unconfirmed_lost += self.unconfirmed  # a resume whose /key answers may release it (_killed_run)
        self.unconfirmed = 0.0
        self._wake()

    async def _read_key_once(self) -> None:
        """Read the key, or wait for the read another reservation started."""
        assert self.read_key is not None
        self.key_reads += not self._key_read.running
        await self._key_read.run(self.read_key)

    async def settle(self, reservation: float, actual: float, answered: bool = False) -> None:
        """`answered`: `actual` is what a reply said it cost, which only the next /key read confirms."""
        self.reserved -= reservation
        self.in_flight -= 1
        self.spent += actual
        if answered:
            self.unconfirmed_charge(max(0.0, reservation - actual))
        if actual > reservation and self.from_key > 0:
            # A charge above its worst case that a /key read saw while the attempt was in
            # flight was counted then as key gap, and now again as spent (break14h H6: $1.20
            # charged read as $1.56 spent). Release that part; if the gap was another's, the
            # next read finds it again (follow_key compares the key with all that is counted).
            self.from_key -= min(self.from_key, actual - reservation)
            self.gap_changed()
        self._wake()

    def unconfirmed_charge(self, amount: float) -> None:
        """A worst case beyond what an answer (or a collected batch) said it cost, which only the
        next /key read confirms: counted as spent if none can (lose_key_window)."""
        if self.key_window is None:
            return  # no key followed: the end-of-run reconciliation compares
        if self.key_lost:  # no read will confirm it now: counted at once (lose_key_window)
            self.from_key += amount
            self.unconfirmed_lost += amount  # a resume may release it, as those (verify40 F1)
            self.gap_changed()
        else:
            self.unconfirmed += amount

    async def release(self, reservation: float) -> None:
        await self.settle(reservation, 0.0)

    def hold_more(self, amount: float) -> float:
        """A held charge known to be larger than its reservation: the rest held too."""
        self.held += amount
        self._wake()
        return amount

    def keep(self, reservation: float) -> float:
        """The attempt may have been billed: keep its reservation as spent until resolved."""
        self.reserved -= reservation
        self.in_flight -= 1
        self.held += reservation
        # Nothing was freed, but one fewer is in flight: a waiter may now have to give up.
        self._wake()
        return reservation

    async def resolve(self, held: float, actual: float) -> None:
        """A kept attempt's cost became known."""
        # Float sums of releases leave -1e-18 behind, shown as "-0.0" (break-14 #20): never below 0.
        self.held = max(0.0, self.held - held)
        self.spent += actual
        self._wake()

    def follow_key(self, usage_delta: float) -> float:
        """The key's usage rose by `usage_delta` since the run began: count what the ledger
        cannot account for (in-flight reservations may already be billed, so they count) as
        spent. Returns what was added."""
        # Less `from_earlier` and `before_run`: charged before the run began, so not in
        # `usage_delta`; counted in, they hid as much of this run's own unreported charges
        # (break37 F1: $0.065 on $0.05).
        gap = usage_delta - (self.committed - self.from_earlier - self.before_run + self.reserved)
        if gap <= FLOAT_NOISE_USD:  # sums of the same charges in another order differ by ~1e-18
            return 0.0
        self.from_key += gap
        # Less room, never more: waiters re-check, but it is no change that earns another /key
        # read. It was one, so a waiter with nothing in flight re-read the key in a loop, ~1,000
        # times a second, while another process kept spending on it (break14e verification F6).
        self._wake(change=False)
        return gap

    def count_earlier_charge(self, amount: float) -> None:
        """A charge an earlier run saw on the key for a batch this run collected, beyond what the
        batch reports: spent (as key gap), and charged before this run began. Kept apart from
        `from_key`, which an answer settling above its worst case takes back from (this run's
        reads saw that charge; they never saw this one: verify14j N8)."""
        self.from_earlier += amount
        self.earlier_batches += amount
        self._wake(change=False)

    @property
    def charged_before(self) -> float:
        """What the run counted that the key showed charged before it began (_killed_run.KeySeen.before)."""
        return self.from_earlier + self.before_run

    @property
    def key_gap(self) -> float:
        """Spent beyond the records' costs: what this run's reads of the key counted, what
        earlier runs saw charged for batches this run collected, and answers no record carries."""
        return self.from_key + self.from_earlier + self.unrecorded

    def hold(self, amount: float) -> None:
        """Hold money for a batch submitted (or in doubt: maybe submitted). Unlike `reserve`,
        it never waits and is not "in flight": a batch settles only when collected, maybe in a
        later run, so sync requests must not wait for it. Until then it may be running and
        billing, so its worst case counts as spent (held), in the run's totals and in the
        reconciliation, like an abandoned attempt of unknown cost (break-14c N2)."""
        self.held += amount
        self.batches_open += amount

    async def settle_hold(self, amount: float, actual: float, unknown: float = 0.0) -> None:
        """A collected batch: `actual` is known, `unknown` (the worst cases of its rows whose
        cost nothing says) stays held as spent until a lookup or the key's usage says more."""
        self.held = max(0.0, self.held - amount) + unknown
        # Below the noise it is none: a sum's residue said "batches open" with none (verify45 N3).
        left = self.batches_open - amount
        self.batches_open = left if left > FLOAT_NOISE_USD else 0.0
        self.spent += actual
        self._wake()

    async def set_limit(self, limit_usd: float) -> None:
        """The limit as a /key read left it (_limit_parts): lower when the key's remaining credit
        fell (a shard shares it), higher by BYOK spend the key's credit does not pay."""
        self.limit = limit_usd
        # A tighter limit makes no room, and a higher one comes with the read that opens the
        # window (which wakes every waiter): neither is a change to read /key again for.
        self._wake(change=False)

    def _wake(self, change: bool = True) -> None:
        """Let every waiter re-check (synchronous, so a cancelled task can still call it);
        `change`: the ledger changed, so a waiter beyond the key window may read /key again."""
        self._changes += change
        if self._waiting:  # nothing to do when nobody waits: this is on every request's path
            self._changed.set()
            self._changed = asyncio.Event()
