"""The commands that read results files: report, history, diff, merge; and cache, batches."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .._console import Console
from .._exceptions import (
    ConfigError,
    OutputFailed,
    ResultsError,
)
from .._summary_types import Summary
from .._verdict import ExitCode
from ._common import (
    SIMULATOR_ENDPOINT,
    key_for_job,
    show,
    step_summary,
    with_budget,
    with_simulator,
)


def _refuse_sidecars(*outputs: tuple[Any, str], inputs: Iterable[Path | None] = ()) -> None:
    """Pages and JUnit files are never written over a results file or its sidecars (its summary
    carries what a resume counts as spent: verification of break14e, F9), by name or by link;
    nor over a file the command reads (`inputs`: the job, its datasets), nor two of them over one
    file (break25 F3: `--html job.yaml` replaced the job just read, `--junit X --html X` lost the
    JUnit file)."""
    from .._files import file_identity
    from .._output_paths import report_output_problem

    taken = {file_identity(path): f"{path}, which this command reads" for path in inputs if path is not None}
    for path, role in outputs:
        if path is None:
            continue
        if (problem := report_output_problem(path, role)) is not None:
            raise ConfigError(problem)
        identity = file_identity(path)
        if identity in taken:
            raise ConfigError(f"{path}: {role} is not written over {taken[identity]}")
        taken[identity] = f"{role} it writes too ({path})"


def _files_named_by(job_file: Path) -> list[Path]:
    """The files beside a job (loaded: bounded) that it names: its datasets, `json_schema`
    files, the grader prompt (verify25 N10: `--junit capital.schema.json` replaced the schema
    jobs/eval.yaml checks answers with)."""
    import yaml

    from .._files import read_regular_text

    found: list[Path] = []
    pending: list[Any] = [yaml.safe_load(read_regular_text(job_file))]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str) and 0 < len(value) < 4096 and "\n" not in value and "\0" not in value:
            with contextlib.suppress(OSError, ValueError):
                if (job_file.parent / value).is_file():
                    found.append(job_file.parent / value)
    return found


def _refuse_named_in_datasets(job: Any, *outputs: tuple[Path | None, str]) -> None:
    """Nor over a file a dataset row names (its own `json_schema` check: verify26 R1): an
    existing output beside the job whose name a dataset file holds, read as bytes, unparsed."""
    from .._dataset import DatasetFile
    from .._files import file_mentions

    datasets = [p.rows.path for p in job.prompts if isinstance(p.rows, DatasetFile)]
    for path, role in outputs:
        if path is None or not datasets or not path.is_file():
            continue
        try:
            name = path.resolve().relative_to(job.path.parent.resolve()).as_posix().encode()
        except ValueError:
            continue  # not beside the job: no row names it
        for dataset in datasets:
            with contextlib.suppress(OSError):
                if file_mentions(dataset, name):
                    raise ConfigError(f"{path}: {role} is not written over a file {dataset} names")


def _report_page(args: argparse.Namespace) -> Any:
    """With --html, the collector of the page's data (checked first: the extra may be missing)."""
    if not args.html:
        return None
    from .._html_report import require_report_extra
    from .._report_data import RunDigest

    require_report_extra()
    return RunDigest()


def _through(page: Any, records: Any) -> Any:
    return records if page is None else page.watch(records)


def _write_report_page(args: argparse.Namespace, page: Any, summary: Summary, verdict: Any) -> None:
    if page is not None:
        from .._html_report import write_report

        write_report(args.results, args.html, page, summary, verdict)


_REGRADING_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("--simulate", lambda args: args.simulate),
    ("--base-url", lambda args: args.base_url is not None),
    ("--budget", lambda args: args.budget is not None),
    ("--sim", lambda args: bool(args.sim)),
    ("--allow-partial", lambda args: getattr(args, "allow_partial", False)),
    ("--deadline", lambda args: args.deadline is not None),
)


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from .._batch_state import pending_batches
    from .._items import ItemGate
    from .._reader import is_unread_line
    from .._report_data import file_key_gap, read_run_summary
    from .._results import final_records
    from .._summary import SummaryBuilder
    from .._summary_text import render_markdown, render_text

    _refuse_sidecars((args.html, "a page"), (args.junit, "a JUnit file"), inputs=(args.results, args.job))
    if args.job is None:
        # Options of the re-grading only: taken and left unused, a user believed them applied
        # (break23 F9: `report X --simulate` exited 0).
        given = [name for name, on in _REGRADING_OPTIONS if on(args)]
        if given:
            raise ConfigError(f"{', '.join(given)}: only with --job JOB.yaml (they apply to its re-grading)")
    page = _report_page(args)
    unread = 0

    def warn(message: str) -> None:
        nonlocal unread
        unread += is_unread_line(message)
        console.warn(message)

    def counted(summary: Summary) -> None:
        # Said in --json and the step summary too, not on stderr only: a CI step reading them
        # saw a complete-looking run with a row gone (verify21 V21).
        if unread:
            summary["unread_lines"] = unread

    # With --job, another job's rows are read, and the matrix check refuses the file for them.
    records = final_records(args.results, warn, other_jobs=args.job is not None)
    if args.job is None:
        # Items judged by the gate the run had (its summary's `items.gate`), JUnit's too.
        gate = ItemGate.recorded(read_run_summary(args.results))
        builder = SummaryBuilder(gate).add_all(_through(page, records))
        summary = builder.add_pending_batches(pending_batches(args.results, console.warn)).result(
            output=str(args.results), key_gap_usd=file_key_gap(args.results)
        )
        if not summary["total"]["rows"]:
            raise ResultsError(f"{args.results}: holds no records")
        counted(summary)
        _write_junit(args, console, lambda: final_records(args.results), gate)  # read again: warned once
        show(console, args, summary, render_text, render_markdown)
        _write_report_page(args, page, summary, None)
        return ExitCode.OK
    from .._checks import is_judge
    from .._gate import MatrixCoverage
    from .._job import load_job
    from .._verdict import decide

    job = load_job(args.job)
    _refuse_sidecars((args.html, "a page"), (args.junit, "a JUnit file"), inputs=_files_named_by(job.path))
    _refuse_named_in_datasets(job, (args.html, "a page"), (args.junit, "a JUnit file"))
    settings = with_budget(job.run, args.budget)
    if args.deadline is not None:
        settings = replace(settings, deadline_s=args.deadline)
    job = replace(job, run=settings)
    gate = ItemGate.from_threshold(settings.pass_threshold)
    coverage = MatrixCoverage.of(job)
    # Judge checks of the job now (a dataset row's own included) decide whether graders are asked.
    regraded: list[dict[str, Any]] = []
    judged = any(is_judge(c) for checks in coverage.checks.values() for c in checks)
    if judged:
        summary = _regrade_judged(args, console, job, gate, coverage.review(records), regraded, page)
    else:
        reviewed = _through(page, coverage.review(records, regrade=True))
        builder = (
            SummaryBuilder(gate).add_all(reviewed).add_pending_batches(pending_batches(args.results, console.warn))
        )
        summary = builder.result(output=str(args.results), key_gap_usd=file_key_gap(args.results))
    counted(summary)

    def junit_records() -> Iterable[dict[str, Any]]:
        if judged:
            return regraded
        return MatrixCoverage.of(job).review(final_records(args.results, other_jobs=True), regrade=True)

    coverage.raise_if_foreign(args.results)
    shortfalls = coverage.shortfalls()
    summary.update({"complete": not shortfalls, "missing_rows": coverage.missing, "matrix_rows": len(coverage.checks)})
    _write_junit(args, console, junit_records, gate)
    show(console, args, summary, render_text, render_markdown)
    code, reasons = decide(summary, settings)
    if shortfalls and not args.allow_partial:
        # Rows without an answer outrank errors and quality, as a stop does in a run.
        code, reasons = ExitCode.INCOMPLETE, [*shortfalls, "(--allow-partial accepts them)", *reasons]
    _write_report_page(args, page, summary, (code, reasons))
    for reason in reasons:
        console.error(reason)
    return int(code)


def _write_junit(args: argparse.Namespace, console: Console, records: Callable[[], Any], gate: Any) -> None:
    if args.junit is None:
        return
    from .._items import ItemGate
    from .._junit import write_junit

    counts = write_junit(records(), args.junit, None, gate or ItemGate())
    console.err.write(
        f"junit: {args.junit}: {counts['tests']} test case(s), {counts['failure']} failed, "
        f"{counts['error']} error(s), {counts['skipped']} skipped\n"
    )


def _regrade_judged(
    args: argparse.Namespace,
    console: Console,
    job: Any,
    gate: Any,
    records: Iterable[dict[str, Any]],
    regraded: list[dict[str, Any]],
    page: Any,
) -> Summary:
    """Re-grade with grader requests: the worst case printed first, then spent within the budget."""
    import asyncio  # not at the top: `validate` and the file commands never load it (~60 ms of start-up)

    from .._options import RunOptions
    from .._regrade import regrade_file
    from .._report_data import file_key_gap
    from .._results import final_records
    from .._run_control import RunControl
    from .._signals import RunSignals

    def worst_case(line: str) -> None:
        console.err.write(line + "\n")
        console.err.flush()

    def keep(record: dict[str, Any]) -> None:
        if args.junit is not None:
            regraded.append(record)
        if page is not None:
            page.add(record)

    control = RunControl()

    async def body(base_url: str | None, sim_key: str | None, _management: str | None) -> Summary:
        signals.loop = asyncio.get_running_loop()
        options = RunOptions(api_key=key_for_job(job, sim_key), base_url=base_url)
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
            )
        finally:
            signals.loop = None

    # Grader requests spend like a run's: SIGTERM or SIGINT stops them cleanly, and the spend
    # and the exit code (7) are said (verify14i V8: SIGTERM killed it, exit 143, nothing said).
    with RunSignals(lambda: control.stop(), console.error) as signals:
        summary: Summary = asyncio.run(with_simulator(args, body))
    summary["output"] = str(args.results)
    summary["key_gap_usd"] = file_key_gap(args.results)
    return summary


def cmd_history(args: argparse.Namespace, console: Console) -> int:
    from .._history import build_history, render_history_markdown, render_history_text

    _refuse_sidecars((args.html, "a page"), inputs=args.paths)
    history = build_history(args.paths, console.warn)
    if args.html:
        from .._html_report import write_history

        write_history(history, args.html)
    show(console, args, history, render_history_text, render_history_markdown)
    return ExitCode.OK


def cmd_diff(args: argparse.Namespace, console: Console) -> int:
    from .._diff import diff_runs, render_diff_markdown, render_diff_text

    diff = diff_runs(args.before, args.after, console.warn, args.alpha, args.strict)
    show(console, args, diff, render_diff_text, render_diff_markdown)
    if args.fail_on_regression and diff["regression"]:
        return ExitCode.REGRESSION
    return ExitCode.OK


def cmd_merge(args: argparse.Namespace, console: Console) -> int:
    from .._job import load_job
    from .._merge import merge_shards
    from .._output_paths import summary_path, write_json_atomically
    from .._summary_text import render_markdown, render_text

    files = list(args.files)
    output = args.output or files.pop(0)
    if not files:
        raise ConfigError("merge needs at least one shard file")
    job = None if args.job is None else load_job(args.job)
    summary = merge_shards(files, output, job, console.warn)
    try:
        write_json_atomically(summary_path(output), summary)
    except OSError as exc:
        raise OutputFailed(f"{summary_path(output)}: writing the summary failed: {exc.strerror or exc}") from None
    console.out.write(render_text(summary) + "\n")
    step_summary(console, render_markdown(summary))
    if summary["shortfalls"] and not args.allow_partial:
        for shortfall in summary["shortfalls"]:
            console.error(shortfall)
        console.error("the merge is not complete (--allow-partial accepts that)")
        return ExitCode.INCOMPLETE
    return ExitCode.OK


def cmd_cache(args: argparse.Namespace, console: Console) -> int:
    from .._cache_commands import CacheCommand, run_cache_command

    command = CacheCommand(
        action=args.cache_command,
        folder=args.dir,
        job=getattr(args, "job", None),
        row=getattr(args, "row", None),
        prompt=getattr(args, "prompt", None),
        model=getattr(args, "model", None),
        base_url=SIMULATOR_ENDPOINT if getattr(args, "simulate", False) else getattr(args, "base_url", None),
        older_than=getattr(args, "older_than", None),
    )
    console.out.write(run_cache_command(command) + "\n")
    return ExitCode.OK


def cmd_batches(args: argparse.Namespace, console: Console) -> int:
    import asyncio

    from .._batch_cli import batches_command

    async def body(base_url: str | None, sim_key: str | None, _management: str | None) -> list[str]:
        return await batches_command(args.action, args.results, args.key, args.batch_id, args.job, base_url, sim_key)

    for line in asyncio.run(with_simulator(args, body)):
        console.out.write(line + "\n")
    return ExitCode.OK
