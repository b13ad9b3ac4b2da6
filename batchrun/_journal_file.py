"""The attempt journal's file format, `X.attempts.jsonl` beside `X.jsonl` (see _journal).

Its first line names the job; then one line per attempt about to go out (`row`, `at`: where
the results file ended then, `usd`: the worst case it reserved, `model`) and, when the reply's
headers named the generation, a line with its id (`row`, `gen`). A grader's attempt is marked `judge`: it is
the row's grading (`judge_cost`), not its answer (break14c m2). An attempt whose row has no
record starting at or after its `at` was in flight when the process died. Read here without
the network, for a resuming run (_journal) and for the readers (_reader), so a crash that is
never resumed still shows its attempts as unknown costs (break14c N10).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ._exceptions import JobError, Problem
from ._files import open_regular
from ._pricing import FLOAT_NOISE_USD, MAX_CHARGE_USD, doubted
from ._record_head import RECORD_START
from ._row_cost import Charge, RowCharges, counted

JOURNAL_SUFFIX = ".attempts.jsonl"
MAX_ATTEMPT_USD = 1e12  # as money() caps: a corrupt line cannot make a figure past it


def journal_path(results: Path) -> Path:
    name = results.name[: -len(".jsonl")] if results.name.endswith(".jsonl") else results.name
    return results.with_name(name + JOURNAL_SUFFIX)


@dataclass
class Crashed:
    """A row's attempts a crash left without a record."""

    row: str
    model: str
    attempts: list[dict[str, Any]] = field(default_factory=list)  # {"at", "usd", "gen", "judge"}
    prompt_id: str = ""  # the row's prompt and repeat, as its own attempt's line says (none: an older journal)
    repeat: int = 0


def journal_usd(value: Any) -> float | None:
    """An attempt's worst case as the journal wrote it (a number; a numeric string is read
    too); None when it cannot be read: a corrupt line whose attempt still went out."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    # A sum's float residue (-5.8e-20 for "nothing reserved") is zero: a resume after every
    # kill -9 said its own journal's reading could not be read (break42 F1).
    return min(max(number, 0.0), MAX_ATTEMPT_USD) if math.isfinite(number) and number >= -FLOAT_NOISE_USD else None


def journal_loads(line: bytes) -> Any:
    # Python's reader also takes NaN and 1e400 (as inf), so a line with a corrupt figure is
    # still read for its row, and _usd decides what the figure counts as.
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)


def journal_key_gap(path: Path, warn: Callable[[str], None] | None = None) -> float:
    """What the crashed run's key window had counted beyond its reported costs (its last
    `key_gap` line): in no record, and no summary was written, so a resume adds it (N12 after a
    kill -9). The last, not the largest: a charge above its worst case seen in flight is taken
    back out of the gap when its answer settles (H6), and the largest line counted it twice
    after a crash (verify14i V11). 0 without a journal or such a line. A line whose figure
    cannot be read (a corrupted sidecar) goes to `warn`, and after one the largest readable
    line is counted: the crashed run may have counted more (break14e E11, which dropped it
    without a word)."""
    last, largest, unreadable, unread_last = 0.0, 0.0, 0, False
    try:
        with open_regular(path) as handle:
            for line in handle:
                if line.startswith(b'{"key_gap"') and line.endswith(b"\n"):
                    value = None
                    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                        value = journal_usd(journal_loads(line)["key_gap"])
                    if value is None:
                        unreadable, unread_last = unreadable + 1, True
                    else:
                        last, largest, unread_last = value, max(largest, value), False
    except OSError:
        return 0.0
    gap = largest if unread_last else last
    if unreadable and warn is not None:
        warn(
            f"{path}: {unreadable} key_gap line(s) could not be read: ${gap:.6f} is counted as spent beyond "
            "the records; the crashed run may have counted more"
        )
    return gap


def read_journal(path: Path, job: str | None) -> dict[str, Crashed]:
    """The attempts in the journal, by row. `job`: refuse (JobError) a journal another job
    wrote (break14c N11); None reads any."""
    rows: dict[str, Crashed] = {}
    with open_regular(path) as handle:
        first = handle.readline()
        if not first.endswith(b"\n"):
            return rows  # empty, or its header torn by the crash: nothing was sent after it
        if not _is_header(first):
            # A file of another kind under the journal's name (a results file named like it:
            # break14e E18) is no journal: never read as one, never deleted.
            why = "not an attempt journal (its first line is not the journal's header): move it away, or rename it"
            raise JobError([Problem(str(path), None, None, "", why)])
        handle.seek(0)
        for line in handle:
            if not line.endswith(b"\n"):
                break  # torn by the crash: that attempt's write never finished, so it was not sent
            try:
                entry = journal_loads(line)
                if "key_gap" in entry or "key_seen" in entry:
                    continue
                if "cut" in entry:  # the results file was cut to this length: what was journaled is at most there
                    cut = max(0, int(entry["cut"]))
                    for attempt in (a for c in rows.values() for a in c.attempts):
                        attempt["at"] = min(attempt["at"], cut)
                    continue
                if "job" in entry:
                    if job is not None and entry["job"] != job:
                        name = str(entry["job"])[:80]
                        why = (
                            f"the attempt journal of job {name!r}, not of {job!r}: run that job on this "
                            "output to record what its crash left, or remove the file"
                        )
                        raise JobError([Problem(str(path), None, None, "", why)])
                    continue
                row = entry["row"]
                if "gen" in entry:
                    if row in rows and rows[row].attempts:
                        rows[row].attempts[-1]["gen"] = entry["gen"]
                    continue
                if "paid" in entry:
                    # Above what one request can cost, not believed, as the reply it came from is
                    # not (out-132 F2: an older build's $50,000 counted in full, every resume exit 5).
                    paid = journal_usd(entry["paid"])
                    _paid(
                        rows.get(row),
                        paid if paid is None or paid <= MAX_CHARGE_USD else None,
                        entry.get("judge") is True,
                    )
                    continue
                crashed = rows.setdefault(row, Crashed(str(row), str(entry.get("model", ""))))
                if isinstance(entry.get("prompt"), str) and not entry.get("judge"):
                    # A report of a killed run grouped its rows under a prompt "" (break56 F2).
                    crashed.prompt_id = entry["prompt"]
                    repeat = entry.get("repeat")
                    crashed.repeat = repeat if isinstance(repeat, int) and not isinstance(repeat, bool) else 0
                crashed.attempts.append(
                    {
                        "at": int(entry["at"]),
                        "usd": journal_usd(entry.get("usd")),
                        "gen": None,
                        "judge": entry.get("judge") is True,
                    }
                )
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
                continue  # not a line of ours: nothing to count
    # An attempt whose worst case cannot be read (a corrupted sidecar) still went out: it counts
    # as the dearest attempt the journal shows, or the most there is (break14c m3: it counted $0
    # and its row was paid for again).
    readable = [a["usd"] for c in rows.values() for a in c.attempts if a["usd"] is not None]
    for crashed in rows.values():
        for attempt in crashed.attempts:
            if attempt["usd"] is None:
                attempt["usd"] = max(readable, default=MAX_ATTEMPT_USD)
    return rows


def _paid(crashed: Crashed | None, usd: float | None, judge: bool) -> None:
    """What an attempt answered that it cost, on the row's latest attempt of its kind (the
    answer's, or a grader's) that has none yet. Graders of one row run at once, so two of
    them may swap figures: the row's spend is the same."""
    if crashed is None or usd is None:
        return
    for attempt in reversed(crashed.attempts):
        if attempt.get("judge") is judge and attempt.get("paid") is None:
            attempt["paid"] = usd
            return


def _is_header(line: bytes) -> bool:
    """The journal's first line: `{"job": NAME, "job_fingerprint": F}` (or, before that was
    written, `{"job": NAME}`) and nothing else."""
    try:
        entry = journal_loads(line)
    except (ValueError, RecursionError):
        return False
    return isinstance(entry, dict) and list(entry) in _HEADERS


# The header's keys, now and as older journals wrote them.
_HEADERS = (
    ["job", "job_fingerprint", "shard", "endpoint"],
    ["job", "job_fingerprint", "shard"],
    ["job", "job_fingerprint"],
    ["job"],
)


def journal_header(results: Path) -> dict[str, Any] | None:
    """The header of the journal beside `results`: whose run it is (`job`, `job_fingerprint`,
    `shard` "K/N" or null; older journals hold less), or None without a journal."""
    try:
        with open_regular(journal_path(results)) as handle:
            first = handle.readline(1 << 16)
    except OSError:
        return None
    if not first.endswith(b"\n") or not _is_header(first):
        return None
    header: dict[str, Any] = journal_loads(first)
    return header


_JOB_FIELD = re.compile(rb',"job":("(?:[^"\\]|\\.)*")')  # the first one: right after the record's head


def a_fragment_of_its_run(results: Path, job: str, limit: int) -> bool:
    """Whether `results` holds only a fragment (no whole line: a torn first record, or the NULs an
    OS crash leaves) beside a journal of `job`'s run: killed before its first record was whole. A
    resume cuts it (repair_torn_tail) and goes on from the journal (out-157 F4: refused, "give
    another --output", and the journal's attempts, maybe billed, were counted by no run)."""
    if (journal_header(results) or {}).get("job") != job:
        return False
    try:
        with open_regular(results) as handle:
            head = handle.read(limit + 1)
    except OSError:
        return False
    # A fragment that names another job (its `job` follows the record's head) is not this run's,
    # whatever journal is beside it (out-160: cut without a word).
    if (named := _JOB_FIELD.search(head)) is not None:
        try:
            if journal_loads(named.group(1)) != job:
                return False
        except (ValueError, RecursionError):
            return False
    return b"\n" not in head and len(head) <= limit


def journal_first_at(results: Path) -> int | None:
    """Where the results file ended when the journal's first attempt went out; None with no
    attempt in it (or no journal one can read)."""
    try:
        rows = read_journal(journal_path(results), None)
    except (OSError, JobError):
        return None
    return min((a["at"] for c in rows.values() for a in c.attempts), default=None)


def journal_job(results: Path) -> tuple[Any, Any] | None:
    """(name, fingerprint) of the job whose journal is beside `results`: the rows of a run killed
    before its first record are that job's (fingerprint None from a journal written before it was kept)."""
    header = journal_header(results)
    return None if header is None else (header["job"], header.get("job_fingerprint"))


def drop_recorded(results: Path, rows: dict[str, Crashed]) -> None:
    """Remove the attempts a record of their row (written after them) accounts for."""
    if results.exists():
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


def unrecorded_attempts(results: Path) -> dict[str, Crashed]:
    """What a crash left beside `results` and no record accounts for; {} without a journal
    (or one that cannot be read: the readers never fail on a sidecar)."""
    path = journal_path(results)
    try:
        rows = read_journal(path, None)
        drop_recorded(results, rows)
    except (OSError, JobError):
        return {}
    return rows


def crash_fields(crashed: Crashed, found: dict[str, float]) -> dict[str, Any]:
    """The cost fields of a row's record for what a crash left, and its `spent`: the answer's
    attempts as its cost, the graders' as its `judge_cost` (break14c m2); each attempt whose
    generation `found` knows at that cost, the rest unknown with their worst cases held."""
    answer, grading = RowCharges(), RowCharges()
    for attempt in crashed.attempts:
        gid = attempt["gen"]
        paid, worst = attempt.get("paid"), attempt["usd"] or 0.0
        if paid is not None and doubted(paid, worst):
            # Far above its worst case (_pricing.doubted): /generation's figure where it has one; else
            # counted, and said to be in doubt (out-118 F3: a $9,999 reply believed, the lookup ignored).
            looked_up = gid in found
            named = gid if isinstance(gid, str) else None  # as the other attempts keep it
            charge = Charge(
                named, 0.0, cost=found[gid] if looked_up else paid, status="looked_up" if looked_up else "reported"
            )
            charge.doubted = not looked_up
        elif paid is not None and paid >= worst:
            # It answered what it cost (AttemptJournal.paid), at least its worst case: believed
            # (it can only over-count; verify14j N1: more than the worst case is counted).
            charge = Charge(gid if isinstance(gid, str) else None, 0.0, cost=paid, status="reported")
        elif gid in found:
            # /generation's record of it; never below what the answer itself said.
            charge = Charge(gid, 0.0, cost=max(found[gid], paid or 0.0), status="looked_up")
        else:
            # Below its worst case, a claim no /key read may have confirmed before the kill
            # (verify14k K3: under-reported answers were believed, $3.24 on $3.00): unknown,
            # its worst case held, and shown as such, not as a `reported` cost (break23 F12:
            # the worst case was recorded as what the answer reported, 2.8x the bill).
            charge = Charge(gid if isinstance(gid, str) else None, worst)
        (grading if attempt.get("judge") else answer).parts.append(charge)
    fields = answer.fields()
    spent = counted(fields)
    if grading.parts:
        graded = grading.fields()
        spent += counted(graded)
        fields.update(
            judge_cost=graded["cost"], judge_cost_status=graded["cost_status"], judge_cost_known=graded["cost_known"]
        )
        fields["abandoned_attempts"] = (fields["abandoned_attempts"] or []) + graded["abandoned_attempts"]
    fields["spent"] = spent
    return fields
