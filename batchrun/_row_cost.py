"""A row's charges, attempt by attempt, and the record fields they make (see _charges for
what each `cost_status` means). Pure data: the readers use it too (a crash's attempts), so it
imports nothing of the client."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._cost_text import STATUS_ORDER


@dataclass(eq=False)
class Charge:
    """One attempt's charge: an answer, or an abandoned attempt that may have been billed.

    Each is itself (eq=False): two answers alike (one generation id, or none, no cost) were
    equal, and taking one out of the unresolved list took the other (ValueError, a row failed)."""

    generation_id: str | None
    held: float  # what the ledger holds for it while unknown; 0 once resolved
    cost: float | None = None
    status: str = "unknown"
    is_byok: bool = False
    upstream_inference_cost: float | None = None
    abandoned: bool = True
    recorded: bool = False  # its row's record is written (a later lookup cannot change it)
    row_looked_up: bool = False  # its row's worker looked it up once (again: at key refreshes, the run's end)
    above_worst: bool = False  # its cost passed its attempt's worst case: a reply or lookup that lies
    reused_id: bool = False  # an earlier attempt had its generation id: not looked up by it (_charges)
    usage_found: dict[str, int] | None = None  # an answer's token counts, as its lookup gave them
    # Reported far above its worst case and counted so, no lookup having confirmed it
    # (_pricing.doubted): its record says so, and a resume looks it up again (_earlier_costs).
    doubted: bool = False

    def as_json(self) -> dict[str, Any]:
        doubted = {"cost_doubted": True} if self.doubted else {}
        return {"generation_id": self.generation_id, "cost": self.cost, "cost_status": self.status, **doubted}


@dataclass
class RowCharges:
    parts: list[Charge] = field(default_factory=list)
    doubting: bool = False  # a reply's charge not believed: no attempt is sent until it is settled

    @property
    def answer(self) -> Charge | None:
        """The part that answered; None while every attempt so far was abandoned."""
        return next((p for p in self.parts if not p.abandoned), None)

    @property
    def cost(self) -> float | None:
        """The row's cost, or None when any part is unknown (never shown as $0)."""
        if any(p.cost is None for p in self.parts):
            return None
        return sum((p.cost for p in self.parts if p.cost is not None), 0.0)

    @property
    def charged(self) -> float | None:
        """What the parts were charged: each cost with a BYOK answer's upstream cost, None while
        any is unknown (a grader's BYOK charge was its fee alone in judge_cost: verify14k K10)."""
        cost = self.cost
        if cost is None:
            return None
        return cost + sum((p.upstream_inference_cost or 0.0 for p in self.parts if p.is_byok), 0.0)

    @property
    def status(self) -> str | None:
        parts = self.parts
        if len(parts) == 1:
            return parts[0].status  # nearly every row: one answer
        if not parts:
            return None
        return max((p.status for p in parts), key=STATUS_ORDER.index)

    @property
    def held(self) -> float | None:
        """While the cost is unknown, what the budget counts as spent for the row: the known
        parts plus the worst case held for each unknown one. None once the cost is known."""
        if self.status != "unknown":
            return None
        return sum((p.cost if p.cost is not None else p.held for p in self.parts), 0.0)

    @property
    def known(self) -> float | None:
        """While the cost is unknown, its known parts (a lower bound, break-14c m5); None once known."""
        if self.status != "unknown":
            return None
        return sum((p.cost for p in self.parts if p.cost is not None), 0.0)

    def fields(self) -> dict[str, Any]:
        """Record fields for this row's cost; the parts count as recorded from here on."""
        for part in self.parts:
            part.recorded = True
        answer = self.answer
        abandoned = [p.as_json() for p in self.parts if p.abandoned]
        status = self.status
        unknown = status == "unknown"
        # The answer's charge in doubt; an abandoned attempt's entry says its own (as_json).
        doubted = {"cost_doubted": True} if answer is not None and answer.doubted else {}
        byok = answer is not None and answer.is_byok
        return {
            **doubted,
            "cost": self.cost,
            "cost_held": self.held if unknown else None,
            "cost_known": self.known if unknown else None,
            "cost_status": status,
            "cost_unknown": unknown,
            "is_byok": answer.is_byok if answer is not None else None,
            # BYOK answers only, as the README says: a non-BYOK one's is part of `cost` (out-161).
            "upstream_inference_cost": answer.upstream_inference_cost if answer is not None and byok else None,
            "abandoned_attempts": abandoned or None,
        }


def skipped_fields(charges: RowCharges) -> dict[str, Any]:
    """The cost fields of a skipped row: its attempts' that may be billed, or null when it sent
    nothing (out-117 F5: rows a stop cut before they were sent said $0.0, others null)."""
    return charges.fields() if charges.parts else uncharged(None)


def uncharged(cost: float | None) -> dict[str, Any]:
    """The cost fields of a row with no attempt that could be billed: 0 for an error the
    server answered (zero-completion-insurance.mdx), None for a row that sent nothing."""
    return {"cost": cost, "cost_held": None, "cost_known": None, "cost_status": None, "cost_unknown": False}


def counted(fields: Mapping[str, Any]) -> float:
    """What a row's cost fields count as spent: the cost, with a BYOK answer's upstream charge
    (the provider's, beside OpenRouter's fee in `cost`: the ledger counts both, and a resume
    that counted the fee alone began at $0 and spent the budget again: verify14i V2); or while
    it is unknown what is held for it (its known parts and the worst cases of the rest)."""
    cost = fields.get("cost")
    if cost is None:
        return float(fields.get("cost_held") or 0.0)
    upstream = fields.get("upstream_inference_cost") if fields.get("is_byok") else None
    return float(cost) + float(upstream or 0.0)


def doubted_charges(record: Mapping[str, Any]) -> bool:
    """Whether a record counts a charge in doubt (far above its worst case, unconfirmed): its
    answer's, an abandoned attempt's, or a grader's (_earlier_costs looks them up at a resume)."""
    if record.get("cost_doubted"):
        return True
    if any(isinstance(entry, dict) and entry.get("cost_doubted") for entry in record.get("abandoned_attempts") or ()):
        return True
    # Only a row whose grading cost something has a grader to doubt: no walk of every row's checks.
    return bool(record.get("judge_cost")) and any(grader.get("cost_doubted") for _, _, grader in graders_of(record))


def graders_of(record: Mapping[str, Any]) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(check index, grader index, grader entry) of each grader of a record's judge checks."""
    checks = record.get("checks")
    for check_index, check in enumerate(checks if isinstance(checks, list) else ()):
        judge = check.get("judge") if isinstance(check, dict) else None
        graders = judge.get("graders") if isinstance(judge, dict) else None
        for grader_index, grader in enumerate(graders if isinstance(graders, list) else ()):
            if isinstance(grader, dict):
                yield check_index, grader_index, grader
