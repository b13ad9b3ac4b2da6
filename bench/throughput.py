"""1. Throughput at server latency 0: batchrun against bare baselines, N=5000, C=64 and 256
(BENCH_CONCURRENCIES, e.g. "32,64"; BENCH_CLIENTS, e.g. "batchrun,httpx-aiohttp": the floor must stay).

Each round resets the simulator's counters and runs one client; the rate is N divided by
the simulator's time from its first request to its last response. Clients alternate, and
each figure is the median of ROUNDS rounds. Target: batchrun >= 0.9x the httpx-aiohttp floor.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from common import (
    CLIENT_CORE,
    HERE,
    OUT,
    SIM_PIDS,
    cpu_seconds,
    machine,
    median,
    pinned,
    run_batchrun,
    sim_reset,
    sim_stats,
    simulator,
    verdict,
    write_job,
)

N = int(os.environ.get("BENCH_N", "5000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
CLIENTS = os.environ.get("BENCH_CLIENTS", "batchrun,httpx-aiohttp,aiohttp,httpx").split(",")
CONCURRENCIES = [int(c) for c in os.environ.get("BENCH_CONCURRENCIES", "64,256").split(",")]


SIM_CPU_PER_REQUEST: list[float] = []


def one_round(client: str, base: str, concurrency: int) -> float:
    sim_reset(base)
    cpu_before = cpu_seconds(SIM_PIDS[base])
    if client == "batchrun":
        job = write_job(N, concurrency)
        result = run_batchrun(job, base)
        if result.returncode != 0:
            raise SystemExit(f"batchrun failed: {result.stderr}")
    else:
        OUT.mkdir(exist_ok=True)
        out = tempfile.mktemp(dir=OUT, suffix=".jsonl")
        argv = [sys.executable, str(HERE / "baselines.py"), client, base, str(N), str(concurrency), out]
        subprocess.run(pinned(CLIENT_CORE, argv), check=True)
    stats = sim_stats(base)
    assert stats["by_status"].get("200") == N, stats
    SIM_CPU_PER_REQUEST.append((cpu_seconds(SIM_PIDS[base]) - cpu_before) / N)
    return float(N / stats["busy_s"])


def main() -> None:
    print(
        f"throughput: N={N}, server latency 0, {ROUNDS} alternating rounds, medians; {machine()}; "
        "simulator pinned to core 1, client to core 0"
    )
    with simulator() as base:
        for concurrency in CONCURRENCIES:
            rates: dict[str, list[float]] = {c: [] for c in CLIENTS}
            for _ in range(ROUNDS):
                for client in CLIENTS:
                    rates[client].append(one_round(client, base, concurrency))
            medians = {c: median(r) for c, r in rates.items()}
            floor = medians["httpx-aiohttp"]
            for client in CLIENTS:
                rate = medians[client]
                print(f"  C={concurrency:<4} {client:<14} {rate:8.0f} req/s  ({rate / floor:.2f}x floor)")
            # The machine's noise: each round's batchrun rate over the floor's rate of the same round.
            paired = sorted(b / f for b, f in zip(rates["batchrun"], rates["httpx-aiohttp"], strict=True))
            print(f"  C={concurrency}: per-round ratios {', '.join(f'{r:.2f}' for r in paired)}")
            ratio = medians["batchrun"] / floor
            print(f"  C={concurrency}: batchrun / floor = {ratio:.2f} -> {verdict(ratio >= 0.9)} (target >= 0.9)")
            # The simulator's capacity is 1 / its CPU time per request, over all rounds so far:
            # raw aiohttp on one core cannot saturate it, so its rate would understate it.
            sim_capacity = 1 / median(SIM_CPU_PER_REQUEST)
            sim_ratio = sim_capacity / medians["batchrun"]
            print(
                f"  C={concurrency}: simulator capacity {sim_capacity:.0f} req/s (from its CPU time per request) = "
                f"{sim_ratio:.1f}x batchrun -> {verdict(sim_ratio >= 3)} (target >= 3)"
            )


if __name__ == "__main__":
    main()
