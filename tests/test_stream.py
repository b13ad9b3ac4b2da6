"""Streaming mode: time to first token, mid-stream errors, the byte cap, cancellation stops billing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from batchrun import RunOptions, load_job, run_job
from batchrun._client import OpenRouterClient
from batchrun._clock import SystemClock
from batchrun._exceptions import CreditExhausted, RequestFailed
from batchrun._stream import StreamedChat, stream_body, stream_chat
from batchrun._summary_types import Summary
from batchrun.simulator import SimConfig, Simulator

from .conftest import FAKE_KEY, FakeClock, LeapClock, final_rows, journaled_generations, respx_transport, write_job
from .hostile import chat_payload

STREAM_JOB = """
name: streamed
defaults: {params: {max_tokens: 2000}}
models: [openai/gpt-4o-mini]
prompts:
  - id: p
    text: "Say something about {{n}}."
    vars: [{n: 1}, {n: 2}, {n: 3}, {n: 4}]
run: {concurrency: 4, stream: true, max_attempts: 1, timeout_s: 30}
"""
# Far past what any of these runs takes: a deadline comes only when a test's LeapClock brings it.
DEADLINE_S = 60


async def _run(sim: Simulator, tmp_path: Path, clock: Any = None, **run: Any) -> Summary:
    job = load_job(write_job(tmp_path, STREAM_JOB))
    job = replace(job, run=replace(job.run, **run))
    options = RunOptions(
        api_key=FAKE_KEY, base_url=sim.base_url, output=tmp_path / "s.jsonl", clock=clock or FakeClock()
    )
    return (await run_job(job, options)).summary


def test_the_stream_flag_is_added_to_the_encoded_body() -> None:
    assert json.loads(stream_body(b'{"model":"m","messages":[]}')) == {"model": "m", "messages": [], "stream": True}
    assert json.loads(stream_body(b"{}")) == {"stream": True}


async def test_time_to_first_token_is_recorded(tmp_path: Path) -> None:
    # The first token leaves the simulator after its 40 ms latency; the rest trickles after it.
    simulator = Simulator(SimConfig(latency_ms=40, stream_chunk_ms=5, stream_padding=20))
    with simulator.serve_in_thread() as sim:
        await _run(sim, tmp_path, clock=SystemClock())
    rows = final_rows(tmp_path / "s.jsonl")
    assert [r["status"] for r in rows] == ["ok"] * 4
    for row in rows:
        assert 40 <= row["ttft_ms"] <= row["latency_ms"]
        assert row["content"].endswith("more more") and row["cost_status"] == "reported"
        assert row["usage"]["completion_tokens"] > 20 and row["finish_reason"] == "stop"


async def test_a_mid_stream_error_is_classified_and_not_billed(tmp_path: Path) -> None:
    simulator = Simulator(SimConfig(faults={"midstream": 1.0}, stream_padding=20))
    with simulator.serve_in_thread() as sim:
        summary = await _run(sim, tmp_path)
        billed = sim.stats.billed_usd
    rows = final_rows(tmp_path / "s.jsonl")
    for row in rows:
        assert row["status"] == "error" and row["reason"] == "upstream_error"
        assert row["error"]["message"] == "mid-stream: Provider returned error"
        assert row["error"]["error_type"] == "provider_unavailable"  # the typed code (break45 F2)
        assert row["error"]["http_status"] == 502 and row["retryable"] is True
        # finish_reason "error": covered by zero-completion insurance, so nothing is held.
        assert row["cost"] == 0.0 and row["cost_status"] is None
    assert billed == 0.0 and summary["reconciliation"]["unknown_cost_attempts"] == 0


async def test_cancelling_at_the_deadline_stops_billing(tmp_path: Path) -> None:
    # Each answer would stream 2,000 tokens at 4 tokens per 20 ms (10 s); the deadline comes
    # once all four streams have begun (their headers named the generations).
    config = SimConfig(stream_chunk_ms=20, stream_padding=2000)
    simulator = Simulator(config)
    clock = LeapClock(lambda: journaled_generations(tmp_path / "s.jsonl") == 4, by=DEADLINE_S)
    with simulator.serve_in_thread() as sim:
        summary = await _run(sim, tmp_path, clock=clock, deadline_s=DEADLINE_S, grace_s=0)
    generations = list(sim.generations.values())
    rows = final_rows(tmp_path / "s.jsonl")
    assert {r["reason"] for r in rows} == {"deadline"} and summary["stop"] == "deadline"
    assert sim.stats.cancelled_streams == 4 and len(generations) == 4
    full = 2000 + 3  # the padding plus the answer's own words
    for generation in generations:
        assert generation["cancelled"] is True and generation["tokens_completion"] < full / 2
    # Billed: the prompts and the tokens generated before the cancel, far below the full answers.
    full_cost = 4 * (10 * 0.15e-6 + full * 0.60e-6)
    assert 0 < sim.stats.billed_usd < full_cost / 2
    # The ledger held each cancelled attempt's worst case until the end of the run (or learnt its
    # charge by lookup): at least what was billed, to the 12 places the summary keeps.
    assert summary["spent_usd"] >= sim.stats.billed_usd - 1e-12
    # break-14 #10: the id the headers gave before the cancel is kept and looked up at the end.
    assert sorted(r["abandoned_attempts"][0]["generation_id"] for r in rows) == sorted(sim.generations)
    # Each kept id was looked up (whether the simulator had billed it yet is timing).
    assert summary["reconciliation"]["lookups"] >= 4
    assert 0 <= summary["reconciliation"]["resolved_after_record_usd"] <= sim.stats.billed_usd + 1e-9


async def test_a_request_stalled_at_the_deadline_keeps_its_generation_id(tmp_path: Path) -> None:
    """Non-streamed (break-14 #10): the headers, X-Generation-Id with them, came before the
    body stalled; the deadline cancels the attempts, and the ids are kept and looked up."""
    simulator = Simulator(SimConfig(faults={"stall": 1.0}))
    clock = LeapClock(lambda: journaled_generations(tmp_path / "s.jsonl") == 4, by=DEADLINE_S)
    with simulator.serve_in_thread() as sim:
        summary = await _run(sim, tmp_path, clock=clock, deadline_s=DEADLINE_S, grace_s=0, stream=False)
    rows = final_rows(tmp_path / "s.jsonl")
    assert {r["reason"] for r in rows} == {"deadline"} and len(rows) == 4
    # Named as given, not as what was left after pre-flight ("2.98211 s", break-14 #20).
    assert summary["stop_message"] == f"the run deadline of {DEADLINE_S} s was reached"
    # All four were in flight, each with the id its headers gave.
    kept = [r["abandoned_attempts"][0]["generation_id"] for r in rows]
    assert sorted(kept) == sorted(sim.generations) and len(set(kept)) == 4
    for row in rows:
        # The stalled generation was finished and billed; the end-of-run lookup found it,
        # and the row was written again with its cost.
        assert row["cost_status"] == "looked_up" and row["cost_resolved_at"] and row["cost"] > 0
    assert summary["reconciliation"]["unknown_cost_attempts"] == 0
    assert 0 <= summary["reconciliation"]["resolved_after_record_usd"] <= sim.stats.billed_usd + 1e-9


@pytest.mark.parametrize("stream", [True, False])
async def test_an_attempt_timed_out_in_the_deadlines_grace_is_skipped_for_the_resume(
    tmp_path: Path, stream: bool
) -> None:
    # break55 F2: in flight at the deadline, its attempt timed out within the grace (1 of 3): a
    # final error, which the resume that exit 6 asks for never sent again (report exit 0, not 12).
    simulator = Simulator(SimConfig(faults={"stall": 1.0}))
    clock = LeapClock(lambda: journaled_generations(tmp_path / "s.jsonl") >= 4, by=DEADLINE_S)
    with simulator.serve_in_thread() as sim:
        summary = await _run(
            sim, tmp_path, clock=clock, deadline_s=DEADLINE_S, grace_s=30, timeout_s=0.3, max_attempts=3, stream=stream
        )
    rows = final_rows(tmp_path / "s.jsonl")
    assert summary["stop"] == "deadline" and len(rows) == 4
    for row in rows:
        assert (row["status"], row["reason"], row["retryable"]) == ("skipped", "deadline", True)
        # One attempt, or two on a machine too busy to leap before the first timed out: not three.
        assert row["attempts"] < 3 and {e["kind"] for e in row["attempt_errors"]} == {"timeout"}


async def test_an_over_long_stream_is_cut_at_the_byte_cap() -> None:
    # 5 ms between events: the stream (~6 s) outlasts the client's cut (~0.1 s) on any machine,
    # so the server is still writing when it is cut. Without the pause, all ~250 KB fit in the
    # loopback socket's buffers: a busy machine let the handler finish before the client read
    # past its cap, and no stream was cancelled (the count read 0 under a profiler).
    simulator = Simulator(SimConfig(stream_padding=5000, stream_chunk_ms=5))
    with simulator.serve_in_thread() as sim:
        # The stream's cap is the client's, run.max_response_bytes (break-14 #9: it was fixed).
        async with OpenRouterClient(sim.base_url, FAKE_KEY, max_response_bytes=4096) as client:
            body = b'{"max_tokens":20000,"messages":[{"content":"hi","role":"user"}],"model":"openai/gpt-4o-mini"}'
            with pytest.raises(RequestFailed) as caught:
                await stream_chat(client, body, "row-1", SystemClock(), 30)
    # Read once the server has stopped: its handler sees the cut only when it next writes, which
    # a busy machine can delay past the client's return (the count was read as 0 there).
    failure = caught.value
    assert failure.kind == "response_too_large" and not failure.retryable
    # Cut, so generation stopped; what was generated may be billed: the id to look it up by.
    assert failure.maybe_billed and failure.generation_id in sim.generations
    assert sim.stats.cancelled_streams == 1


async def test_a_run_streams_under_run_max_response_bytes(tmp_path: Path) -> None:
    # break-14 #9: the streamed reader had its own fixed 4 MiB cap; the job's cap holds now.
    simulator = Simulator(SimConfig(stream_padding=5000))
    with simulator.serve_in_thread() as sim:
        summary = await _run(sim, tmp_path, max_response_bytes=8192)
    rows = final_rows(tmp_path / "s.jsonl")
    assert [r["error"]["kind"] for r in rows] == ["response_too_large"] * 4
    assert all("8,192-byte cap (run.max_response_bytes)" in r["error"]["message"] for r in rows)
    # (How many streams the simulator saw cancelled depends on how far it got: not asserted.)
    assert summary["total"]["error"] == 4


def _sse(*events: Any) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n" for e in events)


async def _streamed(
    *events: Any, kind: str = "text/event-stream", then: str | None = None, timeout_s: float = 5
) -> StreamedChat:
    """What stream_chat makes of a server sending `events` (JSON values, or raw bytes) as SSE,
    as `kind`; `then` "hang" keeps the stream open after them, "drop" drops the connection."""

    async def body() -> AsyncIterator[bytes]:
        yield _sse(*events)
        if then == "hang":
            await asyncio.Event().wait()  # until the attempt's own timeout cuts it
        elif then == "drop":
            raise httpx.ReadError("connection reset by peer")

    with respx.mock(using="httpx") as mock:
        mock.post("https://or.test/api/v1/chat/completions").mock(
            return_value=httpx.Response(200, headers={"Content-Type": kind}, content=body())
        )
        async with OpenRouterClient("https://or.test/api/v1", FAKE_KEY, transport=respx_transport()) as c:
            return await stream_chat(c, b'{"model":"m"}', None, FakeClock(), timeout_s)


@pytest.mark.parametrize(
    ("events", "kind"),
    [
        # no last chunk, no [DONE]: the stream was cut
        ((b'{"id":"gen-1","choices":[{"delta":{"content":"Par"}}]}',), "bad_response"),
        # an error event with a numeric code, like an error body
        (({"id": "gen-2", "error": {"code": 429, "message": "slow down"}, "choices": []},), "rate_limited"),
        # a chunk of the wrong shape, as a plain reply's `choices` of the wrong shape (break22 m9)
        (
            ({"id": "gen-3", "choices": "nope"}, {"id": "gen-3", "choices": [{"finish_reason": "stop"}]}, b"[DONE]"),
            "bad_response",
        ),
        (({"id": "gen-4", "choices": [[]]}, b"[DONE]"), "bad_response"),
        (({"id": "gen-5", "choices": [{"delta": "Paris", "finish_reason": "stop"}]}, b"[DONE]"), "bad_response"),
        # verify23: a second choice merged into the answer, text that is a number (dropped),
        # text after the finish (appended)
        (({"id": "g", "choices": [{"index": 1, "delta": {"content": "XX"}}]}, b"[DONE]"), "bad_response"),
        (({"id": "g", "choices": [{"delta": {"content": 42}, "finish_reason": "stop"}]}, b"[DONE]"), "bad_response"),
        (
            (
                {"id": "g", "choices": [{"delta": {"content": "Paris"}, "finish_reason": "stop"}]},
                {"id": "g", "choices": [{"delta": {"content": " and Berlin"}}]},
                b"[DONE]",
            ),
            "bad_response",
        ),
        # nothing generated and no finish reason, then [DONE]: a cold start, as a plain reply's
        (
            ({"id": "gen-6", "choices": [{"delta": {"content": ""}, "finish_reason": None}]}, b"[DONE]"),
            "empty_completion",
        ),
        ((b"[DONE]",), "empty_completion"),
        # break41 F1: the finish reason "error" alone, or an error in the choice, as in a plain reply
        (
            ({"id": "gen-7", "choices": [{"delta": {"content": "Par"}, "finish_reason": "error"}]}, b"[DONE]"),
            "upstream_error",
        ),
        (
            ({"id": "gen-8", "choices": [{"delta": {}, "error": {"code": 502, "message": "down"}}]}, b"[DONE]"),
            "upstream_error",
        ),
    ],
)
async def test_a_lying_stream_is_classified(events: tuple[Any, ...], kind: str) -> None:
    with respx.mock(using="httpx") as mock:
        mock.post("https://or.test/api/v1/chat/completions").mock(
            return_value=httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=_sse(*events))
        )
        async with OpenRouterClient("https://or.test/api/v1", FAKE_KEY, transport=respx_transport()) as c:
            with pytest.raises(RequestFailed) as caught:
                await stream_chat(c, b'{"model":"m"}', None, FakeClock(), 5)
    assert caught.value.kind == kind


# The documented mid-stream error event (streaming.mdx): the error at the top level, the choice's
# finish reason "error".
ERROR_EVENT = {"error": {"code": "server_error", "message": "Provider disconnected"}, "choices": [ERROR_CHOICE := {}]}
ERROR_CHOICE.update({"index": 0, "delta": {"content": ""}, "finish_reason": "error"})


@pytest.mark.parametrize(
    "failed",
    [
        {"choices": [{"delta": {"content": "Par"}, "finish_reason": "error"}]},
        {"choices": [{"delta": {"content": "Par"}, "error": {"code": 502, "message": "down"}}]},
        ERROR_EVENT,  # break55 F4: read at once, the charge after it was recorded as a known $0
    ],
)
async def test_a_streamed_choice_that_failed_keeps_the_cost_its_usage_chunk_says(failed: dict[str, Any]) -> None:
    # verify44: raised at the failing chunk, the usage chunk after it was never read: a server
    # billing such replies was counted $0, and a budgeted run went past its budget.
    events = (
        {"id": "gen-9", "choices": [{"delta": {"content": "Par"}}]},
        {"id": "gen-9", **failed},
        {"id": "gen-9", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "cost": 0.00012}},
        b"[DONE]",
    )
    with pytest.raises(RequestFailed) as caught:
        await _streamed(*events)
    assert caught.value.kind == "upstream_error" and caught.value.reported_cost == 0.00012
    assert caught.value.generation_id == "gen-9"


@pytest.mark.parametrize("then", ["hang", "drop"])
async def test_a_stream_cut_after_its_error_event_fails_as_the_event_says_at_a_cost_looked_up(then: str) -> None:
    events = ({"id": "gen-9", "choices": [{"delta": {"content": "Par"}}]}, {"id": "gen-9", **ERROR_EVENT})
    with pytest.raises(RequestFailed) as caught:
        await _streamed(*events, then=then, timeout_s=0.05)
    failure = caught.value
    assert failure.kind == "upstream_error" and failure.message == "mid-stream: Provider disconnected"
    assert failure.maybe_billed and failure.generation_id == "gen-9"


@pytest.mark.parametrize("then", ["hang", "drop"])
async def test_an_answer_whose_stream_is_cut_after_its_finish_chunk_is_kept(then: str) -> None:
    # break55 F3: the answer, its finish reason and its cost had come; the server kept the stream
    # open (or dropped it) before [DONE]: the answer was thrown away and bought twice more.
    events = (
        {"id": "gen-9", "choices": [{"delta": {"content": "Paris"}}]},
        {"id": "gen-9", "choices": [{"delta": {}, "finish_reason": "stop"}], "usage": {"cost": 0.00003}},
    )
    result = await _streamed(*events, then=then, timeout_s=0.05)
    assert result.content == "Paris" and result.finish_reason == "stop" and result.cost == 0.00003
    # Cut before the finish chunk, it is still no answer.
    with pytest.raises(RequestFailed) as caught:
        await _streamed(events[0], then=then, timeout_s=0.05)
    assert caught.value.kind == {"hang": "timeout", "drop": "network"}[then] and caught.value.maybe_billed


async def test_parallel_tool_calls_streamed_at_one_index_stay_two_calls() -> None:
    # break55 F1: adapters stream parallel calls all at index 0 (or with no index), each with its
    # own id: the second was glued onto the first, '{"city":"Paris"}{"tz":"UTC"}', and lost.
    def call(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "gen-t", "choices": [{"delta": {"tool_calls": [delta]}, "finish_reason": finish}]}

    for index in ({"index": 0}, {}):
        events = (
            call({**index, "id": "call_A", "function": {"name": "get_weather", "arguments": '{"city":'}}),
            call({**index, "function": {"arguments": '"Paris"}'}}),
            call({**index, "id": "call_B", "function": {"name": "get_time", "arguments": '{"tz":"UTC"}'}}),
            call({**index, "id": "call_B", "function": {"arguments": ""}}, "tool_calls"),
            b"[DONE]",
        )
        result = await _streamed(*events)
        assert list(result.tool_calls or ()) == [
            {"id": "call_A", "name": "get_weather", "arguments": '{"city":"Paris"}'},
            {"id": "call_B", "name": "get_time", "arguments": '{"tz":"UTC"}'},
        ], index


async def test_a_continuation_delta_with_an_empty_id_belongs_to_its_call() -> None:
    # verify58 F1: DashScope/Qwen adapters repeat the id as "" on every continuation delta: each was
    # read as another call, get_weather's arguments left empty beside a nameless call holding them.
    def call(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "gen-t", "choices": [{"delta": {"tool_calls": [delta]}, "finish_reason": finish}]}

    events = (
        call({"index": 0, "id": "call_1", "function": {"name": "get_weather", "arguments": ""}}),
        call({"index": 0, "id": "", "function": {"arguments": '{"city":'}}),
        call({"index": 0, "id": "", "function": {"arguments": '"Paris"}'}}, "tool_calls"),
        b"[DONE]",
    )
    result = await _streamed(*events)
    assert list(result.tool_calls or ()) == [{"id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'}]


async def test_a_usage_without_a_cost_does_not_erase_the_cost_one_before_it_said() -> None:
    # break55 F5: the second usage chunk (tokens, no cost) replaced the first: the row's cost was
    # an estimate 73x low.
    events = (
        {"id": "g", "choices": [{"delta": {"content": "hi"}, "finish_reason": "stop"}], "usage": {"cost": 0.002}},
        {"id": "g", "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 3}},
        b"[DONE]",
    )
    assert (await _streamed(*events)).cost == 0.002


async def test_a_streams_provider_is_the_one_its_router_metadata_selected() -> None:
    # out-161 F2: router-metadata.mdx, "the metadata arrives on the final chunk before [DONE]":
    # streamed rows recorded the chunks' own `provider` (or none) where a plain reply said Azure.
    metadata = {"endpoints": {"available": [{"provider": "DeepInfra"}, {"provider": "Azure", "selected": True}]}}
    events = (
        {"id": "g", "provider": "DeepInfra", "choices": [{"delta": {"content": "hi"}}]},
        {"id": "g", "choices": [{"delta": {}, "finish_reason": "stop"}], "openrouter_metadata": metadata},
        {"id": "g", "provider": "DeepInfra", "choices": [], "usage": {"cost": 0.001}},
        b"[DONE]",
    )
    assert (await _streamed(*events)).provider == "Azure"
    assert (await _streamed(*events[:1], *events[2:])).provider == "DeepInfra"  # no metadata: the chunks'


async def test_an_event_stream_is_utf_8_whatever_charset_its_content_type_names() -> None:
    # break55 F6: `charset=iso-8859-1` was obeyed: Zürich was recorded as "ZÃ¼rich".
    chunk = {"id": "g", "choices": [{"delta": {"content": "Zürich €"}, "finish_reason": "stop"}]}
    events = (json.dumps(chunk, ensure_ascii=False).encode(), b"[DONE]")  # the bytes UTF-8, not \u escapes
    result = await _streamed(*events, kind="text/event-stream; charset=iso-8859-1")
    assert result.content == "Zürich €"


@pytest.mark.parametrize("control", ["\x00", "\x0b", "\x1b[31m", "\x7f"], ids=["nul", "vt", "esc", "del"])
async def test_a_stream_chunk_with_a_raw_control_character_in_a_string_is_read_not_dropped(control: str) -> None:
    # out-183 F11: a chunk whose content held a raw NUL, VT or ESC (no JSON reader takes those
    # unescaped) was skipped as no JSON: the row was `ok` with its content gone.
    content = f"red{control}text"
    chunk = {"id": "g", "choices": [{"delta": {"content": content}, "finish_reason": "stop"}]}
    raw = json.dumps(chunk, ensure_ascii=False).replace(json.dumps(control)[1:-1], control).encode()
    assert control.encode() in raw
    result = await _streamed(raw, b"[DONE]")
    assert result.content == content


async def test_a_stream_that_echoes_the_key_is_scrubbed_and_garbage_is_skipped() -> None:
    events = (
        b": OPENROUTER PROCESSING",
        b"not json at all",
        {
            "id": "gen-9",
            "model": f"m-{FAKE_KEY}",
            "provider": f"p {FAKE_KEY}",
            "choices": [{"delta": {"content": f"key is {FAKE_KEY}"}}],
        },
        {"id": "gen-9", "choices": [{"delta": {}, "finish_reason": "stop"}], "usage": {"cost": 0.001}},
        b"[DONE]",
    )
    result = await _streamed(*events)
    assert FAKE_KEY not in result.content and result.content == "key is [key]"
    assert result.model == "m-[key]" and result.provider == "p [key]"
    assert result.generation_id == "gen-9" and result.usage == {"cost": 0.001} and result.finish_reason == "stop"


async def _streamed_usage(usage: Any) -> StreamedChat:
    events = (
        {"id": "gen-7", "choices": [{"delta": {"content": "hi"}}]},
        {"id": "gen-7", "choices": [{"delta": {}, "finish_reason": "stop"}], "usage": usage},
        b"[DONE]",
    )
    return await _streamed(*events)


@pytest.mark.parametrize("cost", [-1.0, "0.001", True, "NaN"])
async def test_a_streamed_usage_is_filtered_like_a_plain_reply(cost: Any) -> None:
    """The last chunk's usage goes through the same type filter as a non-streamed reply:
    counts that are not counts are dropped, a key in a cost_details name is masked, and a
    cost that cannot be believed is dropped and marks the cost as rejected (worst case held)."""
    usage = {
        "prompt_tokens": "12",
        "completion_tokens": 3,
        "cost": cost,
        "cost_details": {f"x{FAKE_KEY}": 0.5},
        "completion_tokens_details": {"reasoning_tokens": -1},
        "extra": FAKE_KEY,
    }
    result = await _streamed_usage(usage)
    assert result.usage == {
        "completion_tokens": 3,
        "completion_tokens_details": {},
        "cost_details": {"x[key]": 0.5},
    }
    assert result.cost is None and result.cost_rejected is True
    assert FAKE_KEY not in json.dumps(result.usage)


async def test_a_streamed_usage_that_is_not_an_object_is_empty() -> None:
    result = await _streamed_usage([1, 2])
    assert result.usage == {} and result.cost is None and result.cost_rejected is False


async def test_a_streams_reasoning_and_refusal_are_kept_as_a_plain_replys_are() -> None:
    # verify23: streams dropped `reasoning` and `refusal`, which a plain reply records.
    events = (
        {"id": "gen-8", "choices": [{"delta": {"reasoning": "Think "}}]},
        {"id": "gen-8", "choices": [{"delta": {"reasoning": f"about {FAKE_KEY}."}}]},
        {"id": "gen-8", "choices": [{"delta": {"refusal": "I won't."}, "finish_reason": "stop"}]},
        b"[DONE]",
    )
    result = await _streamed(*events)
    assert result.reasoning == "Think about [key]." and result.refusal == "I won't." and result.content == ""


async def _json_to_a_stream(
    status: int, body: dict[str, Any], kind: str | None = "application/json", before: bytes = b""
) -> StreamedChat:
    """stream_chat against a server that answers the streamed request with plain JSON, as `kind`
    (after `before`)."""
    headers = {} if kind is None else {"Content-Type": kind}
    with respx.mock(using="httpx") as mock:
        answer = httpx.Response(status, headers=headers, content=before + json.dumps(body).encode())
        mock.post("https://or.test/api/v1/chat/completions").mock(return_value=answer)
        async with OpenRouterClient("https://or.test/api/v1", FAKE_KEY, transport=respx_transport()) as c:
            return await stream_chat(c, b'{"model":"m"}', None, FakeClock(), 5)


@pytest.mark.parametrize(
    "kind", ["application/json", "application/json; charset=utf-8", "text/plain", None, "text/event-stream"]
)
async def test_a_json_answer_to_a_streamed_request_is_read_as_a_plain_reply(kind: str | None) -> None:
    # break34 m1, verify34 N2: an endpoint that ignores `stream` answered whole: a "network" error
    # (the SSE library's words), retried, the answer paid for and thrown away. Labelled as events
    # too (break36): no event in the body, which is one JSON object.
    result = await _json_to_a_stream(200, chat_payload("Paris", id="gen-json", usage={"cost": 0.002}), kind)
    assert isinstance(result, StreamedChat) and result.content == "Paris"
    assert result.generation_id == "gen-json" and result.cost == 0.002 and result.ttft_ms is None


@pytest.mark.parametrize("kind", ["application/json", "text/event-stream"])
async def test_an_error_sent_with_200_to_a_streamed_request_is_classified_as_in_a_plain_reply(kind: str) -> None:
    # break34 m1: a 402 in a 200's JSON body was retried as a network error, exit 1, not a stop.
    body = {"error": {"code": 402, "message": "Insufficient credits"}, "choices": None}
    with pytest.raises(CreditExhausted) as caught:
        await _json_to_a_stream(200, body, kind)
    assert caught.value.kind == "credits"


async def test_keep_alive_comments_before_a_json_answer_labelled_as_events_are_passed_over() -> None:
    # break38 F7: ":x" before the one JSON object made it a bad_response, retried and paid again.
    body = chat_payload("Paris", id="gen-json", usage={"cost": 0.002})
    result = await _json_to_a_stream(200, body, "text/event-stream", before=b": OPENROUTER PROCESSING\n\n:x\n  ")
    assert result.content == "Paris" and result.cost == 0.002


async def test_events_after_text_that_is_not_json_are_still_a_stream() -> None:
    # Only a body with no event at all is read as a plain reply: a stream that opens with a
    # comment or a stray line is read as events.
    first = {"id": "gen-8", "choices": [{"delta": {"content": "Par"}}]}
    last = {"id": "gen-8", "choices": [{"delta": {"content": "is"}, "finish_reason": "stop"}]}
    assert (await _streamed(b"not json", b'{"still": "no"', first, last, b"[DONE]")).content == "Paris"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16-le", "utf-32"])
async def test_a_text_error_to_a_streamed_request_echoing_the_key_is_read_and_scrubbed(encoding: str) -> None:
    # out-182: a body that is no JSON, in UTF-16 or UTF-32, read as UTF-8 held the key between NULs.
    body = f"upstream said: {FAKE_KEY}".encode(encoding)
    with respx.mock(using="httpx") as mock:
        mock.post("https://or.test/api/v1/chat/completions").mock(
            return_value=httpx.Response(400, headers={"Content-Type": "text/plain"}, content=body)
        )
        async with OpenRouterClient("https://or.test/api/v1", FAKE_KEY, transport=respx_transport()) as c:
            with pytest.raises(RequestFailed) as caught:
                await stream_chat(c, b'{"model":"m"}', None, FakeClock(), 5)
    assert caught.value.message.startswith("upstream said: [key]"), caught.value.message
