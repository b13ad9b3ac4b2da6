"""Variable rows from a JSONL or CSV file, read lazily so a 100,000-row dataset is never held whole.

Strict about shape, so no row silently loses a value: a CSV row with fewer or more
fields than the header, a duplicated CSV column or JSON key, a non-UTF-8 byte, an
over-long line, or a file that is not a regular file (a FIFO, a device) is an error
naming the line. A UTF-8 byte-order mark (as spreadsheet programs write) is skipped.

The file is copied as its first whole read goes, line by line, to a private temporary file
(unnamed: nothing is left behind, even by kill -9), and every later pass reads that copy: the
rows a run sends are the rows validation read, whatever happens to the file meanwhile (break35
M1: a file rewritten in place mid-run sent rows never checked, one holding `sk-or-` text among
them, and a malformed line ended a run with exit 2 after 590 paid requests). A line over the
limit ends the copy there (verify35 m1: a 3 GB sparse file was copied whole before its fourth
line was refused).
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import csv
import errno
import os
import sys
import tempfile
import unicodedata
import weakref
from array import array
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import IO, Any

from ._exceptions import JobError, OutputFailed, Problem
from ._files import open_regular
from ._jobfile import key_like_strings
from ._jsonl_row import RowError, jsonl_row
from ._judge import check_kinds
from ._row_identity import REPEAT_HINT, row_key
from ._scrub import KEY_LIKE

MAX_LINE_BYTES = 16 << 20


def unnamed(name: str) -> bool:
    """A variable name with nothing to see in it: empty, spaces, or only control and format
    characters (a zero-width space, NUL) that no report would show (break34 m3, verify34)."""
    return all(unicodedata.category(c)[0] in "CZ" for c in name)


MAX_ROW_PROBLEMS = 20  # a dataset's problems said at once: a million bad rows are not a million lines
MORE_ROWS = "and more rows like these: mend those first"


@contextlib.contextmanager
def _csv_errors(line: int) -> Iterator[None]:
    """csv's errors as a RowError naming the line its row (or field) began on."""
    try:
        yield
    except csv.Error as exc:
        reason = str(exc)
        if reason == "unexpected end of data":
            reason = "a quoted field begun on this line is never closed (a stray or a missing '\"')"
        elif "new-line character seen in unquoted field" in reason:
            reason = "a carriage return (CR) alone ends a line: save it with LF or CRLF line endings"
        raise RowError(line, f"cannot read the CSV: {reason}") from None


ADVICE = "keys belong in the environment, never in data"  # said of key-like text in data


def _key_like(row: dict[str, Any]) -> str | None:
    """A dataset's variable that looks like an API key, refused as one in the job file is (a
    check's reason showed it on the terminal: verify20 V4); a job's own rows are checked there.
    Within a value too: a row's own `checks` carried a key into the results (break44 F7)."""
    for name, value in row.items():
        if KEY_LIKE.search(name) or (isinstance(value, str) and KEY_LIKE.search(value)):
            return f"variable {name!r} looks like an OpenRouter API key: {ADVICE}"
        if key_like_strings(value, ()):
            return f"variable {name!r} holds text that looks like an OpenRouter API key: {ADVICE}"
    return None


_NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # a full temporary folder, a file-size limit


class Snapshot:
    """A private copy of a dataset file, made by its first whole read; shared by the prompts
    that name the same file, so they see one version of it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._copy: IO[bytes] | None = None  # once a read went through the whole file

    def lines(self) -> Iterator[bytes]:
        """The raw lines (a line over MAX_LINE_BYTES cut at one byte more): from the copy once
        there is one, else from the file, copied as they are read. The copy is kept only when
        the read reached the end; one cut short (an error, a reader that stopped) is dropped.
        Read with pread, so iterations of one copy keep offsets of their own."""
        if self._copy is not None:
            yield from _pread_lines(self._copy.fileno(), MAX_LINE_BYTES)
            return
        try:
            original = open_regular(self.path)
        except OSError as exc:
            raise RowError(None, f"cannot read dataset: {exc.strerror or exc}") from None
        with original:
            try:
                copy = tempfile.TemporaryFile()  # noqa: SIM115  (kept open: the copy lives as long as this)
            except OSError as exc:
                raise RowError(None, f"cannot make a private copy to read: {exc.strerror or exc}") from None
            try:
                while data := original.readline(MAX_LINE_BYTES + 1):
                    copy.write(data)
                    yield data
                copy.flush()  # read back with pread, under the buffer
            except OSError as exc:  # the file, or its copy (a full temporary folder, a file-size limit)
                with contextlib.suppress(OSError):  # its buffer's flush fails alike: the error is this one
                    copy.close()
                where = tempfile.gettempdir()  # break44 F9: "File too large", naming nothing
                if exc.errno in _NO_ROOM:  # the machine's trouble, not the job's: exit 11 (out-131)
                    raise OutputFailed(
                        f"{self.path}: cannot read it through a private copy in {where}: {exc.strerror}"
                    ) from None
                raise RowError(
                    None, f"cannot read it through a private copy in {where}: {exc.strerror or exc}"
                ) from None
            except BaseException:
                with contextlib.suppress(OSError):
                    copy.close()
                raise
        self._copy = copy
        # Closed when the snapshot goes, or by Job.close: a job dropped unclosed was a
        # ResourceWarning, -W error's failure (break56 F8).
        weakref.finalize(self, copy.close)

    def close(self) -> None:
        """Let the copy go (a later read copies the file again)."""
        copy, self._copy = self._copy, None
        if copy is not None:
            copy.close()


def _pread_lines(fd: int, limit: int) -> Iterator[bytes]:
    """The lines of the file at `fd`, each with its newline, read at an offset of their own; a
    line longer than `limit` comes cut at `limit + 1` bytes, and nothing after it (the caller
    refuses it)."""
    offset = 0
    pending: list[bytes] = []  # a line's start, from earlier chunks
    pending_size = 0
    while chunk := os.pread(fd, 1 << 16, offset):
        offset += len(chunk)
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            piece = chunk[start : end + 1]
            if pending:
                piece, pending, pending_size = b"".join([*pending, piece]), [], 0
            yield piece
            start = end + 1
        if start < len(chunk):
            pending.append(chunk[start:])
            pending_size += len(chunk) - start
            if pending_size > limit:
                yield b"".join(pending)[: limit + 1]
                return
    if pending:
        yield b"".join(pending)


class DatasetFile:
    """Rows of variables in a file next to the job. Iterating re-reads its copy (Snapshot) each time."""

    def __init__(self, path: Path, shown_as: str, snapshot: Snapshot | None = None) -> None:
        self.path = path
        self.shown_as = shown_as  # the name as the job file wrote it, for messages
        self.counted: int | None = None  # its rows, once `check` has read them all
        self.snapshot = snapshot or Snapshot(path)
        self.check_kinds: set[str] | None = None  # what its rows' checks hold (_judge.check_kinds), once read

    def __len__(self) -> int:
        """Its rows: as `check` counted them at load time, else read again (each row parsed)."""
        if self.counted is None:
            self.counted = sum(1 for _ in self)
        return self.counted

    @property
    def is_csv(self) -> bool:
        return self.path.suffix.lower() == ".csv"

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The rows, read as the run goes; a file broken since validation is a JobError."""
        try:
            for _line, row in self.rows_with_lines():
                yield row
        except RowError as exc:
            raise JobError([Problem(str(self.path), exc.line, None, "", exc.message)]) from None

    def _lines(self, bad: list[RowError] | None = None) -> Generator[str, None, None]:
        """The file's lines as text, each decoded on its own so a bad byte is named by its line.
        A JSONL line that is not UTF-8 goes to `bad`, when given, and the reading goes on; one past
        the line cap ends it (the rest, maybe a GiB, is not copied: verify35)."""
        for number, data in enumerate(self.snapshot.lines(), start=1):
            if len(data) > MAX_LINE_BYTES:
                raise RowError(number, f"a line over {MAX_LINE_BYTES:,} bytes")
            if number == 1 and data.startswith(codecs.BOM_UTF8):
                data = data[len(codecs.BOM_UTF8) :]  # spreadsheets write one; it is no part of a name
            try:
                yield data.decode("utf-8")
            except UnicodeDecodeError as exc:
                problem = RowError(number, f"not UTF-8 text ({exc.reason} at byte {exc.start + 1} of the line)")
                if bad is None or self.is_csv:
                    raise problem from None
                bad.append(problem)
                yield ""  # a blank line in its place: the line numbers after it stay right

    def rows_with_lines(self, bad: list[RowError] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
        """(line number, row) pairs; raises RowError with the line for a malformed row, or, given
        `bad`, puts a malformed JSONL row there and goes on (validate names every one)."""
        lines = self._lines(bad)
        try:
            yield from self._csv_rows(lines, bad) if self.is_csv else self._jsonl_rows(lines, bad)
        finally:
            lines.close()

    @staticmethod
    def _csv_rows(lines: Iterator[str], bad: list[RowError] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
        # strict: a quote opened and never closed is an error, not every later line read into
        # one field (break48 F1: 4 rows became 2, validate ok, exit 0).
        reader = csv.DictReader(lines, strict=True)
        with _csv_errors(1):
            fieldnames = reader.fieldnames
        if not fieldnames:
            raise RowError(1, "the CSV file has no header row")
        names = list(fieldnames)
        # Counted once: names.count() for each name was quadratic, 100,000 columns held start-up
        # for minutes, deaf to the deadline and to SIGTERM (break65 F3).
        twice = sorted(name for name, seen in collections.Counter(names).items() if seen > 1)
        if twice:
            # Ten named, the rest counted: 50,000 made one line of 489 KB (verify67 F6).
            more = f" and {len(twice) - 10:,} more" if len(twice) > 10 else ""
            raise RowError(1, f"duplicate column(s) {', '.join(map(repr, twice[:10]))}{more} in the header")
        if nameless := [str(i) for i, name in enumerate(names, start=1) if unnamed(name)]:
            # A variable named '' was taken, into `vars` and the row's id (break34 m3).
            raise RowError(1, f"column(s) {', '.join(nameless)} of the header have no name")
        if spaced := [name for name in names if name != name.strip()]:
            # `y, x` names a column " x": every row then "lacks x" (break48 F4).
            raise RowError(1, f"column name(s) {', '.join(map(repr, spaced))} of the header begin or end with a space")
        width = len(names)
        while True:
            start = reader.line_num + 1  # a quoted field may run over lines: its row starts here
            with _csv_errors(start):
                row = next(reader, None)
            if row is None:
                return
            if None in row or any(value is None for value in row.values()):
                why = "more fields than the header names" if None in row else f"fewer fields than the header's {width}"
                if bad is None:  # at the line its row began on (out-132 F7: a quoted field ran over lines)
                    raise RowError(start, why)
                bad.append(RowError(start, why))  # each named, as a JSONL file's (out-130 F5)
                if len(bad) > MAX_ROW_PROBLEMS:
                    return
                continue
            yield reader.line_num, dict(row)

    @staticmethod
    def _jsonl_rows(lines: Iterator[str], bad: list[RowError] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield number, jsonl_row(number, line)
            except RowError as exc:
                if bad is None:
                    raise
                bad.append(exc)
                if len(bad) > MAX_ROW_PROBLEMS:
                    return

    def check(self, check_row: Callable[[dict[str, Any]], str | None], job_file: str, json_path: str) -> list[Problem]:
        """Read the whole file once: malformed rows, what `check_row` finds wrong in a row, emptiness;
        then rows with the same variables, found by sorting 8 bytes of each row's key."""
        if not self.path.exists() and not self.path.is_symlink():  # a link loop: said as reading it says
            message = f"dataset file {self.shown_as!r} does not exist ({self.path}: relative to the job file)"
            if not self.shown_as.isascii() and sys.getfilesystemencoding().lower() not in ("utf-8", "utf8"):
                # A UTF-8 name on disk is not found under a latin-1 locale (break36 F2).
                message += f" (file names are {sys.getfilesystemencoding()} here: run under a UTF-8 locale)"
            return [Problem(job_file, None, None, json_path, message)]
        count = 0
        kinds: set[str] = set()
        # 8 bytes a row. A dict of each row's key held ~140 bytes a row: 14 MB for 100,000 rows,
        # the peak of a whole run's memory (bench/memory.py, issue 15).
        prefixes = array("Q")
        # Every malformed or wrong row (validate reports all: break56 F9), up to a screenful.
        bad: list[RowError] = []
        try:
            for number, row in self.rows_with_lines(bad):
                count += 1
                problem = _key_like(row) or check_row(row)
                if problem:
                    bad.append(RowError(number, problem))
                    if len(bad) > MAX_ROW_PROBLEMS:
                        break
                    continue
                key = row_key(row)
                if key is not None:
                    prefixes.append(int.from_bytes(key[:8], "big"))
                kinds |= check_kinds(row.get("checks"))
        except RowError as exc:
            if exc.line is None:  # the file itself (a folder, a FIFO): at the job's line (verify20 V14)
                return [Problem(job_file, None, None, json_path, f"dataset file {self.shown_as!r}: {exc.message}")]
            bad.append(exc)
        if bad:
            bad.sort(key=lambda e: e.line or 0)
            lacking = bad[0].message.startswith("row lacks variable(s)") and bad[0].line is not None
            if len(bad) > 1 and lacking and len({e.message for e in bad}) == 1:
                # The prompt's mistake, said once (its typo `{{contry}}` was a line a row: break65 F6).
                more = "and more rows" if len(bad) > MAX_ROW_PROBLEMS else f"and {len(bad) - 1} more row(s)"
                return [Problem(str(self.path), bad[0].line, None, "", f"{bad[0].message} ({more} alike)")]
            problems = [Problem(str(self.path), e.line, None, "", e.message) for e in bad[:MAX_ROW_PROBLEMS]]
            if len(bad) > MAX_ROW_PROBLEMS:
                problems.append(Problem(str(self.path), None, None, "", MORE_ROWS))
            return problems
        ordered = sorted(prefixes)
        shared = {a for a, b in zip(ordered, ordered[1:], strict=False) if a == b}
        del ordered, prefixes
        if shared and (repeated := self._same_variables(shared)):
            return repeated
        if count == 0:
            # Not "the matrix is empty": prompts with rows of their own still have them (break48).
            message = f"dataset {self.shown_as!r} has no rows: the prompts that read it would send nothing"
            return [Problem(job_file, None, None, json_path, message)]
        self.counted = count  # a run's size check and its summary count the matrix from it
        self.check_kinds = kinds
        return []

    def _same_variables(self, shared: set[int]) -> list[Problem]:
        """Rows whose whole key an earlier row has, among rows whose 8-byte prefixes repeat: each, up to a screenful."""
        seen: dict[bytes, int] = {}
        problems: list[Problem] = []
        for number, row in self.rows_with_lines():
            key = row_key(row)
            if key is not None and int.from_bytes(key[:8], "big") in shared and seen.setdefault(key, number) != number:
                if len(problems) == MAX_ROW_PROBLEMS:
                    return [*problems, Problem(str(self.path), None, None, "", MORE_ROWS)]
                repeated = f"the same variables as line {seen[key]}, {REPEAT_HINT}"
                problems.append(Problem(str(self.path), number, None, "", repeated))
        return problems  # empty: the prefixes alone were shared (about once in 2**64 pairs)
