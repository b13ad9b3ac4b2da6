"""A page or a JUnit file written where the user named it: whole or not at all, scrubbed of the
environment's keys, through its symlinks, or streamed into a pipe or device."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from pathlib import Path

from ._exceptions import OutputFailed
from ._output_paths import current_umask
from ._results import RESULTS_MODE
from ._scrub import environment_scrubber

_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def write_report_file(path: Path, text: str) -> None:
    """Write a page or a JUnit file where the user named it, whole or not at all, scrubbed of
    the environment's keys as the terminal's output is (break23 F4: a results file holding
    the key, edited or written by an older version, put it whole into the page, the artifact
    a CI shares most, while the terminal, --json and --markdown showed `[key]`).

    A regular file (or none yet) is replaced atomically at the end of its symlinks: a link
    stays a link, and a reader (a CI upload) never sees half a file. A pipe, FIFO or device
    (`--html /dev/stdout`) is written as a stream, since it cannot be replaced (break21 R23:
    a link was replaced by a regular file; R24: a JUnit file cut by a full disk was left
    behind, and neither failure named the file)."""
    # Control characters a server put in a reason (NUL, ESC...) are not text a page or XML may
    # hold (verify30 N7); a lone surrogate is "?", not a traceback.
    data = _CONTROLS.sub("\ufffd", environment_scrubber().text(text)).encode("utf-8", "replace")
    try:
        try:
            mode: int | None = os.stat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):  # a folder on the way that is a file: below
            mode = None
        if mode is not None and stat.S_ISDIR(mode):
            raise OutputFailed(f"{path}: is a folder: name the file to write")
        descriptor = _a_descriptor(path) if mode is not None else None
        if descriptor is not None and descriptor >= 0 and stat.S_ISREG(mode or 0):
            # `--junit /dev/stderr` with stderr a log file: written into it, where it is, at its
            # offset. Replaced by name, a log deleted since it was opened became a new file
            # "log (deleted)" (out-154 F2); reopened, it was written over from its start.
            with os.fdopen(os.dup(descriptor), "wb") as out:
                out.write(data)
            return
        if mode is not None and (not stat.S_ISREG(mode) or descriptor is not None):
            _stream_into(path, data)
            return
        target = path.resolve()
        # A new page or JUnit file as results are, never writable by others (break38 F6: 0666 under umask 000).
        kept = stat.S_IMODE(mode) if mode is not None else RESULTS_MODE & ~current_umask()
        if target.parent.exists() and not target.parent.is_dir():
            raise OutputFailed(f"{path}: cannot write it: {target.parent} is not a folder")
        if path.is_symlink() and not target.parent.exists():
            # The folders asked for are the user's path's, not a dangling link's: through
            # one, `/nonexistent/dir/` was made (break23).
            raise OutputFailed(f"{path}: cannot write it: its link leads into {target.parent}, which does not exist")
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
        try:
            # The file's own mode when it exists (a page made private stays private: verify21
            # V14), else as other outputs, not mkstemp's 0600.
            os.fchmod(handle, kept)
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as exc:
        raise OutputFailed(f"{path}: cannot write it: {exc.strerror or exc}{_earlier_removed(path)}") from None


def _earlier_removed(path: Path) -> str:
    """The file this write was to replace, removed (which needs no room): left as it was, last
    night's green JUnit file or page stood for a run whose own could not be written (break31 M4)."""
    try:
        if not path.is_file():
            return ""
    except OSError:
        return ""
    try:
        path.unlink()  # a link is removed, not what it leads to
    except OSError as exc:  # a read-only folder (verify32 n6): said, as it still stands
        return f" (the earlier file there could not be removed either, {exc.strerror or exc}: it is not this run's)"
    return " (the earlier file there was removed, so that it does not stand for this run)"


_DESCRIPTOR = re.compile(r"/(?:proc/(self|\d+)|dev)/fd/(\d+)")
_STANDARD = {"/dev/stdout": 1, "/dev/stderr": 2}


def _a_descriptor(path: Path) -> int | None:
    """The descriptor `path` names (/dev/stderr, /dev/fd/2, /proc/self/fd/2, through links), -1 for
    another process's, or None: its file is the descriptor's, whatever name it has, or had."""
    seen = str(path)
    for _ in range(8):
        if seen in _STANDARD:
            return _STANDARD[seen]
        if found := _DESCRIPTOR.fullmatch(seen):
            own = found.group(1) in (None, "self", str(os.getpid()))
            return int(found.group(2)) if own else -1
        try:
            seen = os.path.join(os.path.dirname(seen), os.readlink(seen))
        except OSError:  # no link (or none readable): the name is the file's
            return None
    return None


def _stream_into(path: Path, data: bytes) -> None:
    """Into a pipe, FIFO or device. Opened without waiting: a FIFO that nobody reads blocked
    the open for ever (verify21 V2); then written as any file, waiting for its reader."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_APPEND)  # a log file's lines are kept
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise OutputFailed(f"{path}: cannot write it: a FIFO that nobody reads") from None
        raise
    os.set_blocking(fd, True)
    # The reader went away (`--html /dev/stdout | head`): quiet, as a report's own stdout is
    # (verify21 V3: "Broken pipe", exit 11, for what `| head` means).
    with contextlib.suppress(BrokenPipeError), os.fdopen(fd, "wb") as out:
        out.write(data)
