"""Batch mode: the second executor. Submits rows as OpenRouter batches, polls, collects.

It writes the same records as sync mode, through the same Runner (record building, checks,
error classification, ledger, stop reasons), so summaries, thresholds and exit codes work
the same. Its own parts: grouping rows into batches (`_batch_rules`), the Batch API calls
(`_batch_api`), and the durable record of submitted batches (`_batch_state`), which lets a
run end before its batches do ("submitted", exit 10) and a later run collect them.

Order of a run: hold the money of batches still open from earlier runs; submit new batches
(each only if its worst case at full prices fits the budget); run the rows that must go
through sync mode (non-text parts, or retries when `batch_retry: sync`); then poll every
open batch until all are collected, the deadline passes, or the run is stopped.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from ._batch_api import BatchClient, BatchInfo, differing_rows, item_allowance, stray_items
from ._batch_costs import batch_charges
from ._batch_items import write_items
from ._batch_key import count_unseen, follow_collected, follow_earlier, note_key_seen, seen_between_runs, settle_earlier
from ._batch_outcome import BatchOutcome
from ._batch_polls import PollFailures
from ._batch_rules import batch_groups
from ._batch_sort import sort_rows
from ._batch_state import COLLECTED, SUBMITTED, BatchEntry, BatchState, by_row, custom_ids
from ._cut_off import CutOff
from ._exceptions import AuthFailed, OutputFailed, RateLimited, RequestFailed, Transient
from ._generation import valid_generation_id
from ._matrix import Request
from ._retry import AttemptLog, retry_call, retry_policy
from ._row_cost import counted
from ._settings import RunSettings
from ._status import StopReason
from ._worker_pool import PoolOutcome, Runner

# batch-quickstart.mdx, Pricing: "typically" 50% of per-token prices. Typical, not promised:
# `plan` shows it as what a batch usually costs, and reservations use the full prices.
BATCH_TOKEN_FACTOR = 0.5
Notice = Callable[[str], None]


class BatchExecutor:
    def __init__(
        self,
        runner: Runner,
        api: BatchClient,
        state: BatchState,
        settings: RunSettings,
        *,
        deadline_s: float | None,
        keep: Callable[[Request], bool],
        retry_rows: set[str],
        notice: Notice,
        kill_after_submit: int | None = None,
        killed_run_bound: float | None = None,
    ) -> None:
        self.runner = runner
        self.api = api
        self.state = state
        self.settings = settings
        self.clock = runner.clock
        self.deadline_at = None if deadline_s is None else self.clock.monotonic() + deadline_s
        self.policy = retry_policy(settings)
        self.keep = keep
        self.retry_rows = retry_rows  # rows re-run by --retry-errors
        self.notice = notice
        self.kill_after_submit = kill_after_submit  # test seam: SIGKILL after the Nth 202
        # What a killed run's readings show its unfollowed batches can have cost (follow_earlier).
        self.killed_run_bound = killed_run_bound
        self.cut_off = CutOff()  # when its own calls must end (run)
        self.pending: dict[str, Request] = {}  # row id -> request, for rows in open batches
        self.earlier: set[str] = set()  # keys of batches submitted by an earlier run
        self.outcome = BatchOutcome()
        self.poll_failures = PollFailures(notice)

    # -- sorting the rows --------------------------------------------------------------------
    def _sort(self, requests: Iterable[Request]) -> tuple[list[Request], list[Request]]:
        """(rows to submit, rows for sync mode); rows held by open or doubtful batches wait."""
        held, runner = self.state.held_rows(), self.runner
        return sort_rows(requests, held, self.pending, self.keep, self.retry_rows, runner, self.settings, self.notice)

    def _answered(self, row: str, sent: str | None) -> Request | None:
        """The row's request if the body `sent` for it (None: not kept) is its body: not a row
        removed from the job, nor one edited since (its batch answered an earlier body)."""
        request = self.pending.get(row)
        if request is None or sent not in (None, request.fingerprint):
            return None
        return self.pending.pop(row)

    # -- submitting --------------------------------------------------------------------------
    def _worst(self, group: list[Request]) -> float:
        """A batch's reservation: the full per-token prices, since the docs promise no
        discount (batch-quickstart.mdx: "typically billed at 50%"; break-14b C9)."""
        costs = self.runner.costs
        if costs is None:
            return 0.0
        return sum(costs.worst_case(r) or 0.0 for r in group)

    async def _submit(self, group: list[Request]) -> None:
        runner = self.runner
        left = self._time_left()
        if left is not None and left <= 0 and runner.stop_reason is None:
            # No batch goes out after the deadline (break28 M2: the next one was submitted).
            runner.stops.deadline_reached()
        if runner.stop_reason is not None:
            for request in group:
                runner.skip(request, runner.stop_reason)
            return
        worst = self._worst(group)
        remaining = runner.ledger.remaining
        if remaining is not None and worst > remaining + 1e-12:
            # A batch cannot be stopped half-way like sync requests: it is all or nothing.
            reason = StopReason.CREDITS if runner.limit_from_key else StopReason.BUDGET
            runner.request_stop(
                reason,
                f"a batch of {len(group)} {group[0].model} request(s) needs up to ${worst:.6f} (full "
                f"prices: the batch discount is typical, not promised), ${max(0.0, remaining):.6f} is left",
            )
            for request in group:
                runner.skip(request, reason)
            return
        model = group[0].model
        entry = BatchEntry(
            key=self.state.next_key(),
            model=model,
            rows=[r.id for r in group],
            fingerprints=[r.fingerprint for r in group],
            reserved_usd=worst,
            intent_at=self.clock.time(),
            retry=any(r.id in self.retry_rows for r in group),
            unfollowed=True,
            tagged=True,
            endpoint=self.api.client.base_url,
        )
        self.state.entries.append(entry)
        try:
            self.state.save()  # the intent is durable before the POST leaves
        except OutputFailed:
            self.state.entries.remove(entry)  # not sent: nothing to hold, nor in doubt
            raise
        runner.ledger.hold(worst)
        started = self.clock.time()
        try:
            # A 429 proves the batch was not created: asked again after its wait, like a sync
            # request (verify22 N11); any other failure may have created it (in doubt, below).
            items = [(custom_id, r.payload) for custom_id, r in zip(custom_ids(entry), group, strict=True)]
            async with self.cut_off.bound():
                info = await retry_call(
                    lambda: self.api.submit(model, items), self.policy, self.clock.sleep, self._time_left, RateLimited
                )
        except (TimeoutError, RequestFailed) as failure:
            if isinstance(failure, RequestFailed) and not failure.may_have_acted:
                self.state.entries.remove(entry)  # refused: nothing was created
                self.state.save()
                await runner.ledger.settle_hold(worst, 0.0)
                for request in group:
                    runner.records.failed(request, failure, AttemptLog(), started)
                return
            # No HTTP answer (cut at the deadline or a stop's grace, break28 M2: each hung POST
            # waited its whole timeout), or a server error (a gateway's 502 says nothing of what
            # the server behind it did; break22 m5): OpenRouter may or may not have the batch.
            # Keep the intent (in doubt): never submitted again without the user's word.
            if isinstance(failure, RequestFailed):
                self._in_doubt(entry, group, f"submission outcome unknown ({failure.message})")
            else:
                self._in_doubt(entry, group, "no answer before the run had to end", settle="")
            return
        if (holder := next((e for e in self.state.entries if e.batch_id == info.id), None)) is not None:
            # One id for two batches (out-185 F1): both were recorded under it, and every later
            # run and `batches list` refused the file. Which one the server has under it is not
            # known: this one is in doubt, as one answered with an id that is refused.
            self._in_doubt(entry, group, f"the Batch API answered with {holder.key}'s batch id {info.id}")
            return
        self.outcome.submitted += 1
        if self.kill_after_submit is not None and self.outcome.submitted >= self.kill_after_submit:
            os.kill(os.getpid(), signal.SIGKILL)  # test seam: the crash between the 202 and the record
        entry.batch_id, entry.state, entry.status = info.id, SUBMITTED, info.status
        for request in group:
            self.pending[request.id] = request
        try:
            self.state.save()
        except OutputFailed as failure:
            # On disk it is still an intent, in doubt for the next run: its id, said, adopts it.
            results = self.runner.records.writer.path if self.runner.records.writer else "RESULTS.jsonl"
            adopt = f"`batchrun batches adopt {results} {entry.key} {info.id}` once there is room"
            raise OutputFailed(f"{failure}; batch {entry.key} was submitted as {info.id}: {adopt}") from None

    def _in_doubt(
        self, entry: BatchEntry, group: list[Request], why: str, settle: str = ", then adopt or release it"
    ) -> None:
        """`entry` may or may not be at OpenRouter: kept as an intent, never submitted again
        without the user's word (`batches adopt` or `release`), its rows held."""
        self.outcome.in_doubt.append(entry.key)
        self.notice(f"warning: batch {entry.key} ({entry.model}): {why}; in doubt: see `batchrun batches list`{settle}")
        for request in group:
            self.pending[request.id] = request

    def _time_left(self) -> float | None:
        return None if self.deadline_at is None else self.deadline_at - self.clock.monotonic()

    # -- collecting --------------------------------------------------------------------------
    def _row_worst(self, entry: BatchEntry, request: Request | None) -> float:
        """A row's worst case at full prices (what it held in the batch's reservation)."""
        costs = self.runner.costs
        if request is None or costs is None:
            return entry.reserved_usd / max(1, len(entry.rows))  # a row this run does not have
        return costs.worst_case(request) or 0.0

    async def _collect(self, entry: BatchEntry, info: BatchInfo) -> None:
        """Settle a terminal batch and write its rows. Whatever the status, result items it
        carries are kept and graded: they were answered, and paid for (break-14b M9; the
        quickstart says `results` is null unless completed, but a server that sends them has
        answered). The charge falls on the rows as _batch_costs says."""
        runner = self.runner
        info = replace(info, results=by_row(entry, info.results))  # items by the row they answered
        sent = dict(zip(entry.rows, entry.fingerprints, strict=False))
        requests = {row: self._answered(row, sent.get(row)) for row in entry.rows}
        if unmatched := sum(request is None for request in requests.values()):
            self.notice(
                f"batch {entry.key}: {unmatched} answer(s) not recorded: their rows were edited or removed from "
                "the job since it was sent (what they cost is counted)"
            )
        items, repeated = self.api.read_items(info)
        worst = lambda row: self._row_worst(entry, requests[row])  # noqa: E731
        charges = batch_charges(entry.rows, info, items, worst, repeated)
        # Said under --quiet: the answer a row keeps decides it (break22 m1, m2); a charge not believed (out-172 F1).
        for said in (stray_items(info, entry.rows, differing_rows(items, repeated)), charges.doubt()):
            if said:
                self.notice(f"warning: batch {entry.key} ({entry.batch_id}): {said}")
        runner.charges.estimated.extend(charges.estimated)
        if runner.charges.check_bound(charges.known, entry.reserved_usd, "charged for a batch"):
            for part in (part for row in charges.rows.values() for part in row.parts):
                part.above_worst = True  # not believed: no hit says it saved it (verify66 8)
        await runner.ledger.settle_hold(entry.reserved_usd, charges.known, charges.held)
        # Spent, in no record: kept in the key gap for a resume; an answer of unknown cost by the
        # worst case held for it (it was not carried at all, and a resume could spend it again).
        if unrecorded := charges.strays + sum(
            counted(charges.rows[r].fields()) for r, q in requests.items() if q is None
        ):
            runner.ledger.unrecorded += unrecorded
            runner.dispatch.journal_key_gap()
        beyond = max(0.0, entry.reserved_usd - charges.known - charges.held)  # what it may have cost more
        if entry.key in self.earlier:
            beyond -= settle_earlier(self.state, entry, runner.dispatch, self.notice, charges.known, charges.held)
        runner.charges.unresolved.extend(charges.unknown)  # looked up at the end, else reconciled
        # A row an earlier collection of this batch wrote already (that run was killed before it
        # could mark the batch collected) is not written, nor graded, again (verify14j N9).
        due = [
            (request, row)
            for row, request in requests.items()
            if request is not None and not (entry.key in self.earlier and self.keep(request))
        ]
        due_items = [(q, items.get(row), charges.rows[row]) for q, row in due]
        await write_items(runner, entry, due_items, info, self._time_left())
        entry.state, entry.status = COLLECTED, info.status
        entry.cost_usd = None if charges.held else charges.known
        entry.unfollowed = True
        self.state.save()  # collected, its charge not yet followed on the key
        self.outcome.collected += 1
        # Under a limit, like an answer's: counted as spent if no read can confirm it (verify40 F1:
        # a /key that failed after the collection left under-reported batches at a tenth).
        runner.ledger.unconfirmed_charge(beyond)

    async def _poll_once(self) -> None:
        before = {id(e) for e in self.state.entries if e.state == COLLECTED}
        await self._poll_round()
        collected = [e for e in self.state.entries if e.state == COLLECTED and id(e) not in before]
        await follow_collected(collected, self.state, self.cut_off, self.runner.dispatch, self.runner.ledger)

    async def _poll_round(self) -> None:
        for entry in self.poll_failures.here(self.state.open_entries()):
            assert entry.batch_id is not None
            if valid_generation_id(entry.batch_id, self.api.client.scrub) is None:
                # An id from X.batches.json goes into a URL and messages: one edited to hold a key
                # or a path is never sent (break22 m8); its rows end as a lost batch's do.
                why = f"batch {entry.key}: the id kept for it is not a batch id"
                entry.batch_id = None  # not kept either (verify22 N8): it may hold a key
                await self._collect(entry, BatchInfo("", "lost", {}, None, None, why, None))
                continue
            try:
                allowance = sum(item_allowance(self.pending.get(row), self.runner.costs) for row in entry.rows)
                async with self.cut_off.bound():
                    info = await self.api.get(entry.batch_id, allowance)
            except TimeoutError:
                # Cut at the deadline or a stop's grace: the batch runs on, collected next time; how
                # it stands is not known (out-135 F5: said as "still running", nothing under --quiet).
                self.poll_failures.failed(entry, Transient("timeout", "no answer before the run had to end"))
                return
            except AuthFailed as failure:
                self.runner.request_stop(StopReason.AUTH, f"the API key was refused: {failure.message}")
                return
            except RequestFailed as failure:
                in_a_row = self.poll_failures.failed(entry, failure)  # the batch runs on; a next poll may work
                if failure.http_status == 404 and self.poll_failures.lost(entry, in_a_row, self.api.client.base_url):
                    # Unknown to the server (another key, or past the documented 30-day retention):
                    # its rows can never be collected; they end as errors instead of waiting forever.
                    message = f"OpenRouter has no batch {entry.batch_id}"
                    lost = BatchInfo(entry.batch_id, "lost", {}, None, None, message, None)
                    await self._collect(entry, lost)
                continue
            if info.id != entry.batch_id:  # break22 m4: a proxy or cache answering for another batch
                self.poll_failures.failed(entry, Transient("bad_response", f"the answer is batch {info.id}'s", 200))
                continue
            self.poll_failures.read(entry, info.model)
            entry.status = info.status
            if info.terminal:
                await self._collect(entry, info)
        self.state.save()

    async def _pause(self) -> bool:
        """Sleep until the next poll; False when the deadline or a stop comes first."""
        wait = self.poll_failures.next_wait(self.settings.batch_poll_s)
        left = self._time_left()
        if left is not None:
            if left <= 0:
                return False
            wait = min(wait, left)
        if self.runner.stop_reason in (StopReason.INTERRUPTED, StopReason.AUTH):
            # A signal or a refused key while a poll was out: the run ends now, not after a
            # whole batch_poll_s (verify64 F1: 62 s after SIGTERM, 152 s at batch_poll_s 150).
            return False
        if self.runner.stop_reason is not None:
            # Stopped already (budget): no new work, but open batches are still collected.
            await self.clock.sleep(wait)
            return True
        stopped = asyncio.ensure_future(self.runner.stops.event.wait())
        sleeper = asyncio.ensure_future(self.clock.sleep(wait))
        await asyncio.wait([stopped, sleeper], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        sleeper.cancel()
        return self.runner.stop_reason not in (StopReason.INTERRUPTED, StopReason.AUTH)

    def note_key_seen(
        self, outcome: PoolOutcome, reconciliation: dict[str, Any], ledger_known: float, batches_open: float
    ) -> None:
        usage, lost = self.runner.dispatch.key_start.usage, self.runner.ledger.key_lost
        try:
            note_key_seen(self.state, reconciliation, ledger_known, batches_open, usage, counted=lost)
        except OutputFailed as failure:
            # Money was spent: the record not written is exit 11, said with its file (out-185 F3:
            # a bare OSError, exit 2), the summary written after it if it can be. A stop that
            # ranks above 11 (7, 9, 5) keeps its code, and says it; one of 11 said it already.
            if outcome.stop in (None, StopReason.DEADLINE, StopReason.SUBMITTED):
                outcome.stop, outcome.stop_message = StopReason.IO, str(failure)
            elif outcome.stop != StopReason.IO:
                self.notice(f"warning: {failure}")

    def _count_unseen(self, entry: BatchEntry, unseen: float) -> None:
        count_unseen(self.runner.ledger, self.runner.dispatch, self.notice, entry, unseen)

    # -- the run -----------------------------------------------------------------------------
    async def run(self, requests: Iterable[Request]) -> PoolOutcome:
        # Its own calls (a submission, a poll) end by the deadline plus the grace, or a grace
        # after a signal, whatever their timeouts (break28 M2: 120 s past a 5 s deadline).
        left = self._time_left()
        if left is not None:
            self.cut_off.set_in(max(0.0, left) + self.settings.grace_s)
            self.runner.stops.start_deadline(max(0.0, left))  # what retries of /key reads stop at
        watcher = asyncio.ensure_future(self._cut_at_a_signal())
        try:
            return await self._run(requests)
        except OutputFailed:
            self.outcome.count_left(self.state)  # the summary says them, held, whatever ended the run
            raise
        finally:
            watcher.cancel()

    async def _cut_at_a_signal(self) -> None:
        await self.runner.stops.event.wait()
        if self.runner.stop_reason in (StopReason.INTERRUPTED, StopReason.DEADLINE, StopReason.AUTH):
            self.cut_off.set_in(self.settings.grace_s)

    async def _run(self, requests: Iterable[Request]) -> PoolOutcome:
        runner = self.runner
        # The graders of collected batches are sync requests: the key window and the probe
        # follow them like any (break14h H4: a grader listed at $0 that billed $0.012 a request
        # graded the whole job, $2.40 on a $0.05 budget, with /key read only at the start and end).
        runner.dispatch.watch_key()
        seen_between_runs(self.state, runner.dispatch.key_start.usage)
        follow_earlier(self.state, self._count_unseen, self.killed_run_bound)
        self.earlier = self.outcome.take_over(self.state, runner.ledger, self.notice)
        to_batch, to_sync = self._sort(requests)
        for group in batch_groups(to_batch, self.settings.batch_max_requests):
            await self._submit(group)
        if to_sync:
            self.outcome.sync_rows = len(to_sync)
            sync_outcome = await runner.run(iter(to_sync))
            if sync_outcome.stop is not None and runner.stop_reason is None:
                runner.request_stop(sync_outcome.stop, sync_outcome.stop_message)
        while self.state.open_entries() and runner.stop_reason not in (StopReason.INTERRUPTED, StopReason.AUTH):
            await self._poll_once()
            still_open = self.state.open_entries()
            if not still_open or self.poll_failures.given_up(still_open) or not await self._pause():
                break
        self.outcome.at_end(self.state, self.poll_failures, runner, self.notice)
        return PoolOutcome(runner.stop_reason, runner.stop_message, runner.ledger.committed)
