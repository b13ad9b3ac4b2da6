"""Batches open or in doubt hold their worst case as spent (break-14c N2).

A batch "in doubt" (the POST was sent, no usable id came back: a crash before the id was
written, or a 202 whose id is refused) may be running and billing at OpenRouter. The Batch
API quickstart (batch-quickstart.mdx) documents no way to find it again, so until
`batches adopt` or `batches release` its worst case counts as spent: in its own run's
totals, in the reconciliation, on every resume, and in the readers ("+?"). So does a batch
still open when the run ends (exit 10).
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchrun import ExitCode, _batch_key, _batch_run
from batchrun._batch_state import BatchState

from .conftest import call_cli, deadline_at_first_wait, final_rows, write_job
from .hostile import Handler, HostileServer, RawRequest, chat_payload, http, json_answer

JOB = """
name: doubt
defaults:
  params: {max_tokens: 16}
models: [openai/gpt-4o-mini, google/gemini-2.0-flash-001]
prompts:
  - id: capital
    text: "Capital of {{country}}?"
    vars: [{country: France}, {country: Japan}, {country: Italy}, {country: Spain}]
run: {mode: batch, batch_poll_s: 0.01}
"""
BILLED_PER_BATCH = 0.0001  # what the server charges for a batch it accepted
DEADLINE_S = 30  # never waited for: the clock leaps past it (_run)
pytestmark = pytest.mark.usefixtures("keys_env")


class BillingBatchApi:
    """A Batch API that bills every batch it is sent. Its first 202 carries an id that is not
    an id (the batch runs anyway); later batches get a good id and stay `in_progress`."""

    def __init__(self, bad_first: bool = True, first_answer: bytes | None = None) -> None:
        self.posts = 0
        self.billed = 0.0
        self.bad_first = bad_first
        self.first_answer = first_answer  # the first 202 as sent, whatever its body
        self.status = "in_progress"  # what every poll says
        self.item_cost = 0.0  # each result item's usage.cost once completed
        self.rows: dict[str, list[str]] = {}  # batch id -> its rows
        self.same_id = False  # every 202 names the first batch's id (its rows stay the first's)

    def submit(self, request: RawRequest) -> bytes:
        self.posts += 1
        self.billed += BILLED_PER_BATCH
        if self.first_answer is not None and self.posts == 1:
            return self.first_answer
        batch_id = "batch bad/.." if self.bad_first and self.posts == 1 else f"batch_{self.posts}"
        batch_id = "batch_1" if self.same_id else batch_id
        self.rows.setdefault(batch_id, [r["custom_id"] for r in request.json()["requests"]])
        return json_answer(202, {"id": batch_id, "status": "validating", "results": None})

    def get(self, request: RawRequest) -> bytes:
        batch_id = request.path.split("?")[0].rsplit("/", 1)[-1]
        batch: dict[str, Any] = {"id": batch_id, "object": "batch", "status": self.status, "results": None}
        if self.status == "completed":
            rows = self.rows[batch_id]
            batch["usage"] = {"cost": self.item_cost * len(rows)}
            batch["results"] = [_item(row, self.item_cost) for row in rows]
        return json_answer(200, batch)

    def key(self, request: RawRequest) -> bytes:
        return json_answer(200, {"data": {"label": "k", "limit": None, "limit_remaining": None, "usage": self.billed}})

    def server(self) -> HostileServer:
        routes: dict[str, Handler] = {"/beta/batches": self.submit, **{f"/batch_{n}": self.get for n in range(1, 6)}}
        return HostileServer(chat=_no_chat, key=self.key, routes=routes)


def _item(custom_id: str, cost: float) -> dict[str, Any]:
    body = chat_payload("Paris", id=f"gen-batch-{custom_id}")
    body["usage"]["cost"] = cost
    return {"custom_id": custom_id, "response": {"status_code": 200, "body": body}, "error": None}


def _no_chat(request: RawRequest) -> bytes:
    raise AssertionError("batch mode sent a chat request")


def _run(api: BillingBatchApi, folder: Path, *args: str, job: str = JOB) -> tuple[int, str, str]:
    """The job against `api`; a `--deadline` given comes at the run's first wait."""
    folder.mkdir(parents=True, exist_ok=True)
    path = write_job(folder, job)
    server = api.server()
    with server.running(), pytest.MonkeyPatch.context() as patch:
        deadline_at_first_wait(patch, DEADLINE_S)
        return call_cli(path, "--base-url", server.base_url, "-o", folder / "out.jsonl", *args)


def _summary(folder: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((folder / "out.summary.json").read_text())
    return result


def _worst_cases(tmp_path: Path) -> list[float]:
    """Each batch's reservation (its worst case at full prices), from a probe run."""
    probe = tmp_path / "probe"
    code, _, _ = _run(BillingBatchApi(bad_first=False), probe, "--budget", "1", "--deadline", str(DEADLINE_S))
    assert code == ExitCode.SUBMITTED
    return [e.reserved_usd for e in BatchState.read(probe / "out.jsonl").entries]


def test_a_batch_in_doubt_counts_as_spent_in_its_run_and_on_every_resume(tmp_path: Path) -> None:
    first, second = _worst_cases(tmp_path)
    assert first >= second / 2 > 0  # so the budget below holds the first batch and not both
    budget = f"{first + second / 2:.9f}"
    api = BillingBatchApi()
    folder = tmp_path / "run"
    code, stdout, stderr = _run(api, folder, "--budget", budget, "--deadline", str(DEADLINE_S))
    assert code == ExitCode.BUDGET and api.posts == 1  # b1 in doubt; b2 does not fit beside it
    assert "in doubt" in stderr
    figures = _summary(folder)
    # Before: "spent $0.000000" and "$+0.0001 unexplained" while the in-doubt batch was billed.
    assert figures["spent_usd"] == pytest.approx(first)
    assert figures["batches"]["held_usd"] == pytest.approx(first) and figures["batches"]["in_doubt"] == ["b1"]
    rec = figures["reconciliation"]
    assert rec["open_batches_held_usd"] == pytest.approx(first) and rec["warning"] is None
    assert rec["unattributed_usd"] == pytest.approx(BILLED_PER_BATCH)
    assert figures["total"]["cost_unknown_rows"] == 4 and figures["total"]["cost_held_usd"] == pytest.approx(first)
    assert f"spent ${first:.6f} of" in stdout and "held for batches" in stdout and "+?" in stdout

    for _ in range(2):  # every resume holds it again: b2 is never submitted past the budget
        code, stdout, _ = _run(api, folder, "--resume", "--budget", budget, "--deadline", str(DEADLINE_S))
        assert code == ExitCode.BUDGET and api.posts == 1, stdout
        assert _summary(folder)["spent_usd"] == pytest.approx(first)

    # The readers show the in-doubt rows as of unknown cost, with the worst case held.
    code, stdout, _ = call_cli("report", folder / "out.jsonl", "--json")
    assert code == ExitCode.INCOMPLETE  # b2's rows skipped (budget): never answered (break42 F2)
    total = json.loads(stdout)["total"]
    assert total["cost_unknown_rows"] == 4 and total["cost_held_usd"] == pytest.approx(first)
    code, stdout, _ = call_cli("history", folder / "out.jsonl")
    assert code == 0 and "+?" in stdout
    # diff sees them too; merge refuses a file whose batches are not collected, untouched.
    code, stdout, _ = call_cli("diff", folder / "out.jsonl", folder / "out.jsonl", "--json")
    models = json.loads(stdout)["models"]
    unknown = [m["cost_unknown_rows"] for m in models.values() if "cost_unknown_rows" in m]
    assert code == 0 and unknown == [{"before": 4, "after": 4}]  # the in-doubt batch's 4 rows
    merged = tmp_path / "merged.jsonl"
    code, _, err = call_cli("merge", folder / "out.jsonl", "-o", merged)
    assert code == ExitCode.USAGE and "1 batch(es) still open or in doubt (b1)" in err and not merged.exists()

    # Released (the user says it never ran): nothing is held any more, b1's rows are submitted.
    assert call_cli("batches", "release", folder / "out.jsonl", "b1")[0] == 0
    code, _, _ = _run(api, folder, "--resume", "--budget", "1", "--deadline", str(DEADLINE_S))
    assert code == ExitCode.SUBMITTED and api.posts == 3


def test_an_open_batch_at_exit_10_shows_its_reservation_held(tmp_path: Path) -> None:
    api = BillingBatchApi(bad_first=False)
    code, stdout, _ = _run(api, tmp_path, "--budget", "1", "--deadline", str(DEADLINE_S))
    assert code == ExitCode.SUBMITTED and api.posts == 2
    held = sum(e.reserved_usd for e in BatchState.read(tmp_path / "out.jsonl").entries)
    figures = _summary(tmp_path)
    # Before: "spent $0.000000 of $1.000000 ($1.000000 left)", and the batches' charge "unexplained".
    # The server bills a little past the batches' worst cases: that counts too (verify38 N3).
    assert held < api.billed and figures["batches"]["held_usd"] == pytest.approx(held)
    spent = figures["spent_usd"]
    assert spent == pytest.approx(api.billed, abs=1e-8) and figures["reconciliation"]["warning"] is None
    assert figures["total"]["cost_unknown_rows"] == 8
    assert f"(${1 - spent:.6f} left)" in stdout and "2 batch(es) not collected and 0 in doubt" in stdout


@pytest.mark.parametrize(
    "answer",
    [
        http(202, b"<html>accepted</html>"),
        json_answer(202, {"status": "validating"}),
        json_answer(201, []),
        json_answer(502, {"error": {"code": 502, "message": "Bad gateway"}}),
        json_answer(500, {"error": {"code": 500, "message": "Internal error"}}),
        # out-100 F2: a proxy's 408 after the upload, the batch made behind it: released, the rows
        # $0 errors, and `--resume --retry-errors` bought it again.
        json_answer(408, {"error": {"code": 408, "message": "Request timeout"}}),
        json_answer(499, {"error": {"code": 499, "message": "Client closed request"}}),
    ],
    ids=["not-json", "no-id", "not-an-object", "502", "500", "408", "499"],
)
def test_a_submission_answered_2xx_with_no_batch_object_is_in_doubt(tmp_path: Path, answer: bytes) -> None:
    # Before: the hold was released and the rows written as errors, while the batch may run and bill.
    # A server error too (break22 m5): a gateway's 502 says nothing of what the server behind it did.
    api = BillingBatchApi(bad_first=False, first_answer=answer)
    code, stdout, stderr = _run(api, tmp_path, "--budget", "1", "--deadline", str(DEADLINE_S))
    assert code == ExitCode.SUBMITTED and api.posts == 2 and "in doubt" in stderr
    entries = BatchState.read(tmp_path / "out.jsonl").entries
    assert [(e.key, e.state) for e in entries] == [("b1", "intent"), ("b2", "submitted")]
    figures = _summary(tmp_path)
    # Held at their worst cases, and what the key shows past them (a flat fee a batch) counted too.
    held = sum(e.reserved_usd for e in entries)
    assert figures["spent_usd"] == pytest.approx(max(held, api.billed), abs=1e-8)
    assert figures["batches"]["in_doubt"] == ["b1"] and figures["total"]["error"] == 0


def test_a_batch_billed_in_the_run_that_submitted_it_is_not_unexplained_when_collected(tmp_path: Path) -> None:
    # The cron pattern: submit at 01:00 (exit 10), collect at 07:00. A batch billed at
    # submission shows in the first run's key usage, not the second's: the collecting run's
    # ledger counts its cost, and that is no "unexplained" shortfall.
    api = BillingBatchApi(bad_first=False)
    job = JOB.replace("max_tokens: 16", "max_tokens: 100000")  # worst cases above the charges below
    code, _, _ = _run(api, tmp_path, "--budget", "1", "--deadline", str(DEADLINE_S), job=job)
    assert code == ExitCode.SUBMITTED and _summary(tmp_path)["reconciliation"]["warning"] is None
    api.status, api.item_cost = "completed", 0.006  # two batches of 4 rows: $0.048 known, none billed now
    code, stdout, stderr = _run(api, tmp_path, "--resume", "--budget", "1", "--deadline", str(DEADLINE_S), job=job)
    assert code == ExitCode.OK, stdout + stderr
    rec = _summary(tmp_path)["reconciliation"]
    assert rec["key_usage_delta_usd"] == 0 and rec["ledger_known_usd"] == pytest.approx(0.048)
    assert rec["earlier_batches_usd"] == pytest.approx(0.048) and rec["warning"] is None
    assert "unexplained" not in stdout + stderr


class _DiskFull:
    """The batch record's rename fails for want of room once `full()` holds; other files are written."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, full: Callable[[bytes], bool]) -> None:
        self.full, self.replace = full, os.replace
        monkeypatch.setattr(os, "replace", self)

    def __call__(self, source: Any, target: Any) -> None:
        if str(target).endswith(".batches.json") and self.full(Path(source).read_bytes()):
            raise OSError(errno.ENOSPC, "No space left on device")
        self.replace(source, target)


@pytest.mark.parametrize("fills", ["before", "after_202", "at_end"])
def test_a_batch_record_that_cannot_be_written_is_exit_11_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fills: str
) -> None:
    # out-185 F3: on a full disk the record's OSError escaped from the end of the run (after the
    # batches were paid for): "batchrun: No space left on device", exit 2, "nothing was spent".
    if fills == "before":
        disk = _DiskFull(monkeypatch, lambda record: True)
    elif fills == "after_202":  # the 202's id is the first thing it cannot write
        disk = _DiskFull(monkeypatch, lambda record: b'"submitted"' in record)
    else:  # the disk fills once every batch is submitted: the end-of-run write fails
        disk, real_note = _DiskFull(monkeypatch, lambda record: False), _batch_key.note_key_seen

        def note(*args: Any, **kwargs: Any) -> None:
            disk.full = lambda record: True
            real_note(*args, **kwargs)

        monkeypatch.setattr(_batch_run, "note_key_seen", note)
    api = BillingBatchApi(bad_first=False)
    code, _, stderr = _run(api, tmp_path, "--budget", "1", "--deadline", str(DEADLINE_S))
    record = tmp_path / "out.batches.json"
    assert code == ExitCode.IO, stderr
    assert f"batchrun: {record}: writing the batch record failed: No space left on device" in stderr
    assert api.posts == {"before": 0, "after_202": 1, "at_end": 2}[fills]  # nothing sent past it
    if fills == "before":
        return
    figures = _summary(tmp_path)  # written: only the batch record could not be
    assert figures["exit_code"] == ExitCode.IO and figures["stop"] == "io"
    assert figures["batches"]["held_usd"] > 0  # what was submitted stays counted
    if fills == "after_202":
        # Still an intent on disk: the next run holds it in doubt; the id said adopts it.
        adopt = f"batch b1 was submitted as batch_1: `batchrun batches adopt {tmp_path / 'out.jsonl'} b1 batch_1`"
        assert adopt in stderr, stderr
        disk.full = lambda record: False
        assert [(e.key, e.state) for e in BatchState.read(tmp_path / "out.jsonl").entries] == [("b1", "intent")]
        code, _, stderr = _run(api, tmp_path, "--resume", "--budget", "1", "--deadline", str(DEADLINE_S))
        assert code == ExitCode.SUBMITTED and api.posts == 2 and "batch(es) b1: their submission is unknown" in stderr


def test_a_batch_id_given_to_a_second_submission_leaves_that_one_in_doubt(tmp_path: Path) -> None:
    # out-185 F1: both batches were recorded under the one id; the next tick and `batches list`
    # then refused the file (exit 2, "batch_id ... is listed twice"), mended only by hand.
    api = BillingBatchApi(bad_first=False)
    api.same_id = True
    out = tmp_path / "out.jsonl"
    code, _, stderr = _run(api, tmp_path, "--budget", "1", "--deadline", str(DEADLINE_S))
    assert code == ExitCode.SUBMITTED and api.posts == 2, stderr
    assert "the Batch API answered with b1's batch id batch_1; in doubt: see `batchrun batches list`" in stderr
    entries = BatchState.read(out).entries
    assert [(e.key, e.state, e.batch_id) for e in entries] == [("b1", "submitted", "batch_1"), ("b2", "intent", None)]
    assert _summary(tmp_path)["batches"]["in_doubt"] == ["b2"]

    api.status, api.item_cost = "completed", 0.0001
    code, _, stderr = _run(api, tmp_path, "--resume", "--budget", "1", "--deadline", str(DEADLINE_S))
    assert code == ExitCode.SUBMITTED and api.posts == 2, stderr  # b1 collected, b2 held in doubt
    code, listed, _ = call_cli("batches", "list", out)
    assert code == 0 and "collected" in listed and "in doubt: 1" in listed, listed
    code, _, err = call_cli("batches", "adopt", out, "b2", "batch_1")
    assert code == ExitCode.USAGE and "batch_1 is already b1's batch" in err
    assert call_cli("batches", "release", out, "b2")[0] == 0
    api.same_id = False
    code, _, stderr = _run(api, tmp_path, "--resume", "--budget", "1", "--deadline", str(DEADLINE_S))
    assert code == ExitCode.OK and api.posts == 3, stderr
    assert len(final_rows(out)) == 8


def test_adopt_refuses_a_batch_that_asked_its_rows_another_question(tmp_path: Path) -> None:
    # out-185 F4: adopt compared row ids (custom_id) only, which an edited prompt keeps: another
    # job's batch was adopted and its answers recorded under a `request` they did not answer.
    api = BillingBatchApi(bad_first=False, first_answer=json_answer(502, {"error": {"code": 502, "message": "x"}}))
    code, _, stderr = _run(api, tmp_path / "run", "--budget", "1", "--deadline", str(DEADLINE_S))
    assert code == ExitCode.SUBMITTED and "in doubt" in stderr
    out = tmp_path / "run" / "out.jsonl"
    b1 = BatchState.read(out).entries[0]
    assert b1.state == "intent" and b1.model == "openai/gpt-4o-mini"
    # The same job, name, prompt id and rows, asking another question: the same row ids.
    other = JOB.replace("Capital of {{country}}?", "Largest city of {{country}}?")
    code, _, _ = _run(api, tmp_path / "other", "--budget", "1", "--deadline", str(DEADLINE_S), job=other)
    assert code == ExitCode.SUBMITTED and api.posts == 4
    theirs = BatchState.read(tmp_path / "other" / "out.jsonl").entries[0]
    assert theirs.model == b1.model and theirs.rows == b1.rows and theirs.batch_id == "batch_3"
    api.status = "completed"
    with api.server().running() as server:
        code, _, err = call_cli("batches", "adopt", out, "b1", "batch_3", "--base-url", server.base_url)
    assert code == ExitCode.USAGE and "batch_3 is not b1's batch: it holds requests that are not b1's 4" in err, err
    assert BatchState.read(out).entries[0].state == "intent"
