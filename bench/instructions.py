"""Client CPU per request as instructions counted by valgrind (callgrind): batchrun against the floor.

A rate on this shared VM moved 0.59-1.25x for one code between rounds (bench/README.md), more
than the 10% the throughput target turns on. Instructions executed do not depend on what else
the machine runs: the same run counted twice differs by about 1-2%. Each client runs under
callgrind twice, N rows and 20 rows, and the difference over N - 20 is its count per request
(interpreter start-up, imports and pre-flight cancel out). The simulator runs natively, so under
valgrind's ~50x slow-down every answer is back before the client looks: this is the CPU cost
of a request, not a rate. Target: batchrun at >= 0.9x the floor (the throughput target's ratio).

BENCH_INSTR_N (default 200, ~3 minutes per client); needs valgrind (apt-get install valgrind).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

from common import BENCH_KEY, HERE, OUT, machine, sim_reset, simulator, verdict, write_job

N = int(os.environ.get("BENCH_INSTR_N", "200"))
SMALL = 20
CONCURRENCY = 64
# Python's own allocator hides allocations from valgrind's view of the heap; with malloc, the
# count includes what allocating costs, as it does when the client runs natively.
ENV = {**os.environ, "PYTHONMALLOC": "malloc", "OPENROUTER_API_KEY": BENCH_KEY}


def instructions(argv: list[str]) -> int:
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{argv[0]} failed under valgrind: {done.stderr[-1000:]}")
    return int(found.group(1))


def batchrun(base: str, rows: int) -> int:
    job = write_job(rows, CONCURRENCY)
    out = job.parent / f"out-{time.monotonic_ns()}.jsonl"
    argv = [sys.executable, "-m", "batchrun", str(job), "--base-url", f"{base}/api/v1", "-o", str(out), "-q"]
    return instructions(argv)


def floor(base: str, rows: int) -> int:
    OUT.mkdir(exist_ok=True)
    out = OUT / f"floor-{time.monotonic_ns()}.jsonl"
    argv = [sys.executable, str(HERE / "baselines.py"), "httpx-aiohttp", base, str(rows), str(CONCURRENCY), str(out)]
    return instructions(argv)


def per_request(client: Callable[[str, int], int], base: str) -> float:
    sim_reset(base)
    small = client(base, SMALL)
    sim_reset(base)
    return (client(base, N) - small) / (N - SMALL)


def main() -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind (apt-get install valgrind)")
    print(f"instructions per request: N={N} minus N={SMALL}, C={CONCURRENCY}, latency 0; {machine()}")
    with simulator() as base:
        counts = {"batchrun": per_request(batchrun, base), "httpx-aiohttp": per_request(floor, base)}
    for client, count in counts.items():
        print(f"  {client:<14} {count / 1000:8.0f} k instructions a request")
    ratio = counts["httpx-aiohttp"] / counts["batchrun"]
    print(f"  floor / batchrun = {ratio:.3f} -> {verdict(ratio >= 0.9)} (target >= 0.9)")


if __name__ == "__main__":
    main()
