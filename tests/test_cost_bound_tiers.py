"""Service tier endpoints (`openai/priority`, `google-vertex/flex`) are routed to only when a
request opts into their tier, and base slugs do not match them (break14e E4).

provider-selection.mdx, "Base Slug Matching": tier endpoints "are **not** matched by base
slugs — they require explicit opt-in via the `service_tier` parameter or a tier-suffixed
slug"; service-tiers.mdx, "How Routing Works": `service_tier`, a tier slug in `only`/`order`,
or the `:nitro` / `:floor` variants opt in, and "Requests that don't use any of these are
never routed to a non-default service tier". The server here bills a request that opts into
priority at the priority endpoint's (listed) price, as the docs say billing follows the tier.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from batchrun import ExitCode
from batchrun._price_basis import allowed_endpoints, opted_tiers
from batchrun._pricing import EndpointPrice, parse_endpoints

from .bound_server import COMPLETION, MODEL, PROMPT, Billing, endpoint, params_job, plan, pricing, run, server
from .hostile import RawRequest

pytestmark = pytest.mark.usefixtures("api_key_env")

TIER = 4  # the priority endpoint's price, times the base endpoint's
LISTING = [
    endpoint(pricing(), tag="openai"),
    endpoint(pricing(prompt=str(PROMPT * TIER), completion=str(COMPLETION * TIER)), tag="openai/priority"),
    endpoint(pricing(prompt=str(PROMPT / 2), completion=str(COMPLETION / 2)), tag="other"),
    endpoint(pricing(prompt=str(PROMPT / 4), completion=str(COMPLETION / 4)), tag="google-vertex/flex"),
]


PRIORITY_AND_OTHER = ["openai/priority", "other"]


def _endpoints() -> list[EndpointPrice]:
    listing = parse_endpoints(LISTING)
    assert listing is not None
    return listing


def _allowed(provider: dict[str, Any], body: dict[str, Any] | None = None, model: str = MODEL) -> list[str]:
    tiers = opted_tiers(body or {}, model)
    return sorted(e.tag for e in allowed_endpoints(_endpoints(), provider, tiers)[0])


@pytest.mark.parametrize(
    ("provider", "body", "model", "allowed"),
    [
        # No opt-in: tier endpoints are never routed to.
        ({}, {}, MODEL, ["openai", "other"]),
        ({}, {"service_tier": "auto"}, MODEL, ["openai", "other"]),
        # Opted in: allowed, and a base slug in ignore/only/order does not rule them out.
        ({"ignore": ["openai"]}, {"service_tier": "priority"}, MODEL, ["openai/priority", "other"]),
        ({"ignore": ["OpenAI"]}, {"service_tier": "fast"}, MODEL, ["openai/priority", "other"]),
        ({"only": ["other"]}, {"service_tier": "priority"}, MODEL, ["openai/priority", "other"]),
        ({"order": ["other"], "allow_fallbacks": False}, {"service_tier": "priority"}, MODEL, PRIORITY_AND_OTHER),
        ({"ignore": ["openai"]}, {}, f"{MODEL}:nitro", ["openai/priority", "other"]),
        ({}, {"speed": "fast"}, MODEL, ["openai", "openai/priority", "other"]),  # Anthropic's alias, via extra_body
        ({}, {"speed": "standard"}, MODEL, ["openai", "other"]),
        ({}, {"service_tier": "flex"}, MODEL, ["google-vertex/flex", "openai", "other"]),
        # A value OpenRouter does not document may opt into either tier.
        ({}, {"service_tier": "scale"}, MODEL, ["google-vertex/flex", "openai", "openai/priority", "other"]),
        ({}, {}, f"{MODEL}:floor", ["google-vertex/flex", "openai", "other"]),
        # Only the full tier slug rules a tier endpoint out, or names it.
        ({"ignore": ["openai/priority"]}, {"service_tier": "priority"}, MODEL, ["openai", "other"]),
        ({"only": ["openai/priority"]}, {}, MODEL, ["openai/priority"]),
        ({"only": ["openai"]}, {}, MODEL, ["openai"]),
        ({"order": ["OpenAI/Priority"]}, {}, MODEL, ["openai", "openai/priority", "other"]),  # "tier slugs opt in"
        # max_price still rules out a tier endpoint priced above it.
        ({"max_price": {"prompt": 150, "completion": 300}}, {"service_tier": "priority"}, MODEL, ["openai", "other"]),
    ],
)
def test_tier_endpoints_are_allowed_by_opt_in_and_full_slugs_only(
    provider: dict[str, Any], body: dict[str, Any], model: str, allowed: list[str]
) -> None:
    assert _allowed(provider, body, model) == allowed


@dataclass
class TierBilling(Billing):
    """Bills a request that opts into priority at the priority endpoint's price (4x)."""

    def chat(self, request: RawRequest) -> bytes:
        body = request.json()
        factor = TIER if body.get("service_tier") in ("priority", "fast") or body["model"].endswith(":nitro") else 1
        bill = factor * (len(request.body) * PROMPT + self.completion * COMPLETION)
        self.usage = {"cost": bill}
        answer = super().chat(request)  # bills the base price
        self.total += bill - (len(request.body) * PROMPT + self.completion * COMPLETION)
        return answer


def _job(params: dict[str, Any], model: str = MODEL) -> str:
    return params_job("tiers", params, model, ", cost_margin: 0")


@pytest.mark.parametrize(
    ("params", "model"),
    [
        ({"service_tier": "priority", "provider": {"ignore": ["openai"]}}, MODEL),
        ({"provider": {"ignore": ["OpenAI"]}}, f"{MODEL}:nitro"),
    ],
    ids=["service_tier", "nitro"],
)
def test_a_priority_request_cannot_pass_the_budget_when_base_slugs_are_ignored(
    tmp_path: Path, params: dict[str, Any], model: str
) -> None:
    # Before: `ignore: [openai]` was taken to rule out openai/priority, so the worst case was the
    # base price and each request billed 4 times it: $0.1064 on a $0.05 budget (break14e E4).
    billing = TierBilling()
    hostile = server(billing, endpoints=LISTING)
    job = _job(params, model)
    code, stdout, err = plan(hostile, tmp_path, job)
    assert code == ExitCode.OK and "from openai/priority" in stdout, stdout + err
    code, _, err, _ = run(hostile, tmp_path / "run", job, "--budget", "0.25")
    assert billing.chats >= 2 and billing.total <= 0.25, (billing.total, err)
    assert code == ExitCode.BUDGET
    summary = json.loads((tmp_path / "run" / "out.summary.json").read_text())
    assert summary["reconciliation"]["above_worst_case_attempts"] == 0


def test_plan_says_when_tier_endpoints_are_left_out(tmp_path: Path) -> None:
    code, stdout, err = plan(server(Billing(), endpoints=LISTING), tmp_path, _job({}))
    assert code == ExitCode.OK, err
    assert "2 endpoint(s) allowed, 2 endpoint(s) excluded by provider settings or service tier" in stdout
    assert "openai/priority" not in stdout
