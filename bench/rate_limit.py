"""3. Rate-limit-bound: a server that allows R requests/s and answers 429 beyond it.

Prints the achieved rate over the allowed one and the share of attempts answered 429.
Target: >= 0.9 of R with < 5% of attempts rate-limited. A retry storm of independent
workers fails this.
"""

from __future__ import annotations

import os

from common import machine, run_batchrun, sim_stats, simulator, verdict, write_job

R = float(os.environ.get("BENCH_RPS", "200"))
N = int(os.environ.get("BENCH_N", "4000"))
C = int(os.environ.get("BENCH_C", "64"))


def main() -> None:
    print(
        f"rate-limited: server allows {R:.0f} req/s (fixed 1 s windows, 429 with X-RateLimit-Reset), "
        f"N={N}, C={C}; {machine()}"
    )
    for header in ("reset", "retry-after-ms"):
        with simulator(f"rate_limit_rps={R}", f"rate_limit_header={header}") as base:
            result = run_batchrun(write_job(N, C), base)
            if result.returncode != 0:
                raise SystemExit(result.stderr)
            stats = sim_stats(base)
        ok = stats["by_status"].get("200", 0)
        limited = stats["by_status"].get("429", 0)
        achieved = ok / stats["busy_s"]
        share = limited / stats["chat_requests"]
        ratio = achieved / R
        print(
            f"  {header:<15} {ok} ok in {stats['busy_s']:.1f} s: {achieved:.1f} req/s = {ratio:.3f} of allowed; "
            f"429s {limited}/{stats['chat_requests']} = {share:.2%} -> {verdict(ratio >= 0.9 and share < 0.05)} "
            "(target >= 0.9 and < 5%)"
        )


if __name__ == "__main__":
    main()
