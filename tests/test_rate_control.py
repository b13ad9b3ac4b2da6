"""Integration over loopback: a run against the simulator's rate limits, in virtual time.

The simulator's windows and the runner share one `VirtualClock`: time stands still while any
attempt is in flight (the server answers in zero time, like the bench's latency 0) and jumps
to the earliest sleeper's wake-up once every worker waits. So the 429 share and the rate are
exact functions of the controller, not of the machine's load, and nothing sleeps for real.
bench/rate_limit.py measures the same on real time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from batchrun import load_job, matrix_requests
from batchrun._client import OpenRouterClient
from batchrun._results import ResultsWriter
from batchrun._settings import RunSettings
from batchrun._worker_pool import PoolConfig, Runner
from batchrun.simulator import SimConfig, Simulator

from .conftest import FAKE_KEY, read_rows, write_job


class VirtualClock:
    def __init__(self, wall0: float = 1_800_000_000.0) -> None:
        self.now = 0.0
        self.wall0 = wall0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.wall0 + self.now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        wake = asyncio.get_running_loop().create_future()
        # A sleep always moves time on, as real time does: a wait computed as a difference
        # of floats can be below the resolution of `now`, and would otherwise spin.
        heapq.heappush(self._sleepers, (self.now + max(seconds, 1e-9), next(self._order), wake))
        await wake

    async def drive(self, busy: Callable[[], bool]) -> None:
        """Advance to the earliest wake-up whenever nothing is in flight and all else waits."""
        while True:
            if busy():
                # Real time, and only while an attempt is out: its answer comes from the
                # simulator's thread. (A fixed pause on every step cost seconds per test.)
                await asyncio.sleep(0.0005)
                continue
            for _ in range(20):  # let everything woken by the last answer run to its next wait
                await asyncio.sleep(0)
            if busy():
                continue
            while self._sleepers and self._sleepers[0][2].cancelled():
                heapq.heappop(self._sleepers)
            if self._sleepers:
                when, _, wake = heapq.heappop(self._sleepers)
                self.now = max(self.now, when)
                wake.set_result(None)
            else:
                await asyncio.sleep(0.001)  # no one waits yet (start-up) or any more (the end)


JOB = """
name: limited
models: [openai/gpt-4o-mini]
defaults: {params: {max_tokens: 16}}
prompts: [{id: p, text: "Say hi."}]
repeat: 240
"""


async def limited_run(tmp_path: Path, window: str, header: str) -> tuple[Simulator, float, list[dict[str, object]]]:
    """240 rows at concurrency 32 against 20 requests a second (the issue 13 scenario)."""
    clock = VirtualClock()
    # Answers take a few real milliseconds (virtual time stands still meanwhile), in which the
    # first 429 comes back before the answers of attempts sent ahead of it.
    sim = Simulator(
        SimConfig(rate_limit_rps=20, rate_limit_window=window, rate_limit_header=header, latency_ms=4, jitter_ms=4)
    )
    sim.clock = clock.time
    job = load_job(write_job(tmp_path, JOB))
    output = tmp_path / "out.jsonl"
    writer = ResultsWriter(output)
    with sim.serve_in_thread():
        async with OpenRouterClient(sim.base_url, FAKE_KEY, clock=clock, max_connections=32) as client:
            runner = Runner(
                client,
                writer,
                PoolConfig(RunSettings(concurrency=32, max_attempts=100, max_elapsed_s=3600)),
                clock,
                job_name="limited",
                job_fingerprint=job.fingerprint,
            )
            driver = asyncio.ensure_future(clock.drive(lambda: runner.throttle.active > 0))
            try:
                outcome = await asyncio.wait_for(runner.run(matrix_requests(job)), 120)
            finally:
                driver.cancel()
                writer.close()
    assert outcome.stop is None
    return sim, clock.now, read_rows(output)


@pytest.mark.parametrize("window", ["fixed", "sliding"])
@pytest.mark.parametrize("header", ["both", "retry-after"])
async def test_a_rate_limited_run_keeps_near_the_limit_with_few_429s(tmp_path: Path, window: str, header: str) -> None:
    sim, elapsed, rows = await limited_run(tmp_path, window, header)
    assert len(rows) == 240 and all(r["status"] == "ok" for r in rows)
    ok, limited = sim.stats.by_status[200], sim.stats.by_status[429]
    assert ok == 240 and sim.stats.chat_requests == ok + limited
    assert limited / sim.stats.chat_requests < 0.05  # issue 13: < 5% of attempts answered 429
    assert ok / elapsed >= 0.9 * 20  # and >= 0.9 of the allowed rate
