"""The graders' part of what a resume looks up (_earlier_costs): graders whose charge was in doubt
or whose cost was unknown when their row was written, and the row's checks and `judge_cost` once
/generation knows them."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ._fold import least_sure
from ._generation import valid_generation_id
from ._pricing import GenerationCost
from ._record_shape import figure
from ._row_cost import graders_of
from ._scrub import Scrubber


def unknown_graders(record: dict[str, Any], scrub: Scrubber) -> list[tuple[int, int, str]]:
    """The graders of unknown cost a resume looks up: each of one attempt (no `abandoned_attempts`),
    with what is held for it (`cost_held`: records of older versions lack it) and its generation
    id, and only where every other grader of the row that may have been charged has a known
    charge (known_charge): `judge_cost` is then theirs and the others' (out-120 F3)."""
    if record.get("judge_cost") is not None or record.get("judge_cost_status") != "unknown":
        return []
    found = []
    for check, index, grader in graders_of(record):
        if grader.get("cost_status") is None and grader.get("cost") in (None, 0):
            continue  # not sent, a cache hit, or nothing to charge
        if grader.get("cost_status") != "unknown":
            if known_charge(grader) is None:
                return []
            continue
        generation_id = valid_generation_id(grader.get("generation_id"), scrub)
        if grader.get("abandoned_attempts") or not figure(grader.get("cost_held")) or generation_id is None:
            return []
        found.append((check, index, generation_id))
    return found


def known_charge(grader: dict[str, Any]) -> tuple[float, float] | None:
    """A grader entry's known cost and charge (with a BYOK grader's upstream cost, which its entry
    says: `is_byok`, `upstream_inference_cost`); None where it is unknown, in doubt, or no figure."""
    cost: Any = grader.get("cost")
    upstream: Any = grader.get("upstream_inference_cost")
    if grader.get("cost_status") == "unknown" or grader.get("cost_doubted") or not figure(cost):
        return None
    if grader.get("is_byok") is not True:
        return float(cost), float(cost)
    return (float(cost), float(cost) + float(upstream)) if figure(upstream) else None


def grading_fields(
    old: dict[str, Any], doubted: list[tuple[int, int, str]], found: Mapping[str, GenerationCost]
) -> tuple[dict[str, Any], float] | None:
    """The checks and `judge_cost` with the graders' charges in doubt that /generation knows now,
    and how far `judge_cost` moved (out-118 F2: a grader's $9,999 was held for good)."""
    learnt = [(check, index, found[generation_id]) for check, index, generation_id in doubted if generation_id in found]
    if not learnt:
        return None
    checks, moved = copy.deepcopy(old["checks"]), 0.0
    for check, index, cost in learnt:
        judge = checks[check]["judge"]
        grader = judge["graders"][index]
        # The fee, as the grader's entry and its check's `judge.cost` have it; the charge, as `judge_cost`.
        fee = cost.total_cost - grader.pop("doubted_cost")
        moved += cost.charged - grader.pop("doubted_charged")
        grader.pop("cost_doubted")
        # Rounded as money is kept (12 places): $0.0001 was written 9.999999929e-05 (out-119 F4).
        status = least_sure([str(grader.get("cost_status")), "looked_up"])
        grader.update(cost=round(grader["cost"] + fee, 12), cost_status=status)
        if figure(judge.get("cost")):
            judge["cost"] = round(judge["cost"] + fee, 12)
    status = least_sure([str(old.get("judge_cost_status")), "looked_up"])
    judge_cost = round(float(old["judge_cost"]) + moved, 12)
    return {"checks": checks, "judge_cost": judge_cost, "judge_cost_status": status}, moved


def unknown_grading_fields(
    record: dict[str, Any], unknown: list[tuple[int, int, str]], found: Mapping[str, GenerationCost]
) -> tuple[dict[str, Any], float] | None:
    """The checks and `judge_cost` once /generation knows every grader of unknown cost (all or
    none), and how far the row's `spent` moves: it held their worst cases and the other graders'
    costs (a BYOK grader's upstream charge left out while any was unknown: _row.grading_spent)."""
    if not unknown or any(generation_id not in found for _, _, generation_id in unknown):
        return None
    checks, held, charged = copy.deepcopy(record["checks"]), 0.0, 0.0
    statuses = ["looked_up"]
    looked_up = {(check, index) for check, index, _ in unknown}
    for check, index, grader in graders_of(record):
        if (check, index) not in looked_up and (known := known_charge(grader)) is not None:
            held, charged = held + known[0], charged + known[1]
            statuses.append(str(grader.get("cost_status")))
    for check, index, generation_id in unknown:
        judge, cost = checks[check]["judge"], found[generation_id]
        grader = judge["graders"][index]
        held += float(grader.pop("cost_held"))
        charged += cost.charged
        grader.update(cost=cost.total_cost, cost_status="looked_up")
        if cost.is_byok:
            grader.update(is_byok=True, upstream_inference_cost=cost.upstream_inference_cost)
        costs = [entry.get("cost") for entry in judge["graders"]]
        if all(figure(c) for c in costs):  # as check_result sums them
            judge["cost"] = round(sum(costs), 10)
    fields = {"checks": checks, "judge_cost": round(charged, 12), "judge_cost_status": least_sure(statuses)}
    return {**fields, "judge_cost_known": None}, charged - held
