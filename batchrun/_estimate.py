"""The worst case a run's matrix would cost, by model, before anything is spent, and the models
of it no request of which fits what the run may spend."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._costs import CostModel, Worst
from ._matrix import Request
from ._settings import RunSettings


@dataclass
class Estimate:
    rows: dict[str, int] = field(default_factory=dict)
    worst_usd: dict[str, float] = field(default_factory=dict)
    batch_worst_usd: dict[str, float] = field(default_factory=dict)  # at Batch API prices
    unknown_price: set[str] = field(default_factory=set)
    unknown_why: dict[str, str] = field(default_factory=dict)  # model -> why its worst case is unknown
    no_max_tokens: set[str] = field(default_factory=set)
    kept: int = 0
    regraded: int = 0  # kept answers whose judge checks a stop left ungraded: graded now
    in_file: int = 0  # rows of the matrix the file being resumed has a record of
    judge_requests: dict[str, int] = field(default_factory=dict)  # by grader model
    judge_worst_usd: dict[str, float] = field(default_factory=dict)
    basis: dict[str, str] = field(default_factory=dict)  # model -> price basis of its first request
    cached: dict[str, int] = field(default_factory=dict)  # rows the cache will answer (in `rows` too)
    saved_usd: float = 0.0  # what those rows cost when they were first answered, where that was known
    saved_estimated_usd: float = 0.0  # at most this more: those whose cost was only estimated
    cheapest_usd: dict[str, float] = field(default_factory=dict)  # model -> its cheapest request's worst case
    first_usd: dict[str, float] = field(default_factory=dict)  # model -> its first request's, in the run's order
    judge_cheapest_usd: dict[str, float] = field(default_factory=dict)  # grader -> its cheapest request's
    # Of `rows` and `worst_usd`, those with non-text parts: sent in sync mode by a batch-mode run
    # (run.batch_multimodal: sync), never in a batch (out-148 F1).
    sync_rows: dict[str, int] = field(default_factory=dict)
    sync_usd: dict[str, float] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def total_worst(self) -> float:
        """Answers and their grading: judge requests are spent from the same budget."""
        return sum(self.worst_usd.values()) + sum(self.judge_worst_usd.values())

    def add_judging(self, requests: list[Request], costs: CostModel, floors: list[Request] | None = None) -> None:
        """`requests` at their worst; `floors`, the same with the shortest answer, for the least a
        grader request can need (`requests` where the answer is known)."""
        for grader in requests:
            self.judge_requests[grader.model] = self.judge_requests.get(grader.model, 0) + 1
            self.priced(grader, costs, self.judge_worst_usd)
        for grader in requests if floors is None else floors:
            # The least one needs: more would say "none fits" of graders the run can send (the
            # run reserves for the answer it got, the plan for the longest it may get).
            usd = costs.worst(grader).usd
            if usd is not None:
                cheapest = min(self.judge_cheapest_usd.get(grader.model, usd), usd)
                self.judge_cheapest_usd[grader.model] = cheapest

    def priced(self, request: Request, costs: CostModel, into: dict[str, float]) -> float | None:
        """Add the request's worst case to `into` (by model), or note its price as unknown;
        the worst case, or None when unknown."""
        if request.model not in self.basis:
            self.basis[request.model] = costs.describe(request)
        worst = costs.worst(request)
        if worst.usd is None:
            self.unknown(request, worst)
            return None
        into[request.model] = into.get(request.model, 0.0) + worst.usd
        if into is self.worst_usd:
            self.cheapest_usd[request.model] = min(self.cheapest_usd.get(request.model, worst.usd), worst.usd)
            self.first_usd.setdefault(request.model, worst.usd)
        return worst.usd

    def unknown(self, request: Request, worst: Worst) -> None:
        self.unknown_price.add(request.model)
        why = worst.why if worst.model == request.model else f"fallback {worst.model}: {worst.why}"
        self.unknown_why.setdefault(request.model, why)


def unaffordable(
    found: Estimate,
    budget: float,
    settings: RunSettings,
    from_key: bool = False,
    budget_part: float | None = None,
    batches: bool = True,
) -> list[str]:
    """The models no request (in batch mode, no batch) of which fits `budget`, what the ledger may
    spend: the run spent on the others, then stopped, exit 5, "resumable once there is money",
    which --budget cannot give (out-102 F9, out-103 F6). `from_key`: the key's credit or the
    account's balance binds, not the job's budget; `budget_part`: what the budget leaves, short
    too or not (named alone, the key's limit raised met the budget's stop: out-116 F4)."""
    said = []
    left = f"and ${budget:.6f} is all there is"
    # Whichever of run.budget_usd and --budget is the smaller binds: "--budget only lowers it" sent
    # away a resume that a larger --budget let on where the job sets none (out-115 F1), and named
    # run.budget_usd where a smaller --budget bound (out-116 F4).
    raise_budget = "raise the budget: run.budget_usd or --budget, whichever is the smaller (it binds)"
    raise_key = "add credits, or raise the key's limit"

    def raise_it(usd: float) -> str:
        if not from_key:
            return raise_budget
        if budget_part is not None and usd > budget_part:
            return f"{raise_key}, and {raise_budget}"
        return f"{raise_key}: they bind, not the budget"

    for model, usd in sorted(found.cheapest_usd.items()):
        # Rows the cache answers are never batched, and cost nothing: averaged in, they made a
        # batch of the others look cheaper than it is (out-146 F5).
        rows = found.rows.get(model, 0) - found.cached.get(model, 0) - found.sync_rows.get(model, 0)
        batch = min(rows, settings.batch_max_requests)
        batched_usd = found.worst_usd.get(model, 0.0) - found.sync_usd.get(model, 0.0)
        whole = batched_usd * batch / rows if rows > 0 else 0.0
        first = found.first_usd.get(model, usd)
        if usd > budget:
            advice = f"set params.max_tokens, or {raise_it(usd)}" if model in found.no_max_tokens else raise_it(usd)
            said.append(
                f"no request of {model} fits the budget: the cheapest needs up to ${usd:.6f}, {left} ({advice})"
            )
        elif first > budget and settings.mode != "batch":
            # Rows go in order, and the run stops at the first that does not fit: a cheaper one
            # later is not reached (out-146 F1: plan exit 0, the run sent none of the model's, exit 5).
            advice = f"set params.max_tokens, or {raise_it(first)}" if model in found.no_max_tokens else raise_it(first)
            said.append(
                f"the first request of {model} (rows go in order) needs up to ${first:.6f}, {left}: the run stops "
                f"at it ({advice})"
            )
        elif batches and settings.mode == "batch" and whole > budget:
            said.append(
                f"no batch of {model} fits the budget: its {batch} request(s) need up to ${whole:.6f}, {left} (lower "
                f"run.batch_max_requests, or {raise_it(whole)})"
            )
    for model, usd in sorted(found.judge_cheapest_usd.items()):
        # Its rows answered, then no grader sent: every judge check undecided, exit 5 (out-146 F3).
        if usd > budget:
            said.append(
                f"no grading request of {model} fits the budget: the cheapest needs up to ${usd:.6f}, {left} "
                f"({raise_it(usd)})"
            )
    return [f"warning: {line}" for line in said]
