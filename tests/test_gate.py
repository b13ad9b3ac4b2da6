"""`report --job`, the CI gate, and what a CI reads beside its exit code (break27).

- rows answered for an earlier version of their request (a prompt or its parameters edited
  since: the id stays, the fingerprint changes) are not answers to the job: exit 12, as
  `--resume` asks them again;
- nothing is spent on a file the gate refuses whatever the graders say (rows of another job:
  exit 2; rows missing: exit 12);
- the JUnit file is green exactly when the exit code is 0: the matrix's rows without an answer
  are errors, and the gate's verdict is a test case of its own;
- `--sim` without `--simulate` is refused: the requests would go to the job's endpoint, paid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from batchrun import ExitCode
from batchrun._batch_state import state_path
from batchrun._journal_file import journal_path
from batchrun._output_paths import summary_path
from batchrun._ungraded import regraded_fields
from batchrun.cli._report_gate import NOT_REGRADED
from batchrun.simulator import Simulator

from .conftest import (
    SMALL_JOB,
    call_cli,
    child_env,
    judged_small_job,
    killed_run_journal,
    read_rows,
    resealed,
    write_job,
)
from .forked import ForkedCli, run_forked


def _junit(path: Path) -> dict[str, Any]:
    """Counts over every suite, and the gate's case (None when there is none)."""
    root = ET.parse(path).getroot()
    totals = {key: sum(int(s.get(key) or 0) for s in root) for key in ("tests", "failures", "errors", "skipped")}
    gate = [case for suite in root if (suite.get("name") or "").endswith(" (gate)") for case in suite.iter("testcase")]
    return {**totals, "gate": gate[0] if gate else None, "root": root}


def _items(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], int]:
    """Rows by item (SMALL_JOB has two repeats, so JUnit has one case per item): item -> rows."""
    items: dict[tuple[str, str, str], int] = {}
    for row in rows:
        key = (row["model"], row["prompt_id"], json.dumps(row["vars"], sort_keys=True))
        items[key] = items.get(key, 0) + 1
    return items


def _edited_prompt(folder: Path, text: str = SMALL_JOB) -> Path:
    folder.mkdir(exist_ok=True)
    return write_job(folder, text.replace('"Capital of {{country}}?"', '"Name the capital city of {{country}}."'))


def test_rows_answered_before_their_prompt_was_edited_are_not_answers_to_the_job(
    tmp_path: Path, job: Path, results: Path
) -> None:
    # break27 MAJOR-5: the old answers were graded by the new job's checks: exit 0, JUnit green.
    edited = _edited_prompt(tmp_path / "edited")
    junit = tmp_path / "junit.xml"
    code, _, err = call_cli("report", results, "--job", edited, "--junit", junit)
    capitals = [r for r in read_rows(results) if r["prompt_id"] == "capital"]
    assert code == ExitCode.INCOMPLETE, err
    assert f"{len(capitals)} row(s) answered an earlier version of their request" in err
    counts = _junit(junit)
    assert counts["errors"] == len(_items(capitals)) and counts["gate"] is not None
    stale = [e.get("message") for e in counts["root"].iter("error")]
    assert all("answered an earlier version of its request" in m for m in stale), stale
    assert counts["gate"].find("failure") is not None  # the gate's own case is red
    assert call_cli("report", results, "--job", edited, "--allow-partial")[0] == ExitCode.OK
    # `--resume` asks exactly those again, and then the gate passes.
    before = len(read_rows(results))
    assert call_cli(edited, "--simulate", "-o", results, "--resume", "-q")[0] == ExitCode.OK
    assert len(read_rows(results)) == before + len(capitals)
    assert call_cli("report", results, "--job", edited)[0] == ExitCode.OK
    assert call_cli("report", results, "--job", job)[0] == ExitCode.INCOMPLETE  # now stale to the old job


def test_an_edited_parameter_makes_rows_stale_an_edited_check_does_not(
    tmp_path: Path, job: Path, results: Path
) -> None:
    params = tmp_path / "params"
    params.mkdir()
    params_job = write_job(params, SMALL_JOB.replace("max_tokens: 32", "max_tokens: 7"))
    code, _, err = call_cli("report", results, "--job", params_job)
    assert code == ExitCode.INCOMPLETE and "20 row(s) answered an earlier version" in err, err
    checks = tmp_path / "checks"
    checks.mkdir()
    checks_job = write_job(checks, SMALL_JOB.replace('{contains: "{{expect}}"}', '{regex: "."}'))
    code, _, err = call_cli("report", results, "--job", checks_job)
    assert code == ExitCode.OK, err  # re-grading with new checks is what `report --job` is for


def test_merge_keeps_stale_rows_and_says_the_merge_is_not_complete(tmp_path: Path, job: Path, results: Path) -> None:
    edited = _edited_prompt(tmp_path / "edited")
    merged = tmp_path / "merged.jsonl"
    code, _, err = call_cli("merge", merged, results, "--job", edited)
    assert code == ExitCode.INCOMPLETE and "answered an earlier version" in err, err
    assert len(read_rows(merged)) == 20  # no row lost


def test_the_junit_file_of_a_file_with_rows_missing_is_not_green(tmp_path: Path, job: Path, results: Path) -> None:
    # break27 MAJOR-2: two rows of twenty: tests="2" failures="0" errors="0", exit 12.
    lines = results.read_text().splitlines(keepends=True)
    part = tmp_path / "part.jsonl"
    part.write_text("".join(lines[:2]) + lines[2][:200])  # and a line cut in the middle
    junit = tmp_path / "junit.xml"
    code, _, err = call_cli("report", part, "--job", job, "--junit", junit)
    assert code == ExitCode.INCOMPLETE
    counts = _junit(junit)
    present = _items([json.loads(line) for line in lines[:2]])
    whole = sum(1 for n in present.values() if n == 2)
    assert counts["tests"] == 10 + 1 and counts["errors"] == 10 - whole  # every item of the matrix, and the gate
    gate = counts["gate"].find("failure")
    assert gate is not None and "exit 12" in gate.get("message") and "18 of 20 row(s)" in gate.get("message")
    messages = [e.get("message") for e in counts["root"].iter("error")]
    assert sum("without an answer: no record: the row never ran" in m for m in messages) == 10 - whole
    code, _, err = call_cli("report", results, "--job", job, "--junit", junit)
    counts = _junit(junit)
    assert code == ExitCode.OK and counts["errors"] == counts["failures"] == 0
    assert counts["gate"] is not None and len(counts["gate"]) == 0  # a green case: the gate passed


def test_report_without_job_of_a_run_stopped_at_its_deadline_is_exit_12_and_its_junit_file_not_green(
    tmp_path: Path, job: Path
) -> None:
    # break42 F2: exit 0 and a JUnit file with no failure (every row <skipped>) for a run its own
    # summary called stopped (deadline) and incomplete, while its page said "exit 6".
    out, junit = tmp_path / "r.jsonl", tmp_path / "junit.xml"
    assert call_cli(job, "--simulate", "-o", out, "--deadline", "0.001", "-q")[0] == ExitCode.DEADLINE
    code, _, err = call_cli("report", out, "--junit", junit)
    skipped = sum(1 for row in read_rows(out) if row["status"] == "skipped")
    assert code == ExitCode.INCOMPLETE and skipped > 0
    assert f"batchrun: {skipped} row(s) skipped, never answered (deadline {skipped}); --resume runs them\n" in err
    gate = _junit(junit)["gate"].find("failure")
    assert gate is not None and "exit 12" in gate.get("message") and "never answered" in gate.get("message")
    assert call_cli(job, "--simulate", "-o", out, "--resume", "-q")[0] == ExitCode.OK
    code, _, err = call_cli("report", out, "--junit", junit)
    assert code == ExitCode.OK and len(_junit(junit)["gate"]) == 0  # answered since: a green case


def test_a_shard_run_with_no_thresholds_leaves_the_rates_to_the_merged_gate(tmp_path: Path) -> None:
    # break42 F3: each shard gated the job's thresholds over its own quarter of the rows: shard
    # steps failed (exit 3) on a night whose gate, on the merged run, passed.
    text = SMALL_JOB.replace("run: {", "run: {pass_threshold: 0.9, max_error_rate: 0.05, ")
    job = write_job(tmp_path, text)
    failing = ("--sim", "accuracy.openai/gpt-4o-mini=0", "--sim", "fault.500=0.3", "--max-attempts", "1")
    for shard in ("1/2", "2/2"):
        out = tmp_path / f"s{shard[0]}.jsonl"
        assert call_cli(job, "--simulate", *failing, "--shard", shard, "-o", out, "-q")[0] in (1, 3)
        out.unlink()
        code, _, err = call_cli(job, "--simulate", *failing, "--shard", shard, "-o", out, "-q", "--no-thresholds")
        assert (code, err) == (ExitCode.OK, ""), err
    merged = tmp_path / "all.jsonl"
    assert call_cli("merge", merged, tmp_path / "s1.jsonl", tmp_path / "s2.jsonl", "--quiet")[0] == ExitCode.OK
    assert call_cli("report", merged, "--job", job)[0] in (ExitCode.ERRORS, ExitCode.QUALITY)  # gated here
    # out-130 F1: a resume of a partial merge paid again for its missing shard's rows, which that
    # shard's own file had answered: refused, its files as they were.
    part = tmp_path / "part.jsonl"
    assert call_cli("merge", part, tmp_path / "s1.jsonl", "--allow-partial", "-q")[0] == ExitCode.OK
    before = {path.name: path.read_bytes() for path in tmp_path.glob("part.*")}
    code, _, err = call_cli(job, "--simulate", "--resume", "-o", part, "-q", "--no-thresholds")
    assert code == ExitCode.USAGE and "part.jsonl is a partial merge of s1.jsonl: it was left untouched" in err
    assert {path.name: path.read_bytes() for path in tmp_path.glob("part.*")} == before
    part.unlink()
    (tmp_path / "part.summary.json").unlink()
    # A whole one's resume (which looks up costs) keeps it a merge: `history` counted 3 runs.
    assert call_cli(job, "--simulate", "--resume", "-o", merged, "-q", "--no-thresholds")[0] == ExitCode.OK
    assert json.loads((tmp_path / "all.summary.json").read_text())["merged_from"]
    code, text, _ = call_cli("history", tmp_path, "--json")
    assert code == ExitCode.OK and len(json.loads(text)["runs"]) == 1
    # verify45 N2: a shard none of whose rows was answered is no rate question: exit 1, said.
    broken = tmp_path / "broken.jsonl"
    code, _, err = call_cli(
        job, "--simulate", "--sim", "fault.400=1", "--shard", "1/2", "-o", broken, "-q", "--no-thresholds"
    )
    assert code == ExitCode.ERRORS and "row(s) ended in error" not in err and ": nothing was answered" in err
    # What is not a threshold still counts: a stop, and --pass-threshold with it is refused.
    stopped = tmp_path / "stopped.jsonl"
    argv = (job, "--simulate", "--shard", "1/2", "-o", stopped, "-q", "--no-thresholds", "--deadline", "0.001")
    assert call_cli(*argv)[0] == ExitCode.DEADLINE
    code, _, err = call_cli(job, "--simulate", "--no-thresholds", "--pass-threshold", "0.5")
    assert code == ExitCode.USAGE and "not allowed with argument" in err


def test_a_night_every_row_of_which_errored_is_never_exit_0_whatever_the_tolerance(tmp_path: Path) -> None:
    # out-113 F1: `max_error_rate: 1.0` without a pass threshold: 105 of 105 rows errored and
    # the run, `report --job` and the JUnit file all said 0 (green) on a night with no answer.
    job = write_job(tmp_path, SMALL_JOB.replace("run: {", "run: {max_error_rate: 1.0, "))
    out, junit = tmp_path / "out.jsonl", tmp_path / "junit.xml"
    code, _, err = call_cli(job, "--simulate", "--sim", "fault.400=1", "-o", out, "-q")
    assert code == ExitCode.ERRORS and "every row ended in error (20): nothing was answered" in err, err
    code, _, err = call_cli("report", out, "--job", job, "--junit", junit)
    assert code == ExitCode.ERRORS and "nothing was answered" in err, err
    gate = _junit(junit)["gate"]
    assert gate is not None and "nothing was answered" in (gate.find("failure").get("message") or "")


def test_a_missing_repeat_makes_its_item_an_error(tmp_path: Path, job: Path, results: Path) -> None:
    # With repeats, JUnit has one case per item: an item with a repeat missing is not green.
    rows = read_rows(results)
    kept = [r for r in rows if not (r["repeat"] == 1 and r["prompt_id"] == "capital")]
    part = tmp_path / "part.jsonl"
    part.write_text("".join(json.dumps(r) + "\n" for r in kept))
    junit = tmp_path / "junit.xml"
    assert call_cli("report", part, "--job", job, "--junit", junit)[0] == ExitCode.INCOMPLETE
    errors = [e.get("message") for e in _junit(junit)["root"].iter("error")]
    gaps = [m for m in errors if m.startswith("1 of 2 repeat(s) without an answer: no record")]
    assert len(gaps) == len(rows) - len(kept), errors


@pytest.mark.usefixtures("api_key_env")
def test_no_grader_is_asked_for_a_file_the_gate_refuses_whatever_they_say(
    tmp_path: Path, sim: Simulator, job: Path, results: Path
) -> None:
    # break27 MAJOR-1: a file with one row of another job bought every grader, then said
    # exit 2, "nothing was spent".
    judged_folder = tmp_path / "judged"
    judged_folder.mkdir()
    judged = write_job(judged_folder, judged_small_job())
    base = ["--base-url", sim.base_url]
    rows = read_rows(results)
    other = {**rows[0], "job": "other"}
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps(r) + "\n" for r in [*rows, other]))
    asked = sim.stats.chat_requests
    code, _, err = call_cli("report", mixed, "--job", judged, *base)
    assert code == ExitCode.USAGE and "1 row(s) are not in the matrix" in err, err
    assert sim.stats.chat_requests == asked and "re-grading" not in err
    part = tmp_path / "part.jsonl"
    part.write_text("".join(json.dumps(r) + "\n" for r in rows[:5]))
    junit = tmp_path / "junit.xml"
    code, _, err = call_cli("report", part, "--job", judged, *base, "--junit", junit)
    assert code == ExitCode.INCOMPLETE and NOT_REGRADED in err, err
    assert sim.stats.chat_requests == asked
    assert _junit(junit)["errors"] == 10  # no judge verdict stored: undecided, or missing
    code, _, err = call_cli("report", part, "--job", judged, *base, "--allow-partial")
    assert sim.stats.chat_requests > asked and "re-grading" in err  # asked for: the rows present


@pytest.mark.parametrize(
    "command",
    [
        ["JOB", "--sim", "fault.503=1"],
        ["plan", "JOB", "--sim", "latency_ms=5"],
        ["report", "OUT", "--job", "JOB", "--sim", "judge_unparseable=1"],
    ],
    ids=["run", "plan", "report"],
)
@pytest.mark.usefixtures("api_key_env")
def test_sim_settings_without_simulate_are_refused_before_anything_is_sent(
    tmp_path: Path, sim: Simulator, job: Path, results: Path, command: list[str]
) -> None:
    # break27 MAJOR-4: ignored, and the run went to the job's endpoint with the key set.
    argv = [{"JOB": str(job), "OUT": str(results)}.get(a, a) for a in command]
    before = results.read_bytes()
    code, out, err = call_cli(*argv, "--base-url", sim.base_url)
    assert code == ExitCode.USAGE and out == "" and len(err.strip().splitlines()) == 1
    assert "--sim: only with --simulate (settings of the built-in simulator); nothing was sent" in err
    assert results.read_bytes() == before and sim.stats.chat_requests == sim.stats.keys_created == 0


@pytest.mark.parametrize("command", [["JOB"], ["plan", "JOB"], ["report", "OUT", "--job", "JOB"]])
def test_simulate_and_a_base_url_are_one_or_the_other(job: Path, results: Path, command: list[str]) -> None:
    # verify27 N8: --simulate won, and the URL given was ignored without a word.
    argv = [{"JOB": str(job), "OUT": str(results)}.get(a, a) for a in command]
    code, out, err = call_cli(*argv, "--simulate", "--base-url", "http://127.0.0.1:9/api/v1")
    assert code == ExitCode.USAGE and out == "" and "--simulate and --base-url: give one" in err


def test_allow_partial_says_what_it_accepted_and_fails_a_file_with_nothing_to_gate(
    tmp_path: Path, job: Path, results: Path
) -> None:
    # verify27 N2: nothing said of what was accepted; every row stale, exit 0 with no row graded.
    edited = _edited_prompt(tmp_path / "edited")
    code, _, err = call_cli("report", results, "--job", edited, "--allow-partial")
    assert code == ExitCode.OK
    assert "warning: accepted with --allow-partial: 12 row(s) answered an earlier version" in err
    only_capitals = tmp_path / "capitals.jsonl"
    only_capitals.write_text("".join(json.dumps(r) + "\n" for r in read_rows(results) if r["prompt_id"] == "capital"))
    code, _, err = call_cli("report", only_capitals, "--job", edited, "--allow-partial")
    assert code == ExitCode.INCOMPLETE and "no row of the matrix has an answer to gate on" in err


def test_rows_allow_partial_accepts_without_an_answer_can_decide_a_threshold_never_pass_it(tmp_path: Path) -> None:
    # out-113 F3: the failing rows left out of the file, the rows kept passed every threshold
    # (100% against 60%, and each item kept met the per-item gate; the items with no record were
    # not looked at): exit 0. Rows accepted without an answer are rows without a verdict.
    gated = SMALL_JOB.replace("run: {", "run: {pass_threshold: {overall: 0.6, per_item: {min: 1, of: 2}}, ")
    job = write_job(
        tmp_path, gated.replace("vars: [{a: 1}, {a: 2}]", "vars: [{a: 1}, {a: 2}]\n    checks: [{contains: '9'}]")
    )
    out = tmp_path / "out.jsonl"
    half = ("--sim", "accuracy.openai/gpt-4o-mini=0.5", "--sim", "accuracy.google/gemini-2.0-flash-001=0.5")
    assert call_cli(job, "--simulate", *half, "-o", out, "-q")[0] == ExitCode.QUALITY
    rows = read_rows(out)
    passing = [r for r in rows if r["passed"]]
    assert 0 < len(passing) < 0.6 * len(rows)  # the truth: the gate is missed
    part = tmp_path / "part.jsonl"
    part.write_text("".join(json.dumps(r) + "\n" for r in passing))
    junit = tmp_path / "junit.xml"
    code, _, err = call_cli("report", part, "--job", job, "--allow-partial", "--junit", junit)
    unanswered = len(rows) - len(passing)
    assert code == ExitCode.ERRORS, err
    assert (
        f"pass rate: its threshold could not be checked: {unanswered} unanswered (accepted by --allow-partial) "
        f"row(s) decide it ({len(passing)} of {len(passing)} graded passed)" in err
    )
    items = {(r["model"], r["prompt_id"], json.dumps(r["vars"])) for r in rows}
    kept = {(r["model"], r["prompt_id"], json.dumps(r["vars"])) for r in passing}
    assert f"{len(items - kept)} item(s) could not be checked against the per-item gate" in err
    assert "could not be checked" in (_junit(junit)["gate"].find("failure").get("message") or "")
    # Rows left out that could not change the verdict are accepted, as the option says.
    one_gone = tmp_path / "one_gone.jsonl"
    one_gone.write_text("".join(json.dumps(r) + "\n" for r in rows[1:]))
    (tmp_path / "lenient").mkdir()
    lenient = write_job(tmp_path / "lenient", SMALL_JOB.replace("run: {", "run: {pass_threshold: 0.01, "))
    code, _, err = call_cli("report", one_gone, "--job", lenient, "--allow-partial")
    assert code == ExitCode.OK and "accepted with --allow-partial: 1 of 20 row(s)" in err, err


def test_the_ci_gate_pins_the_thresholds_a_pull_request_could_loosen(tmp_path: Path) -> None:
    # out-113 F4: the README said to pin `--pass-threshold` against a job file from a pull request;
    # `report --job` refused it (exit 2), and nothing pinned `max_error_rate`.
    loose = SMALL_JOB.replace("run: {", "run: {pass_threshold: {overall: 0.0, models: {openai/gpt-4o-mini: 0.0}}, ")
    job = write_job(tmp_path, loose.replace("run: {", "run: {max_error_rate: 0.9, "))
    out = tmp_path / "out.jsonl"
    argv = (job, "--simulate", "--sim", "accuracy.openai/gpt-4o-mini=0.5", "--sim", "fault.500=0.3", "-o", out, "-q")
    assert call_cli(*argv, "--max-attempts", "1")[0] == ExitCode.OK  # the job's own thresholds: anything passes
    rows = read_rows(out)
    errors, graded = sum(r["status"] == "error" for r in rows), [r for r in rows if r.get("passed") is not None]
    assert 0 < errors < len(rows) and 0 < sum(r["passed"] for r in graded) < len(graded)
    code, _, err = call_cli("report", out, "--job", job, "--max-error-rate", "0")
    assert code == ExitCode.ERRORS and f"{errors} row(s) ended in error" in err and "tolerance 0.0%" in err, err
    code, _, err = call_cli("report", out, "--job", job, "--max-error-rate", "1", "--pass-threshold", "0.99")
    assert code == ExitCode.QUALITY and "is below the threshold 99.0%" in err, err
    # The job's other thresholds stay: only the overall rate is pinned.
    assert "model openai/gpt-4o-mini" not in err
    # A run pins them the same way, and --no-thresholds gates none of them.
    out.unlink()
    assert call_cli(*argv, "--max-attempts", "1", "--max-error-rate", "0")[0] == ExitCode.ERRORS
    code, _, err = call_cli(*argv, "--no-thresholds", "--max-error-rate", "0")
    assert code == ExitCode.USAGE and "--max-error-rate and --no-thresholds: one or the other" in err


def test_a_row_without_a_fingerprint_is_not_taken_as_answering_the_job(
    tmp_path: Path, job: Path, results: Path
) -> None:
    # verify27 N3: the gate took it as done while --resume asked it again.
    rows = read_rows(results)
    del rows[0]["fingerprint"]
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = call_cli("report", results, "--job", job)
    assert code == ExitCode.INCOMPLETE and "1 row(s) answered an earlier version of their request" in err


def test_the_gate_suite_is_named_apart_and_a_failure_before_the_verdict_replaces_last_nights_file(
    tmp_path: Path, results: Path
) -> None:
    # verify27 N5: a prompt with the id `gate` made two suites `JOB.gate`, and suites of a file
    # with no current row were named `batchrun.*`; N7: an exit 2 left the earlier green file.
    folder = tmp_path / "gated"
    folder.mkdir()
    gated = write_job(folder, SMALL_JOB.replace("id: sum", "id: gate"))
    junit = tmp_path / "junit.xml"
    gated_results = folder / "out.jsonl"
    assert call_cli(gated, "--simulate", "-o", gated_results, "-q")[0] == ExitCode.OK
    assert call_cli("report", gated_results, "--job", gated, "--junit", junit)[0] == ExitCode.OK
    names = [suite.get("name") for suite in ET.parse(junit).getroot()]
    assert names == ["small.capital", "small.gate", "small (gate)"]
    assert call_cli("report", results, "--job", _edited_prompt(tmp_path / "edited"), "--junit", junit)[0] == 12
    assert {suite.get("name", "").split(".")[0].split(" ")[0] for suite in ET.parse(junit).getroot()} == {"small"}
    other = tmp_path / "other"
    other.mkdir()
    code, _, err = call_cli(
        "report", results, "--job", write_job(other, SMALL_JOB.replace("name: small", "name: x")), "--junit", junit
    )
    assert code == ExitCode.USAGE, err
    counts = _junit(junit)
    assert counts["tests"] == 1 and counts["gate"] is not None
    failure = counts["gate"].find("failure")
    assert failure is not None and failure.get("message").startswith("exit 2: ")
    assert "20 row(s) are not in the matrix of job 'x'" in failure.get("message")


def test_a_page_that_cannot_be_written_leaves_a_junit_file_that_says_so(
    tmp_path: Path, job: Path, results: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # verify28 F5: the page failed (exit 11) after a JUnit file whose gate case was green.
    import batchrun._html_report as html_report
    from batchrun._exceptions import OutputFailed

    def full_disk(*_args: Any) -> None:
        raise OutputFailed(f"{tmp_path / 'page.html'}: cannot write it: No space left on device")

    monkeypatch.setattr(html_report, "write_report", full_disk)
    junit = tmp_path / "junit.xml"
    code, _, err = call_cli("report", results, "--job", job, "--junit", junit, "--html", tmp_path / "page.html")
    assert code == ExitCode.IO and "No space left on device" in err, err
    failure = _junit(junit)["gate"].find("failure")
    assert failure is not None and failure.get("message").startswith("exit 11: ")


def test_a_job_that_cannot_be_read_replaces_last_nights_junit_file_and_nothing_else(
    tmp_path: Path, job: Path, results: Path
) -> None:
    # A job file broken overnight left the green JUnit file of the night before standing beside
    # exit 2. The files such a job names are not known, so only a JUnit file is replaced.
    junit = tmp_path / "junit.xml"
    assert call_cli("report", results, "--job", job, "--junit", junit)[0] == ExitCode.OK
    assert _junit(junit)["failures"] == 0 and _junit(junit)["tests"] > 1
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: small\nmodels: [\n")
    code, _, err = call_cli("report", results, "--job", broken, "--junit", junit)
    assert code == ExitCode.USAGE and "broken.yaml:" in err, err
    counts = _junit(junit)
    assert counts["tests"] == 1 and counts["failures"] == 1
    failure = counts["gate"].find("failure")
    assert failure is not None and failure.get("message").startswith("exit 2: ") and "YAML" in failure.get("message")
    notes = tmp_path / "notes.txt"  # perhaps a file the job names: a JUnit path is not written over it
    notes.write_text("keep me\n")
    assert call_cli("report", results, "--job", broken, "--junit", notes)[0] == ExitCode.USAGE
    assert notes.read_text() == "keep me\n"
    absent = tmp_path / "new.xml"
    assert call_cli("report", results, "--job", tmp_path / "missing.yaml", "--junit", absent)[0] == ExitCode.USAGE
    assert "no such job file" in _junit(absent)["gate"].find("failure").get("message")


def test_a_gate_that_never_gives_its_verdict_leaves_no_green_junit_file(
    tmp_path: Path, job: Path, results: Path
) -> None:
    # A second signal exits at once (os._exit), and a kill at once: the file written the night
    # before (green) stood beside a gate that never finished. Until the verdict, the file says
    # there is none. (A kill stands for both: two signals sent at once may arrive as one.)
    junit = tmp_path / "junit.xml"
    assert call_cli("report", results, "--job", job, "--junit", junit)[0] == ExitCode.OK
    assert _junit(junit)["failures"] == 0
    judged_folder = tmp_path / "judged"
    judged_folder.mkdir()
    judged = write_job(judged_folder, judged_small_job())
    process = ForkedCli(
        ["report", results, "--job", judged, "--junit", junit, "--simulate", "--sim", "latency_ms=60000"],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    end = time.monotonic() + 20  # a bound on the wait (the graders take a minute), not a timing relied on
    while time.monotonic() < end and process.poll() is None and _junit(junit)["failures"] == 0:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    _, err = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, err
    failure = _junit(junit)["gate"].find("failure")
    assert failure is not None and "the gate ended before its verdict" in failure.get("message"), err


def _last_nights_green_files(tmp_path: Path, job: Path, results: Path) -> tuple[Path, Path, tuple[str | Path, ...]]:
    """The JUnit file and page of a gate that passed, and the options that name them."""
    junit, page = tmp_path / "junit.xml", tmp_path / "page.html"
    outputs = ("--junit", junit, "--html", page)
    assert call_cli("report", results, "--job", job, *outputs)[0] == ExitCode.OK
    assert "exit 0 (ok)" in page.read_text()
    return junit, page, outputs


def _signal_after_the_junit_file() -> None:
    """In a forked child: SIGTERM to itself once the first "no verdict yet" file is written."""
    import batchrun._junit

    write = batchrun._junit.write_junit

    def then_signal(*args: Any, **kwargs: Any) -> dict[str, int]:
        counts = write(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return counts

    batchrun._junit.write_junit = then_signal


def test_a_signal_between_the_two_no_verdict_files_leaves_neither_green(
    tmp_path: Path, job: Path, results: Path
) -> None:
    # verify30 N5: until the verdict both files say there is none, written one after the other;
    # a SIGTERM between them ended the gate (exit 7) with the page still last night's "exit 0 (ok)".
    junit, page, outputs = _last_nights_green_files(tmp_path, job, results)
    done = run_forked(
        ["report", results, "--job", job, *outputs], env=child_env(), preexec_fn=_signal_after_the_junit_file
    )
    assert done.returncode == ExitCode.INTERRUPTED, done.stderr
    assert "exit 0 (ok)" not in page.read_text() and "ended before its verdict" in page.read_text()
    failure = _junit(junit)["gate"].find("failure")
    assert failure is not None and "the gate ended before its verdict" in failure.get("message")


def test_last_nights_page_never_stands_beside_a_gate_without_a_verdict(
    tmp_path: Path, job: Path, results: Path
) -> None:
    # break31 M1: a gate that failed once the job was read rewrote the JUnit file, and left the
    # page beside it saying last night's "exit 0 (ok)".
    junit, page, outputs = _last_nights_green_files(tmp_path, job, results)
    code, _, err = call_cli("report", tmp_path / "missing.jsonl", "--job", job, *outputs)
    assert code == ExitCode.USAGE, err
    text = page.read_text()
    assert "No verdict" in text and "exit 2" in text and "no such results file" in text and "exit 0" not in text
    assert _junit(junit)["gate"].find("failure").get("message").startswith("exit 2: ")
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [\n")
    assert call_cli("report", results, "--job", broken, *outputs)[0] == ExitCode.USAGE
    assert "YAML syntax error" in page.read_text()
    mine = tmp_path / "mine.html"  # not a batchrun page: the broken job might name it
    mine.write_text("<html>my notes</html>")
    assert call_cli("report", results, "--job", broken, "--html", mine)[0] == ExitCode.USAGE
    assert mine.read_text() == "<html>my notes</html>"


def test_a_signal_while_the_page_is_written_leaves_both_files_saying_exit_7(
    tmp_path: Path, job: Path, results: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break31 M2: exit 7, the JUnit file already saying the verdict (exit 3, or green), the page
    # last night's opposite one: three verdicts from one step.
    import batchrun._html_report as html_report

    junit, page = tmp_path / "junit.xml", tmp_path / "page.html"
    assert call_cli("report", results, "--job", job, "--junit", junit, "--html", page)[0] == ExitCode.OK

    def interrupted(*_args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(html_report, "write_report", interrupted)
    code, _, err = call_cli("report", results, "--job", job, "--junit", junit, "--html", page)
    assert code == ExitCode.INTERRUPTED, err
    assert _junit(junit)["gate"].find("failure").get("message").startswith("exit 7: interrupted by a signal before")
    assert "No verdict" in page.read_text() and "exit 7" in page.read_text()


def _last_nights_files(tmp_path: Path, results: Path, job: Path, with_job: bool) -> tuple[Path, Path, tuple[Any, ...]]:
    """The JUnit file and page of a green report of `results` (with --job or not), and those options."""
    junit, page = tmp_path / "junit.xml", tmp_path / "page.html"
    gate: tuple[Any, ...] = ("--job", job) if with_job else ()
    assert call_cli("report", results, *gate, "--junit", junit, "--html", page)[0] == ExitCode.OK
    return junit, page, gate


@pytest.mark.parametrize("with_job", [True, False])
@pytest.mark.parametrize("tonight", ["missing", "empty", "held"])
def test_a_report_that_fails_before_its_verdict_leaves_no_earlier_green_page_or_junit_file(
    tmp_path: Path, job: Path, results: Path, monkeypatch: pytest.MonkeyPatch, tonight: str, with_job: bool
) -> None:
    # break62 F4: without --job, last night's green page and JUnit file stood beside a report of
    # tonight's results that was missing (exit 2), empty (2) or still being written (8).
    import batchrun._lock as lock

    junit, page, gate = _last_nights_files(tmp_path, results, job, with_job)
    assert "exit 0 (ok)" in page.read_text()
    night = tmp_path / "tonight.jsonl"
    if tonight == "empty":
        night.write_bytes(b"")
    elif tonight == "held":
        night.write_bytes(results.read_bytes())
        monkeypatch.setattr(lock, "writer_of", lambda *_args: 4242)  # a run writing it
    code, _, err = call_cli("report", night, *gate, "--junit", junit, "--html", page)
    # An empty file against the job is a verdict of its own: every row of the matrix missing.
    expected = {"held": ExitCode.LOCKED, "missing": ExitCode.USAGE}.get(
        tonight, ExitCode.INCOMPLETE if with_job else ExitCode.USAGE
    )
    assert code == expected, err
    assert _junit(junit)["gate"].find("failure").get("message").startswith(f"exit {int(code)}: ")
    assert f"exit {int(code)}" in page.read_text() and "exit 0 (ok)" not in page.read_text()


@pytest.mark.parametrize("with_job", [True, False])
def test_a_signal_after_the_page_is_written_leaves_both_files_saying_exit_7(
    tmp_path: Path, job: Path, results: Path, monkeypatch: pytest.MonkeyPatch, with_job: bool
) -> None:
    # break62 F5: one SIGTERM right after the page was written: the page said exit 0, the JUnit
    # file "the gate ended before its verdict (a second signal, or killed)", the command 7.
    import batchrun._junit as junit_module

    junit, page, gate = _last_nights_files(tmp_path, results, job, with_job)

    write_junit = junit_module.write_junit
    calls: list[int] = []

    def interrupted_once(*args: Any) -> Any:
        calls.append(len(calls))
        if len(calls) == 2:  # the placeholder, then the verdict: one signal, as it is written
            raise KeyboardInterrupt
        return write_junit(*args)

    monkeypatch.setattr(junit_module, "write_junit", interrupted_once)  # the page is written first
    code, _, err = call_cli("report", results, *gate, "--junit", junit, "--html", page)
    assert code == ExitCode.INTERRUPTED and len(calls) == 3, err
    message = _junit(junit)["gate"].find("failure").get("message")
    assert message == "exit 7: interrupted by a signal before the gate's verdict was written"
    assert "No verdict" in page.read_text() and "exit 7" in page.read_text()


def test_a_junit_file_that_cannot_be_written_does_not_leave_last_nights_standing(
    tmp_path: Path, job: Path, results: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break31 M4: a full disk, exit 11, and the green file of the night before left in place.
    junit = tmp_path / "junit.xml"
    assert call_cli("report", results, "--job", job, "--junit", junit)[0] == ExitCode.OK

    def full_disk(*_args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("batchrun._report_file.os.replace", full_disk)
    code, _, err = call_cli("report", results, "--job", job, "--junit", junit)
    assert code == ExitCode.IO and "No space left on device (the earlier file there was removed" in err, err
    assert not junit.exists() and not list(tmp_path.glob("junit.xml*.tmp"))


def test_a_junit_file_that_cannot_be_written_leaves_no_green_page_beside_exit_11(
    tmp_path: Path, job: Path, results: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # verify30 N3: the page (written first) said "exit 0 (ok)" beside exit 11.
    import batchrun._junit as junit_module

    def full_disk(*_args: Any, **_kwargs: Any) -> None:
        from batchrun._exceptions import OutputFailed

        raise OutputFailed(f"{tmp_path / 'junit.xml'}: cannot write it: No space left on device")

    monkeypatch.setattr(junit_module, "write_junit", full_disk)
    page = tmp_path / "page.html"
    code, _, err = call_cli("report", results, "--job", job, "--junit", tmp_path / "junit.xml", "--html", page)
    assert code == ExitCode.IO and "No space left on device" in err, err
    text = page.read_text()
    assert "No verdict" in text and "exit 11" in text and "exit 0 (ok)" not in text


@pytest.mark.parametrize("with_job", [True, False])
@pytest.mark.parametrize("unwritable", ["junit", "page"])
def test_when_one_output_cannot_be_written_the_other_says_exit_11_not_last_nights_verdict(
    tmp_path: Path, job: Path, results: Path, monkeypatch: pytest.MonkeyPatch, unwritable: str, with_job: bool
) -> None:
    # verify31 V2, V3: last night's page said "exit 0 (ok)" (or the JUnit file "exit 7 ... killed")
    # beside exit 11 when the other file could not be written; without --job too (verify63 F6).
    import batchrun._report_file as output_paths
    from batchrun._exceptions import OutputFailed

    junit, page, gate = _last_nights_files(tmp_path, results, job, with_job)
    blocked = junit if unwritable == "junit" else page
    real = output_paths.write_report_file

    def full_disk(path: Path, text: str) -> None:
        # The placeholder written before the verdict fits (a few hundred bytes); the verdict's file
        # does not, as under `ulimit -f` (verify63 F6: the other file stayed green, or the placeholder).
        if path == blocked and "the gate ended before its verdict" not in text:
            blocked.unlink(missing_ok=True)  # as a write that fails removes the earlier file
            raise OutputFailed(f"{path}: cannot write it: No space left on device")
        real(path, text)

    for module in ("batchrun._report_file", "batchrun._junit", "batchrun._html_report"):
        monkeypatch.setattr(f"{module}.write_report_file", full_disk)
    code, _, err = call_cli("report", results, *gate, "--junit", junit, "--html", page)
    assert code == ExitCode.IO and "No space left on device" in err, err
    assert not blocked.exists()
    if unwritable == "junit":
        assert "No verdict" in page.read_text() and "exit 11" in page.read_text()
    else:
        assert _junit(junit)["gate"].find("failure").get("message").startswith("exit 11: ")


@pytest.mark.parametrize(
    ("threshold", "keep", "said"),
    [
        # A prompt's threshold, every row of that prompt lost (a shard that never came back).
        ("{prompts: {capital: 0.5}}", "sum", "prompt capital: its threshold could not be checked: no row in the file"),
        # ... or all of them skipped.
        ("{prompts: {capital: 0.5}}", "skipped", "(0 undecided, 0 in error, 12 skipped)"),
        ("{models: {openai/gpt-4o-mini: 0.5}}", "skipped", "model openai/gpt-4o-mini: its threshold could not be"),
        # A per-item gate with only each item's first repeat: no item can be decided.
        ("{per_item: {min: 2, of: 2}}", "first", "6 item(s) could not be checked against the per-item gate"),
    ],
)
def test_allow_partial_never_passes_a_threshold_none_of_whose_rows_was_graded(
    tmp_path: Path, results: Path, threshold: str, keep: str, said: str
) -> None:
    # break40 F2: exit 0, the threshold neither met nor missed, and nothing said of it.
    (tmp_path / "gated").mkdir()
    gated = write_job(
        tmp_path / "gated", SMALL_JOB.replace("max_wait_s: 5}", f"max_wait_s: 5, pass_threshold: {threshold}}}")
    )
    rows = read_rows(results)
    if keep == "sum":
        rows = [r for r in rows if r["prompt_id"] == "sum"]
    elif keep == "first":
        rows = [r for r in rows if r["repeat"] == 0]
    else:
        for row in rows:
            if row["prompt_id"] == "capital":
                row.update(status="skipped", reason="budget", content=None, checks=None, passed=None, score=None)
    part = tmp_path / "part.jsonl"
    part.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = call_cli("report", part, "--job", gated, "--allow-partial")
    assert code == ExitCode.ERRORS and said in err, err
    assert call_cli("report", results, "--job", gated)[0] == ExitCode.OK  # the whole file meets it


def test_options_may_come_between_a_commands_files(
    tmp_path: Path, job: Path, results: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break48 F2: `validate a.yaml -q b.yaml` and `merge OUT --job J SHARD` (orders the README's
    # synopses allow) were "unrecognized arguments: b.yaml".
    other = write_job(tmp_path, SMALL_JOB, name="other.yaml")
    assert call_cli("validate", job, "-q", other) == (ExitCode.OK, "", "")
    merged = tmp_path / "merged.jsonl"
    code, _, err = call_cli("merge", merged, "--job", job, results)
    assert code == ExitCode.OK and len(read_rows(merged)) == len(read_rows(results)), err
    code, _, err = call_cli("validate", job, "-q", tmp_path / "nope.yaml")  # the second file is still read
    assert code == ExitCode.USAGE and "nope.yaml" in err
    # verify49 N1: after "--" every word is a file, one named like an option too.
    write_job(tmp_path, SMALL_JOB, name="-j.yaml")
    monkeypatch.chdir(tmp_path)
    assert call_cli("validate", "-q", "--", "-j.yaml") == (ExitCode.OK, "", "")
    # verify50 N2: and options between files before it still are options.
    assert call_cli("validate", job, "-q", "--", "-j.yaml") == (ExitCode.OK, "", "")
    code, _, err = call_cli("validate", "--", "-j.yaml", "-q")  # a file named -q, which is not there
    assert code == ExitCode.USAGE and "-q" in err and "-j.yaml" not in err, err


def test_the_gate_grades_max_cost_on_the_answer_as_the_run_did_not_on_every_run_of_the_row(tmp_path: Path) -> None:
    # out-101 F1: after a deadline stop (an attempt in flight, billed) and a resume, `report --job`
    # graded max_cost_usd on the row's cost over both runs: pass -> fail, exit 3, where the run,
    # `report`, `diff` and `history` all said pass.
    job_text = SMALL_JOB.replace('checks: [{contains: "{{expect}}"}]', "checks: [{max_cost_usd: 1}]")
    job, out = write_job(tmp_path, job_text), tmp_path / "r.jsonl"
    assert call_cli(job, "--simulate", "-o", out, "-q")[0] == ExitCode.OK
    rows = read_rows(out)
    limit = 1.5 * max(r["cost"] for r in rows if r["prompt_id"] == "capital")  # one answer under, two over
    write_job(tmp_path, job_text.replace("max_cost_usd: 1", f"max_cost_usd: {limit!r}"))
    cut = [{**r, "status": "skipped", "reason": "deadline", "content": None, "passed": None} for r in rows]
    out.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in [*cut, *rows]))
    out.with_name("r.summary.json").unlink()  # written by hand: no run's summary vouches for it (out-149 F1)
    code, text, err = call_cli("report", out, "--job", job, "--json")
    assert code == ExitCode.OK, err
    total = json.loads(text)["total"]
    assert total["checked"] == total["passed"] == 12 and "re-graded" not in err
    assert total["cost_usd"] > 1.9 * sum(r["cost"] for r in rows)  # the row's cost is still both runs'


def test_the_report_page_lists_undecided_rows_and_counts_them(tmp_path: Path) -> None:
    # out-101 F2: 5 of 8 rows a grader never decided (the run exit 1): the page read "pass rate
    # 100.0% of 3 checked", "All 0 failing and error rows", and said "undecided" nowhere.
    job, out, page = write_job(tmp_path, judged_small_job()), tmp_path / "r.jsonl", tmp_path / "r.html"
    call_cli(job, "--simulate", "--sim", "judge_unparseable=1", "-o", out, "-q")
    undecided = sum(r["status"] == "ok" and r.get("passed") is None and bool(r.get("checks")) for r in read_rows(out))
    assert undecided > 0
    assert call_cli("report", out, "--html", page)[0] in (ExitCode.OK, ExitCode.ERRORS)
    html = page.read_text(encoding="utf-8")
    assert f'<span class="verdict" id="undecided">{undecided} undecided</span>' in html
    assert f"All {undecided} failing, undecided and error rows" in html
    assert html.count('data-kind="undecided"') == undecided and "undecided: " in html  # with why


def test_a_row_written_again_to_grade_its_stored_answer_keeps_the_cost_that_bought_it(tmp_path: Path) -> None:
    # out-103 F1: a resume grading what a stop cut off writes the stored answer again at $0; the
    # gate graded max_cost_usd on that $0: fail -> pass, exit 0, where the run exited 3.
    job_text = judged_small_job("run: {concurrency: 4, timeout_s: 5, max_attempts: 8, pass_threshold: 0.5}").replace(
        "checks: [{judge: 'Names {{expect}}.'}]", "checks: [{judge: 'Names {{expect}}.'}, {max_cost_usd: 0.0000001}]"
    )
    job, out = write_job(tmp_path, job_text), tmp_path / "r.jsonl"
    assert call_cli(job, "--simulate", "-o", out, "-q")[0] == ExitCode.QUALITY
    rows = read_rows(out)
    again = [{**r, **regraded_fields(r)} for r in rows if r["prompt_id"] == "capital"]  # as the resume writes them
    assert {r["cost"] for r in again} == {0.0}
    with out.open("a") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in again)
    resealed(out)  # the summary that resume writes
    code, text, err = call_cli("report", out, "--job", job, "--json")
    total = json.loads(text)["total"]
    assert code == ExitCode.QUALITY and total["passed"] == 0 and "fail -> pass" not in err, err


def test_the_gate_says_when_the_answers_came_from_the_simulator(
    tmp_path: Path, job: Path, results: Path, sim: Simulator, api_key_env: None
) -> None:
    # out-108 F7: a file the built-in simulator answered (--simulate left in a workflow) passed
    # the gate, exit 0, with no word of it; its summary said so ("endpoint": "simulator").
    code, _, err = call_cli("report", results, "--job", job)
    assert code == ExitCode.OK and f"warning: {results}: answered by the built-in simulator" in err
    real = tmp_path / "real.jsonl"
    assert call_cli(job, "--base-url", sim.base_url, "-o", real, "-q")[0] == ExitCode.OK
    code, _, err = call_cli("report", real, "--job", job)
    assert code == ExitCode.OK and "simulator" not in err, err
    # out-136 F3: diff of a real night and a simulated one was "no regression", not a word.
    code, _, err = call_cli("diff", real, results, "--fail-on-regression")
    assert f"warning: {results}: answered by the built-in simulator (--simulate), not by a model" in err, err
    assert str(real) + ":" not in err
    other = tmp_path / "other.jsonl"
    assert call_cli(job, "--simulate", "-o", other, "-q")[0] == ExitCode.OK
    assert "simulator" not in call_cli("diff", results, other)[2]  # both: a try-out, compared as one
    # out-137 4: nor a try-out copied without its summary, one killed (its journal says what
    # answered it), or a merge with a try-out shard in it.
    copied, killed, mixed = (tmp_path / name / "r.jsonl" for name in ("copied", "killed", "mixed"))
    for path in (copied, killed, mixed):
        path.parent.mkdir()
        path.write_bytes(results.read_bytes())
    killed_run_journal(killed, "simulator")
    summary = json.loads(summary_path(results).read_text())
    summary_path(mixed).write_text(json.dumps({**summary, "output": str(mixed), "endpoint": "mixed"}))
    said = {
        copied: "nothing beside it (a summary, a journal) says what answered it",
        killed: "answered by the built-in simulator (--simulate), not by a model",
        mixed: "answered in part by the built-in simulator (a merge of simulated and real shards)",
    }
    for path, words in said.items():
        code, _, err = call_cli("diff", real, path)
        assert f"warning: {path}: {words}" in err and str(real) + ":" not in err, err
    assert "simulator" not in call_cli("diff", killed, results)[2]  # both the simulator's
    # out-138 F1: a try-out copied over a model's night, the night's summary kept: it saw another
    # file (the sizes made to agree: its last bytes do not).
    over = tmp_path / "over" / real.name
    over.parent.mkdir()
    over.write_bytes(results.read_bytes())
    night = json.loads(summary_path(real).read_text())
    summary_path(over).write_text(json.dumps({**night, "output": str(over), "results_bytes": over.stat().st_size}))
    code, _, err = call_cli("diff", real, over)
    assert f"warning: {over}: not the file its summary was written for" in err, err  # said so (out-165 F6)
    # out-138 F4: an endpoint that is no URL ("", "SIMULATOR") says nothing of what answered.
    for lie in ("", "SIMULATOR"):
        summary_path(mixed).write_text(json.dumps({**summary, "output": str(mixed), "endpoint": lie}))
        code, _, err = call_cli("diff", real, mixed)
        assert f"warning: {mixed}: {said[copied]}" in err, (lie, err)
    summary_path(mixed).write_text(json.dumps({**summary, "output": str(mixed), "endpoint": "mixed"}))
    # out-138 F6: a killed run's journal beside another file (copied over the killed run's) does
    # not vouch for it: none of its records' generation ids is the journal's.
    stray = tmp_path / "stray" / "r.jsonl"
    stray.parent.mkdir()
    stray.write_bytes(results.read_bytes())
    killed_run_journal(stray, "https://openrouter.ai/api/v1", own=False)
    code, _, err = call_cli("diff", results, stray)
    assert f"warning: {stray}: {said[copied]}" in err, err
    # out-139 F6: nor does one when the file's records carry no generation id to tie it by.
    rows = [{**row, "generation_id": None} for row in read_rows(results)]
    stray.write_text("".join(json.dumps(row) + "\n" for row in rows))
    killed_run_journal(stray, "https://openrouter.ai/api/v1")
    code, _, err = call_cli("diff", results, stray)
    assert f"warning: {stray}: {said[copied]}" in err, err
    for path in (killed, mixed):  # and the gate says it of them too
        assert f"warning: {path}: {said[path]}" in call_cli("report", path, "--job", job)[2]


_GATED = """
name: gated
{judge}models: [openai/gpt-4o-mini]
prompts:
  - id: capital
    text: "Capital of {{{{country}}}}?"
    vars: [{{country: France, expect: Paris}}, {{country: Japan, expect: Tokyo}}]
{capital}  - id: sum
    text: "What is {{{{a}}}} + 1?"
    vars: [{{a: 1}}, {{a: 2}}]
{sum}run: {{concurrency: 4, pass_threshold: 0.5}}
"""


@pytest.mark.parametrize("judged", [False, True])
def test_a_prompt_whose_checks_were_removed_has_no_verdict_in_the_gate(tmp_path: Path, judged: bool) -> None:
    # out-136 F1: a prompt with no check left kept the verdicts the file held: the gate passed on
    # them at 50% where a run of the job as it is was 0% (exit 3), and, the other way, failed on
    # a check the job no longer had, its JUnit file naming it. A judge check elsewhere in the job
    # (its verdicts kept, no key) took the same path.
    judge = "judge: {model: openai/gpt-4o-mini}\n" if judged else ""
    capital = '    checks: [{contains: "{{expect}}"}' + (', {judge: "Is it right?"}' if judged else "") + "]\n"
    impossible = '    checks: [{equals: "never", name: impossible}]\n'
    night = tmp_path / "night.jsonl"
    whole = _GATED.format(judge=judge, capital=capital, sum=impossible)
    assert call_cli(write_job(tmp_path, whole), "--simulate", "-o", night, "-q")[0] == ExitCode.OK  # 50%
    for name, edited in {
        "capital": _GATED.format(judge=judge, capital="", sum=impossible),
        "sum": _GATED.format(judge=judge, capital=capital, sum=""),
    }.items():
        folder = tmp_path / name
        folder.mkdir()
        job, junit, fresh = write_job(folder, edited), folder / "junit.xml", folder / "fresh.jsonl"
        code, out, err = call_cli("report", night, "--job", job, "--json", "--junit", junit)
        call_cli(job, "--simulate", "-o", fresh, "-q")
        fresh_code, again, _ = call_cli("report", fresh, "--job", job, "--json")
        # The gate on last night's answers says what a run of the job as it is now says.
        assert code == fresh_code and code == (ExitCode.QUALITY if name == "capital" else ExitCode.OK), (name, err)
        figures = ("checked", "passed", "pass_rate")
        assert {k: json.loads(out)["total"][k] for k in figures} == {k: json.loads(again)["total"][k] for k in figures}
        assert ("impossible" in junit.read_text()) is (name == "capital"), name
        assert "-> no check: 2" in err, err


def test_records_edited_since_the_runs_summary_fail_the_gate_and_are_not_merged(tmp_path: Path) -> None:
    # out-149 F1: a failing night's failed records replaced by a passing night's records of the same
    # rows passed `report --job` (the CI gate), exit 0 and not a word; padded back to the size its
    # summary saw, plain `report` passed it too; and `merge` laundered edited shards into a new file.
    job = write_job(tmp_path, SMALL_JOB)
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    assert call_cli(job, "--simulate", "-q", "-o", good)[0] == ExitCode.OK
    wrong = ("--sim", "accuracy.openai/gpt-4o-mini=0")
    assert call_cli(job, "--simulate", "-q", "-o", bad, *wrong)[0] == ExitCode.OK  # no threshold
    assert any(row.get("passed") is False for row in read_rows(bad))
    passing = {json.loads(line)["id"]: line for line in good.read_text().splitlines(keepends=True)}

    def launder(path: Path, pad: bool) -> None:
        lines = [
            passing[json.loads(line)["id"]] if json.loads(line).get("passed") is False else line
            for line in path.read_text().splitlines(keepends=True)
        ]
        short = json.loads(summary_path(path).read_text())["results_bytes"] - len("".join(lines).encode())
        if pad and short > 0:  # JSON allows blanks: the size its summary saw, other bytes
            lines[0] = lines[0][:-1] + " " * short + "\n"
        path.write_text("".join(lines))

    launder(bad, pad=False)
    gate: list[str | Path] = ["report", bad, "--job", job]
    for args in (gate, ["report", bad]):
        code, _, err = call_cli(*args)
        assert code == ExitCode.INCOMPLETE and "shorter than when its summary was written" in err, (args, err)
    launder(bad, pad=True)
    assert bad.stat().st_size == json.loads(summary_path(bad).read_text())["results_bytes"]
    for args in (gate, [*gate, "--allow-partial"], ["report", bad]):
        code, _, err = call_cli(*args)
        assert code == ExitCode.INCOMPLETE and "not the file its summary was written for" in err, (args, err)
    code, out, _ = call_cli("history", bad)
    assert code == 0 and "not the file its summary was written for" in out, out
    # Another job's night put in its place, summary left: not "lines appended".
    other = tmp_path / "other.jsonl"
    assert call_cli(job, "--simulate", "-q", "-o", other, "--sim", "seed=9")[0] == ExitCode.OK
    bad.write_bytes(other.read_bytes())
    code, _, err = call_cli("report", bad, "--job", job)
    assert code == ExitCode.INCOMPLETE and "lines appended" not in err, err
    # Shards: an edited one is not merged (its rows would pass every gate after the merge).
    shards = [tmp_path / f"s{k}.jsonl" for k in (1, 2)]
    for k, shard in enumerate(shards, 1):
        call_cli(job, "--simulate", "-q", "-o", shard, "--shard", f"{k}/2", "--no-thresholds", *wrong)
    edited = next(shard for shard in shards if any(row.get("passed") is False for row in read_rows(shard)))
    launder(edited, pad=True)
    code, _, err = call_cli("merge", tmp_path / "m.jsonl", *shards, "--job", job)
    assert code == ExitCode.USAGE and f"{edited}: not the file its summary was written for" in err, err
    assert not (tmp_path / "m.jsonl").exists()
    # Lines appended with no run since: said by the gate as by `report`.
    appended = tmp_path / "a.jsonl"
    assert call_cli(job, "--simulate", "-q", "-o", appended)[0] == ExitCode.OK
    appended.write_bytes(appended.read_bytes() + good.read_bytes())
    # out-163 F1: they supersede their rows' records (a failing night's failed rows appended as
    # passes), so the file is not the one its run wrote: a change, exit 12, not a warning.
    reads: list[list[str | Path]] = [["report", appended, "--job", job], ["report", appended]]
    for args in reads:
        code, _, err = call_cli(*args)
        assert code == ExitCode.INCOMPLETE and "appended since its summary was written, with no run since" in err, err
    code, _, err = call_cli(job, "--simulate", "-q", "-o", appended, "--resume")
    assert code == ExitCode.INCOMPLETE and "records edited after a run's summary was written" in err, err
    assert call_cli("report", appended, "--job", job)[0] == ExitCode.INCOMPLETE  # the resume did not launder it


def test_a_record_edited_anywhere_is_told_and_an_older_summarys_tail_digest_still_vouches(tmp_path: Path) -> None:
    # out-151 F2: the summary's digest covered the file's last 64 KiB only, so a failed record
    # turned into a pass near the start of a 166 KB night passed the gate, exit 0.
    job = Path(__file__).resolve().parent.parent / "jobs" / "eval.yaml"
    out = tmp_path / "night.jsonl"
    assert call_cli(job, "--simulate", "-q", "-o", out)[0] == ExitCode.OK
    data = out.read_bytes()
    assert len(data) > 2 * (1 << 16)

    def flip(at: int) -> bytes:
        return data[:at] + (b"X" if data[at : at + 1] != b"X" else b"Y") + data[at + 1 :]

    at = data.index(b'"content":"') + len(b'"content":"')  # the first row's answer, one letter changed
    assert at < data.index(b"\n")
    out.write_bytes(flip(at))  # its size kept
    gates: list[list[str | Path]] = [["report", out, "--job", job], ["report", out]]
    for args in gates:
        code, _, err = call_cli(*args)
        assert code == ExitCode.INCOMPLETE and "not the file its summary was written for" in err, (args, err)
    # out-160 F2: a resume with nothing to send wrote a summary vouching for the edit: `report` exit 0.
    # It goes on (counting what the summary said was spent), and its summary says so, resumed again too.
    for _ in range(2):
        code, _, err = call_cli(job, "--simulate", "-q", "-o", out, "--resume")  # out-163 F3: not exit 0
        assert code == ExitCode.INCOMPLETE and "records edited after a run's summary was written" in err, err
        for args in gates:
            code, _, err = call_cli(*args)
            assert code == ExitCode.INCOMPLETE and "records edited after a run's summary was written" in err, err
    shard = tmp_path / "s.jsonl"
    shard.write_bytes(out.read_bytes())
    summary_path(shard).write_text(summary_path(out).read_text().replace("night.jsonl", "s.jsonl"))
    code, _, err = call_cli("merge", tmp_path / "m.jsonl", shard, "--job", job)
    assert code == ExitCode.USAGE and "records edited after a run's summary was written" in err, err
    # A summary written before the whole-file digest (its `results_tail` only) vouches as it did:
    # for the file untouched, and against an edit of its last 64 KiB.
    from batchrun._summary_floor import tail_digest

    out.write_bytes(data)
    summary = json.loads(summary_path(out).read_text())
    del summary["results_edited"]
    summary["results_tail"] = tail_digest(out, summary.pop("results_digest") and len(data))
    summary_path(out).write_text(json.dumps(summary))
    assert call_cli("report", out, "--job", job)[0] == ExitCode.OK
    at = data.rindex(b'"content":"') + len(b'"content":"')  # the last row's answer this time
    out.write_bytes(flip(at))
    code, _, err = call_cli("report", out)
    assert code == ExitCode.INCOMPLETE and "not the file its summary was written for" in err, err


def test_the_runs_exit_code_is_kept_in_its_summary_and_shown_by_a_page_made_later(tmp_path: Path) -> None:
    # out-152 F2: a night that exited 3 by its thresholds got a green "exit 0 (ok)" page from
    # `report --html` without --job (which gates no threshold), nothing saying the run failed.
    job = write_job(tmp_path, SMALL_JOB.replace("run: {", "run: {pass_threshold: 0.9, "))
    wrong = ("--sim", "accuracy.openai/gpt-4o-mini=0")
    out, page = tmp_path / "r.jsonl", tmp_path / "r.html"
    assert call_cli(job, "--simulate", "-q", "-o", out, *wrong)[0] == ExitCode.QUALITY
    summary = json.loads(summary_path(out).read_text())
    assert summary["exit_code"] == 3 and any("below the threshold 90.0%" in r for r in summary["exit_reasons"])
    code, _, err = call_cli("report", out, "--html", page)
    assert code == ExitCode.OK, err  # report's own verdict: no threshold without --job
    assert 'id="run-exit">its last run exited 3 (quality): pass rate' in page.read_text()
    # As the CLI gave it: --pass-threshold and --no-thresholds included.
    for k, flags in enumerate((("--pass-threshold", "0"), ("--no-thresholds",))):
        other = tmp_path / f"o{k}.jsonl"
        assert call_cli(job, "--simulate", "-q", "-o", other, *wrong, *flags)[0] == ExitCode.OK
        assert json.loads(summary_path(other).read_text())["exit_code"] == 0
    # Only a code a run gives is shown: an edited one is left out.
    summary_path(out).write_text(json.dumps({**json.loads(summary_path(out).read_text()), "exit_code": "3"}))
    assert call_cli("report", out, "--html", page)[0] == ExitCode.OK and "run-exit" not in page.read_text()


def test_lines_appended_are_told_beside_a_finished_batch_nights_state_a_fake_journal_or_with_no_newline(
    tmp_path: Path,
) -> None:
    # out-165 F1: a batch-mode night keeps X.batches.json when done, and it was read as "a run
    # since": a passing night appended got past the gate, exit 0. F2: so did an empty file under the
    # journal's name, and a resume then sealed the edit. F3: a record appended without its newline
    # was kept by a resume ("added the missing newline"), one row a resume, and sealed.
    job = write_job(tmp_path, SMALL_JOB)
    good = tmp_path / "good.jsonl"
    assert call_cli(job, "--simulate", "-q", "-o", good)[0] == ExitCode.OK
    quick = [f"--sim=batch_{phase}_s=0.1" for phase in ("validating", "in_progress", "finalizing")]
    batch = tmp_path / "batch.jsonl"
    assert call_cli(job, "--simulate", *quick, "--mode", "batch", "-q", "-o", batch)[0] == ExitCode.OK
    assert state_path(batch).exists()
    batch.write_bytes(batch.read_bytes() + good.read_bytes())
    code, _, err = call_cli("report", batch, "--job", job)
    assert code == ExitCode.INCOMPLETE and "appended since its summary was written" in err, err
    night = tmp_path / "night.jsonl"
    assert call_cli(job, "--simulate", "-q", "-o", night)[0] == ExitCode.OK
    first = good.read_bytes().splitlines(keepends=True)[0]
    for journal in (b"", b"{}\n"):
        journal_path(night).write_bytes(journal)
        night.write_bytes(night.read_bytes() + first)
        code, _, err = call_cli("report", night, "--job", job)
        assert code == ExitCode.INCOMPLETE and "appended since its summary was written" in err, err
        journal_path(night).unlink()
        resealed(night)
    # Without its newline: the resume keeps the record, and says the file was edited.
    night.write_bytes(night.read_bytes() + first.rstrip(b"\n"))
    code, _, err = call_cli(job, "--simulate", "-q", "-o", night, "--resume")
    assert code == ExitCode.INCOMPLETE and "records edited after a run's summary was written" in err, err
    assert call_cli("report", night, "--job", job)[0] == ExitCode.INCOMPLETE


def test_the_gate_says_when_nothing_beside_the_file_can_tell_an_edit(tmp_path: Path) -> None:
    # out-165 F4: with the summary removed, or its results_bytes and digest taken out of it, an
    # edited failing night passed `report --job` with exit 0 and not a word.
    job = write_job(tmp_path, SMALL_JOB)
    night = tmp_path / "night.jsonl"
    assert call_cli(job, "--simulate", "-q", "-o", night)[0] == ExitCode.OK
    code, _, err = call_cli("report", night, "--job", job)
    assert code == ExitCode.OK and "cannot be told" not in err, err
    summary = json.loads(summary_path(night).read_text())
    for name in ("results_bytes", "results_digest"):
        summary_path(night).write_text(json.dumps({k: v for k, v in summary.items() if k != name}))
        reads: list[list[str | Path]] = [["report", night, "--job", job], ["report", night]]
        for args in reads:
            code, _, err = call_cli(*args)
            assert f"{night}: its summary does not say what the file held (its results_digest): whether" in err, err
    summary_path(night).unlink()
    code, _, err = call_cli("report", night, "--job", job)
    assert code == ExitCode.OK and f"{night}: no summary of its run beside it: whether its records were" in err


def test_diff_says_a_file_edited_since_its_run(tmp_path: Path) -> None:
    # out-165 F6: `diff` of a file edited in place said only "nothing beside it (a summary, a
    # journal) says what answered it", with its summary right there.
    job = write_job(tmp_path, SMALL_JOB)
    before, after = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for out in (before, after):
        assert call_cli(job, "--simulate", "-q", "-o", out)[0] == ExitCode.OK
    assert "not the file its summary" not in call_cli("diff", before, after)[2]
    lines = after.read_text().splitlines(keepends=True)
    first = json.loads(lines[0])
    lines[0] = json.dumps({**first, "content": first["content"] + "!"}) + "\n"
    after.write_text("".join(lines))
    code, _, err = call_cli("diff", before, after)
    assert f"{after}: not the file its summary was written for" in err and "nothing beside it" not in err, err


def test_merge_refuses_another_jobs_file_put_under_a_shards_name(tmp_path: Path) -> None:
    # out-160: with the shard's summary left beside it, merge said "no usable summary", exit 12,
    # where a changed shard is refused (exit 2); --allow-partial would have merged it.
    job = write_job(tmp_path, SMALL_JOB)
    other = write_job(tmp_path, SMALL_JOB.replace("name: small", "name: other"), "other.yaml")
    shards = [tmp_path / f"s{k}.jsonl" for k in (1, 2)]
    for k, shard in enumerate(shards, 1):
        assert call_cli(job, "--simulate", "-q", "-o", shard, "--shard", f"{k}/2")[0] == ExitCode.OK
    assert call_cli(other, "--simulate", "-q", "-o", tmp_path / "o.jsonl")[0] == ExitCode.OK
    shards[0].write_bytes((tmp_path / "o.jsonl").read_bytes())
    for extra in ([], ["--allow-partial"]):
        code, _, err = call_cli("merge", tmp_path / "m.jsonl", *shards, *extra)
        assert code == ExitCode.USAGE and "its summary is of a run of job 'small'" in err and "not merged" in err, err
    assert not (tmp_path / "m.jsonl").exists()


def test_a_row_edited_under_its_id_in_a_file_with_its_summary_is_an_edit(tmp_path: Path) -> None:
    # out-160: a same-size edit of a row's variables was exit 2 ("not in the matrix") from the
    # gate, while the file is one edited since its run: exit 12, both said.
    job = write_job(tmp_path, SMALL_JOB)
    night = tmp_path / "night.jsonl"
    assert call_cli(job, "--simulate", "-q", "-o", night)[0] == ExitCode.OK
    data = night.read_bytes()
    country = next(c for c in (b"France", b"Japan", b"Italy") if c in data)
    night.write_bytes(data.replace(b'"country":"' + country + b'"', b'"country":"' + country[::-1] + b'"', 1))
    assert night.stat().st_size == len(data)
    code, _, err = call_cli("report", night, "--job", job)
    assert code == ExitCode.INCOMPLETE and "not the file its summary was written for" in err, err
    assert "1 row(s) are not in the matrix of job 'small'" in err


def test_a_page_says_whose_exit_code_it_shows_when_a_later_run_left_no_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # out-169 F1: a resume whose summary could not be written (exit 11) left the first run's, and
    # the page made later said "its last run exited 3" of a night that exited 11.
    job = write_job(tmp_path, SMALL_JOB.replace("run: {", "run: {pass_threshold: 0.9, "))
    wrong = ("--sim", "accuracy.openai/gpt-4o-mini=0")
    out, page = tmp_path / "r.jsonl", tmp_path / "r.html"
    assert call_cli(job, "--simulate", "-q", "-o", out, *wrong)[0] == ExitCode.QUALITY
    assert call_cli("report", out, "--html", page)[0] == ExitCode.OK
    assert "(its summary)</span>" in page.read_text()  # the file as its run left it: nothing to add

    def no_room(path: Path, *_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("batchrun._orchestration.write_json_atomically", no_room)
    code, _, err = call_cli(job, "--simulate", "-q", "-o", out, "--resume", *wrong)
    assert code == ExitCode.IO and "writing the summary failed" in err, err
    monkeypatch.undo()
    call_cli("report", out, "--html", page)
    said = page.read_text()
    assert 'id="run-exit">its last run exited 3' in said
    assert "an earlier run&#39;s: a run since (its journal is beside the file) wrote no summary" in said


def test_a_page_counts_the_exit_reasons_it_leaves_out(tmp_path: Path) -> None:
    # out-169 F2: reasons past the fifth were dropped with nothing saying so.
    job = write_job(tmp_path, SMALL_JOB)
    out, page = tmp_path / "r.jsonl", tmp_path / "r.html"
    assert call_cli(job, "--simulate", "-q", "-o", out)[0] == ExitCode.OK
    summary = json.loads(summary_path(out).read_text())
    summary.update(exit_code=3, exit_reasons=[f"reason {k}" for k in range(8)])
    summary_path(out).write_text(json.dumps(summary))
    call_cli("report", out, "--html", page)
    said = page.read_text()
    assert "reason 4; and 3 more (in its summary)" in said and "reason 5" not in said


def test_a_line_past_the_record_limit_after_a_summary_is_passed_over_not_held_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # out-173 F3: a 400 MiB line with no newline appended past the summary's end was joined a
    # megabyte at a time (quadratic) and parsed whole: `report` ran past two minutes. Small
    # limits here stand for 32 MiB and the 1 MiB pieces.
    from batchrun import _summary_floor

    monkeypatch.setattr(_summary_floor, "MAX_RECORD_BYTES", 256)
    monkeypatch.setattr(_summary_floor, "_DIGEST_PIECE", 64)
    seen: list[int] = []
    looked_at = _summary_floor._an_object

    def an_object(line: bytes) -> bool:
        seen.append(len(line))
        return looked_at(line)

    monkeypatch.setattr(_summary_floor, "_an_object", an_object)
    path = tmp_path / "r.jsonl"
    head = b'{"id": "a"}\n'
    path.write_bytes(head + b'{"id": "' + b"y" * 10_000)
    assert _summary_floor.records_appended(path, len(head)) is False
    assert max(seen, default=0) <= 256 + 64
    path.write_bytes(head + b'{"id": "' + b"y" * 10_000 + b'"}\n{"id": "b"}\n')
    assert _summary_floor.records_appended(path, len(head)) is True  # the record after it counts
    path.write_bytes(head + b"y" * 10_000 + b"\nnot json\n")
    assert _summary_floor.records_appended(path, len(head)) is False


def test_records_removed_then_asked_again_by_a_resume_are_said_at_every_gate(results: Path, job: Path) -> None:
    # out-173 F1: a night's failing records taken out and the file resumed: the rows asked again
    # (until they passed), the resume exit 0, its summary vouching for the file, the gate 0.
    lines = results.read_bytes().splitlines(keepends=True)
    results.write_bytes(b"".join(lines[:3] + lines[6:]))
    said = "records removed or cut short after a run's summary was written, before a resume asked them again"
    for _ in range(2):  # and a later resume still says so
        code, _, err = call_cli(job, "--simulate", "-o", results, "--resume", "-q")
        assert code == ExitCode.INCOMPLETE and said in err, err
        assert len({r["id"] for r in read_rows(results)}) == 20
        for gate in (("report", results), ("report", results, "--job", job)):
            code, _, err = call_cli(*gate)
            assert code == ExitCode.INCOMPLETE and said in err, (gate, err)
    assert said in json.loads(summary_path(results).read_text())["results_edited"]


def test_another_jobs_summary_beside_a_file_is_named_as_such_and_refused_before_anything_is_written(
    results: Path, job: Path, tmp_path: Path
) -> None:
    # out-173 F6: "has no summary beside it", then "not the summary of done.jsonl (unreadable)" for
    # a readable summary of another job's run; `report` said "no summary of its run beside it".
    other = write_job(tmp_path, SMALL_JOB.replace("name: small", "name: other"), "other.yaml")
    assert call_cli(other, "--simulate", "-o", tmp_path / "o.jsonl", "-q")[0] == ExitCode.OK
    summary_path(results).write_bytes(summary_path(tmp_path / "o.jsonl").read_bytes())
    said = f"{summary_path(results)}: the summary of a run of job 'other', not of job 'small' whose records"
    said += " done.jsonl holds"
    code, _, err = call_cli("report", results)
    assert code == ExitCode.OK and f"{said}: left out (rows never written cannot be counted)" in err, err
    assert "no summary of its run beside it" not in err
    results.write_bytes(results.read_bytes() + b'{"id": "torn')  # a torn tail a resume would cut
    before = results.read_bytes()
    code, _, err = call_cli(job, "--simulate", "-o", results, "--resume", "-q")
    assert (code, err) == (ExitCode.USAGE, f"batchrun: {said}: move it away to resume\n")
    assert results.read_bytes() == before
    # out-174 F5: one naming this very file was "unreadable" too.
    other_summary = json.loads(summary_path(results).read_text())
    summary_path(results).write_text(json.dumps({**other_summary, "output": str(results)}))
    code, _, err = call_cli(job, "--simulate", "-o", results, "--resume", "-q")
    assert code == ExitCode.USAGE and "its summary is of a run of job 'other', its first record of job 'small'" in err
    assert "unreadable" not in err and results.read_bytes() == before


def test_a_journal_whose_attempts_went_out_before_the_summary_is_no_run_since(results: Path, job: Path) -> None:
    # out-173 F2: a killed run's journal copied from another file beside one with rows appended by
    # hand made them a "run since": report, the gate and merge passed the appended rows, exit 0.
    written = results.stat().st_size
    again = b"".join(results.read_bytes().splitlines(keepends=True)[:3]).replace(b'"latency_ms":', b'"latency_ms":1')
    results.write_bytes(results.read_bytes() + again)  # three rows' records again, each edited
    killed_run_journal(results, "simulator")  # its attempts at 0: out when the file was empty
    for gate in (("report", results), ("report", results, "--job", job)):
        code, _, err = call_cli(*gate)
        assert code == ExitCode.INCOMPLETE and "appended since its summary was written, with no run since" in err, err
    # A run since has its attempts go out past where the summary saw the file end: it vouches.
    journal = journal_path(results)
    journal.write_text(journal.read_text().replace('"at": 0', f'"at": {written}'))
    code, _, err = call_cli("report", results)
    assert "with no run since" not in err, err


def test_diff_as_a_gate_refuses_a_file_its_run_did_not_write(tmp_path: Path, job: Path) -> None:
    # out-174 F2: a night's failing records removed and asked again by a resume (until they
    # passed): `report` exit 12, `diff --fail-on-regression` exit 0 with a warning only.
    before, after = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for night in (before, after):
        assert call_cli(job, "--simulate", "-q", "-o", night)[0] == ExitCode.OK
    lines = after.read_bytes().splitlines(keepends=True)
    after.write_bytes(b"".join(lines[:2] + lines[5:]))
    assert call_cli(job, "--simulate", "-q", "-o", after, "--resume")[0] == ExitCode.INCOMPLETE
    said = "records removed or cut short after a run's summary was written"
    code, out, err = call_cli("diff", before, after, "--fail-on-regression", "--json")
    assert code == ExitCode.INCOMPLETE and said in err and said in json.loads(out)["edited"][0], err
    code, out, _ = call_cli("diff", before, after, "--fail-on-regression", "--markdown")
    assert code == ExitCode.INCOMPLETE and f"**Not what its run wrote:** {after}: {said}" in out, out
    code, _, err = call_cli("diff", before, after)  # not a gate: compared as it is, and said
    assert code == ExitCode.OK and said in err
    assert call_cli("diff", before, before, "--fail-on-regression")[0] == ExitCode.OK


def test_report_json_gives_its_exit_code_and_why(results: Path, job: Path) -> None:
    # out-174 F8: `report --json` exited 12 and what a program read held no reason for it.
    lines = results.read_bytes().splitlines(keepends=True)
    results.write_bytes(b"".join(lines[:3] + lines[4:]))
    for extra in ((), ("--job", job)):
        code, out, _ = call_cli("report", results, "--json", *extra)
        shown = json.loads(out)
        assert code == shown["exit_code"] == ExitCode.INCOMPLETE, extra
        assert any("removed" in reason for reason in shown["exit_reasons"]), shown["exit_reasons"]
    results.write_bytes(b"".join(lines))
    code, out, _ = call_cli("report", results, "--json")
    assert (code, json.loads(out)["exit_code"], json.loads(out)["exit_reasons"]) == (ExitCode.OK, 0, [])
