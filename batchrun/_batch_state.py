"""The durable record of a run's batches, `X.batches.json` beside `X.jsonl`.

Why it exists: a batch outlives the process that submitted it (it completes within 24 h),
so the batch ids must survive the end of a cron tick, a crash, or a reboot, and the next
run must collect those batches instead of submitting the same rows again.

Crash safety without a documented lookup. The quickstart documents no way to find a
batch again without its id (no list endpoint, no metadata, no idempotency key), so a
crash after the POST was sent and before its answer was recorded cannot be repaired by
asking the server. The scheme:

1. Before each POST, the batch's rows are written here as an `intent` (fsynced file and
   folder), with no batch id.
2. After the 202, the id is written (state `submitted`), fsynced again.
3. A later run that finds an `intent` entry cannot know whether OpenRouter accepted that
   POST: its rows are **in doubt** and are never submitted again automatically.
   `batchrun batches list` shows them; `batchrun batches adopt RESULTS KEY BATCH_ID`
   attaches the id (from OpenRouter's activity page) so the next run collects it, and
   `batchrun batches release RESULTS KEY` declares it never submitted, so the next run
   submits its rows (possibly paying twice, the user's explicit choice).

So a row is never submitted twice by batchrun alone. The window in doubt is one HTTP
exchange per batch.

Writes are atomic (temp file, fsync, rename, fsync of the folder): a crash leaves the old
file or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ._exceptions import OutputFailed, ResultsError
from ._files import read_regular_text
from ._generation import valid_generation_id
from ._scrub import Scrubber

INTENT, SUBMITTED, COLLECTED, RELEASED = "intent", "submitted", "collected", "released"
VERSION = 1


def _id_problem(entry: BatchEntry, seen: set[str]) -> str | None:
    """A batch id is sent back in URLs: an id's characters only (a hand-edited `../../credits`
    sent the key to another path of the host: out-145 F6); and one batch is listed once (twice,
    it was collected and its charge booked twice: F3)."""
    if entry.batch_id is None:
        return None
    if valid_generation_id(entry.batch_id, Scrubber()) is None:
        return f"batch_id {str(entry.batch_id)[:40]!r} is not an id (letters, digits, - and _ only)"
    if entry.batch_id in seen:
        return f"batch_id {entry.batch_id} is listed twice"
    seen.add(entry.batch_id)
    return None


def _amount_problem(entry: BatchEntry) -> str | None:
    """Why an entry's money fields cannot be believed: each is a finite amount of at least 0, and
    what the key showed for it is within its worst case. A corrupted `key_seen_usd` was a
    traceback on every resume ("abc"), or dropped the gap without a word (NaN, -5: verify14j N3)."""
    amounts = {"reserved_usd": entry.reserved_usd, "key_seen_usd": entry.key_seen_usd, "cost_usd": entry.cost_usd}
    for name, value in amounts.items():
        if value is None and name == "cost_usd":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            return f"{name} is not an amount of money ({value!r})"
    if entry.key_seen_usd > entry.reserved_usd * (1 + 1e-9):
        return f"key_seen_usd {entry.key_seen_usd!r} is more than its worst case {entry.reserved_usd!r}"
    if not isinstance(entry.unfollowed, bool):
        return f"unfollowed is not true or false ({entry.unfollowed!r})"
    return None


def state_path(results: Path) -> Path:
    name = results.name[: -len(".jsonl")] if results.name.endswith(".jsonl") else results.name
    return results.with_name(name + ".batches.json")


@dataclass
class BatchEntry:
    key: str  # local name, b1, b2...: stable across runs, used by `batches adopt/release`
    model: str
    rows: list[str]  # row ids, in the items' custom_id (custom_ids)
    fingerprints: list[str]  # of each row's body, as submitted
    reserved_usd: float  # worst case at full prices, held in the ledger until collected
    intent_at: float
    state: str = INTENT
    batch_id: str | None = None
    status: str | None = None  # last status OpenRouter reported
    cost_usd: float | None = None  # batch-level usage.cost once collected
    retry: bool = False  # a --retry-errors batch
    # What runs that ended with it open saw charged on the key for it (the part of the key's
    # charge its hold explained): the run that collects it counts what its reported cost leaves
    # of that as spent (verify14i V12: a batch that under-reported, collected by a later run,
    # was counted by no run).
    key_seen_usd: float = 0.0
    # Its charge may be on the key unseen by any read: set when it is submitted or collected,
    # cleared once a read of /key followed it (the end of its run, or the read after its
    # collection). A run killed in between left a batch that under-reported counted by no run
    # (H5 in batch mode): a later run counts its worst case beyond its reported cost instead.
    unfollowed: bool = False
    # Why its last poll failed (None: it was read): `batches list` showed the status read before
    # as how it stands (out-137 9).
    poll_failed: str | None = None
    # Its items' custom_id is `<row>-<fingerprint of the body sent>`, not the row id alone (a
    # record written before says false): a batch that answered another body under the row's id
    # (another job's, the prompt edited since) is told from it (out-185 F4: adopted, its answers
    # were recorded under a `request` they did not answer).
    tagged: bool = False
    # The base URL it was submitted to (None: a record written before said none). A batch exists
    # at that endpoint only: polled at another, three 404s ended its rows as lost, and
    # --retry-errors bought them again while it ran (out-185 F5).
    endpoint: str | None = None


def custom_ids(entry: BatchEntry) -> list[str]:
    """The custom_id of each of `entry`'s rows, as sent."""
    if not entry.tagged:
        return list(entry.rows)
    return [f"{row}-{fingerprint}" for row, fingerprint in zip(entry.rows, entry.fingerprints, strict=False)]


def by_row(entry: BatchEntry, results: list[Any] | None) -> list[Any] | None:
    """A batch's result items with each custom_id read back as the row it answered: one that is
    not a custom_id `entry` sent answered no row of it (`?` and the id as sent: no row id)."""
    if not entry.tagged or results is None:
        return results
    rows = dict(zip(custom_ids(entry), entry.rows, strict=False))
    return [
        {**item, "custom_id": rows.get(item["custom_id"], "?" + item["custom_id"])}
        if isinstance(item, dict) and isinstance(item.get("custom_id"), str)
        else item
        for item in results
    ]


@dataclass
class BatchState:
    path: Path
    job: str
    job_fingerprint: str
    entries: list[BatchEntry] = field(default_factory=list)
    # The key's usage at the end of the last run that left batches open (_batch_key).
    key_usage_at_end: float | None = None
    # What the key rose by between runs, not yet drawn by a batch collected since (_batch_key).
    key_rise_usd: float = 0.0

    @classmethod
    def load(cls, results: Path, job: str, job_fingerprint: str) -> BatchState:
        """This results file's batch record, or an empty one; refuses another job's file."""
        path = state_path(results)
        try:
            data = json.loads(read_regular_text(path))
        except FileNotFoundError:
            return cls(path, job, job_fingerprint)
        except (OSError, ValueError, RecursionError) as exc:
            # An empty one too: written whole or not at all, it is cut or made by hand (out-176 F4).
            said = "is empty" if path.exists() and path.stat().st_size == 0 else f"is unreadable ({exc})"
            raise ResultsError(
                f"{path}: the batch record {said}: it lists the batches this file's rows await, which may be "
                "running and billing; restore it, or move it away once none is open (`batchrun batches list` "
                "with a good copy, or OpenRouter's dashboard)"
            ) from None
        if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("batches"), list):
            raise ResultsError(f"{path}: not a batchrun batch record")
        if data.get("job") != job:
            raise ResultsError(f"{path}: belongs to job {data.get('job')!r}, not {job!r}")
        try:
            entries = [BatchEntry(**entry) for entry in data["batches"]]
        except TypeError:
            raise ResultsError(f"{path}: a batch entry has unexpected fields") from None
        seen: set[str] = set()
        for entry in entries:
            problem = _amount_problem(entry) or _id_problem(entry, seen)
            if problem is not None:
                raise ResultsError(f"{path}: batch {entry.key!r}: {problem}; fix or restore the file") from None
        usage, rise = data.get("key_usage_at_end"), data.get("key_rise_usd", 0.0)
        for name, value in (("key_usage_at_end", usage), ("key_rise_usd", rise)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf")
            ):
                raise ResultsError(f"{path}: {name} is not an amount of money ({value!r}); fix or restore the file")
        return cls(path, job, data.get("job_fingerprint", job_fingerprint), entries, usage, float(rise or 0.0))

    @classmethod
    def read(cls, results: Path) -> BatchState:
        """For `batchrun batches`: whatever job wrote it."""
        path = state_path(results)
        try:
            data = json.loads(read_regular_text(path))
        except FileNotFoundError:
            if not results.exists():  # out-176 F4: not "written in batch mode?" of a file not there
                raise ResultsError(f"{results}: no such results file") from None
            raise ResultsError(f"{path}: no batch record (was {results} written in batch mode?)") from None
        except (OSError, ValueError, RecursionError) as exc:
            raise ResultsError(f"{path}: unreadable batch record ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("job"), str):
            raise ResultsError(f"{path}: not a batchrun batch record")
        return cls.load(results, data["job"], str(data.get("job_fingerprint", "")))

    def save(self) -> None:
        """Written whole or not at all. A write that fails (a full disk, a file-size limit) is the
        run's output failing, named (exit 11), not a bare OSError (out-185 F3: "No space left on
        device", exit 2 "nothing spent", after the batches it lists were paid for)."""
        try:
            self._write()
        except OSError as exc:
            raise OutputFailed(f"{self.path}: writing the batch record failed: {exc.strerror or exc}") from None

    def _write(self) -> None:
        data: dict[str, Any] = {
            "version": VERSION,
            "job": self.job,
            "job_fingerprint": self.job_fingerprint,
            # orjson writes the dataclasses field by field, as asdict would, without its deep
            # copy of every row id list: a state is saved at each submission and collection.
            "batches": self.entries,
            "key_usage_at_end": self.key_usage_at_end,
            "key_rise_usd": self.key_rise_usd,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(orjson.dumps(data))
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename itself must survive an OS crash
        finally:
            os.close(folder)

    def next_key(self) -> str:
        return f"b{len(self.entries) + 1}"

    def entry(self, key: str) -> BatchEntry:
        for entry in self.entries:
            if entry.key == key:
                return entry
        raise ResultsError(f"{self.path}: no batch {key!r} (see `batchrun batches list`)")

    def open_entries(self) -> list[BatchEntry]:
        """Submitted and not collected yet."""
        return [e for e in self.entries if e.state == SUBMITTED]

    def in_doubt(self) -> list[BatchEntry]:
        return [e for e in self.entries if e.state == INTENT]

    def pending(self) -> list[BatchEntry]:
        """Open or in doubt: may be running and billing."""
        return [e for e in self.entries if e.state in (INTENT, SUBMITTED)]

    def held_rows(self) -> dict[str, set[str | None]]:
        """Rows a new submission must leave alone (in an open batch, or in doubt), with the
        fingerprints of the bodies sent for them (None where a state file did not keep it)."""
        held: dict[str, set[str | None]] = {}
        for entry in self.pending():
            for index, row in enumerate(entry.rows):
                fingerprint = entry.fingerprints[index] if index < len(entry.fingerprints) else None
                held.setdefault(row, set()).add(fingerprint)
        return held


def pending_batches(results: Path, warn: Callable[[str], None]) -> list[BatchEntry]:
    """The batches of a results file still open or in doubt, for the readers (`report`,
    `history`): they may be running and billing, so their rows' costs are unknown and their
    worst cases held (break-14c N2). None beside the file: []. An unreadable record is a
    warning (the totals shown may then miss a batch's cost), not the end of the report."""
    if not state_path(results).exists():
        return []
    try:
        return BatchState.read(results).pending()
    except ResultsError as exc:
        warn(f"{exc}: the cost of batches it lists is not shown")
        return []


def held_open(state: BatchState) -> bool:
    """Whether `state` has batches submitted, or maybe submitted, and not yet collected."""
    return bool(state.pending())


def awaiting_text(entries: list[BatchEntry]) -> str | None:
    """What the readers say of rows no verdict can be given on yet (`report`, `diff`); None: none."""
    rows = sum(len(entry.rows) for entry in entries)
    return f"{rows} row(s) await OpenRouter in open or in-doubt batches" if rows else None
