"""Client CPU per request as instructions counted by valgrind (callgrind): batchrun against the floor.

A rate on this shared VM moved 0.59-1.25x for one code between rounds (bench/README.md), more
than the 10% the throughput target turns on. Instructions executed do not depend on what else
the machine runs: the same run counted twice differs by about 1-2%. Each client runs under
callgrind twice, N rows and 20 rows, and the difference over N - 20 is its count per request
(interpreter start-up, imports and pre-flight cancel out). The simulator runs natively, so under
valgrind's ~50x slow-down every answer is back before the client looks: this is the CPU cost
of a request, not a rate. Target: batchrun at >= 0.9x the floor (the throughput target's ratio).

The simulator is counted the same way (under callgrind, serving an N-row and a 20-row run of
batchrun running natively): the throughput target's "simulator capacity >= 3x batchrun" as
instructions, which the other machine's work does not move. A count leaves out the kernel's
part (the simulator's sockets: ~10% of its CPU time on this VM), which throughput.py's figure,
from /proc, has.

BENCH_INSTR_N (default 200, ~3 minutes per client); needs valgrind (apt-get install valgrind).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

from common import BENCH_KEY, HERE, OUT, free_port, machine, sim_reset, simulator, verdict, write_job

N = int(os.environ.get("BENCH_INSTR_N", "200"))
SMALL = 20
CONCURRENCY = 64
# Python's own allocator hides allocations from valgrind's view of the heap; with malloc, the
# count includes what allocating costs, as it does when the client runs natively.
ENV = {**os.environ, "PYTHONMALLOC": "malloc", "OPENROUTER_API_KEY": BENCH_KEY}


CALLGRIND = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]


def collected(argv: list[str], returncode: int, stderr: str) -> int:
    found = re.search(r"Collected : (\d+)", stderr)
    if returncode != 0 or found is None:
        raise SystemExit(f"{argv[0]} failed under valgrind: {stderr[-1000:]}")
    return int(found.group(1))


def instructions(argv: list[str]) -> int:
    done = subprocess.run([*CALLGRIND, *argv], env=ENV, capture_output=True, text=True, check=False)
    return collected(argv, done.returncode, done.stderr)


def served(rows: int) -> int:
    """The simulator's instructions, from its start to its end, serving one run of `rows`."""
    port = free_port()
    argv = [sys.executable, "-m", "batchrun", "simulate", "--port", str(port)]
    server = subprocess.Popen(
        [*CALLGRIND, *argv], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):  # its start-up is ~50x slower under valgrind
        try:
            urllib.request.urlopen(f"{base}/__sim/stats", timeout=5).read()
            break
        except OSError:
            time.sleep(0.2)
    job = write_job(rows, CONCURRENCY)
    out = job.parent / f"out-{time.monotonic_ns()}.jsonl"
    argv_run = [sys.executable, "-m", "batchrun", str(job), "--base-url", f"{base}/api/v1", "-o", str(out), "-q"]
    run = subprocess.run(argv_run, env=ENV, capture_output=True, text=True, check=False)
    server.send_signal(signal.SIGINT)
    _, stderr = server.communicate(timeout=300)
    if run.returncode != 0:
        raise SystemExit(f"batchrun failed against the simulator under valgrind: {run.stderr[-1000:]}")
    return collected(argv, 0 if server.returncode in (0, -signal.SIGINT, 130) else server.returncode, stderr)


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
    server = (served(N) - served(SMALL)) / (N - SMALL)
    capacity = counts["batchrun"] / server
    print(f"  simulator      {server / 1000:8.0f} k instructions a request it serves")
    print(f"  batchrun / simulator = {capacity:.2f}x -> {verdict(capacity >= 3)} (simulator capacity, target >= 3x)")


if __name__ == "__main__":
    main()
