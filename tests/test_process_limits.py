"""A process at its limits. One that cannot start another thread (`ulimit -v`): the checks that
search run in the loop's own thread, and the run's result stands (break51 F2, F3). One with few
file descriptors (`ulimit -n`): the run's concurrency is held below the limit (break51 F4)."""

from __future__ import annotations

import asyncio
import resource
import threading
from pathlib import Path
from typing import Any

import pytest

from batchrun import ConfigError, ExitCode, RunOptions, _fd_limit, load_job, run_job
from batchrun import _worker_pool as worker_pool
from batchrun._event_loop import run
from batchrun._settings import RunSettings
from batchrun._throttle import Throttle
from batchrun.simulator import Simulator

from .conftest import FAKE_KEY, SMALL_JOB, call_cli, judged_small_job, read_rows, write_job


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


def test_concurrency_is_held_below_the_open_file_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # break51 F4: concurrency 4096 under `ulimit -n 1024`: EMFILE read as the endpoint refusing
    # connections, 20,892 failed attempts, 12% of the rows in error, exit 1.
    said: list[str] = []
    monkeypatch.setattr(_fd_limit, "_limits", lambda: (1024, 1024))
    held = _fd_limit.within_fd_limit(RunSettings(concurrency=4096), False, said.append)
    assert held.concurrency == 1024 - _fd_limit.RESERVED_FDS
    assert said == [
        "warning: run.concurrency 4096 is above what this process's open-file limit (1024, ulimit -n) "
        "allows: 960 request(s) at a time"
    ]
    assert _fd_limit.within_fd_limit(RunSettings(concurrency=4096), True, said.append).concurrency == 480  # --simulate
    assert _fd_limit.within_fd_limit(RunSettings(concurrency=960), False, said.append).concurrency == 960
    monkeypatch.setattr(_fd_limit, "_limits", lambda: None)  # unlimited, or no such limit (Windows)
    assert _fd_limit.within_fd_limit(RunSettings(concurrency=4096), False, said.append).concurrency == 4096
    assert len(said) == 2


async def test_a_run_under_a_low_open_file_limit_says_so_and_completes(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_fd_limit, "_limits", lambda: (_fd_limit.RESERVED_FDS + 2, 4096))
    job = load_job(write_job(tmp_path, SMALL_JOB.replace("concurrency: 4", "concurrency: 64")))
    said, caps = list[str](), list[int]()

    def counted(cap: int, *rest: Any) -> Throttle:
        caps.append(cap)
        return Throttle(cap, *rest)

    monkeypatch.setattr(worker_pool, "Throttle", counted)
    report = await run_job(job, RunOptions(FAKE_KEY, sim.base_url, output=tmp_path / "out.jsonl"), notice=said.append)
    assert report.summary["total"]["ok"] == 20 and caps == [2]
    assert [line for line in said if "open-file limit" in line] == [
        f"warning: run.concurrency 64 is above what this process's open-file limit ({_fd_limit.RESERVED_FDS + 2}, "
        "ulimit -n) allows: 2 request(s) at a time"
    ]


def test_the_console_script_raises_its_soft_open_file_limit_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, hard, 256)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        _fd_limit.raise_soft_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_run_below_the_open_file_floor_is_refused_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break51 F5: under `ulimit -n` 10 to 22 a run failed on its lock, journal, loop or first
    # connection: exit 2, 11, 1 ("the endpoint failed"), 5 ("key unreadable") or a traceback.
    monkeypatch.setattr(_fd_limit, "_limits", lambda: (20, 20))
    code, _, err = call_cli(write_job(tmp_path, SMALL_JOB), "--simulate", "-o", tmp_path / "out.jsonl")
    assert code == ExitCode.USAGE and not (tmp_path / "out.jsonl").exists()
    assert err == (
        f"batchrun: this process's open-file limit (20, ulimit -n) is below the {_fd_limit.MIN_FDS} a run needs: "
        "raise it\n"
    )
    with pytest.raises(ConfigError, match="open-file limit"):
        _fd_limit.within_fd_limit(RunSettings(), False, print)


def test_report_job_regrading_is_held_under_the_open_file_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # verify52 F1: the re-grading's graders were not held under the limit: at `ulimit -n 1024` with
    # concurrency 4096, 815 of 10,000 rows ungraded ("Too many open files"), exit 1.
    job = write_job(tmp_path, judged_small_job().replace("concurrency: 4", "concurrency: 64"))
    out = tmp_path / "out.jsonl"
    assert call_cli(job, "--simulate", "-q", "-o", out)[0] == ExitCode.OK
    monkeypatch.setattr(_fd_limit, "_limits", lambda: (_fd_limit.RESERVED_FDS + 4, 4096))
    caps: list[int] = []

    def counted(cap: int, *rest: Any) -> Throttle:
        caps.append(cap)
        return Throttle(cap, *rest)

    monkeypatch.setattr(worker_pool, "Throttle", counted)
    code, _, err = call_cli("report", out, "--job", job, "--simulate", "--regrade-all")  # graders due
    assert code == ExitCode.OK and caps == [2], err  # halved: the simulator is in this process
    assert "run.concurrency 64 is above what this process's open-file limit" in err


def test_plan_on_the_simulator_below_the_open_file_floor_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # verify52 F6: `plan --simulate` at `ulimit -n` 10-16 was a traceback or "coroutine never awaited".
    monkeypatch.setattr(_fd_limit, "_limits", lambda: (12, 12))
    code, _, err = call_cli("plan", write_job(tmp_path, SMALL_JOB), "--simulate")
    assert code == ExitCode.USAGE and err.count("\n") == 1 and "open-file limit (12, ulimit -n)" in err
