"""Costs an earlier run of a file never learnt, looked up when the file is resumed.

A row written with its cost unknown (/generation down, slow, or not knowing the generation yet
when its run ended) holds its attempt's worst case as spent. Every resume counted it so, and the
budget it took stayed taken, though /generation knew the cost by the next morning (verify69 F5).
A resume looks such rows up again, by their answer's generation id, a few at a time and within
the run's timeout, before its scan counts what earlier runs spent. Each that /generation knows
now is written again with that cost (`resolves`, as _late_costs does at a run's end), so the
scan, and every reader after it, counts the row at what it cost.

Only rows whose one record holds a single attempt are looked up: with attempts abandoned or
earlier records folded in, which part is unknown is not in the record. Their worst cases stay
held, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ._charges import LOOKUPS_AT_ONCE
from ._client import OpenRouterClient
from ._exceptions import OutputFailed, RequestFailed
from ._generation import valid_generation_id
from ._late_costs import graded_on_cost, resolved_record
from ._matrix import Request
from ._pricing import GenerationCost
from ._reader import final_records
from ._results import ResultsWriter
from ._row_cost import counted
from ._scrub import Scrubber

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
                found[generation_id] = cost

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit_s):
            await asyncio.gather(*(one(generation_id) for generation_id in sorted(set(ids))))
    return found


def _unknown(output: Path, requests: Mapping[str, Request], scrub: Scrubber) -> list[tuple[dict[str, Any], str]]:
    """The rows of `output` (still in the matrix) whose cost is unknown, or was counted as a
    reply reported it far above its worst case with no lookup to confirm it (`cost_doubted`:
    $9,999 for a $0.02 request took every resume's budget: out-115 F1), and whose one attempt's
    generation id is known, with that id; up to MAX_ROWS of them. Not an id two rows' answers
    carry: a server that reuses ids would give each the other's cost (break66 F4)."""
    found: list[tuple[dict[str, Any], str]] = []
    for record in final_records(output):
        status = record.get("cost_status")
        doubted = status in ("reported", "estimated") and record.get("cost_doubted") is True
        if not (status == "unknown" or doubted) or record.get("earlier_records") or record.get("abandoned_attempts"):
            continue
        generation_id = valid_generation_id(record.get("generation_id"), scrub)
        if generation_id is not None and record["id"] in requests:
            found.append((record, generation_id))
            if len(found) == MAX_ROWS:
                break
    if not found:
        return []
    # Read again for those ids alone: a count of every row's id held a large file's in memory.
    wanted = {generation_id for _, generation_id in found}
    ids = Counter(g for record in final_records(output) if (g := record.get("generation_id")) in wanted)
    return [(record, generation_id) for record, generation_id in found if ids[generation_id] == 1]


def _cost_fields(found: GenerationCost) -> dict[str, Any]:
    return {
        "cost": found.total_cost,
        "cost_held": None,
        "cost_known": None,
        "cost_status": "looked_up",
        "cost_unknown": False,
        "is_byok": found.is_byok,
        "upstream_inference_cost": found.upstream_inference_cost,
    }


async def resolve_earlier_costs(
    output: Path, requests: Mapping[str, Request], client: OpenRouterClient, now: str, limit_s: float
) -> tuple[int, float, str | None]:
    """Look up the costs `output`'s rows were written without and append each row /generation
    knows now: (rows written again, how far what they count as spent moved, and why not all of
    them could be written, or None)."""
    rows = _unknown(output, requests, client.scrub)
    if not rows:
        return 0, 0.0, None
    found = await look_up_generations(client, (generation_id for _, generation_id in rows), limit_s)
    written, moved = 0, 0.0
    try:
        writer = ResultsWriter(output, create=False)
        try:
            for old, generation_id in rows:
                if generation_id not in found:
                    continue
                fields = _cost_fields(found[generation_id])
                change = counted(fields) - counted(old)
                request = requests[old["id"]]
                writer.write(graded_on_cost(resolved_record(old, fields, change, now), request), request.payload)
                written, moved = written + 1, moved + change
        finally:
            writer.close()
    except OutputFailed as failure:
        return written, moved, f"costs looked up for earlier runs' rows were not all written again: {failure}"
    except OSError as exc:
        return (
            written,
            moved,
            f"{output}: costs looked up for earlier runs' rows were not written: {exc.strerror or exc}",
        )
    return written, moved, None
