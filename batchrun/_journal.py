"""The attempt journal, `X.attempts.jsonl` beside `X.jsonl` (break-14b M4).

A request's reservation lived only in memory until its row's record was written, so a kill -9
(the OOM killer, a CI runner's timeout, a power cut) with requests in flight left no trace of
them, and a resume with the same budget spent it again while OpenRouter billed the abandoned
requests. So before each attempt goes out, one line is appended here: its row, where the
results file ended then (`at`), and its worst case; when the reply's headers name the
generation, a second line with its id. Each is one `os.write` (no fsync per request: a kill -9
does not lose the page cache, only an OS crash or power cut can, and then at most the lines
since the kernel last wrote them back; an fsync per request would cost each request a disk
flush). A run that ends without losing a record deletes the file.

A later run on the same output (a resume) reads what a crash left: an attempt whose row has no
record starting at or after its `at` was in flight, or abandoned, when the process died. Its
cost is looked up by generation id where one was journaled; otherwise its worst case is held.
Each such row gets a `skipped` record (reason `crashed`) carrying those attempts
(`abandoned_attempts`, `cost_held`, `spent`), so the budget and every reader count them; the
row itself is sent again like any skipped row. Then the journal is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ._charges import Charge, RowCharges
from ._client import OpenRouterClient
from ._exceptions import JobError, OutputFailed, Problem, RequestFailed
from ._files import open_regular
from ._generation import valid_generation_id
from ._matrix import Request
from ._output_paths import JOURNAL_SUFFIX
from ._record_head import RECORD_START, record_head
from ._results import ResultsWriter

LOOKUPS_AT_ONCE = 8


def journal_path(results: Path) -> Path:
    name = results.name[: -len(".jsonl")] if results.name.endswith(".jsonl") else results.name
    return results.with_name(name + JOURNAL_SUFFIX)


class AttemptJournal:
    """Appends a line per attempt before it is sent; deleted when the run ends whole."""

    def __init__(self, results: Path, writer: ResultsWriter, job: str) -> None:
        self.path = journal_path(results)
        self._writer = writer
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        # Whose attempts these are: a later run of another job on the output must not take
        # them for its own rows (break14c N11).
        self._write(orjson.dumps({"job": job}) + b"\n")

    def _write(self, line: bytes) -> None:
        try:
            os.write(self._fd, line)  # one short line: written whole (O_APPEND)
        except OSError as exc:
            # Nothing may go out that a crash could hide: the run stops like a results failure.
            raise OutputFailed(f"{self.path}: writing the attempt journal failed: {exc.strerror or exc}") from None

    def sent(self, request: Request, usd: float, row: str) -> None:
        """An attempt of `request` for `row` (its own, or the row a grader grades) is about to
        go out, holding `usd`."""
        at = self._writer.size
        self._write(orjson.dumps({"row": row, "at": at, "usd": usd, "model": request.model}) + b"\n")

    def generation(self, row: str, generation_id: str) -> None:
        self._write(orjson.dumps({"row": row, "gen": generation_id}) + b"\n")

    def close(self, whole: bool) -> None:
        """`whole`: every attempt is in a record now, so the journal goes."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        os.close(fd)
        if whole:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


@dataclass
class Crashed:
    """A row's attempts a crash left without a record."""

    row: str
    model: str
    attempts: list[dict[str, Any]] = field(default_factory=list)  # {"at", "usd", "gen"}


def _read(path: Path, job: str) -> dict[str, Crashed]:
    rows: dict[str, Crashed] = {}
    with open_regular(path) as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break  # torn by the crash: that attempt's write never finished, so it was not sent
            try:
                entry = orjson.loads(line)
                if "job" in entry and entry["job"] != job:
                    name = str(entry["job"])[:80]
                    raise JobError(
                        [
                            Problem(
                                str(path),
                                None,
                                None,
                                "",
                                f"the attempt journal of job {name!r}, not of {job!r}: "
                                "run that job on this output to record what its crash left, or remove the file",
                            )
                        ]
                    )
                if "job" in entry:
                    continue
                row = entry["row"]
                if "gen" in entry:
                    if row in rows and rows[row].attempts:
                        rows[row].attempts[-1]["gen"] = entry["gen"]
                    continue
                at, usd = int(entry["at"]), float(entry["usd"])
                crashed = rows.setdefault(row, Crashed(row, str(entry.get("model", ""))))
                crashed.attempts.append({"at": at, "usd": max(0.0, usd), "gen": None})
            except (ValueError, KeyError, TypeError):
                continue  # not a line of ours: nothing to count
    return rows


def _drop_recorded(results: Path, rows: dict[str, Crashed]) -> None:
    """Remove the attempts a record of their row (written after them) accounts for."""
    start = min((a["at"] for c in rows.values() for a in c.attempts), default=0)
    with open_regular(results) as handle:
        handle.seek(start)
        offset = start
        for line in handle:
            here, offset = offset, offset + len(line)
            if not line.startswith(RECORD_START):
                continue
            row = line[len(RECORD_START) : line.find(b'"', len(RECORD_START))].decode("ascii", "replace")
            crashed = rows.get(row)
            if crashed is not None:
                crashed.attempts = [a for a in crashed.attempts if a["at"] > here]
    for row in [r for r, c in rows.items() if not c.attempts]:
        del rows[row]


async def _look_up(client: OpenRouterClient, attempts: list[dict[str, Any]], limit_s: float) -> dict[str, float]:
    """Generation id -> its cost, for those /generation knows (a few at a time, all within
    `limit_s`: a lookup that hangs leaves its attempt held, never the run waiting)."""
    ids = {g for a in attempts if (g := valid_generation_id(a["gen"], client.scrub)) is not None}
    gate = asyncio.Semaphore(LOOKUPS_AT_ONCE)
    found: dict[str, float] = {}

    async def one(gid: str) -> None:
        async with gate:
            try:
                cost = await client.generation(gid)
            except RequestFailed:
                return
            if cost is not None:
                found[gid] = cost.total_cost

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit_s):
            await asyncio.gather(*(one(gid) for gid in sorted(ids)))
    return found


def _charges(crashed: Crashed, found: dict[str, float]) -> RowCharges:
    charges = RowCharges()
    for attempt in crashed.attempts:
        gid = attempt["gen"]
        if gid in found:
            charges.parts.append(Charge(gid, 0.0, cost=found[gid], status="looked_up"))
        else:
            charges.parts.append(Charge(gid if isinstance(gid, str) else None, attempt["usd"]))
    return charges


async def recover(
    results: Path,
    job: tuple[str, str],
    requests: Iterable[Request],
    client: OpenRouterClient,
    now: str,
    limit_s: float,
) -> int:
    """Record what a crash left in the journal beside `results` (`job`: its name and
    fingerprint; `requests`: the matrix, to find the rows; `limit_s`: for the lookups);
    returns the rows recorded."""
    path = journal_path(results)
    if not path.exists():
        return 0
    rows = _read(path, job[0])
    if rows and results.exists():
        _drop_recorded(results, rows)
    if rows:
        found = await _look_up(client, [a for c in rows.values() for a in c.attempts], limit_s)
        known = {r.id: r for r in requests if r.id in rows}
        writer = ResultsWriter(results)
        try:
            for crashed in rows.values():
                fields = _charges(crashed, found).fields()
                spent = fields["cost"] if fields["cost"] is not None else fields["cost_held"] or 0.0
                request = known.get(crashed.row)
                record = record_head(
                    crashed.row, request.fingerprint if request else "", "skipped", "crashed", True, None, spent
                )
                record.update(
                    job=job[0],
                    job_fingerprint=job[1],
                    model=request.model if request else crashed.model,
                    prompt_id=request.prompt_id if request else "",
                    vars=request.vars if request else {},
                    repeat=request.repeat if request else 0,
                    **fields,
                    attempts=len(crashed.attempts),
                    attempt_errors=[],
                    error=None,
                    started_at=None,
                    finished_at=now,
                )
                writer.write(record, request.payload if request else None)
        finally:
            writer.close()
    path.unlink()
    return len(rows)
