"""A hostile or broken server never crashes a run, leaks a key, or makes a row vanish (issue 11).

Each case runs the CLI against `tests/hostile.py` (raw sockets on 127.0.0.1) and checks the
same things: no traceback, the documented exit code, every dispatched row recorded exactly
once, and no key, nor any 16-character fragment of one, in any output (results,
summary.json, the step summary, stdout, stderr). Peak memory is measured in
`bench/hostile_memory.py`, not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

import batchrun._orchestration
from batchrun import ExitCode, RunOptions, load_job, run_job
from batchrun._output_paths import summary_path
from batchrun.simulator import Simulator

from .conftest import FAKE_KEY, SMALL_JOB, FakeClock, call_cli, exec_cli, write_job
from .hostile import (
    JOB,
    ROWS,
    HostileServer,
    RawRequest,
    assert_no_key_in,
    chat_payload,
    check,
    gzip_bomb,
    http,
    json_answer,
    models_payload,
    run,
    streamed,
)

pytestmark = pytest.mark.usefixtures("keys_env")


def answer(payload: Any, status: int = 200) -> HostileServer:
    return HostileServer(chat=lambda request: json_answer(status, payload))


# -- memory: the cap on response bytes --------------------------------------------------------
def test_a_gzip_bomb_is_cut_at_the_cap_and_not_retried(tmp_path: Path) -> None:
    bomb = gzip_bomb(64 << 20)  # 64 MiB of zeros in about 64 KB
    server = HostileServer(chat=lambda r: http(200, bomb, {"Content-Encoding": "gzip"}))
    outcome = run(
        server, tmp_path, "--max-response-bytes", "1048576", job=JOB.replace("max_attempts: 1", "max_attempts: 3")
    )
    assert outcome.code == ExitCode.ERRORS
    assert outcome.kinds() == {"response_too_large"} and len(outcome.rows) == ROWS
    assert all(r["attempts"] == 1 and r["retryable"] is False for r in outcome.rows)
    assert "1,048,576-byte cap" in outcome.rows[0]["error"]["message"]


def test_a_huge_plain_body_drops_the_connection(tmp_path: Path) -> None:
    server = HostileServer(chat=lambda r: b"")
    total = 256 << 20
    server.chat = lambda r: streamed(200, total, b"x" * (1 << 20), {"Content-Type": "application/json"}, server)
    outcome = run(server, tmp_path, "--max-response-bytes", "65536")
    assert outcome.code == ExitCode.ERRORS and outcome.kinds() == {"response_too_large"}
    assert len(outcome.rows) == ROWS
    # The client left long before the end: the server could not send the rest.
    assert server.aborted == ROWS and max(server.body_bytes_sent) < total


def test_a_declared_length_over_the_cap_is_refused_before_reading(tmp_path: Path) -> None:
    server = HostileServer(chat=lambda r: b"")
    server.chat = lambda r: streamed(200, 64 << 20, b"y" * (1 << 20), {"Content-Length": str(64 << 20)}, server)
    outcome = run(server, tmp_path, "--max-response-bytes", "65536")
    assert outcome.kinds() == {"response_too_large"}
    assert "declared 67,108,864 bytes" in outcome.rows[0]["error"]["message"]


def test_a_finished_answer_over_the_cap_may_be_billed_so_its_worst_case_is_held(tmp_path: Path) -> None:
    """A 200 answer too large to read was generated all the same: not "nothing billed"
    (cost 0) but an unknown cost with the worst case held, so the budget stops the run."""
    outcome = run(answer(chat_payload("Q" * 20000)), tmp_path, "--max-response-bytes", "8192", "--budget", "1")
    assert outcome.kinds() == {"response_too_large"}
    for row in outcome.rows:
        assert row["cost"] is None and row["cost_status"] == "unknown" and row["spent"] > 0
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["spent_usd"] == pytest.approx(sum(r["spent"] for r in outcome.rows)) and summary["spent_usd"] > 0


def test_an_error_reply_over_the_cap_cost_nothing(tmp_path: Path) -> None:
    error = {"error": {"code": 400, "message": "E" * 20000}}
    outcome = run(answer(error, status=400), tmp_path, "--max-response-bytes", "8192")
    assert outcome.kinds() == {"response_too_large"}
    assert all(r["cost"] == 0.0 and r["cost_status"] is None and r["spent"] == 0.0 for r in outcome.rows)


def test_an_answer_within_the_cap_is_kept(tmp_path: Path) -> None:
    server = answer(chat_payload("P" * 5000))
    outcome = run(server, tmp_path, "--max-response-bytes", "65536")
    assert outcome.code == ExitCode.OK and {r["content"] for r in outcome.rows} == {"P" * 5000}


# -- no reply shape escapes the client --------------------------------------------------------
BAD_SHAPES = {
    "content is a number": chat_payload(42),
    "message is a string": chat_payload(choices=[{"finish_reason": "stop", "message": "Paris"}]),
    "choices is an object": chat_payload(choices={"0": {}}),
    "a part is a number": chat_payload(["Paris", 3]),
    "the reply is a list": [1, 2, 3],
}


@pytest.mark.parametrize("payload", BAD_SHAPES.values(), ids=BAD_SHAPES.keys())
def test_a_reply_of_the_wrong_shape_is_a_bad_response_row(tmp_path: Path, payload: Any) -> None:
    outcome = run(answer(payload), tmp_path)
    assert outcome.code == ExitCode.ERRORS
    assert outcome.kinds() == {"bad_response"} and len(outcome.rows) == ROWS
    assert all(r["retryable"] for r in outcome.rows)


def test_content_as_parts_is_joined(tmp_path: Path) -> None:
    parts = [
        {"type": "text", "text": "Pa"},
        {"type": "image_url", "image_url": {"url": "x"}},
        {"type": "text", "text": "ris"},
    ]
    outcome = run(answer(chat_payload(parts)), tmp_path)
    assert outcome.code == ExitCode.OK and {r["content"] for r in outcome.rows} == {"Paris"}


@pytest.mark.parametrize("usage", [[1, 2], "lots", {"prompt_tokens": "10", "completion_tokens": "2", "cost": 0.00001}])
def test_a_usage_of_the_wrong_shape_keeps_the_answer(tmp_path: Path, usage: Any) -> None:
    outcome = run(answer(chat_payload(usage=usage)), tmp_path)
    assert outcome.code == ExitCode.OK and len(outcome.rows) == ROWS
    assert all(isinstance(v, (int, float, dict, bool)) for r in outcome.rows for v in r["usage"].values())
    assert all("prompt_tokens" not in r["usage"] for r in outcome.rows)


def test_refusal_reasoning_and_cold_start(tmp_path: Path) -> None:
    payload = chat_payload(None)
    payload["choices"][0]["message"].update(refusal="I cannot", reasoning="thinking")
    payload["usage"]["completion_tokens_details"] = {"reasoning_tokens": 7}
    payload["usage"]["prompt_tokens_details"] = {"cached_tokens": 3}
    outcome = run(answer(payload), tmp_path)
    row = outcome.rows[0]
    assert (row["content"], row["refusal"], row["reasoning"]) == ("", "I cannot", "thinking")
    assert row["usage"]["completion_tokens_details"] == {"reasoning_tokens": 7}
    assert row["usage"]["prompt_tokens_details"] == {"cached_tokens": 3}

    cold = chat_payload("")
    cold["choices"][0]["finish_reason"] = None
    outcome = run(answer(cold), tmp_path / "cold")
    assert outcome.kinds() == {"empty_completion"} and all(r["retryable"] for r in outcome.rows)


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 abc\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{",
    ],
    ids=["invalid status line", "ssh banner", "tls bytes", "cut short"],
)
def test_bytes_that_are_not_http_are_a_network_row(tmp_path: Path, raw: bytes) -> None:
    outcome = run(HostileServer(chat=lambda r: raw), tmp_path)
    assert outcome.code == ExitCode.ERRORS and len(outcome.rows) == ROWS
    assert outcome.kinds() <= {"network", "timeout", "bad_response"}


def test_a_banner_on_the_port_fails_pre_flight_in_one_line(tmp_path: Path) -> None:
    server = HostileServer(chat=lambda r: b"", banner=b"SSH-2.0-OpenSSH_9.6\r\n")
    outcome = run(server, tmp_path)
    assert outcome.code == ExitCode.ERRORS and outcome.rows == []
    assert outcome.stderr.startswith("batchrun: the endpoint failed before the run started: network")
    assert len(outcome.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "models, code",
    [
        ({"data": [{"name": "no id"}, *models_payload()["data"]]}, ExitCode.OK),
        ({"data": "everything"}, ExitCode.ERRORS),
        (["not", "an", "object"], ExitCode.ERRORS),
    ],
    ids=["item without id", "data not a list", "not an object"],
)
def test_odd_model_lists_at_pre_flight(tmp_path: Path, models: Any, code: int) -> None:
    server = answer(chat_payload())
    server.models = lambda r: json_answer(200, models)
    outcome = run(server, tmp_path)
    assert outcome.code == code


@pytest.mark.parametrize(
    "pricing",
    [
        "cheap",
        {"prompt": "NaN", "completion": "0.000001"},
        {"prompt": True, "completion": 0},
        {"prompt": "0", "completion": "0", "request": "inf"},
    ],
)
def test_a_price_that_is_not_a_number_is_unknown(tmp_path: Path, pricing: Any) -> None:
    server = answer(chat_payload())
    server.models = lambda r: json_answer(200, models_payload({"openai/gpt-4o-mini": {"pricing": pricing}}))
    outcome = run(server, tmp_path, "--budget", "1")
    assert outcome.code == ExitCode.USAGE and "no known price for openai/gpt-4o-mini" in outcome.stderr
    assert server.chat_rows() == []


@pytest.mark.parametrize("body", [b"<html>oops</html>", b'{"data": {"limit_remaining": "lots"}}', b'{"data": []}'])
def test_a_key_reply_that_cannot_be_read_stops_pre_flight(tmp_path: Path, body: bytes) -> None:
    server = answer(chat_payload())
    server.key = lambda r: http(200, body)
    outcome = run(server, tmp_path, "--budget", "1")
    assert outcome.code == ExitCode.ERRORS and "bad_response" in outcome.stderr and outcome.rows == []
    if body.startswith(b"<"):  # a web site's page: which call, and the likeliest cause (out-149 note)
        assert "/key reply is an HTML page: is the base URL the API's (it ends in /api/v1)?" in outcome.stderr


def test_one_bad_reply_in_fifty_loses_no_row(tmp_path: Path) -> None:
    """500 rows, concurrency 8: every 50th reply is malformed; with retries all end ok,
    and each row is written once (issue 11 lost 108 rows this way)."""
    seen = 0

    def chat(request: RawRequest) -> bytes:
        nonlocal seen
        seen += 1
        return json_answer(200, chat_payload(7) if seen % 50 == 0 else chat_payload())

    server = HostileServer(chat=chat)
    job_text = JOB.replace(
        "vars: [{country: France}, {country: Japan}, {country: Italy}, {country: Spain}]",
        "vars: [" + ", ".join(f"{{country: C{i}}}" for i in range(500)) + "]",
    ).replace(
        "run: {concurrency: 2, timeout_s: 10, max_attempts: 1, grace_s: 1}", "run: {concurrency: 8, max_attempts: 3}"
    )
    path = write_job(tmp_path, job_text)
    out = tmp_path / "out.jsonl"
    with server.running():
        job = load_job(path)
        report = asyncio.run(
            run_job(job, RunOptions(api_key=FAKE_KEY, base_url=server.base_url, output=out, clock=FakeClock()))
        )
    outcome = check(server, tmp_path, 0, "", "", out)
    assert len(outcome.rows) == 500 and {r["status"] for r in outcome.rows} == {"ok"}
    assert len(server.chat_rows()) == 510  # 10 malformed replies, each retried once
    assert sum(r["attempts"] for r in outcome.rows) == 510
    assert report.summary["total"]["ok"] == 500


# -- secrets, whatever the server echoes ------------------------------------------------------
def echo_everywhere(request: RawRequest) -> bytes:
    key = request.key
    payload = chat_payload(f"your key is {key}", id=key, model=key, provider=key)
    payload["choices"][0]["native_finish_reason"] = key
    payload["usage"][key] = key
    payload["usage"]["cost_details"] = {key: 0.1}
    return json_answer(200, payload)


def test_a_key_echoed_in_every_field_of_a_200_is_scrubbed(tmp_path: Path) -> None:
    outcome = run(HostileServer(chat=echo_everywhere), tmp_path)
    assert outcome.code == ExitCode.OK
    assert outcome.rows[0]["response_model"] == "[key]" and outcome.rows[0]["content"] == "your key is [key]"


def test_a_key_straddling_the_cut_of_an_error_text_is_scrubbed(tmp_path: Path) -> None:
    def chat(request: RawRequest) -> bytes:
        text = "x" * 180 + request.key + " more"  # the 200-character cut falls inside the key
        return http(400, text.encode(), {"Content-Type": "text/plain"})

    outcome = run(HostileServer(chat=chat), tmp_path)
    assert outcome.code == ExitCode.ERRORS and outcome.kinds() == {"bad_request"}
    assert outcome.rows[0]["error"]["message"] == "x" * 180 + "[key] more"  # scrubbed, then cut


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_key_echoed_in_a_header_an_error_quotes_is_scrubbed_in_every_file(tmp_path: Path, stream: bool) -> None:
    # out-109 F1: "unsupported content-encoding 'sk-or-v1-a3d7...'", 31 of the key's 64 hex digits,
    # cut but never scrubbed, in every error row; `report --html/--junit` without the key copied it.
    body = json.dumps(chat_payload()).encode()
    server = HostileServer(
        chat=lambda r: http(200, body, {"Content-Type": "application/json", "Content-Encoding": r.key})
    )
    outcome = run(server, tmp_path, *(["--stream"] if stream else []))
    assert outcome.code == ExitCode.ERRORS and outcome.kinds() == {"bad_response"}
    assert all(row["error"]["message"] == "unsupported content-encoding '[key]'" for row in outcome.rows)
    page, junit = tmp_path / "page.html", tmp_path / "junit.xml"
    os.environ.pop("OPENROUTER_API_KEY")  # the README's gate step: no key to scrub with
    code, _, err = call_cli("report", tmp_path / "out.jsonl", "--html", page, "--junit", junit)
    assert code == ExitCode.OK, err  # without --job, a report is no gate
    assert_no_key_in(junit.read_text())
    # The page's scripts hold the hex alphabet the test key is made of: the key's runs past 16.
    html = page.read_text()
    assert "[key]" in html and "sk-or-v1-0" not in html and FAKE_KEY[9:40] not in html


def test_a_key_echoed_in_a_header_of_a_key_read_mid_run_is_scrubbed_from_the_summary(tmp_path: Path) -> None:
    # out-109 F1: the stop message ("/key failed (bad_response: /key: unsupported content-encoding
    # 'sk-or-v1-a3d7...')") went into summary.json unscrubbed; only what was printed was.
    reads = []

    def key(request: RawRequest) -> bytes:
        reads.append(request)
        data = json.dumps({"data": {"label": "k", "limit": None, "limit_remaining": None, "usage": 0}}).encode()
        return http(
            200, data, {"Content-Type": "application/json", **({"Content-Encoding": request.key} if reads[1:] else {})}
        )

    server = answer(chat_payload())
    server.key = key
    outcome = run(server, tmp_path, "--budget", "1")
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert outcome.code == ExitCode.BUDGET and len(reads) > 1
    assert "(bad_response: /key: unsupported content-encoding '[key]')" in summary["stop_message"]


@pytest.mark.parametrize(
    ("status", "code", "stop"), [(401, ExitCode.AUTH, "auth"), (402, ExitCode.BUDGET, "credits")], ids=["401", "402"]
)
def test_a_key_refused_or_out_of_credit_at_a_read_mid_run_stops_as_at_the_start(
    tmp_path: Path, status: int, code: ExitCode, stop: str
) -> None:
    # out-109 F3: /key answering 401 mid-run (a key revoked) stopped the run as key_unreadable, exit 5
    # ("resumable once /key answers"), where the same 401 at start-up is exit 9; a 402 was exit 1 there.
    def server(good_reads: int) -> HostileServer:
        reads = []

        def key(request: RawRequest) -> bytes:
            reads.append(request)
            if len(reads) > good_reads:
                return json_answer(status, {"error": {"code": status, "message": "User not found"}})
            return json_answer(200, {"data": {"label": "k", "limit": None, "limit_remaining": None, "usage": 0}})

        hostile = answer(chat_payload())
        hostile.key = key
        return hostile

    outcome = run(mid_run := server(1), tmp_path, "--budget", "1")
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert outcome.code == code and summary["stop"] == stop and len(mid_run.requests) > len(outcome.rows)
    # The same at the start: nothing sent, the code the stop would have had.
    outcome = run(server(0), tmp_path / "start")
    assert outcome.code == code and not outcome.rows and ("refused" if status == 401 else "credits") in outcome.stderr


def test_a_key_echoed_by_an_error_at_pre_flight_is_scrubbed(tmp_path: Path) -> None:
    server = answer(chat_payload())
    server.models = lambda r: json_answer(500, {"error": {"code": 400, "message": f"bad key {r.key[:40]}"}})
    outcome = run(server, tmp_path)
    assert outcome.code == ExitCode.ERRORS and "[key]" in outcome.stderr


@pytest.mark.parametrize("failing", ["POST", "GET", "DELETE", "PATCH"])
def test_the_management_key_echoed_by_keys_is_never_printed(tmp_path: Path, failing: str) -> None:
    created = {"key": "sk-or-v1-" + "ab" * 32, "data": {"hash": "h" * 64, "label": "run key"}}

    # PATCH (disable) is only tried when DELETE failed.
    failing_methods = {failing, "DELETE"} if failing == "PATCH" else {failing}

    def keys(request: RawRequest) -> bytes:
        if request.method in failing_methods:
            return http(500, f"upstream said: Authorization: Bearer {request.key} was bad".encode())
        if request.method == "POST":
            return json_answer(201, created)
        return json_answer(200, {"data": {"usage": 0.0, "limit": 1}})

    server = answer(chat_payload())
    server.keys = keys
    server.key = lambda r: json_answer(200, {"data": {"limit": 1, "limit_remaining": 1, "usage": 0}})
    outcome = run(server, tmp_path, "--isolated-key", "--budget", "1", "--quiet")
    assert ("could not create the per-run key" in outcome.stderr) == (failing == "POST")
    # The key's limit is read back before any request (break-14b M5): a failed read refuses the run.
    assert ("could not read back the per-run key's limit" in outcome.stderr) == (failing == "GET")
    if failing not in ("POST", "GET"):
        assert outcome.code == ExitCode.OK and "[key]" in outcome.stderr
    else:
        assert outcome.code == ExitCode.USAGE and "[key]" in outcome.stderr


# -- money figures are not trusted blindly ----------------------------------------------------
@pytest.mark.parametrize(
    "key",
    [
        {"limit": 0, "limit_remaining": 1000},
        {"limit": 0, "limit_remaining": None},
        {"limit": 0},
        # break47 F1: a key at its limit (all-time usage, no reset) saying 0.01 left.
        {"limit": 0.001, "limit_remaining": 0.01, "usage": 0.001, "limit_reset": None},
    ],
)
def test_a_key_saying_more_is_left_than_its_limit_is_held_to_its_limit(tmp_path: Path, key: dict[str, Any]) -> None:
    # break44 F1: only limit_remaining was read, so a /key with more left than its limit (or
    # null beside a limit) was believed, and a run spent twice the key's limit, exit 0. What is
    # left is the limit less the period's usage (limits.mdx): never above the limit.
    server = answer(chat_payload())
    server.key = lambda r: json_answer(200, {"data": {"usage": 0, **key}})
    outcome = run(server, tmp_path, "--quiet")
    assert outcome.code == ExitCode.BUDGET and not server.chat_rows(), outcome.stderr


@pytest.mark.parametrize("key", [{"label": "x"}, {"label": "x", "usage": 0}], ids=["bare", "usage-only"])
def test_a_key_read_with_neither_limit_nor_limit_remaining_sends_nothing(tmp_path: Path, key: dict[str, Any]) -> None:
    # out-184 F5: /key answered without the limit fields OpenAPI's KeyResponse requires (null for
    # no limit), read as a key with no limit: all 100 requests sent, $0.10 billed on a $0.02 limit.
    server = answer(chat_payload())
    server.key = lambda r: json_answer(200, {"data": key})
    outcome = run(server, tmp_path, "--quiet")
    assert outcome.code == ExitCode.ERRORS and not server.chat_rows(), outcome.stderr
    assert "the /key data has no limit nor limit_remaining" in outcome.stderr


@pytest.mark.parametrize(("reset", "shown"), [("yearly", "'yearly'"), (1, "not text"), (True, "not text")])
def test_a_limit_reset_the_docs_do_not_give_is_said(tmp_path: Path, reset: Any, shown: str) -> None:
    # verify49 N3, verify50 N6: read as never resetting (all-time usage against the limit), with
    # no word: an honest key was refused as out of credit.
    server = answer(chat_payload())
    key = {"limit": 1, "limit_remaining": 0.5, "usage": 0.5, "limit_reset": reset}
    server.key = lambda r: json_answer(200, {"data": key})
    outcome = run(server, tmp_path, "--quiet")
    said = f"warning: the key's limit_reset ({shown}) is none of daily, weekly, monthly or null"
    assert outcome.code == ExitCode.OK and said in outcome.stderr, outcome.stderr


@pytest.mark.parametrize("cost", [-1.0, True, "0.00001", "NaN"])
def test_a_cost_that_cannot_be_believed_keeps_the_worst_case(tmp_path: Path, cost: Any) -> None:
    outcome = run(
        answer(chat_payload(usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2, "cost": cost})),
        tmp_path,
    )
    assert outcome.code == ExitCode.OK
    for row in outcome.rows:
        # One meaning of unknown (issues 11 and 14): no cost shown, the worst case held.
        assert row["cost_unknown"] is True and row["cost_status"] == "unknown" and row["cost"] is None
        assert row["cost_held"] > 0 and "cost" not in row["usage"]
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["spent_usd"] == pytest.approx(sum(r["cost_held"] for r in outcome.rows))
    assert summary["total"]["cost_unknown_rows"] == len(outcome.rows)
    assert summary["total"]["cost_held_usd"] == pytest.approx(summary["spent_usd"])


def test_a_missing_cost_is_estimated_from_tokens_at_the_dearest_price(tmp_path: Path) -> None:
    """No usage.cost at all (not a lie): tokens times the dearest allowed price, an upper
    bound, marked `estimated`; the cost is known enough to show, so it is not `unknown`."""
    outcome = run(answer(chat_payload(usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})), tmp_path)
    assert outcome.code == ExitCode.OK, (outcome.stderr, [r.get("error") for r in outcome.rows])
    for row in outcome.rows:
        assert row["cost_status"] == "estimated" and row["cost"] > 0
        assert row["cost_unknown"] is False and row["cost_held"] is None
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["spent_usd"] == pytest.approx(sum(r["cost"] for r in outcome.rows))


def test_a_cost_no_request_could_cost_is_not_believed_and_never_poisons_a_resume(tmp_path: Path) -> None:
    """1e300 for one answer: counted in full, it stopped the run and every later resume of its
    file at once (exit 5 "resumable once there is money"), though the key showed $0.00025
    charged (out-104 F3). No request costs past MAX_CHARGE_USD: unknown, its worst case held."""
    outcome = run(answer(chat_payload(usage={"cost": 1e300})), tmp_path, "--budget", "1")
    assert outcome.code == ExitCode.OK and {(r["cost"], r["cost_status"]) for r in outcome.rows} == {(None, "unknown")}
    held = json.loads((tmp_path / "out.summary.json").read_text())["spent_usd"]
    assert 0 < held < 0.01  # the worst cases, not 4e12
    again = run(answer(chat_payload()), tmp_path, "--budget", "1", "--resume")
    assert again.code == ExitCode.OK


def test_a_negative_cost_cannot_lift_the_budget(tmp_path: Path) -> None:
    job_text = JOB.replace(
        "vars: [{country: France}, {country: Japan}, {country: Italy}, {country: Spain}]",
        "vars: [" + ", ".join(f"{{country: C{i}}}" for i in range(100)) + "]",
    )
    payload = chat_payload(usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2, "cost": -0.01})
    server = answer(payload)
    outcome = run(server, tmp_path, "--budget", "0.0005", job=job_text)
    # Each row keeps its worst case (about $0.000013) as spent: the budget stops it at ~38.
    assert outcome.code == ExitCode.BUDGET
    assert 0 < len(server.chat_rows()) < 100
    assert sum(r["cost"] or 0 for r in outcome.rows) <= 0.0005 + 1e-12
    assert {r["reason"] for r in outcome.rows if r["status"] == "skipped"} == {"budget"}


def test_the_cli_as_a_subprocess_shows_no_traceback(tmp_path: Path) -> None:
    """One case end to end as cron starts it: a number for the answer, exit 1, no key."""
    server = answer(chat_payload(3.14))
    path = write_job(tmp_path, JOB)
    out = tmp_path / "out.jsonl"
    with server.running():
        env = {"OPENROUTER_API_KEY": FAKE_KEY, "PATH": "/usr/bin:/bin"}
        result = exec_cli(path, "--base-url", server.base_url, "-o", out, "-q", env=env)
    outcome = check(server, tmp_path, result.returncode, result.stdout, result.stderr, out)
    assert outcome.code == ExitCode.ERRORS and outcome.kinds() == {"bad_response"}


@pytest.mark.usefixtures("api_key_env")
def test_nothing_listening_at_the_base_url_says_what_to_check(tmp_path: Path) -> None:
    # break27 m7: the connection error alone, "ssl:default" and all, and no word of what to do.
    import socket

    with socket.socket() as held:  # a port of this host that nothing listens on while it is held
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        job = write_job(tmp_path, JOB)  # max_attempts 1: pre-flight's reads are not retried
        code, out, err = call_cli(job, "--base-url", f"http://127.0.0.1:{port}/api/v1", "-o", tmp_path / "o.jsonl")
    assert code == ExitCode.ERRORS and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("batchrun: the endpoint failed before the run started: connect: ")
    assert err.rstrip().endswith("no row was sent: is the endpoint up, and its host and port right?")
    assert not (tmp_path / "o.jsonl").exists()
    # out-142 L1: one that never answers in --timeout was blamed on the endpoint alone.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(8)  # connections are taken, and never answered
        url = f"http://127.0.0.1:{held.getsockname()[1]}/api/v1"
        code, out, err = call_cli(job, "--base-url", url, "--timeout", "0.05", "-o", tmp_path / "o.jsonl")
    assert code == ExitCode.ERRORS and out == "" and len(err.strip().splitlines()) == 1
    assert "no complete answer within 0.05 s" in err
    assert err.rstrip().endswith(
        "no row was sent: is the endpoint up, and run.timeout_s (--timeout) long enough for it?"
    )


# -- a server's text on the terminal and in logs ------------------------------------------------
FORGED = "\x1b]0;PWNED\x07\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J\r\nbatchrun: all rows passed\u202e\n::error::forged"


@pytest.mark.parametrize(
    "payload",
    [
        {"error": {"code": 401, "message": "No auth" + FORGED}},  # the stop line
        {"error": {"code": 400, "message": "gone", "availability": {"code": "model_gone" + FORGED}}},  # errors:
    ],
    ids=["401 message", "availability code"],
)
@pytest.mark.parametrize("quiet", [True, False])
def test_a_servers_escapes_and_newlines_never_reach_the_output_raw(
    tmp_path: Path, payload: dict[str, Any], quiet: bool
) -> None:
    # break53 F2: under --quiet (cron's mode) a failing run's summary went to stderr with the
    # server's escapes raw: window title, clipboard (OSC 52), a cleared screen, a forged line.
    # F3: a newline in an error kind or a stop message forged lines on stdout, GitHub workflow
    # commands among them (`::error::`).
    outcome = run(answer(payload, payload["error"]["code"]), tmp_path, *(["-q"] if quiet else []))
    shown = outcome.stdout + outcome.stderr
    assert outcome.code in (ExitCode.AUTH, ExitCode.ERRORS) and "PWNED" in shown
    assert not {"\x1b", "\x07", "\r", "\u202e"} & set(shown)
    lines = shown.splitlines()
    assert not [line for line in lines if line.startswith(("::", "batchrun: all rows passed"))], lines
    code, out, err = call_cli("report", tmp_path / "out.jsonl") if outcome.rows else (0, "", "")
    assert not [line for line in (out + err).splitlines() if line.startswith("::")] and "\x1b" not in out + err


def test_a_newline_in_a_servers_message_forges_no_line_in_diff_or_history(tmp_path: Path) -> None:
    # break53 F3: diff's flipped rows and history's changed rows took the error message whole.
    checked = JOB.replace(
        '    text: "Capital of {{country}}?"', '    text: "Capital of {{country}}?"\n    checks: [{contains: Paris}]'
    )
    good = run(answer(chat_payload()), tmp_path / "good", "--no-thresholds", job=checked)
    bad = run(answer({"error": {"code": 400, "message": "bad\n::error::forged"}}, 400), tmp_path / "bad", job=checked)
    assert good.code == ExitCode.OK and bad.code == ExitCode.ERRORS, good.stderr
    for command in (["diff"], ["history"]):
        code, out, err = call_cli(*command, tmp_path / "good" / "out.jsonl", tmp_path / "bad" / "out.jsonl")
        assert "forged" in out and not [line for line in out.splitlines() if line.lstrip().startswith("::")], out


def test_a_results_files_ids_with_newlines_forge_no_line_in_report(tmp_path: Path) -> None:
    # break59 F7: a contributed results file's model and prompt ids, newlines in them, printed
    # `::error title=Eval passed::` and `::stop-commands::` lines: GitHub runs those as commands.
    good = run(answer(chat_payload()), tmp_path / "good", "--no-thresholds")
    assert good.code == ExitCode.OK, good.stderr
    forged = tmp_path / "forged.jsonl"
    rows = [json.loads(line) for line in (tmp_path / "good" / "out.jsonl").read_text().splitlines()]
    for row in rows:
        row["model"], row["prompt_id"] = "m\n::error title=Eval passed::all passed", "p\n::stop-commands::x"
    forged.write_text("".join(json.dumps(row) + "\n" for row in rows))
    code, out, err = call_cli("report", forged)
    assert "Eval passed" in out and not [line for line in (out + err).splitlines() if line.lstrip().startswith("::")]


def test_a_servers_names_are_cut_not_copied_whole(tmp_path: Path) -> None:
    # break53 F4: a 1.2 MB `model` and a 0.5 MB `finish_reason` were copied whole into each record
    # (3.4 MB for two rows), the summary, the terminal and the step summary (past GitHub's 1 MiB).
    payload = chat_payload(model="m" * 1_200_000)
    payload["choices"][0]["finish_reason"] = "s" * 500_000
    outcome = run(answer(payload), tmp_path)
    assert outcome.code == ExitCode.OK and len(outcome.rows) == ROWS
    assert all(len(r["response_model"]) == 200 and len(r["finish_reason"]) == 200 for r in outcome.rows)
    assert (tmp_path / "out.jsonl").stat().st_size < 100_000 and len(outcome.stdout) < 20_000


def test_a_huge_availability_code_is_cut_and_the_rows_are_written(tmp_path: Path) -> None:
    # break53 F4: a 3.9 MB retryable code made a record past the readers' line limit: exit 11
    # ("an output could not be written"), no row written, and a resume met the same reply.
    code = "c" * 3_900_000
    payload = {"error": {"code": 503, "message": "busy", "availability": {"code": code, "retryable": True}}}
    outcome = run(answer(payload, 503), tmp_path)  # max_attempts: 1
    assert outcome.code == ExitCode.ERRORS and len(outcome.rows) == ROWS, outcome.stderr
    assert {r["reason"] for r in outcome.rows} == {"c" * 200}
    assert (tmp_path / "out.jsonl").stat().st_size < 100_000


def test_passes_turned_errors_fail_the_diff_gate_though_the_model_erred_before(tmp_path: Path) -> None:
    # break54 F4: 29 of 40 passing rows turned into errors passed `diff --fail-on-regression`
    # (exit 0), the model having had one error the night before: only "started erroring" counted.
    rows = ", ".join(f"{{country: c{i}}}" for i in range(40))
    job = JOB.replace(
        "vars: [{country: France}, {country: Japan}, {country: Italy}, {country: Spain}]",
        f"vars: [{rows}]\n    checks: [{{contains: Paris}}]",
    )

    def nights(errors: int) -> HostileServer:
        served = {"n": 0}

        def chat(request: RawRequest) -> bytes:
            served["n"] += 1
            if served["n"] <= errors:
                return json_answer(400, {"error": {"code": 400, "message": "bad request"}})
            return json_answer(200, chat_payload())

        return HostileServer(chat=chat)

    first = run(nights(1), tmp_path / "a", "--no-thresholds", job=job)
    second = run(nights(30), tmp_path / "b", "--no-thresholds", job=job)
    errors = [sum(r["status"] == "error" for r in night.rows) for night in (first, second)]
    assert len(first.rows) == len(second.rows) == 40 and errors == [1, 30]
    code, out, _ = call_cli("diff", tmp_path / "a" / "out.jsonl", tmp_path / "b" / "out.jsonl", "--fail-on-regression")
    assert code == ExitCode.REGRESSION and re.search(r"pass -> no verdict: (29|30) row\(s\)", out), out


@pytest.mark.parametrize(
    ("pin", "answered", "broken"),
    [
        ("{only: [prova], allow_fallbacks: false}", "ProvC", True),
        ("{order: [prova, provb], allow_fallbacks: false}", "ProvC", True),
        ("{only: [google-vertex/us-east5], allow_fallbacks: false}", "Google Vertex", False),  # name vs slug
        ("{only: [google-vertex], allow_fallbacks: false}", "Google", False),  # the docs' name of Vertex
        ("{only: [google-ai-studio], allow_fallbacks: false}", "Google", True),  # verify70 F5: not a prefix
        ("{only: [google-ai-studio], allow_fallbacks: false}", "Google AI Studio", False),
        ("{only: [prova]}", "ProvC", True),  # out-161 F3: `only` allows those alone, fallbacks or not
        ("{order: [prova]}", "ProvC", False),  # fallbacks allowed: not pinned (warned as such)
    ],
)
def test_a_pinned_request_answered_outside_its_pin_is_said(
    tmp_path: Path, pin: str, answered: str, broken: bool
) -> None:
    # break66 F3: every row pinned to `only: [prova]` came from ProvC: recorded, said nowhere, exit 0.
    server = HostileServer(chat=lambda request: json_answer(200, chat_payload(provider=answered)))
    job = JOB.replace("params: {max_tokens: 16}", f"params: {{max_tokens: 16, provider: {pin}}}")
    outcome = run(server, tmp_path, "--quiet", job=job)
    assert outcome.code == ExitCode.OK and {r["provider"] for r in outcome.rows} == {answered}
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    said = (
        "routing pinned (params.provider) but answered outside the pin: "
        f"openai/gpt-4o-mini: 4 row(s) answered by {answered}"
    )
    assert (said in (summary["routing_warning"] or "")) is broken
    assert (said in outcome.stderr) is broken  # on stderr under --quiet too


@pytest.mark.parametrize(
    ("answered", "params", "said"),
    [
        ("meta-llama/llama-3.1-8b-instruct", "", True),
        ("openai/gpt-4o-mini-2024-07-18", "", False),  # a dated id of the model asked for
        ("anthropic/claude-3.5-haiku", ", models: [anthropic/claude-3.5-haiku]", False),  # a fallback asked for
        ("gpt-4o-mini", "", False),  # no author to tell
        # out-158 F3: a newline in it printed lines as batchrun's own before the `results:` line.
        ("evil/model\nbatchrun: all 4 row(s) passed\nresults: /dev/null", "", True),
    ],
)
def test_a_reply_from_another_authors_model_is_said(tmp_path: Path, answered: str, params: str, said: bool) -> None:
    # out-129 F4: every reply to openai/gpt-4o-mini said meta-llama answered: exit 0, said nowhere
    # but the summary's `answered_by`.
    server = HostileServer(chat=lambda request: json_answer(200, chat_payload(model=answered)))
    job = JOB.replace("params: {max_tokens: 16}", f"params: {{max_tokens: 16{params}}}")
    outcome = run(server, tmp_path, "--quiet", job=job)
    assert outcome.code == ExitCode.OK and {r["response_model"] for r in outcome.rows} == {answered}
    shown = answered.replace("\n", "\\n")
    warning = f"answered by another author's model than the one asked for: openai/gpt-4o-mini: 4 row(s) by {shown}"
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert (warning in (summary["routing_warning"] or "")) is said
    assert (warning in outcome.stderr) is said  # on stderr under --quiet too
    assert "\nbatchrun: all" not in outcome.stderr and "\nresults: /dev/null" not in outcome.stderr


@pytest.mark.parametrize("provider", ["OpenAI", None])
def test_routing_is_advised_only_where_the_answers_name_a_provider(tmp_path: Path, provider: str | None) -> None:
    # out-152 F4: a plain OpenAI-compatible server (its replies name no provider) was told every
    # night "routing not pinned ... set params.provider", a setting only OpenRouter reads.
    payload = chat_payload()
    if provider is None:
        del payload["provider"]
    outcome = run(HostileServer(chat=lambda request: json_answer(200, payload)), tmp_path)
    assert outcome.code == ExitCode.OK and {r["provider"] for r in outcome.rows} == {provider}
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    advised = "routing not pinned for openai/gpt-4o-mini" in (summary["routing_warning"] or "")
    assert advised is (provider is not None) and ("routing not pinned" in outcome.stdout) is advised


def test_a_results_file_emptied_while_the_run_ends_is_no_complete_run(tmp_path: Path) -> None:
    # verify69 F3: emptied after the last record, during the end-of-run /key read: exit 0, a summary
    # saying "complete" of rows gone, and `results_bytes: 0`, so a resume bought them all again.
    out = tmp_path / "out.jsonl"

    def key(request: RawRequest) -> bytes:
        if out.exists() and out.read_bytes().count(b"\n") == ROWS:  # every record written: the run is ending
            out.write_bytes(b"")
        return json_answer(200, {"data": {"label": "k", "limit": None, "limit_remaining": None, "usage": 0}})

    server = HostileServer(chat=lambda request: json_answer(200, chat_payload()), key=key)
    with server.running():  # not `run`: its check reads the rows, which are gone
        code, _, err = call_cli(write_job(tmp_path, JOB), "--base-url", server.base_url, "-o", out, "-q")
    assert code == ExitCode.IO, err
    assert "the results file was cut short as the run ended (0 of the" in err
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["complete"] is False and summary["stop"] == "io" and summary["results_bytes"] > 0


@pytest.mark.parametrize("done", ["copied_over", "folder_replaced"])
def test_what_happens_to_the_results_file_as_the_run_ends_is_judged_by_what_is_left(tmp_path: Path, done: str) -> None:
    # verify70 F3: replaced by an identical copy (a backup tool's cp and mv) after its last record:
    # exit 11 "no complete run", the rows all there. F1: its folder replaced by a file: a raw
    # NotADirectoryError, exit 2 ("nothing spent") for a run that spent.
    folder = tmp_path / "runs"
    out = folder / "out.jsonl"

    def key(request: RawRequest) -> bytes:
        if out.is_file() and out.read_bytes().count(b"\n") == ROWS:  # every record written: the run is ending
            if done == "copied_over":
                shutil.copy(out, tmp_path / "copy.jsonl")
                os.replace(tmp_path / "copy.jsonl", out)
            else:
                shutil.rmtree(folder)
                folder.write_text("not a folder")
        return json_answer(200, {"data": {"label": "k", "limit": None, "limit_remaining": None, "usage": 0}})

    server = HostileServer(chat=lambda request: json_answer(200, chat_payload()), key=key)
    with server.running():
        code, _, err = call_cli(write_job(tmp_path, JOB), "--base-url", server.base_url, "-o", out, "-q")
    assert "Traceback" not in err and "Error:" not in err.replace("batchrun:", ""), err
    if done == "copied_over":
        assert code == ExitCode.OK, err
        assert json.loads(out.with_name("out.summary.json").read_text())["complete"] is True
    else:
        assert code == ExitCode.IO and "moved or replaced" in err, err


def test_an_output_through_a_linked_folder_and_dot_dot_is_where_the_kernel_says(tmp_path: Path) -> None:
    # verify70 F2: `link/../r.jsonl` was normalised as text: written to ./r.jsonl, not real/../r.jsonl.
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "link").symlink_to(tmp_path / "real" / "sub")
    server = HostileServer(chat=lambda request: json_answer(200, chat_payload()))
    job = write_job(tmp_path, JOB)
    with server.running(), contextlib.chdir(tmp_path / "work"):
        code, _, err = call_cli(job, "--base-url", server.base_url, "-o", "link/../r.jsonl", "-q")
    assert code == ExitCode.OK, err
    assert (tmp_path / "real" / "r.jsonl").is_file() and not (tmp_path / "work" / "r.jsonl").exists()


def test_the_summary_is_masked_as_a_whole_whatever_reaches_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sim: Simulator, api_key_env: None
) -> None:
    # The last net under what each reply's fields had masked, as a record's line has: a summary
    # quotes servers (a stop's message, its reasons), and is written with every key in it masked.
    echoed = [f"echoed {FAKE_KEY}", "escaped " + "".join(f"\\u{ord(c):04x}" for c in FAKE_KEY)]
    monkeypatch.setattr(batchrun._orchestration, "exit_fields", lambda *args: (0, echoed))
    monkeypatch.delenv("OPENROUTER_MANAGEMENT_KEY")  # the simulator's key only
    out = tmp_path / "r.jsonl"
    code, _, err = call_cli(write_job(tmp_path, SMALL_JOB), "--base-url", sim.base_url, "-q", "-o", out)
    assert code == ExitCode.OK, err
    text = summary_path(out).read_text()
    reasons = json.loads(text)["exit_reasons"]
    assert FAKE_KEY not in text and FAKE_KEY not in json.dumps(reasons, ensure_ascii=False)
    assert reasons[0] == "echoed [key]" and FAKE_KEY not in reasons[1]
