"""Run a job end to end: output and lock, resume scan, pre-flight, the worker pool, the summary.

This is the library entry point behind `batchrun JOB.yaml`. It never prints: notices go
to the `notice` callback and everything else comes back in the RunReport.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ._account import counted_at_end, reconcile_run
from ._answered_by import resumed_endpoint
from ._batch_setup import batch_executor, batch_setup
from ._batch_state import held_open
from ._cut_off import cleanup_time, wind_down, wind_down_s, wind_down_within
from ._exceptions import ConfigError, OutputFailed
from ._fd_limit import within_fd_limit
from ._files import refused_before_sending
from ._formats import utc
from ._isolated import IsolatedKey, with_key_deadline
from ._items import ItemGate
from ._job import Job
from ._journal import AttemptJournal
from ._killed_run import batches_bound, carried_rate, killed_run_charge, released_charge
from ._late_costs import append_late_costs
from ._ledger import CreditLedger
from ._library_args import checked_arguments, checked_threshold
from ._lock import OutputLock
from ._matrix import Request, count_requests, matrix_requests, run_size_problem, shard_text
from ._needless_stop import drop_needless_stop
from ._options import HostCallback, Notice, RunOptions
from ._output_paths import job_folder, job_path_problem, summary_path, write_json_atomically
from ._preflight import Preflight, job_routing_warning, keep_row, make_client, open_cache, preflight, unpriced
from ._pricing import MAX_USD
from ._reconcile import key_read_confirms, usage_span
from ._report_data import RunSpan, key_id, run_spans
from ._results import ResultsWriter, final_records
from ._retry import retry_policy
from ._run_control import RunControl
from ._run_output import (
    check_output,
    earlier_summary,
    earlier_work,
    killed_run_notice,
    release_in_summary,
    resolve_output,
)
from ._settings import RunSettings
from ._status import StopReason
from ._summary import SummaryBuilder
from ._summary_beside import edit_mark
from ._summary_floor import earlier_spend, sealed
from ._summary_place import results_created
from ._summary_types import Summary
from ._verdict import ExitCode, decide, exit_fields
from ._worker_pool import PoolOutcome, Runner, run_config


@dataclass
class RunReport:
    output: Path
    summary: Summary
    outcome: PoolOutcome  # rows kept by a resume and completeness are in `summary`
    settings: RunSettings  # the run's settings, as its verdict reads them

    def verdict(self, pass_threshold: float | None = None, thresholds: bool = True) -> tuple[ExitCode, list[str]]:
        """The CLI's exit code for this run, and why, as `--pass-threshold` and `--no-thresholds` set (break56 F7)."""
        return decide(self.summary, self.settings, checked_threshold(pass_threshold), run=True, thresholds=thresholds)


async def run_job(
    job: Job,
    options: RunOptions,
    control: RunControl | None = None,
    notice: Notice = lambda _: None,
    on_start: Callable[[int], None] | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> RunReport:
    """Run (or resume) one job; README "Library". Raises a BatchrunError (ConfigError, JobError,
    LockHeld, AuthFailed, OutputFailed...), or what `on_record` raised, once the run has ended."""
    control = checked_arguments(job, options, control, {"on_record": on_record, "on_start": on_start, "notice": notice})
    settings = with_key_deadline(job.run)  # a per-run key's run ends before the key does
    settings = within_fd_limit(settings, options.fresh_simulator, notice)
    if (too_large := run_size_problem(job, options.shard)) is not None:
        raise ConfigError(too_large)  # before any lock, file or request
    locks = []
    if options.output is None:
        # Default outputs are new each time: two overlapping cron ticks would both run (and spend).
        folder = job_folder(job.name, job.run.output)
        if (problem := job_path_problem(folder, "the job's outputs folder")) is not None:
            raise ConfigError(problem)  # before its lock is made there (out-110 F1)
        if options.resume and not folder.is_dir():  # no run to resume: said before a lock makes it (break48 F5)
            resolve_output(job, options, options.clock.time(), notice)
        # Each shard has a lock (and default names) of its own: side by side all but one were exit 8 (break51 F8).
        tag, which = (options.shard.tag, f" shard {options.shard}") if options.shard else ("", "")
        locks.append(OutputLock(folder / f".batchrun{tag}", f"job {job.name}{which} is being run"))
    try:
        with refused_before_sending():
            for lock in locks:
                lock.acquire()
            output = resolve_output(job, options, options.clock.time(), notice)
            killed_run_notice(job, options, notice)
            locks.append(OutputLock(output))
            locks[-1].acquire()
        hosted = HostCallback(on_record)  # the caller's: what it raises is raised at the end (break50 F5)
        report = await _locked_run(job, options, settings, control, notice, on_start, hosted, output)
        hosted.raise_kept()
        return report
    finally:
        for lock in reversed(locks):
            lock.release()


# Stops someone waits on (a signal, a CI runner's timeout before its SIGKILL; cron's deadline).
_PROMPT_STOPS = (StopReason.INTERRUPTED, StopReason.DEADLINE)


async def _locked_run(
    job: Job,
    options: RunOptions,
    settings: RunSettings,
    control: RunControl,
    notice: Notice,
    on_start: Callable[[int], None] | None,
    on_record: HostCallback,
    output: Path,
) -> RunReport:
    batch = batch_setup(job, options, settings, output)
    if batch is not None and held_open(batch) and not options.resume:
        # Batch mode, same output: batches of an earlier tick are collected, not submitted again.
        notice(f"{output}: collecting the batches an earlier run submitted")
        options = replace(options, resume=True)
    resuming = check_output(output, job, options.resume, options.shard)
    started = options.clock.monotonic()  # the deadline counts pre-flight and the resume scan too

    def time_left() -> float | None:
        return None if settings.deadline_s is None else settings.deadline_s - (options.clock.monotonic() - started)

    client = make_client(job, options, settings)
    try:
        # Before the resume's recovery writes (a refusal leaves the file as it was: out-103 F8); --simulate: a name.
        endpoint = resumed_endpoint(output, options.cache_endpoint or client.base_url, resuming)
        isolated = IsolatedKey.for_run(job, options, settings, client) if settings.isolated_key else None
        edited = edit_mark(output) if resuming else None  # what the summary saw, before this run appends
        if resuming:
            earlier_summary(output)  # one refused (unreadable, another's) is refused before the recovery writes
        states = await earlier_work(job, options, output, resuming, client, notice)
    except BaseException:
        await client.aclose()
        raise
    earlier = earlier_summary(output) if states is not None else {}
    run_started = utc(options.clock.time())
    started_at = min(run_started, earlier["started_at"]) if isinstance(earlier.get("started_at"), str) else run_started
    # Earlier runs' spend, and key gaps (the key's usage above what answers reported): in their summary (break14c N12).
    prior = earlier_spend(output, earlier, states)
    prior_spend, key_gap_before = prior.spent, prior.key_gap
    if prior.warning:
        notice(prior.warning)
    cache = open_cache(job, options, notice)
    if cache is not None:
        cache.scrub = client.scrub  # its hits are read as replies are: scrubbed of the run's keys
    journal: AttemptJournal | None = None
    whole = False  # every attempt is in a record: the journal can go (once the summary is written)
    try:
        job_budget = settings.budget_usd
        if job_budget is not None:
            # The budget is for the logical run: what earlier attempts of this file spent counts.
            job_budget = max(0.0, job_budget - prior_spend)

        async def start_up() -> Preflight:
            if isolated is not None:
                await isolated.create(job_budget)
            return await preflight(client, job, options, states, job_budget, notice, time_left, cache)

        pre = await control.before_start(start_up(), time_left) or unpriced(job_budget)
        # A killed run's key readings (not across two --simulate simulators: each has its key), on the limit now.
        seen = states.key_seen if states is not None and not options.fresh_simulator else None
        seen = None if seen is None else seen.rebased(pre.key_start.limit)
        journal_released = released = 0.0
        if unseen := killed_run_charge(seen, pre.key_start, prior_spend, output, notice):
            # Spent before this run began, as the killed run's records: the budget's part of the limit
            # falls by it (the key's credit shows it already: counted there, it stopped runs early).
            prior_spend, key_gap_before = prior_spend + unseen, key_gap_before + unseen
        elif released := released_charge(seen, pre.key_start.usage, prior_spend, pre.key_start.remaining):
            notice(f"{output}: ${released:.6f} held for answers no /key read confirmed was not charged: released")
            if seen is not None and seen.unconfirmed_in_journal:
                journal_released = released  # out of the killed run's journal gap, which this run carries
            else:
                release_in_summary(output, released)
            prior_spend, key_gap_before = prior_spend - released, key_gap_before - released
        if (unseen or released) and settings.budget_usd is not None:
            # What the budget leaves after what earlier runs spent as the key now shows it: from the
            # budget again, not on top of a part already floored at $0 (out-127 F1: a release past a
            # lower --budget gave it all back, and the resume spent $0.028 over it).
            pre.limits.job = max(0.0, settings.budget_usd - prior_spend) - settings.budget_margin_usd
        for warning in pre.fit_warnings(settings):
            notice(warning)
        budget = pre.budget
        ledger = CreditLedger(None if options.test_broken_ledger else budget)
        # Not even a $0 request (_fits) once spent, or the key or account overdrawn (402s, free models too: break38 F5).
        overdrawn = any(v is not None and v < 0 for v in (pre.key_start.remaining, pre.balance))
        ledger.spent_out = budget is not None and budget <= 1e-12 and (prior_spend > 0 or overdrawn)
        estimated, models = pre.estimate, pre.models
        summary = SummaryBuilder(ItemGate.from_threshold(settings.pass_threshold), items=job.repeat > 1)

        def record_done(record: dict[str, Any]) -> None:
            summary.add(record)
            on_record(writer.last_line)

        writer = ResultsWriter(output)
        writer.scrub = client.scrub
        results_created(output, new=states is None)  # locked by any name (verify22 N4); a stale summary gone
        # What a kill of this run keeps: the journal gap it read (less what it released), and its measure.
        carried = prior.journal_gap - journal_released + unseen
        rate = carried_rate(seen, pre.key_start.usage)
        journal = AttemptJournal(output, writer, job, carried, options.shard, prior_spend, rate, endpoint)
        runner = Runner(
            client,
            writer,
            run_config(job, settings, options.clock.monotonic() - started),
            options.clock,
            job_name=job.name,
            job_fingerprint=job.fingerprint,
            shard=shard_text(options.shard),
            costs=pre.costs if models else None,
            ledger=ledger,
            limits=pre.limits,
            key_start=pre.key_start,
            on_record=record_done,
            judge=job.judge,
            cache=cache,
        )
        runner.dispatch.journal, runner.regrade = journal, states.regrade if states is not None else {}
        summary.kept = {(row_id, stored.get("fingerprint")) for row_id, stored in runner.regrade.items()}
        journal.first_reading(pre.key_start, seen, ledger)
        control.runner = runner
        if control.pending:
            runner.request_stop(control.pending)
        if on_start is not None:
            on_start(estimated.total_rows + estimated.regraded)
        requests: Iterator[Request] = matrix_requests(job, options.shard)
        executor = None
        try:
            try:
                if batch is not None:
                    bound = batches_bound(seen, pre.key_start.usage, unseen, pre.key_start.remaining)
                    executor = batch_executor(runner, client, batch, job, options, states, started, notice, bound)
                    outcome = await executor.run(requests)
                else:
                    requests = (r for r in requests if not keep_row(states, r, options.retry_errors))
                    outcome = await runner.run(requests)
            finally:
                writer.close()
            whole = writer.failure is None
        except OutputFailed as failure:
            # The results file cannot be written: a stop of its own (exit code IO).
            outcome = PoolOutcome(StopReason.IO, str(failure), runner.ledger.committed)

        # The end-of-run /key read may use the grace after the deadline, as rows do.
        cleanup_left = cleanup_time(time_left, settings.grace_s)
        # After a signal or the deadline the wind-down's calls get a grace more (verify23 N1); a signal cuts it: exit 7.
        ends = wind_down_within(settings.grace_s, outcome.stop in _PROMPT_STOPS, cleanup_left())
        runner.charges.cut_off = ends
        control.winding_down = lambda: ends.set_in(wind_down_s(settings.grace_s))
        # The last lookups of costs still unknown (those not done stay held); rows they resolve are written again.
        # After a deadline or a signal, /generation that stopped answering is not tried again (verify37 N3).
        await runner.charges.retry_lookups(final=outcome.stop not in _PROMPT_STOPS, until=ends.part(0.5))
        late_rows, late_failed = 0, None
        if outcome.stop != StopReason.IO:
            late_rows, late_failed = append_late_costs(output, runner.records.late, utc(options.clock.time()))
        if late_failed:
            notice(f"warning: {late_failed}")
        reconciliation = await reconcile_run(
            client,
            runner.ledger,
            runner.charges,
            runner.dispatch.key_start,  # with the readings the run took (KeyStart.read)
            # /key found unreadable during the run: one more try, not a full retry (break46 F7: 2 x 60 s).
            replace(retry_policy(settings), max_attempts=1)
            if outcome.stop == StopReason.KEY_UNREADABLE
            else retry_policy(settings),
            options.clock.sleep,
            cleanup_left,
            ends,
            runner.dispatch.key_seen,
        )
        if reconciliation["warning"]:
            notice("warning: " + reconciliation["warning"])
        if not key_read_confirms(reconciliation) and runner.ledger.unconfirmed > 0:
            # No read confirmed what answers since the last one said they cost (nor a batch's):
            # their worst cases count, as when the key is lost mid-run (verify40 F1).
            runner.ledger.lose_key_window()
        if executor is not None:
            executor.note_key_seen(
                outcome, reconciliation, runner.ledger.spent - runner.ledger.before_run, runner.ledger.batches_open
            )
        if isolated is not None:  # the key's removal has a wind-down of its own (break60 F1)
            await isolated.finish(notice, ends.and_then(wind_down_s(settings.grace_s) if ends.at else None))
        if control.stopped.is_set() and outcome.stop != StopReason.INTERRUPTED:  # 7 ranks above every stop
            # A signal after a stop for money ended the answers the cache still gave: exit 5 hid it (verify66 5).
            outcome.stop, outcome.stop_message = StopReason.INTERRUPTED, "interrupted while the run wound down"
        cut = writer.cut_since() if outcome.stop != StopReason.IO else None
        if cut is not None:  # cut, moved or removed while the run ended (verify69 F3): its rows are not there
            outcome.stop, outcome.stop_message = StopReason.IO, cut
        if (states or late_rows) and cut is None:
            # The file's rows for the totals (a row written again counts once, with its cost
            # learnt late); the cache's figures stay this run's (issue 16).
            summary = (
                SummaryBuilder(summary.gate, items=job.repeat > 1)
                .add_all(final_records(output, lambda message: notice(f"warning: {message}")))
                .cache_figures_of(summary)
            )
        pending = [] if executor is None else executor.state.pending()
        summary.add_pending_batches(pending)
        drop_needless_stop(outcome, summary, pending, notice)
        # Spent beyond the ledger at the end: the run's spend and the file's key gap carry it.
        late_gap = counted_at_end(reconciliation, runner.ledger, journal.attempts_sent > 0 or executor is not None)
        # This run's own gap, for merge to tell runs that overlapped: an earlier run's (a killed run's journal
        # gap and what its resume measured, in spent_before; an earlier batch's, in from_earlier) was charged in
        # its time, not this run's; filed here, merge took the larger of it and another shard's (break37).
        run_gap = runner.ledger.key_gap - runner.ledger.from_earlier + late_gap
        finished_at = utc(options.clock.time())
        summary.job = job.name  # a shard with no rows too: merge reads whose it is (break24 F12)
        data = summary.result(
            output=str(output),
            stop=outcome.stop,
            stop_message=outcome.stop_message,
            estimate_usd=round(float(min(estimated.total_worst, MAX_USD)), 8) if models else None,  # as money is read
            estimate_unknown=sorted(estimated.unknown_price),  # models whose worst case is not in it
            # Raised, when BYOK spend the key's credit does not pay rose the limit (_limit_parts).
            budget_usd=None if budget is None else round(max(budget, runner.ledger.limit or 0.0), 8),
            budget_from=None if budget is None else "credits" if pre.limits.from_key else "budget",  # out-153 F5
            # After the wind-down, what lookups learnt replaced held worst cases (verify25 N3: 10-20x).
            spent_usd=round(runner.ledger.committed + late_gap, 12),
            spent_before_usd=round(prior_spend, 8),
            key_gap_usd=round(key_gap_before + runner.ledger.key_gap + late_gap, 8) + 0.0,  # never "-0.0"
            started_at=started_at,
            finished_at=finished_at,
            # Each run's own span and gap (a crashed run's, from its journal, with this one's):
            # merge tells runs that overlapped from those that did not (verify14k K4).
            runs=[
                *(span.entry() for span in run_spans(earlier)),
                RunSpan(
                    run_started,
                    finished_at,
                    round(run_gap, 8),
                    *usage_span(pre.key_start, reconciliation),
                    own_key=isolated is not None,
                    key_id=key_id(options.api_key),
                    spent_usd=round(runner.ledger.committed + late_gap, 12),
                    aligned=True,
                ).entry(),
            ],
            kept_from_earlier=estimated.kept,
            isolated_key=isolated.audit() if isolated is not None else None,
            shard=shard_text(options.shard),
            matrix_rows=sum(count_requests(job).values()),
            endpoint=endpoint,
            routing_warning=runner.records.pins.warning(job_routing_warning(job)),
            account_balance_usd=None if pre.balance is None else round(pre.balance, 8),
            reconciliation=reconciliation,
        )
        if executor is not None:
            data["batches"] = executor.outcome.as_json(str(executor.state.path))
        data["complete"] = outcome.stop is None and data["total"]["skipped"] == 0
        data["runs_complete"] = states is None or states.runs_complete  # `runs` lists every run of the file
        if isinstance(merged := earlier.get("merged_from"), list):  # still a merge: history saw 3 runs (out-130 F1)
            data["merged_from"] = merged
        if (past := prior.past_budget(prior_spend, settings.budget_usd)) is not None:
            data["spent_past_budget_usd"] = past
        data["results_bytes"], data["results_digest"] = sealed(output, writer.size if writer.cut_short else None)
        if states is not None and edited is not None:  # still, after a resume (out-160 F2)
            data["results_edited"] = edited
        if (
            readings := journal.summary_readings(runner.ledger.unconfirmed_lost, runner.ledger.charged_before)
        ) is not None:
            data["key_readings"] = readings  # for the next run to measure (_killed_run)
        if late_gap > 0:
            with contextlib.suppress(OutputFailed):  # the summary below carries it too
                journal.key_gap(runner.ledger.key_gap + late_gap)
        data["exit_code"], data["exit_reasons"] = exit_fields(data, settings, options)
        try:
            write_json_atomically(summary_path(output), data, client.scrub)  # keys masked, as in each record
            journal.summarized(whole)  # kept for rows whose records were lost: its gap is the summary's now
        except OSError as exc:
            whole = False  # the journal's key gap is in no summary: a resume reads it there
            message = f"{summary_path(output)}: writing the summary failed: {exc.strerror or exc}"
            if data["stop"] is None:
                data.update({"stop": StopReason.IO, "stop_message": message, "complete": False})
            else:
                notice(f"warning: {message}")
        return RunReport(output, data, outcome, settings)
    finally:
        # The journal goes only once the summary holds the key gap it carries: deleted before
        # the end-of-run lookups and /key read, a kill -9 there lost the gap, and the resume
        # spent the budget again ($0.91 on $0.50: break14h H5). Kept when records were lost
        # (a failed write, an exception on its way up): the next run counts their attempts.
        # A kill between the summary's rename and this unlink counts the gap twice (safe side).
        if journal is not None:
            journal.close(whole=whole)
        if isolated is not None and not isolated.finished:
            # A failure or a stop before the end: still remove the key, within a grace.
            await isolated.finish(notice, wind_down(settings.grace_s, True))
        await client.aclose()
        if cache is not None:
            cache.close()
