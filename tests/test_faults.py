"""Integration over loopback: the runner against a misbehaving simulator."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from batchrun import AuthFailed, ExitCode, RunOptions, load_job, run_job
from batchrun._results import final_records
from batchrun._verdict import decide
from batchrun.simulator import SimConfig, Simulator

from .conftest import FAKE_KEY, SMALL_JOB, FakeClock, LeapClock, cli, read_rows, rows_written, write_job


async def run(
    job_path: Path, sim: Simulator, tmp_path: Path, clock: FakeClock | None = None, key: str = FAKE_KEY, **settings: Any
) -> tuple[Any, list[dict[str, Any]]]:
    job = load_job(job_path)
    job = replace(job, run=replace(job.run, **settings))
    output = tmp_path / "out.jsonl"
    report = await run_job(
        job, RunOptions(api_key=key, base_url=sim.base_url, output=output, clock=clock or FakeClock())
    )
    return report, read_rows(output)


FREE = "meta-llama/llama-3.3-70b-instruct:free"


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(seed=11)


async def test_twenty_percent_mixed_transient_faults_all_end_ok(
    sim: Simulator, small_job: Path, tmp_path: Path
) -> None:
    sim.config.faults = {
        "503": 0.04,
        "500": 0.03,
        "529": 0.02,
        "reset": 0.03,
        "cut": 0.03,
        "truncate": 0.02,
        "error200": 0.02,
        "choice_error": 0.01,
    }
    report, rows = await run(small_job, sim, tmp_path, concurrency=4, max_attempts=12)
    assert len(rows) == 20 and all(r["status"] == "ok" for r in rows)
    assert sum(r["attempts"] for r in rows) > 20  # faults did happen, and were ridden through
    kinds = {f["kind"] for r in rows for f in r["attempt_errors"]}
    assert kinds & {"network", "bad_response"} and kinds & {
        "no_provider",
        "server_error",
        "overloaded",
        "upstream_error",
    }
    assert sim.stats.chat_requests == sum(r["attempts"] for r in rows)


async def test_a_daily_cap_skips_only_that_model(sim: Simulator, tmp_path: Path) -> None:
    sim.config.free_daily_cap = 3
    job = write_job(
        tmp_path,
        SMALL_JOB.replace(
            "models: [openai/gpt-4o-mini, google/gemini-2.0-flash-001]",
            "models: [openai/gpt-4o-mini, meta-llama/llama-3.3-70b-instruct:free]",
        ),
    )
    # The simulator's reset is the next UTC midnight by its clock: here the fake one, at
    # 08:00, so the test does not depend on the hour it runs at (it failed near midnight).
    clock = FakeClock()
    sim.clock = clock.time
    report, rows = await run(job, sim, tmp_path, clock=clock, concurrency=1)
    free = [r for r in rows if r["model"].endswith(":free")]
    paid = [r for r in rows if not r["model"].endswith(":free")]
    assert sum(r["status"] == "ok" for r in free) == 3
    assert {(r["status"], r["reason"]) for r in free if r["status"] != "ok"} == {("skipped", "daily_cap")}
    assert all(r["status"] == "ok" for r in paid) and len(paid) == 10
    assert sim.stats.by_model["meta-llama/llama-3.3-70b-instruct:free"] == 4  # 3 answered, 1 capped, then none
    assert decide(report.summary, load_job(job).run)[0] == ExitCode.ERRORS


async def test_rows_waiting_on_a_model_whose_daily_cap_is_reached_are_skipped_at_once(
    sim: Simulator, tmp_path: Path
) -> None:
    # break25 F4: after the daily cap's 429, the rows already waiting on the model's scope each
    # waited out max_wait_s, then went out into the closed limit: 15 more 429s and 141 s.
    sim.config.free_daily_cap = 3
    job = write_job(tmp_path, SMALL_JOB.replace("[openai/gpt-4o-mini, google/gemini-2.0-flash-001]", f"[{FREE}]"))
    sim.clock = FakeClock().time  # its reset, the next UTC midnight, is weeks past the real run's horizon
    job_run = load_job(job)
    job_run = replace(job_run, run=replace(job_run.run, concurrency=8, max_wait_s=600.0))
    out = tmp_path / "out.jsonl"
    options = RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, output=out)  # real time: waits are real
    report = await asyncio.wait_for(run_job(job_run, options), 60)  # a bound, not a measure: 600 s waits before
    rows = read_rows(out)
    assert sum(r["status"] == "ok" for r in rows) == 3 and len(rows) == 10
    assert {(r["status"], r["reason"]) for r in rows if r["status"] != "ok"} == {("skipped", "daily_cap")}
    assert sim.stats.by_model[FREE] <= 3 + 8  # what was in flight when the cap was learnt, at most
    assert decide(report.summary, job_run.run)[0] == ExitCode.ERRORS


async def test_a_refused_key_stops_before_any_chat_request(sim: Simulator, small_job: Path, tmp_path: Path) -> None:
    sim.config.require_key = "the-right-key"
    with pytest.raises(AuthFailed):
        await run(small_job, sim, tmp_path)
    assert sim.stats.chat_requests == 0


async def test_a_401_mid_run_stops_the_run_at_once(sim: Simulator, small_job: Path, tmp_path: Path) -> None:
    sim.config.faults = {"401": 0.3}
    report, rows = await run(small_job, sim, tmp_path, concurrency=1)
    assert report.outcome.stop == "auth"
    assert sim.stats.chat_requests <= sum(r.get("attempts") or 0 for r in rows)
    refused = next(r for r in rows if r["status"] != "ok")
    assert refused["attempts"] == 1 and all(r["status"] == "ok" for r in rows[: rows.index(refused)])
    # The row the 401 met is skipped as the rest: never answered (out-157 F1: an error no resume sent).
    assert {(r["status"], r["reason"]) for r in rows[rows.index(refused) :]} == {("skipped", "auth")}
    assert len(rows) == 20
    sim.config.faults = {}  # the key fixed: a resume answers every row, exit 0
    job = load_job(small_job)
    output = tmp_path / "out.jsonl"
    options = RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, output=output, clock=FakeClock(), resume=True)
    report = await run_job(job, options)
    assert decide(report.summary, job.run)[0] == ExitCode.OK
    assert {r["status"] for r in final_records(output)} == {"ok"}


async def test_a_key_limit_402_stops_the_run_and_nothing_is_sent_after(
    sim: Simulator, small_job: Path, tmp_path: Path
) -> None:
    sim.config.faults = {"402": 0.15}
    report, rows = await run(small_job, sim, tmp_path, concurrency=3)
    assert report.outcome.stop == "credits"
    assert decide(report.summary, load_job(small_job).run)[0] == ExitCode.BUDGET
    assert len(rows) == 20 and len({r["id"] for r in rows}) == 20
    # Every request the server saw belongs to a row's attempts: nothing went out after the stop.
    assert sim.stats.chat_requests <= sum(r.get("attempts") or 0 for r in rows)
    assert any(r["status"] == "skipped" and r["reason"] == "credits" for r in rows)


async def test_a_hung_request_is_cut_by_the_timeout(sim: Simulator, tmp_path: Path) -> None:
    sim.config.faults = {"hang": 1.0}
    job = write_job(
        tmp_path,
        """
        name: hang
        models: [openai/gpt-4o-mini]
        prompts: [{id: p, text: hello}]
    """,
    )
    report, rows = await run(job, sim, tmp_path, timeout_s=0.3, max_attempts=2)
    assert len(rows) == 1 and rows[0]["status"] == "error" and rows[0]["reason"] == "timeout"
    assert rows[0]["retryable"] is True and rows[0]["attempts"] == 2


async def test_rate_limits_are_ridden_through_with_the_servers_wait(
    sim: Simulator, small_job: Path, tmp_path: Path
) -> None:
    sim.config.rate_limit_rps = 2
    sim.config.rate_limit_header = "retry-after"
    clock = FakeClock()
    sim.clock = clock.time  # the server's windows and the runner's waits on one (virtual) time
    report, rows = await run(small_job, sim, tmp_path, clock=clock, concurrency=4, max_attempts=8, max_elapsed_s=3600)
    assert len(rows) == 20 and all(r["status"] == "ok" for r in rows)  # every row rode the 429s through
    limited = [f for r in rows for f in r["attempt_errors"] if f["kind"] == "rate_limited"]
    assert limited and all(f["wait_s"] == 1.0 for f in limited)  # Retry-After: 1, never shortened
    assert sim.stats.chat_requests == 20 + len(limited)  # one retry per 429, nothing else
    # 2 requests a second: 20 rows take at least 9 s of (virtual) time, and the run waited them out.
    assert clock.now >= 9 and report.summary["total"]["ok"] == 20


def test_the_deadline_stops_the_run_with_its_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The deadline comes once the first row is written (a LeapClock), not after a second of
    # real time that a busy machine may spend before any row.
    out = tmp_path / "d.jsonl"
    LeapClock(lambda: rows_written(out) >= 1, by=60).patch_system_clock(monkeypatch)
    job = write_job(tmp_path, SMALL_JOB.replace("repeat: 2", "repeat: 50"))
    result = cli(
        job, "--simulate", "--sim", "latency_ms=100", "--deadline", "60", "--grace", "0.2", "-o", out, "--quiet"
    )
    assert result.returncode == ExitCode.DEADLINE, result.stderr
    rows = read_rows(out)
    assert len(rows) == 500 and len({r["id"] for r in rows}) == 500
    assert {r["reason"] for r in rows if r["status"] == "skipped"} == {"deadline"}
    assert sum(r["status"] == "ok" for r in rows) < 100
    assert "stopped: deadline" in result.stderr


@pytest.mark.parametrize(("reset_s", "reason"), [(60.0, "rate_limited"), (7200.0, "daily_cap")])
def test_a_platform_limit_is_a_daily_cap_only_when_its_reset_is_hours_away(reset_s: float, reason: str) -> None:
    # break32 m1: a per-minute limit (reset in 60 s) past a 20 s deadline was "a daily cap", exit 1.
    from types import SimpleNamespace
    from typing import cast

    from batchrun._exceptions import RateLimited
    from batchrun._matrix import Request
    from batchrun._retry import RetryPolicy
    from batchrun._stops import Stops

    stops = Stops(FakeClock(), RetryPolicy(), 1.0, 20.0)
    stops.start_deadline(20.0)
    limited = RateLimited("rate_limited", "Rate limit exceeded", 429, reset_s)
    limited.platform, limited.limit_wait = True, reset_s
    request = cast(Request, SimpleNamespace(model="acme/m", id="r1"))
    too_long = stops.too_long(limited)
    assert too_long is not None  # past the deadline, or the wait cap too
    assert stops.react(request, limited, too_long) == ("skipped", reason)


@pytest.mark.parametrize(("reason", "grace"), [("auth", 5.0), ("credits", 5.0), ("io", 5.0)])
async def test_answers_in_flight_at_a_refused_key_get_their_grace(reason: str, grace: float) -> None:
    # out-160 F1: a 401 cut off at once an answer already on its way (billed, its generation id
    # in its headers): the row was skipped and the resume bought it again. A results file that
    # fails too (out-178 F4): cut off, the resume held each such answer at its worst case; let
    # in, the attempt journal keeps what it cost.
    from batchrun._retry import RetryPolicy
    from batchrun._status import StopReason
    from batchrun._stops import Stops

    stops = Stops(FakeClock(), RetryPolicy(), 5.0, None)
    loop = asyncio.get_running_loop()
    before = loop.time()
    async with stops.row_time() as limit:
        stops.request(StopReason(reason))
        assert limit.when() == stops.grace_ends
        assert stops.grace_ends is not None and before + grace <= stops.grace_ends <= loop.time() + grace


async def test_a_deadline_while_requests_wait_on_a_key_read_says_what_held_them() -> None:
    # out-181 F3: a /key read that hung held every request until the deadline, and the stop said
    # only "the run deadline of 30 s was reached".
    from batchrun._retry import RetryPolicy
    from batchrun._stops import Stops

    clock = FakeClock()
    stops = Stops(clock, RetryPolicy(), 1.0, 30.0)
    read: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiting = [asyncio.ensure_future(stops.held_by("a /key read", read)) for _ in range(2)]
    await asyncio.sleep(0)
    clock.now += 29
    stops.deadline_reached()
    assert (
        stops.message
        == "the run deadline of 30 s was reached, with requests held 29 s by a /key read that had not answered"
    )
    read.set_result(None)
    await asyncio.gather(*waiting)
    later = Stops(clock, RetryPolicy(), 1.0, 30.0)
    await later.held_by("a /key read", asyncio.sleep(0))
    later.deadline_reached()
    assert later.message == "the run deadline of 30 s was reached"  # nothing held it by then
