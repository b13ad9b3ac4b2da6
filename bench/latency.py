"""2. Latency-bound efficiency: server latency 50 ms, N=5000, C=64.

The ideal is ceil(N/C) x latency; batchrun's time is the simulator's, from its first
request to its last response. Target: ideal / actual >= 0.9.
"""

from __future__ import annotations

import math
import os

from common import machine, median, run_batchrun, sim_reset, sim_stats, simulator, verdict, write_job

N = int(os.environ.get("BENCH_N", "5000"))
C = 64
LATENCY_S = 0.05
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def main() -> None:
    ideal = math.ceil(N / C) * LATENCY_S
    print(f"latency-bound: N={N}, C={C}, server latency {LATENCY_S * 1000:.0f} ms, ideal {ideal:.2f} s; {machine()}")
    efficiencies = []
    with simulator(f"latency_ms={LATENCY_S * 1000}") as base:
        for _ in range(ROUNDS):
            sim_reset(base)
            result = run_batchrun(write_job(N, C), base)
            if result.returncode != 0:
                raise SystemExit(result.stderr)
            busy = sim_stats(base)["busy_s"]
            efficiencies.append(ideal / busy)
            print(f"  round: {busy:.2f} s -> efficiency {ideal / busy:.3f}")
    value = median(efficiencies)
    print(f"  median efficiency {value:.3f} -> {verdict(value >= 0.9)} (target >= 0.9)")


if __name__ == "__main__":
    main()
