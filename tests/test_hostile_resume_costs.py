"""What a row cost across runs: a resumed file's readers count every record's spend
(break-14b M2), against lying servers over loopback."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from batchrun import ExitCode, load_job, matrix_requests
from batchrun._journal_file import crash_fields, journal_key_gap, journal_path, read_journal, unrecorded_attempts
from batchrun._ledger import CreditLedger
from batchrun._reader import final_records, scan_states

from .conftest import FAKE_KEY, call_cli, child_env, read_rows, start, wait_for_lines, write_job
from .hostile import HostileServer, RawRequest, chat_payload, http, json_answer, run

pytestmark = pytest.mark.usefixtures("keys_env")
ANSWER_COST = 0.00001  # chat_payload's usage.cost


def _cut(generation_id: str) -> bytes:
    """A 200 whose JSON body is cut short: generated, so maybe billed (held, looked up)."""
    return http(200, b'{"id": "gen-', {"Content-Type": "application/json", "X-Generation-Id": generation_id})


def _honest() -> HostileServer:
    return HostileServer(chat=lambda request: json_answer(200, chat_payload()))


def _resume(server: HostileServer, tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    """The job again on the same output, `--resume`: the file's rows, each once (folded)."""
    out = tmp_path / "out.jsonl"
    with server.running():
        job = tmp_path / "job.yaml"
        code, stdout, stderr = call_cli(job, "--base-url", server.base_url, "-o", out, "--resume", *args)
    assert "Traceback" not in stdout + stderr and code in (0, 1, 5)
    return list(final_records(out))


def _row_ids(path: Path) -> list[str]:
    """The row ids of the job at `path`: a journal's attempts are of the job's own rows."""
    return [request.id for request in matrix_requests(load_job(path))]


def _report(out: Path) -> dict[str, Any]:
    code, text, _ = call_cli("report", out, "--json")
    assert code in (0, 1)
    result: dict[str, Any] = json.loads(text)
    return result


def test_a_row_sent_again_still_counts_what_its_first_attempt_may_have_cost(tmp_path: Path) -> None:
    # Run 1: every answer is cut short (maybe billed, nothing says how much): unknown, held.
    first = run(HostileServer(chat=lambda request: _cut("gen-abc")), tmp_path)
    held = {r["id"]: r["cost_held"] for r in first.rows}
    assert all(h > 0 for h in held.values())
    # Run 2 sends them again and is answered at a known cost: the rows are not $0.00004 in all.
    rows = _resume(_honest(), tmp_path, "--retry-errors")
    assert {r["status"] for r in rows} == {"ok"}
    out = tmp_path / "out.jsonl"
    for row in rows:
        assert row["cost"] is None and row["cost_status"] == "unknown" and row["cost_unknown"] is True
        assert row["cost_held"] == pytest.approx(held[row["id"]] + ANSWER_COST)
        assert row["spent"] == pytest.approx(held[row["id"]] + ANSWER_COST) and row["earlier_records"] == 1
        # The answer's reported cost is the row's known part: its lower bound (break-14c m5).
        assert row["cost_known"] == pytest.approx(ANSWER_COST)
    assert sum(r["spent"] for r in rows) == pytest.approx(scan_states(out).spent_usd)  # what a resume counts
    total = _report(out)["total"]
    assert total["cost_unknown_rows"] == 4
    # "0.000040+?": the known answers are the lower bound; the worst cases held are the rest.
    assert total["cost_usd"] == pytest.approx(4 * ANSWER_COST)
    assert total["cost_held_usd"] == pytest.approx(sum(held.values()))
    assert "+?" in call_cli("report", out)[1] and "+?" in call_cli("history", out, "--markdown")[1]
    merged = tmp_path / "merged.jsonl"
    assert call_cli("merge", out, "-o", merged)[0] == 0
    assert scan_states(merged).spent_usd == pytest.approx(scan_states(out).spent_usd)


def test_a_cost_learnt_late_is_counted_once_when_the_row_is_sent_again(tmp_path: Path) -> None:
    asked: set[str] = set()

    def generation(request: RawRequest) -> bytes:
        gid = request.path.split("id=")[1]
        if gid not in asked:  # not known yet at the row's own lookup; known at the end of the run
            asked.add(gid)
            return json_answer(404, {"error": {"code": 404, "message": "Generation not found"}})
        return json_answer(200, {"data": {"id": gid, "total_cost": 0.02}})

    ids = iter(f"gen-{n}" for n in range(10))
    server = HostileServer(chat=lambda request: _cut(next(ids)), routes={"/generation": generation})
    first = run(server, tmp_path)
    assert {(r["cost"], r["cost_status"]) for r in first.rows} == {(0.02, "looked_up")}  # each row written twice
    rows = _resume(_honest(), tmp_path, "--retry-errors")
    out = tmp_path / "out.jsonl"
    assert {r["status"] for r in rows} == {"ok"}
    for row in rows:  # the looked-up attempt once (its first record replaced), plus the answer
        assert row["cost"] == pytest.approx(0.02 + ANSWER_COST) and row["cost_status"] == "looked_up"
        assert row["spent"] == pytest.approx(0.02 + ANSWER_COST) and row["earlier_records"] == 1
    assert sum(r["spent"] for r in rows) == pytest.approx(scan_states(out).spent_usd)
    assert _report(out)["total"]["cost_usd"] == pytest.approx(4 * (0.02 + ANSWER_COST))


# -- kill -9 with requests in flight (break-14b M4) ------------------------------------------------
KILL_JOB = """
name: crash
defaults:
  params: {max_tokens: 16}
models: [openai/gpt-4o-mini]
prompts:
  - id: sum
    text: "What is {{n}} + 1?"
    vars: [{n: 1}, {n: 2}, {n: 3}, {n: 4}, {n: 5}, {n: 6}, {n: 7}, {n: 8}]
run: {concurrency: 4, timeout_s: 60, max_attempts: 1, grace_s: 1}
"""


def _stall(request: RawRequest) -> Any:
    """Headers naming the generation, then nothing: generating (and billing) while the client waits."""
    row = request.headers.get("x-batchrun-row", "x")

    async def write(writer: asyncio.StreamWriter) -> None:
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nX-Generation-Id: gen-{row}\r\n\r\n".encode())
        await writer.drain()
        await asyncio.sleep(3600)

    return write


@pytest.mark.parametrize("looked_up", [False, True])
def test_kill_9_with_requests_in_flight_then_resume_counts_them(tmp_path: Path, looked_up: bool) -> None:
    path = write_job(tmp_path, KILL_JOB)
    out = tmp_path / "out.jsonl"
    journal = tmp_path / "out.attempts.jsonl"
    stall = HostileServer(chat=_stall)
    with stall.running():
        env = child_env(OPENROUTER_API_KEY=FAKE_KEY)
        process = start(path, "--base-url", stall.base_url, "-o", out, "-q", "--budget", "1", env=env)
        # Whose journal, the key's reading at the start, then four attempts out, each with its generation id.
        wait_for_lines(journal, 10, process)
        process.kill()
        process.wait()
    in_flight = set(stall.chat_rows())
    assert len(in_flight) == 4 and (not out.exists() or out.read_text() == "")  # no record of them
    # Never resumed, the crash still shows: its attempts are unknown costs, worst cases held (N10).
    code, text, err = call_cli("report", out, "--json")
    assert code == ExitCode.INCOMPLETE and "in flight when the run ended without recording them" in err
    assert "rows the run never reached have no record: `report --job` counts them" in err  # verify44: no summary
    total = json.loads(text)["total"]
    assert total["cost_unknown_rows"] == 4 and total["cost_held_usd"] > 0
    header, reading, first = (json.loads(line) for line in journal.read_text().splitlines()[:3])
    assert header == {"job": "kill"} or "job" in header
    assert "key_seen" in reading
    worst = first["usd"]
    assert worst > 0

    generation_asks: list[str] = []

    def generation(request: RawRequest) -> bytes:
        gid = request.path.split("id=")[1]
        generation_asks.append(gid)
        if not looked_up:
            return json_answer(404, {"error": {"code": 404, "message": "Generation not found"}})
        return json_answer(200, {"data": {"id": gid, "total_cost": 0.5 * worst}})

    answer = chat_payload()
    answer["usage"]["cost"] = 0.99 * worst  # each answer costs about its worst case
    honest = HostileServer(chat=lambda request: json_answer(200, answer), routes={"/generation": generation})
    budget = 6.5 * worst  # four held worst cases leave room for two more requests, not six
    with honest.running():
        options = ("--base-url", honest.base_url, "-o", out, "--resume", "--budget", str(budget))
        code, stdout, stderr = call_cli(path, *options)
    assert "Traceback" not in stdout + stderr
    assert sorted(generation_asks) == sorted(f"gen-{row}" for row in in_flight)
    crashed = [json.loads(line) for line in out.read_text().splitlines()[:4]]
    assert {r["id"] for r in crashed} == in_flight and {r["reason"] for r in crashed} == {"crashed"}
    for record in crashed:
        attempt = record["abandoned_attempts"]
        assert attempt[0]["generation_id"] == f"gen-{record['id']}"
        if looked_up:
            assert record["cost_status"] == "looked_up" and record["spent"] == pytest.approx(0.5 * worst)
        else:
            assert record["cost"] is None and record["cost_status"] == "unknown"
            assert record["spent"] == record["cost_held"] == pytest.approx(worst)
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    held = 4 * (0.5 * worst if looked_up else worst)
    assert summary["spent_before_usd"] == pytest.approx(held)
    sent = len(honest.chat_rows())
    assert sent == (4 if looked_up else 2)  # what was left of the budget, not all of it
    assert (code == ExitCode.BUDGET) and not journal.exists()  # recorded, then gone
    assert held + sent * 0.99 * worst <= budget


def test_a_journal_of_another_job_is_refused_untouched(tmp_path: Path) -> None:
    # break14c N11: another job's crash journal was taken for this job's rows ("crashed"
    # records of foreign ids, exit 5 with nothing sent).
    path = write_job(tmp_path, KILL_JOB)
    out = tmp_path / "out.jsonl"
    journal = tmp_path / "out.attempts.jsonl"
    text = '{"job": "someone-else"}\n{"row": "0123456789abcdef0123", "at": 0, "usd": 0.5, "model": "m"}\n'
    journal.write_text(text)
    server = _honest()
    with server.running():
        code, _, err = call_cli(path, "--base-url", server.base_url, "-o", out, "--budget", "1")
    assert code == ExitCode.USAGE and "attempt journal of job 'someone-else'" in err and str(journal) in err
    assert journal.read_text() == text and not out.exists() and server.chat_rows() == []


def test_journal_lines_with_a_prompt_or_repeat_of_another_type_keep_their_attempts(tmp_path: Path) -> None:
    # A journal line written by no batchrun (a prompt that is a number, a repeat that is text or
    # true): its attempt is counted, its prompt and repeat read as unknown, never a crash.
    journal = tmp_path / "out.attempts.jsonl"
    lines = [
        {"job": "j"},
        {"row": "a" * 20, "at": 1, "usd": 0.25, "model": "m", "prompt": 7, "repeat": "2"},
        {"row": "b" * 20, "at": 2, "usd": 0.5, "model": "m", "prompt": "p", "repeat": True},
        {"row": "c" * 20, "at": 3, "usd": 0.75, "model": "m", "prompt": "q", "repeat": 4},
        {"row": "d" * 20, "at": 4, "usd": 1.0, "model": "m", "prompt": ["p"], "repeat": None},
    ]
    journal.write_text("".join(json.dumps(line) + "\n" for line in lines))
    crashed = read_journal(journal, "j")
    assert [(c.prompt_id, c.repeat, [a["usd"] for a in c.attempts]) for c in crashed.values()] == [
        ("", 0, [0.25]),
        ("p", 0, [0.5]),
        ("q", 4, [0.75]),
        ("", 0, [1.0]),
    ]


def test_a_key_gap_a_kill_9_left_in_the_journal_is_counted_on_resume(tmp_path: Path) -> None:
    # Verification of break14c (NEW-2): the gap a key window counted (the key's usage beyond the
    # reported costs) lived only in the summary, which a kill -9 never writes: the resume spent
    # the budget again. The journal now carries it ({"key_gap": ...}, the run's total so far).
    path = write_job(tmp_path, KILL_JOB.replace("vars: [{n: 1}, {n: 2}, {n: 3}, {n: 4}, ", "vars: ["))
    out = tmp_path / "out.jsonl"
    server = _honest()
    with server.running():
        code, _, _ = call_cli(path, "--base-url", server.base_url, "-o", out, "--budget", "1")
        assert code == ExitCode.OK
        out.write_text("".join(out.read_text().splitlines(keepends=True)[:2]))  # two rows still to send
        (tmp_path / "out.summary.json").unlink()  # killed: no summary
        journal = tmp_path / "out.attempts.jsonl"
        journal.write_text('{"job": "crash"}\n{"key_gap": 0.25}\n{"key_gap": 1.5}\n')
        sent = len(server.chat_rows())
        code, _, err = call_cli(path, "--base-url", server.base_url, "-o", out, "--resume", "--budget", "1")
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["spent_before_usd"] >= 1.5 and summary["key_gap_usd"] == pytest.approx(1.5)
    # The key was charged past the dollar already: the two rows left are not sent.
    assert code == ExitCode.BUDGET and len(server.chat_rows()) == sent and not journal.exists()


@pytest.mark.parametrize("corrupt", ['"x"', "-1", "NaN", "1e400", "null"])
def test_an_attempt_whose_worst_case_is_corrupt_still_counts(tmp_path: Path, corrupt: str) -> None:
    # break14c m3: a journal line whose usd could not be read counted $0, and its row was paid
    # for again. It now counts as the dearest attempt the journal shows.
    path = write_job(tmp_path, KILL_JOB)
    out = tmp_path / "out.jsonl"
    journal = tmp_path / "out.attempts.jsonl"
    first, second = _row_ids(path)[:2]
    lines = [
        '{"job": "crash"}',
        '{"row": "' + first + '", "at": 0, "usd": 0.3, "model": "openai/gpt-4o-mini"}',
        '{"row": "' + second + '", "at": 0, "usd": ' + corrupt + ', "model": "openai/gpt-4o-mini"}',
    ]
    journal.write_text("\n".join(lines) + "\n")
    server = _honest()
    with server.running():
        code, _, err = call_cli(path, "--base-url", server.base_url, "-o", out, "--budget", "1")
    assert "Traceback" not in err
    crashed = {
        r["id"]: r for r in (json.loads(line) for line in out.read_text().splitlines()) if r["reason"] == "crashed"
    }
    assert {row: r["cost_held"] for row, r in crashed.items()} == {first: 0.3, second: 0.3}
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["spent_before_usd"] == pytest.approx(0.6)


def _recovered(tmp_path: Path, worst: float, looked_up: float, *more: str) -> tuple[int, str]:
    """A run of KILL_JOB after a kill -9 left two attempts in flight (their worst case `worst`, their
    generation ids journaled, and `more` journal lines), /generation saying each cost `looked_up`."""
    path = write_job(tmp_path, KILL_JOB)
    attempt = '{"row": "%s", "at": 0, "usd": %s, "model": "openai/gpt-4o-mini"}\n{"row": "%s", "gen": "gen-%s"}'
    lines = ['{"job": "crash"}', *(attempt % (row, worst, row, row) for row in _row_ids(path)[:2]), *more]
    (tmp_path / "out.attempts.jsonl").write_text("\n".join(lines) + "\n")
    server = _honest()
    server.routes["/generation"] = lambda request: json_answer(
        200, {"data": {"id": request.path.split("id=")[1], "total_cost": looked_up}}
    )
    with server.running():
        code, _, err = call_cli(path, "--base-url", server.base_url, "-o", tmp_path / "out.jsonl", "--budget", "1")
    return code, err


def test_what_a_crash_recovery_learns_of_charges_the_key_showed_is_counted_once(tmp_path: Path) -> None:
    # out-120 F1, after a kill -9: the journal's key gap ($0.5: the key saw two attempts held at
    # $0.1 charged $0.35 each) and the costs the recovery looked up for them were the same charges.
    code, err = _recovered(tmp_path, 0.1, 0.35, '{"key_gap": 0.5}')
    assert code == ExitCode.OK, err
    assert "recorded as skipped (crashed); 0 of unknown cost" in err  # out-122 F6: known, not held
    # Above their worst cases: counted, and said, as a run's and a resume's lookups say it (out-124 F2).
    said = "2 cost(s) /generation gave for attempts a killed run left in flight were above their worst cases"
    assert f"warning: {said} (e.g. $0.350000 for $0.100000): counted as charged" in err
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["spent_before_usd"] == pytest.approx(0.7) and summary["key_gap_usd"] < 1e-6
    assert summary["total"]["ok"] == 8  # the two crashed rows sent again too: $0.3 was left, not none


def test_a_budget_stop_after_a_crash_recovery_says_the_earlier_runs_spent_past_the_budget(tmp_path: Path) -> None:
    # out-124 F2: the lookups took the killed run's spend to $1.20 on a $1 budget; the resume sent
    # nothing and said only "stopped: budget", not why none was left.
    code, err = _recovered(tmp_path, 0.1, 0.6)
    assert code == ExitCode.BUDGET, err
    assert "batchrun: stopped: budget\n" in err
    assert "earlier runs of this file spent $1.200000, over the budget of $1.000000 by $0.200000" in err


@pytest.mark.parametrize("looked_up", [50.0, 20_000.0])
def test_a_crash_recovery_takes_no_cost_far_above_an_attempts_worst_case(tmp_path: Path, looked_up: float) -> None:
    # out-121 F2: /generation said $50 for two attempts a kill -9 left in flight, worst case $0.027
    # each: taken without a word, $100 counted against $0.12 billed, every resume after exit 5.
    # Above $10,000 (more than any one request costs) it was not believed, and not said (out-127 F3).
    code, err = _recovered(tmp_path, 0.027, looked_up)
    assert code == ExitCode.OK, err
    assert "2 cost(s) /generation gave for attempts a killed run left in flight were over 100x" in err
    said = "2 row(s) had attempts an earlier run left unrecorded (killed, or its results could not be written): "
    assert said + "recorded as skipped (crashed); 2 of" in err
    crashed = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()[:2]]
    assert {(r["reason"], r["cost_status"], r["cost_held"]) for r in crashed} == {("crashed", "unknown", 0.027)}
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["spent_before_usd"] == pytest.approx(0.054) and summary["total"]["ok"] == 8


def test_a_journaled_charge_no_request_could_cost_is_not_counted_by_a_crash_recovery(tmp_path: Path) -> None:
    # out-132 F2: an older build journaled a reply's usage.cost of $50,000 (`paid`); the recovery
    # counted it in full, and every later resume stopped at once, exit 5.
    path = write_job(tmp_path, KILL_JOB)
    first = _row_ids(path)[0]
    lines = [
        '{"job": "crash"}',
        '{"row": "' + first + '", "at": 0, "usd": 0.01, "model": "openai/gpt-4o-mini"}',
        '{"row": "' + first + '", "paid": 50000}',
    ]
    (tmp_path / "out.attempts.jsonl").write_text("\n".join(lines) + "\n")
    server = _honest()
    with server.running():
        code, _, err = call_cli(path, "--base-url", server.base_url, "-o", tmp_path / "out.jsonl", "--budget", "1")
    assert code == ExitCode.OK, err
    crashed = json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])
    assert (crashed["reason"], crashed["cost_status"], crashed["cost_held"]) == ("crashed", "unknown", 0.01)
    assert json.loads((tmp_path / "out.summary.json").read_text())["spent_before_usd"] == pytest.approx(0.01)


def test_a_crashed_attempt_of_a_row_the_job_no_longer_has_counts_what_it_was_looked_up_at(tmp_path: Path) -> None:
    # Its cost is in no record but in the key gap (orphans_usd): a lookup above its worst case must
    # not take the gap down as if a record now held it ($0.35 billed, $0.1 counted).
    path = write_job(tmp_path, KILL_JOB)
    lines = ['{"job": "crash"}', '{"row": "gone", "at": 0, "usd": 0.1, "model": "openai/gpt-4o-mini"}']
    (tmp_path / "out.attempts.jsonl").write_text("\n".join([*lines, '{"row": "gone", "gen": "gen-gone"}']) + "\n")
    server = _honest()
    server.routes["/generation"] = lambda request: json_answer(200, {"data": {"id": "gen-gone", "total_cost": 0.35}})
    with server.running():
        code, _, err = call_cli(path, "--base-url", server.base_url, "-o", tmp_path / "out.jsonl", "--budget", "1")
    assert code == ExitCode.OK and "1 row(s) the job no longer has" in err, err
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["spent_before_usd"] == pytest.approx(0.35) and summary["key_gap_usd"] >= 0.35 - 1e-9


def test_a_graders_attempt_a_kill_9_cut_off_is_the_rows_grading_not_its_answer(tmp_path: Path) -> None:
    # break14c m2: a grader's attempt left in flight was booked into the row's `cost` (its
    # answer), so "judging: $0.06 (of $0.24 spent)" while grading had cost $0.12. The journal
    # marks a grader's attempt (`judge`), and its cost is the row's `judge_cost`.
    path = write_job(tmp_path, KILL_JOB)
    out = tmp_path / "out.jsonl"
    journal = tmp_path / "out.attempts.jsonl"
    row = _row_ids(path)[0]
    lines = [
        '{"job": "crash"}',
        '{"row": "' + row + '", "at": 0, "usd": 0.1, "model": "openai/gpt-4o-mini"}',
        '{"row": "' + row + '", "at": 0, "usd": 0.02, "model": "acme/judge", "judge": true}',
        '{"row": "' + row + '", "at": 0, "usd": 0.03, "model": "acme/judge", "judge": true}',
        '{"row": "' + row + '", "gen": "gen-judged"}',
    ]
    journal.write_text("\n".join(lines) + "\n")
    out.write_text("")
    # Never resumed: the readers split it the same way.
    code, text, _ = call_cli("report", out, "--json")
    total = json.loads(text)["total"]
    assert total["cost_unknown_rows"] == 1 and total["judge_cost_unknown_rows"] == 1
    assert total["cost_held_usd"] == pytest.approx(0.15) and total["judge_cost_usd"] == 0
    # Resumed: the second grader attempt's generation is looked up ($0.025), the rest held.
    server = HostileServer(
        chat=lambda request: json_answer(200, chat_payload()),
        routes={"/generation": lambda request: json_answer(200, {"data": {"id": "gen-judged", "total_cost": 0.025}})},
    )
    with server.running():
        code, _, err = call_cli(path, "--base-url", server.base_url, "-o", out, "--budget", "1", "--resume")
    assert "Traceback" not in err
    crashed = json.loads(out.read_text().splitlines()[0])
    assert crashed["reason"] == "crashed" and crashed["id"] == row
    assert crashed["cost"] is None and crashed["cost_held"] == pytest.approx(0.1)  # the answer's attempt
    assert crashed["judge_cost"] is None and crashed["judge_cost_status"] == "unknown"
    assert crashed["judge_cost_known"] == pytest.approx(0.025)  # the looked-up grader attempt
    assert crashed["spent"] == pytest.approx(0.1 + 0.02 + 0.025) and len(crashed["abandoned_attempts"]) == 3
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["spent_before_usd"] == pytest.approx(0.145)
    assert summary["total"]["judge_cost_usd"] == pytest.approx(0.025)


def test_a_key_gap_survives_a_kill_9_of_the_resume_that_read_it(tmp_path: Path) -> None:
    # break14e E3: the resume read the crashed run's journal (key_gap $0.25), deleted it, and
    # began its own with its own gap only; killed -9 too, before any summary, it lost the $0.25,
    # and the next resume spent it again. The new journal carries it on from its first lines.
    path = write_job(tmp_path, KILL_JOB)
    out = tmp_path / "out.jsonl"
    journal = tmp_path / "out.attempts.jsonl"
    out.write_text("")
    journal.write_text('{"job": "crash"}\n{"key_gap": 0.25}\n')
    stall = HostileServer(chat=_stall)
    with stall.running():
        env = child_env(OPENROUTER_API_KEY=FAKE_KEY)
        process = start(path, "--base-url", stall.base_url, "-o", out, "-q", "--resume", "--budget", "1", env=env)
        # Its header, the gap carried on, then four attempts out with their generation ids.
        wait_for_lines(journal, 10, process)
        process.kill()
        process.wait()
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    fingerprint = load_job(path).fingerprint
    assert lines[0] == {"job": "crash", "job_fingerprint": fingerprint, "shard": None, "endpoint": stall.base_url}
    assert lines[1] == {"key_gap": 0.25}
    server = _honest()
    with server.running():
        code, _, err = call_cli(path, "--base-url", server.base_url, "-o", out, "--resume", "--budget", "1")
    assert "Traceback" not in err
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["key_gap_usd"] >= 0.25 and summary["spent_before_usd"] >= 0.25


def test_a_key_gap_survives_a_resume_refused_in_its_pre_flight(tmp_path: Path) -> None:
    # break14h H7: the resume deleted the crashed run's journal (key_gap $0.25) before its
    # pre-flight, and began its own only after it: refused there (exit 2), or killed there, it
    # lost the gap, and the next resume spent it again. The journal now stays until the run's
    # own, carrying the gap, replaces it.
    path = write_job(tmp_path, KILL_JOB)
    out = tmp_path / "out.jsonl"
    journal = tmp_path / "out.attempts.jsonl"
    out.write_text("")
    row = next(iter(matrix_requests(load_job(path)))).id
    journal.write_text(
        f'{{"job": "crash"}}\n{{"row": "{row}", "at": 0, "usd": 0.01, "model": "m"}}\n{{"key_gap": 0.25}}\n'
    )
    unlisted = HostileServer(chat=_stall, models=lambda request: json_answer(200, {"data": []}))  # the model is gone
    with unlisted.running():
        code, _, err = call_cli(path, "--base-url", unlisted.base_url, "-o", out, "--resume", "--budget", "1")
    assert code == ExitCode.USAGE and "not offered" in err
    assert '{"key_gap": 0.25}' in journal.read_text()  # still there for the next resume
    server = _honest()
    with server.running():
        code, _, err = call_cli(path, "--base-url", server.base_url, "-o", out, "--resume", "--budget", "1")
    assert "Traceback" not in err
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["key_gap_usd"] == pytest.approx(0.25) and summary["spent_before_usd"] == pytest.approx(0.26)
    crashed = [r for r in read_rows(out) if r.get("reason") == "crashed"]
    assert [r["id"] for r in crashed] == [row]  # recorded once, by the refused resume
    assert not journal.exists()


@pytest.mark.parametrize(
    ("name", "says"),
    [
        # break14e E18: `-o night.attempts.jsonl` made a results file that a later run on
        # night.jsonl took for its crash journal and deleted (5 paid rows, exit 0).
        ("night.attempts.jsonl", "batchrun writes beside night.jsonl"),
        ("night.summary.json", "batchrun writes beside night.jsonl"),
        ("night.batches.json", "batchrun writes beside night.jsonl"),
        # The same names in another case are those files on a file system that ignores case.
        ("night.Attempts.jsonl", "batchrun writes beside night.jsonl"),
        ("night.SUMMARY.json", "batchrun writes beside night.jsonl"),
        # Its verification (F3, F4): `night`, `night.json` and `night.jsonl` shared one summary
        # and one journal: a run on one took the other's key gap and crash journal.
        ("night", "a results file's name ends in .jsonl"),
        ("night.json", "a results file's name ends in .jsonl"),
        ("night.csv", "a results file's name ends in .jsonl"),
    ],
)
def test_a_results_file_ends_in_jsonl_and_is_never_named_like_a_sidecar(tmp_path: Path, name: str, says: str) -> None:
    path = write_job(tmp_path, KILL_JOB)
    server = _honest()
    with server.running():
        code, _, err = call_cli(path, "--base-url", server.base_url, "-o", tmp_path / name)
    assert code == ExitCode.USAGE and says in err and len(err.splitlines()) == 1
    assert not (tmp_path / name).exists() and server.chat_rows() == []
    code, _, err = call_cli("merge", tmp_path / "x.jsonl", "-o", tmp_path / name)
    assert code == ExitCode.USAGE and says in err


def test_a_file_under_the_journals_name_that_is_not_a_journal_is_left_alone(tmp_path: Path) -> None:
    # The same file made before the name was refused: results, not a journal. It is refused
    # as a journal, byte for byte untouched, and nothing is sent.
    path = write_job(tmp_path, KILL_JOB)
    server = _honest()
    with server.running():
        assert call_cli(path, "--base-url", server.base_url, "-o", tmp_path / "old.jsonl")[0] == ExitCode.OK
        sent = len(server.chat_rows())
        results = (tmp_path / "old.jsonl").read_bytes()
        (tmp_path / "night.attempts.jsonl").write_bytes(results)
        code, _, err = call_cli(path, "--base-url", server.base_url, "-o", tmp_path / "night.jsonl")
        assert len(server.chat_rows()) == sent
    assert code == ExitCode.USAGE and "not an attempt journal" in err
    assert (tmp_path / "night.attempts.jsonl").read_bytes() == results
    # The readers pass over it: no crashed rows of its records.
    assert call_cli("report", tmp_path / "old.jsonl")[0] == ExitCode.OK


def test_run_output_may_not_be_named_like_a_sidecar(tmp_path: Path) -> None:
    job = write_job(tmp_path, KILL_JOB.replace("run: {", "run: {output: 'out/{name}.attempts.jsonl', "))
    code, _, err = call_cli("validate", job)
    assert code == ExitCode.USAGE and "run.output" in err and "attempt journal" in err


def test_attempts_of_rows_the_edited_job_no_longer_has_are_spent_but_not_rows(tmp_path: Path) -> None:
    # break14e E16: after a crash, the job was edited (same name, other rows); its in-flight rows
    # were written as `crashed` records that no run could answer: every later run exited 12.
    path = write_job(tmp_path, KILL_JOB)
    out = tmp_path / "out.jsonl"
    journal = tmp_path / "out.attempts.jsonl"
    journal.write_text('{"job": "crash"}\n{"row": "ffffffffffffffffffff", "at": 0, "usd": 0.3, "model": "m"}\n')
    server = _honest()
    with server.running():
        code, _, err = call_cli(path, "--base-url", server.base_url, "-o", out, "--budget", "1")
        assert code == ExitCode.OK, err
        assert "1 row(s) the job no longer has had attempts in flight" in err and "$0.300000 counted as spent" in err
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert "f" * 20 not in {r["id"] for r in rows} and len(rows) == 8 and not journal.exists()
        summary = json.loads((tmp_path / "out.summary.json").read_text())
        assert summary["key_gap_usd"] == pytest.approx(0.3) and summary["spent_before_usd"] == pytest.approx(0.3)
        assert call_cli(path, "--base-url", server.base_url, "-o", out, "--budget", "1", "--resume")[0] == ExitCode.OK


def test_no_page_or_junit_file_is_written_over_a_sidecar_and_a_resume_refuses_a_summary_not_its_own(
    tmp_path: Path,
) -> None:
    # Verification of break14e (F9): `report night.jsonl --html night.summary.json` replaced the
    # summary by a page, and the resume read "no key gap" from it: $0.72 under a $0.50 budget.
    path = write_job(tmp_path, KILL_JOB)
    out = tmp_path / "night.jsonl"
    server = _honest()
    with server.running():
        assert call_cli(path, "--base-url", server.base_url, "-o", out, "--budget", "1")[0] == ExitCode.OK
        summary = (tmp_path / "night.summary.json").read_bytes()
        for option, name in (("--html", "night.summary.json"), ("--junit", "night.attempts.jsonl")):
            code, _, err = call_cli("report", out, option, tmp_path / name)
            assert code == ExitCode.USAGE and "batchrun writes beside night.jsonl" in err
        code, _, err = call_cli("history", out, "--html", tmp_path / "night.batches.json")
        assert code == ExitCode.USAGE and not (tmp_path / "night.batches.json").exists()
        assert (tmp_path / "night.summary.json").read_bytes() == summary
        assert not (tmp_path / "night.attempts.jsonl").exists()
        # A summary that is not the file's own (here: unreadable) stops the resume, untouched.
        (tmp_path / "night.summary.json").write_text("<!doctype html>")
        sent = len(server.chat_rows())
        code, _, err = call_cli(path, "--base-url", server.base_url, "-o", out, "--budget", "1", "--resume")
        assert code == ExitCode.USAGE and "not the summary of night.jsonl" in err and len(server.chat_rows()) == sent
    assert (tmp_path / "night.summary.json").read_text() == "<!doctype html>"


def test_a_key_gap_line_that_cannot_be_read_is_said_and_the_largest_readable_counted(tmp_path: Path) -> None:
    # break14e E11: a corrupted journal's last `key_gap` (NaN) was dropped without a word, and the
    # resume counted an older, smaller one.
    path = write_job(tmp_path, KILL_JOB)
    out = tmp_path / "out.jsonl"
    out.write_text("")
    journal = tmp_path / "out.attempts.jsonl"
    journal.write_text('{"job": "crash"}\n{"key_gap": 1.5}\n{"key_gap": 0.25}\n{"key_gap": NaN}\n')
    server = _honest()
    with server.running():
        code, _, err = call_cli(path, "--base-url", server.base_url, "-o", out, "--budget", "1")
    assert "1 key_gap line(s) could not be read: $1.500000 is counted" in err
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["key_gap_usd"] == pytest.approx(1.5) and code == ExitCode.BUDGET and server.chat_rows() == []


def test_the_last_key_gap_line_is_the_one_counted(tmp_path: Path) -> None:
    # Verification of the break14h fixes (V11): a charge above its worst case seen in flight is
    # taken back out of the key gap when its answer settles (H6); the journal took the largest
    # line, so after a kill -9 the resume counted it twice again. The last line holds the gap.
    journal = tmp_path / "out.attempts.jsonl"
    journal.write_text('{"job": "crash"}\n{"key_gap": 0.631}\n{"key_gap": 0.4505}\n')
    assert journal_key_gap(journal) == pytest.approx(0.4505)


async def test_a_key_gap_taken_back_is_journaled() -> None:
    ledger = CreditLedger(1.0)
    noted: list[float] = []
    ledger.gap_changed = lambda: noted.append(ledger.from_key)
    await ledger.reserve(0.01)
    ledger.follow_key(0.1)  # seen in flight: $0.09 beyond the reservation
    await ledger.settle(0.01, 0.1)
    assert noted == [pytest.approx(0.0)]


def test_no_page_or_junit_file_is_written_over_results_and_a_linked_output_has_its_files_sidecars(
    tmp_path: Path,
) -> None:
    # Verification of the break14e fixes: `report night.jsonl --html night.jsonl` replaced 200
    # paid rows with a page, exit 0 (G2); a resume through `latest.jsonl -> real.jsonl` read
    # latest.summary.json, not real.summary.json, and spent the key gap again (G3).
    path = write_job(tmp_path, KILL_JOB)
    real = tmp_path / "real.jsonl"
    server = _honest()
    with server.running():
        assert call_cli(path, "--base-url", server.base_url, "-o", real, "--budget", "1")[0] == ExitCode.OK
        rows = real.read_bytes()
        (tmp_path / "copy.data").write_bytes(rows)
        for option, target in (("--html", real), ("--junit", real), ("--html", tmp_path / "copy.data")):
            code, _, err = call_cli("report", real, option, target)
            assert code == ExitCode.USAGE and "is not written" in err, err
        assert call_cli("history", real, "--html", real)[0] == ExitCode.USAGE
        assert real.read_bytes() == rows and (tmp_path / "copy.data").read_bytes() == rows
        summary = json.loads((tmp_path / "real.summary.json").read_text())
        summary["key_gap_usd"] = 5.0  # what an earlier run counted beyond the records
        (tmp_path / "real.summary.json").write_text(json.dumps(summary))
        (tmp_path / "latest.jsonl").symlink_to(real)
        code, _, _ = call_cli(path, "--base-url", server.base_url, "-o", tmp_path / "latest.jsonl", "--resume")
    assert code == ExitCode.OK  # nothing left to send; the resume read real.jsonl's summary
    assert not (tmp_path / "latest.summary.json").exists()
    assert json.loads((tmp_path / "real.summary.json").read_text())["spent_before_usd"] >= 5.0


def test_a_fifo_under_a_sidecars_name_is_refused_not_waited_on(tmp_path: Path) -> None:
    # Verification of the break14e fixes (G4): a FIFO at X.summary.json hung `report` and
    # `run --resume` until killed.
    path = write_job(tmp_path, KILL_JOB)
    out = tmp_path / "out.jsonl"
    server = _honest()
    with server.running():
        assert call_cli(path, "--base-url", server.base_url, "-o", out, "--budget", "1")[0] == ExitCode.OK
        (tmp_path / "out.summary.json").unlink()
        os.mkfifo(tmp_path / "out.summary.json")
        code, _, err = call_cli(path, "--base-url", server.base_url, "-o", out, "--budget", "1", "--resume")
        assert code == ExitCode.USAGE and "out.summary.json: not a regular file (a FIFO)" in err
    # Not waited on; and a summary there that cannot be read is no pass (out-129 F2).
    code, _, err = call_cli("report", out)
    assert code == ExitCode.INCOMPLETE and "out.summary.json: cannot be read (not a regular file" in err
    # break14h H12: merge read the shard's summary, and plan the newest earlier run's, waiting
    # for a writer for ever. Without a summary the merge cannot tell it is complete (12).
    code, _, err = call_cli("merge", out, "-o", tmp_path / "m.jsonl")
    assert code == ExitCode.INCOMPLETE and "no usable summary of this job saying which shard it is" in err


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_whatever_is_left_under_the_new_journals_name_is_replaced_not_opened(tmp_path: Path, kind: str) -> None:
    # Verification of the break14h fixes (V1): a FIFO at out.attempts.jsonl.new (the name the
    # run's journal is written under before it is renamed over the old one) hung every run on
    # the output; a symlink there had the journal's first line written through it.
    path = write_job(tmp_path, KILL_JOB)
    stale = tmp_path / "out.attempts.jsonl.new"
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    if kind == "fifo":
        os.mkfifo(stale)
    else:
        stale.symlink_to(victim)
    server = _honest()
    with server.running():
        code, _, err = call_cli(path, "--base-url", server.base_url, "-o", tmp_path / "out.jsonl", "--budget", "1")
    assert code == ExitCode.OK, err
    assert victim.read_text() == "mine" and not stale.exists() and not (tmp_path / "out.attempts.jsonl").exists()


def test_files_a_job_names_that_are_fifos_are_refused_not_waited_on(tmp_path: Path) -> None:
    # break14h H12's kin: a grader prompt or a json_schema file that is a FIFO hung validate.
    os.mkfifo(tmp_path / "grader.txt")
    os.mkfifo(tmp_path / "schema.json")
    job = KILL_JOB.replace("prompts:", "judge: {model: openai/gpt-4o-mini, prompt: grader.txt}\nprompts:").replace(
        "    vars:", "    checks: [{json_schema: schema.json}]\n    vars:"
    )
    code, _, err = call_cli("validate", write_job(tmp_path, job))
    assert code == ExitCode.USAGE
    assert "cannot read the grader prompt" in err and "json_schema file 'schema.json' cannot be read" in err


def test_what_an_attempt_answered_it_cost_is_what_a_crash_leaves_counted(tmp_path: Path) -> None:
    # Verification of the break14h fixes (N1): answers charged $0.10 above a $0.00968 worst case;
    # a read saw them in flight (key gap up), they settled (gap down, journaled), and the kill
    # came while the row was graded, before its record: the resume counted the worst case. The
    # answer's cost is journaled before the ledger takes it, and the recovery counts it.
    results = tmp_path / "out.jsonl"
    results.write_text("")
    lines = [
        {"job": "crash"},
        {"row": "r1", "at": 0, "usd": 0.00968, "model": "m"},
        {"row": "r1", "gen": "gen-1"},
        {"key_gap": 0.09},
        {"row": "r1", "paid": 0.1},
        {"key_gap": 0.0},
        {"row": "r1", "at": 0, "usd": 0.002, "model": "g", "judge": True},  # its grader, in flight
    ]
    journal_path(results).write_text("".join(json.dumps(line) + "\n" for line in lines))
    [crashed] = unrecorded_attempts(results).values()
    fields = crash_fields(crashed, {})
    assert (fields["cost"], fields["cost_status"]) == (0.1, "reported")
    assert fields["judge_cost"] is None and fields["spent"] == pytest.approx(0.1 + 0.002)
    # An answer that said less than its worst case, with no read to confirm it before the kill,
    # counts its worst case (verify14k K3: under-reported answers were believed, $3.24 on $3.00),
    # held as unknown: not recorded as the cost it `reported` (break23 F12) ...
    lines[4] = {"row": "r1", "paid": 0.0001}
    journal_path(results).write_text("".join(json.dumps(line) + "\n" for line in lines))
    [crashed] = unrecorded_attempts(results).values()
    fields = crash_fields(crashed, {})
    assert (fields["cost"], fields["cost_status"]) == (None, "unknown")
    assert fields["cost_held"] == pytest.approx(0.00968) and fields["spent"] == pytest.approx(0.00968 + 0.002)
    # ... until /generation knows it: its record, never below what the answer said.
    fields = crash_fields(crashed, {"gen-1": 0.0003})
    assert (fields["cost"], fields["cost_status"]) == (0.0003, "looked_up") and not fields["cost_held"]
    assert crash_fields(crashed, {"gen-1": 0.00001})["cost"] == 0.0001
    # out-118 F3: one that said far more than its worst case ($9,999) is in doubt: /generation's
    # figure where it has one, else counted and said to be in doubt.
    lines[4] = {"row": "r1", "paid": 9999.0}
    journal_path(results).write_text("".join(json.dumps(line) + "\n" for line in lines))
    [crashed] = unrecorded_attempts(results).values()
    fields = crash_fields(crashed, {"gen-1": 0.0003})
    assert (fields["cost"], fields["cost_status"]) == (0.0003, "looked_up")
    assert not any(entry.get("cost_doubted") for entry in fields["abandoned_attempts"])
    fields = crash_fields(crashed, {})
    assert (fields["cost"], fields["cost_status"]) == (9999.0, "reported")
    assert fields["abandoned_attempts"][0]["cost_doubted"] is True


def test_a_new_run_killed_beside_the_summary_of_a_removed_file_resumes_clean(tmp_path: Path) -> None:
    # out-184 F2: results removed to start over, their summary left beside the name; the new run
    # killed before writing its own, the resume read the old summary as the new file's: "records
    # removed", exit 12 for good, and the removed file's spend counted as this file's.
    path = write_job(tmp_path, KILL_JOB)
    out = tmp_path / "out.jsonl"
    server = HostileServer(chat=lambda request: json_answer(200, chat_payload()))
    with server.running():
        code, _, err = call_cli(path, "--base-url", server.base_url, "-o", out, "-q")
    assert code == ExitCode.OK and (tmp_path / "out.summary.json").exists(), err
    out.unlink()
    server.chat = _stall
    with server.running():
        process = start(
            path, "--base-url", server.base_url, "-o", out, "-q", env=child_env(OPENROUTER_API_KEY=FAKE_KEY)
        )
        wait_for_lines(tmp_path / "out.attempts.jsonl", 6, process)
        process.kill()
        process.wait()
    assert not (tmp_path / "out.summary.json").exists()  # the new run's results have none yet
    server.chat = lambda request: json_answer(200, chat_payload())
    with server.running():
        code, _, err = call_cli(path, "--base-url", server.base_url, "-o", out, "-q", "--resume")
    assert code == ExitCode.OK, err
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert "results_edited" not in summary and summary["total"]["rows"] == 8
    assert call_cli("report", out)[0] == ExitCode.OK
