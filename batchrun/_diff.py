"""Between runs: `diff`, what changed since last night (its text and Markdown: _diff_text)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._answered_by import unlike_answers
from ._batch_state import awaiting_text, pending_batches
from ._comparable import same_job, same_shard
from ._cost_text import run_cost_text, unknown_rows
from ._exceptions import ResultsError
from ._failure_text import failure_reasons
from ._items import item_key
from ._rate_tests import PAIRED_TEST, UNPAIRED_TEST, pairings_of, rate_change, rate_changes
from ._reader import Warn
from ._results import final_records
from ._stats import DEFAULT_ALPHA, compare_paired
from ._summary import SummaryBuilder
from ._summary_beside import SummaryBeside, read_run_summary
from ._summary_types import Summary


def _why(record: dict[str, Any]) -> str:
    if record.get("status") == "skipped":
        return f"skipped: {record.get('reason')}"
    if record.get("status") == "ok" and record.get("passed") is None:
        undecided = [c["error"] for c in record.get("checks") or [] if c.get("pass") is None and c.get("error")]
        return f"undecided: {undecided[0]}" if undecided else "not graded"
    reasons = failure_reasons(record)  # the report's and the history's wording
    return reasons[0] if reasons else "passed"


def _load(path: Path, warn: Warn) -> tuple[dict[str, dict[str, Any]], Summary, SummaryBeside, list[str]]:
    beside = SummaryBeside.read(path)  # once: its key gap and what answered the run
    slim: dict[str, dict[str, Any]] = {}
    builder = SummaryBuilder()
    for record in final_records(path, warn):
        builder.add(record)
        slim[record["id"]] = {
            "shard": record.get("shard"),
            "model": record["model"],
            "prompt_id": record["prompt_id"],
            "status": record["status"],
            "passed": record.get("passed"),
            "why": _why(record),
            "item": item_key(record),
            "repeat": record.get("repeat"),
            "vars": record.get("vars") if isinstance(record.get("vars"), dict) else {},
            "fingerprint": record.get("fingerprint"),
            "job_fingerprint": record.get("job_fingerprint"),
            "checks_fingerprint": record.get("checks_fingerprint"),
            "cached": record.get("cached") is True,
            "started_at": record.get("started_at"),
            "generation_id": record.get("generation_id"),
        }
    if not slim:  # as `report` says it: every model "disappeared" was a regression (break21 R18)
        raise ResultsError(f"{path}: holds no records")
    # Batches still open or in doubt beside the file: rows of unknown cost ("+?"), their worst
    # cases held, as `report` and `history` show them.
    # And what the key was charged beyond the rows' records, in no model's cost (break47 F2).
    pending = pending_batches(path, warn)
    summary = builder.add_pending_batches(pending).result(key_gap_usd=beside.key_gap())
    # Rows no verdict can be given on yet: a gate on them read "no passing row graded", exit 4 (out-175 F4).
    awaiting = awaiting_text(pending)
    return slim, summary, beside, [] if awaiting is None else [f"{path}: {awaiting}"]


def _job_edited(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """The same request under an edited job: its file, or what grades the row (a dataset row's
    checks, a json_schema file, the grader's prompt), which the file's fingerprint does not see."""
    if before["fingerprint"] != after["fingerprint"]:
        return False
    return any(
        None not in (before[key], after[key]) and before[key] != after[key]
        for key in ("job_fingerprint", "checks_fingerprint")
    )


def _replayed(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """The second run's answer is the first's own, read back from the response cache."""
    return after["cached"] and before["generation_id"] is not None and before["generation_id"] == after["generation_id"]


def _no_verdict(row: dict[str, Any]) -> bool:
    # An error too: 29 passes turned errors passed the gate when the model had one error before
    # (only "started erroring", from none, counted: break54 F4).
    return row["status"] in ("skipped", "error") or (row["status"] == "ok" and row["passed"] is None)


def _whole_run(path: Path, rows: int) -> bool:
    """Whether the run's own summary says the file answers its whole job: complete, not one
    shard, and as many rows as its matrix (a file cut by hand keeps its summary)."""
    summary = read_run_summary(path)
    return (
        summary.get("complete") is True and summary.get("shard") in (None, "1/1") and summary.get("matrix_rows") == rows
    )


def _item_flips(
    a_rows: dict[str, dict[str, Any]], b_rows: dict[str, dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """Items (model x prompt x variables) whose every repeat passed before and failed after, or
    the reverse: a flip consistent across at least two repeats on both sides, not noise."""
    tallies: dict[str, list[Any]] = {}
    for side, rows in ((0, a_rows), (1, b_rows)):
        for row in rows.values():
            if row["passed"] is None:
                continue
            entry = tallies.setdefault(row["item"], [[0, 0], [0, 0], row])
            entry[side][0] += bool(row["passed"])
            entry[side][1] += 1
    flips: dict[str, list[dict[str, Any]]] = {"pass_to_fail": [], "fail_to_pass": []}
    for (pa, na), (pb, nb), row in tallies.values():
        if na < 2 or nb < 2:
            continue
        kind = "pass_to_fail" if pa == na and pb == 0 else "fail_to_pass" if pa == 0 and pb == nb else None
        if kind:
            # Its variables too: with a dataset, every item of a prompt read alike (break43 F2).
            named = {"model": row["model"], "prompt_id": row["prompt_id"], "vars": row["vars"]}
            flips[kind].append({**named, "before": f"{pa}/{na}", "after": f"{pb}/{nb}"})
    return flips


def diff_runs(
    a_path: Path, b_path: Path, warn: Warn = lambda _: None, alpha: float = DEFAULT_ALPHA, strict: bool = False
) -> dict[str, Any]:
    """What changed. A pass-rate change counts as a regression only when it is significant at
    `alpha` (McNemar's exact test on the same rows, else Fisher's exact test), and a flip only
    when it is consistent across an item's repeats; `strict` counts any row from pass to fail."""
    a_rows, a_sum, a_beside, a_waiting = _load(a_path, warn)
    b_rows, b_sum, b_beside, b_waiting = _load(b_path, warn)
    same_job(a_sum, b_sum, a_path, b_path)
    same_shard(a_path, a_rows, b_path, b_rows)
    first = [
        min((r["started_at"] for r in rows.values() if isinstance(r["started_at"], str)), default="")
        for rows in (a_rows, b_rows)
    ]
    if first[0] and first[1] and first[0] > first[1]:
        # Swapped, a regression reads as an improvement and exits 0 (break65 F10).
        warn(f"{a_path} ran after {b_path} (its first row {first[0]}, theirs {first[1]}): diff takes BEFORE AFTER")
    # A file edited since its run is compared as it is, and said: nothing else said it (out-165 F6).
    edited = [words for words in (a_beside.changed(), b_beside.changed()) if words]
    for words in [*edited, *a_waiting, *b_waiting, *unlike_answers(a_beside, b_beside)]:
        warn(words)
    flips: dict[str, list[dict[str, Any]]] = {"pass_to_fail": [], "fail_to_pass": [], "pass_to_ungraded": []}
    for row_id, after in b_rows.items():
        before = a_rows.get(row_id)
        if before is not None and before["passed"] is True and after["passed"] is None:
            # No verdict now (undecided, errored, skipped): not a fail, but not a pass a gate
            # may take in silence (break23 F10); --strict counts it as it counts a fail.
            flips["pass_to_ungraded"].append(
                {"id": row_id, "model": after["model"], "prompt_id": after["prompt_id"], "why": after["why"]}
            )
        if before is None or before["passed"] is None or after["passed"] is None:
            continue
        if before["passed"] != after["passed"]:
            kind = "pass_to_fail" if before["passed"] else "fail_to_pass"
            flips[kind].append(
                {
                    "id": row_id,
                    "model": after["model"],
                    "prompt_id": after["prompt_id"],
                    "why": after["why"] if before["passed"] else before["why"],
                }
            )
    models = {}
    for name in sorted(a_sum["models"].keys() | b_sum["models"].keys()):
        a = a_sum["models"].get(name)
        b = b_sum["models"].get(name)
        entry: dict[str, Any] = {"status": "disappeared" if b is None else "new" if a is None else "both"}
        if a and b:
            entry["cost_change_usd"] = round(b["cost_usd"] - a["cost_usd"], 8)
            gaps = (a_sum.get("key_gap_usd") or 0.0, b_sum.get("key_gap_usd") or 0.0)
            if unknown_rows(a) or unknown_rows(b) or any(gaps):
                # Known parts only: with unknown costs on either side (a key gap: of no model) the change is not known.
                entry["cost_unknown_rows"] = {"before": unknown_rows(a), "after": unknown_rows(b)}
                entry["key_gap_usd"] = {"before": gaps[0], "after": gaps[1]}  # the runs', for programs (verify49 N2)
                entry["cost_before"], entry["cost_after"] = run_cost_text(a, gaps[0]), run_cost_text(b, gaps[1])
            if a["latency_p50_ms"] is not None and b["latency_p50_ms"] is not None:
                entry["latency_p50_change_ms"] = round(b["latency_p50_ms"] - a["latency_p50_ms"], 1)
            entry["started_erroring"] = a["error"] == 0 and b["error"] > 0
            # Graded before and not one verdict now (a grader outage, every row skipped): as
            # good as disappeared from the gate (break23 F10: diff passed, the model unnamed).
            # So is one whose passes are all gone to undecided rows, the rows it failed graded
            # beside them (a row that failed a check is failed whatever its judge: verify65 F2).
            outage = a["passed"] > 0 and b["passed"] == 0 and b["undecided"] > 0
            entry["stopped_grading"] = a["checked"] > 0 and (b["checked"] == 0 or outage)
            # Every graded row passed before, and every one fails now: a collapse, whatever its
            # size (out-136 F2: 4/4 -> 0/4 is p=0.125, exit 0, where 4 rows now erroring were exit 4).
            entry["stopped_passing"] = a["passed"] == a["checked"] > 0 and b["checked"] > 0 and b["passed"] == 0
            if set(a["answered_by"]) != set(b["answered_by"]):
                entry["answered_by"] = {"before": a["answered_by"], "after": b["answered_by"]}
        models[name] = entry
    # Rows on one side only are said. The first run's passes with no verdict in the second
    # (skipped, as a stop writes its rows; undecided; gone, unless the second run's summary says
    # it answered its whole job: a smaller dataset or fewer repeats is no loss, verify28 F1)
    # decide the gate when, counted as failures, they would make the drop significant, as a
    # threshold's undecided rows do in `report`; one such row is noise (break27 M4: half a run
    # gone, exit 0; verify27 N1: a run its deadline cut to 40 rows of 105). Rows in error are
    # the run's own failures: "started erroring" and max_error_rate judge them (verify28 F3).
    only_before, only_after = len(a_rows.keys() - b_rows.keys()), len(b_rows.keys() - a_rows.keys())
    whole = _whole_run(b_path, len(b_rows))
    missing = {
        i for i, r in a_rows.items() if r["passed"] is True and (_no_verdict(b_rows[i]) if i in b_rows else not whole)
    }
    unanswered = len(missing)
    rows: dict[str, Any] = {
        "before": len(a_rows),
        "after": len(b_rows),
        "only_before": only_before,
        "only_after": only_after,
        "passes_without_verdict": unanswered,
        # Rows of both runs whose request was not the same (the job edited between them): their
        # verdicts are compared all the same, and that is said (break31 m3).
        "requests_changed": sum(
            1 for i, r in a_rows.items() if i in b_rows and r["fingerprint"] != b_rows[i]["fingerprint"]
        ),
        # Rows asked the same request under an edited job: a check, a grader or a rubric may have
        # changed, and a drop the grading made read as the model's, p=1.9e-9 (break61 F2).
        "job_edited": sum(1 for i, r in a_rows.items() if i in b_rows and _job_edited(r, b_rows[i])),
        # Answers the second run read from the response cache, and of those the first run's own
        # (the same generation): a run replayed from the cache read as "no change" (break63 F7).
        "cached_after": sum(1 for r in b_rows.values() if r["cached"]),
        "replayed": sum(1 for i, r in a_rows.items() if i in b_rows and _replayed(r, b_rows[i])),
    }
    pairings = pairings_of(a_rows, b_rows)
    total_rate = rate_change(a_sum["total"], b_sum["total"], alpha, pairings.get(""))
    models_rate = rate_changes(a_sum["models"], b_sum["models"], alpha, "model", pairings)
    prompts_rate = rate_changes(a_sum["prompts"], b_sum["prompts"], alpha, "prompt", pairings)
    item_flips = _item_flips(a_rows, b_rows)
    # Counted as failures in the second run, in the paired test's own units: rows, or with repeats,
    # items (rows without a verdict added to a count of items made one item's six repeats a
    # "significant drop", p=0.031, where six failing repeats are one item falling, p=1: verify65 F1).
    as_failed = {**b_rows, **{i: {**a_rows[i], "passed": False} for i in missing}}
    down, up = pairings_of(a_rows, as_failed)[""].counts() or (0, 0) if missing else (0, 0)
    unanswered_decide = bool(missing) and bool(compare_paired(down, up, alpha)["significant"])
    rows_missing = unanswered_decide or (strict and only_before > 0)
    # Why, as the text says it: --strict alone is not "a significant drop" (break31 m4).
    rows["missing_decide"] = "significant" if unanswered_decide else "strict" if rows_missing else None
    significant_drops = [
        f"{label} {name}"
        for label, rates in (("total", {"": total_rate}), ("model", models_rate), ("prompt", prompts_rate))
        for name, rate in rates.items()
        if rate["dropped"]
    ]
    return {
        "job": b_sum["job"],
        "before": str(a_path),
        "after": str(b_path),
        "test": {
            "name": f"{PAIRED_TEST} (and {UNPAIRED_TEST} on rows in one run only, Bonferroni), "
            f"else {UNPAIRED_TEST}; two-sided",
            "alpha": alpha,
            "strict": strict,
        },
        "pass_rate": total_rate,
        "models_pass_rate": models_rate,
        "prompts_pass_rate": prompts_rate,
        "rows": rows,
        "rows_missing": rows_missing,
        "flips": flips,
        "item_flips": item_flips,
        "significant_drops": [d.strip() for d in significant_drops],
        "models": models,
        # The gate's evidence: --fail-on-regression exits 12 on it, as `report` does (out-174 F2:
        # a night's failing rows removed and asked again until they passed was exit 0).
        "edited": edited,
        "awaiting": a_waiting + b_waiting,  # likewise: no verdict yet (--resume collects them)
        "regression": bool(significant_drops)
        or rows_missing
        or bool(item_flips["pass_to_fail"])
        or (strict and bool(flips["pass_to_fail"] or flips["pass_to_ungraded"]))
        or any(
            m.get("started_erroring")
            or m.get("stopped_grading")
            or m.get("stopped_passing")
            or m["status"] == "disappeared"
            for m in models.values()
        ),
    }
