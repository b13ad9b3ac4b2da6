"""A run killed after its last /key read, against answers that under-report their cost: the
resume counts what the key was charged for it (break36 F8: $0.0765 and $0.0969 charged under a
$0.05 budget after kills, the summary counting less than the server billed)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from batchrun import ExitCode
from batchrun._journal_file import read_journal
from batchrun._killed_run import (
    KeySeen,
    batches_bound,
    carried_rate,
    key_seen_line,
    known_rate,
    last_key_seen,
    readings_problem,
    released_charge,
    summary_key_seen,
    unseen_charge,
)
from batchrun._merged_key_gap import merged_key_gap
from batchrun._run_output import release_in_summary

from .conftest import FAKE_KEY, SMALL_JOB, call_cli, child_env, start, wait_for_lines, write_job
from .hostile import HostileServer, RawRequest, chat_payload, json_answer

pytestmark = pytest.mark.usefixtures("keys_env")

JOB = """
name: crash
defaults:
  params: {max_tokens: 16}
models: [openai/gpt-4o-mini]
prompts:
  - id: sum
    text: "What is {{n}} + 1?"
    vars: [{n: 1}, {n: 2}, {n: 3}, {n: 4}, {n: 5}, {n: 6}, {n: 7}, {n: 8}, {n: 9}, {n: 10}, {n: 11}, {n: 12}]
run: {concurrency: 1, timeout_s: 60, max_attempts: 1, grace_s: 1}
"""


def _key(usage: float) -> bytes:
    return json_answer(200, {"data": {"label": "k", "limit": None, "limit_remaining": None, "usage": usage}})


def _free_answer(request: RawRequest) -> bytes:
    """An answer that says it cost nothing (the key is charged all the same)."""
    answer = chat_payload()
    answer["usage"]["cost"] = 0
    return json_answer(200, answer)


def _key_then_hang(reads: list[int]) -> Any:
    """/key answers usage 0 at the start; every later read hangs: the run waits there with its
    answers recorded and no reading since its start, where the test kills it."""

    def key(request: RawRequest) -> Any:
        reads.append(1)
        if len(reads) == 1:
            return _key(0.0)

        async def hang(writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(3600)

        return hang

    return key


def _kill_when_waiting_on_key(path: Path, out: Path) -> int:
    """Run with a $1 budget until it waits on its second /key read, kill -9 it there; returns
    how many answers its records hold (each at $0). One at a time, and under a limit /key is read
    every second request (_dispatch._probe) before it is reserved: nothing is in flight then."""
    reads: list[int] = []
    server = HostileServer(chat=_free_answer, key=_key_then_hang(reads))
    with server.running():
        options = ("--base-url", server.base_url, "-o", out, "-q", "--budget", "1")
        process = start(path, *options, env=child_env(OPENROUTER_API_KEY=FAKE_KEY))
        end = time.monotonic() + 30
        while time.monotonic() < end and process.poll() is None:
            if len(reads) >= 2:
                break
            time.sleep(0.02)
        process.kill()
        process.wait()
    assert len(reads) >= 2, f"the run never read /key again: {process.communicate()}"
    return len(server.chat_rows())


def test_a_resume_counts_what_the_key_was_charged_after_the_killed_runs_last_read(tmp_path: Path) -> None:
    path = write_job(tmp_path, JOB)
    out = tmp_path / "out.jsonl"
    journal = tmp_path / "out.attempts.jsonl"
    answered = _kill_when_waiting_on_key(path, out)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert answered == len(records) == 1 and records[0]["spent"] == 0
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    worst = max(line["usd"] for line in lines if "usd" in line)
    assert len([line for line in lines if "usd" in line]) == 1  # nothing was in flight at the kill
    assert lines[1] == _reading(0.0)  # the start's reading
    # The key was charged 0.9 of each answer's worst case; the budget leaves half a request beyond that.
    charged = answered * 0.9 * worst
    budget = charged + 0.5 * worst
    server = HostileServer(chat=_free_answer, key=lambda request: _key(charged))
    with server.running():
        # Under --quiet, as from cron: budget the run no longer has is a warning.
        options = ("--base-url", server.base_url, "-o", out, "--resume", "--budget", repr(budget), "-q")
        code, _, err = call_cli(path, *options)
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert "Traceback" not in err and FAKE_KEY not in err
    assert f"the key was charged ${charged:.6f} for an earlier run after its last /key read" in err
    assert summary["key_gap_usd"] == pytest.approx(charged, abs=1e-8)
    # Spent before this run began, as the killed run's records: not this run's spend (break38).
    assert summary["spent_before_usd"] == pytest.approx(charged, abs=1e-8) and summary["spent_usd"] == 0
    # Without it the budget looked whole, and the rows left were sent and charged again.
    assert code == ExitCode.BUDGET and server.chat_rows() == [] and not journal.exists()
    # Charged in the killed run's time, not the resume's: left out of the resume's own span, so a
    # merge with another shard that ran while the resume did still adds it (not the larger of two).
    assert summary["runs"][-1]["key_gap_usd"] == 0
    other = tmp_path / "other.jsonl"
    other.write_text("")
    run = {**summary["runs"][-1], "key_gap_usd": 0.5}
    (tmp_path / "other.summary.json").write_text(json.dumps({"key_gap_usd": 0.5, "runs": [run]}))
    assert merged_key_gap([out, other]) == pytest.approx(0.5 + charged, abs=1e-8)


def test_simulate_resumes_after_a_kill_without_measuring_across_two_simulators(tmp_path: Path) -> None:
    # --simulate gives each run a simulator of its own, whose key starts at $0: the killed run's
    # readings read as "another key", with a warning and its worst cases since counted as spent
    # ($0.0073 on the quick start's job). Nothing is measured across two of them.
    path = write_job(tmp_path, SMALL_JOB)
    out = tmp_path / "out.jsonl"
    process = start(path, "--simulate", "--sim", "latency_ms=200", "-o", out, "-q")
    wait_for_lines(out, 4, process)
    process.kill()
    process.wait()
    assert "key_seen" in (tmp_path / "out.attempts.jsonl").read_text()
    code, _, err = call_cli(path, "--simulate", "-o", out, "--resume", "-q")
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert code == ExitCode.OK and "key readings" not in err and "the key was charged" not in err, err
    assert summary["key_gap_usd"] == 0


class _Billing:
    """A server whose answers say they cost $0 while the key is charged `charge` for each, on
    top of `before`; /key says so honestly, or (`unreadable`) answers a usage of null."""

    def __init__(self, before: float, charge: float, unreadable: bool = False) -> None:
        self.before, self.charge, self.unreadable = before, charge, unreadable
        self.server = HostileServer(chat=_free_answer, key=self._key)

    def _key(self, request: RawRequest) -> bytes:
        if self.unreadable:
            return json_answer(200, {"data": {"label": "k", "limit": None, "limit_remaining": None, "usage": None}})
        return _key(self.billed)

    @property
    def billed(self) -> float:
        return self.before + self.charge * len(self.server.chat_rows())

    def resume(self, path: Path, out: Path, budget: float) -> tuple[int, str]:
        with self.server.running():
            options = ("--base-url", self.server.base_url, "-o", out, "--resume", "--budget", repr(budget))
            code, _, err = call_cli(path, *options)
        assert "Traceback" not in err and FAKE_KEY not in err
        return code, err


def _killed(tmp_path: Path) -> tuple[Path, Path, float]:
    """The job killed after one answer (reported $0); the job, its output, and its worst case."""
    path = write_job(tmp_path, JOB)
    out = tmp_path / "out.jsonl"
    assert _kill_when_waiting_on_key(path, out) == 1
    lines = [json.loads(line) for line in (tmp_path / "out.attempts.jsonl").read_text().splitlines()]
    return path, out, max(line["usd"] for line in lines if "usd" in line)


def test_the_resumes_own_unreported_charges_are_not_hidden_by_the_killed_runs(tmp_path: Path) -> None:
    # break37 F1: the killed run's charge, counted at the resume's start, was also taken off what
    # the key rose by during the resume: that much of the resume's own $0-reported answers went
    # uncounted, and one kill passed a $0.05 budget by 10-30 %.
    path, out, worst = _killed(tmp_path)
    billing = _Billing(before=0.9 * worst, charge=0.9 * worst)
    budget = 6 * worst
    code, _ = billing.resume(path, out, budget)
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert code == ExitCode.BUDGET
    # Within the budget but for the one request in flight at the last read (concurrency 1)...
    assert billing.billed <= budget + worst
    # ... and the file counts at least what the key was charged.
    assert summary["spent_before_usd"] + summary["spent_usd"] >= billing.billed - 1e-8


def test_a_resume_that_cannot_read_the_key_carries_the_killed_runs_readings_on(tmp_path: Path) -> None:
    # break37 F3: a resume whose /key answered no usage stopped (key_unreadable) and deleted the
    # journal with the killed run's readings: the next resume counted nothing for that run.
    path, out, worst = _killed(tmp_path)
    charged = 0.9 * worst
    code, _ = _Billing(before=charged, charge=charged, unreadable=True).resume(path, out, 10 * worst)
    assert code == ExitCode.BUDGET  # key_unreadable: under a limit, nothing sent
    carried = json.loads((tmp_path / "out.summary.json").read_text())["key_readings"]
    assert [line["key_seen"] for line in carried] == [0.0, 0.0]  # the killed run's, for the next run
    billing = _Billing(before=charged, charge=charged)
    code, err = billing.resume(path, out, 10 * worst)
    assert f"the key was charged ${charged:.6f} for an earlier run after" in err
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["spent_before_usd"] + summary["spent_usd"] >= billing.billed - 1e-8


def _journal(tmp_path: Path, *lines: dict[str, Any]) -> Path:
    path = tmp_path / "x.attempts.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _sent(usd: Any) -> dict[str, Any]:
    return {"row": "r", "at": 0, "usd": usd, "model": "m"}


def _reading(
    usage: float, counted: float = 0.0, reserved: float = 0.0, prior: float = 0.0, in_flight: int = 0, sent: int = 0
) -> dict[str, float]:
    return key_seen_line(usage, counted, reserved, prior, in_flight, sent, rate=None, remaining=None)


def _seen(**figures: Any) -> KeySeen:
    """A killed run's readings: all figures 0 but those given."""
    names = ("start_usage", "start_counted", "prior", "usage", "counted", "reserved", "in_flight", "sent")
    fields: dict[str, Any] = {**dict.fromkeys(names, 0.0), **figures}
    return KeySeen(**fields)


def test_the_journal_gives_the_first_and_last_readings_and_what_was_sent_after(tmp_path: Path) -> None:
    journal = _journal(
        tmp_path,
        {"job": "j", "job_fingerprint": "f", "shard": None},
        _reading(1.0, counted=0.25, prior=2.0),
        _sent(0.1),
        {"key_gap": 0.05},
        _reading(1.5, counted=0.3, reserved=0.2, prior=2.0, in_flight=1, sent=1),
        _sent(0.1),
        {"row": "r", "gen": "gen-1"},
        {"row": "r", "paid": 0.0},
        _sent(0.3),
        _sent("x"),  # unreadable: the dearest of them
        {**_reading(7.0), "sent": -1},  # cannot be read: passed over, and said
    )
    last = {"usage": 1.5, "counted": 0.3, "reserved": 0.2, "in_flight": 1, "sent": 1}
    expected = _seen(start_usage=1.0, start_counted=0.25, prior=2.0, **last, sent_after=0.1 + 0.3 + 0.3, after_n=3)
    warnings: list[str] = []
    assert last_key_seen(journal, warnings.append) == expected
    assert len(warnings) == 1 and "1 key_seen line(s) could not be read" in warnings[0]
    with journal.open("ab") as handle:
        handle.write(b'{"key_seen": 9, "counted": 0, "reserved": 0, "prior": 0')  # torn by the kill
    assert last_key_seen(journal) == expected
    # Carried on by a run that could not read the key, then its own attempts after them.
    carried = _journal(tmp_path, {"job": "j"}, *expected.lines(), _sent(0.05))
    assert last_key_seen(carried) == replace(expected, sent_after=0.1 + 0.3 + 0.3 + 0.05, after_n=4)
    rated = last_key_seen(_journal(tmp_path, {"job": "j"}, {**_reading(1.0), "rate": 0.01}, _sent(0.1)))
    assert rated is not None and rated.rate == 0.01  # the rate the run carried on from those killed before it
    limited = _journal(tmp_path, {"job": "j"}, {**_reading(1.0), "remaining": 5.0}, {**_reading(1.2), "remaining": 4.7})
    key = last_key_seen(limited)
    assert key is not None and (key.start_remaining, key.remaining) == (5.0, 4.7)
    assert last_key_seen(_journal(tmp_path, {"job": "j"}, *key.lines())) == key  # carried on whole
    unrated = last_key_seen(_journal(tmp_path, {"job": "j"}, {**_reading(1.0), "rate": "x"}, _sent(0.1)))
    assert unrated is not None and unrated.rate is None
    assert last_key_seen(_journal(tmp_path, {"job": "j"}, _sent(0.1))) is None  # written before readings
    assert last_key_seen(tmp_path / "none.jsonl") is None


def test_a_sums_float_residue_below_zero_is_read_as_zero_not_as_a_line_that_cannot_be_read(tmp_path: Path) -> None:
    # break42 F1: "reserved": -5.76e-20 (what was reserved less what was released), written as
    # is and refused as negative: a resume after every kill -9 warned, under --quiet too.
    written = _reading(1.0, counted=-1e-19, reserved=-5.759824041329242e-20)
    assert (written["counted"], written["reserved"]) == (0.0, 0.0)
    residue = {**_reading(1.2, counted=0.2), "reserved": -5.759824041329242e-20, "counted": 0.2 - 1e-18}
    warnings: list[str] = []
    seen = last_key_seen(_journal(tmp_path, {"job": "j"}, _reading(1.0), residue), warnings.append)
    assert warnings == [] and seen is not None and (seen.usage, seen.reserved) == (1.2, 0.0)
    assert last_key_seen(_journal(tmp_path, {"job": "j"}, {**residue, "reserved": -1e-6}), warnings.append) is None
    assert len(warnings) == 1  # a figure below zero by more than a residue is still not believed


# Up to its last reading the key rose 0.3 over 30 attempts, 2 of them in flight then ($0.2 of worst
# cases), and 5 were sent after ($0.5); its reads counted no gap.
SEEN = _seen(start_usage=10.0, prior=1.0, usage=10.3, counted=0.25, reserved=0.2, in_flight=2, sent=30)
SEEN = replace(SEEN, sent_after=0.5, after_n=5)


@pytest.mark.parametrize(
    ("usage_now", "prior_now", "unseen"),
    [
        (10.3 + 0.4, 1.0 + 0.3, 0.4),  # reads counted 0.3, the 0.4 since was reported as $0
        (10.3 + 0.4, 1.0 + 0.3 + 0.4, 0.0),  # honest: the records count it
        (10.3 + 0.4, 1.0 + 0.3 + 0.6, 0.0),  # held worst cases above the charge: never negative
        (10.3 + 50.0, 1.0 + 0.3, 0.7),  # another process meanwhile: up to the worst cases in flight or sent since
        (9.0, 1.0 + 0.3, 0.25 + 0.7 - 0.3),  # the usage fell (another key): what it counted, and the worst cases
        (None, 1.0, 0.0),  # the key's usage not read now: nothing measured
    ],
)
def test_the_unseen_charge_is_the_keys_rise_beyond_what_is_counted(
    usage_now: float | None, prior_now: float, unseen: float
) -> None:
    assert unseen_charge(SEEN, usage_now, prior_now) == pytest.approx(unseen)
    assert unseen_charge(None, usage_now, prior_now) == 0.0


def test_a_price_list_that_understates_the_charge_is_bounded_by_what_answers_cost_the_key() -> None:
    # break37 F2: listed at $0 (worst cases $0), the bound was $0, and every kill lost its tail.
    # What an answer cost the key up to the last reading ($0.30 for 30 answered) stands for each
    # attempt in flight then or sent since: 6 x $0.01.
    seen = _seen(usage=0.3, counted=0.3, in_flight=1, sent=31, after_n=5)
    assert unseen_charge(seen, 0.4, 0.3) == pytest.approx(0.06)
    assert unseen_charge(seen, 0.35, 0.3) == pytest.approx(0.05)  # never more than the key rose


def test_another_process_between_the_runs_is_bounded_by_the_killed_runs_own_rate() -> None:
    # A nightly resume on a key other jobs share: the rise since the kill holds a day of their
    # spend. It is counted up to what the killed run's attempts since its last reading can have
    # cost at its own rate (which holds whatever its reads caught: a lying price list, or the
    # others' spend then), never the whole day.
    seen = _seen(usage=0.3, counted=0.3, in_flight=1, sent=31, after_n=5)
    assert unseen_charge(seen, 0.3 + 50.0, 0.3) == pytest.approx(0.06)


def test_a_run_killed_before_any_read_showed_what_an_answer_costs_is_bounded_by_its_worst_cases() -> None:
    # verify37 N1: killed before its first read in the run (only the start's reading), with no
    # rate shown by a run killed before it: its worst cases bound the rise. The whole rise charged
    # a run killed in its first second with another job's day of spend on the key, for good
    # (break38 F2); a price list that understates the charge loses what its first requests cost
    # beyond it, as a run's own first requests are in no window either.
    early = _seen(usage=1.0, start_usage=1.0, sent=0, after_n=2, sent_after=0.004)
    assert known_rate(early) is None and unseen_charge(early, 1.0 + 50.0, 0.0) == pytest.approx(0.004)
    # A rate the runs killed before it showed bounds it too.
    carried = replace(early, rate=0.01)
    assert known_rate(carried) == 0.01 and unseen_charge(carried, 1.05, 0.0) == pytest.approx(0.02)
    # Nothing of it out after its last reading: the rise is someone else's.
    assert unseen_charge(replace(early, after_n=0, sent_after=0.0), 1.05, 0.0) == 0.0


def test_a_fall_of_limit_remaining_is_spend_as_in_the_key_window() -> None:
    # break38 F1: a key whose usage lags (or leaves spend out) while its limit_remaining falls:
    # the window counts the fall (key_spend), the readings held only `usage`, and the resume
    # measured nothing after a kill.
    seen = _seen(usage=0.0, sent=10, after_n=4, start_remaining=5.0, remaining=4.99)
    assert seen.spend_during == pytest.approx(0.01) and known_rate(seen) == pytest.approx(0.001)
    assert unseen_charge(seen, 0.0, 0.0, remaining_now=4.985) == pytest.approx(0.01 + 0.004)
    assert unseen_charge(seen, 0.0, 0.0) == pytest.approx(0.01)  # the limit gone now: the usage alone since


def test_the_rate_a_resume_carries_on() -> None:
    assert carried_rate(SEEN, 10.3) == pytest.approx(0.3 / 28)  # its rise over the answers in by its last reading
    assert carried_rate(replace(SEEN, sent=0, in_flight=0, rate=0.02), 10.3) == 0.02  # none in: the earlier one
    assert carried_rate(replace(SEEN, rate=0.02), 9.0) == 0.02  # readings that do not hold: not theirs
    assert carried_rate(None, 1.0) is None


def test_worst_cases_counted_when_the_key_was_lost_are_released_down_to_what_the_key_charged() -> None:
    # break38 F4: the run counted $0.30 in all, $0.10 of it worst cases no read confirmed; the key
    # rose $0.22 over both stretches. $0.08 of them was never charged; never more than the $0.10.
    lost = _seen(usage=0.15, counted=0.15, sent=10, after_n=3, unconfirmed=0.10)
    assert released_charge(lost, 0.22, 0.30) == pytest.approx(0.08)
    assert released_charge(lost, 0.10, 0.30) == 0.0  # the readings do not hold together: nothing
    assert released_charge(lost, 0.15, 0.50) == pytest.approx(0.10)  # up to the worst cases held
    assert released_charge(lost, 0.40, 0.30) == 0.0  # another process's spend only makes it less
    assert released_charge(replace(lost, unconfirmed=0.0), 0.22, 0.30) == 0.0
    assert released_charge(lost, None, 0.30) == 0.0


def test_a_release_is_written_into_the_earlier_summary_at_once(tmp_path: Path) -> None:
    # verify39 F1: a resume that released held worst cases and was killed before its own summary
    # left them in the earlier summary: the next resume counted them again.
    out = tmp_path / "out.jsonl"
    out.write_text("")
    readings = [_reading(0.0), {**_reading(0.1), "unconfirmed": 0.01}]
    earlier = {"output": str(out), "key_gap_usd": 0.012, "key_readings": readings, "spent_usd": 0.05}
    (tmp_path / "out.summary.json").write_text(json.dumps(earlier))
    release_in_summary(out, 0.01)
    after = json.loads((tmp_path / "out.summary.json").read_text())
    assert after == {"output": str(out), "key_gap_usd": 0.002, "spent_usd": 0.05}


@pytest.mark.parametrize(
    "readings",
    ["x", None, [1, 2], [{}], [{}, {}], [{"key_seen": 1}, {"key_seen": "x"}], [_reading(0.0)] * 3, {"a": 1}],
)
def test_key_readings_a_summary_holds_that_cannot_be_read_measure_nothing(readings: Any) -> None:
    # A summary edited, or of another version: its readings are passed over, never a traceback.
    assert summary_key_seen({"key_readings": readings}) is None
    assert summary_key_seen({"key_readings": [_reading(0.0), {**_reading(0.1), "unconfirmed": 0.01}]}) is not None


def test_readings_that_do_not_hold_together_measure_nothing() -> None:
    # break37 F4: a reading far above the key's usage now (an edited journal) was trusted, $1e12
    # for good; readings that went down under-counted. What the run counted by its last reading
    # stands, with the worst cases since.
    huge = _seen(usage=1e12, counted=0.3, reserved=0.1, in_flight=1, sent=30, sent_after=0.2, after_n=2)
    assert readings_problem(huge, 0.5) is not None
    assert unseen_charge(huge, 0.5, 0.3) == pytest.approx(0.3)
    fell = _seen(start_usage=1.0, usage=0.5, counted=0.3, reserved=0.1, in_flight=1, sent=30, sent_after=0.2)
    assert readings_problem(fell, 2.0) is not None and unseen_charge(fell, 2.0, 0.3) == pytest.approx(0.3)
    assert readings_problem(SEEN, 10.3) is None


def test_what_the_killed_run_began_with_is_not_its_own(tmp_path: Path) -> None:
    # A resume that counted an earlier kill's charge at its start (its ledger's `counted`), then was
    # killed in turn: that charge is in what the next resume counts for it, not a charge of its own.
    seen = _seen(start_usage=5.0, start_counted=0.4, prior=1.0, usage=5.0, counted=0.4, sent_after=0.2, after_n=1)
    assert unseen_charge(seen, 5.2, 1.0 + 0.4) == pytest.approx(0.2)
    assert unseen_charge(seen, 5.2, 1.0 + 0.4 + 0.2) == 0.0


def test_a_journal_with_readings_is_still_read_for_its_attempts(tmp_path: Path) -> None:
    journal = _journal(tmp_path, {"job": "j"}, _reading(1.0), _sent(0.1), _reading(1.1))
    rows = read_journal(journal, "j")
    assert list(rows) == ["r"] and [a["usd"] for a in rows["r"].attempts] == [0.1]


def test_a_killed_runs_batches_are_bounded_by_all_the_key_rose_by_less_what_was_counted_of_it() -> None:
    seen = _seen(start_usage=1.0, usage=1.25)
    assert batches_bound(seen, 1.5, unseen=0.1) == pytest.approx(0.4)  # 1.0 -> 1.5, less the 0.1 counted
    assert batches_bound(seen, 1.5, unseen=0.6) == 0.0
    # limit_remaining's fall is spend too (key_spend)
    assert batches_bound(replace(seen, start_remaining=5.0, remaining=4.5), 1.5, 0.0, remaining_now=4.0) == 1.0
    # Nothing measured: the worst cases stand.
    assert batches_bound(None, 1.5, 0.0) is None and batches_bound(seen, None, 0.0) is None
    assert batches_bound(seen, 1.2, 0.0) is None  # the usage is below the last reading


def test_what_a_run_counted_that_was_charged_before_its_first_reading_is_not_taken_as_its_own(tmp_path: Path) -> None:
    # verify41 F-1: a collecting run counted a batch billed before its first /key read, then lost
    # the key and counted worst cases; the release took that batch's charge for its own and left
    # the file at 0.82x the bill. Now what it counted so is journaled (and summarised), and left out.
    journal = _journal(
        tmp_path,
        {"job": "j"},
        _reading(1.0),
        {"charged_before": 0.1},
        {"charged_before": 0.3},  # the last one counts: cumulative
        _reading(1.5, counted=0.6),
    )
    seen = last_key_seen(journal)
    assert seen is not None and seen.before == 0.3
    assert seen.counted_since_start(prior_now=0.9) == pytest.approx(0.6)
    unconfirmed = replace(seen, unconfirmed=0.5)
    # The key rose 0.5 since the first reading; the file counts 0.9 for the run, 0.3 of it charged before.
    assert released_charge(unconfirmed, 1.5, prior_now=0.9) == pytest.approx(0.1)
    assert released_charge(replace(unconfirmed, before=0.0), 1.5, prior_now=0.9) == pytest.approx(0.4)
    # Carried on in a summary's key_readings, and read back.
    assert summary_key_seen({"key_readings": unconfirmed.lines()}) == unconfirmed


def test_charged_before_and_unconfirmed_lines_that_cannot_be_believed_release_nothing_more(tmp_path: Path) -> None:
    # The newest journal lines read like the others (journal_usd): text, negatives, NaN, null and a
    # boolean are passed over; a lower charged_before after a higher one takes nothing back (what a
    # run counted before its first reading only grows), so the release never grows by it.
    bad: list[Any] = ["x", -1, "NaN", None, True, [], {}]
    journal = _journal(
        tmp_path,
        {"job": "j"},
        _reading(1.0),
        {"charged_before": 0.3},
        *({"charged_before": value} for value in bad),
        {"charged_before": 0.1},
        _reading(1.5, counted=0.6),
        *({"unconfirmed": value} for value in bad),
    )
    seen = last_key_seen(journal)
    assert seen is not None and seen.before == 0.3
    assert seen.unconfirmed == 0.0 and not seen.unconfirmed_in_journal  # nothing to release
    assert released_charge(seen, 1.5, prior_now=0.9) == 0.0
