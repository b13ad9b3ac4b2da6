"""Whether two results files can be compared (`diff`): runs of one job, and of one shard of it.

Two shards share no row, or a shard and a whole run only some: the other side's passes read as
gone, a significant drop, exit 4 (verify34 N5, verify35 M2).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._exceptions import ConfigError, ResultsError
from ._matrix import Shard
from ._summary_beside import read_run_summary
from ._summary_types import Summary


def same_job(a: Summary, b: Summary, a_path: Path, b_path: Path) -> None:
    if a["job"] and b["job"] and a["job"] != b["job"]:
        raise ResultsError(f"{a_path} is job {a['job']!r} but {b_path} is job {b['job']!r}: nothing to compare")


def _shard_of(path: Path, rows: dict[str, dict[str, Any]]) -> tuple[bool, str | None]:
    """(known, the shard "K/N" or None for the whole job): the run's summary says it, else its
    records (a sharded run's name it; a whole job's, or an older batchrun's, do not: unknown)."""
    summary = read_run_summary(path)
    if "shard" in summary and (summary["shard"] is None or isinstance(summary["shard"], str)):
        return True, summary["shard"]
    named = {row["shard"] for row in rows.values()} - {None}
    return (True, named.pop()) if len(named) == 1 else (False, None)


def _outside(shard: str, rows: dict[str, dict[str, Any]]) -> bool:
    """Whether `rows` hold a row of another shard than `shard` ("K/N")."""
    try:
        own = Shard.parse(shard)
    except ConfigError:
        return False
    # A first repeat's id is its item's, which decides the shard (Shard.__contains__).
    return any(row_id not in own for row_id, row in rows.items() if row.get("repeat") in (0, None))


def same_shard(
    a_path: Path, a_rows: dict[str, dict[str, Any]], b_path: Path, b_rows: dict[str, dict[str, Any]]
) -> None:
    """Two shards (or a shard and a whole run) share no rows, or some: the other's are "gone", a
    regression (verify34 N5: `diff` of shard 1/2 and shard 2/2 exited 4)."""
    (a_known, a_shard), (b_known, b_shard) = _shard_of(a_path, a_rows), _shard_of(b_path, b_rows)
    a_is, b_is = ("the whole job" if s is None else f"shard {s}" for s in (a_shard, b_shard))
    # A side that cannot say (no summary, records of a whole job or an older batchrun) is not
    # the other's shard if it holds rows outside it (verify35 M2: a merged run without its
    # summary against shard 1/3 was exit 4).
    if a_known and a_shard is not None and not b_known and _outside(a_shard, b_rows):
        b_known, b_shard, b_is = True, "", f"rows outside shard {a_shard}"
    if b_known and b_shard is not None and not a_known and _outside(b_shard, a_rows):
        a_known, a_shard, a_is = True, "", f"rows outside shard {b_shard}"
    if a_known and b_known and a_shard != b_shard:
        raise ResultsError(
            f"{a_path} holds {a_is} but {b_path} holds {b_is}: compare runs of the same shard, or merged runs "
            "(batchrun merge)"
        )


def shard_mismatch(a_path: Path, a_ids: Iterable[str], b_path: Path, b_ids: Iterable[str]) -> str | None:
    """Why two runs, known by their summaries and row ids, are not to be compared row by row,
    or None (`history` compared a shard with a whole run: "no row changed state" with 75 of 105
    rows gone, break44 F12)."""
    try:
        same_shard(a_path, {i: {"shard": None} for i in a_ids}, b_path, {i: {"shard": None} for i in b_ids})
    except ResultsError as exc:
        return str(exc)
    return None
