"""The command line: parses arguments, shows progress, prints summaries, sets the exit code.

The only module that prints or exits; everything else raises or returns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn, TextIO, cast

from . import __version__, _argtypes
from ._console import Console, append_step_summary
from ._exceptions import (
    AuthFailed,
    BatchrunError,
    CacheError,
    ConfigError,
    JobError,
    LockHeld,
    OutputFailed,
    RequestFailed,
    ResultsError,
)
from ._files import describe_os_error
from ._signals import RunSignals, release_early
from ._verdict import EXIT_CODE_TABLE, ExitCode

COMMANDS = ("validate", "plan", "simulate", "report", "diff", "merge", "cache", "run", "batches", "history")

EPILOG = f"""commands:
  batchrun JOB.yaml [options]        run a job (same as `batchrun run JOB.yaml`)
  batchrun validate JOB.yaml...      schema and semantic checks, no network
  batchrun plan JOB.yaml             matrix size; with a key or --simulate, worst-case cost vs budget and credit
  batchrun simulate [--port P]       serve the built-in OpenRouter simulator
  batchrun report RESULTS.jsonl      summary of a results file (--html OUT.html: a self-contained page)
  batchrun history [DIR | RUN...]    trends across runs of a job (--html OUT.html, --markdown)
  batchrun diff A.jsonl B.jsonl      what changed between two runs
  batchrun merge OUT.jsonl SHARD...  combine shard files of one job
  batchrun cache explain JOB.yaml    hit or miss per row, and for a miss what changed
  batchrun cache stats|prune|clear   the response cache's size, hit rates, upkeep
  batchrun batches list|cancel|adopt|release RESULTS.jsonl   a batch-mode run's batches

exit codes:
{EXIT_CODE_TABLE}
"""


# How cache keys name the built-in simulator, whose port changes from run to run.
SIMULATOR_ENDPOINT = "simulator"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"batchrun: error: {message}\n")


def _add_sim_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sim",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="simulator setting, repeatable: latency_ms=50, fault.503=0.1, fault.reset=0.05, "
        "rate_limit_rps=100, free_daily_cap=5, key_limit=0.01, cost_noise=0.1, seed=7 ...",
    )


def _add_cache_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--cache",
        nargs="?",
        const="",
        type=_argtypes.cache_dir,
        metavar="DIR",
        help="answer unchanged requests from the response cache (default folder: run.cache.dir, "
        "else the user cache folder); put it after JOB.yaml, or write --cache=DIR",
    )
    group.add_argument("--no-cache", action="store_true", help="ignore run.cache for this run")


def _add_endpoint_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--simulate", action="store_true", help="run against the built-in simulator (no key, no network)"
    )
    parser.add_argument(
        "--base-url", type=_argtypes.base_url, help="OpenAI-compatible base URL, overriding the job's endpoint"
    )
    parser.add_argument(
        "--budget",
        type=_argtypes.positive_float,
        metavar="USD",
        help="spend at most this; the smaller of this and run.budget_usd wins",
    )
    _add_sim_options(parser)


def _add_mode_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mode",
        choices=("sync", "batch"),
        help="batch: through OpenRouter's Batch API (half price, within 24 h); overrides run.mode",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="batchrun",
        description="Run declarative batches of LLM chat requests through OpenRouter.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"batchrun {__version__}")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)

    run = commands.add_parser(
        "run", help="run a job", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    run.add_argument("job", type=Path)
    run.add_argument("--output", "-o", type=Path, help="results file (default outputs/<job>/<UTC time>.jsonl)")
    run.add_argument(
        "--resume", action="store_true", help="continue the run that wrote --output (or the latest incomplete one)"
    )
    run.add_argument(
        "--retry-errors", action="store_true", help="with --resume, also re-run rows that ended in a retryable error"
    )
    _add_endpoint_options(run)
    run.add_argument(
        "--concurrency",
        type=_argtypes.concurrency,
        metavar="N",
        help=f"requests in flight at once, 1..{_argtypes.MAX_CONCURRENCY} (overrides run.concurrency)",
    )
    run.add_argument("--deadline", type=_argtypes.positive_float, metavar="SECONDS", help="whole-run deadline")
    run.add_argument(
        "--grace",
        type=_argtypes.non_negative_float,
        metavar="SECONDS",
        help="how long in-flight requests may finish after a stop",
    )
    run.add_argument("--timeout", type=_argtypes.positive_float, metavar="SECONDS", help="per-attempt timeout")
    run.add_argument(
        "--max-attempts",
        type=_argtypes.attempts,
        metavar="N",
        help="attempts per request, retries included, 1..100 (overrides run.max_attempts)",
    )
    run.add_argument(
        "--max-response-bytes",
        type=_argtypes.response_bytes,
        metavar="BYTES",
        help="cap on one reply's body, counted after decompression (overrides run.max_response_bytes)",
    )
    run.add_argument(
        "--max-elapsed",
        type=_argtypes.positive_float,
        metavar="SECONDS",
        help="stop retrying a request after this long",
    )
    run.add_argument("--max-wait", type=_argtypes.positive_float, metavar="SECONDS", help="cap on a single retry wait")
    run.add_argument("--shard", metavar="K/N", help="run the K-th of N deterministic parts of the matrix")
    run.add_argument(
        "--pass-threshold", type=_argtypes.rate, metavar="RATE", help="minimum pass rate of the checks (0..1)"
    )
    run.add_argument(
        "--isolated-key",
        action="store_true",
        help="run on a fresh key whose limit is the budget (needs a management key)",
    )
    run.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="streaming mode: a timeout, stop or deadline cancels generation and billing (run.stream)",
    )
    run.add_argument("--quiet", "-q", action="store_true", help="print nothing unless something fails")
    _add_cache_options(run)
    _add_mode_option(run)

    validate = commands.add_parser("validate", help="check job files without any network")
    validate.add_argument("jobs", type=Path, nargs="+", metavar="JOB.yaml", help="job files to check")
    validate.add_argument("--quiet", "-q", action="store_true", help="print nothing unless a file has problems")

    plan = commands.add_parser("plan", help="matrix size, and worst-case cost against budget and credit")
    plan.add_argument("job", type=Path)
    _add_mode_option(plan)
    _add_endpoint_options(plan)
    _add_cache_options(plan)

    simulate = commands.add_parser("simulate", help="serve the OpenRouter simulator until stopped")
    simulate.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    simulate.add_argument(
        "--port", type=_argtypes.port, default=8199, help="port to listen on, 0 for any free one (default 8199)"
    )
    _add_sim_options(simulate)

    report = commands.add_parser("report", help="summary of a results file")
    report.add_argument("results", type=Path)
    _add_format_options(report, "the summary")
    report.add_argument(
        "--job",
        type=Path,
        metavar="JOB.yaml",
        help="the CI gate: compare the rows with this job's whole matrix (missing or skipped rows: "
        f"exit {ExitCode.INCOMPLETE.value}; rows of another job: exit 2), re-grade the stored answers with its "
        "current checks, and gate on its thresholds (exit 1, 3 or 5); judge checks send grader requests "
        "(a key or --simulate) within --budget, after printing their worst case",
    )
    _add_partial_option(report)
    report.add_argument(
        "--html", type=Path, metavar="OUT.html", help="also write a self-contained HTML page with charts"
    )
    report.add_argument(
        "--junit", type=Path, metavar="PATH", help="also write JUnit XML: one test case per row or item"
    )
    _add_endpoint_options(report)

    history = commands.add_parser("history", help="trends across the runs of a job, and what changed")
    history.add_argument(
        "paths",
        type=Path,
        nargs="*",
        metavar="DIR | RUN.jsonl",
        help="the job's output folder, or results files (default: the one job under outputs/)",
    )
    history.add_argument("--html", type=Path, metavar="OUT.html", help="also write a self-contained HTML page")
    history.add_argument("--json", action="store_true")
    history.add_argument("--markdown", action="store_true", help="compact tables, e.g. for GITHUB_STEP_SUMMARY")

    diff = commands.add_parser("diff", help="what changed between two runs of a job")
    diff.add_argument("before", type=Path)
    diff.add_argument("after", type=Path)
    _add_format_options(diff, "the changes")
    diff.add_argument(
        "--fail-on-regression",
        action="store_true",
        help=f"exit {ExitCode.REGRESSION.value} on a significant drop in a pass rate (McNemar's exact test on the "
        "same rows, else Fisher's), an item that passed every repeat and now fails every repeat, or a model that "
        "started erroring or disappeared",
    )
    diff.add_argument(
        "--alpha",
        type=_argtypes.significance,
        default=0.05,
        metavar="LEVEL",
        help="significance level of the test (default 0.05)",
    )
    diff.add_argument(
        "--strict", action="store_true", help="with --fail-on-regression, any row from pass to fail fails"
    )

    batches = commands.add_parser("batches", help="list, cancel, adopt or release the batches of a batch-mode run")
    batches.add_argument("action", choices=("list", "cancel", "adopt", "release"))
    batches.add_argument("results", type=Path)
    batches.add_argument("key", nargs="?", help="adopt/release: the batch key (b1, b2...) from `batches list`")
    batches.add_argument("batch_id", nargs="?", help="adopt: OpenRouter's batch id")
    batches.add_argument("--job", type=Path, metavar="JOB.yaml", help="cancel: the job (its endpoint and key)")
    _add_endpoint_options(batches)

    merge = commands.add_parser("merge", help="combine shard result files of one job")
    merge.add_argument("files", type=Path, nargs="+", help="OUT.jsonl SHARD... (or SHARD... with -o OUT)")
    merge.add_argument("--output", "-o", type=Path)
    merge.add_argument(
        "--job",
        type=Path,
        metavar="JOB.yaml",
        help="check the merged rows against this job's whole matrix (else the shards' summaries are used)",
    )
    _add_partial_option(merge)

    cache = commands.add_parser("cache", help="the response cache: explain, stats, prune, clear")
    actions = cache.add_subparsers(dest="cache_command", parser_class=_Parser, required=True)
    explain = actions.add_parser("explain", help="hit or miss for each row of a job, and why")
    explain.add_argument("job", type=Path, help="the job file (its run.cache settings apply)")
    chosen = explain.add_mutually_exclusive_group()
    chosen.add_argument("--row", metavar="ID", help="one row (its id, or the start of it)")
    chosen.add_argument("--prompt", metavar="ID", help="the rows of one prompt")
    chosen.add_argument("--model", metavar="ID", help="the rows of one model")
    explain.add_argument("--base-url", help="the endpoint the run would use, if not the job's")
    explain.add_argument("--simulate", action="store_true", help="as runs with --simulate see the cache")
    stats = actions.add_parser("stats", help="entries, size, hit rate of the last runs")
    prune = actions.add_parser("prune", help="remove entries stored longer ago than DURATION")
    prune.add_argument(
        "--older-than", required=True, metavar="DURATION", help="with a unit: 90s, 15m, 12h, 30d, 2w (or 1d12h)"
    )
    clear = actions.add_parser("clear", help="remove every entry, or one model's")
    clear.add_argument("--model", metavar="ID", help="only this model's entries")
    # Only `explain` reads a job: the others cannot know a job's run.cache.dir (issue 16).
    explain.add_argument("--dir", type=Path, help="cache folder (default: the job's run.cache.dir, else the user's)")
    for action in (stats, prune, clear):
        action.add_argument(
            "--dir",
            type=Path,
            help="cache folder (default: the user cache folder, not a job's run.cache.dir: name that one here)",
        )
    return parser


def _add_format_options(parser: argparse.ArgumentParser, what: str) -> None:
    formats = parser.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help=f"print {what} as JSON")
    formats.add_argument("--markdown", action="store_true", help=f"print {what} as Markdown")


def _add_partial_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help=f"accept rows missing from the job's matrix, or skipped, instead of exit {ExitCode.INCOMPLETE.value}",
    )


def _sim_config(options: list[str]) -> Any:
    from .simulator import SimConfig

    config = SimConfig()
    for option in options:
        try:
            config.set_option(option)
        except ValueError as exc:
            raise ConfigError(f"--sim {option}: {exc}") from None
        key, _, value = option.partition("=")
        # Rates and accuracies are probabilities; the simulator would take 2 as "always".
        if key.strip().startswith(("fault.", "accuracy.")) and not 0 <= float(value) <= 1:
            raise ConfigError(f"--sim {option}: a rate must be between 0 and 1")
    return config


def _step_summary(console: Console, markdown: str) -> None:
    """A step summary that cannot be written is a warning: the command's own code stands."""
    failure = append_step_summary(markdown)
    if failure:
        console.warn(failure)


# -- commands -------------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace, console: Console) -> int:
    from ._job import load_job

    failed = False
    for path in args.jobs:
        try:
            job = load_job(path)
        except JobError as exc:
            failed = True
            for problem in exc.problems:
                console.error(str(problem))
            continue
        if not args.quiet:
            console.out.write(f"{path}: ok (job {job.name})\n")
    return ExitCode.USAGE if failed else ExitCode.OK


async def _with_simulator(args: argparse.Namespace, body: Any) -> Any:
    """Run `body(base_url, api_key, management_key)`, inside a loopback simulator when --simulate."""
    if not args.simulate:
        return await body(args.base_url, None, None)
    from .simulator import Simulator

    simulator = Simulator(_sim_config(args.sim))
    await simulator.start()
    try:
        return await body(simulator.base_url, "sim-key", simulator.config.management_key)
    finally:
        await simulator.stop()


_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


def _checked_key(variable: str) -> str | None:
    """A key from the environment, refused (without showing it) if a header cannot carry it."""
    key = os.environ.get(variable)
    if key and not _HEADER_SAFE.fullmatch(key):
        raise ConfigError(
            f"${variable} holds a space, a newline or a non-ASCII character, which an HTTP header "
            "cannot carry; check how it was set (the key is not shown)"
        )
    return key or None


def _api_key(job: Any, simulated_key: str | None) -> str:
    if simulated_key is not None:
        return simulated_key
    key = _checked_key(job.endpoint.api_key_env)
    if not key:
        raise ConfigError(f"no API key: set ${job.endpoint.api_key_env} (or use --simulate)")
    return key


def _with_budget(settings: Any, budget: float | None) -> Any:
    """`--budget` and `run.budget_usd`: the smaller wins."""
    if budget is None:
        return settings
    return replace(settings, budget_usd=min(budget, settings.budget_usd or budget))


def _with_cache(settings: Any, args: argparse.Namespace) -> Any:
    """`--cache [DIR]` turns the cache on (in DIR), keeping run.cache's other settings; `--no-cache` off."""
    if args.no_cache:
        return replace(settings, cache=False)
    if args.cache is None:
        return settings
    options = dict(settings.cache) if isinstance(settings.cache, dict) else {}
    if args.cache:
        options["dir"] = args.cache
    return replace(settings, cache=options or True)


def _settings_from_args(job: Any, args: argparse.Namespace) -> Any:
    settings = job.run
    overrides = {
        "concurrency": args.concurrency,
        "deadline_s": args.deadline,
        "grace_s": args.grace,
        "timeout_s": args.timeout,
        "max_attempts": args.max_attempts,
        "max_response_bytes": args.max_response_bytes,
        "max_elapsed_s": args.max_elapsed,
        "max_wait_s": args.max_wait,
    }
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    settings = _with_budget(settings, args.budget)
    settings = _with_cache(settings, args)
    if args.isolated_key:
        settings = replace(settings, isolated_key=True)
    if args.mode:
        settings = replace(settings, mode=args.mode)
    if args.stream is not None:
        settings = replace(settings, stream=args.stream)
    return settings


def _test_seam(name: str) -> int | None:
    """A test-only hook from the environment (the crash tests kill a real process)."""
    value = os.environ.get(name)
    return int(value) if value and value.isdigit() else None


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from ._run import RunControl

    control = RunControl()
    with RunSignals(lambda: control.stop("interrupted"), console.error) as signals:
        return _run(args, console, signals, control)


def _run(args: argparse.Namespace, console: Console, signals: RunSignals, control: Any) -> int:
    from ._job import load_job
    from ._matrix import Shard
    from ._progress import Progress
    from ._run import RunOptions, run_job
    from ._summary import render_markdown, render_text
    from ._verdict import decide

    if args.retry_errors and not args.resume:
        raise ConfigError("--retry-errors continues a run: use it with --resume")
    job = load_job(args.job)
    settings = _settings_from_args(job, args)
    job = replace(job, run=settings)
    shard = None
    if args.shard:
        try:
            shard = Shard.parse(args.shard)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    progress = Progress(cast(TextIO, console.err), args.quiet, settings.progress_every_s)
    notices: list[str] = []

    def notice(message: str) -> None:
        notices.append(message)
        if not args.quiet or message.startswith("warning"):
            console.error(message)

    async def body(base_url: str | None, sim_key: str | None, sim_management: str | None) -> Any:
        signals.loop = asyncio.get_running_loop()
        management = sim_management or _checked_key(job.endpoint.management_key_env)
        api_key = None if settings.isolated_key and sim_key is None else _api_key(job, sim_key)
        if settings.isolated_key and api_key is None:
            api_key = _checked_key(job.endpoint.api_key_env)
        options = RunOptions(
            api_key=api_key,
            base_url=base_url,
            output=args.output,
            resume=args.resume,
            retry_errors=args.retry_errors,
            shard=shard,
            management_key=management,
            cache_endpoint=SIMULATOR_ENDPOINT if args.simulate else None,
            test_kill_after_submit=_test_seam("BATCHRUN_TEST_KILL_AFTER_SUBMIT"),
        )
        try:
            return await run_job(job, options, control, notice, on_start=progress.start, on_record=progress.record)
        finally:
            progress.close()
            signals.loop = None

    report = asyncio.run(_with_simulator(args, body))
    code, reasons = decide(report.summary, settings, args.pass_threshold)
    text = render_text(report.summary)
    if code == ExitCode.OK or (code == ExitCode.SUBMITTED and args.quiet):
        # "Submitted, collect later" is the expected end of a batch submission tick: nothing is wrong.
        if not args.quiet:
            console.out.write(text + "\n")
    else:
        (console.err if args.quiet else console.out).write(text + "\n")
        for reason in reasons:
            console.error(reason)
        if report.summary.get("stop") == "io":
            console.error(report.summary["stop_message"])
    _step_summary(console, render_markdown(report.summary))
    if console.stdout_failure():
        console.warn(f"stdout: the summary could not be written: {console.stdout_failure()}")
    return int(code)


def cmd_plan(args: argparse.Namespace, console: Console) -> int:
    from ._job import load_job
    from ._plan import render_plan, render_plan_offline

    job = load_job(args.job)
    settings = _with_cache(_with_budget(job.run, args.budget), args)
    if args.mode:
        settings = replace(settings, mode=args.mode)
    job = replace(job, run=settings)
    key = None if args.simulate else _checked_key(job.endpoint.api_key_env)
    endpoint = SIMULATOR_ENDPOINT if args.simulate else args.base_url
    if not args.simulate and not key:
        console.out.write(render_plan_offline(job, endpoint, console.error) + "\n")
        return ExitCode.OK

    async def body(base_url: str | None, sim_key: str | None, sim_management: str | None) -> str:
        from ._plan import price_plan

        # A simulated plan's "previous average" would compare made-up prices: none is shown.
        management = sim_management or os.environ.get(job.endpoint.management_key_env)
        plan = await price_plan(
            replace(job, run=settings),
            base_url,
            sim_key or key,
            previous=not args.simulate,
            management_key=management,
            cache_endpoint=endpoint,
            warn=console.error,
        )
        refused.append(plan.refusal())
        return render_plan(plan)

    refused: list[str | None] = []
    console.out.write(asyncio.run(_with_simulator(args, body)) + "\n")
    if refused and refused[0] is not None:
        raise ConfigError(refused[0])  # the run would refuse the same way: the same exit code
    return ExitCode.OK


def cmd_simulate(args: argparse.Namespace, console: Console) -> int:
    from .simulator import Simulator

    config = _sim_config(args.sim)

    async def serve() -> None:
        simulator = Simulator(config)
        try:
            await simulator.start(args.host, args.port)
        except OSError as exc:  # a busy port, a host that does not resolve: said before any "listening"
            raise ConfigError(f"simulator cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
        console.err.write(f"simulator on {simulator.base_url} (Ctrl-C to stop)\n")
        try:
            await asyncio.Event().wait()
        finally:
            await simulator.stop()

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it is meant to stop
        asyncio.run(serve())
    return ExitCode.OK


def _show(
    console: Console,
    args: argparse.Namespace,
    data: dict[str, Any],
    as_text: Callable[[dict[str, Any]], str],
    as_markdown: Callable[[dict[str, Any]], str],
) -> None:
    """Print in the form asked (text, --json, --markdown); Markdown also to GITHUB_STEP_SUMMARY."""
    from ._outputs import finite

    if args.json:
        console.out.write(json.dumps(finite(data), indent=2, allow_nan=False) + "\n")
    elif args.markdown:
        console.out.write(as_markdown(data))
    else:
        console.out.write(as_text(data) + "\n")
    _step_summary(console, as_markdown(data))


def _report_page(args: argparse.Namespace) -> Any:
    """With --html, the collector of the page's data (checked first: the extra may be missing)."""
    if not args.html:
        return None
    from ._html_report import require_report_extra
    from ._report_data import RunDigest

    require_report_extra()
    return RunDigest()


def _through(page: Any, records: Any) -> Any:
    return records if page is None else page.watch(records)


def _write_report_page(args: argparse.Namespace, page: Any, summary: dict[str, Any], verdict: Any) -> None:
    if page is not None:
        from ._html_report import write_report

        write_report(args.results, args.html, page, summary, verdict)


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from ._results import final_records
    from ._summary import SummaryBuilder, render_markdown, render_text

    page = _report_page(args)
    records = final_records(args.results, console.warn)
    if args.job is None:
        summary = SummaryBuilder().add_all(_through(page, records)).result(output=str(args.results))
        if not summary["total"]["rows"]:
            raise ResultsError(f"{args.results}: holds no records")
        _write_junit(args, console, lambda: final_records(args.results, console.warn), None)
        _show(console, args, summary, render_text, render_markdown)
        _write_report_page(args, page, summary, None)
        return ExitCode.OK
    from ._checks import is_judge
    from ._gate import MatrixCoverage
    from ._items import ItemGate
    from ._job import load_job
    from ._verdict import decide

    job = load_job(args.job)
    settings = _with_budget(job.run, args.budget)
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
        summary = SummaryBuilder(gate).add_all(reviewed).result(output=str(args.results))

    def junit_records() -> Iterable[dict[str, Any]]:
        if judged:
            return regraded
        return MatrixCoverage.of(job).review(final_records(args.results), regrade=True)

    coverage.raise_if_foreign(args.results)
    shortfalls = coverage.shortfalls()
    summary.update(complete=not shortfalls, missing_rows=coverage.missing, matrix_rows=len(coverage.checks))
    _write_junit(args, console, junit_records, gate)
    _show(console, args, summary, render_text, render_markdown)
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
    from ._items import ItemGate
    from ._junit import write_junit

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
) -> dict[str, Any]:
    """Re-grade with grader requests: the worst case printed first, then spent within the budget."""
    from ._regrade import regrade_file
    from ._results import final_records
    from ._run import RunOptions

    def worst_case(line: str) -> None:
        console.err.write(line + "\n")
        console.err.flush()

    def keep(record: dict[str, Any]) -> None:
        if args.junit is not None:
            regraded.append(record)
        if page is not None:
            page.add(record)

    async def body(base_url: str | None, sim_key: str | None, _management: str | None) -> dict[str, Any]:
        options = RunOptions(api_key=_api_key(job, sim_key), base_url=base_url)
        return await regrade_file(
            job,
            options,
            records,
            lambda: final_records(args.results, console.warn),
            gate,
            worst_case,
            keep,
        )

    summary: dict[str, Any] = asyncio.run(_with_simulator(args, body))
    summary["output"] = str(args.results)
    return summary


def cmd_history(args: argparse.Namespace, console: Console) -> int:
    from ._history import build_history, render_history_markdown, render_history_text

    history = build_history(args.paths, console.warn)
    if args.html:
        from ._html_report import write_history

        write_history(history, args.html)
    _show(console, args, history, render_history_text, render_history_markdown)
    return ExitCode.OK


def cmd_diff(args: argparse.Namespace, console: Console) -> int:
    from ._compare import diff_runs, render_diff_markdown, render_diff_text

    diff = diff_runs(args.before, args.after, console.warn, args.alpha, args.strict)
    _show(console, args, diff, render_diff_text, render_diff_markdown)
    if args.fail_on_regression and diff["regression"]:
        return ExitCode.REGRESSION
    return ExitCode.OK


def cmd_merge(args: argparse.Namespace, console: Console) -> int:
    from ._compare import merge_shards
    from ._job import load_job
    from ._outputs import summary_path, write_json_atomically
    from ._summary import render_markdown, render_text

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
    _step_summary(console, render_markdown(summary))
    if summary["shortfalls"] and not args.allow_partial:
        for shortfall in summary["shortfalls"]:
            console.error(shortfall)
        console.error("the merge is not complete (--allow-partial accepts that)")
        return ExitCode.INCOMPLETE
    return ExitCode.OK


def cmd_cache(args: argparse.Namespace, console: Console) -> int:
    from ._cache_commands import CacheCommand, run_cache_command

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
    from ._batch_cli import batches_command

    async def body(base_url: str | None, sim_key: str | None, _management: str | None) -> list[str]:
        return await batches_command(args.action, args.results, args.key, args.batch_id, args.job, base_url, sim_key)

    for line in asyncio.run(_with_simulator(args, body)):
        console.out.write(line + "\n")
    return ExitCode.OK


HANDLERS = {
    "run": cmd_run,
    "validate": cmd_validate,
    "plan": cmd_plan,
    "simulate": cmd_simulate,
    "report": cmd_report,
    "diff": cmd_diff,
    "history": cmd_history,
    "merge": cmd_merge,
    "cache": cmd_cache,
    "batches": cmd_batches,
}


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    console = Console(out or sys.stdout, err or sys.stderr)
    argv = list(sys.argv[1:] if argv is None else argv)
    # `batchrun JOB.yaml` is short for `batchrun run JOB.yaml`, options first or not
    # (`batchrun --cache JOB.yaml` then reads JOB.yaml as the folder, and says so).
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version"):
        argv.insert(0, "run")
    args = build_parser().parse_args(argv)
    if args.command != "run":
        release_early()
    if args.command is None:
        build_parser().print_help(cast(TextIO, console.err))
        return ExitCode.USAGE
    try:
        return HANDLERS[args.command](args, console)
    except JobError as exc:
        for problem in exc.problems:
            console.error(str(problem))
        return ExitCode.USAGE
    except LockHeld as exc:
        console.error(str(exc))
        return ExitCode.LOCKED
    except OutputFailed as exc:  # after requests may have been sent: not a "nothing spent" 2
        console.error(str(exc))
        return ExitCode.IO
    except AuthFailed as exc:
        console.error(f"the API key was refused: {exc.message}")
        return ExitCode.AUTH
    except (ConfigError, ResultsError, CacheError) as exc:
        console.error(str(exc))
        return ExitCode.USAGE
    except RequestFailed as exc:
        console.error(f"the endpoint failed before the run started: {exc.kind}: {exc.message}")
        return ExitCode.ERRORS
    except OSError as exc:  # before the run: an output folder that cannot be made, a read-only folder
        console.error(describe_os_error(exc))
        return ExitCode.USAGE
    except BatchrunError as exc:
        console.error(str(exc))
        return ExitCode.USAGE
    except KeyboardInterrupt:
        console.error("interrupted")
        return ExitCode.INTERRUPTED


def entry() -> NoReturn:
    code = main()
    try:
        sys.stdout.flush()
    except OSError:
        # stdout's reader went away (`batchrun report X | head`): exit quietly, as Unix
        # tools do, instead of Python's "Exception ignored ... BrokenPipeError" at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(code)
