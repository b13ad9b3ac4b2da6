"""Cost truth against a server that lies (break-14): generation ids that carry the key,
`/generation` replies about another generation, BYOK answers without their upstream cost,
provider names that echo the key in `plan`.

Each run goes through test_hostile's `run` and its `check`:
no traceback, every row once, no key nor a 16-character fragment of one anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchrun import ExitCode

from .conftest import FAKE_KEY, call_cli, write_job
from .hostile import HostileServer, RawRequest, chat_payload, http, json_answer
from .test_hostile import JOB, MGMT_KEY, environment, fragments, run

__all__ = ["environment"]  # the autouse fixture: the keys and the step summary in the environment

USAGE = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}


def _cut(generation_id: str) -> bytes:
    """A 200 whose JSON body is cut short: generated, so maybe billed (held, looked up)."""
    return http(200, b'{"id": "gen-', {"Content-Type": "application/json", "X-Generation-Id": generation_id})


def _sse(*chunks: dict[str, Any], headers: dict[str, str] | None = None) -> bytes:
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    return http(200, body, {"Content-Type": "text/event-stream", **(headers or {})})


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
    server = HostileServer(chat=lambda request: _cut("gen-abc123"))
    server.routes["/generation"] = lambda request: json_answer(200, {"data": data})
    outcome = run(server, tmp_path)
    assert any("/generation?id=gen-abc123" in r.path for r in server.requests)
    for row in outcome.rows:
        # Not "looked_up at $0": the worst case stays held, the cost unknown.
        [attempt] = row["abandoned_attempts"]
        assert attempt == {"generation_id": "gen-abc123", "cost": None, "cost_status": "unknown"}
        assert row["cost_unknown"] is True and row["cost_held"] > 0
    summary = _summary(tmp_path)
    assert summary["reconciliation"]["unknown_cost_attempts"] == len(outcome.rows)
    assert summary["spent_usd"] == pytest.approx(sum(r["cost_held"] for r in outcome.rows))


def test_a_generation_reply_about_the_asked_generation_resolves_it(tmp_path: Path) -> None:
    server = HostileServer(chat=lambda request: _cut("gen-abc123"))
    server.routes["/generation"] = lambda r: json_answer(200, {"data": {"id": "gen-abc123", "total_cost": 0.0002}})
    outcome = run(server, tmp_path)
    for row in outcome.rows:
        assert row["abandoned_attempts"][0]["cost_status"] == "looked_up" and row["cost"] == 0.0002


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
    assert _summary(tmp_path)["spent_usd"] == pytest.approx(len(outcome.rows) * 0.0000201)


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
    for secret in (FAKE_KEY, MGMT_KEY):
        assert not [f for f in fragments(secret) if f in printed]
