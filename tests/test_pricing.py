"""Prices, lookups and balances from a server that may lie; the ledger's held attempts."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from batchrun._client import OpenRouterClient
from batchrun._exceptions import Transient
from batchrun._ledger import BudgetExhausted, CreditLedger
from batchrun._management import ManagementApi
from batchrun._pricing import (
    MAX_CHARGE_USD,
    MAX_USD,
    GenerationCost,
    charge,
    endpoints_slug,
    money,
    parse_endpoints,
    parse_generation,
    parse_prices,
    price,
)
from batchrun.simulator import SimConfig, Simulator

from .conftest import FAKE_KEY, SMALL_JOB, child_env, cli, read_rows, respx_transport, write_job

BASE = "https://openrouter.test/api/v1"


def client() -> OpenRouterClient:
    return OpenRouterClient(BASE, FAKE_KEY, transport=respx_transport())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.000001", 1e-6),
        ("1e-7", 1e-7),
        ("0", 0.0),
        (2, 2.0),
        ("-1", None),
        (-0.5, None),
        ("nan", None),
        ("inf", None),
        (True, None),
        ({}, None),
        # out-109 F5: float() reads these as 10, 1 and 1: no listing means them
        ("1_0", None),
        ("\u0661", None),
        (" 1 ", None),
        ("0x1p-20", None),
    ],
)
def test_a_price_is_a_finite_non_negative_number_or_decimal_string(value: Any, expected: float | None) -> None:
    assert price(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1e-6, 1e-6),
        (2, 2.0),
        ("0.000001", None),
        ("404", None),
        (-0.5, None),
        (True, None),
        ({}, None),
        (10**400, MAX_USD),
    ],
)
def test_a_charge_is_a_finite_non_negative_json_number(value: Any, expected: float | None) -> None:
    # A charge sent as a string is not believed: "0.0000001" from /generation passed (break14c N4).
    assert money(value) == expected


def test_pricing_overrides_and_unknown_prices_parse() -> None:
    prices, overrides, known = parse_prices(
        {
            "prompt": "0.0000025",
            "completion": "0.00001",
            "web_search": "0.004",
            "overrides": [
                {"min_prompt_tokens": 200000, "prompt": "0.000005", "completion": "0.00002"},
                {"utc_start": 1630, "utc_end": 30, "prompt": "0.00000014"},
            ],
        }
    )
    assert known and prices == {"prompt": 2.5e-6, "completion": 1e-5, "web_search": 0.004}
    assert [o.describe() for o in overrides] == ["prompt > 200000 tokens", "UTC 1630-0030"]
    assert parse_prices({"prompt": "-1", "completion": "-1"})[2] is False
    assert parse_endpoints({"not": "a list"}) is None
    assert parse_endpoints([None, {"pricing": "x"}]) is None  # an entry not an object: unreadable (C6)
    assert parse_endpoints([{"pricing": "x"}])[0].known is False  # type: ignore[index]


@pytest.mark.parametrize(
    "pricing",
    [
        {"overrides": [{"min_prompt_tokens": 10, "prompt": "-1"}]},
        {"overrides": [{"prompt": "abc"}]},
        {"overrides": ["junk"]},
        {"overrides": "not a list"},
        {"overrides": [{"min_prompt_tokens": "lots", "prompt": "0.001"}]},
        {"request": "-1"},
        {"image": "abc"},
        {"audio": -2},
    ],
)
def test_a_price_or_override_that_cannot_be_read_makes_the_price_unknown(pricing: dict[str, Any]) -> None:
    """break-14 finding 19: never a silent fall back to the cheaper base price."""
    assert parse_prices({"prompt": "0.000001", "completion": "0.000002", **pricing})[2] is False
    assert parse_prices({"prompt": "0.000001", "completion": "0.000002", "image": None})[2] is True


@pytest.mark.parametrize(
    ("discount", "prompt", "known"),
    [
        (None, 1e-6, True),
        ("0.2", 1e-6, True),
        (0, 1e-6, True),
        (-1, 2e-6, True),
        ("-0.5", 1.5e-6, True),
        (1.5, None, False),
        ("abc", None, False),
        (True, None, False),
        (-1e300, MAX_USD, True),  # out-105 F7: a price of $1.2e308 a token, and 300-digit figures
    ],
)
def test_a_discount_that_raises_a_price_raises_it(discount: Any, prompt: float | None, known: bool) -> None:
    # out-104 F5: openapi's PublicPricing multiplies a price by (1 - discount): -1 doubled every
    # price, and the worst case was costed as if it had none. Between 0 and 1 it only lowers one.
    pricing = {"prompt": "0.000001", "completion": "0.000002", **({} if discount is None else {"discount": discount})}
    prices, _, ok = parse_prices(pricing)
    assert ok is known and (not known or prices["prompt"] == pytest.approx(prompt))


def test_a_charge_no_request_could_cost_is_not_believed() -> None:
    # out-104 F3: a reply's usage.cost of 1e300 was counted as $1e12, for good.
    assert charge(12.5) == 12.5 and charge(MAX_CHARGE_USD) == MAX_CHARGE_USD
    assert charge(MAX_CHARGE_USD * 1.01) is charge(1e300) is charge(-1) is charge("1") is None
    # Given, not believed: the caller says so (out-127 F3).
    assert parse_generation({"id": "gen-1", "total_cost": 1e300}, "gen-1") == GenerationCost(MAX_USD, believed=False)


def test_money_is_capped_so_sums_stay_finite() -> None:
    """break-14 finding 11: 1e308 counts in full, as the most there is, and two of them are no inf."""
    assert price("1e308") == money(1e300) == MAX_USD
    assert math.isfinite(sum([money(1e308) or 0.0] * 1000))


def test_a_negative_zero_charge_is_zero() -> None:
    # out-142 L4: `usage.cost: -0.0` was recorded as -0.0 beside a "reported" cost of 0.0.
    assert str(money(-0.0)) == "0.0" and str(charge(-0.0)) == "0.0" and money(-1e-9) is None


def test_routing_variants_share_the_base_models_endpoints() -> None:
    assert endpoints_slug("openai/gpt-4o:nitro") == "openai/gpt-4o"
    assert endpoints_slug("meta-llama/llama-3.3-70b-instruct:free") == "meta-llama/llama-3.3-70b-instruct:free"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"data": {"id": "gen-1", "total_cost": 0.0015, "is_byok": True, "upstream_inference_cost": 0.0012}},
            (0.0015, 0.0027),
        ),
        ({"data": {"id": "gen-1", "total_cost": 0.002}}, (0.002, 0.002)),
        ({"data": {"id": "gen-1", "total_cost": -3}}, None),  # a negative charge is not a charge
        ({"data": {"id": "gen-1", "total_cost": "lots"}}, None),
        # Another generation's reply (break-14 #4: cost 0 for someone else's id) is not this one's cost.
        ({"data": {"id": "gen-someone-else", "total_cost": 0.0}}, None),
        ({"data": {"total_cost": 0.0}}, None),  # no id: nothing says which generation it is
        # BYOK without a usable upstream cost: the provider's charge is not known (break-14 #7).
        ({"data": {"id": "gen-1", "total_cost": 0.0001, "is_byok": True, "upstream_inference_cost": None}}, None),
        ({"data": {"id": "gen-1", "total_cost": 0.0001, "is_byok": True, "upstream_inference_cost": -1}}, None),
        ({"data": None}, None),
        (["not", "an", "object"], None),
    ],
)
async def test_generation_lookups_distrust_the_server(body: Any, expected: tuple[float, float] | None) -> None:
    with respx.mock(using="httpx") as mock:
        route = mock.get(f"{BASE}/generation").mock(return_value=httpx.Response(200, json=body))
        async with client() as c:
            found = await c.generation("gen-1")
    assert route.calls.last.request.url.params["id"] == "gen-1"
    assert (None if found is None else (found.total_cost, found.charged)) == expected


@pytest.mark.parametrize(
    ("counts", "usage"),
    [
        ({"native_tokens_prompt": 9, "native_tokens_completion": 1}, {"prompt_tokens": 9, "completion_tokens": 1}),
        ({"native_tokens_prompt": 9}, None),  # one count alone is no usage
        ({"native_tokens_prompt": 9, "native_tokens_completion": -1}, None),
        ({"native_tokens_prompt": 9, "native_tokens_completion": True}, None),  # a boolean is no count
        ({"native_tokens_prompt": 9, "native_tokens_completion": "1"}, None),
        ({"native_tokens_prompt": 9, "native_tokens_completion": 2**40}, None),  # past any answer
        ({"native_tokens_prompt": 9, "native_tokens_completion": 1.5}, None),
    ],
)
async def test_a_generations_token_counts_are_taken_only_when_both_are_counts(
    counts: dict[str, Any], usage: dict[str, int] | None
) -> None:
    # break66 F2: the counts fill a reply's missing usage; a lying lookup's are not believed.
    body = {"data": {"id": "gen-1", "total_cost": 0.002, **counts}}
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/generation").mock(return_value=httpx.Response(200, json=body))
        async with client() as c:
            found = await c.generation("gen-1")
    assert found is not None and found.total_cost == 0.002 and found.usage == usage


async def test_a_generation_not_yet_known_is_none() -> None:
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/generation").mock(return_value=httpx.Response(404, json={"error": {"code": 404}}))
        async with client() as c:
            assert await c.generation("gen-2") is None


async def test_credits_need_a_management_key_and_sane_numbers() -> None:
    with respx.mock(using="httpx") as mock:
        route = mock.get(f"{BASE}/credits").mock(
            side_effect=[
                httpx.Response(200, json={"data": {"total_credits": 100.5, "total_usage": 25.75}}),
                httpx.Response(200, json={"data": {"total_credits": "x", "total_usage": 1}}),
            ]
        )
        async with client() as c:
            assert await ManagementApi(c, "mgmt").credits() == pytest.approx(74.75)
            # A balance that cannot be read is a bad reply, as a bad /key is (break-14 #12).
            with pytest.raises(Transient) as caught:
                await ManagementApi(c, "mgmt").credits()
    assert caught.value.kind == "bad_response" and "/credits" in caught.value.message
    assert route.calls[0].request.headers["Authorization"] == "Bearer mgmt"


async def test_a_timeout_after_the_headers_keeps_the_generation_id() -> None:
    """X-Generation-Id arrives with the headers (api_reference/streaming.mdx): a body that
    never ends still leaves the id to look the charge up by."""

    async def endless() -> Any:
        yield b'{"id": "gen-'
        import asyncio

        await asyncio.sleep(30)

    with respx.mock(using="httpx") as mock:
        mock.post(f"{BASE}/chat/completions").mock(
            return_value=httpx.Response(200, headers={"X-Generation-Id": "gen-abc"}, content=endless())
        )
        async with OpenRouterClient(BASE, FAKE_KEY, timeout_s=0.05, transport=respx_transport()) as c:
            with pytest.raises(Exception) as caught:
                await c.chat({"model": "m", "messages": []})
    failure: Any = caught.value
    assert failure.kind == "timeout" and failure.maybe_billed and failure.generation_id == "gen-abc"


async def test_a_held_attempt_stays_spent_until_resolved() -> None:
    ledger = CreditLedger(1.0)
    first = await ledger.reserve(0.6)
    ledger.keep(first)  # abandoned: may have been billed
    assert ledger.committed == pytest.approx(0.6) and ledger.in_flight == 0
    with pytest.raises(BudgetExhausted):
        await ledger.reserve(0.6)  # the held worst case still counts
    await ledger.resolve(0.6, 0.1)  # the lookup said it cost 0.1
    assert ledger.committed == pytest.approx(0.1)
    assert await ledger.reserve(0.6) == 0.6


def test_byok_runs_keep_upstream_costs_and_count_them(tmp_path: Path) -> None:
    simulator = Simulator(SimConfig(byok=True))
    with simulator.serve_in_thread() as sim:
        job = write_job(tmp_path, SMALL_JOB)
        env = child_env(OPENROUTER_API_KEY=FAKE_KEY, OPENROUTER_MANAGEMENT_KEY=sim.config.management_key)
        out = tmp_path / "byok.jsonl"
        result = cli(job, "--base-url", sim.base_url, "--isolated-key", "--budget", "1", "-o", out, env=env)
        billed = sim.stats.billed_usd
    assert result.returncode == 0, result.stderr
    rows = read_rows(out)
    assert all(r["is_byok"] is True and r["upstream_inference_cost"] > r["cost"] > 0 for r in rows)
    summary = json.loads((tmp_path / "byok.summary.json").read_text())
    # The ledger counted fee + upstream, like a key with include_byok_in_limit does.
    assert summary["spent_usd"] == pytest.approx(billed, abs=1e-8)
    assert summary["reconciliation"]["warning"] is None


async def test_a_waiter_gives_up_when_the_last_in_flight_attempt_is_held() -> None:
    """No deadlock: a hold frees nothing, but the waiter must learn that nothing is in flight."""
    import asyncio

    ledger = CreditLedger(1.0)
    first = await ledger.reserve(0.6)
    waiter = asyncio.ensure_future(ledger.reserve(0.6))
    await asyncio.sleep(0)  # the waiter is waiting for room
    ledger.keep(first)
    with pytest.raises(BudgetExhausted):
        await asyncio.wait_for(waiter, 5)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"is_byok": False, "upstream_inference_cost": None}, 0.0001),
        ({"is_byok": True, "upstream_inference_cost": 0.0119}, 0.012),
        # break14c N4: a flag that is not a boolean, or an upstream cost that is not a number,
        # cannot be believed to mean "the whole charge is total_cost".
        ({"is_byok": "true", "upstream_inference_cost": None}, None),
        ({"is_byok": False, "upstream_inference_cost": "0.0119"}, None),
        ({"upstream_inference_cost": 0.0119}, 0.012),  # an upstream charge says BYOK by itself
        ({"is_byok": True}, None),
    ],
)
def test_a_looked_up_byok_cost_is_believed_only_whole(extra: dict[str, Any], expected: float | None) -> None:
    found = parse_generation({"id": "gen-1", "total_cost": 0.0001, **extra}, "gen-1")
    assert (found.charged if found else None) == (pytest.approx(expected) if expected is not None else None)


def test_two_figures_shown_together_are_told_apart() -> None:
    # break25: "needs up to $0.000053, $0.000053 is left" (5.3047e-05 and 5.295e-05): a stop that
    # read as one with money to spare.
    from batchrun._pricing import usd_apart

    assert usd_apart(5.3047e-05, 5.295e-05) == ("0.0000530", "0.0000529")
    assert usd_apart(0.5, 0.25) == ("0.500000", "0.250000")  # six decimals when they differ there
    assert usd_apart(1e-13, 0.0) == ("0.000000000000", "0.000000000000")  # at most twelve
