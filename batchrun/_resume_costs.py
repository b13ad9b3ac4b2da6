"""Costs an earlier run could not learn, looked up again when its file is resumed.

A row written with its cost unknown (an attempt cut short, a `/generation` that did not answer
before the run ended) kept it unknown for good: a `--resume` looked nothing up, its
`max_cost_usd` check stayed undecided, and every later resume and gate exited 1 on it
(verify69 F5). So a resume looks each such row's generations up once more, and a row whose
every unknown part is found is written again with its cost, as a cost learnt late is
(`resolves`, _late_costs), and graded again on it. A row folded over several records, or with
a part of no generation id, is left as it is: what it held stays counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._checks import answer_of, grade, stored_judgements
from ._client import OpenRouterClient
from ._generation import valid_generation_id
from ._job import Job
from ._journal import look_up
from ._late_costs import resolved_record
from ._matrix import Shard, matrix_requests
from ._reader import final_records
from ._results import ResultsWriter
from ._row_cost import counted
from ._ungraded import applied_checks

SAME_USD = 1e-12  # a known part this small is none: the answer's own cost is the unknown one


def _unknown_parts(record: dict[str, Any], scrub: Any) -> list[str] | None:
    """The generation ids of a row's parts of unknown cost, or None when they cannot all be named."""
    if record.get("cost_status") != "unknown" or record.get("earlier_records") or record.get("resolves") is not None:
        return None
    abandoned = record.get("abandoned_attempts") or []
    if not isinstance(abandoned, list) or not all(isinstance(a, dict) for a in abandoned):
        return None
    ids = [a.get("generation_id") for a in abandoned if a.get("cost") is None]
    known = sum(a["cost"] for a in abandoned if isinstance(a.get("cost"), (int, float)))
    if abs(float(record.get("cost_known") or 0.0) - known) < SAME_USD:
        ids.append(record.get("generation_id"))  # the answer's own cost is not known either
    named = [valid_generation_id(g, scrub) if isinstance(g, str) else None for g in ids]
    if not named or any(g is None for g in named) or len(set(named)) < len(named):  # one id twice: not two costs
        return None
    return [g for g in named if g]


async def learn_earlier_costs(
    output: Path, job: Job, shard: Shard | None, client: OpenRouterClient, now: str, limit_s: float
) -> int:
    """Write again, with its cost, each row of `output` whose unknown cost `/generation` knows now;
    how many were."""
    wanted = {}
    for record in final_records(output, lambda _: None, journal=False):
        if (ids := _unknown_parts(record, client.scrub)) is not None:
            wanted[record["id"]] = (record, ids)
    if not wanted:
        return 0
    found = await look_up(client, [{"gen": g} for _, ids in wanted.values() for g in ids], limit_s)
    learnt = {row: pair for row, pair in wanted.items() if all(g in found for g in pair[1])}
    if not learnt:
        return 0
    written = 0
    writer = ResultsWriter(output, create=False)
    try:
        for request in matrix_requests(job, shard):
            if (pair := learnt.get(request.id)) is None or pair[0].get("fingerprint") != request.fingerprint:
                continue
            old, ids = pair
            cost = float(old.get("cost_known") or 0.0) + sum(found[g] for g in ids)
            fields: dict[str, Any] = {"cost": cost, "cost_held": None, "cost_known": None}
            fields.update(cost_status="looked_up", cost_unknown=False)
            abandoned = old.get("abandoned_attempts")
            if abandoned:
                fields["abandoned_attempts"] = [
                    {**a, "cost": found[a["generation_id"]], "cost_status": "looked_up"} if a.get("cost") is None else a
                    for a in abandoned
                ]
            record = resolved_record(old, fields, counted(fields) - counted(old), now)
            if record["status"] == "ok" and request.checks:
                checks = applied_checks(record, request)
                record.update(grade(checks, answer_of(record), stored_judgements(record, checks)))
            writer.write(record, request.payload)
            written += 1
    finally:
        writer.close()
    return written
