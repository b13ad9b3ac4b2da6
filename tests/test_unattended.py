"""Cron and CI: kill -9 and resume, locking, SIGTERM, exit codes, shards and merge."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchrun import ExitCode, load_job, matrix_requests
from batchrun._journal_file import journal_path
from batchrun._results import ResultsWriter, final_records, repair_torn_tail, scan_states
from batchrun._simulated import merged_endpoint
from batchrun.cli import _results_on_stderr, _stderr_holds_records
from batchrun.simulator import Simulator

from .conftest import (
    BIG_JOB,
    FAKE_KEY,
    SMALL_JOB,
    SMALL_RUN,
    call_cli,
    child_env,
    cli,
    judged_small_job,
    killed_run_journal,
    management_env,
    read_rows,
    start,
    wait_for_file,
    wait_for_lines,
    write_job,
)
from .forked import run_forked
from .hostile import HostileServer, RawRequest, chat_payload, json_answer


def test_kill_9_at_random_points_then_resume(tmp_path: Path, sim: Simulator) -> None:
    sim.config.latency_ms = 20
    job = write_job(tmp_path, BIG_JOB)
    expected = {r.id for r in matrix_requests(load_job(job))}
    out = tmp_path / "k.jsonl"
    env = child_env(OPENROUTER_API_KEY="test-key")
    rng = random.Random(5)
    for round_number in range(3):
        sim.config.latency_ms = 20  # slow enough for the kill to land mid-run
        process = start(
            job, "--base-url", sim.base_url, "-o", out, "-q", *(["--resume"] if round_number else []), env=env
        )
        written_before = out.read_bytes().count(b"\n") if out.exists() else 0
        wait_for_lines(out, written_before + rng.randint(5, 60), process)
        process.kill()
        process.wait()
        ok_before = scan_states(out).ids("ok")
        sent_before = dict(sim.stats.by_row)
        kept = {
            json.loads(line)["id"]: line for line in out.read_bytes().splitlines(keepends=True) if line.endswith(b"\n")
        }
        sim.config.latency_ms = 0  # the finishing resume is not killed: no reason to wait
        final = cli(job, "--base-url", sim.base_url, "-o", out, "-q", "--resume", env=env)
        assert final.returncode == 0, final.stderr
        lines = out.read_bytes().splitlines(keepends=True)
        assert all(line.endswith(b"\n") for line in lines)
        rows = [json.loads(line) for line in lines]  # every line valid JSON
        view = list(final_records(out))
        assert sorted(r["id"] for r in view) == sorted(expected)  # every row exactly once
        assert all(r["status"] == "ok" for r in view)
        for row_id in ok_before:  # no request sent again for a row already ok
            assert sim.stats.by_row[row_id] == sent_before[row_id]
        assert all(line in out.read_bytes() for line in kept.values())  # nothing written was lost
        assert len(rows) >= len(expected)
        out.unlink()
        (tmp_path / "k.summary.json").unlink()


def test_a_torn_last_line_is_repaired_not_read(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    out.write_bytes(
        b'{"id":"aa","fingerprint":"f","status":"ok","reason":null,"retryable":false,"cost":0.1,'
        b'"job":"j","model":"m","prompt_id":"p"}\n{"id":"bb","fingerp'
    )
    assert [r["id"] for r in final_records(out)] == ["aa"]
    assert scan_states(out).ids() == {"aa"}
    assert repair_torn_tail(out, "j") == "cut a torn last record (19 bytes) left by an earlier crash"
    assert out.read_bytes().endswith(b'"p"}\n') and repair_torn_tail(out, "j") is None


def test_supersede_rule_last_record_wins(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    head = (
        '{{"id":"{}","fingerprint":"f","status":"{}","reason":null,"retryable":false,"cost":null,'
        '"job":"j","model":"m","prompt_id":"p","n":{}}}\n'
    )
    out.write_text(head.format("aa", "skipped", 1) + head.format("bb", "ok", 2) + head.format("aa", "ok", 3))
    assert [(r["id"], r["n"]) for r in final_records(out)] == [("bb", 2), ("aa", 3)]


def test_resume_reruns_edited_prompts_and_skipped_rows_only(tmp_path: Path, sim: Simulator) -> None:
    job = write_job(tmp_path, SMALL_JOB)
    out = tmp_path / "r.jsonl"
    env = child_env(OPENROUTER_API_KEY="test-key")
    assert cli(job, "--base-url", sim.base_url, "-o", out, "-q", env=env).returncode == 0
    assert sim.stats.chat_requests == 20
    assert cli(job, "--base-url", sim.base_url, "-o", out, "-q", "--resume", env=env).returncode == 0
    assert sim.stats.chat_requests == 20  # nothing to do
    write_job(tmp_path, SMALL_JOB.replace("What is {{a}} + 1?", "Compute {{a}} + 1."))
    result = cli(job, "--base-url", sim.base_url, "-o", out, "--resume", env=env)
    assert result.returncode == 0
    assert sim.stats.chat_requests == 28  # the 8 rows of the edited prompt
    assert len(list(final_records(out))) == 20 and len(read_rows(out)) == 28


def test_resume_without_output_picks_the_latest_incomplete_run(tmp_path: Path) -> None:
    write_job(tmp_path, BIG_JOB.replace("grace_s: 0.2", "grace_s: 0.2, deadline_s: 0.5"))
    first = cli("job.yaml", "--simulate", "--sim", "latency_ms=100", "-q", cwd=tmp_path)
    assert first.returncode == ExitCode.DEADLINE
    [path] = (tmp_path / "outputs" / "small").glob("*.jsonl")
    second = cli("job.yaml", "--simulate", "--resume", "--deadline", "600", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert f"resuming outputs/small/{path.name}, the most recent incomplete run of small" in second.stderr
    assert len(list(final_records(path))) == 200
    assert json.loads((path.with_name(path.stem + ".summary.json")).read_text())["complete"] is True


def test_a_second_run_on_the_same_output_is_refused(tmp_path: Path, sim: Simulator) -> None:
    # Every answer hangs, so the first run holds its lock until it is signalled, however
    # slowly the second one starts (no timing luck).
    sim.config.faults = {"hang": 1.0}
    job = write_job(tmp_path, BIG_JOB)
    out = tmp_path / "l.jsonl"
    env = child_env(OPENROUTER_API_KEY="test-key")
    first = start(job, "--base-url", sim.base_url, "-o", out, "-q", env=env)
    wait_for_file(tmp_path / "l.jsonl.lock", first)
    second = cli(job, "--base-url", sim.base_url, "-o", out, "-q", env=env)
    assert second.returncode == ExitCode.LOCKED
    assert second.stderr.startswith("batchrun: l.jsonl is being written by another batchrun run (pid ")
    first.send_signal(signal.SIGTERM)
    first.wait(60)
    assert first.returncode == ExitCode.INTERRUPTED
    assert len(read_rows(out)) == 200 and len({r["id"] for r in read_rows(out)}) == 200
    assert not (tmp_path / "l.jsonl.lock").exists()  # removed when the run ended


def test_a_hard_link_to_an_output_being_written_is_refused(tmp_path: Path, sim: Simulator) -> None:
    # break22 M4: two resumes through two hard links of one file each took their own
    # OUTPUT.lock: 56 of 60 rows were answered, and paid, twice.
    sim.config.faults = {"hang": 1.0}
    job = write_job(tmp_path, BIG_JOB)
    out, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    env = child_env(OPENROUTER_API_KEY="test-key")
    assert cli(job, "--base-url", sim.base_url, "-o", out, "-q", "--deadline", "0.2", env=env).returncode == 6
    os.link(out, other)
    sent = sim.stats.chat_requests
    first = start(job, "--base-url", sim.base_url, "-o", out, "-q", "--resume", env=env)
    end = time.monotonic() + 30
    while sim.stats.chat_requests == sent and first.poll() is None and time.monotonic() < end:
        time.sleep(0.01)  # until it sends: long past taking its locks
    before = out.read_bytes()
    second = cli(job, "--base-url", sim.base_url, "-o", other, "-q", "--resume", env=env)
    first.send_signal(signal.SIGTERM)
    first.wait(60)
    assert second.returncode == ExitCode.LOCKED, second.stderr
    assert second.stderr.startswith(
        "batchrun: b.jsonl is being written by another process: another batchrun run under another name of the "
        "same file (a hard link), or a program that locked it"
    )
    assert out.read_bytes().startswith(before) and len({r["id"] for r in read_rows(out)}) == 200


def test_a_hard_link_to_an_output_a_run_created_is_refused(tmp_path: Path, sim: Simulator) -> None:
    # verify22 N4: a run that created its output had locked the name only: a hard link made
    # to the new file let a second run resume it at once (44 of 60 rows paid twice).
    sim.config.faults = {"hang": 1.0}
    job = write_job(tmp_path, BIG_JOB)
    out, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    env = child_env(OPENROUTER_API_KEY="test-key")
    first = start(job, "--base-url", sim.base_url, "-o", out, "-q", env=env)
    end = time.monotonic() + 30
    while sim.stats.chat_requests == 0 and first.poll() is None and time.monotonic() < end:
        time.sleep(0.01)  # it sends only once its output is open
    os.link(out, other)
    second = cli(job, "--base-url", sim.base_url, "-o", other, "-q", "--resume", "--deadline", "2", env=env)
    first.send_signal(signal.SIGTERM)
    first.wait(60)
    assert second.returncode == ExitCode.LOCKED, second.stderr
    assert "under another name of the same file" in second.stderr


# Takes the lock as a run does, says so, and holds it until killed.
HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
time.sleep(120)
"""


def test_a_stale_lock_is_taken_over(tmp_path: Path, small_job: Path) -> None:
    out = tmp_path / "stale.jsonl"
    lock = tmp_path / "stale.jsonl.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        refused = cli(small_job, "--simulate", "-o", out, "-q")  # a held lock keeps a run out ...
        assert refused.returncode == ExitCode.LOCKED and f"(pid {holder.pid})" in refused.stderr
    finally:
        holder.kill()  # ... until its holder dies by kill -9, which runs no clean-up
        holder.wait()
    # The file stays behind, naming a pid that may be reused by a live process (this one):
    # neither the file nor the pid in it may keep the next run out.
    lock.write_text(f"{os.getpid()}\n")
    result = cli(small_job, "--simulate", "-o", out, "-q")
    assert result.returncode == 0 and len(read_rows(out)) == 20
    assert not lock.exists()  # taken over, then removed when the run ended


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_sigterm_stops_cleanly_with_its_code(tmp_path: Path, sig: signal.Signals) -> None:
    # break36 F3: a SIGHUP (the terminal or ssh session closed) killed the run by the signal,
    # exit 129, without a word, its lock and journal left: it stops as SIGTERM does.
    job = write_job(tmp_path, BIG_JOB)
    out = tmp_path / "term.jsonl"
    process = start(job, "--simulate", "--sim", "latency_ms=100", "-o", out, "-q")
    wait_for_lines(out, 10, process)
    process.send_signal(sig)
    _, err = process.communicate(timeout=30)
    assert process.returncode == ExitCode.INTERRUPTED, err
    rows = read_rows(out)
    assert len(rows) == 200 and len({r["id"] for r in rows}) == 200
    assert {(r["status"], r["reason"]) for r in rows} <= {("ok", None), ("skipped", "interrupted")}
    summary = json.loads((tmp_path / "term.summary.json").read_text())
    assert summary["stop"] == "interrupted" and summary["complete"] is False
    # The way on, with the file's name (out-152 F5, out-153 F2: a bare --resume took up an older run).
    assert f"stopped: interrupted (--resume -o {out} runs the rows it did not answer)" in err
    assert not (tmp_path / "term.jsonl.lock").exists() and not (tmp_path / "term.attempts.jsonl").exists()


@pytest.mark.parametrize("ignored", [signal.SIGHUP, signal.SIGINT], ids=["nohup", "background"])
def test_a_signal_ignored_when_the_run_started_stays_ignored(tmp_path: Path, ignored: signal.Signals) -> None:
    # nohup ignores SIGHUP so the run outlives its terminal: it stays ignored. So does the SIGINT
    # a shell ignores in what it starts with `&` (out-126 F3: a Ctrl-C meant for the script
    # stopped every background shard past its start-up, and none before it).
    job = write_job(tmp_path, BIG_JOB)
    out = tmp_path / "hup.jsonl"
    nohup = functools.partial(signal.signal, ignored, signal.SIG_IGN)
    process = start(job, "--simulate", "--sim", "latency_ms=100", "-o", out, "-q", preexec_fn=nohup)
    wait_for_lines(out, 10, process)
    process.send_signal(ignored)
    wait_for_lines(out, 20, process)  # still running: more rows come
    assert process.poll() is None
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == ExitCode.INTERRUPTED, err


@pytest.mark.parametrize(
    ("second", "isolated"),
    [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGTERM, True)],
    ids=["TERM-TERM", "TERM-INT", "TERM-TERM-isolated-key"],
)
def test_a_second_signal_exits_at_once_leaving_a_valid_file(
    tmp_path: Path, sim: Simulator, second: signal.Signals, isolated: bool
) -> None:
    sim.config.latency_ms = 60_000  # in-flight requests outlast the test: only the second signal ends it
    job = write_job(tmp_path, BIG_JOB.replace("grace_s: 0.2", "grace_s: 60"))
    out = tmp_path / "twice.jsonl"
    keys = ("--isolated-key", "--budget", "1") if isolated else ()
    env = management_env() if isolated else child_env(OPENROUTER_API_KEY="k")
    process = start(job, "--base-url", sim.base_url, "-o", out, "-q", *keys, env=env)
    end = time.monotonic() + 30
    while sim.stats.chat_requests < 8 and time.monotonic() < end:  # every worker has a request in flight
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    # Two deliveries, not one coalesced signal: on a busy machine the run may not have handled
    # the first 0.2 s later (out-147), so the second is sent again until one ends the run; the
    # 60 s grace would hold it otherwise.
    end = time.monotonic() + 20
    while process.poll() is None and time.monotonic() < end:
        time.sleep(0.2)
        process.send_signal(second)
    _, err = process.communicate(timeout=20)
    assert process.returncode == ExitCode.INTERRUPTED
    assert "second signal: exiting now" in err
    # A per-run key is left to expire, and said so, not left silent (verify64 F3).
    assert ("per-run key, if one was made, is left to expire on its own" in err) == isolated
    assert sim.stats.keys_deleted == 0 and sim.stats.keys_created == int(isolated)
    assert sorted(tmp_path.rglob("*.lock")) == []  # exiting at once still removes the lock files
    for line in out.read_bytes().splitlines(keepends=True):
        assert line.endswith(b"\n") and json.loads(line)


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ([], ExitCode.OK),
        (["--sim", "fault.400=0.5"], ExitCode.ERRORS),
        (["--pass-threshold", "1"], ExitCode.QUALITY),
        (["--budget", "0.00001"], ExitCode.BUDGET),
        (["--sim", "latency_ms=200", "--deadline", "0.3"], ExitCode.DEADLINE),
        (["--sim", "fault.401=1"], ExitCode.AUTH),
        (["--sim", "require_key=other"], ExitCode.AUTH),
        (["--shard", "3/2"], ExitCode.USAGE),
        (["--sim", "nonsense=1"], ExitCode.USAGE),
    ],
)
def test_exit_code_of_each_outcome(tmp_path: Path, extra: list[str], code: ExitCode) -> None:
    job = write_job(
        tmp_path,
        SMALL_JOB.replace('checks: [{contains: "{{expect}}"}]', 'checks: [{contains: "{{expect}}"}, {contains: "zzz"}]')
        if "--pass-threshold" in extra
        else SMALL_JOB,
    )
    result = cli(job, "--simulate", "-o", tmp_path / "e.jsonl", "-q", *extra)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr


def test_shards_cover_every_row_once_and_merge(tmp_path: Path) -> None:
    job = write_job(tmp_path, SMALL_JOB)
    shards = [tmp_path / f"shard-{k}.jsonl" for k in (1, 2, 3)]
    for k, path in enumerate(shards, start=1):
        assert cli(job, "--simulate", "--shard", f"{k}/3", "-o", path, "-q").returncode == 0
    ids = [r["id"] for path in shards for r in read_rows(path)]
    assert len(ids) == len(set(ids)) == 20 and set(ids) == {r.id for r in matrix_requests(load_job(job))}
    code, text, err = call_cli("merge", tmp_path / "all.jsonl", *shards)
    assert code == 0, err
    assert sorted(r["id"] for r in read_rows(tmp_path / "all.jsonl")) == sorted(ids)
    assert json.loads((tmp_path / "all.summary.json").read_text())["total"]["ok"] == 20
    code, text, _ = call_cli("report", tmp_path / "all.jsonl")
    assert code == 0 and "TOTAL" in text
    assert "simulator" not in err  # every shard simulated: nothing mixed
    # out-101 F4: a shard tried out with --simulate beside real ones was merged without a word.
    summary = shards[1].with_name("shard-2.summary.json")
    summary.write_text(
        summary.read_text().replace('"endpoint": "simulator"', '"endpoint": "https://openrouter.ai/api/v1"')
    )
    code, _, err = call_cli("merge", tmp_path / "mixed.jsonl", *shards)
    assert (
        code == 0 and "some shards were answered by the built-in simulator (--simulate), others by an endpoint" in err
    )
    # out-138 F5: nor when the real shard was killed (no summary; its journal names the endpoint).
    killed_run_journal(shards[1], "https://openrouter.ai/api/v1", "2/3")
    summary.unlink()
    code, _, err = call_cli("merge", tmp_path / "killed.jsonl", *shards, "--allow-partial")
    assert "some shards were answered by the built-in simulator (--simulate), others by an endpoint" in err, err
    assert json.loads((tmp_path / "killed.summary.json").read_text())["endpoint"] == "mixed"
    # out-139 F5: a shard nothing says the answerer of (no summary, no journal) is named.
    journal_path(shards[1]).unlink()
    code, _, err = call_cli("merge", tmp_path / "unknown.jsonl", *shards, "--allow-partial")
    assert (
        f"{shards[1]}: nothing beside it (a summary that saw it as it is, its run's journal) says who answered" in err
    )
    # out-139 F7: shards of two real endpoints are not "answered in part by the simulator".
    assert (
        merged_endpoint(["https://b.example/v1", "https://a.example/v1"])
        == "https://a.example/v1 + https://b.example/v1"
    )
    assert merged_endpoint(["simulator", "https://a.example/v1"]) == "mixed"
    assert merged_endpoint(["mixed", "https://a.example/v1"]) == "mixed"  # a merge with a try-out in it, merged again


def test_merge_refuses_files_of_different_jobs(tmp_path: Path) -> None:
    a = write_job(tmp_path, SMALL_JOB, "a.yaml")
    b = write_job(tmp_path, SMALL_JOB.replace("name: small", "name: other"), "b.yaml")
    assert cli(a, "--simulate", "-o", tmp_path / "a.jsonl", "-q").returncode == 0
    assert cli(b, "--simulate", "-o", tmp_path / "b.jsonl", "-q").returncode == 0
    code, _, err = call_cli("merge", tmp_path / "m.jsonl", tmp_path / "a.jsonl", tmp_path / "b.jsonl")
    assert code == ExitCode.USAGE and "different jobs" in err and not (tmp_path / "m.jsonl").exists()


def test_resume_scan_across_windows_with_foreign_lines_and_a_torn_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import batchrun._reader as reader
    import batchrun._results as results

    monkeypatch.setattr(reader, "_WINDOW", 256)  # many windows, and lines longer than one
    out = tmp_path / "w.jsonl"
    writer = ResultsWriter(out)
    for index in range(40):
        record = results.record_head(
            f"{index:04x}", "ab", "ok" if index % 3 else "error", None if index % 3 else "timeout", index % 3 == 0, 0.5
        )
        record["content"] = "x" * (index * 20)
        writer.write(record, b'{"model":"m"}')
    writer.close()
    with out.open("a") as handle:  # a line another tool wrote, then a torn tail
        handle.write(json.dumps({"id": "ffff", "status": "ok", "cost": 1.0, "fingerprint": "cd"}) + "\n")
        handle.write('{"id":"eeee","fingerprint":"ab","status":"ok","reason":null,"retryable":false,"cost":9,')
    scan = scan_states(out)
    assert scan.lines == 41 and len(scan) == 41
    assert scan.spent_usd == pytest.approx(40 * 0.5 + 1.0)
    assert scan.get("0003") == ("ab", "error", "timeout", True)
    assert scan.get("0004") == ("ab", "ok", None, False)
    assert scan.get("ffff") == ("cd", "ok", None, False) and scan.get("eeee") is None


def test_overlapping_runs_of_one_job_with_default_outputs_are_refused(tmp_path: Path, sim: Simulator) -> None:
    sim.config.faults = {"hang": 1.0}  # the first run holds its lock until it is signalled
    write_job(tmp_path, BIG_JOB)
    env = child_env(OPENROUTER_API_KEY="test-key")
    first = start("job.yaml", "--base-url", sim.base_url, "-q", cwd=tmp_path, env=env)
    folder = tmp_path / "outputs" / "small"
    end = time.monotonic() + 30
    while time.monotonic() < end and not list(folder.glob("*.jsonl")):
        time.sleep(0.02)
    second = cli("job.yaml", "--base-url", sim.base_url, "-q", cwd=tmp_path, env=env)
    assert second.returncode == ExitCode.LOCKED
    assert second.stderr.startswith("batchrun: job small is being run by another batchrun run (pid ")
    first.send_signal(signal.SIGTERM)
    first.wait(60)
    assert first.returncode == ExitCode.INTERRUPTED and len(list(folder.glob("*.jsonl"))) == 1
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".lock")) == []  # no lock files left


def test_retry_errors_reruns_only_retryable_errors(tmp_path: Path, sim: Simulator) -> None:
    job = write_job(tmp_path, SMALL_JOB)
    out = tmp_path / "e.jsonl"
    env = child_env(OPENROUTER_API_KEY="test-key")
    sim.config.faults = {"500": 1.0}
    first = cli(job, "--base-url", sim.base_url, "-o", out, "-q", "--max-attempts", "1", env=env)
    assert first.returncode == ExitCode.ERRORS and sim.stats.chat_requests == 20
    sim.config.faults = {}
    assert cli(job, "--base-url", sim.base_url, "-o", out, "-q", "--resume", env=env).returncode == ExitCode.ERRORS
    assert sim.stats.chat_requests == 20  # error rows are kept by a plain resume
    result = cli(job, "--base-url", sim.base_url, "-o", out, "-q", "--resume", "--retry-errors", env=env)
    assert result.returncode == ExitCode.OK and sim.stats.chat_requests == 40
    assert {r["status"] for r in final_records(out)} == {"ok"}


def test_final_errors_are_not_retried_by_retry_errors(tmp_path: Path, sim: Simulator) -> None:
    job = write_job(tmp_path, SMALL_JOB)
    out = tmp_path / "f.jsonl"
    env = child_env(OPENROUTER_API_KEY="test-key")
    sim.config.faults = {"400": 1.0}
    assert cli(job, "--base-url", sim.base_url, "-o", out, "-q", env=env).returncode == ExitCode.ERRORS
    sim.config.faults = {}
    result = cli(job, "--base-url", sim.base_url, "-o", out, "-q", "--resume", "--retry-errors", env=env)
    assert result.returncode == ExitCode.ERRORS and sim.stats.chat_requests == 20


def test_sigterm_during_a_regrading_with_judges_stops_it_cleanly_with_its_code(tmp_path: Path) -> None:
    # Verification of the break14h fixes (V8): `report --job` spends on grader requests, yet it
    # handled signals like a read-only command: SIGTERM killed it (143) with nothing said.
    # Graders in flight answer within their timeout and get 1 s of grace: the stop is quick
    # even on a loaded machine (with a 5 s timeout below the latency, each was abandoned and
    # looked up, and the test timed out once).
    judged = judged_small_job("run: {concurrency: 4, timeout_s: 30, max_attempts: 1, grace_s: 1}")
    assert "grace_s: 1" in judged
    plain = write_job(tmp_path, SMALL_JOB)
    out = tmp_path / "r.jsonl"
    assert call_cli(plain, "--simulate", "-o", out, "-q")[0] == ExitCode.OK
    folder = tmp_path / "judged"
    folder.mkdir()
    job = write_job(folder, judged)
    process = start("report", out, "--job", job, "--simulate", "--sim", "latency_ms=2000")
    assert process.stderr is not None
    line = process.stderr.readline()  # the worst case, said before any grader request goes out
    assert "re-grading" in line
    process.send_signal(signal.SIGTERM)
    stdout, err = process.communicate(timeout=60)
    assert process.returncode == ExitCode.INTERRUPTED, err
    assert "stopped: interrupted" in err and "Traceback" not in err


@pytest.mark.parametrize("closed", [">&-", "2>&-", ">&- 2>&- <&-"])
def test_a_run_started_with_its_standard_descriptors_closed_runs(tmp_path: Path, closed: str) -> None:
    # break25 F2: a closed stdout or stderr (Python's sys.stdout None) was a traceback and exit
    # 1 after the run; with stderr closed the run never started, without a word.
    job = write_job(tmp_path, SMALL_JOB)
    out = tmp_path / "out.jsonl"
    command = f'exec "$@" {closed}'
    argv = ["sh", "-c", command, "sh", sys.executable, "-m", "batchrun", str(job), "--simulate", "-o", str(out)]
    result = subprocess.run(argv, env=child_env(), capture_output=True, text=True, timeout=60, check=False)
    # With stderr closed nothing is said: the summary (and the rows' errors) say why, if it failed
    # (it failed once under load, exit 1, and nothing showed why).
    summary = out.with_name("out.summary.json")
    why = summary.read_text()[:3000] if summary.exists() else "no summary"
    assert result.returncode == ExitCode.OK, (result.stderr, why)
    assert "Traceback" not in result.stderr and len(read_rows(out)) == 20
    assert out.with_name("out.summary.json").exists()
    if closed == ">&-":  # break35 F3: a failing run's summary went nowhere, and nothing said so
        assert "warning" not in result.stderr  # a passing run's summary is no news
        failing = [*argv, "--pass-threshold", "0.9", "--sim", "accuracy.openai/gpt-4o-mini=0"]
        failing[failing.index(str(out))] = str(tmp_path / "failing.jsonl")
        result = subprocess.run(failing, env=child_env(), capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == ExitCode.QUALITY, result.stderr
        assert "warning: stdout: the summary could not be written: it was closed when batchrun started" in result.stderr
    if closed.count("&-") == 3:  # a reader too, which prints its whole output there
        argv = ["sh", "-c", command, "sh", sys.executable, "-m", "batchrun", "report", str(out)]
        result = subprocess.run(argv, env=child_env(), capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == ExitCode.OK and "Traceback" not in result.stderr


@pytest.mark.parametrize("output", ["out.jsonl", "/dev/stdout"])
def test_an_output_that_is_the_runs_own_stdout_is_refused(tmp_path: Path, output: str) -> None:
    # break40 F1: `-o r.jsonl > r.jsonl` (or `-o /dev/stdout > r.jsonl`) ran, paid, and exit 0,
    # while the summary table overwrote the first records: a file no reader or resume could read.
    # A forked child with the shell's descriptors: what is tested is what fd 1 and 2 are.
    job, out = write_job(tmp_path, SMALL_JOB), tmp_path / "out.jsonl"
    args: list[str | Path] = [job, "--simulate", "-o", output]

    with open(out, "wb") as truncated:  # `> out.jsonl`
        result = run_forked(args, cwd=tmp_path, env=child_env(), stdout=truncated, stderr=subprocess.PIPE, text=True)
    assert result.returncode == ExitCode.USAGE and out.read_bytes() == b""
    assert result.stderr == f"batchrun: {output}: is this command's standard output too: what it prints would " + (
        "overwrite the records; give another --output, or send its standard output elsewhere\n"
    )
    # Piped, /dev/stdout is no file at all: said so (it named a lock beside /proc/<pid>/fd/pipe:[...]).
    piped = run_forked(
        [job, "--simulate", "-o", "/dev/stdout"],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert piped.returncode == ExitCode.USAGE and "/dev/stdout: not a regular file" in piped.stderr
    if output != "out.jsonl":
        return
    # verify40 F2: with stderr appended to the results, the refusal itself went into them.
    out.write_bytes(b"")
    assert call_cli(job, "--simulate", "-o", out, "-q")[0] == ExitCode.OK
    before = out.read_bytes()
    for stdout_too in (False, True):  # `2>> out.jsonl`, then `>> out.jsonl 2>&1`
        with open(out, "ab") as appended:
            stdout = appended if stdout_too else subprocess.DEVNULL
            refused = run_forked([*args, "--resume"], cwd=tmp_path, env=child_env(), stdout=stdout, stderr=appended)
        assert refused.returncode == ExitCode.USAGE and out.read_bytes() == before
    # verify41 F-2b, verify42 F-A: nor an error found before (a typo in a cron line: an option;
    # the other spellings: test_the_results_file_on_stderr_is_the_one_argparse_would_write).
    with open(out, "ab") as appended:
        refused = run_forked(
            [*args, "--quite", "--resume"], cwd=tmp_path, env=child_env(), stdout=appended, stderr=appended
        )
    assert refused.returncode == ExitCode.USAGE and out.read_bytes() == before


@contextlib.contextmanager
def stderr_to(descriptor: int) -> Iterator[None]:
    """This process's file descriptor 2 on `descriptor` (what `2>> FILE` gives the console script)."""
    saved = os.dup(2)
    try:
        os.dup2(descriptor, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def test_the_results_file_on_stderr_is_the_one_argparse_would_write(tmp_path: Path) -> None:
    # verify43 F4, F5, F6: the early refusal read every `-o` (a wrapper's default one, overridden,
    # refused the run), missed merge's `OUT SHARD...`, and was silent on a terminal or pipe.
    out, other = tmp_path / "out.jsonl", tmp_path / "other.jsonl"
    out.write_bytes(b"")
    with open(out, "ab") as handle, stderr_to(handle.fileno()):
        refused = {
            "-o twice, the last": ["job.yaml", "-o", str(other), "-o", str(out)],
            # Two values of one option are a usage error (out-176 F3), which no results file may take.
            "-o twice, an earlier": ["job.yaml", "-o", str(out), "-o", str(other)],
            "--out=": ["job.yaml", "--out=" + str(out)],
            "-qo": ["run", "job.yaml", "-qo", str(out)],
            "merge OUT SHARD": ["merge", str(out), "a.jsonl", "b.jsonl"],
            "merge -o": ["merge", "a.jsonl", "-o", str(out)],
            "a typo": ["job.yaml", "--quite", "-o", str(other), "-o", str(out)],
            "a typo, --out=": ["job.yaml", "--quite", "--out=" + str(out)],  # verify43 F2: abbreviated
            "a typo, -qo": ["job.yaml", "--quite", "-qo", str(out)],
            "a job file not there": ["missing.yaml", "--output=" + str(out)],
            "merge OUT, a typo": ["merge", str(out), "a.jsonl", "--quite"],
        }
        for name, argv in refused.items():
            assert _results_on_stderr(argv), name
        kept = {
            "-o twice, the same": ["job.yaml", "-o", str(other), "-o", str(other)],
            "merge SHARD -o OTHER": ["merge", str(out), "-o", str(other)],
            "a file read": ["report", str(out)],
            "a job named so": ["validate", str(out)],
        }
        for name, argv in kept.items():
            assert not _results_on_stderr(argv), name
    # verify44: stderr appended to another results file (a resume's notice landed among its records).
    results = tmp_path / "older.jsonl"
    assert call_cli(write_job(tmp_path, SMALL_JOB), "--simulate", "-o", results, "-q")[0] == ExitCode.OK
    log = tmp_path / "cron.log"
    log.write_bytes(b"batchrun: warning: an earlier night\n")
    for path, holds in ((results, True), (log, False), (tmp_path / "empty.log", False)):
        with open(path, "ab") as handle, stderr_to(handle.fileno()):
            assert _stderr_holds_records() is holds, path
    read_end, write_end = os.pipe()
    primary, secondary = os.openpty()
    try:
        for descriptor in (write_end, secondary):  # a pipe, a terminal: a message spoils nothing
            with stderr_to(descriptor):
                assert not _results_on_stderr(["job.yaml", "-o", "/dev/stderr"])
    finally:
        for descriptor in (read_end, write_end, primary, secondary):
            os.close(descriptor)


def test_a_resume_of_the_jobs_own_output_on_stderr_says_nothing_there(tmp_path: Path) -> None:
    # verify43 F3: with `run.output` fixed and stderr appended to it, `--resume` wrote its
    # "resuming ..." notice among the records before refusing.
    job = write_job(tmp_path, SMALL_JOB.replace(SMALL_RUN, f"run: {{concurrency: 4, output: {tmp_path}/out.jsonl}}"))
    out = tmp_path / "out.jsonl"
    assert cli(job, "--simulate", "--deadline", "30", "-q").returncode == ExitCode.OK
    summary = out.with_name("out.summary.json")
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "complete": False}))
    before = out.read_bytes()
    with open(out, "ab") as handle, stderr_to(handle.fileno()):
        result = cli(job, "--simulate", "--resume")
    assert (result.returncode, result.stderr, out.read_bytes()) == (ExitCode.USAGE, "", before)


def test_a_resume_of_an_output_that_is_not_there_says_so_under_quiet(tmp_path: Path) -> None:
    # break42 F5: `--resume -o` with a mistyped name ran and paid for the whole job, not a word.
    job, out = write_job(tmp_path, SMALL_JOB), tmp_path / "typo.jsonl"
    result = cli(job, "--simulate", "--resume", "-o", out, "-q")
    assert result.returncode == ExitCode.OK and len(read_rows(out)) == 20
    said = f"batchrun: warning: --resume: {out} holds no run: nothing to resume, a new run starts there\n"
    assert result.stderr == said
    assert cli(job, "--simulate", "--resume", "-o", out, "-q").stderr == ""  # there now: resumed quietly
    empty = tmp_path / "empty.jsonl"  # verify45 N5: a shell's `: > empty.jsonl` holds no run either
    empty.write_bytes(b"")
    assert "warning: --resume: " in cli(job, "--simulate", "--resume", "-o", empty, "-q").stderr


def test_sigterm_ends_a_finished_run_blocked_on_a_stdout_nobody_reads(tmp_path: Path) -> None:
    # break25 F8: the run done and its files written, printing the summary blocked on a full
    # pipe, and the first SIGTERM was lost (the handler returned, the write went on).
    job = write_job(tmp_path, SMALL_JOB)
    out = tmp_path / "out.jsonl"
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(write_end, b"x" * 4096)  # the pipe full: nobody reads it
    os.set_blocking(write_end, True)
    argv = [sys.executable, "-m", "batchrun", str(job), "--simulate", "-o", str(out)]
    process = subprocess.Popen(argv, stdout=write_end, stderr=subprocess.DEVNULL, env=child_env())
    os.close(write_end)
    try:
        wchan = Path(f"/proc/{process.pid}/wchan")
        end = time.monotonic() + 30
        while time.monotonic() < end and process.poll() is None and "pipe_write" not in wchan.read_text():
            time.sleep(0.05)
        assert process.poll() is None and out.with_name("out.summary.json").exists()  # done, and blocked
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == ExitCode.INTERRUPTED
    finally:
        process.kill()
        process.wait()
        os.close(read_end)
    assert len(read_rows(out)) == 20 and not list(tmp_path.glob("*.lock"))


def test_a_kill_9_while_a_resume_grades_what_a_stop_cut_off_never_buys_the_answer_again(tmp_path: Path) -> None:
    # verify25 N7: the resume sending the graders a stop had cut off was killed; the next resume
    # recorded the row `skipped crashed` over its answer, and bought the answer again.
    grader = "anthropic/claude-3.5-haiku"
    text = judged_small_job("run: {concurrency: 1, grace_s: 0.2}")
    job = write_job(tmp_path, text.replace("judge: {model: openai/gpt-4o-mini}", f"judge: {{model: {grader}}}"))
    out = tmp_path / "out.jsonl"
    asked, hang, bought = threading.Event(), [True], collections.Counter[str]()
    verdict = '{"pass": true, "score": 1, "reason": "names it"}'

    def chat(request: RawRequest) -> Any:
        if request.json()["model"] != grader:
            bought[request.headers.get("x-batchrun-row", "")] += 1
            return json_answer(200, chat_payload("Paris"))
        if not hang[0]:
            return json_answer(200, chat_payload(verdict, model=grader))

        async def stall(_writer: asyncio.StreamWriter) -> None:
            asked.set()
            await asyncio.sleep(3600)

        return stall

    server = HostileServer(chat=chat)
    env = child_env(OPENROUTER_API_KEY=FAKE_KEY)
    with server.running():
        process = start(job, "--base-url", server.base_url, "-o", out, "-q", env=env)
        assert asked.wait(30)
        process.send_signal(signal.SIGTERM)  # while the first row's grader is out
        assert process.wait(timeout=30) == ExitCode.INTERRUPTED
        first = read_rows(out)[0]
        assert first["status"] == "ok" and "not graded: the run stopped" in first["checks"][0]["error"]
        asked.clear()
        process = start(job, "--base-url", server.base_url, "-o", out, "--resume", "-q", env=env)
        assert asked.wait(30)  # the resume grades it first; its grader is out again
        process.kill()
        process.wait()
        hang[0] = False
        result = cli(job, "--base-url", server.base_url, "-o", out, "--resume", "-q", env=env)
    assert result.returncode == ExitCode.OK, result.stderr
    assert bought[first["id"]] == 1 and sum(bought.values()) == 20  # every answer bought once
    final = {r["id"]: r for r in final_records(out)}
    assert final[first["id"]]["content"] == first["content"] and final[first["id"]]["checks"][0]["pass"] is True
    assert {r["status"] for r in final.values()} == {"ok"} and len(final) == 20


def test_readers_do_not_read_a_run_in_progress_as_a_crashed_one(tmp_path: Path, sim: Simulator) -> None:
    # break46 F2: a run still writing was read as a killed one: its rows in flight "crashed",
    # `report` exit 12 with "--resume runs them" (a resume would exit 8), `history` a fall in the
    # pass rate, `diff --fail-on-regression` exit 4 with "the job was edited". Now they say that
    # a run is writing it (the file's flock, seen in /proc/locks: no lock taken, nothing written).
    job = write_job(tmp_path, BIG_JOB)
    done, live = tmp_path / "runs" / "a.jsonl", tmp_path / "runs" / "b.jsonl"
    assert call_cli(job, "--simulate", "-q", "-o", done)[0] == ExitCode.OK
    sim.config.latency_ms = 50
    process = start(job, "--base-url", sim.base_url, "-o", live, "-q", env=child_env(OPENROUTER_API_KEY=FAKE_KEY))
    try:
        wait_for_lines(live, 10, process)
        code, _, err = call_cli("report", live)
        assert (
            code == ExitCode.LOCKED
            and f"{live} is held by another batchrun (pid {process.pid}: a run writing it" in err
        )
        code, _, err = call_cli("diff", done, live, "--fail-on-regression")
        assert code == ExitCode.LOCKED and "compare it once it has ended" in err
        code, text, err = call_cli("history", done.parent, "--json")
        assert code == ExitCode.OK and [Path(r["file"]).name for r in json.loads(text)["runs"]] == ["a.jsonl"]
        assert f"{live} is held by another batchrun (pid {process.pid}: a run writing it, or a merge): left out" in err
        assert call_cli("history", live)[0] == ExitCode.LOCKED
    finally:
        process.kill()
        process.wait()
    assert call_cli("report", live)[0] == ExitCode.INCOMPLETE  # killed now: its rows in flight are crashed
    assert not (done.parent / "a.jsonl.lock").exists()  # the readers made no lock (the killed run's stays)
