"""The command line's arguments: every command, its options and their help."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from itertools import pairwise
from typing import Any, NoReturn

from .. import __version__, _argtypes
from .._scrub import environment_scrubber, hide_keys
from .._stats import DEFAULT_ALPHA
from .._verdict import ExitCode
from ._epilog import EPILOG

COMMANDS = ("validate", "plan", "simulate", "report", "diff", "merge", "cache", "run", "batches", "history")


class _Parser(argparse.ArgumentParser):
    run_error: str | None = None  # the last usage error of `run`: main puts it in the step summary
    _mixing = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in (None, "store"):  # an option of one value is given once (_argtypes.Once)
            self.register("action", name, _argtypes.Once)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """A command's options may come between its files (`validate a.yaml -q b.yaml`, `merge
        OUT --job J SHARD...`: break48 F2, "unrecognized arguments: b.yaml"). argparse's
        intermixed parse does it, but not for a parser of subcommands (the top one, `cache`)."""
        if self._mixing or self._subparsers is not None or args is None:
            return super().parse_known_args(args, namespace)
        args = list(args)
        self._words = args
        if "--" in args:
            # After "--" every word is a file (`validate -- -j.yaml`), which Python 3.11's intermixed
            # parse reads as options (verify49 N1): there, one that begins with "-" is given as ./-name.
            cut = args.index("--")
            args = args[:cut] + [f"./{word}" if word.startswith("-") else word for word in args[cut + 1 :]]
        self._mixing = True  # the intermixed parse calls this again, for each of its two passes
        try:
            return super().parse_known_intermixed_args(args, namespace)
        finally:
            self._mixing = False

    def error(self, message: str) -> NoReturn:
        if message.startswith("the following arguments are required"):
            # `batchrun --versoin` was "the following arguments are required: job" (break57 F7):
            # argparse checks for the job before it says which options it does not know; and
            # `--sim job.yaml`, read as --simulate, made the job its K=V (out-143 F11).
            words = getattr(self, "_words", [])
            options = [w for w in words if w.startswith("-") and w != "-" and not w[1:2].isdigit()]  # not "-1"
            unknown = [w for w in options if w.split("=")[0] not in self._option_string_actions]
            if unknown and "--" not in words:
                message = f"unrecognized arguments: {' '.join(unknown)}"
            elif taken := [v for o, v in pairwise(words) if o == "--sim" and v.endswith((".yaml", ".yml"))]:
                message += f" ({taken[0]} was taken as --sim's K=V: --sim sets the simulator, --simulate picks it)"
        # A key typed as a value (verify20 V6), or 16 characters of one in a file's name (out-176).
        said = environment_scrubber().text(hide_keys(message))
        if self.prog.endswith(" run"):
            _Parser.run_error = said
        self.exit(ExitCode.USAGE, f"batchrun: error: {said}\n")


def run_usage_error() -> str | None:
    """The usage error the last parse of a `run` command line ended with (None: none), once."""
    error, _Parser.run_error = _Parser.run_error, None
    return error


def _add_sim_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sim",
        action="append",
        default=None,  # not []: the parser is built once per process, and a shared list would carry over
        metavar="KEY=VALUE",
        help="with --simulate (or for `simulate`): a simulator setting, repeatable: latency_ms=50, fault.503=0.1, "
        "fault.reset=0.05, rate_limit_rps=100, free_daily_cap=5, key_limit=0.01, cost_noise=0.1, seed=7 ...",
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
    run.add_argument("job", type=_argtypes.user_path)
    run.add_argument(
        "--output",
        "-o",
        type=_argtypes.output_file,
        help="results file, a name ending in .jsonl, or a pattern with {name} and {timestamp} as run.output "
        "(default outputs/<job>/<UTC time>.jsonl)",
    )
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
        type=_argtypes.grace,
        metavar="SECONDS",
        help=f"how long in-flight requests may finish after a stop, 0..{_argtypes.MAX_GRACE_S:g}",
    )
    run.add_argument(
        "--timeout",
        type=_argtypes.timeout,
        metavar="SECONDS",
        help=f"per-attempt timeout, at most {_argtypes.MAX_TIMEOUT_S:g}",
    )
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
    thresholds = run.add_mutually_exclusive_group()
    _add_threshold_pins(run, thresholds)
    thresholds.add_argument(
        "--no-thresholds",
        action="store_true",
        help="gate no pass rate, max_error_rate or per_item (a shard's rows are too few for them: "
        "`report --job` on the merged run gates them); stops, missing rows, errors before the run, and no row "
        "answered at all still count",
    )
    run.add_argument(
        "--isolated-key",
        action="store_true",
        help="run on a fresh key whose limit is the budget (needs a management key)",
    )
    run.add_argument(
        "--stream",
        action=_argtypes.OnceSwitch,
        default=None,
        help="streaming mode: a timeout, stop or deadline cancels generation and billing (run.stream)",
    )
    run.add_argument("--quiet", "-q", action="store_true", help="print nothing unless something fails")
    _add_cache_options(run)
    _add_mode_option(run)

    validate = commands.add_parser("validate", help="check job files without any network")
    validate.add_argument("jobs", type=_argtypes.user_path, nargs="+", metavar="JOB.yaml", help="job files to check")
    validate.add_argument("--quiet", "-q", action="store_true", help="print nothing unless a file has problems")

    plan = commands.add_parser("plan", help="matrix size, and worst-case cost against budget and credit")
    plan.add_argument("job", type=_argtypes.user_path)
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
    report.add_argument("results", type=_argtypes.results_file)
    _add_format_options(report, "the summary")
    report.add_argument(
        "--job",
        type=_argtypes.user_path,
        metavar="JOB.yaml",
        help="the CI gate: compare the rows with this job's whole matrix (missing or skipped rows: "
        f"exit {ExitCode.INCOMPLETE.value}; rows of another job: exit 2), re-grade the stored answers with its "
        "current checks, and gate on its thresholds (exit 1, 3 or 5); judge checks send grader requests "
        "(a key or --simulate) within --budget, after printing their worst case",
    )
    _add_partial_option(report)
    report.add_argument(
        "--html", type=_argtypes.user_path, metavar="OUT.html", help="also write a self-contained HTML page with charts"
    )
    report.add_argument(
        "--junit", type=_argtypes.user_path, metavar="PATH", help="also write JUnit XML: one test case per row or item"
    )
    _add_endpoint_options(report)
    report.add_argument(
        "--deadline",
        type=_argtypes.positive_float,
        metavar="SECONDS",
        help="with --job: a deadline for its re-grading, as a run's (overrides run.deadline_s)",
    )
    _add_threshold_pins(report, report, " (with --job)")
    report.add_argument(
        "--regrade-all",
        action="store_true",
        help="with --job: ask the graders again for every judge check, even one graded under the same checks",
    )

    history = commands.add_parser("history", help="trends across the runs of a job, and what changed")
    history.add_argument(
        "paths",
        type=_argtypes.run_or_folder,
        nargs="*",
        metavar="DIR | RUN.jsonl",
        help="the job's output folder, or results files (default: the one job under outputs/)",
    )
    history.add_argument(
        "--html", type=_argtypes.user_path, metavar="OUT.html", help="also write a self-contained HTML page"
    )
    history.add_argument(
        "--job",
        type=_argtypes.user_path,
        metavar="JOB.yaml",
        help="the runs of this job (by its name: after a rename, the new one's); else the job of most runs there",
    )
    # One format or the other, as report's and diff's (break35 F1: both were taken, JSON printed
    # and the Markdown appended to the step summary).
    _add_format_options(history, "the runs and what changed")

    diff = commands.add_parser("diff", help="what changed between two runs of a job")
    diff.add_argument("before", type=_argtypes.results_file)
    diff.add_argument("after", type=_argtypes.results_file)
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
        default=DEFAULT_ALPHA,
        metavar="LEVEL",
        help=f"significance level of the test (default {DEFAULT_ALPHA:g})",
    )
    diff.add_argument(
        "--strict",
        action="store_true",
        help="with --fail-on-regression, any row from pass to fail or to no verdict, or gone, fails",
    )

    batches = commands.add_parser("batches", help="list, cancel, adopt or release the batches of a batch-mode run")
    batches.add_argument(
        "action",
        choices=("list", "cancel", "adopt", "release"),
        help="list (no network); cancel the open batches (or KEY's); adopt a batch in doubt by its id (read "
        "first: refused when it cannot be KEY's); release one in doubt (its rows are submitted again)",
    )
    batches.add_argument(
        "results", type=_argtypes.results_file, help="the batch-mode run's results file (its X.batches.json beside)"
    )
    batches.add_argument("key", nargs="?", help="adopt/release: the batch key (b1, b2...) from `batches list`")
    batches.add_argument("batch_id", nargs="?", help="adopt: OpenRouter's batch id")
    batches.add_argument(
        "--job",
        type=_argtypes.user_path,
        metavar="JOB.yaml",
        help="cancel, adopt: the job (its endpoint and the key's variable)",
    )
    _add_endpoint_options(batches)

    merge = commands.add_parser("merge", help="combine shard result files of one job")
    merge.add_argument(
        "files", type=_argtypes.merged_file, nargs="+", help="OUT.jsonl SHARD... (or SHARD... with -o OUT)"
    )
    merge.add_argument(
        "--output", "-o", type=_argtypes.merged_file, help="the merged results file, a name ending in .jsonl"
    )
    merge.add_argument(
        "--job",
        type=_argtypes.user_path,
        metavar="JOB.yaml",
        help="check the merged rows against this job's whole matrix (else the shards' summaries are used)",
    )
    _add_partial_option(merge)
    # A pipeline step in cron (break40 F5: its table mailed every night).
    merge.add_argument("--quiet", "-q", action="store_true", help="print nothing unless the merge fails")

    cache = commands.add_parser("cache", help="the response cache: explain, stats, prune, clear")
    actions = cache.add_subparsers(dest="cache_command", parser_class=_Parser, required=True)
    explain = actions.add_parser("explain", help="hit or miss for each row of a job, and why")
    explain.add_argument("job", type=_argtypes.user_path, help="the job file (its run.cache settings apply)")
    chosen = explain.add_mutually_exclusive_group()
    chosen.add_argument("--row", metavar="ID", help="one row (its id, or the start of it)")
    chosen.add_argument("--prompt", metavar="ID", help="the rows of one prompt")
    chosen.add_argument("--model", metavar="ID", help="the rows of one model")
    explain.add_argument("--base-url", help="the endpoint the run would use, if not the job's")
    explain.add_argument("--simulate", action="store_true", help="as runs with --simulate see the cache")
    _add_sim_options(explain)  # a simulated run's settings name its entries (break43 F8)
    stats = actions.add_parser("stats", help="entries, size, hit rate of the last runs")
    prune = actions.add_parser("prune", help="remove entries stored longer ago than DURATION")
    prune.add_argument(
        "--older-than", required=True, metavar="DURATION", help="with a unit: 90s, 15m, 12h, 30d, 2w (or 1d12h)"
    )
    clear = actions.add_parser("clear", help="remove every entry, or one model's")
    clear.add_argument("--model", metavar="ID", help="only this model's entries")
    for upkeep in (prune, clear):  # a cron line for the cache's upkeep mailed every night (out-102 F13)
        upkeep.add_argument("--quiet", "-q", action="store_true", help="print nothing unless it fails")
    # Only `explain` reads a job: the others cannot know a job's run.cache.dir (issue 16).
    explain.add_argument(
        "--dir", type=_argtypes.user_path, help="cache folder (default: the job's run.cache.dir, else the user's)"
    )
    for action in (stats, prune, clear):
        action.add_argument(
            "--dir",
            type=_argtypes.user_path,
            help="cache folder (default: the user cache folder, not a job's run.cache.dir: name that one here)",
        )
    return parser


def _add_format_options(parser: argparse.ArgumentParser, what: str) -> None:
    formats = parser.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help=f"print {what} as JSON")
    formats.add_argument("--markdown", action="store_true", help=f"print {what} as Markdown")


def _add_threshold_pins(parser: argparse.ArgumentParser, group: Any, scope: str = "") -> None:
    """The job's thresholds, pinned where the job file is not trusted (README "Running a job
    from a pull request"): its `pass_threshold` overall and `max_error_rate`."""
    group.add_argument(
        "--pass-threshold",
        type=_argtypes.rate,
        metavar="RATE",
        help=f"minimum pass rate of the checks (0..1; overrides run.pass_threshold's overall){scope}",
    )
    # Not in the group of --no-thresholds' exclusions with --pass-threshold: both may be pinned.
    parser.add_argument(
        "--max-error-rate",
        type=_argtypes.rate,
        metavar="RATE",
        help=f"share of rows in error (or not graded) tolerated (0..1; overrides run.max_error_rate){scope}",
    )


def _add_partial_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help=f"accept rows missing from the job's matrix, or skipped, instead of exit {ExitCode.INCOMPLETE.value}",
    )
