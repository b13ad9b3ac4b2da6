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

import mmap
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from ._exceptions import ResultsError

# The first fields of every record, in this order, so resume can read them without json.
_HEAD = re.compile(
    rb'\{"id":"([0-9a-f]+)","fingerprint":"([0-9a-f]*)","status":"([a-z]+)",'
    rb'"reason":(?:null|"([a-z_0-9]*)"),"retryable":(true|false),"cost":(null|[-+0-9.eE]+),'
)
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

    def write(self, record: dict[str, Any], request: bytes | None = None) -> None:
        """Append one record; `request`, the exact JSON body sent, goes in as the last field
        without being decoded and encoded again."""
        # orjson keeps insertion order (the head first), writes UTF-8, and is the hot path.
        text = orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS)
        data = text + b"\n" if request is None else text[:-1] + b',"request":' + request + b"}\n"
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        now = time.monotonic()
        if now - self._last_fsync >= self._fsync_every_s:
            os.fsync(self._fd)
            self._last_fsync = now

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


class RowState(NamedTuple):
    """What resume needs to know of a written row."""

    fingerprint: str
    status: str
    reason: str | None
    retryable: bool


def _state_blob(fingerprint: str, status: str, reason: str | None, retryable: bool) -> bytes:
    """A state in the exact bytes of a record head, as the fast scan keeps it."""
    reason_json = "null" if reason is None else f'"{reason}"'
    return (
        f'{fingerprint}","status":"{status}","reason":{reason_json},"retryable":{"true" if retryable else "false"}'
    ).encode()


def _parse_blob(blob: bytes) -> RowState:
    parts = blob.split(b'"')
    reason = None if b'"reason":null' in blob else parts[8].decode()
    return RowState(parts[0].decode(), parts[4].decode(), reason, blob.endswith(b"true"))


# The head of a record from the newline before it; the state part is kept as one bytes
# object, decoded only for the rows a resume asks about.
_LINE_HEADS = re.compile(
    rb'\n\{"id":"([0-9a-f]+)","fingerprint":"([0-9a-f]*","status":"[a-z]+",'
    rb'"reason":(?:null|"[a-z_0-9]*"),"retryable":(?:true|false)),"cost":(null|[-+0-9.eE]+),'
)
_WINDOW = 1 << 24


@dataclass
class ScanResult:
    """The last state of every row of a results file."""

    _states: dict[bytes, bytes]
    spent_usd: float  # over every record, superseded ones too: they were paid for
    lines: int

    def __len__(self) -> int:
        return len(self._states)

    def get(self, row_id: str) -> RowState | None:
        blob = self._states.get(row_id.encode())
        return None if blob is None else _parse_blob(blob)

    def ids(self, status: str | None = None) -> set[str]:
        return {k.decode() for k, v in self._states.items() if status is None or _parse_blob(v).status == status}


def _scan_slow(lines: list[bytes], states: dict[bytes, bytes]) -> float:
    """Line by line with json, for a window holding lines the fast pattern does not fit."""
    spent = 0.0
    for line in lines:
        try:
            record = orjson.loads(line)
            states[record["id"].encode()] = _state_blob(
                record.get("fingerprint", ""), record["status"], record.get("reason"), bool(record.get("retryable"))
            )
            spent += float(record.get("cost") or 0.0)
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # not a record: nothing to resume from it
    return spent


def _windows(data: mmap.mmap) -> Iterator[tuple[bytes | mmap.mmap, int, int]]:
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


def scan_states(path: Path) -> ScanResult:
    """id -> state of its last record, from each line's head only (1M lines in about 1.5 s).

    The file is memory-mapped and searched in 16 MiB windows with one regex pass each.
    A raw newline occurs only between records (JSON escapes it inside strings), so the
    pattern, which starts with one, only finds line starts. A window whose match count
    differs from its line count is read line by line with json instead. The torn tail of
    a crash (after the last newline) is never read.
    """
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such results file") from None
    states: dict[bytes, bytes] = {}
    costs: list[bytes] = []
    spent = 0.0
    lines = 0
    with handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return ScanResult(states, 0.0, 0)
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            for buffer, begin, finish in _windows(data):
                segment = buffer[begin:finish]
                count = segment.count(b"\n")
                lines += count
                found = _LINE_HEADS.findall(buffer, begin, finish)
                if len(found) != count:
                    spent += _scan_slow([line for line in segment.split(b"\n") if line], states)
                    continue
                for row_id, blob, _cost in found:
                    states[row_id] = blob
                costs += [cost for _, _, cost in found if cost != b"null"]
    spent += sum(map(float, costs))
    return ScanResult(states, spent, lines)


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


def _records(path: Path) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(_complete_lines(path), start=1):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
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
                last[orjson.loads(line)["id"]] = index
            except (ValueError, KeyError, TypeError):
                raise ResultsError(f"{path}:{index + 1}: not a batchrun record") from None
    for index, record in enumerate(_records(path)):
        if last.get(record["id"]) == index:
            yield record


def record_head(
    row_id: str, fingerprint: str, status: str, reason: str | None, retryable: bool, cost: float | None
) -> dict[str, Any]:
    """The first fields of a record, in the order the fast resume scan expects."""
    return {
        "id": row_id,
        "fingerprint": fingerprint,
        "status": status,
        "reason": reason,
        "retryable": retryable,
        "cost": cost,
    }
