"""Shared fixtures: the simulator on a loopback port, job files, the CLI in and out of process."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchrun.cli import main
from batchrun.simulator import SimConfig, Simulator

FAKE_KEY = "sk-or-v1-" + "0123456789abcdef" * 4  # a test key: must never appear in any output


class FakeClock:
    """Monotonic and wall time that advance only when someone sleeps; sleeps return at once."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = 0.0
        self.wall0 = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.wall0 + self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig()


@pytest.fixture
def sim(sim_config: SimConfig) -> Iterator[Simulator]:
    simulator = Simulator(sim_config)
    with simulator.serve_in_thread():
        yield simulator


def write_job(folder: Path, text: str, name: str = "job.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


SMALL_JOB = """
name: small
defaults:
  params: {max_tokens: 32}
models: [openai/gpt-4o-mini, google/gemini-2.0-flash-001]
prompts:
  - id: capital
    text: "Capital of {{country}}?"
    vars: [{country: France, expect: Paris}, {country: Japan, expect: Tokyo}, {country: Italy, expect: Rome}]
    checks: [{contains: "{{expect}}"}]
  - id: sum
    text: "What is {{a}} + 1?"
    vars: [{a: 1}, {a: 2}]
repeat: 2
run: {concurrency: 4, timeout_s: 5, max_attempts: 8, max_wait_s: 5}
"""


@pytest.fixture
def small_job(tmp_path: Path) -> Path:
    return write_job(tmp_path, SMALL_JOB)


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENROUTER_API_KEY", "GITHUB_STEP_SUMMARY")}
    env.update(extra)
    return env


def run_cli(
    *args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The CLI as a real subprocess, as cron would start it."""
    return subprocess.run(
        [sys.executable, "-m", "batchrun", *map(str, args)],
        cwd=cwd,
        env=env or child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def call_cli(*args: str | Path) -> tuple[int, str, str]:
    """The CLI in process (fast): exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in args], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a results file, each once: a row appears again only when its cost was
    learnt after it was written (`cost_resolved_at`): its last record is the row, in its first place."""
    rows: dict[str, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["id"] in rows:
            assert record.get("cost_resolved_at"), f"row {record['id']} was recorded twice"
        rows[record["id"]] = record
    return list(rows.values())
