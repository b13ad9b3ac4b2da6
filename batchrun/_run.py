"""Run a job end to end: output and lock, resume scan, pre-flight, the runner, the summary.

This is the library entry point behind `batchrun JOB.yaml`. It never prints: notices go
to the `notice` callback and everything else comes back in the RunReport.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from ._account import read_balance, read_endpoints, reconcile_run
from ._batch_api import BatchClient
from ._batch_run import BATCH_TOKEN_FACTOR, BatchExecutor, held_open
from ._batch_state import BatchState
from ._cache_session import CacheSession, CacheSettings
from ._checks import is_judge
from ._client import ModelInfo, OpenRouterClient
from ._clock import Clock, SystemClock, utc
from ._costs import CostModel, Worst, unknown_price_refusal
from ._exceptions import ConfigError, OutputFailed, ResultsError
from ._isolated import IsolatedKey
from ._items import ItemGate
from ._job import Job, RunSettings
from ._judging import judge_requests_for
from ._late_costs import append_late_costs
from ._ledger import CreditLedger
from ._lock import OutputLock
from ._matrix import Request, Shard, count_requests, plan_requests
from ._models import Lookup, Resolution, resolve_models
from ._outputs import default_output, fresh_output, latest_incomplete, summary_path, write_json_atomically
from ._plan import job_routing_warning
from ._reconcile import key_usage
from ._results import (
    ResultsWriter,
    RowState,
    ScanResult,
    final_records,
    repair_torn_tail,
    results_job,
    scan_states,
)
from ._retry import RetryPolicy, retry_call
from ._runner import STOP_IO, RunConfig, Runner, RunOutcome
from ._summary import SummaryBuilder

Notice = Callable[[str], None]


@dataclass
class RunOptions:
    api_key: str | None
    base_url: str | None = None  # overrides the job's endpoint
    output: Path | None = None
    resume: bool = False
    retry_errors: bool = False
    shard: Shard | None = None
    management_key: str | None = None
    transport: httpx.AsyncBaseTransport | None = None
    clock: Clock = field(default_factory=SystemClock)
    test_broken_ledger: bool = False  # test seam: reserve nothing (shows the server-side limit holds)
    # The endpoint as cache keys name it, when not the base URL: --simulate starts its
    # simulator on a new port each run, and names it "simulator" so its runs share entries.
    cache_endpoint: str | None = None
    test_kill_after_submit: int | None = None  # test seam: SIGKILL after the Nth batch is accepted


@dataclass
class RunControl:
    """Lets the CLI's signal handlers reach a run that may not have started its runner yet."""

    runner: Runner | None = None
    pending: str | None = None

    def stop(self, reason: str) -> None:
        if self.runner is not None:
            self.runner.request_stop(reason)
        else:
            self.pending = reason


@dataclass
class RunReport:
    output: Path
    summary: dict[str, Any]
    outcome: RunOutcome  # rows kept by a resume and completeness are in `summary`


def resolve_output(job: Job, options: RunOptions, now: float, notice: Notice) -> Path:
    if options.output is not None:
        return options.output
    if options.resume:
        found = latest_incomplete(job.name, job.run.output)
        if found is None:
            raise ConfigError(f"--resume: no incomplete run of {job.name!r} was found; give --output")
        notice(f"resuming {found}, the most recent incomplete run of {job.name}")
        return found
    return fresh_output(job.name, job.run.output, now)


def check_output(output: Path, job: Job, resume: bool) -> bool:
    """May this run write `output`? True when it already holds this job's results (resume them).

    Only a file whose first record is this job's is ever appended to or repaired; any
    other existing file is refused and left byte for byte as it was.
    """
    try:
        info = output.stat()
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{output}: not a regular file: results go to a file of their own; give another --output")
    if info.st_size == 0:
        return False
    try:
        owner = results_job(output)
    except ResultsError as exc:
        raise ConfigError(f"{exc}: it was left untouched; give another --output") from None
    if owner is not None and owner != job.name:
        raise ConfigError(
            f"{output} holds results of job {owner!r}, not {job.name!r}: it was left untouched; give another --output"
        )
    if not resume:
        # Appending a second run would mix two runs in one file; continuing is explicit.
        raise ConfigError(
            f"{output} already holds results of {job.name}: add --resume to continue that run, or give another --output"
        )
    return True


def keep_row(state: RowState | None, request: Request, retry_errors: bool) -> bool:
    """Resume rule: keep ok rows and errors (retryable ones only without --retry-errors)
    whose request is unchanged; skipped rows never ran, so they run again."""
    if state is None or state.fingerprint != request.fingerprint:
        return False
    if state.status == "ok":
        return True
    if state.status == "error":
        return not (retry_errors and state.retryable)
    return False


@dataclass
class Estimate:
    rows: dict[str, int] = field(default_factory=dict)
    worst_usd: dict[str, float] = field(default_factory=dict)
    batch_worst_usd: dict[str, float] = field(default_factory=dict)  # at Batch API prices
    unknown_price: set[str] = field(default_factory=set)
    unknown_why: dict[str, str] = field(default_factory=dict)  # model -> why its worst case is unknown
    no_max_tokens: set[str] = field(default_factory=set)
    kept: int = 0
    judge_requests: dict[str, int] = field(default_factory=dict)  # by grader model
    judge_worst_usd: dict[str, float] = field(default_factory=dict)
    basis: dict[str, str] = field(default_factory=dict)  # model -> price basis of its first request
    cached: dict[str, int] = field(default_factory=dict)  # rows the cache will answer (in `rows` too)
    saved_usd: float = 0.0  # what those rows cost when they were first answered

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def total_worst(self) -> float:
        """Answers and their grading: judge requests are spent from the same budget."""
        return sum(self.worst_usd.values()) + sum(self.judge_worst_usd.values())

    def add_judging(self, requests: list[Request], costs: CostModel) -> None:
        for grader in requests:
            self.judge_requests[grader.model] = self.judge_requests.get(grader.model, 0) + 1
            self.priced(grader, costs, self.judge_worst_usd)

    def priced(self, request: Request, costs: CostModel, into: dict[str, float]) -> float | None:
        """Add the request's worst case to `into` (by model), or note its price as unknown;
        the worst case, or None when unknown."""
        if request.model not in self.basis:
            self.basis[request.model] = costs.describe(request)
        worst = costs.worst(request)
        if worst.usd is None:
            self.unknown(request, worst)
            return None
        into[request.model] = into.get(request.model, 0.0) + worst.usd
        return worst.usd

    def unknown(self, request: Request, worst: Worst) -> None:
        self.unknown_price.add(request.model)
        why = worst.why if worst.model == request.model else f"fallback {worst.model}: {worst.why}"
        self.unknown_why.setdefault(request.model, why)


def estimate(
    job: Job,
    costs: CostModel,
    shard: Shard | None,
    states: ScanResult | None,
    retry_errors: bool,
    cache: CacheSession | None = None,
) -> Estimate:
    """One pass over the matrix: rows to run per model, worst-case cost of those the cache
    will not answer, rows kept by resume."""
    result = Estimate()

    def to_run() -> Iterator[Request]:
        for request in plan_requests(job, shard):
            if states is not None and keep_row(states.get(request.id), request, retry_errors):
                result.kept += 1
            else:
                yield request

    rows = cache.peek_all(to_run()) if cache is not None else ((r, None) for r in to_run())
    for request, saved in rows:
        result.rows[request.model] = result.rows.get(request.model, 0) + 1
        if any(is_judge(c) for c in request.checks):
            # Graded even when the cache answers. The answer is at most its completion cap long.
            answer_tokens = costs.completion_cap(request) or 16384
            result.add_judging(judge_requests_for(request, job.judge, answer_tokens), costs)
        if saved is not None:  # answered for free: no worst case to reserve
            result.cached[request.model] = result.cached.get(request.model, 0) + 1
            result.saved_usd += saved
            continue
        if not (request.body.get("max_completion_tokens") or request.body.get("max_tokens")):
            result.no_max_tokens.add(request.model)
        if result.priced(request, costs, result.worst_usd) is not None:
            batch = costs.worst_case(request, BATCH_TOKEN_FACTOR) or 0.0
            result.batch_worst_usd[request.model] = result.batch_worst_usd.get(request.model, 0.0) + batch
    if cache is not None:
        cache.planned()
    return result


def wanted_models(job: Job) -> set[str]:
    """Every model id the job may send: its models and their fallback `models` lists."""
    wanted = {m.id for m in job.models}
    for spec in job.models:
        wanted.update(spec.params.get("models", []))
    wanted.update(job.params.get("models", []))
    wanted.update(job.judge.models)
    wanted.update(named_graders(job))
    for prompt in job.prompts:
        wanted.update(prompt.params.get("models", []))
    return wanted


def named_graders(job: Job) -> set[str]:
    """Graders named by checks: the prompts' and, when any row carries checks, the rows'
    (one pass over a dataset, like counting it), so a grader no endpoint offers is refused
    before anything is sent, not found out row by row."""
    named: set[str] = set()

    def add(checks: Any) -> None:
        for check in checks if isinstance(checks, list) else []:
            grader = check.get("grader") if isinstance(check, dict) else None
            ids = [grader] if isinstance(grader, str) else grader if isinstance(grader, list) else []
            named.update(g for g in ids if isinstance(g, str) and "{{" not in g)

    for prompt in job.prompts:
        add(prompt.checks)
        for row in prompt.rows:
            add(row.get("checks"))
    return named


async def check_models(job: Job, models: dict[str, ModelInfo], lookup: Lookup | None) -> Resolution:
    """Resolve every id the job names (_models.py); refuse only what the API says does not exist."""
    resolution = await resolve_models(wanted_models(job), models, lookup)
    if resolution.missing:
        reasons = "; ".join(f"{model}: {why}" for model, why in sorted(resolution.missing.items()))
        raise ConfigError(f"{job.path}: model(s) not offered by the endpoint: {reasons}")
    return resolution


def open_cache(job: Job, options: RunOptions, notice: Notice) -> CacheSession | None:
    """The run's cache session when `run.cache` (or --cache) asks for one; never raises."""
    settings = CacheSettings.from_run(job.run.cache)
    if settings is None:
        return None
    endpoint = options.cache_endpoint or options.base_url or job.endpoint.base_url
    return CacheSession.open(
        settings,
        job_name=job.name,
        base_url=endpoint,
        clock=options.clock,
        warn=notice,
        max_reply_bytes=job.run.max_response_bytes,
        batch=job.run.mode == "batch",
    )


def make_client(job: Job, options: RunOptions, settings: RunSettings) -> OpenRouterClient:
    return OpenRouterClient(
        options.base_url or job.endpoint.base_url,
        options.api_key,
        app_url=job.endpoint.app_url,
        app_title=job.endpoint.app_title,
        timeout_s=settings.timeout_s,
        connect_timeout_s=settings.connect_timeout_s,
        max_response_bytes=settings.max_response_bytes,
        max_connections=settings.concurrency,
        transport=options.transport,
        clock=options.clock,
    )


async def run_job(
    job: Job,
    options: RunOptions,
    control: RunControl | None = None,
    notice: Notice = lambda _: None,
    on_start: Callable[[int], None] | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> RunReport:
    """Run (or resume) one job. Raises ConfigError, LockHeld, AuthFailed before any row is sent."""
    settings = job.run
    control = control or RunControl()
    clock = options.clock
    locks = []
    if options.output is None:
        # Default outputs are new files each time, so the output lock alone would let two
        # overlapping cron ticks of one job both run (and both spend): lock the job too.
        folder = default_output(job.name, job.run.output, 0).parent
        locks.append(OutputLock(folder / ".batchrun", f"job {job.name} is being run"))
    try:
        for lock in locks:
            lock.acquire()
        output = resolve_output(job, options, clock.time(), notice)
        locks.append(OutputLock(output))
        locks[-1].acquire()
        return await _locked_run(job, options, settings, control, notice, on_start, on_record, output)
    finally:
        for lock in reversed(locks):
            lock.release()


def _batch_setup(job: Job, options: RunOptions, settings: RunSettings, output: Path) -> BatchState | None:
    """In batch mode, this output's record of batches; None in sync mode."""
    if settings.mode != "batch":
        return None
    if settings.isolated_key:
        raise ConfigError(
            "batch mode cannot use an isolated key: the key is deleted when the run ends, its batches are not"
        )
    return BatchState.load(output, job.name, job.fingerprint)


def _batch_executor(
    runner: Runner,
    client: OpenRouterClient,
    state: BatchState,
    job: Job,
    options: RunOptions,
    states: ScanResult | None,
    started: float,
    notice: Notice,
) -> BatchExecutor:
    settings = job.run
    retry_rows = set()
    if states is not None and options.retry_errors:
        retry_rows = {i for i in states.ids("error") if (s := states.get(i)) is not None and s.retryable}
    return BatchExecutor(
        runner,
        BatchClient(client),
        state,
        settings,
        deadline_s=None
        if settings.deadline_s is None
        else max(0.0, settings.deadline_s - (options.clock.monotonic() - started)),
        keep=lambda r: states is not None and keep_row(states.get(r.id), r, options.retry_errors),
        retry_rows=retry_rows,
        notice=notice,
        kill_after_submit=options.test_kill_after_submit,
    )


@dataclass
class _Preflight:
    models: dict[str, ModelInfo] | None
    costs: CostModel
    plan: Estimate
    budget: float | None  # what the ledger may spend: job budget, key credit, less the margin
    limit_from_key: bool  # the key's credit, not the job's budget, is the binding limit
    key_usage: float | None = None  # the key's usage before the first request (reconciliation)
    balance: float | None = None  # the account's balance (/credits), with a management key
    # Why /key answered but its usage could not be read (then nothing is reconciled).
    key_unread: str | None = None


def missing_account_api(base_url: str, models: object | None, key: object | None) -> str | None:
    """The notice for an endpoint without /models and/or /key, naming which one is missing."""
    missing = [name for name, value in (("/models", models), ("/key", key)) if value is None]
    if not missing:
        return None
    return f"{base_url} has no {' or '.join(missing)}: credit-limit features are off for this run"


async def read_account(
    client: OpenRouterClient,
    job: Job,
    options: RunOptions,
    time_left: Callable[[], float | None],
    resolved: list[Resolution] | None = None,
) -> tuple[dict[str, ModelInfo] | None, dict[str, Any] | None]:
    """/models and /key, and the job's model ids resolved against them, every call retried on
    transient failures like a chat request, within the deadline. Raises ConfigError for an id
    the API says does not exist."""
    policy, sleep = retry_policy(job.run), options.clock.sleep
    models = await retry_call(client.models, policy, sleep, time_left)
    key = await retry_call(client.key_info, policy, sleep, time_left)
    if models is not None:

        async def lookup(model_id: str) -> tuple[str, ModelInfo | None]:
            return await retry_call(lambda: client.model(model_id), policy, sleep, time_left)

        resolution = await check_models(job, models, lookup)
        models = resolution.models
        if resolved is not None:
            resolved.append(resolution)
    return models, key


async def _preflight(
    client: OpenRouterClient,
    job: Job,
    options: RunOptions,
    states: ScanResult | None,
    job_budget: float | None,
    notice: Notice,
    time_left: Callable[[], float | None],
    cache: CacheSession | None,
) -> _Preflight:
    """Prices and credit before anything is spent; the effective budget; the plan's worst case."""
    settings = job.run
    models, key = await read_account(client, job, options, time_left)
    missing = missing_account_api(client.base_url, models, key)
    if missing:
        notice(missing)
    endpoints = await read_endpoints(
        client, models, wanted_models(job), retry_policy(settings), options.clock.sleep, time_left
    )
    for model, failed in sorted(endpoints.items()):
        if isinstance(failed, str):
            notice(f"warning: the endpoints of {model} could not be read ({failed}): its worst case is unknown")
    costs = CostModel(models, settings.cost_margin, endpoints)
    plan = estimate(job, costs, options.shard, states, options.retry_errors, cache)
    budget = job_budget
    limit_from_key = False
    balance = await read_balance(client, options.management_key, retry_policy(settings), options.clock.sleep, time_left)
    # The key's own limit and the account's balance bound the run like a budget does.
    for remaining in (key.get("limit_remaining") if key else None, balance):
        if isinstance(remaining, (int, float)) and (budget is None or remaining < budget):
            budget, limit_from_key = float(remaining), True
    if budget is not None:
        budget = max(0.0, budget - settings.budget_margin_usd)
    refusal = unknown_price_refusal(plan.unknown_why, budget is not None, settings.allow_unknown_prices)
    if refusal is not None:
        raise ConfigError(refusal)
    if plan.unknown_why and budget is not None:
        reasons = "; ".join(f"{m} ({why})" for m, why in sorted(plan.unknown_why.items()))
        notice(f"warning: no known worst case for {reasons}: reserved at $0 (run.allow_unknown_prices)")
    usage = key_usage(key)
    unread = "its usage is missing or not a number" if key is not None and usage is None else None
    return _Preflight(models, costs, plan, budget, limit_from_key, usage, balance, unread)


def retry_policy(settings: RunSettings) -> RetryPolicy:
    return RetryPolicy(settings.max_attempts, settings.max_elapsed_s, settings.max_wait_s)


def _run_config(job: Job, settings: RunSettings, elapsed_s: float) -> RunConfig:
    return RunConfig(
        concurrency=settings.concurrency,
        policy=retry_policy(settings),
        # The deadline counts what pre-flight and the resume scan took already.
        deadline_s=None if settings.deadline_s is None else max(0.0, settings.deadline_s - elapsed_s),
        deadline_given_s=settings.deadline_s,
        grace_s=settings.grace_s,
        key_refresh_requests=settings.key_refresh_requests,
        key_refresh_s=settings.key_refresh_s,
        budget_margin_usd=settings.budget_margin_usd,
        model_caps={m.id: m.concurrency for m in job.models if m.concurrency},
        stream=settings.stream,
        timeout_s=settings.timeout_s,
    )


async def _locked_run(
    job: Job,
    options: RunOptions,
    settings: RunSettings,
    control: RunControl,
    notice: Notice,
    on_start: Callable[[int], None] | None,
    on_record: Callable[[dict[str, Any]], None] | None,
    output: Path,
) -> RunReport:
    batch = _batch_setup(job, options, settings, output)
    if batch is not None and held_open(batch) and not options.resume:
        # Batch mode, same output: batches of an earlier tick are collected, not submitted again.
        notice(f"{output}: collecting the batches an earlier run submitted")
        options = replace(options, resume=True)
    resuming = check_output(output, job, options.resume)
    started = options.clock.monotonic()  # the deadline counts pre-flight and the resume scan too

    def time_left() -> float | None:
        deadline = settings.deadline_s
        return None if deadline is None else deadline - (options.clock.monotonic() - started)

    states = None
    if resuming:
        mended = repair_torn_tail(output, job.name)
        if mended:
            notice(f"{output}: {mended}")
        states = scan_states(output, lambda message: notice(f"warning: {message}"))
    prior_spend = states.spent_usd if states is not None else 0.0
    client = make_client(job, options, settings)
    isolated = IsolatedKey.for_run(job, options, settings, client) if settings.isolated_key else None
    cache = open_cache(job, options, notice)
    try:
        job_budget = settings.budget_usd
        if job_budget is not None:
            # The budget is for the logical run: what earlier attempts of this file spent counts.
            job_budget = max(0.0, job_budget - prior_spend)
        if isolated is not None:
            await isolated.create(job_budget)
        pre = await _preflight(client, job, options, states, job_budget, notice, time_left, cache)
        budget = pre.budget
        ledger = CreditLedger(None if options.test_broken_ledger else budget)
        plan, models = pre.plan, pre.models
        summary = SummaryBuilder(ItemGate.from_threshold(settings.pass_threshold))

        def record_done(record: dict[str, Any]) -> None:
            summary.add(record)
            if on_record is not None:
                on_record(record)

        writer = ResultsWriter(output)
        runner = Runner(
            client,
            writer,
            _run_config(job, settings, options.clock.monotonic() - started),
            options.clock,
            job_name=job.name,
            job_fingerprint=job.fingerprint,
            costs=pre.costs if models else None,
            ledger=ledger,
            limit_from_key=pre.limit_from_key,
            key_usage_start=pre.key_usage,
            on_record=record_done,
            judge=job.judge,
            cache=cache,
        )
        control.runner = runner
        if control.pending:
            runner.request_stop(control.pending)
        if on_start is not None:
            on_start(plan.total_rows)
        requests: Iterator[Request] = plan_requests(job, options.shard)
        executor = None
        try:
            try:
                if batch is not None:
                    executor = _batch_executor(runner, client, batch, job, options, states, started, notice)
                    outcome = await executor.run(requests)
                else:
                    if states is not None:
                        requests = (r for r in requests if not keep_row(states.get(r.id), r, options.retry_errors))
                    outcome = await runner.run(requests)
            finally:
                writer.close()
        except OutputFailed as failure:
            # The results file cannot be written: a stop of its own (exit code IO).
            outcome = RunOutcome(STOP_IO, str(failure), runner.ledger.committed)

        def cleanup_left() -> float | None:
            # The end-of-run /key read may use the grace after the deadline, as rows do.
            left = time_left()
            return None if left is None else left + settings.grace_s

        # The run's last lookups of costs still unknown; rows they resolve are written again.
        await runner.charges.retry_lookups()
        late_rows, late_failed = 0, None
        if outcome.stop != STOP_IO:
            late_rows, late_failed = append_late_costs(output, runner.late, utc(options.clock.time()))
        if late_failed:
            notice(f"warning: {late_failed}")
        reconciliation = await reconcile_run(
            client,
            runner.ledger,
            runner.charges,
            pre.key_usage,
            pre.key_unread,
            retry_policy(settings),
            options.clock.sleep,
            cleanup_left,
        )
        if reconciliation["warning"]:
            notice("warning: " + reconciliation["warning"])
        if isolated is not None:
            await isolated.finish(notice)
        if states or late_rows:
            # The file's rows for the totals (a row written again counts once, with its cost
            # learnt late); the cache's figures stay this run's (issue 16).
            summary = (
                SummaryBuilder(summary.gate)
                .add_all(final_records(output, lambda message: notice(f"warning: {message}")))
                .cache_figures_of(summary)
            )
        data = summary.result(
            output=str(output),
            stop=outcome.stop,
            stop_message=outcome.stop_message,
            estimate_usd=round(plan.total_worst, 8) if models else None,
            budget_usd=None if budget is None else round(budget, 8),
            spent_usd=round(outcome.spent_usd, 12),  # worst cases held as spent carry many digits
            spent_before_usd=round(prior_spend, 8),
            kept_from_earlier=plan.kept,
            isolated_key=isolated.audit() if isolated is not None else None,
            shard=None if options.shard is None else f"{options.shard.index}/{options.shard.count}",
            matrix_rows=sum(count_requests(job).values()),
            endpoint=client.base_url,
            routing_warning=job_routing_warning(job),
            account_balance_usd=None if pre.balance is None else round(pre.balance, 8),
            reconciliation=reconciliation,
        )
        if executor is not None:
            data["batches"] = executor.outcome.as_json(str(executor.state.path))
        data["complete"] = outcome.stop is None and data["total"]["skipped"] == 0
        try:
            write_json_atomically(summary_path(output), data)
        except OSError as exc:
            message = f"{summary_path(output)}: writing the summary failed: {exc.strerror or exc}"
            if data["stop"] is None:
                data.update(stop=STOP_IO, stop_message=message, complete=False)
            else:
                notice(f"warning: {message}")
        return RunReport(output, data, outcome)
    finally:
        if isolated is not None and isolated.removed is None:
            await isolated.finish(notice)  # a failure before the end: still remove the key
        await client.aclose()
        if cache is not None:
            cache.close()
