"""A machine that cannot start another thread (`ulimit -v`, a process limit): the checks that
search run in the loop's own thread, and the run's result stands (break51 F2, F3)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from batchrun import RunOptions, load_job, run_job
from batchrun._event_loop import run
from batchrun.simulator import Simulator

from .conftest import FAKE_KEY, SMALL_JOB, read_rows, write_job


def refuse_new_threads(monkeypatch: pytest.MonkeyPatch, named: str = "") -> None:
    """Threads (those whose name starts with `named`) no longer start, as under a memory limit."""
    start = threading.Thread.start

    def refusing(thread: threading.Thread) -> None:
        if thread.name.startswith(named):
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", refusing)


async def test_checks_that_search_are_graded_in_the_loop_when_no_thread_can_start(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break51 F2: each answered row (paid) was an `internal` error, its text dropped and not
    # retryable: neither --resume --retry-errors nor report --job could get it back.
    refuse_new_threads(monkeypatch, "asyncio")  # the test loop's executor; not the simulator's threads
    job = load_job(
        write_job(tmp_path, SMALL_JOB.replace('checks: [{contains: "{{expect}}"}]', 'checks: [{regex: "{{expect}}"}]'))
    )
    report = await run_job(job, RunOptions(FAKE_KEY, sim.base_url, output=tmp_path / "out.jsonl"))
    rows = read_rows(tmp_path / "out.jsonl")
    graded = [r for r in rows if r["prompt_id"] == "capital"]
    assert report.summary["total"]["ok"] == len(rows) == 20
    assert len(graded) == 12 and all(r["content"] and isinstance(r["passed"], bool) for r in graded)
    assert all(r["checks"][0]["pass"] is (r["vars"]["expect"] in r["content"]) for r in graded)


def test_a_run_whose_executor_cannot_be_shut_down_keeps_its_result(monkeypatch: pytest.MonkeyPatch) -> None:
    # break51 F3: closing the loop shuts its executor down in a new thread; refused, a run that had
    # ended complete and green was a traceback, exit 1.
    async def main() -> int:
        assert await asyncio.to_thread(lambda: 41) == 41  # the executor now exists
        refuse_new_threads(monkeypatch)
        return 42

    assert run(main()) == 42


def test_other_errors_from_closing_the_loop_are_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> int:
        return 1

    def broken(_runner: asyncio.Runner) -> None:
        raise RuntimeError("another problem")

    monkeypatch.setattr(asyncio.Runner, "close", broken)
    with pytest.raises(RuntimeError, match="another problem"):
        run(main())
