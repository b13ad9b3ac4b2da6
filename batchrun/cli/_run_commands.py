"""The commands that send requests or check a job: run, validate, plan, simulate."""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
from dataclasses import replace
from typing import Any, TextIO, cast

from .._console import Console
from .._exceptions import (
    ConfigError,
    JobError,
)
from .._fd_limit import fd_floor_problem
from .._files import refuse_printing_into
from .._formats import one_line
from .._output_paths import is_pattern
from .._scrub import hide_keys
from .._signals import RunSignals
from .._verdict import ExitCode
from ._common import (
    budget_not_taken,
    checked_key,
    key_for_job,
    refuse_unmeetable_threshold,
    settings_from_args,
    sim_config,
    simulator_endpoint,
    step_summary,
    test_seam,
    with_budget,
    with_cache,
    with_simulator,
)

SIMULATED_BATCH_POLL_S = 1.0  # `--simulate`'s polls of its batches (the job's batch_poll_s if shorter)


# -- commands -------------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace, console: Console) -> int:
    from .._job import load_job
    from .._matrix import run_size_problem

    refuse_printing_into(args.jobs)  # `validate job.yaml >> job.yaml` (out-144 F8)
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
            # A file named like a key (V7), or with a newline in its name (break53 F3).
            console.out.write(one_line(hide_keys(f"{path}: ok (job {job.name})")) + "\n")
        if (too_large := run_size_problem(job, None)) is not None:
            # Valid, and run only in shards: "ok" alone, and plan and the run refused it (out-143 F10).
            console.warn(one_line(hide_keys(f"{path}: {too_large}")))
    return ExitCode.USAGE if failed else ExitCode.OK


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from .._run_control import RunControl

    control = RunControl()
    # A second signal exits at once, without removing a per-run key: it is said, not left silent
    # for hours with its budget (verify64 F3).
    left = "warning: the per-run key, if one was made, is left to expire on its own" if args.isolated_key else None
    with RunSignals(lambda: control.stop(), console.error, left) as signals:
        jobs: list[Any] = []
        try:
            return _run(args, console, signals, control, jobs)
        finally:
            # Its datasets' copies let go now, not when a collection finds them: an in-process
            # caller of main() (the tests) saw a descriptor close in the middle of its next run.
            for job in jobs:
                job.close()


def _run(args: argparse.Namespace, console: Console, signals: RunSignals, control: Any, jobs: list[Any]) -> int:
    import asyncio  # not at the top: `validate` never loads it (~60 ms of start-up)

    from .._event_loop import run as run_loop
    from .._files import refuse_shared_output

    if args.output is not None:
        # First: a job file that is not there, a key not set, are said on stderr, which may be
        # this very file (verify41 F-2b: `-o r.jsonl 2>> r.jsonl` wrote them into the results).
        refuse_shared_output(args.output)

    from .._batch_latency import latency_only_threshold
    from .._job import load_job
    from .._matrix import Shard
    from .._options import RunOptions
    from .._orchestration import run_job
    from .._progress import Progress
    from .._routing import OTHER_MODEL, PIN_BROKEN
    from .._summary_text import render_markdown, render_text

    if args.no_thresholds and args.max_error_rate is not None:
        raise ConfigError("--max-error-rate and --no-thresholds: one or the other (the latter gates no rate)")
    if args.retry_errors and not args.resume:
        raise ConfigError("--retry-errors continues a run: use it with --resume")
    refuse_printing_into([args.job])  # `batchrun job.yaml >> job.yaml`: the job no longer loaded (out-144 F8)
    job = load_job(args.job)
    jobs.append(job)
    args.job_loaded = True  # the files it names may be read off it for the step summary (_common)
    refuse_unmeetable_threshold(job, args.pass_threshold)
    if (too_few := fd_floor_problem()) is not None:  # before the loop and the simulator (break51 F5)
        raise ConfigError(too_few)
    if args.own_process:
        # Everything so far (the modules, the job) lives as long as the process: frozen, the
        # cyclic GC's full collections during the run no longer walk it. They took ~100 ms of
        # a 3,000-row run (two of ~50 ms over ~50,000 objects; 7 ms frozen), ~3% of its CPU
        # (bench/README.md, issue 15). Only in batchrun's own process: a caller of main()
        # keeps its GC as it is.
        gc.freeze()
    settings = settings_from_args(job, args)
    if said := budget_not_taken(job.run, args.budget):
        console.warn(said)
    if args.output is not None and is_pattern(args.output):  # `-o 'r/{name}-{timestamp}.jsonl'`: as run.output
        settings, args.output = replace(settings, output=str(args.output)), None
    if args.simulate:
        # The simulator finishes a batch in about 4 s: polled every 60 s, the quick start's job
        # in batch mode took minutes (break27 m11).
        settings = replace(settings, batch_poll_s=min(settings.batch_poll_s, SIMULATED_BATCH_POLL_S))
    job = replace(job, run=settings)
    # Here, where the thresholds are applied (a library caller gates with its own verdict), and
    # not under --no-thresholds (out-148 F3).
    if not args.no_thresholds and (never := latency_only_threshold(job, settings, args.pass_threshold)):
        raise ConfigError(never)
    shard = None
    if args.shard:
        shard = Shard.parse(args.shard)
    progress = Progress(cast(TextIO, console.err), args.quiet, settings.progress_every_s)
    notices: list[str] = []

    def notice(message: str) -> None:
        notices.append(message)
        if not args.quiet or message.startswith("warning"):
            console.error(message)

    async def body(base_url: str | None, sim_key: str | None, sim_management: str | None) -> Any:
        signals.loop = asyncio.get_running_loop()
        management = sim_management or checked_key(job.endpoint.management_key_env)
        api_key = None if settings.isolated_key and sim_key is None else key_for_job(job, sim_key)
        if settings.isolated_key and api_key is None:
            api_key = checked_key(job.endpoint.api_key_env)
        options = RunOptions(
            api_key=api_key,
            base_url=base_url,
            output=args.output,
            resume=args.resume,
            retry_errors=args.retry_errors,
            shard=shard,
            management_key=management,
            pass_threshold=args.pass_threshold,
            thresholds=not args.no_thresholds,
            cache_endpoint=simulator_endpoint(args) if args.simulate else None,
            fresh_simulator=bool(args.simulate),
            test_kill_after_submit=test_seam("BATCHRUN_TEST_KILL_AFTER_SUBMIT"),
        )
        # Quiet, the progress shows nothing: no record need be read back for it (a copy of each,
        # ~1% of a request's CPU).
        on_record = None if args.quiet else progress.record
        try:
            return await run_job(job, options, control, notice, on_start=progress.start, on_record=on_record)
        finally:
            progress.close()
            signals.loop = None

    report = run_loop(with_simulator(args, body))
    signals.finished = True
    code, reasons = report.verdict(args.pass_threshold, thresholds=not args.no_thresholds)
    text = render_text(report.summary)
    if code == ExitCode.OK or (code == ExitCode.SUBMITTED and args.quiet):
        # "Submitted, collect later" is the expected end of a batch submission tick: nothing is wrong.
        if not args.quiet:
            console.out.write(text + "\n")
    else:
        if args.quiet:
            # On stderr, after the warnings the run said: not each of them twice (break34 m2).
            text = "\n".join(line for line in text.splitlines() if line not in notices)
        (console.to_err if args.quiet else console.out.write)(text + "\n")
        for reason in reasons:
            console.error(reason)
        if report.summary.get("stop") == "io":
            console.error(report.summary["stop_message"])
    routing = report.summary.get("routing_warning") or ""
    if args.quiet and code == ExitCode.OK and (news := [p for p in (PIN_BROKEN, OTHER_MODEL) if p in routing]):
        console.warn(routing[routing.index(news[0]) :])  # a pin not kept, a model not asked: news under --quiet too
    step_summary(console, render_markdown(report.summary, verdict=(int(code), reasons)), args)
    # A stdout closed from the start (`>&-`) is said only when the summary had something wrong
    # to show (a passing run's summary is no news, and cron mails whatever is said).
    if console.stdout_failure() and (code != ExitCode.OK or not console.out.closed):
        console.warn(f"stdout: the summary could not be written: {console.stdout_failure()}")
    return int(code)


def cmd_plan(args: argparse.Namespace, console: Console) -> int:
    from .._job import load_job

    refuse_printing_into([args.job])
    job = load_job(args.job)
    try:
        return _plan(args, console, job)
    finally:
        job.close()  # its datasets' copies, now (cmd_run)


def _plan(args: argparse.Namespace, console: Console, job: Any) -> int:
    from .._event_loop import run as run_loop
    from .._matrix import run_size_problem
    from .._plan import render_plan, render_plan_offline

    if args.simulate and (too_few := fd_floor_problem()) is not None:  # its simulator's loop (verify52 F6)
        raise ConfigError(too_few)
    settings = with_cache(with_budget(job.run, args.budget), args)
    if said := budget_not_taken(job.run, args.budget):
        console.warn(said)
    if args.mode:
        settings = replace(settings, mode=args.mode)
    job = replace(job, run=settings)
    key = None if args.simulate else checked_key(job.endpoint.api_key_env)
    endpoint = simulator_endpoint(args) if args.simulate else args.base_url
    if not args.simulate and not key:
        console.out.write(render_plan_offline(job, endpoint, console.error) + "\n")
        # Counted and shown, then refused as the run refuses it (break44 F8: a CI's plan step passed).
        if (too_large := run_size_problem(job, None)) is not None:
            console.error(too_large)
            return ExitCode.USAGE
        return ExitCode.OK

    async def body(base_url: str | None, sim_key: str | None, sim_management: str | None) -> str:
        from .._plan import price_plan

        # A simulated plan's "previous average" is of simulated runs only (of the same --sim
        # settings): each run records the simulator by name, not the port it had (break68 F9).
        management = sim_management or os.environ.get(job.endpoint.management_key_env)
        plan = await price_plan(
            replace(job, run=settings),
            base_url,
            sim_key or key,
            management_key=management,
            cache_endpoint=endpoint,
            warn=console.error,
        )
        refused.append(plan.refusal())
        # A request too dear for what the run may spend is never sent, in either mode. A batch too
        # dear is only a warning: which rows go by batch (not non-text ones, nor $0 ones under a
        # limit) is decided as the run sorts them (out-146 F4: exit 5, and the run ended 0).
        short.extend(plan.fit_warnings(batches=False))
        lost.append(plan.key_unfollowed())
        return render_plan(plan)

    refused: list[str | None] = []
    short: list[str] = []
    lost: list[str | None] = []
    console.out.write(run_loop(with_simulator(args, body)) + "\n")
    if refused and refused[0] is not None:
        raise ConfigError(refused[0])  # the run would refuse the same way: the same exit code
    if lost and lost[0] is not None:
        console.error(f"the run would stop, exit 5: {lost[0]}")
        return ExitCode.BUDGET
    if short:
        # The run would send none of these models' rows and stop, exit 5: a CI's plan step
        # passed it, exit 0, with the warnings on stdout (out-145 leftover).
        console.error(
            f"the run would stop, exit 5: no request of {len(short)} model(s) or grader(s) fits what it may spend"
        )
        return ExitCode.BUDGET
    return ExitCode.OK


def cmd_simulate(args: argparse.Namespace, console: Console) -> int:
    import asyncio

    from .._event_loop import run as run_loop
    from ..simulator import Simulator

    config = sim_config(args.sim)

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
        run_loop(serve())
    return ExitCode.OK
