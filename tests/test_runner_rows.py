"""The runner's promise: one record per dispatched row, whatever fails (issue 11).

An unexpected exception in one row is that row's `internal` error and the run goes on; a
failure of the run itself (the results file cannot be written) stops every worker at once;
a stop cuts in-flight rows after the grace, each recorded once; no task outlives run_job.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

import batchrun
from batchrun import ExitCode, RunOptions, RunReport, load_job, run_job
from batchrun._exceptions import ConfigError, LockHeld, OutputFailed
from batchrun._items import ItemGate
from batchrun._job import Job
from batchrun._matrix import matrix_requests
from batchrun._regrade import regrade_file
from batchrun._results import ResultsWriter, final_records
from batchrun._run_control import RunControl
from batchrun._status import StopReason
from batchrun._summary_types import Summary
from batchrun._transport import default_transport
from batchrun._ungraded import kept_verdicts
from batchrun._verdict import decide
from batchrun.simulator import Simulator

from .conftest import (
    FAKE_KEY,
    SMALL_JOB,
    FakeClock,
    LeapClock,
    call_cli,
    journaled_generations,
    judged_small_job,
    read_rows,
    write_job,
)


def other_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]


async def test_an_exception_in_one_row_is_its_internal_error(
    sim: Simulator, small_job: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import batchrun._checks
    import batchrun._worker_pool as runner_module

    real_grade = batchrun._checks.grade

    def grade(checks: Any, answer: Any) -> dict[str, Any]:
        if "Tokyo" in answer.content:
            raise ValueError(f"a bug that quotes the key {FAKE_KEY}")
        return real_grade(checks, answer)

    monkeypatch.setattr(runner_module, "grade", grade)
    job = load_job(small_job)
    out = tmp_path / "out.jsonl"
    report = await run_job(job, RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, output=out, clock=FakeClock()))
    rows = read_rows(out)
    assert len(rows) == 20 and len({r["id"] for r in rows}) == 20
    internal = [r for r in rows if r["reason"] == "internal"]
    assert internal and all(r["vars"]["country"] == "Japan" for r in internal)
    assert all(r["status"] == "ok" for r in rows if r not in internal)
    assert internal[0]["error"]["message"].startswith("ValueError: a bug that quotes the key [key]")
    assert FAKE_KEY[20:36] not in out.read_text()
    assert decide(report.summary, job.run)[0] == ExitCode.ERRORS
    # Struck after the answer was bought: not retryable, or each --retry-errors bought it again
    # to the same bug (break24 F5).
    assert {r["retryable"] for r in internal} == {False}
    sent = sim.stats.chat_requests
    again = RunOptions(
        api_key=FAKE_KEY, base_url=sim.base_url, output=out, clock=FakeClock(), resume=True, retry_errors=True
    )
    await run_job(job, again)
    assert sim.stats.chat_requests == sent


async def test_an_exception_before_anything_is_sent_is_a_retryable_internal_error(
    sim: Simulator, small_job: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batchrun._dispatch import Dispatcher

    real = Dispatcher.worst_case

    def worst_case(self: Dispatcher, request: Any) -> float | None:
        if request.vars.get("country") == "Japan":
            raise ValueError("a bug before the request went out")
        return real(self, request)

    monkeypatch.setattr(Dispatcher, "worst_case", worst_case)
    out = tmp_path / "out.jsonl"
    await run_job(
        load_job(small_job), RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, output=out, clock=FakeClock())
    )
    internal = [r for r in read_rows(out) if r["reason"] == "internal"]
    assert len(internal) == 4 and sim.stats.chat_requests == 16
    assert {(r["retryable"], r["cost"], r["cost_status"]) for r in internal} == {(True, 0.0, None)}


async def test_an_unwritable_results_file_stops_every_worker_at_once(
    sim: Simulator, small_job: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = ResultsWriter.write
    written = 0

    def write(self: ResultsWriter, record: dict[str, Any], request: bytes | None = None) -> None:
        nonlocal written
        if written >= 5:
            raise OutputFailed(f"{self.path}: writing a record failed: No space left on device")
        written += 1
        real_write(self, record, request)

    monkeypatch.setattr(ResultsWriter, "write", write)
    job = load_job(small_job)
    out = tmp_path / "out.jsonl"
    report = await run_job(job, RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, output=out, clock=FakeClock()))
    assert len(read_rows(out)) == 5
    assert report.summary["stop"] == "io" and "No space left" in report.summary["stop_message"]
    assert decide(report.summary, job.run)[0] == ExitCode.IO
    # Dispatch stopped at the failed write: at most the rows already in flight went out.
    assert sim.stats.chat_requests <= 5 + 1 + job.run.concurrency
    assert other_tasks() == []


def test_an_unwritable_results_file_is_a_line_on_stderr_and_its_exit_code(
    sim: Simulator, small_job: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def write(self: ResultsWriter, record: dict[str, Any], request: bytes | None = None) -> None:
        raise OutputFailed(f"{self.path}: writing a record failed: Read-only file system")

    monkeypatch.setattr(ResultsWriter, "write", write)
    monkeypatch.setenv("OPENROUTER_API_KEY", FAKE_KEY)
    code, out, err = call_cli(small_job, "--base-url", sim.base_url, "-o", tmp_path / "o.jsonl", "-q")
    assert code == ExitCode.IO and "Traceback" not in err
    assert "Read-only file system" in err


async def test_no_task_outlives_run_job(sim: Simulator, small_job: Path, tmp_path: Path) -> None:
    job = load_job(small_job)
    job = replace(job, run=replace(job.run, deadline_s=3600.0))
    out = tmp_path / "out.jsonl"
    # The real clock: the deadline's timer is a real sleep that must be cancelled, not left.
    await run_job(job, RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, output=out))
    assert other_tasks() == []
    assert len(read_rows(out)) == 20


async def test_a_stop_cuts_in_flight_rows_after_the_grace_each_recorded_once(
    sim: Simulator, small_job: Path, tmp_path: Path
) -> None:
    sim.config.faults = {"hang": 1.0}  # every request hangs: only the grace can end them
    job = load_job(small_job)
    job = replace(job, run=replace(job.run, grace_s=0.05, timeout_s=60.0))
    out = tmp_path / "out.jsonl"
    control = RunControl()

    async def stop_soon() -> None:
        while sim.stats.chat_requests < job.run.concurrency:
            await asyncio.sleep(0.01)
        control.stop()

    stopper = asyncio.create_task(stop_soon())
    report = await run_job(
        job, RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, output=out, clock=FakeClock()), control
    )
    await stopper
    rows = read_rows(out)
    assert len(rows) == 20 and len({r["id"] for r in rows}) == 20
    assert {(r["status"], r["reason"]) for r in rows} == {("skipped", "interrupted")}
    in_flight = [r for r in rows if r.get("attempts")]
    assert len(in_flight) == job.run.concurrency
    # A request abandoned in flight may still be billed: its worst case stays spent.
    # Its cost is unknown (null, never a guess shown as a cost) and the worst case is held.
    assert all(r["cost"] is None and r["cost_unknown"] and r["cost_status"] == "unknown" for r in in_flight)
    assert all(r["cost_held"] > 0 for r in in_flight)
    assert report.outcome.spent_usd == pytest.approx(sum(r["cost_held"] for r in in_flight))
    assert other_tasks() == []


class StoppingTransport(httpx.AsyncBaseTransport):
    """The client's own transport, which asks the run to stop when the first chat request has
    been answered: whatever was then waiting for its turn (a model's concurrency, a retry's
    wait) has not been sent, and must never be."""

    def __init__(self, control: RunControl) -> None:
        self.inner = default_transport(8)
        self.control = control
        self.chats = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        chat = request.url.path.endswith("/chat/completions")
        self.chats += chat
        response = await self.inner.handle_async_request(request)
        if chat and self.chats == 1:
            self.control.stop()
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_rows_waiting_for_their_turn_at_a_stop_are_never_sent(sim: Simulator, tmp_path: Path) -> None:
    # A model's own concurrency of 1 under a run's 4: three rows wait for the slot. The grace
    # is long and the answer quick, so the wait ends inside it; the rows behind went out
    # then, each a request sent after the stop (a SIGTERM during a re-grading ran every grader).
    text = SMALL_JOB.replace(
        "models: [openai/gpt-4o-mini, google/gemini-2.0-flash-001]",
        "models: [{id: openai/gpt-4o-mini, concurrency: 1}]",
    ).replace(
        "run: {concurrency: 4, timeout_s: 5, max_attempts: 8, max_wait_s: 5}", "run: {concurrency: 4, grace_s: 30}"
    )
    job = load_job(write_job(tmp_path, text))
    out = tmp_path / "out.jsonl"
    control = RunControl()
    transport = StoppingTransport(control)
    options = RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, output=out, clock=FakeClock(), transport=transport)
    report = await run_job(job, options, control)
    rows = read_rows(out)
    assert transport.chats == 1 and sim.stats.chat_requests == 1
    assert len(rows) == 10 and len({r["id"] for r in rows}) == 10
    answered = [r for r in rows if r["status"] == "ok"]
    assert len(answered) == 1
    # The rest are interrupted, none of them tried, nothing of theirs held as maybe billed.
    rest = [r for r in rows if r not in answered]
    assert {(r["status"], r["reason"]) for r in rest} == {("skipped", "interrupted")}
    assert all(not r.get("attempts") and not r.get("cost_held") for r in rest)
    assert report.summary["stop"] == "interrupted"
    assert other_tasks() == []


async def _answered_then_judged(sim: Simulator, tmp_path: Path, run: str) -> tuple[Path, int, Job]:
    """SMALL_JOB run on the simulator (its results, and the requests that took), and the same
    job with its capitals judged, under `run`: what `report --job` re-grades."""
    out = tmp_path / "out.jsonl"
    plain = load_job(write_job(tmp_path, SMALL_JOB))
    await run_job(plain, RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, output=out, clock=FakeClock()))
    folder = tmp_path / "judged"
    folder.mkdir()
    return out, sim.stats.chat_requests, load_job(write_job(folder, judged_small_job(run)))


async def test_graders_waiting_for_their_turn_at_a_stop_are_never_sent(sim: Simulator, tmp_path: Path) -> None:
    # `report --job` with judges: its graders are dispatched together, past the run's
    # concurrency, and wait for a slot; a stop must end them there, unsent.
    out, asked, job = await _answered_then_judged(sim, tmp_path, "run: {concurrency: 1, grace_s: 30}")
    control = RunControl()
    transport = StoppingTransport(control)
    options = RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, clock=FakeClock(), transport=transport)
    graded: list[dict[str, Any]] = []
    summary = await regrade_file(
        job, options, read_rows(out), lambda: read_rows(out), ItemGate(), lambda _line: None, graded.append, control
    )
    assert transport.chats == 1 and sim.stats.chat_requests == asked + 1
    assert summary["stop"] == "interrupted" and len(graded) == 20
    checks = [c for r in graded for c in r.get("checks", []) if c["name"] == "judge"]
    assert len(checks) == 12
    decided = [c for c in checks if c["pass"] is not None]
    assert len(decided) == 1 and len(decided[0]["judge"]["graders"]) == 1
    unsent = [c for c in checks if c["pass"] is None]
    assert all(c["error"].endswith("not graded: the run stopped (interrupted)") for c in unsent)
    assert all(
        not g.get("cost") and "generation_id" not in g for c in unsent for g in c.get("judge", {}).get("graders", [])
    )
    assert other_tasks() == []


async def test_a_resume_grades_the_answers_whose_graders_a_stop_cut_off(sim: Simulator, tmp_path: Path) -> None:
    # verify23 N5: a stop while a row's graders were due left it ok with its judge check "not
    # graded: the run stopped"; every resume kept the row as it was, exit 1 "a grader failed".
    text = judged_small_job("run: {concurrency: 1, grace_s: 30}")
    job = load_job(write_job(tmp_path, text))
    out = tmp_path / "out.jsonl"
    control = RunControl()
    options = RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, output=out, clock=FakeClock())
    stopped = await run_job(job, replace(options, transport=StoppingTransport(control)), control)
    assert stopped.summary["stop"] == "interrupted" and sim.stats.chat_requests == 1  # the first row's answer
    (first,) = [r for r in read_rows(out) if r["status"] == "ok"]
    assert first["checks"][0]["error"].endswith("not graded: the run stopped (interrupted)")
    resumed = await run_job(job, replace(options, resume=True))
    # The 19 rows not answered, the 12 capitals' graders; the first row's answer is not bought again.
    assert sim.stats.chat_requests == 1 + 19 + 12
    assert decide(resumed.summary, job.run)[0] == ExitCode.OK, resumed.summary
    final = {r["id"]: r for r in final_records(out)}
    again = final[first["id"]]
    assert again["content"] == first["content"] and again["checks"][0]["pass"] is not None
    assert again["cost"] == first["cost"] and again["earlier_records"] == 1  # the answer's, once
    assert again["attempts"] == first["attempts"] == 1  # break33 m8: tries/row read 0.00
    assert again["judge_cost"] > 0 and again["spent"] == pytest.approx(first["cost"] + again["judge_cost"])
    assert resumed.summary["total"]["rows"] == 20 and len(read_rows(out)) == 20 + 20  # each row once more
    # Graded once: a resume after that has nothing to do.
    await run_job(job, replace(options, resume=True))
    assert sim.stats.chat_requests == 32 and len(read_rows(out)) == 40


def test_a_resume_stopped_before_it_reaches_a_kept_answer_keeps_it(tmp_path: Path) -> None:
    # verify66 1: a resume whose own budget stop came before the answers an earlier stop left
    # ungraded wrote them `skipped: budget`: the paid answers were dropped (4 ok rows to 1), and
    # the next resume bought them again under new generation ids.
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"a": i}) + "\n" for i in range(40)))
    job = write_job(
        tmp_path,
        """
        name: rg
        defaults: {params: {temperature: 0, max_tokens: 16}}
        judge: {model: openai/gpt-4o-mini}
        models: [openai/gpt-4o-mini]
        prompts: [{id: p, text: "Say {{a}}.", dataset: d.jsonl, checks: [{judge: "The answer is a number."}]}]
        run: {concurrency: 4}
        """,
    )
    out = tmp_path / "r.jsonl"
    assert call_cli(job, "--simulate", "--budget", "0.0004", "-o", out, "-q")[0] == ExitCode.BUDGET
    answered = {r["id"]: r for r in final_records(out) if r["status"] == "ok"}
    assert len(answered) >= 2 and all(r["passed"] is None for r in answered.values())
    resumed = call_cli(job, "--simulate", "--budget", "0.0004", "--resume", "--concurrency", "1", "-o", out, "-q")
    assert resumed[0] == ExitCode.BUDGET
    final = {r["id"]: r for r in final_records(out)}
    assert {i: final[i]["generation_id"] for i in answered} == {i: r["generation_id"] for i, r in answered.items()}
    assert all(final[i]["status"] == "ok" for i in answered)
    assert call_cli(job, "--simulate", "--budget", "1", "--resume", "-o", out, "-q")[0] == ExitCode.OK
    final = {r["id"]: r for r in final_records(out)}
    assert {i: final[i]["generation_id"] for i in answered} == {i: r["generation_id"] for i, r in answered.items()}
    assert all(final[i]["passed"] is not None for i in answered)  # graded now, the answer not bought again


@pytest.mark.parametrize("code", ["capacity_exhausted", "temporarily_unavailable"])
async def test_a_grader_whose_server_wait_is_over_the_cap_is_stopped_not_failed(
    sim: Simulator, tmp_path: Path, code: str
) -> None:
    # verify47 N2: a grader told "retry after 60 s" (over max_wait_s) by a 503 was "a grader
    # failed", kept by a resume for ever; a 429's was "stopped". Both close the grader's scope,
    # as they close a model's for its rows: "stopped", and the resume asks again.
    sim.config.unavailable["anthropic/claude-3.5-haiku"] = code  # retry_after 60
    text = judged_small_job("run: {concurrency: 1, max_wait_s: 5}").replace(
        "judge: {model: openai/gpt-4o-mini}", "judge: {model: anthropic/claude-3.5-haiku}"
    )
    job = load_job(write_job(tmp_path, text))
    options = RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, output=tmp_path / "out.jsonl", clock=FakeClock())
    first = await run_job(job, options)
    checks = [r["checks"][0] for r in read_rows(tmp_path / "out.jsonl") if r["prompt_id"] == "capital"]
    assert checks and all(f"not graded: the grader is stopped ({code})" in c["error"] for c in checks)
    assert sim.stats.by_model["anthropic/claude-3.5-haiku"] == 1  # the graders behind the first never asked
    # Unfinished, as rows whose model was stopped so: exit 12, resumable, not 1 "a grader failed".
    assert first.summary["total"]["regradable"] == len(checks) == first.summary["total"]["undecided"]
    verdict, reasons = decide(first.summary, job.run, run=True)
    assert verdict == ExitCode.INCOMPLETE and reasons == [
        f"{len(checks)} answered row(s) not graded: a stop cut their grader off; --resume grades them"
    ]
    # `report` on the file says so too (break61 F6: exit 0, a green JUnit gate, no verdict at all).
    exit_code, _, err = call_cli("report", tmp_path / "out.jsonl", "--junit", tmp_path / "j.xml")
    assert exit_code == ExitCode.INCOMPLETE and reasons[0] in err
    assert 'name="exit code"' in (junit := (tmp_path / "j.xml").read_text()) and "exit 12" in junit
    sim.config.unavailable.clear()
    again = await run_job(job, replace(options, resume=True))
    assert decide(again.summary, job.run)[0] == ExitCode.OK


async def test_a_resume_grades_the_answers_whose_grader_was_stopped_by_its_limit(
    sim: Simulator, tmp_path: Path
) -> None:
    # verify25 N1: a grader whose daily cap was reached (and the graders behind it, skipped at
    # once) left its rows "a grader failed" for ever: exit 1 on every resume, none asked again.
    grader = "meta-llama/llama-3.3-70b-instruct:free"
    sim.config.free_daily_cap = 2
    clock = FakeClock()
    sim.clock = clock.time  # the cap resets at the simulator's next midnight
    text = judged_small_job("run: {concurrency: 1}").replace(
        "judge: {model: openai/gpt-4o-mini}", f"judge: {{model: {grader}}}"
    )
    job = load_job(write_job(tmp_path, text))
    out = tmp_path / "out.jsonl"
    options = RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, output=out, clock=FakeClock())
    first = await run_job(job, options)
    checks = [r["checks"][0] for r in read_rows(out) if r["prompt_id"] == "capital"]
    stopped = [c for c in checks if c["pass"] is None]
    assert len(checks) == 12 and len(stopped) == 10, checks
    assert all("not graded: the grader is stopped (daily_cap)" in c["error"] for c in stopped)
    # A daily cap is no state a resume ends (as for answer rows, exit 1).
    assert first.summary["total"]["regradable"] == 0
    assert decide(first.summary, job.run, run=True)[0] == ExitCode.ERRORS
    answers = sim.stats.chat_requests - sim.stats.by_model[grader]
    sim.config.free_daily_cap = None  # a day later: the cap has reset
    again = await run_job(job, replace(options, resume=True))
    assert decide(again.summary, job.run)[0] == ExitCode.OK
    assert sim.stats.chat_requests - sim.stats.by_model[grader] == answers  # no answer bought again
    graded = [r["checks"][0] for r in final_records(out) if r["prompt_id"] == "capital"]
    assert all(c["pass"] is not None for c in graded)


async def test_graders_in_flight_at_a_stop_get_the_grace_then_are_held(sim: Simulator, tmp_path: Path) -> None:
    # break23 F11: `report --job`'s graders had no grace: a SIGTERM waited for every one to time
    # out, and retried them (new paid requests) before exit 7.
    run = "run: {concurrency: 2, timeout_s: 60, max_attempts: 3, grace_s: 0.05}"
    out, asked, job = await _answered_then_judged(sim, tmp_path, run)
    sim.config.faults = {"hang": 1.0}  # every grader hangs: only the grace can end it
    control = RunControl()

    async def stop_soon() -> None:
        while sim.stats.chat_requests < asked + 2:
            await asyncio.sleep(0.01)
        control.stop()

    stopper = asyncio.create_task(stop_soon())
    options = RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, clock=FakeClock())
    graded: list[dict[str, Any]] = []
    summary = await asyncio.wait_for(
        regrade_file(
            job, options, read_rows(out), lambda: read_rows(out), ItemGate(), lambda _: None, graded.append, control
        ),
        30,  # a bound, not a measure: the grace is 0.05 s, each grader's timeout 60 s
    )
    await stopper
    assert sim.stats.chat_requests == asked + 2  # the two in flight; nothing sent after the stop
    checks = [c for r in graded for c in r.get("checks", []) if c["name"] == "judge"]
    assert len(checks) == 12 and all(c["pass"] is None for c in checks)
    assert summary["stop"] == "interrupted"
    assert summary["total"]["cost_held_usd"] > 0  # the two abandoned graders may be billed: held
    assert other_tasks() == []


async def _regrading_its_deadline_cuts(
    sim: Simulator,
    tmp_path: Path,
    fault: str,
    transport: httpx.AsyncBaseTransport | None = None,
    on_record: Callable[[dict[str, Any]], None] = lambda _: None,
) -> tuple[Summary, int, Job]:
    """A judged SMALL_JOB's stored answers re-graded with every grader's request meeting `fault`,
    its deadline coming once two are out (neither waited out nor passed by a slow start-up):
    the summary, the chat requests before, the job. Bounded, not measured."""
    run = "run: {concurrency: 2, timeout_s: 3600, max_attempts: 3, grace_s: 0.05, deadline_s: 30}"
    out, asked, job = await _answered_then_judged(sim, tmp_path, run)
    sim.config.faults = {fault: 1.0}
    clock = LeapClock(lambda: sim.stats.chat_requests >= asked + 2, by=30)
    options = RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, clock=clock, transport=transport)
    regrading = regrade_file(
        job, options, read_rows(out), lambda: read_rows(out), ItemGate(), lambda _: None, on_record
    )
    return await asyncio.wait_for(regrading, 30), asked, job


async def test_report_job_regrading_stops_at_its_deadline_and_its_wind_down_ends_with_it(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # verify26 R2: `report --job` had no deadline (the job's `run.deadline_s` was not applied to
    # its re-grading either): graders that hang held the CI gate for every timeout, 325 s for 4 rows.
    import batchrun._cut_off as cut_off

    monkeypatch.setattr(cut_off, "WIND_DOWN_FLOOR_S", 0.05)
    graded: list[dict[str, Any]] = []
    # Every grader hangs: only the deadline and its grace end them.
    summary, asked, job = await _regrading_its_deadline_cuts(sim, tmp_path, "hang", on_record=graded.append)
    assert summary["stop"] == "deadline" and decide(summary, job.run)[0] == ExitCode.DEADLINE
    assert sim.stats.chat_requests == asked + 2  # the two in flight at the deadline; nothing after
    checks = [c for r in graded for c in r.get("checks", []) if c["name"] == "judge"]
    assert len(checks) == 12 and all(c["pass"] is None for c in checks)
    assert summary["total"]["cost_held_usd"] > 0  # the two cut graders may be billed: held
    assert other_tasks() == []


class GenerationHangs(httpx.AsyncBaseTransport):
    """The client's own transport, on which GET /generation never answers; the paths asked, in order."""

    def __init__(self) -> None:
        self.inner = default_transport(8)
        self.asked: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(request.url.path.rsplit("/api/v1", 1)[-1])
        if request.url.path.endswith("/generation"):
            await asyncio.Event().wait()  # only the run's cut-off ends it
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_report_job_regrading_cut_by_its_deadline_reads_key_though_generation_hangs(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # verify64 F2: the run's end gave half its wind-down to the lookups, the rest to /key; the
    # re-grading's did not: a /generation that hung took it all, /key was never read, "not reconciled".
    import batchrun._cut_off as cut_off

    monkeypatch.setattr(cut_off, "WIND_DOWN_FLOOR_S", 0.4)
    transport = GenerationHangs()
    # Every grader's headers (its generation id), then nothing.
    summary, _, _ = await _regrading_its_deadline_cuts(sim, tmp_path, "stall", transport)
    assert summary["stop"] == "deadline" and "/generation" in transport.asked
    assert "/key" in transport.asked[transport.asked.index("/generation") :]
    assert summary["reconciliation"]["warning"] is None


def test_report_takes_a_deadline_for_its_regrading_only(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("")
    code, _, err = call_cli("report", out, "--deadline", "5")
    assert code == ExitCode.USAGE and "--deadline: only with --job" in err, err


class HangingKey(httpx.AsyncBaseTransport):
    """The client's own transport, whose GET /key answers its first `answered` reads and then
    never again (until the run cancels it): `asked` is set as each hanging read begins."""

    def __init__(self, answered: int) -> None:
        self.inner = default_transport(8)
        self.answered = answered
        self.asked = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/key"):
            if self.answered <= 0:
                self.asked.set()
                await asyncio.Event().wait()  # a read that hangs: only a cancel ends it
            self.answered -= 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _stopped_with_a_hanging_key(
    sim: Simulator, tmp_path: Path, answered: int, stop_when: Callable[[HangingKey], Awaitable[Any]], **run: Any
) -> tuple[RunReport, list[dict[str, Any]], HangingKey, Job]:
    """SMALL_JOB against `sim` with /key answering `answered` reads, then hanging; the run is
    stopped (a signal) once `stop_when(transport)` returns. Bounded, not measured."""
    job = load_job(write_job(tmp_path, SMALL_JOB))
    job = replace(job, run=replace(job.run, timeout_s=3600.0, **run))
    out = tmp_path / "out.jsonl"
    control = RunControl()
    transport = HangingKey(answered)

    async def stop() -> None:
        await stop_when(transport)
        control.stop()

    stopper = asyncio.create_task(stop())
    options = RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, output=out, clock=FakeClock(), transport=transport)
    report = await asyncio.wait_for(run_job(job, options, control), 30)  # a bound, not a measure
    await stopper
    return report, read_rows(out), transport, job


async def _key_asked(transport: HangingKey) -> None:
    await transport.asked.wait()


async def test_a_stop_during_a_start_up_read_that_hangs_ends_the_run_at_once(sim: Simulator, tmp_path: Path) -> None:
    # verify23 N1 (E4): SIGTERM during a /key read that hung was ignored: exit 1 ("the endpoint
    # failed before the run started") a whole timeout later, not 7.
    report, rows, _, _ = await _stopped_with_a_hanging_key(sim, tmp_path, 0, _key_asked)
    assert len(rows) == 20 and {(r["status"], r["reason"]) for r in rows} == {("skipped", "interrupted")}
    assert report.summary["stop"] == "interrupted" and sim.stats.chat_requests == 0
    assert other_tasks() == []


async def test_after_a_stop_the_wind_down_has_a_grace_however_the_key_hangs(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # verify23 N1 (E2, E3, E8, E9): the end-of-run /key read that hung (three tries of the
    # timeout each) kept a SIGTERM'd run 66-182 s past its grace; a deadline's too.
    import batchrun._cut_off as cut_off

    monkeypatch.setattr(cut_off, "WIND_DOWN_FLOOR_S", 0.05)  # the grace below is the bound

    async def two_chats(_transport: HangingKey) -> None:
        while sim.stats.chat_requests < 2:
            await asyncio.sleep(0.01)

    # Start-up's /key read answers; the end-of-run read hangs.
    report, rows, transport, _ = await _stopped_with_a_hanging_key(sim, tmp_path, 1, two_chats, grace_s=0.05)
    assert report.summary["stop"] == "interrupted" and transport.asked.is_set()
    assert "no answer before the run had to end" in (report.summary["reconciliation"]["warning"] or "")
    assert len({r["id"] for r in rows}) == 20
    assert other_tasks() == []


async def test_a_signal_during_the_wind_down_cuts_it_at_a_grace_and_is_exit_7(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break25 F6: every row written, the end-of-run /key read hanging, then SIGTERM: ignored for
    # three attempts of the timeout (89 s), then exit 0. The README: exit 7, within a grace.
    import batchrun._cut_off as cut_off

    monkeypatch.setattr(cut_off, "WIND_DOWN_FLOOR_S", 0.05)
    report, rows, _, job = await _stopped_with_a_hanging_key(sim, tmp_path, 1, _key_asked, grace_s=0.05)
    assert report.summary["stop"] == "interrupted" and decide(report.summary, job.run)[0] == ExitCode.INTERRUPTED
    assert "no answer before the run had to end" in (report.summary["reconciliation"]["warning"] or "")
    assert len(rows) == 20 and {r["status"] for r in rows} == {"ok"}  # every row was done before
    assert other_tasks() == []


def _small_job_whose_last_key_read_hangs(tmp_path: Path, deadline_s: float) -> tuple[Job, HangingKey, Path]:
    """SMALL_JOB with a deadline and a short grace; a transport whose start-up /key read answers
    and every later one hangs; the results' path."""
    job = load_job(write_job(tmp_path, SMALL_JOB))
    job = replace(job, run=replace(job.run, timeout_s=3600.0, grace_s=0.05, deadline_s=deadline_s))
    return job, HangingKey(answered=1), tmp_path / "out.jsonl"


async def test_a_deadline_bounds_the_end_of_run_key_read_in_flight(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # verify25 N9: rows done well inside --deadline, the end-of-run /key read hanging: only its
    # retries were bounded by the deadline plus grace, and the run overran it by a whole timeout.
    import batchrun._cut_off as cut_off
    from batchrun._clock import SystemClock

    monkeypatch.setattr(cut_off, "WIND_DOWN_FLOOR_S", 0.05)
    job, transport, out = _small_job_whose_last_key_read_hangs(tmp_path, deadline_s=1.0)
    options = RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, output=out, clock=SystemClock(), transport=transport)
    report = await asyncio.wait_for(run_job(job, options), 30)  # a bound, not a measure: 3600 s before
    assert transport.asked.is_set() and len(read_rows(out)) == 20
    assert "no answer before the run had to end" in (report.summary["reconciliation"]["warning"] or "")
    assert other_tasks() == []


async def test_a_signal_during_a_deadlines_wind_down_is_exit_7(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # verify64 F8: the README ranks 7 above 6, and says a signal during the wind-down is exit 7;
    # after the deadline's stop it was 6.
    import batchrun._cut_off as cut_off

    monkeypatch.setattr(cut_off, "WIND_DOWN_FLOOR_S", 0.05)
    job, transport, out = _small_job_whose_last_key_read_hangs(tmp_path, deadline_s=30.0)
    control = RunControl()

    async def signal_in_the_wind_down() -> None:
        while control.runner is None or control.runner.stop_reason != StopReason.DEADLINE:
            await asyncio.sleep(0.005)
        transport.asked.clear()
        await transport.asked.wait()  # a /key read after the deadline's stop, hanging
        control.stop()

    signal = asyncio.create_task(signal_in_the_wind_down())
    sim.config.faults = {"stall": 1.0}  # rows in flight when the deadline comes
    clock = LeapClock(lambda: sim.stats.chat_requests >= 4, by=30)
    options = RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, output=out, clock=clock, transport=transport)
    report = await asyncio.wait_for(run_job(job, options, control), 30)  # a bound, not a measure
    await signal
    assert report.summary["stop"] == "interrupted" and decide(report.summary, job.run)[0] == ExitCode.INTERRUPTED


async def test_costs_learnt_at_the_end_of_the_run_are_what_its_summary_says_it_spent(tmp_path: Path) -> None:
    # verify25 N3: each row's first attempt cut off (held at its worst case), its lookup known only
    # at the end of the run: the summary kept the worst cases as spent, 10-20x the records.
    from .hostile import HostileServer, chat_payload, json_answer

    tried: set[str] = set()
    answered: set[str] = set()
    asked: list[str] = []

    def chat(request: Any) -> Any:
        row = request.headers.get("x-batchrun-row", "")
        if row in tried:
            answered.add(row)
            return json_answer(200, chat_payload())
        tried.add(row)

        async def stall(writer: asyncio.StreamWriter) -> None:  # the generation named, then nothing
            writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: 999\r\nX-Generation-Id: gen-{row}\r\n\r\n".encode())
            await writer.drain()
            await asyncio.sleep(3600)

        return stall

    def generation(request: Any) -> Any:
        asked.append(request.path)
        # Not known while any row is still to be answered: the run's concurrency of 4 tries the
        # fifth row after the first lookups, so a count of the rows tried let one through mid-run.
        if len(answered) < 5:
            return json_answer(404, {"error": {"code": 404, "message": "Generation not found"}})
        return json_answer(200, {"data": {"id": request.path.split("id=")[1], "total_cost": 0.000002}})

    server = HostileServer(chat=chat, routes={"/generation": generation})
    job = load_job(
        write_job(tmp_path, SMALL_JOB.replace(", google/gemini-2.0-flash-001", "").replace("repeat: 2", "repeat: 1"))
    )
    job = replace(job, run=replace(job.run, timeout_s=0.3, budget_usd=1.0))
    out = tmp_path / "out.jsonl"
    with server.running():
        report = await run_job(
            job, RunOptions(api_key=FAKE_KEY, base_url=server.base_url, output=out, clock=FakeClock())
        )
    final = list(final_records(out))
    assert len(final) == 5 and {r["status"] for r in final} == {"ok"}
    spent = sum(r["spent"] for r in final)
    assert any(r.get("resolves") is not None for r in read_rows(out))  # learnt at the end
    assert report.summary["spent_usd"] == pytest.approx(spent, rel=1e-6)
    assert report.summary["spent_usd"] < (report.summary["estimate_usd"] or 0.0)


async def test_a_rows_cost_lookup_that_hangs_at_a_stop_ends_with_the_grace(tmp_path: Path) -> None:
    # break25 F6: answers without their cost, /generation hanging: a SIGTERM held the run for
    # each lookup's whole timeout, not the grace.
    import threading

    from .hostile import HostileServer, chat_payload, json_answer

    asked = threading.Event()

    def generation(_request: Any) -> Any:
        async def hang(_writer: asyncio.StreamWriter) -> None:
            asked.set()
            await asyncio.Event().wait()  # never answers

        return hang

    usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}  # no cost: looked up
    server = HostileServer(
        chat=lambda _r: json_answer(200, chat_payload(usage=usage)), routes={"/generation": generation}
    )
    job = load_job(write_job(tmp_path, SMALL_JOB))
    job = replace(job, run=replace(job.run, timeout_s=3600.0, grace_s=0.05))
    out = tmp_path / "out.jsonl"
    control = RunControl()

    async def stop_when_looking_up() -> None:
        await asyncio.to_thread(asked.wait, 30)
        control.stop()

    with server.running():
        stopper = asyncio.create_task(stop_when_looking_up())
        options = RunOptions(api_key=FAKE_KEY, base_url=server.base_url, output=out, clock=FakeClock())
        report = await asyncio.wait_for(run_job(job, options, control), 30)  # a bound, not a measure
        await stopper
    assert report.summary["stop"] == "interrupted"
    answered = [r for r in read_rows(out) if r["status"] == "ok"]
    # Not looked up: estimated from the answer's tokens at the listed prices, as the README says.
    assert answered and {r["cost_status"] for r in answered} == {"estimated"}
    assert len({r["id"] for r in read_rows(out)}) == 20
    assert other_tasks() == []


async def test_checks_that_search_are_graded_off_the_event_loop(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break24 F7: a regex that backtracks to its 1 s limit ran on the event loop: 40 rows held
    # every request in flight 40 s, the deadline 6x over, 5 ms answers recorded at 12 s.
    import threading

    import batchrun._cache_grading
    import batchrun._checks
    import batchrun._worker_pool as pool

    real_grade = batchrun._checks.grade
    graded_on: dict[str, set[str]] = {"regex": set(), "contains": set()}

    def grade(checks: Any, answer: Any) -> dict[str, Any]:
        kind = "regex" if any("regex" in c for c in checks) else "contains"
        graded_on[kind].add(threading.current_thread().name)
        return real_grade(checks, answer)

    monkeypatch.setattr(pool, "grade", grade)
    monkeypatch.setattr(batchrun._cache_grading, "grade", grade)
    text = SMALL_JOB.replace('    checks: [{contains: "{{expect}}"}]', '    checks: [{regex: "{{expect}}"}]').replace(
        "    vars: [{a: 1}, {a: 2}]", '    vars: [{a: 1}, {a: 2}]\n    checks: [{contains: "2"}]'
    )
    assert "regex" in text and 'contains: "2"' in text
    job = load_job(write_job(tmp_path, text))
    job = replace(job, run=replace(job.run, cache={"dir": str(tmp_path / "cache")}))
    loop_thread = threading.current_thread().name
    verdicts: list[dict[str, Any]] = []
    for name in ("answered", "hits"):  # and the same answers from the cache (closing11: on the loop)
        out = tmp_path / f"{name}.jsonl"
        await run_job(job, RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, output=out, clock=FakeClock()))
        assert graded_on["regex"] and loop_thread not in graded_on["regex"]  # in worker threads
        assert graded_on["contains"] == {loop_thread}  # a check that cannot take long stays on the loop
        rows = read_rows(out)
        assert len(rows) == 20 and {r["cached"] for r in rows} == {name == "hits"}
        verdicts.append({r["id"]: (r.get("passed"), r.get("checks")) for r in rows})
        graded_on = {"regex": set(), "contains": set()}
    assert sim.stats.chat_requests == 20 and verdicts[0] == verdicts[1]
    assert {passed for passed, _ in verdicts[0].values()} == {True, False}  # both ways, the same


def test_a_stop_after_the_runs_loop_has_closed_raises_nothing() -> None:
    # A signal between the end of asyncio.run and the exit reaches RunControl.stop outside any
    # loop: the wind-down's cut-off it calls has nothing to cut (a RuntimeError there came out
    # of the signal handler as a traceback, exit 1).
    from batchrun._cut_off import CutOff

    control, cut_off = RunControl(), CutOff()
    control.winding_down = lambda: cut_off.set_in(5.0)
    control.stop()
    assert cut_off.at is None and control.stopped.is_set() and control.pending == "interrupted"


PANEL = ("anthropic/claude-3.5-haiku", "google/gemini-2.0-flash-001")


class PanelCutTransport(httpx.AsyncBaseTransport):
    """The client's own transport. The second grader of a panel is held until the first has
    answered, then the run is asked to stop and that second grader never answers: the stop's
    grace runs out with the panel half done."""

    def __init__(self, control: RunControl) -> None:
        self.inner = default_transport(8)
        self.control = control
        self.first_answered = asyncio.Event()
        self.asked: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        model = httpx.Response(200, content=request.content).json().get("model") if request.content else None
        self.asked.append(str(model))
        if model == PANEL[1]:
            await self.first_answered.wait()
            self.control.stop()
            await asyncio.Event().wait()  # never answers: cancelled when the grace is out
        response = await self.inner.handle_async_request(request)
        if model == PANEL[0]:
            self.first_answered.set()
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("unparseable", [0.0, 1.0])
async def test_a_panel_cut_by_a_stop_keeps_its_finished_graders_and_the_resume_asks_only_the_others(
    sim: Simulator, tmp_path: Path, unparseable: float
) -> None:
    # break43 F6: the check's task group cancelled at the grace's end took the finished graders'
    # verdicts with it (paid, their cost kept); the resume bought every grader of the panel again.
    # verify46 N5: so it did for a finished grader whose reply was no verdict (`unparseable`).
    sim.config.judge_unparseable = unparseable
    text = judged_small_job("run: {concurrency: 1, grace_s: 0.2}").replace(
        "judge: {model: openai/gpt-4o-mini}", f"judge: {{models: [{PANEL[0]}, {PANEL[1]}]}}"
    )
    text = text.replace("models: [openai/gpt-4o-mini, google/gemini-2.0-flash-001]", "models: [openai/gpt-4o-mini]")
    job = load_job(write_job(tmp_path, text))
    out = tmp_path / "out.jsonl"
    control = RunControl()
    transport = PanelCutTransport(control)
    options = RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, output=out, clock=FakeClock())
    stopped = await run_job(job, replace(options, transport=transport), control)
    assert stopped.summary["stop"] == "interrupted"
    (first,) = [r for r in read_rows(out) if r["status"] == "ok"]
    graders = first["checks"][0]["judge"]["graders"]
    assert [g["model"] for g in graders] == list(PANEL) and first["checks"][0]["pass"] is None
    assert ("error" if unparseable else "pass") in graders[0] and graders[0]["cost"] > 0  # answered: kept
    assert graders[1]["error"] == "not graded: the run stopped (interrupted)"
    before = sim.stats.by_model[PANEL[0]]
    await run_job(job, replace(options, resume=True))
    final = {r["id"]: r for r in final_records(out)}[first["id"]]
    assert (final["checks"][0]["pass"] is None) == bool(unparseable)  # one failed grader: undecided
    assert final["checks"][0]["judge"]["graders"][0] == graders[0]
    asked = final["checks"][0]["judge"]["graders"][1]  # the cut grader, asked by the resume
    assert asked["cost"] > 0 and not asked.get("error", "").startswith("not graded")
    # The first grader was asked again only for the rows it had not graded: never for this one.
    rows_left = len([r for r in final_records(out) if (r.get("checks") or [{}])[0].get("judge")]) - 1
    assert sim.stats.by_model[PANEL[0]] == before + rows_left


def test_stored_verdicts_that_are_not_verdicts_are_not_kept() -> None:
    # A record edited (or written by another tool) between the stop and the resume: a kept
    # verdict goes into the panel's vote, so each is read as a grader's reply is, or asked again.
    def entry(*graders: Any) -> dict[str, Any]:
        cut = {"model": PANEL[1], "error": "not graded: the run stopped (interrupted)"}
        judge = {"score": None, "aggregate": "majority", "graders": [*graders, cut], "cost": None}
        return {"name": "judge", "pass": None, "error": "grader x: not graded", "weight": 1, "judge": judge}

    good = {"model": PANEL[0], "pass": True, "score": 0.9, "reason": "names it", "cost": 0.0001}
    checks = [{"judge": "Names Paris.", "name": "judge"}]
    assert kept_verdicts({"checks": [entry(good)]}, checks) == {0: [good]}
    hostile = [
        {**good, "score": "0.9"},
        {**good, "score": 7},
        {**good, "pass": "yes"},
        {key: value for key, value in good.items() if key != "reason"},
        {**good, "model": 5},
        {**good, "score": 2**70},
        "a grader",
        None,
    ]
    for grader in hostile:
        assert kept_verdicts({"checks": [entry(grader)]}, checks) == {}, grader
    priced = kept_verdicts({"checks": [entry({**good, "cost": "lots"})]}, checks)
    assert priced == {0: [{**good, "cost": None}]}  # a cost that is not money: unknown, never summed
    # verify46 N5: a grader that answered before the stop with no verdict (paid) keeps that
    # failure, as a check no stop cut does; one the stop cut, or an error that is no text, does not.
    failed = {"model": PANEL[0], "error": "the grader's reply is not a verdict: 'pass' is a required property"}
    assert kept_verdicts({"checks": [entry({**failed, "cost": 0.0002})]}, checks) == {0: [{**failed, "cost": 0.0002}]}
    long = kept_verdicts({"checks": [entry({**failed, "error": "x" * 10_000})]}, checks)
    assert long == {0: [{**failed, "error": "x" * 400, "cost": None}]}
    for error in ("not graded: the run stopped (deadline)", "not graded: the grader is stopped (daily cap)", 5, None):
        assert kept_verdicts({"checks": [entry({**failed, "error": error})]}, checks) == {}, error


async def test_a_run_control_serves_one_run(sim: Simulator, tmp_path: Path) -> None:
    # break50 F4: given to a second run (after a stop, or on another loop), its event and stop were
    # the first run's: every row recorded skipped by "deadline", with no deadline and no word.
    job = load_job(write_job(tmp_path, SMALL_JOB))
    control = RunControl()
    first = await run_job(job, RunOptions(FAKE_KEY, sim.base_url, output=tmp_path / "a.jsonl"), control=control)
    assert first.summary["total"]["ok"] == first.summary["total"]["rows"] > 0
    control.stop()
    with pytest.raises(ConfigError, match="this RunControl was given to an earlier run"):
        await run_job(job, RunOptions(FAKE_KEY, sim.base_url, output=tmp_path / "b.jsonl"), control=control)
    assert not (tmp_path / "b.jsonl").exists()


async def test_what_a_callers_on_record_raises_is_raised_once_the_run_has_ended(sim: Simulator, tmp_path: Path) -> None:
    # break50 F5: raised into a worker, it was lost: the run returned as if nothing had happened.
    job, seen = load_job(write_job(tmp_path, SMALL_JOB)), list[str]()

    def on_record(record: dict[str, Any]) -> None:
        seen.append(record["id"])
        if len(seen) == 3:
            raise ValueError("the caller's own bug")

    out = tmp_path / "out.jsonl"
    with pytest.raises(ValueError, match="the caller's own bug"):
        await run_job(job, RunOptions(FAKE_KEY, sim.base_url, output=out), on_record=on_record)
    rows = read_rows(out)
    assert len(seen) == 3 and len(rows) == 20 and all(r["status"] == "ok" for r in rows)  # the run went on
    assert (tmp_path / "out.summary.json").exists()


async def test_on_record_gets_its_own_copy_of_the_record_as_written(sim: Simulator, tmp_path: Path) -> None:
    # break56 F1: the caller got the run's own dict. Redacting `vars` in it emptied them for every
    # row sharing them: ids made later changed (a resume then refused the file), and graders read
    # an empty rubric. The copy is the line as written, `request` included.
    job, given = load_job(write_job(tmp_path, SMALL_JOB)), list[dict[str, Any]]()

    def redact(record: dict[str, Any]) -> None:
        given.append(json.loads(json.dumps(record)))
        record["vars"].clear()
        record["status"] = "EDITED"

    out = tmp_path / "out.jsonl"
    await run_job(job, RunOptions(FAKE_KEY, sim.base_url, output=out), on_record=redact)
    assert given == read_rows(out) and all("request" in record for record in given)
    rows = read_rows(out)
    assert len({r["id"] for r in rows}) == 20 and all(r["vars"] and r["status"] == "ok" for r in rows)
    expected = {(r.model, r.prompt_id, json.dumps(r.vars, sort_keys=True), r.repeat) for r in matrix_requests(job)}
    assert {(r["model"], r["prompt_id"], json.dumps(r["vars"], sort_keys=True), r["repeat"]) for r in rows} == expected


async def test_a_run_left_pending_in_this_process_is_named_as_such_by_the_next(sim: Simulator, tmp_path: Path) -> None:
    # break50 F9: a KeyboardInterrupt out of run_until_complete leaves run_job's task pending, its
    # lock held; the caller's retry was refused "by another batchrun run (pid N)", N its own pid.
    sim.config.faults = {"hang": 1.0}  # every request billed, then no answer: the first run stays in flight
    job, options = (
        load_job(write_job(tmp_path, SMALL_JOB)),
        RunOptions(FAKE_KEY, sim.base_url, output=tmp_path / "o.jsonl"),
    )
    started = asyncio.Event()
    pending = asyncio.ensure_future(run_job(job, options, on_start=lambda _rows: started.set()))
    await asyncio.wait_for(started.wait(), 30)
    with pytest.raises(LockHeld, match=rf"\(pid {os.getpid()}: this process, a run not ended: cancel its task\)"):
        await run_job(job, options)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending


async def test_the_public_reader_refuses_a_file_being_written_and_names_a_crashed_rows_prompt(
    sim: Simulator, tmp_path: Path
) -> None:
    # break56 F2: batchrun.final_records read a run still writing its file, and made its rows in
    # flight up as "crashed", of a prompt "" (as it did after a real kill -9): report said exit 8.
    sim.config.faults = {"stall": 1.0}  # every request billed, its headers sent, then nothing: in flight
    out = tmp_path / "o.jsonl"
    job, options = load_job(write_job(tmp_path, SMALL_JOB)), RunOptions(FAKE_KEY, sim.base_url, output=out)
    started = asyncio.Event()
    running = asyncio.ensure_future(run_job(job, options, on_start=lambda _rows: started.set()))
    await asyncio.wait_for(started.wait(), 30)
    while journaled_generations(out) < 4:  # four rows in flight, their attempts journaled
        await asyncio.sleep(0.005)
    with pytest.raises(LockHeld, match=r"o\.jsonl is held by another batchrun .*: read it once it has ended"):
        batchrun.final_records(out)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    out.write_bytes(b"")  # as a kill -9 before any record: only the journal of the attempts sent
    with pytest.warns(UserWarning, match=r"4 row\(s\) had attempts in flight"):
        rows = list(batchrun.final_records(out))
    crashed = [r for r in rows if r["reason"] == "crashed"]
    expected = {(r.id, r.prompt_id, r.repeat) for r in matrix_requests(job)}
    assert len(crashed) == 4 and {(r["id"], r["prompt_id"], r["repeat"]) for r in crashed} <= expected


def test_a_library_run_says_the_exit_code_the_cli_gives_it(sim: Simulator, tmp_path: Path, api_key_env: None) -> None:
    # break56 F7: nothing public turned a run's report into the CLI's exit code: a library caller
    # gating CI had to rebuild the verdict (errors, undecided rows, stops, spend, thresholds).
    passing = load_job(write_job(tmp_path, SMALL_JOB))
    report = asyncio.run(run_job(passing, RunOptions(FAKE_KEY, sim.base_url, output=tmp_path / "a.jsonl")))
    assert report.verdict() == (ExitCode.OK, [])
    failing = load_job(
        write_job(tmp_path, SMALL_JOB.replace('{contains: "{{expect}}"}', '{contains: "zzz"}'), "f.yaml")
    )
    report = asyncio.run(run_job(failing, RunOptions(FAKE_KEY, sim.base_url, output=tmp_path / "b.jsonl")))
    assert report.verdict() == (ExitCode.OK, [])  # no threshold: a failed check alone fails no gate
    code, reasons = report.verdict(pass_threshold=0.9)
    assert code == ExitCode.QUALITY and reasons and report.verdict(0.9, thresholds=False)[0] == ExitCode.OK
    out = tmp_path / "c.jsonl"
    argv = (tmp_path / "f.yaml", "--base-url", sim.base_url, "-o", out, "-q", "--pass-threshold", "0.9")
    cli_code, _, err = call_cli(*argv)
    assert cli_code == code, err
