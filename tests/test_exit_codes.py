"""Exit codes that stay true after money is spent: I/O failures, broken pipes, step summaries,
deleted folders, locks through aliases, default names, and signals at awkward moments."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from batchrun import ExitCode, RunOptions, load_job, run_job
from batchrun._exceptions import OutputFailed
from batchrun._items import ItemTally
from batchrun._journal_file import journal_path
from batchrun._lock import OutputLock
from batchrun._needless_stop import drop_needless_stop
from batchrun._output_paths import summary_path
from batchrun._results import ResultsWriter, record_head
from batchrun._status import StopReason
from batchrun._summary import SummaryBuilder
from batchrun._summary_beside import file_key_gap
from batchrun._summary_text import render_text
from batchrun._verdict import decide
from batchrun._worker_pool import PoolOutcome
from batchrun.cli import main
from batchrun.simulator import SimConfig, Simulator

from .conftest import SMALL_JOB, TEN_NS, call_cli, child_env, priced_job, read_rows, write_job
from .forked import ForkedCli, run_forked

BIG_JOB = SMALL_JOB.replace("repeat: 2", "repeat: 20")


def whole_lines(path: Path) -> list[dict[str, object]]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "a torn line was left"
    return [json.loads(line) for line in data.splitlines()]


# -- I/O failures during a run -------------------------------------------------------------------
def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))


def test_a_file_size_limit_mid_run_is_exit_10_naming_the_file_and_stops_dispatch(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = write_job(tmp_path, BIG_JOB.replace("concurrency: 4", "concurrency: 2"))
    out = tmp_path / "limited.jsonl"
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    args: list[str | Path] = [job, "--base-url", sim.base_url, "-o", out, "-q"]
    result = run_forked(args, env=child_env(OPENROUTER_API_KEY="k"), text=True, preexec_fn=_limit_file_size, **pipes)
    assert result.returncode == ExitCode.IO, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{out}: writing a record failed: File too large" in result.stderr
    rows = whole_lines(out)  # no torn line: the failed write was cut back
    assert 0 < len(rows) < 200
    # The first failed write stopped dispatch: at most the requests in flight went unrecorded.
    assert sim.stats.chat_requests <= len(rows) + 2 + 1
    # Those are in the attempt journal, kept since records were lost; the next run records them
    # (break-14b M4), so what they may have cost is counted before anything is sent again.
    recorded = {str(r["id"]) for r in rows}
    lost = set(sim.stats.by_row) - recorded
    assert (tmp_path / "limited.attempts.jsonl").exists() and lost
    # out-174 F6: `report` put the rows never written on batches or records removed.
    code, _, err = call_cli("report", out)
    assert code == ExitCode.INCOMPLETE and "its run stopped when writing its results failed (exit 11)" in err, err
    monkeypatch.setenv("OPENROUTER_API_KEY", "k")
    code, _, err = call_cli(job, "--base-url", sim.base_url, "-o", out, "-q", "--resume", "--budget", "0.000001")
    assert code == ExitCode.BUDGET, err
    appended = whole_lines(out)[len(rows) :]
    crashed = {str(r["id"]) for r in appended if r["reason"] == "crashed"}
    # Every request the server saw is counted; a journalled request the process exited before
    # sending is counted too, as the journal cannot tell it from one that was sent.
    assert lost <= crashed and not crashed & recorded and len(crashed) <= 2 + 1
    assert not (tmp_path / "limited.attempts.jsonl").exists()


def test_the_key_gap_of_a_run_whose_records_could_not_be_written_is_counted_once(tmp_path: Path) -> None:
    # out-177 F1: after exit 11 the summary carried the run's key gap (the answers it could not
    # write, charged on the key) and the journal kept for those rows carried it again: every
    # reader and the resume counted it twice, and each later failure added to it (a file that
    # could never finish within its budget).
    job = write_job(tmp_path, BIG_JOB.replace("concurrency: 4", "concurrency: 2"))
    out = tmp_path / "limited.jsonl"
    # Each answer charges the key $0.001 its usage.cost leaves out: the run's reads count it as its key gap.
    with Simulator(SimConfig(key_limit=100.0, unreported_usd=0.001)).serve_in_thread() as sim:
        args: list[str | Path] = [job, "--base-url", sim.base_url, "-o", out, "-q"]
        env = child_env(OPENROUTER_API_KEY="k")
        result = run_forked(args, env=env, text=True, preexec_fn=_limit_file_size, stderr=subprocess.PIPE)
        assert result.returncode == ExitCode.IO, result.stderr
        summary = json.loads(summary_path(out).read_text())
        gap = summary["key_gap_usd"]
        assert gap > 0 and journal_path(out).exists()  # kept for the rows whose records were lost
        assert file_key_gap(out) == pytest.approx(gap)
        # The resume carries it on once, with what its own answers add ($0.001 each).
        before = sim.stats.chat_requests
        result = run_forked([*args, "--resume"], env=env, text=True, stderr=subprocess.PIPE)
        assert result.returncode == ExitCode.OK, result.stderr
        answers = sim.stats.chat_requests - before
    assert not journal_path(out).exists() and answers > 0
    assert file_key_gap(out) == pytest.approx(gap + 0.001 * answers)
    # What the file counts as spent is what the key was charged (a lost row's worst case aside).
    resumed = json.loads(summary_path(out).read_text())
    assert resumed["spent_before_usd"] + resumed["spent_usd"] == pytest.approx(sim.account_key.usage, abs=1e-4)


def test_answers_in_flight_when_the_results_file_fails_are_counted_at_their_cost(tmp_path: Path) -> None:
    # out-178 F4: a failed write aborted every worker, cutting off the answers on their way after
    # they were billed; the resume held each at its worst case (here ~236x an answer's cost): a
    # file that spent $0.006 counted $0.059. They now end within the grace, their costs journaled.
    job = write_job(
        tmp_path,
        priced_job("w11", 2000, "Tell me about {{n}}.", TEN_NS, 8, "concurrency: 6, grace_s: 30"),
    )
    out = tmp_path / "r.jsonl"
    with Simulator(SimConfig(latency_ms=20)).serve_in_thread() as sim:
        args: list[str | Path] = [job, "--base-url", sim.base_url, "-o", out, "-q"]
        env = child_env(OPENROUTER_API_KEY="k")
        result = run_forked(args, env=env, text=True, preexec_fn=_limit_file_size, stderr=subprocess.PIPE)
        assert result.returncode == ExitCode.IO, result.stderr
        result = run_forked([*args, "--resume"], env=env, text=True, stderr=subprocess.PIPE)
        assert result.returncode == ExitCode.OK, result.stderr
        billed = sim.stats.billed_usd
    summary = json.loads(summary_path(out).read_text())
    assert summary["spent_before_usd"] + summary["spent_usd"] == pytest.approx(billed, rel=0.01)


@pytest.mark.parametrize("device", ["/dev/null", "/dev/full"])
def test_a_device_as_output_is_refused_before_anything_is_sent(
    tmp_path: Path, device: str, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = write_job(tmp_path, SMALL_JOB)
    monkeypatch.setenv("OPENROUTER_API_KEY", "k")
    code, _, err = call_cli(job, "--base-url", sim.base_url, "-o", device, "-q")
    assert code == ExitCode.USAGE and sim.stats.chat_requests == 0
    assert err == f"batchrun: {device}: not a regular file: results go to a file of their own; give another --output\n"


def test_a_writer_refuses_every_write_after_a_failure_and_cuts_the_torn_part(tmp_path: Path) -> None:
    out = tmp_path / "w.jsonl"
    writer = ResultsWriter(out)
    writer.write({**record_head("aa", "f", "ok", None, False, 0.1), "x": 1})
    os.close(writer._fd)  # the next write fails as a disk error would
    writer._fd = os.open(out, os.O_RDONLY)
    with pytest.raises(OutputFailed, match="w.jsonl: writing a record failed"):
        writer.write({**record_head("bb", "f", "ok", None, False, 0.1)})
    with pytest.raises(OutputFailed):
        writer.write({**record_head("cc", "f", "ok", None, False, 0.1)})
    writer.close()
    assert [r["id"] for r in whole_lines(out)] == ["aa"]


async def test_a_results_file_deleted_mid_run_stops_the_run_with_exit_10(tmp_path: Path, sim: Simulator) -> None:
    job = load_job(write_job(tmp_path, BIG_JOB))
    folder = tmp_path / "outputs"
    out = folder / "deleted.jsonl"
    seen = []

    def delete_the_folder_once(record: dict[str, object]) -> None:
        seen.append(record)
        if len(seen) == 1:
            for path in folder.iterdir():
                path.unlink()
            folder.rmdir()

    report = await run_job(
        job, RunOptions(api_key="k", base_url=sim.base_url, output=out), on_record=delete_the_folder_once
    )
    assert report.summary["stop"] == "io" and "deleted during the run" in report.summary["stop_message"]
    assert decide(report.summary, job.run)[0] == ExitCode.IO
    # Its last line names the file as gone, not as where the rows are (out-177 F2b).
    assert render_text(report.summary).splitlines()[-1] == f"results: {out} (no longer there: deleted or moved)"
    assert sim.stats.chat_requests <= 1 + job.run.concurrency  # not all 200 rows paid for and lost


@pytest.mark.parametrize("into", ["nothing", "a record"])
async def test_a_results_file_cut_short_under_the_run_stops_it_and_its_spend_is_not_forgotten(
    tmp_path: Path, sim: Simulator, into: str
) -> None:
    # break67 F1: logrotate's copytruncate (`: > file`) mid-run: exit 0, "complete" of 800 rows
    # the file did not hold, and the resume, counting only what was left, spent past the budget.
    job = load_job(write_job(tmp_path, BIG_JOB))
    out, seen = tmp_path / "cut.jsonl", []

    def truncate_once(record: dict[str, object]) -> None:
        seen.append(record)
        if len(seen) == 5:  # out-103 F9: `truncate -s` into the middle of a record too
            os.truncate(out, 0 if into == "nothing" else out.stat().st_size // 2 + 7)

    report = await run_job(job, RunOptions(api_key="k", base_url=sim.base_url, output=out), on_record=truncate_once)
    summary = report.summary
    assert summary["stop"] == "io" and "cut short during the run" in summary["stop_message"]
    assert report.verdict()[0] == ExitCode.IO and summary["complete"] is False
    written = summary["results_bytes"]
    assert written is not None and written > out.stat().st_size  # what the run wrote: a resume counts its spend
    assert sim.stats.chat_requests <= 6 + job.run.concurrency  # not the other 190 rows bought and lost
    revealing = json.loads(
        out.read_bytes().splitlines()[-1]
    )  # the record whose write showed the cut: a line of its own
    notices: list[str] = []
    options = RunOptions(api_key="k", base_url=sim.base_url, output=out, resume=True)
    again = await run_job(job, options, notice=notices.append)
    assert again.summary["spent_before_usd"] >= summary["spent_usd"]  # what the lost rows cost still counts
    # verify69 F6: the record that showed the cut, written at the file's new start, was read as
    # never written (its journaled offset was past the cut): the row was bought again.
    bought = [r["id"] for r in records_in(out) if r["status"] == "ok"]
    assert bought.count(revealing["id"]) == 1 and len(bought) == len(set(bought)) == again.summary["total"]["ok"]


def records_in(path: Path) -> list[dict[str, Any]]:
    """Every whole record of the file, superseded ones too; a fragment a cut left is none."""
    records = []
    for line in path.read_bytes().splitlines():
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    return [r for r in records if isinstance(r, dict) and "id" in r]


def test_a_results_file_emptied_beside_its_summary_is_resumed_with_the_spend_it_counted(tmp_path: Path) -> None:
    # verify69 F1: `: > r.jsonl` after a run (logrotate's copytruncate): the resume read a new run,
    # forgot the summary's spend and bought every row again past the budget.
    job, out = write_job(tmp_path, SMALL_JOB), tmp_path / "r.jsonl"
    assert call_cli(job, "--simulate", "-q", "-o", out, "--budget", "0.0001")[0] == ExitCode.BUDGET
    spent = json.loads((tmp_path / "r.summary.json").read_text())["spent_usd"]
    assert spent > 0
    out.write_bytes(b"")
    code, text, err = call_cli(job, "--simulate", "-o", out, "--resume", "--budget", "0.0001")
    assert "shorter than its summary saw" in err, err
    assert (
        code == ExitCode.BUDGET and json.loads((tmp_path / "r.summary.json").read_text())["spent_before_usd"] >= spent
    )


def test_a_results_file_removed_from_beside_its_summary_is_not_resumed_as_new(tmp_path: Path) -> None:
    # out-143 F1: removed, not emptied, the resume ran as new, exit 0, and its summary (the spend
    # and runs of the file) was replaced; so was a summary of another file beside a new run's.
    job, out = write_job(tmp_path, SMALL_JOB), tmp_path / "r.jsonl"
    assert call_cli(job, "--simulate", "-q", "-o", out)[0] == ExitCode.OK
    summary = (tmp_path / "r.summary.json").read_bytes()
    out.unlink()
    code, _, err = call_cli(job, "--simulate", "-q", "-o", out, "--resume")
    assert code == ExitCode.USAGE and err.count("\n") == 1, err
    assert f"{out} is not there, but its summary is: put the results back" in err
    assert not out.exists() and (tmp_path / "r.summary.json").read_bytes() == summary
    (tmp_path / "r.summary.json").rename(tmp_path / "other.summary.json")
    code, _, err = call_cli(job, "--simulate", "-q", "-o", tmp_path / "other.jsonl")
    assert code == ExitCode.USAGE and "other.summary.json: the summary of r.jsonl, not of other.jsonl" in err, err
    assert not (tmp_path / "other.jsonl").exists() and (tmp_path / "other.summary.json").read_bytes() == summary
    # out-144 F8d: one naming no file at all may be anyone's: it was replaced in silence.
    nameless = json.dumps({k: v for k, v in json.loads(summary).items() if k != "output"})
    (tmp_path / "other.summary.json").write_text(nameless)
    code, _, err = call_cli(job, "--simulate", "-q", "-o", tmp_path / "other.jsonl")
    assert code == ExitCode.USAGE and "other.summary.json: names no results file (no `output`)" in err, err
    assert not (tmp_path / "other.jsonl").exists() and (tmp_path / "other.summary.json").read_text() == nameless
    (tmp_path / "other.summary.json").write_bytes(summary)
    # A resume takes an `output` of "" as none, as it takes a missing one (out-146 F11: "the summary of , not of").
    assert call_cli(job, "--simulate", "-q", "-o", tmp_path / "e.jsonl")[0] == ExitCode.OK
    own = (tmp_path / "e.summary.json").read_text()  # its digest is of e.jsonl: r.jsonl's is an edit's
    for nameless in ("", "."):  # "." names no file either (out-148 F5)
        gap = {**json.loads(own), "output": nameless, "key_gap_usd": 0.25}
        (tmp_path / "e.summary.json").write_text(json.dumps(gap))
        code, _, err = call_cli(job, "--simulate", "-q", "-o", tmp_path / "e.jsonl", "--resume")
        assert code == ExitCode.OK and "the summary of" not in err, err
        # Read as the file's own: its key gap is counted, so "no summary beside it" was untrue (out-148 F5).
        assert "no summary beside it" not in err, err
        assert json.loads((tmp_path / "e.summary.json").read_text())["key_gap_usd"] == 0.25
    # Its own, beside no file: a new run replaces it, as it replaces the results.
    (tmp_path / "other.summary.json").rename(tmp_path / "r.summary.json")
    assert call_cli(job, "--simulate", "-q", "-o", out)[0] == ExitCode.OK
    assert (tmp_path / "r.summary.json").read_bytes() != summary


async def test_a_results_file_moved_under_the_run_stops_it_and_is_never_made_again_empty(
    tmp_path: Path, sim: Simulator
) -> None:
    # break67 F2: moved mid-run, the run wrote on into the moved file, then made an empty one at
    # its path for the costs learnt late, and wrote a "complete" summary of 800 rows beside it.
    job = load_job(write_job(tmp_path, SMALL_JOB))
    out, moved, seen = tmp_path / "r.jsonl", tmp_path / "archive.jsonl", []

    def move_once(record: dict[str, object]) -> None:
        seen.append(record)
        if len(seen) == 3:
            out.rename(moved)

    report = await run_job(job, RunOptions(api_key="k", base_url=sim.base_url, output=out), on_record=move_once)
    assert report.summary["stop"] == "io" and "moved or replaced during the run" in report.summary["stop_message"]
    assert report.verdict()[0] == ExitCode.IO and report.summary["complete"] is False
    assert not out.exists() and len(read_rows(moved)) == len(seen)  # every row written is in the moved file


async def test_a_library_caller_that_changes_folder_mid_run_keeps_its_run_where_it_began(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # verify69 F4: a relative output and a chdir in on_record: exit 11, no summary, the journal
    # left behind (and before, the summary and an empty results file went to the new folder).
    monkeypatch.chdir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    job = load_job(write_job(tmp_path, SMALL_JOB))
    seen: list[object] = []

    def wander(record: dict[str, object]) -> None:
        seen.append(record)
        if len(seen) == 2:
            os.chdir(elsewhere)

    report = await run_job(
        job, RunOptions(api_key="k", base_url=sim.base_url, output=Path("runs/r.jsonl")), on_record=wander
    )
    assert report.verdict()[0] == ExitCode.OK and report.summary["complete"] is True
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["r.jsonl", "r.summary.json"]
    assert len(read_rows(tmp_path / "runs" / "r.jsonl")) == 20 and not any(elsewhere.iterdir())


def test_a_failed_write_never_pads_a_file_cut_short_with_nul_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break67 F3: the cut-back after a failed write went to the size the writer remembered: past
    # the end of a file cut under it, 140 kB of NULs that every resume refused (exit 2).
    out = tmp_path / "w.jsonl"
    writer = ResultsWriter(out)
    writer.write({**record_head("aa", "f", "ok", None, False, 0.1), "x": "y" * 1000})
    os.truncate(out, 0)

    def full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OutputFailed, match="No space left on device"):
        writer.write({**record_head("bb", "f", "ok", None, False, 0.1)})
    monkeypatch.undo()
    writer.close()
    assert out.read_bytes() == b""


# -- outputs that cannot be written are warnings when the run itself succeeded ------------------
def test_an_unwritable_step_summary_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = write_job(tmp_path, SMALL_JOB)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path))  # a folder: cannot be appended to
    code, _, err = call_cli(job, "--simulate", "-o", tmp_path / "s.jsonl", "-q")
    assert code == 0
    assert (
        err
        == f"batchrun: warning: GITHUB_STEP_SUMMARY {tmp_path}: is a folder: name the file to write a step summary to\n"
    )
    assert "Traceback" not in err and len(err.splitlines()) == 1
    # verify35 m3: set to the job's CSV dataset, it had the Markdown appended (the next gate read
    # it as rows); a job file likewise.
    for name in ("rows.csv", "other.yaml"):
        (tmp_path / name).write_text("country,expect\nFrance,Paris\n")
        monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / name))
        code, _, err = call_cli(job, "--simulate", "-o", tmp_path / f"{name}.jsonl", "-q")
        assert code == 0 and "a step summary is not appended to a dataset or a job file" in err, err
        assert (tmp_path / name).read_text() == "country,expect\nFrance,Paris\n"


def test_no_step_summary_is_appended_to_a_file_the_job_names_nor_to_a_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # out-110 F2: appended to a json_schema file it broke the job (validate: exit 2), to the grader's
    # prompt it changed every verdict's fingerprint; F5: set to --html's path it was lost unsaid.
    (tmp_path / "schema.json").write_text('{"type": "object"}')
    tagged = (
        f"{part.upper()}: <{part}-{{{{nonce}}}}>{{{{{part}}}}}</{part}-{{{{nonce}}}}>"
        for part in ("question", "rubric", "answer")
    )
    (tmp_path / "grader.txt").write_text("\n".join(tagged))
    job = write_job(
        tmp_path,
        """
        name: named
        judge: {model: openai/gpt-4o-mini, prompt: grader.txt}
        models: [openai/gpt-4o-mini]
        prompts:
          - id: p
            text: 'Return JSON for {{c}}.'
            vars: [{c: France}]
            checks: [{json_schema: schema.json}, {judge: "names a city"}]
        """,
    )
    for name in ("schema.json", "grader.txt"):
        before = (tmp_path / name).read_bytes()
        monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / name))
        code, _, err = call_cli(job, "--simulate", "-o", tmp_path / f"{name}.jsonl", "-q")
        assert code in (ExitCode.OK, ExitCode.QUALITY), err
        assert f"a step summary is not appended to {tmp_path / name}, which this command reads or writes" in err
        assert (tmp_path / name).read_bytes() == before and "Traceback" not in err
    # out-111 F1: nor when the run ends before its work (the key missing: exit 2); F2: nor to a JSON
    # file no job shows (a json_schema file a dataset row names).
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "grader.txt"))
    before = (tmp_path / "grader.txt").read_bytes()
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    code, _, err = call_cli(job, "-o", tmp_path / "early.jsonl")
    assert code == ExitCode.USAGE and "which this command reads or writes" in err
    assert (tmp_path / "grader.txt").read_bytes() == before
    (tmp_path / "row.json").write_text('\n  [{"type": "string"}]')
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "row.json"))
    code, _, err = call_cli(job, "--simulate", "-o", tmp_path / "row.jsonl", "-q")
    assert "it holds JSON (a json_schema file?)" in err and (tmp_path / "row.json").read_text().endswith("}]")
    page = tmp_path / "page.html"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(page))
    code, _, err = call_cli("report", tmp_path / "schema.json.jsonl", "--html", page)
    assert code == 0 and "a step summary is not appended to" in err and "### batchrun" not in page.read_text(), err


def _with_closed_stdout(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI with a stdout whose reader is already gone, as in `batchrun ... | true`."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return run_forked(args, stdout=write_end, stderr=subprocess.PIPE, text=True, cwd=cwd, env=child_env())
    finally:
        os.close(write_end)


def test_a_broken_pipe_never_fails_a_run_or_a_report(tmp_path: Path) -> None:
    job = write_job(tmp_path, SMALL_JOB)
    run = _with_closed_stdout(job, "--simulate", "-o", "a.jsonl", cwd=tmp_path)
    assert run.returncode == 0 and "Traceback" not in run.stderr
    assert run.stderr == "batchrun: warning: stdout: the summary could not be written: Broken pipe\n"
    assert len(read_rows(tmp_path / "a.jsonl")) == 20
    for args in (["report", "a.jsonl"], ["diff", "a.jsonl", "a.jsonl"], ["plan", job], ["validate", job]):
        quiet = _with_closed_stdout(*args, cwd=tmp_path)
        assert (quiet.returncode, quiet.stderr) == (0, ""), args


def test_an_ascii_terminal_gets_escaped_answers_not_a_crash(tmp_path: Path) -> None:
    job = write_job(
        tmp_path,
        SMALL_JOB.replace('checks: [{contains: "{{expect}}"}]', 'checks: [{contains: "{{expect}} é"}]'),
    )
    # What PYTHONIOENCODING=ascii gives a process: strict ASCII text streams.
    out, err = (io.TextIOWrapper(io.BytesIO(), encoding="ascii") for _ in range(2))
    code = main([str(job), "--simulate", "-o", str(tmp_path / "u.jsonl")], out=out, err=err)
    out.flush()
    err.flush()
    assert code == ExitCode.OK or code == ExitCode.QUALITY
    assert b"Traceback" not in err.buffer.getvalue() and b"\\xe9" in out.buffer.getvalue()


# -- locks and names ---------------------------------------------------------------------------
def test_a_symlinked_alias_shares_the_lock(tmp_path: Path) -> None:
    job = write_job(tmp_path, SMALL_JOB)
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    held = OutputLock(tmp_path / "real" / "out.jsonl")
    held.acquire()
    try:
        code, _, err = call_cli(job, "--simulate", "-o", tmp_path / "alias" / "out.jsonl", "-q")
    finally:
        held.release()
    assert code == ExitCode.LOCKED and "out.jsonl is being written by another batchrun run" in err
    assert not (tmp_path / "real" / "out.jsonl").exists()


def test_a_flock_of_the_users_own_on_the_lock_file_is_named_as_such(tmp_path: Path) -> None:
    # break51 F7: `flock -n r.jsonl.lock batchrun ...` (a common cron habit) locked every tick out
    # "by another batchrun run (pid another process)".
    job, lock = write_job(tmp_path, SMALL_JOB), tmp_path / "r.jsonl.lock"
    with open(lock, "w") as wrapper:  # flock(1)'s: an empty file, locked
        fcntl.flock(wrapper, fcntl.LOCK_EX)
        code, _, err = call_cli(job, "--simulate", "-o", tmp_path / "r.jsonl", "-q")
    assert code == ExitCode.LOCKED and not (tmp_path / "r.jsonl").exists()
    assert err == (
        f"batchrun: r.jsonl is being written by a process that wrote no pid in {lock} (a batchrun run starting, or a "
        "flock of your own on that file: batchrun locks it itself, so no wrapper is needed)\n"
    )


def test_no_lock_files_are_left_and_back_to_back_default_names_differ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_job(tmp_path, SMALL_JOB)
    monkeypatch.chdir(tmp_path)
    codes = [call_cli("job.yaml", "--simulate", "-q")[0] for _ in range(4)]
    assert codes == [0, 0, 0, 0]
    names = sorted(p.name for p in (tmp_path / "outputs" / "small").iterdir())
    assert len([n for n in names if n.endswith(".jsonl")]) == 4
    assert not [n for n in names if n.endswith(".lock")]


def test_a_lock_file_is_taken_over_even_if_another_process_removed_it(tmp_path: Path) -> None:
    first = OutputLock(tmp_path / "x.jsonl")
    first.acquire()
    first.release()
    assert not (tmp_path / "x.jsonl.lock").exists()
    second = OutputLock(tmp_path / "x.jsonl")
    second.acquire()
    assert (tmp_path / "x.jsonl.lock").read_text().strip() == str(os.getpid())
    second.release()


def test_a_symlink_or_fifo_at_a_locks_name_is_refused_and_what_it_names_is_untouched(tmp_path: Path) -> None:
    # break44 F3: the lock was opened through a symlink, truncated and given the run's pid: a
    # link at OUT.lock (or at the job folder's .batchrun.lock) emptied another run's results,
    # or the run's own on --resume. A FIFO there said only "Invalid argument".
    job = write_job(tmp_path, SMALL_JOB)
    other = tmp_path / "other.jsonl"
    assert call_cli(job, "--simulate", "-o", other, "-q")[0] == ExitCode.OK
    kept = other.read_bytes()
    (tmp_path / "a.jsonl.lock").symlink_to(other)
    (tmp_path / "b.jsonl.lock").symlink_to(tmp_path / "nowhere")
    os.mkfifo(tmp_path / "c.jsonl.lock")
    # verify47 N1: a hard link is a regular file, and was emptied the same way; and a file that
    # holds anything but a run's pid is no lock of ours (a stale one, "123\n", is taken over).
    os.link(other, tmp_path / "d.jsonl.lock")
    (tmp_path / "e.jsonl.lock").write_text("my notes\n")
    (tmp_path / "f.jsonl.lock").write_text("123\n")
    refused = (
        ("a", "is a symbolic link"),
        ("b", "is a symbolic link"),
        ("c", "is not a regular file"),
        ("d", "has other names (hard links)"),
        ("e", "holds something other than a run's process id"),
    )
    for name, why in refused:
        code, out, err = call_cli(job, "--simulate", "-o", tmp_path / f"{name}.jsonl", "-q")
        assert (code, out) == (ExitCode.USAGE, "") and err.startswith(f"batchrun: {tmp_path}/{name}.jsonl.lock {why}")
        assert err.endswith("(remove it)\n") and err.count("\n") == 1
        assert not (tmp_path / f"{name}.jsonl").exists()
    assert other.read_bytes() == kept and not (tmp_path / "nowhere").exists()
    assert (tmp_path / "e.jsonl.lock").read_text() == "my notes\n"
    assert call_cli(job, "--simulate", "-o", tmp_path / "f.jsonl", "-q")[0] == ExitCode.OK
    assert not (tmp_path / "f.jsonl.lock").exists()
    folder = tmp_path / "outputs" / "small"
    folder.mkdir(parents=True)
    (folder / ".batchrun.lock").symlink_to(other)
    with contextlib.chdir(tmp_path):
        code, _, err = call_cli(job, "--simulate", "-q")
    assert code == ExitCode.USAGE and ".batchrun.lock is a symbolic link" in err and other.read_bytes() == kept


def test_a_summary_name_held_by_a_folder_or_fifo_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    # break44 F6: a folder there was found once every row was paid (exit 11); a FIFO was replaced.
    job = write_job(tmp_path, SMALL_JOB)
    (tmp_path / "a.summary.json").mkdir()
    os.mkfifo(tmp_path / "b.summary.json")
    for name, kind in (("a", "a folder"), ("b", "a FIFO")):
        code, _, err = call_cli(job, "--simulate", "-q", "-o", tmp_path / f"{name}.jsonl")
        assert code == ExitCode.USAGE and f"{name}.summary.json: not a regular file ({kind})" in err, err
        assert not (tmp_path / f"{name}.jsonl").exists()
    assert stat.S_ISFIFO((tmp_path / "b.summary.json").stat().st_mode)


# -- signals at awkward moments: always exit 7, never death by the signal ----------------------
def _handles_sigterm(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the signal mask from /proc")
def test_sigterm_at_the_earliest_moment_is_exit_7(tmp_path: Path) -> None:
    job = write_job(tmp_path, SMALL_JOB)
    process = subprocess.Popen(
        [sys.executable, "-m", "batchrun", job, "--simulate", "-o", tmp_path / "early.jsonl", "-q"],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    end = time.monotonic() + 30
    while not _handles_sigterm(process.pid) and time.monotonic() < end:
        time.sleep(0.001)  # the first moment the process can handle it: before its imports
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == ExitCode.INTERRUPTED, err
    assert "Traceback" not in err
    assert {r["status"] for r in read_rows(tmp_path / "early.jsonl")} <= {"skipped", "ok"}


# The console script, with a signal sent to itself the moment the handlers are in place:
# before cli, asyncio, httpx or aiohttp load, at a point fixed by the code, not by timing.
_SIGNAL_AT_START = """
import os, signal, sys
from batchrun import _entry
installed = _entry.catch_early
def catch_then_signal():
    installed()
    assert not {"asyncio", "httpx", "aiohttp", "yaml", "batchrun.cli"} & set(sys.modules), sorted(sys.modules)
    os.kill(os.getpid(), getattr(signal, sys.argv.pop(1)))
_entry.catch_early = catch_then_signal
_entry.entry()
"""


def test_the_console_scripts_first_module_loads_next_to_nothing_before_its_handlers() -> None:
    # out-126 F2: the package's `typing` import, 15 ms before the handlers were in, was most of
    # the window in which a SIGTERM killed a run by the signal (143) instead of exit 7.
    probe = (
        "import re, sys; import batchrun._entry; print(sorted({'typing', 'asyncio', 'importlib'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", probe], env=child_env(), capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_signal_as_soon_as_the_console_script_starts_is_exit_7(tmp_path: Path, name: str) -> None:
    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["scripts"]["batchrun"] == "batchrun._entry:entry"
    job = write_job(tmp_path, SMALL_JOB)
    out = tmp_path / "start.jsonl"
    result = subprocess.run(
        [sys.executable, "-c", _SIGNAL_AT_START, name, job, "--simulate", "-o", out, "-q"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == ExitCode.INTERRUPTED, result.stderr
    assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr
    assert "interrupted" in result.stderr
    assert {r["status"] for r in read_rows(out)} <= {"skipped"}  # stopped before any request
    assert sorted(tmp_path.rglob("*.lock")) == []
    # Every other command too: "interrupted", exit 7 (`plan` died by SIGTERM, 143: verify23 N7;
    # SIGINT was a KeyboardInterrupt there already).
    commands: list[list[str | Path]] = [["plan", job, "--simulate"], ["validate", job], ["report", out]]
    for command in commands if name == "SIGTERM" else []:
        result = subprocess.run(
            [sys.executable, "-c", _SIGNAL_AT_START, name, *command],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (result.returncode, result.stderr) == (ExitCode.INTERRUPTED, "batchrun: interrupted\n"), command


def test_a_second_signal_while_the_run_winds_down_is_still_exit_7(tmp_path: Path) -> None:
    job = write_job(tmp_path, BIG_JOB.replace("run: {", "run: {grace_s: 0, "))
    out = tmp_path / "wind.jsonl"
    process = ForkedCli(
        [job, "--simulate", "--sim", "latency_ms=200", "-o", out, "-q"],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    end = time.monotonic() + 30
    while time.monotonic() < end and not (out.exists() and out.stat().st_size):
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    summary = tmp_path / "wind.summary.json"
    while time.monotonic() < end and not summary.exists() and process.poll() is None:
        time.sleep(0.001)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # while the loop closes and the summary prints
    process.communicate(timeout=60)
    assert process.returncode == ExitCode.INTERRUPTED
    whole_lines(out)


def test_asyncio_is_not_needed_for_the_signal_guard() -> None:
    # The guard reaches a running loop thread-safely; with no loop it records a pending stop.
    from batchrun._signals import RunSignals

    stopped: list[str] = []
    with RunSignals(lambda: stopped.append("stop"), stopped.append) as guard:
        loop = asyncio.new_event_loop()
        guard.loop = loop
        loop.close()
        os.kill(os.getpid(), signal.SIGTERM)
    assert stopped == ["stop"]


def test_once_the_exit_code_is_decided_signals_are_ignored_through_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    # Verification of the break14h fixes (V5): the interpreter's shutdown puts the default action
    # back on every signal with a Python handler, so a second Ctrl-C landing there, after
    # "stopped: interrupted", killed the process by the signal (130) instead of exit 7. An
    # ignored signal stays ignored through it.
    import batchrun._early_signals as early
    import batchrun.cli as cli_module

    monkeypatch.setattr(cli_module, "main", lambda **_: ExitCode.INTERRUPTED)
    was = early.caught[0]
    early.caught[0] = True  # as the console script's first line does
    # Every stop signal, SIGHUP too: left ignored in this worker, the runs it forks later took
    # SIGHUP as nohup's and ran on (a flaky HUP case).
    saved = [signal.getsignal(sig) for sig in early.SIGNALS]
    try:
        with pytest.raises(SystemExit) as exited:
            cli_module.entry()
        assert exited.value.code == ExitCode.INTERRUPTED
        assert [signal.getsignal(sig) for sig in early.SIGNALS] == [signal.SIG_IGN] * len(early.SIGNALS)
    finally:
        early.caught[0] = was
        for sig, handler in zip(early.SIGNALS, saved, strict=True):
            signal.signal(sig, handler)


def test_a_row_the_summary_cannot_count_fails_the_run_instead_of_vanishing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break20 C2: a number key broke the summary's item key; the per-row guard swallowed the
    # error, the row left every gate, and a run whose every check failed exited 0. Any such bug
    # (here the item tally, as then) is now counted, reported, and never exit 0.
    def broken(self: ItemTally, record: dict[str, object]) -> None:
        raise TypeError("Dict key must be str")

    monkeypatch.setattr(ItemTally, "add", broken)
    job = write_job(tmp_path, SMALL_JOB)  # repeat: 2, so the summary tallies items
    code, _, err = call_cli(job, "--simulate", "-q", "-o", tmp_path / "r.jsonl")
    assert code == ExitCode.ERRORS, err
    assert "20 row(s) could not be counted in the summary, so no gate can be trusted" in err
    assert "(internal error: TypeError: Dict key must be str)" in err and "Traceback" not in err
    summary = json.loads((tmp_path / "r.summary.json").read_text())
    assert summary["uncounted_rows"] == 20 and len(read_rows(tmp_path / "r.jsonl")) == 20


def test_an_output_folder_that_cannot_be_made_says_what_it_was_for(tmp_path: Path) -> None:
    # break36 F7: a read-only working folder said only "outputs: Read-only file system".
    job = write_job(tmp_path, SMALL_JOB)
    (tmp_path / "plain").write_text("a file, not a folder\n")
    code, _, err = call_cli(job, "--simulate", "-o", tmp_path / "plain" / "night" / "r.jsonl", "-q")
    assert code == ExitCode.USAGE and f"cannot make the folder {tmp_path / 'plain' / 'night'}" in err, err
    assert err.count("\n") == 1


def test_a_sigint_ignored_at_start_stays_ignored_for_commands_other_than_a_run() -> None:
    # out-153 F4: `report --job &` from a script (SIGINT ignored, as a shell starts it) was ended
    # by a Ctrl-C meant for the script, "interrupted" and no more: release_early set SIGINT's
    # handler back. A run kept it ignored.
    import batchrun._early_signals as early
    from batchrun._signals import release_early

    saved = [signal.getsignal(sig) for sig in early.SIGNALS]
    was, ignored = early.caught[0], set(early.ignored)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `&` leaves it
        early.ignored.clear()
        early.catch_early()  # the console script's first line
        release_early()  # a command other than `run` takes over
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_IGN, signal.SIG_DFL)  # SIGTERM still stops it
    finally:
        early.caught[0] = was
        early.ignored.clear()
        early.ignored.update(ignored)
        for sig, handler in zip(early.SIGNALS, saved, strict=True):
            signal.signal(sig, handler)


@pytest.mark.parametrize("skipped", [False, True])
def test_a_deadline_once_every_row_was_answered_is_no_stop(results: Path, skipped: bool) -> None:
    # out-180 F2: a sync run's last answers, read and written past the deadline: 8 rows of 8
    # answered, yet `stopped: deadline`, `complete: false`, exit 6 and resume advice with
    # nothing to resume. A row the deadline left skipped keeps the stop.
    rows = read_rows(results)
    if skipped:
        rows[3]["status"] = "skipped"
    outcome = PoolOutcome(StopReason.DEADLINE, "the run deadline of 3 s was reached", 0.0)
    notices: list[str] = []
    drop_needless_stop(outcome, SummaryBuilder().add_all(rows), [], notices.append)
    assert outcome.stop == (StopReason.DEADLINE if skipped else None) and not notices
