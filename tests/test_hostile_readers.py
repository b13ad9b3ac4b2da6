"""The reading side against files that lie (break21): results lines whose fields have the wrong
type, summaries that are not what a run writes, outputs that are links, pipes or full disks,
and answers that carry Markdown or HTML into a step summary."""

from __future__ import annotations

import json
import os
import resource
import select
import shutil
import stat
import subprocess
import threading
import unicodedata
from pathlib import Path
from typing import Any

import cmarkgfm  # type: ignore[import-untyped]  # GitHub's Markdown renderer: a reference here
import cmarkgfm.cmark  # type: ignore[import-untyped]
import orjson
import pytest

from batchrun import ExitCode, load_job, matrix_requests
from batchrun._output_paths import summary_path
from batchrun._summary_floor import sealed
from batchrun.simulator import Simulator

from .conftest import FAKE_KEY, SMALL_JOB, call_cli, child_env, read_rows, rows_written, write_job
from .forked import run_forked


def _with_small_files(limit: int, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """The CLI in a process whose files may not grow past `limit` bytes (ulimit -f): a
    process boundary is what is tested. It writes no bytecode: a .pyc cut at the limit is
    installed whole-looking (one short write, then the rename), and every later import of
    that module fails."""

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**child_env(), "PYTHONDONTWRITEBYTECODE": "1"}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    return run_forked(args, 120, env=env, text=True, preexec_fn=small_files, **pipes)


# (field, value): each was a traceback in some reader (break21 R1-R6).
WRONG_FIELDS = [
    ("status", []),
    ("checks", True),
    ("checks", [None]),
    ("checks", [{"name": 5, "pass": "no"}]),
    ("content", 5),
    ("job_fingerprint", {"a": 1}),
    ("error", "x"),
    ("error", {"message": ["m"], "kind": 5}),
    ("reason", -1),
    ("started_at", 7),
    ("passed", "yes"),
    # break23 F3: finite but absurd, summed to `inf` (a cost "inf" in text, unknown in JSON),
    # and a score (a weighted share) of 7, shown as a mean score of 131.5%
    ("cost", 1.7e308),
    ("latency_ms", 1e300),
    ("score", 7),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("readers")
    job = write_job(folder, SMALL_JOB)
    out = folder / "r.jsonl"
    assert call_cli(job, "--simulate", "-o", out, "-q")[0] == 0
    return out


def _with(results: Path, folder: Path, line: int, field: str, value: Any) -> Path:
    rows = read_rows(results)
    rows[line - 1][field] = value
    path = folder / "t.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


@pytest.mark.parametrize(("field", "value"), WRONG_FIELDS, ids=[f"{f}={v!r}" for f, v in WRONG_FIELDS])
def test_a_line_with_a_field_of_the_wrong_type_is_set_aside_by_every_reader(
    results: Path, tmp_path: Path, field: str, value: Any
) -> None:
    bad = _with(results, tmp_path, 5, field, value)
    job = results.parent / "job.yaml"
    commands: list[list[str | Path]] = [
        ["report", bad],
        ["report", bad, "--markdown"],
        ["report", bad, "--junit", tmp_path / "j.xml"],
        ["report", bad, "--job", job, "--allow-partial"],
        ["diff", results, bad],
        ["history", results, bad],
        ["merge", tmp_path / "m.jsonl", bad],
    ]
    for argv in commands:
        code, _, err = call_cli(*argv)
        # Read without the line (one of 20 rows missing: a merge or re-grading says so), never a crash.
        assert code in (ExitCode.OK, ExitCode.ERRORS, ExitCode.QUALITY, ExitCode.INCOMPLETE), (argv, code, err)
        assert f"{bad}:5: set aside" in err and field in err, (argv, err)
    merged = read_rows(tmp_path / "m.jsonl")
    assert len(merged) == 19 and (tmp_path / "m.summary.json").exists()


def _summary_with(results: Path, folder: Path, **fields: Any) -> Path:
    copy = folder / "a.jsonl"
    copy.write_bytes(results.read_bytes())
    summary = json.loads(results.with_name("r.summary.json").read_text())
    summary.update({"output": str(copy), **fields})  # the copy's own (another file's is left out: break52 F5)
    (folder / "a.summary.json").write_text(json.dumps(summary))  # json writes NaN and Infinity
    return copy


@pytest.mark.parametrize(
    "fields",
    [
        *({"budget_usd": "x"}, {"budget_usd": float("nan")}, {"stop": []}, {"merged_from": 5}),
        *({"output": 3}, {"output": ""}, {"job": 3}, {"job": None}),  # out-137 5: passed as no file, no job named
        {"output": "."},  # names no file either: "the summary of , not of a.jsonl" (out-148 F5)
    ],
    ids=str,
)
def test_summary_fields_of_the_wrong_type_read_as_absent(results: Path, tmp_path: Path, fields: Any) -> None:
    pytest.importorskip("vl_convert", reason="report --html needs batchrun[report]")
    copy = _summary_with(results, tmp_path, **fields)
    code, _, err = call_cli("report", copy, "--html", tmp_path / "a.html")
    if "output" in fields:  # naming no file, it cannot vouch for this one's rows (out-135 F2)
        assert code == ExitCode.INCOMPLETE and "no `output` naming the file it was written for" in err, err
        assert "the summary of" not in err  # "the summary of , not of a.jsonl" (out-137 5)
    elif "job" in fields:
        assert code == ExitCode.INCOMPLETE and "not a summary (its `job` is not a name)" in err, err
        copy.with_name("a.summary.json").write_text(
            json.dumps(
                {k: v for k, v in json.loads(copy.with_name("a.summary.json").read_text()).items() if k != "job"}
            )
        )
        code, _, err = call_cli("report", copy)
        assert code == ExitCode.INCOMPLETE and "not a summary (no `job` naming the job it ran)" in err, err
    else:
        assert code == call_cli("report", results)[0] and err == "", err  # the verdict of the rows, as before
    page = (tmp_path / "a.html").read_text()
    # One naming no file ("", ".") is read as the file's, as a resume reads it, though it vouches for none (out-148 F5).
    left_out = "budget_usd" in fields
    assert "$nan" not in page and ("(no budget recorded)" in page) == left_out
    code, out, err = call_cli("history", tmp_path)
    assert code == 0 and "1 run(s)" in out, err


@pytest.mark.parametrize("fields", [{"matrix_rows": float("inf")}, {"shard": "7/2"}, {"shard": "0/0"}], ids=str)
def test_a_shard_summary_that_lies_makes_a_merge_incomplete_not_a_crash(
    results: Path, tmp_path: Path, fields: Any
) -> None:
    # Infinity rows were an OverflowError after the merged file was in place (the next merge
    # then refused it as "already exists").
    copy = _summary_with(results, tmp_path, **fields)
    code, _, err = call_cli("merge", tmp_path / "m.jsonl", copy)
    assert code == ExitCode.INCOMPLETE, err
    assert (
        "no usable summary of this job saying which shard it is" in err and len(read_rows(tmp_path / "m.jsonl")) == 20
    )


def test_a_shard_count_far_above_the_shards_lists_the_first_missing_ones(results: Path, tmp_path: Path) -> None:
    # "1/1000000000" made merge build a set of 10^9 numbers (a hang, then a MemoryError).
    copy = _summary_with(results, tmp_path, shard="1/1000000000", matrix_rows=20)
    code, _, err = call_cli("merge", tmp_path / "m.jsonl", copy)
    assert code == ExitCode.INCOMPLETE
    assert "shard(s) 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 and 999999989 more of 1000000000 are missing" in err


def test_outputs_named_by_a_symlink_are_written_where_it_points(results: Path, tmp_path: Path) -> None:
    target = tmp_path / "real.xml"
    target.write_text('<?xml version="1.0"?>\n<testsuites name="an earlier night"/>\n')
    link = tmp_path / "link.xml"
    link.symlink_to(target)
    assert call_cli("report", results, "--junit", link)[0] != ExitCode.IO
    assert link.is_symlink() and b"an earlier night" not in target.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.xml", "real.xml"]  # no temporary left
    # out-125 F5: what is not a JUnit file, by its name or by a link, is not written over; nor a
    # project's configuration that lists its <testsuites> (out-128 F3).
    config = tmp_path / "phpunit.xml"
    config.write_text('<?xml version="1.0"?>\n<phpunit><testsuites><testsuite name="unit"/></testsuites></phpunit>\n')
    target.write_text("country,capital\nFrance,Paris\n")
    for named in (target, link, config):
        code, _, err = call_cli("report", results, "--junit", named)
        assert code == ExitCode.USAGE and f"{named}: neither empty nor a JUnit results file" in err, err
        assert target.read_text() == "country,capital\nFrance,Paris\n" and "<phpunit>" in config.read_text()


def test_an_output_that_is_a_pipe_is_streamed_into_it(results: Path, tmp_path: Path) -> None:
    # `--junit /dev/stdout` in CI: a pipe cannot be replaced; it was replaced by a regular file.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # The reader is there before the report opens the FIFO (a reader thread's blocking open
    # could come after it: "a FIFO that nobody reads"), and drains it while it writes.
    reading = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    written = threading.Event()
    read: list[bytes] = []

    def drain() -> None:
        while True:
            select.select([reading], [], [], 0.05)
            try:
                chunk = os.read(reading, 1 << 16)
            except BlockingIOError:
                continue
            if chunk:
                read.append(chunk)
            elif written.is_set():
                return  # no writer, and the report is done: all of it was read

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        code, _, err = call_cli("report", results, "--junit", fifo)
    finally:
        written.set()
        reader.join(30)
        os.close(reading)
    assert code != ExitCode.IO, err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and b"".join(read).startswith(b"<?xml")
    assert b"".join(read).rstrip().endswith(b"</testsuites>")


def test_an_output_that_is_a_folder_or_under_a_file_is_named(results: Path, tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    # A bad option, exit 2 before anything is read (break27 m9: exit 11, "an output failed").
    code, _, err = call_cli("report", results, "--junit", tmp_path / "adir")
    message = f"batchrun: {tmp_path / 'adir'}: is a folder: name the file to write a JUnit file to\n"
    assert code == ExitCode.USAGE and err == message
    code, _, err = call_cli("report", results, "--junit", results / "x.xml")
    message = f"batchrun: {results / 'x.xml'}: cannot write a JUnit file there: {results} is not a folder\n"
    assert code == ExitCode.USAGE and err == message


def test_a_dataset_copy_cut_by_a_file_size_limit_is_one_line_naming_both(tmp_path: Path) -> None:
    # break44 F9: the dataset's private copy hit `ulimit -f`, and the close that followed raised
    # the same error again: "batchrun: File too large", naming neither file nor folder.
    rows = "".join(f'{{"country": "C{i:04d}", "expect": "x{i}"}}\n' for i in range(3000))
    (tmp_path / "mid.jsonl").write_text(rows)
    text = (
        'name: data\nmodels: [openai/gpt-4o-mini]\nprompts:\n  - id: p\n    text: "{{country}}?"\ndataset: mid.jsonl\n'
    )
    job = write_job(tmp_path, text)
    # The machine's trouble, not the job's: exit 11, as the README says of a file-size limit (out-131).
    for argv in (("validate", job), (job, "--simulate", "-o", tmp_path / "r.jsonl")):
        result = _with_small_files(50 * 1024, *argv)
        assert result.returncode == ExitCode.IO and result.stderr.count("\n") == 1, result.stderr
        assert f"{tmp_path / 'mid.jsonl'}: cannot read it through a private copy in " in result.stderr
        assert result.stderr.endswith(": File too large\n")
    assert not (tmp_path / "r.jsonl").exists()


def test_a_lock_that_cannot_be_written_is_named_and_not_left_behind(tmp_path: Path) -> None:
    # break46 F6: a full disk at the start said a bare "No space left on device", and the lock
    # of a run that sent nothing stayed beside the output.
    job = write_job(tmp_path, SMALL_JOB)
    result = _with_small_files(0, job, "--simulate", "-q", "-o", tmp_path / "r.jsonl")
    # The machine's limit, not the job's: exit 11 as a full disk there (out-108 F4: it was exit 2).
    assert result.returncode == ExitCode.IO and result.stderr.count("\n") == 1, result.stderr
    assert f"cannot write the lock beside {tmp_path / 'r.jsonl'}" in result.stderr
    assert not (tmp_path / "r.jsonl.lock").exists() and not (tmp_path / "r.jsonl").exists()


def test_a_report_file_cut_by_a_full_disk_is_not_left_behind_and_is_named(results: Path, tmp_path: Path) -> None:
    for option in ("--junit", "--html"):
        out = tmp_path / f"small{option[2:]}"
        result = _with_small_files(512, "report", results, option, out)
        if option == "--html" and "pip install" in result.stderr:
            continue  # without batchrun[report]: refused before writing
        assert result.returncode == ExitCode.IO, result.stderr
        assert result.stderr == f"batchrun: {out}: cannot write it: File too large\n"
        assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_a_readers_stdout_cut_part_way_by_a_full_disk_is_exit_11(
    results: Path, tmp_path: Path, unbuffered: str
) -> None:
    # break42 F4: under PYTHONUNBUFFERED (set by many CI images) stdout writes the file itself,
    # and takes a short write (the disk full part way) as done, dropping the rest: `report
    # --json > r.json` left 8,192 of 10,315 bytes, exit 0, silent.
    whole = call_cli("report", results, "--json")[1].encode()
    limit = len(whole) // 2

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    target = tmp_path / "report.json"
    with open(target, "wb") as stdout:
        result = run_forked(
            ["report", results, "--json"],
            120,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            env={**child_env(), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": unbuffered},
            preexec_fn=small_files,
        )
    assert result.returncode == ExitCode.IO and target.read_bytes() == whole[:limit]
    assert result.stderr == "batchrun: stdout: the output could not be written: File too large\n"


def test_answers_carry_no_html_or_links_into_markdown(results: Path, tmp_path: Path) -> None:
    rows = read_rows(results)
    failing = next(r for r in rows if r.get("checks"))
    payload = "<img src=x onerror=alert(1)> | broken\n# heading [x](javascript:alert(1))"
    payload += " https://evil.example WWW.evil.example _www.evil.example me@evil.example mailto:x@evil.example"
    failing["passed"], failing["content"], failing["model"] = False, payload, "evil<svg onload=alert(2)>`model"
    failing["checks"][0].update({"pass": False, "reason": f"expected 'Paris', got {payload!r}"})
    path = tmp_path / "h.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    code, out, _ = call_cli("report", path, "--markdown")
    assert code != ExitCode.USAGE
    assert "<img" not in out and "](javascript" not in out
    assert "&lt;img src=x onerror=alert(1)&gt; \\| broken\\\\n# heading [x]\\(javascript" in out
    # A bare address is no link either (break62 F8, verify63 F2: GitHub links `https://...`, `www.`
    # and e-mail addresses by itself), as GitHub's own renderer, cmark-gfm, reads the Markdown.
    assert "https://evil" not in out and "https\u200b://evil.example WWW\u200b.evil.example" in out
    rendered = cmarkgfm.github_flavored_markdown_to_html(out, options=cmarkgfm.cmark.Options.CMARK_OPT_UNSAFE)
    assert "<a " not in rendered and "<img" not in rendered and "evil.example" in rendered
    plain = cmarkgfm.github_flavored_markdown_to_html(payload.replace("\n", " "))
    assert plain.count("<a ") >= 4  # as written, every one of them would have been a link
    # In the table, escaped; in a code span (shown as text), with its backtick made harmless.
    assert "| evil&lt;svg onload=alert(2)&gt;`model |" in out and "`evil<svg onload=alert(2)>'model`" in out


def test_rows_of_another_job_in_a_file_are_set_aside(results: Path, tmp_path: Path) -> None:
    # break21 R17: a file holding two jobs' rows was read as one run, the second job's models
    # and prompts counted as the first's.
    other = [{**r, "job": "other", "model": "x/other-model"} for r in read_rows(results)[:3]]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(results.read_bytes() + b"".join(orjson.dumps(r) + b"\n" for r in other))
    code, out, err = call_cli("report", mixed, "--json")
    assert code == ExitCode.INCOMPLETE and f"{mixed}: lines set aside, and no summary of its run to count" in err
    assert json.loads(out)["total"]["rows"] == 20 and "x/other-model" not in out
    assert err.count("set aside: a row of job 'other' in a file of job 'small'") == 3 and f"{mixed}:21:" in err


def test_a_summary_of_another_job_beside_a_file_is_not_read_as_its_own(results: Path, tmp_path: Path) -> None:
    # break21 R16: a stop, budget and key gap that were another job's were shown as this file's.
    copy = _summary_with(results, tmp_path, job="other", stop="budget", key_gap_usd=0.25)
    code, out, err = call_cli("report", copy)
    assert "stopped" not in out and "0.250000" not in out
    # Written for this very file, by a run of another job: the file cannot be checked against
    # its run, and the gate does not pass it (out-125 F1).
    assert code == ExitCode.INCOMPLETE, err
    assert "its summary is of a run of job 'other', its first record of job 'small'" in err
    _summary_with(results, tmp_path, stop="budget", key_gap_usd=0.25)  # its own job's: read
    code, out, _ = call_cli("report", copy)
    assert "0.250000" in out


def test_an_empty_file_is_named_and_a_torn_last_line_is_said(results: Path, tmp_path: Path) -> None:
    # break21 R18, R19: diff took an empty file as every model gone (exit 4), history dropped it
    # without a word, and every reader dropped a torn last line silently.
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    code, _, err = call_cli("diff", results, empty, "--fail-on-regression")
    assert code == ExitCode.USAGE and err == f"batchrun: {empty}: holds no records\n"
    code, out, err = call_cli("history", results, empty)
    assert code == 0 and "1 run(s)" in out and f"{empty}: holds no records: not a run" in err
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(results.read_bytes()[:-300])
    code, _, err = call_cli("report", torn)
    assert f"{torn}:20: not read: the last line is incomplete" in err


def test_a_byte_order_mark_is_named(results: Path, tmp_path: Path) -> None:
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + results.read_bytes())
    code, _, err = call_cli("report", bom)
    assert code == ExitCode.USAGE
    assert err == f"batchrun: {bom}:1: not a batchrun results file (it starts with a byte-order mark)\n"


def test_a_step_summary_that_is_a_fifo_or_a_results_file_is_a_warning(
    results: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break21 R30: a FIFO nobody reads hung report and merge, and a run after its work past
    # SIGTERM; R31: the Markdown was appended to a results file, or made a summary-named file.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(fifo))
    code, _, err = call_cli("report", results)
    assert code == call_cli("report", results)[0]
    assert f"GITHUB_STEP_SUMMARY {fifo}: cannot be written: a FIFO that nobody reads" in err
    copy = tmp_path / "res.jsonl"
    copy.write_bytes(results.read_bytes())
    for target in (copy, tmp_path / "res.summary.json"):
        monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(target))
        code, _, err = call_cli("history", results, "--markdown")
        assert code == 0 and f"GITHUB_STEP_SUMMARY {target}:" in err
    assert copy.read_bytes() == results.read_bytes() and not (tmp_path / "res.summary.json").exists()


def test_terminal_codes_in_ids_are_shown_escaped(results: Path, tmp_path: Path) -> None:
    # break21 R32: ESC sequences in a model or prompt id (or a server's provider field) reached
    # the terminal raw: they set its title and cleared it.
    rows = read_rows(results)
    for row in rows:
        row["model"] = "evil\x1b]0;PWNED\x07\x1b[2J/model"
        row["provider"] = "Liar\x1b[31m"
    path = tmp_path / "esc.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    commands: list[list[str | Path]] = [["report", path], ["diff", results, path], ["history", results, path]]
    for argv in commands:
        _, out, err = call_cli(*argv)
        assert "\x1b" not in out + err and "\x07" not in out + err, argv
    assert "evil\\x1b]0;PWNED\\x07\\x1b[2J/model" in call_cli("report", path)[1]


def test_a_merge_cut_by_a_full_disk_names_its_output(results: Path, tmp_path: Path) -> None:
    # break21 R25: the message named the temporary file beside the output.
    out = tmp_path / "m.jsonl"
    result = _with_small_files(4096, "merge", out, results)
    assert result.returncode == ExitCode.IO, result.stderr
    assert result.stderr.startswith(f"batchrun: {out}: ") and "File too large" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_json_output_stays_json_with_control_characters_in_answers(results: Path, tmp_path: Path) -> None:
    # DEL and C1 characters are not escaped by JSON; the terminal's escaping must keep it JSON.
    rows = read_rows(results)
    rows[0]["model"] = "m\x7f\x85\x9b[2J"
    path = tmp_path / "c1.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    code, out, _ = call_cli("report", path, "--json")
    assert "m\x7f\x85\x9b[2J" in json.loads(out)["models"] and "\x9b" not in out


def _mixed(results: Path, folder: Path) -> Path:
    other = [{**r, "job": "other", "id": "o" + r["id"][1:]} for r in read_rows(results)[:3]]
    mixed = folder / "mixed.jsonl"
    mixed.write_bytes(results.read_bytes() + b"".join(orjson.dumps(r) + b"\n" for r in other))
    return mixed


def test_the_gates_still_refuse_another_jobs_rows(results: Path, tmp_path: Path) -> None:
    # verify21 V8, V9: with rows of another job set aside for reading, report --job passed
    # (exit 0) and merge --job merged a file holding another job's rows.
    mixed, job = _mixed(results, tmp_path), results.parent / "job.yaml"
    code, _, err = call_cli("report", mixed, "--job", job)
    assert code == ExitCode.USAGE and "row(s) are not in the matrix of job 'small'" in err, err
    code, _, err = call_cli("merge", tmp_path / "m.jsonl", mixed, "--job", job)
    assert code == ExitCode.USAGE and "the files come from different jobs: small, other" in err
    assert not (tmp_path / "m.jsonl").exists()


def test_a_resume_never_appends_to_a_file_holding_another_jobs_rows(results: Path, tmp_path: Path) -> None:
    # The resume checked the first record's job only, then appended this job's rows after
    # another job's: a file that report --job and merge refuse from then on.
    mixed, job = _mixed(results, tmp_path), results.parent / "job.yaml"
    before = mixed.read_bytes()
    code, _, err = call_cli(job, "--simulate", "-o", mixed, "--resume", "-q")
    assert code == ExitCode.USAGE, err
    assert err == (
        f"batchrun: {mixed}:21: a record of job 'other', after rows of 'small': a resume would mix two jobs "
        "in one file; it was left untouched; give another --output\n"
    )
    assert mixed.read_bytes() == before
    # However the foreign row is spaced (verify22 N5: as Python's json.dumps writes it).
    spaced = tmp_path / "spaced.jsonl"
    spaced.write_bytes(
        results.read_bytes() + b" " + json.dumps({**read_rows(results)[0], "job": "other"}).encode() + b"\n"
    )
    code, _, err = call_cli(job, "--simulate", "-o", spaced, "--resume", "-q")
    assert code == ExitCode.USAGE and f"{spaced}:21: a record of job 'other'" in err
    # Nor can a row holding this job's field in its values make up for a foreign row (N5).
    rows = read_rows(results)
    nested = tmp_path / "nested.jsonl"
    lines = [orjson.dumps({**rows[0], "vars": {"a": 1, "job": "small", "b": 2}})]
    lines += [orjson.dumps(r) for r in rows[1:]] + [
        orjson.dumps({**rows[1], "job": "other"}).replace(b'"job":', b'"job" :')
    ]
    nested.write_bytes(b"\n".join(lines) + b"\n")
    code, _, err = call_cli(job, "--simulate", "-o", nested, "--resume", "-q")
    assert code == ExitCode.USAGE and f"{nested}:21: a record of job 'other'" in err
    # A "job" inside a row's own values is not the row's job.
    rows = [{**r, "vars": {**r["vars"], "job": "other"}} for r in read_rows(results)]
    own = tmp_path / "own.jsonl"
    own.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    code, _, err = call_cli(job, "--simulate", "-o", own, "--resume", "-q")
    [said] = err.splitlines()  # that a file with no summary has no key gap to count, and nothing else
    assert code == 0 and said.startswith(f"batchrun: warning: {own} has no summary beside it")


def test_a_resume_refused_for_rows_the_job_no_longer_has_writes_nothing(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # out-102 F7: refused (exit 2), it had first recorded what a killed run left in flight (a
    # `crashed` record appended) and cut the file's torn tail: "nothing written is changed".
    job = write_job(tmp_path, SMALL_JOB)
    out = tmp_path / "r.jsonl"
    assert call_cli(job, "--simulate", "-o", out, "-q")[0] == ExitCode.OK
    out.with_name("r.summary.json").unlink()  # killed: no summary, an attempt in flight, a torn line
    kept = next(r for r in read_rows(out) if r["vars"]["country"] != "Italy")
    header = {"job": "small", "job_fingerprint": "f", "shard": None}
    sent = {"row": kept["id"], "at": out.stat().st_size, "usd": 0.001, "model": kept["model"], "prompt": "p"}
    journal = out.with_name("r.attempts.jsonl")
    journal.write_bytes(orjson.dumps(header) + b"\n" + orjson.dumps(sent) + b"\n")
    with out.open("ab") as handle:
        handle.write(b'{"id":"abc","status":"o')
    before, journaled = out.read_bytes(), journal.read_bytes()
    write_job(tmp_path, SMALL_JOB.replace("{country: Italy, expect: Rome}", "{country: Peru, expect: Lima}"))
    code, _, err = call_cli(job, "--simulate", "-o", out, "--resume", "-q")
    assert code == ExitCode.USAGE and "row(s) of the file are not in the matrix of job 'small'" in err, err
    assert out.read_bytes() == before and journal.read_bytes() == journaled
    # out-103 F8: so is a resume refused for --isolated-key without a management key.
    write_job(tmp_path, SMALL_JOB)
    monkeypatch.setenv("OPENROUTER_API_KEY", FAKE_KEY)
    monkeypatch.delenv("OPENROUTER_MANAGEMENT_KEY", raising=False)
    code, _, err = call_cli(
        job, "--base-url", sim.base_url, "-o", out, "--resume", "-q", "--isolated-key", "--budget", "1"
    )
    assert code == ExitCode.USAGE and "--isolated-key needs a management key" in err, err
    assert out.read_bytes() == before and journal.read_bytes() == journaled


def test_a_resume_refuses_a_file_holding_rows_the_job_no_longer_has(tmp_path: Path) -> None:
    # break24 F8: a resume after a dataset edit kept the removed rows, counted them (22 rows of a
    # 20-row job), exit 0; report --job and merge then refused the file for ever. One row of the
    # dataset is 4 of the matrix (2 models, 2 repeats).
    job = write_job(tmp_path, SMALL_JOB)
    out = tmp_path / "r.jsonl"
    assert call_cli(job, "--simulate", "-o", out, "-q")[0] == ExitCode.OK
    before, summary = out.read_bytes(), out.with_name("r.summary.json").read_bytes()
    write_job(tmp_path, SMALL_JOB.replace("{country: Italy, expect: Rome}", "{country: Peru, expect: Lima}"))
    code, _, err = call_cli(job, "--simulate", "-o", out, "--resume", "-q")
    assert code == ExitCode.USAGE
    assert err.startswith(f"batchrun: {out}: 4 row(s) of the file are not in the matrix of job 'small', e.g. id ")
    assert "run into a new --output, or resume with the job as it was" in err and err.count("\n") == 1
    assert "`report --job` and `merge` would refuse the file" in err
    assert out.read_bytes() == before and out.with_name("r.summary.json").read_bytes() == summary
    # out-143 F6: such a row alone, last, and without its newline was passed over as torn; the
    # resume then kept it (adding the newline), exit 0, a file report --job refuses.
    edited = {request.id for request in matrix_requests(load_job(job))}
    lines = before.splitlines(keepends=True)
    stray = [line for line in lines if orjson.loads(line)["id"] not in edited]
    out.write_bytes(b"".join(line for line in lines if line not in stray) + stray[0].rstrip(b"\n"))
    cut = out.read_bytes()
    code, _, err = call_cli(job, "--simulate", "-o", out, "--resume", "-q")
    assert code == ExitCode.USAGE and "1 row(s) of the file are not in the matrix of job 'small'" in err, err
    # Said as it is: the readers pass that line over as torn (out-144 F7: "would refuse the file").
    assert "the resume would keep its last line (a whole record, without its newline)" in err, err
    assert out.read_bytes() == cut
    out.write_bytes(before)
    # A shard's file resumed as another shard holds rows that shard does not have.
    shard = tmp_path / "s.jsonl"
    assert call_cli(job, "--simulate", "--shard", "1/2", "-o", shard, "-q")[0] == ExitCode.OK
    code, _, err = call_cli(job, "--simulate", "--shard", "2/2", "-o", shard, "--resume", "-q")
    assert code == ExitCode.USAGE and "holds shard 1/2 of the job" in err  # as its summary says
    shard.with_name("s.summary.json").unlink()  # its summary lost: its records say it (verify31 N1)
    code, _, err = call_cli(job, "--simulate", "--shard", "2/2", "-o", shard, "--resume", "-q")
    assert code == ExitCode.USAGE and "holds shard 1/2 of the job" in err
    # Records of a batchrun that did not name their shard: their rows say it.
    shard.write_bytes(
        b"".join(orjson.dumps({k: v for k, v in r.items() if k != "shard"}) + b"\n" for r in read_rows(shard))
    )
    code, _, err = call_cli(job, "--simulate", "--shard", "2/2", "-o", shard, "--resume", "-q")
    assert code == ExitCode.USAGE and "not in the matrix of job 'small' (shard 2/2)" in err
    # Rows added to the job are simply run: nothing of the file is foreign.
    write_job(
        tmp_path,
        SMALL_JOB.replace(
            "{country: Italy, expect: Rome}", "{country: Italy, expect: Rome}, {country: Peru, expect: Lima}"
        ),
    )
    code, _, err = call_cli(job, "--simulate", "-o", out, "--resume", "-q")
    assert (code, err) == (ExitCode.OK, "")
    assert len(read_rows(out)) == 24 and call_cli("report", out, "--job", job)[0] == ExitCode.OK


def test_a_merge_does_not_take_another_jobs_summary_for_its_matrix(results: Path, tmp_path: Path) -> None:
    # verify21 V11: 60 of 105 rows merged as complete, on another job's matrix_rows.
    part = tmp_path / "x.jsonl"
    part.write_bytes(b"".join(results.read_bytes().splitlines(keepends=True)[:12]))
    summary = json.loads(results.with_name("r.summary.json").read_text())
    (tmp_path / "x.summary.json").write_text(json.dumps({**summary, "job": "other", "matrix_rows": 12}))
    code, _, err = call_cli("merge", tmp_path / "m.jsonl", part)
    assert code == ExitCode.INCOMPLETE and "no usable summary of this job" in err


def test_links_and_case_do_not_lead_an_output_onto_results_or_sidecars(
    results: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # verify21 V1, V4, V5: the name guard looked at the link's name, not where it leads, and
    # at '.jsonl' in one case only.
    copy = tmp_path / "res.jsonl"
    copy.write_bytes(results.read_bytes())
    summary = tmp_path / "res.summary.json"
    summary.write_text('{"job": "small"}')
    (tmp_path / "lsum").symlink_to(summary)
    (tmp_path / "lres.md").symlink_to(copy)
    code, _, err = call_cli("report", results, "--junit", tmp_path / "lsum")
    assert code == ExitCode.USAGE and f"{tmp_path / 'lsum'} leads to {summary}: that is the name of the summary" in err
    code, _, err = call_cli("report", results, "--junit", tmp_path / "x.JSONL")
    assert code == ExitCode.USAGE and "is not written under a results file's name (.jsonl)" in err
    for target in ("lres.md", "lsum", "res.JSONL"):
        monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / target))
        code, _, err = call_cli("report", results, "--markdown")
        assert f"warning: GITHUB_STEP_SUMMARY {tmp_path / target}" in err, target
    assert copy.read_bytes() == results.read_bytes() and summary.read_text() == '{"job": "small"}'
    assert not (tmp_path / "res.JSONL").exists() and not (tmp_path / "x.JSONL").exists()
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", os.devnull)  # switched off: not a warning (V16)
    assert call_cli("report", results)[2] == ""


def test_a_hard_link_to_a_summary_is_not_taken_for_a_step_summary_or_a_page(
    results: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # verify21 V4 addendum: a hard link has no link to follow and a name of its own; the
    # Markdown was appended to the summary a resume reads what was spent from.
    summary = results.with_name("r.summary.json")
    before = summary.read_bytes()
    os.link(summary, tmp_path / "step.md")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "step.md"))
    code, _, err = call_cli("report", results, "--markdown")
    assert code == 0
    assert err == (
        f"batchrun: warning: GITHUB_STEP_SUMMARY {tmp_path / 'step.md'}: it holds batchrun state (a summary, "
        "journal or batch record); a step summary is not written over them\n"
    )
    cache = tmp_path / "cache"
    assert call_cli(results.parent / "job.yaml", "--simulate", "-o", tmp_path / "c.jsonl", f"--cache={cache}")[0] == 0
    os.link(cache / "responses.sqlite3", tmp_path / "cache-step.md")
    stored = (cache / "responses.sqlite3").read_bytes()
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "cache-step.md"))
    code, _, err = call_cli("report", results, "--markdown")
    assert code == 0 and "it holds batchrun data (an SQLite database" in err
    assert (cache / "responses.sqlite3").read_bytes() == stored
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    code, _, err = call_cli("report", results, "--html", tmp_path / "step.md")
    assert code == ExitCode.USAGE and "it holds batchrun state" in err
    assert summary.read_bytes() == before


def test_a_fifo_nobody_reads_is_an_error_not_a_hang(results: Path, tmp_path: Path) -> None:
    # verify21 V2: --junit and --html into a FIFO with no reader blocked in open() for ever.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code, _, err = call_cli("report", results, "--junit", fifo)
    assert code == ExitCode.IO and err.endswith(f"batchrun: {fifo}: cannot write it: a FIFO that nobody reads\n")


def test_a_rewritten_output_keeps_its_mode(results: Path, tmp_path: Path) -> None:
    # verify21 V14: a JUnit file or page made private came back world-readable (0644).
    out = tmp_path / "j.xml"
    call_cli("report", results, "--junit", out)
    out.chmod(0o600)
    call_cli("report", results, "--junit", out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_a_merge_into_a_symlink_is_refused(results: Path, tmp_path: Path) -> None:
    # verify21 V19: a dangling link was replaced by the merged file; its target never written.
    link = tmp_path / "m.jsonl"
    link.symlink_to(tmp_path / "target.jsonl")
    code, _, err = call_cli("merge", link, results)
    assert code == ExitCode.USAGE and "is a symbolic link: merge writes a new file" in err
    assert link.is_symlink() and not (tmp_path / "target.jsonl").exists()


def test_a_run_named_twice_is_one_run_in_the_history(results: Path) -> None:
    # verify21 V13: the same file given twice was two runs, compared with itself.
    code, out, _ = call_cli("history", results, results, results.parent)
    assert code == 0 and "1 run(s)" in out


def test_two_shards_claiming_one_part_are_named(results: Path, tmp_path: Path) -> None:
    # verify21 V12: "shard(s) 2 of 2 are missing" with every row there.
    summary = json.loads(results.with_name("r.summary.json").read_text())
    lines = results.read_bytes().splitlines(keepends=True)
    for name, part in (("a", lines[:10]), ("b", lines[10:])):
        (tmp_path / f"{name}.jsonl").write_bytes(b"".join(part))
        (tmp_path / f"{name}.summary.json").write_text(json.dumps({**summary, "shard": "1/2", "matrix_rows": 20}))
    code, _, err = call_cli("merge", tmp_path / "m.jsonl", tmp_path / "a.jsonl", tmp_path / "b.jsonl")
    assert code == ExitCode.INCOMPLETE
    assert f"{tmp_path / 'a.jsonl'} and {tmp_path / 'b.jsonl'} both say they are shard 1/2" in err


def test_a_shard_run_again_into_a_new_file_merges_whole_without_the_job(job: Path, tmp_path: Path) -> None:
    # out-157 F3: shard 1/2 run twice, into two files, and shard 2/2: every row there and
    # answered, yet `merge` without --job said "both say they are shard 1/2", exit 12.
    shards = [tmp_path / name for name in ("s1.jsonl", "s1-again.jsonl", "s2.jsonl")]
    for shard, part in zip(shards, ("1/2", "1/2", "2/2"), strict=True):
        assert call_cli(job, "--simulate", "-q", "-o", shard, "--shard", part, "--no-thresholds")[0] == ExitCode.OK
    code, _, err = call_cli("merge", tmp_path / "m.jsonl", *shards)
    merged = json.loads((tmp_path / "m.summary.json").read_text())
    assert code == ExitCode.OK and merged["complete"] is True, err
    assert merged["duplicate_rows"] == rows_written(shards[0]) and merged["total"]["rows"] == 20


def test_unread_lines_are_counted_where_ci_reads(results: Path, job: Path, tmp_path: Path) -> None:
    # verify21 V21: only stderr said a line was set aside; --json and the step summary showed
    # a complete-looking run with a row gone.
    bad = _with(results, tmp_path, 5, "status", [])
    code, out, _ = call_cli("report", bad, "--json")
    assert json.loads(out)["unread_lines"] == 1 and json.loads(out)["total"]["rows"] == 19
    code, out, _ = call_cli("report", bad, "--markdown")
    assert "**Warning:** unread: 1 line(s) of the file set aside or cut" in out
    assert "unread_lines" not in call_cli("report", results, "--json")[1]
    # And on the page and in the JUnit file, with --job or without (break62 F6: said in neither).
    page, junit = tmp_path / "p.html", tmp_path / "j.xml"
    for gate in ((), ("--job", job)):
        call_cli("report", bad, *gate, "--html", page, "--junit", junit)
        assert "1 line(s) of the file set aside or cut (see the warnings): a row may be missing" in page.read_text()
        assert '<property name="unread_lines" value="1" />' in junit.read_text()


def test_a_first_line_edited_by_hand_names_a_few_lines_set_aside_and_counts_the_rest(
    results: Path, tmp_path: Path
) -> None:
    # break27 m14: every other line set aside with a warning of its own (104 for 105 rows).
    from batchrun._reader import MAX_LINE_WARNINGS

    rows = read_rows(results)
    rows[0]["job"] = "other"
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = call_cli("report", edited, "--json")
    # 1 row of 105 read, and no summary to say the rest are missing: not a pass (out-128 F4).
    assert code == ExitCode.INCOMPLETE and "no summary of its run to count its rows by" in err
    lines = [line for line in err.strip().splitlines() if "set aside: " in line]
    assert len(lines) == MAX_LINE_WARNINGS + 1, err
    assert all("set aside: a row of job 'small' in a file of job 'other'" in line for line in lines[:-1])
    more = len(rows) - 1 - MAX_LINE_WARNINGS
    assert lines[-1] == f"batchrun: warning: {edited}: set aside: {more} more line(s) not read as records, as above"
    assert json.loads(out)["unread_lines"] == len(rows) - 1  # every line counted where CI reads


def test_history_does_not_compare_the_rows_of_a_shard_with_a_whole_run(tmp_path: Path) -> None:
    # break44 F12: "since the previous run: no row changed state" with 75 of 105 rows gone; `diff`
    # refuses the same pair (_comparable.same_shard).
    job = write_job(tmp_path, SMALL_JOB)
    assert call_cli(job, "--simulate", "-q", "-o", tmp_path / "a.jsonl")[0] == ExitCode.OK
    assert call_cli(job, "--simulate", "-q", "--shard", "1/2", "-o", tmp_path / "b.jsonl")[0] == ExitCode.OK
    code, text, _ = call_cli("history", tmp_path / "a.jsonl", tmp_path / "b.jsonl")
    assert code == ExitCode.OK and "rows not compared: " in text and "holds shard 1/2" in text, text
    assert "no row changed state" not in text
    code, text, _ = call_cli("history", tmp_path / "a.jsonl", tmp_path / "a.jsonl", tmp_path / "b.jsonl", "--json")
    assert "holds shard 1/2" in json.loads(text)["flips"]["not_compared"]


def test_history_of_a_fifo_says_what_it_is(tmp_path: Path) -> None:
    # verify21 V23: "no such results file or folder" for a FIFO that exists.
    fifo = tmp_path / "f.jsonl"
    os.mkfifo(fifo)
    code, _, err = call_cli("history", fifo)
    assert code == ExitCode.USAGE and err == f"batchrun: {fifo}: cannot read results: not a regular file (a FIFO)\n"


def test_a_results_file_with_a_damaged_first_line_is_not_written_over(results: Path, tmp_path: Path) -> None:
    # verify21 V15: only the first line was read to tell a results file; a blank or damaged one
    # let --junit replace 19 rows.
    for first in (b"\n", b"garbage\n", b"\xef\xbb\xbf"):
        copy = tmp_path / "copy.xml"
        copy.write_bytes(first + results.read_bytes())
        code, _, err = call_cli("report", results, "--junit", copy)
        assert code == ExitCode.USAGE and "it holds batchrun results" in err, first
        assert copy.read_bytes() == first + results.read_bytes()


def test_a_newline_in_a_file_name_cannot_forge_a_line(results: Path, tmp_path: Path) -> None:
    # verify21 V18: ESC and CR were escaped in names, a newline was not.
    named = tmp_path / "st\nbatchrun: fake.jsonl"
    named.write_bytes(_with(results, tmp_path, 5, "status", []).read_bytes())
    _, _, err = call_cli("report", named)
    lines = err.splitlines()
    assert len(lines) == 3 and all(line.startswith("batchrun: ") for line in lines)
    assert "st\\nbatchrun: fake.jsonl:5: set aside" in lines[0]


def test_a_pipe_whose_reader_left_takes_the_page_quietly(results: Path) -> None:
    # verify21 V3: `--junit /dev/stdout | head` said "Broken pipe" and exited 11.
    read, write = os.pipe()
    os.close(read)
    try:
        code, _, err = call_cli("report", results, "--junit", f"/proc/self/fd/{write}")
    finally:
        os.close(write)
    assert code == call_cli("report", results)[0] and "Broken pipe" not in err


def _copied(results: Path, folder: Path) -> Path:
    """The module's run copied into `folder` with its summary, for a test to change."""
    for name in ("r.jsonl", "r.summary.json"):
        shutil.copyfile(results.with_name(name), folder / name)
    return folder / "r.jsonl"


def test_a_file_without_its_summary_is_said_and_lines_set_aside_in_it_are_not_a_pass(
    results: Path, tmp_path: Path
) -> None:
    # out-128 F4: a partial merge copied without its summary, or a file with a line set aside and
    # no summary to count its rows by ("a row may be missing"), was exit 0 without a word.
    alone = tmp_path / "alone.jsonl"
    alone.write_bytes(results.read_bytes())
    code, _, err = call_cli("report", alone)
    assert code == ExitCode.OK
    assert err == f"batchrun: warning: {alone}: no summary of its run beside it: rows never written cannot be counted\n"
    alone.write_bytes(results.read_bytes() + b'{"id": "cut\n')
    code, _, err = call_cli("report", alone, "--junit", tmp_path / "j.xml")
    assert code == ExitCode.INCOMPLETE and "lines set aside, and no summary of its run to count its rows by" in err
    assert "<failure" in (tmp_path / "j.xml").read_text()
    # Beside its summary, which counts the 20 rows the file still holds, the same line is no row missing.
    copy = _copied(results, tmp_path)
    copy.write_bytes(copy.read_bytes() + b'{"id": "cut\n')
    code, _, err = call_cli("report", copy)
    assert code == ExitCode.OK and "set aside" in err and "no summary" not in err


@pytest.mark.parametrize(
    "damaged", [b"", b'{"job": "small", "total": {"ro', b"{garbage", b"[]", b"{}", b'{"foo": 1}', b'{"total": {}}']
)
def test_a_summary_that_cannot_be_read_is_no_pass_for_a_file_with_rows_removed(
    results: Path, tmp_path: Path, damaged: bytes
) -> None:
    # out-129 F2: a summary cut by a full disk, emptied or replaced read as "no summary": 5 of 20
    # rows removed, exit 0 (a resume refuses such a summary; merge counts its shard incomplete).
    copy = _copied(results, tmp_path)
    copy.write_bytes(b"".join(results.read_bytes().splitlines(keepends=True)[5:]))
    (tmp_path / "r.summary.json").write_bytes(damaged)
    code, _, err = call_cli("report", copy)
    assert code == ExitCode.INCOMPLETE, err
    assert "r.summary.json: " in err and "the rows of r.jsonl cannot be counted against its run" in err
    assert "no summary of its run beside it" not in err


@pytest.mark.parametrize("against_job", [False, True])
def test_report_reads_the_summary_once_for_every_view_of_it(
    results: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, against_job: bool
) -> None:
    # out-133: report read the summary five times (the run's fields, its doubts, another job's,
    # unreadable, the key gap): one replaced meanwhile vouched for the rows by one version and
    # gave the key gap of another.
    copy = _copied(results, tmp_path)
    opened: list[str] = []
    real_open = os.open

    def counted(path: Any, *args: Any, **kwargs: Any) -> int:
        opened.append(os.fsdecode(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", counted)
    job: list[str | Path] = ["--job", results.with_name("job.yaml")] if against_job else []
    code, out, err = call_cli("report", copy, "--json", "--html", tmp_path / "r.html", *job)
    monkeypatch.undo()
    assert code == ExitCode.OK, err
    assert json.loads(out)["total"]["rows"] > 0 and (tmp_path / "r.html").stat().st_size > 0
    assert sum(Path(path).name == "r.summary.json" for path in opened) == 1, opened


@pytest.mark.parametrize("with_job", [True, False])
def test_a_key_in_a_shard_file_is_scrubbed_from_the_merged_file_and_its_summary(
    results: Path, job: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_job: bool
) -> None:
    # out-180 F5: a shard file a run did not scrub (written by hand, forged) put the key of the
    # environment into the merged file and its summary: merge wrote its lines as they were.
    monkeypatch.setenv("OPENROUTER_API_KEY", FAKE_KEY)
    shard, summary = tmp_path / "s.jsonl", tmp_path / "s.summary.json"
    shutil.copyfile(summary_path(results), summary)
    rows = read_rows(results)
    rows[0]["content"] = f"the key is {FAKE_KEY}"
    rows[0]["provider"] = FAKE_KEY
    shard.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    seal = json.loads(summary.read_text())
    seal["results_bytes"], seal["results_digest"] = sealed(shard, shard.stat().st_size)
    summary.write_text(json.dumps(seal))
    merged = tmp_path / "m.jsonl"
    call_cli("merge", merged, shard, *(("--job", job) if with_job else ()))
    written = merged.read_text() + merged.with_name("m.summary.json").read_text()
    assert "the key is [key]" in written and FAKE_KEY[9:25] not in written


@pytest.mark.parametrize("command", ["report", "history"])
def test_a_full_width_key_in_a_results_file_is_scrubbed_from_json_output(
    results: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    # out-180 F3: --json wrote what is not ASCII as \uXXXX, so the stream's scrub of the text
    # it printed missed a key written in full-width characters (read back, it is the key).
    monkeypatch.setenv("OPENROUTER_API_KEY", FAKE_KEY)
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in FAKE_KEY)
    forged = _with(results, tmp_path, 1, "provider", full_width)
    code, out, err = call_cli(command, forged, "--json")
    assert "[key]" in out, (code, err)
    assert FAKE_KEY[9:25] not in unicodedata.normalize("NFKC", json.dumps(json.loads(out), ensure_ascii=False))
