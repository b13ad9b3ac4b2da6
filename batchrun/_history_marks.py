"""The change markers of a job's history: what changed from one run to the next (a model began
failing or erroring, lost its verdicts, appeared or went away, was answered by another provider,
the job was edited), and what a run is whatever came before it."""

from __future__ import annotations

from typing import Any

from ._summary_types import rate_bounds

MARKER_DROP = 0.05  # a model's pass rate falling this much (5 points) from one run to the next is a change
# Rates are rounded floats: 0.95 - 0.90 is 0.04999999999999993, and half of the 5-point drops
# between whole percentages went unmarked (out-101 F3).
RATE_NOISE = 1e-9


def _answerers(model: dict[str, Any]) -> str:
    return ", ".join(sorted(model["answered_by"])) or "nobody"


def change_markers(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """What changed from one run to the next: a model started failing or erroring, appeared or
    went away, or was answered by another model or provider; or the job itself was edited."""
    marks: list[dict[str, Any]] = []

    def mark(model: str | None, kind: str, what: str) -> None:
        marks.append({"run": after["label"], "file": after["file"], "model": model, "kind": kind, "what": what})

    if before["job_fingerprint"] != after["job_fingerprint"]:
        mark(None, "job", "the job definition changed (new job fingerprint)")
    for name in sorted(before["models"].keys() | after["models"].keys()):
        a, b = before["models"].get(name), after["models"].get(name)
        if a is None:
            mark(name, "new", f"{name} is new")
            continue
        if b is None:
            mark(name, "gone", f"{name} is gone")
            continue
        fell_by = None if a["pass_rate"] is None or b["pass_rate"] is None else a["pass_rate"] - b["pass_rate"]
        if fell_by is not None and fell_by >= MARKER_DROP - RATE_NOISE:
            fell = f"{name} pass rate fell {a['pass_rate']:.1%} → {b['pass_rate']:.1%}"
            if a["pass_rate"] - rate_bounds(b)[1] >= MARKER_DROP - RATE_NOISE:
                mark(name, "failing", fell)
            else:  # had its undecided rows passed, it would not have fallen (verify63 F3)
                mark(name, "ungraded", f"{fell}, with {b['undecided']} row(s) undecided (a grader failed) deciding it")
        if a["error"] == 0 and b["error"] > 0:
            mark(name, "erroring", f"{name} started erroring ({b['error']} error rows)")
        if a["pass_rate"] is not None and b["pass_rate"] is None and b.get("undecided"):
            # 100% -> "-" was no change at all (break23): a grader outage is not a quiet run.
            mark(name, "ungraded", f"{name} has no verdict now ({b['undecided']} row(s) undecided)")
        elif _more_undecided(a, b) and not (fell_by is not None and fell_by >= MARKER_DROP - RATE_NOISE):
            # Graded rows alone read 100% on a night 5 of 8 verdicts were missing (out-101 F2), or
            # 15 of 25 after a night with 5 (out-103 F5).
            mark(name, "ungraded", f"{name}: {b['undecided']} row(s) undecided (a grader failed)")
        if set(a["answered_by"]) != set(b["answered_by"]):
            mark(name, "answering", f"{name} answered by {_answerers(a)} → {_answerers(b)}")
    return marks


def _more_undecided(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Rows without a verdict where there were none (one of 40 made its run exit 1: out-105 F6),
    or a share of them 5 points above the run before's."""
    if not after.get("undecided"):
        return False
    return not before.get("undecided") or _undecided_share(after) - _undecided_share(before) >= MARKER_DROP - RATE_NOISE


def _undecided_share(model: dict[str, Any]) -> float:
    """The share of a model's checked rows that got no verdict."""
    undecided = model.get("undecided") or 0
    return undecided / (undecided + model["checked"]) if undecided else 0.0


def run_markers(run: dict[str, Any]) -> list[dict[str, Any]]:
    """What a run is, whatever came before it (a shard's first night has none to compare with):
    incomplete, or answered from the cache (no news of the models: break63 F7, verify66 10)."""
    kinds = [("incomplete", f"incomplete: {'; '.join(run['incomplete'])}")] if run["incomplete"] else []
    if run["cached"]:
        kinds.append(("cached", f"{run['cached']} of {run['rows']} row(s) answered from the response cache"))
    return [{"run": run["label"], "file": run["file"], "model": None, "kind": k, "what": w} for k, w in kinds]
