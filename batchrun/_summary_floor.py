"""What earlier runs of a results file spent, against what their summary said: a file left as its
summary saw it, or grown by records appended since, holds at least what that summary counted."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ._output_paths import summary_path
from ._pricing import money
from ._reader import spent_on

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
