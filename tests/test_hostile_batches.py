"""Batch mode against a lying Batch API over loopback (break-14b C12, M9): what a collected
batch cost, and each row's part of it, whatever the batch object says or leaves out.

batch-quickstart.mdx: "For a completed batch, `usage.cost` reports the amount OpenRouter
charges"; result bodies may carry no `usage` (the page's example has none); `results` is
null unless the batch completed. The server here bends each of those.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from batchrun import ExitCode, RunOptions, _batch_api, load_job, run_job
from batchrun._batch_polls import LIMIT
from batchrun._cache import FILE_NAME
from batchrun._reader import scan_states

from .conftest import (
    FAKE_KEY,
    FakeClock,
    LeapClock,
    call_cli,
    deadline_at_first_wait,
    final_rows,
    patch_loop,
    write_job,
)
from .hostile import JOB as HOSTILE_JOB
from .hostile import Answer, HostileServer, RawRequest, asked_generation, chat_payload, json_answer
from .hostile import run as run_hostile

# The hostile job, graded, in batch mode.
_COUNTRIES = "vars: [{country: France}, {country: Japan}, {country: Italy}, {country: Spain}]\n"
JOB = HOSTILE_JOB.replace(_COUNTRIES, _COUNTRIES + '    checks: [{contains: "Paris"}]\n').replace(
    "run: {concurrency: 2, timeout_s: 10, max_attempts: 1, grace_s: 1}", "run: {mode: batch, batch_poll_s: 0.01}"
)
ROWS = 4
ITEM_COST = 0.001
pytestmark = pytest.mark.usefixtures("keys_env")


def completed(cost: float | None, ids: list[str], status: str = "completed") -> dict[str, Any]:
    return {"status": status, "usage": None if cost is None else {"cost": cost}, "results": [item(i) for i in ids]}


def item(custom_id: str, usage: bool = True) -> dict[str, Any]:
    body = chat_payload("Paris", id=f"gen-batch-{custom_id}")
    if usage:
        body["usage"]["cost"] = ITEM_COST
    else:
        del body["usage"]
    return {"custom_id": custom_id, "response": {"status_code": 200, "body": body}, "error": None}


BatchOf = Callable[[list[str]], dict[str, Any]]


def batch_server(batch_of: BatchOf) -> HostileServer:
    """A Batch API that accepts one batch and answers every poll with `batch_of(custom_ids)`."""
    submitted: list[str] = []

    def submit(request: RawRequest) -> bytes:
        submitted.extend(r["custom_id"] for r in request.json()["requests"])
        return json_answer(202, {"id": "batch_1", "status": "validating", "results": None})

    def get(request: RawRequest) -> bytes:
        return json_answer(200, {"id": "batch_1", "object": "batch", **batch_of(list(submitted))})

    def no_chat(request: RawRequest) -> bytes:
        raise AssertionError("batch mode sent a chat request")

    return HostileServer(chat=no_chat, routes={"/beta/batches": submit, "/batch_1": get})


def run(tmp_path: Path, batch_of: BatchOf, *args: str) -> Any:
    return run_hostile(batch_server(batch_of), tmp_path, "--budget", "1", *args, job=JOB)


def summary(tmp_path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((tmp_path / "out.summary.json").read_text())
    return result


def test_a_batch_without_any_cost_holds_its_worst_case_never_zero(tmp_path: Path) -> None:
    # No batch-level usage, result bodies without usage: nothing says what was charged.
    outcome = run(tmp_path, lambda ids: {"status": "completed", "results": [item(i, usage=False) for i in ids]})
    assert len(outcome.rows) == ROWS
    for row in outcome.rows:
        assert row["status"] == "ok" and row["cost"] is None and row["cost_status"] == "unknown"
        assert row["cost_unknown"] is True and row["cost_held"] > 0 and row["spent"] == row["cost_held"]
    held = sum(r["cost_held"] for r in outcome.rows)
    figures = summary(tmp_path)
    assert figures["spent_usd"] == pytest.approx(held) and figures["total"]["cost_held_usd"] == pytest.approx(held)
    assert figures["reconciliation"]["unknown_cost_attempts"] == ROWS
    assert "+?" in outcome.stdout
    assert scan_states(tmp_path / "out.jsonl").spent_usd == pytest.approx(held)  # a resume counts it


@pytest.mark.parametrize("kind", ["byok", "lying"])
def test_a_collected_answer_is_kept_in_the_cache_as_a_sync_one_is(tmp_path: Path, kind: str) -> None:
    # verify66 8: batch mode stored each answer at its `cost` field: a BYOK answer at the fee
    # alone (its hits said they saved a 20th of it), and one whose cost passed the batch's worst
    # case (flagged by the run) at $5000, every hit "saving" it.
    def items(ids: list[str]) -> dict[str, Any]:
        batch = completed(None, ids)
        for entry in batch["results"]:
            usage = entry["response"]["body"]["usage"]
            if kind == "byok":
                # Within the batch's worst case ($0.000117 for the four): the fee and the provider's part.
                usage.update(cost=0.00001, is_byok=True, cost_details={"upstream_inference_cost": 0.00001})
            else:
                usage["cost"] = 5000.0
        return batch

    cache = tmp_path / "cache"
    run(tmp_path, items, f"--cache={cache}")
    with sqlite3.connect(cache / FILE_NAME) as db:
        costs = [cost for (cost,) in db.execute("SELECT cost FROM entries")]
    assert costs == ([pytest.approx(0.00002)] * ROWS if kind == "byok" else [])


def test_a_batch_cost_below_its_items_is_not_believed(tmp_path: Path) -> None:
    outcome = run(tmp_path, lambda ids: completed(0, ids))
    assert {(r["cost"], r["cost_status"]) for r in outcome.rows} == {(ITEM_COST, "reported")}
    assert summary(tmp_path)["spent_usd"] == pytest.approx(ROWS * ITEM_COST)  # the ledger agrees with the rows


def test_a_batch_cost_above_its_items_falls_on_the_rows(tmp_path: Path) -> None:
    outcome = run(tmp_path, lambda ids: completed(0.01, ids))
    assert {r["cost_status"] for r in outcome.rows} == {"estimated"}
    assert sum(r["cost"] for r in outcome.rows) == pytest.approx(0.01) == summary(tmp_path)["spent_usd"]


@pytest.mark.parametrize("results", [None, "half"])
def test_rows_a_billed_batch_left_without_results_get_their_share(tmp_path: Path, results: Any) -> None:
    def batch(ids: list[str]) -> dict[str, Any]:
        kept = None if results is None else [item(i) for i in ids[::2]]
        return {"status": "completed", "usage": {"cost": 0.01}, "results": kept}

    outcome = run(tmp_path, batch)
    missing = [r for r in outcome.rows if r["status"] == "error"]
    assert {r["reason"] for r in missing} == {"batch_missing_result"} and missing
    answered = ROWS - len(missing)
    share = (0.01 - answered * ITEM_COST) / len(missing)
    assert all(r["cost"] == pytest.approx(share) and r["cost_status"] == "estimated" for r in missing)
    assert sum(r["cost"] for r in outcome.rows) == pytest.approx(0.01) == summary(tmp_path)["spent_usd"]


@pytest.mark.parametrize(
    ("status", "left", "code"),
    [
        ("expired", ("error", "batch_expired"), ExitCode.ERRORS),
        ("failed", ("error", "batch_failed"), ExitCode.ERRORS),
        ("cancelled", ("skipped", "batch_cancelled"), ExitCode.INCOMPLETE),
    ],
)
def test_a_batch_that_ended_early_keeps_its_answers_and_its_cost(
    tmp_path: Path, status: str, left: Any, code: ExitCode
) -> None:
    outcome = run(
        tmp_path, lambda ids: {"status": status, "usage": {"cost": 0.01}, "results": [item(i) for i in ids[::2]]}
    )
    answered = [r for r in outcome.rows if r["status"] == "ok"]
    assert len(answered) == 2 and all(r["content"] == "Paris" and r["passed"] is True for r in answered)
    assert all(r["cost"] == ITEM_COST and r["cost_status"] == "reported" for r in answered)
    rest = [r for r in outcome.rows if r["status"] != "ok"]
    assert {(r["status"], r["reason"]) for r in rest} == {left}
    assert all(r["cost"] == pytest.approx((0.01 - 2 * ITEM_COST) / 2) for r in rest)
    assert sum(r["cost"] for r in outcome.rows) == pytest.approx(0.01) == summary(tmp_path)["spent_usd"]
    assert outcome.code == code


def test_a_cancelled_batch_that_ran_nothing_costs_nothing_and_is_not_exit_0(tmp_path: Path) -> None:
    counts = {"total": ROWS, "completed": 0, "failed": 0}
    outcome = run(tmp_path, lambda ids: {"status": "cancelled", "request_counts": counts, "results": None})
    assert {(r["status"], r["reason"], r["cost"], r["cost_status"]) for r in outcome.rows} == {
        ("skipped", "batch_cancelled", None, None)
    }
    assert outcome.code == ExitCode.INCOMPLETE
    assert "4 row(s) skipped, never answered (batch_cancelled 4)" in outcome.stderr + outcome.stdout


def test_an_expired_batch_that_says_nothing_of_its_cost_holds_its_worst_case(tmp_path: Path) -> None:
    # The quickstart does not say what an expired batch is charged: requests it ran may be.
    outcome = run(tmp_path, lambda ids: {"status": "expired", "request_counts": {"total": ROWS, "completed": 3}})
    assert all(r["cost"] is None and r["cost_status"] == "unknown" and r["cost_held"] > 0 for r in outcome.rows)
    assert summary(tmp_path)["spent_usd"] == pytest.approx(sum(r["cost_held"] for r in outcome.rows))


def test_a_sync_resume_never_sends_the_rows_of_a_batch_still_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break-14b C13: rows of a batch still running were sent again by `--resume --mode sync`,
    # and the batch's reservation was not counted: paid twice, past the budget.
    status = {"now": "in_progress"}
    server = batch_server(lambda ids: completed(0.01, ids, status["now"]))
    path = write_job(tmp_path, JOB)
    out = tmp_path / "out.jsonl"
    with server.running():
        base = ("--base-url", server.base_url, "-o", out, "--budget", "1")
        assert call_cli(path, *base, "--deadline", deadline_at_first_wait(monkeypatch))[0] == ExitCode.SUBMITTED
        for resume in (("--resume",), ()):
            code, stdout, stderr = call_cli(path, *base, *resume, "--mode", "sync")
            assert code == ExitCode.USAGE and stdout == ""
            assert stderr.count("\n") == 1 and "4 row(s) in batches of an earlier batch-mode run" in stderr
        assert server.chat_rows() == []
        status["now"] = "completed"
        assert call_cli(path, *base, "--resume")[0] == ExitCode.OK  # batch mode (the job's) collects them
    assert sum(r["cost"] for r in final_rows(out)) == pytest.approx(0.01) and server.chat_rows() == []


def test_a_batch_still_running_explains_what_the_key_was_charged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A submit tick (exit 10) whose batch is billed before the run ends: not "unexplained".
    server = batch_server(lambda ids: completed(0.01, ids, "in_progress"))
    charged = {"usd": 0.0}
    submit = server.routes["/beta/batches"]

    def billed_submit(request: RawRequest) -> Answer:
        charged["usd"] = 0.02  # above the one-cent tolerance, within the reservation
        return submit(request)

    server.routes["/beta/batches"] = billed_submit
    server.key = lambda request: json_answer(
        200, {"data": {"label": "k", "limit": None, "limit_remaining": None, "usage": charged["usd"]}}
    )
    path = write_job(tmp_path, JOB.replace("max_tokens: 16", "max_tokens: 10000"))  # reserves $0.024
    with server.running():
        options = (
            "--base-url",
            server.base_url,
            "-o",
            tmp_path / "out.jsonl",
            "--deadline",
            deadline_at_first_wait(monkeypatch),
        )
        code, stdout, stderr = call_cli(path, *options)
    assert code == ExitCode.SUBMITTED
    reconciliation = summary(tmp_path)["reconciliation"]
    assert reconciliation["key_usage_delta_usd"] == pytest.approx(0.02)
    assert reconciliation["open_batches_held_usd"] > 0.02 and reconciliation["warning"] is None
    assert "unexplained" not in stdout + stderr


@pytest.mark.parametrize(
    ("batch", "said"),
    [
        # break49 F2: results that are no array (the docs: inline, an array) were read as no
        # result for any row: every row an error, which --retry-errors paid for again.
        ({"status": "completed", "results": '{"custom_id": "x"}\n'}, "a completed batch whose results are no array"),
        ({"status": "completed", "results": {"x": {}}}, "a completed batch whose results are no array"),
        # verify50: null results beside requests it says completed are as unread.
        (
            {"status": "completed", "request_counts": {"total": 4, "completed": 4, "failed": 0}, "results": None},
            "a completed batch whose results are no array",
        ),
        # break49 F4: a status the docs do not give was "something that is not a batch object".
        ({"status": "queued_weird", "results": None}, "a batch status it does not document: queued_weird"),
    ],
)
def test_a_batch_that_cannot_be_read_stays_open_and_says_why(tmp_path: Path, batch: dict[str, Any], said: str) -> None:
    outcome = run(tmp_path, lambda ids: batch, "--deadline", "30")
    assert outcome.code == ExitCode.SUBMITTED and outcome.rows == [], outcome.stderr
    assert f"poll failed: bad_response: the Batch API answered {said}" in outcome.stderr
    assert summary(tmp_path)["stop"] == "submitted"  # its rows await a later --resume, none an error


@pytest.mark.parametrize("cost", [float("nan"), float("inf")])
def test_a_batch_cost_that_is_no_number_is_unknown_not_a_batch_never_read(tmp_path: Path, cost: float) -> None:
    # break22 M1: `"cost": NaN` (or Infinity) in a completed batch made its whole object
    # unreadable ("not a batch object"): polled for ever without a deadline, its paid answers
    # never recorded. As in a sync reply, such a cost cannot be believed: unknown, worst case held.
    def batch_of(ids: list[str]) -> dict[str, Any]:
        batch = completed(cost, ids)
        for entry in batch["results"]:
            entry["response"]["body"]["usage"]["cost"] = cost
        return batch

    outcome = run(tmp_path, batch_of, "--deadline", "10")  # the old code polled until it
    assert outcome.code == ExitCode.OK, outcome.stderr
    assert [(r["status"], r["cost"], r["cost_status"]) for r in outcome.rows] == [("ok", None, "unknown")] * ROWS
    assert summary(tmp_path)["total"]["cost_unknown_rows"] == ROWS


def test_a_batch_never_answered_as_a_batch_ends_the_run_open_and_is_said_once(tmp_path: Path) -> None:
    # break22 M1: a batch object that can never be read was polled for ever without a deadline,
    # one warning line per poll. Now: the failure is said once, and after LIMIT failed polls
    # in a row the run ends with the batch open, for a later --resume to collect.
    def batch_of(ids: list[str]) -> dict[str, Any]:
        return {"status": 7, "results": None}

    outcome = run(tmp_path, batch_of, "--deadline", "30")
    assert outcome.code == ExitCode.SUBMITTED, outcome.stderr
    failures = [line for line in outcome.stderr.splitlines() if "poll failed" in line]
    assert failures == [
        "batchrun: batch b1 (batch_1): poll failed: bad_response: the Batch API answered a batch status it does not "
        "document: 7"
    ]
    said = f"{ROWS} row(s) await OpenRouter: 1 batch(es) could not be read in {LIMIT} polls in a row; collect"
    assert said in outcome.stdout
    assert outcome.rows == [] and summary(tmp_path)["stop"] == "submitted"
    # break28 M1: with --quiet, exit 10 and nothing said, as for a batch merely running.
    quiet = run(tmp_path / "quiet", batch_of, "--deadline", "30", "--quiet")
    # out-100 F3: and why, which --quiet did not say (the first failed poll's line is not a warning).
    assert quiet.code == ExitCode.SUBMITTED and quiet.stderr == (
        f"batchrun: warning: batch(es) could not be read in {LIMIT} polls in a row (b1: bad_response: the Batch "
        "API answered a batch status it does not document: 7): see `batchrun batches list`\n"
    )


def answers_of(chars: int) -> BatchOf:
    """A completed batch whose every answer is `chars` characters long."""

    def batch_of(ids: list[str]) -> dict[str, Any]:
        batch = completed(None, ids)
        for entry in batch["results"]:
            entry["response"]["body"]["choices"][0]["message"]["content"] = "Paris " + "x" * chars
        return batch

    return batch_of


def test_a_completed_batch_larger_than_one_reply_cap_is_collected(tmp_path: Path) -> None:
    # break22 M2: a completed batch carries every result inline, and its object was held to
    # the cap of one answer: 120 KB of four 30 KB answers under --max-response-bytes 65536
    # (at the defaults, any batch over ~8,100 one-word answers) was refused at every poll.
    outcome = run(tmp_path, answers_of(30_000), "--max-response-bytes", "65536", "--deadline", "10")
    assert outcome.code == ExitCode.OK, outcome.stderr
    assert [r["status"] for r in outcome.rows] == ["ok"] * ROWS


def test_a_batch_of_long_answers_without_max_tokens_is_collected(tmp_path: Path) -> None:
    # out-100 F3: without max_tokens a row's allowance was 64 KiB, where its worst case is costed at
    # the model's listed maximum (16,384 tokens here): a paid batch of long (reasoning) answers was
    # refused at every poll, exit 10 night after night, its money held.
    job = JOB.replace("  params: {max_tokens: 16}", "  params: {temperature: 0}")
    server = batch_server(answers_of(120_000))
    outcome = run_hostile(
        server, tmp_path, "--budget", "1", "--max-response-bytes", "65536", "--deadline", "10", job=job
    )
    assert outcome.code == ExitCode.OK, outcome.stderr
    assert [r["status"] for r in outcome.rows] == ["ok"] * ROWS


def test_a_poll_reply_never_takes_more_than_the_poll_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # out-103 F4: rows without max_tokens allowed their model's listed maximum each: a gzip bomb
    # answering the poll of 2,000 such rows took 709 MB. One poll takes at most MAX_POLL_BYTES.
    monkeypatch.setattr(_batch_api, "MAX_POLL_BYTES", 200_000)
    job = JOB.replace("  params: {max_tokens: 16}", "  params: {temperature: 0}")
    server = batch_server(answers_of(120_000))
    outcome = run_hostile(
        server, tmp_path, "--budget", "1", "--max-response-bytes", "65536", "--deadline", "10", job=job
    )
    assert outcome.code == ExitCode.SUBMITTED and "over the 200,000-byte cap" in outcome.stderr, outcome.stderr


def test_a_batch_cost_no_batch_of_its_requests_could_cost_is_not_believed(tmp_path: Path) -> None:
    # out-105 F3: a completed batch's usage.cost of 1e300 was counted ($1e12 spread over its rows):
    # exit 5, and every later resume of the file stopped at once for its budget.
    outcome = run(tmp_path, lambda ids: completed(1e300, ids), "--deadline", "10")
    assert outcome.code == ExitCode.OK, outcome.stderr
    assert summary(tmp_path)["spent_usd"] < 1 and all((r["cost"] or 0) < 1 for r in outcome.rows)


def _item_costs(cost: float, batch_cost: float | None) -> BatchOf:
    def batch_of(ids: list[str]) -> dict[str, Any]:
        batch = completed(batch_cost, ids)
        for entry in batch["results"]:
            entry["response"]["body"]["usage"]["cost"] = cost
        return batch

    return batch_of


def test_item_costs_far_past_their_worst_case_are_not_believed(tmp_path: Path) -> None:
    # out-172 F1: items each said $9,999 (under the $10,000 no attempt can cost), a sync reply's
    # lie batch mode believed: "spent $39,996", exit 5, and every resume of the file after it too.
    # The batch's own charge is taken, shared and marked doubted, to be looked up again.
    outcome = run(tmp_path, _item_costs(9999.0, 0.01))
    assert outcome.code == ExitCode.OK, outcome.stderr
    assert "4 item(s) said to cost over 100 times the worst case: not believed" in outcome.stderr
    assert {(r["cost_status"], r.get("cost_doubted")) for r in outcome.rows} == {("estimated", True)}
    assert sum(r["cost"] for r in outcome.rows) == pytest.approx(0.01) == summary(tmp_path)["spent_usd"]
    # A resume once /generation knows them takes their cost from it.
    server = batch_server(_item_costs(9999.0, 0.01))
    server.routes["/generation"] = lambda r: json_answer(
        200, {"data": {"id": asked_generation(r), "total_cost": 0.002}}
    )
    resumed = run_hostile(server, tmp_path, "--budget", "1", "--resume", job=JOB)
    assert resumed.code == ExitCode.OK, resumed.stderr
    assert {(r["cost"], r["cost_status"], r.get("cost_doubted")) for r in resumed.rows} == {(0.002, "looked_up", None)}
    # With the batch's charge a lie too, nothing is known: each row holds its worst case.
    outcome = run(tmp_path / "both", _item_costs(9999.0, 9999.0))
    assert outcome.code == ExitCode.OK, outcome.stderr
    assert "4 item(s) and the batch itself ($9999.000000) said to cost over 100 times" in outcome.stderr
    assert {(r["cost"], r["cost_status"]) for r in outcome.rows} == {(None, "unknown")}
    held = sum(r["cost_held"] for r in outcome.rows)
    assert summary(tmp_path / "both")["spent_usd"] == pytest.approx(held) and held < 1


def test_a_batch_charge_far_past_its_rows_worst_cases_is_not_believed(tmp_path: Path) -> None:
    # out-172 F1: a batch's usage.cost of $9,999 for four rows worth a cent was counted in full.
    outcome = run(tmp_path, lambda ids: completed(9999.0, ids))
    assert outcome.code == ExitCode.OK, outcome.stderr
    assert "the batch itself ($9999.000000) said to cost over 100 times the worst case" in outcome.stderr
    assert {(r["cost"], r["cost_status"]) for r in outcome.rows} == {(ITEM_COST, "reported")}
    assert summary(tmp_path)["spent_usd"] == pytest.approx(ROWS * ITEM_COST)


def test_a_batch_object_of_another_batch_is_not_collected_as_this_one(tmp_path: Path) -> None:
    # break22 m4: the poll of batch_1 answered with batch_other's object was collected.
    def batch_of(ids: list[str]) -> dict[str, Any]:
        return {**completed(ITEM_COST * ROWS, ids), "id": "batch_other"}

    outcome = run(tmp_path, batch_of, "--deadline", "30")
    assert outcome.code == ExitCode.SUBMITTED and outcome.rows == []
    assert "poll failed: bad_response: the answer is batch batch_other's" in outcome.stderr


def test_a_poll_naming_another_model_is_said_once_and_its_rows_recorded(tmp_path: Path) -> None:
    # out-145 F8: adopt refuses a batch whose object names another model; a poll took it in silence.
    polls = 0

    def batch_of(ids: list[str]) -> dict[str, Any]:
        nonlocal polls
        polls += 1
        status = "completed" if polls > 2 else "in_progress"
        return {**completed(ITEM_COST * ROWS, ids, status), "model": "anthropic/claude-3.5-haiku\n" + FAKE_KEY}

    outcome = run(tmp_path, batch_of)
    assert outcome.code == ExitCode.OK and len(outcome.rows) == ROWS, outcome.stderr
    said = [line for line in outcome.stderr.splitlines() if "OpenRouter says it is for" in line]
    assert len(said) == 1 and FAKE_KEY not in outcome.stderr, outcome.stderr
    assert "it is for anthropic/claude-3.5-haiku\\n[key], not openai/gpt-4o-mini as sent" in said[0], said
    # A dated id of the same author is its own, as a row reply's is (out-148 F7).
    dated = run(
        tmp_path / "dated", lambda ids: {**completed(ITEM_COST * ROWS, ids), "model": "openai/gpt-4o-mini-2024-07-18"}
    )
    assert dated.code == ExitCode.OK and "OpenRouter says it is for" not in dated.stderr, dated.stderr


def test_result_items_repeated_or_for_no_row_are_said_and_counted(tmp_path: Path) -> None:
    # break22 m1, m2: a row answered twice, and an item for a row never sent, passed in silence.
    def batch_of(ids: list[str]) -> dict[str, Any]:
        batch = completed(ITEM_COST * ROWS, ids)
        batch["results"] += [item(ids[0]), item("f" * 20)]
        return batch

    outcome = run(tmp_path, batch_of, "-q")
    assert outcome.code == ExitCode.OK and len(outcome.rows) == ROWS
    # A warning, said under --quiet: which of two answers a row keeps decides its verdict.
    assert (
        "warning: batch b1 (batch_1): 1 result item(s) repeat a row (its last answer is kept; each one's cost "
        "counted); 1 result item(s) are for no row it was sent (not recorded)"
    ) in outcome.stderr
    # verify22 m2, break34 M2: what the stray item and the repeated one say they cost is spent:
    # the batch's charge is the larger of its usage.cost and its items' own, and the part no
    # record carries is in the key gap.
    figures = summary(tmp_path)
    assert figures["spent_usd"] == pytest.approx((ROWS + 2) * ITEM_COST)
    assert figures["key_gap_usd"] == pytest.approx(2 * ITEM_COST)


def test_a_row_keeps_its_paid_answer_over_a_later_failed_copy_and_differing_copies_are_said(tmp_path: Path) -> None:
    # verify34 N3: an error item after a paid answer made the row an error at $0 (to be bought
    # again by --retry-errors); copies answering differently were not said to differ.
    def batch_of(ids: list[str]) -> dict[str, Any]:
        failed = {"custom_id": ids[0], "response": None, "error": {"code": 500, "message": "it failed"}}
        other = item(ids[1])
        other["response"]["body"]["choices"][0]["message"]["content"] = "London"
        return completed(ITEM_COST * ROWS, [*ids]) | {"results": [item(i) for i in ids] + [failed, other]}

    outcome = run(tmp_path, batch_of, "-q")
    assert outcome.code == ExitCode.OK, outcome.stderr
    # Every row ok (the failed copy replaced no answer), the second row with its last answer.
    assert sorted((r["status"], r["content"]) for r in outcome.rows) == [("ok", "London")] + [("ok", "Paris")] * (
        ROWS - 1
    )
    assert "2 result item(s) repeat a row (its last answer is kept; 1 row(s) answered differently" in outcome.stderr


def test_a_repeated_item_that_costs_more_than_the_budget_stops_the_run(tmp_path: Path) -> None:
    # break34 M2: each row answered twice, first at $0.40 (the budget is $1): counted at the
    # kept items' $0.00003, exit 0.
    def batch_of(ids: list[str]) -> dict[str, Any]:
        costly = [item(i) for i in ids]
        for entry in costly:
            entry["response"]["body"]["usage"]["cost"] = 0.4
        return {"status": "completed", "results": costly + [item(i) for i in ids]}

    outcome = run(tmp_path, batch_of, "-q")
    assert outcome.code == ExitCode.BUDGET, outcome.stderr
    assert summary(tmp_path)["spent_usd"] == pytest.approx(ROWS * (0.4 + ITEM_COST))


async def test_a_poll_answered_429_waits_its_retry_after(tmp_path: Path) -> None:
    # break22 m6: polls answered 429 with Retry-After were made again every batch_poll_s.
    server = batch_server(lambda ids: {"status": "in_progress", "results": None})
    polls = {"n": 0}

    def limited(request: RawRequest) -> bytes:
        polls["n"] += 1
        return json_answer(429, {"error": {"code": 429, "message": "slow down"}}, {"Retry-After": "120"})

    server.routes["/batch_1"] = limited
    job = load_job(write_job(tmp_path, JOB.replace("batch_poll_s: 0.01", "batch_poll_s: 30")))
    job = replace(job, run=replace(job.run, deadline_s=1000))
    clock = FakeClock(0.0)
    with server.running():
        options = RunOptions(api_key=FAKE_KEY, base_url=server.base_url, output=tmp_path / "o.jsonl", clock=clock)
        await run_job(job, options)
    # Each wait is the server's 120 s, not batch_poll_s (30 s); the last is what the deadline left.
    assert clock.sleeps[:-1] and set(clock.sleeps[:-1]) == {120.0} and polls["n"] <= 1000 / 120 + 2


def test_one_404_just_after_the_batch_was_created_is_polled_again(tmp_path: Path) -> None:
    # break22 m10: one 404 on the first poll (a read before the write) made the batch lost for
    # good: its answers never collected, and --retry-errors paid for its rows again.
    polls = {"n": 0}

    def batch_of(ids: list[str]) -> dict[str, Any]:
        return completed(ITEM_COST * ROWS, ids)

    server = batch_server(batch_of)
    answer = server.routes["/batch_1"]

    def first_not_found(request: RawRequest) -> Answer:
        polls["n"] += 1
        return (
            json_answer(404, {"error": {"code": 404, "message": "no such batch"}})
            if polls["n"] == 1
            else answer(request)
        )

    server.routes["/batch_1"] = first_not_found
    outcome = run_hostile(server, tmp_path, "--budget", "1", job=JOB)
    assert outcome.code == ExitCode.OK and [r["status"] for r in outcome.rows] == ["ok"] * ROWS


def test_an_integer_past_64_bits_in_one_item_is_a_count_not_believed(tmp_path: Path) -> None:
    # verify22 N1: `prompt_tokens: 10**400` in one result item was a traceback (orjson cannot
    # write such an integer) at every resume, and the paid batch was never collected.
    def batch_of(ids: list[str]) -> dict[str, Any]:
        batch = completed(ITEM_COST * ROWS, ids)
        batch["results"][0]["response"]["body"]["usage"]["prompt_tokens"] = 10**400
        return batch

    outcome = run(tmp_path, batch_of, "--deadline", "10")
    assert outcome.code == ExitCode.OK, outcome.stderr
    assert [r["status"] for r in outcome.rows] == ["ok"] * ROWS
    assert sum("prompt_tokens" not in r["usage"] for r in outcome.rows) == 1  # the count not believed


def test_a_batch_of_long_answers_is_collected_within_what_its_max_tokens_allow(tmp_path: Path) -> None:
    # verify22 N3: answers of max_tokens 32,000 (about 128 KB each) passed a flat 64 KiB a row.
    long_answers = JOB.replace("max_tokens: 16", "max_tokens: 32000")
    server = batch_server(answers_of(128_000))
    outcome = run_hostile(server, tmp_path, "--budget", "1", "--max-response-bytes", "65536", job=long_answers)
    assert outcome.code == ExitCode.OK, outcome.stderr
    assert [r["status"] for r in outcome.rows] == ["ok"] * ROWS


def test_a_poll_failure_whose_text_varies_is_said_once(tmp_path: Path) -> None:
    # verify22 N6: a gateway's error page with a request id in it printed a line at every poll.
    server = batch_server(lambda ids: {"status": "in_progress", "results": None})
    polls = {"n": 0}

    def failing(request: RawRequest) -> bytes:
        polls["n"] += 1
        return json_answer(502, {"error": {"code": 502, "message": f"Bad gateway (request {polls['n']})"}})

    server.routes["/batch_1"] = failing
    outcome = run_hostile(server, tmp_path, "--budget", "1", "--deadline", "30", job=JOB)
    assert outcome.code == ExitCode.SUBMITTED and polls["n"] == LIMIT
    assert [line for line in outcome.stderr.splitlines() if "poll failed" in line] == [
        "batchrun: batch b1 (batch_1): poll failed: upstream_error: Bad gateway (request 1)"
    ]


def test_a_submission_answered_429_is_made_again_after_its_wait(tmp_path: Path) -> None:
    # verify22 N11: a 429 (which proves no batch was created) made the rows plain errors.
    server = batch_server(lambda ids: completed(ITEM_COST * ROWS, ids))
    submit = server.routes["/beta/batches"]
    posts = {"n": 0}

    def limited_once(request: RawRequest) -> Answer:
        posts["n"] += 1
        if posts["n"] == 1:
            return json_answer(429, {"error": {"code": 429, "message": "slow down"}}, {"Retry-After": "0"})
        return submit(request)

    server.routes["/beta/batches"] = limited_once
    outcome = run_hostile(server, tmp_path, "--budget", "1", "--deadline", "30", job=JOB)
    assert outcome.code == ExitCode.OK, outcome.stderr
    assert posts["n"] == 2 and [r["status"] for r in outcome.rows] == ["ok"] * ROWS


class _Hang:
    """An answer that never comes: only the client's own bound ends the call. The run's clock
    leaps past its deadline once a call waits on it, so the test never waits a deadline out."""

    DEADLINE = "30"  # far from the machine's speed; passed at once by the leap

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.begun = threading.Event()
        clock = LeapClock(self.begun.is_set, by=float(self.DEADLINE))
        clock.patch_system_clock(monkeypatch)
        patch_loop(clock, monkeypatch)  # the cut-off of the call that hangs is a loop timer

    async def __call__(self, _writer: Any) -> None:
        self.begun.set()
        await asyncio.sleep(3600)


GRACEFUL = JOB.replace(
    "run: {mode: batch, batch_poll_s: 0.01}", "run: {mode: batch, batch_poll_s: 0.01, grace_s: 0.05}"
)


JUDGED = (
    GRACEFUL.replace("prompts:", "judge: {model: openai/gpt-4o-mini}\nprompts:")
    .replace('checks: [{contains: "Paris"}]', 'checks: [{judge: "Names Paris."}]')
    .replace("grace_s: 0.05}", "grace_s: 0.05, concurrency: 4}")
)
VERDICT = chat_payload('{"pass": true, "score": 1, "reason": "names it"}')


def _graded_row(request_row: str) -> str:
    return request_row.partition(".")[0]  # a grader's request is `<row>.j<check>`


def test_graders_of_a_collected_batch_are_cut_by_the_deadline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # break64 F1: graders of a collected batch ran past the deadline, one timeout_s each (a hung
    # grader kept a nightly collect tick going for hours), and the run then blamed them, exit 1.
    server = batch_server(lambda ids: completed(0.0001, ids))
    hang = _Hang(monkeypatch)
    server.chat = lambda request: hang
    started = time.monotonic()
    outcome = run_hostile(
        server, tmp_path, "--deadline", hang.DEADLINE, "--timeout", "60", job=JUDGED, row_of=_graded_row
    )
    assert time.monotonic() - started < 30  # a bound, not a measure: 60 s a grader before
    assert outcome.code == ExitCode.DEADLINE, outcome.stderr
    assert len(outcome.rows) == ROWS and all(r["status"] == "ok" for r in outcome.rows)
    # Cut before it was sent, or in flight (then said of its grader, "grader M: ..."): a busy
    # machine decides which, not batchrun.
    errors = {r["checks"][0]["error"] for r in outcome.rows}
    assert errors and all(e.endswith("not graded: the run stopped (deadline)") for e in errors), errors


def test_graders_of_a_collected_batch_go_out_at_the_jobs_concurrency(tmp_path: Path) -> None:
    # break64 F2: collected rows were graded one grader request at a time: 40 rows of 0.5 s
    # graders took 21.9 s, where sync mode took 4.5 s at the job's concurrency.
    at_once, peak = 0, 0

    async def grader(writer: Any) -> None:
        nonlocal at_once, peak
        at_once += 1
        peak = max(peak, at_once)
        for _ in range(200):  # until a second grader request is out, or ~2 s: one at a time never gets one
            if peak > 1:
                break
            await asyncio.sleep(0.01)
        at_once -= 1
        writer.write(json_answer(200, VERDICT))
        await writer.drain()

    server = batch_server(lambda ids: completed(0.0001, ids))
    server.chat = lambda request: grader
    outcome = run_hostile(server, tmp_path, job=JUDGED, row_of=_graded_row)
    assert outcome.code == ExitCode.OK, outcome.stderr
    assert peak > 1 and all(r["passed"] is True for r in outcome.rows)


@pytest.mark.parametrize("hung", ["submission", "poll"])
def test_a_batch_call_that_never_answers_ends_by_the_deadline_and_says_so_under_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hung: str
) -> None:
    # break28 M2: each hung POST or GET waited its whole timeout (60 s), one after another, and a
    # next batch was submitted past the deadline: exit 10 after 122 s for --deadline 5. M1: with
    # --quiet, a batch left in doubt or unread said nothing.
    hang = _Hang(monkeypatch)

    def submit(request: RawRequest) -> Answer:
        if hung == "submission":
            return hang
        return json_answer(202, {"id": "batch_1", "status": "validating", "results": None})

    def get(request: RawRequest) -> Answer:
        return hang

    server = HostileServer(chat=lambda r: json_answer(500, {}), routes={"/beta/batches": submit, "/batch_1": get})
    started = time.monotonic()
    outcome = run_hostile(server, tmp_path, "--deadline", hang.DEADLINE, "--timeout", "60", "--quiet", job=GRACEFUL)
    assert time.monotonic() - started < 30  # a bound, not a measure: 60 s per call before
    assert outcome.code == ExitCode.SUBMITTED, outcome.stderr
    if hung == "submission":
        assert "warning: batch b1 (openai/gpt-4o-mini): no answer before the run had to end; in doubt" in outcome.stderr
    else:  # accepted, then not read: how it stands is not known (out-135 F5: nothing was said)
        assert outcome.stderr == (
            "batchrun: warning: batch(es) whose last poll failed: how they stand is not known (b1: timeout: no "
            "answer before the run had to end): see `batchrun batches list`\n"
        ), outcome.stderr
        # And the list says it, not the status read before as how it stands (out-137 9).
        code, listed, _ = call_cli("batches", "list", tmp_path / "out.jsonl")
        assert code == 0 and "validating?" in listed, listed
        assert (
            "b1: its last poll failed (timeout: no answer before the run had to end): its status is as last read"
            in listed
        )


def test_each_batch_unread_for_its_last_polls_is_named_beside_batches_still_running() -> None:
    # verify29 N1: one batch never read beside one still running: --quiet said nothing, since
    # the warning waited for every open batch to be unreadable.
    from batchrun._batch_polls import PollFailures
    from batchrun._batch_state import BatchEntry
    from batchrun._exceptions import Transient

    said: list[str] = []
    polls = PollFailures(said.append)
    unread, running = (BatchEntry(k, "m", ["r"], ["f"], 0.0, 0.0) for k in "ab")
    for _ in range(LIMIT):
        polls.failed(unread, Transient("upstream_error", "down", 503))
    polls.read(running, "m")
    assert polls.unreadable([unread, running]) == [unread] and not polls.given_up([unread, running])
    assert polls.given_up([unread]) and len(said) == 1  # the failure said once, as it was
    # out-135 F5: one failed poll, the last, is a batch whose state is not known, not "running".
    failing = BatchEntry("c", "m", ["r"], ["f"], 0.0, 0.0)
    polls.failed(failing, Transient("upstream_error", "down", 503))
    assert polls.last_failed([unread, running, failing]) == [unread, failing]
    assert polls.describe([running, failing]) == "1 batch(es) still running, 1 whose last poll failed"
    assert polls.unread_words([failing]).endswith("how they stand is not known")
    assert failing.poll_failed == "upstream_error: down" and running.poll_failed is None  # kept for `batches list`
    polls.read(failing, None)
    assert polls.describe([running, failing]) == "2 batch(es) still running" and failing.poll_failed is None


def test_a_key_read_that_hangs_after_a_batch_is_collected_ends_by_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # verify29 N1: /key answered the start-up read, then never again: the read that follows a
    # collected batch's charge retried six times at 60 s each, 376 s for --deadline 5.
    import batchrun._cut_off as cut_off

    monkeypatch.setattr(cut_off, "WIND_DOWN_FLOOR_S", 0.05)
    server = batch_server(lambda ids: completed(ITEM_COST * len(ids), ids))
    reads = {"n": 0}
    hang = _Hang(monkeypatch)

    def key_once(request: RawRequest) -> Answer:
        reads["n"] += 1
        if reads["n"] == 1:
            return json_answer(200, {"data": {"label": "k", "limit": 10, "limit_remaining": 10, "usage": 0}})
        return hang

    server.routes["/key"] = key_once
    started = time.monotonic()
    outcome = run_hostile(
        server, tmp_path, "--budget", "1", "--deadline", hang.DEADLINE, "--timeout", "60", job=GRACEFUL
    )
    assert time.monotonic() - started < 30  # a bound, not a measure: 6 x 60 s before
    assert reads["n"] >= 2 and len(outcome.rows) == ROWS, outcome.stderr
    assert {r["status"] for r in outcome.rows} == {"ok"}


def test_a_key_read_that_hangs_after_one_collection_leaves_no_other_batch_of_its_round_unpolled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # out-135 F4: /key was read after each batch collected: when it hung, the other batch of the
    # round, done at OpenRouter, was never polled again: exit 10 "still running" at the deadline.
    import batchrun._cut_off as cut_off

    monkeypatch.setattr(cut_off, "WIND_DOWN_FLOOR_S", 0.05)
    hang = _Hang(monkeypatch)
    batches: dict[str, list[str]] = {}
    reads = {"n": 0}

    def submit(request: RawRequest) -> bytes:
        batch_id = f"batch_{len(batches) + 1}"
        batches[batch_id] = [r["custom_id"] for r in request.json()["requests"]]
        return json_answer(202, {"id": batch_id, "status": "validating", "results": None})

    def get(batch_id: str) -> Callable[[RawRequest], bytes]:
        return lambda request: json_answer(200, {"id": batch_id, **completed(ITEM_COST, batches[batch_id])})

    def key(request: RawRequest) -> Answer:
        reads["n"] += 1
        if reads["n"] == 1:
            return json_answer(200, {"data": {"label": "k", "limit": 10, "limit_remaining": 10, "usage": 0}})
        return hang

    routes = {"/beta/batches": submit, "/batch_1": get("batch_1"), "/batch_2": get("batch_2"), "/key": key}
    server = HostileServer(chat=lambda r: json_answer(500, {}), routes=routes)
    two_models = GRACEFUL.replace(
        "models: [openai/gpt-4o-mini]", "models: [openai/gpt-4o-mini, google/gemini-2.0-flash-001]"
    )
    outcome = run_hostile(server, tmp_path, "--budget", "1", "--deadline", hang.DEADLINE, job=two_models)
    assert len(batches) == 2 and reads["n"] >= 2
    assert outcome.code == ExitCode.OK, outcome.stderr
    assert len(outcome.rows) == 2 * ROWS and {r["status"] for r in outcome.rows} == {"ok"}


def test_diff_as_a_gate_gives_no_verdict_on_rows_still_in_open_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # out-175 F4: a 07:00 tick still at exit 10 (one model's batch running), then the gate: `diff
    # --fail-on-regression` exit 4, "no passing row graded", where `report` said rows await OpenRouter.
    job = JOB.replace("models: [openai/gpt-4o-mini]", "models: [openai/gpt-4o-mini, google/gemini-2.0-flash-001]")
    submitted: list[list[str]] = []

    def submit(request: RawRequest) -> bytes:
        submitted.append([r["custom_id"] for r in request.json()["requests"]])
        return json_answer(202, {"id": f"batch_{len(submitted)}", "status": "validating", "results": None})

    def batch(number: int, status: str) -> Callable[[RawRequest], bytes]:
        return lambda request: json_answer(
            200, {"id": f"batch_{number}", "object": "batch", **completed(0.002, submitted[number - 1], status)}
        )

    def server(second: str) -> HostileServer:
        submitted.clear()
        return HostileServer(
            chat=lambda request: b"",
            routes={"/beta/batches": submit, "/batch_1": batch(1, "completed"), "/batch_2": batch(2, second)},
        )

    for name in ("before", "after"):
        (tmp_path / name).mkdir()
    paths = {name: write_job(tmp_path / name, job) for name in ("before", "after")}
    deadline = deadline_at_first_wait(monkeypatch)
    for name, second in (("before", "completed"), ("after", "in_progress")):
        with server(second).running() as hostile:
            base = (paths[name], "--base-url", hostile.base_url, "-o", tmp_path / name / "r.jsonl", "-q")
            code, _, err = call_cli(*base, "--deadline", deadline)  # the tick polls once before its wait
            assert code == (ExitCode.OK if second == "completed" else ExitCode.SUBMITTED), err
    before, after = tmp_path / "before" / "r.jsonl", tmp_path / "after" / "r.jsonl"
    assert len(final_rows(after)) == 4
    said = f"{after}: 4 row(s) await OpenRouter in open or in-doubt batches"
    code, out, err = call_cli("diff", before, after, "--fail-on-regression", "--json")
    assert code == ExitCode.INCOMPLETE and said in err and json.loads(out)["awaiting"] == [said], err
    code, out, _ = call_cli("diff", before, after, "--fail-on-regression", "--markdown")
    assert code == ExitCode.INCOMPLETE and f"**No verdict yet:** {said}" in out


@pytest.mark.parametrize("graded", [False, True])
def test_a_deadline_that_passes_during_the_last_submission_ends_a_submit_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, graded: bool
) -> None:
    # out-185 F2: each POST took 2 s, --deadline 3: every row submitted, b1 collected by the poll
    # after the last 202, b2 still running. The collection stopped the run for the deadline, exit
    # 6 "stopped: deadline" under --quiet, where it was a submit tick: exit 10, nothing said.
    # Graders of b1's rows would go out past the deadline: those are cut, and that is a stop (6).
    submitted: list[list[str]] = []
    clock = LeapClock(lambda: len(submitted) == 2, by=30.0)  # the second POST leaps past the deadline
    clock.patch_system_clock(monkeypatch)
    patch_loop(clock, monkeypatch)

    def submit(request: RawRequest) -> Answer:
        submitted.append([r["custom_id"] for r in request.json()["requests"]])
        answer = json_answer(202, {"id": f"batch_{len(submitted)}", "status": "validating", "results": None})

        async def after_the_deadline(writer: Any) -> None:
            while not clock.leapt:
                await asyncio.sleep(0.005)
            writer.write(answer)
            await writer.drain()

        return answer if len(submitted) == 1 else after_the_deadline

    def batch(number: int, status: str) -> Callable[[RawRequest], bytes]:
        def get(request: RawRequest) -> bytes:
            answered = completed(0.00001 * ROWS, submitted[number - 1], status)
            for result in answered["results"]:  # within their worst cases: nothing else to say
                result["response"]["body"]["usage"]["cost"] = 0.00001
            return json_answer(200, {"id": f"batch_{number}", "object": "batch", **answered})

        return get

    routes = {"/beta/batches": submit, "/batch_1": batch(1, "completed"), "/batch_2": batch(2, "in_progress")}
    server = HostileServer(chat=lambda request: json_answer(200, VERDICT), routes=routes)
    job = (JUDGED if graded else GRACEFUL).replace("grace_s: 0.05", "grace_s: 5")
    job = job.replace("models: [openai/gpt-4o-mini]", "models: [openai/gpt-4o-mini, google/gemini-2.0-flash-001]")
    outcome = run_hostile(server, tmp_path, "--deadline", "30", "--quiet", job=job, row_of=_graded_row)
    assert len(submitted) == 2 and len(outcome.rows) == ROWS and {r["status"] for r in outcome.rows} == {"ok"}
    if graded:
        assert outcome.code == ExitCode.DEADLINE, outcome.stderr
        assert all(r["checks"][0]["error"].endswith("(deadline)") for r in outcome.rows)
    else:
        assert outcome.code == ExitCode.SUBMITTED and outcome.stderr == "", outcome.stderr
        assert all(r["passed"] is True for r in outcome.rows)
