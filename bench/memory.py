"""4. Memory: peak RSS of a 1,000-row run against a 100,000-row run (dataset rows, latency 0).

Each run is a fresh process calling the CLI as the console script does (`own_process`: its GC
settings); its peak RSS is the child's ru_maxrss.
Target: the large run's peak <= 1.2x the small one's.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

from common import BENCH_KEY, CLIENT_CORE, machine, pinned, simulator, verdict, write_job

SMALL = int(os.environ.get("BENCH_SMALL", "1000"))
LARGE = int(os.environ.get("BENCH_LARGE", "100000"))


def peak_rss_mb(rows: int, base: str) -> tuple[float, float]:
    job = write_job(rows, 64, dataset=True)
    out = job.parent / "out.jsonl"
    argv = [
        sys.executable,
        "-c",
        "import resource, sys; from batchrun.cli import main; code = main(sys.argv[1:], own_process=True); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(code)",
        str(job),
        "--base-url",
        f"{base}/api/v1",
        "-o",
        str(out),
        "-q",
    ]
    started = time.monotonic()
    result = subprocess.run(
        pinned(CLIENT_CORE, argv),
        env={**os.environ, "OPENROUTER_API_KEY": BENCH_KEY},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    with out.open("rb") as handle:
        assert sum(1 for _ in handle) == rows
    return int(result.stderr.strip().splitlines()[-1]) / 1024, time.monotonic() - started


def main() -> None:
    print(f"memory: peak RSS, {SMALL:,} vs {LARGE:,} rows from a dataset file, latency 0; {machine()}")
    _ = resource  # the child measures itself: RUSAGE_CHILDREN would mix both runs
    with simulator() as base:
        small, small_s = peak_rss_mb(SMALL, base)
        large, large_s = peak_rss_mb(LARGE, base)
    ratio = large / small
    print(f"  {SMALL:>7,} rows: {small:6.1f} MB peak ({small_s:.1f} s)")
    print(f"  {LARGE:>7,} rows: {large:6.1f} MB peak ({large_s:.1f} s)")
    print(f"  ratio {ratio:.2f} -> {verdict(ratio <= 1.2)} (target <= 1.2)")


if __name__ == "__main__":
    main()
