"""A run against a hostile server: peak memory (a gzip bomb, huge bodies), and rows kept (issue 11).

Each case is a fresh `batchrun` process (its peak RSS is its own ru_maxrss) against the
raw-socket server of `tests/hostile.py` on 127.0.0.1:
- bomb: every reply is gzip that unpacks to BENCH_BOMB_MB MiB (3 GiB by default, ~3 MB sent);
- bodies: every reply is a BENCH_BODY_MB MiB JSON answer (200 MiB by default), concurrency 8;
- one in 50: 500 rows, concurrency 8, one attempt each, every 50th reply an answer that is
  a number: how many rows end ok, in error, or with no record at all.
Figures are printed, not asserted. BENCH_SRC=/path/to/another/checkout measures that
code instead (how the "before" figures of issue 11 were taken, with smaller sizes: the old
reader held a 3 GiB bomb whole, several times over).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.hostile import HostileServer, RawRequest, Writer, chat_payload, gzip_bomb, http, json_answer  # noqa: E402

BOMB_MB = int(os.environ.get("BENCH_BOMB_MB", "3072"))
BODY_MB = int(os.environ.get("BENCH_BODY_MB", "200"))
ROWS = int(os.environ.get("BENCH_ROWS", "8"))
SRC = os.environ.get("BENCH_SRC", str(ROOT))

JOB = """
name: hostile-bench
defaults: {params: {max_tokens: 16}}
models: [openai/gpt-4o-mini]
prompts:
  - id: p
    text: "Question {{n}}?"
    vars: [%s]
run: {concurrency: 8, max_attempts: 1, timeout_s: 300}
"""


def peak_rss_mb(base_url: str, folder: Path, rows: int = ROWS) -> tuple[float, float, int, str]:
    job = folder / "job.yaml"
    job.write_text(JOB % ", ".join(f"{{n: {i}}}" for i in range(rows)))
    out = folder / "out.jsonl"
    out.unlink(missing_ok=True)
    argv = [
        sys.executable,
        "-c",
        "import resource, sys; from batchrun.cli import main; code = main(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(code)",
        str(job),
        "--base-url",
        base_url,
        "-o",
        str(out),
        "-q",
    ]
    env = {**os.environ, "OPENROUTER_API_KEY": "sk-or-v1-" + "5" * 64, "PYTHONPATH": SRC}
    started = time.monotonic()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, cwd=folder)
    elapsed = time.monotonic() - started
    lines = result.stderr.strip().splitlines()
    if not lines or not lines[-1].isdigit():
        return float("nan"), elapsed, result.returncode, (lines[-1] if lines else "no output")[:120]
    size = out.stat().st_size if out.exists() else 0
    return int(lines[-1]) / 1024, elapsed, result.returncode, f"results file {size / 2**20:.1f} MiB"


def huge_answer(server: HostileServer, size: int) -> Writer:
    """A valid JSON answer whose content is `size` bytes, written without a length (the body
    ends when the connection closes) and without ever being held whole."""
    head = b'{"id":"g","model":"m","choices":[{"finish_reason":"stop","message":{"content":"'
    tail = b'"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
    chunk = b"x" * (1 << 20)

    async def write(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n" + head)
        try:
            for _ in range(size // len(chunk)):
                writer.write(chunk)
                await writer.drain()
            writer.write(tail)
            await writer.drain()
        except (ConnectionError, OSError):
            server.aborted += 1  # the client dropped the connection at its cap

    return write


def main() -> None:
    print(f"hostile memory: peak RSS of one batchrun process; code from {SRC}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bomb = gzip_bomb(BOMB_MB << 20)
        server = HostileServer(chat=lambda r: http(200, bomb, {"Content-Encoding": "gzip"}))
        with server.running():
            rss, seconds, code, note = peak_rss_mb(server.base_url, folder)
        print(
            f"  gzip bomb {len(bomb) / 1e6:.1f} MB -> {BOMB_MB:,} MiB, {ROWS} rows: "
            f"{rss:8.1f} MB peak, exit {code}, {seconds:.1f} s, {note}"
        )

        server = HostileServer(chat=lambda r: huge_answer(server, BODY_MB << 20))
        with server.running():
            rss, seconds, code, note = peak_rss_mb(server.base_url, folder)
        print(
            f"  {BODY_MB} MiB bodies, {ROWS} rows at concurrency 8: {rss:8.1f} MB peak, exit {code}, "
            f"{seconds:.1f} s, {note}; the server saw {server.aborted} connection(s) dropped"
        )

        seen = 0

        def one_in_fifty(request: RawRequest) -> bytes:
            nonlocal seen
            seen += 1
            return json_answer(200, chat_payload(7 if seen % 50 == 0 else "Paris"))

        server = HostileServer(chat=one_in_fifty)
        with server.running():
            rss, seconds, code, note = peak_rss_mb(server.base_url, folder, rows=500)
        records = [json.loads(line) for line in (folder / "out.jsonl").read_text().splitlines()]
        statuses = Counter(r["status"] for r in records)
        ids = {r["id"] for r in records}
        sent = set(server.chat_rows())
        print(
            f"  one bad reply in 50, 500 rows: exit {code}, {len(records)} records ({len(ids)} ids): "
            f"{dict(statuses)}; {len(sent)} rows sent, {len(sent - ids)} sent but unrecorded, "
            f"{500 - len(ids)} without a record"
        )


if __name__ == "__main__":
    main()
