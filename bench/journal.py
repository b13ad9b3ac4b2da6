"""The attempt journal's cost per attempt (break-14b M4): the three lines each answered attempt
appends (its reservation before it goes out, its generation id once the headers name it, what it
answered it cost before the ledger takes it: verify14j N1), against the
same attempt without a journal, and against an fsync per line (what the journal does not do:
README "Requests in flight at a kill -9"). BENCH_JOURNAL_N attempts (default 20,000; 200 with fsync).

    python bench/journal.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from batchrun import load_job
from batchrun._generation import Flight
from batchrun._journal import AttemptJournal
from batchrun._matrix import Request
from batchrun._results import ResultsWriter

N = int(os.environ.get("BENCH_JOURNAL_N", "20000"))


def _request() -> Request:
    body = b'{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"Capital of France?"}]}'
    return Request(
        id="0123456789abcdef0123",
        fingerprint="f" * 20,
        model="openai/gpt-4o-mini",
        prompt_id="capital",
        vars={},
        repeat=0,
        body={},
        payload=body,
        checks=[],
    )


def per_attempt_us(journal: AttemptJournal | None, count: int, fsync: bool = False) -> float:
    request = _request()
    started = time.perf_counter()
    for _ in range(count):
        if journal is None:
            flight = Flight()
        else:
            journal.sent(request, 0.000123, request.id)
            flight = Flight(lambda generation_id: journal.generation(request.id, generation_id))
            if fsync:
                os.fsync(journal._fd)
        flight.generation_id = "gen-1764384000-a1b2c3d4e5f6a7b8c9d0"
        if journal is not None:
            journal.paid(request.id, 0.000123)
    return (time.perf_counter() - started) / count * 1e6


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    writer = ResultsWriter(folder / "r.jsonl")
    job_file = folder / "bench.yaml"
    job_file.write_text("name: bench\nmodels: [openai/gpt-4o-mini]\nprompts: [{id: capital, text: Capital?}]\n")
    journal = AttemptJournal(folder / "r.jsonl", writer, load_job(job_file))
    bare = min(per_attempt_us(None, N) for _ in range(3))
    journaled = min(per_attempt_us(journal, N) for _ in range(3))
    synced = per_attempt_us(journal, max(1, N // 100), fsync=True)
    journal.close(whole=True)
    writer.close()
    print(f"attempt journal, {N:,} attempts, best of 3; nproc {os.cpu_count()}")
    print(f"  without a journal       {bare:8.2f} us per attempt")
    print(f"  journal (write, no sync) {journaled:7.2f} us per attempt (+{journaled - bare:.2f})")
    print(f"  journal + fsync per line {synced:7.2f} us per attempt (what it does not do)")


if __name__ == "__main__":
    main()
