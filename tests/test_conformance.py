"""Conformance: OpenRouter's own documented shapes, both ways.

The fixtures under tests/fixtures/openapi/ are copied from OpenRouter's documentation (each
names its source): `schemas.json` holds the OpenAPI response schemas, `examples.json` the
OpenAPI response examples, `doc_errors.json` the error bodies of errors-and-debugging.mdx
and limits.mdx. The client is tested on the examples with respx; the simulator's replies are
validated against the same schemas with jsonschema.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import respx

from batchrun import ModelUnavailable, OpenRouterClient, RateLimited, Rejected, RequestFailed, Transient
from batchrun._client import ChatResult
from batchrun._management import ManagementApi
from batchrun._reply import Reply, parse_chat
from batchrun._scrub import Scrubber
from batchrun.simulator import Simulator
from batchrun.simulator._config import reasoning_object

from .conftest import FAKE_KEY, FakeClock

FIXTURES = Path(__file__).parent / "fixtures" / "openapi"
SCHEMAS = json.loads((FIXTURES / "schemas.json").read_text())
EXAMPLES = json.loads((FIXTURES / "examples.json").read_text())
DOC_ERRORS = json.loads((FIXTURES / "doc_errors.json").read_text())
BASE = "https://openrouter.test/api/v1"
BODY = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "Capital of Japan?"}]}


def validate(root: str, instance: Any) -> None:
    """Validate against one of the bundled OpenAPI response schemas (refs resolve in the bundle)."""
    schema = {**SCHEMAS["roots"][root], "components": SCHEMAS["components"]}
    jsonschema.Draft202012Validator(schema).validate(instance)


async def chat_outcome(status: int, body: Any, headers: dict[str, str] | None = None) -> ChatResult | RequestFailed:
    with respx.mock(using="httpx") as mock:
        mock.post(f"{BASE}/chat/completions").mock(return_value=httpx.Response(status, json=body, headers=headers))
        async with OpenRouterClient(BASE, FAKE_KEY, clock=FakeClock()) as client:
            try:
                return await client.chat(BODY)
            except RequestFailed as failure:
                return failure


# -- the client on the documented examples (respx) ------------------------------------------


async def test_the_chat_result_example_is_read() -> None:
    example = EXAMPLES["chat_result"]
    result = await chat_outcome(example["status"], example["body"])
    assert isinstance(result, ChatResult)
    assert result.generation_id == "chatcmpl-123" and result.finish_reason == "stop"
    assert "Paris" in str(result.content)
    # break41 F2: with the X-Generation-Id header (streaming.mdx: "for all endpoints"), its id is
    # the one /generation knows, not the body's `chatcmpl-123` (every lookup a 404).
    headed = await chat_outcome(example["status"], example["body"], {"X-Generation-Id": "gen-1700000000-abc"})
    assert isinstance(headed, ChatResult) and headed.generation_id == "gen-1700000000-abc"


@pytest.mark.parametrize("name", sorted(k for k in EXAMPLES if k.startswith("chat_error_")))
async def test_every_documented_chat_error_example_is_classified(name: str) -> None:
    example = EXAMPLES[name]
    failure = await chat_outcome(example["status"], example["body"])
    assert isinstance(failure, RequestFailed) and failure.http_status == example["status"]
    status = example["status"]
    if status in (408, 429, 500, 502, 503, 524, 529):
        assert isinstance(failure, Transient), name
    else:
        assert not isinstance(failure, Transient), name


@pytest.mark.parametrize(
    ("name", "kind", "cls"),
    [
        ("availability_capacity_exhausted", "capacity_exhausted", RateLimited),
        ("availability_model_deprecated", "model_deprecated", ModelUnavailable),
        ("availability_privacy_restricted", "privacy_restricted", ModelUnavailable),
        ("availability_model_not_found", "model_not_found", ModelUnavailable),
        ("guardrail_403", "forbidden", Rejected),
        ("provider_429", "rate_limited", RateLimited),
    ],
)
async def test_the_documented_error_bodies_are_classified(name: str, kind: str, cls: type) -> None:
    example = DOC_ERRORS[name]
    failure = await chat_outcome(example["status"], example["body"])
    assert type(failure) is cls and isinstance(failure, RequestFailed) and failure.kind == kind
    if name == "availability_capacity_exhausted":
        assert failure.retry_after == 40 and isinstance(failure, RateLimited) and not failure.paces
    if name == "availability_model_deprecated":
        assert "fallback_models: openai/gpt-4.1" in failure.message
    if name == "provider_429":
        assert isinstance(failure, RateLimited) and not failure.platform


def test_a_lone_surrogate_in_an_error_body_hides_nothing_of_it() -> None:
    # break56 F4: read strictly, a "\ud83d" in the message made the body unreadable: classified by
    # its status alone, the model's availability code lost and the deprecated model's rows all sent.
    body = DOC_ERRORS["availability_model_deprecated"]["body"]
    text = json.dumps(body).replace('"message": "', '"message": "cut emoji \\ud83d ', 1).encode()
    assert b"\\ud83d" in text
    with pytest.raises(ModelUnavailable) as caught:
        parse_chat(Reply(404, httpx.Headers(), text), Scrubber(FAKE_KEY), 0.0)
    assert caught.value.kind == "model_deprecated" and "cut emoji \ufffd" in caught.value.message


async def test_a_platform_429_is_told_from_a_providers_by_its_headers() -> None:
    example = DOC_ERRORS["platform_429"]
    reset = str(int((FakeClock().time() + 3600) * 1000))
    headers = {**example["headers"], "X-RateLimit-Reset": reset}
    failure = await chat_outcome(429, example["body"], headers)
    assert isinstance(failure, RateLimited) and failure.platform and failure.limit_wait == pytest.approx(3600)


async def test_a_provider_error_inside_a_200_is_transient() -> None:
    example = DOC_ERRORS["choice_error_200"]
    failure = await chat_outcome(200, example["body"])
    assert isinstance(failure, Transient) and failure.error_type == "provider_unavailable"


@pytest.mark.parametrize("header", [{"X-Generation-Id": "gen-header-1"}, {}])
def test_a_failure_in_a_200_is_looked_up_by_the_header_generation_id(header: dict[str, str]) -> None:
    # verify45 N1: a provider error in a 200 whose cost must be looked up used the body's `id`
    # (the openapi example's `chatcmpl-123`): every lookup 404, the worst case counted 5.9x.
    body = {
        "id": "chatcmpl-123",
        "choices": [{"message": {"content": "partial"}, "error": {"code": 502, "message": "cut"}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 9},  # generated, no cost: may be billed
    }
    with pytest.raises(Transient) as caught:
        parse_chat(Reply(200, httpx.Headers(header), json.dumps(body).encode()), Scrubber(FAKE_KEY), 0.0)
    expected = "gen-header-1" if header else "chatcmpl-123"  # the body's stands in for a missing header
    assert caught.value.maybe_billed and caught.value.generation_id == expected


async def test_account_examples_are_read() -> None:
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/key").mock(return_value=httpx.Response(200, json=EXAMPLES["key"]["body"]))
        mock.delete(f"{BASE}/keys/abc").mock(return_value=httpx.Response(200, json=EXAMPLES["delete_key"]["body"]))
        mock.get(f"{BASE}/model/openai/gpt-4").mock(return_value=httpx.Response(200, json=EXAMPLES["model"]["body"]))
        async with OpenRouterClient(BASE, FAKE_KEY, clock=FakeClock()) as client:
            key = await client.key_info()
            await ManagementApi(client, "management").delete_key("abc")  # raises on anything but success
            status, info = await client.model("openai/gpt-4")
    assert key is not None and "limit_remaining" in key
    assert status == "found" and info is not None and info.prompt_price == pytest.approx(0.00003)


# -- the simulator against the same schemas (jsonschema) ------------------------------------


def test_the_simulators_replies_match_the_openapi_schemas(sim: Simulator, web: httpx.Client) -> None:
    sim.config.faults["cold_start"] = 0.0
    base = sim.base_url
    headers = {"Authorization": f"Bearer {FAKE_KEY}"}
    reply = web.post(f"{base}/chat/completions", json=BODY, headers=headers)
    validate("ChatResult", reply.json())
    opted = web.post(f"{base}/chat/completions", json=BODY, headers={**headers, "X-OpenRouter-Metadata": "enabled"})
    validate("ChatResult", opted.json())
    assert opted.json()["openrouter_metadata"]["endpoints"]["available"][0]["selected"] is True
    sim.config.content_parts = True
    validate("ChatResult", web.post(f"{base}/chat/completions", json=BODY, headers=headers).json())
    sim.config.content_parts = False
    sim.config.faults["cold_start"] = 1.0
    cold = web.post(f"{base}/chat/completions", json=BODY, headers=headers).json()
    validate("ChatResult", cold)
    assert cold["choices"][0]["finish_reason"] is None and cold["choices"][0]["message"]["content"] == ""
    sim.config.faults = {"choice_error": 1.0}  # the docs' provider error inside a 200 (break41 F5)
    failing = web.post(f"{base}/chat/completions", json=BODY, headers=headers)
    failed = failing.json()
    validate("ChatResult", failed)
    assert failing.headers["X-Generation-Id"] == failed["id"]  # streaming.mdx: "for all endpoints"
    assert failed["choices"][0]["finish_reason"] == "error" and failed["choices"][0]["error"]["code"] == 502
    sim.config.faults.clear()
    # Reasoning and web search: their usage details, and the /models `reasoning` object.
    sim.config.reasoning["openai/gpt-4o-mini"] = reasoning_object("mandatory")
    searched = {**BODY, "tools": [{"type": "openrouter:web_search"}]}
    extras = web.post(f"{base}/chat/completions", json=searched, headers=headers).json()
    validate("ChatResult", extras)
    assert extras["usage"]["completion_tokens_details"]["reasoning_tokens"] >= 1024
    assert extras["usage"]["server_tool_use_details"]["web_search_requests"] == 2
    validate("KeyResponse", web.get(f"{base}/key", headers=headers).json())
    models = web.get(f"{base}/models", headers=headers).json()
    validate("ModelsResponse", models)
    assert any(entry.get("reasoning") for entry in models["data"])
    sim.config.reasoning.clear()
    validate("ModelResponse", web.get(f"{base}/model/openai/gpt-4o-mini:nitro", headers=headers).json())
    management = {"Authorization": f"Bearer {sim.config.management_key}"}
    created = web.post(f"{base}/keys", json={"name": "t", "limit": 1}, headers=management).json()
    deleted = web.delete(f"{base}/keys/{created['data']['hash']}", headers=management)
    validate("DeleteKeyResponse", deleted.json())


@pytest.mark.parametrize("fault", [None, "midstream"])
def test_the_simulators_stream_chunks_match_the_openapi_schema(
    sim: Simulator, web: httpx.Client, fault: str | None
) -> None:
    # break45 F2: the mid-stream error event had a string code and no error_type; chunks were
    # never checked against ChatStreamChunk (openapi.yaml, errors-and-debugging.mdx:246-280).
    sim.config.faults = {fault: 1.0} if fault else {"cold_start": 0.0}
    headers = {"Authorization": f"Bearer {FAKE_KEY}"}
    body = {**BODY, "stream": True, "tools": [{"type": "function", "function": {"name": "f"}}]}
    reply = web.post(f"{sim.base_url}/chat/completions", json=body, headers=headers)
    events = [line[6:] for line in reply.text.splitlines() if line.startswith("data: ")]
    chunks = [json.loads(event) for event in events if event != "[DONE]"]
    for chunk in chunks:
        validate("ChatStreamChunk", chunk)
    if fault:
        error = chunks[-1]["error"]
        assert error["code"] == 502 and error["metadata"]["error_type"] == "provider_unavailable"
        assert chunks[-1]["choices"][0]["finish_reason"] == "error" and events[-1] != "[DONE]"
    else:
        assert chunks[-1]["usage"]["cost"] > 0 and events[-1] == "[DONE]"


@pytest.mark.parametrize(
    ("setup", "status"),
    [
        ({"unavailable.openai/gpt-4o-mini": "model_deprecated"}, 404),
        ({"unavailable.openai/gpt-4o-mini": "region_restricted"}, 403),
        ({"fault.capacity_exhausted": "1"}, 429),
        ({"fault.temporarily_unavailable": "1"}, 503),
        ({"fault.429": "1"}, 429),
        ({"fault.500": "1"}, 500),
        ({"fault.402": "1"}, 402),
        ({"rate_limit_rps": "0", "rate_limit_window": "sliding", "rate_limit_header": "both"}, 429),
    ],
)
def test_the_simulators_errors_match_the_openapi_error_schemas(
    sim: Simulator, web: httpx.Client, setup: dict[str, str], status: int
) -> None:
    for key, value in setup.items():
        sim.config.set_option(f"{key}={value}")
    reply = web.post(f"{sim.base_url}/chat/completions", json=BODY, headers={"Authorization": f"Bearer {FAKE_KEY}"})
    assert reply.status_code == status
    body = reply.json()
    validate(f"ChatError{status}", body)
    assert body["error"]["metadata"]["error_type"]  # errors-and-debugging.mdx: the typed code is always there
