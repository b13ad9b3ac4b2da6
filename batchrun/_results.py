"""Results files: an append-only JSONL writer, a torn-tail repair, and readers.

Supersede rule: a results file may hold several records with the same `id` (a resumed
or retried row is appended again). The **last** record of an id in file order is the
row; every reader batchrun ships (`final_records`, resume, report, diff, merge) applies
this rule, so each sees exactly one record per id.

Durability: each record is written with a single os.write of one whole line, so a
kill -9 loses at most the line being written, which is then a torn tail without its
newline. The writer repairs a torn tail (truncates it) before appending. The file is
fsynced every few seconds and at close, so an OS crash loses at most those seconds; a
process crash loses nothing that was written.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._exceptions import ResultsError

# The first fields of every record, in this order, so resume can read them without json.
_HEAD = re.compile(rb'\{"id":"([0-9a-f]+)","fingerprint":"([0-9a-f]*)","status":"([a-z]+)",'
                   rb'"reason":(?:null|"([a-z_0-9]*)"),"retryable":(true|false),"cost":(null|[-+0-9.eE]+),')
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
FSYNC_EVERY_S = 5.0


def repair_torn_tail(path: Path) -> int:
    """Cut a last line that has no newline (a write interrupted by a crash); returns bytes cut."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with path.open("rb+") as handle:
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        # Walk back to the previous newline in blocks: the torn line can be long.
        position = size
        while position > 0:
            start = max(0, position - 65536)
            handle.seek(start)
            block = handle.read(position - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            position = start
        else:
            keep = 0
        handle.truncate(keep)
        return size - keep


class ResultsWriter:
    """Appends one record per line; whole lines only, flushed to the OS as they are written."""

    def __init__(self, path: Path, fsync_every_s: float = FSYNC_EVERY_S) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.repaired_bytes = repair_torn_tail(path)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._fsync_every_s = fsync_every_s
        self._last_fsync = time.monotonic()
        self.written = 0

    def write(self, record: dict[str, Any], request: bytes | None = None) -> None:
        """Append one record; `request`, the exact JSON body sent, goes in as the last field
        without being decoded and encoded again."""
        text = _encode(record)
        if request is None:
            data = (text + "\n").encode()
        else:
            data = (text[:-1] + ',"request":').encode() + request + b"}\n"
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        self.written += 1
        now = time.monotonic()
        if now - self._last_fsync >= self._fsync_every_s:
            os.fsync(self._fd)
            self._last_fsync = now

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


@dataclass(slots=True)
class RowState:
    """What resume needs to know of a written row."""

    fingerprint: str
    status: str
    reason: str | None
    retryable: bool


def _complete_lines(path: Path) -> Iterator[bytes]:
    """Every whole line; a torn last line (no newline) is never yielded."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such results file") from None
    with handle:
        for line in handle:
            if line.endswith(b"\n") and len(line) > 1:
                yield line


@dataclass
class ScanResult:
    states: dict[str, RowState]
    spent_usd: float  # over every record, superseded ones too: they were paid for
    lines: int


def scan_states(path: Path) -> ScanResult:
    """id -> state of its last record, reading only each line's head (fast on 1M lines)."""
    states: dict[str, RowState] = {}
    spent = 0.0
    lines = 0
    match = _HEAD.match
    for line in _complete_lines(path):
        lines += 1
        head = match(line)
        if head is not None:
            reason = head.group(4)
            states[head.group(1).decode()] = RowState(head.group(2).decode(), head.group(3).decode(),
                                                      reason.decode() if reason is not None else None,
                                                      head.group(5) == b"true")
            if head.group(6) != b"null":
                spent += float(head.group(6))
            continue
        try:  # written by another tool or an older batchrun: parse it fully
            record = json.loads(line)
            states[record["id"]] = RowState(record.get("fingerprint", ""), record["status"], record.get("reason"),
                                            bool(record.get("retryable")))
            spent += float(record.get("cost") or 0.0)
        except (ValueError, KeyError, TypeError):
            continue
    return ScanResult(states, spent, lines)


def _records(path: Path) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(_complete_lines(path), start=1):
        try:
            record = json.loads(line)
        except ValueError:
            raise ResultsError(f"{path}:{number}: not a JSON record") from None
        if not isinstance(record, dict) or "id" not in record:
            raise ResultsError(f"{path}:{number}: not a batchrun record (no id)")
        yield record


def final_records(path: Path) -> Iterator[dict[str, Any]]:
    """Exactly one record per id, the last one written, in the order of their last writes."""
    last: dict[str, int] = {}
    match = _HEAD.match
    for index, line in enumerate(_complete_lines(path)):
        head = match(line)
        if head is not None:
            last[head.group(1).decode()] = index
        else:
            try:
                last[json.loads(line)["id"]] = index
            except (ValueError, KeyError, TypeError):
                raise ResultsError(f"{path}:{index + 1}: not a batchrun record") from None
    for index, record in enumerate(_records(path)):
        if last.get(record["id"]) == index:
            yield record


def record_head(row_id: str, fingerprint: str, status: str, reason: str | None, retryable: bool,
                cost: float | None) -> dict[str, Any]:
    """The first fields of a record, in the order the fast resume scan expects."""
    return {"id": row_id, "fingerprint": fingerprint, "status": status, "reason": reason, "retryable": retryable,
            "cost": cost}
