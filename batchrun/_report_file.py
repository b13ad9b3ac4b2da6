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
from ._files import a_descriptor
from ._output_paths import current_umask
from ._results import RESULTS_MODE
from ._scrub import environment_scrubber

# And the bidirectional overrides, isolates and marks (LRM, RLM, ALM: out-159 F7) the terminal
# shows escaped (_formats.visible):
# `invoice\u202efdp.exe` read "invoiceexe.pdf" in a page and a CI's test names (out-158 F5).
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


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
        if mode is not None and not stat.S_ISREG(mode):
            _stream_into(path, data)
            return
        target = path.resolve()
        if not target.exists() and (descriptor := a_descriptor(path)) is not None and descriptor >= 0:
            # `--junit /dev/stderr`, stderr a log deleted since it was opened (`exec 2>log; rm log`,
            # as pytest's capture file is): replaced by name, it became a new file "log (deleted)",
            # one a suite run in TMPDIR (out-154 F2). Written into it, at its offset.
            with os.fdopen(os.dup(descriptor), "wb") as out:
                out.write(data)
            return
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


def _stream_into(path: Path, data: bytes) -> None:
    """Into a pipe, FIFO or device. Opened without waiting: a FIFO that nobody reads blocked
    the open for ever (verify21 V2); then written as any file, waiting for its reader."""
    descriptor = a_descriptor(path)
    try:
        # Our own descriptor (/dev/stderr) as it is: reopened, a socket's (a journal's, a log
        # driver's) was refused, "a FIFO that nobody reads" (out-155 F3).
        fd = (
            os.dup(descriptor)
            if descriptor is not None and descriptor >= 0
            else os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        )
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise OutputFailed(f"{path}: cannot write it: a FIFO that nobody reads") from None
        raise
    os.set_blocking(fd, True)
    # The reader went away (`--html /dev/stdout | head`): quiet, as a report's own stdout is
    # (verify21 V3: "Broken pipe", exit 11, for what `| head` means).
    with contextlib.suppress(BrokenPipeError), os.fdopen(fd, "wb") as out:
        out.write(data)
