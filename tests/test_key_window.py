"""The key window holds whatever /key and the answers claim (break14c N3, N7, N9).

Each server here really charges `bill` per chat request (kept in `Server.billed`), answers
with a `usage.cost` far below it (or fails), and shows the charges on /key in a shape the
test picks. The promise checked is the README's ("Costs the answers under-report"): what the
server billed never passes the budget when each charge is within its attempt's worst case,
and a run that could not follow the key under a limit says so in its exit code (5), never 0.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import pytest

from batchrun import ExitCode, RunOptions, load_job, matrix_requests, run_job
from batchrun._batch_key import draw_rise, follow_earlier, seen_between_runs
from batchrun._batch_state import BatchEntry, BatchState
from batchrun._exceptions import ResultsError
from batchrun._job import Job
from batchrun._journal_file import journal_path
from batchrun._killed_run import summary_key_seen
from batchrun._ledger import BudgetExhausted, CreditLedger
from batchrun._merged_key_gap import merged_key_gap
from batchrun._reader import scan_states
from batchrun._reconcile import KeyStart, key_spend, key_usage, usage_span
from batchrun._summary_types import Summary
from batchrun._verdict import decide

from .conftest import FAKE_KEY, FakeClock, call_cli, counting_job, write_job
from .hostile import HostileServer, RawRequest, chat_payload, json_answer, models_payload

# Nothing waits here (a fake clock); a regression that does fails on the timeout.
pytestmark = [pytest.mark.usefixtures("keys_env"), pytest.mark.timeout(60)]

MODEL = "openai/gpt-4o-mini"
# Dear prices, so that a row's worst case is about $0.02 (one token per byte of the body
# at $100/M, and 16 completion tokens at $200/M).
PRICES = {MODEL: {"pricing": {"prompt": "0.0001", "completion": "0.0002", "request": "0"}}}
BILL = 0.012  # what each request is really charged: below its worst case, as the bound needs
BUDGET = 0.05  # about two worst cases: an honest run stops after three or four requests
ROWS = 20


def job_text(budget: float | None = BUDGET, *, attempts: int = 2, rows: int = ROWS, **run: Any) -> str:
    settings = {"concurrency": 2, "timeout_s": 10, "max_attempts": attempts, "grace_s": 1, **run}
    if budget is not None:
        settings["budget_usd"] = budget
    return counting_job("window", MODEL, rows, json.dumps(settings))


@dataclass
class Server:
    """Charges `bill` per chat request; `answer` is what a request gets back, `key` what /key
    says given what was billed and how many times /key was read (1 = pre-flight's read)."""

    key: Callable[[float, int], dict[str, Any] | None]  # None: a 500
    answer: Callable[[], bytes] = lambda: json_answer(
        200,
        chat_payload(
            model=MODEL, usage={"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "cost": 1e-6}
        ),
    )
    billed: float = 0.0
    chats: int = 0
    key_reads: int = 0
    honest_chats: int = 0  # the first this many requests are billed nothing (a price that rises later)
    bill: float = BILL  # what each request is charged
    prices: dict[str, Any] = field(default_factory=lambda: PRICES)  # what /models lists

    def chat(self, request: RawRequest) -> bytes:
        self.billed += self.bill if self.chats >= self.honest_chats else 0.0
        self.chats += 1
        return self.answer()

    def read_key(self, request: RawRequest) -> bytes:
        self.key_reads += 1
        data = self.key(self.billed, self.key_reads)
        return (
            json_answer(500, {"error": {"code": 500, "message": "boom"}})
            if data is None
            else json_answer(200, {"data": data})
        )

    def hostile(self) -> HostileServer:
        return HostileServer(
            chat=self.chat, models=lambda r: json_answer(200, models_payload(self.prices)), key=self.read_key
        )


async def run(
    tmp_path: Path, server: Server, job: str | None = None
) -> tuple[ExitCode, dict[str, Any], list[dict[str, Any]]]:
    loaded = load_job(write_job(tmp_path, job or job_text()))
    output = tmp_path / "o.jsonl"
    with server.hostile().running() as hostile:
        report = await run_job(
            loaded, RunOptions(api_key=FAKE_KEY, base_url=hostile.base_url, output=output, clock=FakeClock())
        )
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len({r["id"] for r in rows}) == len(rows) == sum(1 for _ in matrix_requests(loaded))  # each row once
    code, _ = decide(report.summary, loaded.run, run=True)
    return code, dict(report.summary), rows


def key_data(usage: Any, **extra: Any) -> dict[str, Any]:
    return {"label": "k", "limit": None, "limit_remaining": None, "usage": usage, **extra}


# -- N3: a key whose limit includes BYOK counts byok_usage -------------------------------------
def byok_split(billed: float, reads: int) -> dict[str, Any]:
    """99% of each charge shows as `byok_usage` (openapi /key: "Total external BYOK usage"),
    and the key's limit includes it; `usage` has the rest."""
    return key_data(billed * 0.01, byok_usage=billed * 0.99, include_byok_in_limit=True)


def limit_falls(billed: float, reads: int) -> dict[str, Any]:
    """The flag says BYOK is not in the limit, but limit_remaining falls by every charge."""
    return key_data(
        billed * 0.01, byok_usage=billed * 0.99, include_byok_in_limit=False, limit=10.0, limit_remaining=10.0 - billed
    )


@pytest.mark.parametrize("key", [byok_split, limit_falls], ids=["byok_usage counted", "limit_remaining falls"])
async def test_byok_spend_on_the_key_is_seen_by_the_window_and_the_reconciliation(
    tmp_path: Path, key: Callable[[float, int], dict[str, Any]]
) -> None:
    # break14c N3: /key's byok_usage was dropped, every request was believed at its $0.000001:
    # 20 requests, $0.24 charged under a $0.05 budget, exit 0, no warning.
    server = Server(key)
    code, summary, rows = await run(tmp_path, server)
    assert server.billed <= BUDGET + 1e-9 and server.chats < ROWS
    assert code == ExitCode.BUDGET and summary["stop"] == "budget"
    rec = summary["reconciliation"]
    assert rec["counted_from_key_usd"] > 0.02
    assert rec["key_usage_delta_usd"] == pytest.approx(server.billed)  # the end compares all of it
    # Counted from the key already: said so, not "unexplained" (verify39).
    assert "counted as spent from the key's usage" in rec["warning"] and "unexplained" not in rec["warning"]
    assert {r["reason"] for r in rows if r["status"] == "skipped"} == {"budget"}


@pytest.mark.parametrize(
    ("info", "counted"),
    [
        (key_data(1.0, byok_usage=2.0, include_byok_in_limit=True), 3.0),
        (key_data(1.0, byok_usage=2.0, include_byok_in_limit=False), 1.0),
        (key_data(1.0, byok_usage=2.0, include_byok_in_limit="yes"), 3.0),  # a flag to doubt: the larger
        (key_data(1.0, byok_usage=None, include_byok_in_limit=True), None),  # a part the limit counts is unknown
        (key_data(1.0, byok_usage=None, include_byok_in_limit="yes"), None),  # out-162 F4: a doubted flag counts it
        (key_data(1.0), 1.0),
        (key_data("1.0"), None),
    ],
)
def test_the_usage_a_key_limit_counts(info: dict[str, Any], counted: float | None) -> None:
    assert key_usage(info) == counted


def test_the_keys_spend_is_the_larger_of_its_usage_rise_and_its_credit_fall() -> None:
    assert key_spend(1.0, 1.5, 10.0, 9.0) == 1.0  # the credit fell more: BYOK the usage leaves out
    assert key_spend(1.0, 1.5, 10.0, 9.9) == 0.5
    assert key_spend(1.0, 1.5, 10.0, 20.0) == 0.5  # a reset or a raised limit shows nothing
    assert key_spend(1.0, 1.5, None, None) == 0.5


async def test_a_byok_usage_the_parser_keeps_is_reconciled_at_the_end(tmp_path: Path) -> None:
    # Honest answers (the cost reported is the charge), a key charged only as BYOK: the ledger
    # and the key agree, no warning, and every row ran.
    server = Server(
        lambda billed, reads: key_data(0.0, byok_usage=billed, include_byok_in_limit=True),
        answer=lambda: json_answer(
            200, chat_payload(model=MODEL, usage={"prompt_tokens": 10, "completion_tokens": 2, "cost": BILL})
        ),
    )
    code, summary, _ = await run(tmp_path, server, job_text(budget=None))
    assert code == ExitCode.OK and server.chats == ROWS
    rec = summary["reconciliation"]
    assert rec["key_usage_delta_usd"] == pytest.approx(ROWS * BILL) and rec["warning"] is None


async def test_honest_byok_answers_on_a_key_whose_limit_leaves_byok_out_reconcile(tmp_path: Path) -> None:
    # break14c N16: the ledger counts a BYOK answer's fee and upstream cost, the key's `usage` only
    # the fee (its limit leaves BYOK out): every honest run warned "$-0.2376 unexplained".
    fee, upstream = 0.0001, BILL - 0.0001
    usage: dict[str, Any] = {"prompt_tokens": 10, "completion_tokens": 2, "cost": fee, "is_byok": True}
    usage["cost_details"] = {"upstream_inference_cost": upstream}
    server = Server(
        lambda billed, reads: key_data(
            billed * fee / BILL, byok_usage=billed * upstream / BILL, include_byok_in_limit=False
        ),
        answer=lambda: json_answer(200, chat_payload(model=MODEL, usage=usage)),
    )
    code, summary, _ = await run(tmp_path, server, job_text(budget=None))
    assert code == ExitCode.OK and server.chats == ROWS
    rec = summary["reconciliation"]
    assert rec["key_usage_delta_usd"] == pytest.approx(ROWS * BILL) and rec["warning"] is None


async def test_byok_answers_under_reporting_upstream_on_a_key_whose_limit_leaves_byok_out_are_caught(
    tmp_path: Path,
) -> None:
    # break14e E5: the ledger counts a BYOK answer's upstream cost, so the budget covers BYOK
    # spend, but the key window read only `usage` (the limit leaves BYOK out): answers saying
    # their upstream cost was $0.0001 while $0.0119 was charged sent all 20 rows, $0.24 under a
    # $0.05 budget, exit 0. The window now follows byok_usage too, as the reconciliation does.
    usage: dict[str, Any] = {"prompt_tokens": 10, "completion_tokens": 2, "cost": 1e-6, "is_byok": True}
    usage["cost_details"] = {"upstream_inference_cost": 1e-6}
    server = Server(
        lambda billed, reads: key_data(billed * 0.01, byok_usage=billed * 0.99, include_byok_in_limit=False),
        answer=lambda: json_answer(200, chat_payload(model=MODEL, usage=usage)),
    )
    code, summary, _ = await run(tmp_path, server)
    assert server.billed <= BUDGET + 1e-9 and server.chats < ROWS
    assert code == ExitCode.BUDGET and summary["reconciliation"]["counted_from_key_usd"] > 0.02


# -- N7: a key whose usage cannot be followed stops the run under a limit ------------------------
def fails_after_start(billed: float, reads: int) -> dict[str, Any] | None:
    return key_data(billed) if reads == 1 else None  # pre-flight's read, then 500 for good


def goes_down(billed: float, reads: int) -> dict[str, Any] | None:
    return key_data(100.0 - billed - reads)


def turns_to_text(billed: float, reads: int) -> dict[str, Any] | None:
    return key_data(billed if reads == 1 else str(billed))


@pytest.mark.parametrize("key", [fails_after_start, goes_down, turns_to_text])
async def test_a_key_that_cannot_be_followed_mid_run_stops_it_under_a_limit(
    tmp_path: Path, key: Callable[[float, int], dict[str, Any] | None]
) -> None:
    # break14c N7: the window was dropped silently and the under-reporting answers believed
    # again: all 20 rows sent, $0.24 charged under a $0.05 budget, exit 0.
    server = Server(key)
    code, summary, rows = await run(tmp_path, server)
    assert server.billed <= BUDGET + 1e-9 and server.chats < ROWS
    assert code == ExitCode.BUDGET and summary["stop"] == "key_unreadable"
    assert "the key's usage cannot be followed" in summary["stop_message"]
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert skipped and {r["reason"] for r in skipped} == {"key_unreadable"}
    if key is fails_after_start:
        # The window's read is retried like start-up's (max_attempts 2) before the run stops.
        assert "/key failed (server_error" in summary["stop_message"]
        # Then the end-of-run read tries once, not a second full retry (break46 F7: 2 x 60 s more
        # against a /key that hung): the start's, the window's two, the end's one.
        assert server.key_reads == 4


async def test_a_start_up_key_usage_that_cannot_be_read_sends_nothing_under_a_limit(tmp_path: Path) -> None:
    # break14c N7 (Y-keyjump-ur): a usage "12" at the start left no window at all.
    server = Server(lambda billed, reads: key_data("12"))
    code, summary, rows = await run(tmp_path, server)
    assert server.chats == 0 and code == ExitCode.BUDGET and summary["stop"] == "key_unreadable"
    assert {r["reason"] for r in rows} == {"key_unreadable"}


async def test_without_a_limit_a_key_that_stops_answering_is_only_a_warning(tmp_path: Path) -> None:
    # No budget and no key limit: there is no window to keep, the refreshes fail, the run ends.
    server = Server(fails_after_start)
    code, summary, _ = await run(tmp_path, server, job_text(budget=None, key_refresh_requests=2))
    assert code == ExitCode.OK and server.chats == ROWS and summary["stop"] is None
    assert summary["reconciliation"]["warning"].startswith("not reconciled")


# -- N9: a released reservation does not give its room back to the window -----------------------
def honest_key(billed: float, reads: int) -> dict[str, Any]:
    return key_data(billed)


FAILURES = {
    "HTTP 500": lambda: json_answer(500, {"error": {"code": 500, "message": "boom"}}),
    "an error in a 200 without usage": lambda: json_answer(
        200,
        {
            "id": "gen-e",
            "error": {"code": 502, "message": "upstream", "metadata": {"error_type": "server"}},
            "choices": None,
        },
    ),
}


@pytest.mark.parametrize("failure", list(FAILURES))
async def test_retries_of_failures_billed_after_all_draw_on_the_key_window(tmp_path: Path, failure: str) -> None:
    # zero-completion-insurance.mdx says such failures are not billed; this server bills them.
    # break14c N9: each retry went out on its row's first reservation, which the window had
    # already handed out: 24 attempts on 4 reservations and no /key read, $0.48 under $0.10.
    server = Server(honest_key, answer=FAILURES[failure])
    code, summary, rows = await run(tmp_path, server, job_text(budget=0.1, attempts=6, max_wait_s=1))
    assert server.billed <= 0.1 + 1e-9
    assert code == ExitCode.BUDGET and summary["stop"] == "budget"
    assert summary["reconciliation"]["key_window_reads"] >= 1
    assert summary["reconciliation"]["counted_from_key_usd"] == pytest.approx(server.billed)


# -- N12: what a key window counted stays counted across resumes ------------------------------
async def test_a_resume_counts_what_earlier_key_windows_counted(tmp_path: Path) -> None:
    # break14c N12: answers report $0.000001 while each request is charged $0.012. The first
    # run's window counts the gap and stops at the budget; a resume forgot the gap (it is in no
    # record's `spent`) and spent the budget again, each time.
    server = Server(key=honest_key)
    loaded = load_job(write_job(tmp_path, job_text()))
    output = tmp_path / "o.jsonl"
    summaries = []
    with server.hostile().running() as hostile:
        for resume in (False, True, True):
            options = RunOptions(
                api_key=FAKE_KEY, base_url=hostile.base_url, output=output, clock=FakeClock(), resume=resume
            )
            summaries.append((await run_job(loaded, options)).summary)
    assert summaries[0]["key_gap_usd"] > 0.02  # the first run counted the key's usage
    assert server.billed <= BUDGET + 1e-9  # the resumes sent nothing the budget had already counted
    assert summaries[2]["key_gap_usd"] == pytest.approx(summaries[0]["key_gap_usd"], abs=1e-6)
    # Each run's own span and gap, for merge (verify14k K4): three runs, the first's gap.
    runs = summaries[2]["runs"]
    assert len(runs) == 3 and sum(r["key_gap_usd"] for r in runs) == pytest.approx(summaries[2]["key_gap_usd"])
    assert all(r["started_at"] <= r["finished_at"] for r in runs)
    assert summaries[2]["spent_before_usd"] >= summaries[0]["key_gap_usd"]
    # The readers show it beside the rows' reported costs, which leave it out (N12's nit: the
    # file read as a known $0.00002 while it cost the key about $0.036).
    gap = summaries[2]["key_gap_usd"]
    code, text, _ = call_cli("report", output)
    assert code in (0, 1, ExitCode.INCOMPLETE) and f"${gap:.6f} counted as spent beyond the rows' records" in text
    code, text, _ = call_cli("history", output, "--json")
    assert json.loads(text)["runs"][0]["key_gap_usd"] == pytest.approx(gap)
    assert f"(+${gap:.6f} spent beyond the records)" in call_cli("history", output)[1]
    page = tmp_path / "r.html"
    assert call_cli("report", output, "--html", page)[0] in (0, 1, ExitCode.INCOMPLETE)
    assert f"${gap:.6f} counted as spent beyond the rows' records" in page.read_text()


async def test_the_journal_keeps_the_key_gap_until_the_summary_holds_it(tmp_path: Path) -> None:
    # break14h H5: the attempt journal, which carries the key gap across a kill -9, was deleted
    # before the end-of-run lookups, the end /key read and the summary: a kill there lost the
    # gap ($0.43), and the resume spent the budget again ($0.91 on $0.50). What a kill -9 would
    # leave is looked at while the end-of-run /key read is under way.
    journal = tmp_path / "o.attempts.jsonl"
    gaps_on_disk: list[float] = []
    paid_on_disk: list[int] = []  # what answers said they cost, journaled as they settle (N1)

    def watching(billed: float, reads: int) -> dict[str, Any]:
        text = journal.read_text() if journal.exists() else ""
        gaps = [json.loads(line)["key_gap"] for line in text.splitlines() if '"key_gap"' in line]
        gaps_on_disk.append(max(gaps, default=0.0))
        paid_on_disk.append(sum('"paid"' in line for line in text.splitlines()))
        return key_data(billed)

    server = Server(key=watching)
    code, summary, _ = await run(tmp_path, server)
    assert code == ExitCode.BUDGET and summary["key_gap_usd"] > 0.02
    assert gaps_on_disk[-1] == pytest.approx(summary["key_gap_usd"], abs=1e-6)  # the end read's moment
    assert paid_on_disk[-1] == server.chats  # each answer's reported cost, before the ledger took it
    assert not journal.exists()  # gone once the summary holds it


async def test_a_merged_file_keeps_the_key_gap_of_its_files(tmp_path: Path) -> None:
    # break14h H10: merge dropped the key gap: the merged file's history showed only the
    # records' costs ("0.004000" for a file that had "+$0.476000 spent beyond the records").
    server = Server(key=honest_key)
    _, summary, _ = await run(tmp_path, server)
    gap = summary["key_gap_usd"]
    assert gap > 0.02
    merged = tmp_path / "merged.jsonl"
    assert call_cli("merge", tmp_path / "o.jsonl", "-o", merged, "--allow-partial")[0] in (0, 1)  # stopped: partial
    assert json.loads((tmp_path / "merged.summary.json").read_text())["key_gap_usd"] == pytest.approx(gap)
    assert f"(+${gap:.6f} spent beyond the records)" in call_cli("history", merged)[1]


# -- a waiter beyond the window reads /key once per change, not in a loop ------------------------
async def test_a_reservation_waiting_beyond_the_window_reads_the_key_once_per_change() -> None:
    # Verification of break14c (NEW-1): opening the window woke every waiter, and each read
    # /key again at once: ~1,000 reads a second for as long as an attempt stayed in flight.
    ledger = CreditLedger(1.0)
    reads = 0

    async def read_key() -> None:
        nonlocal reads
        reads += 1
        ledger.open_key_window()

    ledger.read_key = read_key
    ledger.open_key_window()
    first = await ledger.reserve(0.6)
    waiting = asyncio.ensure_future(ledger.reserve(0.6))  # beyond what is left: waits for `first`
    for _ in range(500):
        await asyncio.sleep(0)
    assert not waiting.done() and reads == 1
    await ledger.settle(first, 0.1)  # a change: one more read, which shows the room
    for _ in range(50):
        await asyncio.sleep(0)
    assert waiting.done() and await waiting == 0.6 and reads == 2


async def test_nothing_goes_out_once_the_whole_limit_is_spent_not_even_at_no_cost() -> None:
    # break37 F2: a model listed at $0 that bills was sent on by every resume of a run whose
    # budget was spent ("spent $0.007 of $0.000"): a $0 worst case fitted in $0 left.
    ledger = CreditLedger(0.05)
    await ledger.settle(await ledger.reserve(0.04), 0.04)
    await ledger.release(await ledger.reserve(0.0))  # something is left: a $0 request may go
    await ledger.settle(await ledger.reserve(0.01), 0.01)
    with pytest.raises(BudgetExhausted):
        await ledger.reserve(0.0)
    spent_before = CreditLedger(0.0)
    spent_before.spent_out = True  # earlier runs of the file spent the whole budget
    with pytest.raises(BudgetExhausted):
        await spent_before.reserve(0.0)
    # A key or an account at $0 with nothing spent: free models still run (limits.mdx).
    await CreditLedger(0.0).reserve(0.0)
    with pytest.raises(BudgetExhausted):
        await CreditLedger(0.0).reserve(0.001)
    await CreditLedger(None).reserve(0.0)  # no limit: nothing to spend


async def test_a_resume_of_a_spent_budget_sends_nothing_at_a_price_listed_as_free(tmp_path: Path) -> None:
    # break37 F2: a model listed at $0 that bills $0.012 and answers "cost: 0": each resume of a
    # run that had spent its budget still sent requests until its first /key read ($0 fitted in $0).
    free = {MODEL: {"pricing": {"prompt": "0", "completion": "0", "request": "0"}}}
    zero = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "cost": 0}
    server = Server(
        key=lambda billed, reads: key_data(billed),
        answer=lambda: json_answer(200, chat_payload(model=MODEL, usage=zero)),
        prices=free,
    )
    code, summary, _ = await run(tmp_path, server)
    assert code == ExitCode.BUDGET and summary["spent_usd"] >= BUDGET  # the key window caught it
    assert summary["stop_message"].startswith("all of the limit is spent"), summary["stop_message"]
    sent = server.chats
    loaded = load_job(write_job(tmp_path, job_text()))
    with server.hostile().running() as hostile:
        options = RunOptions(api_key=FAKE_KEY, base_url=hostile.base_url, output=tmp_path / "o.jsonl", resume=True)
        report = await run_job(loaded, replace(options, clock=FakeClock()))
    assert report.summary["stop"] == "budget" and server.chats == sent


async def test_an_overdrawn_key_sends_nothing_even_to_a_free_model(tmp_path: Path) -> None:
    # break38 F5: limit_remaining -0.5 (another process overspent the key), models listed at $0:
    # four requests went out, then a stop blamed "an answer". OpenRouter answers an overdrawn key
    # 402, free models included (limits.mdx): nothing goes out. At exactly $0 left all run.
    free = {MODEL: {"pricing": {"prompt": "0", "completion": "0", "request": "0"}}}
    zero = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "cost": 0}
    for remaining, sent in ((-0.5, 0), (0.0, ROWS)):

        def overspent(billed: float, reads: int, left: float = remaining) -> dict[str, Any]:
            return key_data(1.0 - left, limit=1.0, limit_remaining=left)

        server = Server(
            key=overspent,
            answer=lambda: json_answer(200, chat_payload(model=MODEL, usage=zero)),
            prices=free,
            honest_chats=ROWS,
        )
        folder = tmp_path / f"left{sent}"
        folder.mkdir()
        code, summary, _ = await run(folder, server, job_text(budget=None))
        assert server.chats == sent, summary["stop_message"]
        if sent == 0:
            assert code == ExitCode.BUDGET and summary["stop_message"].startswith("all of the limit is spent")


def _losing_key_server() -> Server:
    """Honest answers; /key answers the pre-flight read and one more, then a 500 every time."""
    honest = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "cost": BILL}
    return Server(
        key=lambda billed, reads: key_data(billed) if reads <= 2 else None,
        answer=lambda: json_answer(200, chat_payload(model=MODEL, usage=honest)),
    )


async def _resume_with_the_key(tmp_path: Path, server: Server, budget: float = 1.0) -> tuple[Summary, list[str]]:
    """A resume of o.jsonl with /key answering again: its summary, and what it said."""
    server.key = lambda billed, reads: key_data(billed)
    said: list[str] = []
    loaded = load_job(write_job(tmp_path, job_text(budget=budget)))
    with server.hostile().running() as hostile:
        options = RunOptions(api_key=FAKE_KEY, base_url=hostile.base_url, output=tmp_path / "o.jsonl", resume=True)
        report = await run_job(loaded, replace(options, clock=FakeClock()), notice=said.append)
    return report.summary, said


async def test_worst_cases_held_when_the_key_was_lost_are_released_by_a_resume_that_reads_it(tmp_path: Path) -> None:
    # break38 F4: /key failing mid-run stops a run under a limit (key_unreadable) and counts the
    # worst cases of the answers since its last read as spent; with honest answers that stayed in
    # the file for good (a fifth of the budget). The summary keeps the run's readings, and a
    # resume whose /key answers releases what the key shows it never charged.
    server = _losing_key_server()
    code, first, _ = await run(tmp_path, server, job_text(budget=1.0))
    assert code == ExitCode.BUDGET and first["stop"] == "key_unreadable" and first["key_gap_usd"] > 0
    held = first["key_readings"][1]["unconfirmed"]
    assert held == pytest.approx(first["key_gap_usd"])
    summary, said = await _resume_with_the_key(tmp_path, server)
    assert any("held for answers no /key read confirmed was not charged: released" in line for line in said), said
    # What the file counts is what the key was charged: each answer's reported cost, no more.
    assert summary["spent_before_usd"] + summary["spent_usd"] == pytest.approx(server.billed)
    assert summary["key_gap_usd"] == pytest.approx(0.0, abs=1e-9) and "key_readings" not in summary


async def test_a_resume_that_releases_what_the_key_was_never_charged_says_no_request_is_short(tmp_path: Path) -> None:
    # out-124 F3: the pre-flight said "no request fits the budget ... raise the budget" (even
    # under --quiet) with the worst cases held, then released them and ran: a false warning.
    server = _losing_key_server()
    code, first, _ = await run(tmp_path, server, job_text(budget=1.0))
    assert code == ExitCode.BUDGET and first["stop"] == "key_unreadable"
    held, billed = first["key_gap_usd"], server.billed
    # The cheapest request's worst case (~$0.016) fits once they are released, not while they are held.
    budget = billed + 0.0200
    assert budget - (billed + held) < 0.015
    answered = server.chats
    summary, said = await _resume_with_the_key(tmp_path, server, budget)
    assert any("was not charged: released" in line for line in said), said
    assert not any("fits the budget" in line for line in said), said
    assert server.chats > answered and summary["total"]["ok"] >= 1


async def test_what_a_resume_releases_never_lifts_a_lower_budget_past_what_was_spent(tmp_path: Path) -> None:
    # out-127 F1: the budget left after the earlier runs was floored at $0, then the release was
    # added on top: with --budget at what the key was really charged, the resume spent $0.028 more.
    server = _losing_key_server()
    code, first, _ = await run(tmp_path, server, job_text(budget=1.0))
    assert code == ExitCode.BUDGET and first["key_gap_usd"] > 0.02  # more held than a request needs
    answered, billed = server.chats, server.billed
    summary, said = await _resume_with_the_key(tmp_path, server, billed + 0.001)
    assert any("was not charged: released" in line for line in said), said
    assert server.chats == answered and server.billed == pytest.approx(billed)  # not one more request
    assert any("fits the budget" in line for line in said), said
    assert summary["spent_before_usd"] == pytest.approx(billed)


@pytest.mark.parametrize("last", ["unreadable", "gone down"])
async def test_answers_no_read_confirmed_count_their_worst_cases_when_only_the_last_read_fails(
    tmp_path: Path, last: str
) -> None:
    # verify40 F1's sync twin: /key followed the run, then failed only at the end-of-run read,
    # and what the answers since the last read said they cost ($0.000001 each, billed $0.012)
    # stood: the summary said less than the key was charged. So they did when the last read's
    # usage went down, "not to be believed" (verify64 F6: 1/100 of the bill counted as spent).
    server = Server(key=lambda billed, reads: key_data(billed))
    final = None if last == "unreadable" else key_data(0.0)  # below what the key showed before
    server.key = lambda billed, reads: key_data(billed + 5) if server.chats < ROWS else final
    code, summary, rows = await run(tmp_path, server, job_text(budget=1.0))
    assert len(rows) == ROWS and "not reconciled" in (summary["reconciliation"]["warning"] or "")
    assert summary["spent_before_usd"] + summary["spent_usd"] >= server.billed - 1e-9
    assert summary["key_readings"][1]["unconfirmed"] > 0  # for a resume whose /key answers to release


def test_worst_cases_counted_after_the_key_was_lost_may_be_released_too() -> None:
    # verify40 F1: only those counted at the loss were kept for a resume to release; an answer
    # settled (or a batch collected) after it stayed counted at its worst case for good: $0.0228
    # for $0.0006 billed after a resume whose /key answered.
    ledger = CreditLedger(1.0)
    ledger.key_window = 1.0
    ledger.unconfirmed_charge(0.25)
    ledger.lose_key_window()
    ledger.unconfirmed_charge(0.5)
    assert ledger.from_key == ledger.unconfirmed_lost == 0.75
    ledger.key_window = None  # no key followed: nothing is unconfirmed
    ledger.unconfirmed_charge(1.0)
    assert ledger.from_key == 0.75


async def test_worst_cases_a_run_killed_after_losing_the_key_counted_are_released_from_its_journal(
    tmp_path: Path,
) -> None:
    # verify41 F-5: a run that lost the key (its worst cases counted) and was then killed -9 left
    # them in its journal's key gap, which every resume carried and none released: 36x the bill.
    server = _losing_key_server()
    _, first, _ = await run(tmp_path, server, job_text(budget=1.0))
    held = first["key_readings"][1]["unconfirmed"]
    assert first["stop"] == "key_unreadable" and held > 0
    # What the kill -9 of that run would have left: its journal (readings, worst cases, gap), no summary.
    (tmp_path / "o.summary.json").unlink()
    seen = summary_key_seen(first)
    assert seen is not None
    header = {"job": "window", "job_fingerprint": load_job(write_job(tmp_path, job_text(budget=1.0))).fingerprint}
    lines = [header, seen.lines()[0], {**seen.lines()[1], "unconfirmed": 0.0}, {"unconfirmed": held}]
    lines.append({"key_gap": first["key_gap_usd"]})
    journal_path(tmp_path / "o.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary, said = await _resume_with_the_key(tmp_path, server)
    assert any("was not charged: released" in line for line in said), said
    assert summary["spent_before_usd"] + summary["spent_usd"] == pytest.approx(server.billed)


def test_an_answer_within_its_worst_case_blames_the_keys_usage_for_the_stop() -> None:
    # verify37 N4: "an answer said it cost $0.000000, past its worst case and the limit", when the
    # key's usage (counted at a read while it was in flight) had put the run past its limit.
    from types import SimpleNamespace

    from batchrun._dispatch import Dispatcher
    from batchrun._limit_parts import LimitParts

    said: list[str] = []
    ledger = CreditLedger(0.05)
    ledger.follow_key(0.07)  # the key showed $0.07 charged, the answers said $0
    stops = SimpleNamespace(request=lambda reason, message: said.append(message))
    dispatch = SimpleNamespace(ledger=ledger, limits=LimitParts(job=0.05), stops=stops)
    for reported, held in ((0.0, 0.01), (0.02, 0.01)):
        row = SimpleNamespace(reservation=held)
        Dispatcher._stop_past_limit(cast(Any, dispatch), cast(Any, row), reported)
    assert said == [
        "an answer said it cost $0.000000, and the key's usage was past the limit",
        "an answer said it cost $0.020000, past its worst case and the limit",
    ]


def test_a_charge_from_before_the_run_hides_none_of_the_runs_own_from_the_key() -> None:
    # break37 F1: the killed run's charge counted at the resume's start (count_earlier_charge) was
    # taken off what the key rose by during the resume, so as much of the resume's own unreported
    # charges went uncounted. It was charged before the run began: not in the rise.
    ledger = CreditLedger(1.0)
    ledger.count_earlier_charge(0.3)
    assert ledger.follow_key(0.2) == pytest.approx(0.2)  # $0.2 charged during the run, none reported
    assert ledger.committed == pytest.approx(0.5) and ledger.key_gap == pytest.approx(0.5)


async def test_a_key_another_process_spends_on_ends_the_wait_instead_of_a_read_loop() -> None:
    # Verification of break14e (F6): each read found a new gap (another job spending on the
    # key), which counted as a ledger change, which earned the waiting reservation another read:
    # 28,091 reads in 30 s, nothing in flight, the run never ended. A gap makes no room.
    ledger = CreditLedger(1.0)
    reads = 0

    async def read_key() -> None:
        nonlocal reads
        reads += 1
        ledger.follow_key(ledger.committed + ledger.reserved + 0.001)  # $0.001 more every read
        ledger.open_key_window()

    ledger.read_key = read_key
    ledger.open_key_window()
    first = await ledger.reserve(0.6)
    await ledger.settle(first, 0.6)
    with pytest.raises(BudgetExhausted):
        await asyncio.wait_for(ledger.reserve(0.6), 5)  # nothing in flight: it cannot fit
    assert reads == 1


# -- m6: the key's falling credit is not counted on top of the gap the window counted ----------
def limited_key(billed: float, reads: int) -> dict[str, Any]:
    """A key limited to $0.20 that shows every charge in its usage and its credit."""
    return key_data(billed, limit=0.2, limit_remaining=0.2 - billed)


async def test_a_key_limit_under_under_reported_answers_spends_to_its_credit_not_half(tmp_path: Path) -> None:
    # break14c m6: the window counted each charge the answers left out (the gap), and the limit
    # lowered to the key's credit was `reported spend + limit_remaining`, which subtracts the
    # same charges again: the run stopped with "$0.0022 is left" while $0.026 was (about half).
    server = Server(limited_key)
    code, summary, _ = await run(tmp_path, server, job_text(budget=None))
    assert code == ExitCode.BUDGET and summary["stop"] == "credits"
    worst = 0.01573  # one request's worst case at these prices ("needs up to $0.015730")
    # Never past the key's credit but for the README's bound: the worst cases of the attempts in
    # flight at the last read, whose charges the key may not have shown yet (concurrency 2).
    assert server.billed <= 0.2 + 2 * worst
    # It goes on while a request's worst case fits what the key really has left: $0.192 (the
    # double count stopped it at $0.144, "$0.000000 is left").
    assert server.billed >= 0.2 - 2 * worst
    left = float(summary["stop_message"].split(", $")[1].split(" is left")[0])
    assert left == pytest.approx(0.2 - server.billed, abs=worst)
    assert summary["spent_usd"] == pytest.approx(server.billed, abs=1e-5)


# -- E2, E6: charges above the listed prices are caught by reads every few requests -------------
FREE = {MODEL: {"pricing": {"prompt": "0", "completion": "0", "request": "0"}}}


def zero_answer() -> bytes:
    usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "cost": 0}
    return json_answer(200, chat_payload(model=MODEL, usage=usage))


def honest_answer() -> bytes:
    """An answer that reports what the server charges for it."""
    usage = {"prompt_tokens": 10, "completion_tokens": 2, "cost": BILL}
    return json_answer(200, chat_payload(model=MODEL, usage=usage))


def judged(job: str, grader: str) -> str:
    """`job` with one judge check on every row, graded by `grader`."""
    with_grader = job.replace("prompts:", f"judge: {{model: {grader}}}\nprompts:")
    return with_grader.replace("    vars:", "    checks: [{judge: 'Right.'}]\n    vars:")


CHEAP = {MODEL: {"pricing": {"prompt": "0.00001", "completion": "0.00002", "request": "0"}}}  # a row ~$0.0016


@dataclass
class OneBatch:
    """A Batch API on `server` that accepts one batch and answers every poll with it completed,
    reporting `cost(rows)` for it; `charge`, when given, is what the key is charged for it."""

    server: Server
    cost: Callable[[int], float] = lambda rows: 0.0001 * rows
    charge: float | None = None
    submitted: list[str] = field(default_factory=list)
    running: bool = False  # polls say in_progress while set
    item_usage: dict[str, Any] | None = None  # each result's usage, if not chat_payload's

    def hostile(self) -> HostileServer:
        hostile = self.server.hostile()
        hostile.routes = {"/beta/batches": self.submit, "/batch_1": self.poll}
        return hostile

    def submit(self, request: RawRequest) -> bytes:
        self.submitted.extend(r["custom_id"] for r in request.json()["requests"])
        return json_answer(202, {"id": "batch_1", "status": "validating", "results": None})

    def poll(self, request: RawRequest) -> bytes:
        if self.charge is not None:
            self.server.billed = self.charge
        if self.running:
            return json_answer(200, {"id": "batch_1", "object": "batch", "status": "in_progress", "results": None})
        usage = {} if self.item_usage is None else {"usage": self.item_usage}
        results = [
            {
                "custom_id": i,
                "response": {"status_code": 200, "body": chat_payload(id=f"gen-{i}", **usage)},
                "error": None,
            }
            for i in self.submitted
        ]
        done = {"status": "completed", "usage": {"cost": self.cost(len(self.submitted))}, "results": results}
        return json_answer(200, {"id": "batch_1", "object": "batch", **done})


async def run_batch(
    tmp_path: Path, batches: OneBatch, job: str, resume: bool = False, notices: list[str] | None = None
) -> tuple[Job, Summary]:
    """`job` against `batches` in process: the job loaded, and its run's summary (what it said
    on stderr, into `notices`)."""
    loaded = load_job(write_job(tmp_path, job))
    with batches.hostile().running() as hostile:
        output = tmp_path / "o.jsonl"
        options = RunOptions(
            api_key=FAKE_KEY, base_url=hostile.base_url, output=output, clock=FakeClock(), resume=resume
        )
        report = await run_job(loaded, options, notice=(notices if notices is not None else []).append)
    return loaded, report.summary


async def test_a_model_listed_free_that_bills_is_caught_by_the_probe_reads(tmp_path: Path) -> None:
    # break14e E2: every worst case was $0, so the key window never ran out and never re-read
    # /key: all 200 rows sent in 3 s, $2.40 charged under a $0.05 budget, exit 0 (E6). Under a
    # limit /key is now read every few requests (twice the concurrency, then every
    # `concurrency` once the key shows charges beyond the ledger).
    server = Server(honest_key, answer=zero_answer, prices=FREE)
    code, summary, _ = await run(tmp_path, server)
    assert server.chats < 10 and server.billed <= BUDGET + 4 * BILL  # probe + in flight
    assert code == ExitCode.BUDGET
    assert summary["reconciliation"]["counted_from_key_usd"] > BUDGET - 4 * BILL
    # What the end read shows beyond the window is spent too: the summary says so.
    assert summary["spent_usd"] == pytest.approx(server.billed, abs=1e-6)


async def test_an_honest_run_under_a_limit_reads_the_key_a_few_times_not_per_request(tmp_path: Path) -> None:
    # The probe backs off while the key agrees with the ledger: 2c, 4c, 8c... requests apart.
    server = Server(honest_key, answer=honest_answer)
    code, summary, _ = await run(tmp_path, server, job_text(budget=1.0))
    assert code == ExitCode.OK and server.chats == ROWS
    assert server.key_reads <= 6  # start, probes at 4, 12 (then 28 > 20 rows), window reads, end
    assert summary["reconciliation"]["warning"] is None


async def test_the_end_of_run_gap_is_spent_and_carried_to_the_resume(tmp_path: Path) -> None:
    # break14e E9: a run the window never stopped (here: no limit at all, every row sent) saw
    # at its end that the key was charged $0.24 while its answers said $0.00002; the resume
    # under a budget started from $0.00002 and spent the budget on top. The end read's gap is
    # now in the run's spend and in key_gap_usd, and the resume counts it.
    server = Server(honest_key)
    loaded = load_job(write_job(tmp_path, job_text(budget=None)))
    output = tmp_path / "o.jsonl"
    with server.hostile().running() as hostile:
        options = RunOptions(api_key=FAKE_KEY, base_url=hostile.base_url, output=output, clock=FakeClock())
        first = (await run_job(loaded, options)).summary
        assert first["key_gap_usd"] == pytest.approx(server.billed, abs=1e-4)
        assert first["reconciliation"]["counted_at_end_usd"] == pytest.approx(server.billed, abs=1e-4)
        billed = server.billed
        more = load_job(write_job(tmp_path, job_text(budget=0.3).replace("vars: [", "vars: [{a: 100}, {a: 101}, ")))
        resume = RunOptions(api_key=FAKE_KEY, base_url=hostile.base_url, output=output, clock=FakeClock(), resume=True)
        second = (await run_job(more, resume)).summary
    # $0.24 of the $0.30 was spent already: one row fits the rest, not two.
    assert second["spent_before_usd"] >= billed - 1e-4
    assert server.billed <= 0.3 + BILL


async def test_a_price_that_rises_after_hundreds_of_honest_answers_is_caught_within_a_few_requests(
    tmp_path: Path,
) -> None:
    # Verification of break14e (F1): the probe backed off to key_refresh_requests (500) while the
    # key agreed, so a model listed free that started billing after 508 honest answers spent
    # $5.90 under a $0.05 budget. Reads now come at most 8 x concurrency requests apart.
    server = Server(honest_key, answer=zero_answer, prices=FREE, honest_chats=300)
    code, summary, _ = await run(tmp_path, server, job_text(rows=400))
    assert code == ExitCode.BUDGET and server.chats < 400
    assert server.billed <= BUDGET + 18 * BILL  # 8 x 2 requests apart, 2 in flight


async def test_requests_past_the_probe_wait_for_a_slow_key_read(tmp_path: Path) -> None:
    # Verification of the break14e fixes (G1): while a probe's /key read was under way, every
    # other worker kept sending, uncounted: a /key taking 3 s let 426 requests out, $5.11 under a
    # $0.05 budget. Past the probe's spacing they now wait for its answer.
    server = Server(honest_key, answer=zero_answer, prices=FREE)
    hostile = server.hostile()
    plain_key = hostile.key

    def slow_key(request: RawRequest) -> Any:
        if server.key_reads == 0:
            return plain_key(request)  # pre-flight's read
        snapshot = plain_key(request)  # the usage as the read arrives
        assert isinstance(snapshot, bytes)
        target = server.chats + 40

        async def answer(writer: asyncio.StreamWriter) -> None:
            for _ in range(300):  # until 40 more requests arrived, or 0.3 s
                if server.chats >= target:
                    break
                await asyncio.sleep(0.001)
            writer.write(snapshot)

        return answer

    hostile.key = slow_key
    loaded = load_job(write_job(tmp_path, job_text(rows=200)))
    with hostile.running():
        options = RunOptions(
            api_key=FAKE_KEY, base_url=hostile.base_url, output=tmp_path / "o.jsonl", clock=FakeClock()
        )
        await run_job(loaded, options)
    assert server.billed <= BUDGET + 18 * BILL  # 8 x 2 requests apart, 2 in flight


async def test_billed_retries_count_toward_the_probe_reads(tmp_path: Path) -> None:
    # Verification of the break14e fixes (G6): the probe counted rows, not attempts: after 100
    # honest answers every request was a billed 502 retried 6 times, unseen: $1.06 on $0.05.
    server = Server(honest_key, prices=FREE, honest_chats=100)

    def answer() -> bytes:
        if server.chats <= 100:
            return zero_answer()
        return json_answer(502, {"error": {"code": 502, "message": "Provider returned error"}})

    server.answer = answer
    code, _, _ = await run(tmp_path, server, job_text(rows=200, attempts=6, max_wait_s=1))
    assert code == ExitCode.BUDGET and server.billed <= BUDGET + 18 * BILL


@pytest.mark.parametrize("prices", [FREE, None], ids=["listed-free", "unknown-allowed"])
async def test_batch_mode_under_a_limit_sends_rows_it_cannot_bound_through_the_probe(
    tmp_path: Path, prices: dict[str, Any] | None
) -> None:
    # break14e F7: a batch is charged at once and /key cannot be read between its requests, so
    # rows whose worst case is $0 (a model listed free, or an unknown worst case allowed by
    # run.allow_unknown_prices) were all submitted together: a model listed free that bills
    # $0.012 a request spent $2.40 on a $0.05 budget. Under a limit they now go through sync
    # mode, where the probe reads /key every few requests (a batch discount of $0 is lost).
    server = Server(honest_key, answer=zero_answer, prices=prices or PRICES)
    batches = OneBatch(server)
    text = job_text(rows=200, mode="batch", batch_poll_s=0.01, allow_unknown_prices=prices is None)
    if prices is None:
        text = text.replace("{max_tokens: 16}", "{max_tokens: 16, plugins: [{id: web}]}")  # web results: unbounded
    loaded, summary = await run_batch(tmp_path, batches, text)
    assert not batches.submitted
    assert server.chats < 40 and server.billed <= BUDGET + 18 * BILL
    assert decide(summary, loaded.run, run=True)[0] == ExitCode.BUDGET
    assert summary["batches"]["sync_rows"] == 200


@pytest.mark.parametrize("excess", [0.000001, 0.004], ids=["rounding-key", "another-process"])
async def test_a_key_a_little_above_the_ledger_far_from_the_limit_is_not_read_per_request(
    tmp_path: Path, excess: float
) -> None:
    # Verification of break14e (F8): a key rounding each charge up to the micro-dollar kept the
    # probe at `concurrency`: at concurrency 1, one /key read per request. Its verification (G5):
    # so did another process on the key (a shard) spending $0.004 per request of this run, every
    # read finding a gap above a tenth of a cent. Far from the limit such a gap is agreement;
    # it is still counted as spent.
    def above(billed: float, reads: int) -> dict[str, Any]:
        return key_data(billed + server.chats * excess)

    server = Server(above, answer=honest_answer)
    code, summary, _ = await run(tmp_path, server, job_text(budget=20.0, rows=100, concurrency=1))
    assert code == ExitCode.OK and server.chats == 100
    assert server.key_reads <= 20  # start, 2, 4, 8, then every 8 requests, and the end
    assert summary["key_gap_usd"] == pytest.approx(100 * excess, rel=0.1)  # counted as spent


async def test_a_gap_near_the_limit_still_brings_the_reads_closer(tmp_path: Path) -> None:
    # The tolerance shrinks with what is left: near the limit, a key charged beyond the ledger
    # is read every `concurrency` requests again.
    def shared(billed: float, reads: int) -> dict[str, Any]:
        return key_data(billed + server.chats * 0.004)

    server = Server(shared, answer=honest_answer)
    code, _, _ = await run(tmp_path, server, job_text(budget=0.5, rows=100, concurrency=1))
    assert code == ExitCode.BUDGET
    assert server.key_reads >= server.chats // 2  # most requests are followed by a read


async def test_batch_mode_graders_are_followed_by_the_probe(tmp_path: Path) -> None:
    # break14h H4: the graders of collected batches are sync requests, yet batch mode never
    # watched the key: a grader listed at $0 that billed $0.012 a request graded all 200 rows,
    # $2.40 on a $0.05 budget, /key read at the start and the end only.
    grader = "anthropic/claude-3.5-haiku"  # listed free here
    server = Server(honest_key, prices={**CHEAP, grader: FREE[MODEL]})  # a batch of 200: about $0.32
    verdict = '{"pass": true, "score": 1, "reason": "ok"}'
    server.answer = lambda: json_answer(200, chat_payload(verdict, model=grader, usage={"cost": 0}))
    batches = OneBatch(server)
    loaded, summary = await run_batch(tmp_path, batches, judged(job_text(budget=0.5, rows=200, mode="batch"), grader))
    assert len(batches.submitted) == 200  # the answers were batched (priced), the graders sent in sync
    answers = 0.0001 * 200
    assert server.chats < 200 and server.billed + answers <= 0.5 + 18 * BILL
    assert decide(summary, loaded.run, run=True)[0] == ExitCode.BUDGET


@pytest.mark.parametrize("falling", ["byok_usage", "usage"])
async def test_a_running_total_that_falls_while_another_rises_is_a_key_that_cannot_be_followed(
    tmp_path: Path, falling: str
) -> None:
    # break14h H3: with include_byok_in_limit, a byok_usage falling by what usage rose kept their
    # sum flat: the key window saw none of the charges, $2.40 on a $0.50 budget, exit 0.
    def flat(billed: float, reads: int) -> dict[str, Any]:
        down = 100.0 - billed
        totals = (
            {"usage": billed, "byok_usage": down} if falling == "byok_usage" else {"usage": down, "byok_usage": billed}
        )
        return key_data(totals.pop("usage"), include_byok_in_limit=True, **totals)

    server = Server(flat)
    code, summary, _ = await run(tmp_path, server, job_text(budget=0.5, rows=200))
    assert code == ExitCode.BUDGET and summary["stop"] == "key_unreadable"
    assert f"its {falling} went down" in summary["stop_message"]
    assert server.billed <= 0.5 + 18 * BILL


@pytest.mark.parametrize("falling", ["usage", "byok_usage"])
async def test_a_running_total_that_falls_below_an_earlier_read_stops_the_run(tmp_path: Path, falling: str) -> None:
    # break25 F1: reads of 0, then 1.00, then 0.50: compared with the start alone, the fall was
    # believed: every row sent, exit 0, and a summary saying both $1.00 spent and $0.50 charged.
    def falls(billed: float, reads: int) -> dict[str, Any]:
        total = billed + (0.0 if reads == 1 else 1.0 if reads == 2 else 0.5)
        if falling == "usage":
            return key_data(total)
        return key_data(billed, byok_usage=total - billed, include_byok_in_limit=True)

    server = Server(falls)
    code, summary, _ = await run(tmp_path, server, job_text(budget=10.0, rows=100, concurrency=1))
    assert code == ExitCode.BUDGET and summary["stop"] == "key_unreadable"
    assert "went down ($1." in summary["stop_message"]  # the total the limit counts, or the one that fell
    assert server.chats < 100 and server.key_reads >= 3
    assert "could not be read at the end of the run (its " in summary["reconciliation"]["warning"]


def test_report_job_regrading_is_followed_by_the_key_window_and_reconciled(tmp_path: Path) -> None:
    # break14h H1: `report --job` re-grading had no key window, no probe and no reconciliation:
    # a grader listed at $0 that billed $0.012 a request re-graded all 200 rows, $2.40 on a
    # $0.05 budget, exit 0, "spent $0.000000 of $0.050000".
    grader = "anthropic/claude-3.5-haiku"  # listed free here
    server = Server(honest_key, answer=zero_answer, prices={**PRICES, grader: FREE[MODEL]})
    plain = job_text(budget=None, rows=200)
    output = tmp_path / "o.jsonl"
    with server.hostile().running() as hostile:
        assert call_cli(write_job(tmp_path, plain), "--base-url", hostile.base_url, "-o", output)[0] == 0
        verdict = '{"pass": true, "score": 1, "reason": "ok"}'
        server.answer = lambda: json_answer(200, chat_payload(verdict, model=grader, usage={"cost": 0}))
        answered, billed = server.chats, server.billed
        job = tmp_path / "judged" / "job.yaml"
        job.parent.mkdir()
        job.write_text(judged(plain, grader))
        code, out, err = call_cli("report", output, "--job", job, "--base-url", hostile.base_url, "--budget", "0.05")
    assert code == ExitCode.BUDGET, (out, err)
    assert server.chats - answered < 40 and server.billed - billed <= 0.05 + 18 * BILL


async def test_a_charge_above_its_worst_case_seen_in_flight_is_counted_once() -> None:
    # break14h H6: a /key read while the attempt was in flight counted its charge above the
    # worst case as key gap, and its settling counted it again: $1.20 charged, $1.56 spent.
    ledger = CreditLedger(1.0)
    await ledger.reserve(0.01)
    assert ledger.follow_key(0.1) == pytest.approx(0.09)  # the key shows the whole charge
    await ledger.settle(0.01, 0.1)  # the answer reports it
    assert ledger.from_key == pytest.approx(0.0) and ledger.committed == pytest.approx(0.1)
    # A gap that was another process's is found again at the next read, never lost.
    assert ledger.follow_key(0.15) == pytest.approx(0.05)


async def test_honest_answers_above_their_worst_cases_add_up_to_what_the_key_was_charged(tmp_path: Path) -> None:
    # H6 end to end: each answer honestly reports its $0.012, above a worst case of about
    # $0.001 (prices listed ten times too low); reads of /key come while requests are in flight.
    low = {MODEL: {"pricing": {"prompt": "0.00001", "completion": "0.00002", "request": "0"}}}
    server = Server(honest_key, answer=honest_answer, prices=low)
    code, summary, _ = await run(tmp_path, server, job_text(budget=0.5, rows=200, concurrency=4))
    assert code == ExitCode.BUDGET
    assert summary["spent_usd"] == pytest.approx(server.billed, abs=BILL)  # not the key gap on top


async def test_a_collected_batch_is_followed_on_the_key_at_once(tmp_path: Path) -> None:
    # break14h H5 in batch mode: a batch that under-reported its charge ($0.0001 for $0.39) was
    # seen only by the end-of-run /key read, so a kill -9 before it lost the gap, and the resume
    # spent the budget again. Under a limit, /key is read as soon as a batch is collected: the
    # gap is counted (and journaled) by the key window.
    server = Server(honest_key, prices=CHEAP)
    batches = OneBatch(server, cost=lambda rows: 0.0001, charge=0.39)  # what the key is charged
    _, summary = await run_batch(tmp_path, batches, job_text(budget=0.6, rows=20, mode="batch", batch_poll_s=0.01))
    rec = summary["reconciliation"]
    gap = 0.39 - 20 * 0.00001  # the items' own costs are more than the batch's $0.0001
    assert rec["counted_from_key_usd"] == pytest.approx(gap, abs=1e-6)  # by the window
    assert rec["counted_at_end_usd"] == 0.0
    assert summary["key_gap_usd"] == pytest.approx(gap, abs=1e-6)


@pytest.mark.parametrize(
    ("later", "says"),
    [
        ({"include_byok_in_limit": False}, "its include_byok_in_limit changed (True -> False)"),
        ({"byok_usage": None}, "its byok_usage is no longer a number"),
        ({"byok_usage": "n/a"}, "its byok_usage is no longer a number"),
    ],
)
async def test_a_key_whose_byok_fields_change_under_the_run_cannot_be_followed(
    tmp_path: Path, later: dict[str, Any], says: str
) -> None:
    # Verification of the break14h fixes (V4): charged as BYOK, under-reported by the answers; a
    # flag turned false after the start (the window then followed `usage` alone, flat), or a
    # byok_usage turned null, hid every charge: $2.40 on a $0.50 budget, exit 0.
    def flipping(billed: float, reads: int) -> dict[str, Any]:
        # At the start: the limit counts BYOK (the flag's case), or leaves it out (the others).
        data = key_data(0.0, byok_usage=billed, include_byok_in_limit="include_byok_in_limit" in later)
        return data if reads == 1 else {**data, **later}

    server = Server(flipping)
    code, summary, _ = await run(tmp_path, server, job_text(budget=0.5, rows=200))
    assert code == ExitCode.BUDGET and summary["stop"] == "key_unreadable"
    assert says in summary["stop_message"]
    assert server.billed <= 0.5 + 18 * BILL
    # What no read confirmed counts at its worst cases (verify14j N6: the file said $0.0006 for
    # $0.036 charged, and the resume spent the whole budget again).
    assert summary["spent_usd"] >= server.billed


async def test_a_batch_collected_by_a_later_run_counts_what_the_key_showed_for_it(tmp_path: Path) -> None:
    # Verification of the break14h fixes (V12): a batch billed $0.39 while the run that submitted
    # it held it open (its hold explained the key's charge), then collected by a resume that
    # reported $0.0001 (the resume's /key baseline already held the charge): no run counted
    # the gap, and a later resume spent the budget again ($0.78 on $0.60, exit 0).
    server = Server(honest_key)  # dear prices: the batch of 20 holds about $0.32
    batches = OneBatch(server, cost=lambda rows: 0.0001, charge=0.3, running=True)
    job = job_text(budget=0.6, rows=20, mode="batch", batch_poll_s=1, deadline_s=3)
    _, first = await run_batch(tmp_path, batches, job)
    assert first["stop"] == "submitted" and first["key_gap_usd"] == 0.0  # explained by the hold
    batches.running = False
    _, second = await run_batch(tmp_path, batches, job, resume=True)
    unseen = 0.3 - 20 * 0.00001  # the items' own costs are more than the batch's $0.0001
    assert second["key_gap_usd"] == pytest.approx(unseen, abs=1e-6)
    assert second["spent_usd"] == pytest.approx(0.3, abs=1e-6)
    assert second["reconciliation"]["warning"] is None


async def test_a_batch_collected_before_a_key_read_could_follow_it_counts_its_worst_case(tmp_path: Path) -> None:
    # Verification of the break14h fixes (H5 in batch mode): a run collected a batch that
    # under-reported ($0.0001 for $0.30) and was killed before /key was read after it: no run
    # ever counted the gap, and the next resume spent the budget again. Here /key stops
    # answering right after the collection; the resume counts the batch's worst case beyond its
    # reported cost as spent.
    collected = [False]
    server = Server(lambda billed, reads: None if collected[0] else key_data(billed))
    batches = OneBatch(server, cost=lambda rows: 0.0001, charge=0.3)
    poll = batches.poll

    def polled(request: RawRequest) -> bytes:
        collected[0] = True
        return poll(request)

    batches.poll = polled  # type: ignore[method-assign]
    job = job_text(budget=0.6, rows=20, mode="batch", batch_poll_s=1)
    notices: list[str] = []
    _, first = await run_batch(tmp_path, batches, job, notices=notices)
    # verify41 item 6: every row was answered, so no stop (it was key_unreadable, exit 5,
    # "resumable" with nothing left to resume); said, and the worst case counts all the same.
    assert first["stop"] is None and first["complete"] is True
    assert any(n.startswith("warning: the key's usage cannot be followed: ") for n in notices), notices
    [entry] = json.loads((tmp_path / "o.batches.json").read_text())["batches"]
    # verify40 F1: counted in the run itself, as an answer's worst case is (it was left for the
    # next run, and the summary of a cron's last run said a tenth of the bill).
    assert entry["state"] == "collected" and entry["unfollowed"] is False
    assert first["key_gap_usd"] == pytest.approx(entry["reserved_usd"] - 20 * 0.00001, abs=1e-6)
    assert first["key_readings"][1]["unconfirmed"] == pytest.approx(first["key_gap_usd"])
    collected[0] = False  # /key answers again: the worst case is released down to the charge
    _, second = await run_batch(tmp_path, batches, job, resume=True)
    assert second["spent_before_usd"] + second["spent_usd"] == pytest.approx(0.3, abs=1e-6)
    assert json.loads((tmp_path / "o.batches.json").read_text())["batches"][0]["unfollowed"] is False


async def test_a_batch_a_read_followed_is_not_counted_again(tmp_path: Path) -> None:
    # The honest flow, with and without a limit: the read after the collection (under a limit)
    # or the end-of-run read follows it, and a resume counts nothing more for it.
    for budget in (0.6, None):
        folder = tmp_path / str(budget)
        folder.mkdir()
        server = Server(honest_key)
        batches = OneBatch(server, cost=lambda rows: 0.0001 * rows)  # what it reports, it is billed
        job = job_text(budget=budget, rows=20, mode="batch", batch_poll_s=1)
        await run_batch(folder, batches, job)
        assert json.loads((folder / "o.batches.json").read_text())["batches"][0]["unfollowed"] is False
        _, again = await run_batch(folder, batches, job, resume=True)
        assert again["key_gap_usd"] == 0.0


@pytest.mark.parametrize("value", ['"abc"', "NaN", "-5", "Infinity", "1e308", "true"])
async def test_a_batch_record_whose_amounts_cannot_be_believed_is_refused(tmp_path: Path, value: str) -> None:
    # Verification of the break14h fixes (N3): a corrupted key_seen_usd in X.batches.json was a
    # traceback on every resume ("abc"), or the batch's gap dropped without a word (NaN, -5,
    # Infinity): a later resume spent the budget again.
    server = Server(honest_key)
    batches = OneBatch(server, cost=lambda rows: 0.0001, charge=0.3, running=True)
    job = job_text(budget=0.6, rows=20, mode="batch", batch_poll_s=1, deadline_s=3)
    await run_batch(tmp_path, batches, job)
    state = tmp_path / "o.batches.json"
    text = state.read_text()
    seen = json.loads(text)["batches"][0]["key_seen_usd"]
    state.write_text(text.replace(f'"key_seen_usd":{seen}', f'"key_seen_usd":{value}'))
    batches.running = False
    with pytest.raises(ResultsError, match="batch 'b1': key_seen_usd "):
        await run_batch(tmp_path, batches, job, resume=True)


@pytest.mark.parametrize("limit", [True, False], ids=["under-a-limit", "without-one"])
async def test_a_batch_billed_between_runs_is_counted_by_the_run_that_collects_it(tmp_path: Path, limit: bool) -> None:
    # Verification of the break14h fixes (N2): a batch billed as OpenRouter runs it, after the
    # run that submitted it ended (exit 10), is in no run's /key reading: the collecting run's
    # first read already holds it. Two batches that under-reported read as $0.0002 for $0.78
    # charged, exit 0. Under a limit, the key's rise between the runs counts as their charge,
    # up to their worst cases, and what they report leaves of it as spent.
    server = Server(honest_key)  # dear prices: the batch of 20 holds about $0.32
    batches = OneBatch(server, cost=lambda rows: 0.0001, running=True)
    job = job_text(budget=0.6, rows=20, mode="batch", batch_poll_s=1, deadline_s=3)
    _, first = await run_batch(tmp_path, batches, job)
    assert first["stop"] == "submitted" and first["key_gap_usd"] == 0.0
    server.billed = 0.3  # charged while no run is alive
    batches.running = False
    # verify14k K6: a collecting run without a limit dropped it, and a later one counted short.
    collect = job if limit else job_text(budget=None, rows=20, mode="batch", batch_poll_s=1, deadline_s=3)
    assert limit == ("budget_usd" in collect)
    _, second = await run_batch(tmp_path, batches, collect, resume=True)
    assert second["key_gap_usd"] == pytest.approx(0.3 - 20 * 0.00001, abs=1e-6)
    assert second["spent_usd"] == pytest.approx(0.3, abs=1e-6)
    # Counted once: a kill before the batch was marked collected does not count it again (K2).
    assert json.loads((tmp_path / "o.batches.json").read_text())["batches"][0]["key_seen_usd"] == 0.0


async def test_a_byok_batch_settles_to_what_its_items_count(tmp_path: Path) -> None:
    # Verification of the break14h fixes (N12): a BYOK batch's usage.cost is "only the OpenRouter
    # BYOK fee" (batch-quickstart.mdx); its items report fee 0 and upstream $0.0195. The ledger
    # settled to the fees ($0), the records counted $0.39, and the end read counted it again.
    server = Server(honest_key)
    upstream: dict[str, Any] = {"prompt_tokens": 10, "completion_tokens": 2, "cost": 0.0, "is_byok": True}
    upstream["cost_details"] = {"upstream_inference_cost": 0.0195}
    batches = OneBatch(server, cost=lambda rows: 0.0, charge=0.39, item_usage=upstream)
    _, summary = await run_batch(tmp_path, batches, job_text(budget=0.6, rows=20, mode="batch", batch_poll_s=1))
    assert summary["spent_usd"] == pytest.approx(0.39, abs=1e-6) and summary["key_gap_usd"] == 0.0
    assert scan_states(tmp_path / "o.jsonl").spent_usd == pytest.approx(0.39, abs=1e-6)


async def test_a_gap_an_earlier_run_saw_is_not_taken_back_by_answers_above_their_worst_case(tmp_path: Path) -> None:
    # Verification of the break14h fixes (N8): the gap counted for a batch an earlier run saw
    # charged went into the key gap this run's answers settling above their worst cases take
    # back from (graders listed free that bill $0.012): $0.39 of $0.63 charged was counted.
    grader = "anthropic/claude-3.5-haiku"  # listed free here
    server = Server(honest_key, prices={**PRICES, grader: FREE[MODEL]})
    verdict = '{"pass": true, "score": 1, "reason": "ok"}'
    server.answer = lambda: json_answer(200, chat_payload(verdict, model=grader, usage={"cost": BILL}))
    batches = OneBatch(server, cost=lambda rows: 0.0001, charge=0.3, running=True)
    job = judged(job_text(budget=1.0, rows=20, mode="batch", batch_poll_s=1, deadline_s=3), grader)
    await run_batch(tmp_path, batches, job)
    batches.running = False
    _, second = await run_batch(tmp_path, batches, job, resume=True)
    assert second["key_gap_usd"] == pytest.approx(0.3 - 20 * 0.00001, abs=1e-6)
    assert second["spent_usd"] == pytest.approx(0.3 + server.chats * BILL, abs=1e-6)


async def test_a_batch_collected_again_after_a_kill_writes_and_grades_only_the_rows_it_had_not(
    tmp_path: Path,
) -> None:
    # Verification of the break14h fixes (N9): a run killed while it graded a collected batch's
    # rows left the batch `submitted`; the resume collected it again, wrote every row again and
    # paid their graders again. Here the first collection is whole, and the state says
    # `submitted` as the kill would have left it.
    grader = "anthropic/claude-3.5-haiku"
    server = Server(honest_key, prices={**CHEAP, grader: FREE[MODEL]})
    verdict = '{"pass": true, "score": 1, "reason": "ok"}'
    server.answer = lambda: json_answer(200, chat_payload(verdict, model=grader, usage={"cost": 0}))
    batches = OneBatch(server)
    job = judged(job_text(budget=1.0, rows=20, mode="batch", batch_poll_s=1), grader)
    await run_batch(tmp_path, batches, job)
    lines, graded = (tmp_path / "o.jsonl").read_text().count("\n"), server.chats
    state = tmp_path / "o.batches.json"
    state.write_text(state.read_text().replace('"state":"collected"', '"state":"submitted"'))
    await run_batch(tmp_path, batches, job, resume=True)
    assert (tmp_path / "o.jsonl").read_text().count("\n") == lines and server.chats == graded


def test_what_earlier_runs_left_unfollowed_on_the_key_is_counted_once(tmp_path: Path) -> None:
    # Verification of the break14h fixes (N10): a batch in doubt "explained" other charges the
    # key showed (its key_seen_usd); `batches release` threw them away with it.
    state = BatchState(tmp_path / "o.batches.json", "window", "f")

    def entry(key: str, state: str, **more: Any) -> BatchEntry:
        return BatchEntry(key, MODEL, ["r"], ["f"], 0.3, 0.0, state=state, **more)

    state.entries = [
        entry("b1", "released", key_seen_usd=0.24),
        entry("b2", "collected", cost_usd=0.01, unfollowed=True),
        entry("b3", "collected", cost_usd=0.01),
        # verify14k K5: in doubt when a run was killed before any read, then released.
        entry("b4", "released", unfollowed=True),
        # verify14k K1: submitted by a killed run: its worst case stands for what it was charged.
        entry("b5", "submitted", unfollowed=True),
    ]
    counted: list[tuple[str, float]] = []
    follow_earlier(state, lambda batch, usd: counted.append((batch.key, usd)))
    assert counted == [("b1", 0.24), ("b2", pytest.approx(0.29)), ("b4", 0.3)]
    follow_earlier(state, lambda batch, usd: counted.append((batch.key, usd)))  # saved: not again
    assert len(counted) == 3
    saved = BatchState.load(tmp_path / "o.jsonl", "window", "f").entries
    assert saved[0].key_seen_usd == 0.0
    assert saved[4].key_seen_usd == 0.3  # counted when it is collected
    # verify14k K9: the run takes the open batches over: unfollowed until its own end read.
    assert saved[4].unfollowed is True


def test_what_a_killed_runs_readings_show_bounds_its_unfollowed_batches(tmp_path: Path) -> None:
    # verify38 N1: batches a run killed before any read followed them counted their worst cases
    # ($0.026 for $0.0006 billed); the key's rise since its first reading (`measured`) bounds them.
    state = BatchState(tmp_path / "o.batches.json", "window", "f")

    def entry(key: str, state: str, **more: Any) -> BatchEntry:
        return BatchEntry(key, MODEL, ["r"], ["f"], 0.3, 0.0, state=state, **more)

    collected = entry("b2", "collected", cost_usd=0.01, unfollowed=True)
    taken, followed = entry("b5", "submitted", unfollowed=True), entry("b6", "submitted", key_seen_usd=0.05)
    state.entries = [collected, taken, followed]
    counted: list[tuple[str, float]] = []
    follow_earlier(state, lambda batch, usd: counted.append((batch.key, usd)), measured=0.4)
    # The collected one first, up to its worst case beyond its cost; the rest for the open one it
    # took over, drawn when collected; none for the one an earlier end read followed.
    assert [key for key, _ in counted] == ["b2"] and counted[0][1] == pytest.approx(0.29)
    assert taken.key_seen_usd == 0.0 and followed.key_seen_usd == 0.05
    assert state.key_rise_usd == pytest.approx(0.11) and draw_rise(state, taken) == pytest.approx(0.11)
    assert taken.unfollowed and followed.unfollowed  # this run takes them over
    # A released one the kill left in doubt draws on it too, up to its worst case.
    released = entry("b7", "released", unfollowed=True)
    state.entries, state.key_rise_usd = [released], 0.0
    follow_earlier(state, lambda batch, usd: counted.append((batch.key, usd)), measured=0.5)
    assert counted[-1] == ("b7", 0.3) and not released.unfollowed and state.key_rise_usd == 0.0


def test_an_earlier_batchs_cost_charged_before_the_run_hides_none_of_its_own_unreported_charges() -> None:
    # A batch the key showed charged before this run began (drawn at its collection) is in the
    # ledger's known costs: compared with this run's usage, it explained as much of the run's own
    # under-reported charges (a batch collected first drew the rise another batch was charged).
    ledger = CreditLedger(1.0)
    ledger.spent, ledger.earlier_batches, ledger.before_run = 0.05, 0.05, 0.05
    assert ledger.follow_key(0.04) == pytest.approx(0.04)


@pytest.mark.parametrize(
    ("files", "merged"),
    [
        # Verification of the break14h fixes (N11): shards run one after another each count
        # their own gap: the largest alone showed $1.25 for $2.40.
        ([[("T01:00", "T02:00", 1.2)], [("T03:00", "T04:00", 1.1)]], 2.3),
        # Shards run at once each count the others' charges too (verify14i V9): the largest.
        ([[("T01:00", "T02:00", 1.6)], [("T01:30", "T02:30", 1.7)], [("T05:00", "T06:00", 0.5)]], 2.2),
        # A shard run in two parts around another (verify14k K4): three runs, none overlapping.
        ([[("T01:00", "T02:00", 1.0), ("T05:00", "T06:00", 0.2)], [("T03:00", "T04:00", 1.1)]], 2.3),
        # A gap whose time is not known (a summary without runs) is added on its own: safe side.
        ([[("T01:00", "T02:00", 1.2)], None], 1.2 + 0.9),
    ],
)
def test_a_merged_files_key_gap_adds_up_runs_that_did_not_overlap(
    tmp_path: Path, files: list[list[tuple[str, str, float]] | None], merged: float
) -> None:
    paths = []
    for index, runs in enumerate(files):
        path = tmp_path / f"s{index}.jsonl"
        summary: dict[str, Any] = {"key_gap_usd": 0.9}
        if runs is not None:
            summary["runs"] = [
                {"started_at": f"2026-11-29{a}:00.000Z", "finished_at": f"2026-11-29{b}:00.000Z", "key_gap_usd": gap}
                for a, b, gap in runs
            ]
            summary["key_gap_usd"] = sum(gap for *_, gap in runs)
        path.with_name(f"s{index}.summary.json").write_text(json.dumps(summary))
        paths.append(path)
    assert merged_key_gap(paths) == pytest.approx(merged)


@pytest.mark.parametrize(
    ("runs", "merged"),
    [
        # A summary edited or written by another tool: a usage that is text, a key id that is a
        # number, an own_key that is not true: no readings, so the clocks decide (they overlap).
        ([("T01:00", "T02:00", 0.54, "10.0", 12.0, "yes"), ("T01:30", "T02:30", 0.51, 12.0, 13.5)], 0.54),
        ([("T01:00", "T02:00", 0.54, 10.0, 12.0, False, 5), ("T01:30", "T02:30", 0.51, 12.0, 13.5, False, 5)], 0.54),
        # break46 F3: shard 2 ran after shard 1 on a clock 3 s behind: by the clocks they overlap
        # (the largest gap, $0.54 for $1.05); by the key's usage they did not (touching: each its own).
        ([("T01:00", "T02:00", 0.54, 10.0, 12.0), ("T01:30", "T02:30", 0.51, 12.0, 13.5)], 1.05),
        # Runs at once by the usage (each counted the other's charges), whatever the clocks say:
        # the key's rise over both (5.0) less what each knew of (2.4 + 2.3), not the largest gap
        # on top of rows that hold it (out-122 F3: shards side by side, $0.014 for $0.010 billed).
        ([("T01:00", "T02:00", 1.6, 10.0, 14.0), ("T05:00", "T06:00", 1.7, 11.0, 15.0)], 0.3),
        # Runs of earlier versions, whose readings were on two scales (a BYOK rise at the end only):
        # a run after another could seem at once with it, so the largest gap stays a floor (out-123 F1).
        (
            [("T01:00", "T02:00", 1.6, 10.0, 14.0, False, "k", False), ("T05:00", "T06:00", 1.7, 11.0, 15.0)],
            1.7,
        ),
        # A run without readings at both ends: the clocks decide, for all.
        ([("T01:00", "T02:00", 1.6, 10.0, 14.0), ("T01:30", "T02:30", 1.7, None, None)], 1.7),
        # A run on a key of its own counted no other's charges: added.
        ([("T01:00", "T02:00", 1.6, 10.0, 14.0, True), ("T01:30", "T02:30", 1.7, 0.0, 2.0)], 3.3),
        # Readings that are no ordered pair are none.
        ([("T01:00", "T02:00", 1.6, 14.0, 10.0), ("T05:00", "T06:00", 1.7, 11.0, 15.0)], 3.3),
        # verify48 N2: two keys (two accounts, a key rotated between shards): their usage is on
        # scales of their own, so ranges that overlap say nothing: each its own gap.
        (
            [("T01:00", "T02:00", 0.54, 0.0, 1.12, False, "k1"), ("T03:00", "T04:00", 0.51, 0.0, 1.13, False, "k2")],
            1.05,
        ),
        # verify48 N3: runs that overlapped in part counted part of each other's charges: the
        # group's rise (22.5) less what its runs knew of (5.8 + 6.21), not the largest gap.
        ([("T01:00", "T02:00", 8.4, 0.0, 14.2, False, "k"), ("T01:30", "T02:30", 7.83, 8.46, 22.5, False, "k")], 10.49),
        # out-157 F2: side by side, each shard counted the other's charges (none beyond the rows);
        # a third, stopped in its pre-flight, read no key and spent nothing: the usage still tells.
        (
            [
                ("T01:00", "T02:00", 1.0, 0.0, 2.0),
                ("T01:00", "T02:00", 1.0, 0.0, 2.0),
                ("T01:10", "T01:20", 0.0, None, None, False, "k", True, 0.0),
            ],
            0.0,
        ),
        # Not known to have spent nothing (a summary of before `spent_usd`): by the clock, as before.
        (
            [
                ("T01:00", "T02:00", 1.0, 0.0, 2.0),
                ("T01:00", "T02:00", 1.0, 0.0, 2.0),
                ("T01:10", "T01:20", 0.0, None, None, False, "k", True, None),
            ],
            1.0,
        ),
    ],
    ids=[
        "hostile-usage",
        "hostile-key-id",
        "skewed-clocks-sequential",
        "overlap-by-usage",
        "overlap-by-usage-older-readings",
        "no-readings",
        "own-key",
        "unordered-readings",
        "two-keys",
        "partial-overlap",
        "a-run-that-spent-nothing",
        "a-run-of-unknown-spend",
    ],
)
def test_a_merged_files_key_gap_tells_overlap_by_the_keys_usage(
    tmp_path: Path, runs: list[tuple[Any, ...]], merged: float
) -> None:
    paths = []
    for index, (a, b, gap, first, last, *rest) in enumerate(runs):
        path = tmp_path / f"s{index}.jsonl"
        span = {"started_at": f"2026-11-29{a}:00.000Z", "finished_at": f"2026-11-29{b}:00.000Z", "key_gap_usd": gap}
        # One key, one scale, what the run spent unknown, unless named.
        own, key, aligned, spent = (rest + [False, "k", True, None][len(rest) :])[:4]
        span.update(key_usage_at_start=first, key_usage_at_end=last, own_key=own, key_id=key, usage_aligned=aligned)
        span["spent_usd"] = spent
        path.with_name(f"s{index}.summary.json").write_text(json.dumps({"key_gap_usd": gap, "runs": [span]}))
        paths.append(path)
    assert merged_key_gap(paths) == pytest.approx(merged)


def test_a_key_usage_below_the_one_a_run_left_makes_open_batches_count_their_worst_cases(tmp_path: Path) -> None:
    # Verification of the break14h fixes (K12): a key_usage_at_end above the key's usage now (an
    # edited record, another key) read as no rise, and a batch billed between runs was lost.
    state = BatchState(tmp_path / "o.batches.json", "window", "f")
    state.entries = [BatchEntry("b1", MODEL, ["r"], ["f"], 0.3, 0.0, state="submitted", batch_id="batch_1")]
    state.key_usage_at_end = 1e308
    seen_between_runs(state, 5.0)
    assert state.entries[0].key_seen_usd == 0.3 and state.key_usage_at_end is None


def test_the_rise_between_runs_goes_to_the_batch_collected_first(tmp_path: Path) -> None:
    # Verification of the break14h fixes (K11): the rise was shared among the open batches by
    # their headroom; the one collected took only its share ($0.19 of its $0.39), and the rest
    # was lost under the other's cap when its own charge came: $0.64 counted for $0.78.
    state = BatchState(tmp_path / "o.batches.json", "window", "f")
    b1 = BatchEntry("b1", MODEL, ["r1"], ["f"], 0.4467, 0.0, state="submitted", batch_id="batch_1")
    b2 = BatchEntry("b2", MODEL, ["r2"], ["f"], 0.4488, 0.0, state="submitted", batch_id="batch_2")
    state.entries = [b1, b2]
    state.key_usage_at_end = 0.0
    seen_between_runs(state, 0.3901)  # b1 was billed while no run was alive
    assert draw_rise(state, b1) == pytest.approx(0.3901) and draw_rise(state, b2) == 0.0
    b1.state = "collected"
    state.key_usage_at_end = 0.3901  # the end of the run that collected b1, b2 still open
    seen_between_runs(state, 0.7822)  # then b2 was billed
    assert draw_rise(state, b2) == pytest.approx(0.3921)


@pytest.mark.parametrize(
    ("field", "value"), [("key_rise_usd", '"abc"'), ("key_usage_at_end", "-1"), ("key_rise_usd", "NaN")]
)
def test_a_batch_records_key_readings_that_cannot_be_believed_are_refused(
    tmp_path: Path, field: str, value: str
) -> None:
    # The state's own key figures (_batch_key) are read like its entries' amounts (N3).
    state = BatchState(tmp_path / "o.batches.json", "window", "f")
    state.save()
    text = state.path.read_text()
    state.path.write_text(text.replace(f'"{field}":', f'"{field}":{value},"was":'))
    with pytest.raises(ResultsError, match=f"{field} is not an amount of money"):
        BatchState.load(tmp_path / "o.jsonl", "window", "f")


def test_runs_a_summary_cannot_vouch_for_are_counted_on_their_own(tmp_path: Path) -> None:
    # A summary's `runs` that are not runs (wrong shapes, times reversed) give no span: the
    # file's gap counts on its own (safe side), never a traceback.
    path = tmp_path / "s0.jsonl"
    runs = ["x", {"started_at": 5}, {"started_at": "T2", "finished_at": "T1", "key_gap_usd": 1.0}]
    path.with_name("s0.summary.json").write_text(json.dumps({"key_gap_usd": 0.7, "runs": runs}))
    assert merged_key_gap([path]) == pytest.approx(0.7)


def test_a_runs_key_readings_are_on_one_scale_with_byok_usage_its_limit_leaves_out() -> None:
    # out-123 F1: the end reading counted the rise of a byok_usage the key's limit leaves out, the
    # start did not: the next run's start fell inside this run's span, merge took the two as at
    # once, and the file's $0.0025 key gap went.
    start = KeyStart(usage=1.0, byok_outside=0.5)
    assert usage_span(start, {"key_usage_delta_usd": 0.3}) == (1.5, 1.8)
    assert usage_span(KeyStart(usage=1.0), {"key_usage_delta_usd": 0.3}) == (1.0, 1.3)


@pytest.mark.parametrize(
    ("ids", "said"),
    [
        (["../../../api/v1/credits"], "batch_id '../../../api/v1/credits' is not an id"),
        (["batch_a", "batch_a"], "batch_id batch_a is listed twice"),
    ],
)
def test_a_batch_record_with_an_id_that_is_no_id_or_twice_is_refused(tmp_path: Path, ids: list[str], said: str) -> None:
    # out-145 F6: an edited id went into the cancel URL with the key (POST /api/v1/credits/cancel);
    # F3: one batch listed twice was collected, and its charge booked, twice.
    state = BatchState(tmp_path / "o.batches.json", "window", "f")
    for n, batch_id in enumerate(ids, 1):
        state.entries.append(BatchEntry(f"b{n}", "a/m", [f"r{n}"], ["f"], 0.1, 0.0, "submitted", batch_id))
    state.save()
    with pytest.raises(ResultsError, match=rf"batch 'b\d': {re.escape(said)}.*; fix or restore the file"):
        BatchState.load(tmp_path / "o.jsonl", "window", "f")
    code, _, err = call_cli("batches", "cancel", tmp_path / "o.jsonl")
    assert code == ExitCode.USAGE and said in err


async def test_a_start_read_high_within_the_tolerance_hides_no_spend(tmp_path: Path) -> None:
    # out-156 F2: /key's first read $0.0099 high, honest after: a fall within the tolerance, and
    # spend was measured from the high start, $0.0118 billed on a $0.002 budget, spent $0.0019.
    # The first requests are billed nothing (as a cheap model's answers, next to nothing): a read
    # then shows the start's usage was high.
    server = Server(lambda billed, reads: key_data(billed + (0.0099 if reads == 1 else 0.0)), honest_chats=3)
    code, summary, _ = await run(tmp_path, server, job_text(budget=BUDGET, concurrency=1))
    assert code == ExitCode.BUDGET and summary["stop"] == "budget"
    assert summary["spent_usd"] == pytest.approx(server.billed, abs=1e-6)
    assert server.billed <= BUDGET + 0.0201  # one worst case in flight at the last read


async def test_a_usage_held_still_while_the_periods_usage_rises_is_spend(tmp_path: Path) -> None:
    # out-156 F3: `usage` frozen at 0 while usage_daily, _weekly and _monthly rose with each
    # charge: believed, $0.012 billed on a $0.002 budget, exit 0, spent $0.
    def frozen(billed: float, reads: int) -> dict[str, Any]:
        return key_data(0.0, usage_daily=billed, usage_weekly=billed, usage_monthly=billed)

    server = Server(frozen)
    code, summary, _ = await run(tmp_path, server, job_text(budget=BUDGET, concurrency=1))
    assert code == ExitCode.BUDGET and summary["stop"] == "budget"
    assert summary["spent_usd"] == pytest.approx(server.billed, abs=1e-6)
    assert server.billed <= BUDGET + 0.0201


@pytest.mark.parametrize(
    "garbled",
    [
        {"limit": "0.0001"},
        {"limit": float("nan")},
        {"limit": -1},
        {"limit": "0.0001", "limit_remaining": 50},
        {"limit": 10, "usage": "9.99"},
        {"limit": 10, "limit_reset": "daily", "usage_daily": -5},
    ],
)
def test_a_key_limit_or_its_periods_usage_that_is_no_amount_is_a_bad_reply(garbled: dict[str, Any]) -> None:
    # out-156 F1: a limit of "0.0001", NaN or -1 was read as "no per-key limit": `plan` said so
    # and a run spent four times the key's limit, exit 0. A usage the limit counts, the same.
    from batchrun._account_reply import parse_key_data
    from batchrun._exceptions import RequestFailed
    from batchrun._scrub import Scrubber

    with pytest.raises(RequestFailed, match=r"the /key (limit|usage|usage_daily) is .*, not an amount in USD"):
        parse_key_data({**key_data(0.0), **garbled}, Scrubber(), "/key")
    assert parse_key_data({**key_data(0.0), "limit": 0.0001}, Scrubber(), "/key")["limit_remaining"] == 0.0001


def test_a_garbled_key_limit_sends_nothing(tmp_path: Path) -> None:
    server = Server(lambda billed, reads: {**key_data(billed), "limit": "0.0001", "limit_remaining": 50})
    job = write_job(tmp_path, job_text(budget=None))
    with server.hostile().running() as hostile:
        commands: list[list[str | Path]] = [["plan", job], [job, "-o", tmp_path / "o.jsonl"]]
        for command in commands:
            code, _, err = call_cli(*command, "--base-url", hostile.base_url)
            assert code == ExitCode.ERRORS and "the /key limit is a string, not an amount in USD" in err, err
    assert server.chats == 0


async def test_a_usage_falling_back_within_the_tolerance_over_and_over_takes_back_no_spend(tmp_path: Path) -> None:
    # out-159 F1: usage = 5 + (billed mod $0.008): falls of 0.8 cent, each within the tolerance, and
    # each measured anew from the start: 400 rows sent, $0.080 billed on a $0.01 budget, exit 0.
    server = Server(lambda billed, reads: key_data(5.0 + round(billed, 9) % 0.008), bill=0.002)
    code, summary, _ = await run(tmp_path, server, job_text(budget=BUDGET, rows=200, concurrency=1))
    assert code == ExitCode.BUDGET and summary["stop"] == "budget"
    assert server.billed <= BUDGET + 0.0201  # one worst case in flight at the last read


async def test_a_period_usage_that_resets_mid_run_still_counts_its_rises(tmp_path: Path) -> None:
    # out-159 F2: `usage` held still while usage_daily rose, then reset (a new day): measured from
    # its start-up value, the rises after the reset were none, $0.040 billed on $0.01, exit 0.
    def reset(billed: float, reads: int) -> dict[str, Any]:
        daily = round(billed, 9) % 0.02  # a new period every $0.02
        return key_data(0.0, usage_daily=daily, usage_weekly=0.0, usage_monthly=0.0)

    server = Server(reset, bill=0.002)
    code, summary, _ = await run(tmp_path, server, job_text(budget=BUDGET, rows=200, concurrency=1))
    assert code == ExitCode.BUDGET and summary["stop"] == "budget"
    assert server.billed <= BUDGET + 0.0201


def test_a_key_limit_lowered_mid_run_is_no_spend(tmp_path: Path) -> None:
    # out-159 F3: the owner lowered the key's limit from $10 to $1 mid-run: its limit_remaining fell
    # by $9, counted as spent (key_gap $9, the run stopped with credit left), and every resume
    # exited 5 "earlier runs spent $9.004200, over the budget".
    def lowered(billed: float, reads: int) -> dict[str, Any]:
        limit = 10.0 if reads < 3 else 1.0
        return key_data(billed, limit=limit, limit_remaining=limit - billed)

    server = Server(lowered, answer=honest_answer)
    job = write_job(tmp_path, job_text(budget=2.0))
    out = tmp_path / "o.jsonl"
    with server.hostile().running() as hostile:
        for resume in ([], ["--resume"]):
            code, _, err = call_cli(job, "--base-url", hostile.base_url, "-o", out, "-q", *resume)
            summary = json.loads(out.with_name("o.summary.json").read_text())
            assert code == ExitCode.OK and summary["key_gap_usd"] == 0, err
    assert summary["spent_before_usd"] + summary["spent_usd"] == pytest.approx(server.billed, abs=1e-6)
    assert server.key_reads >= 4  # the limit was lowered under the first run


@pytest.mark.parametrize(
    "unreadable",
    [
        {"usage": None},
        {"include_byok_in_limit": True, "byok_usage": "0"},
        {"include_byok_in_limit": True, "byok_usage": -1},
    ],
)
def test_plan_says_the_run_would_stop_on_a_key_it_cannot_follow(tmp_path: Path, unreadable: dict[str, Any]) -> None:
    # out-159 F4: under a budget, `plan` said the worst case fit, exit 0, where the run sends
    # nothing and stops, exit 5 (key_unreadable).
    server = Server(lambda billed, reads: {**key_data(billed), **unreadable})
    job = write_job(tmp_path, job_text(budget=0.5))
    with server.hostile().running() as hostile:
        code, _, err = call_cli("plan", job, "--base-url", hostile.base_url)
        assert code == ExitCode.BUDGET and "the run would stop, exit 5: the key's usage cannot be followed" in err, err
        assert call_cli(job, "--base-url", hostile.base_url, "-o", tmp_path / "o.jsonl", "-q")[0] == ExitCode.BUDGET
    assert server.chats == 0
    no_limit = Server(lambda billed, reads: {**key_data(billed), **unreadable})  # nothing to follow it for
    with no_limit.hostile().running() as hostile:
        assert (
            call_cli("plan", write_job(tmp_path, job_text(budget=None), "free.yaml"), "--base-url", hostile.base_url)[0]
            == 0
        )


async def test_a_key_read_that_answers_after_a_later_one_is_not_followed() -> None:
    # out-162 F1: two /key reads in flight (the window's and a probe's), followed in the order they
    # came back: an honest server's older reading read as a fall ("usage went down $6.45 -> $6.20",
    # exit 5), or, within a cent, its rise was counted twice (a key gap the server never billed).
    from batchrun._dispatch import Dispatcher
    from batchrun._limit_parts import LimitParts
    from batchrun._retry import RetryPolicy
    from batchrun._settings import RunSettings
    from batchrun._stops import Stops
    from batchrun._throttle import Throttle

    clock = FakeClock()
    first_asked, first_answers = asyncio.Event(), asyncio.Event()
    usages = iter([1.0, 1.5])  # the usage when each read is asked; the first answers last

    class Client:
        asked = 0

        async def key_info(self) -> dict[str, Any]:
            Client.asked += 1
            usage = next(usages)
            if Client.asked == 1:
                first_asked.set()
                await first_answers.wait()
            return key_data(usage)

    ledger = CreditLedger(10.0)
    stops = Stops(clock, RetryPolicy(), 1.0, None)
    dispatch = Dispatcher(
        cast(Any, Client()),
        clock,
        stops,
        Throttle(1, clock),
        ledger,
        RetryPolicy(),
        RunSettings(),
        costs=None,
        limits=LimitParts(job=10.0),
        key_start=KeyStart.of(key_data(0.0)),
    )
    ledger.read_key = dispatch._read_key  # as watch_key sets it: under a limit, a fall stops the run
    first = asyncio.ensure_future(dispatch._read_key())
    await first_asked.wait()
    await dispatch._read_key()  # asked later, answers first: $1.50
    first_answers.set()
    await first  # asked first, answers last: $1.00, stale
    assert stops.reason is None  # no "usage went down"
    assert dispatch.key_start.spend(1.6, key_data(1.6)) == pytest.approx(1.6)  # each rise counted once


async def test_a_change_of_limit_reset_does_not_switch_off_the_fall_of_limit_remaining(tmp_path: Path) -> None:
    # out-162 F2: `usage` held still, only limit_remaining fell with each charge; a change of
    # limit_reset after the start (null -> monthly) made the fall unread for the rest of the run:
    # $2.00 billed on a $0.10 budget, exit 0, "spent $0.00".
    def moved(billed: float, reads: int) -> dict[str, Any]:
        reset = None if reads == 1 else "monthly"
        return key_data(0.0, limit=10.0, limit_remaining=10.0 - billed, limit_reset=reset)

    server = Server(moved, bill=0.002)
    code, summary, _ = await run(tmp_path, server, job_text(budget=BUDGET, rows=200, concurrency=1))
    assert code == ExitCode.BUDGET and summary["stop"] == "budget"
    assert server.billed <= BUDGET + 0.0201


def test_a_limit_lowered_after_a_killed_runs_last_reading_is_no_charge_of_it() -> None:
    # out-162 F3: the key's limit lowered from $100 to $90 under a run killed -9 after spending
    # $0.28: its resume took the $10 fall of limit_remaining for a charge ("the key was charged
    # $9.995316 for an earlier run") and every resume of the file was refused, exit 5.
    from batchrun._killed_run import KeySeen, _reading, key_seen_line

    line = key_seen_line(0.28, 0.28, 0.0, 0.0, 0, 28, None, 99.72, 100.0)
    reading = _reading(line)
    assert reading is not None and reading["limit"] == 100.0  # the journal keeps the limit it read
    seen = KeySeen(0.0, 0.0, 0.0, 0.28, 0.28, 0.0, 0, 28, start_remaining=100.0, remaining=99.72)
    seen = replace(seen, start_limit=100.0, limit=100.0)
    assert seen.spend_since(0.28, 89.72) == pytest.approx(10.0)  # read on the old limit: the $10 lie
    assert seen.rebased(90.0).spend_since(0.28, 89.72) == pytest.approx(0.0)
    assert seen.rebased(90.0).spend_since(0.28, 89.70) == pytest.approx(0.02)  # a real fall still counts
    lowered = replace(seen, remaining=89.72, limit=90.0)  # lowered between the killed run's own readings
    assert lowered.spend_during == pytest.approx(10.28) and lowered.rebased(90.0).spend_during == pytest.approx(0.28)
    assert seen.rebased(None) == seen  # no limit now: the readings stay as they were


async def test_a_limit_reset_flipped_at_every_read_hides_no_spend(tmp_path: Path) -> None:
    # out-164 F1: every usage field at 0, only limit_remaining falling, and limit_reset daily <->
    # weekly at each read: no fall was read across a change, $1.00 billed on $0.20, "spent $0".
    def flipped(billed: float, reads: int) -> dict[str, Any]:
        reset = "daily" if reads % 2 else "weekly"
        zeros = {"usage_daily": 0.0, "usage_weekly": 0.0, "usage_monthly": 0.0}
        return key_data(0.0, limit=10.0, limit_remaining=10.0 - billed, limit_reset=reset, **zeros)

    server = Server(flipped, bill=0.002)
    code, summary, _ = await run(tmp_path, server, job_text(budget=BUDGET, rows=200, concurrency=1))
    assert code == ExitCode.BUDGET and summary["stop"] == "budget"
    assert server.billed <= BUDGET + 0.0201


async def test_an_honest_limit_reset_change_is_read_on_the_new_period_not_as_spend(tmp_path: Path) -> None:
    # The owner moves the limit from daily to all-time: limit_remaining now counts $5 of earlier
    # usage, which is no charge of the run's (out-159 F3: "$5.0016 spent" of $0.0016 billed).
    def moved(billed: float, reads: int) -> dict[str, Any]:
        daily = reads < 3
        remaining = 10.0 - (billed if daily else 5.0 + billed)
        extra = {"usage_daily": billed, "usage_weekly": billed, "usage_monthly": billed}
        return key_data(
            5.0 + billed, limit=10.0, limit_remaining=remaining, limit_reset="daily" if daily else None, **extra
        )

    server = Server(moved, answer=honest_answer)
    code, summary, _ = await run(tmp_path, server, job_text(budget=2.0))
    assert code == ExitCode.OK and summary["key_gap_usd"] == 0 and server.key_reads >= 3, summary["stop_message"]


def test_a_key_limit_set_during_the_run_and_used_up_is_said(tmp_path: Path) -> None:
    # out-172 F2: /key said "no limit" at start-up, then a limit the run's spend had passed: the run
    # knew of none (no read in between), ended exit 0, and the end read's limit went unsaid.
    def appearing(billed: float, reads: int) -> dict[str, Any]:
        return key_data(billed) if reads == 1 else key_data(billed, limit=billed / 4, limit_remaining=0.0)

    server = Server(appearing)
    job = write_job(tmp_path, job_text(budget=None, key_refresh_s=3600, key_refresh_requests=1_000_000))
    with server.hostile().running() as hostile:
        code, _, err = call_cli(job, "--base-url", hostile.base_url, "-o", tmp_path / "o.jsonl", "-q")
    assert code == ExitCode.OK and server.key_reads == 2, err
    assert f"the key was given a limit of ${server.billed / 4:.6f} during the run, and it is used up" in err, err
