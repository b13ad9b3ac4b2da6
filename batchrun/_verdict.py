"""What a finished run means, as one exit code (README: "Exit codes")."""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._settings import RunSettings
from ._status import StopReason
from ._summary_types import Summary, exact_pass_rate, rate_bounds

if TYPE_CHECKING:  # not at run time: it loads httpx, which `validate` never needs
    from ._options import RunOptions


class ExitCode(enum.IntEnum):
    OK = 0  # every row ok, quality at or above threshold
    ERRORS = 1  # rows ended in error (or could not be graded) beyond run.max_error_rate, a daily cap, uncounted rows
    USAGE = 2  # bad job file, bad option, bad configuration; nothing was spent
    QUALITY = 3  # pass rate below run.pass_threshold
    REGRESSION = 4  # `diff --fail-on-regression` found rows that went from pass to fail
    BUDGET = 5  # stopped: the budget or the key's credit ran out (resumable)
    DEADLINE = 6  # stopped: run.deadline_s reached (resumable)
    INTERRUPTED = 7  # stopped: SIGTERM or SIGINT (resumable)
    LOCKED = 8  # another run is writing the same output
    AUTH = 9  # the API key was refused
    SUBMITTED = 10  # batch mode: batches are still running at OpenRouter; collect later with --resume
    IO = 11  # results or the summary could not be written during or after the run (resumable)
    INCOMPLETE = 12  # report --job / merge: rows of the job's matrix are missing or skipped


@dataclass
class Unverdicted:
    """Rows of the job's matrix with checks and no answer in the file (missing, answering an
    earlier request, or skipped) that `report --job --allow-partial` accepted, by group ("" the
    whole, "model M", "prompt P"), and items none of whose repeats has a record. Had they been
    answered they might have passed or failed: they can decide a threshold (out-113 F3: the
    failing rows left out, 17 of 40 passed the gate at 100%, 42.5% in truth, exit 0)."""

    rows: Counter[str] = field(default_factory=Counter)
    no_record: Counter[str] = field(default_factory=Counter)  # of `rows`, those not in the file (not skipped)
    absent_items: int = 0


EXIT_CODE_TABLE = "\n".join(f"  {code.value}  {code.name.lower()}" for code in ExitCode)

_STOP_CODES: dict[str, ExitCode] = {
    StopReason.INTERRUPTED: ExitCode.INTERRUPTED,
    StopReason.AUTH: ExitCode.AUTH,
    StopReason.CREDITS: ExitCode.BUDGET,
    StopReason.BUDGET: ExitCode.BUDGET,
    StopReason.KEY_UNREADABLE: ExitCode.BUDGET,
    StopReason.DEADLINE: ExitCode.DEADLINE,
    StopReason.SUBMITTED: ExitCode.SUBMITTED,
    StopReason.IO: ExitCode.IO,
}
# Stops the README's order (7, 9, 5, 11, 6, 10) ranks below a spend past the limit (5).
_BELOW_BUDGET = (ExitCode.IO, ExitCode.DEADLINE, ExitCode.SUBMITTED)


def _thresholds(
    settings: RunSettings, override: float | None
) -> tuple[float | None, dict[str, float], dict[str, float]]:
    raw = settings.pass_threshold
    overall = raw if isinstance(raw, (int, float)) else (raw or {}).get("overall")
    models = raw.get("models", {}) if isinstance(raw, dict) else {}
    prompts = raw.get("prompts", {}) if isinstance(raw, dict) else {}
    return (override if override is not None else overall), models, prompts


def quality_failures(summary: Summary, settings: RunSettings, override: float | None = None) -> list[str]:
    """Each pass-rate threshold the run fell below, as a sentence."""
    overall, models, prompts = _thresholds(settings, override)
    failures = []
    rate = exact_pass_rate(summary["total"])
    if overall is not None and rate is not None and rate < overall:
        failures.append(f"pass rate {_shown(rate, overall)} is below the threshold {_limit(overall)}")
    items = summary.get("items")
    if items and items.get("gate") and items["failed"]:
        gate = items["gate"]
        also = f" ({items['undecided']} more undecided)" if items.get("undecided") else ""
        failures.append(f"{items['failed']} item(s) passed fewer than {gate['min']} of {gate['of']} repeats{also}")
    for kind, groups, limits in (("model", summary["models"], models), ("prompt", summary["prompts"], prompts)):
        for name, limit in limits.items():
            group = groups.get(name)
            rate = exact_pass_rate(group) if group is not None else None
            if rate is not None and rate < limit:
                failures.append(f"{kind} {name}: pass rate {_shown(rate, limit)} is below {_limit(limit)}")
    return failures


def _limit(limit: float) -> str:
    """A threshold as a percentage with the places it has (91.43%, not 91.4%: out-113 F5 read
    "91.429% is below the threshold 91.4%"), at least one."""
    for places in range(1, 7):
        text = f"{limit:.{places}%}"
        if abs(float(text[:-1]) / 100 - limit) < 1e-12:
            return text
    return f"{limit:.6%}"


def _shown(rate: float, limit: float) -> str:
    """The rate to as many places as its threshold is shown with, more where these would read
    as the limit itself (79.996%, not 80.0%, below 80.0%)."""
    places = len(_limit(limit).rstrip("%").partition(".")[2])
    for more in range(places, 7):
        if f"{rate:.{more}%}" != f"{limit:.{more}%}":
            return f"{rate:.{more}%}"
    return f"{rate:.6%}"


def unchecked_thresholds(
    summary: Summary,
    settings: RunSettings,
    override: float | None = None,
    whole: bool = False,
    unverdicted: Unverdicted | None = None,
) -> list[str]:
    """Each threshold whose rows were answered or tried yet none graded (a grader outage, every
    row in error), or all skipped: it cannot be met or missed, and must not pass in silence
    (break23 F13: a small judged prompt lost every verdict within the run's error tolerance, and
    its own threshold, failed with the grader up, was skipped: exit 0). `whole`: the summary is
    of the job's whole matrix (`report --job`), so a threshold none of whose rows is in it is
    one too (break40 F2: under --allow-partial, a prompt whose every row was lost passed); a
    shard's run has only its own models and prompts."""
    overall, models, prompts = _thresholds(settings, override)
    unanswered, no_record = (
        (unverdicted.rows, unverdicted.no_record) if unverdicted else (Counter[str](), Counter[str]())
    )
    subjects = [("pass rate", "", summary["total"], overall)] if overall is not None else []
    unchecked = []
    for kind, groups, limits in (("model", summary["models"], models), ("prompt", summary["prompts"], prompts)):
        subjects += [
            (f"{kind} {name}", f"{kind} {name}", groups[name], limit)
            for name, limit in limits.items()
            if name in groups
        ]
        unchecked += [
            # Rows answering an earlier version of their request are not its rows (break68 F6).
            f"{kind} {name}: its threshold could not be checked: no row in the file answers its requests "
            "as the job has them now (missing, or answering an earlier version)"
            for name in limits
            if whole and name not in groups
        ]
    for label, key, group, limit in subjects:
        checked, undecided, missing = group["checked"], group["undecided"], unanswered[key]
        if checked == 0 and undecided + missing + group["error"] + group["skipped"] == 0 and group["ok"]:
            # Answered, and no check to grade them by (batch mode leaves max_latency_ms out): a
            # threshold over them passed in silence, where the same job in sync mode failed (out-126 F1).
            unchecked.append(
                f"{label}: its threshold could not be checked: none of its {group['ok']} row(s) has a check"
            )
        elif checked == 0 and undecided + missing + group["error"] + group["skipped"] > 0:
            unchecked.append(
                f"{label}: its threshold could not be checked: none of its rows was graded "
                f"({undecided} undecided, {group['error']} in error"
                + (f", {group['skipped']} skipped" if group["skipped"] else "")
                + (f", {no_record[key]} with no record (--allow-partial))" if no_record[key] else ")")
            )
        elif (undecided or missing) and rate_bounds(group, missing)[1] >= limit > rate_bounds(group, missing)[0]:
            # Met had the undecided rows passed, missed had they failed: the verdicts never got
            # decide it (verify23 N2: 1 verdict of 3 met a 99% threshold that the 2 ungraded rows,
            # failing with the grader up, missed). And the other way: a row that failed a check is
            # failed beside its undecided judge, so a grader down left only failures graded, exit
            # 3 "pass rate 0.0%" (verify63 F3).
            deciding = " and ".join(
                ([f"{undecided} undecided"] if undecided else [])
                + ([f"{missing} unanswered (accepted by --allow-partial)"] if missing else [])
            )
            unchecked.append(
                f"{label}: its threshold could not be checked: {deciding} row(s) decide it "
                f"({group['passed']} of {checked} graded passed)"
            )
    items = summary.get("items")
    absent = unverdicted.absent_items if unverdicted is not None else 0
    gated = items["passed"] + items["failed"] + items["undecided"] if items else 0
    if items and items.get("gate") and not gated and not absent and items.get("unchecked"):
        # Items without checks are not gated (break33 M1); with none but those, the gate checked
        # nothing and passed in silence (out-128 F1: a batch run's max_latency_ms-only prompt).
        unchecked.append(
            f"the per-item gate could not be checked: none of its {items['unchecked']} item(s) has a check"
        )
    elif items and items.get("gate") and (items["undecided"] or absent) and not items["failed"]:
        # `per_item` is a threshold too: an item its graded repeats neither meet nor miss is
        # decided by the ungraded ones, and a gate no item met passed (break27 M2: exit 0).
        # With an item failed outright the gate is missed whatever they hold: quality, exit 3,
        # not "could not be checked" pointing the on-call at the graders (break61 F5).
        gate = items["gate"]
        unchecked.append(
            f"{items['undecided'] + absent} item(s) could not be checked against the per-item gate (at least "
            f"{gate['min']} of {gate['of']} repeats): their ungraded or missing repeats decide it"
        )
    return unchecked


def ungraded_reason(rows: int) -> str:
    return f"{rows} answered row(s) not graded: a stop cut their grader off; --resume grades them"


def error_rate(summary: Summary) -> float:
    total = summary["total"]
    sent = total["ok"] + total["error"]
    return total["error"] / sent if sent else 0.0


def exit_fields(summary: Summary, settings: RunSettings, options: RunOptions) -> tuple[int, list[str]]:
    """The run's exit code and why, as its summary keeps them: a page or report made later of the
    file, without --job, gates no threshold, and showed "exit 0 (ok)" for a night that exited 3
    (out-152 F2)."""
    code, reasons = decide(summary, settings, options.pass_threshold, run=True, thresholds=options.thresholds)
    return int(code), reasons


def decide(
    summary: Summary,
    settings: RunSettings,
    override: float | None = None,
    *,
    run: bool = False,
    thresholds: bool = True,
    unverdicted: Unverdicted | None = None,
) -> tuple[ExitCode, list[str]]:
    """The exit code of a run, and why; a stop outranks errors, and errors outrank quality.
    `run`: the summary is a run's own, whose rows skipped without a stop make it incomplete
    (`report --job` decides that from the matrix itself, with `--allow-partial`). Without
    `thresholds` (a shard's run: too few rows for them), no rate is gated: the merged run's
    `report --job` gates them (break42 F3: shards exited 3 on a night whose gate passed).
    `unverdicted`: the rows `report --job --allow-partial` accepted without an answer."""
    stop = summary.get("stop")
    budget, spent = summary.get("budget_usd"), summary.get("spent_usd")
    over = budget is not None and spent is not None and spent > budget + 1e-6  # the summary rounds to 8 places
    # Or a resume's earlier runs spent past it (costs looked up since, a lower --budget: out-117 F4).
    past = summary.get("spent_past_budget_usd")
    before = summary.get("spent_before_usd") or 0.0
    earlier = (
        [f"earlier runs of this file spent ${before:.6f}, over the budget of ${before - past:.6f} by ${past:.6f}"]
        if past is not None
        else []
    )
    if stop in _STOP_CODES and not ((over or past is not None) and _STOP_CODES[stop] in _BELOW_BUDGET):
        # A budget stop says why there was none left: the earlier runs' spend (out-124 F2, a
        # crash recovery's lookups above their worst cases took it past the budget).
        return _STOP_CODES[stop], [f"stopped: {stop}", *(earlier if stop == StopReason.BUDGET else [])]
    if budget is not None and spent is not None and over:
        # Charges above their worst cases (a lookup, the key's usage) can end a run past its
        # limit without a stop, or with one that ranks below 5 (a deadline: 6, said to be
        # resumable: break14h H9); the exit code says so (break-14b M7), never 0.
        return ExitCode.BUDGET, [f"spent ${spent:.6f}, over the run's limit of ${budget:.6f} by ${spent - budget:.6f}"]
    if earlier:
        return ExitCode.BUDGET, earlier
    # Rows never answered although nothing stopped the run (a cancelled batch, a model stopped,
    # a rate limit past the wait cap): the run did not do its work, so never 0 (break-14b M9).
    # A model's daily cap keeps its own code (1), below.
    unanswered = summary["total"]["skipped"] - summary["skip_reasons"].get("daily_cap", 0)
    # Answers whose grader was stopped the same way (a server's wait over the cap) are as
    # unfinished: not "a grader failed", exit 1 (verify47 N2); a resume asks the grader.
    ungraded = summary["total"].get("regradable", 0)
    if run and (unanswered > 0 or ungraded > 0):
        why = ", ".join(f"{k} {v}" for k, v in sorted(summary["skip_reasons"].items()) if k != "daily_cap")
        reasons = [f"{unanswered} row(s) skipped, never answered ({why}); --resume runs them"] if unanswered else []
        if ungraded:
            reasons.append(ungraded_reason(ungraded))
        return ExitCode.INCOMPLETE, reasons
    if run and isinstance(edited := summary.get("results_edited"), str):
        # A resume of a file edited since its summary: its verdicts are not the runs' own, and a
        # CI step trusting the run's exit passed them (out-163 F3); `report` says 12 of it too.
        return ExitCode.INCOMPLETE, [f"{edited[:200]}: its rows are not its runs'"]
    reasons = []
    if summary.get("uncounted_rows"):
        reasons.append(
            f"{summary.get('uncounted_rows')} row(s) could not be counted in the summary, so no gate can be trusted"
            f" (internal error: {summary.get('uncounted_error')})"
        )
    rate, tolerance = error_rate(summary), settings.max_error_rate
    if summary["total"]["error"] and not summary["total"]["ok"]:
        # No rate is needed to see it, and no tolerance forgives it: a shard none of whose rows
        # was answered (verify45 N2), or a night of errors under `max_error_rate: 1.0` (out-113
        # F1: 105 of 105 rows errored, exit 0) did no work at all.
        reasons.append(f"every row ended in error ({summary['total']['error']}): nothing was answered")
    elif thresholds and rate > tolerance:
        errors = summary["total"]["error"]
        reasons.append(f"{errors} row(s) ended in error ({_shown(rate, tolerance)}, tolerance {_limit(tolerance)})")
    # A grader that failed is not the model's failure (not in the pass rate), but a gate
    # with no verdicts must not pass in silence: ungraded rows share the error tolerance.
    undecided, answered = summary["total"]["undecided"], summary["total"]["ok"]
    if thresholds and undecided and undecided / answered > tolerance:
        reasons.append(
            f"{undecided} row(s) could not be graded: a grader failed, or a figure a check needs was not "
            f"reported ({_shown(undecided / answered, tolerance)} of answered rows, tolerance {_limit(tolerance)})"
        )
    capped = summary["skip_reasons"].get("daily_cap", 0)
    if capped:
        reasons.append(f"{capped} row(s) skipped: a model reached its daily cap")
    if thresholds:
        reasons += unchecked_thresholds(summary, settings, override, whole=not run, unverdicted=unverdicted)
    if reasons:
        return ExitCode.ERRORS, reasons
    quality = quality_failures(summary, settings, override) if thresholds else []
    if quality:
        return ExitCode.QUALITY, quality
    return ExitCode.OK, []
