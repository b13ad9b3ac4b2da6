"""Opening input files safely: regular files only, and never more than a stated size.

A FIFO would block `open()` forever, `/dev/zero` never ends, and a folder or a socket is
no input at all. Every file batchrun reads on a user's word (job files, datasets, results)
goes through `open_regular`, which opens without blocking, checks with `fstat` that the
thing opened is a regular file, and only then reads.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from ._exceptions import ConfigError, OutputFailed, SharedOutput
from ._limits import MAX_DEPTH


def read_regular_text(path: Path) -> str:
    """A small sidecar's text (a summary, a batch record): OSError if it is not a regular file,
    never a wait (a FIFO there hung `run --resume` and `report`: verification G4)."""
    with open_regular(path) as handle:
        return handle.read().decode("utf-8")


def irregular_kind(mode: int) -> str | None:
    """What a file of this mode is, said for one that is not a regular file; None for one that is."""
    if stat.S_ISREG(mode):
        return None
    return "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"


def mapped_length(fd: int) -> int:
    """How much of an open results file to map: all of it, less a tail of unwritten blocks (a
    hole a crash left). On a full tmpfs, touching a hole through a map is a SIGBUS: the resume
    died with no word, exit 135 (verify69 F8). Read as bytes, a hole is NULs, which a resume cuts."""
    size = os.fstat(fd).st_size
    try:
        hole = os.lseek(fd, 0, os.SEEK_HOLE)
    except OSError:  # a file system that cannot say
        return size
    if hole >= size:
        return size
    try:
        os.lseek(fd, hole, os.SEEK_DATA)
    except OSError:  # ENXIO: nothing written after the hole: a tail
        return hole
    return size  # written data after a hole: mapped whole, as before


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for binary reading; OSError naming it if it is not a regular file."""
    # O_NONBLOCK: opening a FIFO with no writer would otherwise wait forever.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        kind = irregular_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise OSError(errno.EINVAL, f"not a regular file ({kind})", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(path: Path, limit: int) -> bytes:
    """The whole of a regular file, refused (OSError naming it) when larger than `limit` bytes."""
    with open_regular(path) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit:,} bytes", str(path))
    return data


def resolved(path: Path) -> Path:
    """`path.resolve()`, with a symlink loop said as opening the path says it (OSError ELOOP):
    Python 3.11 raises RuntimeError there, which reached the user as a traceback, exit 1
    (break44 F5: a looping -o or dataset)."""
    try:
        return path.resolve()
    except RuntimeError:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path)) from None


def followed(path: Path) -> Path:
    """The file a symbolic link names (a `latest.jsonl`), for a reader: its run's summary, journal
    and batch record are beside the file, not the link. Read through the link, a killed night and
    one with records removed were exit 0, where their own names gave 12 (out-149 F4). A path that
    is no link, as given; a link loop, as given too (reading it says ELOOP)."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def describe_os_error(exc: OSError) -> str:
    """`path: reason` for a one-line message; the path when the error has one."""
    reason = exc.strerror or str(exc)
    return f"{exc.filename}: {reason}" if exc.filename else reason


# The machine's trouble, not the job's: exit 11 (an output could not be written), as the same
# disk with a few KiB left gave, not exit 2 (a bad job or option: break51 F6).
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG})  # EFBIG: a file-size limit (out-108 F4)


@contextmanager
def refused_before_sending() -> Iterator[None]:
    """What the file system refuses before anything is sent, as a ConfigError naming the path (the
    OSError its cause): one exception tree for a library's caller (break50 F2); a full disk or an
    I/O error, as OutputFailed."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _NO_ROOM:
            raise OutputFailed(describe_os_error(exc)) from exc
        raise ConfigError(describe_os_error(exc)) from exc


def file_identity(path: Path) -> tuple[int, int] | Path:
    """One file under any name (a symbolic link, a relative path, a hard link): its device and
    inode; a path that is not there yet, resolved."""
    try:
        status = path.stat()
    except (OSError, ValueError):
        try:
            return path.resolve()
        except (OSError, RuntimeError):
            return path
    return status.st_dev, status.st_ino


def file_mentions(path: Path, text: bytes) -> bool:
    """Whether `text` is in the file, read in blocks (each begins with the last block's tail,
    so a mention across two blocks is found)."""
    tail = b""
    with open_regular(path) as handle:
        while block := handle.read(1 << 20):
            if text in tail + block:
                return True
            tail = block[-len(text) :]
    return False


def refuse_shared_output(output: Path) -> None:
    """An output that is not a file of its own: not a regular file (a pipe, /dev/null), or the
    very file this process's standard output or error goes to (`-o r.jsonl > r.jsonl`, or
    `-o /dev/stdout > r.jsonl`), where the summary table overwrote the first records: exit 0, a
    file no reader or resume could read, its rows paid (break40 F1)."""
    try:
        info = output.stat()  # through a link: /dev/stdout is the file (or pipe) it stands for
    except OSError:
        return  # not there yet (or unreadable: check_output says so)
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{output}: not a regular file: results go to a file of their own; give another --output")
    shared = [name for descriptor, name in ((1, "standard output"), (2, "standard error")) if _is(descriptor, info)]
    if shared:
        name = shared[0]
        raise SharedOutput(
            f"{output}: is this command's {name} too: what it prints would overwrite the records; "
            f"give another --output, or send its {name} elsewhere",
            on_stderr="standard error" in shared,
        )


def stdout_identity() -> tuple[int, int] | None:
    """The file this process's standard output goes to, as `file_identity` names it; None when
    it is closed or the null device (what goes there spoils nothing)."""
    try:
        out = os.fstat(1)
        null = os.stat(os.devnull)
    except OSError:
        return None
    return None if os.path.samestat(out, null) else (out.st_dev, out.st_ino)


def refuse_printing_into(inputs: Iterable[Path | None]) -> None:
    """A command whose standard output is a file it reads (`report r.jsonl --json >> r.jsonl`,
    `batchrun job.yaml >> job.yaml`): what it printed was appended to the records or the job it
    read, exit 0 (out-143 F7); a results file's summary, read beside it, too (out-144 F3)."""
    out = stdout_identity()
    if out is None:
        return
    for path in filter(None, inputs):
        # The summary's name as _output_paths.summary_path makes it (that module loads yaml).
        beside = [path.with_name(path.stem + ".summary.json")] if path.name.endswith(".jsonl") else []
        for read in (path, *beside):
            if file_identity(read) == out:
                raise ConfigError(
                    f"{read}: is this command's standard output too: what it prints would be written into what "
                    "it reads; send its output elsewhere"
                )


def _is(descriptor: int, info: os.stat_result) -> bool:
    """Whether `descriptor` is open on the file `info` describes."""
    try:
        return os.path.samestat(os.fstat(descriptor), info)
    except OSError:
        return False  # closed


def read_json_once(path: Path) -> Any:
    """A JSON file a job names (a json_schema), read as job files and datasets are (break65 F8):
    a byte-order mark is taken, a key written twice is refused (the last one won in silence:
    `"type"` twice tested the second). ValueError for what is not such JSON."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if twice := sorted(key for key, seen in Counter(key for key, _ in pairs).items() if seen > 1):
            raise ValueError(f"duplicate key(s) {', '.join(map(repr, twice))}")
        return dict(pairs)

    # As deep as a job file may nest: `[` a thousand deep, or a valid schema of 100 nested
    # `properties` (out of recursion in jsonschema's check of it), was a traceback (out-143 2).
    too_deep = f"nested deeper than {MAX_DEPTH} levels"
    try:
        data = json.loads(read_regular_text(path).removeprefix("\ufeff"), object_pairs_hook=unique)
    except RecursionError:
        raise ValueError(too_deep) from None
    if nesting_depth(data) > MAX_DEPTH:
        raise ValueError(too_deep)
    return data


def nesting_depth(value: Any) -> int:
    """How deep `value`'s lists and objects nest, found without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack += [(child, depth + 1) for child in (item.values() if isinstance(item, dict) else item)]
    return deepest


_DESCRIPTOR = re.compile(r"/(?:proc/(self|\d+)|dev)/fd/(\d+)")
_STANDARD = {"/dev/stdout": 1, "/dev/stderr": 2}


def a_descriptor(path: Path) -> int | None:
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


def line_start(path: Path, before: int) -> int:
    """Where the line holding byte `before` starts: read back a MiB at a time."""
    with open_regular(path) as reader:
        while before > 0:
            step = min(before, 1 << 20)
            reader.seek(before - step)
            newline = reader.read(step).rfind(b"\n")
            if newline >= 0:
                return before - step + newline + 1
            before -= step
    return 0
