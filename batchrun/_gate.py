"""The CI gate's view of a results file: which rows of the job's matrix are there.

A quality gate that only looks at the rows present passes on an empty file, on another
job's results, and on one shard of four. So `report --job` and `merge` compare the rows
present with the job's full matrix (the ids `matrix_requests` yields): rows of the matrix
without a record are *missing*, rows recorded as `skipped` never got an answer, and rows
that are not in the matrix at all (another job, a job edited since, or a row whose fields
were edited under its id) are *foreign*,
which is an error. Without a job file, `merge` learns the matrix size and the shard
layout from the summaries the shard runs wrote beside their results.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ._checks import graded_now, stored_judgements, without_latency_checks
from ._exceptions import ResultsError
from ._files import read_regular_text
from ._items import item_key
from ._job import Job
from ._matrix import Request, matrix_requests, stable_id
from ._output_paths import summary_path
from ._verdict import Unverdicted


@dataclass
class VerdictChanges:
    """Rows whose verdict re-grading changed from the one the file holds: `report --job` re-bought
    every verdict and never said which differ (break61 F7)."""

    counts: Counter[str] = field(default_factory=Counter)

    def note(self, before: str, after: str) -> None:
        """A row's verdict as the file holds it and as graded now (`verdict_word`)."""
        if before != after:
            self.counts[f"{before} -> {after}"] += 1

    def sentence(self) -> str | None:
        """What changed, for stderr; None when no stored verdict changed."""
        if not self.counts:
            return None
        parts = ", ".join(f"{change}: {n}" for change, n in sorted(self.counts.items()))
        return f"re-graded: {sum(self.counts.values())} row(s) whose verdict is not the one the file holds ({parts})"


def verdict_word(record: dict[str, Any]) -> str:
    """An answered row's verdict in a word: "no check" where no check graded it (the job has
    none for it), not "undecided" as a verdict the checks could not reach."""
    passed = record.get("passed")
    if "checks" not in record:
        return "no check"
    return "undecided" if passed is None else "pass" if passed else "fail"


@dataclass
class MatrixCoverage:
    """Rows of the matrix seen in a stream of final records."""

    job: Job
    checks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # every matrix id -> its checks
    fingerprints: dict[str, str] = field(default_factory=dict)  # every matrix id -> its request's
    seen: set[str] = field(default_factory=set)
    stale: set[str] = field(default_factory=set)  # rows answered for an earlier version of their request
    skipped_ids: set[str] = field(default_factory=set)  # seen, never answered
    foreign: int = 0
    foreign_example: str = ""
    changed: VerdictChanges = field(default_factory=VerdictChanges)  # by re-grading, from the file's

    @classmethod
    def of(cls, job: Job) -> MatrixCoverage:
        coverage = cls(job)
        for request in matrix_requests(job):
            coverage.checks[request.id], coverage.fingerprints[request.id] = request.checks, request.fingerprint
        return coverage

    @property
    def missing(self) -> int:
        return len(self.checks) - len(self.seen) - len(self.stale)

    @property
    def skipped(self) -> int:
        return len(self.skipped_ids)

    def without_verdicts(self) -> Unverdicted:
        """The matrix's rows with checks and no answer in the file (missing, stale or skipped),
        by the groups thresholds gate: what `--allow-partial` accepts may still decide a gate."""
        out = Unverdicted()
        recorded: set[str] = set()  # items with a record, a skipped one included: the summary has them
        absent: set[str] = set()
        for request in matrix_requests(self.job):
            if not request.checks:
                continue
            item = item_key({"model": request.model, "prompt_id": request.prompt_id, "vars": request.vars})
            if request.id in self.seen:
                recorded.add(item)
            else:
                absent.add(item)
            groups = ("", f"model {request.model}", f"prompt {request.prompt_id}")
            if request.id not in self.seen or request.id in self.skipped_ids:
                out.rows.update(groups)
            if request.id not in self.seen:
                out.no_record.update(groups)
        out.absent_items = len(absent - recorded)
        return out

    def review(
        self, records: Iterable[dict[str, Any]], regrade: bool = False, keep_stale: bool = False
    ) -> Iterator[dict[str, Any]]:
        """The records of the matrix, counted (and re-graded with the job's checks if asked);
        foreign records are counted and left out, and so are stale ones unless `keep_stale`."""
        for record in records:
            row_id = record["id"]
            if record.get("job") != self.job.name or row_id not in self.checks or not named_by_its_id(record):
                self.foreign += 1
                if not self.foreign_example:
                    job, model, prompt = record.get("job"), record.get("model"), record.get("prompt_id")
                    self.foreign_example = f"id {row_id[:12]} of job {job!r}, {model} / {prompt}"
                continue
            if self._stale(record):
                # An answer to the question as it was: its id stays when a prompt or a parameter
                # is edited, and `--resume` asks it again, so the gate must not pass it on the
                # new checks (break27 MAJOR-5: exit 0, JUnit green, on last week's question).
                self.stale.add(row_id)
                if keep_stale:
                    yield record
                continue
            self.seen.add(row_id)
            if record["status"] == "skipped":
                self.skipped_ids.add(row_id)
            checks = self.checks[row_id]
            if record.get("batch_id"):
                checks = without_latency_checks(checks)
            if regrade and record["status"] == "ok":
                # Judge checks keep their stored verdicts here: re-judging costs money (_regrade).
                before = verdict_word(record)
                record = graded_now(record, checks, stored_judgements(record, checks))
                self.changed.note(before, verdict_word(record))
            yield record

    def _stale(self, record: dict[str, Any]) -> bool:
        if record["status"] == "skipped":
            return False  # never answered (a crash record has no fingerprint): a shortfall as it is
        # One without a fingerprint cannot show it answered this request: `--resume` asks it
        # again, and so the gate does not take it as done (verify27 N3).
        return record.get("fingerprint") != self.fingerprints[record["id"]]

    def unanswered(self) -> Iterator[tuple[Request, str]]:
        """The matrix's rows with no answer to their request as it is now: ("missing" or "stale")."""
        if self.missing or self.stale:
            for request in matrix_requests(self.job):
                if request.id not in self.seen:
                    yield request, "stale" if request.id in self.stale else "missing"

    def foreign_rows(self, path: Path | str, edited: str | None = None) -> list[str]:
        """Refuse rows the job's matrix does not have (exit 2); in a file edited since its run
        (`edited`), they are the edit's: said among its reasons instead, exit 12 as any edit (a
        same-size edit of a row's variables was exit 2: out-160)."""
        if not self.foreign:
            return []
        said = (
            f"{path}: {self.foreign} row(s) are not in the matrix of job {self.job.name!r} "
            f"(another job's results, the job edited since, or rows edited), e.g. {self.foreign_example}"
        )
        if edited is None:
            raise ResultsError(said)
        return [said]

    def shortfalls(self) -> list[str]:
        """Sentences for rows without an answer; empty when every row of the matrix has one."""
        out = []
        if self.missing:
            out.append(f"{self.missing} of {len(self.checks)} row(s) of the job's matrix have no record")
        if self.stale:
            out.append(
                f"{len(self.stale)} row(s) answered an earlier version of their request (its prompt, model or "
                "parameters were edited since): `--resume` asks them again"
            )
        if self.skipped:
            out.append(f"{self.skipped} row(s) were skipped (never answered)")
        return out


def named_by_its_id(record: dict[str, Any]) -> bool:
    """Whether a record's model, prompt, variables and repeat are the ones its id was made
    from. A row whose fields were edited with its id kept would otherwise pass the gate as a
    model or prompt the job does not have (break24 F9). A row a kill -9 left in flight, as a
    reader counts it, knows only its id and model (_reader.crashed_record): skipped, it passes no
    gate, and its id is checked against the matrix."""
    if record.get("status") == "skipped" and record.get("reason") == "crashed":
        return True
    try:
        made_from = stable_id(record["job"], record["model"], record["prompt_id"], record["vars"], record["repeat"])
    except (KeyError, TypeError, orjson.JSONEncodeError):  # fields of the wrong type: not this row's
        return False
    return made_from == str(record["id"])


def shard_layout(
    shards: list[Path], rows_found: int, skipped: int, job: str | None = None
) -> tuple[bool, list[str], int | None]:
    """(complete, shortfalls, the matrix's rows when the summaries agree on it) of merged shards,
    from the summaries their runs wrote.

    Without summaries (or with ones that do not agree) completeness cannot be shown, so
    the merge is not complete: `merge --job` compares with the matrix itself. A whole run (or a
    merged file) among them holds every shard's rows: its rows, not a shard count, say whether
    any is missing (a month of a whole night and a sharded one "disagreed": verify58 F4).
    """
    parts: dict[int, Path] = {}
    twice: list[str] = []
    counts: set[int] = set()
    matrix: set[int] = set()
    wholes = 0
    for shard in shards:
        try:
            summary = json.loads(read_regular_text(summary_path(shard)))
            index, _, of = str(summary["shard"] or "1/1").partition("/")
            part, count, rows = int(index), int(of), summary["matrix_rows"]
            if job is not None and summary.get("job") != job:
                raise ValueError("another job's summary")  # its matrix is not this job's (verify21 V11)
            # What a run writes (break21 R7, R8: "1/1000000000" built a set of 10^9 numbers,
            # and Infinity rows an OverflowError).
            if not (1 <= part <= count) or not (isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0):
                raise ValueError("not a shard summary")
            matrix.add(rows)
            if count == 1:
                wholes += 1
                continue
            if part in parts:  # two files claim one shard (verify21 V12): said, not "missing"
                twice.append(f"{parts[part]} and {shard} both say they are shard {part}/{count}")
            parts[part] = shard
            counts.add(count)
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return (
                False,
                [
                    f"{shard}: no usable summary of this job saying which shard it is and how many rows the matrix "
                    "has: cannot tell whether rows are missing (give --job JOB.yaml)"
                ],
                None,
            )
    if len(counts) > 1 or len(matrix) != 1:
        why = "the shards' summaries disagree on the shard count or the matrix size (give --job JOB.yaml)"
        return False, [why], None
    (expected,) = matrix
    out: list[str] = []
    count = next(iter(counts), 1)
    missing = 0 if wholes else count - len(parts)
    if missing:
        # The first few by number, however many shards the summaries claim.
        first = list(itertools.islice((k for k in range(1, count + 1) if k not in parts), 10))
        more = f" and {missing - len(first)} more" if missing > len(first) else ""
        out.append(f"shard(s) {', '.join(map(str, first))}{more} of {count} are missing")
    if rows_found < expected:
        out.append(f"{expected - rows_found} of {expected} row(s) of the job's matrix have no record")
    if skipped:
        out.append(f"{skipped} row(s) were skipped (never answered)")
    # Two files of one shard (a shard run again into a new file) are said beside what is short,
    # where they explain it; with every shard and row there, their rows are duplicates, counted
    # as such (out-157 F3: exit 12, every row present and answered).
    return not out, [*twice, *out] if out else [], expected
