"""Reasoning tokens are output tokens: every way a request turns reasoning on is in its worst
case (break14e E1), and a model whose reasoning no setting bounds (Gemini 3) is bounded only
by the maximum completion its endpoints list (break14e E12).

The servers here bill reasoning as reasoning-tokens.mdx describes it and report the charge
honestly; the promise checked is that what they billed never passes the budget.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from batchrun import ExitCode
from batchrun._account_reply import model_info
from batchrun._costs import CostModel
from batchrun._job import load_job
from batchrun._matrix import Request, matrix_requests
from batchrun._pricing import parse_endpoints
from batchrun._reasoning_bound import REASONING_FLOOR, no_reasoning_control, reasoning_budget
from batchrun._scrub import Scrubber

from .bound_server import COMPLETION, PROMPT, Billing, endpoint, model_entry, params_job, plan, pricing, run, server
from .conftest import call_cli, write_job
from .hostile import RawRequest

pytestmark = pytest.mark.usefixtures("api_key_env")

GEMINI = "google/gemini-3-flash-preview"


def _reasons(body: dict[str, Any]) -> bool:
    """The docs' reading, for the server: an object that does not turn it off, the legacy
    `include_reasoning` (true is `reasoning: {}`, false is `{exclude: true}`, which still
    reasons), a native `thinking` passed through."""
    reasoning = body.get("reasoning")
    off = isinstance(reasoning, dict) and (reasoning.get("enabled") is False or reasoning.get("effort") == "none")
    return (isinstance(reasoning, dict) and not off) or "include_reasoning" in body or "thinking" in body


@dataclass
class ReasoningBilling(Billing):
    """Bills `reasoning` hidden reasoning tokens (not in the answer, counted in usage) to each
    request that reasons, on top of the body's bytes and the answer's tokens."""

    reasoning: int = REASONING_FLOOR

    def reasons(self, body: dict[str, Any]) -> bool:
        return _reasons(body)

    def chat(self, request: RawRequest) -> bytes:
        hidden = self.reasoning if self.reasons(request.json()) else 0
        completion = self.completion + hidden
        bill = len(request.body) * PROMPT + completion * COMPLETION
        self.usage = {
            "prompt_tokens": len(request.body),
            "completion_tokens": completion,
            "total_tokens": len(request.body) + completion,
            "completion_tokens_details": {"reasoning_tokens": hidden},
            "cost": bill,
        }
        answer = super().chat(request)  # bills the bytes and the answer
        self.total += hidden * COMPLETION
        return answer


def _job(params: dict[str, Any], model: str = "acme/cheap") -> str:
    return params_job("reasons", params, model)


# -- E1: every switch that turns reasoning on ---------------------------------------------------
@pytest.mark.parametrize(
    ("body", "budget"),
    [
        ({"reasoning": {}}, REASONING_FLOOR),  # "include_reasoning: true - Equivalent to reasoning: {}"
        ({"reasoning": {"exclude": False}}, REASONING_FLOOR),
        ({"reasoning": {"summary": "auto"}}, REASONING_FLOOR),
        ({"include_reasoning": True}, REASONING_FLOOR),
        ({"include_reasoning": False}, REASONING_FLOOR),  # is reasoning: {exclude: true}: it still reasons
        ({"include_reasoning": True, "reasoning": {"enabled": False}}, REASONING_FLOOR),
        ({"reasoning": {"max_tokens": 5000}}, 5000),
        ({"thinking": {"type": "enabled", "budget_tokens": 60000}}, 60000),  # Anthropic's own, via extra_body
        ({"chat_template_kwargs": {"enable_thinking": True}}, REASONING_FLOOR),
        ({"reasoning": {"enabled": False}}, None),
        ({"reasoning": {"effort": "none"}}, None),
        ({"reasoning_effort": "none"}, None),
        # A param that merely mentions reasoning (a schema property) turns nothing on.
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"reasoning": 1}}}}, None),
        ({"a_future_option": {"depth": 3}}, None),
    ],
)
def test_every_switch_that_turns_reasoning_on_is_costed(body: dict[str, Any], budget: int | None) -> None:
    assert reasoning_budget({"model": "acme/cheap", "messages": [], **body}) == budget


@pytest.mark.parametrize("params", [{"reasoning": {}}, {"include_reasoning": True}, {"reasoning": {"summary": "auto"}}])
def test_reasoning_turned_on_by_default_parameters_cannot_pass_the_budget(
    tmp_path: Path, params: dict[str, Any]
) -> None:
    # Before: `reasoning: {}` was priced as a plain request ($0.0244 a row) and billed $0.2049
    # (1,024 reasoning tokens): $0.8192 billed for a $0.50 budget (break14e E1, R-remp).
    billing = ReasoningBilling()
    code, _, err, rows = run(server(billing), tmp_path, _job(params), "--budget", "0.5")
    assert billing.chats >= 2 and billing.total <= 0.5, (billing.total, err)
    assert code == ExitCode.BUDGET and {r["reason"] for r in rows if r["status"] == "skipped"} == {"budget"}
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["reconciliation"]["above_worst_case_attempts"] == 0


def test_include_reasoning_is_a_param_not_an_extra_body_key(tmp_path: Path) -> None:
    refused = write_job(tmp_path, _job({"extra_body": {"include_reasoning": True}}), "x.yaml")
    code, _, err = call_cli("validate", refused)
    assert code == ExitCode.USAGE
    assert "extra_body.include_reasoning 'include_reasoning' is a param of its own" in err
    not_boolean = write_job(tmp_path, _job({"include_reasoning": "yes"}), "y.yaml")
    code, _, err = call_cli("validate", not_boolean)
    assert code == ExitCode.USAGE and "include_reasoning" in err
    assert call_cli("validate", write_job(tmp_path, _job({"include_reasoning": False}), "z.yaml"))[0] == ExitCode.OK


def test_a_native_thinking_budget_passed_through_is_costed(tmp_path: Path) -> None:
    billing = ReasoningBilling(reasoning=60000)
    job = _job({"extra_body": {"thinking": {"type": "enabled", "budget_tokens": 60000}}})
    code, stdout, err = plan(server(billing), tmp_path, job)
    assert code == ExitCode.OK, err
    worst = float(next(line for line in stdout.splitlines() if line.startswith("TOTAL")).split()[2])
    assert worst >= 6 * 60000 * COMPLETION
    code, _, err, _ = run(server(billing), tmp_path / "run", job, "--budget", "20")
    assert billing.total <= 20 and billing.chats == 1 and code == ExitCode.BUDGET, err


# -- E12: Gemini 3 thinking levels have no documented token bound -------------------------------
def _gemini_costs(max_completion: int | None) -> CostModel:
    entry = {"id": GEMINI, "pricing": pricing(), "top_provider": {"max_completion_tokens": max_completion}}
    info = model_info(entry, Scrubber())
    listing = parse_endpoints([endpoint(pricing(), max_completion_tokens=max_completion)])
    assert info is not None and listing is not None
    plain = model_info({**entry, "id": "acme/cheap"}, Scrubber())
    assert plain is not None
    return CostModel({GEMINI: info, "acme/cheap": plain}, 0.0, {GEMINI: listing, "acme/cheap": listing})


def _gemini_request(tmp_path: Path, params: dict[str, Any]) -> Request:
    return next(matrix_requests(load_job(write_job(tmp_path, _job(params, model=GEMINI)))))


@pytest.mark.parametrize(
    "params",
    [
        {"max_tokens": 50, "reasoning": {"effort": "high"}},
        {"max_tokens": 50, "reasoning": {"max_tokens": 1024}},  # "you will not get precise token control"
        {"max_tokens": 50, "reasoning": {"effort": "none"}},  # not in the thinkingLevel mapping
        {"max_tokens": 50},
    ],
)
def test_gemini_3_reasoning_is_bounded_by_the_listed_maximum_only(tmp_path: Path, params: dict[str, Any]) -> None:
    costs = _gemini_costs(16384)
    request = _gemini_request(tmp_path, params)
    assert costs.completion_cap(request) == 16384
    plain = next(matrix_requests(load_job(write_job(tmp_path, _job({"max_tokens": 50}), "plain.yaml"))))
    assert costs.completion_cap(plain) == 50  # other models keep max_tokens


def test_gemini_3_without_a_listed_maximum_is_an_unknown_worst_case(tmp_path: Path) -> None:
    costs = _gemini_costs(None)
    request = _gemini_request(tmp_path, {"max_tokens": 50, "reasoning": {"effort": "low"}})
    worst = costs.worst(request)
    assert worst.usd is None and "Gemini 3" in worst.why


@pytest.mark.parametrize(
    ("extra", "cap"),
    [
        ({"chat_template_kwargs": {"enable_thinking": True}}, 16384),
        ({"thinkingConfig": {"thinkingBudget": -1}}, 16384),  # Google's "dynamic" budget
        ({"thinking": {"type": "enabled", "budget_tokens": 60000}}, 60000),
        ({"a_future_option": {"depth": 3}}, 50),
    ],
)
def test_a_reasoning_switch_in_extra_body_is_bounded_by_the_listed_maximum(
    tmp_path: Path, extra: dict[str, Any], cap: int
) -> None:
    # What a provider's own switch does is not documented: the model may reason up to the most
    # its endpoints list, or the largest number the switch holds.
    job = _job({"max_tokens": 50, "extra_body": extra})
    request = next(matrix_requests(load_job(write_job(tmp_path, job))))
    assert _gemini_costs(16384).completion_cap(request) == cap
    if cap == 16384:
        assert _gemini_costs(None).worst(request).usd is None


def test_no_reasoning_control_names_gemini_3_and_later() -> None:
    assert no_reasoning_control(GEMINI) and no_reasoning_control("google/gemini-3.1-pro-preview:nitro")
    assert no_reasoning_control("google/gemini-4-pro") and no_reasoning_control("~google/gemini-flash-latest")
    assert not no_reasoning_control("google/gemini-2.5-flash") and not no_reasoning_control("acme/gemini-3")


@dataclass
class ThinkingLevelBilling(ReasoningBilling):
    """Gemini 3 at a thinking level: 8,000 reasoning tokens whatever reasoning.max_tokens says."""

    reasoning: int = 8000

    def reasons(self, body: dict[str, Any]) -> bool:
        return True


def test_gemini_3_thinking_cannot_pass_the_budget(tmp_path: Path) -> None:
    # Before: costed at 1,024 reasoning tokens ($0.24 a row), each request billed $1.62:
    # all 6 sent on a $5 budget (break14e E12).
    billing = ThinkingLevelBilling()
    hostile = server(billing, models=[model_entry(GEMINI)], endpoints=[endpoint(pricing())])
    job = _job({"reasoning": {"max_tokens": 1024}}, model=GEMINI)
    code, stdout, err = plan(hostile, tmp_path, job)
    assert code == ExitCode.OK and "completion at the listed maximum, 16384 tokens" in stdout, stdout + err
    code, _, err, _ = run(hostile, tmp_path / "run", job, "--budget", "5")
    assert billing.chats >= 1 and billing.total <= 5, (billing.total, err)
    assert code == ExitCode.BUDGET
