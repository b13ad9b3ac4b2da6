"""The shape of a summary (summary.json, `report --json`, what a run returns), as types.

A summary is plain JSON; these TypedDicts let strict mypy check every key that is written
or read. `Summary` is what `SummaryBuilder.result` makes from records; a run, a merge and
`report --job` add the figures of `RunFigures`.
"""

from __future__ import annotations

from typing import Any, NotRequired, Required, TypedDict


class GroupFigures(TypedDict):
    """One group of rows: the whole file, a model, or a prompt."""

    rows: int
    ok: int
    error: int
    skipped: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    judge_cost_usd: float
    judge_cost_unknown_rows: int  # rows some of whose grading cost is unknown ("+?")
    cost_unknown_rows: int
    cost_held_usd: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    attempts_per_row: float | None
    checked: int
    passed: int
    pass_rate: float | None
    pass_rate_ci95: list[float] | None
    undecided: int
    regradable: int  # answered rows with a judge check a stop left ungraded: a resume grades them
    mean_score: float | None
    answered_by: dict[str, int]


def rate_bounds(group: GroupFigures | dict[str, Any], unanswered: int = 0) -> tuple[float, float]:
    """A group's pass rate had its undecided rows (and `unanswered` ones, checks and no answer)
    all failed, and had they all passed (its graded or undecided rows being some)."""
    passed, checked = int(group["passed"]), int(group["checked"])
    unknown = int(group["undecided"]) + unanswered
    return passed / (checked + unknown), (passed + unknown) / (checked + unknown)


def exact_pass_rate(group: GroupFigures | dict[str, Any]) -> float | None:
    """A group's pass rate from its counts; its `pass_rate` is rounded to 4 places, and decided
    by it, 79.996% of 20,001 rows met an 80% threshold and 8 of 200,000 rows lost read "100.0%
    -> 100.0%" (break54 F5). The rounded figure only where the counts are not there."""
    passed, checked = group.get("passed"), group.get("checked")
    if isinstance(passed, int) and isinstance(checked, int) and checked > 0:
        return passed / checked
    rate = group.get("pass_rate")
    return float(rate) if isinstance(rate, (int, float)) else None


class CacheFigures(TypedDict):
    hits: int
    misses: int
    saved_usd: float  # of hits whose cost was known
    saved_estimated_usd: NotRequired[float]  # at most this more: hits whose cost was only estimated


class FailingExample(TypedDict):
    id: str
    model: str
    prompt_id: str
    why: str


class RunFigures(TypedDict, total=False):
    """What a run (or a merge, or a re-grading) knows beyond its records."""

    output: str
    stop: str | None
    stop_message: str
    estimate_usd: float | None
    estimate_unknown: list[str]  # models whose requests' worst case is not known: not in estimate_usd
    budget_usd: float | None
    # What binds `budget_usd`: the job's budget, or "credits" (the key's limit, the account's balance); None: no limit.
    budget_from: str | None
    spent_usd: float
    spent_before_usd: float
    # The key's usage beyond reported costs that key windows counted as spent, over this and
    # earlier runs of the file: in no record's `spent`, so a resume reads it here (break14c N12).
    key_gap_usd: float
    # When the file's runs began (the first of them) and when this one ended: merge adds up the
    # key gaps of files whose runs did not overlap (verify14j N11).
    started_at: str
    finished_at: str
    runs: list[dict[str, Any]]  # each run of the file: started_at, finished_at, its own key_gap_usd
    # `runs` lists every run of the file: none killed, merged or of a summary lost (_key_bounds).
    runs_complete: bool
    kept_from_earlier: int
    isolated_key: dict[str, Any] | None
    shard: str | None
    matrix_rows: int | None  # None in a merge that could not tell (no --job, shard summaries missing)
    missing_rows: int
    endpoint: str
    routing_warning: str | None
    account_balance_usd: float | None
    reconciliation: dict[str, Any]
    batches: dict[str, Any]
    complete: bool
    # How far a resumed file's earlier runs had spent past the budget (_summary_floor.EarlierSpend):
    # present only then; exit 5, even with nothing left to send.
    spent_past_budget_usd: float
    results_bytes: int | None  # the results file's size when its summary was written (_run_output.resume_states)
    results_digest: str | None  # a digest of its bytes then (_summary_floor.file_digest)
    results_edited: str
    exit_code: int  # the run's, as the CLI gave it (with its --pass-threshold, --no-thresholds)
    exit_reasons: list[str]  # the file was edited before a resume went on (_summary_beside.edit_mark)
    key_readings: list[dict[str, float]]  # a killed run's readings of the key, carried on unmeasured (_killed_run)
    merged_from: list[str]
    duplicate_rows: int
    shortfalls: list[str]


class Summary(RunFigures, total=False):
    job: Required[str | None]
    job_fingerprint: Required[str | None]
    total: Required[GroupFigures]
    models: Required[dict[str, GroupFigures]]
    prompts: Required[dict[str, GroupFigures]]
    worst_prompts: Required[list[str]]
    failing_examples: Required[list[FailingExample]]
    skip_reasons: Required[dict[str, int]]
    error_kinds: Required[dict[str, int]]
    items: Required[dict[str, Any] | None]
    cache: CacheFigures
    # Rows with a charge counted as a reply said, far above its worst case, unconfirmed: a resume
    # looks them up (_earlier_costs), reading the file for them only when some are counted here.
    cost_doubted_rows: int
    # Rows the summary could not count (a bug: break20 C2 was a number key): the gates cannot
    # be trusted, so the run is never 0.
    uncounted_rows: int
    uncounted_error: str
    # Lines of a results file a reader set aside or could not read (`report`): a row may be gone.
    unread_lines: int
    # `report --job`: rows whose re-graded verdict is not the stored one, by change ("pass -> fail").
    regraded_changes: dict[str, int]
    # `report --job` that re-graded judge checks: its costs are the answers as recorded and the
    # grading bought now, its budget and spend the re-grading's (break68 F2).
    judging_regraded: bool
