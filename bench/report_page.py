"""7. HTML report: time, peak memory and page size of `report --html` at 1,000 and 100,000 rows.

The results files are synthetic (5 models, 60 prompts, one failing row in 7, 200-character
answers). Each report is a fresh process; the Vega bundle (built once per process by
vl-convert) is part of its time. Target: the 100,000-row page at most 2x the size of the
1,000-row one (charts are aggregated and the rows table is capped).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

SMALL = int(os.environ.get("BENCH_SMALL", "1000"))
LARGE = int(os.environ.get("BENCH_LARGE", "100000"))


def write_results(path: Path, rows: int) -> None:
    with path.open("wb") as out:
        for i in range(rows):
            passed = i % 7 != 0
            record = {
                "id": f"{i:020x}",
                "status": "ok",
                "cost": 1e-6,
                "job": "bench",
                "model": f"vendor/model-{i % 5}",
                "prompt_id": f"p{i % 60}",
                "vars": {"n": i},
                "content": "answer " * 28,
                "latency_ms": float(i % 997),
                "checks": [{"name": "c", "pass": passed, "reason": "" if passed else "wrong", "weight": 1}],
                "passed": passed,
                "score": float(passed),
                "started_at": "2026-11-01T00:00:00Z",
            }
            out.write(orjson.dumps(record) + b"\n")


def measure(rows: int, folder: Path) -> tuple[float, float, float]:
    """(seconds, peak RSS MB, page MB) of one `report --html` process."""
    results, page = folder / f"r{rows}.jsonl", folder / f"r{rows}.html"
    write_results(results, rows)
    argv = [
        sys.executable,
        "-c",
        "import resource, sys; from batchrun.cli import main; code = main(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(code)",
        "report",
        str(results),
        "--html",
        str(page),
        "--json",
    ]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    peak_kb = float(done.stderr.strip().splitlines()[-1])
    return seconds, peak_kb / 1024, page.stat().st_size / 1e6


def main() -> None:
    print(f"report --html, {SMALL:,} vs {LARGE:,} rows (cpu count {os.cpu_count()})")
    with tempfile.TemporaryDirectory() as tmp:
        figures = {rows: measure(rows, Path(tmp)) for rows in (SMALL, LARGE)}
    for rows, (seconds, rss, size) in figures.items():
        print(f"  {rows:>7,} rows: {seconds:6.2f} s, peak RSS {rss:6.1f} MB, page {size:5.2f} MB")
    ratio = figures[LARGE][2] / figures[SMALL][2]
    print(f"  page size ratio {ratio:.2f}x (target <= 2x): {'PASS' if ratio <= 2 else 'FALL-SHORT'}")


if __name__ == "__main__":
    main()
