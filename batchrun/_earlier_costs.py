"""Costs an earlier run of a file never learnt, looked up when the file is resumed.

A row written with its cost unknown (/generation down, slow, or not knowing the generation yet
when its run ended) holds its attempt's worst case as spent. Every resume counted it so, and the
budget it took stayed taken, though /generation knew the cost by the next morning (verify69 F5).
A resume looks such rows up again, by their answer's generation id, a few at a time and within
the run's timeout, before its scan counts what earlier runs spent. Each that /generation knows
now is written again with that cost (`resolves`, as _late_costs does at a run's end), so the
scan, and every reader after it, counts the row at what it cost.

A charge counted in doubt (`cost_doubted`: far above its worst case, no lookup confirming it) is
looked up the same way, on the answer, on an abandoned attempt's entry, or on a grader's entry.
An unknown cost is looked up only where the row's one attempt is unknown: among several parts,
which one is unknown is not in the record; in a row that never answered (every attempt cut off),
its attempts of unknown cost, all or none (out-122 F2). Graders' unknown costs likewise, each
grader of one attempt, where the row's other charged graders are known (out-117 F3, out-120 F3).
Lower figures, and figures far above their worst cases, are taken only as far as what /key showed
over the earlier runs allows (_key_bounds). A row with
earlier records folded in is not looked up: a record written again replaces only the one before
it. Those stay held, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._charges import LOOKUPS_AT_ONCE
from ._client import OpenRouterClient
from ._earlier_graders import grading_fields, unknown_graders, unknown_grading_fields
from ._exceptions import OutputFailed, RequestFailed
from ._fold import least_sure
from ._generation import valid_generation_id
from ._key_bounds import key_rise, refused
from ._late_costs import graded_on_cost, resolved_record
from ._matrix import Request
from ._pricing import DOUBTED_TIMES, GenerationCost
from ._reader import final_records
from ._record_shape import figure
from ._results import ResultsWriter
from ._row_cost import counted, graders_of
from ._scrub import Scrubber
from ._summary_floor import seal_looked_up

MAX_ROWS = 1_000  # looked up by one resume: a file with more has the rest looked up by the next


async def look_up_generations(
    client: OpenRouterClient, ids: Iterable[str], limit_s: float
) -> dict[str, GenerationCost]:
    """Generation id -> what /generation says it cost, for those it knows: LOOKUPS_AT_ONCE at a
    time, all within `limit_s` (a lookup that hangs leaves its cost unknown, never the run waiting)."""
    gate = asyncio.Semaphore(LOOKUPS_AT_ONCE)
    found: dict[str, GenerationCost] = {}

    async def one(generation_id: str) -> None:
        async with gate:
            try:
                cost = await client.generation(generation_id)
            except RequestFailed:
                return
            if cost is not None:
                found[generation_id] = cost  # one not believed too: its caller says so

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit_s):
            await asyncio.gather(*(one(generation_id) for generation_id in sorted(set(ids))))
    return found


@dataclass
class _Due:
    """A row to look up: its answer's generation id when its cost is unknown or in doubt, and the
    (index, generation id) of each abandoned attempt whose charge is in doubt."""

    record: dict[str, Any]
    answer: str | None
    abandoned: list[tuple[int, str]]
    graders: list[tuple[int, int, str]]  # (check index, grader index, generation id) of graders in doubt
    unknown_graders: list[tuple[int, int, str]]  # of graders of unknown cost (_earlier_graders)
    unknown_abandoned: list[tuple[int, str]]  # of attempts of unknown cost, in a row with no answer

    @property
    def ids(self) -> list[str]:
        graders = [generation_id for _, _, generation_id in self.graders + self.unknown_graders]
        attempts = [generation_id for _, generation_id in self.abandoned + self.unknown_abandoned]
        return ([self.answer] if self.answer else []) + attempts + graders


def _due(record: dict[str, Any], scrub: Scrubber) -> _Due | None:
    """What of `record` a resume looks up, or None. The answer: the row's one attempt, its cost
    unknown, or its charge in doubt (`cost_doubted`). An abandoned attempt (an error reply's
    charge before a retry answered): its charge in doubt, in its own entry (out-117 F2: never
    asked, $9,999 held for good). With parts of unknown cost among several, which one is unknown
    is not in the record: not looked up."""
    if record.get("earlier_records"):
        return None
    entries = record.get("abandoned_attempts") or []
    # Every part's cost a figure: a hand-edited entry's "abc" is no cost to move (a traceback at the resume).
    known = figure(record.get("cost")) and all(
        isinstance(entry, dict) and figure(entry.get("cost")) for entry in entries
    )
    answer = valid_generation_id(record.get("generation_id"), scrub)
    if not (record.get("cost_status") == "unknown" and not entries) and not (known and record.get("cost_doubted")):
        answer = None
    abandoned = [
        (index, generation_id)
        for index, entry in enumerate(entries)
        if known
        and isinstance(entry, dict)
        and entry.get("cost_doubted") is True
        and (generation_id := valid_generation_id(entry.get("generation_id"), scrub)) is not None
    ]
    graders = [
        (check, index, generation_id)
        for check, index, grader in graders_of(record)
        if figure(record.get("judge_cost"))
        and grader.get("cost_doubted") is True
        and all(figure(grader.get(name)) for name in ("cost", "doubted_cost", "doubted_charged"))
        and (generation_id := valid_generation_id(grader.get("generation_id"), scrub)) is not None
    ]
    unknown, attempts = unknown_graders(record, scrub), _unknown_attempts(record, entries, scrub)
    due = _Due(record, answer, abandoned, graders, unknown, attempts)
    return due if answer or abandoned or graders or unknown or attempts else None


def _unknown_attempts(record: dict[str, Any], entries: list[Any], scrub: Scrubber) -> list[tuple[int, str]]:
    """The attempts of unknown cost of a row with no answer (`is_byok` null: every attempt cut off,
    by a timeout or a kill), each by its generation id, where every other one's cost is known: its
    worst cases were held for good (out-122 F2: a false exit 5 on every --retry-errors)."""
    if record.get("cost") is not None or record.get("is_byok") is not None or not figure(record.get("cost_held")):
        return []
    found = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            return []
        if entry.get("cost_status") != "unknown":
            if not figure(entry.get("cost")) or entry.get("cost_doubted"):
                return []
            continue
        if (generation_id := valid_generation_id(entry.get("generation_id"), scrub)) is None:
            return []
        found.append((index, generation_id))
    return found


def _ids_of(record: dict[str, Any]) -> Iterator[Any]:
    yield record.get("generation_id")
    for entry in record.get("abandoned_attempts") or []:
        if isinstance(entry, dict):
            yield entry.get("generation_id")
    for _, _, grader in graders_of(record):
        yield grader.get("generation_id")


def _dues(output: Path, requests: Mapping[str, Request], scrub: Scrubber) -> list[_Due]:
    """The rows of `output` (still in the matrix) with a cost to look up, up to MAX_ROWS of them.
    Not by an id two attempts carry: a server that reuses ids would give each the other's cost
    (break66 F4)."""
    found: list[_Due] = []
    for record in final_records(output):
        if record["id"] in requests and (due := _due(record, scrub)) is not None:
            found.append(due)
            if len(found) == MAX_ROWS:
                break
    if not found:
        return []
    # Read again for those ids alone: a count of every row's id held a large file's in memory.
    wanted = {generation_id for due in found for generation_id in due.ids}
    seen = Counter(g for record in final_records(output) for g in _ids_of(record) if g in wanted)
    return [due for due in found if all(seen[generation_id] == 1 for generation_id in due.ids)]


def _held_unknown(due: _Due) -> float:
    """What the row held for its parts of unknown cost a resume looks up: a cost learnt above
    it passed their worst cases."""
    old = due.record
    if due.unknown_abandoned:  # a row of attempts only: what it held, less their known costs
        return float(old["cost_held"]) - (float(old["cost_known"]) if figure(old.get("cost_known")) else 0.0)
    unknown = due.answer is not None and old.get("cost_status") == "unknown" and figure(old.get("cost_held"))
    graders = {(check, index): grader for check, index, grader in graders_of(old)}
    return (float(old["cost_held"]) if unknown else 0.0) + sum(
        float(graders[check, index]["cost_held"]) for check, index, _ in due.unknown_graders
    )


def _fields(due: _Due, found: Mapping[str, GenerationCost]) -> tuple[dict[str, Any], float] | None:
    """The row's cost fields with what /generation knows now, and how far they move its `spent`;
    None when it knows nothing new."""
    old, fields, change = due.record, {}, 0.0
    answer = _attempts_fields(due, found) if due.unknown_abandoned else _answer_fields(due, found)
    if answer is not None:
        fields.update(answer)
        change += counted({**old, **answer}) - counted(old)  # its BYOK upstream charge as it was, if kept
    grading = (
        grading_fields(due.record, due.graders, found)
        if due.graders
        else unknown_grading_fields(due.record, due.unknown_graders, found)
    )
    if grading is not None:
        fields.update(grading[0])
        change += grading[1]
    return (fields, change) if fields else None


def _attempts_fields(due: _Due, found: Mapping[str, GenerationCost]) -> dict[str, Any] | None:
    """A row of attempts only: its cost fields once /generation knows every one of unknown cost
    (an abandoned attempt's cost is its whole charge, as _charges.look_up takes it)."""
    if any(generation_id not in found for _, generation_id in due.unknown_abandoned):
        return None
    entries = [dict(entry) for entry in due.record["abandoned_attempts"]]
    for index, generation_id in due.unknown_abandoned:
        entries[index].update(cost=found[generation_id].charged, cost_status="looked_up")
    status = least_sure([str(entry.get("cost_status")) for entry in entries])
    cost = round(sum(float(entry["cost"]) for entry in entries), 12)
    fields: dict[str, Any] = {"cost": cost, "cost_status": status, "cost_held": None, "cost_known": None}
    return {**fields, "cost_unknown": False, "abandoned_attempts": entries}


def _answer_fields(due: _Due, found: Mapping[str, GenerationCost]) -> dict[str, Any] | None:
    """The answer's and the abandoned attempts' cost fields, where /generation knows one of them."""
    old = due.record
    entries = [dict(entry) for entry in old.get("abandoned_attempts") or []]
    learnt = [index for index, generation_id in due.abandoned if generation_id in found]
    for index, generation_id in due.abandoned:
        if generation_id in found:  # an abandoned attempt's cost is its whole charge (_charges.look_up)
            entries[index].update(cost=found[generation_id].charged, cost_status="looked_up")
            entries[index].pop("cost_doubted", None)
    answer = found.get(due.answer) if due.answer else None
    if answer is None and not learnt:
        return None
    fields: dict[str, Any] = {"cost_held": None, "cost_known": None, "cost_unknown": False, "cost_doubted": None}
    if answer is not None:
        upstream = answer.upstream_inference_cost
        fields.update(cost=answer.total_cost, is_byok=answer.is_byok, upstream_inference_cost=upstream)
        statuses = ["looked_up"]
    else:  # the answer's own cost and status, as the row's less its abandoned attempts'
        before = sum(float(entry.get("cost") or 0.0) for entry in old.get("abandoned_attempts") or [])
        fields.update(cost=float(old["cost"]) - before, cost_doubted=old.get("cost_doubted"))
        statuses = [str(old.get("cost_status"))]
    fields["cost"] = round(fields["cost"] + sum(float(entry.get("cost") or 0.0) for entry in entries), 12)
    fields["cost_status"] = least_sure(statuses + [str(entry.get("cost_status")) for entry in entries])
    if entries:
        fields["abandoned_attempts"] = entries
    return fields


@dataclass
class EarlierCosts:
    """What a resume's lookups of earlier rows' costs did."""

    rows: int = 0  # rows written again
    moved: float = 0.0  # how far what they count as spent moved
    raised: float = 0.0  # of which, by answers learnt to cost more than they counted (the key's gap held them)
    failed: str | None = None  # why not all of them could be written
    above: int = 0  # costs looked up above the worst case held for them
    above_example: str = ""
    kept_held: int = 0  # costs looked up lower, not taken: the key saw the earlier runs charged more
    refused_high: int = 0  # costs looked up far above their worst cases, not taken: the key saw less charged
    unlearnt: int = 0  # rows looked up that /generation gave nothing new for
    key_usd: float = 0.0  # what it saw
    unchecked: bool = False  # no readings of every earlier run: no lower figure, nor one far above, is taken

    def notices(self, output: Path) -> list[str]:
        said = [
            f"{output}: {self.rows} row(s) whose cost an earlier run did not learn were looked up: ${self.moved:+.6f}"
        ]
        if self.above:
            # Named in full: under --quiet the notice before it, which names the file, is not shown.
            said.append(
                f"warning: {output}: {self.above} of the rows looked up cost more than the worst case held "
                f"(e.g. {self.above_example})"
            )
        why = (
            "no key readings of every earlier run to check them against (a merged file, no summary, or records "
            "written after it)"
            if self.unchecked
            else f"the key's usage over the earlier runs (${self.key_usd:.6f})"
        )
        if self.kept_held:
            lower = why if self.unchecked else f"they would take what those runs count below what {why} showed"
            said.append(
                f"warning: {output}: {self.kept_held} row(s)' costs /generation gave below what was counted for them "
                f"were not taken: {lower}"
            )
        if self.refused_high:
            said.append(
                f"warning: {output}: {self.refused_high} row(s)' costs /generation gave over {DOUBTED_TIMES}x their "
                f"worst cases were not taken: {why if self.unchecked else why + ' cannot hold them'} (their worst "
                "cases still count)"
            )
        if self.unlearnt:  # said, not left to the summary's counts alone (out-118 F6)
            said.append(
                f"warning: {output}: {self.unlearnt} row(s) of unknown or doubted cost stay so: /generation did not "
                "give it (their worst cases, or the replies' figures, still count; a later resume asks again)"
            )
        shown = said if self.rows else said[1:]
        return shown + ([f"warning: {self.failed}"] if self.failed else [])


async def resolve_earlier_costs(
    output: Path,
    requests: Mapping[str, Request],
    client: OpenRouterClient,
    now: str,
    limit_s: float,
    summary: Mapping[str, Any],
    asked: frozenset[str] = frozenset(),
) -> EarlierCosts:
    """Look up the costs `output`'s rows were written without, or with in doubt, and append
    each row /generation knows now (its earlier runs' `summary` bounds how far they lower); not
    by the ids a crash recovery `asked` for just before."""
    dues = [due for due in _dues(output, requests, client.scrub) if asked.isdisjoint(due.ids)]
    out = EarlierCosts()
    if not dues:
        return out
    found = await look_up_generations(client, (generation_id for due in dues for generation_id in due.ids), limit_s)
    # Not believed: its row stays as it was, said among those /generation gave nothing new for.
    found = {generation_id: cost for generation_id, cost in found.items() if cost.believed}
    learnt = [(due, *moved, _held_unknown(due)) for due in dues if (moved := _fields(due, found)) is not None]
    out.unlearnt = len(dues) - len(learnt)
    key = key_rise(summary, output)
    out.key_usd, out.unchecked = key or 0.0, key is None
    absurd, lower = refused([(held, change) for _, _, change, held in learnt], summary, key)
    out.refused_high, out.kept_held = len(absurd), len(lower)
    learnt = [item for index, item in enumerate(learnt) if index not in absurd | lower]
    if learnt:
        seal_looked_up(output, done=False)
    try:
        writer = ResultsWriter(output, create=False)
        try:
            for due, fields, change, held in learnt:
                old, request = due.record, requests[due.record["id"]]
                if held > 0 and change > held * 0.01 + 1e-9:
                    # Counted (the safe side), and said, as a run says a lookup above its worst case (out-117 F4).
                    out.above += 1
                    out.above_example = out.above_example or f"${held + change:.6f} for ${held:.6f} held"
                writer.write(graded_on_cost(resolved_record(old, fields, change, now), request), request.payload)
                out.rows, out.moved = out.rows + 1, out.moved + change
                if not (due.abandoned or due.unknown_abandoned):
                    # Charged before their replies came, so before the run's last /key read: in its
                    # gap. An attempt cut off may have been billed after it (out-123 F2).
                    out.raised += max(0.0, change)
        finally:
            writer.close()
    except OutputFailed as failure:
        out.failed = f"costs looked up for earlier runs' rows were not all written again: {failure}"
    except OSError as exc:
        out.failed = f"{output}: costs looked up for earlier runs' rows were not written: {exc.strerror or exc}"
    if out.rows:
        seal_looked_up(output, done=True)
    return out
