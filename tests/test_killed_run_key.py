"""A run killed after its last /key read, against answers that under-report their cost: the
resume counts what the key was charged for it (break36 F8: $0.0765 and $0.0969 charged under a
$0.05 budget after kills, the summary counting less than the server billed)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from batchrun import ExitCode
from batchrun._journal_file import read_journal
from batchrun._killed_run import KeySeen, last_key_seen, unseen_charge

from .conftest import FAKE_KEY, call_cli, child_env, start, write_job
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
    assert lines[1] == {"key_seen": 0.0, "counted": 0.0, "reserved": 0.0, "prior": 0.0}  # the start's reading
    # The key was charged 0.9 of each answer's worst case; the budget leaves half a request beyond that.
    charged = answered * 0.9 * worst
    budget = charged + 0.5 * worst
    server = HostileServer(chat=_free_answer, key=lambda request: _key(charged))
    with server.running():
        options = ("--base-url", server.base_url, "-o", out, "--resume", "--budget", repr(budget))
        code, _, err = call_cli(path, *options)
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert "Traceback" not in err and FAKE_KEY not in err
    assert f"the key was charged ${charged:.6f} for an earlier run killed after its last /key read" in err
    assert summary["key_gap_usd"] == pytest.approx(charged, abs=1e-8)
    assert summary["spent_usd"] == pytest.approx(charged, abs=1e-8)
    # Without it the budget looked whole, and the rows left were sent and charged again.
    assert code == ExitCode.BUDGET and server.chat_rows() == [] and not journal.exists()


def _journal(tmp_path: Path, *lines: dict[str, Any]) -> Path:
    path = tmp_path / "x.attempts.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _sent(usd: Any) -> dict[str, Any]:
    return {"row": "r", "at": 0, "usd": usd, "model": "m"}


def _reading(usage: float, counted: float = 0.0, reserved: float = 0.0, prior: float = 0.0) -> dict[str, float]:
    return {"key_seen": usage, "counted": counted, "reserved": reserved, "prior": prior}


def test_the_journal_gives_the_first_and_last_readings_and_what_was_sent_after(tmp_path: Path) -> None:
    journal = _journal(
        tmp_path,
        {"job": "j", "job_fingerprint": "f", "shard": None},
        _reading(1.0, counted=0.25, prior=2.0),
        _sent(0.1),
        {"key_gap": 0.05},
        _reading(1.5, counted=0.3, reserved=0.2, prior=2.0),
        _sent(0.1),
        {"row": "r", "gen": "gen-1"},
        {"row": "r", "paid": 0.0},
        _sent(0.3),
        _sent("x"),  # unreadable: the dearest of them
        {"key_seen": "broken", "counted": 0, "reserved": 0, "prior": 0},  # skipped, not a reading
    )
    expected = KeySeen(1.0, 0.25, 1.5, 0.2, 2.0, sent_after=0.1 + 0.3 + 0.3)
    assert last_key_seen(journal) == expected
    with journal.open("ab") as handle:
        handle.write(b'{"key_seen": 9, "counted": 0, "reserved": 0, "prior": 0')  # torn by the kill
    assert last_key_seen(journal) == expected
    assert last_key_seen(_journal(tmp_path, {"job": "j"}, _sent(0.1))) is None  # written before readings
    assert last_key_seen(tmp_path / "none.jsonl") is None


SEEN = KeySeen(start_usage=10.0, start_counted=0.0, usage=10.3, reserved=0.2, prior=1.0, sent_after=0.5)


@pytest.mark.parametrize(
    ("usage_now", "prior_now", "unseen"),
    [
        (10.3 + 0.4, 1.0 + 0.3, 0.4),  # reads counted 0.3, the 0.4 since was reported as $0
        (10.3 + 0.4, 1.0 + 0.3 + 0.4, 0.0),  # honest: the records count it
        (10.3 + 0.4, 1.0 + 0.3 + 0.6, 0.0),  # held worst cases above the charge: never negative
        (10.3 + 50.0, 1.0 + 0.3, 0.7),  # another process meanwhile: up to the worst cases in flight or sent since
        (9.0, 1.0 + 0.3, 0.7),  # the usage fell (another key): the worst cases stand
        (None, 1.0, 0.0),  # the key's usage not read now: nothing measured
    ],
)
def test_the_unseen_charge_is_the_keys_rise_beyond_what_is_counted(
    usage_now: float | None, prior_now: float, unseen: float
) -> None:
    assert unseen_charge(SEEN, usage_now, prior_now) == pytest.approx(unseen)
    assert unseen_charge(None, usage_now, prior_now) == 0.0


def test_what_the_killed_run_began_with_is_not_its_own(tmp_path: Path) -> None:
    # A resume that counted an earlier kill's charge at its start (its ledger's `counted`), then was
    # killed in turn: that charge is in what the next resume counts for it, not a charge of its own.
    seen = KeySeen(start_usage=5.0, start_counted=0.4, usage=5.0, reserved=0.0, prior=1.0, sent_after=0.2)
    assert unseen_charge(seen, 5.2, 1.0 + 0.4) == pytest.approx(0.2)
    assert unseen_charge(seen, 5.2, 1.0 + 0.4 + 0.2) == 0.0


def test_a_journal_with_readings_is_still_read_for_its_attempts(tmp_path: Path) -> None:
    journal = _journal(tmp_path, {"job": "j"}, _reading(1.0), _sent(0.1), _reading(1.1))
    rows = read_journal(journal, "j")
    assert list(rows) == ["r"] and [a["usd"] for a in rows["r"].attempts] == [0.1]
