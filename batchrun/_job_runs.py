"""A job folder's runs: its results files in the order their runs began, the newest incomplete
one (`--resume` without `-o`), and its runs with a merged run's shards folded into their merged
file (`history`, `plan`'s previous run)."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from ._batch_state import state_path
from ._exceptions import ResultsError
from ._files import read_regular_text
from ._formats import utc
from ._journal_file import JOURNAL_SUFFIX, a_fragment_of_its_run, journal_header
from ._output_paths import job_folder, summary_path
from ._reader import MAX_RECORD_BYTES
from ._report_data import is_shard_file
from ._results import first_record
from ._simulated import simulated as is_simulated
from ._summary_beside import read_run_summary


def results_files(folder: Path, ordered: bool = True) -> list[Path]:
    """A folder's results files, the run that began first first (unless not `ordered`, for whether
    there are any: the order reads each file's first record): its `*.jsonl` less the attempt
    journals a crash leaves beside them (a journal is no results file: break14c N19) and the links
    to another of them (a `latest.jsonl`: the run is its file, whose sidecars are beside it).
    Ordered by name, a hand-named file came after every UTC stamp for ever: --resume picked an
    old `adhoc.jsonl` as "the most recent" run, and a `latest.jsonl` link, whose summary is not
    beside it, on every tick (break52 F1). A run stamped ahead of now (by a clock that was fast, or a
    hand edit) goes first: a month-fast run was "the most recent" for a month (verify52 F8)."""
    files = [p for p in folder.glob("*.jsonl") if p.is_file() and not p.name.endswith(JOURNAL_SUFFIX)]
    real = {p.resolve() for p in files if not p.is_symlink()}
    files = [p for p in files if not (p.is_symlink() and p.resolve() in real)]
    now = utc(time.time() + 60)
    return sorted(files, key=lambda p: ((began := run_began(p)) <= now, began, p.name)) if ordered else files


def run_began(path: Path) -> str:
    """When the run of a results file began, as UTC text: its first record's `started_at`, else
    (no record yet, or none readable) the file's last change."""
    with contextlib.suppress(OSError, ResultsError):
        record = first_record(path)
        if record is not None and isinstance(record.get("started_at"), str):
            return str(record["started_at"])
    try:
        return utc(path.stat().st_mtime)
    except OSError:
        return ""


def latest_incomplete(
    job_name: str, pattern: str | None, shard: str | None = None, retry_errors: bool = False, simulated: bool = False
) -> Path | None:
    """The newest results file of the job (of this `shard` of it, "K/N") whose summary is
    missing (a crash) or says incomplete, answered as this one is (`simulated` or not: a --simulate
    try-out since was taken for the night: out-103 F2), never a merge's output. With `retry_errors`,
    the newest such run, complete or not (a nightly that ended in retryable errors, exit 1, is
    complete: out-102 F8); not the newest run with errors, which went back to an old run's errors no
    retry mends, for ever (out-105 F1). Another shard's newer file was picked, then refused as rows
    of an edited job (break30 m1)."""
    folder = job_folder(job_name, pattern)
    if not folder.is_dir():
        return None
    for candidate in reversed(results_files(folder)):  # the newest first
        # A link's summary is beside its file (a latest.jsonl to an archived run: verify52 F3).
        earlier = _summary_of(candidate.resolve() if candidate.is_symlink() else candidate)
        if earlier and earlier.get("shard") != shard:
            continue
        # Answered as this one is (a --simulate try-out stopped at its deadline was finished against
        # the endpoint, its made-up answers kept: out-106 F1); a run killed before its summary cannot say.
        if not _answered_as(earlier, simulated):
            continue
        if not retry_errors and earlier.get("complete") is True:
            continue
        if _holds_results_of(candidate, job_name, shard, earlier):
            return candidate
    return None


def _answered_as(summary: dict[str, Any], simulated: bool) -> bool:
    """A run's own summary (not a merge's), of a run answered as this one is (the simulator or not)."""
    answered_by = summary.get("endpoint")
    return "merged_from" not in summary and (answered_by is None or is_simulated(answered_by) == simulated)


def incomplete_shards(job_name: str, pattern: str | None) -> list[str]:
    """The shards ("K/N") whose newest run of the job is incomplete: what a `--resume` without
    `--shard` was after (verify68 F7: "no incomplete run was found", one there)."""
    shards = {}
    folder = job_folder(job_name, pattern)
    for candidate in results_files(folder) if folder.is_dir() else []:  # the oldest first: the newest stands
        earlier = _summary_of(candidate)
        if isinstance(earlier.get("shard"), str):
            shards[earlier["shard"]] = earlier.get("complete") is not True
    return sorted(shard for shard, open_ in shards.items() if open_)


def _summary_of(results: Path) -> dict[str, Any]:
    """The summary beside `results` as written, {} when there is none or it cannot be read."""
    try:
        earlier = json.loads(read_regular_text(summary_path(results)))
    except (OSError, ValueError, RecursionError):
        return {}
    return earlier if isinstance(earlier, dict) else {}


def _holds_results_of(path: Path, job_name: str, shard: str | None, summary: dict[str, Any]) -> bool:
    # Only a file whose first whole record is this job's may be picked: a user's own
    # notes.jsonl in the folder is never resumed, cut or appended to. A run killed before its
    # first record left an empty file and its journal, whose header names the job and shard
    # (break35 M2: passed over, an older run was resumed, and the attempts in flight never counted).
    try:
        record = first_record(path)
    except (OSError, ResultsError):
        # Only a torn first record, or the NULs an OS crash leaves, beside its journal: the resume
        # cuts it (out-160 F3: passed over, an older run was resumed instead).
        torn = a_fragment_of_its_run(path, job_name, MAX_RECORD_BYTES)
        return torn and (journal_header(path) or {}).get("shard") == shard
    if record is None:
        header = journal_header(path)
        if header is not None:
            return bool(header["job"] == job_name and header.get("shard") == shard)
        # A batch-mode run that ended before its first record (exit 10, or a signal, a refused
        # key, an empty purse while it polled), its rows in batches still running: its summary
        # names the job, its batch record is beside it (break64 F3, verify67 F1: "no incomplete
        # run was found", and running the job again submitted, and paid for, every row twice).
        awaiting = summary.get("stop") == "submitted" or state_path(path).is_file()
        # Its own summary, not one copied beside an empty file of the user's (verify68 F1: that
        # file was resumed, its rows' batches submitted and paid for again).
        own = Path(str(summary.get("output", ""))).name == path.name
        return summary.get("job") == job_name and summary.get("shard") == shard and awaiting and own
    # A killed shard has records and no summary: each record names its shard. Shards side by side
    # in one folder, another shard's was resumed, and refused (exit 2) at every tick (verify58 F3).
    return record.get("job") == job_name and record.get("shard") == shard


def folder_runs(folder: Path) -> list[Path]:
    """A folder's runs, the one that began first first: its results files less the shards of a
    run merged there, whose merged file is that run. A merge of several runs (a month of nights,
    its rows given more than once: `duplicate_rows`) is no shard's run: a night run as shards
    vanished from the history when the month was merged (verify52 F4)."""
    files = results_files(folder)
    merged: set[str] = set()
    for file in files:
        summary = read_run_summary(file)
        if summary.get("duplicate_rows"):
            continue
        for source in summary.get("merged_from") or []:
            if isinstance(source, str):
                merged.add(Path(source).name)
    return [f for f in files if f.name not in merged or not is_shard_file(f)]
