"""The worst case is a bound against a server whose prices are honest and whose answers lie
(break-14 findings 1, 2, 3, 8, 11, 13, 14, 17, 18, 19, 20).

Each server here bills what its honest prices say (kept in `Billing.total`) and answers
with whatever figures the test scripts; the promise checked is the one users buy:
what the server billed never passes the budget, and `plan` says what the run will do.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchrun import ExitCode
from batchrun._account_reply import model_info
from batchrun._client import ModelInfo
from batchrun._costs import CostModel, prompt_token_bound
from batchrun._job import load_job
from batchrun._matrix import matrix_requests
from batchrun._pricing import EndpointPrice, budget_message, parse_prices
from batchrun._reasoning_bound import reasoning_budget
from batchrun._scrub import Scrubber

from .bound_server import (
    COMPLETION,
    JOB,
    MODEL,
    PROMPT,
    ROWS,
    Billing,
    _request,
    endpoint,
    model_entry,
    plan,
    pricing,
    run,
    server,
)
from .conftest import call_cli, write_job
from .hostile import RawRequest, chat_payload, http

DESCRIPTION = "字" * 5000  # 15,000 UTF-8 bytes: $1.50 of prompt at $100/M tokens


pytestmark = pytest.mark.usefixtures("api_key_env")


# -- 1: every byte of the body is in the prompt bound ------------------------------------------
@pytest.mark.parametrize(
    "params",
    [
        {"tools": [{"type": "function", "function": {"name": "f", "description": DESCRIPTION}}]},
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object", "description": DESCRIPTION}},
            }
        },
        {"extra_body": {"a_future_option": {"description": DESCRIPTION}}},
    ],
    ids=["tools", "response_format", "extra_body"],
)
def test_tools_schemas_and_extra_body_are_in_the_prompt_bound(tmp_path: Path, params: dict[str, Any]) -> None:
    billing = Billing()
    job = JOB.replace("params: {max_tokens: 2}", "params: " + json.dumps({"max_tokens": 2, **params}))
    code, _, err, rows = run(server(billing), tmp_path, job, "--budget", "0.5")
    # Each request bills about $1.50: none fits a $0.50 budget, so none is sent.
    assert code == ExitCode.BUDGET, err
    assert billing.total <= 0.5 and billing.chats == 0
    assert {r["reason"] for r in rows} == {"budget"}


def test_the_prompt_bound_is_the_encoded_body() -> None:
    job_text = JOB.replace("{max_tokens: 2}", "{max_tokens: 2, tools: [{type: function, function: {name: f}}]}")
    request = next(matrix_requests(load_job_text(job_text)))
    assert prompt_token_bound(request) == len(request.payload) + 8


def load_job_text(text: str, folder: Path | None = None) -> Any:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return load_job(write_job(Path(tmp) if folder is None else folder, text))


# -- 2: a completion that nothing bounds is an unknown worst case ------------------------------
NO_MAX = JOB.replace("params: {max_tokens: 2}", "params: {temperature: 0}")
UNBOUNDED = model_entry(context_length=None, top_provider={"max_completion_tokens": None})


def test_no_max_tokens_and_no_listed_maximum_is_refused_by_plan_and_run(tmp_path: Path) -> None:
    billing = Billing(completion=1000)
    hostile = server(billing, [UNBOUNDED], [endpoint(pricing(), max_completion_tokens=None, context_length=None)])
    plan_code, text, plan_err = plan(hostile, tmp_path, NO_MAX, "--budget", "0.05")
    code, _, err, rows = run(hostile, tmp_path, NO_MAX, "--budget", "0.05")
    assert plan_code == code == ExitCode.USAGE
    assert "no max_tokens and no maximum completion length listed" in err
    assert plan_err == err  # the same refusal, word for word
    assert "acme/cheap" in text and "unknown" in text and "fits" not in text
    assert billing.chats == 0 and rows == []


def test_an_unknown_worst_case_runs_when_allowed(tmp_path: Path) -> None:
    billing = Billing()
    hostile = server(billing, [UNBOUNDED], [endpoint(pricing(), max_completion_tokens=None, context_length=None)])
    allowed = NO_MAX.replace("max_attempts: 1}", "max_attempts: 1, allow_unknown_prices: true}")
    code, _, err, rows = run(hostile, tmp_path, allowed, "--budget", "5")
    assert code == ExitCode.OK and len(rows) == ROWS
    assert "no known worst case for acme/cheap" in err and "reserved at $0" in err


# -- 3: a cheaper endpoints list never lowers the /models price --------------------------------
def test_a_cheaper_endpoints_list_does_not_lower_the_models_price(tmp_path: Path) -> None:
    billing = Billing()
    cheap = endpoint({"prompt": "0.000001", "completion": "0.000002"})
    job = JOB.replace("concurrency: 2", "concurrency: 4")
    code, _, err, rows = run(server(billing, endpoints=[cheap]), tmp_path, job, "--budget", "0.02")
    assert billing.total <= 0.02, f"billed {billing.total}"
    assert code == ExitCode.BUDGET and billing.chats < ROWS


# -- 13, 19: a price that cannot be read: plan and run agree ------------------------------------
@pytest.mark.parametrize(
    ("models", "endpoints"),
    [
        ([model_entry()], [endpoint({"prompt": "-0.0001", "completion": "0.0002"})]),
        ([model_entry()], [endpoint(pricing(overrides=[{"min_prompt_tokens": 1, "prompt": "abc"}]))]),
        ([model_entry()], [endpoint(pricing(overrides="not a list"))]),
        ([model_entry(price=pricing(request="NaN"))], None),
        ([model_entry(), model_entry("acme/router", {"prompt": "-1", "completion": "-1"})], None),
    ],
    ids=["negative-endpoint-price", "bad-override-price", "overrides-not-a-list", "bad-request-price", "fallback"],
)
def test_plan_and_run_refuse_an_unknown_price_alike(
    tmp_path: Path, models: list[dict[str, Any]], endpoints: Any
) -> None:
    job = JOB
    if len(models) > 1:
        job = JOB.replace("params: {max_tokens: 2}", "params: {max_tokens: 2, models: [acme/router]}")
    billing = Billing()
    hostile = server(billing, models, endpoints)
    plan_code, text, plan_err = plan(hostile, tmp_path, job, "--budget", "1")
    code, _, err, _ = run(hostile, tmp_path, job, "--budget", "1")
    assert plan_code == code == ExitCode.USAGE and plan_err == err
    assert "no known price for acme/cheap" in err and billing.chats == 0
    assert "fits" not in text and "router model" not in text and "+?" in text


# -- 18: /endpoints that fail are retried, then an unknown price --------------------------------
def test_endpoints_that_fail_are_an_unknown_price_not_a_silent_fallback(tmp_path: Path) -> None:
    billing = Billing()
    failing = http(500, b'{"error": {"code": 500, "message": "boom"}}', {"Content-Type": "application/json"})
    hostile = server(billing, endpoints=failing)
    job = JOB.replace("max_attempts: 1", "max_attempts: 2")
    code, _, err, _ = run(hostile, tmp_path, job, "--budget", "1")
    # An outage, not the job's fault: exit 1 as any start-up call that failed (break38 F3: it was 2).
    assert code == ExitCode.ERRORS and "/endpoints could not be read" in err and billing.chats == 0
    assert "the endpoint failed before the run started: server_error" in err and "allow_unknown_prices" not in err
    listing = [r for r in hostile.requests if r.path.endswith("/endpoints")]
    assert len(listing) == 2  # retried like any request
    code, _, err, rows = run(hostile, tmp_path / "nobudget", job)  # no budget: runs, and says so
    assert code == ExitCode.OK and len(rows) == ROWS
    assert "the endpoints of acme/cheap could not be read (server_error)" in err


# -- 8: an under-reported cost is caught by the key's usage -------------------------------------
def test_an_under_reported_cost_is_counted_from_the_keys_usage(tmp_path: Path) -> None:
    billing = Billing(reported=0.00001)  # each request really bills about $0.0065
    job = JOB.replace("{a: 6}]", "{a: 6}, " + ", ".join(f"{{a: {i}}}" for i in range(7, 41)) + "]")
    job = job.replace("max_attempts: 1}", "max_attempts: 1, key_refresh_requests: 2}")
    code, stdout, _, rows = run(
        server(billing, key_usage=True), tmp_path, job, "--budget", "0.05", "--concurrency", "1"
    )
    per_request = billing.total / billing.chats
    assert code == ExitCode.BUDGET and billing.chats < 40
    # Caught at the next refresh: at most a refresh interval (plus the request in flight) over.
    assert billing.total <= 0.05 + 2 * per_request
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["reconciliation"]["counted_from_key_usd"] > 0
    assert "the key's usage beyond the reported costs" in stdout
    assert {r["reason"] for r in rows if r["status"] == "skipped"} == {"budget"}


# -- 11: JSON never carries Infinity ------------------------------------------------------------
def test_huge_costs_never_make_json_invalid(tmp_path: Path) -> None:
    billing = Billing(reported=1e308)
    code, stdout, _, rows = run(server(billing), tmp_path, JOB, "--budget", "0.1")
    # Not believed (out-104 F3: no request costs that): the run goes on, no figure near it anywhere.
    assert code == ExitCode.OK and all(r["cost"] is None or r["cost"] < 1 for r in rows)
    text = (tmp_path / "out.summary.json").read_text()

    def strict(constant: str) -> Any:
        raise AssertionError(f"{constant} in JSON")

    summary = json.loads(text, parse_constant=strict)
    assert math.isfinite(summary["spent_usd"]) and "inf" not in stdout
    code, report, _ = call_cli("report", tmp_path / "out.jsonl", "--json")
    json.loads(report, parse_constant=strict)


# -- 14: an estimate is never below what the answer's text must have cost -----------------------
def test_token_counts_that_cannot_be_true_keep_the_worst_case(tmp_path: Path) -> None:
    billing = Billing(reported="omit", usage={"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 12})
    code, _, _, rows = run(server(billing), tmp_path, JOB, "--budget", "1")
    assert code == ExitCode.OK
    for row in rows:
        assert row["cost_status"] == "unknown" and row["cost"] is None and row["cost_held"] > 0


def test_plausible_token_counts_are_still_estimated(tmp_path: Path) -> None:
    billing = Billing(reported="omit", usage={"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21})
    code, _, _, rows = run(server(billing), tmp_path, JOB, "--budget", "1")
    assert code == ExitCode.OK
    assert {r["cost_status"] for r in rows} == {"estimated"} and all(r["cost"] > 0 for r in rows)


# -- 20: NaN in usage.cost is an unknown cost, not a bad reply paid twice -----------------------
@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_a_nan_cost_literal_is_an_unknown_cost_not_a_retry(tmp_path: Path, literal: bytes) -> None:
    billing = Billing()

    def chat(request: RawRequest) -> bytes:
        billing.chat(request)
        body = json.dumps(chat_payload("42", usage={"prompt_tokens": 30, "completion_tokens": 2, "cost": 0.5}))
        return http(200, body.replace("0.5", "__COST__").encode().replace(b"__COST__", literal))

    hostile = server(billing)
    hostile.chat = chat
    job = JOB.replace("max_attempts: 1", "max_attempts: 3")
    code, _, _, rows = run(hostile, tmp_path, job, "--budget", "1")
    assert code == ExitCode.OK and billing.chats == ROWS  # one attempt each: nothing paid twice
    assert all(r["status"] == "ok" and r["cost_status"] == "unknown" and r["attempts"] == 1 for r in rows)


# -- 17, 20: the components a request can be charged, and only those ----------------------------
def _costs(price: dict[str, Any], *models: str) -> CostModel:
    prices, overrides, known = parse_prices(price)
    infos = {
        m: ModelInfo(
            m,
            prices["prompt"],
            prices["completion"],
            0.0,
            131072,
            16384,
            EndpointPrice("top", "top", prices, overrides, known=known),
        )
        for m in (models or (MODEL,))
    }
    return CostModel(infos)


def test_audio_input_has_no_known_worst_case(tmp_path: Path) -> None:
    # Billed by its duration, which its bytes do not bound (break14e E13; test_break14e_inputs).
    costs = _costs(pricing(audio="0.01"))
    audio = [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]
    with_audio = _request(tmp_path, {"max_tokens": 1}, audio)
    assert costs.worst_case(with_audio) is None and "duration" in costs.worst(with_audio).why
    plain = _request(tmp_path, {"max_tokens": 1})
    assert costs.worst_case(plain) == pytest.approx(prompt_token_bound(plain) * PROMPT + COMPLETION)


def test_image_output_is_costed_per_image(tmp_path: Path) -> None:
    costs = _costs(pricing(image_output="0.5"))
    drawn = _request(tmp_path, {"max_tokens": 1, "modalities": ["image", "text"]})
    text = _request(tmp_path, {"max_tokens": 1})
    longer = (prompt_token_bound(drawn) - prompt_token_bound(text)) * PROMPT  # "modalities" is in the body
    assert (costs.worst_case(drawn) or 0) - (costs.worst_case(text) or 0) == pytest.approx(10 * 0.5 + longer)
    assert "image_output" in costs.describe(drawn) and "image_output" not in costs.describe(text)


def test_a_listed_cache_write_price_bounds_every_prompt(tmp_path: Path) -> None:
    # prompt-caching.mdx: a top-level cache_control ("automatic caching") writes the cache, and
    # some models write it with no opt-in at all; a top-level one was not priced (break14c N14).
    costs = _costs(pricing(input_cache_write="0.5"))
    for params in ({"max_tokens": 1}, {"max_tokens": 1, "cache_control": {"type": "ephemeral", "ttl": "1h"}}):
        request = _request(tmp_path, params)
        assert "input_cache_write" in costs.describe(request)
        assert costs.worst_case(request) == pytest.approx(prompt_token_bound(request) * 0.5 + COMPLETION)
    # Where no write price is listed, the prompt price stands.
    plain = _costs(pricing())
    request = _request(tmp_path, {"max_tokens": 1})
    assert plain.worst_case(request) == pytest.approx(prompt_token_bound(request) * PROMPT + COMPLETION)


def test_a_prediction_is_costed_as_completion_tokens_too(tmp_path: Path) -> None:
    # Rejected prediction tokens are billed at the completion price, max_tokens not capping
    # them (openapi.yaml Prediction; break14c N13).
    costs = _costs(pricing())
    code = "def f():\n    return 1\n" * 200
    predicted = _request(tmp_path, {"max_tokens": 50, "prediction": {"type": "content", "content": code}})
    extra = len(orjson.dumps({"type": "content", "content": code}))
    assert costs.completion_cap(predicted) == 50 + extra
    assert costs.worst_case(predicted) == pytest.approx(
        prompt_token_bound(predicted) * PROMPT + (50 + extra) * COMPLETION
    )


def test_the_basis_shown_is_the_model_that_sets_the_worst_case(tmp_path: Path) -> None:
    prices, overrides, _ = parse_prices(pricing())
    dear, _, _ = parse_prices({"prompt": "0.01", "completion": "0.02"})
    infos = {
        MODEL: ModelInfo(MODEL, PROMPT, COMPLETION, 0.0, 131072, 16384, EndpointPrice("cheap", "cheap", prices)),
        "acme/dear": ModelInfo("acme/dear", 0.01, 0.02, 0.0, 131072, 16384, EndpointPrice("dear", "dear", dear)),
    }
    request = _request(tmp_path, {"max_tokens": 1, "models": ["acme/dear"]})
    described = CostModel(infos).describe(request)
    assert described.startswith("acme/dear (a fallback) sets the worst case") and "from dear" in described


def test_a_huge_price_is_not_printed_digit_by_digit(tmp_path: Path) -> None:
    hostile = server(Billing(), [model_entry(price={"prompt": "1e300", "completion": "0.0002"})])
    code, text, _ = plan(hostile, tmp_path, JOB, "--budget", "1")
    assert code == ExitCode.BUDGET and "EXCEEDS" in text  # no request fits: the run would stop, exit 5
    assert max(len(word) for word in text.split()) < 60


@pytest.mark.parametrize(
    ("params", "cap"),
    [
        ({"max_tokens": 50}, 50),
        # A budget max_tokens does not hold: the answer's tokens on top ("max_tokens must be strictly
        # higher than the reasoning budget", reasoning-tokens.mdx; break32 m4).
        ({"max_tokens": 50, "reasoning": {"max_tokens": 32000}}, 32050),  # "used directly"
        ({"max_tokens": 50, "reasoning": {"max_tokens": 10}}, 1074),  # "with a minimum of 1024 tokens"
        ({"max_tokens": 50, "reasoning": {"effort": "high"}}, 1074),  # the effort budget's floor
        ({"max_tokens": 50, "reasoning_effort": "low"}, 1074),
        ({"max_tokens": 5000, "reasoning": {"effort": "high"}}, 5000),  # the budget is within max_tokens
        ({"max_tokens": 50, "reasoning": {"effort": "none"}}, 50),
        ({"max_tokens": 50, "reasoning": {"enabled": False, "effort": "high"}}, 50),
        ({"max_completion_tokens": 10, "max_tokens": 100000}, 100000),  # a provider may honour either
    ],
)
def test_the_completion_bound_holds_reasoning_tokens(tmp_path: Path, params: dict[str, Any], cap: int) -> None:
    # reasoning-tokens.mdx: reasoning tokens are billed as output tokens (break-14b C7).
    costs = _costs(pricing())
    request = _request(tmp_path, params)
    assert costs.completion_cap(request) == cap
    assert costs.worst_case(request) == pytest.approx(prompt_token_bound(request) * PROMPT + cap * COMPLETION)


@pytest.mark.parametrize(
    ("default", "reasoning", "cap"),
    [
        ("mandatory", None, 1074),  # the floor's 1,024, and max_tokens 50 on top
        ("mandatory", {"enabled": False}, 1074),  # "do not send effort none: the model rejects it"
        ("enabled", None, 1074),
        ("enabled", {"enabled": False}, 50),
        (None, None, 50),
    ],
)
def test_a_model_that_reasons_by_default_gets_the_reasoning_floor(
    tmp_path: Path, default: str | None, reasoning: dict[str, Any] | None, cap: int
) -> None:
    # reasoning-tokens.mdx: /models says `default_enabled` / `mandatory`; such a model was costed
    # as a plain request when the job set no reasoning (break14c N6).
    costs = _costs(pricing())
    assert costs.models is not None
    costs.models[MODEL] = dataclasses.replace(costs.models[MODEL], reasoning_default=default)
    params: dict[str, Any] = {"max_tokens": 50} | ({"reasoning": reasoning} if reasoning else {})
    assert costs.completion_cap(_request(tmp_path, params)) == cap


def test_the_thinking_variant_counts_as_reasoning_on() -> None:
    # model-variants/thinking.mdx: ":thinking ... enables extended reasoning" (break14c N6: it
    # was costed as a plain request and billed 1,024 reasoning tokens each).
    assert reasoning_budget({"model": "acme/cheap:thinking", "max_tokens": 50}) == 1024
    assert reasoning_budget({"model": "acme/cheap", "models": ["acme/other:thinking"]}) == 1024
    assert reasoning_budget({"model": "acme/cheap:thinking", "reasoning": {"max_tokens": 4000}}) == 4000
    assert reasoning_budget({"model": "acme/cheap", "max_tokens": 50}) is None
    # exclude: true hides the reasoning; "the model will still use reasoning" (reasoning-tokens.mdx).
    assert reasoning_budget({"model": "acme/cheap", "reasoning": {"exclude": True}}) == 1024


# -- break14b C6: an /endpoints answer that cannot be read is a failure, not "no listing" -----
BIG_INT = b"9" * 400


@pytest.mark.parametrize(
    "body",
    [b"not json", b"{}", b"[]", b'{"data": null}', b'{"data": {"endpoints": "x"}}', b'{"data": {"endpoints": [1]}}'],
)
def test_an_endpoints_reply_that_cannot_be_read_is_an_unknown_price_in_plan_and_run(
    tmp_path: Path, body: bytes
) -> None:
    billing = Billing()
    hostile = server(billing, endpoints=http(200, body, {"Content-Type": "application/json"}))
    code, stdout, err = plan(hostile, tmp_path, JOB, "--budget", "1")
    assert code == ExitCode.ERRORS and "models list (top provider)" not in stdout + err
    assert "the endpoint failed while pricing the plan" in err and "/endpoints could not be read" in err
    code, _, err, _ = run(hostile, tmp_path / "run", JOB, "--budget", "1")
    assert code == ExitCode.ERRORS and "/endpoints could not be read" in err and billing.chats == 0


def test_an_endpoints_listing_with_a_huge_integer_is_still_read(tmp_path: Path) -> None:
    """orjson refuses integers past 64 bits; the listing is read all the same (Python's json),
    so its dearer endpoint bounds the worst case instead of the /models price."""
    dear = endpoint(pricing(prompt="0.01", completion="0.02"), tag="p1")
    listing = [endpoint(pricing(), tag="p0", status="BIG"), dear]
    body = json.dumps({"data": {"id": MODEL, "endpoints": listing}}).encode().replace(b'"BIG"', BIG_INT)
    hostile = server(Billing(), endpoints=http(200, body, {"Content-Type": "application/json"}))
    code, stdout, err = plan(hostile, tmp_path, JOB)
    assert code == ExitCode.OK, err
    assert "price basis: endpoints" in stdout and "p1" in stdout


def test_the_models_list_says_which_models_reason_by_default() -> None:
    entry = {"id": "g/flash", "pricing": {"prompt": "0.000001", "completion": "0.000002"}}
    read = [
        model_info({**entry, "reasoning": {"mandatory": True, "default_enabled": True}}, Scrubber()),
        model_info({**entry, "reasoning": {"default_enabled": True}}, Scrubber()),
        model_info({**entry, "reasoning": {"default_enabled": "yes", "mandatory": 1}}, Scrubber()),
        model_info(entry, Scrubber()),
        model_info({**entry, "reasoning": None}, Scrubber()),
        # A block that is no object is read the dear way too (verification of break14e, F5).
        model_info({**entry, "reasoning": True}, Scrubber()),
        model_info({**entry, "reasoning": "mandatory"}, Scrubber()),
        model_info({**entry, "reasoning": [{"mandatory": True}]}, Scrubber()),
    ]
    # A flag of the wrong type is read the dear way (break14e E17).
    defaults = [info.reasoning_default if info else "?" for info in read]
    assert defaults == ["mandatory", "enabled", "mandatory", None, None, "mandatory", "mandatory", "mandatory"]


def test_a_budget_stop_names_the_keys_part_only_when_there_is_one() -> None:
    # break41 F6: "($0.000000 of what is spent is the key's usage beyond the reported costs)", from
    # a float's residue where the key's usage equalled the reported costs.
    assert budget_message(None, 0.0, 5.76e-20) == "all of the limit is spent"
    assert budget_message(None, 0.0, -1e-19) == "all of the limit is spent"
    said = budget_message(None, 0.0, 0.000002)
    assert said == "all of the limit is spent ($0.000002 of what is spent is the key's usage beyond the reported costs)"
