"""The commands that read results files: report, history, diff, merge; and cache, batches."""

from __future__ import annotations

import argparse
import contextlib
import functools
from typing import TYPE_CHECKING, Any

from .._console import Console
from .._exceptions import (
    ConfigError,
    JobError,
    LockHeld,
    OutputFailed,
    RequestFailed,
    ResultsError,
)
from .._files import refuse_printing_into
from .._lock import refuse_live
from .._summary_types import Summary
from .._verdict import ExitCode, ungraded_reason
from ._common import show, sim_config, simulator_endpoint, step_summary, with_simulator
from ._report_outputs import (
    refuse_other_kinds,
    refuse_sidecars,
    report_page,
    through,
    write_junit_file,
    write_report_page,
)

if TYPE_CHECKING:
    from ._report_gate import KnownGate

_REGRADING_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("--simulate", lambda args: args.simulate),
    ("--base-url", lambda args: args.base_url is not None),
    ("--budget", lambda args: args.budget is not None),
    ("--sim", lambda args: bool(args.sim)),
    ("--allow-partial", lambda args: getattr(args, "allow_partial", False)),
    ("--deadline", lambda args: args.deadline is not None),
    ("--regrade-all", lambda args: args.regrade_all),
    ("--pass-threshold", lambda args: args.pass_threshold is not None),
    ("--max-error-rate", lambda args: args.max_error_rate is not None),
)


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from ._report_gate import UNFINISHED, KnownGate, failed_before_verdict, no_verdict

    outputs = ((args.html, "a page"), (args.junit, "a JUnit file"))
    refuse_sidecars(*outputs, inputs=(args.results, args.job))
    if args.job is None:
        refuse_other_kinds(*outputs)  # with --job, once the files the job names are known (_report_gate)
        # Options of the re-grading only: taken and left unused, a user believed them applied
        # (break23 F9: `report X --simulate` exited 0).
        given = [name for name, on in _REGRADING_OPTIONS if on(args)]
        if given:
            raise ConfigError(f"{', '.join(given)}: only with --job JOB.yaml (they apply to its re-grading and gate)")
    # Until the verdict, the files that stand say there is none: last night's green page and
    # JUnit file stood beside a report that failed before its verdict (results missing or empty,
    # held by a run, a signal), with --job as without (break62 F4).
    page = report_page(args)  # the extra --html needs, checked before any file is written
    no_verdict(args, console, UNFINISHED, standing=True)
    known = KnownGate()
    try:
        return _report(args, console, page, known)
    except KeyboardInterrupt:
        # A signal after the page was written: both files say exit 7, not the page a verdict
        # and the JUnit file "a second signal, or killed" (break62 F5).
        no_verdict(args, console, INTERRUPTED)
        raise
    except (JobError, ConfigError, ResultsError, LockHeld, RequestFailed) as failure:
        failed_before_verdict(args, console, known, failure)
        raise
    except OutputFailed as failure:
        if args.job is None:  # `report --job` says it in the other file itself
            # The file that failed is removed; the other one, written already or still the
            # placeholder, says exit 11 too, not a green gate or "a second signal" (verify63 F6).
            with contextlib.suppress(OutputFailed):
                no_verdict(args, console, (int(ExitCode.IO), [str(failure)]), standing=True)
        raise


INTERRUPTED = (int(ExitCode.INTERRUPTED), ["interrupted by a signal before the gate's verdict was written"])


def _report(args: argparse.Namespace, console: Console, page: Any, known: KnownGate) -> int:
    from .._batch_state import awaiting_text, pending_batches
    from .._items import ItemGate
    from .._reader import unread_lines
    from .._report_data import missing_since_summary
    from .._results import final_records
    from .._summary import SummaryBuilder
    from .._summary_beside import SummaryBeside
    from .._summary_text import render_markdown, render_text

    refuse_live(args.results, "report it")
    unread = 0

    def warn(message: str) -> None:
        nonlocal unread
        unread += unread_lines(message)
        console.warn(message)

    def counted(summary: Summary) -> None:
        # Said in --json and the step summary too, not on stderr only: a CI step reading them
        # saw a complete-looking run with a row gone (verify21 V21).
        if unread:
            summary["unread_lines"] = unread

    # With --job, another job's rows are read, and the matrix check refuses the file for them.
    records = final_records(args.results, warn, other_jobs=args.job is not None)
    if args.job is not None:
        from ._report_gate import report_against_job

        return report_against_job(args, console, records, page, counted, known)
    # Items judged by the gate the run had (its summary's `items.gate`), JUnit's too.
    beside = SummaryBeside.read(args.results)  # once: every view below is of one version of it
    run_summary = beside.run_summary()
    doubts = beside.doubts()
    for doubt in doubts:
        console.warn(doubt)
    unvouched = beside.of_another_job() or beside.unreadable()
    gate = ItemGate.recorded(run_summary)
    builder = SummaryBuilder(gate).add_all(through(page, records))
    pending = list(pending_batches(args.results, console.warn))
    summary = builder.add_pending_batches(pending).result(output=str(args.results), key_gap_usd=beside.key_gap())
    awaiting = sum(len(entry.rows) for entry in pending)
    # Rows never answered (a run stopped at its deadline, its budget, a kill -9) leave the file
    # incomplete, as rows gone since its summary do: exit 12, and the JUnit file fails with it
    # (break42 F2: exit 0 and a JUnit file with no failure for a run stopped at its deadline).
    missing = missing_since_summary(args.results, run_summary, summary["total"]["rows"], unread, awaiting)
    missing = missing or beside.changed()  # records edited since its summary (out-149 F1)
    if not summary["total"]["rows"] and not awaiting and missing is None:
        raise ResultsError(f"{args.results}: holds no records")
    counted(summary)
    if not run_summary and not doubts and not unvouched:
        # Said, not passed in silence (out-128 F4: a partial merge copied without its summary).
        console.warn(f"{args.results}: no summary of its run beside it: rows never written cannot be counted")
    elif run_summary and (unsealed := beside.unsealed()):  # a summary with its seal taken out (out-165 F4)
        console.warn(unsealed)
    reasons = [why for why in (missing, unvouched) if why]
    if unread and not run_summary:  # "a row may be missing", and nothing to say it is not (out-128 F4)
        reasons.append(f"{args.results}: lines set aside, and no summary of its run to count its rows by")
    if run_summary.get("merged_from") and run_summary.get("complete") is False:  # break53 F5: read as green
        short = [str(s) for s in run_summary.get("shortfalls") or [] if isinstance(s, str)][:3]
        reasons.append(f"{args.results}: a partial merge: {'; '.join(short) or 'rows of the job have no record'}")
    # A submit tick's file holds no record yet (break49 F3: exit 2, "holds no records").
    if waiting := awaiting_text(pending):
        reasons.append(f"{waiting}; --resume collects them")
    if skipped := summary["total"]["skipped"]:
        why = ", ".join(f"{k} {v}" for k, v in sorted(summary["skip_reasons"].items()))
        # Without a summary (a run killed), the rows it never reached have no record at all.
        unseen = "" if run_summary else "; rows the run never reached have no record: `report --job` counts them"
        reasons.append(f"{skipped} row(s) skipped, never answered ({why}); --resume runs them{unseen}")
    if ungraded := summary["total"].get("regradable", 0):  # as the run's own exit says (break61 F6: 0)
        reasons.append(ungraded_reason(ungraded))
    code = ExitCode.INCOMPLETE if reasons else ExitCode.OK
    job_name = summary.get("job") or args.results.stem
    # The records read again for the JUnit file: their warnings were said once, above.
    again = functools.partial(final_records, args.results)
    write_junit_file(args, console, again, gate, (), (int(code), reasons), job_name, unread)
    # The exit and why in the step summary too: a file exit 12 showed a whole-looking table (out-151
    # F6); in the JSON, for a program (out-174 F8).
    summary["exit_code"], summary["exit_reasons"] = int(code), list(reasons)
    show(console, args, summary, render_text, lambda shown: render_markdown(shown, verdict=(int(code), reasons)))
    write_report_page(args, page, summary, (int(code), reasons), gated=False, beside=beside)
    for reason in reasons:
        console.error(reason)
    return code


def cmd_history(args: argparse.Namespace, console: Console) -> int:
    from .._history import build_history, render_history_markdown, render_history_text
    from .._history_files import runs_in
    from .._job import load_job
    from .._output_paths import job_folder

    job = load_job(args.job) if args.job is not None else None
    if job is not None and not args.paths:  # its own folder: outputs/ may hold its old name's (out-151 F4)
        args.paths = [job_folder(job.name, job.run.output)]
    refuse_sidecars((args.html, "a page"), inputs=args.paths)
    refuse_other_kinds((args.html, "a page"))
    try:
        runs = runs_in(args.paths, console.warn)  # listed once: its warnings said once (out-155 F8)
    except ResultsError as failure:  # no runs there
        _history_page_failed(args, console, str(failure))
        raise
    refuse_printing_into(runs)  # `history DIR >> DIR/x.jsonl` (out-144 F3)
    try:
        history = build_history(args.paths, console.warn, runs, job.name if job else None)
    except (ConfigError, ResultsError) as failure:
        _history_page_failed(args, console, str(failure))
        raise
    if args.html:
        from .._html_report import write_history

        write_history(history, args.html)
    show(console, args, history, render_history_text, render_history_markdown)
    return ExitCode.OK


def _history_page_failed(args: argparse.Namespace, console: Console, why: str) -> None:
    """Over an earlier history page (one of ours), a page that says this one failed: the last
    good page stood, read as today's by a team that opened it (verify63 F9)."""
    from .._report_file import write_report_file
    from ._report_outputs import holds_page_or_nothing, no_verdict_page

    if args.html is None or not args.html.is_file() or not holds_page_or_nothing(args.html):
        return
    try:
        write_report_file(args.html, no_verdict_page(int(ExitCode.USAGE), [why], "history", "No history"))
    except OutputFailed as failure:  # the earlier page is gone (write_report_file)
        console.warn(str(failure))


def cmd_diff(args: argparse.Namespace, console: Console) -> int:
    from .._diff import diff_runs
    from .._diff_text import render_diff_markdown, render_diff_text

    if args.strict and not args.fail_on_regression:
        # Taken and unused, a CI step written `diff A B --strict` never failed (break27 m10).
        raise ConfigError("--strict: only with --fail-on-regression (it says what fails the gate)")
    refuse_printing_into((args.before, args.after))
    for results in (args.before, args.after):
        refuse_live(results, "compare it")
    diff = diff_runs(args.before, args.after, console.warn, args.alpha, args.strict)
    show(console, args, diff, render_diff_text, render_diff_markdown)
    if args.fail_on_regression and (diff["edited"] or diff["awaiting"]):
        # Compared as it is, said above: no verdict on rows their runs did not write, or not yet answered.
        return ExitCode.INCOMPLETE
    if args.fail_on_regression and diff["regression"]:
        return ExitCode.REGRESSION
    return ExitCode.OK


def cmd_merge(args: argparse.Namespace, console: Console) -> int:
    from .._job import load_job
    from .._merge import merge_shards
    from .._summary_text import render_markdown, render_text

    files = list(args.files)
    output = args.output or files.pop(0)
    if not files:
        raise ConfigError("merge needs at least one shard file")
    refuse_printing_into([*files, args.job])  # `merge OUT SHARD >> SHARD` (out-144 F3)
    job = None if args.job is None else load_job(args.job)
    summary = merge_shards(files, output, job, console.warn)
    failed = bool(summary["shortfalls"]) and not args.allow_partial
    if failed or not args.quiet:  # a failure shows its table, on stderr under --quiet (as a run's)
        (console.to_err if args.quiet else console.out.write)(render_text(summary) + "\n")
    # The exit and what is missing in the step summary too: a partial merge's was a table of 77 of
    # 105 rows that looked whole (out-149 F6).
    accepted = [f"accepted with --allow-partial: {s}" for s in summary["shortfalls"]] if not failed else []
    for line in accepted:  # as the gate says them
        console.warn(line)
    code, reasons = (ExitCode.INCOMPLETE, summary["shortfalls"]) if failed else (ExitCode.OK, accepted)
    step_summary(console, render_markdown(summary, verdict=(int(code), reasons)), args)
    if failed:
        for shortfall in summary["shortfalls"]:
            console.error(shortfall)
        console.error("the merge is not complete (--allow-partial accepts that)")
    return code


def cmd_cache(args: argparse.Namespace, console: Console) -> int:
    from .._cache_commands import CacheCommand, run_cache_command

    if getattr(args, "sim", None):
        sim_config(args.sim)  # a setting a run would refuse is refused here too (verify46)

    command = CacheCommand(
        action=args.cache_command,
        folder=args.dir,
        job=getattr(args, "job", None),
        row=getattr(args, "row", None),
        prompt=getattr(args, "prompt", None),
        model=getattr(args, "model", None),
        base_url=simulator_endpoint(args) if getattr(args, "simulate", False) else getattr(args, "base_url", None),
        older_than=getattr(args, "older_than", None),
    )
    said = run_cache_command(command)
    if not getattr(args, "quiet", False):
        console.out.write(said + "\n")
    return ExitCode.OK


def cmd_batches(args: argparse.Namespace, console: Console) -> int:
    from .._batch_cli import batches_command
    from .._event_loop import run as run_loop

    # Words and options the action would leave unused, taken as done (verify50 N5).
    if args.budget is not None:
        raise ConfigError("--budget: `batches` sends no chat request; a run's budget is given to the run")
    taken = {"list": 0, "cancel": 1, "release": 1, "adopt": 2}[args.action]
    if extra := [word for word in (args.key, args.batch_id)[taken:] if word is not None]:
        words = f"{taken or 'no'} word(s)"
        raise ConfigError(f"batches {args.action} takes {words} after the results file, not {extra[0]!r}")

    async def body(base_url: str | None, sim_key: str | None, _management: str | None) -> list[str]:
        return await batches_command(args.action, args.results, args.key, args.batch_id, args.job, base_url, sim_key)

    for line in run_loop(with_simulator(args, body)):
        console.out.write(line + "\n")
    return ExitCode.OK
