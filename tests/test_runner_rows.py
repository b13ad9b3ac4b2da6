"""The runner's promise: one record per dispatched row, whatever fails (issue 11).

An unexpected exception in one row is that row's `internal` error and the run goes on; a
failure of the run itself (the results file cannot be written) stops every worker at once;
a stop cuts in-flight rows after the grace, each recorded once; no task outlives run_job.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from batchrun import ExitCode, RunOptions, load_job, run_job
from batchrun._exceptions import OutputFailed
from batchrun._results import ResultsWriter
from batchrun._run_control import RunControl
from batchrun._verdict import decide
from batchrun.simulator import Simulator

from .conftest import FAKE_KEY, FakeClock, call_cli, read_rows


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
