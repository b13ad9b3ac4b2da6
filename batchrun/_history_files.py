"""Which files a `history` reads: the files given, or each folder's runs (`runs_in`); of what
they hold, one job's runs (`one_job`); and why a file does not hold its whole run
(`incomplete_notes`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ._batch_state import pending_batches
from ._exceptions import ConfigError, ResultsError
from ._files import followed
from ._formats import one_line, short
from ._job_runs import folder_runs, results_files
from ._journal_file import journal_path
from ._output_paths import summary_path
from ._reader import Warn
from ._report_data import missing_since_summary
from ._summary_beside import SummaryBeside


class _Run(Protocol):
    path: Path
    start: str

    @property
    def summary(self) -> Any: ...


R = TypeVar("R", bound=_Run)


def runs_in(paths: list[Path], warn: Warn = lambda _: None) -> list[Path]:
    """The results files a history covers: the given files, or each folder's runs."""
    if not paths:
        paths = [_default_folder()]
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            for odd in sorted(p for p in path.glob("*.jsonl") if not p.is_file()):
                # Left out as any stray file is, and said as one is (out-153 F8: a link to a run
                # since deleted, a FIFO, went without a word; out-173 F5: a folder so named).
                kind = "a folder" if odd.is_dir() else "not a regular file (a link to nothing, a FIFO, a device)"
                warn(f"{odd}: {kind}: left out of the history")
            # A link there to a run elsewhere is that run: its files are beside its target (out-151 F1).
            runs = folder_runs(path)
            if not runs and len(paths) > 1:
                # Named beside other runs, a folder with none was dropped without a word (out-173
                # F5: a night's run that was a folder went missing from the trend, exit 0).
                raise ResultsError(f"{path}: a folder with no results files (*.jsonl) in it")
            files += map(followed, runs)
        elif path.exists():  # a file, or one that is not regular (a FIFO): the reader says which
            files.append(path)
        else:
            raise ResultsError(f"{path}: no such results file or folder")
    if not files:
        raise ResultsError(f"{', '.join(map(str, paths))}: no results files (*.jsonl) to show")
    # One run once, however often it was named (a file and its folder, or twice: verify21 V13).
    return list({file.resolve(): file for file in files}.values())


def _default_folder() -> Path:
    """outputs/<job>/ when the current folder's outputs/ holds exactly one job."""
    outputs = Path("outputs")
    jobs = (
        sorted(p for p in outputs.glob("*") if p.is_dir() and results_files(p, ordered=False))
        if outputs.is_dir()
        else []
    )
    if len(jobs) == 1:
        return jobs[0]
    found = f"; found {', '.join(map(str, jobs))}" if jobs else ""
    raise ConfigError(f"name the job's output folder or results files (e.g. outputs/<job>){found}")


def _job(run: _Run) -> str | None:
    return str(run.summary["job"]) if run.summary["job"] else None


def one_job(loaded: list[R], named: set[Path], warn: Warn, job: str | None = None) -> list[R]:
    """The runs of one job: `job` (history --job), else the one job there. Files given by name of
    different jobs are refused (exit 2). A file of another job in a folder given (a test written
    there with `-o`) is left out, with a warning: it ended the nightly history, exit 2, where a
    garbage file was a warning (break52 F6). The folder's job is that of the files named, else of
    most of its runs (the newest's on a tie)."""
    jobs = {name for run in loaded if (name := _job(run)) is not None}
    if job is not None:
        if job not in jobs:
            raise ResultsError(f"no run of job {job} there (its runs are of {', '.join(sorted(jobs))})")
        if other := [run for run in loaded if run.path.resolve() in named and _job(run) not in (None, job)]:
            # Named, it is the user's: refused, as files of two jobs named are (out-151 F5).
            raise ResultsError(f"{other[0].path}: a run of job {_job(other[0])}, not of {job} (--job)")
        _left_out(loaded, job, warn)
        return [run for run in loaded if _job(run) in (None, job)]
    if len(jobs) <= 1:
        return loaded
    given = {job for run in loaded if run.path.resolve() in named and (job := _job(run)) is not None}
    if len(given) > 1:
        # Each job with a file of it: which one to move away (break33 m7 named the jobs only).
        first: dict[str, Path] = {}
        for run in loaded:
            first.setdefault(str(_job(run)), run.path)
        counts = Counter(_job(run) for run in loaded if run.path.resolve() in named)
        described = ", ".join(f"{job} ({first[job]}{', ...' if counts[job] > 1 else ''})" for job in sorted(given))
        raise ResultsError(f"these files belong to different jobs: {described}: give one job's runs")
    if given:
        kept = given.pop()
    else:
        counts = Counter(_job(run) for run in loaded)
        latest = max(loaded, key=lambda run: run.start)
        newest = _job(latest)
        kept = max(jobs, key=lambda job: (counts[job], job == newest, job))
        if newest not in (None, kept):
            # A job renamed: its new nights were left out until they were most of the folder's (out-149 F5).
            warn(
                f"the newest run, {latest.path}, is of job {newest}, not of {kept} (most of the runs): left out; "
                "give --job JOB.yaml to show the runs of the job named there"
            )
    _left_out(loaded, kept, warn)
    return [run for run in loaded if _job(run) in (None, kept)]


def _left_out(loaded: list[R], kept: str, warn: Warn) -> None:
    for run in loaded:
        if _job(run) not in (None, kept):
            warn(f"{run.path}: a run of job {_job(run)}, not of {kept}: left out of the history")


def incomplete_notes(beside: SummaryBeside, rows: int, unread: int) -> list[str]:
    """Why a night's file does not hold its whole run: `report` exits 12 on each, and a night
    merged from 3 of 4 shards, one whose failing records were deleted, or one killed before its
    summary read in the history as a normal night, the last as a perfect one (break62 F1)."""
    path, meta = beside.results, beside.run_summary()
    notes = []
    if meta.get("merged_from") and meta.get("complete") is False:
        notes.append("a partial merge (rows of the job have no record)")
    elif isinstance(meta.get("stop"), str) and meta.get("complete") is False:
        notes.append(f"stopped ({short(one_line(meta['stop']), 40)}), not finished")
    # As `report` counts them (out-132 F4): rows its batch record says are at OpenRouter are not
    # "gone"; a summary there that cannot be read counts nothing.
    awaiting = sum(len(entry.rows) for entry in pending_batches(path, lambda _: None))
    if (unreadable := beside.unreadable()) is not None:
        notes.append(unreadable.removeprefix(f"{summary_path(path)}: "))
    if (another := beside.of_another_job()) is not None:  # as `report` says (out-135 F1: a normal night)
        notes.append(another.removeprefix(f"{path}: "))
    missing = missing_since_summary(path, meta, rows, unread, awaiting)
    if (missing := missing or beside.changed()) is not None:  # edited since (out-149 F1)
        notes.append(missing.removeprefix(f"{path}: "))
    elif unread and not meta:  # with its summary counting every row there, none is (verify63 F8)
        notes.append(f"{unread} line(s) set aside or cut: a row may be missing")
    if not meta and journal_path(path).exists():
        notes.append("killed before its summary: rows it never reached have no record")
    return notes
