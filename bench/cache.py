"""7. The response cache: a fully cached 10,000-row run, and the cost of the cache on misses.

Hit path: a 10,000-row job (distinct prompts from a dataset) is run once to fill a cache,
then again; the second run's wall time (interpreter start-up and pre-flight included) is
the figure, and the simulator must have received 0 chat requests during it.

Miss path: the same job of N rows, latency 0, with an empty cache each round (every row
looked up, missed, sent, stored) against no cache; rounds alternate and each figure is the
median. Rate = N / the simulator's busy time, as in throughput.py; the wall-time ratio,
which adds the pre-flight lookups, is printed too. Target: overhead <= 5% of throughput.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from common import OUT, machine, median, run_batchrun, sim_reset, sim_stats, simulator, verdict, write_job

HIT_ROWS = int(os.environ.get("BENCH_CACHE_ROWS", "10000"))
N = int(os.environ.get("BENCH_N", "5000"))
C = int(os.environ.get("BENCH_C", "64"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))


def timed_run(job: Path, base: str, *extra: str) -> float:
    started = time.monotonic()
    result = run_batchrun(job, base, *extra)
    if result.returncode != 0:
        raise SystemExit(f"batchrun failed: {result.stderr}")
    return time.monotonic() - started


def hit_path(base: str) -> None:
    job = write_job(HIT_ROWS, C, name="bench-cache-hits", dataset=True)
    cache = tempfile.mkdtemp(dir=OUT)
    sim_reset(base)
    fill = timed_run(job, base, f"--cache={cache}")
    filled = sim_stats(base)["chat_requests"]
    sim_reset(base)
    cached = [timed_run(job, base, f"--cache={cache}") for _ in range(3)]
    sent = sim_stats(base)["chat_requests"]
    uncached = timed_run(job, base)
    print(
        f"  hit path: {HIT_ROWS} rows; filling run {fill:.2f} s ({filled} requests); fully cached run "
        f"{median(cached):.2f} s wall (median of 3, start-up included), {sent} chat requests sent; "
        f"the same run without a cache {uncached:.2f} s"
    )
    shutil.rmtree(cache, ignore_errors=True)


def miss_path(base: str) -> None:
    job = write_job(N, C, name="bench-cache-misses", dataset=True)
    rates: dict[str, list[float]] = {"no cache": [], "cache, all misses": []}
    walls: dict[str, list[float]] = {k: [] for k in rates}
    for _ in range(ROUNDS):
        for label in rates:
            cache = tempfile.mkdtemp(dir=OUT)
            extra = [f"--cache={cache}"] if label != "no cache" else []
            sim_reset(base)
            walls[label].append(timed_run(job, base, *extra))
            stats = sim_stats(base)
            assert stats["by_status"].get("200") == N, stats
            rates[label].append(N / stats["busy_s"])
            shutil.rmtree(cache, ignore_errors=True)
    plain, cached = median(rates["no cache"]), median(rates["cache, all misses"])
    overhead = 1 - cached / plain
    wall_overhead = median(walls["cache, all misses"]) / median(walls["no cache"]) - 1
    print(f"  miss path: N={N}, C={C}, latency 0, {ROUNDS} alternating rounds, medians")
    print(f"    no cache            {plain:8.0f} req/s   wall {median(walls['no cache']):.2f} s")
    print(f"    cache, all misses   {cached:8.0f} req/s   wall {median(walls['cache, all misses']):.2f} s")
    print(
        f"    overhead {overhead * 100:+.1f}% of throughput (wall {wall_overhead * 100:+.1f}%) -> "
        f"{verdict(overhead <= 0.05)} (target <= 5%)"
    )


def main() -> None:
    print(f"cache: {machine()}; simulator pinned to core 1, client to core 0")
    OUT.mkdir(exist_ok=True)
    with simulator() as base:
        hit_path(base)
        miss_path(base)


if __name__ == "__main__":
    main()
