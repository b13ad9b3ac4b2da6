"""What each row cost, attempt by attempt, and how sure we are of it.

A row's cost has one of four statuses (the record's `cost_status`):

- `reported`: the answer carried `usage.cost` (usage-accounting.mdx);
- `looked_up`: read from `GET /generation?id=` (an answer without a cost, or an abandoned
  attempt whose generation id was seen in the `X-Generation-Id` header);
- `estimated`: the answer had token counts but no cost and no lookup worked: tokens
  times the dearest price the request could have been routed to (an upper bound);
- `unknown`: an attempt may have been billed and nothing says how much, or the server
  sent a cost that cannot be believed. The record's `cost` is then null (never 0) and
  `cost_unknown` true; `cost_held` is what the ledger counts as spent for the row (known
  parts plus each unknown attempt's worst case), which a resume counts again; the end-of-run
  reconciliation against the key's usage accounts for it in total. This is the one
  meaning of an unknown cost, whatever cut the row short.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

from ._client import ChatResult, OpenRouterClient
from ._cut_off import CutOff
from ._exceptions import RequestFailed, Transient
from ._ledger import CreditLedger
from ._pricing import GenerationCost, above_worst, doubted, money, usd
from ._reply import below_upstream, upstream_cost
from ._row_cost import Charge, RowCharges

# Lookups a wind-down makes at once: a few connections of the pool, not a burst on /generation.
LOOKUPS_AT_ONCE = 8
STALLED_LOOKUPS = 3  # lookups in a row out of time (or slow) before /generation counts as down (lookups_down)
SLOW_LOOKUP_S = 3.0  # a lookup that took this long is a stall too (OpenRouter answers in well under 1 s)
IDS_KEPT = 4096  # recent generation ids a reply's id is checked against (a server that repeats one)
ROW_LOOKUP_S = 10.0  # what one lookup may take (OpenRouter answers in well under 1 s): a worker waits on it


class AbandonedAttempt(Transient):
    """An attempt cancelled in flight (grace or deadline over): it may still be billed."""

    maybe_billed = True

    def __init__(self, generation_id: str | None = None) -> None:
        super().__init__("cancelled", "cancelled in flight")
        self.generation_id = generation_id  # seen in the headers before the cancel: looked up


def with_looked_up_usage(result: ChatResult, row: RowCharges) -> ChatResult:
    """`result`, with the token counts its cost lookup gave where the reply had none (a stream
    whose usage chunk never came): its `max_tokens` checks are then decided (break66 F2)."""
    found = next((c.usage_found for c in reversed(row.parts) if not c.abandoned), None)
    if found is None or isinstance(result.usage.get("completion_tokens"), int):
        return result
    return dataclasses.replace(result, usage={**result.usage, **found, "total_tokens": sum(found.values())})


def byok_of(usage: dict[str, Any]) -> tuple[bool, float | None]:
    """is_byok and cost_details.upstream_inference_cost of a usage object, checked. Without the
    flag, an upstream charge above 0 is a provider's bill (break-14b M3): it is counted. With
    `is_byok: false`, `cost` is the whole charge and the upstream cost is what OpenRouter paid
    the provider out of it (openapi.yaml's examples: the two were added, is_byok written true,
    and a run under a budget stopped at half of it, break32 F1)."""
    upstream = upstream_cost(usage)
    flag = usage.get("is_byok")
    return flag is True or (flag is not False and bool(upstream)), upstream


def reported_charge(usage: dict[str, Any]) -> float | None:
    """What an answer's usage says it was charged, when that can be taken as the whole
    charge: usage.cost, plus the upstream cost of a BYOK answer. A BYOK answer's `cost` is
    OpenRouter's fee only; the provider's charge is `cost_details.upstream_inference_cost`
    (usage-accounting.mdx), which a key limit that includes BYOK spend counts. Without it
    the charge is not known: looked up, or else unknown with its worst case held (break-14 #7)."""
    is_byok, upstream = byok_of(usage)
    reported = money(usage.get("cost"))
    if reported is None or (is_byok and upstream is None) or below_upstream(usage, reported):
        return None
    return reported + ((upstream or 0.0) if is_byok else 0.0)


class ChargeBook:
    """The run's charges: resolves unknown ones by lookup, and keeps what stays unknown."""

    def __init__(self, client: OpenRouterClient, ledger: CreditLedger) -> None:
        self.client = client
        self.ledger = ledger
        self.unresolved: list[Charge] = []
        self.lookups = 0
        self.stalled = 0  # lookups in a row that ran out of their time (lookups_down)
        self.resolved_after_record = 0.0  # known only after the row's record said "unknown"
        self.resolved_after_record_attempts = 0
        self.above_worst = 0  # charges above their attempt's worst case
        self.above_worst_usd = 0.0  # by how much, in all
        self.above_worst_example = ""
        self.cut_off = CutOff()  # after a stop, lookups end with the grace (_cut_off)
        # Generation ids given to recent attempts: "unique" (openapi.yaml), so one given again is a
        # lie, and a lookup by it books another row's cost (break66 F4: per-model costs 100x off).
        # The last IDS_KEPT only: one id a row held 14 MB at 100,000 rows (bench/memory.py).
        self.ids_seen: dict[str, None] = {}
        self.reused_ids = 0
        # Answers estimated from their tokens (an upper bound) whose lookup found nothing yet:
        # /generation lags an answer, so they are looked up again at the run's end (break66 F5:
        # the first 404 left each at 6.7x its cost for good).
        self.estimated: list[Charge] = []
        self.estimated_count = 0  # answers whose cost was estimated (an upper bound), in all
        self.doubted = 0  # reported charges past DOUBTED_TIMES their worst case: looked up first
        self.doubted_looked_up = 0  # ... of which /generation gave the charge
        self.doubted_unasked = 0  # ... of which none could be asked (no generation id, /generation stalled)
        self.doubted_example = ""
        self.doubting = 0  # doubted charges being looked up: no attempt is sent meanwhile
        self._doubts_settled = asyncio.Event()
        self._doubts_settled.set()
        ledger.look_up_held = self.look_up_held

    def _reused(self, generation_id: str | None) -> bool:
        """Whether an earlier attempt had this id (counted): the new attempt is not looked up by it."""
        if generation_id is None:
            return False
        if generation_id in self.ids_seen:
            self.reused_ids += 1
            return True
        self.ids_seen[generation_id] = None
        if len(self.ids_seen) > IDS_KEPT:
            del self.ids_seen[next(iter(self.ids_seen))]  # the oldest: dicts keep their order
        return False

    def check_bound(self, cost: float, worst: float, how: str) -> bool:
        """Flag a charge the worst case did not bound: a lying reply or lookup, or a cost
        the worst case missed. A worst case of 0 is not one (an unknown price run anyway).
        True when flagged."""
        if above_worst(cost, worst):
            self.above_worst += 1
            self.above_worst_usd += cost - worst
            if not self.above_worst_example:
                self.above_worst_example = f"${usd(cost)} {how} for a worst case of ${usd(worst)}"
            return True
        return False

    def abandoned(self, failure: RequestFailed, reservation: float, row: RowCharges) -> None:
        """An attempt that may have been billed: hold its reservation."""
        held = self.ledger.keep(reservation)
        charge = Charge(failure.generation_id, held, reused_id=self._reused(failure.generation_id))
        row.parts.append(charge)
        self.unresolved.append(charge)

    async def failed_with_cost(self, failure: RequestFailed, reservation: float, row: RowCharges) -> None:
        """A failed attempt whose reply reported a cost (`RequestFailed.reported_cost`)."""
        cost = failure.reported_cost or 0.0
        charge = Charge(failure.generation_id, 0.0, cost=cost, status="reported")
        charge.reused_id = self._reused(failure.generation_id)
        row.parts.append(charge)
        await self._settle_reported(charge, reservation, cost, flag=False)

    async def answered(self, result: ChatResult, reservation: float, row: RowCharges, estimate: float | None) -> None:
        """Settle an answer: its reported cost, a lookup, the token estimate, or unknown (held)."""
        is_byok, upstream = byok_of(result.usage)
        gid = result.generation_id
        charge = Charge(gid, 0.0, is_byok=is_byok, upstream_inference_cost=upstream, abandoned=False)
        charge.reused_id = self._reused(gid)
        row.parts.append(charge)
        reported = reported_charge(result.usage)
        if reported is not None:
            charge.cost, charge.status = money(result.usage.get("cost")), "reported"
            await self._settle_reported(charge, reservation, reported)
            return
        charge.held = self.ledger.keep(reservation)
        if upstream is not None and not is_byok and upstream > charge.held:
            # A non-BYOK cost below its own upstream cost: the charge is at least the upstream
            # cost, held in full while unknown (verify32 n4: the worst case held was below it).
            charge.held += self.ledger.hold_more(upstream - charge.held)
        self.unresolved.append(charge)
        # At most ROW_LOOKUP_S of the row's worker: a /generation that never answers held each
        # worker a whole timeout_s a row, a 2-second run took 7 minutes (break36 F4). Unknown
        # then, it is held and looked up again at the key's refresh and at the run's end.
        charge.row_looked_up = True
        if not self.lookups_down and await self.look_up(charge, ROW_LOOKUP_S):
            return
        if charge.status != "unknown":
            return  # looked up meanwhile by a key refresh's lookups: not estimated over
        if result.cost_rejected or is_byok:
            # A server whose cost cannot be believed is not believed on tokens either: the
            # cost stays unknown and its worst case stays held (issue 11). Nor is a BYOK
            # answer's provider charge estimated from our prices: it stays held too.
            return
        if estimate is not None:
            # Tokens times the dearest allowed price: never below the real charge.
            self.unresolved.remove(charge)
            held, charge.held = charge.held, 0.0
            charge.cost, charge.status = estimate, "estimated"
            # Tokens a reply claimed far past its max_tokens (1M for 2): counted, but said so, and
            # looked up again by the run's end or, failing that, a resume (_earlier_costs).
            charge.doubted = doubted(estimate, held)
            self.estimated_count += 1
            self.check_bound(estimate, held, "estimated from its token counts")
            await self.ledger.resolve(held, estimate)
            if charge.generation_id is not None and not charge.reused_id:
                self.estimated.append(charge)

    async def _settle_reported(self, charge: Charge, reservation: float, reported: float, flag: bool = True) -> None:
        """Settle an attempt at what its reply said it cost (`flag`: and flag it above its worst
        case, as a failed attempt's is not). A doubted charge is looked up first, its reservation
        still held: /generation's figure is taken; without one, the reply's (the limit is never
        passed on a guess that it lied)."""
        how = "reported"
        if doubted(reported, reservation):
            self.doubted += 1
            self.doubted_example = self.doubted_example or f"${usd(reported)} for a worst case of ${usd(reservation)}"
            self.doubt_begins()
            try:
                found = None
                # Under a limit, asked even when /generation was found slow: answering in 5 s, it was
                # not asked, and $9,999 replies stopped the run (out-116 F5). Without one, the
                # reply's figure stops nothing, and rows do not wait on a lookup that stalls.
                asked = not self.lookups_down or self.ledger.limit is not None
                if charge.generation_id is not None and not charge.reused_id and asked:
                    found = await self._fetch(charge.generation_id, ROW_LOOKUP_S)
                else:
                    self.doubted_unasked += 1
            except BaseException:
                # Cancelled while it was asked (a stop's grace over): the reply's figure stands,
                # and the reservation is settled, never leaked (a run under a budget hung: break14b C5).
                charge.doubted = True
                await self.ledger.settle(reservation, reported, answered=True)
                raise
            finally:
                self.doubt_ends()
            if found is not None:
                self.doubted_looked_up += 1
                charge.cost, charge.status, reported, how = found.total_cost, "looked_up", found.charged, "looked up"
                charge.is_byok, charge.upstream_inference_cost = found.is_byok, found.upstream_inference_cost
                charge.usage_found = found.usage
            else:
                charge.doubted = True
        if flag or how != "reported":
            charge.above_worst = self.check_bound(reported, reservation, how)
        await self.ledger.settle(reservation, reported, answered=True)

    def doubt(self, row: RowCharges, reported: float | None, reservation: float) -> None:
        """A charge far above its worst case holds every attempt from the moment its reply is
        in, not from when its lookup begins: the throttle's slot, given back on the way there,
        let another attempt out meanwhile (out-184 F1: $0.60 billed on a $0.05 budget). Until
        the row's charge is settled, or the row cut short (undoubt)."""
        if reported is not None and not row.doubting and doubted(reported, reservation):
            row.doubting = True
            self.doubt_begins()

    def undoubt(self, row: RowCharges) -> None:
        if row.doubting:
            row.doubting = False
            self.doubt_ends()

    def doubt_begins(self) -> None:
        self.doubting += 1
        self._doubts_settled.clear()

    def doubt_ends(self) -> None:
        self.doubting -= 1
        if not self.doubting:
            self._doubts_settled.set()

    async def doubts_settled(self) -> None:
        """Until no doubted charge is being looked up: an attempt about to be sent waits, so the
        limit it is checked against counts the charge as confirmed (or as the reply said), as an
        answer believed stops the run before its slot goes to another (verify30 N2)."""
        if self.doubting:
            await self._doubts_settled.wait()

    async def _fetch(self, generation_id: str, limit_s: float | None) -> GenerationCost | None:
        """/generation's account of one attempt, within `limit_s`; None when there is none (yet).
        Counts stalls (lookups_down)."""
        self.lookups += 1
        started = asyncio.get_running_loop().time()
        try:
            async with self.cut_off.bound(), asyncio.timeout(limit_s):
                found: GenerationCost | None = await self.client.generation(generation_id)
        except TimeoutError:  # not known now: held until it is (break25 F6)
            self.stalled += 1
            return None
        except RequestFailed as failed:
            # The client's own timeout (timeout_s below ROW_LOOKUP_S) is a stall too; an error answered is not.
            self.stalled = self.stalled + 1 if failed.kind == "timeout" else 0
            return None
        # So is an answer that took SLOW_LOOKUP_S: answering in 8-9.5 s never ran out of time, and
        # each row waited that long, 100 rows in 228 s (verify37 N2). Its cost is taken all the same.
        slow = asyncio.get_running_loop().time() - started >= SLOW_LOOKUP_S
        self.stalled = self.stalled + 1 if slow else 0
        return found if found is None or found.believed else None  # above any one request's cost: a lie

    async def look_up(self, charge: Charge, limit_s: float | None = None) -> bool:
        """Resolve one charge through /generation, unknown or estimated (its estimate then gives way
        to the charge); False when it is not known (yet), or not within `limit_s`."""
        status = charge.status
        if charge.generation_id is None or charge.reused_id or status not in ("unknown", "estimated"):
            return False
        found = await self._fetch(charge.generation_id, limit_s)
        if found is None or charge.status != status:
            # Resolved meanwhile by another lookup of it (a row's own, and the key window's or
            # the wind-down's, at once): counted once (verify25 N3: 2e-06 twice in the ledger).
            return False
        # What the ledger counts for it now: its worst case held, or its estimate spent.
        held, charge.held = charge.held, 0.0
        estimate = (charge.cost or 0.0) if status == "estimated" else 0.0
        if charge.abandoned:
            # No field of its own for a BYOK upstream cost: the whole charge is its cost (the fee
            # alone made a BYOK attempt looked up late read as $0: verify14j N13).
            charge.cost = found.charged
        else:
            charge.cost = found.total_cost
            charge.is_byok, charge.upstream_inference_cost = found.is_byok, found.upstream_inference_cost
            charge.usage_found = found.usage
        charge.status, charge.doubted = "looked_up", False
        for waiting in (self.unresolved, self.estimated):
            if charge in waiting:
                waiting.remove(charge)
        if charge.recorded and status == "unknown":
            self.resolved_after_record += found.charged
            self.resolved_after_record_attempts += 1
        charge.above_worst = self.check_bound(found.charged, held or estimate, "looked up")
        await self.ledger.resolve(held, found.charged - estimate)
        return True

    async def look_up_row(self, row: RowCharges) -> None:
        """A row's charges still unknown, each once and within ROW_LOOKUP_S of its worker (an
        answer's was looked up as it was settled: asked twice, a /generation that never answers
        held the worker twice as long: verify36)."""
        for charge in row.parts:
            if charge.status == "unknown" and not charge.row_looked_up and not self.lookups_down:
                charge.row_looked_up = True
                await self.look_up(charge, ROW_LOOKUP_S)

    @property
    def lookups_down(self) -> bool:
        """/generation has stopped answering: STALLED_LOOKUPS lookups in a row ran out of time, or
        took SLOW_LOOKUP_S. Rows and key refreshes then wait on no lookup (their costs stay held);
        the run's end tries one, and the rest if it answers in time. A /generation that never
        answered held each row's worker ROW_LOOKUP_S: 100 rows took 3.5 minutes, not 2 s (break36 F4)."""
        return self.stalled >= STALLED_LOOKUPS

    async def retry_lookups(self, final: bool = False, until: float | None = None) -> None:
        """Another try for every charge still unknown that has an id (key refresh, run end:
        `final`), LOOKUPS_AT_ONCE at a time: one after another, a /generation that stalls held
        the end of a run for every lookup's whole timeout in turn (verify26 R2: 8 x 20 s, twice).
        Those not done by `until` (the loop's time) stay held: after a stop, half the wind-down
        is theirs, the rest the /key read's, which a /generation that hung left none (break60 F2)."""
        try:
            async with asyncio.timeout_at(until):
                await self._retry_lookups(final)
        except TimeoutError:
            pass  # stalled: the charges not looked up stay held, as a stall's are

    async def _retry_lookups(self, final: bool) -> None:
        if self.lookups_down:
            unresolved = [c for c in self.unresolved if c.generation_id is not None and not c.reused_id]
            if not final or not unresolved or not await self.look_up(unresolved[0], ROW_LOOKUP_S):
                return
        await self._look_up_all(list(self.unresolved), while_up=True)
        if final:  # the estimates too: /generation lags an answer (break66 F5)
            await self._look_up_all(list(self.estimated), while_up=True)

    async def look_up_held(self) -> None:
        """Before a reservation that finds no room stops the run (CreditLedger.reserve): every held
        charge with an id, a /generation that has been slow asked too, all within ROW_LOOKUP_S.
        A stop costs rows, this a few seconds at most: held worst cases took the room and the run
        stopped with most of its budget left (out-124 F1), and so again once /generation took 3 s
        a lookup and counted as down (out-127 F2)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ROW_LOOKUP_S):
                await self._look_up_all(list(self.unresolved), while_up=False)

    async def _look_up_all(self, charges: list[Charge], *, while_up: bool) -> None:
        """`charges` looked up LOOKUPS_AT_ONCE at a time (each holds a worker's turn: verify36 N1);
        `while_up`: the rest stay held once /generation counts as down meanwhile."""
        turns = asyncio.Semaphore(LOOKUPS_AT_ONCE)

        async def look_up(charge: Charge) -> None:
            async with turns:
                if not (while_up and self.lookups_down):
                    await self.look_up(charge, ROW_LOOKUP_S)

        await asyncio.gather(*(look_up(charge) for charge in charges))

    @property
    def unresolved_held(self) -> float:
        return sum(c.held for c in self.unresolved)
