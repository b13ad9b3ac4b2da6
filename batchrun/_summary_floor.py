"""What earlier runs of a results file spent, against what their summary said: a file left as its
summary saw it, or grown by records appended since, holds at least what that summary counted."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from pathlib import Path
from typing import Any, NamedTuple

from ._files import open_regular
from ._output_paths import summary_path, write_json_atomically
from ._pricing import money
from ._reader import MAX_RECORD_BYTES, ScanResult, spent_on

_APPENDED_MAX_BYTES = 64 << 20  # read past a summary's end to tell appended records from edits; past it, not


def changed_after(output: Path, earlier: dict[str, Any]) -> bool:
    """Whether `output` changed after its summary `earlier` was written: newer (a clock tick may
    hold both), or of another size than it saw (an edit whose copy kept the older time, `cp -p`,
    `rsync -t`, a restore, passed the time's test: verify36 N2)."""
    try:
        if output.stat().st_mtime_ns >= summary_path(output).stat().st_mtime_ns:
            return True
    except OSError:
        return True
    size = results_size(output)
    return earlier.get("results_bytes", size) != size


class EarlierSpend(NamedTuple):
    """What earlier runs of a file spent, as a resume counts it."""

    spent: float  # the records' spend, the key gaps beyond them, at least what the summary said (summary_spend_floor)
    key_gap: float  # the key gaps: the summary's and a killed run's journal's, less what lookups put in records
    journal_gap: float  # of `key_gap`, a killed run's journal's: its own journal carries it on
    warning: str | None  # where the summary said more than the records hold

    def past_budget(self, spent_before: float, budget: float | None) -> float | None:
        """How far the earlier runs (`spent_before`) spent past the budget, or None: a resume of such a
        file, with nothing left to send, spent past its limit all the same (out-117 F4: $30,000
        learnt by lookups on a $1 budget was exit 0; out-120 F2, out-121 F4: so was the next resume)."""
        if budget is None or spent_before <= budget + 1e-6:
            return None
        return round(spent_before - budget, 8)


def earlier_spend(output: Path, earlier: dict[str, Any], states: ScanResult | None) -> EarlierSpend:
    """What earlier runs of `output` spent: its records' spend (with the costs looked up since),
    the key gaps its summary (`earlier`) and a killed run's journal counted beyond them, and at
    least what the summary said of the records it saw. Costs looked up above what their rows
    counted were, up to the gaps, the same charges the key showed beyond the records: the gaps
    fall by them (out-120 F1: counted twice, $0.10 for a $0.054 bill, a false exit 5)."""
    if states is None:
        return EarlierSpend(0.0, 0.0, 0.0, None)
    gaps = (money(earlier.get("key_gap_usd")) or 0.0) + states.key_gap_usd
    taken = min(gaps, states.costs_raised_usd)
    moved = states.costs_moved_usd - taken  # the lookups' net effect, the gaps they took down included
    spent, warning = summary_spend_floor(output, earlier, states.spent_usd + gaps - taken, moved)
    return EarlierSpend(spent, gaps - taken, max(0.0, states.key_gap_usd - taken), warning)


SUMMARY_ROUNDING_USD = 1e-7  # a summary's money is rounded to 8 places: two such figures, and float residue


def summary_spend_floor(
    output: Path, earlier: dict[str, Any], counted: float, moved: float = 0.0
) -> tuple[float, str | None]:
    """What earlier runs of `output` spent: `counted` (its records' spend and the key gaps), or
    what its summary said, where the file changed after that summary (shorter, or of another size
    or newer: records removed or edited since, and the spend they held: break44 F4, verify47 N4,
    a resume got it back and the server billed 1.84x the budget); with a warning then. A file
    left as its summary saw it holds at least what that summary counted. `moved`: how far this
    resume's lookups of unknown costs moved `counted` (_earlier_costs); the summary is compared
    with the records as they were before them, and the floor moves by it too."""
    floor, shrunk = _summary_floor(output, earlier, counted - moved)
    return floor + moved, shrunk


def _summary_floor(output: Path, earlier: dict[str, Any], counted: float) -> tuple[float, str | None]:
    written, size = earlier.get("results_bytes"), results_size(output)
    said = (money(earlier.get("spent_before_usd")) or 0.0) + (money(earlier.get("spent_usd")) or 0.0)
    # The summary's figures are rounded (8 places): below this, no spend was lost.
    if type(written) is not int or size is None or said <= counted + SUMMARY_ROUNDING_USD:
        return counted, None
    if size < written:
        what = f"is {written - size:,} byte(s) shorter than its summary saw (records removed since)"
    elif size > written and counted - _appended_spend(output, written) >= said - SUMMARY_ROUNDING_USD:
        # Records appended after it, rows written again with costs looked up among them (a resume
        # killed after its lookups: out-117 F6), and those the summary saw hold what it said.
        return counted, None
    elif changed_after(output, earlier):
        what = "changed after its summary was written (records edited since)"
    else:
        return counted, None
    return said, (
        f"warning: {output} {what}: the ${said:.6f} its summary says earlier runs spent counts, "
        f"not the ${counted:.6f} the records hold"
    )


def results_size(output: Path) -> int | None:
    """The results file's size (its summary keeps it: resume_states), None when it cannot be read."""
    try:
        return output.stat().st_size
    except OSError:
        return None


TAIL_BYTES = 1 << 16
_DIGEST_PIECE = 1 << 20


def tail_digest(output: Path, size: int | None) -> str | None:
    """A digest of the file's last 64 KiB up to `size`: what summaries of before `results_digest`
    recorded (out-138 F1), still read for their files. None when the file cannot be read, or is
    shorter."""
    if size is None:
        return None
    try:
        with open_regular(output) as handle:
            handle.seek(max(0, size - TAIL_BYTES))
            tail = handle.read(min(size, TAIL_BYTES))
    except OSError:
        return None
    return hashlib.sha256(tail).hexdigest()[:32] if len(tail) == min(size, TAIL_BYTES) else None


def file_digest(output: Path, size: int | None) -> str | None:
    """A digest of the file's bytes up to `size` (where its summary saw it end): a file of the same
    size put in its place (a model's night copied over a try-out of the same name: out-138 F1), or
    a record edited anywhere before that end (the last 64 KiB alone were seen: out-151 F2), is told
    apart, and the summary does not vouch for it. One read of the file, at ~800 MB/s. None when
    the file cannot be read, or is shorter."""
    if size is None:
        return None
    digest, left = hashlib.sha256(), size
    try:
        with open_regular(output) as handle:
            while left and (piece := handle.read(min(left, _DIGEST_PIECE))):
                digest.update(piece)
                left -= len(piece)
    except OSError:
        return None
    return None if left else digest.hexdigest()[:32]


def sealed(output: Path, size: int | None = None) -> tuple[int | None, str | None]:
    """What a summary keeps of the file it was written for (`results_bytes`, `results_digest`): its
    size and the digest of its bytes up to there (_summary_beside: `vouched`, `changed`). `size`:
    what the run wrote, when the file was cut under it; else the file's size now."""
    size = results_size(output) if size is None else size
    return size, file_digest(output, size)


def digest_differs(output: Path, summary: dict[str, Any], size: int) -> bool:
    """Whether the file's bytes up to `size` are not those its summary saw: by its whole-file
    digest, or by the last-64-KiB one of a summary written before it. True when it has neither."""
    if isinstance(seen := summary.get("results_digest"), str):
        return file_digest(output, size) != seen
    if isinstance(seen := summary.get("results_tail"), str):
        return tail_digest(output, size) != seen
    return True


LOOKED_UP = "results_looked_up"  # where the records a resume's lookups append begin and end (seal_looked_up)


def seal_looked_up(output: Path, done: bool) -> None:
    """Say in the summary beside `output` where the records a resume's cost lookups append begin
    (`done` False: before they are written, `from`) and then end (`done`: `bytes`), with a digest
    of the file up to there. They go in before the run's journal, so a resume killed or refused
    after them left lines past the summary's end with no run since: an edit by hand to a reader
    (out-163 F1), and one killed while it wrote them, for good (out-165 F5). The rest of the
    summary stays the earlier runs' until this run writes its own; a summary that cannot be
    written leaves them an edit (the safe side)."""
    path = summary_path(output)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return
    size = results_size(output)
    if isinstance(data, dict) and size is not None:
        seal = {"bytes" if done else "from": size, "digest": file_digest(output, size)}
        with contextlib.suppress(OSError):
            write_json_atomically(path, {**data, LOOKED_UP: seal})


def sealed_end(output: Path, summary: dict[str, Any], written: int, size: int) -> int:
    """Where the records the file's runs wrote end: the summary's end (`written`), or past it
    where a resume's lookups appended (seal_looked_up) and the file still holds what they found:
    its end, when they were cut off while they wrote (only `from`)."""
    sealed = summary.get(LOOKED_UP)
    if not isinstance(sealed, dict):
        return written
    for name, end in (("bytes", None), ("from", size)):
        at = sealed.get(name)
        if type(at) is int and written <= at <= size and file_digest(output, at) == sealed.get("digest"):
            return at if end is None else end
    return written


def records_appended(output: Path, offset: int) -> bool:
    """Whether a line after `offset` (where a summary saw the file end) is a JSON object: a record,
    or what a reader or a resume may take for one. A last line without its newline counts too: a
    resume adds the newline to a whole record, and one was appended a row at a time (out-165 F3).
    A torn last line, NULs a crash left, or a line that is no JSON are not: a resume cuts the
    first two and readers set the last aside, as they do a line longer than MAX_RECORD_BYTES: such
    a line is passed over, never held whole (out-173 F3: a 400 MiB line with no newline was
    joined a piece at a time, quadratic, and `report` ran past two minutes)."""
    rest, overlong = b"", False
    try:
        with open_regular(output) as handle:
            handle.seek(offset)
            while piece := handle.read(_DIGEST_PIECE):
                if overlong:
                    end = piece.find(b"\n")
                    if end < 0:
                        continue
                    piece, overlong = piece[end + 1 :], False
                *lines, rest = (rest + piece).split(b"\n")
                if any(_an_object(line) for line in lines):
                    return True
                if len(rest) > MAX_RECORD_BYTES:
                    rest, overlong = b"", True
    except OSError:
        return False
    return not overlong and _an_object(rest)


def _an_object(line: bytes) -> bool:
    line = line.strip(b"\0 \t\r")
    if not line.startswith(b"{"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, RecursionError):
        return False


def _appended_spend(output: Path, offset: int) -> float:
    """How far the records after `offset` (where a summary saw the file end) move what the file
    counts as spent: each record's `spent`, less its `resolves`. Infinite where that cannot be
    told (no line starts there, a line that is no record, too much to read): an edit, then."""
    try:
        with output.open("rb") as handle:
            handle.seek(offset - 1 if offset else 0)
            if offset and handle.read(1) != b"\n":
                return math.inf
            tail = handle.read(_APPENDED_MAX_BYTES + 1)
    except OSError:
        return math.inf
    if len(tail) > _APPENDED_MAX_BYTES:
        return math.inf
    moved = 0.0
    for line in tail.splitlines():
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            return math.inf
        if not isinstance(record, dict):
            return math.inf
        moved += spent_on(record) - (money(record.get("resolves")) or 0.0)
    return moved
