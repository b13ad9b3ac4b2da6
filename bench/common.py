"""Helpers shared by the bench scripts: a pinned simulator process, pinned clients, medians.

The simulator runs in its own process on core 1 and every client on core 0 (taskset), so
the two never share a core; each figure is the simulator's own view of a round, from its
first chat request to its last response (interpreter start-up is not counted).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
SERVER_CORE, CLIENT_CORE = "1", "0"
# A key of a real key's shape ("sk-or-v1-" and 64 hex digits): what batchrun scrubs from every reply
# and record costs what its length makes it (a 9-character "bench-key" gave the scrubber 4 anchors
# and no fragment, where a real key has 74 of each form's blocks).
BENCH_KEY = "sk-or-v1-" + "0123456789abcdef" * 4


def pinned(core: str, argv: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", core, *argv]
    return argv


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SIM_PIDS: dict[str, int] = {}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def simulator(*options: str) -> Iterator[str]:
    """`batchrun simulate` on core 1; yields its base URL (SIM_PIDS maps it to the pid)."""
    port = free_port()
    argv = [sys.executable, "-m", "batchrun", "simulate", "--port", str(port)]
    for option in options:
        argv += ["--sim", option]
    process = subprocess.Popen(pinned(SERVER_CORE, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    SIM_PIDS[base] = process.pid
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{base}/__sim/stats", timeout=1)
                break
            except OSError:
                if process.poll() is not None:
                    message = f"the simulator did not start (is batchrun installed for {sys.executable}?)"
                    raise SystemExit(message) from None
                time.sleep(0.05)
        else:
            raise SystemExit("the simulator did not answer within 10 s")
        yield base
    finally:
        process.terminate()
        process.wait(10)


def sim_stats(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base}/__sim/stats", timeout=10) as response:
        return dict(json.load(response))


def sim_reset(base: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{base}/__sim/reset", method="POST"), timeout=10).read()


def write_job(rows: int, concurrency: int, name: str = "bench", dataset: bool = False) -> Path:
    """A job of `rows` short requests to one model (a dataset file when asked, else repeat)."""
    OUT.mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=OUT))
    if dataset:
        with (folder / "rows.jsonl").open("w") as handle:
            for index in range(rows):
                handle.write(json.dumps({"n": index}) + "\n")
        source = "dataset: rows.jsonl"
        text = "Say hi to number {{n}}."
        repeat = 1
    else:
        source = ""
        text = "Say hi."
        repeat = rows
    path = folder / "job.yaml"
    path.write_text(f"""name: {name}
models: [openai/gpt-4o-mini]
defaults: {{params: {{max_tokens: 16}}}}
prompts: [{{id: p, text: "{text}"}}]
{source}
repeat: {repeat}
run: {{concurrency: {concurrency}, max_attempts: 100, max_elapsed_s: 3600,
      key_refresh_requests: 1000000, key_refresh_s: 3600}}
""")
    return path


def run_batchrun(job: Path, base: str, *extra: str) -> subprocess.CompletedProcess[str]:
    out = job.parent / f"out-{time.monotonic_ns()}.jsonl"
    env = {**os.environ, "OPENROUTER_API_KEY": BENCH_KEY}
    argv = [sys.executable, "-m", "batchrun", str(job), "--base-url", f"{base}/api/v1", "-o", str(out), "-q", *extra]
    return subprocess.run(pinned(CLIENT_CORE, argv), env=env, capture_output=True, text=True, check=False)


def median(values: list[float]) -> float:
    return statistics.median(values)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FALL-SHORT"


def machine() -> str:
    return f"nproc {os.cpu_count()}, Python {sys.version.split()[0]}"
