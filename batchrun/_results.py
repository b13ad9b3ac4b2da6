"""Results files: an append-only JSONL writer, what a record must hold, and a bounded torn-tail repair.

Supersede rule: a results file may hold several records with the same `id` (a resumed
or retried row is appended again). The **last** record of an id in file order is the
row; every reader batchrun ships (`final_records`, resume, report, diff, merge) applies
this rule, so each sees exactly one record per id.

Durability: each record is written with a single os.write of one whole line, so a
kill -9 loses at most the line being written, which is then a torn tail without its
newline. Before a resume appends, that torn tail is cut, but only in a file whose first
record says it is this job's results, and only when the tail is the start of one record
of bounded size: anything else is refused and left as it is. The file is fsynced every
few seconds and at close, so an OS crash loses at most those seconds.

A failed write (a full disk, a file-size limit) cuts the part of the line it wrote and
refuses every later write, so no line ever follows a torn one; the runner stops
dispatching at the first failure (see `Runner._emit`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ._exceptions import OutputFailed, ResultsError
from ._files import line_start, mapped_length, open_regular
from ._json_text import is_json, valid_text
from ._reader import (
    MAX_RECORD_BYTES,
    ScanResult,
    final_records,
    line_windows,
    looks_like_record_start,
    scan_states,
)
from ._record_head import RowState, money_rounded, record_head
from ._record_shape import record_problem

if TYPE_CHECKING:
    from ._scrub import Scrubber

FSYNC_EVERY_S = 5.0

RESULTS_MODE = 0o644  # results, summaries, merged files: never writable by others, whatever the umask


def results_job(path: Path) -> str | None:
    """The job whose results `path` holds, from its first record; None when it holds none yet.

    Raises ResultsError when the file is not a batchrun results file at all, reading no
    more than one bounded line (a 1 GB file without a newline is refused at once).
    """
    record = first_record(path)
    return None if record is None else str(record["job"])


def first_record(path: Path) -> dict[str, Any] | None:
    """The first record of `path` (as `results_job`), None when it holds none yet."""
    with open_regular(path) as handle:
        line = handle.readline(MAX_RECORD_BYTES + 1)
    if not line:
        return None
    if not line.endswith(b"\n"):
        # One line without a newline: a whole record whose newline never got written is
        # ours to keep; a fragment cannot show whose it is, so it is never ours to cut.
        record = whole_record(line)
        if record is None:
            raise ResultsError(
                f"{path}: not a batchrun results file (only an incomplete line, no whole record to show whose it is)"
            )
        return record
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise ResultsError(f"{path}:1: not a batchrun results file (not JSON)") from None
    problem = record_problem(record)
    if problem is not None:
        raise ResultsError(f"{path}:1: not a batchrun results file ({problem})")
    whole: dict[str, Any] = record
    return whole


def last_record(path: Path) -> dict[str, Any] | None:
    """The record on the last whole line of `path` (a torn tail after it is passed over); None
    when there is none, or that line is not a record. Read from the end, in growing windows."""
    with open_regular(path) as reader:
        size = os.fstat(reader.fileno()).st_size
        window = 1 << 16
        while True:
            start = max(0, size - window)
            reader.seek(start)
            data = reader.read(size - start)
            end = data.rfind(b"\n")
            begin = data.rfind(b"\n", 0, max(end, 0)) + 1
            if start == 0 or (end >= 0 and begin > 0) or window > MAX_RECORD_BYTES:
                return whole_record(data[begin : end + 1]) if end >= 0 else None
            window *= 4


def _count_own(data: mmap.mmap, needle: bytes) -> bool:
    """True when every whole line of `data` can only be a record of the job whose field is
    `needle` (or no record at all): as many needles as lines, and every "job" key in one.
    Each needle holds a "job" key, so equal totals mean no "job" key stands outside a needle
    on any line: a row of another job, however spaced, and however many of this job's values
    a row holds, tips a count (verify22 N5). Counted in the resume scan's windows."""
    needles = keys = lines = 0
    for buffer, begin, finish in line_windows(data):
        segment = buffer[begin:finish]
        needles, keys, lines = (
            needles + segment.count(needle),
            keys + segment.count(b'"job"'),
            lines + segment.count(b"\n"),
        )
    return needles == lines == keys


def foreign_record(path: Path, job: str) -> str | None:
    """Where `path` first holds a record of another job than `job` ("file:line: job 'x'"),
    None when every record is `job`'s. A resume appends only to a file of its own job's rows:
    `results_job` reads the first record only, and a file with another job's rows after them
    became a file that `report --job` and `merge` refuse (break21 V8). Counting the job's own
    field against the lines settles a whole file at memory speed; lines are read one by one
    only when the counts differ (set-aside lines, another job's rows)."""
    needle = b',"job":' + orjson.dumps(job) + b","
    with open_regular(path) as handle:
        if (length := mapped_length(handle.fileno())) == 0:
            return None
        with mmap.mmap(handle.fileno(), length, access=mmap.ACCESS_READ) as data:
            end = data.rfind(b"\n") + 1  # a torn tail is no record yet (repair_torn_tail's)
            if _count_own(data, needle):
                return None
            start, number = 0, 1
            while start < end:
                stop = data.find(b"\n", start, end)
                other = _job_of(data[start:stop]) if stop - start <= MAX_RECORD_BYTES else None
                if other is not None and other != job:
                    return f"{path}:{number}: a record of job {other!r}"
                start, number = stop + 1, number + 1
    return None


def _job_of(line: bytes) -> str | None:
    """The job of a line the readers take as a record (however it is spaced: verify22 N5, a
    foreign row written by another JSON writer passed the byte match), else None."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None  # not a record: the scan sets it aside and says so
    if not isinstance(record, dict) or record_problem(record) is not None:
        return None
    job = record.get("job")
    return job if isinstance(job, str) else None


def whole_record(line: bytes) -> dict[str, Any] | None:
    """`line` parsed when it is one whole batchrun record, else None."""
    if len(line) > MAX_RECORD_BYTES:
        return None
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return record if record_problem(record) is None else None


def repair_torn_tail(path: Path, job: str) -> str | None:
    """Mend a last line without a newline; returns what was done, None when nothing was needed.

    A whole record of `job` that only lacks its newline is kept and the newline added (its
    row is not sent and paid again). Otherwise only one torn record of at most
    MAX_RECORD_BYTES is ever cut; a longer tail, or one that is not the start of a record, is a
    ResultsError naming the `truncate -s` that keeps the records before it (out-174 F7: a long
    one's named none), the file left untouched. Call it only on a file `results_job` knows as `job`'s."""
    with open_regular(path) as reader:
        size = os.fstat(reader.fileno()).st_size
        if size == 0:
            return None
        start = max(0, size - MAX_RECORD_BYTES - 1)
        reader.seek(start)
        window = reader.read(size - start)
    if window.endswith(b"\n"):
        return None
    cut = window.rfind(b"\n")
    if cut < 0 and start > 0:
        raise ResultsError(
            f"{path}: the last line is longer than {MAX_RECORD_BYTES:,} bytes and has no newline: not a torn record; "
            f"the file was left as it is (to keep the records before it: truncate -s {line_start(path, start)} {path})"
        )
    tail = window[cut + 1 :]
    whole = whole_record(tail)
    if whole is not None:
        if whole["job"] != job:
            raise ResultsError(
                f"{path}: the last line is a record of job {whole['job']!r}, not {job!r}; the file was left as it is"
            )
        with path.open("ab") as handle:
            handle.write(b"\n")
        return "added the missing newline after its last record"
    keep = size - len(tail)
    # Blocks a crash left zero-filled, after the torn record (break67 F3) or before it (a later
    # write that reached the disk when earlier ones had not: out-160), are no record.
    torn = tail.strip(b"\0")
    zeros = not torn
    if not zeros and (not looks_like_record_start(torn) or is_json(torn)):
        # Whole JSON is no torn record: no record's start alone is JSON (out-125 F4: a hand-written
        # `{"id":"note",...}` was cut as one).
        raise ResultsError(
            f"{path}: the last line ({len(tail)} bytes, no newline) is not a torn record; the file was left as it "
            f"is (to keep the records before it: truncate -s {keep} {path})"
        )
    with path.open("rb+") as handle:
        handle.truncate(keep)
    if zeros:
        return f"cut a tail of {len(tail)} NUL byte(s) (blocks an earlier crash left zero-filled)"
    return f"cut a torn last record ({len(tail)} bytes) left by an earlier crash"


def _encoded(record: dict[str, Any]) -> bytes:
    record = money_rounded(record)
    try:
        return orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError as exc:
        # A lone surrogate that got past the readers (a grader's reason did: break31 C1) is
        # made U+FFFD, as in an answer, rather than stop the run; a figure JSON cannot hold fails.
        try:
            cleaned = valid_text(json.loads(json.dumps(record)))
        except (TypeError, ValueError, RecursionError):
            raise exc from None
        return orjson.dumps(cleaned, option=orjson.OPT_NON_STR_KEYS)


_MOVED = "the results file was moved or replaced during the run: its rows are in the file it became"


class ResultsWriter:
    """Appends one record per line; whole lines only, flushed to the OS as they are written."""

    def __init__(self, path: Path, fsync_every_s: float = FSYNC_EVERY_S, create: bool = True) -> None:
        self.path = path
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        # Not `create`: rows written again at the end go to the run's file or nowhere; a file moved
        # away meanwhile was made again, empty, beside a summary of 800 rows (break67 F2).
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | (os.O_CREAT if create else 0), RESULTS_MODE)
        opened = os.fstat(self._fd)
        self._size = opened.st_size  # where the last whole line ends
        self._identity = (opened.st_dev, opened.st_ino)
        self._where = Path.cwd() / path  # a library caller's chdir is no move; `..` left to the kernel
        self.cut_short = False  # the file was cut or moved under the run: `size` is what it wrote
        self.cut_to: int | None = None  # where the record that showed the file cut short begins in it now
        self._fsync_every_s = fsync_every_s
        self._last_fsync = time.monotonic()
        self.failure: OutputFailed | None = None
        self.last_line = b""  # the last record written, as written (a library caller's copy is read from it)
        self.scrub: Scrubber | None = None  # the run's secrets, masked in every line written (Scrubber.line)

    @property
    def size(self) -> int:
        """Where the next record will start (the end of the last whole line)."""
        return self._size

    def _fail(self, doing: str, exc: OSError) -> OutputFailed:
        # Cut what the failed write put down, so no later line follows a torn one; never past the
        # file's end: a file cut short under the run was padded with NULs, never resumed (break67 F3).
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, min(self._size, os.fstat(self._fd).st_size))
        self.failure = OutputFailed(f"{self.path}: {doing} failed: {exc.strerror or exc}")
        return self.failure

    def write(self, record: dict[str, Any], request: bytes | None = None) -> None:
        """Append one record; `request`, the exact JSON body sent, goes in as the last field
        without being decoded and encoded again. Raises OutputFailed, then refuses every
        later write."""
        if self.failure is not None:
            raise self.failure
        # orjson keeps insertion order (the head first), writes UTF-8, and is the hot path.
        try:
            text = _encoded(record)
            if self.scrub is not None:
                text = self.scrub.line(text)
        except orjson.JSONEncodeError as exc:
            # A value JSON cannot hold (an integer past 64 bits, a lone surrogate) got past
            # the reply parser: the row is paid for, so it must not vanish while the run
            # says "complete" (break14b C11). The run stops with the IO exit instead.
            self.failure = OutputFailed(f"{self.path}: a record could not be encoded ({exc}); the run stopped")
            raise self.failure from None
        if request is not None and len(text) + len(request) + 12 > MAX_RECORD_BYTES:
            # Readers set aside a line past MAX_RECORD_BYTES: the row, paid for, was lost to
            # every one of them, and a resume never sent it again (break14h H11: a 36 MiB body
            # from a 12 MiB variable used three times). The body is the job's to rebuild.
            text = text[:-1] + b',"request_omitted_bytes":' + str(len(request)).encode() + b"}"
            request = None
        data = text + b"\n" if request is None else text[:-1] + b',"request":' + request + b"}\n"
        if len(data) > MAX_RECORD_BYTES:
            # Still past it (a dataset variable of many MiB beside a long answer): a stop the
            # exit code names, as for a record that cannot be encoded, never a row lost unseen.
            self.failure = OutputFailed(
                f"{self.path}: a record of {len(data):,} bytes is past the {MAX_RECORD_BYTES:,} a reader takes "
                "for a line; the run stopped"
            )
            raise self.failure
        try:
            # Cut under the run, maybe into a record: on a line of its own, the record that shows
            # it is read (out-103 F9: glued to the fragment, its row was bought again).
            written = b"\n" + data if 0 < os.fstat(self._fd).st_size < self._size else data
            view = memoryview(written)
            while view:
                view = view[os.write(self._fd, view) :]
            self._size += len(written)
            stat = os.fstat(self._fd)
            if (problem := self._file_problem(stat)) is not None and stat.st_nlink:
                # Appended at the cut file's end: the journal's offsets from before are past it (verify69 F6).
                self.cut_to = max(0, stat.st_size - len(data))
            now = time.monotonic()
            if now - self._last_fsync >= self._fsync_every_s:
                os.fsync(self._fd)
                self._last_fsync = now
                problem = problem or self._path_problem()
        except OSError as exc:
            raise self._fail("writing a record", exc) from None
        self.last_line = data
        if problem is not None:
            raise self._stopped(problem)

    def _file_problem(self, stat: os.stat_result) -> str | None:
        """What happened to the file under the run, or None. Deleted (its folder removed): every later
        row would be paid for and lost with the inode. Cut short (logrotate's copytruncate, `: >`):
        the run said "complete" of 800 rows the file did not hold, and a resume bought them again
        past the budget (break67 F1)."""
        if stat.st_nlink == 0:
            return "the results file was deleted during the run"
        if stat.st_size < self._size:
            return (
                f"the results file was cut short during the run ({stat.st_size:,} of the {self._size:,} bytes "
                "written are left): rows written before are gone from it; the run stopped"
            )
        return None

    def cut_since(self) -> str | None:
        """Once the run has ended: the file cut short, moved or removed after its last record (the
        end-of-run lookups and /key read take a while): exit 0 and "complete" of rows gone (verify69 F3).
        A copy at least as long put in its place (a backup tool's cp and mv) holds the rows (verify70 F3)."""
        try:
            now = os.stat(self._where)
        except OSError:  # gone, or its folder replaced by a file (verify70 F1)
            now = None
        if now is not None and now.st_size >= self._size:
            return None
        if now is None or (now.st_dev, now.st_ino) != self._identity:
            return str(self._stopped(_MOVED))
        left = f"{now.st_size:,} of the {self._size:,} bytes written are left"
        return str(self._stopped(f"the results file was cut short as the run ended ({left})"))

    def _stopped(self, problem: str) -> OutputFailed:
        """The run's stop for what happened to its file: `size` is then what it wrote (its summary keeps it)."""
        self.cut_short = True
        self.failure = OutputFailed(f"{self.path}: {problem}")
        return self.failure

    def _path_problem(self) -> str | None:
        """Whether the path still names the file written (checked at each fsync and at the end): moved
        away, the run wrote on and ended "complete" beside an empty file made again (break67 F2)."""
        try:
            there = os.stat(self._where)
        except OSError:  # gone, or its folder replaced by a file (verify70 F1: a NotADirectoryError, exit 2)
            return _MOVED
        return _MOVED if (there.st_dev, there.st_ino) != self._identity else None

    def close(self) -> None:
        """fsync and close; raises OutputFailed if the data could not be made durable."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            if self.failure is None:
                os.fsync(fd)
                if (problem := self._file_problem(os.fstat(fd)) or self._path_problem()) is not None:
                    raise self._stopped(problem)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: nothing to sync on this kind of file
                self.failure = OutputFailed(f"{self.path}: syncing to disk failed: {exc.strerror or exc}")
                raise self.failure from None
        finally:
            os.close(fd)


__all__ = [
    "MAX_RECORD_BYTES",
    "ResultsWriter",
    "RowState",
    "ScanResult",
    "final_records",
    "foreign_record",
    "record_head",
    "record_problem",
    "repair_torn_tail",
    "results_job",
    "first_record",
    "last_record",
    "scan_states",
]
