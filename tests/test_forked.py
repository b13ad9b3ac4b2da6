"""The forked CLI process (tests/forked.py) is the process a new interpreter would be.

The signal, kill -9, lock and terminal tests start `batchrun` as a fork of the test process
to skip the interpreter's start-up. They show what they claim only if that child's process
state is what `python -m batchrun` has: the same signal dispositions and mask, none of the
parent's descriptors, and its own environment and working folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import BIG_JOB, child_env, wait_for_lines, write_job
from .forked import ForkedCli

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads processes from /proc")


# Signals 32 and 33 belong to glibc's threads (below SIGRTMIN, never a program's): a process
# that has had threads has glibc's handler on them. The test process has; a new one may not.
GLIBC_OWN = (1 << 31) | (1 << 32)


def _signal_masks(pid: int) -> dict[str, int]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = (line.partition(":") for line in lines)
    return {k: int(v, 16) & ~GLIBC_OWN for k, _, v in fields if k in ("SigBlk", "SigIgn", "SigCgt")}


def _open_files(pid: int) -> set[str]:
    return {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}


def test_a_forked_run_has_the_signals_and_descriptors_of_a_new_interpreter(tmp_path: Path) -> None:
    job = write_job(tmp_path, BIG_JOB)
    marker = tmp_path / "held-by-the-test.txt"
    held = marker.open("w")  # a descriptor of the parent's that a new interpreter would not have
    # Both are inspected mid-run, then killed: long runs (200 rows of 300 ms, 8 at a time, 7.5 s)
    # cost nothing, and the forked run starts once the new interpreter's is under way (out-147:
    # under load the forked run had ended, all 200 rows, before the new interpreter had begun).
    args: list[str | Path] = [job, "--simulate", "--sim", "latency_ms=300", "-q"]
    real = subprocess.Popen(
        [sys.executable, "-m", "batchrun", *map(str, args), "-o", str(tmp_path / "real.jsonl")],
        env=child_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    forked: ForkedCli | None = None
    try:
        wait_for_lines(tmp_path / "real.jsonl", 1, real)  # both are mid-run: handlers installed, files open
        forked = ForkedCli(
            [*args, "-o", tmp_path / "forked.jsonl"],
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_lines(tmp_path / "forked.jsonl", 1, forked)
        assert real.poll() is None  # still mid-run
        assert _signal_masks(forked.pid) == _signal_masks(real.pid)
        assert str(marker) not in _open_files(forked.pid)
        assert {f for f in _open_files(forked.pid) if f.startswith("/")} == {
            f.replace("/real.", "/forked.") for f in _open_files(real.pid) if f.startswith("/")
        }
    finally:
        held.close()
        for process in (real, forked):
            if process is not None:
                process.kill()
                process.wait()


def test_a_forked_run_has_its_own_environment_folder_and_exit_status(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    job = write_job(tmp_path / "work", BIG_JOB)
    env = child_env(GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"))
    with ForkedCli(
        [job.name, "--simulate", "-o", "here.jsonl", "-q"],
        cwd=tmp_path / "work",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        out, err = process.communicate(timeout=60)
    assert (process.returncode, out, err) == (0, "", "")
    assert (tmp_path / "work" / "here.jsonl").exists()  # its working folder
    assert "GITHUB_STEP_SUMMARY" not in os.environ and (tmp_path / "summary.md").exists()  # its environment
