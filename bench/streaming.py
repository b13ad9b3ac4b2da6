"""7. Streaming's CPU cost per request: the same job with and without `--stream`.

Each answer is about 50 tokens, streamed 4 tokens a chunk (13 SSE events and a usage
chunk) against a non-streamed JSON body. Figure: batchrun's CPU seconds (user + system,
from getrusage of the child) per request, start-up removed by also timing a 20-row run
and taking the difference. Target (README "Streaming"): streaming costs at most 3x the
CPU of a non-streamed request, so it can be the default only if the budget allows it.
"""

from __future__ import annotations

import os
import resource

from common import machine, median, run_batchrun, sim_reset, simulator, verdict, write_job

N = int(os.environ.get("BENCH_N", "3000"))
SMALL = 20
C = 32
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_of(base: str, rows: int, *extra: str) -> float:
    sim_reset(base)
    job = write_job(rows, C)
    before = child_cpu()
    result = run_batchrun(job, base, *extra)
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return child_cpu() - before


def per_request(base: str, *extra: str) -> float:
    return (cpu_of(base, N, *extra) - cpu_of(base, SMALL, *extra)) / (N - SMALL)


def main() -> None:
    print(f"streaming CPU: N={N}, C={C}, ~50-token answers, 4 tokens a chunk; {machine()}")
    plain, streamed = [], []
    with simulator("stream_padding=45", "stream_chunk_tokens=4") as base:
        for _ in range(ROUNDS):
            plain.append(per_request(base, "--no-stream"))
            streamed.append(per_request(base, "--stream"))
            print(f"  round: plain {plain[-1] * 1e3:.3f} ms CPU/request, streamed {streamed[-1] * 1e3:.3f} ms")
    ratio = median(streamed) / median(plain)
    print(
        f"  median: plain {median(plain) * 1e3:.3f} ms, streamed {median(streamed) * 1e3:.3f} ms CPU/request "
        f"-> ratio {ratio:.2f} -> {verdict(ratio <= 3)} (target <= 3)"
    )


if __name__ == "__main__":
    main()
