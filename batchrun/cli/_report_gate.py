"""`report RESULTS --job JOB.yaml`, the CI gate: the rows present against the job's whole
matrix, the stored answers re-graded with its checks now (judge checks by grader requests),
and its thresholds; one exit code, and the JUnit file and page saying the same."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from .._console import Console
from .._exceptions import AuthFailed, ConfigError, LockHeld, OutputFailed, RequestFailed
from .._summary_types import Summary
from .._verdict import ExitCode
from ._common import (
    budget_not_taken,
    checked_key,
    key_for_job,
    refuse_unmeetable_threshold,
    show,
    with_budget,
    with_pinned_thresholds,
    with_simulator,
)
from ._report_outputs import (
    files_named_by,
    holds_junit_or_nothing,
    holds_page_or_nothing,
    no_verdict_page,
    refuse_named_in_datasets,
    refuse_other_kinds,
    refuse_sidecars,
    through,
    write_junit_file,
    write_report_page,
)

# Said when rows are missing and the graders are not asked: the gate fails whatever they say.
NOT_REGRADED = (
    "the judge checks were not re-graded: with rows unanswered the gate fails whatever the graders say "
    "(--allow-partial re-grades the rows present)"
)


def report_against_job(
    args: argparse.Namespace,
    console: Console,
    records: Iterable[dict[str, Any]],
    page: Any,
    counted: Callable[[Summary], None],
    known: KnownGate,
) -> int:
    from .._items import ItemGate
    from .._job import load_job

    job = load_job(args.job)
    refuse_unmeetable_threshold(job, args.pass_threshold)
    refuse_sidecars((args.html, "a page"), (args.junit, "a JUnit file"), inputs=files_named_by(job.path))
    refuse_named_in_datasets(job, (args.html, "a page"), (args.junit, "a JUnit file"))
    refuse_other_kinds((args.html, "a page"), (args.junit, "a JUnit file"))
    settings = with_pinned_thresholds(with_budget(job.run, args.budget), args.pass_threshold, args.max_error_rate)
    if said := budget_not_taken(job.run, args.budget):  # as run and plan say it (the re-grading's budget)
        console.warn(said)
    if args.deadline is not None:
        settings = replace(settings, deadline_s=args.deadline)
    job = replace(job, run=settings)
    gate = ItemGate.from_threshold(settings.pass_threshold)
    known.job_name, known.gate = job.name, gate
    return _gate(args, console, job, gate, records, page, counted)


UNFINISHED = (int(ExitCode.INTERRUPTED), ["the gate ended before its verdict (a second signal, or killed)"])


def no_verdict(
    args: argparse.Namespace, console: Console, verdict: tuple[int, list[str]], *, standing: bool = False
) -> None:
    """The JUnit file and page of a report without a verdict, over files of their kind only (the
    files a job names are not known yet). `standing`: until the verdict, over the files there,
    so that a second signal (which exits at once) or a kill leaves no earlier night's green
    ones beside a gate that never finished."""
    from .._signals import signals_held

    if not standing:
        _no_verdict(args, console, None, verdict, None, only_ours=True)
        return
    try:
        with signals_held():
            _no_verdict(args, console, None, verdict, None, only_ours=True, standing=True)
    except OutputFailed as failure:
        # One of them cannot be written (it is removed): the other says exit 11 too, not last
        # night's verdict nor "ended before its verdict" (verify31 V2, V3).
        _no_verdict(args, console, None, (int(ExitCode.IO), [str(failure)]), None, only_ours=True)
        raise


@dataclass
class KnownGate:
    """What the JUnit file and page of a report that fails before its verdict can say: once
    `--job` is read, its name and gate, and the files it names are known; until then, they are
    written only where none is, or where one of their kind stands."""

    job_name: str | None = None
    gate: Any = None


def failed_before_verdict(args: argparse.Namespace, console: Console, known: KnownGate, failure: Exception) -> None:
    """Last night's green JUnit file and page must not stand for a gate that failed before its
    verdict (verify27 N7, break31 M1), a job that cannot be read included: they say this exit
    code, and each of a job file's problems is a line, as on stderr."""
    code, why = failure_code(failure)
    verdict = (int(code), why.splitlines())
    _no_verdict(args, console, known.gate, verdict, known.job_name, only_ours=known.job_name is None)


def _no_verdict(
    args: argparse.Namespace,
    console: Console,
    gate: Any,
    verdict: tuple[int, list[str]],
    job_name: str | None,
    *,
    only_ours: bool = False,
    standing: bool = False,
    page_only: bool = False,
) -> None:
    """The JUnit file (the gate's case alone) and the page of a gate without a verdict;
    `only_ours`: where nothing is, or a file of their kind; `standing`: only over files that
    are there, quietly. Best effort beside the failure that is the command's own."""
    from .._files import a_descriptor
    from .._items import ItemGate
    from .._junit import write_junit
    from .._report_file import write_report_file

    def junit(path: Any) -> None:
        if standing:
            write_junit((), path, job_name, gate or ItemGate(), (), verdict)
        else:
            write_junit_file(args, console, lambda: (), gate, (), verdict, job_name)

    def page(path: Any) -> None:
        write_report_file(path, no_verdict_page(*verdict, job_name))

    outputs = ((args.junit, holds_junit_or_nothing, junit), (args.html, holds_page_or_nothing, page))
    for path, ours, write in outputs[1:] if page_only else outputs:
        if path is None or (only_ours and not ours(path)) or (standing and not path.is_file()):
            continue
        if standing and a_descriptor(path) is not None:  # a stream cannot take a placeholder back (out-155 F1)
            continue
        try:
            write(path)
        except OutputFailed as failure:  # the earlier file is gone (write_report_file)
            if standing:
                raise
            console.warn(str(failure))


def failure_code(failure: Exception) -> tuple[ExitCode, str]:
    """The exit code and the words the CLI gives a failure before the gate's verdict."""
    if isinstance(failure, LockHeld):
        return ExitCode.LOCKED, str(failure)
    if isinstance(failure, AuthFailed):
        return ExitCode.AUTH, f"the API key was refused: {failure.message}"
    if isinstance(failure, RequestFailed):
        return ExitCode.ERRORS, f"the endpoint failed before the re-grading started: {failure.kind}: {failure.message}"
    return ExitCode.USAGE, str(failure)


def _gate(
    args: argparse.Namespace,
    console: Console,
    job: Any,
    gate: Any,
    records: Iterable[dict[str, Any]],
    page: Any,
    counted: Callable[[Summary], None],
) -> int:
    from .._answered_by import simulator_note
    from .._batch_state import pending_batches
    from .._checks import is_judge
    from .._gate import MatrixCoverage, verdict_word
    from .._results import final_records
    from .._summary import SummaryBuilder
    from .._summary_beside import SummaryBeside
    from .._summary_text import render_markdown, render_text
    from .._verdict import decide

    settings = job.run
    beside = SummaryBeside.read(args.results)  # once: the key gap, the endpoint and the page read one version
    if unvouched := beside.of_another_job() or beside.unreadable():
        # Left out, as `report` leaves it out, and said: it was taken in silence, and vouched for
        # the simulator's graders re-grading real answers (out-137 3). The job's matrix counts the rows.
        console.warn(f"{unvouched}; left out: the rows are counted against {job.path.name}'s matrix")
    for doubt in beside.doubts():  # as `report` says them: lines appended since (out-149 F1)
        console.warn(doubt)
    # The matrix counts rows, not what they say: records edited since the run's summary (a failing
    # night's failed records replaced by another's passing ones) passed the gate (out-149 F1).
    edited = beside.changed()
    coverage = MatrixCoverage.of(job)
    # Judge checks of the job now (a dataset row's own included) decide whether graders are asked.
    regraded: list[dict[str, Any]] = []
    judged = any(is_judge(c) for checks in coverage.checks.values() for c in checks)
    notes: list[str] = []
    if judged:
        # What the gate refuses whatever the graders say is known from the ids and fingerprints
        # alone: nothing is spent on it (break27 MAJOR-1: 4 graders bought, then exit 2).
        first = MatrixCoverage.of(job)
        for _ in first.review(final_records(args.results, other_jobs=True)):
            pass
        if first.foreign_rows(args.results, edited) or (first.shortfalls() and not args.allow_partial):
            judged, notes = False, [NOT_REGRADED]
    if judged:
        stored: dict[str, Any] = {}  # each row's verdict as the file holds it, to say what re-grading changed

        def remembered(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            for row in rows:
                stored[row["id"]] = verdict_word(row)
                yield row

        def note(row: dict[str, Any]) -> None:
            coverage.changed.note(stored.get(row["id"], "no check"), verdict_word(row))

        summary = _regrade_judged(args, console, job, gate, remembered(coverage.review(records)), regraded, page, note)
        summary["key_gap_usd"] = beside.key_gap()
        summary["judging_regraded"] = True  # its cost figures: the answers as recorded, the grading bought now
    else:
        reviewed = through(page, coverage.review(records, regrade=True))
        builder = (
            SummaryBuilder(gate).add_all(reviewed).add_pending_batches(pending_batches(args.results, console.warn))
        )
        summary = builder.result(output=str(args.results), key_gap_usd=beside.key_gap())
    counted(summary)
    if changed := coverage.changed.sentence():
        summary["regraded_changes"] = dict(coverage.changed.counts)
        console.to_err(f"batchrun: {changed}\n")

    def junit_records() -> Iterable[dict[str, Any]]:
        if judged:
            return regraded
        return MatrixCoverage.of(job).review(final_records(args.results, other_jobs=True), regrade=True)

    foreign = coverage.foreign_rows(args.results, edited)
    shortfalls = coverage.shortfalls()
    summary.update({"complete": not shortfalls, "missing_rows": coverage.missing, "matrix_rows": len(coverage.checks)})
    # Rows accepted without an answer are rows without a verdict: a threshold they decide is not
    # met on the rows that are there (out-113 F3).
    unverdicted = coverage.without_verdicts() if shortfalls and args.allow_partial else None
    code, reasons = decide(summary, settings, unverdicted=unverdicted)
    if edited:  # not rows missing: --allow-partial does not accept it
        code, reasons = ExitCode.INCOMPLETE, [edited, *foreign, *shortfalls, *notes, *reasons]
    elif shortfalls and not args.allow_partial:
        # Rows without an answer outrank errors and quality, as a stop does in a run.
        code, reasons = ExitCode.INCOMPLETE, [*shortfalls, "(--allow-partial accepts them)", *notes, *reasons]
    elif shortfalls and len(coverage.seen) == coverage.skipped:
        # Nothing answered to gate on: accepting rows missing is not accepting all of them
        # (verify27 N2: exit 0, no row graded, against a pass threshold).
        code, reasons = ExitCode.INCOMPLETE, [*shortfalls, "no row of the matrix has an answer to gate on", *reasons]
    elif shortfalls:
        for shortfall in shortfalls:  # accepted, and said so: a log showed nothing of it
            console.warn(f"accepted with --allow-partial: {shortfall}")
    for said in (simulator_note(beside), beside.unsealed()):
        # A gate passing on the simulator's answers (out-108 F7, out-101 F4), or on a file whose
        # edits nothing beside it can tell (out-165 F4), said nothing of it.
        if said:
            console.warn(said)
    # The gate's verdict in its Markdown too: a red step showed a table and no reason (break35 F2);
    # and in its JSON, for a program (out-174 F8: exit 12, and no reason in what it read).
    summary["exit_code"], summary["exit_reasons"] = int(code), list(reasons)
    show(console, args, summary, render_text, lambda shown: render_markdown(shown, verdict=(int(code), reasons)))
    try:
        write_report_page(args, page, summary, (code, reasons), beside=beside)
    except OutputFailed as failure:
        # Before the JUnit file, which then says exit 11: a green one stood beside it (verify28 F5).
        code, reasons = ExitCode.IO, [str(failure)]
        raise
    except KeyboardInterrupt:
        # The page was not written (what stood says "no verdict"): the JUnit file says the exit
        # code the command gives, 7, not the verdict it never published (break31 M2).
        code, reasons = ExitCode.INTERRUPTED, ["interrupted while the page was written: it holds no verdict"]
        raise
    finally:
        try:
            unread = summary.get("unread_lines", 0)
            verdict = (int(code), reasons)
            write_junit_file(args, console, junit_records, gate, coverage.unanswered(), verdict, job.name, unread)
        except OutputFailed as failure:
            # The page just written says the verdict; the command says 11 (verify30 N3).
            _no_verdict(args, console, gate, (int(ExitCode.IO), [str(failure)]), job.name, page_only=True)
            raise
    for reason in reasons:
        console.error(reason)
    return int(code)


def _regrade_judged(
    args: argparse.Namespace,
    console: Console,
    job: Any,
    gate: Any,
    records: Iterable[dict[str, Any]],
    regraded: list[dict[str, Any]],
    page: Any,
    note: Callable[[dict[str, Any]], None],
) -> Summary:
    """Re-grade, with grader requests where a verdict is due: the worst case printed first, then
    spent within the budget; `note` hears of each row re-graded."""
    from .._answered_by import recorded_endpoint
    from .._regrade import estimate_regrade, regrade_kept
    from .._results import final_records
    from .._simulated import MIXED_ENDPOINTS, simulated

    def worst_case(line: str) -> None:
        console.to_err(line + "\n")
        console.err.flush()

    def keep(record: dict[str, Any]) -> None:
        note(record)
        if args.junit is not None:
            regraded.append(record)
        if page is not None:
            page.add(record)

    due = estimate_regrade(final_records(args.results, other_jobs=True), job, None, args.regrade_all)
    endpoint = recorded_endpoint(args.results)
    if args.simulate and due.rows and not simulated(endpoint):
        # The simulator's graders flip verdicts at random: a real night's failures re-graded by
        # them passed the gate, 3 -> 0, without a word (out-113 F2). Unless the file is known to be
        # the simulator's: a merged one said nothing of its endpoint, and passed 26 (out-114 F1).
        answered = {
            None: "has no summary of it as it is that says what answered it",
            MIXED_ENDPOINTS: "was answered in part by an endpoint",
        }
        answered_by = answered.get(endpoint if isinstance(endpoint, str) else None, "was answered by an endpoint")
        raise ConfigError(
            f"--simulate: {args.results} {answered_by}, not the simulator, and the simulator's graders would decide "
            f"{due.rows} of its rows' verdicts (made up, not a model's): re-grade them with the job's endpoint "
            "(a key, or --base-url)"
        )
    if not due.rows:  # every verdict kept: no key, no endpoint, nothing sent
        worst_case(
            f"re-grading 0 row(s): {due.kept} verdict(s) kept: graded under the same checks (--regrade-all asks again)"
        )
        summary = regrade_kept(records, job, gate, keep)
    elif not due.changed and not args.simulate and not checked_key(job.endpoint.api_key_env):
        # The README's keyless gate step after a grader outage: "no API key", exit 2, a setup error,
        # where the night's verdicts were only undecided; the run said exit 1 (out-149 F3).
        console.warn(
            f"{due.rows} row(s) hold judge verdicts their run left undecided: not asked again without an API key "
            f"(${job.endpoint.api_key_env}); counted undecided, as the run counted them"
        )
        summary = regrade_kept(records, job, gate, keep, undecided=True)
    else:
        summary = _with_graders(args, console, job, gate, records, keep, worst_case)
    summary["output"] = str(args.results)
    return summary


def _with_graders(
    args: argparse.Namespace,
    console: Console,
    job: Any,
    gate: Any,
    records: Iterable[dict[str, Any]],
    keep: Callable[[dict[str, Any]], None],
    worst_case: Callable[[str], None],
) -> Summary:
    import asyncio  # not at the top: `validate` and the file commands never load it (~60 ms of start-up)

    from .._event_loop import run as run_loop
    from .._options import RunOptions
    from .._regrade import regrade_file
    from .._results import final_records
    from .._run_control import RunControl
    from .._signals import RunSignals

    control = RunControl()

    async def body(base_url: str | None, sim_key: str | None, _management: str | None) -> Summary:
        signals.loop = asyncio.get_running_loop()
        options = RunOptions(api_key=key_for_job(job, sim_key), base_url=base_url, fresh_simulator=bool(args.simulate))
        try:
            return await regrade_file(
                job,
                options,
                records,
                lambda: final_records(args.results, other_jobs=True),  # read again: warned once
                gate,
                worst_case,
                keep,
                control,
                args.regrade_all,
            )
        finally:
            signals.loop = None

    # Grader requests spend like a run's: SIGTERM or SIGINT stops them cleanly, and the spend
    # and the exit code (7) are said (verify14i V8: SIGTERM killed it, exit 143, nothing said).
    with RunSignals(lambda: control.stop(), console.error) as signals:
        summary: Summary = run_loop(with_simulator(args, body))
    return summary
