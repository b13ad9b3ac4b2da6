"""5. Resume scan: time to load a 1,000,000-line results file for --resume.

Writes realistic records with batchrun's own writer (once, cached in bench/out), then
times `scan_states`, the function --resume runs. Target: under 3 s.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from common import OUT, machine, median, verdict

from batchrun._matrix import encode_body, stable_id
from batchrun._results import ResultsWriter, record_head, scan_states

LINES = int(os.environ.get("BENCH_LINES", "1000000"))


def build(path: Path) -> None:
    writer = ResultsWriter(path, fsync_every_s=3600)
    for index in range(LINES):
        row_id = stable_id("bench", "openai/gpt-4o-mini", "p", {"n": index}, 0)
        body = {
            "model": "openai/gpt-4o-mini",
            "max_tokens": 64,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": f"What is the capital of country number {index}?"},
            ],
        }
        record = record_head(row_id, "f" * 20, "ok", None, False, 0.0000123)
        record.update(
            job="bench",
            job_fingerprint="0" * 16,
            model="openai/gpt-4o-mini",
            prompt_id="p",
            vars={"n": index},
            repeat=0,
            response_model="openai/gpt-4o-mini-2024-07-18",
            provider="OpenAI",
            generation_id=f"gen-{index:024d}",
            content="Paris",
            finish_reason="stop",
            native_finish_reason="stop",
            usage={"prompt_tokens": 24, "completion_tokens": 2, "total_tokens": 26, "cost": 0.0000123},
            latency_ms=512.3,
            elapsed_ms=512.3,
            attempts=1,
            attempt_errors=[],
            error=None,
            checks=[{"name": "contains", "pass": True, "reason": "", "weight": 1}],
            passed=True,
            started_at="2026-11-27T02:15:00.000Z",
            finished_at="2026-11-27T02:15:00.512Z",
        )
        writer.write(record, encode_body(body))
    writer.close()


def main() -> None:
    OUT.mkdir(exist_ok=True)
    path = OUT / f"resume-{LINES}.jsonl"
    if not path.exists() or path.stat().st_size == 0:
        started = time.monotonic()
        build(path)
        print(f"built {path} in {time.monotonic() - started:.1f} s")
    size_mb = path.stat().st_size / 1e6
    print(f"resume scan: {LINES:,} lines, {size_mb:,.0f} MB; {machine()}")
    times = []
    for _ in range(3):
        started = time.monotonic()
        scan = scan_states(path)
        times.append(time.monotonic() - started)
        assert scan.lines == LINES and len(scan) == LINES
    value = median(times)
    print(
        f"  scan_states: {', '.join(f'{t:.2f}' for t in times)} s, median {value:.2f} s -> "
        f"{verdict(value < 3)} (target < 3 s)"
    )


if __name__ == "__main__":
    main()
