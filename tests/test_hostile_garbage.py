"""Garbage in a billed reply (break14b C5, C11): a lone surrogate in the text, a count of 400
digits. Each row is recorded once, never as a known $0, and the run ends under a budget that
a leaked reservation would exhaust (it used to wait for that reservation forever)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchrun import ExitCode, RunOptions, load_job, run_job
from batchrun._exceptions import OutputFailed
from batchrun._record_head import record_head
from batchrun._results import ResultsWriter

from .conftest import FAKE_KEY, FakeClock, call_cli, write_job
from .hostile import JOB, HostileServer, RawRequest, chat_payload, http, run

# Nothing here waits (the server answers at once, the clock is fake where the run sleeps); a
# regression that leaks a reservation waits forever, and the timeout turns that into a failure.
pytestmark = [pytest.mark.usefixtures("keys_env"), pytest.mark.timeout(60)]

BIG = "9" * 400
COST = 0.00001
# Room for the four rows' costs and one worst case ($0.000029 at 16 tokens of gpt-4o-mini),
# not for three worst cases: reservations leaked by two rows would leave the third waiting.
TIGHT = JOB.replace("run: {", "run: {budget_usd: 0.00007, ")


def _raw(payload: dict[str, Any], substitutions: dict[str, str]) -> bytes:
    """The payload as JSON text with placeholders swapped for raw JSON (a bare 400-digit
    integer, a lone surrogate escape), which json.dumps would never write."""
    text = json.dumps(payload)
    for placeholder, raw in substitutions.items():
        text = text.replace(json.dumps(placeholder), raw)
    return http(200, text.encode(), {"Content-Type": "application/json"})


def _usage(**fields: Any) -> dict[str, Any]:
    return {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "cost": COST, **fields}


GARBAGE = {
    "a lone surrogate in the answer": (chat_payload("SURR", usage=_usage()), {"SURR": '"ok \\ud800 x"'}),
    "a 400-digit prompt_tokens": (chat_payload(usage=_usage(prompt_tokens="BIG")), {"BIG": BIG}),
    "a 400-digit completion_tokens": (chat_payload(usage=_usage(completion_tokens="BIG")), {"BIG": BIG}),
    "a 400-digit total_tokens": (chat_payload(usage=_usage(total_tokens="BIG")), {"BIG": BIG}),
    "a 400-digit cached_tokens": (
        chat_payload(usage=_usage(prompt_tokens_details={"cached_tokens": "BIG"})),
        {"BIG": BIG},
    ),
    "a 400-digit reasoning_tokens": (
        chat_payload(usage=_usage(completion_tokens_details={"reasoning_tokens": "BIG"})),
        {"BIG": BIG},
    ),
}


@pytest.mark.parametrize("garbage", list(GARBAGE))
def test_garbage_in_a_billed_answer_is_dropped_and_every_row_recorded_once(tmp_path: Path, garbage: str) -> None:
    payload, substitutions = GARBAGE[garbage]
    server = HostileServer(chat=lambda request: _raw(payload, substitutions))
    outcome = run(server, tmp_path, job=TIGHT)
    assert outcome.code == ExitCode.OK, outcome.stderr
    assert len(outcome.rows) == 4 and {r["status"] for r in outcome.rows} == {"ok"}
    for row in outcome.rows:
        assert row["cost"] == COST and row["cost_status"] == "reported"
        assert all(n is None or n < 2**53 for n in (row["usage"] or {}).values() if isinstance(n, int))
    if "surrogate" in garbage:
        assert {r["content"] for r in outcome.rows} == {"ok \ufffd x"}


def test_a_lone_surrogate_in_a_stream_is_an_answer_not_an_internal_error(tmp_path: Path) -> None:
    def chat(request: RawRequest) -> bytes:
        chunks = [
            '{"id": "gen-1", "choices": [{"index": 0, "delta": {"content": "ok \\ud800 x"}}]}',
            '{"id": "gen-1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],'
            f' "usage": {json.dumps(_usage())}}}',
        ]
        body = "".join(f"data: {c}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return http(200, body.encode(), {"Content-Type": "text/event-stream"})

    outcome = run(HostileServer(chat=chat), tmp_path, "--stream", job=TIGHT)
    assert outcome.code == ExitCode.OK, outcome.stderr
    assert {(r["status"], r["content"], r["cost"]) for r in outcome.rows} == {("ok", "ok \ufffd x", COST)}


@pytest.mark.parametrize("stream", [False, True], ids=["sync", "stream"])
def test_a_connection_dropped_after_the_request_holds_its_worst_case(tmp_path: Path, stream: bool) -> None:
    # break32 F4: read whole, then the socket closed with no status line: httpx-aiohttp calls that
    # a ConnectTimeout, which was read as "never reached the server": cost 0, its room retried.
    def chat(_request: RawRequest) -> Any:
        async def drop(writer: Any) -> None:
            writer.close()

        return drop

    outcome = run(HostileServer(chat=chat), tmp_path, *(["--stream"] if stream else []), "--budget", "1")
    assert outcome.code == ExitCode.ERRORS, outcome.stderr
    for row in outcome.rows:
        assert row["status"] == "error" and row["reason"] == "network", row
        assert row["cost"] is None and row["cost_status"] == "unknown" and row["cost_held"] > 0
        assert row["abandoned_attempts"]


def test_a_workspace_budget_403_stops_the_run_and_leaves_its_rows_to_a_resume(tmp_path: Path) -> None:
    # break32 F3: workspace-budgets.mdx's 403 made each row a final `forbidden` error, every row
    # was sent, exit 1, and `--resume --retry-errors` never ran them after the budget reset.
    answered: list[str] = []

    def chat(request: RawRequest) -> bytes:
        if answered:
            message = "Workspace monthly budget of $500.00 exceeded. Contact your org admin."
            return http(403, json.dumps({"error": {"code": 403, "message": message}}).encode())
        answered.append(request.headers.get("x-batchrun-row", ""))
        return http(200, json.dumps(chat_payload(usage=_usage())).encode())

    outcome = run(HostileServer(chat=chat), tmp_path, job=JOB.replace("concurrency: 2", "concurrency: 1"))
    assert outcome.code == ExitCode.BUDGET, outcome.stderr
    assert "Workspace monthly budget of $500.00 exceeded" in outcome.stdout
    assert sorted(r["status"] for r in outcome.rows) == ["ok", "skipped", "skipped", "skipped"]
    assert {r["reason"] for r in outcome.rows if r["status"] == "skipped"} == {"credits"}


async def test_an_internal_error_after_the_answer_holds_its_reservation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever breaks between the answer and its charge, the attempt is held as one that may
    be billed (unknown, its worst case counted): never a known $0, never a leaked reservation."""

    def broken(*args: Any) -> float:
        raise RuntimeError("a bug while settling")

    # Between the answer and its charge: what the reply's usage says it cost is read first.
    monkeypatch.setattr("batchrun._dispatch.reported_charge", broken)
    server = HostileServer(chat=lambda request: http(200, json.dumps(chat_payload(usage=_usage())).encode()))
    job = load_job(write_job(tmp_path, TIGHT))
    with server.running():
        report = await run_job(
            job, RunOptions(api_key=FAKE_KEY, base_url=server.base_url, output=tmp_path / "o.jsonl", clock=FakeClock())
        )
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(set(r["id"] for r in rows)) and len(rows) == 4
    answered = [r for r in rows if r["reason"] == "internal"]
    assert len(answered) == len(server.chat_rows()) >= 1
    for row in answered:
        assert row["cost"] is None and row["cost_status"] == "unknown" and row["cost_held"] > 0
        assert row["retryable"] is False  # the answer was bought: --retry-errors would buy it again
    # The held worst cases filled the tight budget: the rest were skipped, not waited for.
    assert {r["reason"] for r in rows} <= {"internal", "budget"}
    assert report.summary["spent_usd"] == pytest.approx(sum(r["cost_held"] for r in answered))


def test_a_record_that_cannot_be_encoded_stops_the_run_with_the_io_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The safety net behind the parser: were a 400-digit count let through, the record that
    orjson cannot write must not vanish from a run that says it is complete."""
    monkeypatch.setattr("batchrun._reply.MAX_COUNT", 10**500)
    payload, substitutions = GARBAGE["a 400-digit total_tokens"]
    server = HostileServer(chat=lambda request: _raw(payload, substitutions))
    with server.running():
        code, _, stderr = call_cli(write_job(tmp_path, JOB), "--base-url", server.base_url, "-o", tmp_path / "o.jsonl")
    assert code == ExitCode.IO
    assert "a record could not be encoded" in stderr and "Traceback" not in stderr
    summary = json.loads((tmp_path / "o.summary.json").read_text())
    assert summary["complete"] is False


def test_the_writer_refuses_every_write_after_one_it_cannot_encode(tmp_path: Path) -> None:
    writer = ResultsWriter(tmp_path / "w.jsonl")
    with pytest.raises(OutputFailed, match="could not be encoded"):
        writer.write({"id": "a", "n": 2**70})
    with pytest.raises(OutputFailed, match="could not be encoded"):
        writer.write({"id": "b"})
    writer.close()
    assert (tmp_path / "w.jsonl").read_text() == ""


def test_a_lone_surrogate_from_a_grader_is_replacement_text_never_a_stopped_run(tmp_path: Path) -> None:
    # break31 C1: a grader's reason `"lone \ud800"` (valid JSON, read by Python's json as a lone
    # surrogate) stopped a run with exit 11 and no row written; the page and JUnit: a traceback.
    from batchrun._judge import parse_verdict
    from batchrun._report_file import write_report_file

    verdict = parse_verdict('{"pass": false, "score": 0, "reason": "lone \\ud800 surrogate"}')
    assert verdict["reason"] == "lone \ufffd surrogate"
    writer = ResultsWriter(tmp_path / "w.jsonl")
    writer.write({"id": "a", "checks": [{"reason": "x\udc00y", "nested": {"k\ud800": ["\udfff"]}}]})
    writer.close()
    assert json.loads((tmp_path / "w.jsonl").read_text())["checks"] == [
        {"reason": "x\ufffdy", "nested": {"k\ufffd": ["\ufffd"]}}
    ]
    write_report_file(tmp_path / "page.html", "<p>lone \ud800, NUL \x00 ESC \x1b\tand a tab</p>")
    assert (tmp_path / "page.html").read_text() == "<p>lone ?, NUL \ufffd ESC \ufffd\tand a tab</p>"


def test_a_key_whose_limit_remaining_is_a_huge_integer_stops_pre_flight_in_one_line(tmp_path: Path) -> None:
    """break14b M8: float() of a 400-digit integer raised OverflowError, a traceback in run
    and plan. It is no credit a key can have: pre-flight stops as for any unreadable /key."""
    body = b'{"data": {"label": "k", "limit": 5, "limit_remaining": ' + BIG.encode() + b', "usage": 0}}'
    key = http(200, body, {"Content-Type": "application/json"})
    outcome = run(HostileServer(chat=lambda r: _raw(chat_payload(usage=_usage()), {}), key=lambda r: key), tmp_path)
    assert outcome.code == ExitCode.ERRORS and not outcome.rows
    assert "limit_remaining is a number too large to be a credit" in outcome.stderr
    server = HostileServer(chat=lambda r: _raw(chat_payload(usage=_usage()), {}), key=lambda r: key)
    with server.running():
        code, stdout, stderr = call_cli("plan", write_job(tmp_path, JOB, "plan.yaml"), "--base-url", server.base_url)
    assert code == ExitCode.ERRORS and "Traceback" not in stdout + stderr
    assert "limit_remaining is a number too large to be a credit" in stderr


def test_a_record_past_the_readers_line_limit_leaves_its_request_body_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break14h H11: a 36 MiB body (a 12 MiB variable used three times) made a 50 MB line that
    # every reader set aside: the paid row was lost to report, merge and resume. The record is
    # written without the body (the job rebuilds it), and says how long it was.
    monkeypatch.setattr("batchrun._results.MAX_RECORD_BYTES", 4096)
    writer = ResultsWriter(tmp_path / "w.jsonl")
    body = b'{"messages":"' + b"x" * 5000 + b'"}'
    writer.write(record_head("a", "f", "ok", None, False, 0.01, 0.01), body)
    writer.write(record_head("b", "f", "ok", None, False, 0.01, 0.01), b'{"m":1}')
    with pytest.raises(OutputFailed, match="past the 4,096 a reader takes for a line"):
        writer.write({**record_head("c", "f", "ok", None, False, 0.01, 0.01), "content": "y" * 5000})
    writer.close()
    first, second = (json.loads(line) for line in (tmp_path / "w.jsonl").read_text().splitlines())
    assert "request" not in first and first["request_omitted_bytes"] == len(body)
    assert second["request"] == {"m": 1}


def test_bidi_overrides_reach_neither_the_page_nor_the_junit_file(tmp_path: Path) -> None:
    # out-158 F5: `invoice\u202efdp.exe` in an answer or a variable read "invoiceexe.pdf" in the
    # page and in CI's test views (a JUnit case name), where the terminal showed it escaped.
    job = write_job(
        tmp_path,
        """
        name: bidi
        models: [openai/gpt-4o-mini]
        prompts:
          - id: p
            text: "Name the file {{f}}"
            vars: [{f: "invoice\\u202efdp.exe \\u2067x\\u2069 \\u200fy\\u061c"}]
            checks: [{contains: "nothing"}]
        """,
    )
    out = tmp_path / "r.jsonl"
    assert call_cli(job, "--simulate", "-q", "-o", out)[0] == ExitCode.OK
    assert "invoice\u202efdp.exe" in out.read_text(encoding="utf-8")  # the record keeps what was sent
    page, junit = tmp_path / "p.html", tmp_path / "j.xml"
    assert call_cli("report", out, "--html", page, "--junit", junit)[0] == ExitCode.OK
    for written in (page, junit):
        text = written.read_text(encoding="utf-8")
        assert "invoice\ufffdfdp.exe" in text and not any(
            c in text for c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
        )
