"""Results files as inputs: resume only this job's results, the CI gate on the job's matrix,
and readers that refuse what is not a results file and set corrupt lines aside.

Every refusal is asserted the same way: its exit code, one line naming the file, no
traceback, and the file byte for byte as it was.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchrun import ExitCode
from batchrun._lock import OutputLock
from batchrun._output_paths import summary_path
from batchrun._reader import MAX_RECORD_BYTES, scan_states
from batchrun._results import final_records, record_head

from .conftest import SMALL_JOB, call_cli, killed_run_journal, read_rows, resealed, write_job

OTHER_JOB = SMALL_JOB.replace("name: small", "name: other")


def fingerprint(path: Path) -> tuple[int, int, str]:
    """Size, mtime and a hash of the first and last MiB: enough to see any write, even to 1 GB."""
    info = path.stat()
    with path.open("rb") as handle:
        head = handle.read(1 << 20)
        handle.seek(max(0, info.st_size - (1 << 20)))
        tail = handle.read()
    return info.st_size, info.st_mtime_ns, hashlib.sha256(head + tail).hexdigest()


def one_line_error(err: str, *names: str) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], err


def _other_results(folder: Path) -> bytes:
    other = write_job(folder, OTHER_JOB, "other.yaml")
    out = folder / "other-results.jsonl"
    assert call_cli(other, "--simulate", "-o", out, "-q")[0] == 0
    return out.read_bytes()


# -- 1. resume rewrites only this job's results -----------------------------------------------
# (name, what the -o file holds, message fragment). Each is refused with and without --resume.
NOT_OURS: list[tuple[str, Callable[[Path], bytes], str]] = [
    ("job file", lambda d: (d / "job.yaml").read_bytes(), "not a batchrun results file"),
    ("dataset", lambda d: b'{"country": "France"}\n{"country": "Japan"}\n', "not a batchrun results file"),
    ("text without final newline", lambda d: b"line one\nline two", "not a batchrun results file"),
    ("binary", lambda d: bytes(range(256)) * 3, "not a batchrun results file"),
    ("record missing fields", lambda d: b'{"id": 5}\n', "no 'id' string"),
    ("another job's results", _other_results, "holds results of job 'other'"),
]


@pytest.mark.parametrize("resume", [False, True])
@pytest.mark.parametrize(("name", "content", "message"), NOT_OURS, ids=[c[0] for c in NOT_OURS])
def test_a_file_that_is_not_this_jobs_results_is_never_written(
    tmp_path: Path, job: Path, name: str, content: Callable[[Path], bytes], message: str, resume: bool
) -> None:
    victim = tmp_path / "victim.data"
    victim.write_bytes(content(tmp_path))
    before = victim.read_bytes()
    code, out, err = call_cli(job, "--simulate", "-o", victim, "-q", *(["--resume"] if resume else []))
    assert code == ExitCode.USAGE
    one_line_error(err, str(victim), message)
    assert "--resume" not in err  # the hint appears only where resuming would be right
    assert victim.read_bytes() == before
    assert not (tmp_path / "victim.summary.json").exists()


def test_a_1_gb_file_without_a_newline_is_refused_untouched_and_fast(tmp_path: Path, job: Path) -> None:
    victim = tmp_path / "huge.jsonl"
    with victim.open("wb") as handle:
        handle.truncate(1 << 30)  # sparse: 1 GB of NUL bytes, no newline
    before = fingerprint(victim)
    code, _, err = call_cli(job, "--simulate", "-o", victim, "--resume", "-q")
    assert code == ExitCode.USAGE
    one_line_error(err, str(victim), "not a batchrun results file")
    assert fingerprint(victim) == before


def test_the_resume_hint_is_given_for_this_jobs_results(results: Path, job: Path) -> None:
    before = results.read_bytes()
    code, _, err = call_cli(job, "--simulate", "-o", results, "-q")
    assert code == ExitCode.USAGE
    one_line_error(err, str(results), "add --resume")
    assert results.read_bytes() == before


def test_after_a_resume_each_spent_figure_says_what_it_counts(results: Path, job: Path) -> None:
    rows = results.read_bytes().splitlines(keepends=True)
    results.write_bytes(b"".join(rows[:12]))  # a run that crashed after 12 rows
    summary_path(results).unlink()  # and so wrote no summary
    code, text, err = call_cli(job, "--simulate", "-o", results, "--resume", "--budget", "1")
    assert code == 0, err
    assert "this run: worst case $" in text and "earlier runs of this file spent $" in text
    assert "budget left for this run: spent $" in text and "all rows in the file cost $" in text
    mode = results.stat().st_mode & 0o777
    assert (results.with_name("done.summary.json").stat().st_mode & 0o777) == mode  # not mkstemp's 0600


def test_a_torn_record_at_the_end_is_cut_and_the_run_resumed(results: Path, job: Path) -> None:
    whole = results.read_bytes()
    last_start = whole.rstrip(b"\n").rfind(b"\n") + 1
    results.write_bytes(whole[:last_start] + whole[last_start : last_start + 40])  # the last record torn
    summary_path(results).unlink()  # by a run killed then: it wrote no summary
    code, _, err = call_cli(job, "--simulate", "-o", results, "--resume")
    assert code == 0, err
    assert "cut a torn last record (40 bytes)" in err
    rows = read_rows(results)
    assert len(rows) == 20 and len({r["id"] for r in rows}) == 20


def test_resume_without_output_never_picks_a_file_that_is_not_this_jobs_results(
    tmp_path: Path, job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "outputs" / "small"
    folder.mkdir(parents=True)
    notes = folder / "notes.jsonl"
    notes.write_bytes(b'{"id":"user1","name":"bob"}')  # a user's file, no trailing newline
    torn = folder / "zz-torn.jsonl"
    torn.write_bytes(b'{"id":"abc"')  # only a fragment: nothing shows whose it is
    before = {p: p.read_bytes() for p in (notes, torn)}
    code, _, err = call_cli(job, "--simulate", "--resume", "-q")
    assert code == ExitCode.USAGE
    one_line_error(err, "no incomplete run of 'small'")
    assert {p: p.read_bytes() for p in (notes, torn)} == before
    assert sorted(p.name for p in folder.iterdir()) == ["notes.jsonl", "zz-torn.jsonl"]


def test_a_resume_with_no_run_to_resume_makes_no_folder(
    tmp_path: Path, job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break48 F5: refused (exit 2), it left an empty outputs/<job>/ behind, made by the job's lock.
    monkeypatch.chdir(tmp_path)
    code, _, err = call_cli(job, "--simulate", "--resume", "-q")
    assert code == ExitCode.USAGE
    one_line_error(err, "no incomplete run of 'small'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml"]


@pytest.mark.parametrize("content", [b'{"id":"user1","name":"bob"}', b'{"id":"abc"'], ids=["object", "fragment"])
@pytest.mark.parametrize("resume", [False, True])
def test_a_file_holding_only_one_line_without_newline_is_refused_untouched(
    tmp_path: Path, job: Path, content: bytes, resume: bool
) -> None:
    victim = tmp_path / "users.json"
    victim.write_bytes(content)
    code, _, err = call_cli(job, "--simulate", "-o", victim, "-q", *(["--resume"] if resume else []))
    assert code == ExitCode.USAGE
    one_line_error(err, str(victim), "not a batchrun results file")
    assert "--resume" not in err
    assert victim.read_bytes() == content
    assert not (tmp_path / "users.summary.json").exists()


@pytest.mark.parametrize("rows", [1, 12], ids=["only-record", "last-of-12"])
def test_a_whole_last_record_lacking_its_newline_is_kept_not_paid_again(results: Path, job: Path, rows: int) -> None:
    lines = results.read_bytes().splitlines(keepends=True)[:rows]
    kept = b"".join(lines)
    results.write_bytes(kept.rstrip(b"\n"))  # the newline of the last whole record was never written
    summary_path(results).unlink()  # by a run killed then: it wrote no summary
    code, _, err = call_cli(job, "--simulate", "-o", results, "--resume")
    assert code == 0, err
    assert "added the missing newline after its last record" in err and "torn" not in err
    after = results.read_bytes()
    assert after.startswith(kept)  # every record kept byte for byte, none cut
    final = read_rows(results)
    assert len(final) == 20 and len({r["id"] for r in final}) == 20  # the kept rows were not requested again


def test_a_whole_last_record_of_another_job_is_refused(results: Path, job: Path, tmp_path: Path) -> None:
    other = _other_results(tmp_path).splitlines()[0]
    results.write_bytes(results.read_bytes() + other)
    before = results.read_bytes()
    code, _, err = call_cli(job, "--simulate", "-o", results, "--resume", "-q")
    assert code == ExitCode.USAGE
    one_line_error(err, str(results), "a record of job 'other'")
    assert results.read_bytes() == before


@pytest.mark.parametrize(
    "tail", [b"garbage without newline", b"\x00\x01\x02", b'{"not":"a record"'], ids=["text", "binary", "json"]
)
def test_a_tail_that_is_not_a_torn_record_is_refused(results: Path, job: Path, tail: bytes) -> None:
    results.write_bytes(results.read_bytes() + tail)
    before = results.read_bytes()
    code, _, err = call_cli(job, "--simulate", "-o", results, "--resume", "-q")
    assert code == ExitCode.USAGE
    one_line_error(err, str(results), "is not a torn record")
    assert f"(to keep the records before it: truncate -s {len(before) - len(tail)} {results})" in err
    assert results.read_bytes() == before


def test_a_tail_past_the_record_limit_is_refused_with_the_cut_that_keeps_the_records(results: Path, job: Path) -> None:
    # out-174 F7: a short tail was told the `truncate -s` keeping the records; a long one was not.
    kept = results.stat().st_size
    with results.open("ab") as out:
        out.write(b'{"id":"' + b"y" * (MAX_RECORD_BYTES + 1024))
    code, _, err = call_cli(job, "--simulate", "-o", results, "--resume", "-q")
    assert code == ExitCode.USAGE and "is longer than 33,554,432 bytes and has no newline" in err, err
    assert f"(to keep the records before it: truncate -s {kept} {results})" in err
    assert results.stat().st_size == kept + 7 + MAX_RECORD_BYTES + 1024


@pytest.mark.parametrize(
    "tail",
    [b"\0" * 4096, b'{"id":"ab' + b"\0" * 100, b"\0" * 4096 + b'{"id":"ab'],  # the last: out-160
    ids=["zeros", "torn-then-zeros", "zeros-then-torn"],
)
def test_a_tail_of_zero_filled_blocks_is_cut_and_the_run_resumed(results: Path, job: Path, tail: bytes) -> None:
    # break67 F3: a power cut (or a cut-back past the file's end) leaves NULs: every resume was exit 2.
    before = results.read_bytes()
    results.write_bytes(before + tail)
    code, _, err = call_cli(job, "--simulate", "-o", results, "--resume", "-q")
    assert code == ExitCode.OK, err
    assert results.read_bytes().startswith(before) and b"\0" not in results.read_bytes()


def test_a_sparse_tail_is_not_mapped_and_is_cut_by_the_resume(results: Path, job: Path) -> None:
    # verify69 F8: a tail of unwritten blocks (a crash's hole), touched through mmap on a full
    # tmpfs, was a SIGBUS: exit 135, no word. Only the written part is mapped; the resume cuts the rest.
    from batchrun._files import mapped_length

    before = results.read_bytes()
    os.truncate(results, len(before) + (4 << 20))  # a hole of 4 MiB after the records
    with results.open("rb") as handle:
        mapped = mapped_length(handle.fileno())
    assert len(before) <= mapped < len(before) + (4 << 20)
    code, _, err = call_cli(job, "--simulate", "-o", results, "--resume", "-q")
    assert code == ExitCode.OK, err
    assert results.read_bytes().startswith(before) and b"\0" not in results.read_bytes()


def test_a_whole_json_tail_that_is_no_record_is_refused_not_cut(results: Path, job: Path) -> None:
    # out-125 F4: a hand-written `{"id":"note",...}` with no newline was cut as "a torn last record".
    results.write_bytes(results.read_bytes() + b'{"id":"note","status":"ok","note":"hand-written, please keep"}')
    before = results.read_bytes()
    code, _, err = call_cli(job, "--simulate", "-o", results, "--resume", "-q")
    assert code == ExitCode.USAGE and "is not a torn record; the file was left as it is" in err, err
    assert results.read_bytes() == before


def test_a_torn_tail_longer_than_one_record_is_refused(
    results: Path, job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import batchrun._results as module

    monkeypatch.setattr(module, "MAX_RECORD_BYTES", 4096)
    results.write_bytes(results.read_bytes() + b'{"id":"' + b"a" * 5000)
    before = results.read_bytes()
    code, _, err = call_cli(job, "--simulate", "-o", results, "--resume", "-q")
    assert code == ExitCode.USAGE
    one_line_error(err, str(results), "longer than 4,096 bytes")
    assert results.read_bytes() == before


def test_a_torn_fragment_in_the_middle_is_set_aside_by_resume_and_readers(results: Path, job: Path) -> None:
    lines = results.read_bytes().splitlines(keepends=True)
    # What a disk that filled up and recovered left: half a record, then whole ones.
    results.write_bytes(b"".join(lines[:5]) + lines[5][:60] + b"".join(lines[6:]))
    code, text, err = call_cli("report", results)
    assert code == ExitCode.INCOMPLETE and f"{results}:6: set aside: not a batchrun record (not JSON)" in err
    assert f"{results}: 2 of the 20 row(s) its summary counts have no readable record" in err
    assert "TOTAL" in text and len(list(final_records(results))) == 18  # rows 6 and 7 merged into one bad line
    code, _, err = call_cli(job, "--simulate", "-o", results, "--resume", "-q")
    # Its rows whole again, asked again; but the bytes its summary saw are gone, and it says so
    # (out-173 F1: failing rows removed so were asked again until they passed, exit 0).
    assert code == ExitCode.INCOMPLETE and "records removed or cut short after a run's summary" in err, err
    assert {r["id"] for r in final_records(results)} == {json.loads(line)["id"] for line in lines}
    assert list(final_records(str(results))) == list(final_records(results))  # the public API takes a str (break23)


def test_a_file_whose_first_record_names_another_job_than_its_summary_is_incomplete(results: Path) -> None:
    # out-125 F1: the first record's job edited, the other 19 rows were set aside as another
    # job's, and `report` passed on the one left, the summary that counted 20 dropped unsaid.
    lines = results.read_bytes().splitlines(keepends=True)
    first = json.loads(lines[0])
    results.write_bytes(json.dumps({**first, "job": "zzz"}).encode() + b"\n" + b"".join(lines[1:]))
    code, _, err = call_cli("report", results)
    assert code == ExitCode.INCOMPLETE, err
    said = f"{results}: its summary is of a run of job {first['job']!r}, its first record of job 'zzz'"
    assert said in err
    results.write_bytes(b"".join(lines))  # as the run left it: its own summary vouches for it
    assert call_cli("report", results)[0] == ExitCode.OK


def test_a_report_of_a_file_missing_rows_its_summary_counts_is_incomplete(results: Path, job: Path) -> None:
    # verify41 F-4a: a whole line gone (an edit, an older copy restored) was exit 0 and no word.
    lines = results.read_bytes().splitlines(keepends=True)
    # A summary found by name but of another file (done.bak beside done.jsonl) says nothing of it (verify43 F1).
    backup = results.with_suffix(".bak")
    backup.write_bytes(b"".join(lines[:3] + lines[4:]))
    assert call_cli("report", backup)[0] == ExitCode.OK
    results.write_bytes(b"".join(lines[:3] + lines[4:]))
    code, text, err = call_cli("report", results)
    assert code == ExitCode.INCOMPLETE and "TOTAL" in text
    assert f"{results}: 1 of the 20 row(s) its summary counts have no readable record (lines removed" in err
    # A line gone whose row has a later record (a retry's first attempt): as many rows, less spend.
    retried = dict(json.loads(lines[3]), cost=0.5)
    results.write_bytes(b"".join(lines) + json.dumps(retried).encode() + b"\n")
    resealed(results)  # as the run that retried it left its summary
    assert call_cli(job, "--simulate", "-o", results, "--resume", "-q")[0] == ExitCode.OK  # its summary now
    results.write_bytes(b"".join(lines[:3] + lines[4:]) + json.dumps(retried).encode() + b"\n")
    code, text, err = call_cli("report", results)
    assert code == ExitCode.INCOMPLETE and "byte(s) shorter than when its summary was written" in err


# -- 2. the CI gate compares with the job's whole matrix ----------------------------------------
def test_the_gate_fails_an_empty_file_as_incomplete(tmp_path: Path, job: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    code, _, err = call_cli("report", empty, "--job", job)
    assert code == ExitCode.INCOMPLETE
    assert "20 of 20 row(s) of the job's matrix have no record" in err
    code, _, err = call_cli("report", empty)
    assert code == ExitCode.USAGE
    one_line_error(err, str(empty), "holds no records")


def test_the_gate_refuses_garbage_and_another_jobs_rows(tmp_path: Path, job: Path) -> None:
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(os.urandom(4096).replace(b"\n", b"x"))
    code, _, err = call_cli("report", garbage, "--job", job)
    assert code == ExitCode.USAGE
    one_line_error(err, str(garbage), "not a batchrun results file")
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_bytes(_other_results(tmp_path))
    code, _, err = call_cli("report", foreign, "--job", job)
    assert code == ExitCode.USAGE
    one_line_error(err, str(foreign), "20 row(s) are not in the matrix of job 'small'")


@pytest.mark.parametrize(
    "edit",
    [{"model": "openai/gpt-5"}, {"prompt_id": "nope"}, {"vars": {"country": "Peru", "expect": "Lima"}}, {"repeat": 1}],
    ids=["model", "prompt", "vars", "repeat"],
)
def test_the_gate_and_merge_refuse_a_row_edited_under_its_id(
    tmp_path: Path, job: Path, results: Path, edit: dict[str, Any]
) -> None:
    # break24 F9: a row whose model (prompt, variables, repeat) was edited with its id kept
    # passed the gate, exit 0, as a model the job does not have.
    rows = read_rows(results)
    if "repeat" in edit:  # the other repeat: the first line is either, as the rows came back
        edit = {"repeat": rows[0]["repeat"] % 2 + 1}
    assert {k: rows[0][k] for k in edit} != edit
    rows[0].update(edit)
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(json.dumps(row) + "\n" for row in rows))
    code, _, err = call_cli("report", edited, "--job", job)
    assert code == ExitCode.USAGE
    one_line_error(err, str(edited), "1 row(s) are not in the matrix of job 'small'", "rows edited")
    with_and_without: list[list[str | Path]] = [["--job", job], []]
    for with_job in with_and_without:  # without the job too: the row's id says so
        code, _, err = call_cli("merge", tmp_path / "m.jsonl", edited, *with_job)
        assert code == ExitCode.USAGE and "1 row(s) have a model, prompt, variables or repeat that their id" in err
    assert not (tmp_path / "m.jsonl").exists()
    assert call_cli("report", results, "--job", job)[0] == ExitCode.OK  # the file as written passes


def test_a_row_a_kill_9_left_in_flight_is_skipped_to_the_gate_not_foreign(
    tmp_path: Path, job: Path, results: Path
) -> None:
    # A reader counts it from the journal, knowing only its id and model: the id check of an
    # edited row (break24 F9) must not take it for one.
    lines = results.read_text().splitlines(keepends=True)
    killed = json.loads(lines[-1])
    results.write_text("".join(lines[:-1]))
    journal = results.with_name("done.attempts.jsonl")
    attempt = {"row": killed["id"], "at": 0, "usd": 0.001, "model": killed["model"]}
    journal.write_text(json.dumps({"job": "small"}) + "\n" + json.dumps(attempt) + "\n")
    code, _, err = call_cli("report", results, "--job", job)
    assert code == ExitCode.INCOMPLETE and "1 row(s) were skipped (never answered)" in err, err


def test_the_gate_passes_a_complete_run_and_fails_one_shard_of_four(tmp_path: Path, job: Path, results: Path) -> None:
    assert call_cli("report", results, "--job", job)[0] == 0
    shard = tmp_path / "shard-1.jsonl"
    assert call_cli(job, "--simulate", "--shard", "1/4", "-o", shard, "-q")[0] == 0
    code, _, err = call_cli("report", shard, "--job", job)
    rows = len(read_rows(shard))
    assert code == ExitCode.INCOMPLETE and f"{20 - rows} of 20 row(s) of the job's matrix have no record" in err
    assert call_cli("report", shard, "--job", job, "--allow-partial")[0] == 0


def test_skipped_rows_fail_the_gate(tmp_path: Path, job: Path) -> None:
    out = tmp_path / "budget.jsonl"
    assert call_cli(job, "--simulate", "-o", out, "-q", "--budget", "0.00001")[0] == ExitCode.BUDGET
    code, _, err = call_cli("report", out, "--job", job)
    assert code == ExitCode.INCOMPLETE and "row(s) were skipped (never answered)" in err


def test_merge_says_which_shards_are_missing(tmp_path: Path, job: Path) -> None:
    shards = [tmp_path / f"shard-{k}.jsonl" for k in (1, 2, 3, 4)]
    for k, path in enumerate(shards, start=1):
        assert call_cli(job, "--simulate", "--shard", f"{k}/4", "-o", path, "-q")[0] == 0
    code, out, err = call_cli("merge", tmp_path / "one.jsonl", shards[0], "--quiet")
    assert code == ExitCode.INCOMPLETE and "shard(s) 2, 3, 4 of 4 are missing" in err
    assert out == "" and "TOTAL" in err  # a failure shows its table, on stderr under --quiet
    summary = json.loads((tmp_path / "one.summary.json").read_text())
    assert summary["complete"] is False
    code, _, err = call_cli("merge", tmp_path / "two.jsonl", shards[0], shards[2], "--job", job, "--allow-partial")
    # Accepted, and said, as the gate says it (out-149 F6: a table that looked whole).
    assert (
        code == 0 and err.startswith("batchrun: warning: accepted with --allow-partial: ") and "have no record" in err
    )
    assert json.loads((tmp_path / "two.summary.json").read_text())["complete"] is False
    # break64 F7: a merge killed with kill -9 left its temporary for good; one an hour old goes,
    # a fresh one (a merge writing it now) and a user's own file stay.
    stale, fresh, mine = (
        tmp_path / name for name in ("all.jsonlab3de_9z.tmp", "all.jsonlqq11ww22.tmp", "all.jsonl.tmp")
    )
    for path in (stale, fresh, mine):
        path.write_bytes(b"x" * 100)
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    os.utime(mine, (time.time() - 7200, time.time() - 7200))
    code, out, err = call_cli("merge", tmp_path / "all.jsonl", *shards, "-q")
    assert code == 0 and out == err == "", err  # break40 F5: a cron merge mailed its table every night
    assert not stale.exists() and fresh.exists() and mine.exists()
    assert json.loads((tmp_path / "all.summary.json").read_text())["complete"] is True
    modes = {(tmp_path / name).stat().st_mode & 0o777 for name in ("all.jsonl", "all.summary.json", "shard-1.jsonl")}
    assert len(modes) == 1 and modes.pop() & 0o044  # the same mode as a run's results, not mkstemp's 0600


def test_merge_into_a_folder_it_cannot_write_names_its_output_and_exits_11(
    tmp_path: Path, results: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break44 F10: exit 2 ("bad input"), naming a temporary `m.jsonlhl9vxzig.tmp` nobody asked for.
    def read_only(**_: Any) -> tuple[int, str]:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("batchrun._merge.tempfile.mkstemp", read_only)
    code, _, err = call_cli("merge", tmp_path / "m.jsonl", results, "--quiet")
    assert code == ExitCode.IO and err == f"batchrun: {tmp_path / 'm.jsonl'}: cannot write it: Read-only file system\n"


def test_a_record_copied_within_its_file_is_counted_once_and_said(tmp_path: Path, results: Path) -> None:
    # break40 F3: a file `cat`-ed onto itself (or an artifact uploaded twice) doubled the copied
    # rows' cost in every reader, where merge counts a copy in another file once.
    lines = results.read_bytes().splitlines(keepends=True)
    paid = sum(r["cost"] for r in read_rows(results))
    copied = tmp_path / "copied.jsonl"

    # The first two rows three times; once written again by another tool (verify40 F3: not seen).
    def whole(text: str) -> float | int:  # jq 1.6 writes 1.0 as 1 (verify41 F-3)
        return int(float(text)) if float(text).is_integer() else float(text)

    rewritten = [
        json.dumps(json.loads(line, parse_float=whole), separators=(",", ":"), sort_keys=True).encode() + b"\n"
        for line in lines[:2]
    ]
    assert any(b".0," in line or b".0}" in line for line in lines[:2])  # a whole float to write as jq does
    copied.write_bytes(b"".join([*lines, *lines[:5], *rewritten]))
    warnings: list[str] = []
    rows = list(final_records(copied, warnings.append))
    assert len(rows) == len(lines) and sum(r["cost"] for r in rows) == pytest.approx(paid)
    assert warnings == [f"{copied}: 7 record(s) are copies of an earlier line (the same attempt): counted once"]
    # jq 1.6 reads every number as a double: a 64-bit id in a row's variables comes back rounded
    # (verify42 F-B: 2x the cost for a dataset of database ids).
    big = json.loads(lines[0])
    big["vars"] = {**big["vars"], "doc_id": 1234567890123456789}
    as_jq_reads = json.loads(json.dumps(big), parse_int=lambda text: int(Decimal(repr(float(text)))))
    as_jq = json.dumps(as_jq_reads, separators=(",", ":")).encode() + b"\n"
    assert b"1234567890123456800" in as_jq  # as jq 1.6 writes it
    ids = tmp_path / "ids.jsonl"
    ids.write_bytes(b"".join([json.dumps(big).encode() + b"\n", *lines[1:], as_jq]))
    warnings.clear()
    assert sum(r["cost"] for r in final_records(ids, warnings.append)) == pytest.approx(paid)
    assert warnings == [f"{ids}: 1 record(s) are copies of an earlier line (the same attempt): counted once"]
    # A row written again (a retry, a cost learnt late) still folds every cost it paid.
    again = dict(read_rows(results)[0], started_at="2026-01-01T00:00:00.000Z", cost=0.5)
    retried = tmp_path / "retried.jsonl"
    retried.write_bytes(b"".join([*lines, json.dumps(again).encode() + b"\n"]))
    assert sum(r["cost"] for r in final_records(retried)) == pytest.approx(paid + 0.5)
    shutil.copyfile(results.with_name("done.summary.json"), tmp_path / "copied.summary.json")
    code, out, err = call_cli("merge", tmp_path / "m.jsonl", copied, "-q")
    assert code == ExitCode.OK and out == "" and "7 record(s) are copies of an earlier line" in err, err
    assert sum(r["cost"] for r in read_rows(tmp_path / "m.jsonl")) == pytest.approx(paid)


def test_a_row_in_two_shard_files_keeps_its_newest_record_and_every_cost(tmp_path: Path, job: Path) -> None:
    # break24 F1: shards of another N overlap; merge kept the record of the last file named and
    # dropped the other's cost, exit 0 and nothing said.
    halves = [tmp_path / f"h{k}.jsonl" for k in (1, 2)]
    for k, path in enumerate(halves, start=1):
        assert call_cli(job, "--simulate", "--shard", f"{k}/2", "-o", path, "-q")[0] == ExitCode.OK
    third = tmp_path / "t1.jsonl"  # the 1/3 shard, run later: its rows overlap both halves
    assert call_cli(job, "--simulate", "--shard", "1/3", "-o", third, "-q")[0] == ExitCode.OK
    paid = sum(r["cost"] for path in (*halves, third) for r in read_rows(path))
    newest = {r["id"]: r["finished_at"] for r in read_rows(third)}
    for order in ((*halves, third), (third, *halves)):
        out = tmp_path / f"m{len(list(tmp_path.glob('m*.jsonl')))}.jsonl"
        code, _, err = call_cli("merge", out, *order, "--job", job)
        assert code == ExitCode.OK, err
        overlap = len(newest)
        assert f"{overlap} row(s) are in more than one file: each keeps its answered record before an error" in err
        rows = read_rows(out)
        assert len(rows) == len({r["id"] for r in rows}) == 20  # each row once
        assert sum(r["cost"] for r in rows) == pytest.approx(paid)  # every record's cost, folded
        assert all(r["finished_at"] == newest[r["id"]] for r in rows if r["id"] in newest)  # whatever the order
        assert all(r["earlier_records"] == 1 for r in rows if r["id"] in newest)
        summary = json.loads(out.with_name(out.stem + ".summary.json").read_text())
        assert summary["total"]["cost_usd"] == pytest.approx(paid) and summary["duplicate_rows"] == overlap
    # A shard run again that a budget stopped answered nothing it answered before: its skips,
    # newer, do not stand over the answers.
    stopped = tmp_path / "s1.jsonl"
    assert (
        call_cli(job, "--simulate", "--shard", "1/2", "-o", stopped, "-q", "--budget", "0.00001")[0] == ExitCode.BUDGET
    )
    code, _, err = call_cli("merge", tmp_path / "ms.jsonl", halves[0], stopped, halves[1], "--job", job)
    assert code == ExitCode.OK, err
    assert {r["status"] for r in read_rows(tmp_path / "ms.jsonl")} == {"ok"}


def test_merge_refuses_an_output_of_another_kind_and_a_shard_named_twice(tmp_path: Path, job: Path) -> None:
    # break24 F10, F12: a FIFO at the output was replaced by the merged file; a shard named
    # twice was "not complete" (exit 12) with every row there; --shard 1/99999999999999999999 ran.
    shards = [tmp_path / f"s{k}.jsonl" for k in (1, 2)]
    for k, path in enumerate(shards, start=1):
        assert call_cli(job, "--simulate", "--shard", f"{k}/2", "-o", path, "-q")[0] == ExitCode.OK
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    code, _, err = call_cli("merge", fifo, *shards)
    assert code == ExitCode.USAGE and "already exists: merge writes a new file" in err
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    code, _, err = call_cli("merge", tmp_path / "m.jsonl", shards[0], shards[0], shards[1])
    assert code == ExitCode.USAGE and "a file is named twice: give each shard once" in err
    os.link(shards[0], tmp_path / "hard.jsonl")  # one file under two names
    code, _, err = call_cli("merge", tmp_path / "m.jsonl", shards[0], tmp_path / "hard.jsonl", shards[1])
    assert code == ExitCode.USAGE and "a file is named twice: give each shard once" in err
    assert not (tmp_path / "m.jsonl").exists()
    code, _, err = call_cli(job, "--simulate", "--shard", "1/99999999999999999999", "-q")
    assert code == ExitCode.USAGE and "1 <= K <= N <= 1,000,000" in err
    # out-110 F3: an empty output that is a shard too, or a killed shard's (its journal beside it),
    # was filled (exit 0), and the shard could not be resumed; a plain empty file is taken.
    killed = tmp_path / "killed.jsonl"
    killed.touch()
    code, _, err = call_cli("merge", killed, killed, *shards)
    assert code == ExitCode.USAGE and "is one of the shards" in err
    killed.with_name("killed.attempts.jsonl").write_text("")
    code, _, err = call_cli("merge", killed, *shards)
    assert code == ExitCode.USAGE and "beside a run's killed.attempts.jsonl" in err and killed.read_bytes() == b""
    (empty := tmp_path / "mktemp.jsonl").touch()
    assert call_cli("merge", empty, *shards)[0] == ExitCode.OK and empty.stat().st_size > 0
    # out-125 F2: a user's file at the summary's name was replaced; a folder there failed the
    # merge (exit 11) once its file was in place with no summary, and `report` passed it.
    notes = tmp_path / "notes.summary.json"
    notes.write_text("precious notes")
    code, _, err = call_cli("merge", tmp_path / "notes.jsonl", *shards)
    assert code == ExitCode.USAGE and f"{notes}: not a batchrun summary" in err, err
    assert notes.read_text() == "precious notes" and not (tmp_path / "notes.jsonl").exists()
    (tmp_path / "partial.summary.json").mkdir()
    code, _, err = call_cli("merge", tmp_path / "partial.jsonl", shards[0])
    assert code == ExitCode.USAGE and "partial.summary.json: not a regular file (a folder)" in err, err
    assert not (tmp_path / "partial.jsonl").exists()
    # A summary of another file is left as it is (out-143 F1: replaced in silence, with what it counted).
    (tmp_path / "partial.summary.json").rmdir()
    shutil.copy(shards[0].with_name("s1.summary.json"), tmp_path / "partial.summary.json")
    code, _, err = call_cli("merge", tmp_path / "partial.jsonl", shards[0])
    assert code == ExitCode.USAGE and "partial.summary.json: the summary of s1.jsonl, not of partial.jsonl" in err
    assert not (tmp_path / "partial.jsonl").exists()
    # Its own, its file gone: the merge's own replaces it.
    own = json.loads((tmp_path / "partial.summary.json").read_text()) | {"output": str(tmp_path / "partial.jsonl")}
    (tmp_path / "partial.summary.json").write_text(json.dumps(own))
    assert call_cli("merge", tmp_path / "partial.jsonl", shards[0])[0] == ExitCode.INCOMPLETE
    assert json.loads((tmp_path / "partial.summary.json").read_text())["complete"] is False
    assert call_cli("report", tmp_path / "partial.jsonl")[0] == ExitCode.INCOMPLETE


def test_no_page_or_junit_file_is_written_over_what_the_command_reads_or_over_each_other(
    tmp_path: Path, job: Path, results: Path
) -> None:
    # break25 F3: `report --job J --html J` replaced the job it had just read (a dataset too);
    # `--junit X --html X` kept the page and lost the JUnit file; a page went over a job file
    # that no command of it read, named or through a link.
    (tmp_path / "d").mkdir()
    dataset = tmp_path / "rows.csv"
    dataset.write_text("country,expect\nFrance,Paris\n")
    with_data = write_job(
        tmp_path / "d",
        SMALL_JOB.replace(
            "vars: [{country: France, expect: Paris}, {country: Japan, expect: Tokyo}, {country: Italy, expect: Rome}]",
            "dataset: ../rows.csv",
        ),
    )
    before = {path: path.read_bytes() for path in (job, dataset, with_data)}
    (tmp_path / "link.html").symlink_to(job)
    cases = [
        (
            ("report", results, "--job", job, "--html", job),
            "a page is not written over",
        ),
        (("report", results, "--job", job, "--junit", job), "a JUnit file is not written over"),
        (("report", results, "--job", with_data, "--html", dataset), "rows.csv, which this command reads"),
        (
            ("report", results, "--junit", tmp_path / "x.xml", "--html", tmp_path / "x.xml"),
            "not written over a page it writes too",
        ),
        (("history", results, "--html", job), "it holds batchrun job definitions (models: and prompts:)"),
        (("report", results, "--html", tmp_path / "link.html"), "leads to"),
    ]
    for argv, says in cases:
        code, _, err = call_cli(*argv)
        assert code == ExitCode.USAGE and says in err and err.count("\n") == 1, (argv, err)
    assert {path: path.read_bytes() for path in before} == before
    assert not (tmp_path / "x.xml").exists()
    # A job in any spelling YAML allows (verify25 N2): JSON, flow style, keys after a long comment.
    spellings = {
        "j.json": '{"name": "j", "models": ["m"], "prompts": [{"id": "p", "text": "hi"}]}\n',
        "flow.yaml": "{name: f, models: [m], prompts: [{id: p, text: hi}]}\n",
        "late.yaml": "name: l\nmodels: [m]\n" + "# a comment\n" * 7000 + "prompts: [{id: p, text: hi}]\n",
    }
    for name, text in spellings.items():
        (tmp_path / name).write_text(text)
        code, _, err = call_cli("report", results, "--html", tmp_path / name)
        assert code == ExitCode.USAGE and "it holds batchrun job definitions" in err, name
        assert (tmp_path / name).read_text() == text
    # A file a dataset row names, by its own json_schema check (verify26 R1).
    (tmp_path / "d" / "row.schema.json").write_text('{"type": "string"}')
    (tmp_path / "d" / "rows.jsonl").write_text(
        '{"country": "France", "expect": "Paris", "checks": [{"json_schema": "row.schema.json"}]}\n'
    )
    row_job = write_job(
        tmp_path / "d",
        SMALL_JOB.replace(
            "vars: [{country: France, expect: Paris}, {country: Japan, expect: Tokyo}, {country: Italy, expect: Rome}]",
            "dataset: rows.jsonl",
        ),
    )
    code, _, err = call_cli("report", results, "--job", row_job, "--junit", tmp_path / "d" / "row.schema.json")
    assert code == ExitCode.USAGE and "is not written over a file" in err and "rows.jsonl names" in err
    assert (tmp_path / "d" / "row.schema.json").read_text() == '{"type": "string"}'
    # Any file the job names: the example job's schema (verify25 N10).
    example = tmp_path / "jobs"
    # Writable whatever the checkout's modes (a read-only one: out-154 F1).
    shutil.copytree(Path(__file__).parents[1] / "jobs", example, copy_function=shutil.copyfile)
    example.chmod(0o755)
    schema = (example / "capital.schema.json").read_bytes()
    assert call_cli(example / "eval.yaml", "--simulate", "-o", example / "e.jsonl", "-q")[0] == ExitCode.OK
    code, _, err = call_cli(
        "report", example / "e.jsonl", "--job", example / "eval.yaml", "--junit", example / "capital.schema.json"
    )
    assert code == ExitCode.USAGE and "capital.schema.json, which this command reads" in err
    assert (example / "capital.schema.json").read_bytes() == schema


def test_merge_waits_for_no_run_it_refuses_a_shard_being_written(tmp_path: Path, job: Path) -> None:
    # break24 F13: a shard a live run was writing was merged with its in-flight rows read as
    # killed ("crashed", their worst cases held), exit 0 under --allow-partial.
    shards = [tmp_path / f"s{k}.jsonl" for k in (1, 2)]
    for k, path in enumerate(shards, start=1):
        assert call_cli(job, "--simulate", "--shard", f"{k}/2", "-o", path, "-q")[0] == ExitCode.OK
    live = OutputLock(shards[1])  # as the run writing it holds it
    live.acquire()
    try:
        code, _, err = call_cli("merge", tmp_path / "m.jsonl", *shards, "--job", job, "--allow-partial")
        assert code == ExitCode.LOCKED
        one_line_error(err, f"{shards[1]} is being written by another batchrun run (pid {os.getpid()}")
        assert not (tmp_path / "m.jsonl").exists()
        # ...and a run cannot start on a shard while it is merged: the merge holds its lock.
    finally:
        live.release()
    merging = OutputLock(shards[0], role="merge")  # as another merge holds it (break67 F4: "being written")
    merging.acquire()
    try:
        code, _, err = call_cli("merge", tmp_path / "m.jsonl", *shards, "--job", job)
        assert code == ExitCode.LOCKED, err
        one_line_error(err, f"{shards[0]} is being read by another batchrun merge (pid {os.getpid()})")
        code, _, err = call_cli(job, "--simulate", "--shard", "1/2", "-o", shards[0], "--resume", "-q")
        assert code == ExitCode.LOCKED and "is being read by another batchrun merge" in err, err
    finally:
        merging.release()
    code, _, err = call_cli("merge", tmp_path / "m.jsonl", *shards, "--job", job)
    assert code == ExitCode.OK, err
    assert len(read_rows(tmp_path / "m.jsonl")) == 20
    assert not list(tmp_path.glob("*.lock"))  # the merge's locks are gone with it


def test_merge_without_the_job_takes_a_shard_that_got_no_rows(tmp_path: Path) -> None:
    # break24 F12: a shard with no rows wrote a summary without the job's name, and merge
    # without --job said "no usable summary of this job", exit 12, with every row there.
    job = write_job(tmp_path, SMALL_JOB.replace("repeat: 2", "repeat: 1").replace(", google/gemini-2.0-flash-001", ""))
    shards = [tmp_path / f"s{k}.jsonl" for k in range(1, 9)]
    for k, path in enumerate(shards, start=1):
        assert call_cli(job, "--simulate", "--shard", f"{k}/8", "-o", path, "-q")[0] == ExitCode.OK
    assert any(path.stat().st_size == 0 for path in shards)  # 5 rows over 8 shards
    code, _, err = call_cli("merge", tmp_path / "m.jsonl", *shards)
    assert (code, err) == (ExitCode.OK, "")
    assert len(read_rows(tmp_path / "m.jsonl")) == 5
    code, _, err = call_cli("merge", tmp_path / "m2.jsonl", *[p for p in shards if p.stat().st_size == 0][:1])
    assert code == ExitCode.USAGE and "hold no records" in err


def test_merge_with_the_job_refuses_another_jobs_shard(tmp_path: Path, job: Path) -> None:
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_bytes(_other_results(tmp_path))
    code, _, err = call_cli("merge", tmp_path / "m.jsonl", foreign, "--job", job)
    assert code == ExitCode.USAGE
    one_line_error(err, "not in the matrix of job 'small'")
    assert not (tmp_path / "m.jsonl").exists() and not list(tmp_path.glob("m.jsonl*.tmp"))


# -- 5. report / diff / merge inputs: regular files, bounded lines, record shape ---------------
def _fifo(folder: Path) -> Path:
    path = folder / "fifo.jsonl"
    os.mkfifo(path)
    return path


def _sparse_gigabyte(folder: Path) -> Path:
    path = folder / "huge.jsonl"
    with path.open("wb") as handle:
        handle.truncate(1 << 30)
    return path


def _missing_fields(folder: Path) -> Path:
    path = folder / "fields.jsonl"
    path.write_text('{"id": 5}\n')
    return path


BAD_RESULTS: list[tuple[str, Callable[[Path], Path], str]] = [
    ("/dev/zero", lambda _: Path("/dev/zero"), "not a regular file"),
    ("fifo", _fifo, "not a regular file (a FIFO)"),
    ("1 GB single line", _sparse_gigabyte, "not a batchrun results file"),
    ("folder", lambda d: d, "not a regular file (a folder)"),
    ("record missing fields", _missing_fields, "no 'id' string"),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("command", ["report", "diff", "merge"])
@pytest.mark.parametrize(("name", "make", "message"), BAD_RESULTS, ids=[c[0] for c in BAD_RESULTS])
def test_bad_results_inputs_are_one_line_exit_2(
    tmp_path: Path, results: Path, command: str, name: str, make: Callable[[Path], Path], message: str
) -> None:
    bad = make(tmp_path)
    args: dict[str, list[str | Path]] = {
        "report": ["report", bad],
        "diff": ["diff", results, bad],
        "merge": ["merge", tmp_path / "m.jsonl", bad],
    }
    code, out, err = call_cli(*args[command])
    assert code == ExitCode.USAGE
    one_line_error(err, str(bad), message)
    assert not (tmp_path / "m.jsonl").exists()


@pytest.mark.parametrize("garbage", [False, True], ids=["fast scan", "line by line"])
def test_a_resume_counts_what_each_row_spent_worst_cases_and_grading_included(tmp_path: Path, garbage: bool) -> None:
    """A row whose cost is unknown shows no cost but its worst case is spent, and a row's
    grading is spent too: the head's `spent` says so, and the resume scan counts it on both
    of its paths. Files written before `spent` existed count their `cost`."""
    heads = [
        record_head("aa", "f1", "ok", None, False, 0.25, 0.25),
        record_head("bb", "f2", "skipped", "interrupted", True, None, 0.5),  # unknown cost, held
        {k: v for k, v in record_head("cc", "f3", "ok", None, False, 0.125).items() if k != "spent"},
        record_head("dd", "f4", "skipped", "budget", True, None),  # nothing sent
        record_head("ee", "f5", "ok", None, False, 0.0625, 0.0625 + 1.0),  # and its grading
    ]
    lines = [json.dumps({**head, "job": "j"}, separators=(",", ":")) for head in heads]
    if garbage:
        lines.insert(2, "not a record")
    out = tmp_path / "r.jsonl"
    out.write_text("\n".join(lines) + "\n")
    scan = scan_states(out)
    assert scan.spent_usd == pytest.approx(1.9375)
    assert scan.ids() == {"aa", "bb", "cc", "dd", "ee"} and scan.ids("skipped") == {"bb", "dd"}


# -- break14b m7: a record with a figure of the wrong type is set aside, never a traceback ------
@pytest.mark.xdist_group("html")  # with test_pages: one worker bundles Vega for `report --html`
@pytest.mark.parametrize(
    "field, value",
    # repeat and vars: verify20 V8 (a traceback in report, diff and history).
    [
        ("cost", "abc"),
        ("latency_ms", "fast"),
        ("cost", -5),
        ("usage", "x"),
        ("attempts", "2"),
        ("repeat", "x"),
        ("vars", [1]),
    ],
)
def test_a_record_with_a_figure_of_the_wrong_type_is_set_aside_by_every_reader(
    results: Path, tmp_path: Path, field: str, value: Any
) -> None:
    lines = results.read_bytes().splitlines(keepends=True)
    bad = json.loads(lines[2])
    bad[field] = value
    results.write_bytes(b"".join(lines[:2]) + json.dumps(bad).encode() + b"\n" + b"".join(lines[3:]))
    html = tmp_path / "r.html"
    for command in (("report", results), ("report", results, "--html", html), ("history", results)):
        code, out, err = call_cli(*command)
        # A report knows the row is missing: its run's summary counts it (break40 F6: exit 0).
        assert code == (ExitCode.INCOMPLETE if command[0] == "report" else 0) and "Traceback" not in out + err
        assert f"{results}:3: set aside: not a batchrun record ('{field}' is not" in err
        said = "1 of the 20 row(s) its summary counts have no readable record (1 line(s) set aside or cut)"
        assert said in err  # `history` says the night is incomplete too (break62 F1), exit 0
    code, out, err = call_cli("diff", results, results)
    assert "Traceback" not in out + err and f"{results}:3: set aside" in err
    # As the first line, it is no results file: refused in one line, exit 2.
    results.write_bytes(json.dumps(bad).encode() + b"\n" + b"".join(lines[:2]))
    code, out, err = call_cli("report", results)
    assert code == ExitCode.USAGE
    one_line_error(err, f"{results}:1: not a batchrun results file ('{field}' is not")


def _line(row: str, cost: float | None, spent: float, resolves: float | None = None) -> str:
    record = record_head(row, "f", "ok", None, False, cost, spent)
    if resolves is not None:
        record["resolves"] = resolves
    record["model"] = "m"  # as in every record, a field follows the head
    return json.dumps(record, separators=(",", ":")) + "\n"


@pytest.mark.parametrize("slow", [False, True], ids=["fast", "line-by-line"])
def test_what_a_file_spent_is_never_below_what_its_records_show(tmp_path: Path, slow: bool) -> None:
    # break14h H14: a line the readers set aside (`spent: -3`), or a `resolves` larger than the
    # record it replaces, made a resume begin at "$-2.92 spent", and spend its budget again.
    lines = [
        _line("a1", None, 0.02),  # a held worst case
        _line("a1", 0.01, 0.01, resolves=5.0),  # resolves more than the record it replaces held
        _line("b2", 0.03, -3.0),  # negative
        _line("c3", None, 0.04),
        _line("c3", 0.005, 0.005, resolves=0.04),  # an honest late cost
        _line("d4", 0.1, 0.1, resolves=1.0),  # resolves a row that had no record before
        # verify14i V6: a grading held at $0, learnt late: the first record's spent is its cost.
        _line("e5", 0.004, 0.004),
        _line("e5", 0.004, 0.008, resolves=0.004),
    ]
    if slow:
        lines.append("not a record\n")  # the window is read line by line
    path = tmp_path / "r.jsonl"
    path.write_text("".join(lines))
    # a1 counts 0.01 (its first record's 0.02 replaced), b2 0, c3 0.005, d4 0.1, e5 0.008.
    assert scan_states(path).spent_usd == pytest.approx(0.01 + 0.005 + 0.1 + 0.008)


def test_a_shards_file_is_resumed_as_that_shard_only(tmp_path: Path, job: Path) -> None:
    # break30 F1: resumed without --shard, a shard's file was run to the whole matrix (every row of
    # the other shards paid again), exit 0; m1: `--shard K/N --resume` picked another shard's newer file.
    out = tmp_path / "s1.jsonl"
    assert call_cli(job, "--simulate", "--shard", "1/2", "-o", out, "-q", "--budget", "0.00001")[0] == ExitCode.BUDGET
    before = out.read_bytes()
    code, _, err = call_cli(job, "--simulate", "-o", out, "--resume", "-q")
    assert code == ExitCode.USAGE and "holds shard 1/2 of the job: resume it with --shard 1/2" in err, err
    code, _, err = call_cli(job, "--simulate", "--shard", "2/2", "-o", out, "--resume", "-q")
    assert code == ExitCode.USAGE and "resume it with --shard 1/2 (with --shard 2/2" in err, err
    assert out.read_bytes() == before
    assert call_cli(job, "--simulate", "--shard", "1/2", "-o", out, "--resume", "-q")[0] == ExitCode.OK
    rows = read_rows(out)
    whole = tmp_path / "whole.jsonl"
    assert call_cli(job, "--simulate", "-o", whole, "-q")[0] == ExitCode.OK
    assert {r["id"] for r in rows} < {r["id"] for r in read_rows(whole)}  # its shard only
    code, _, err = call_cli(job, "--simulate", "--shard", "1/2", "-o", whole, "--resume", "-q")
    assert code == ExitCode.USAGE and "holds a run of the whole job, not shard 1/2" in err, err


def test_a_shard_killed_before_its_summary_is_resumed_as_that_shard_only(tmp_path: Path, job: Path) -> None:
    # verify30 N1: with no summary yet (killed -9), the shard was known from nothing, and a resume
    # without --shard ran the whole matrix into it. The journal it leaves names the shard.
    from batchrun import load_job

    out = tmp_path / "s1.jsonl"
    assert call_cli(job, "--simulate", "--shard", "1/2", "-o", out, "-q", "--budget", "0.00001")[0] == ExitCode.BUDGET
    out.with_name("s1.summary.json").unlink()
    header = {"job": "small", "job_fingerprint": load_job(job).fingerprint, "shard": "1/2"}
    out.with_name("s1.attempts.jsonl").write_text(json.dumps(header) + "\n")
    before = out.read_bytes()
    code, _, err = call_cli(job, "--simulate", "-o", out, "--resume", "-q")
    assert code == ExitCode.USAGE and "holds shard 1/2 of the job: resume it with --shard 1/2" in err, err
    assert out.read_bytes() == before
    assert call_cli(job, "--simulate", "--shard", "1/2", "-o", out, "--resume", "-q")[0] == ExitCode.OK
    empty = tmp_path / "s2.jsonl"  # killed before its first record: an empty file and the journal
    empty.write_bytes(b"")
    empty.with_name("s2.attempts.jsonl").write_text(json.dumps({**header, "shard": "2/2"}) + "\n")
    code, _, err = call_cli(job, "--simulate", "-o", empty, "--resume", "-q")
    assert code == ExitCode.USAGE and "holds shard 2/2 of the job" in err and empty.read_bytes() == b"", err


def test_a_shards_file_alone_says_its_shard_in_its_records(tmp_path: Path, job: Path) -> None:
    # verify31 N1: a budget-stopped shard's file copied alone (no summary, no journal) was resumed
    # without --shard to the whole matrix: 193 requests, the other shards' rows paid again.
    out = tmp_path / "s1.jsonl"
    assert call_cli(job, "--simulate", "--shard", "1/2", "-o", out, "-q", "--budget", "0.00002")[0] == ExitCode.BUDGET
    out.with_name("s1.summary.json").unlink()
    assert not out.with_name("s1.attempts.jsonl").exists()
    rows = read_rows(out)
    assert rows and {r["shard"] for r in rows} == {"1/2"}
    before = out.read_bytes()
    code, _, err = call_cli(job, "--simulate", "-o", out, "--resume", "-q")
    assert code == ExitCode.USAGE and "holds shard 1/2 of the job: resume it with --shard 1/2" in err, err
    assert out.read_bytes() == before
    # verify34 N1: records of an earlier batchrun (no `shard`) first, this one's after them.
    lines = before.splitlines(keepends=True)
    older = orjson.dumps({k: v for k, v in orjson.loads(lines[0]).items() if k != "shard"}) + b"\n"
    out.write_bytes(older + b"".join(lines[1:]))
    code, _, err = call_cli(job, "--simulate", "-o", out, "--resume", "-q")
    assert code == ExitCode.USAGE and "holds shard 1/2 of the job: resume it with --shard 1/2" in err, err
    assert call_cli(job, "--simulate", "--shard", "1/2", "-o", out, "--resume", "-q")[0] == ExitCode.OK
    # Merged, the rows are the job's: the merged file, its summary lost, resumes without --shard.
    other = tmp_path / "s2.jsonl"
    assert call_cli(job, "--simulate", "--shard", "2/2", "-o", other, "-q")[0] == ExitCode.OK
    merged = tmp_path / "m.jsonl"
    assert call_cli("merge", out, other, "-o", merged)[0] == ExitCode.OK
    assert all("shard" not in r for r in read_rows(merged))
    merged.with_name("m.summary.json").unlink()
    assert call_cli(job, "--simulate", "-o", merged, "--resume", "-q")[0] == ExitCode.OK
    # A whole job's records name no shard.
    assert all("shard" not in r for r in read_rows(merged))


def test_a_sharded_resume_without_an_output_picks_its_own_shards_file(
    tmp_path: Path, job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for k in (1, 2):  # shard 2's stopped run is the newer
        assert call_cli(job, "--simulate", "--shard", f"{k}/2", "-q", "--budget", "0.00001")[0] == ExitCode.BUDGET
    code, _, err = call_cli(job, "--simulate", "--shard", "1/2", "--resume")
    assert code == ExitCode.OK, err
    resumed = err.split("resuming ")[1].split(",")[0]
    assert json.loads((tmp_path / resumed).with_suffix(".summary.json").read_text())["shard"] == "1/2"


def test_a_resume_without_an_output_picks_a_run_killed_before_its_first_record(
    tmp_path: Path, job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break35 M2: killed -9 before its first record, a run left an empty file and its journal; a
    # resume without --output passed over it (an older incomplete run was resumed instead, or
    # "no incomplete run was found"), and the attempts in its journal were never counted.
    from batchrun import load_job

    monkeypatch.chdir(tmp_path)
    assert call_cli(job, "--simulate", "-q", "--budget", "0.00001")[0] == ExitCode.BUDGET  # an older one
    folder = tmp_path / "outputs" / "small"
    killed = folder / "zz-killed.jsonl"  # newer by name, as a later stamp is
    killed.write_bytes(b"")
    header = {"job": "small", "job_fingerprint": load_job(job).fingerprint, "shard": None}
    killed.with_name("zz-killed.attempts.jsonl").write_text(json.dumps(header) + "\n")
    code, _, err = call_cli(job, "--simulate", "--resume")
    assert code == ExitCode.OK and f"resuming {killed.relative_to(tmp_path)}" in err, err
    assert len(read_rows(killed)) == 20
    # out-160 F3: a torn first record, or NULs, in its place: passed over, the older run was resumed.
    for name, fragment in (("zz-torn", killed.read_bytes()[:80]), ("zz-zeros", b"\0" * 512)):
        torn = folder / f"{name}.jsonl"
        torn.write_bytes(fragment)
        torn.with_name(f"{name}.attempts.jsonl").write_text(json.dumps(header) + "\n")
        code, _, err = call_cli(job, "--simulate", "--resume")
        assert code == ExitCode.OK and f"resuming {torn.relative_to(tmp_path)}" in err, err
        assert len(read_rows(torn)) == 20
    # Another job's, or another shard's, journal is not this run's.
    other = folder / "zz-other.jsonl"
    other.write_bytes(b"")
    other.with_name("zz-other.attempts.jsonl").write_text(json.dumps({**header, "shard": "1/2"}) + "\n")
    code, _, err = call_cli(job, "--simulate", "--resume")
    assert "zz-other" not in err, err


def test_a_shard_killed_before_its_first_record_is_merged_and_gated_as_missing_rows(tmp_path: Path, job: Path) -> None:
    # break30 F2: killed -9 before its first record, a shard left an empty file and its attempt
    # journal. Its in-flight rows read as "job None": merge exited 2 ("different jobs or job
    # versions"), and so did the README's glob `shard-*.jsonl`, which names the journal too.
    from batchrun import load_job, matrix_requests
    from batchrun._matrix import Shard

    shards = tmp_path / "shards"
    shards.mkdir()
    for k in (1, 2):
        assert call_cli(job, "--simulate", "--shard", f"{k}/3", "-o", shards / f"shard-{k}.jsonl", "-q")[0] == 0
    loaded = load_job(job)
    in_flight = [r.id for r in matrix_requests(loaded, Shard(3, 3))][:2]
    (shards / "shard-3.jsonl").write_bytes(b"")
    (shards / "shard-3.attempts.jsonl").write_text(
        json.dumps({"job": "small", "job_fingerprint": loaded.fingerprint})
        + "\n"
        + "".join(json.dumps({"row": row, "at": 0, "usd": 0.001, "model": "m"}) + "\n" for row in in_flight)
    )
    named = sorted(shards.glob("shard-*.jsonl"))
    assert len(named) == 4
    code, _, err = call_cli("merge", tmp_path / "all.jsonl", *named, "--job", job)
    assert code == ExitCode.INCOMPLETE, err
    assert "shard-3.attempts.jsonl: the attempt journal of" in err and "different jobs" not in err
    # verify30 N6: a wider glob names the summaries and a lock left behind too.
    (shards / "shard-3.jsonl.lock").write_text("")
    everything = sorted(shards.glob("shard-*"))
    assert len(everything) == 7
    code, _, err = call_cli("merge", tmp_path / "all2.jsonl", *everything, "--job", job)
    assert code == ExitCode.INCOMPLETE and "shard-1.summary.json: the summary of" in err, err
    assert "shard-3.jsonl.lock: the lock file of" in err
    merged = read_rows(tmp_path / "all.jsonl")
    assert {r["id"]: r["reason"] for r in merged if r["id"] in in_flight} == dict.fromkeys(in_flight, "crashed")
    code, _, err = call_cli("report", shards / "shard-3.jsonl", "--job", job)
    assert code == ExitCode.INCOMPLETE and "not in the matrix" not in err, err


def test_a_merged_file_is_not_merged_again_with_one_of_its_own_shards(tmp_path: Path, job: Path) -> None:
    # break30 m2: each row of the shard was in two files, folded as paid twice: cost +35%, exit 0.
    shards = [tmp_path / f"sh{k}.jsonl" for k in (1, 2)]
    for k, path in enumerate(shards, start=1):
        assert call_cli(job, "--simulate", "--shard", f"{k}/2", "-o", path, "-q")[0] == 0
    assert call_cli("merge", tmp_path / "m.jsonl", *shards, "--job", job)[0] == ExitCode.OK
    code, _, err = call_cli("merge", tmp_path / "again.jsonl", tmp_path / "m.jsonl", shards[0], "--job", job)
    assert code == ExitCode.USAGE and f"{shards[0]} is merged into {tmp_path / 'm.jsonl'} already" in err, err
    assert not (tmp_path / "again.jsonl").exists()
    # verify30 N4: a copy (a CI artifact) is another file: each of its records is the same attempt
    # as the one it copies, counted once, where it was folded in as paid twice (+35%, or x2).
    cost = json.loads((tmp_path / "m.summary.json").read_text())["total"]["cost_usd"]
    copies = tmp_path / "copies"
    copies.mkdir()
    shutil.copy(shards[0], copies / "sh1.jsonl")
    shutil.copy(tmp_path / "m.jsonl", copies / "m.jsonl")
    for k, others in enumerate([[copies / "sh1.jsonl"], [copies / "m.jsonl"]]):
        out = tmp_path / f"copied{k}.jsonl"
        code, _, err = call_cli("merge", out, tmp_path / "m.jsonl", *others, "--job", job)
        assert code == ExitCode.OK and "copies of another file's (the same attempt): counted once" in err, err
        assert json.loads(out.with_name(f"copied{k}.summary.json").read_text())["total"]["cost_usd"] == pytest.approx(
            cost
        )


def test_the_last_record_is_found_past_a_torn_tail_and_beyond_the_first_window(tmp_path: Path, results: Path) -> None:
    from batchrun._results import last_record

    first, second = read_rows(results)[:2]
    long = {**second, "content": "x" * 200_000}  # past the 64 KiB window
    path = tmp_path / "r.jsonl"
    path.write_bytes(orjson.dumps(first) + b"\n" + orjson.dumps(long) + b'\n{"id":"c3","fing')
    assert last_record(path) == long
    path.write_bytes(orjson.dumps(first) + b"\n")
    assert last_record(path) == first
    path.write_bytes(b'{"id":"torn')
    assert last_record(path) is None


def test_a_default_name_is_never_one_that_exists(tmp_path: Path) -> None:
    # break35 F6: with every name of the next second taken (files made ahead, a clock set back),
    # an existing empty file was written into, or another was refused as "give another --output".
    from batchrun._exceptions import ConfigError
    from batchrun._output_paths import default_output, fresh_output

    pattern = str(tmp_path / "{name}" / "{timestamp}.jsonl")
    now = 1_800_000_000.0
    first = fresh_output("j", pattern, now)
    first.parent.mkdir()
    first.write_bytes(b"")
    assert fresh_output("j", pattern, now).name == "20270115T080000.001Z.jsonl"  # the next free one
    for step in range(1000):
        default_output("j", pattern, now + (step + 0.5) / 1000).write_bytes(b"")
    with pytest.raises(ConfigError, match="every default name for the next second is taken; give --output"):
        fresh_output("j", pattern, now)


def test_the_resume_scan_sets_aside_a_line_every_reader_sets_aside(tmp_path: Path, results: Path) -> None:
    # break35 F7: a record with `"cost": "cheap"`, among lines read one by one, was its row's
    # last record for the resume (the row never sent again) and set aside by `report`.
    from batchrun._reader import scan_states

    path = tmp_path / "r.jsonl"
    bad = {**read_rows(results)[0], "id": "abcdef0123456789abcd", "cost": "cheap"}
    path.write_bytes(results.read_bytes() + b"garbage\n" + json.dumps(bad).encode() + b"\n")
    warnings: list[str] = []
    scan = scan_states(path, warnings.append)
    assert scan.get("abcdef0123456789abcd") is None and len(scan) == len(read_rows(results))
    assert warnings[-1].endswith(":22: set aside: not a batchrun record ('cost' is not a number from 0 to 1e+100)")
    code, _, err = call_cli("report", path, "--json")
    assert code == ExitCode.INCOMPLETE and "r.jsonl:22: set aside" in err  # and no summary to count rows by


def test_a_renamed_pair_is_said_as_one_with_the_way_on(tmp_path: Path, job: Path) -> None:
    # break35 F8: a results file and its summary renamed together read "not the summary of
    # night.jsonl (unreadable, or another file's) ... move it away", which loses what it counted.
    out = tmp_path / "b.jsonl"
    assert call_cli(job, "--simulate", "-o", out, "-q", "--budget", "0.00001")[0] == ExitCode.BUDGET
    night = tmp_path / "night.jsonl"
    out.rename(night)
    (tmp_path / "b.summary.json").rename(tmp_path / "night.summary.json")
    code, _, err = call_cli(job, "--simulate", "-o", night, "--resume", "-q")
    assert code == ExitCode.USAGE, err
    assert 'the summary of b.jsonl, not of night.jsonl: if the two were renamed together, set its "output"' in err
    summary = json.loads((tmp_path / "night.summary.json").read_text())
    (tmp_path / "night.summary.json").write_text(json.dumps({**summary, "output": "night.jsonl"}))
    assert call_cli(job, "--simulate", "-o", night, "--resume", "-q")[0] == ExitCode.OK


def test_a_row_whose_last_line_is_broken_past_its_head_is_sent_again(tmp_path: Path, job: Path) -> None:
    # verify35 M1: a copy of an answered record with a field of the wrong shape (`usage: []`) for
    # each skipped row: the resume took it as done (its head is a record's) and sent nothing, the
    # summary set it aside and said the rows skipped: exit 12 at every resume.
    out = tmp_path / "r.jsonl"
    assert call_cli(job, "--simulate", "-o", out, "-q", "--budget", "0.0001")[0] == ExitCode.BUDGET
    rows = read_rows(out)
    answered = next(r for r in rows if r["status"] == "ok")
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert skipped
    with out.open("ab") as handle:
        for row in skipped:
            handle.write(orjson.dumps({**answered, "id": row["id"], "fingerprint": row["fingerprint"], "usage": []}))
            handle.write(b"\n")
    # Appended by hand, with no run since: an edit, said (out-163 F1); the rows are still sent again.
    code, _, err = call_cli(job, "--simulate", "-o", out, "--resume", "-q")
    assert code == ExitCode.INCOMPLETE and "records edited after a run's summary was written" in err, err
    assert {r["id"] for r in read_rows(out) if r["status"] == "ok"} >= {r["id"] for r in skipped}
    assert call_cli("report", out, "--job", job)[0] == ExitCode.INCOMPLETE


def test_an_edit_that_keeps_an_older_time_is_still_read_in_full_on_resume(tmp_path: Path, job: Path) -> None:
    # verify36 N2: an edited file copied with its older time (`cp -p`, `rsync -t`, a restore)
    # passed the time's test: its broken row was never sent again, exit 12 at every resume.
    out = tmp_path / "r.jsonl"
    assert call_cli(job, "--simulate", "-o", out, "-q")[0] == ExitCode.OK
    lines = out.read_bytes().splitlines(keepends=True)
    broken = orjson.loads(lines[3])
    lines[3] = orjson.dumps({**broken, "usage": []}) + b"\n"
    out.write_bytes(b"".join(lines))
    summary = out.with_name("r.summary.json")
    older = summary.stat().st_mtime_ns - 10**9
    os.utime(out, ns=(older, older))
    code, _, err = call_cli(job, "--simulate", "-o", out, "--resume", "-q")
    assert code == ExitCode.INCOMPLETE, err
    assert read_rows(out)[-1]["id"] == broken["id"]  # sent again
    # Shorter than its summary saw: the resume counts what the summary said was spent and sends
    # again what is gone or broken, and every gate after it says the file was cut (out-173 F1).
    code, _, err = call_cli("report", out, "--job", job)
    assert code == ExitCode.INCOMPLETE and "records removed or cut short after a run's summary" in err, err


def test_results_summaries_and_merged_files_are_never_writable_by_others(tmp_path: Path) -> None:
    # break36: under umask 000 the summary (and a merged file) was 0666 while the results were 0644.
    job = write_job(tmp_path, SMALL_JOB)
    out, merged = tmp_path / "out.jsonl", tmp_path / "merged.jsonl"
    old = os.umask(0)
    try:
        assert call_cli(job, "--simulate", "-o", out, "-q")[0] == ExitCode.OK
        assert call_cli("merge", merged, out)[0] == ExitCode.OK
        # break38 F6: the pages and the JUnit file were 0666.
        page, junit = tmp_path / "page.html", tmp_path / "junit.xml"
        assert call_cli("report", out, "--html", page, "--junit", junit)[0] == ExitCode.OK
    finally:
        os.umask(old)
    for path in (out, tmp_path / "out.summary.json", merged, tmp_path / "merged.summary.json", page, junit):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_a_new_run_leaves_a_summary_that_is_not_batchruns_untouched(tmp_path: Path, small_job: Path) -> None:
    # break59 F10: a foreign results file, lock or journal was refused, a foreign summary replaced.
    (tmp_path / "out.summary.json").write_text('{"job": "small", "total": {}, "my": "own data"}')  # verify61 F6
    code, _, err = call_cli(small_job, "--simulate", "-o", tmp_path / "out.jsonl", "-q")
    assert code == ExitCode.USAGE and "out.summary.json: not a batchrun summary" in err and "left untouched" in err
    assert (tmp_path / "out.summary.json").read_text() == '{"job": "small", "total": {}, "my": "own data"}'
    assert not (tmp_path / "out.jsonl").exists()
    (tmp_path / "out.summary.json").unlink()
    assert call_cli(small_job, "--simulate", "-o", tmp_path / "out.jsonl", "-q")[0] == ExitCode.OK
    (tmp_path / "out.jsonl").unlink()  # a summary batchrun wrote, its results gone: a new run replaces it
    assert call_cli(small_job, "--simulate", "-o", tmp_path / "out.jsonl", "-q")[0] == ExitCode.OK
    # verify61 F5: one nested past Python's reader was a RecursionError traceback, exit 1.
    (tmp_path / "deep.summary.json").write_text("[" * 200_000)
    code, _, err = call_cli(small_job, "--simulate", "-o", tmp_path / "deep.jsonl", "-q")
    assert code == ExitCode.USAGE and "deep.summary.json: not a batchrun summary" in err
    # out-103 F7: merge, plan and --resume read summaries of their own: each one line, never a traceback.
    (tmp_path / "deep.summary.json").unlink()
    assert call_cli(small_job, "--simulate", "-o", tmp_path / "deep.jsonl", "-q", "--shard", "1/2")[0] == ExitCode.OK
    (tmp_path / "deep.summary.json").write_text("[" * 200_000)
    (tmp_path / "deep.batches.json").write_text("[" * 200_000)
    commands: list[list[str | Path]] = [
        ["merge", tmp_path / "m.jsonl", tmp_path / "deep.jsonl"],
        ["batches", "list", tmp_path / "deep.jsonl"],
    ]
    for args in commands:
        code, _, err = call_cli(*args)
        assert code in (ExitCode.USAGE, ExitCode.INCOMPLETE) and "Traceback" not in err, err
    (tmp_path / "deep.batches.json").unlink()
    # verify60 F10: one re-saved with its keys sorted (jq -S) is still batchrun's.
    summary = tmp_path / "out.summary.json"
    summary.write_text(json.dumps(json.loads(summary.read_text()), sort_keys=True))
    (tmp_path / "out.jsonl").unlink()
    assert call_cli(small_job, "--simulate", "-o", tmp_path / "out.jsonl", "-q")[0] == ExitCode.OK


@pytest.mark.parametrize("left", ["nuls", "torn", "nuls-then-torn"])
def test_a_run_killed_before_its_first_whole_record_is_resumed_from_its_journal(
    tmp_path: Path, job: Path, results: Path, left: str
) -> None:
    # out-157 F4: a file holding only a torn first record, or only the NULs an OS crash leaves,
    # beside the journal of this job's run: refused, "give another --output", and the journal's
    # attempts (maybe billed) were counted by no run.
    first = results.read_bytes().split(b"\n")[0]
    killed_run_journal(results, "simulator", own=False)
    results.with_name("done.summary.json").unlink()  # killed before its first summary
    left_by_it = {"nuls": b"\0" * 4096, "torn": first[:80], "nuls-then-torn": b"\0" * 4016 + first[:80]}  # out-160
    results.write_bytes(left_by_it[left])
    code, out, err = call_cli(job, "--simulate", "-o", results, "--resume")
    assert code == ExitCode.OK, err
    said = {"nuls": "cut a tail of 4096 NUL byte(s)", "torn": "cut a torn last record (80 bytes)"}.get(
        left, "cut a torn last record (4096 bytes)"
    )
    assert said in out + err
    rows = read_rows(results)
    assert len(rows) == len({r["id"] for r in rows}) == 20 and {r["status"] for r in rows} == {"ok"}
    # Without a journal of this job's beside it, such a file is no run's to cut: left as it is.
    results.write_bytes(first[:80])
    code, _, err = call_cli(job, "--simulate", "-o", results, "--resume")
    assert code == ExitCode.USAGE and "give another --output" in err and results.read_bytes() == first[:80]
    # Nor one whose fragment names another job, whatever journal is beside it (out-160).
    results.write_bytes(first + b"\n")  # what the journal's header is made from
    killed_run_journal(results, "simulator", own=False)
    other = first.replace(b'"job":"small"', b'"job":"other-job"')[: first.index(b'"job_fingerprint"') + 8]
    results.write_bytes(other)
    code, _, err = call_cli(job, "--simulate", "-o", results, "--resume")
    assert code == ExitCode.USAGE and "give another --output" in err and results.read_bytes() == other
