"""Where the CLI's output goes, written so that output trouble never fails a finished run.

stdout closed by the reader (`batchrun report ... | head`), an encoding that cannot show
an answer (`PYTHONIOENCODING=ascii`), or a `GITHUB_STEP_SUMMARY` that cannot be written
must not turn a run that succeeded (and spent money) into a failure or a traceback: the
streams here swallow such errors, remember them, and the CLI reports them as warnings.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from ._files import file_identity, open_regular
from ._formats import one_line, visible
from ._output_paths import report_output_problem
from ._scrub import Scrubber, environment_scrubber, hide_keys


def _descriptor(stream: TextIO) -> int | None:
    """The file descriptor under a process's own text stream (sys.stdout, sys.stderr), its
    buffer flushed; None for one in memory."""
    if not isinstance(stream, io.TextIOWrapper):
        return None
    try:
        stream.flush()
        return stream.fileno()
    except (OSError, ValueError):  # no descriptor (a test's capture), or one closed
        return None


def _write_all(descriptor: int, data: bytes) -> None:
    """All of `data`, or an OSError: CPython's buffered stdout takes a short write (a disk full
    part way) as done and drops the rest without a word: `report --json > r.json` wrote 8,192
    of 10,315 bytes, exit 0 (break42 F4). The next write after a short one says why it was."""
    view = memoryview(data)
    while view:
        written = os.write(descriptor, view)
        if not written:
            raise OSError(errno.EIO, "nothing more could be written")
        view = view[written:]


class SafeStream:
    """A text stream whose write never raises: unencodable characters are escaped, and a
    broken pipe or a failed write is remembered in `failure` instead. With `plain`, control
    characters are shown escaped (stdout: nothing batchrun prints there is a terminal code)."""

    def __init__(
        self,
        stream: TextIO,
        flush_each: bool = False,
        scrub: Scrubber | None = None,
        plain: bool = False,
        closed: bool = False,
    ) -> None:
        self.stream = stream
        self.flush_each = flush_each
        self.failure: OSError | None = None
        self.scrub = scrub
        self.plain = plain
        self.closed = closed  # closed when the process started (its descriptor is /dev/null now)
        self.descriptor = _descriptor(stream) if flush_each else None

    def write(self, text: str) -> int:
        if self.closed and self.failure is None and text:
            # Written to nothing: said as a reader gone is (break35 F3: a failing run's summary
            # vanished without a word under `>&-`).
            self.failure = OSError(errno.EBADF, "it was closed when batchrun started")
        if self.failure is not None:
            return 0
        if self.scrub is not None:
            text = self.scrub.text(text)
        if self.plain:
            text = visible(text)
        try:
            if self.descriptor is not None:
                _write_all(self.descriptor, text.encode(self.encoding, "backslashreplace"))
                return len(text)
            try:
                self.stream.write(text)
            except UnicodeEncodeError:
                encoding = getattr(self.stream, "encoding", None) or "ascii"
                self.stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
            if self.flush_each:
                self.stream.flush()
        except OSError as exc:  # BrokenPipeError, EIO, ENOSPC on a redirected stream
            self.failure = exc
        return len(text)

    def flush(self) -> None:
        if self.failure is None:
            try:
                self.stream.flush()
            except OSError as exc:
                self.failure = exc

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", None) or "utf-8"


class Console:
    """stdout and stderr as SafeStreams; tests pass their own streams."""

    def __init__(self, out: TextIO, err: TextIO, out_closed: bool = False) -> None:
        scrub = environment_scrubber()
        self.out = SafeStream(out, flush_each=True, scrub=scrub, plain=True, closed=out_closed)
        self.err = SafeStream(err, flush_each=True, scrub=scrub)
        self.warnings: list[str] = []
        self.said: list[str] = []  # every line said on stderr, warnings too

    def error(self, message: str) -> None:
        # Key-like text in what a user typed (an option's value, a file name) is not repeated
        # either: the environment's keys are scrubbed by the stream (verify20 V6).
        # One line, whatever a file name in it holds (verify21 V18: a newline forged a line);
        # control codes escaped here, where the progress bar's own codes do not pass.
        line = one_line(hide_keys(message))
        self.said.append(line)
        self.err.write(f"batchrun: {line}\n")

    def to_err(self, text: str) -> None:
        """Text for stderr that is no message of batchrun's own (a summary under --quiet): its
        control codes escaped, as stdout's are. A server's escapes in it reached cron mail and a
        terminal raw (window title, clipboard, a forged line: break53 F2)."""
        self.err.write(visible(text))

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.error(f"warning: {message}")

    def stdout_failure(self) -> str | None:
        failure = self.out.failure
        return None if failure is None else (failure.strerror or str(failure))


def is_step_summary(descriptor: int | None) -> bool:
    """Whether `descriptor` (stdout's) is $GITHUB_STEP_SUMMARY's file: `--markdown >>
    "$GITHUB_STEP_SUMMARY"`, GitHub's own idiom, wrote every table twice (break62 F9)."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if descriptor is None or not path:
        return False
    try:
        out, there = os.fstat(descriptor), os.stat(path)
    except OSError:
        return False
    return (out.st_dev, out.st_ino) == (there.st_dev, there.st_ino)


def _holds_json(path: Path) -> bool:
    try:
        with open_regular(path) as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith((b"{", b"["))


def append_step_summary(markdown: str, keep: Iterable[Path] = ()) -> str | None:
    """Append to $GITHUB_STEP_SUMMARY if set; the reason it failed, or None.

    Only to a regular file, opened without waiting: a FIFO with no reader hung a run after its
    work, past SIGTERM (break21 R30). Never to a results file or one of its sidecars, which
    the Markdown would corrupt (R31), whatever the variable says."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return None
    where = f"GITHUB_STEP_SUMMARY {path}"
    if path == os.devnull:
        return None  # switched off on purpose (verify21 V16)
    refused = report_output_problem(Path(path), "a step summary")
    suffix = Path(path).resolve().suffix.lower()
    if refused is None and suffix in (".csv", ".yaml", ".yml"):
        # A dataset's or a job's name: set to the job's CSV, it had the Markdown appended, and the
        # next gate read it as rows (verify35 m3). GitHub's own step summary file has no suffix.
        refused = f"{path}: a step summary is not appended to a dataset or a job file ({suffix})"
    target = file_identity(Path(path))
    if refused is None and (same := [kept for kept in keep if file_identity(kept) == target]):
        refused = f"{path}: a step summary is not appended to {same[0]}, which this command reads or writes"
    if refused is None and _holds_json(Path(path)):
        # A json_schema file a dataset row names, which no job file shows (out-111 F2): no step
        # summary's Markdown begins as JSON does.
        refused = f"{path}: it holds JSON (a json_schema file?): a step summary is not appended to it"
    if refused is not None:
        return f"GITHUB_STEP_SUMMARY {refused}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o666)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return f"{where}: cannot be written: a FIFO that nobody reads"
        return f"{where}: cannot be written: {exc.strerror or exc}"
    try:
        with os.fdopen(fd, "a", encoding="utf-8") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return f"{where}: cannot be written: not a regular file"
            handle.write(environment_scrubber().text(markdown) + "\n")
    except (OSError, UnicodeError) as exc:
        return f"{where}: cannot be written: {getattr(exc, 'strerror', None) or exc}"
    return None
