"""`history`: the runs of one job over time, what changed between them, and what flipped last.

A run is one results file. Given a folder, every `*.jsonl` in it is a run, except shard
files (`--shard K/N`) that a merged file of the same folder lists in its `merged_from` (the
merged file is the run; whole runs merged, as a month of nights, each stay one: break52 F2).
Runs are ordered by the first `started_at` of their rows (else the file's modification time).

Only aggregates are kept per run (a few numbers per model), plus the row states of the last
two runs, so a long history of large runs costs little memory.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._batch_state import pending_batches
from ._comparable import shard_mismatch
from ._cost_text import cost_text, held_note
from ._exceptions import ResultsError
from ._failure_text import failure_reasons
from ._formats import md_text, ms, one_line, pct, utc, utc_seconds
from ._history_files import incomplete_notes, one_job, runs_in
from ._history_marks import change_markers, run_markers
from ._lock import finished
from ._reader import Warn, unread_lines
from ._report_data import shard_of
from ._results import final_records
from ._summary import SummaryBuilder
from ._summary_beside import SummaryBeside
from ._summary_types import GroupFigures, Summary

FLIP_CAP = 500  # flipped rows listed on the page (all are counted)
MARKDOWN_RUNS = 8  # runs shown in the Markdown tables (GITHUB_STEP_SUMMARY wants it compact)
MARKDOWN_FLIPS = 20


@dataclass
class Run:
    path: Path
    start: str
    summary: Summary
    states: dict[str, tuple[str, str, str, str, str]]  # id -> (state, model, prompt, vars, why)
    incomplete: list[str]  # why the file does not hold the whole run, as `report` says (exit 12)

    @property
    def label(self) -> str:
        return self.start[:19].replace("T", " ")


def _state(record: dict[str, Any]) -> str:
    if record.get("status") != "ok":
        return str(record.get("status"))
    passed = record.get("passed")
    if passed is None:
        # A check whose grader failed: not "ok", which a pass that lost its verdict read as (break23).
        undecided = any(isinstance(c, dict) and c.get("pass") is None for c in record.get("checks") or [])
        return "undecided" if undecided else "ok"
    return "pass" if passed else "fail"


def _read_run(path: Path, warn: Warn, keep_states: bool = False, beside: SummaryBeside | None = None) -> Run | None:
    beside = beside or SummaryBeside.read(path)
    builder = SummaryBuilder()
    states: dict[str, tuple[str, str, str, str, str]] = {}
    start: str | None = None
    unread = 0

    def counted(message: str) -> None:
        nonlocal unread
        unread += unread_lines(message)
        warn(message)

    for record in final_records(path, counted):
        builder.add(record)
        started = record.get("started_at")
        if isinstance(started, str) and (start is None or started < start):
            start = started
        if not keep_states:
            continue
        state = _state(record)
        why = "; ".join(failure_reasons(record)) if state in ("fail", "error") else ""
        if state == "undecided":
            why = "; ".join(f"{c['name']}: {c.get('error')}" for c in record["checks"] if c.get("pass") is None)
        variables = record.get("vars")
        shown = ", ".join(f"{k}={v}" for k, v in variables.items()) if isinstance(variables, dict) else ""
        states[str(record["id"])] = (state, str(record.get("model")), str(record.get("prompt_id")), shown[:200], why)
    pending = pending_batches(path, warn)
    if builder.total.ok + builder.total.error + builder.total.skipped == 0 and not pending:
        # Left out, and said (break21 R18); not a submit tick's file, all its rows at OpenRouter:
        # a night to mark, as `report` exits 12 on it (out-134 F1: left out, exit 0).
        warn(f"{path}: holds no records: not a run")
        return None
    builder.add_pending_batches(pending)
    if start is None:
        start = _mtime_iso(path)
    summary = builder.result(key_gap_usd=beside.key_gap())
    return Run(path, start, summary, states, incomplete_notes(beside, summary["total"]["rows"], unread))


def _mtime_iso(path: Path) -> str:

    return utc_seconds(os.stat(path).st_mtime)


def _error_rate(group: GroupFigures) -> float | None:
    sent = group["ok"] + group["error"]
    return group["error"] / sent if sent else None


def _run_entry(run: Run) -> dict[str, Any]:
    total = run.summary["total"]
    models = {}
    for name, group in run.summary["models"].items():
        interval = group.get("pass_rate_ci95")  # the summary's: with repeats, an item is one cluster
        models[name] = {
            "pass_rate": group["pass_rate"],
            "interval": interval,
            "checked": group["checked"],
            "passed": group["passed"],
            "undecided": group["undecided"],
            "error": group["error"],
            "error_rate": _error_rate(group),
            "cost_usd": group["cost_usd"],
            "cost_unknown_rows": group.get("cost_unknown_rows", 0),
            "cost_held_usd": group.get("cost_held_usd", 0.0),
            "p95_ms": group["latency_p95_ms"],
            "answered_by": group["answered_by"],
        }
    return {
        "label": run.label,
        "start": run.start,
        "file": str(run.path),
        "job_fingerprint": run.summary["job_fingerprint"],
        "shard": shard_of(run.path),
        "rows": total["rows"],
        "ok": total["ok"],
        "error": total["error"],
        "skipped": total["skipped"],
        "pass_rate": total["pass_rate"],
        "error_rate": _error_rate(total),
        "cost_usd": total["cost_usd"],
        "cost_unknown_rows": total.get("cost_unknown_rows", 0),
        "cost_held_usd": total.get("cost_held_usd", 0.0),
        "key_gap_usd": run.summary.get("key_gap_usd", 0.0),
        "p95_ms": total["latency_p95_ms"],
        "models": models,
        "incomplete": run.incomplete,
        "cached": int((run.summary.get("cache") or {"hits": 0})["hits"]),
    }


def _tell_apart(runs: list[dict[str, Any]]) -> None:
    """Runs that started in the same second get their file's name in their label: the label
    keys the change markers, the tables' columns and the charts' points, and two runs under
    one label were drawn and counted as one."""
    seen = Counter(run["label"] for run in runs)
    for run in runs:
        if seen[run["label"]] > 1:
            run["label"] = f"{run['label']} ({Path(run['file']).name})"
    again = Counter(run["label"] for run in runs)  # the same name in two folders
    nth: Counter[str] = Counter()
    for run in runs:
        if again[run["label"]] > 1:
            nth[run["label"]] += 1
            run["label"] = f"{run['label']} #{nth[run['label']]}"


def _flips(before: Run, after: Run) -> dict[str, Any]:
    """Rows of the same id whose state changed (pass, fail, error, ok); skipped rows are not states."""
    if (why := shard_mismatch(before.path, before.states, after.path, after.states)) is not None:
        return {"before": before.label, "after": after.label, "counts": {}, "total": 0, "rows": [], "not_compared": why}
    rows: list[dict[str, str]] = []
    counts: Counter[str] = Counter()
    for row_id, now in after.states.items():
        then = before.states.get(row_id)
        if then is None or then[0] == now[0] or "skipped" in (then[0], now[0]):
            continue
        counts[f"{then[0]} → {now[0]}"] += 1
        if len(rows) < FLIP_CAP:
            rows.append(
                {
                    "id": row_id[:12],
                    "model": now[1],
                    "prompt": now[2],
                    "vars": now[3],
                    "before": then[0],
                    "after": now[0],
                    "why": now[4] or then[4],
                }
            )
    rows.sort(key=lambda r: (r["after"] == "pass", r["after"] == "ok", r["model"], r["prompt"]))
    return {
        "before": before.label,
        "after": after.label,
        "counts": dict(sorted(counts.items())),
        "total": sum(counts.values()),
        "rows": rows,
    }


def _quiet(_message: str) -> None:
    return None  # the second read of a file: its set-aside lines were reported by the first


def build_history(
    paths: Iterable[Path], warn: Warn = _quiet, listed: list[Path] | None = None, job: str | None = None
) -> dict[str, Any]:
    """The runs in `paths` (files or folders), oldest first; `warn` hears of lines set aside (torn,
    corrupt). `listed`: `runs_in(paths)`, where the caller has listed them already. `job`: the
    name of the job whose runs are shown (others are left out), else the one job there."""
    paths = list(paths)
    # A run in progress is no run of the history yet.
    files = finished(runs_in(paths, warn) if listed is None else listed, warn)
    named = {path.resolve() for path in paths if not path.is_dir()}

    def read(path: Path) -> Run | None:
        beside = SummaryBeside.read(path)
        for doubt in beside.doubts():  # a summary copied under another name: said, not dropped quietly
            warn(doubt)
        try:
            return _read_run(path, warn, beside=beside)
        except ResultsError as exc:
            if path.resolve() in named:
                raise
            # A stray file in a job's folder ended the whole history (break23): left out, and said.
            warn(f"{exc}: left out of the history")
            return None

    # Each run's aggregates first; the row states only of the last two (read again for them).
    loaded = [run for run in (read(path) for path in files) if run is not None]
    if not loaded:
        raise ResultsError(f"{', '.join(map(str, files))}: no rows in these results files")
    loaded = one_job(loaded, named, warn, job)
    jobs = {str(run.summary["job"]) for run in loaded if run.summary["job"]}
    # A run stamped ahead of now (a clock that was fast) is the oldest, as `--resume` counts it:
    # sorted last, it was "the latest run" and the flips' "previous run" for ever (break62 F7).
    now = utc(time.time() + 60)
    for ahead in (run for run in loaded if run.start > now):
        warn(f"{ahead.path}: its rows are stamped {ahead.label}, ahead of this machine's clock: shown as the oldest")
    loaded.sort(key=lambda run: (run.start <= now, run.start, str(run.path)))
    runs = [_run_entry(run) for run in loaded]
    _tell_apart(runs)
    # Each run against the last one of its kind: a shard's rows are not the whole job's, nor another
    # shard's ("pass rate fell 50% → 25%" was a shard read against the whole night before it:
    # verify58 F5).
    last: dict[str | None, dict[str, Any]] = {}
    markers = []
    for run in runs:
        if run["incomplete"]:
            warn(f"{run['file']}: an incomplete run: {'; '.join(run['incomplete'])}")
        markers += run_markers(run)
        if (before := last.get(run["shard"])) is not None:
            markers += change_markers(before, run)
        last[run["shard"]] = run
    return {
        "job": next(iter(jobs), None),
        "runs": runs,
        "markers": markers,
        "flips": _flips(*[_read_run(run.path, _quiet, keep_states=True) or run for run in loaded[-2:]])
        | {"before": runs[-2]["label"], "after": runs[-1]["label"]}  # as the runs are named (two in one second)
        if len(loaded) > 1
        else None,
    }


# -- text and Markdown --------------------------------------------------------------------------
def _run_rows(history: dict[str, Any], limit: int | None = None) -> tuple[list[str], list[list[str]]]:
    runs = history["runs"][-limit:] if limit else history["runs"]
    changes = Counter(marker["run"] for marker in history["markers"])
    # Skipped rows shown: a night with a model unanswered read as a clean one (break42 F7).
    header = ["run (UTC)", "rows", "pass", "errors", "skipped", "cost $", "p95 ms", "changes"]
    rows = [
        [
            run["label"],
            f"{run['rows']:,}",
            pct(run["pass_rate"]),
            pct(run["error_rate"]),
            f"{run.get('skipped') or 0:,}",
            cost_text(run) + held_note(run, short=True) + _gap_note(run),
            ms(run["p95_ms"]),
            str(changes.get(run["label"], "")),
        ]
        for run in runs
    ]
    return header, rows


def _gap_note(run: dict[str, Any]) -> str:
    """What was counted as spent beyond the rows' records (summary `key_gap_usd`), in a cost cell."""
    gap = run.get("key_gap_usd") or 0.0
    return f" (+${gap:.6f} spent beyond the records)" if gap > 0 else ""


def _model_rows(history: dict[str, Any], limit: int | None = None) -> tuple[list[str], list[list[str]]]:
    runs = history["runs"][-limit:] if limit else history["runs"]
    models = sorted({name for run in runs for name in run["models"]})
    header = ["pass rate", *(run["label"] for run in runs)]
    rows = [[name, *(pct(run["models"].get(name, {}).get("pass_rate")) for run in runs)] for name in models]
    return header, rows


def _flip_lines(history: dict[str, Any]) -> list[str]:
    flips, runs = history["flips"], history["runs"]
    if flips is None:
        return ["only one run: nothing to compare yet"]
    skipped = runs[-1].get("skipped") or 0 if runs else 0
    unanswered = f"; {skipped:,} row(s) of the last run never answered (skipped)" if skipped else ""
    if flips.get("not_compared"):
        return [f"since the previous run ({flips['before']}): rows not compared: {flips['not_compared']}"]
    if not flips["total"]:
        return [f"since the previous run ({flips['before']}): no row changed state{unanswered}"]
    counts = ", ".join(f"{kind} {n}" for kind, n in flips["counts"].items())
    return [f"since the previous run ({flips['before']}): {flips['total']} row(s) changed: {counts}{unanswered}"]


def render_history_text(history: dict[str, Any]) -> str:
    lines = [f"history of {history['job']}: {len(history['runs'])} run(s)"]
    for header, rows in (_run_rows(history), _model_rows(history, MARKDOWN_RUNS)):
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            cells = zip(row, widths, strict=True)
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells)))
    lines += [f"change at {m['run']}: {m['what']}" for m in history["markers"]]
    lines += _flip_lines(history)
    flips = history["flips"]
    for row in (flips or {}).get("rows", [])[:MARKDOWN_FLIPS]:
        lines.append(f"  {row['before']} → {row['after']}  {row['model']} / {row['prompt']} [{row['id']}] {row['why']}")
    return "\n".join(map(one_line, lines))  # a server's text is one line (break53 F3)


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(map(md_text, header)) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(map(md_text, row)) + " |" for row in rows),
        "",
    ]


def render_history_markdown(history: dict[str, Any]) -> str:
    runs = history["runs"]
    shown = min(len(runs), MARKDOWN_RUNS)
    lines = [f"### batchrun history: {md_text(str(history['job']))}", ""]
    lines.append(f"{len(runs)} run(s)" + (f"; the last {shown} shown" if shown < len(runs) else "") + ".")
    lines.append("")
    lines += _md_table(*_run_rows(history, MARKDOWN_RUNS))
    lines += _md_table(*_model_rows(history, MARKDOWN_RUNS))
    labels = {run["label"] for run in runs[-shown:]}
    marks = [m for m in history["markers"] if m["run"] in labels]
    if marks:
        lines.append("**Changes**")
        lines.append("")
        lines += [f"- {md_text(m['run'])}: {md_text(m['what'])}" for m in marks]
        lines.append("")
    lines += [f"**{md_text(line)}**" for line in _flip_lines(history)]
    flips = history["flips"]
    if flips and flips["rows"]:
        lines.append("")
        table = [
            [f"{r['before']} → {r['after']}", r["model"], r["prompt"], r["vars"], r["why"][:200]]
            for r in flips["rows"][:MARKDOWN_FLIPS]
        ]
        lines += _md_table(["change", "model", "prompt", "variables", "why"], table)
        if flips["total"] > len(table):
            more = flips["total"] - len(table)
            lines.append(f"... and {more} more (`batchrun history --html` lists up to {FLIP_CAP}).")
    return "\n".join(lines).rstrip("\n") + "\n"
