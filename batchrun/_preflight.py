"""Pre-flight, shared by a run, `plan` and `report --job`: before anything is spent.

The job's model ids checked against /models, prices from /models and each model's
/endpoints, the key's credit (/key) and the account's balance (/credits), the matrix's
worst case against the budget, and what the cache will answer for free.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from ._account import endpoints_outage, read_balance, read_endpoints
from ._account_reply import unknown_reset
from ._batch_run import BATCH_TOKEN_FACTOR
from ._cache_session import CacheSession, CacheSettings
from ._cache_values import CachedAnswer, saving
from ._checks import is_judge
from ._classify import MODEL_WIDE_CODES
from ._client import ModelInfo, OpenRouterClient
from ._costs import CostModel, unknown_price_refusal
from ._estimate import Estimate, unaffordable
from ._exceptions import ConfigError
from ._job import Job
from ._judge import VerdictError, answer_text, parse_verdict
from ._judging import judge_requests_for
from ._limit_parts import LimitParts
from ._matrix import Request, Shard, matrix_requests, request_params
from ._models import Lookup, Resolution, resolve_models
from ._options import Notice, RunOptions
from ._parts import non_text_part
from ._reconcile import KeyStart, key_remaining
from ._results import RowState, ScanResult
from ._retry import retry_call, retry_policy
from ._routing import routing_warning, unpinned_models
from ._scrub import Scrubber, environment_keys, environment_scrubber
from ._settings import RunSettings


def keep_row(states: ScanResult | None, request: Request, retry_errors: bool) -> bool:
    """Resume rule: keep ok rows and errors (retryable ones and a model's unavailability only
    without --retry-errors)
    whose request is unchanged; skipped rows never ran, so they run again. An ok row whose
    judge checks a stop left ungraded goes to the workers, to be graded (_ungraded)."""
    return states is not None and _keeps(states.get(request.id), request, retry_errors, states)


def _keeps(state: RowState | None, request: Request, retry_errors: bool, states: ScanResult) -> bool:
    if state is None or state.fingerprint != request.fingerprint:
        return False
    if state.status == "ok":
        return request.id not in states.regrade
    if state.status == "error":
        # A model-wide availability code (model_not_found, no_endpoints...) ends the row, not for
        # ever: the model may be back. Its rows in flight then were errors while the rest were
        # skipped, and no resume ran them again (out-184 F4).
        return not (retry_errors and (state.retryable or state.reason in MODEL_WIDE_CODES))
    return False


def estimate(
    job: Job,
    costs: CostModel,
    shard: Shard | None,
    states: ScanResult | None,
    retry_errors: bool,
    cache: CacheSession | None = None,
    typical_batch: bool = False,
    secrets: Scrubber | None = None,
) -> Estimate:
    """One pass over the matrix: rows to run per model, worst-case cost of those the cache
    will not answer, rows kept by resume; with `typical_batch`, what a batch typically costs
    (for `plan` only: a run reserves the worst case in either mode)."""
    result = Estimate()
    secrets = secrets or run_secrets(job)
    if secrets.holds(orjson.dumps(dataclasses.asdict(job.judge))):
        raise ConfigError(
            f"{job.path}: the judge section (its params or its grader prompt file) holds a key of the environment: "
            "keys belong in the environment, never in a job's files"
        )

    def to_run() -> Iterator[Request]:
        for request in matrix_requests(job, shard):
            refuse_secrets(job, request, secrets)
            if states is None:
                yield request
                continue
            state = states.get(request.id)  # parsed once a row: this pass walks the whole matrix
            result.in_file += state is not None
            stored = states.regrade.get(request.id)
            if _keeps(state, request, retry_errors, states):
                result.kept += 1
            elif stored is not None and stored.get("fingerprint") == request.fingerprint:
                result.regraded += 1  # its answer is kept: only its graders are sent
                result.add_judging(judge_requests_for(request, job.judge, _tokens(stored)), costs)
            else:
                yield request

    rows = cache.peek_all(to_run()) if cache is not None else ((r, None) for r in to_run())
    for request, stored in rows:
        result.rows[request.model] = result.rows.get(request.model, 0) + 1
        if any(is_judge(c) for c in request.checks):
            _add_judging(result, request, job, costs, cache, stored)
        if stored is not None:  # answered for free: no worst case to reserve
            result.cached[request.model] = result.cached.get(request.model, 0) + 1
            known, bound = saving(stored.cost, stored.cost_status)
            result.saved_usd, result.saved_estimated_usd = result.saved_usd + known, result.saved_estimated_usd + bound
            continue
        if not (request.body.get("max_completion_tokens") or request.body.get("max_tokens")):
            result.no_max_tokens.add(request.model)
        usd = result.priced(request, costs, result.worst_usd)
        if usd is not None and job.run.mode == "batch" and non_text_part(request.body) is not None:
            result.sync_rows[request.model] = result.sync_rows.get(request.model, 0) + 1
            result.sync_usd[request.model] = result.sync_usd.get(request.model, 0.0) + usd
        if usd is not None and typical_batch:
            batch = costs.worst_case(request, BATCH_TOKEN_FACTOR) or 0.0
            result.batch_worst_usd[request.model] = result.batch_worst_usd.get(request.model, 0.0) + batch
    if cache is not None:
        cache.planned()
    return result


def _add_judging(
    result: Estimate,
    request: Request,
    job: Job,
    costs: CostModel,
    cache: CacheSession | None,
    stored: CachedAnswer | None,
) -> None:
    """A judged row's grader requests: graded even when the cache answers. Of an answer the cache
    holds, those it does not hold a verdict of (`plan --cache` counted graders the run would never
    send, and exited 5 that none fitted: out-148 F4); else at their worst, the answer at most its
    completion cap long."""
    if cache is not None and stored is not None:
        graders = judge_requests_for(request, job.judge, 0, answer_text(stored.content, stored.tool_calls))
        result.add_judging([grader for grader, found in cache.peek_all(graders) if not _verdict(found)], costs)
        return
    answer_tokens = costs.completion_cap(request) or 16384
    floors = judge_requests_for(request, job.judge, 0)
    result.add_judging(judge_requests_for(request, job.judge, answer_tokens), costs, floors)


def _verdict(stored: CachedAnswer | None) -> bool:
    """Whether a grader's stored reply is a verdict (the run asks the grader again when not)."""
    try:
        return stored is not None and bool(parse_verdict(stored.content))
    except VerdictError:
        return False


def run_secrets(job: Job, *keys: str | None) -> Scrubber:
    """The keys no request may carry: the environment's secrets, the job's own `api_key_env`
    whatever its name (`LLM_CRED` is none a scrubber knows: verify66 6), and `keys` given."""
    secrets = environment_scrubber(job.endpoint.api_key_env)
    for key in keys:
        secrets.add(key)
    return secrets


def refuse_secrets(job: Job, request: Request, secrets: Scrubber) -> None:
    """A request that would carry a key of the environment (the run's own, whatever its shape:
    `sk-proj-...` passed every key-like test) to the server, the results and the cache: refused
    before anything is sent (break63 F8). The key itself is not said, nor the row's values."""
    if secrets.holds(request.payload) or (request.checks and secrets.holds(orjson.dumps(request.checks))):
        raise ConfigError(
            f"{job.path}: a request of prompt {request.prompt_id!r} (row id {request.id}) holds a key of the "
            "environment (OPENROUTER_API_KEY or another secret variable): keys belong in the environment, "
            "never in a job's prompts, variables or data"
        )


def _tokens(record: dict[str, Any]) -> int:
    """A stored answer's length in tokens, for its graders' worst case."""
    tokens = (record.get("usage") or {}).get("completion_tokens")
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0 else 16384


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
    client = OpenRouterClient(
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
    # The environment's keys too, whatever key the client sends (the simulator's, under
    # --simulate): a cache entry holding the real key was written whole into the results (out-145 F2).
    for key in environment_keys(job.endpoint.api_key_env):
        client.scrub.add(key)
    return client


def job_routing_warning(job: Job) -> str | None:
    """The reproducibility warning for the job's models whose routing is not pinned."""
    pairs = [(m.id, request_params(job, m.params, p.params)) for m in job.models for p in job.prompts]
    return routing_warning(unpinned_models(pairs))


@dataclass
class Preflight:
    models: dict[str, ModelInfo] | None
    costs: CostModel
    estimate: Estimate
    limits: LimitParts  # what the ledger may spend: job budget, key credit, balance, less the margin
    # The key before the first request: the key window and the reconciliation measure from it.
    key_start: KeyStart = KeyStart()
    balance: float | None = None  # the account's balance (/credits), with a management key

    @property
    def budget(self) -> float | None:
        return self.limits.limit

    def fit_warnings(self, settings: RunSettings) -> list[str]:
        """Models no request of which the budget can hold (_estimate.unaffordable). Said once the
        budget is final: a resume releases what a killed or stopped run held that the key shows was
        never charged, after pre-flight, and warned "raise the budget" under --quiet, then ran (out-124 F3)."""
        budget, limits = self.limits.limit, self.limits
        return [] if budget is None else unaffordable(self.estimate, budget, settings, limits.from_key, limits.job)


def unpriced(budget: float | None) -> Preflight:
    """Start-up cut short by a stop (a signal, the deadline): nothing read, nothing will be sent."""
    return Preflight(None, CostModel({}, 0.0, {}), Estimate(), LimitParts(job=budget))


def missing_account_api(base_url: str, models: object | None, key: object | None) -> str | None:
    """The notice for an endpoint without /models and/or /key, naming which one is missing."""
    missing = [name for name, value in (("/models", models), ("/key", key)) if value is None]
    if not missing:
        return None
    hint = url_hint(base_url) if len(missing) == 2 else ""
    return f"{base_url} has no {' or '.join(missing)}{hint}: credit-limit features are off for this run"


def url_hint(base_url: str) -> str:
    """A likely slip in a base URL that answers neither /models nor /key: `--base-url
    http://127.0.0.1:8199` after `batchrun simulate`, or the chat URL itself. The advice that came
    next was to allow unknown prices, which turns the budget's bound off (break27 m6)."""
    url = base_url.rstrip("/")
    if url.endswith("/chat/completions"):
        return f" (a base URL stops before /chat/completions: {url.removesuffix('/chat/completions')})"
    if urlsplit(url).path in ("", "/"):
        return f" (a base URL ends in its API's version, as {url}/api/v1 would)"
    return ""


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


async def preflight(
    client: OpenRouterClient,
    job: Job,
    options: RunOptions,
    states: ScanResult | None,
    job_budget: float | None,
    notice: Notice,
    time_left: Callable[[], float | None],
    cache: CacheSession | None,
) -> Preflight:
    """Prices and credit before anything is spent; the effective budget; the plan's worst case."""
    settings = job.run
    models, key = await read_account(client, job, options, time_left)
    for said in (missing_account_api(client.base_url, models, key), unknown_reset(key)):
        if said:
            notice(said)
    endpoints = await read_endpoints(
        client, models, wanted_models(job), retry_policy(settings), options.clock.sleep, time_left
    )
    for model, failed in sorted(endpoints.items()):
        if isinstance(failed, str):
            notice(f"warning: the endpoints of {model} could not be read ({failed}): its worst case is unknown")
    costs = CostModel(models, settings.cost_margin, endpoints)
    secrets = run_secrets(job, options.api_key, options.management_key)
    estimated = estimate(job, costs, options.shard, states, options.retry_errors, cache, secrets=secrets)
    balance = await read_balance(client, options.management_key, retry_policy(settings), options.clock.sleep, time_left)
    # The key's own limit and the account's balance bound the run like a budget does.
    job_part, key_part, balance_part = (
        None if v is None else v - settings.budget_margin_usd for v in (job_budget, key_remaining(key), balance)
    )
    leaves_out = key is not None and key.get("include_byok_in_limit") is False
    limits = LimitParts(job_part, key_part, balance_part, leaves_out, margin=settings.budget_margin_usd)
    budget = limits.limit
    endpoints_outage(endpoints, budget is not None, settings.allow_unknown_prices)
    refusal = unknown_price_refusal(estimated.unknown_why, budget is not None, settings.allow_unknown_prices)
    if refusal is not None:
        # With no /models, the URL is the likelier slip: said here too, as --quiet hides notices.
        raise ConfigError(refusal + (url_hint(client.base_url) if models is None else ""))
    if estimated.unknown_why and budget is not None:
        reasons = "; ".join(f"{m} ({why})" for m, why in sorted(estimated.unknown_why.items()))
        notice(f"warning: no known worst case for {reasons}: reserved at $0 (run.allow_unknown_prices)")
    return Preflight(models, costs, estimated, limits, KeyStart.of(key), balance)
