"""The Batch API client (respx), the submission rules, and the simulator's batch routes.

Reference: batch-quickstart.mdx (the OpenAPI spec does not list the batch paths).
"""

from __future__ import annotations

import email.utils
import json
from dataclasses import replace
from typing import Any

import httpx
import orjson
import pytest
import respx

from batchrun import ConfigError, OpenRouterClient, Rejected, Transient
from batchrun._batch_api import BatchClient, BatchInfo, batches_url, submission_body
from batchrun._batch_cli import not_this_batch
from batchrun._batch_rules import batch_groups
from batchrun._batch_state import BatchEntry
from batchrun._matrix import Request, encode_body
from batchrun._parts import non_text_part
from batchrun.simulator import SimConfig, Simulator

from .conftest import FAKE_KEY, FakeClock

BASE = "https://openrouter.test/api/v1"
BATCHES = "https://openrouter.test/api/beta/batches"
REPLY = {
    "id": "gen-batch-1-abc",
    "object": "chat.completion",
    "model": "openai/gpt-4o",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris"}, "finish_reason": "stop"}],
}


def batch_object(status: str = "completed", **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "batch_123",
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "model": "openai/gpt-4o",
        "completion_window": "24h",
        "status": status,
        "created_at": 1782097200,
        "finalized_at": None,
        "request_counts": {"total": 1, "completed": 1, "failed": 0},
        "usage": None,
        "results": None,
        "error": None,
    }
    data.update(extra)
    return data


@pytest.fixture
def mock() -> Any:
    # The client runs on the aiohttp transport; respx intercepts it with using="httpx".
    with respx.mock(using="httpx") as router:
        yield router


def api() -> BatchClient:
    return BatchClient(OpenRouterClient(BASE, FAKE_KEY, clock=FakeClock()))


def request(row: str, model: str = "openai/gpt-4o", **params: Any) -> Request:
    body = {"model": model, "messages": [{"role": "user", "content": f"row {row}"}], **params}
    return Request(row, "f" + row, model, "p", {}, 0, body, encode_body(body), [])


def test_the_batches_url_sits_beside_api_v1() -> None:
    assert batches_url("https://openrouter.ai/api/v1/") == "https://openrouter.ai/api/beta/batches"
    with pytest.raises(ConfigError, match="Batch API"):
        batches_url("http://localhost:8000/v1")


def test_submission_puts_endpoint_and_model_first_and_bodies_byte_for_byte() -> None:
    first, second = request("a1", temperature=0), request("b2")
    raw = submission_body("openai/gpt-4o", [(first.id, first.payload), (second.id, second.payload)])
    assert raw.startswith(b'{"endpoint":"/v1/chat/completions","model":"openai/gpt-4o","requests":[')
    assert first.payload in raw and second.payload in raw
    parsed = json.loads(raw)
    assert list(parsed) == ["endpoint", "model", "requests"]
    assert parsed["requests"][0] == {"custom_id": "a1", "body": first.body}


async def test_submit_and_poll_read_typed_batch_objects(mock: respx.MockRouter) -> None:
    route = mock.post(BATCHES).mock(return_value=httpx.Response(202, json=batch_object("validating")))
    info = await api().submit("openai/gpt-4o", [("a", b'{"messages":[]}')])
    assert (info.id, info.status, info.terminal) == ("batch_123", "validating", False)
    sent = route.calls.last.request
    assert sent.headers["Authorization"] == f"Bearer {FAKE_KEY}" and sent.content.startswith(b'{"endpoint"')
    done = batch_object(
        usage={"prompt_tokens": 20, "completion_tokens": 40, "total_tokens": 60, "cost": 0.000225, "is_byok": False},
        results=[
            {"id": "r1", "custom_id": "a", "response": {"status_code": 200, "body": REPLY}, "error": None},
            {"id": "r2", "custom_id": "b", "response": None, "error": {"code": 429, "message": "slow down"}},
            {"id": "r3", "custom_id": "c", "response": {"status_code": 400, "body": {"error": {"code": 400}}}},
            {"id": "r4", "response": {"status_code": 200, "body": REPLY}},  # no custom_id: cannot map back
        ],
    )
    mock.get(f"{BATCHES}/batch_123").mock(return_value=httpx.Response(200, json=done))
    client = api()
    info = await client.get("batch_123")
    assert info.terminal and info.cost == 0.000225
    items = client.items(info)
    assert sorted(items) == ["a", "b", "c"]
    assert items["a"].result is not None and items["a"].result.content == "Paris"
    assert items["a"].result.generation_id == "gen-batch-1-abc"
    assert isinstance(items["b"].failure, Transient) and items["b"].failure.kind == "rate_limited"
    assert isinstance(items["c"].failure, Rejected) and items["c"].failure.kind == "bad_request"


async def test_a_byok_batch_leaves_its_rows_costs_unknown_beside_its_fee(mock: respx.MockRouter) -> None:
    # break32 F2: batch-quickstart.mdx, "For BYOK-routed batches, [usage.cost is] only the
    # OpenRouter BYOK fee": the rows were recorded not BYOK, at the fee shared out, as known.
    from batchrun._batch_costs import batch_charges

    priced = {
        **REPLY,
        "id": "gen-2",
        "usage": {"cost": 0.0001, "is_byok": True, "cost_details": {"upstream_inference_cost": 0.002}},
    }
    done = batch_object(
        usage={"prompt_tokens": 20, "completion_tokens": 40, "total_tokens": 60, "cost": 0.000225, "is_byok": True},
        results=[
            {"id": "r1", "custom_id": "a", "response": {"status_code": 200, "body": REPLY}, "error": None},
            {"id": "r2", "custom_id": "b", "response": {"status_code": 200, "body": priced}, "error": None},
        ],
    )
    mock.get(f"{BATCHES}/batch_123").mock(return_value=httpx.Response(200, json=done))
    client = api()
    info = await client.get("batch_123")
    charges = batch_charges(["a", "b"], info, client.items(info), lambda row: 0.01)
    unknown = charges.rows["a"].parts[0]
    assert unknown.status == "unknown" and unknown.held == 0.01 and unknown.is_byok is True
    known = charges.rows["b"].parts[0]
    assert known.status == "reported" and known.cost == 0.0001 and known.upstream_inference_cost == 0.002
    # b's fee and upstream; a's whole charge (its fee too) held: not counted beside it (verify31 V5)
    assert charges.held == 0.01 and charges.known == pytest.approx(0.0021)
    alone = batch_charges(["a"], info, {"a": client.items(info)["a"]}, lambda row: 0.01)
    assert alone.held == 0.01 and alone.known == 0.0  # the batch's $0.000225 of fees is in what is held


async def test_a_batchs_charge_goes_to_its_answered_rows_not_to_an_item_the_api_refused(
    mock: respx.MockRouter,
) -> None:
    # break32 m5: half the charge was put on a 400 (not billed for tokens: zero-completion-insurance.mdx).
    from batchrun._batch_costs import batch_charges

    done = batch_object(
        usage={"prompt_tokens": 20, "completion_tokens": 40, "total_tokens": 60, "cost": 0.000225, "is_byok": False},
        results=[
            {"id": "r1", "custom_id": "a", "response": {"status_code": 200, "body": REPLY}, "error": None},
            {"id": "r2", "custom_id": "b", "response": {"status_code": 400, "body": {"error": {"code": 400}}}},
        ],
    )
    mock.get(f"{BATCHES}/batch_123").mock(return_value=httpx.Response(200, json=done))
    client = api()
    info = await client.get("batch_123")
    charges = batch_charges(["a", "b"], info, client.items(info), lambda row: 0.01)
    (answered,) = charges.rows["a"].parts
    assert answered.status == "estimated" and answered.cost == pytest.approx(0.000225)
    assert charges.rows["b"].parts == [] and charges.known == pytest.approx(0.000225)


@pytest.mark.parametrize(
    "lie",
    [
        {"status": "done"},  # not a documented status
        {"id": 7},
        [],
    ],
)
async def test_a_batch_server_that_lies_about_the_shape_is_a_transient_failure(
    mock: respx.MockRouter, lie: Any
) -> None:
    body = lie if isinstance(lie, list) else {**batch_object("completed"), **lie}
    mock.get(f"{BATCHES}/b").mock(return_value=httpx.Response(200, json=body))
    with pytest.raises(Transient) as caught:
        await api().get("b")
    assert caught.value.kind == "bad_response"


async def test_nonsense_fields_of_a_batch_are_not_believed(mock: respx.MockRouter) -> None:
    body = {**batch_object("completed"), "usage": {"cost": -5}, "request_counts": "many", "results": None}
    route = mock.get(f"{BATCHES}/b").mock(return_value=httpx.Response(200, json=body))
    client = api()
    info = await client.get("b")
    assert info.cost is None  # a negative charge is not a charge: the rows' own costs settle it
    assert info.request_counts == {"total": 0, "completed": 0, "failed": 0}
    assert info.results is None and client.items(info) == {}  # null: the server says it has none
    # Results that are there but no array are no reply to read (break49 F2: read as none, every
    # row an error that --retry-errors paid for again): the batch is polled again.
    route.mock(return_value=httpx.Response(200, json={**body, "results": "later"}))
    with pytest.raises(Transient, match="a completed batch whose results are no array"):
        await client.get("b")


async def test_echoed_keys_are_scrubbed_from_items_and_batch_errors(mock: respx.MockRouter) -> None:
    echo = {**REPLY, "choices": [{"index": 0, "message": {"content": f"key {FAKE_KEY}"}, "finish_reason": "stop"}]}
    body = batch_object(
        "completed",
        error={"message": f"bad key {FAKE_KEY}"},
        results=[
            {"custom_id": "a", "response": {"status_code": 200, "body": echo}},
            {"custom_id": "b", "error": {"code": 400, "message": f"echo {FAKE_KEY}"}},
        ],
    )
    mock.get(f"{BATCHES}/b").mock(return_value=httpx.Response(200, json=body))
    client = api()
    info = await client.get("b")
    items = client.items(info)
    seen = [info.error or "", items["a"].result.content if items["a"].result else "", str(items["b"].failure)]
    assert all(FAKE_KEY not in text for text in seen) and "[key]" in seen[0]


async def test_submission_refused_is_classified_and_no_cancel_endpoint_is_said_plainly(mock: respx.MockRouter) -> None:
    mock.post(BATCHES).mock(return_value=httpx.Response(400, json={"error": {"code": 400, "message": "bad order"}}))
    with pytest.raises(Rejected, match="bad order"):
        await api().submit("m", [("a", b"{}")])
    mock.post(f"{BATCHES}/b/cancel").mock(return_value=httpx.Response(404, text="not found"))
    with pytest.raises(ConfigError, match="documents none"):
        await api().cancel("b")


def test_groups_one_model_per_batch_one_response_format_per_google_batch_and_split() -> None:
    rows = [
        request("1", "openai/gpt-4o"),
        request("2", "google/gemini-2.0-flash-001"),
        request("3", "google/gemini-2.0-flash-001", response_format={"type": "json_object"}),
        request("4", "openai/gpt-4o", response_format={"type": "json_object"}),
        request("5", "google/gemini-2.0-flash-001"),
        request("6", "openai/gpt-4o"),
    ]
    groups = [[r.id for r in g] for g in batch_groups(rows, max_requests=2)]
    assert groups == [["1", "4"], ["6"], ["2", "5"], ["3"]]


def test_non_text_parts_and_outputs_are_found() -> None:
    assert non_text_part({"messages": [{"role": "user", "content": "hi"}]}) is None
    assert non_text_part({"messages": [{"content": [{"type": "file", "file": {}}]}]}) == "file"
    assert non_text_part({"messages": [], "modalities": ["text", "image"]}) == "modalities"
    assert non_text_part({"messages": [], "audio": {"voice": "x"}}) == "audio"


# -- the simulator's batch routes ---------------------------------------------------------------
def post(web: httpx.Client, sim: Simulator, raw: bytes) -> httpx.Response:
    return web.post(
        f"{sim.base_url.replace('/v1', '/beta')}/batches", content=raw, headers={"Authorization": "Bearer k"}
    )


def get(web: httpx.Client, sim: Simulator, batch_id: str) -> dict[str, Any]:
    response = web.get(
        f"{sim.base_url.replace('/v1', '/beta')}/batches/{batch_id}", headers={"Authorization": "Bearer k"}
    )
    data: dict[str, Any] = response.json()
    return data


ITEM = {"custom_id": "r1", "body": {"messages": [{"role": "user", "content": "Capital of Japan?"}]}}


@pytest.fixture
def timed_sim(clock: FakeClock) -> Any:
    simulator = Simulator(SimConfig(batch_validating_s=10, batch_in_progress_s=100, batch_finalizing_s=10))
    simulator.clock = clock.time
    with simulator.serve_in_thread():
        yield simulator


def test_sim_batches_move_through_the_documented_states_by_the_clock(
    web: httpx.Client, timed_sim: Simulator, clock: FakeClock
) -> None:
    raw = orjson.dumps({"endpoint": "/v1/chat/completions", "model": "openai/gpt-4o-mini", "requests": [ITEM]})
    accepted = post(web, timed_sim, raw)
    assert accepted.status_code == 202 and accepted.json()["status"] == "validating"
    batch_id = accepted.json()["id"]
    seen = []
    for step in (0, 15, 100, 10):
        clock.now += step
        data = get(web, timed_sim, batch_id)
        seen.append(data["status"])
        assert (data["results"] is None) == (data["status"] != "completed")
    assert seen == ["validating", "in_progress", "finalizing", "completed"]
    (result,) = data["results"]
    assert result["custom_id"] == "r1" and result["error"] is None
    assert result["response"]["body"]["id"].startswith("gen-batch-")
    prices = timed_sim.config.prices["openai/gpt-4o-mini"]
    usage = data["usage"]
    full = usage["prompt_tokens"] * prices[0] + usage["completion_tokens"] * prices[1]
    assert usage["cost"] == pytest.approx(full / 2)  # half price
    assert timed_sim.account_key.usage == pytest.approx(full / 2)


def test_sim_enforces_the_documented_submission_rules(
    web: httpx.Client, timed_sim: Simulator, clock: FakeClock
) -> None:
    model = "openai/gpt-4o-mini"
    backwards = (
        b'{"requests":['
        + orjson.dumps(ITEM)
        + b'],"endpoint":"/v1/chat/completions","model":"'
        + model.encode()
        + b'"}'
    )
    assert post(web, timed_sim, backwards).status_code == 400
    other = {"custom_id": "x", "body": {"model": "openai/gpt-4o", "messages": []}}
    raw = orjson.dumps({"endpoint": "/v1/chat/completions", "model": model, "requests": [ITEM, other]})
    assert "must match" in post(web, timed_sim, raw).json()["error"]["message"]
    empty = orjson.dumps({"endpoint": "/v1/chat/completions", "model": model, "requests": []})
    assert post(web, timed_sim, empty).status_code == 400
    picture = {"custom_id": "p", "body": {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}}
    google = "google/gemini-2.0-flash-001"
    mixed = [ITEM, {"custom_id": "j", "body": {**ITEM["body"], "response_format": {"type": "json_object"}}}]  # type: ignore[dict-item]
    ids = [
        post(web, timed_sim, orjson.dumps({"endpoint": "/v1/chat/completions", "model": m, "requests": r})).json()["id"]
        for m, r in ((model, [picture]), (google, mixed), (model, mixed))
    ]
    clock.now += 1000
    picture_batch, google_batch, fine = (get(web, timed_sim, i) for i in ids)
    assert picture_batch["status"] == "failed" and "text-only" in picture_batch["error"]["message"]
    assert google_batch["status"] == "failed" and "requests[1] (j)" in google_batch["error"]["message"]
    assert fine["status"] == "completed"
    assert timed_sim.batches.stats.submitted == 3


@pytest.mark.parametrize("batch_id", [f"batch_{FAKE_KEY}", "batch_" + FAKE_KEY[:24], "../../keys", "b" * 300])
async def test_a_batch_id_that_is_not_an_id_is_never_kept(mock: respx.MockRouter, batch_id: str) -> None:
    # The id goes to X.batches.json and back into URLs: one holding the key (or a fragment of
    # it) or path characters is refused. After a POST, no HTTP status: the batch is in doubt.
    mock.post(BATCHES).mock(return_value=httpx.Response(202, json=batch_object("validating", id=batch_id)))
    mock.get(f"{BATCHES}/b").mock(return_value=httpx.Response(200, json=batch_object("completed", id=batch_id)))
    with pytest.raises(Transient) as submitted:
        await api().submit("openai/gpt-4o", [("a", b"{}")])
    assert submitted.value.http_status is None and FAKE_KEY[:16] not in str(submitted.value)
    with pytest.raises(Transient) as polled:
        await api().get("b")
    assert polled.value.kind == "bad_response" and polled.value.http_status == 200


def test_a_batch_that_cannot_be_the_one_in_doubt_is_said_so() -> None:
    # break49 F1: `batches adopt` took any id not already in the file.
    entry = BatchEntry("b2", "m/a", ["r1", "r2"], ["f1", "f2"], 0.01, intent_at=1_800_000_000.0)
    ours = BatchInfo("batch_1", "in_progress", {"total": 2, "completed": 0, "failed": 0}, None, None, None, None)
    assert not_this_batch(entry, ours) is None  # nothing said against it: it may be b2's
    assert not_this_batch(entry, replace(ours, model="m/a", created_at=1_800_000_000 - 299)) is None  # clocks differ
    assert not_this_batch(entry, replace(ours, created_at=1_800_000_000 + 3599)) is None  # sent after a 429's wait
    # verify50 N3: a server whose clock is 400 s behind ours (its reply's Date says so) made it then.
    assert not_this_batch(entry, replace(ours, created_at=1_800_000_000 - 400, server_ahead_s=-400.0)) is None
    foreign = "it holds requests that are not b2's 2 row(s)"
    cases = [
        (replace(ours, model="m/b"), "its model is m/b; b2's rows are for m/a"),
        (
            replace(ours, created_at=1_800_000_000 - 86400),
            "it was created at 2027-01-14 08:00:00Z (by this machine's clock), before b2 was sent "
            "(2027-01-15 08:00:00Z)",
        ),
        # verify50 N1: one made the next night was taken.
        (
            replace(ours, created_at=1_800_000_000 + 86400),
            "it was created at 2027-01-16 08:00:00Z (by this machine's clock), long after b2 was sent "
            "(2027-01-15 08:00:00Z)",
        ),
        (replace(ours, results=[{"custom_id": "r9"}]), foreign),
        (replace(ours, request_counts={"total": 3}), foreign),
        (replace(ours, request_counts={"total": 1}), foreign),  # break64 F5: fewer is another batch too
    ]
    for info, said in cases:
        assert not_this_batch(entry, info) == said
    assert not_this_batch(entry, replace(ours, request_counts={"total": 0})) is None  # not counted yet


async def test_a_batch_read_says_how_far_the_servers_clock_is_from_ours(mock: respx.MockRouter) -> None:
    # verify50 N3: created_at is the server's clock; a machine 400 s ahead refused an honest adoption.
    server_time = FakeClock().time() - 400
    headers = {"Date": email.utils.formatdate(server_time, usegmt=True)}
    route = mock.get(f"{BATCHES}/b").mock(
        return_value=httpx.Response(200, json=batch_object("in_progress"), headers=headers)
    )
    assert (await api().get("b")).server_ahead_s == pytest.approx(-400, abs=1)
    route.mock(return_value=httpx.Response(200, json=batch_object("in_progress"), headers={"Date": "not a date"}))
    assert (await api().get("b")).server_ahead_s == 0.0


async def test_a_batch_objects_model_and_created_at_are_not_believed_blindly(mock: respx.MockRouter) -> None:
    # What adopt compares: a model echoing the key is scrubbed (it is said in a refusal), and a
    # created_at that is no whole number of seconds says nothing.
    for created in ("yesterday", -5, 1e30, True):
        body = batch_object("in_progress", model=f"m/{FAKE_KEY}", created_at=created)
        mock.get(f"{BATCHES}/b").mock(return_value=httpx.Response(200, json=body))
        info = await api().get("b")
        assert info.model is not None and FAKE_KEY[12:40] not in info.model and info.created_at is None
