"""`batchrun plan`: the matrix, and with an endpoint the worst-case cost against budget and credit."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._account import endpoints_outage, read_balance, read_endpoints
from ._account_reply import unknown_reset
from ._batch_latency import latency_only_threshold
from ._costs import CostModel, unknown_price_refusal
from ._estimate import Estimate, unaffordable
from ._exceptions import ConfigError, ResultsError
from ._files import read_regular_text
from ._formats import one_line
from ._job import Job
from ._job_runs import folder_runs
from ._limit_parts import LimitParts
from ._matrix import count_requests, matrix_requests, run_size_problem
from ._models import PRICE_CAVEATS, Resolution, variant_of
from ._options import RunOptions
from ._output_paths import job_folder, summary_path
from ._preflight import estimate, job_routing_warning, make_client, open_cache, read_account, wanted_models
from ._pricing import usd
from ._reconcile import KeyStart
from ._results import final_records
from ._retry import retry_policy
from ._summary_beside import file_key_gap, read_run_summary


def _cache_hits(job: Job, endpoint: str | None, warn: Callable[[str], None]) -> tuple[dict[str, int], float] | None:
    """Rows per model the cache would answer, and what they first cost; None without a cache."""
    cache = open_cache(job, RunOptions(api_key=None, base_url=endpoint), warn)
    if cache is None:
        return None
    hits: dict[str, int] = {}
    saved = 0.0
    try:
        for request, stored in cache.peek_all(matrix_requests(job)):
            if stored is not None:
                hits[request.model] = hits.get(request.model, 0) + 1
                saved += stored.cost or 0.0
    finally:
        cache.close()
    return hits, saved


def render_plan_offline(job: Job, endpoint: str | None = None, warn: Callable[[str], None] = lambda _: None) -> str:
    counts = count_requests(job)
    # Every model runs every prompt row, so the total is models x (rows of all prompts) x repeat.
    rows = sum(counts[(job.models[0].id, p.id)] for p in job.prompts) // job.repeat
    lines = [
        f"job {job.name}: {sum(counts.values())} request(s) = "
        f"{len(job.models)} model(s) x {rows} row(s) of {len(job.prompts)} prompt(s) x repeat {job.repeat}"
    ]
    width = max(len(m.id) for m in job.models)
    for model in job.models:
        per_prompt = ", ".join(f"{p.id} {counts[(model.id, p.id)]}" for p in job.prompts)
        lines.append(
            f"  {model.id.ljust(width)}  {sum(counts[(model.id, p.id)] for p in job.prompts):>7}  ({per_prompt})"
        )
    cached = _cache_hits(job, endpoint, warn)
    if cached is not None:
        lines.append(
            f"cache: {sum(cached[0].values())} of {sum(counts.values())} request(s) would be answered from it "
            f"(${cached[1]:.6f} saved)"
        )
    lines.append("no key and no --simulate: costs not priced (set the key, or add --simulate)")
    routing = job_routing_warning(job)
    if routing:
        lines.append(f"warning: {routing}")
    return "\n".join(lines)


FREE_DAILY_CAP = {True: 50, False: 1000}  # :free requests a day, is_free_tier or not (limits.mdx)


@dataclass
class PricedPlan:
    job: Job
    rows: dict[str, int]
    worst: dict[str, float]
    unknown_price: set[str]
    no_max_tokens: set[str]
    previous_avg: dict[str, float] = field(default_factory=dict)
    previous_file: str | None = None
    key: dict[str, Any] | None = None
    cached: dict[str, int] | None = None  # rows the cache answers, per model; None without a cache
    saved_usd: float = 0.0
    saved_estimated_usd: float = 0.0
    batch_worst: dict[str, float] = field(default_factory=dict)  # at Batch API prices
    warnings: list[str] = field(default_factory=list)  # model resolution and routing
    basis: dict[str, str] = field(default_factory=dict)  # model -> the prices its worst case used
    balance: float | None = None  # the account's balance (/credits), with a management key
    judge_requests: dict[str, int] = field(default_factory=dict)  # grader requests, by grader
    judge_worst: dict[str, float] = field(default_factory=dict)
    unknown_why: dict[str, str] = field(default_factory=dict)  # model -> why its worst case is unknown
    previous_unknown: set[str] = field(default_factory=set)  # models with earlier rows of unknown cost
    cheapest: dict[str, float] = field(default_factory=dict)  # model -> its cheapest request's worst case
    first: dict[str, float] = field(default_factory=dict)  # model -> its first request's, in the run's order
    judge_cheapest: dict[str, float] = field(default_factory=dict)  # grader -> its cheapest request's
    sync_rows: tuple[dict[str, int], dict[str, float]] = field(default_factory=lambda: ({}, {}))  # in sync, $

    def fit_warnings(self, batches: bool = True) -> list[str]:
        """Models no request (batch) of which fits what the run may spend, each of its budget, the
        key's credit and the balance less the margin, as the run compares (out-103 F6,
        _preflight.fit_warnings): it would send none of them, and stop, exit 5. `batches`: with
        the batches too dear (only maybe: which rows go by batch, the run decides as it sorts them)."""
        budget, margin = self.job.run.budget_usd, self.job.run.budget_margin_usd
        remaining = self.key.get("limit_remaining") if self.key else None
        parts = LimitParts(
            job=None if budget is None else budget - margin,
            key=remaining - margin if isinstance(remaining, (int, float)) and not isinstance(remaining, bool) else None,
            balance=None if self.balance is None else self.balance - margin,
            margin=margin,
        )
        if parts.limit is None:
            return []
        found = Estimate(self.rows, self.worst, no_max_tokens=self.no_max_tokens, cheapest_usd=self.cheapest)
        found.first_usd = self.first
        found.judge_cheapest_usd, found.cached = self.judge_cheapest, self.cached or {}
        found.sync_rows, found.sync_usd = self.sync_rows
        return unaffordable(found, parts.limit, self.job.run, parts.from_key, parts.job, batches)

    def key_unfollowed(self) -> str | None:
        """Why the run would send nothing and stop, exit 5: under a limit, a /key whose usage cannot
        be read at the start (its usage null, a BYOK usage its limit counts that is no amount).
        `plan` said the worst case fit, exit 0 (out-159 F4)."""
        unread = KeyStart.of(self.key).unread if self.key else None
        if unread is None or not _bounded(self.job, self.key, self.balance):
            return None
        return f"the key's usage cannot be followed: its usage could not be read at the start of the run ({unread})"

    def refusal(self) -> str | None:
        """What the run would refuse with, decided as the run decides it (_preflight.preflight)."""
        if (never := latency_only_threshold(self.job, self.job.run)) is not None:
            return never
        bounded = _bounded(self.job, self.key, self.balance)
        return unknown_price_refusal(self.unknown_why, bounded, self.job.run.allow_unknown_prices)


def _bounded(job: Job, key: dict[str, Any] | None, balance: float | None) -> bool:
    """Whether the run would be under a limit: a budget, the key's own limit, or the balance."""
    remaining = key.get("limit_remaining") if key else None
    return job.run.budget_usd is not None or isinstance(remaining, (int, float)) or balance is not None


def resolution_warnings(resolution: Resolution) -> list[str]:
    lines = []
    for model, how in sorted(resolution.how.items()):
        lines.append(one_line(f"note: {model} is not listed by /models: priced as {how}"))  # a server's id (break53 F3)
        variant = variant_of(model)
        if variant is not None and variant[1] in PRICE_CAVEATS:
            lines.append(f"warning: {model} {PRICE_CAVEATS[variant[1]]}")
    return lines


def _ran_against(path: Path) -> str | None:
    """The endpoint a run used, from its summary (None when unknown)."""
    try:
        endpoint = json.loads(read_regular_text(summary_path(path))).get("endpoint")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return endpoint if isinstance(endpoint, str) else None


def previous_average(job: Job, endpoint: str) -> tuple[str | None, dict[str, float], set[str]]:
    """Mean cost of an ok row per model, its grading included (break23 F8: the judging was left
    out, a total 15x low), from the newest results file of the same job that ran against
    `endpoint` (a simulated run's made-up prices say nothing about a real one), over the rows
    whose costs are known; and the models some of whose rows' costs are unknown (shown "+?",
    never as $0: break-14b M10)."""
    folder = job_folder(job.name, job.run.output)
    # Not a shard beside the merged file that is its run: one shard's rows, a model missing (verify52 F7).
    files = list(reversed(folder_runs(folder))) if folder.is_dir() else []
    for path in files:
        if _ran_against(path) not in (None, endpoint):
            continue
        merged = read_run_summary(path)
        if merged.get("merged_from") and merged.get("duplicate_rows"):
            continue  # its rows carry every merged run's costs: a month of nights read 6x (break52 F2)
        totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        unknown: set[str] = set()
        try:
            for record in final_records(path):
                # A cache hit cost nothing, and says nothing of what the row costs when it is sent
                # (break33 m4: "prev. avg $0" after a run answered from the cache).
                # Nor does a row whose cost folds earlier records' (a merged month's rows, read 4x
                # with the merge's summary gone: verify52 F7): one answer's cost is the figure.
                aside = record.get("cached") is True or bool(record.get("earlier_records"))
                if record.get("job_fingerprint") == job.fingerprint and record["status"] == "ok" and not aside:
                    entry = totals[record["model"]]
                    judged = record.get("judge_cost_status") is not None
                    if (
                        record.get("cost") is None
                        or record.get("cost_status") == "unknown"
                        or (judged and (record.get("judge_cost") is None or record["judge_cost_status"] == "unknown"))
                    ):
                        unknown.add(record["model"])
                        continue
                    entry[0] += float(record["cost"]) + float(record.get("judge_cost") or 0.0)
                    entry[1] += 1
        except (ResultsError, OSError, TypeError, ValueError):  # a damaged old file must not break planning
            continue
        if totals:
            if file_key_gap(path) > 0:  # charged beyond the rows' records: in no model's average (break47 F3)
                unknown |= set(totals)
            return str(path), {m: s / n for m, (s, n) in totals.items() if n}, unknown
    return None, {}, set()


async def price_plan(
    job: Job,
    base_url: str | None,
    api_key: str | None,
    previous: bool = True,
    management_key: str | None = None,
    cache_endpoint: str | None = None,
    warn: Callable[[str], None] = lambda _: None,
) -> PricedPlan:
    if (too_large := run_size_problem(job, None)) is not None:
        raise ConfigError(too_large)  # pricing walks every row (break24 F4: 11 minutes)
    options = RunOptions(api_key=api_key, base_url=base_url)
    client = make_client(job, options, job.run)
    resolved: list[Resolution] = []
    try:
        models, key = await read_account(client, job, options, lambda: job.run.deadline_s, resolved)
        if (said := unknown_reset(key)) is not None:
            warn(said)
        endpoints = await read_endpoints(
            client, models, wanted_models(job), retry_policy(job.run), options.clock.sleep, lambda: job.run.deadline_s
        )
        balance = await read_balance(
            client, management_key, retry_policy(job.run), options.clock.sleep, lambda: job.run.deadline_s
        )
    finally:
        await client.aclose()
    endpoints_outage(endpoints, _bounded(job, key, balance), job.run.allow_unknown_prices)  # as a run would
    costs = CostModel(models, job.run.cost_margin, endpoints)
    cache = open_cache(job, RunOptions(api_key=None, base_url=base_url, cache_endpoint=cache_endpoint), warn)
    try:
        result = estimate(job, costs, None, None, False, cache, typical_batch=True)
    finally:
        if cache is not None:
            cache.close()
    no_previous: tuple[str | None, dict[str, float], set[str]] = (None, {}, set())
    # A simulated run records the simulator by name: each ran on a port of its own (break68 F9).
    ran_against = cache_endpoint or client.base_url
    previous_file, averages, previous_unknown = previous_average(job, ran_against) if previous else no_previous
    return PricedPlan(
        job,
        result.rows,
        result.worst_usd,
        result.unknown_price,
        result.no_max_tokens,
        averages,
        previous_file,
        key,
        None if cache is None else result.cached,
        result.saved_usd,
        result.saved_estimated_usd,
        result.batch_worst_usd,
        [w for r in resolved for w in resolution_warnings(r)]
        + [f"warning: {w}" for w in [job_routing_warning(job)] if w],
        judge_requests=result.judge_requests,
        judge_worst=result.judge_worst_usd,
        cheapest=result.cheapest_usd,
        first=result.first_usd,
        judge_cheapest=result.judge_cheapest_usd,
        sync_rows=(result.sync_rows, result.sync_usd),
        basis=result.basis,
        balance=balance,
        unknown_why=result.unknown_why,
        previous_unknown=previous_unknown,
    )


def render_plan(plan: PricedPlan) -> str:
    job = plan.job
    cached = plan.cached or {}
    cache_column = f" {'cached':>7}" if plan.cached is not None else ""
    header = f"{'model':<44} {'rows':>7}{cache_column} {'worst case $':>14} {'batch typ. $':>14} {'prev. avg $':>12}"
    lines = [f"job {job.name}: {sum(plan.rows.values())} request(s), {job.run.mode} mode", header]
    to_send = {m: n - cached.get(m, 0) for m, n in plan.rows.items()}
    for model in [m.id for m in job.models]:
        unknown = model in plan.unknown_price
        worst = "unknown" if unknown else usd(plan.worst.get(model, 0.0))
        batch = "unknown" if unknown else usd(plan.batch_worst.get(model, 0.0))
        rows = plan.rows.get(model, 0)
        hits = f" {cached.get(model, 0):>7}" if plan.cached is not None else ""
        unsure = "+?" if model in plan.previous_unknown else ""
        previous = (
            f"{plan.previous_avg[model] * to_send.get(model, 0):.6f}{unsure}"
            if model in plan.previous_avg
            else ("?" if unsure else "-")
        )
        lines.append(f"{model:<44} {rows:>7}{hits} {worst:>14} {batch:>14} {previous:>12}")
        if model in plan.basis:
            lines.append(f"  price basis: {plan.basis[model]}")
    # Grader requests are sent one by one in either mode: the same figure in both columns.
    for model, count in sorted(plan.judge_requests.items()):
        worst = "unknown" if model in plan.unknown_price else usd(plan.judge_worst.get(model, 0.0))
        no_hits = f" {'-':>7}" if plan.cached is not None else ""  # grader requests are counted apart
        lines.append(f"{'judging: ' + model:<44} {count:>7}{no_hits} {worst:>14} {worst:>14}")
        if model in plan.basis and model not in plan.rows:
            lines.append(f"  price basis: {plan.basis[model]}")
    judging = sum(plan.judge_worst.values())
    sync_total, batch_total = sum(plan.worst.values()) + judging, sum(plan.batch_worst.values()) + judging
    # Batch mode reserves the full worst case too: the discount is typical, not promised.
    total = sync_total
    hits_total = f" {sum(cached.values()):>7}" if plan.cached is not None else ""
    # With a worst case unknown, the total is only what the known ones add up to.
    more = "+?" if plan.unknown_price else ""
    lines.append(
        f"{'TOTAL':<44} {sum(plan.rows.values()) + sum(plan.judge_requests.values()):>7}{hits_total} "
        f"{usd(sync_total) + more:>14} {usd(batch_total) + more:>14}"
        + (
            f" {sum(plan.previous_avg.get(m, 0) * n for m, n in to_send.items()):>12.6f}"
            + ("+?" if plan.previous_unknown else "")
            if plan.previous_avg
            else ""
        )
    )
    lines.append(
        "batch typ.: at the Batch API's typical 50% of per-token prices, request prices in full "
        "(batch-quickstart.mdx); both modes reserve, and the checks below use, the full worst case"
    )
    if plan.cached is not None:
        lines.append(
            f"cache: {sum(cached.values())} row(s) answered from it for free (${plan.saved_usd:.6f} saved"
            + (f", up to ${plan.saved_estimated_usd:.6f} more of estimated cost" if plan.saved_estimated_usd else "")
            + "); "
            f"the other {sum(to_send.values())} would cost at most ${usd(total)}{more}"
        )
    if plan.previous_file:
        lines.append(f"previous run: {plan.previous_file} (prev. avg: its rows' cost, their grading included)")
    budget, margin = job.run.budget_usd, job.run.budget_margin_usd

    def fits(limit: float) -> str:
        """Against what the run may spend of `limit`: less budget_margin_usd, as the ledger takes
        it (break65 F1: "fits" for a budget its margin left nothing of; the run then sent nothing)."""
        usable = max(0.0, limit - margin)
        less = f" (less budget_margin_usd ${usd(margin)}: ${usd(usable)})" if margin else ""
        if plan.unknown_price:
            return f"{less} -> worst case UNKNOWN (see below)"
        return f"{less} -> worst case {'fits' if total <= usable else 'EXCEEDS it'}"

    lines.append(
        f"budget: {'none' if budget is None else f'${usd(budget)}'}" + ("" if budget is None else fits(budget))
    )
    # The worst case is one attempt a row. An attempt that may have been billed and got no
    # answer (a timeout, a stall, a cut stream) is retried and paid again: `fits` promised
    # more than it could (break33 M2: 11 of 20 rows skipped by the budget it "fitted").
    lines.append(
        f"worst case: one attempt a row; a retry of an attempt that may have been billed (a timeout, a cut "
        f"answer) needs its own, up to {job.run.max_attempts} a row, and the budget stops the run before it "
        "would spend past"
    )
    if plan.key is None:
        lines.append("key: the endpoint has no /key (credit checks off)")
    else:
        remaining = plan.key.get("limit_remaining")
        # null limit_remaining: the key has no limit of its own; the account's credits still bind.
        lines.append(
            f"key {plan.key.get('label')}: "
            + (
                "no per-key limit"
                if not isinstance(remaining, (int, float))
                else f"remaining credit ${usd(remaining)}{fits(remaining)}"
            )
        )
    if plan.balance is not None:
        lines.append(f"account balance (/credits): ${usd(plan.balance)}{fits(plan.balance)}")
    # Graders on :free models draw on the same daily cap (out-105 F4: 600 said, 1,800 needed).
    needed = sum(n for m, n in [*plan.rows.items(), *plan.judge_requests.items()] if m.endswith(":free"))
    if needed:
        # limits.mdx: every :free request counts against one account-wide daily cap, lower
        # for accounts that never bought credits. /key reports `is_free_tier`, not how many
        # free requests are left today, so the plan cannot say whether they fit.
        tier = plan.key.get("is_free_tier") if plan.key is not None else None
        lines.append(
            f"free-model requests needed: {needed}, all against the account's daily cap for :free models"
            + (" (is_free_tier: the lower cap applies)" if tier is True else "")
        )
        # limits.mdx with snippets' constants: 50 a day on a free tier (under 10 credits bought), else
        # 1,000 (out-104 F7: 1,200 needed beside "fits" and nothing else).
        cap = FREE_DAILY_CAP[tier is True]
        if needed > cap:
            lines.append(
                f"warning: {needed} :free requests are more than the {cap:,} a day "
                f"{'a free-tier account' if tier is True else 'an account'} may send: those past it are not sent "
                "today (daily_cap, exit 1), and a resume the next day goes on"
            )
    lines += plan.fit_warnings()
    for model in sorted(plan.no_max_tokens):
        lines.append(
            f"warning: {model} has requests without max_tokens: costed at the model's maximum completion "
            "tokens, which OpenRouter also reserves; set params.max_tokens"
        )
    for model in sorted(plan.unknown_price):
        why = plan.unknown_why.get(model, "no known price")
        lines.append(f"warning: {model} has no known worst case ({why}): a budget cannot bound it")
    lines.extend(plan.warnings)
    return "\n".join(lines)
