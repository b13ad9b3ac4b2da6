"""Cost truth against a server that lies (break-14): generation ids that carry the key,
`/generation` replies about another generation, BYOK answers without their upstream cost,
provider names that echo the key in `plan`.

Each run goes through test_hostile's `run` and its `check`:
no traceback, every row once, no key nor a 16-character fragment of one anywhere.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import batchrun._earlier_costs as earlier_costs
from batchrun import ExitCode, RunOptions, load_job, run_job
from batchrun._pricing import parse_generation
from batchrun._reader import final_records, scan_states
from batchrun._summary_floor import seal_looked_up

from .conftest import FAKE_KEY, FakeClock, call_cli, read_rows, write_job
from .hostile import (
    JOB,
    ROWS,
    HostileServer,
    RawRequest,
    asked_generation,
    assert_no_key_in,
    chat_payload,
    http,
    json_answer,
    models_payload,
    new_generation_id,
    run,
)

pytestmark = pytest.mark.usefixtures("keys_env")

USAGE = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}


def _cut(generation_id: str) -> bytes:
    """A 200 whose JSON body is cut short: generated, so maybe billed (held, looked up)."""
    return http(200, b'{"id": "gen-', {"Content-Type": "application/json", "X-Generation-Id": generation_id})


def _sse(*chunks: dict[str, Any], headers: dict[str, str] | None = None) -> bytes:
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    return http(200, body, {"Content-Type": "text/event-stream", **(headers or {})})


def _unknown_costs() -> HostileServer:
    """A server whose answers say no cost (nothing to estimate from), each its own generation id,
    and whose /generation knows none of them yet: every row's cost unknown, its worst case held."""
    reply = {k: v for k, v in chat_payload().items() if k != "usage"}
    server = HostileServer(
        chat=lambda request: json_answer(200, {**reply, "id": f"gen-{request.headers['x-batchrun-row']}"})
    )
    server.routes["/generation"] = lambda request: json_answer(404, {"error": {"code": 404, "message": "not found"}})
    return server


def known_late(cost: float, **extra: Any) -> Callable[[RawRequest], bytes]:
    """A /generation that knows each generation only when asked the second time (404 first):
    a row's own lookup finds nothing, the end-of-run lookups find `cost` (and `extra` fields)."""
    asked: set[str] = set()

    def generation(request: RawRequest) -> bytes:
        gid = request.path.split("id=")[1]
        if gid not in asked:
            asked.add(gid)
            return json_answer(404, {"error": {"code": 404, "message": "Generation not found"}})
        return json_answer(200, {"data": {"id": gid, "total_cost": cost, **extra}})

    return generation


def _summary(tmp_path: Path) -> dict[str, Any]:
    return dict(json.loads((tmp_path / "out.summary.json").read_text()))


# -- generation ids: scrubbed at every entry point (break-14 #5) -------------------------------
def test_a_generation_id_holding_the_key_is_never_kept_from_an_answer(tmp_path: Path) -> None:
    def chat(request: RawRequest) -> bytes:
        payload = chat_payload(id="gen-" + request.key, usage=USAGE)  # no cost: a lookup would be tried
        return json_answer(200, payload, {"X-Generation-Id": "gen-" + request.key})

    server = HostileServer(chat=chat)
    outcome = run(server, tmp_path)
    assert outcome.code == ExitCode.OK
    assert {r["generation_id"] for r in outcome.rows} == {None}
    assert {r["cost_status"] for r in outcome.rows} == {"estimated"}
    # Never sent back in a /generation URL either.
    assert not any("/generation" in r.path for r in server.requests)


def test_a_generation_id_holding_the_key_is_never_kept_from_an_abandoned_attempt(tmp_path: Path) -> None:
    server = HostileServer(chat=lambda request: _cut("gen-" + request.key[:30]))
    outcome = run(server, tmp_path)
    for row in outcome.rows:
        [attempt] = row["abandoned_attempts"]
        assert attempt["generation_id"] is None and attempt["cost_status"] == "unknown"
        assert row["cost"] is None and row["cost_held"] > 0


def test_a_generation_id_holding_the_key_is_never_kept_from_a_stream(tmp_path: Path) -> None:
    def chat(request: RawRequest) -> bytes:
        gid = "gen-" + request.key
        return _sse(
            {"id": gid, "choices": [{"index": 0, "delta": {"content": "Paris"}}]},
            {"id": gid, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": USAGE},
            headers={"X-Generation-Id": gid},
        )

    outcome = run(HostileServer(chat=chat), tmp_path, "--stream")
    assert outcome.code == ExitCode.OK and {r["generation_id"] for r in outcome.rows} == {None}


BYOK_USAGE = {"cost": 0.0, "is_byok": True, "cost_details": {"upstream_inference_cost": 0.012}}


@pytest.mark.parametrize(
    ("first", "second", "kept"),
    [
        ({"cost": 0.012}, {"cost": 0.0}, 0.012),
        ({"cost": 0.001}, {"cost": 0.012}, 0.012),
        # verify14i V10: a fee alone is less than a BYOK fee with its upstream cost.
        (BYOK_USAGE, {"cost": 0.0001}, 0.012),
    ],
)
def test_a_stream_that_sends_its_usage_twice_keeps_the_larger_charge(
    tmp_path: Path, first: dict[str, Any], second: dict[str, Any], kept: float
) -> None:
    # break14h H13: the last usage chunk won, so a `cost: 0` after the real one recorded the row
    # at $0 "reported". The larger is kept, as batch mode keeps the larger of two figures.
    def chat(request: RawRequest) -> bytes:
        done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        return _sse(
            {"id": "gen-1", "choices": [{"index": 0, "delta": {"content": "Paris"}}]},
            {**done, "usage": {**USAGE, **first}},
            {"choices": [], "usage": {**USAGE, **second}},
        )

    outcome = run(HostileServer(chat=chat), tmp_path, "--stream")
    assert {(r["spent"], r["cost_status"]) for r in outcome.rows} == {(kept, "reported")}


# -- /generation answers: the id must be the one asked for (break-14 #4) -----------------------
@pytest.mark.parametrize(
    "data",
    [
        {"id": "gen-someone-else", "total_cost": 0.0},
        {"total_cost": 0.0},
        {"id": None, "total_cost": 0.0},
    ],
)
def test_a_generation_reply_about_another_generation_is_not_this_ones_cost(
    tmp_path: Path, data: dict[str, Any]
) -> None:
    server = HostileServer(chat=lambda request: _cut(new_generation_id()))
    server.routes["/generation"] = lambda request: json_answer(200, {"data": data})
    outcome = run(server, tmp_path)
    for row in outcome.rows:
        # Not "looked_up at $0": the worst case stays held, the cost unknown.
        [attempt] = row["abandoned_attempts"]
        assert any(f"/generation?id={attempt['generation_id']}" in r.path for r in server.requests)
        assert attempt == {"generation_id": attempt["generation_id"], "cost": None, "cost_status": "unknown"}
        assert row["cost_unknown"] is True and row["cost_held"] > 0
    summary = _summary(tmp_path)
    assert summary["reconciliation"]["unknown_cost_attempts"] == len(outcome.rows)
    assert summary["spent_usd"] == pytest.approx(sum(r["cost_held"] for r in outcome.rows))


def test_a_generation_reply_about_the_asked_generation_resolves_it(tmp_path: Path) -> None:
    server = HostileServer(chat=lambda request: _cut(new_generation_id()))
    server.routes["/generation"] = lambda r: json_answer(
        200, {"data": {"id": asked_generation(r), "total_cost": 0.0002}}
    )
    outcome = run(server, tmp_path)
    for row in outcome.rows:
        assert row["abandoned_attempts"][0]["cost_status"] == "looked_up" and row["cost"] == 0.0002


@pytest.mark.parametrize(("finish", "looked_up"), [("stop", True), ("length", True), (None, False), ("", False)])
def test_a_finished_answer_of_the_wrong_shape_may_be_billed_and_is_looked_up(
    tmp_path: Path, finish: str | None, looked_up: bool
) -> None:
    # out-109 F2: a 200 whose message held no text (content an object), finish_reason "stop" and no
    # usage was "nothing could have billed": $0, no lookup, each retry bought again at $0. Insurance
    # waives only a blank or error finish reason (zero-completion-insurance.mdx).
    def chat(request: RawRequest) -> bytes:
        payload = chat_payload({"text": "Paris"}, usage=None)
        payload["choices"][0]["finish_reason"] = finish
        return json_answer(200, payload, {"X-Generation-Id": new_generation_id()})

    server = HostileServer(chat=chat)
    server.routes["/generation"] = lambda r: json_answer(200, {"data": {"id": asked_generation(r), "total_cost": 2e-4}})
    outcome = run(server, tmp_path)
    assert {r["error"]["kind"] for r in outcome.rows} == {"bad_response"}
    assert [r["cost"] for r in outcome.rows] == [2e-4 if looked_up else 0.0] * len(outcome.rows)
    assert any("/generation?id=" in r.path for r in server.requests) is looked_up


@pytest.mark.parametrize("body", [[chat_payload()], "Paris", 7])
def test_a_200_that_is_no_object_may_be_billed_and_is_looked_up(tmp_path: Path, body: Any) -> None:
    # out-111 F3: a 200 whose body was a JSON array or string was $0, never looked up, and retried;
    # one that is no JSON at all was held and looked up.
    server = HostileServer(chat=lambda r: json_answer(200, body, {"X-Generation-Id": new_generation_id()}))
    server.routes["/generation"] = lambda r: json_answer(200, {"data": {"id": asked_generation(r), "total_cost": 2e-4}})
    outcome = run(server, tmp_path)
    assert {r["error"]["kind"] for r in outcome.rows} == {"bad_response"}
    assert [r["cost_status"] for r in outcome.rows] == ["looked_up"] * len(outcome.rows)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("encoding", "body"), [("br", b"\x1b\x03\x00\xf8"), ("zstd", b"(\xb5/\xfd"), ("gzip", b"\x1f\x8bnot gzip")]
)
def test_a_200_whose_body_does_not_decode_is_held_and_looked_up_never_counted_free(
    tmp_path: Path, encoding: str, body: bytes, stream: bool
) -> None:
    # break45 F4: a 200 in a content-encoding batchrun does not read (or a gzip that does not
    # decode) was "nothing could have billed": $0, no lookup, its room retried; without /key a
    # budget of $0.001 let $0.0048 be billed, the summary saying $0. A 200 was generated.
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    server = HostileServer(chat=lambda request: http(200, body, {**headers, "X-Generation-Id": new_generation_id()}))
    server.routes["/generation"] = lambda r: json_answer(
        200, {"data": {"id": asked_generation(r), "total_cost": 0.0002}}
    )
    outcome = run(server, tmp_path, *(["--stream"] if stream else []))
    assert sum("/generation?id=gen-" in r.path for r in server.requests) >= len(outcome.rows)
    for row in outcome.rows:
        assert row["status"] == "error" and row["error"]["kind"] == "bad_response"
        assert row["cost"] == 0.0002 and row["cost_status"] == "looked_up"
    assert _summary(tmp_path)["spent_usd"] == pytest.approx(0.0002 * len(outcome.rows))


# -- BYOK: the fee alone is not the charge (break-14 #7) ----------------------------------------
@pytest.mark.parametrize("upstream", [None, -1, "abc", "missing"])
def test_a_byok_answer_without_its_upstream_cost_keeps_the_worst_case(tmp_path: Path, upstream: Any) -> None:
    details = {} if upstream == "missing" else {"upstream_inference_cost": upstream}
    usage = {**USAGE, "cost": 0.0000001, "is_byok": True, "cost_details": details}
    outcome = run(HostileServer(chat=lambda r: json_answer(200, chat_payload(usage=usage))), tmp_path)
    assert outcome.code == ExitCode.OK
    for row in outcome.rows:
        assert row["is_byok"] is True and row["cost_status"] == "unknown" and row["cost"] is None
        assert row["cost_held"] > 0.0000001
    summary = _summary(tmp_path)
    assert summary["spent_usd"] == pytest.approx(sum(r["cost_held"] for r in outcome.rows))


def test_a_byok_answer_with_its_upstream_cost_is_reported_and_counted(tmp_path: Path) -> None:
    usage = {**USAGE, "cost": 0.0000001, "is_byok": True, "cost_details": {"upstream_inference_cost": 0.00002}}
    outcome = run(HostileServer(chat=lambda r: json_answer(200, chat_payload(usage=usage))), tmp_path)
    for row in outcome.rows:
        assert row["cost_status"] == "reported" and row["upstream_inference_cost"] == 0.00002
        assert row["cost"] == 0.0000001 and row["spent"] == pytest.approx(0.0000201)  # the fee, then both
    assert _summary(tmp_path)["spent_usd"] == pytest.approx(len(outcome.rows) * 0.0000201)
    # Verification of the break14h fixes (V2): a record's `spent` was the fee alone, so a resume
    # began at $0 and spent the budget again, every time.
    assert scan_states(tmp_path / "out.jsonl").spent_usd == pytest.approx(len(outcome.rows) * 0.0000201)
    # Its readers (verify14j N4): the tables' cost counts the upstream charge with the fee.
    code, text, _ = call_cli("report", tmp_path / "out.jsonl", "--json")
    assert json.loads(text)["total"]["cost_usd"] == pytest.approx(len(outcome.rows) * 0.0000201)


@pytest.mark.parametrize("flag", ["true", 1, "yes"])
def test_a_byok_flag_that_is_not_a_boolean_is_not_believed_to_say_no(tmp_path: Path, flag: Any) -> None:
    # break-14b M3: "true" or 1 was dropped as wrong-typed, and the fee alone was counted.
    usage = {**USAGE, "cost": 0.0000001, "is_byok": flag, "cost_details": {"upstream_inference_cost": None}}
    outcome = run(HostileServer(chat=lambda r: json_answer(200, chat_payload(usage=usage))), tmp_path)
    for row in outcome.rows:
        assert row["is_byok"] is True and row["cost_status"] == "unknown" and row["cost_held"] > 0.0000001


def test_an_upstream_charge_counts_even_without_the_byok_flag(tmp_path: Path) -> None:
    # break-14b M3: an upstream_inference_cost with no is_byok was ignored (the fee alone counted).
    usage = {**USAGE, "cost": 0.0000001, "cost_details": {"upstream_inference_cost": 0.00002}}
    outcome = run(HostileServer(chat=lambda r: json_answer(200, chat_payload(usage=usage))), tmp_path)
    for row in outcome.rows:
        assert row["cost_status"] == "reported" and row["upstream_inference_cost"] == 0.00002
        assert row["cost"] == 0.0000001 and row["spent"] == pytest.approx(0.0000201)  # the fee, then both
    assert _summary(tmp_path)["spent_usd"] == pytest.approx(len(outcome.rows) * 0.0000201)
    # Verification of the break14h fixes (V2): a record's `spent` was the fee alone, so a resume
    # began at $0 and spent the budget again, every time.
    assert scan_states(tmp_path / "out.jsonl").spent_usd == pytest.approx(len(outcome.rows) * 0.0000201)
    # Its readers (verify14j N4): the tables' cost counts the upstream charge with the fee.
    code, text, _ = call_cli("report", tmp_path / "out.jsonl", "--json")
    assert json.loads(text)["total"]["cost_usd"] == pytest.approx(len(outcome.rows) * 0.0000201)


def test_an_upstream_charge_of_an_answer_that_says_it_is_not_byok_is_part_of_its_cost(tmp_path: Path) -> None:
    # break32 F1: openapi.yaml's examples (is_byok false, upstream 0.0012 of a 0.0015 total) were
    # counted as BYOK, the two added: is_byok written true, spend doubled, a budget run stopped at half.
    usage = {**USAGE, "cost": 0.0015, "is_byok": False, "cost_details": {"upstream_inference_cost": 0.0012}}
    usage["server_tool_use"] = {"web_search_requests": 2}  # overview.mdx's ResponseUsage: kept (out-161)
    outcome = run(HostileServer(chat=lambda r: json_answer(200, chat_payload(usage=usage))), tmp_path)
    for row in outcome.rows:
        assert row["is_byok"] is False and row["cost"] == 0.0015 and row["spent"] == pytest.approx(0.0015)
        # Part of its cost, not a BYOK provider's charge beside it: not on the record (out-161).
        assert row["upstream_inference_cost"] is None and row["usage"]["server_tool_use"] == {"web_search_requests": 2}
    assert _summary(tmp_path)["spent_usd"] == pytest.approx(len(outcome.rows) * 0.0015)
    found = parse_generation(
        {"id": "gen-1", "total_cost": 0.0015, "is_byok": False, "upstream_inference_cost": 0.0012}, "gen-1"
    )
    assert found is not None and found.charged == 0.0015 and found.is_byok is False


def test_a_cost_below_its_own_upstream_cost_is_not_believed(tmp_path: Path) -> None:
    # verify31 V7: not BYOK, cost 0.0001 beside an upstream cost of 0.0012 (part of it): the
    # charge is at least the upstream cost, and the lower figure was counted.
    usage = {**USAGE, "cost": 0.0001, "is_byok": False, "cost_details": {"upstream_inference_cost": 0.0012}}
    outcome = run(HostileServer(chat=lambda r: json_answer(200, chat_payload(usage=usage))), tmp_path)
    for row in outcome.rows:
        assert row["cost_status"] == "unknown" and row["cost_held"] >= 0.0012, row  # at least the upstream (n4)


# -- plan: every string it prints from a server is scrubbed (break-14 #6) ----------------------
def test_plan_never_prints_a_key_echoed_in_an_endpoint(tmp_path: Path) -> None:
    def endpoints(request: RawRequest) -> bytes:
        key = request.key
        endpoint = {
            "name": key,
            "provider_name": key,
            "tag": key,
            "quantization": key,
            "pricing": {"prompt": "0.0001", "completion": "0.0002"},
            "context_length": 131072,
            "max_completion_tokens": 16384,
        }
        return json_answer(200, {"data": {"id": key, "endpoints": [endpoint]}})

    server = HostileServer(chat=lambda r: json_answer(200, chat_payload()))
    server.routes["/endpoints"] = endpoints
    path = write_job(tmp_path, JOB)
    with server.running():
        code, stdout, stderr = call_cli("plan", path, "--base-url", server.base_url)
    printed = stdout + stderr
    assert code == ExitCode.OK and "price basis: endpoints" in printed and "[key]" in printed
    assert {r.key for r in server.requests if r.path.endswith("/endpoints")} == {FAKE_KEY}  # the echoed key
    assert_no_key_in(printed)


# -- /credits with a management key: a lie stops pre-flight like a bad /key (break-14 #12) -----
@pytest.mark.parametrize(
    "data",
    [{"total_credits": -1, "total_usage": 0}, {"total_credits": "abc", "total_usage": 0}, None, {}, [1, 2]],
)
def test_a_credits_reply_that_cannot_be_read_stops_pre_flight(tmp_path: Path, data: Any) -> None:
    server = HostileServer(chat=lambda r: json_answer(200, chat_payload()))
    server.routes["/credits"] = lambda r: json_answer(200, {"data": data})
    outcome = run(server, tmp_path, "--budget", "1")
    assert outcome.code == ExitCode.ERRORS and outcome.rows == [] and server.chat_rows() == []
    [line] = outcome.stderr.strip().splitlines()  # one line, naming /credits
    assert "/credits" in line and "bad_response" in line
    path = write_job(tmp_path, JOB)
    with server.running():
        code, stdout, stderr = call_cli("plan", path, "--base-url", server.base_url)
    assert code == ExitCode.ERRORS and "/credits" in stderr


def test_a_key_credits_refuses_as_no_management_key_is_a_setting_not_an_outage(tmp_path: Path) -> None:
    # out-104 F6: /credits' documented 403 ("Only management keys can perform this operation")
    # was exit 1, "the endpoint failed", which a wrapper retries for ever.
    server = HostileServer(chat=lambda r: json_answer(200, chat_payload()))
    refused = {"error": {"code": 403, "message": "Only management keys can perform this operation"}}
    server.routes["/credits"] = lambda r: json_answer(403, refused)
    outcome = run(server, tmp_path, "--budget", "1")
    assert outcome.code == ExitCode.USAGE and outcome.rows == [] and server.chat_rows() == []
    [line] = outcome.stderr.strip().splitlines()
    assert "the management key was refused by /credits" in line and "$OPENROUTER_MANAGEMENT_KEY" in line
    with server.running():
        code, _, stderr = call_cli("plan", write_job(tmp_path, JOB), "--base-url", server.base_url)
    assert code == ExitCode.USAGE and "the management key was refused by /credits" in stderr


def test_a_credits_reply_bounds_the_run_like_a_key_limit(tmp_path: Path) -> None:
    server = HostileServer(chat=lambda r: json_answer(200, chat_payload()))
    server.routes["/credits"] = lambda r: json_answer(200, {"data": {"total_credits": 1.0, "total_usage": 1.0}})
    outcome = run(server, tmp_path, "--budget", "1")
    assert outcome.code == ExitCode.BUDGET and server.chat_rows() == []
    assert {r["reason"] for r in outcome.rows} == {"credits"}


def test_an_overdrawn_account_sends_nothing_even_to_a_free_model(tmp_path: Path) -> None:
    # verify39 F2: the balance was read as max(0, credits - usage), so an account $0.30 overdrawn
    # sent all its free-model requests (OpenRouter: 402s, free models included: limits.mdx).
    free = {"openai/gpt-4o-mini": {"pricing": {"prompt": "0", "completion": "0", "request": "0"}}}
    answer = chat_payload(usage={"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6, "cost": 0})
    for credits, sent in ((1.0, 0), (1.3, ROWS)):  # overdrawn by $0.30; exactly $0 left
        server = HostileServer(
            chat=lambda r: json_answer(200, answer), models=lambda r: json_answer(200, models_payload(free))
        )
        balance = json_answer(200, {"data": {"total_credits": credits, "total_usage": 1.3}})

        def account(request: RawRequest, reply: bytes = balance) -> bytes:
            return reply

        server.routes["/credits"] = account
        outcome = run(server, tmp_path / f"c{sent}")
        assert len(server.chat_rows()) == sent, outcome.stderr
    assert outcome.code == ExitCode.OK


def test_an_endpoint_without_credits_runs_without_the_bound(tmp_path: Path) -> None:
    outcome = run(HostileServer(chat=lambda r: json_answer(200, chat_payload())), tmp_path, "--budget", "1")
    assert outcome.code == ExitCode.OK and len(outcome.rows) == 4  # /credits answers 404: not served


# -- the end-of-run /key read: retried, and a failure said everywhere (break-14 #15) -----------
def _key_failing_after(reads: int, failures: int | None = None) -> Any:
    """A /key handler: fine for `reads` reads, then 500 (for `failures` reads, or for good)."""
    seen: list[int] = []

    def key(request: RawRequest) -> bytes:
        seen.append(1)
        failing = len(seen) > reads and (failures is None or len(seen) <= reads + failures)
        if failing:
            return json_answer(500, {"error": {"code": 500, "message": "boom"}})
        return json_answer(200, {"data": {"label": "k", "limit": None, "limit_remaining": None, "usage": 0}})

    return key


@pytest.mark.parametrize("end", ["500", "abc", "-1e308"])
def test_an_end_of_run_key_read_that_fails_is_said_everywhere(tmp_path: Path, end: str) -> None:
    server = HostileServer(chat=lambda request: _cut("gen-abc123"))  # unknown costs, held

    def key(request: RawRequest) -> bytes:
        # Fine while rows are still to be sent (the start, the key window's reads), then `end`.
        if len(server.chat_rows()) < ROWS:
            return json_answer(200, {"data": {"limit": None, "limit_remaining": None, "usage": 0}})
        if end == "500":
            return json_answer(500, {"error": {"code": 500, "message": "boom"}})
        usage = end if end == "abc" else float(end)
        return json_answer(200, {"data": {"limit": None, "limit_remaining": None, "usage": usage}})

    server.key = key
    outcome = run(server, tmp_path, "--budget", "1")
    summary = _summary(tmp_path)
    warning = summary["reconciliation"]["warning"]
    assert warning.startswith("not reconciled: the key's usage could not be read at the end of the run")
    assert f"{len(outcome.rows)} attempt(s) of unknown cost stay held" in warning
    assert summary["reconciliation"]["key_usage_delta_usd"] is None
    for channel in (outcome.stderr, outcome.stdout, (tmp_path / "step.md").read_text()):
        assert "not reconciled" in channel


@pytest.mark.parametrize("start", ["abc", "-1e308", None])
def test_a_start_up_key_usage_that_cannot_be_read_is_said_everywhere(tmp_path: Path, start: Any) -> None:
    # /key answers, but its `usage` is not a number: nothing to reconcile against at the
    # end, and no under-reported cost can be caught at a refresh. Said like an end failure;
    # under a limit, nothing is sent (break14c N7: no key window, $0.24 spent under $0.05).
    for budget in ([], ["--budget", "1"]):
        usages = iter([float(start) if start == "-1e308" else start])
        server = HostileServer(chat=lambda r: json_answer(200, chat_payload()))

        def key(request: RawRequest, usages: Iterator[Any] = usages) -> bytes:
            return json_answer(200, {"data": {"limit": None, "limit_remaining": None, "usage": next(usages, 0)}})

        server.key = key
        folder = tmp_path / f"budget{len(budget)}"
        outcome = run(server, folder, *budget)
        if budget:
            assert outcome.code == ExitCode.BUDGET and not server.chat_rows()
            assert {r["reason"] for r in outcome.rows} == {"key_unreadable"}
            assert "the key's usage cannot be followed" in outcome.stdout
        else:
            assert outcome.code == ExitCode.OK and len(outcome.rows) == 4
        rec = _summary(folder)["reconciliation"]
        assert rec["warning"].startswith("not reconciled: the key's usage could not be read at the start of the run")
        assert rec["key_usage_delta_usd"] is None
        for channel in (outcome.stderr, outcome.stdout, (tmp_path / "step.md").read_text()):
            assert "not reconciled" in channel


async def test_an_end_of_run_key_read_is_retried_like_start_up(tmp_path: Path) -> None:
    server = HostileServer(chat=lambda r: json_answer(200, chat_payload()), key=_key_failing_after(1, failures=2))
    job = load_job(write_job(tmp_path, JOB.replace("max_attempts: 1", "max_attempts: 4")))
    with server.running():
        report = await run_job(
            job, RunOptions(api_key=FAKE_KEY, base_url=server.base_url, output=tmp_path / "o.jsonl", clock=FakeClock())
        )
    rec = report.summary["reconciliation"]
    assert rec["warning"] is None and rec["key_usage_delta_usd"] == 0.0
    assert sum(r.path.endswith("/key") for r in server.requests) == 4  # start, two 500s, the answer


# -- unknown costs are never shown as $0 outside the run summary (break-14 #16) ----------------
@pytest.mark.xdist_group("html")  # with test_pages: one worker bundles Vega for the page
def test_unknown_costs_read_as_a_lower_bound_in_every_view(tmp_path: Path) -> None:
    server = HostileServer(chat=lambda request: _cut("gen-abc123"))  # no /generation: unknown, held
    first = run(server, tmp_path / "a")
    held = _summary(tmp_path / "a")["total"]["cost_held_usd"]
    assert held > 0 and {r["cost_status"] for r in first.rows} == {"unknown"}
    assert all(r["spent"] == r["cost_held"] > 0 for r in first.rows)
    shown = f"0.000000+? (held ${held:.6f})"
    results = tmp_path / "a" / "out.jsonl"
    code, markdown, _ = call_cli("history", results, "--markdown")
    assert code == 0 and f"| {shown.replace('$', chr(92) + '$')} |" in markdown  # a dollar escaped: no math
    code, text, _ = call_cli("history", results)
    assert shown in text
    page = tmp_path / "r.html"
    assert call_cli("report", results, "--html", page)[0] == 0
    spend = page.read_text().split('id="spend">')[1].split("</dd>")[0]
    assert spend.startswith(f"$0.000000+? (4 row(s) of unknown cost, up to ${held:.6f} more held)")
    # diff against a run whose costs are all known: no "+0.000040 $" as if the first cost nothing.
    second = run(HostileServer(chat=lambda r: json_answer(200, chat_payload())), tmp_path / "b")
    assert {r["cost_status"] for r in second.rows} == {"reported"}
    code, diff, _ = call_cli("diff", results, tmp_path / "b" / "out.jsonl")
    assert "cost 0.000000+? (4 row(s) of unknown cost" in diff and "the change is not known" in diff
    # A resume of the first file: what all its rows cost is a lower bound, the held part named.
    again = run(server, tmp_path / "a", "--resume")
    assert again.code == ExitCode.ERRORS
    assert f"all rows in the file cost $0.000000+? (4 row(s) of unknown cost, up to ${held:.6f}" in again.stdout


def test_a_resume_looks_up_the_costs_an_earlier_run_never_learnt(tmp_path: Path) -> None:
    # verify69 F5: a row whose cost /generation did not know by the end of its run held its worst
    # case as spent on every resume after, though /generation knew it the next morning.
    reply = {k: v for k, v in chat_payload().items() if k != "usage"}  # no figure to estimate from
    server = HostileServer(
        chat=lambda request: json_answer(200, {**reply, "id": f"gen-{request.headers['x-batchrun-row']}"})
    )
    server.routes["/generation"] = lambda request: json_answer(404, {"error": {"code": 404, "message": "not found"}})
    first = run(server, tmp_path, "--budget", "1")
    assert first.code == ExitCode.OK, first.stderr
    assert {r["cost_status"] for r in first.rows} == {"unknown"}
    held = _summary(tmp_path)["total"]["cost_held_usd"]
    # Still not known: every row stays held, and the resume says so (out-118 F6).
    again = run(server, tmp_path, "--resume", "--budget", "1")
    assert again.code == ExitCode.OK and "looked up" not in again.stderr, again.stderr
    assert f"{len(first.rows)} row(s) of unknown or doubted cost stay so: /generation did not give it" in again.stderr
    assert _summary(tmp_path)["spent_before_usd"] == pytest.approx(held, abs=1e-8)  # rounded to 8 places
    server.routes["/generation"] = lambda request: json_answer(
        200, {"data": {"id": request.path.split("id=")[1], "total_cost": 0.000005}}
    )
    asked = sum("/generation" in r.path for r in server.requests)
    third = run(server, tmp_path, "--resume", "--budget", "1")
    assert third.code == ExitCode.OK, third.stderr
    assert f"{len(first.rows)} row(s) whose cost an earlier run did not learn were looked up: $-" in third.stderr
    assert sum("/generation" in r.path for r in server.requests) - asked == len(first.rows)
    rows = list(final_records(tmp_path / "out.jsonl"))
    assert {r["cost_status"] for r in rows} == {"looked_up"} and {r["cost"] for r in rows} == {0.000005}
    assert all("earlier_records" not in r for r in rows)  # the same attempt, now known: not paid twice
    summary = _summary(tmp_path)
    assert summary["spent_before_usd"] == pytest.approx(0.000005 * len(rows))
    assert summary["total"]["cost_unknown_rows"] == 0 and "records edited since" not in third.stderr
    assert scan_states(tmp_path / "out.jsonl", lambda _: None).spent_usd == pytest.approx(0.000005 * len(rows))
    # Known now: a fourth resume reads no costs again.
    asked = sum("/generation" in r.path for r in server.requests)
    assert run(server, tmp_path, "--resume", "--budget", "1").code == ExitCode.OK
    assert sum("/generation" in r.path for r in server.requests) == asked


def test_a_generation_cost_no_request_could_cost_is_never_counted_by_a_run_or_a_resume(tmp_path: Path) -> None:
    # out-127 F3: above $10,000 for one attempt, /generation lies (out-104 F3: 1e300 bricked every
    # resume). Neither the run's lookups nor a resume's take it: the rows stay unknown, held.
    server = _unknown_costs()
    server.routes["/generation"] = lambda request: json_answer(
        200, {"data": {"id": request.path.split("id=")[1], "total_cost": 1e300}}
    )
    first = run(server, tmp_path, "--budget", "1")
    assert first.code == ExitCode.OK, first.stderr
    assert any("/generation" in r.path for r in server.requests)
    again = run(server, tmp_path, "--resume", "--budget", "1")
    assert again.code == ExitCode.OK, again.stderr
    assert f"{len(first.rows)} row(s) of unknown or doubted cost stay so: /generation did not give it" in again.stderr
    assert {r["cost_status"] for r in final_records(tmp_path / "out.jsonl")} == {"unknown"}
    assert _summary(tmp_path)["spent_usd"] < 1


def test_a_resume_does_not_look_up_a_generation_id_two_rows_carry(tmp_path: Path) -> None:
    # A server that reuses one id would give each row the other's cost (break66 F4): held still.
    reply = {**{k: v for k, v in chat_payload().items() if k != "usage"}, "id": "gen-same"}
    server = HostileServer(chat=lambda request: json_answer(200, reply))
    assert run(server, tmp_path, "--budget", "1").code == ExitCode.OK
    server.routes["/generation"] = lambda request: json_answer(200, {"data": {"id": "gen-same", "total_cost": 1e-6}})
    asked = sum("/generation" in r.path for r in server.requests)
    again = run(server, tmp_path, "--resume", "--budget", "1")
    assert again.code == ExitCode.OK and "looked up" not in again.stderr, again.stderr
    assert sum("/generation" in r.path for r in server.requests) == asked
    assert {r["cost_status"] for r in final_records(tmp_path / "out.jsonl")} == {"unknown"}


@pytest.mark.parametrize("lie", [0.0, 50.0], ids=["low", "high"])
def test_a_merged_files_resume_takes_no_cost_it_cannot_check_against_the_key(tmp_path: Path, lie: float) -> None:
    # out-121 F1: a merged summary lists no runs, so no key readings: a /generation lying low was
    # taken ($0.0863 counted, $0.14 billed), and one lying high ($50 a row) bricked every resume.
    server = _unknown_costs()
    job = write_job(tmp_path, JOB)
    with server.running():
        for shard in ("1/2", "2/2"):
            out = tmp_path / f"s{shard[0]}.jsonl"
            assert call_cli(job, "--base-url", server.base_url, "-o", out, "--shard", shard, "-q")[0] == ExitCode.OK
        assert call_cli("merge", "-o", tmp_path / "out.jsonl", tmp_path / "s1.jsonl", tmp_path / "s2.jsonl")[0] == 0
    before = _summary(tmp_path)
    assert before["total"]["cost_unknown_rows"] > 0 and not before.get("runs")
    server.routes["/generation"] = lambda request: json_answer(
        200, {"data": {"id": request.path.split("id=")[1], "total_cost": lie}}
    )
    again = run(server, tmp_path, "--resume", "--budget", "1")
    assert again.code == ExitCode.OK, again.stderr
    said = (
        "over 100x their worst cases were not taken" if lie else "gave below what was counted for them were not taken"
    )
    assert said in again.stderr and "no key readings of every earlier run to check them against" in again.stderr
    assert {r["cost_status"] for r in again.rows} == {"unknown"}
    assert _summary(tmp_path)["spent_before_usd"] == pytest.approx(before["spent_usd"], abs=1e-8)


def test_a_resume_of_a_file_without_its_summary_says_what_is_not_known(tmp_path: Path) -> None:
    # out-121 F3: a results file kept alone (CI kept *.jsonl) lost its key gap without a word, and a
    # /generation lying low was taken ($0.002 counted, $0.08 billed).
    server = _unknown_costs()
    first = run(server, tmp_path, "--budget", "1")
    held = _summary(tmp_path)["total"]["cost_held_usd"]
    (tmp_path / "out.summary.json").unlink()
    server.routes["/generation"] = lambda request: json_answer(
        200, {"data": {"id": request.path.split("id=")[1], "total_cost": 0.0}}
    )
    again = run(server, tmp_path, "--resume", "--budget", "1")
    assert again.code == ExitCode.OK and "has no summary beside it: what its runs spent beyond" in again.stderr
    assert f"{len(first.rows)} row(s)' costs /generation gave below what was counted for them" in again.stderr
    assert _summary(tmp_path)["spent_before_usd"] == pytest.approx(held, abs=1e-8)
    # out-122 F1: nor by the resume after it, whose summary lists only the first resume's run.
    assert _summary(tmp_path)["runs_complete"] is False
    third = run(server, tmp_path, "--resume", "--budget", "1")
    assert f"{len(first.rows)} row(s)' costs /generation gave below what was counted for them" in third.stderr
    assert _summary(tmp_path)["spent_before_usd"] == pytest.approx(held, abs=1e-8)


def test_a_resume_of_a_file_past_a_lower_budget_is_exit_5_with_nothing_to_send(tmp_path: Path) -> None:
    # out-121 F4: a file whose earlier runs spent past the budget it is resumed with ended exit 0
    # once nothing was left to send; it spent past its limit all the same.
    server = HostileServer(chat=lambda request: json_answer(200, chat_payload()))
    first = run(server, tmp_path, "--budget", "1")
    assert first.code == ExitCode.OK
    spent = _summary(tmp_path)["spent_usd"]
    again = run(server, tmp_path, "--resume", "--budget", f"{spent / 2:.8f}")
    assert again.code == ExitCode.BUDGET and "earlier runs of this file spent $" in again.stderr, again.stderr
    assert _summary(tmp_path)["spent_past_budget_usd"] == pytest.approx(spent / 2, abs=1e-7)
    assert run(server, tmp_path, "--resume", "--budget", "1").code == ExitCode.OK


def test_a_resume_looks_up_the_attempts_of_a_row_that_never_answered(tmp_path: Path) -> None:
    # out-122 F2: a row whose one attempt was cut off (an error, its cost unknown) held its worst
    # case for good: no resume asked /generation for it, and --retry-errors exited 5 each time.
    server = HostileServer(chat=lambda request: _cut(f"gen-{request.headers['x-batchrun-row']}"))
    server.routes["/generation"] = lambda request: json_answer(404, {"error": {"code": 404, "message": "not found"}})
    first = run(server, tmp_path, "--budget", "1")
    assert {(r["status"], r["cost_status"]) for r in first.rows} == {("error", "unknown")}
    assert all(r["is_byok"] is None and r["abandoned_attempts"][0]["cost_status"] == "unknown" for r in first.rows)
    server.routes["/generation"] = lambda request: json_answer(
        200, {"data": {"id": request.path.split("id=")[1], "total_cost": 0.000004}}
    )
    again = run(server, tmp_path, "--resume", "--budget", "1")
    assert f"{len(first.rows)} row(s) whose cost an earlier run did not learn were looked up: $-" in again.stderr
    for row in again.rows:
        assert (row["status"], row["cost"], row["cost_status"], row["cost_held"]) == (
            "error",
            0.000004,
            "looked_up",
            None,
        )
        assert row["abandoned_attempts"][0]["cost"] == 0.000004 and row["spent"] == 0.000004
    assert _summary(tmp_path)["spent_before_usd"] == pytest.approx(0.000004 * len(first.rows))


def test_a_cut_off_attempts_cost_learnt_later_does_not_take_the_key_gap_down(tmp_path: Path) -> None:
    # out-123 F2: answers under-reported (a key gap), and cut-off attempts were billed after the
    # run's last /key read; the resume that learnt them took the gap down by as much, as if the
    # gap had held them: $0.009 counted for $0.013 billed.
    billed = {"seen": 0.0, "late": 0.0}

    def chat(request: RawRequest) -> bytes:
        row = request.headers["x-batchrun-row"]
        if row[0] in "01234567":
            billed["late"] += 0.0004  # billed once the run had ended
            return _cut(f"gen-{row}")
        billed["seen"] += 0.0001
        return json_answer(200, chat_payload(usage={**USAGE, "cost": 0.00001}))

    key = {"usage": lambda: billed["seen"]}
    server = HostileServer(
        chat=chat,
        key=lambda request: json_answer(
            200, {"data": {"label": "k", "limit": None, "limit_remaining": None, "usage": key["usage"]()}}
        ),
    )
    server.routes["/generation"] = lambda request: json_answer(404, {"error": {"code": 404, "message": "not found"}})
    first = run(server, tmp_path, "--budget", "1", job=JOB.replace("{a: 6}]", "{a: 6}, {a: 7}, {a: 8}, {a: 9}]"))
    cut = [r for r in first.rows if r["status"] == "error"]
    assert cut and len(cut) < len(first.rows) and _summary(tmp_path)["key_gap_usd"] > 0
    key["usage"] = lambda: billed["seen"] + billed["late"]
    server.routes["/generation"] = lambda request: json_answer(
        200, {"data": {"id": request.path.split("id=")[1], "total_cost": 0.0004}}
    )
    again = run(server, tmp_path, "--resume", "--budget", "1")
    assert f"{len(cut)} row(s) whose cost an earlier run did not learn were looked up" in again.stderr
    # The gap stays: at most the worst cases held for the cut attempts (which the run's key reads
    # took as charged) are short of the bill; taken down, $0.00024 of $0.0007 was missing.
    held = sum(r["cost_held"] for r in cut)
    assert _summary(tmp_path)["spent_before_usd"] >= billed["seen"] + billed["late"] - held - 1e-9


def test_money_in_records_is_written_to_twelve_places(tmp_path: Path) -> None:
    # out-122 F5: sums of parts wrote "spent": 0.0021400000000000004 and "cost_held" likewise.
    reply = {k: v for k, v in chat_payload().items() if k != "usage"}
    server = HostileServer(
        chat=lambda request: json_answer(200, {**reply, "id": f"gen-{request.headers['x-batchrun-row']}"})
    )
    server.routes["/generation"] = known_late(0.1 + 0.2)  # 0.30000000000000004, learnt at the end
    job = JOB.replace("    vars:", "    params: {max_tokens: 7}\n    vars:")
    run(server, tmp_path, "--budget", "5", job=job)
    money = ("cost", "spent", "cost_held", "cost_known", "resolves")
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    figures = [line[name] for line in lines for name in money if isinstance(line.get(name), float)]
    assert figures and [f for f in figures if round(f, 12) != f] == []


def test_a_resume_that_sends_nothing_counts_no_one_elses_spend_on_the_key(tmp_path: Path) -> None:
    # out-122 F4: each resume of a finished file (cron) counted what another process spent on the
    # shared key between its two /key reads as its own key gap; the sixth exited 5.
    reads = {"n": 0}

    def key(request: RawRequest) -> bytes:
        reads["n"] += 1  # another process spends $0.001 between any two reads
        return json_answer(
            200, {"data": {"label": "k", "limit": None, "limit_remaining": None, "usage": 0.001 * reads["n"]}}
        )

    server = HostileServer(chat=lambda request: json_answer(200, chat_payload()), key=key)
    first = run(server, tmp_path, "--budget", "0.01")
    assert first.code == ExitCode.OK
    spent = _summary(tmp_path)["spent_before_usd"] + _summary(tmp_path)["spent_usd"]
    for _ in range(3):
        again = run(server, tmp_path, "--resume", "--budget", "0.01")
        assert again.code == ExitCode.OK and len(server.chat_rows()) == len(first.rows), again.stderr
        summary = _summary(tmp_path)
        assert summary["spent_before_usd"] == pytest.approx(spent, abs=1e-8) and summary["spent_usd"] == 0


def test_a_resume_takes_an_honest_lower_cost_beside_a_higher_one(tmp_path: Path) -> None:
    # out-121 F5: with one lookup above what its row held, an honest one below it was refused as
    # if it took the count under what the key showed: the raise was left out of the comparison.
    reply = {k: v for k, v in chat_payload().items() if k != "usage"}
    billed = {"n": 0}

    def chat(request: RawRequest) -> bytes:
        billed["n"] += 1
        return json_answer(200, {**reply, "id": f"gen-{request.headers['x-batchrun-row']}"})

    server = HostileServer(chat=chat)
    server.routes["/generation"] = lambda request: json_answer(404, {"error": {"code": 404, "message": "not found"}})
    first = run(server, tmp_path, "--budget", "1")
    held = {r["generation_id"]: r["cost_held"] for r in first.rows}
    dear, *cheap = sorted(held)
    bill = {gid: (held[gid] * 3 if gid == dear else held[gid] / 4) for gid in held}
    # What the key saw over the run: what those rows really cost.
    summary = _summary(tmp_path)
    summary["runs"][0]["key_usage_at_start"], summary["runs"][0]["key_usage_at_end"] = 0.0, sum(bill.values())
    (tmp_path / "out.summary.json").write_text(json.dumps(summary))
    server.routes["/generation"] = lambda request: json_answer(
        200, {"data": {"id": request.path.split("id=")[1], "total_cost": bill[request.path.split("id=")[1]]}}
    )
    again = run(server, tmp_path, "--resume", "--budget", "1")
    assert "were not taken" not in again.stderr, again.stderr
    assert {r["generation_id"]: r["cost"] for r in again.rows} == pytest.approx(bill)


def test_a_resume_killed_after_its_lookups_is_no_edit_to_the_next(tmp_path: Path) -> None:
    # out-117 F6: a resume appended the rows whose costs it looked up, then was killed before its
    # summary: the next resume warned "records edited since" and counted the old, held figure.
    server = _unknown_costs()
    first = run(server, tmp_path, "--budget", "1")
    held = _summary(tmp_path)["total"]["cost_held_usd"]
    before, written = (tmp_path / "out.summary.json").read_bytes(), (tmp_path / "out.jsonl").read_bytes()
    server.routes["/generation"] = lambda request: json_answer(
        200, {"data": {"id": request.path.split("id=")[1], "total_cost": 0.000005}}
    )
    assert "were looked up" in run(server, tmp_path, "--resume", "--budget", "1").stderr
    looked_up = (tmp_path / "out.jsonl").read_bytes()
    # As a kill -9 before its summary leaves it: the summary of before, marked where the lookups'
    # records end; their lines are no edit (out-163 F1). A pre-flight refused after them leaves it so.
    (tmp_path / "out.jsonl").write_bytes(written)
    (tmp_path / "out.summary.json").write_bytes(before)
    models = server.routes.pop("/models", None)
    server.routes["/models"] = lambda request: json_answer(200, {"data": []})
    refused = run(server, tmp_path, "--resume", "--budget", "1")
    assert refused.code != ExitCode.OK and "were looked up" in refused.stderr, refused.stderr
    assert len(written) < _summary(tmp_path)["results_looked_up"]["bytes"] == len(looked_up)
    assert call_cli("report", tmp_path / "out.jsonl")[0] in (ExitCode.OK, ExitCode.QUALITY)
    if models is None:
        del server.routes["/models"]
    else:
        server.routes["/models"] = models
    third = run(server, tmp_path, "--resume", "--budget", "1")
    assert third.code == ExitCode.OK and "edited since" not in third.stderr, third.stderr
    assert _summary(tmp_path)["spent_before_usd"] == pytest.approx(0.000005 * len(first.rows))
    # A record the summary saw that is gone is still told, whatever was appended after it.
    lines = looked_up.splitlines(keepends=True)
    (tmp_path / "out.jsonl").write_bytes(b"".join(lines[1:]))
    (tmp_path / "out.summary.json").write_bytes(before)
    fourth = run(server, tmp_path, "--resume", "--budget", "1")
    assert "changed after its summary was written (records edited since)" in fourth.stderr, fourth.stderr
    assert _summary(tmp_path)["spent_before_usd"] == pytest.approx(held, abs=1e-8)


class Killed(BaseException):
    """A kill -9 at a chosen moment: nothing after it runs, no handler sees it."""


def test_a_resume_killed_while_its_lookups_wrote_is_no_edit_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # out-165 F5: killed after its looked-up records were written, before the summary said where
    # they end, the file was "appended by hand": exit 12, and every later resume carried it on.
    server = _unknown_costs()
    run(server, tmp_path, "--budget", "1")
    server.routes["/generation"] = lambda request: json_answer(
        200, {"data": {"id": request.path.split("id=")[1], "total_cost": 0.000005}}
    )
    sealing = seal_looked_up

    def killed_at_the_seal(output: Path, done: bool) -> None:
        if done:
            raise Killed
        sealing(output, done)

    monkeypatch.setattr(earlier_costs, "seal_looked_up", killed_at_the_seal)
    before = (tmp_path / "out.jsonl").stat().st_size
    with pytest.raises(Killed):
        run(server, tmp_path, "--resume", "--budget", "1")
    assert (tmp_path / "out.jsonl").stat().st_size > before  # the looked-up records are in
    assert _summary(tmp_path)["results_looked_up"]["from"] == before
    monkeypatch.setattr(earlier_costs, "seal_looked_up", sealing)
    code, _, err = call_cli("report", tmp_path / "out.jsonl")
    assert code != ExitCode.INCOMPLETE and "appended" not in err, err
    again = run(server, tmp_path, "--resume", "--budget", "1")
    assert again.code == ExitCode.OK and "edited" not in again.stderr, again.stderr
    assert "results_edited" not in _summary(tmp_path)


@pytest.mark.parametrize("budget", [True, False], ids=["budget", "no-budget"])
def test_costs_a_resume_learns_above_their_worst_case_are_said_and_past_the_budget_are_exit_5(
    tmp_path: Path, budget: bool
) -> None:
    # out-117 F4: /generation said $5,000 at a resume for rows an earlier run held at their worst
    # cases (~$0.00002): counted, the file "spent $30,000" of a $1 budget, with no warning and exit 0.
    # The key's usage shows those charges (else they are not taken: out-120 F4).
    reply = {k: v for k, v in chat_payload().items() if k != "usage"}
    server = HostileServer(
        chat=lambda request: json_answer(200, {**reply, "id": f"gen-{request.headers['x-batchrun-row']}"}),
        key=lambda request: json_answer(
            200,
            {"data": {"label": "k", "limit": None, "limit_remaining": None, "usage": 5000.0 * len(server.chat_rows())}},
        ),
    )
    server.routes["/generation"] = lambda request: json_answer(404, {"error": {"code": 404, "message": "not found"}})
    limit = ("--budget", "1") if budget else ()
    first = run(server, tmp_path)
    assert first.code == ExitCode.OK and {r["cost_status"] for r in first.rows} == {"unknown"}, first.stderr
    held = _summary(tmp_path)["total"]["cost_held_usd"]
    server.routes["/generation"] = lambda request: json_answer(
        200, {"data": {"id": request.path.split("id=")[1], "total_cost": 5000.0}}
    )
    again = run(server, tmp_path, "--resume", *limit)
    rows = len(first.rows)
    said = f"warning: {tmp_path / 'out.jsonl'}: {rows} of the rows looked up cost more than the worst case held"
    assert f"{said} (e.g. $5000.000000 for $" in again.stderr
    summary = _summary(tmp_path)
    assert summary["spent_before_usd"] == pytest.approx(5000.0 * rows)
    if budget:
        assert again.code == ExitCode.BUDGET, again.stderr
        assert summary["spent_past_budget_usd"] == pytest.approx(5000.0 * rows - 1)
        said = f"earlier runs of this file spent ${5000.0 * rows:.6f}, over the budget of $1.000000 by $"
        assert said in again.stderr
        # out-120 F2: and by every resume after, nothing left to look up (a retry went green), until
        # the budget holds what was spent.
        later = run(server, tmp_path, "--resume", *limit)
        assert later.code == ExitCode.BUDGET and said in later.stderr
        assert _summary(tmp_path)["spent_past_budget_usd"] == pytest.approx(5000.0 * rows - 1)
        assert run(server, tmp_path, "--resume", "--budget", str(5000.0 * rows + 1)).code == ExitCode.OK
    else:  # no budget to pass: counted and said, nothing more
        assert again.code == ExitCode.OK and "spent_past_budget_usd" not in summary
    assert held < 0.01


@pytest.mark.parametrize("found", [True, False])
def test_a_cost_check_is_undecided_while_the_cost_is_unknown_and_graded_again_once_it_is_learnt(
    tmp_path: Path, found: bool
) -> None:
    # break66 F1: each row's first attempt is cut short after it was billed; the second answers
    # right for $0.00001. `max_cost_usd` failed every row "got $None": exit 3 on right,
    # cheap answers; and the row written again with its cost learnt late kept that failure.
    ids, tried = iter(f"gen-c{n}" for n in range(100)), set()

    def chat(request: RawRequest) -> bytes:
        row = request.headers.get("x-batchrun-row", "")
        if row not in tried:
            tried.add(row)
            return _cut(next(ids))
        return json_answer(200, chat_payload())

    server = HostileServer(chat=chat)
    never = lambda request: json_answer(404, {"error": {"code": 404, "message": "Generation not found"}})  # noqa: E731
    server.routes["/generation"] = known_late(0.000005) if found else never
    # Held while unknown, at most $0.000039 (the answer, the cut attempt's worst case): above the
    # limit, so undecided (a bound under it would pass it); learnt, $0.000015: under it.
    job = (
        JOB.replace("max_attempts: 1", "max_attempts: 2")
        .replace("    vars:", "    checks: [{max_cost_usd: 0.00003}]\n    vars:")
        .replace("run: {", "run: {pass_threshold: 1.0, ")
    )
    outcome = run(server, tmp_path, job=job)
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    for first in lines[:4]:  # as written: the cost not known yet
        assert first["cost"] is None and first["passed"] is None
        assert first["checks"][0]["error"] == "not graded: the answer's cost is not known"
    if found:
        assert len(lines) == 8 and all(again["cost_resolved_at"] for again in lines[4:])
        assert {(r["passed"], r["checks"][0]["pass"]) for r in outcome.rows} == {(True, True)}
        assert outcome.code == ExitCode.OK
    else:
        assert len(lines) == 4 and {r["passed"] for r in outcome.rows} == {None}
        assert outcome.code != ExitCode.QUALITY  # undecided, not a quality failure


@pytest.mark.parametrize("tokens", [True, False])
def test_a_stream_without_its_usage_chunk_takes_its_token_counts_from_the_lookup(tmp_path: Path, tokens: bool) -> None:
    # break66 F2: the stream ended with no usage chunk; /generation, asked for the cost, had the
    # token counts, yet every max_tokens check failed "got None" (pass rate 0%).
    def chat(request: RawRequest) -> bytes:
        gid = new_generation_id()
        return _sse(
            {"id": gid, "choices": [{"index": 0, "delta": {"content": "Paris"}}]},
            {"id": gid, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        )

    counts = {"native_tokens_prompt": 9, "native_tokens_completion": 1} if tokens else {}
    server = HostileServer(chat=chat)
    server.routes["/generation"] = lambda r: json_answer(
        200, {"data": {"id": asked_generation(r), "total_cost": 0.00002, **counts}}
    )
    job = JOB.replace("    vars:", "    checks: [{max_tokens: 5}]\n    vars:")
    outcome = run(server, tmp_path, "--stream", job=job)
    # Undecided rows share the error tolerance (0 here): exit 1 when no count came, never 3.
    assert outcome.code == (ExitCode.OK if tokens else ExitCode.ERRORS), outcome.stderr
    for row in outcome.rows:
        assert (row["cost"], row["cost_status"]) == (0.00002, "looked_up")
        if tokens:
            assert row["usage"] == {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}
            assert row["passed"] is True
        else:  # nothing to decide it on: undecided, never a failure
            assert row["passed"] is None and row["checks"][0]["error"].startswith("not graded: the endpoint reported")


def test_an_estimated_cost_is_looked_up_again_at_the_end_and_its_row_written_again(tmp_path: Path) -> None:
    # break66 F5: a reply without usage.cost, its /generation 404 at first (it lags the answer):
    # the row kept its estimate (an upper bound, 6.7x the charge here) for good.
    def chat(request: RawRequest) -> bytes:
        answer = chat_payload()
        del answer["usage"]["cost"]
        return json_answer(200, answer)

    server = HostileServer(chat=chat)
    server.routes["/generation"] = known_late(0.000001)
    outcome = run(server, tmp_path)
    assert outcome.code == ExitCode.OK, outcome.stderr
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(lines) == 8 and {r["cost_status"] for r in lines[:4]} == {"estimated"}
    for first, again in zip(lines[:4], lines[4:], strict=True):
        assert again["id"] == first["id"] and again["cost_resolved_at"] and again["resolves"] == first["spent"]
        assert (again["cost"], again["cost_status"]) == (0.000001, "looked_up") and first["cost"] > 0.000001
    summary = _summary(tmp_path)
    assert summary["total"]["cost_usd"] == pytest.approx(4 * 0.000001)
    assert summary["spent_usd"] == pytest.approx(4 * 0.000001)


def test_grader_costs_found_after_the_rows_were_written_are_appended_with_the_rows(tmp_path: Path) -> None:
    """break14h H8: each grader request is cut short (maybe billed), /generation knows it only at
    the end-of-run lookups. The rows kept `judge_cost: null` and their graders' worst cases in
    `spent`, though the summary said they were written again. Each is now appended again with
    its grading's cost looked up, and `spent` moves to it."""
    ids = iter(f"gen-j{n}" for n in range(100))

    def chat(request: RawRequest) -> bytes:
        if "rubric" in request.body.decode():  # a grader's request
            return _cut(next(ids))
        return json_answer(200, chat_payload())  # the answer, $0.00001

    server = HostileServer(chat=chat)
    server.routes["/generation"] = known_late(0.0002)
    job = JOB.replace("prompts:", "judge: {model: openai/gpt-4o-mini}\nprompts:").replace(
        "    vars:", "    checks: [{judge: 'Right.'}]\n    vars:"
    )
    outcome = run(server, tmp_path, job=job, row_of=lambda label: label.split(".")[0])
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(lines) == 8 and [r["judge_cost_status"] for r in lines[:4]] == ["unknown"] * 4
    for first, again in zip(lines[:4], lines[4:], strict=True):
        assert again["id"] == first["id"] and again["resolves"] == first["spent"] and again["cost_resolved_at"]
        assert (again["judge_cost"], again["judge_cost_status"]) == (pytest.approx(0.0002), "looked_up")
        assert again["spent"] == pytest.approx(0.00001 + 0.0002) and again["spent"] < first["spent"]
        assert (again["cost"], again["cost_status"]) == (first["cost"], first["cost_status"])  # the answer's
    assert {r["judge_cost_status"] for r in outcome.rows} == {"looked_up"}
    assert scan_states(tmp_path / "out.jsonl").spent_usd == pytest.approx(4 * 0.00021)


def test_a_byok_charge_found_after_the_row_was_written_counts_its_upstream_cost(tmp_path: Path) -> None:
    # Verification of the break14h fixes (N13): an attempt cut short (maybe billed) whose BYOK
    # generation was found at the end: its fee ($0) was its cost, the upstream $0.012 lost, and
    # the resume spent the budget again.
    ids = iter(f"gen-b{n}" for n in range(100))
    server = HostileServer(chat=lambda request: _cut(next(ids)))
    server.routes["/generation"] = known_late(0.0, is_byok=True, upstream_inference_cost=0.012)
    outcome = run(server, tmp_path)
    assert {r["cost_status"] for r in outcome.rows} == {"looked_up"}
    assert all(r["spent"] == pytest.approx(0.012) for r in outcome.rows)
    assert scan_states(tmp_path / "out.jsonl").spent_usd == pytest.approx(len(outcome.rows) * 0.012)
    assert f"after their rows were written: ${len(outcome.rows) * 0.012:.6f}" in outcome.stdout


def test_a_byok_graders_upstream_cost_is_in_judge_cost_and_every_table(tmp_path: Path) -> None:
    # Verification of the break14h fixes (K10): a grader answering as BYOK (fee 0, upstream $0.012)
    # was counted by the budget but its judge_cost was the fee: the tables showed half the charge.
    byok = {**USAGE, "cost": 0.0, "is_byok": True, "cost_details": {"upstream_inference_cost": 0.012}}

    def chat(request: RawRequest) -> bytes:
        if "rubric" in request.body.decode():
            return json_answer(200, chat_payload('{"pass": true, "score": 1, "reason": "ok"}', usage=byok))
        return json_answer(200, chat_payload())  # the answer, $0.00001

    job = JOB.replace("prompts:", "judge: {model: openai/gpt-4o-mini}\nprompts:").replace(
        "    vars:", "    checks: [{judge: 'Right.'}]\n    vars:"
    )
    outcome = run(HostileServer(chat=chat), tmp_path, job=job, row_of=lambda label: label.split(".")[0])
    assert all(r["judge_cost"] == pytest.approx(0.012) for r in outcome.rows)
    assert all(r["spent"] == pytest.approx(0.01201) for r in outcome.rows)
    code, text, _ = call_cli("report", tmp_path / "out.jsonl", "--json")
    assert json.loads(text)["total"]["cost_usd"] == pytest.approx(len(outcome.rows) * 0.01201)


def test_costs_found_after_the_rows_were_written_are_appended_as_the_rows_again(tmp_path: Path) -> None:
    """break-14 #20: each row's lookup finds nothing yet (404), the end-of-run lookups find
    them all: each row is appended again with its cost (the first record is never changed),
    and every reader takes the row as that last record."""
    ids = iter(f"gen-{n}" for n in range(100))

    server = HostileServer(chat=lambda request: _cut(next(ids)))
    server.routes["/generation"] = known_late(0.0001)
    outcome = run(server, tmp_path)
    out = tmp_path / "out.jsonl"
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 8 and [r["cost_status"] for r in lines[:4]] == ["unknown"] * 4
    for first, again in zip(lines[:4], lines[4:], strict=True):
        assert again["id"] == first["id"] and again["cost_resolved_at"] and again["resolves"] == first["spent"]
        assert again["cost"] == again["spent"] == pytest.approx(0.0001) and again["cost_status"] == "looked_up"
        assert again["cost_held"] is None and again["abandoned_attempts"][0]["cost_status"] == "looked_up"
        assert {k: v for k, v in again.items() if not k.startswith(("cost", "spent", "resolves", "abandoned"))} == {
            k: v for k, v in first.items() if not k.startswith(("cost", "spent", "abandoned"))
        }
    assert {r["cost_status"] for r in outcome.rows} == {"looked_up"}
    summary = _summary(tmp_path)
    rec = summary["reconciliation"]
    assert rec["unknown_cost_attempts"] == 0 and rec["resolved_after_record_attempts"] == 4
    assert rec["resolved_after_record_usd"] == pytest.approx(0.0004)
    assert summary["total"]["cost_unknown_rows"] == 0 and summary["total"]["cost_held_usd"] == 0
    line = "4 attempt(s) recorded with an unknown cost were looked up after their rows were written: $0.000400"
    assert line in outcome.stdout and "(their rows were written again with it; 0 row(s) still have" in outcome.stdout
    # Every reader sees the looked-up cost: report, and resume's count of what the file spent.
    code, report, _ = call_cli("report", out, "--json")
    assert code == ExitCode.OK and json.loads(report)["total"]["cost_unknown_rows"] == 0
    assert scan_states(out).spent_usd == pytest.approx(0.0004)
    assert [r["status"] for r in final_records(out)] == ["error"] * 4
    # A merge keeps the last records alone: nothing left for `resolves` to replace.
    merged = tmp_path / "merged.jsonl"
    call_cli("merge", merged, out)
    assert scan_states(merged).spent_usd == pytest.approx(0.0004) and len(read_rows(merged)) == 4
    assert not any("resolves" in r for r in read_rows(merged))


async def _never(writer: Any) -> None:
    """A route that accepts the request and never answers."""
    await asyncio.Event().wait()


def _looked_up(
    generation: Callable[[RawRequest], Any], rows: int = ROWS, concurrency: int = 2
) -> tuple[HostileServer, str]:
    """A server whose answers carry no usage (each is looked up), its /generation answered by
    `generation`; and the job of `rows` rows run `concurrency` at a time."""

    def chat(request: RawRequest) -> bytes:
        answer = chat_payload("Paris")  # its own generation id
        del answer["usage"]
        return json_answer(200, answer)

    server = HostileServer(chat=chat, routes={"/generation": generation})
    countries = ", ".join(f"{{country: C{i}}}" for i in range(rows))
    job = JOB.replace("{country: France}, {country: Japan}, {country: Italy}, {country: Spain}", countries)
    return server, job.replace("concurrency: 2", f"concurrency: {concurrency}")


@pytest.fixture
def quick_lookups(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Each lookup given up after 50 ms (ROW_LOOKUP_S) instead of 10 s."""
    import batchrun._charges as charges

    monkeypatch.setattr(charges, "ROW_LOOKUP_S", 0.05)
    return charges


def test_a_generation_lookup_that_never_answers_holds_no_worker_for_its_timeout(
    tmp_path: Path, quick_lookups: Any
) -> None:
    # break36 F4: answers without usage are looked up at once; a /generation that never
    # answered held each worker timeout_s a row: with --deadline, 4 rows of 100 answered.
    server, job = _looked_up(lambda request: _never)
    # timeout_s 30: a worker held for it would let 2 rows of 4 answer before the 5 s deadline.
    outcome = run(server, tmp_path, "--timeout", "30", "--deadline", "5", "--grace", "0.5", job=job)
    assert [r["status"] for r in outcome.rows].count("ok") == ROWS, outcome.stderr
    assert {r["cost_status"] for r in outcome.rows} == {"unknown"}  # held, as a lookup that fails leaves it


def test_lookups_that_stall_are_given_up_for_the_rest_of_the_run(tmp_path: Path, quick_lookups: Any) -> None:
    # break36 F4: each row's lookup waited its ROW_LOOKUP_S on a /generation that never answered,
    # and each refresh's and the end's lookups too: 100 rows took 3.5 minutes instead of 2 seconds.
    # After STALLED_LOOKUPS of them in a row, rows and refreshes wait on none; the end tries one.
    server, job = _looked_up(lambda request: _never, rows=16)
    outcome = run(server, tmp_path, job=job)
    lookups = [r for r in server.requests if "/generation" in r.path]
    assert [r["status"] for r in outcome.rows].count("ok") == 16, outcome.stderr
    assert {r["cost_status"] for r in outcome.rows} == {"unknown"}  # held, as a lookup that fails leaves it
    # The stalls that show it (two workers at once may each start one more), then the end's one try.
    assert len(lookups) <= quick_lookups.STALLED_LOOKUPS + 2 + 1, len(lookups)


def test_a_lookup_that_stalls_comes_back_when_it_answers_again(tmp_path: Path, quick_lookups: Any) -> None:
    # Given up after the stalls, /generation is tried once at the run's end: when it answers
    # then, every cost still held is looked up.
    asked: list[str] = []

    def generation(request: RawRequest) -> Any:
        asked.append(request.path)
        if len(asked) <= quick_lookups.STALLED_LOOKUPS:
            if len(asked) == quick_lookups.STALLED_LOOKUPS:
                # The lookups that answer get the time a busy machine needs (50 ms was timing
                # luck: one given up under load left a cost unknown); this one is already asked.
                quick_lookups.ROW_LOOKUP_S = 10.0
            return _never
        return json_answer(200, {"data": {"id": request.path.split("id=")[1], "total_cost": 0.0001}})

    server, job = _looked_up(generation, rows=6, concurrency=1)
    outcome = run(server, tmp_path, job=job)
    assert {r["cost_status"] for r in outcome.rows} == {"looked_up"}, outcome.stderr
    # Three rows stalled, three went on without asking; at the end every one of the six is asked.
    assert len(asked) == quick_lookups.STALLED_LOOKUPS + 6


def test_a_lookup_that_hangs_holds_no_connection_a_chat_request_needs() -> None:
    # break36 F4: lookups shared the chat requests' pool; an answer that waited for a connection
    # ran out its time once sent, was held as maybe billed and sent again (3 of 100 rows billed
    # twice). The account endpoints have a pool of their own: with one chat connection, a chat
    # request is answered while a lookup holds its connection.
    from batchrun import OpenRouterClient

    server, _ = _looked_up(lambda request: _never)

    async def chat_during_a_hung_lookup() -> tuple[str, bool]:
        async with OpenRouterClient(server.base_url, FAKE_KEY, max_connections=1, timeout_s=5) as client:
            lookup = asyncio.ensure_future(client.generation("gen-1"))
            while not any("/generation" in r.path for r in server.requests):  # it holds a connection now
                await asyncio.sleep(0.01)
            result = await client.chat({"model": "openai/gpt-4o-mini", "messages": []})
            waiting = not lookup.done()
            lookup.cancel()
            return result.content, waiting

    with server.running():
        text, lookup_waiting = asyncio.run(chat_during_a_hung_lookup())
    assert text == "Paris" and lookup_waiting


def test_a_worst_case_past_a_trillion_dollars_counts_as_one(tmp_path: Path) -> None:
    # break36 F6: a /models price of 1e300 a token wrote `estimate_usd: 1.7853e+16` (the README:
    # money figures above $10^12 count as $10^12); nothing was sent, as it should.
    huge = {"openai/gpt-4o-mini": {"pricing": {"prompt": "1e300", "completion": "1e300", "request": "0"}}}
    server = HostileServer(
        chat=lambda request: json_answer(200, chat_payload()), models=lambda r: json_answer(200, models_payload(huge))
    )
    outcome = run(server, tmp_path, "--budget", "0.02", "-q")
    assert outcome.code == ExitCode.BUDGET and server.chat_rows() == []
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["estimate_usd"] == 1e12


def test_a_resume_looks_up_nothing_on_a_records_cost_fields_that_are_not_figures() -> None:
    # A hand-edited or foreign record: an abandoned attempt's cost "abc", a grader's doubted figures
    # missing or booleans, a check that is not an object. Never a traceback at a resume: not due.
    from batchrun._earlier_costs import _due
    from batchrun._scrub import Scrubber

    scrub = Scrubber()
    doubted_entry = {"generation_id": "gen-2", "cost": "abc", "cost_status": "reported", "cost_doubted": True}
    record: dict[str, Any] = {"id": "r", "cost": 1.0, "cost_status": "reported", "generation_id": "gen-1"}
    assert _due({**record, "abandoned_attempts": [doubted_entry]}, scrub) is None
    assert _due({**record, "cost": True, "cost_doubted": True}, scrub) is None
    grader = {"generation_id": "gen-3", "cost": 1.0, "cost_doubted": True, "doubted_cost": True, "doubted_charged": 1}
    checks = [{"judge": {"graders": [grader, "x"]}}, "not a check", {"judge": []}]
    assert _due({**record, "judge_cost": 1.0, "checks": checks}, scrub) is None
    grader["doubted_cost"] = 1.0
    due = _due({**record, "judge_cost": 1.0, "checks": checks}, scrub)
    assert due is not None and due.graders == [(0, 0, "gen-3")] and due.answer is None


def test_held_worst_cases_are_looked_up_before_a_reservation_with_no_room_stops_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # out-124 F1: attempts cut mid-answer (maybe billed) held their worst cases, looked up only
    # once their rows ended; the retries found no room and the run stopped for budget (exit 5,
    # rows skipped) with a third of it left ($0.31 of $0.50).
    unknown = HostileServer(chat=lambda request: _cut(new_generation_id()))
    unknown.routes["/generation"] = lambda request: json_answer(404, {"error": {"code": 404, "message": "not found"}})
    worst = run(unknown, tmp_path / "worst").rows[0]["cost_held"]  # one attempt's worst case, held
    cost, rows, cuts = worst / 6, 30, 3
    tries: Counter[str] = Counter()

    def chat(request: RawRequest) -> bytes:
        tries[row := request.headers["x-batchrun-row"]] += 1
        if tries[row] <= cuts:
            return _cut(new_generation_id())
        return json_answer(200, chat_payload(usage={**USAGE, "cost": cost}))

    server = HostileServer(chat=chat)
    server.routes["/generation"] = lambda request: json_answer(
        200, {"data": {"id": asked_generation(request), "total_cost": cost}}
    )
    job = (
        JOB.replace("max_attempts: 1", f"max_attempts: {cuts + 1}")
        .replace(
            "vars: [{country: France}, {country: Japan}, {country: Italy}, {country: Spain}]",
            "vars: [" + ", ".join(f"{{country: c{n}}}" for n in range(rows)) + "]",
        )
        .replace("concurrency: 2", "concurrency: 4, key_refresh_s: 100000")  # no read by the fake clock's leaps
    )
    spent = rows * (cuts + 1) * cost
    FakeClock().patch_system_clock(monkeypatch)  # the retries' backoff, not waited out
    outcome = run(server, tmp_path / "run", "--budget", f"{spent * 1.4:.12f}", job=job)
    assert outcome.code == ExitCode.OK, outcome.stderr
    assert [r["status"] for r in outcome.rows] == ["ok"] * rows
    assert _summary(tmp_path / "run")["spent_usd"] == pytest.approx(spent)
