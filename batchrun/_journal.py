"""The attempt journal, `X.attempts.jsonl` beside `X.jsonl` (break-14b M4).

A request's reservation lived only in memory until its row's record was written, so a kill -9
(the OOM killer, a CI runner's timeout, a power cut) with requests in flight left no trace of
them, and a resume with the same budget spent it again while OpenRouter billed the abandoned
requests. So before each attempt goes out, one line is appended here: its row, where the
results file ended then (`at`), and its worst case; when the reply's headers name the
generation, a second line with its id. Each is one `os.write` (no fsync per request: a kill -9
does not lose the page cache, only an OS crash or power cut can, and then at most the lines
since the kernel last wrote them back; an fsync per request would cost each request a disk
flush). A run that ends without losing a record deletes the file once its summary is written.

A later run on the same output (a resume) reads what a crash left: an attempt whose row has no
record starting at or after its `at` was in flight, or abandoned, when the process died. Its
cost is looked up by generation id where one was journaled; otherwise its worst case is held.
Each such row gets a `skipped` record (reason `crashed`) carrying those attempts
(`abandoned_attempts`, `cost_held`, `spent`), so the budget and every reader count them; the
row itself is sent again like any skipped row. The journal stays until the run's own replaces it
(AttemptJournal), carrying its key gap on.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from ._client import OpenRouterClient
from ._earlier_costs import look_up_generations
from ._exceptions import OutputFailed
from ._generation import valid_generation_id
from ._job import Job
from ._journal_file import Crashed, crash_fields, drop_recorded, journal_key_gap, journal_path, read_journal
from ._killed_run import KeySeen, key_seen_line, last_key_seen
from ._ledger import CreditLedger
from ._matrix import Request, Shard, shard_text
from ._pricing import DOUBTED_TIMES, MAX_CHARGE_USD, above_worst, doubted, usd
from ._reader import final_records
from ._reconcile import KeyStart
from ._record_head import Identity, record_head, record_identity
from ._results import ResultsWriter
from ._status import Status
from ._ungraded import regraded_fields


class AttemptJournal:
    """Appends a line per attempt before it is sent; deleted when the run ends whole."""

    def __init__(
        self,
        results: Path,
        writer: ResultsWriter,
        job: Job,
        carried_gap: float = 0.0,
        shard: Shard | None = None,
        prior_usd: float = 0.0,
        rate: float | None = None,
        endpoint: str | None = None,
    ) -> None:
        self.path = journal_path(results)
        self._writer = writer
        self._prior = prior_usd  # what earlier runs of the file spent: each key_seen line says it
        self._sent = 0  # attempts journaled: each key_seen line says how many
        self._rate = rate  # what an answer cost the key, as the runs killed before this one showed
        self._sent_usd = 0.0  # their worst cases
        self._carried_seen: KeySeen | None = None  # a killed run's readings this run carries on (carry)
        self._first: dict[str, float] | None = None  # this run's first reading (key_seen)
        self._last: tuple[dict[str, float], int, float] | None = None  # its last, and what was sent by then
        # The key gap an earlier crashed run's journal held, which this run read and deleted:
        # in no summary yet, so this journal carries it on, or a crash of this run too would
        # lose it (break14e E3: the resume of a resume spent it again).
        self._carried = carried_gap
        # Whose attempts these are: a later run of another job on the output must not take
        # them for its own rows (break14c N11). Written whole beside, then renamed over the
        # journal a crash left (which `recover` keeps): until this moment that one holds the
        # key gap this one carries on, so a resume killed in its pre-flight, or refused there,
        # does not lose it (break14h H7: $0.65 on $0.50 after two crashes).
        # With the job's version: a run killed before its first record left rows a reader could
        # only call "job None", another job's, and `merge` of its shard exited 2 (break30 F2).
        # And the shard: a shard killed before its summary was resumed without --shard to the
        # whole matrix, the other shards' rows paid again (verify30 N1).
        # And what answers the run (the simulator or an endpoint): a resume of it refuses the other (_answered_by).
        whose = {"job": job.name, "job_fingerprint": job.fingerprint, "shard": shard_text(shard), "endpoint": endpoint}
        head = orjson.dumps(whose) + b"\n"
        if carried_gap > 0:
            head += orjson.dumps({"key_gap": carried_gap}) + b"\n"
        fresh = self.path.with_name(self.path.name + ".new")
        try:
            # Made anew: whatever a crash (or anyone) left under that name, a FIFO there would
            # block the open for ever, and a symlink would be written through (verify14i V1).
            with contextlib.suppress(FileNotFoundError):
                fresh.unlink()
            fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
            try:
                os.write(fd, head)
            finally:
                os.close(fd)
            os.replace(fresh, self.path)
        except OSError as exc:
            raise OutputFailed(f"{self.path}: writing the attempt journal failed: {exc.strerror or exc}") from None
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def _write(self, line: bytes) -> None:
        try:
            os.write(self._fd, line)  # one short line: written whole (O_APPEND)
        except OSError as exc:
            # Nothing may go out that a crash could hide: the run stops like a results failure.
            raise OutputFailed(f"{self.path}: writing the attempt journal failed: {exc.strerror or exc}") from None

    def sent(self, request: Request, usd: float, row: str, grader: bool = False) -> None:
        """An attempt of `request` for `row` (its own, or the row a `grader` grades) is about
        to go out, holding `usd`. A grader's is marked: its cost is the row's `judge_cost`."""
        self._sent += 1
        self._sent_usd += usd
        entry = {"row": row, "at": self._writer.size, "usd": usd, "model": request.model}
        if grader:
            entry["judge"] = True
        else:  # what a reader shows of the row if this attempt is left in flight (not its vars: maybe MiBs)
            entry.update(prompt=request.prompt_id, repeat=request.repeat)
        self._write(orjson.dumps(entry) + b"\n")

    @property
    def attempts_sent(self) -> int:
        """Attempts this run sent (journaled before each went out)."""
        return self._sent

    def key_gap(self, usd: float) -> None:
        """The key window has now counted `usd` beyond the reported costs (the run's total): a
        resume after a kill -9 counts it (and what this journal carries on) as spent, as a
        summary would have carried it."""
        self._write(orjson.dumps({"key_gap": self._carried + usd}) + b"\n")

    def summarized(self, whole: bool) -> None:
        """The run's summary is written, and carries the key gap this journal carried: kept (not
        `whole`) for the attempts no record holds, it no longer adds the gap (its last line says
        none), or every reader and the resume counted it twice, and each failed write again
        (out-177 F1). A kill before this line counts it twice (the safe side)."""
        if whole:
            return
        with contextlib.suppress(OutputFailed):
            self._write(orjson.dumps({"key_gap": 0.0}) + b"\n")

    def key_seen(self, key: KeyStart, ledger: CreditLedger) -> None:
        """A /key read this run followed (`key`: its usage and limit_remaining), what the ledger
        counted as spent then (its key gap too) and had in flight; a resume after a kill -9
        measures from the last such line what the answers since cost the key (_killed_run)."""
        counted, flight = ledger.committed + ledger.unrecorded, ledger.in_flight
        usage, remaining = key.usage or 0.0, key.remaining
        line = key_seen_line(
            usage, counted, ledger.reserved, self._prior, flight, self._sent, self._rate, remaining, key.limit
        )
        self._write(orjson.dumps(line) + b"\n")
        self._first = self._first or line
        self._last = (line, self._sent, self._sent_usd)

    def unconfirmed(self, usd: float) -> None:
        """Worst cases counted as spent (`usd` in all) since the key could not be followed: a resume
        whose /key answers releases what it shows was never charged, after a kill -9 too."""
        self._write(orjson.dumps({"unconfirmed": usd}) + b"\n")

    def charged_before(self, usd: float) -> None:
        """This run has counted `usd` that the key showed charged before its first reading (a
        batch of an earlier run, collected): a resume's measure of its readings leaves it out."""
        base = self._carried_seen.before if self._carried_seen is not None else 0.0
        self._write(orjson.dumps({"charged_before": base + usd}) + b"\n")

    def first_reading(self, key: KeyStart, seen: KeySeen | None, ledger: CreditLedger) -> None:
        """This run's first reading of the key, journaled for a resume after a kill of this one; or,
        without one, the killed run's readings carried on."""
        if key.usage is not None:
            self.key_seen(key, ledger)
        elif seen is not None:
            self.carry(seen)

    def carry(self, seen: KeySeen) -> None:
        """A killed run's readings, carried on by a run that could not read the key's usage."""
        self._carried_seen = seen
        self._write(b"".join(orjson.dumps(line) + b"\n" for line in seen.lines()))

    def summary_readings(self, unconfirmed: float, before: float = 0.0) -> list[dict[str, float]] | None:
        """The readings for the summary (`key_readings`), which outlives the journal: those this run
        carries on, with its own attempts after them; or, when `unconfirmed` worst cases were
        counted as spent as the key's usage could not be followed any more, its own first and last
        readings, for a resume to measure what the key really charged (break38 F4). `before`: what
        the run counted that the key showed charged before its first reading (charged_before)."""
        seen = self._carried_seen
        if seen is not None:
            sent_after, after_n = seen.sent_after + self._sent_usd, seen.after_n + self._sent
            return replace(seen, sent_after=sent_after, after_n=after_n, before=seen.before + before).lines()
        if unconfirmed <= 0 or self._first is None or self._last is None:
            return None
        last, sent, sent_usd = self._last
        after = {"after_usd": self._sent_usd - sent_usd, "after_n": self._sent - sent, "unconfirmed": unconfirmed}
        return [self._first, {**last, **after, **({"before": before} if before else {})}]

    def generation(self, row: str, generation_id: str) -> None:
        self._write(orjson.dumps({"row": row, "gen": generation_id}) + b"\n")

    def paid(self, row: str, usd: float, grader: bool = False) -> None:
        """The attempt of `row` (a grader's, if `grader`) answered saying it cost `usd`: before the
        ledger takes it, since the key gap may fall by it (a charge above its worst case seen in
        flight), and a kill -9 before the row's record then counted neither (verify14j N1)."""
        entry: dict[str, object] = {"row": row, "paid": usd}
        if grader:
            entry["judge"] = True
        self._write(orjson.dumps(entry) + b"\n")

    def close(self, whole: bool) -> None:
        """`whole`: every attempt is in a record now, so the journal goes."""
        if self._fd < 0:
            return
        if not whole and self._writer.cut_to is not None:
            # The file was cut under the run: offsets journaled before are past its end now, and the
            # record written after the cut, at `cut_to`, would read as never written (verify69 F6).
            with contextlib.suppress(OutputFailed):
                self._write(orjson.dumps({"cut": self._writer.cut_to}) + b"\n")
        fd, self._fd = self._fd, -1
        os.close(fd)
        if whole:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


@dataclass
class Recovered:
    """What `recover` found in a crashed run's journal."""

    rows: int = 0  # rows recorded as skipped (crashed)
    key_gap: float = 0.0  # spent beyond any record: the journal's key gap, and `orphans_usd`
    orphans: int = 0  # rows the job no longer has, whose attempts were in flight
    orphans_usd: float = 0.0  # what those attempts count as spent
    raised: float = 0.0  # how far lookups raised what crashed rows count above their worst cases held
    asked: frozenset[str] = frozenset()  # the generation ids looked up
    held: int = 0  # of `rows`, those whose cost is unknown: worst cases held
    key_seen: KeySeen | None = None  # the crashed run's last reading of the key (_killed_run)
    warnings: list[str] = field(default_factory=list)  # what could not be read in the journal


def _answers_being_graded(
    results: Path, rows: dict[str, Crashed], known: dict[str, Request]
) -> dict[str, dict[str, Any]]:
    """The rows whose crash cut off graders only, of an answer the file already holds (a resume
    re-grading what a stop left ungraded, _ungraded): their final records, by id. Recorded as
    `skipped crashed`, such a row was sent again, its paid answer bought twice (verify25 N7)."""
    graders_only = {row for row, c in rows.items() if c.attempts and all(a.get("judge") for a in c.attempts)}
    if not graders_only or not results.exists():
        return {}
    return {
        record["id"]: record
        for record in final_records(results, journal=False)
        if record["id"] in graders_only
        and record["status"] == Status.OK
        and (request := known.get(record["id"])) is not None
        and record.get("fingerprint") == request.fingerprint
    }


def _graders_cut(
    stored: dict[str, Any], job: Identity, request: Request, fields: dict[str, Any], spent: float, now: str
) -> dict[str, Any]:
    """The row written again: its stored answer and verdicts (those the stop left ungraded are
    still so: this run grades them), what the crashed graders cost as its grading."""
    record = record_head(request.id, request.fingerprint, Status.OK, None, False, 0.0, spent)
    record.update(record_identity(job), model=request.model, prompt_id=request.prompt_id)
    record.update(vars=request.vars, repeat=request.repeat, **regraded_fields(stored))
    record.update(
        abandoned_attempts=fields.get("abandoned_attempts"),
        judge_cost=fields.get("judge_cost"),
        judge_cost_status=fields.get("judge_cost_status"),
        judge_cost_known=fields.get("judge_cost_known"),
        started_at=None,
        finished_at=now,
        checks=stored.get("checks"),
        passed=stored.get("passed"),
        score=stored.get("score"),
    )
    return record


async def recover(
    results: Path,
    job: Identity,
    requests: Iterable[Request],
    client: OpenRouterClient,
    now: str,
    limit_s: float,
) -> Recovered:
    """Record what a crash left in the journal beside `results` (`job`: its name and
    fingerprint; `requests`: the matrix, to find the rows; `limit_s`: for the lookups);
    returns what it recorded (Recovered).

    A row the job no longer has (it was edited since: break14e E16) gets no record: a `skipped`
    row outside the matrix could never be run again, and every later run would say the file is
    incomplete. Its attempts' cost is spent all the same: it is added to the key gap, which
    the run's summary (and its own journal) carry like the key's usage beyond the records."""
    path = journal_path(results)
    if not path.exists():
        return Recovered()
    rows = read_journal(path, job[0])
    out = Recovered()
    out.key_gap = journal_key_gap(path, out.warnings.append)
    out.key_seen = last_key_seen(path, out.warnings.append)
    if rows:
        drop_recorded(results, rows)
    if rows:
        ids = (valid_generation_id(a["gen"], client.scrub) for c in rows.values() for a in c.attempts)
        out.asked = frozenset(i for i in ids if i is not None)
        looked_up = await look_up_generations(client, out.asked, limit_s)
        # A BYOK generation's upstream cost too (verify14j N13). Not one over 100x its attempt's worst
        # case: no read saw it charged (out-121 F2: $50 for a $0.027 attempt bricked every resume);
        # what the key was charged meanwhile counts by its readings (_killed_run).
        attempts = [a for c in rows.values() for a in c.attempts]
        # A reply's own figure far above its worst case is what a lookup confirms or replaces (crash_fields).
        worst = {a["gen"]: a["usd"] or 0.0 for a in attempts if not doubted(a.get("paid") or 0.0, a["usd"] or 0.0)}
        found = {
            g: cost.charged
            for g, cost in looked_up.items()
            if cost.believed and not doubted(cost.charged, worst.get(g, 0.0))
        }
        if refused := len(looked_up) - len(found):
            out.warnings.append(
                f"{refused} cost(s) /generation gave for attempts a killed run left in flight were over "
                f"{DOUBTED_TIMES}x their worst cases (or over ${MAX_CHARGE_USD:,.0f}, more than one request "
                "costs): not taken, their worst cases held"
            )
        if above := [(cost, worst[g]) for g, cost in found.items() if g in worst and above_worst(cost, worst[g])]:
            # Counted (the safe side), and said, as a run and a resume's lookups say it (out-124 F2).
            out.warnings.append(
                f"{len(above)} cost(s) /generation gave for attempts a killed run left in flight were above "
                f"their worst cases (e.g. ${usd(above[0][0])} for ${usd(above[0][1])}): counted as charged"
            )
        known = {r.id: r for r in requests if r.id in rows}
        answered = _answers_being_graded(results, rows, known)
        writer = ResultsWriter(results)
        try:
            for crashed in rows.values():
                fields = crash_fields(crashed, found)
                spent = fields.pop("spent")
                request = known.get(crashed.row)
                if request is None:
                    out.orphans += 1
                    out.orphans_usd += spent
                    continue
                out.rows += 1
                # Above what its record held: the key gap counted it (an orphan's is in the gap, no record).
                out.raised += max(0.0, spent - crash_fields(crashed, {})["spent"])
                out.held += fields["cost_status"] == "unknown"
                if crashed.row in answered:
                    writer.write(_graders_cut(answered[crashed.row], job, request, fields, spent, now), request.payload)
                    continue
                record = record_head(crashed.row, request.fingerprint, "skipped", "crashed", True, None, spent)
                record.update(record_identity(job))
                record.update(
                    model=request.model,
                    prompt_id=request.prompt_id,
                    vars=request.vars,
                    repeat=request.repeat,
                    **fields,
                    attempts=len(crashed.attempts),
                    attempt_errors=[],
                    error=None,
                    started_at=None,
                    finished_at=now,
                )
                writer.write(record, request.payload)
        finally:
            writer.close()
    # The journal stays until this run's own replaces it (AttemptJournal), carrying its key gap:
    # its attempts now have records (crashed), so a recovery after another crash drops them.
    out.key_gap += out.orphans_usd
    return out
