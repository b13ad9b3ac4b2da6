"""Reading results files: one final record per id for report, diff and merge; a fast state scan for resume.

Every reader opens regular files only (never a FIFO or a device), reads lines of bounded
length, and never reads the torn tail a crash leaves. The first line must be a batchrun
record, or the file is refused as not a results file. A later line that is not a record
(a fragment left by a disk that filled up and recovered, a line another tool wrote) is
set aside with a warning naming the file and line, instead of refusing the whole file.
"""

from __future__ import annotations

import mmap
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from ._exceptions import ResultsError
from ._files import mapped_length, open_regular
from ._fold import Earlier
from ._journal_file import Crashed, crash_fields, journal_job, journal_path, unrecorded_attempts
from ._killed_run import KeySeen
from ._pricing import MAX_USD
from ._record_head import LINE_HEADS, RECORD_START, RowState, parse_state, record_head, state_blob
from ._record_shape import head_problem, record_problem

Warn = Callable[[str], None]
# The longest line a reader takes as a record, and the longest torn tail a resume cuts.
# A record holds a request and an answer, both bounded well below this by the client.
MAX_RECORD_BYTES = 32 << 20


def is_unread_line(message: str) -> bool:
    """Whether a reader's warning is of a line it did not read as a record (set aside, or a
    torn tail): `report` counts them where CI reads (verify21 V21)."""
    return ": set aside: " in message or ": not read: " in message


# Lines named one by one before the rest are counted: a file whose first line was edited by
# hand set every other line aside, a warning each (break27 m14: 100,000 for 100,000 rows).
MAX_LINE_WARNINGS = 5
_MORE_LINES = re.compile(r": set aside: ([\d,]+) more line\(s\)")


def unread_lines(message: str) -> int:
    """How many lines a reader's warning says it did not read as records."""
    more = _MORE_LINES.search(message)
    return int(more[1].replace(",", "")) if more else int(is_unread_line(message))


class _LineWarnings:
    """A file's warnings, with those of lines set aside after the first few counted instead."""

    def __init__(self, warn: Warn, path: Path) -> None:
        self._warn, self._path = warn, path
        self.shown = self.hidden = 0

    def __call__(self, message: str) -> None:
        if is_unread_line(message):
            if self.shown >= MAX_LINE_WARNINGS:
                self.hidden += 1
                return
            self.shown += 1
        self._warn(message)

    def close(self) -> None:
        if self.hidden:
            self._warn(f"{self._path}: set aside: {self.hidden:,} more line(s) not read as records, as above")


def _ignore(_message: str) -> None:
    return None


def _open(path: Path) -> BinaryIO:
    try:
        return open_regular(path)
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such results file") from None
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read results: {exc.strerror or exc}") from None


def looks_like_record_start(fragment: bytes) -> bool:
    return fragment[: len(RECORD_START)] == RECORD_START[: len(fragment)]


def _lines(path: Path, handle: BinaryIO, warn: Warn) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of every whole line; over-long lines are set aside, the torn tail never read."""
    number = 0
    while True:
        line = handle.readline(MAX_RECORD_BYTES + 1)
        if not line:
            return
        if not line.endswith(b"\n"):
            if len(line) <= MAX_RECORD_BYTES:  # the end of the file: a torn tail, or nothing whole at all
                # NULs around it, or alone: the blocks an OS crash leaves zero-filled (out-157 F4, out-160).
                if number == 0 and not looks_like_record_start(line.strip(b"\0")):
                    raise ResultsError(f"{path}: not a batchrun results file (no complete line)")
                # Said, not dropped silently (break21 R19): a CI step reading a cut file sees it.
                torn = "the last line is incomplete (still being written, or cut by a crash)"
                warn(f"{path}:{number + 1}: not read: {torn}")
                return
            number += 1
            if number == 1:  # refused at once: a 1 GB single line is not read to its end
                raise ResultsError(f"{path}:1: not a batchrun results file (a line over {MAX_RECORD_BYTES:,} bytes)")
            while (rest := handle.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass  # skip the rest of the over-long line without holding it
            warn(f"{path}:{number}: set aside: a line over {MAX_RECORD_BYTES:,} bytes is not a record")
            continue
        number += 1
        if len(line) > 1:
            yield number, line


def _parse(path: Path, number: int, line: bytes, warn: Warn) -> dict[str, Any] | None:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        # An editor's byte-order mark is invisible where it is (break21 R20).
        problem: str | None = "it starts with a byte-order mark" if line.startswith(b"\xef\xbb\xbf") else "not JSON"
    else:
        problem = record_problem(record)
    if problem is None:
        result: dict[str, Any] = record
        return result
    if number == 1:
        raise ResultsError(f"{path}:1: not a batchrun results file ({problem})")
    warn(f"{path}:{number}: set aside: not a batchrun record ({problem})")
    return None


def final_records(
    path: Path | str, warn: Warn = _ignore, other_jobs: bool = False, journal: bool = True
) -> Iterator[dict[str, Any]]:
    """Exactly one record per id, the last valid one written, in the order of their last writes,
    with the costs of the records it superseded folded in (_fold: they were paid for too).

    Raises ResultsError when `path` is not a results file (a first line that is not a
    record); later lines that are not records go to `warn` and are skipped, and so are rows of
    another job than the first record's, unless `other_jobs`: `report --job` and `merge` take
    them, to refuse the file (exit 2, naming a foreign row: verify21 V8, V9).
    """
    path = Path(path)  # the public API's readers take a str too
    warnings = _LineWarnings(warn, path)
    last: dict[str, int] = {}
    superseded: set[int] = set()  # valid lines a later record of their row replaced
    job: tuple[Any, Any] | None = None
    with _open(path) as handle:
        for number, line in _lines(path, handle, warnings):
            record = _parse(path, number, line, warnings)
            if record is not None and job is not None and record["job"] != job[0] and not other_jobs:
                # A file is one job's (a run refuses another job's output): a row of another,
                # pasted or appended by hand, would be counted as this job's (break21 R17).
                warnings(f"{path}:{number}: set aside: a row of job {record['job']!r} in a file of job {job[0]!r}")
                continue
            if record is not None:
                job = job or (record.get("job"), record.get("job_fingerprint"))
                before = last.get(record["id"])
                if before is not None:
                    superseded.add(before)
                last[record["id"]] = number
    warnings.close()
    # Attempts a kill -9 left in flight (the journal beside the file): each is its row's newest
    # state, as the next run on the file would record it (_journal), never a known $0 (N10).
    crashed = unrecorded_attempts(path) if journal else {}  # without: what the records say (_journal)
    if crashed:
        warn(
            # A kill, or a run whose results could not be written (exit 11 keeps its journal):
            # "killed" named a cause that was not there (break27 m13).
            f"{journal_path(path)}: {len(crashed)} row(s) had attempts in flight when the run ended without "
            "recording them (killed, or its results could not be written): counted as unknown costs, their worst "
            "cases held"
        )
    for row in crashed:
        if row in last:
            superseded.add(last.pop(row))
    keep = set(last.values())
    earlier: dict[str, Earlier] = {}  # only rows with several records
    copies = 0
    with _open(path) as handle:
        for number, line in _lines(path, handle, _ignore):
            if number in superseded:
                record = orjson.loads(line)
                copies += not earlier.setdefault(record["id"], Earlier()).add(record)
            elif number in keep:
                record = orjson.loads(line)
                folding = earlier.pop(record["id"], None)
                if folding is not None:
                    copies += folding.drop_copy(record)
                yield record if folding is None else folding.fold(record)
    if copies:
        # `merge` counts a copy in another file once (verify30 N4); one in the same file was
        # counted twice in every reader (break40 F3).
        warn(f"{path}: {copies} record(s) are copies of an earlier line (the same attempt): counted once")
    for row, attempts in crashed.items():
        record = crashed_record(attempts, job or journal_job(path))
        folding = earlier.pop(row, None)
        yield record if folding is None else folding.fold(record)


def crashed_record(crashed: Crashed, job: tuple[Any, Any] | None) -> dict[str, Any]:
    """A row whose attempts a crash left in flight, as a reader counts it: skipped (crashed),
    each attempt's worst case held, its cost unknown."""
    fields = crash_fields(crashed, {})
    record = record_head(crashed.row, "", "skipped", "crashed", True, None, fields.pop("spent"))
    record.update(
        job=job[0] if job else None,
        job_fingerprint=job[1] if job else None,
        model=crashed.model,
        prompt_id=crashed.prompt_id,
        vars={},
        repeat=crashed.repeat,
        **fields,
        attempts=len(crashed.attempts),
    )
    return record


# -- the resume scan ----------------------------------------------------------------------------
_WINDOW = 1 << 24


@dataclass
class ScanResult:
    """The last state of every row of a results file."""

    _states: dict[bytes, bytes]
    spent_usd: float  # over every record, superseded ones too: they were paid for
    lines: int
    key_gap_usd: float = 0.0  # what a crashed run's key window counted beyond its records (_journal)
    regrade: dict[str, dict[str, Any]] = field(default_factory=dict)  # ok rows a stop left ungraded (_ungraded)
    key_seen: KeySeen | None = None  # a crashed run's last reading of the key (_killed_run)
    # How far the resume's lookups of earlier rows' unknown costs moved `spent_usd` (_earlier_costs):
    # the file changed after its summary by them, not by an edit that took spend away.
    costs_moved_usd: float = 0.0
    runs_complete: bool = False  # the summary's `runs` were every run of the file (_key_bounds)
    costs_raised_usd: float = 0.0  # of which, rows whose costs were learnt higher than counted, and crashed attempts'

    def __len__(self) -> int:
        return len(self._states)

    def get(self, row_id: str) -> RowState | None:
        blob = self._states.get(row_id.encode())
        return None if blob is None else parse_state(blob)

    def ids(self, status: str | None = None) -> set[str]:
        return {k.decode() for k, v in self._states.items() if status is None or parse_state(v).status == status}


def spent_on(record: dict[str, Any]) -> float:
    """What a record counts as spent (`spent`: its answer and grading, with the worst case
    held for any attempt of unknown cost); `cost` for files written before `spent` existed."""
    return _money(record.get("spent", record.get("cost")))


def _money(value: Any) -> float:
    """A money field as the file's spend counts it: 0 unless a number from 0 to MAX_USD."""
    try:
        amount = float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return min(amount, MAX_USD) if amount > 0 else 0.0  # NaN and negatives: 0


class _Spend:
    """A file's spend: every record's `spent`, less what a later record of the same row
    `resolves` (written again with a cost learnt late, _late_costs). Never below what the
    records show: a negative `spent` counts 0, and a `resolves` takes away at most the `spent`
    of that row's record before it (a hand-edited or corrupted line made a resume begin at
    "$-2.92 spent" and spend its budget three times over: break14h H14). Records whose `spent`
    is more than their `cost` (held worst cases, grading) are kept by row, since nearly every
    resolved record is one of them; a `resolves` after any other record (a grading held at $0:
    verify14i V6) is settled by a second look at that row's lines (`_unmatched`)."""

    def __init__(self) -> None:
        self.total = 0.0
        self._open: dict[bytes, float] = {}
        self.unmatched: set[bytes] = set()  # rows with a `resolves` after a record not kept

    def add(self, row_id: bytes, spent: float, resolves: float, open_: bool) -> None:
        if resolves:
            if row_id in self._open:
                self.total -= min(resolves, self._open.pop(row_id))
            else:
                self.unmatched.add(row_id)
        self.total += spent
        if open_:
            self._open[row_id] = spent


def _heads(data: mmap.mmap) -> Iterator[tuple[bytes, float, float, bool]]:
    """(row id, spent, resolves, open) of every record in file order, as scan_states reads them."""
    for buffer, begin, finish in line_windows(data):
        segment = buffer[begin:finish]
        found = LINE_HEADS.findall(buffer, begin, finish)
        if len(found) == segment.count(b"\n"):
            for row_id, _blob, cost, spent, resolves in found:
                yield row_id, _money(spent or cost), _money(resolves), bool(spent) and spent != cost
            continue
        for line in segment.split(b"\n")[1:]:
            try:
                record = orjson.loads(line)
                row_id = record["id"].encode()
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            open_ = record.get("spent", record.get("cost")) != record.get("cost")
            yield row_id, spent_on(record), _money(record.get("resolves")), open_


def _unmatched(data: mmap.mmap, rows: set[bytes]) -> float:
    """What the `resolves` of `rows` that found no kept record take away: each at most the
    `spent` of its row's record before it."""
    taken = 0.0
    kept: dict[bytes, float] = {}
    previous: dict[bytes, float] = {}
    for row_id, spent, resolves, open_ in _heads(data):
        if row_id not in rows:
            continue
        if resolves and kept.pop(row_id, None) is None:  # otherwise the first look took it
            taken += min(resolves, previous.get(row_id, 0.0))
        if open_:
            kept[row_id] = spent
        previous[row_id] = spent
    return taken


def _scan_slow(
    path: Path, first: int, lines: list[bytes], states: dict[bytes, bytes], warn: Warn, spend: _Spend
) -> None:
    """Line by line with json, for a window holding lines the fast pattern does not fit."""
    for number, line in enumerate(lines, start=first):
        if not line:
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = None
        if (problem := "not JSON" if record is None else head_problem(record)) is not None:
            warn(f"{path}:{number}: set aside: not a batchrun record ({problem})")
            continue
        row_id = record["id"].encode()
        states[row_id] = state_blob(
            record.get("fingerprint", ""), record["status"], record.get("reason"), bool(record.get("retryable"))
        )
        open_ = record.get("spent", record.get("cost")) != record.get("cost")
        spend.add(row_id, spent_on(record), _money(record.get("resolves")), open_)


def line_windows(data: mmap.mmap) -> Iterator[tuple[bytes | mmap.mmap, int, int]]:
    """(buffer, start, end) spans that each begin at a newline and hold whole lines only."""
    last = data.rfind(b"\n")  # what follows it is a torn tail
    if last < 0:
        return
    first = data.find(b"\n")
    yield b"\n" + data[:first], 0, first + 1  # the first line, given the newline it lacks
    start = first
    while start < last:
        end = last if start + _WINDOW >= last else data.rfind(b"\n", start + 1, start + _WINDOW + 1)
        if end <= start:  # one line longer than a window
            end = data.find(b"\n", start + 1)
        yield data, start, end
        start = end


def scan_states(path: Path, warn: Warn = _ignore) -> ScanResult:
    """id -> state of its last record, from each line's head only (1M lines in about 1.5 s).

    The file is memory-mapped and searched in 16 MiB windows with one regex pass each.
    A raw newline occurs only between records (JSON escapes it inside strings), so the
    pattern, which starts with one, only finds line starts. A window whose match count
    differs from its line count is read line by line with json instead, and lines there
    that are not records go to `warn`. The torn tail of a crash is never read.
    """
    states: dict[bytes, bytes] = {}
    costs: list[bytes] = []  # the `spent` of records that are their cost alone: nearly all
    spend = _Spend()
    lines = 0
    warnings = _LineWarnings(warn, path)
    with _open(path) as handle:
        if (length := mapped_length(handle.fileno())) == 0:
            return ScanResult(states, 0.0, 0)
        with mmap.mmap(handle.fileno(), length, access=mmap.ACCESS_READ) as data:
            for buffer, begin, finish in line_windows(data):
                segment = buffer[begin:finish]
                count = segment.count(b"\n")
                found = LINE_HEADS.findall(buffer, begin, finish)
                if len(found) != count:
                    _scan_slow(path, lines + 1, segment.split(b"\n")[1:], states, warnings, spend)
                else:
                    for row_id, blob, cost, spent, resolves in found:
                        states[row_id] = blob
                        if resolves or (spent and spent != cost):
                            spend.add(row_id, _money(spent or cost), _money(resolves), bool(spent) and spent != cost)
                        else:
                            costs.append(spent or cost)
                lines += count
            if spend.unmatched:
                spend.total -= _unmatched(data, spend.unmatched)
    warnings.close()
    total = spend.total + sum(_money(cost) for cost in costs if cost not in (b"", b"null"))
    return ScanResult(states, max(0.0, total), lines)
