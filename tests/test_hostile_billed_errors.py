"""A 200 reply that is a failure may still be billed (break14b C4, C10).

zero-completion-insurance.mdx waives the model's tokens of a reply with no completion tokens
only; "auxiliary services that already ran before the response failed ... may still be billed
... When billed, these charges appear in the request's usage breakdown". Such a reply's cost is
charged, each retry reserves its own worst case, and one that generated tokens without saying
its cost is held like an abandoned attempt. They were all released as unbilled and retried:
every retry billed again, "spent $0.0000".
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from batchrun import RunOptions, load_job, run_job

from .conftest import FAKE_KEY, FakeClock, write_job
from .hostile import (
    JOB,
    HostileServer,
    RawRequest,
    asked_generation,
    chat_payload,
    http,
    json_answer,
    new_generation_id,
)

# Nothing waits here (a fake clock); a regression that does fails on the timeout.
pytestmark = [pytest.mark.usefixtures("keys_env"), pytest.mark.timeout(60)]

COST = 0.00002
USAGE = {"prompt_tokens": 10, "completion_tokens": 0, "total_tokens": 10, "cost": COST}
RETRIED = JOB.replace("max_attempts: 1", "max_attempts: 3, max_wait_s: 1")

FAILED_200S: dict[str, dict[str, Any]] = {
    "an error object, choices null": {
        "id": "gen-e1",
        "error": {"code": 502, "message": "upstream failed", "metadata": {"error_type": "server"}},
        "choices": None,
        "usage": USAGE,
    },
    "choices: []": {**chat_payload(usage=USAGE), "choices": []},
    "a choice with finish_reason error": chat_payload(
        usage=USAGE,
        choices=[{"index": 0, "finish_reason": "error", "message": {"role": "assistant", "content": ""}}],
    ),
    "null content with completion tokens": chat_payload(
        usage={**USAGE, "completion_tokens": 40},
        choices=[{"index": 0, "finish_reason": None, "message": {"role": "assistant", "content": None}}],
    ),
}


async def _run(tmp_path: Path, server: HostileServer, job: str, *, stream: bool = False) -> list[dict[str, Any]]:
    tmp_path.mkdir(exist_ok=True)
    loaded = load_job(write_job(tmp_path, job.replace("run: {", "run: {stream: true, ") if stream else job))
    with server.running():
        output = tmp_path / "o.jsonl"
        report = await run_job(
            loaded, RunOptions(api_key=FAKE_KEY, base_url=server.base_url, output=output, clock=FakeClock())
        )
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert len({r["id"] for r in rows}) == len(rows) == 4
    rows.append({"summary": report.summary})
    return rows


@pytest.mark.parametrize("reply", list(FAILED_200S))
async def test_a_failed_200_that_reports_a_cost_is_charged_on_every_attempt(tmp_path: Path, reply: str) -> None:
    server = HostileServer(chat=lambda request: json_answer(200, FAILED_200S[reply]))
    *rows, end = await _run(tmp_path, server, RETRIED)
    sent = len(server.chat_rows())
    assert sent == 4 * 3  # retried: each a new attempt, each billed
    for row in rows:
        assert row["status"] == "error" and row["attempts"] == 3
        assert row["cost"] == pytest.approx(3 * COST) and row["cost_status"] == "reported"
    assert end["summary"]["spent_usd"] == pytest.approx(sent * COST)


async def test_retries_of_billed_failures_each_reserve_so_a_budget_stops_them(tmp_path: Path) -> None:
    server = HostileServer(chat=lambda request: json_answer(200, FAILED_200S["choices: []"]))
    # $0.00005: the first attempts' worst cases fit, what they were charged leaves no room for
    # every retry; before, every retry went out on a reservation given back ("spent $0").
    job = RETRIED.replace("run: {", "run: {budget_usd: 0.00005, ")
    *rows, end = await _run(tmp_path, server, job)
    sent = len(server.chat_rows())
    assert sent < 4 * 3
    assert end["summary"]["spent_usd"] == pytest.approx(sent * COST)
    assert sent * COST <= 0.00005
    assert {r["reason"] for r in rows} >= {"budget"}
    assert sum(r["cost"] or 0 for r in rows) == pytest.approx(sent * COST)


async def test_an_empty_completion_with_completion_tokens_and_no_cost_is_held(tmp_path: Path) -> None:
    reply = FAILED_200S["null content with completion tokens"]
    reply = {**reply, "usage": {k: v for k, v in reply["usage"].items() if k != "cost"}}
    # Each reply its own generation id; no /generation: the cost stays unknown.
    server = HostileServer(chat=lambda request: json_answer(200, {**reply, "id": new_generation_id()}))
    *rows, end = await _run(tmp_path, server, JOB)
    for row in rows:
        assert row["cost"] is None and row["cost_status"] == "unknown" and row["cost_held"] > 0
        assert row["abandoned_attempts"][0]["generation_id"].startswith("gen-")
    assert end["summary"]["spent_usd"] == pytest.approx(sum(r["cost_held"] for r in rows))


async def test_an_empty_completion_without_tokens_is_still_free_and_retried(tmp_path: Path) -> None:
    """The insurance's own case: no completion tokens, no finish reason, no cost."""
    empty = chat_payload(
        usage={"prompt_tokens": 10, "completion_tokens": 0, "total_tokens": 10},
        choices=[{"index": 0, "finish_reason": None, "message": {"role": "assistant", "content": None}}],
    )
    server = HostileServer(chat=lambda request: json_answer(200, empty))
    *rows, end = await _run(tmp_path, server, RETRIED)
    assert {(r["reason"], r["cost"], r["cost_status"], r["attempts"]) for r in rows} == {
        ("empty_completion", 0.0, None, 3)
    }
    assert end["summary"]["spent_usd"] == 0.0


def _mid_stream_error(choices: list[Any], usage: dict[str, Any] | None = None) -> Any:
    def chat(request: RawRequest) -> bytes:
        error = {"code": "server_error", "message": "Provider disconnected"}
        gid = new_generation_id()
        chunks = [
            {"id": gid, "choices": [{"index": 0, "delta": {"content": "4"}}]},
            {"id": gid, "error": error, "choices": choices, **({"usage": usage} if usage else {})},
        ]
        body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
        return http(200, body, {"Content-Type": "text/event-stream"})

    return chat


ERROR_CHOICE = [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]


async def test_a_mid_stream_error_with_its_error_finish_reason_is_waived_unless_it_reports_a_cost(
    tmp_path: Path,
) -> None:
    """streaming.mdx's error event ends with finish_reason "error": the insurance waives the
    tokens streamed (the simulator's case, tests/test_stream.py); a cost it reports is charged."""
    *rows, end = await _run(tmp_path / "a", HostileServer(chat=_mid_stream_error(ERROR_CHOICE)), JOB, stream=True)
    assert {(r["cost"], r["cost_status"]) for r in rows} == {(0.0, None)}
    server = HostileServer(chat=_mid_stream_error(ERROR_CHOICE, USAGE))
    *rows, end = await _run(tmp_path / "b", server, JOB, stream=True)
    assert {(r["cost"], r["cost_status"]) for r in rows} == {(COST, "reported")}
    assert end["summary"]["spent_usd"] == pytest.approx(4 * COST)


async def test_a_mid_stream_error_after_tokens_without_its_finish_reason_is_looked_up(tmp_path: Path) -> None:
    server = HostileServer(chat=_mid_stream_error([]))
    server.routes["/generation"] = lambda r: json_answer(200, {"data": {"id": asked_generation(r), "total_cost": COST}})
    *rows, end = await _run(tmp_path, server, JOB, stream=True)
    for row in rows:
        assert row["status"] == "error" and row["cost"] == COST and row["cost_status"] == "looked_up"
    assert end["summary"]["spent_usd"] == pytest.approx(4 * COST)


async def test_the_budget_stop_says_what_was_left_when_the_retry_did_not_fit(tmp_path: Path) -> None:
    """break14b m2: the stop line was written after a lookup had resolved the held attempt,
    so it said "needs up to $X, $Y is left" with Y above X. The figure is what was left when
    the retry's reservation did not fit."""
    cut = http(200, b'{"id": "gen-', {"Content-Type": "application/json", "X-Generation-Id": "gen-c1"})
    server = HostileServer(chat=lambda request: cut)  # a 200 cut short: held, then looked up
    server.routes["/generation"] = lambda r: json_answer(200, {"data": {"id": "gen-c1", "total_cost": 0.000001}})
    # One worst case ($0.000029) fits, not two: the retry after the held attempt does not.
    job = RETRIED.replace("run: {concurrency: 2", "run: {concurrency: 1, budget_usd: 0.00004")
    *rows, end = await _run(tmp_path, server, job)
    message = end["summary"]["stop_message"]
    needed, left = (float(x) for x in re.findall(r"\$([0-9.]+)", message)[:2])
    assert "needs up to" in message and left < needed, message
