"""OpenRouter's documented behaviour, end to end against the simulator on loopback:
rate-limit scope and caps, availability errors, start-up retries, routing records."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from batchrun import ExitCode, RunOptions, load_job, run_job
from batchrun._client import OpenRouterClient
from batchrun._exceptions import RateLimited
from batchrun._preflight import missing_account_api, read_account
from batchrun._reader import final_records
from batchrun._retry import AttemptLog, RetryPolicy, call_with_retries
from batchrun.simulator import SimConfig, Simulator

from .conftest import FAKE_KEY, SMALL_JOB, FakeClock, call_cli, read_rows, write_job

FREE_A = "meta-llama/llama-3.3-70b-instruct:free"
FREE_B = "google/gemma-3-27b-it:free"
PAID = "openai/gpt-4o-mini"


async def run(
    job_path: Path, sim: Simulator, tmp_path: Path, clock: FakeClock | None = None, **settings: Any
) -> tuple[Any, list[dict[str, Any]], list[str]]:
    job = load_job(job_path)
    job = replace(job, run=replace(job.run, **settings))
    output = tmp_path / "out.jsonl"
    notices: list[str] = []
    report = await run_job(
        job,
        RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, output=output, clock=clock or FakeClock()),
        notice=notices.append,
    )
    return report, read_rows(output), notices


def models_job(tmp_path: Path, *models: str) -> Path:
    return write_job(
        tmp_path,
        SMALL_JOB.replace(
            "models: [openai/gpt-4o-mini, google/gemini-2.0-flash-001]", f"models: [{', '.join(models)}]"
        ),
    )


@pytest.fixture
def sim_config() -> SimConfig:
    config = SimConfig(seed=5)
    config.prices[FREE_B] = (0.0, 0.0, 0.0)
    return config


async def test_a_free_daily_cap_stops_every_free_model_and_no_paid_one(sim: Simulator, tmp_path: Path) -> None:
    """limits.mdx: free-model limits are account-wide. The cap is recognised from the
    X-RateLimit-* headers and a reset past the run's horizon, and no wait exceeds max_wait_s."""
    sim.config.free_daily_cap = 2
    # The simulator's reset is the next UTC midnight by its clock: the fake one, at 08:00, so
    # the test does not depend on the hour it runs at (it failed in the last minutes of a day).
    clock = FakeClock()
    sim.clock = clock.time
    job = models_job(tmp_path, FREE_A, FREE_B, PAID)
    # No deadline here (the fake clock would reach it at once): the horizon is max_elapsed_s.
    _, rows, _ = await run(job, sim, tmp_path, clock=clock, concurrency=1, max_wait_s=60, max_elapsed_s=600)
    free = [r for r in rows if r["model"].endswith(":free")]
    assert sum(r["status"] == "ok" for r in free) == 2
    assert {(r["status"], r["reason"]) for r in free if r["status"] != "ok"} == {("skipped", "daily_cap")}
    assert all(r["status"] == "ok" for r in rows if r["model"] == PAID)
    assert sim.stats.by_model[FREE_A] + sim.stats.by_model[FREE_B] == 3  # 2 answered, 1 capped, then none sent
    assert all(s <= 60 for s in clock.sleeps)


async def test_a_providers_per_day_429_never_skips_a_paid_model(sim: Simulator, tmp_path: Path) -> None:
    sim.config.faults["429"] = 1.0  # provider 429s whose raw text says "requests per day"
    _, rows, _ = await run(models_job(tmp_path, PAID), sim, tmp_path, concurrency=2, max_attempts=2)
    assert {(r["status"], r["reason"]) for r in rows} == {("error", "rate_limited")}
    assert all(r["error"]["error_type"] == "rate_limit_exceeded" for r in rows)
    assert sim.stats.chat_requests == 2 * len(rows)  # every row was tried: no model-wide stop


@pytest.mark.parametrize(
    "code",
    [
        "model_not_found",
        "no_endpoints",
        "model_deprecated",
        "model_unavailable_upstream",
        "privacy_restricted",
        "free_variant_ended",
        "region_restricted",
    ],
)
async def test_a_model_wide_availability_code_stops_that_models_rows_unsent(
    sim: Simulator, tmp_path: Path, code: str
) -> None:
    sim.config.unavailable["google/gemini-2.0-flash-001"] = code
    _, rows, _ = await run(Path(write_job(tmp_path, SMALL_JOB)), sim, tmp_path, concurrency=1)
    gemini = [r for r in rows if r["model"] == "google/gemini-2.0-flash-001"]
    [first] = [r for r in gemini if r["status"] == "error"]
    assert first["reason"] == code and first["retryable"] is False and first["error"]["availability_code"] == code
    if code != "model_not_found":
        assert "fallback_models: openai/gpt-4o-mini" in first["error"]["message"]
    assert {(r["status"], r["reason"]) for r in gemini if r is not first} == {("skipped", code)}
    assert sim.stats.by_model["google/gemini-2.0-flash-001"] == 1  # the rest were never sent
    assert all(r["status"] == "ok" for r in rows if r["model"] == PAID)


async def test_rows_a_model_wide_code_ended_are_run_again_by_retry_errors_once_it_is_back(
    sim: Simulator, tmp_path: Path
) -> None:
    # out-184 F4: the rows in flight when the model was found unavailable were errors (not
    # retryable), the others skipped; once the model was back no resume ran them, not even
    # --resume --retry-errors: exit 1 for good.
    sim.config.unavailable["google/gemini-2.0-flash-001"] = "model_not_found"
    job_path = Path(write_job(tmp_path, SMALL_JOB))
    await run(job_path, sim, tmp_path, concurrency=4)
    sim.config.unavailable.clear()
    job = load_job(job_path)
    options = RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, output=tmp_path / "out.jsonl", clock=FakeClock())
    await run_job(job, replace(options, resume=True))
    assert {r["reason"] for r in final_records(tmp_path / "out.jsonl") if r["status"] == "error"} == {"model_not_found"}
    report = await run_job(job, replace(options, resume=True, retry_errors=True))
    assert {r["status"] for r in final_records(tmp_path / "out.jsonl")} == {"ok"}
    assert report.summary["exit_code"] == 0


async def test_a_request_a_constraint_filtered_is_its_rows_error_alone(sim: Simulator, tmp_path: Path) -> None:
    # out-161 F1: errors-and-debugging.mdx, constraint_filtered: "A routing constraint - max price,
    # context length, require_parameters ... - eliminated every endpoint. Relax the constraint
    # ... and retry": the request's, not the model's. One over-long prompt skipped every other row.
    sim.config.unavailable["google/gemini-2.0-flash-001"] = "constraint_filtered"
    _, rows, _ = await run(Path(write_job(tmp_path, SMALL_JOB)), sim, tmp_path, concurrency=1)
    gemini = [r for r in rows if r["model"] == "google/gemini-2.0-flash-001"]
    assert {(r["status"], r["reason"], r["retryable"]) for r in gemini} == {("error", "constraint_filtered", False)}
    assert sim.stats.by_model["google/gemini-2.0-flash-001"] == len(gemini) == 10  # each sent once, not retried
    assert all(r["status"] == "ok" for r in rows if r["model"] == PAID)


@pytest.mark.parametrize("fault", ["capacity_exhausted", "temporarily_unavailable"])
async def test_capacity_and_temporary_unavailability_are_retried_with_their_wait(
    sim: Simulator, tmp_path: Path, fault: str
) -> None:
    sim.config.faults[fault] = 0.3
    _, rows, _ = await run(Path(write_job(tmp_path, SMALL_JOB)), sim, tmp_path, concurrency=2, max_attempts=10)
    assert all(r["status"] == "ok" for r in rows)
    waits = [f["wait_s"] for r in rows for f in r["attempt_errors"] if f["kind"] == fault]
    assert waits and all(w == 1.0 for w in waits)  # availability.retry_after and Retry-After: 1


@pytest.mark.parametrize("fault", ["capacity_exhausted", "temporarily_unavailable"])
async def test_a_wait_over_the_cap_skips_the_models_waiting_rows_at_once(
    sim: Simulator, tmp_path: Path, fault: str
) -> None:
    # break45 F3: each row that waited for the model's scope went out after max_wait_s and heard
    # the same "retry after 40 s": one row per max_wait_s (40 rows in 78 s; a day for 1,000), each
    # an error. The scope now waits the server's time; its rows are skipped, for a resume.
    sim.config.faults[fault] = 1.0  # every answer: retry after 1 s, over the 0.5 s cap
    report, rows, _ = await run(Path(write_job(tmp_path, SMALL_JOB)), sim, tmp_path, concurrency=2, max_wait_s=0.5)
    assert {(r["status"], r["reason"]) for r in rows} == {("skipped", fault)}
    assert sim.stats.chat_requests <= 2 * 2 and len(rows) == 20  # what was in flight per model, at most
    assert "over the 0.5 s cap" in next(r for r in rows if r["error"])["error"]["message"]


async def test_a_model_told_to_wait_does_not_hold_the_workers_from_the_other_models(
    sim: Simulator, tmp_path: Path
) -> None:
    # verify48 N5: each worker took a row of the model at capacity and waited its 60 s out; the
    # other models' rows went unsent for ten minutes. Its rows are held back while others can go.
    sim.config.unavailable[PAID] = "capacity_exhausted"  # retry after 60 s, within max_wait_s
    _, rows, _ = await run(
        Path(write_job(tmp_path, SMALL_JOB)), sim, tmp_path, concurrency=1, max_attempts=2, max_wait_s=120
    )
    order = [row["model"] for row in rows]
    assert order[0] == PAID and order[1:11] == ["google/gemini-2.0-flash-001"] * 10, order
    assert {row["status"] for row in rows if row["model"] == PAID} == {"error"}


async def test_a_wait_past_the_deadline_ends_the_retrying_instead_of_waiting() -> None:
    clock = FakeClock()
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise RateLimited("rate_limited", "slow down", 429, 500.0)

    with pytest.raises(RateLimited):
        await call_with_retries(
            attempt, RetryPolicy(max_wait_s=1000), clock.sleep, AttemptLog(), time_left=lambda: 100.0
        )
    assert calls == 1 and clock.sleeps == []  # never slept the 500 s the deadline cannot hold


async def test_the_provider_is_recorded_from_router_metadata(sim: Simulator, tmp_path: Path) -> None:
    _, rows, _ = await run(Path(write_job(tmp_path, SMALL_JOB)), sim, tmp_path)
    assert {r["provider"] for r in rows} == {"SimCloud"}


def account(folder: Path, models: list[httpx.Response], key: list[httpx.Response]) -> tuple[Any, Any, FakeClock]:
    clock = FakeClock()
    job = load_job(models_job(folder, PAID))

    async def go() -> tuple[Any, Any]:
        with respx.mock(using="httpx") as mock:
            mock.get("https://or.test/api/v1/models").mock(side_effect=models)
            mock.get("https://or.test/api/v1/key").mock(side_effect=key)
            async with OpenRouterClient("https://or.test/api/v1", FAKE_KEY, clock=clock) as client:
                return await read_account(client, job, RunOptions(api_key=FAKE_KEY, clock=clock), lambda: None)

    models_info, key_info = asyncio.run(go())
    return models_info, key_info, clock


MODELS = {"data": [{"id": PAID, "pricing": {"prompt": "0.00000015", "completion": "0.0000006"}}]}
KEY = {"data": {"label": "k", "limit": None, "limit_remaining": None, "usage": 0, "is_free_tier": False}}


def test_pre_flight_retries_a_503_from_models_and_a_500_from_key(tmp_path: Path) -> None:
    models, key, clock = account(
        tmp_path,
        [httpx.Response(503, json={"error": {"code": 503, "message": "busy"}}), httpx.Response(200, json=MODELS)],
        [httpx.Response(500, json={"error": {"code": 500, "message": "oops"}}), httpx.Response(200, json=KEY)],
    )
    assert models is not None and PAID in models and key is not None and key["label"] == "k"
    assert len(clock.sleeps) == 2  # one backoff each, through the injected clock


def test_the_notice_names_which_account_endpoint_is_missing(tmp_path: Path) -> None:
    models, key, _ = account(tmp_path, [httpx.Response(200, json=MODELS)], [httpx.Response(404)])
    assert missing_account_api("https://or.test", models, key) == (
        "https://or.test has no /key: credit-limit features are off for this run"
    )
    assert "has no /models:" in (missing_account_api("u", None, key or {}) or "")
    assert "has no /models or /key:" in (missing_account_api("u/v1", None, None) or "")
    # break27 m6: the host and port alone, as typed after `batchrun simulate`: the URL is named.
    said = missing_account_api("http://127.0.0.1:8199", None, None) or ""
    assert "(a base URL ends in its API's version, as http://127.0.0.1:8199/api/v1 would)" in said
    # verify27 m6: the chat URL itself was told to add /api/v1 after /chat/completions.
    said = missing_account_api("http://h:1/api/v1/chat/completions/", None, None) or ""
    assert "(a base URL stops before /chat/completions: http://h:1/api/v1)" in said
    assert "(" not in (missing_account_api("http://h:1/custom/path", None, None) or "")
    assert missing_account_api("u", models, {"label": "k"}) is None


@pytest.mark.parametrize("stream", [False, True], ids=["sync", "stream"])
def test_the_tier_that_served_an_answer_is_recorded(tmp_path: Path, stream: bool) -> None:
    # break32 m3: service-tiers.mdx, "the response will indicate which tier was actually used.
    # Your request is billed at the actual served tier's rate"; only its price was read.
    job = write_job(tmp_path, SMALL_JOB.replace("params: {", "params: {service_tier: fast, "))
    out = tmp_path / "tier.jsonl"
    code, _, err = call_cli(job, "--simulate", "-o", out, "-q", *(["--stream"] if stream else []))
    assert code == ExitCode.OK, err
    assert {r["service_tier"] for r in read_rows(out)} == {"priority"}  # fast is reported as priority
