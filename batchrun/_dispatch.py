"""One request's way out and back, for rows and grader requests alike.

Reserve its worst case in the ledger (a stop when none fits), refresh the key's credit now and then,
send it under the retry policy through the throttle (streamed or not), hold the reservation of an
attempt that may have been billed, and settle.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from ._charges import AbandonedAttempt, ChargeBook, reported_charge
from ._client import ChatResult, OpenRouterClient
from ._clock import Clock
from ._costs import CostModel
from ._exceptions import NotSent, RateLimited, RequestFailed
from ._generation import Flight
from ._journal import AttemptJournal
from ._key_probe import KeyProbe
from ._ledger import BudgetExhausted, CreditLedger
from ._limit_parts import LimitParts
from ._matrix import Request
from ._pricing import budget_message, doubted, usd
from ._reconcile import KeyStart, key_remaining
from ._retry import RetryPolicy, call_with_retries, retry_call
from ._row import Row
from ._settings import RunSettings
from ._status import StopReason
from ._stops import Stops
from ._stream import stream_chat
from ._throttle import Throttle


class Dispatcher:
    def __init__(
        self,
        client: OpenRouterClient,
        clock: Clock,
        stops: Stops,
        throttle: Throttle,
        ledger: CreditLedger,
        policy: RetryPolicy,
        settings: RunSettings,
        *,
        costs: CostModel | None,
        limits: LimitParts,
        key_start: KeyStart,
    ) -> None:
        self.client = client
        self.clock = clock
        self.stops = stops
        self.throttle = throttle
        self.ledger = ledger
        self.policy = policy
        self.costs = costs
        self.charges = ChargeBook(client, ledger)
        self.settings = settings  # stream, timeout_s, key_refresh_*, budget_margin_usd
        self.limits = limits  # the budget's, the key's and the balance's parts of the ledger's limit
        self.key_start = key_start  # the key before the first request (_ledger.follow_key)
        self.key_seen = key_start  # the last read followed: no running total falls below it either
        self._sent_since_refresh = 0
        self._last_refresh = clock.monotonic()  # pre-flight has just read /key
        self._refreshing: asyncio.Future[None] | None = None  # the periodic /key read under way
        self._probe = KeyProbe(settings.concurrency, settings.key_refresh_requests)  # under a limit
        self._watching = False  # watch_key ran
        self._key_asked = self._key_followed = 0  # /key reads sent, and the latest one followed
        self.ledger.gap_changed = self.journal_key_gap
        self.journal: AttemptJournal | None = None  # set by a run that writes results

    def worst_case(self, request: Request) -> float | None:
        return self.costs.worst_case(request) if self.costs else None

    # -- the budget -------------------------------------------------------------------------
    def budget_stop(self, worst: float | None) -> None:
        reason = StopReason.CREDITS if self.limits.from_key else StopReason.BUDGET
        self.stops.request(reason, budget_message(worst, self.ledger.remaining, self.ledger.from_key))

    async def reserve(self, worst: float | None) -> float | None:
        """Reserve the worst case; None (and a stop) when the budget cannot hold it."""
        if worst is None and self.ledger.limit is not None and not self.settings.allow_unknown_prices:
            # Pre-flight refuses such a request under a limit, but not one planned as a cache hit whose
            # entry is gone at dispatch (ttl_s passed, a prune, the cache off): it went out reserving $0 (break14h H2).
            self.stops.request(
                StopReason.CREDITS if self.limits.from_key else StopReason.BUDGET,
                "the next request's worst case is not known (planned as a cache hit, its entry was gone "
                "when it was due): under a limit it is not sent (run.allow_unknown_prices)",
            )
            return None
        try:
            return await self.ledger.reserve(worst or 0.0)
        except BudgetExhausted:
            self.budget_stop(worst)
            return None

    async def release(self, row: Row, *, keep: bool = False) -> None:
        """Give back the row's reservation; `keep` counts it as spent (a request abandoned in
        flight may still be billed: streaming.mdx, only a cancelled stream stops billing)."""
        self.charges.undoubt(row.charges)  # cut short before its charge was settled: it holds nothing back
        if row.reservation is not None:
            reservation, row.reservation = row.reservation, None
            await asyncio.shield(self.ledger.settle(reservation, reservation if keep else 0.0))

    # -- sending ----------------------------------------------------------------------------
    async def _attempt(self, row: Row) -> tuple[ChatResult, float]:
        """One attempt through the throttle; returns the answer and this attempt's latency.
        It is sent (and journaled) only once it has its turn: one whose wait a stop ended is
        NotSent, and nothing of it is held as maybe billed."""
        request = row.request
        started = await self.throttle.acquire(request.model)
        await self.charges.doubts_settled()  # a charge not believed is looked up: sent after, or not
        if self.ledger.over_limit():  # reserved before a charge above its worst case came in
            await self.throttle.release(request.model)
            raise BudgetExhausted()
        try:
            flight = self._going_out(row)
            if self.settings.stream:
                result: ChatResult = await stream_chat(
                    self.client, request.payload, request.id, self.clock, self.settings.timeout_s, flight=flight
                )
            else:
                result = await self.client.chat(request.payload, row_id=request.id, flight=flight)
            self._stop_past_limit(row, reported_charge(result.usage))
        except RequestFailed as failure:
            self.charges.doubt(row.charges, failure.reported_cost, row.reservation or 0.0)
            if isinstance(failure, RateLimited):
                self.throttle.rate_limited(
                    request.model,
                    started,
                    failure.retry_after,
                    pace=failure.paces,
                    limit_wait=failure.limit_wait,
                    limit=failure.limit_count,
                )
            raise
        finally:
            await self.throttle.release(request.model)
        self.throttle.succeeded(request.model, started)
        return result, self.clock.monotonic() - started

    def _stop_past_limit(self, row: Row, reported: float | None) -> None:
        """An answer past the limit stops the run before its slot goes to another (verify30 N2: $80
        of $0.50); one far above its worst case holds every attempt until it is settled (doubt)."""
        held = row.reservation or 0.0
        if reported is not None and doubted(reported, held):
            self.charges.doubt(row.charges, reported, held)
        elif reported is not None and self.ledger.would_pass(held, reported):
            # Within its worst case, it is what the key showed beyond the costs that passed it (verify37 N4).
            why = "past its worst case and the limit" if reported > held else "and the key's usage was past the limit"
            reason = StopReason.CREDITS if self.limits.from_key else StopReason.BUDGET
            self.stops.request(reason, f"an answer said it cost ${usd(reported)}, {why}")

    async def send_with_retries(self, row: Row, worst: float | None) -> tuple[ChatResult, float]:
        """The row's attempts under the retry policy, each holding a reservation (the row's
        first is reserved by the caller); raises RequestFailed or BudgetExhausted."""

        async def attempt() -> tuple[ChatResult, float]:
            if row.reservation is None:
                # The last attempt may have been billed and keeps its reservation as spent: this
                # one needs its own (BudgetExhausted ends the row when none fits). It counts toward
                # the probe's next /key read like a row's first (billed retries went unseen: G6).
                await self.maybe_refresh_key()
                row.reservation = await self.ledger.reserve(worst or 0.0)
            try:
                return await self._attempt(row)
            except (NotSent, BudgetExhausted):
                row.log.attempts -= 1  # counted as it began; it never went out
                raise
            except RequestFailed as failure:
                try:
                    if failure.reported_cost is not None:
                        await self._charge_failure(row, failure)
                    elif failure.maybe_billed:
                        self._hold(row, failure)
                    else:
                        await self._release_unbilled(row)
                finally:
                    self.charges.undoubt(row.charges)
                raise

        # A retry's wait ends at a stop, or its model's: the attempt is then NotSent (break25 F4).
        wait = functools.partial(self.throttle.nap, model=row.request.model)
        return await call_with_retries(attempt, self.policy, wait, row.log, time_left=self.stops.time_left)

    def _going_out(self, row: Row) -> Flight:
        """Mark the attempt sent, on disk first when there is a journal: a kill -9 from here on
        leaves its trace (_journal)."""
        row.sent = True
        journal = self.journal
        if journal is None:
            row.flight = Flight()
        else:
            owner = row.owner or row.request.id
            journal.sent(row.request, row.reservation or 0.0, owner, grader=row.owner is not None)
            row.flight = Flight(lambda generation_id: journal.generation(owner, generation_id))
        return row.flight

    def _hold(self, row: Row, failure: RequestFailed) -> None:
        """An attempt that may have been billed keeps its reservation as spent until its cost
        is known (streaming.mdx: only a cancelled stream stops billing)."""
        if row.reservation is not None:
            reservation, row.reservation = row.reservation, None
            self.charges.abandoned(failure, reservation, row.charges)
        row.sent = False

    async def _release_unbilled(self, row: Row) -> None:
        """A failure the server says was not billed gives its reservation back to the ledger,
        but not to the key window: the next attempt reserves anew, drawing on the window, so
        only a /key read re-opens that room, as for a reported cost (break14c N9: retries went
        out on the first attempt's reservation, 24 attempts of a server billing its 500s on 4
        reservations and no /key read, $0.48 charged under a $0.10 budget)."""
        if row.reservation is not None:
            reservation, row.reservation = row.reservation, None
            await asyncio.shield(self.ledger.release(reservation))
        row.sent = False

    async def charge_answer(self, row: Row, result: ChatResult) -> None:
        """Settle an answer's charge. The reservation stays the row's until the charge takes
        it, so anything failing before that (garbage a reply slipped in) leaves it to
        `hold_in_flight`: held as an attempt that may be billed, never leaked (a leaked
        reservation was never settled, and a run under a budget hung: break14b C5)."""
        # Tokens priced only for an answer whose reply said no cost: pricing each was the run's largest CPU per row.
        estimate = None
        if self.costs is not None and reported_charge(result.usage) is None:
            estimate = self.costs.estimate(row.request, result)
        reservation, row.reservation = row.reservation or 0.0, None
        row.sent = False  # settled from here on, not held as a request in flight
        self._journal_paid(row, reported_charge(result.usage))
        try:
            await self.charges.answered(result, reservation, row.charges, estimate)
        finally:
            self.charges.undoubt(row.charges)

    def _journal_paid(self, row: Row, usd: float | None) -> None:
        """What the attempt answered that it cost, in the journal before the ledger takes it."""
        if self.journal is not None and usd is not None:
            self.journal.paid(row.owner or row.request.id, usd, grader=row.owner is not None)

    async def _charge_failure(self, row: Row, failure: RequestFailed) -> None:
        """A failed attempt whose reply said what it cost: charged at that; the next attempt
        reserves its own worst case (break14b C4, C10: each retry was billed again while
        its reservation was given back)."""
        if row.reservation is not None:
            reservation, row.reservation = row.reservation, None
            self._journal_paid(row, failure.reported_cost or 0.0)
            await self.charges.failed_with_cost(failure, reservation, row.charges)
        row.sent = False

    def hold_in_flight(self, row: Row) -> None:
        """The attempt in flight was cancelled (grace over, deadline, a signal): it may still
        be billed, so it is held, with the generation id its headers already gave, if any."""
        if row.sent:
            self._hold(row, AbandonedAttempt(row.flight.generation_id))

    # -- key refresh ------------------------------------------------------------------------
    def watch_key(self) -> None:
        """With a limit and the key's usage to follow, every reservation draws on the ledger's
        key window, and /key is read again before one that it cannot hold (_ledger). Under a
        limit, a /key that answered at the start without a usable usage leaves nothing to
        follow: the run stops before sending anything (`key_lost`). Once per run: batch mode
        watches from its start (its graders are sync requests), then may run rows in sync mode."""
        if self.costs is None or self.costs.models is None or self._watching:
            return
        self._watching = True
        if self.key_start.usage is None:
            if self.key_start.unread is not None and self.ledger.limit is not None:
                self.key_lost(f"its usage could not be read at the start of the run ({self.key_start.unread})")
            return
        self.ledger.read_key = self._read_key
        self.ledger.open_key_window()
        if self.ledger.limit is not None:
            self._probe.start()

    def key_lost(self, why: str) -> None:
        """Under a limit, the key's usage can no longer be followed: no window can be trusted,
        so nothing more is reserved and dispatching stops (exit 5). The window was dropped
        silently before, and a server under-reporting every answer was believed again until
        the end: $0.24 charged under a $0.05 budget, exit 0 (break14c N7)."""
        self.ledger.lose_key_window()
        self.journal_key_gap()
        self.stops.request(
            StopReason.KEY_UNREADABLE,
            f"the key's usage cannot be followed: {why}; under a limit, costs the answers under-report "
            "could not be caught, so nothing more is sent",
        )

    async def maybe_refresh_key(self) -> None:
        """Other jobs and shards may share the key: every N requests or T seconds, one
        worker re-reads /key before its reservation, and the ledger follows the credit
        (and retries the lookups of costs still unknown)."""
        self._sent_since_refresh += 1
        now = self.clock.monotonic()
        settings = self.settings
        due = self._probe.due(self._sent_since_refresh) or now - self._last_refresh >= settings.key_refresh_s
        if self._refreshing is not None:
            # A read is under way: past the probe's spacing, wait for its answer rather than send
            # on unseen; with a slow /key, requests went out for seconds and $5.11 was charged
            # under a $0.05 budget (verification of break14e fixes, G1).
            if self._probe.passed(self._sent_since_refresh):
                await self.stops.held_by("a /key read", asyncio.wait([self._refreshing]))  # its failure is the reader's
            return
        if not due or self.costs is None or self.costs.models is None:
            return
        task = self._refreshing = asyncio.ensure_future(self._refresh())
        task.add_done_callback(self._refreshed)  # whoever started it may be cancelled meanwhile
        await asyncio.shield(task)

    def journal_key_gap(self) -> None:
        """The key gap as it is now, in the attempt journal (a kill -9 must not forget it)."""
        if self.journal is not None:
            if self.ledger.unconfirmed_lost > 0:  # what of it a resume may release (_killed_run)
                self.journal.unconfirmed(self.ledger.unconfirmed_lost)
            self.journal.key_gap(self.ledger.key_gap)

    async def read_key_now(self) -> bool:
        """Under a limit, follow the key at once (or join the read under way): a collected batch
        settled a whole batch's charge, and one that under-reported was seen only by the end-of-run
        read, so a kill -9 before it lost the gap (break14h H5, batch mode). True when a read
        followed it (the key window is still open)."""
        if not self._watching or self.ledger.read_key is None or self.ledger.limit is None or self.ledger.key_lost:
            return False  # lost: not read again at each collection (verify45 N3: 42 failed reads, 5 s -> 61 s)
        if self._refreshing is None:
            task = self._refreshing = asyncio.ensure_future(self._refresh())
            task.add_done_callback(self._refreshed)
        await asyncio.shield(self._refreshing)
        return not self.ledger.key_lost

    def _refreshed(self, task: asyncio.Future[None]) -> None:
        if self._refreshing is task:
            self._refreshing = None

    async def _refresh(self) -> None:
        await self.charges.retry_lookups()
        await self._read_key()

    async def _read_key(self) -> None:
        """Read /key (retried like start-up's read); the ledger follows its usage and its credit, and
        opens a new key window. With the window in force, a read that still fails, or a usage that
        fell or is not a number, stops the run instead (`key_lost`). The docs give /key no rate limit
        of its own (limits.mdx: "call GET /api/v1/key ... to track limit_remaining"); the window asks
        at most one read per reservation, near the end of the budget. A read that answers after a
        later one did is stale: followed, it was a fall (exit 5) or a rise counted twice (out-162 F1)."""
        asked = self._key_asked = self._key_asked + 1
        # What is sent while /key answers is not in what it shows: it counts toward the next read.
        sent_before = self._sent_since_refresh
        self._last_refresh = self.clock.monotonic()
        lost: str | None = None
        try:
            info = await retry_call(self.client.key_info, self.policy, self.clock.sleep, self.stops.time_left)
        except RequestFailed as failure:
            info, lost = None, f"/key failed ({failure.kind}: {failure.message[:200]})"
            self.stops.account_failure(failure)
        else:
            lost = None if info is not None else "/key is not there any more"
        self._sent_since_refresh = max(0, self._sent_since_refresh - sent_before)
        try:
            if info is not None and asked > self._key_followed:
                self._key_followed = asked
                lost = await self._follow_key(info)
        finally:
            if lost is not None and self.ledger.read_key is not None and self.ledger.limit is not None:
                self.key_lost(lost)
            else:
                self.ledger.open_key_window()

    async def _follow_key(self, info: dict[str, Any]) -> str | None:
        """Follow the key's spend (its usage, as its limit counts it, or the fall of its
        limit_remaining: _reconcile.key_spend) and its credit; returns why its usage cannot be
        followed, or None."""
        start, problem = self.key_start, None
        remaining = key_remaining(info)
        charged = self.ledger.spent  # what the key has been charged since the start, at least
        if start.usage is not None:
            usage, problem = start.followed(info, self.key_seen)
            if usage is not None and problem is None:
                self.key_seen, self.key_start = KeyStart.of(info), start.read(info, usage)
                charged = self.key_start.spend(usage, info)
                gap = self.ledger.follow_key(charged)
                if gap > 0:
                    self.journal_key_gap()
                if self.journal is not None:  # what a resume after a kill -9 measures from (_killed_run)
                    self.journal.key_seen(self.key_seen, self.ledger)
                self._probe.followed(gap, self.ledger.remaining or 0.0)
        # The key allows `remaining` beyond what it has charged; the ledger counts that charge (and the
        # gap follow_key added) already, so its part is the charge plus what is left. `spent + remaining`
        # counted the gap twice and stopped a run with credit to spare (break-14c m6). Charges counted
        # from before the run began (from_earlier) are not in `charged`.
        key_cap = None if remaining is None else charged + self.ledger.from_earlier + remaining
        rise = start.byok_rise(info) if start.usage is not None and problem is None else None
        if (limit := self.limits.follow(key_cap, rise)) is not None and limit != self.ledger.limit:
            await self.ledger.set_limit(limit)
        return problem
