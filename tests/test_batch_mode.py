"""Batch mode end to end, on the simulator over loopback, with a fake clock driving both
batchrun's polling and the simulator's batch states (no test sleeps for real)."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from batchrun import ExitCode, Job, RunControl, RunOptions, RunReport, Shard, load_job, run_job
from batchrun._batch_latency import latency_only_threshold
from batchrun._batch_setup import BATCH_WAIT_S
from batchrun._batch_state import BatchState, state_path
from batchrun._exceptions import ConfigError
from batchrun._matrix import matrix_requests
from batchrun._summary_beside import read_run_summary
from batchrun._transport import default_transport
from batchrun._verdict import decide
from batchrun.simulator import SimConfig, Simulator

from .conftest import (
    FAKE_KEY,
    SMALL_JOB,
    FakeClock,
    call_cli,
    child_env,
    deadline_at_first_wait,
    read_rows,
    run_cli,
    write_job,
)

ROOT = Path(__file__).resolve().parent.parent

THREE_MODELS = """
name: nightly
defaults:
  params: {max_tokens: 32}
models: [openai/gpt-4o-mini, anthropic/claude-3.5-haiku, meta-llama/llama-3.1-8b-instruct]
prompts:
  - id: capital
    text: "Capital of {{country}}?"
    vars: [{country: France, expect: Paris}, {country: Japan, expect: Tokyo}, {country: Italy, expect: Rome}]
    checks: [{contains: "{{expect}}"}]
  - id: sum
    text: "What is {{a}} + 1?"
    vars: [{a: 1}, {a: 2}]
run: {mode: batch, batch_poll_s: 60, max_error_rate: 0.5}
"""


@pytest.fixture
def slow_batches() -> SimConfig:
    """Batches that take 20 minutes (validating 60 s, in progress 1,080 s, finalizing 60 s): past
    the tests' 10-minute deadlines, in 20 polls a minute apart. Each poll is a real request: an
    hour's 61 polls cost the suite seconds of CPU and showed nothing more."""
    return SimConfig(batch_validating_s=60, batch_in_progress_s=1080, batch_finalizing_s=60)


@pytest.fixture
def batch_sim(slow_batches: SimConfig, clock: FakeClock) -> Any:
    simulator = Simulator(slow_batches)
    simulator.clock = clock.time  # the simulator's batches age with the test's fake clock
    with simulator.serve_in_thread():
        yield simulator


def example_job(tmp_path: Path) -> Path:
    for name in ("eval.yaml", "countries.jsonl", "capital.schema.json"):
        shutil.copy(ROOT / "jobs" / name, tmp_path / name)
    return tmp_path / "eval.yaml"


async def run(job: Job, sim: Simulator, out: Path, clock: FakeClock, resume: bool = False, **options: Any) -> RunReport:
    return await run_job(
        job, RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, output=out, clock=clock, resume=resume, **options)
    )


def batch_job(path: Path, **run: Any) -> Job:
    job = load_job(path)
    return replace(job, run=replace(job.run, mode="batch", **run))


def code_of(report: RunReport, job: Job) -> ExitCode:
    assert report.verdict()[0] == decide(report.summary, job.run)[0]  # the job's settings, as the run read them
    return report.verdict()[0]


async def test_example_job_in_batch_mode_matches_sync_at_half_the_cost(
    tmp_path: Path, batch_sim: Simulator, clock: FakeClock
) -> None:
    path = example_job(tmp_path)
    job = batch_job(path)
    report = await run(job, batch_sim, tmp_path / "batch.jsonl", clock)
    batches = batch_sim.batches
    # One batch per model; Google models take one response_format per batch, and the
    # example's capital-json prompt asks for json_object, so Gemini has two.
    assert dict(batches.stats.by_model) == {
        "openai/gpt-4o-mini": 1,
        "anthropic/claude-3.5-haiku": 1,
        "google/gemini-2.0-flash-001": 2,
        "meta-llama/llama-3.1-8b-instruct": 1,
        "mistralai/mistral-small-3.1-24b-instruct": 1,
    }
    for batch in batches.batches.values():
        assert {item["body"]["model"] for item in batch.requests} == {batch.model}
        if batch.model.startswith("google/"):
            assert len({json.dumps(i["body"].get("response_format")) for i in batch.requests}) == 1
    assert batch_sim.stats.chat_requests == 0
    assert report.summary["stop"] is None and report.summary["complete"] is True
    assert report.summary["total"]["ok"] == 105
    assert code_of(report, job) == ExitCode.OK
    assert clock.sleeps and all(s <= 60 for s in clock.sleeps)  # polled every batch_poll_s

    sync = await run(load_job(path), batch_sim, tmp_path / "sync.jsonl", clock)
    assert sync.summary["total"]["ok"] == 105
    batch_rows = {r["id"]: r for r in read_rows(tmp_path / "batch.jsonl")}
    sync_rows = {r["id"]: r for r in read_rows(tmp_path / "sync.jsonl")}
    assert batch_rows.keys() == sync_rows.keys()
    for row_id, row in batch_rows.items():
        twin = sync_rows[row_id]
        # The same record, field for field, plus the batch id; the body sent is the same.
        assert [k for k in row if k != "batch_id"] == list(twin)
        assert row["request"] == twin["request"] and row["fingerprint"] == twin["fingerprint"]
        assert row["content"] == twin["content"]
        assert row["generation_id"].startswith("gen-batch-") and row["provider"] == "SimCloud"
        assert row["cost"] == pytest.approx(twin["cost"] / 2)
    # Latency checks do not apply to batch rows (a batch has no per-request latency).
    assert all("fast-enough" not in [c["name"] for c in r.get("checks", [])] for r in batch_rows.values())
    assert report.summary["spent_usd"] == pytest.approx(sync.summary["spent_usd"] / 2)
    assert FAKE_KEY not in (tmp_path / "batch.jsonl").read_text() + state_path(tmp_path / "batch.jsonl").read_text()


async def test_deadline_exits_submitted_then_resume_collects_without_resubmitting(
    tmp_path: Path, batch_sim: Simulator, clock: FakeClock
) -> None:
    job = batch_job(write_job(tmp_path, THREE_MODELS), deadline_s=600)
    out = tmp_path / "r.jsonl"
    first = await run(job, batch_sim, out, clock)
    assert code_of(first, job) == ExitCode.SUBMITTED and ExitCode.SUBMITTED.value == 10
    assert first.summary["stop"] == "submitted" and first.summary["complete"] is False
    assert first.summary["batches"]["open"] == 3 and first.summary["batches"]["open_rows"] == 15
    assert batch_sim.batches.stats.submitted == 3
    assert out.read_text() == ""  # nothing answered yet, nothing skipped
    state = BatchState.read(out)
    assert [e.state for e in state.entries] == ["submitted"] * 3 and all(e.batch_id for e in state.entries)
    assert clock.now == pytest.approx(600)  # it waited until the deadline, no longer
    # break49 F3: `report` of the file (no record yet) was exit 2, "holds no records".
    code, text, err = call_cli("report", out)
    assert code == ExitCode.INCOMPLETE and "15 row(s) await OpenRouter in open or in-doubt batches" in err
    assert "TOTAL" in text and "+?" in text  # their worst cases held, at a cost not known yet
    # out-134 F1: left out of the history as "holds no records"; out-132 F4: its batch record is there.
    code, _, err = call_cli("history", out)
    assert code == ExitCode.OK and "holds no records" not in err and "batch record is gone" not in err, err
    assert "r.jsonl: an incomplete run" in err, err
    # out-129 F1: its batch record not kept (an artifact of *.jsonl and *.summary.json), exit 0.
    kept = state_path(out).rename(tmp_path / "kept")
    code, _, err = call_cli("report", out)
    assert code == ExitCode.INCOMPLETE and "15 of the 15 row(s) of its run's job have no record" in err
    kept.rename(state_path(out))

    clock.now += 3 * 3600  # the next cron tick, hours later
    second = await run(job, batch_sim, out, clock, resume=True)
    assert batch_sim.batches.stats.submitted == 3  # collected, not submitted again
    assert second.summary["total"]["ok"] == 15 and second.summary["complete"] is True
    assert code_of(second, job) == ExitCode.OK
    assert [e.state for e in BatchState.read(out).entries] == ["collected"] * 3
    assert len(read_rows(out)) == 15


async def test_a_deadline_while_the_last_poll_collects_every_row_is_no_stop(
    tmp_path: Path, batch_sim: Simulator, clock: FakeClock
) -> None:
    # out-129 F5: the deadline came between two polls, after the batches had ended; the poll at it
    # collected all 15 rows, and the run exited 6 (`complete: false`), report 0, nothing to resume.
    job = batch_job(write_job(tmp_path, THREE_MODELS), deadline_s=1250, batch_poll_s=1000)
    report = await run(job, batch_sim, tmp_path / "r.jsonl", clock)
    assert clock.now >= 1250  # the batches ended at 1,200 s: collected by the poll at the deadline
    assert report.summary["total"]["ok"] == 15 and report.summary["stop"] is None
    assert report.summary["complete"] is True and code_of(report, job) == ExitCode.OK


@pytest.mark.parametrize(("shard", "stop"), [(None, "submitted"), (Shard(2, 3), "submitted"), (None, "interrupted")])
async def test_resume_without_output_finds_the_run_whose_rows_all_await_their_batches(
    tmp_path: Path,
    batch_sim: Simulator,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    shard: Shard | None,
    stop: str,
) -> None:
    # break64 F3: a batch run that ended at exit 10 before its first record (the usual night:
    # every row in a batch still running) left an empty results file and no journal: `--resume`
    # without --output said "no incomplete run was found", and running the job again submitted,
    # and paid for, every row twice.
    monkeypatch.chdir(tmp_path)
    job = batch_job(write_job(tmp_path, THREE_MODELS), deadline_s=600)
    first = await run_job(job, RunOptions(api_key=FAKE_KEY, base_url=batch_sim.base_url, clock=clock, shard=shard))
    assert first.summary["stop"] == "submitted" and first.output.read_text() == ""
    if stop != "submitted":  # verify67 F1: a SIGTERM (a 401, a 402) while it polled: its summary says so
        written = first.output.with_name(first.output.stem + ".summary.json")
        written.write_text(written.read_text().replace('"stop": "submitted"', f'"stop": "{stop}"'))
    submitted = batch_sim.batches.stats.submitted
    # verify68 F1: an empty file of the user's beside a copy of that summary is not the run.
    mine = first.output.with_name("mine.jsonl")
    mine.write_text("")
    mine.with_name("mine.summary.json").write_text(
        first.output.with_name(first.output.stem + ".summary.json").read_text()
    )
    clock.now += 3 * 3600
    options = RunOptions(api_key=FAKE_KEY, base_url=batch_sim.base_url, clock=clock, shard=shard, resume=True)
    second = await run_job(job, options)
    assert second.output == first.output and second.summary["complete"] is True
    assert batch_sim.batches.stats.submitted == submitted  # collected, not submitted again


async def submitted(tmp_path: Path, sim: Simulator, clock: FakeClock) -> tuple[Job, Path]:
    """THREE_MODELS in batch mode, run until its deadline: 3 batches open, nothing written."""
    job = batch_job(write_job(tmp_path, THREE_MODELS), deadline_s=600)
    out = tmp_path / "r.jsonl"
    assert code_of(await run(job, sim, out, clock), job) == ExitCode.SUBMITTED
    return job, out


async def test_batch_mode_without_a_deadline_stops_polling_after_the_batch_window(
    tmp_path: Path, clock: FakeClock
) -> None:
    # out-100 F5: no deadline, a batch that never leaves in_progress: polled for ever.
    simulator = Simulator(SimConfig(batch_in_progress_s=30 * 3600.0))
    simulator.clock = clock.time
    job = batch_job(write_job(tmp_path, THREE_MODELS), deadline_s=None, batch_poll_s=3600)
    with simulator.serve_in_thread():
        report = await run(job, simulator, tmp_path / "r.jsonl", clock)
    assert code_of(report, job) == ExitCode.SUBMITTED and report.summary["batches"]["open"] == 3
    assert clock.now == pytest.approx(BATCH_WAIT_S)  # the 24-hour window and an hour, then exit 10


@pytest.mark.parametrize("lost", ["removed", "emptied"])
@pytest.mark.parametrize("mode", ["batch", "sync"])
async def test_a_batch_record_lost_while_batches_are_open_is_refused_not_paid_twice(
    tmp_path: Path, batch_sim: Simulator, clock: FakeClock, lost: str, mode: str
) -> None:
    # out-100 F1: X.batches.json gone (a rename of the results and summary, as batchrun's own
    # advice says, left it behind) or emptied: the resume submitted the open batches' rows again,
    # both billed, exit 0, and the summary's hold forgotten.
    job, out = await submitted(tmp_path, batch_sim, clock)
    record = state_path(out)
    if lost == "removed":
        record.unlink()
    else:
        record.write_text(json.dumps({**json.loads(record.read_text()), "batches": []}))
        assert BatchState.read(out).entries == []
    before = (out.read_bytes(), out.with_name("r.summary.json").read_bytes())
    if mode == "sync":
        job = replace(job, run=replace(job.run, mode="sync"))
    clock.now += 3 * 3600
    options = RunOptions(api_key=FAKE_KEY, base_url=batch_sim.base_url, output=out, clock=clock, resume=True)
    with pytest.raises(
        ConfigError,
        match=r"r\.batches\.json is missing or lists no batch, but the last run's summary "
        r"says 3 batch\(es\) were still open or in doubt",
    ):
        await run_job(job, options)
    assert batch_sim.batches.stats.submitted == 3 and batch_sim.stats.chat_requests == 0
    assert (out.read_bytes(), out.with_name("r.summary.json").read_bytes()) == before


async def resumed_later(job: Job, sim: Simulator, out: Path, clock: FakeClock) -> tuple[RunReport, list[str]]:
    """The next cron tick, hours later: `--resume`, with what the run said."""
    clock.now += 3 * 3600
    notices: list[str] = []
    options = RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, output=out, clock=clock, resume=True)
    return await run_job(job, options, notice=notices.append), notices


@pytest.mark.parametrize("usage", [True, False], ids=["costs reported", "costs unknown"])
async def test_rows_edited_while_their_batch_runs_are_sent_again_not_given_its_answers(
    tmp_path: Path, batch_sim: Simulator, clock: FakeClock, usage: bool
) -> None:
    # break22 C1: after an edit, the resume recorded the open batch's answers (to the old
    # prompt) under the edited row's fingerprint and request body, so no resume asked them
    # again and `report --job` passed; rows removed from the job were dropped without a word.
    # Without usage on the batch or its items, what the answers cost is unknown: the answers
    # not recorded are carried by their worst cases (they were not carried at all).
    batch_sim.config.batch_item_usage = batch_sim.config.batch_usage = usage
    _, out = await submitted(tmp_path, batch_sim, clock)
    sent = {
        row: fp
        for entry in BatchState.read(out).entries
        for row, fp in zip(entry.rows, entry.fingerprints, strict=True)
    }
    edited_text = (
        THREE_MODELS.replace('"What is {{a}} + 1?"', '"What is {{a}} plus one?"')
        .replace("{country: Italy, expect: Rome}]", "]")
        .replace("{country: Japan, expect: Tokyo}, ]", "{country: Japan, expect: Tokyo}]")
    )
    edited = batch_job(write_job(tmp_path, edited_text, "edited.yaml"), deadline_s=600)
    second, notices = await resumed_later(edited, batch_sim, out, clock)
    assert code_of(second, edited) == ExitCode.SUBMITTED  # the rows sent again are in new batches
    # The 9 answers not recorded were paid for: the key gap carries them to the next run
    # (verify22 N10: counted only by the run that collected them, so a resume overspent).
    gap = second.summary["key_gap_usd"]
    assert gap > 0
    recorded = sum(r["spent"] for r in read_rows(out))
    clock.now += 3 * 3600
    third = await run(edited, batch_sim, out, clock, resume=True)
    assert third.summary["spent_before_usd"] == pytest.approx(recorded + gap, abs=1e-8)  # summaries round to 8 places
    rows = {r["id"]: r for r in read_rows(out)}
    new = {r.id: r for r in matrix_requests(edited)}
    assert set(rows) == set(new) and third.summary["complete"] is True  # 12 rows: Italy is gone
    assert len(read_rows(out)) == 12
    for row_id, row in rows.items():
        # Each record's body and fingerprint are the ones its answer was asked with.
        assert row["fingerprint"] == new[row_id].fingerprint and row["request"] == orjson.loads(new[row_id].payload)
    sent_again = [r for r in new.values() if sent[r.id] != r.fingerprint]
    assert len(sent_again) == 6 and batch_sim.batches.stats.submitted == 6  # the 6 "plus one" rows, in 3 new batches
    assert "6 row(s) were edited since the batch holding them was sent: sent again as edited" in notices
    # Per old batch: 2 edited rows and 1 removed row (Italy) answered the old bodies.
    assert sum("3 answer(s) not recorded" in n for n in notices) == 3


async def test_a_batch_id_edited_into_a_key_is_never_sent_nor_written(
    tmp_path: Path, batch_sim: Simulator, clock: FakeClock
) -> None:
    # break22 m8: the id read back from X.batches.json went into the poll's URL and into each
    # row's error message ("OpenRouter has no batch sk-or-v1-...": the key five times).
    job, out = await submitted(tmp_path, batch_sim, clock)
    path = state_path(out)
    data = json.loads(path.read_text())
    data["batches"][0]["batch_id"] = FAKE_KEY
    path.write_text(json.dumps(data))
    _, notices = await resumed_later(job, batch_sim, out, clock)
    text = out.read_text() + "\n".join(notices) + state_path(out).read_text().replace(FAKE_KEY, "")
    assert FAKE_KEY not in text and FAKE_KEY[9:25] not in text
    lost = [r for r in read_rows(out) if r["status"] == "error"]
    assert len(lost) == 5 and {r["reason"] for r in lost} == {"batch_not_found"}
    assert lost[0]["error"]["message"] == "batch b1: the id kept for it is not a batch id"


async def test_the_same_output_path_without_resume_collects_too(
    tmp_path: Path, batch_sim: Simulator, clock: FakeClock
) -> None:
    job = batch_job(write_job(tmp_path, THREE_MODELS), deadline_s=60)
    out = tmp_path / "r.jsonl"
    assert code_of(await run(job, batch_sim, out, clock), job) == ExitCode.SUBMITTED
    clock.now += 7200
    notices: list[str] = []
    report = await run_job(
        job, RunOptions(api_key=FAKE_KEY, base_url=batch_sim.base_url, output=out, clock=clock), notice=notices.append
    )
    assert report.summary["total"]["ok"] == 15 and batch_sim.batches.stats.submitted == 3
    assert any("collecting the batches an earlier run submitted" in n for n in notices)


def test_kill_9_right_after_submit_then_resume_keeps_one_batch_per_model(
    tmp_path: Path, batch_sim: Simulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_path = write_job(tmp_path, THREE_MODELS)
    out = tmp_path / "r.jsonl"
    env = child_env(OPENROUTER_API_KEY=FAKE_KEY, BATCHRUN_TEST_KILL_AFTER_SUBMIT="2")
    crashed = run_cli(job_path, "--base-url", batch_sim.base_url, "-o", out, env=env)
    assert crashed.returncode == -9  # SIGKILL between OpenRouter's 202 and the record of its id
    assert batch_sim.batches.stats.submitted == 2
    state = BatchState.read(out)
    assert [(e.key, e.state) for e in state.entries] == [("b1", "submitted"), ("b2", "intent")]

    # Resume: b1 is collected, b2 is in doubt (never resubmitted), b3 is submitted.
    clock.now += 7200
    job = batch_job(job_path, deadline_s=3600)
    code, out_text, err = resume_in_process(job, batch_sim, out, clock)
    assert code == ExitCode.SUBMITTED  # b2's rows are neither answered nor resubmitted
    assert dict(batch_sim.batches.stats.by_model) == {
        "openai/gpt-4o-mini": 1,
        "anthropic/claude-3.5-haiku": 1,
        "meta-llama/llama-3.1-8b-instruct": 1,
    }
    assert "b2" in err and "not submitted again" in err
    said = read_run_summary(out)["stop_message"]  # out-145 F7: it was "await OpenRouter: , 1 in doubt"
    assert said.endswith(
        "row(s) await OpenRouter: 1 in doubt (see `batchrun batches list`); collect them with --resume"
    )
    listed = call_cli("batches", "list", out)
    # verify50 N5: words and options an action leaves unused were taken as done.
    unused: list[tuple[list[str | Path], str]] = [
        (["list", out, "b2"], "batches list takes no word(s) after the results file, not 'b2'"),
        (["release", out, "b2", "batch_x"], "batches release takes 1 word(s) after the results file, not 'batch_x'"),
        (["list", out, "--budget", "1"], "--budget: `batches` sends no chat request"),
    ]
    for words, said in unused:
        refused, _, told = call_cli("batches", *words)
        assert refused == ExitCode.USAGE and told.startswith(f"batchrun: {said}") and told.count("\n") == 1, told
    assert listed[0] == 0 and "in doubt" in listed[1]

    # The user finds the batch on OpenRouter's activity page and adopts it; the next run collects it.
    b2 = next(b.id for b in batch_sim.batches.batches.values() if b.model == "anthropic/claude-3.5-haiku")
    # A pasted id holding the key never reaches X.batches.json (break14c N18), nor does one that is no id.
    monkeypatch.setenv("OPENROUTER_API_KEY", FAKE_KEY)
    sidecar = out.with_name("r.batches.json")
    before = sidecar.read_bytes()
    for pasted in (f"batch_{FAKE_KEY}", f"batch_{FAKE_KEY[12:40]}", "b 2/../x"):
        refused, _, err = call_cli("batches", "adopt", out, "b2", pasted)
        assert refused == ExitCode.USAGE and "not an id" in err and FAKE_KEY[12:40] not in err
    # break28 m2: with no key in the environment to compare with, the key itself was taken.
    monkeypatch.delenv("OPENROUTER_API_KEY")
    refused, _, err = call_cli("batches", "adopt", out, "b2", "sk-or-v1-" + "0123456789abcdef" * 4)
    assert refused == ExitCode.USAGE and "not an id" in err and "0123456789abcdef" not in err
    monkeypatch.setenv("OPENROUTER_API_KEY", FAKE_KEY)
    # An id the file already holds (b1's, collected) would be collected and booked twice (break14e E15).
    held = state.entries[0].batch_id
    assert held is not None
    refused, _, err = call_cli("batches", "adopt", out, "b2", held)
    assert refused == ExitCode.USAGE and f"{held} is already b1's batch (collected)" in err
    assert sidecar.read_bytes() == before
    # break49 F1: a batch that cannot be b2's (another model's; one of another night) was taken,
    # its old answers recorded as new rows and the hold on the batch really in doubt released.
    older = batch_sim.batches.batches[b2]
    # Adopt reads the batch's created_at on the server's clock, by the Date of its reply. The killed
    # run sent b2 by this machine's clock and the simulator made it by the test's fake one: while
    # adopt looks, the simulator's clock runs with this machine's at the offset it had then.
    offset = older.created - state.entries[1].intent_at
    batch_sim.clock = lambda: time.time() + offset
    other = "meta-llama/llama-3.1-8b-instruct"  # a batch still running: nothing billed by this look
    batch_sim.batches.batches["batch_other"] = replace(older, id="batch_other", model=other)
    adopt = ("batches", "adopt", out, "b2")
    refused, _, err = call_cli(*adopt, "batch_other", "--base-url", batch_sim.base_url)
    assert refused == ExitCode.USAGE and f"its model is {other}; b2's rows are for" in err, err
    del batch_sim.batches.batches["batch_other"]
    for days, said in ((-2, "before b2 was sent"), (1, "long after b2 was sent")):  # other nights' batches
        older.created += days * 86400
        refused, _, err = call_cli(*adopt, b2, "--base-url", batch_sim.base_url)
        assert refused == ExitCode.USAGE and said in err, err
        older.created -= days * 86400
    refused, _, err = call_cli(*adopt, "batch_nope", "--base-url", batch_sim.base_url)
    assert refused == ExitCode.USAGE and "does not know the batch batch_nope (404)" in err, err
    assert sidecar.read_bytes() == before
    # out-145 F1: one still running cannot show whose rows it holds: adopted once it has ended.
    refused, _, err = call_cli(*adopt, b2, "--base-url", batch_sim.base_url)
    assert refused == ExitCode.USAGE and f"{b2} is validating: whose rows it holds can be checked only once" in err
    with monkeypatch.context() as ended:
        ended.setattr(batch_sim.batches, "status", lambda batch: "completed")
        adopted = call_cli(*adopt, b2, "--base-url", batch_sim.base_url)
    assert adopted[0] == 0, adopted
    batch_sim.clock = clock.time
    clock.now += 7200
    code, _, err = resume_in_process(job, batch_sim, out, clock)
    assert code == ExitCode.OK
    assert batch_sim.batches.stats.submitted == 3
    rows = {r["id"]: r for r in read_rows(out)}
    assert len(rows) == 15 and all(r["status"] == "ok" for r in rows.values())
    # verify38 N1: the batches the killed run left unfollowed counted their worst cases, 43x the
    # bill; the key's rise since its first reading bounds them (honest batches: what was billed).
    summary = read_run_summary(out)
    assert summary["spent_before_usd"] + summary["spent_usd"] == pytest.approx(
        batch_sim.batches.stats.billed_usd, abs=1e-8
    )
    assert "may have been charged beyond what it reports" not in err


def test_batches_a_killed_run_left_that_under_report_are_counted_at_their_charge(
    tmp_path: Path, batch_sim: Simulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # verify38 N1's bound must hold against batches that report a tenth of their charge, one
    # billed while no run was alive (it is in the rise the killed run's readings measure) and two
    # billed while the resume polls them (its own reads see those).
    routes = type(batch_sim.batches)
    complete = routes._complete

    def under_reported(self: Any, batch: Any) -> None:
        complete(self, batch)
        batch.usage["cost"] /= 10
        for item in batch.results:
            if item["response"] is not None:
                item["response"]["body"]["usage"]["cost"] /= 10

    monkeypatch.setattr(routes, "_complete", under_reported)
    job_path, out = write_job(tmp_path, THREE_MODELS), tmp_path / "r.jsonl"
    env = child_env(OPENROUTER_API_KEY=FAKE_KEY, BATCHRUN_TEST_KILL_AFTER_SUBMIT="3")
    assert run_cli(job_path, "--base-url", batch_sim.base_url, "-o", out, "--budget", "1", env=env).returncode == -9
    sim_batches = sorted(batch_sim.batches.batches.values(), key=lambda b: b.created)
    monkeypatch.setenv("OPENROUTER_API_KEY", FAKE_KEY)  # adopt reads the batch to check it is b3's
    with monkeypatch.context() as ended:  # adopted once it has ended (out-145 F1)
        ended.setattr(batch_sim.batches, "status", lambda batch: "completed")
        adopted = call_cli("batches", "adopt", out, "b3", sim_batches[2].id, "--base-url", batch_sim.base_url)
    assert adopted[0] == ExitCode.OK, adopted  # its id was never recorded
    clock.now += 7200
    with httpx.Client(headers={"Authorization": f"Bearer {FAKE_KEY}"}) as http:  # billed between the runs
        assert http.get(f"{batch_sim.base_url.replace('/v1', '/beta')}/batches/{sim_batches[0].id}").status_code == 200
    billed_before = batch_sim.batches.stats.billed_usd
    assert billed_before > 0
    code, _, err = resume_in_process(batch_job(job_path, deadline_s=3600, budget_usd=1.0), batch_sim, out, clock)
    assert code == ExitCode.OK, err
    billed = batch_sim.batches.stats.billed_usd
    assert billed > billed_before and len(read_rows(out)) == 15
    summary = read_run_summary(out)
    counted = summary["spent_before_usd"] + summary["spent_usd"]
    assert billed - 1e-8 <= counted < 2 * billed  # never below the bill; no worst cases (~70x) either


def resume_in_process(job: Job, sim: Simulator, out: Path, clock: FakeClock) -> tuple[ExitCode, str, str]:
    """A resume in process (the fake clock drives polling); returns exit code and notices."""
    import asyncio

    notices: list[str] = []
    report = asyncio.run(
        run_job(
            job,
            RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, output=out, clock=clock, resume=True),
            notice=notices.append,
        )
    )
    return decide(report.summary, job.run)[0], "", "\n".join(notices)


async def test_expired_batches_are_errors_and_retry_errors_resubmits_them(
    tmp_path: Path, batch_sim: Simulator, clock: FakeClock
) -> None:
    batch_sim.config.batch_outcome = "expired"
    job = batch_job(write_job(tmp_path, THREE_MODELS))
    out = tmp_path / "r.jsonl"
    first = await run(job, batch_sim, out, clock)
    rows = read_rows(out)
    assert len(rows) == 15 and {(r["status"], r["reason"], r["retryable"]) for r in rows} == {
        ("error", "batch_expired", True)
    }
    assert code_of(first, job) == ExitCode.ERRORS
    assert first.summary["spent_usd"] == 0

    batch_sim.config.batch_outcome = "completed"
    plain = await run(job, batch_sim, out, clock, resume=True)
    assert batch_sim.batches.stats.submitted == 3  # without --retry-errors, errors are kept
    assert plain.summary["total"]["error"] == 15

    retried = await run(job, batch_sim, out, clock, resume=True, retry_errors=True)
    assert batch_sim.batches.stats.submitted == 6  # a new batch per model for the expired items
    assert retried.summary["total"]["ok"] == 15 and code_of(retried, job) == ExitCode.OK
    assert batch_sim.stats.chat_requests == 0


async def test_retry_errors_in_sync_mode_when_the_job_says_so(
    tmp_path: Path, batch_sim: Simulator, clock: FakeClock
) -> None:
    batch_sim.config.batch_outcome = "expired"
    job = batch_job(write_job(tmp_path, THREE_MODELS), batch_retry="sync")
    out = tmp_path / "r.jsonl"
    await run(job, batch_sim, out, clock)
    batch_sim.config.batch_outcome = "completed"
    retried = await run(job, batch_sim, out, clock, resume=True, retry_errors=True)
    assert batch_sim.batches.stats.submitted == 3  # no new batch
    assert batch_sim.stats.chat_requests == 15  # the expired items went through chat completions
    assert retried.summary["total"]["ok"] == 15 and retried.summary["batches"]["sync_rows"] == 15


async def test_a_batch_whose_worst_case_does_not_fit_is_never_submitted(
    tmp_path: Path, batch_sim: Simulator, clock: FakeClock
) -> None:
    job = batch_job(write_job(tmp_path, THREE_MODELS), budget_usd=0.0004)
    out = tmp_path / "r.jsonl"
    report = await run(job, batch_sim, out, clock)
    # gpt-4o-mini's batch (5 rows x 32 tokens, reserved at full price) fits; claude's does not,
    # and after a budget stop nothing more is submitted.
    assert dict(batch_sim.batches.stats.by_model) == {"openai/gpt-4o-mini": 1}
    rows = read_rows(out)
    assert sorted((r["model"], r["status"], r["reason"]) for r in rows if r["status"] == "skipped") == sorted(
        [(m, "skipped", "budget") for m in ("anthropic/claude-3.5-haiku", "meta-llama/llama-3.1-8b-instruct")] * 5
    )
    assert report.summary["total"]["ok"] == 5
    assert code_of(report, job) == ExitCode.BUDGET
    assert "full prices" in report.summary["stop_message"]
    assert report.summary["spent_usd"] <= 0.0004


def test_a_batch_reserves_its_full_price_worst_case(tmp_path: Path, batch_sim: Simulator, clock: FakeClock) -> None:
    import asyncio

    # batch-quickstart.mdx: "typically" 50% of per-token prices, so a batch may be billed in
    # full: each batch reserves the sync worst case (break-14b C9), as `plan` prints it.
    path = write_job(tmp_path, THREE_MODELS)
    code, out, _ = call_cli("plan", path, "--simulate")
    assert code == 0
    planned = {line.split()[0]: float(line.split()[2]) for line in out.splitlines() if line.startswith("openai/")}
    batch_sim.config.batch_price_share = 1.0
    report = asyncio.run(run(batch_job(path, budget_usd=1.0), batch_sim, tmp_path / "r.jsonl", clock))
    state = BatchState.load(tmp_path / "r.jsonl", "nightly", load_job(path).fingerprint)
    reserved = {e.model: e.reserved_usd for e in state.entries}
    assert reserved["openai/gpt-4o-mini"] == pytest.approx(planned["openai/gpt-4o-mini"], abs=1e-6)  # plan: 6 places
    estimate = report.summary["estimate_usd"]
    assert estimate is not None and 0 < batch_sim.batches.stats.billed_usd <= estimate


async def test_per_item_errors_are_classified_like_sync_errors(
    tmp_path: Path, batch_sim: Simulator, clock: FakeClock
) -> None:
    batch_sim.config.batch_item_error_rate = 0.4
    # Which items fail is drawn from the batch ids, which come from a random tag per simulator:
    # fixed here, so the draw is the same every time (one run in ~2,000 drew no error at all).
    batch_sim.run_tag = "0badbeef"
    job = batch_job(write_job(tmp_path, THREE_MODELS))
    out = tmp_path / "r.jsonl"
    await run(job, batch_sim, out, clock)
    errors = [r for r in read_rows(out) if r["status"] == "error"]
    assert errors and all(
        r["reason"] == "upstream_error" and r["retryable"] and r["error"]["http_status"] == 502 for r in errors
    )
    assert len(errors) + sum(1 for r in read_rows(out) if r["status"] == "ok") == 15


async def test_result_bodies_without_usage_share_the_batch_cost(
    tmp_path: Path, batch_sim: Simulator, clock: FakeClock
) -> None:
    batch_sim.config.batch_item_usage = False  # as in the quickstart's example result
    job = batch_job(write_job(tmp_path, THREE_MODELS))
    out = tmp_path / "r.jsonl"
    report = await run(job, batch_sim, out, clock)
    rows = read_rows(out)
    assert all(r["status"] == "ok" and r["cost"] > 0 for r in rows)
    assert sum(r["cost"] for r in rows) == pytest.approx(batch_sim.batches.stats.billed_usd, abs=1e-8)
    assert report.summary["spent_usd"] == pytest.approx(batch_sim.batches.stats.billed_usd, abs=1e-8)


async def test_failed_and_cancelled_batches(tmp_path: Path, batch_sim: Simulator, clock: FakeClock) -> None:
    batch_sim.config.batch_outcome = "failed"
    job = batch_job(write_job(tmp_path, THREE_MODELS))
    await run(job, batch_sim, tmp_path / "a.jsonl", clock)
    assert {(r["status"], r["reason"], r["retryable"]) for r in read_rows(tmp_path / "a.jsonl")} == {
        ("error", "batch_failed", False)
    }
    batch_sim.config.batch_outcome = "cancelled"
    report = await run(job, batch_sim, tmp_path / "b.jsonl", clock)
    assert {(r["status"], r["reason"]) for r in read_rows(tmp_path / "b.jsonl")} == {("skipped", "batch_cancelled")}
    assert report.summary["complete"] is False


MULTIMODAL = """
name: pictures
models: [openai/gpt-4o-mini]
prompts:
  - id: look
    messages:
      - role: user
        content:
          - {type: text, text: "What is in this picture?"}
          - {type: image_url, image_url: {url: "https://example.org/cat.png"}}
  - id: plain
    text: "Capital of France?"
run: {mode: batch, batch_multimodal: MODE}
"""


async def test_rows_with_image_parts_run_in_sync_mode(tmp_path: Path, batch_sim: Simulator, clock: FakeClock) -> None:
    job = load_job(write_job(tmp_path, MULTIMODAL.replace("MODE", "sync")))
    report = await run(job, batch_sim, tmp_path / "r.jsonl", clock)
    assert batch_sim.stats.chat_requests == 1 and batch_sim.batches.stats.submitted == 1
    (batch,) = batch_sim.batches.batches.values()
    assert [i["body"]["messages"][0]["content"] for i in batch.requests] == ["Capital of France?"]
    assert report.summary["total"]["ok"] == 2 and report.summary["batches"]["sync_rows"] == 1


def test_a_threshold_only_latency_checks_could_meet_is_refused_before_a_batch_is_sent(tmp_path: Path) -> None:
    # A batch row has no latency: a threshold over rows checked only by max_latency_ms was met
    # by none, and the run paid for every row before it exited 1, "could not be checked".
    timed = MULTIMODAL.replace("MODE", "sync").replace(
        "  - id: plain\n", "    checks: [{max_latency_ms: 9000}]\n  - id: plain\n"
    )
    timed = timed.replace(
        '    text: "Capital of France?"\n', '    text: "Capital of France?"\n    checks: [{max_latency_ms: 9000}]\n'
    )
    gates = {
        "{prompts: {plain: 0.5}}": "run.pass_threshold.prompts.plain: in batch mode it could never be checked",
        "{models: {openai/gpt-4o-mini: 0.5}}": None,  # the picture's row goes in sync mode: timed
        "{prompts: {look: 0.5}}": None,
        "0.5": None,
    }
    for gate, refused in gates.items():
        job = load_job(write_job(tmp_path, timed.replace("batch_multimodal: sync", f"pass_threshold: {gate}")))
        said = latency_only_threshold(job, job.run)
        assert (said is None) if refused is None else (said is not None and said.startswith(refused)), (gate, said)
    # Another check on the prompt's rows lets the batch meet it.
    other = timed.replace("{max_latency_ms: 9000}", "{max_latency_ms: 9000}, {contains: Paris}")
    job = load_job(
        write_job(tmp_path, other.replace("batch_multimodal: sync", "pass_threshold: {prompts: {plain: 0.5}}"))
    )
    assert latency_only_threshold(job, job.run) is None
    # The command refuses it before anything is sent, as it applies thresholds; not under
    # --no-thresholds (out-148 F3), nor in sync mode.
    path = write_job(tmp_path, timed.replace("batch_multimodal: sync", "pass_threshold: {prompts: {plain: 0.5}}"))
    out, quick = (
        tmp_path / "r.jsonl",
        [f"--sim=batch_{phase}_s=0" for phase in ("validating", "in_progress", "finalizing")],
    )
    code, _, err = call_cli(path, "--simulate", *quick, "-o", out, "-q")
    assert code == ExitCode.USAGE and "prompts.plain: in batch mode it could never be checked" in err, err
    assert not out.exists()
    for other_way in (["--no-thresholds"], ["--mode", "sync"]):
        code, _, err = call_cli(path, "--simulate", *quick, "-o", tmp_path / f"{other_way[-1]}.jsonl", "-q", *other_way)
        assert "could never be checked" not in err, err  # (the picture's price is its own refusal here)


def test_rows_with_image_parts_are_refused_at_validate(tmp_path: Path) -> None:
    path = write_job(tmp_path, MULTIMODAL.replace("MODE", "refuse"))
    code, _, err = call_cli("validate", path)
    assert code == ExitCode.USAGE
    assert err.strip() == (
        f"batchrun: {path}:9:13: at $.prompts[0].messages[0].content[1] a image_url part: the Batch API is text-only "
        "(run.batch_multimodal: refuse)"
    )


def test_non_text_output_is_refused_at_validate_where_it_is_asked_for(tmp_path: Path) -> None:
    # break32 m2: `modalities: [image, text]` passed validate, then the run said "non-text parts".
    text = MULTIMODAL.replace("MODE", "refuse").replace(
        '          - {type: image_url, image_url: {url: "https://example.org/cat.png"}}\n', ""
    )
    path = write_job(
        tmp_path,
        text.replace('    text: "Capital of France?"', "    text: Draw\n    params: {modalities: [image, text]}"),
    )
    code, _, err = call_cli("validate", path)
    assert code == ExitCode.USAGE and err.count("\n") == 1, err
    assert "at $.prompts[1].params.modalities modalities asks for non-text output: the Batch API is text-only" in err


def test_plan_shows_sync_and_batch_cost_side_by_side(tmp_path: Path) -> None:
    code, out, _ = call_cli("plan", example_job(tmp_path), "--simulate", "--mode", "batch")
    assert code == 0
    header, *rows = [line for line in out.splitlines() if "worst case $" in line or line.startswith("TOTAL")]
    assert "batch typ. $" in header
    (total,) = rows
    sync_total, batch_total = (float(x) for x in total.split()[2:4])
    assert batch_total == pytest.approx(sync_total / 2, rel=1e-3)
    assert "batch mode" in out and "the checks below use, the full worst case" in out


def test_batches_cancel_says_when_the_endpoint_has_no_cancel(
    tmp_path: Path, batch_sim: Simulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    job = batch_job(write_job(tmp_path, THREE_MODELS), deadline_s=60)
    out = tmp_path / "r.jsonl"
    asyncio.run(run(job, batch_sim, out, clock))
    monkeypatch.setenv("OPENROUTER_API_KEY", FAKE_KEY)
    code, _, err = call_cli("batches", "cancel", out, "--base-url", batch_sim.base_url)
    assert code == ExitCode.USAGE and "documents none" in err and FAKE_KEY not in err
    assert batch_sim.batches.stats.cancels == 0


def test_batches_cancel_and_the_next_run_collects_the_cancelled_rows_as_skipped(
    tmp_path: Path, slow_batches: SimConfig, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    slow_batches.batch_cancel_api = True
    simulator = Simulator(slow_batches)
    simulator.clock = clock.time
    with simulator.serve_in_thread():
        job = batch_job(write_job(tmp_path, THREE_MODELS), deadline_s=60)
        out = tmp_path / "r.jsonl"
        asyncio.run(run(job, simulator, out, clock))
        monkeypatch.setenv("OPENROUTER_API_KEY", FAKE_KEY)
        code, text, _ = call_cli("batches", "cancel", out, "--base-url", simulator.base_url)
        assert code == 0 and text.count("cancelling") == 3 and simulator.batches.stats.cancels == 3
        clock.now += 120
        # out-145 F4: cancelled again once ended (the API's 409) was "the endpoint failed", exit 1.
        code, text, err = call_cli("batches", "cancel", out, "--base-url", simulator.base_url)
        assert (code, err) == (0, "") and text.count("has ended already; the next run collects it") == 3, text
        report = asyncio.run(run(job, simulator, out, clock, resume=True))
        assert report.summary["total"]["skipped"] == 15
        assert {r["reason"] for r in read_rows(out)} == {"batch_cancelled"}
        assert "cancelled" in call_cli("batches", "list", out)[1]


async def test_batch_mode_answers_from_the_cache_and_stores_what_it_collects(
    tmp_path: Path, batch_sim: Simulator, clock: FakeClock
) -> None:
    cache = {"dir": str(tmp_path / "cache")}
    job = batch_job(write_job(tmp_path, THREE_MODELS), cache=cache)
    first = await run(job, batch_sim, tmp_path / "a.jsonl", clock)
    assert first.summary["cache"] == {"hits": 0, "misses": 15, "saved_usd": 0.0}
    assert batch_sim.batches.stats.submitted == 3
    second = await run(job, batch_sim, tmp_path / "b.jsonl", clock)
    assert batch_sim.batches.stats.submitted == 3 and batch_sim.stats.chat_requests == 0  # nothing sent
    assert second.summary["cache"]["hits"] == 15 and second.summary["complete"] is True
    before, after = read_rows(tmp_path / "a.jsonl"), read_rows(tmp_path / "b.jsonl")
    assert {r["id"]: (r["content"], r.get("passed")) for r in before} == {
        r["id"]: (r["content"], r.get("passed")) for r in after
    }
    assert all(r["cached"] and r["cost"] == 0 for r in after)


LATENCY_CHECKED = THREE_MODELS.replace(
    'checks: [{contains: "{{expect}}"}]', 'checks: [{contains: "{{expect}}"}, {max_latency_ms: 60000}]'
)


async def test_a_threshold_over_rows_batch_mode_leaves_without_a_check_is_not_passed(
    tmp_path: Path, batch_sim: Simulator, clock: FakeClock
) -> None:
    # out-126 F1: a prompt checked by max_latency_ms alone, which batch mode leaves out, and a
    # threshold of its own: exit 0, nothing said, where the same job in sync mode failed it.
    text = THREE_MODELS.replace(
        "vars: [{a: 1}, {a: 2}]", "vars: [{a: 1}, {a: 2}]\n    checks: [{max_latency_ms: 1}]"
    ).replace("max_error_rate: 0.5}", "max_error_rate: 0.5, pass_threshold: {prompts: {sum: 0.9}}}")
    # Validate takes it (out-138 F3: --mode may override run.mode); then it was exit 1, "could not
    # be checked", with every row paid for. The command refuses it before a batch is sent; a
    # library caller's own verdict (or `report --job`) says so of what was run.
    job = batch_job(write_job(tmp_path, text))
    said = latency_only_threshold(job, job.run)
    assert said is not None and said.startswith("run.pass_threshold.prompts.sum: in batch mode it could never be")
    report = await run(job, batch_sim, tmp_path / "r.jsonl", clock)
    code, reasons = decide(report.summary, job.run)
    assert code == ExitCode.ERRORS and report.summary["prompts"]["sum"]["checked"] == 0
    assert "prompt sum: its threshold could not be checked: none of its 6 row(s) has a check" in reasons
    # In sync mode the same rows are checked, and fail the threshold (1 ms), exit 3.
    report = await run(replace(job, run=replace(job.run, mode="sync")), batch_sim, tmp_path / "s.jsonl", clock)
    code, reasons = decide(report.summary, job.run)
    assert code == ExitCode.QUALITY and report.summary["prompts"]["sum"]["checked"] == 6, reasons


async def test_a_batch_answer_is_a_sync_hit_only_where_every_check_can_be_graded(
    tmp_path: Path, batch_sim: Simulator, clock: FakeClock
) -> None:
    """An answer collected in batch mode has no latency: a sync row with a latency check
    cannot be graded on it as on a fresh answer, so it is asked again; the other rows are
    hits with every check run."""
    job = batch_job(write_job(tmp_path, LATENCY_CHECKED), cache={"dir": str(tmp_path / "cache")})
    await run(job, batch_sim, tmp_path / "batch.jsonl", clock)
    batched = {r["id"]: r for r in read_rows(tmp_path / "batch.jsonl")}
    sync = replace(job, run=replace(job.run, mode="sync"))
    report = await run(sync, batch_sim, tmp_path / "sync.jsonl", clock)
    rows = {r["id"]: r for r in read_rows(tmp_path / "sync.jsonl")}
    checked = {i for i, r in rows.items() if r["prompt_id"] == "capital"}
    assert len(checked) == 9 and batch_sim.stats.chat_requests == 9  # exactly the latency-checked rows
    for row_id, row in rows.items():
        assert row["cached"] is (row_id not in checked)
        if row_id in checked:
            assert [c["name"] for c in row["checks"]] == ["contains", "max_latency_ms"]
            assert row["passed"] is True and row["latency_ms"] is not None
        else:
            assert (row["content"], row.get("checks")) == (batched[row_id]["content"], batched[row_id].get("checks"))
    assert report.summary["cache"]["hits"] == 6
    # A batch-mode run grades no latency: every row is a hit there.
    await run(job, batch_sim, tmp_path / "batch2.jsonl", clock)
    assert all(r["cached"] for r in read_rows(tmp_path / "batch2.jsonl"))


async def test_a_batch_its_endpoint_does_not_know_is_lost_and_another_endpoints_404_leaves_it_open(
    tmp_path: Path, batch_sim: Simulator, clock: FakeClock
) -> None:
    job = batch_job(write_job(tmp_path, THREE_MODELS), deadline_s=60)
    out = tmp_path / "r.jsonl"
    await run(job, batch_sim, out, clock)
    # Another server has never seen them either; but they are the first one's (out-185 F5): its
    # 404s leave them open, said, and --retry-errors there sends none of their rows again.
    other = Simulator(SimConfig())
    job = replace(job, run=replace(job.run, deadline_s=600))  # a 404 is believed at the third poll
    notices: list[str] = []
    with other.serve_in_thread():
        options = RunOptions(api_key=FAKE_KEY, base_url=other.base_url, output=out, clock=clock, resume=True)
        report = await run_job(job, replace(options, retry_errors=True), notice=notices.append)
        assert other.batches.stats.submitted == 0
    assert code_of(report, job) == ExitCode.SUBMITTED and read_rows(out) == []
    assert report.summary["stop_message"].endswith("3 submitted to another endpoint; collect them with --resume")
    said = [n for n in notices if f"this run's endpoint {other.base_url} does not know it (404); left open" in n]
    assert len(said) == 3 and f"collect it with --base-url {batch_sim.base_url}" in said[0], notices
    assert [e.state for e in BatchState.read(out).entries] == ["submitted"] * 3
    clock.now += 3600  # ended: collected where they were submitted, none sent again
    report = await run(job, batch_sim, out, clock, resume=True)
    assert code_of(report, job) == ExitCode.OK and batch_sim.batches.stats.submitted == 3
    assert len(read_rows(out)) == 15 and {r["status"] for r in read_rows(out)} == {"ok"}
    # At the endpoint they were submitted to, a batch it no longer knows (past the 30-day retention) is lost.
    out = tmp_path / "again.jsonl"
    await run(job, batch_sim, out, clock)
    batch_sim.batches.batches.clear()
    report = await run(job, batch_sim, out, clock, resume=True)
    rows = read_rows(out)
    assert {(r["status"], r["reason"], r["retryable"]) for r in rows} == {("error", "batch_not_found", True)}
    assert report.summary["complete"] is True and code_of(report, job) == ExitCode.ERRORS
    assert {e.status for e in BatchState.read(out).entries} == {"lost"}


class InterruptingClock(FakeClock):
    """SIGTERM arrives while the run waits for its first poll."""

    def __init__(self, control: RunControl) -> None:
        super().__init__()
        self.control = control

    async def sleep(self, seconds: float) -> None:
        self.control.stop()
        await super().sleep(seconds)


async def test_sigterm_while_polling_leaves_the_batches_to_collect_later(
    tmp_path: Path, slow_batches: SimConfig
) -> None:
    control = RunControl()
    clock = InterruptingClock(control)
    simulator = Simulator(slow_batches)
    simulator.clock = clock.time
    job = batch_job(write_job(tmp_path, THREE_MODELS))  # no deadline: it would wait for the batches
    out = tmp_path / "r.jsonl"
    with simulator.serve_in_thread():
        report = await run_job(
            job, RunOptions(api_key=FAKE_KEY, base_url=simulator.base_url, output=out, clock=clock), control
        )
        assert code_of(report, job) == ExitCode.INTERRUPTED
        assert clock.sleeps == [60] and out.read_text() == ""  # one poll wait, not the hour the batches take
        assert [e.state for e in BatchState.read(out).entries] == ["submitted"] * 3
        clock.now += 7200
        again = await run(job, simulator, out, FakeClock(start=clock.time()), resume=True)
        assert again.summary["total"]["ok"] == 15 and simulator.batches.stats.submitted == 3


class StopAtPoll(httpx.AsyncBaseTransport):
    """The run's own transport, on which SIGTERM comes as a batch's poll goes out."""

    def __init__(self, control: RunControl) -> None:
        self.inner = default_transport(8)
        self.control = control

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and "/batches/" in request.url.path:
            self.control.stop()
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_sigterm_while_a_poll_is_out_ends_the_run_without_another_wait(
    tmp_path: Path, slow_batches: SimConfig
) -> None:
    # verify64 F1: a SIGTERM while a poll was in flight waited a whole batch_poll_s before the run
    # ended: 62 s after the signal at the default 60, 152 s at batch_poll_s: 150.
    control = RunControl()
    clock = FakeClock()
    simulator = Simulator(slow_batches)
    simulator.clock = clock.time
    job = batch_job(write_job(tmp_path, THREE_MODELS))
    options = RunOptions(FAKE_KEY, simulator.base_url, tmp_path / "r.jsonl", transport=StopAtPoll(control), clock=clock)
    with simulator.serve_in_thread():
        options.base_url = simulator.base_url
        report = await run_job(job, options, control)
    assert code_of(report, job) == ExitCode.INTERRUPTED
    assert clock.sleeps == []  # polled as the batches were submitted; no wait after the signal (was [60])


def test_an_unreadable_batch_record_is_a_one_line_error_and_is_left_alone(tmp_path: Path) -> None:
    job = write_job(tmp_path, THREE_MODELS)
    out = tmp_path / "r.jsonl"
    for text, said in (("{not json", "is unreadable (Expecting"), ("", "is empty")):  # out-176 F4: empty
        state_path(out).write_text(text)
        code, _, err = call_cli(job, "--simulate", "-o", out, "--resume")
        assert code == ExitCode.USAGE
        assert err.startswith(f"batchrun: {state_path(out)}: the batch record {said}") and err.count("\n") == 1
        assert "restore it, or move it away once none is open" in err
        assert state_path(out).read_text() == text
    # out-176 F4: `batches list` of a file not there asked whether it was written in batch mode.
    code, _, err = call_cli("batches", "list", tmp_path / "none.jsonl")
    assert code == ExitCode.USAGE and err == f"batchrun: {tmp_path / 'none.jsonl'}: no such results file\n", err


async def test_report_job_regrades_batch_rows_without_latency_checks(
    tmp_path: Path, batch_sim: Simulator, clock: FakeClock
) -> None:
    path = example_job(tmp_path)
    await run(batch_job(path), batch_sim, tmp_path / "batch.jsonl", clock)
    code, out, _ = call_cli("report", tmp_path / "batch.jsonl", "--job", path, "--json")
    summary = json.loads(out)
    assert summary["total"]["ok"] == 105 and summary["total"]["pass_rate"] > 0.8
    assert code == ExitCode.OK


async def test_the_simulated_batch_api_calls_tools_as_a_sync_answer_does(
    tmp_path: Path, batch_sim: Simulator, clock: FakeClock
) -> None:
    # verify21 V7: batches never answered with a tool call, so a tool job simulated in batch
    # mode read as a regression that was the simulator's. The fake clock drives the polling.
    graded = tmp_path / "graded.yaml"
    shutil.copy(ROOT / "jobs" / "graded.yaml", graded)
    out = tmp_path / "b.jsonl"
    await run(batch_job(graded), batch_sim, out, clock)
    tool_rows = [r for r in read_rows(out) if r["prompt_id"] == "weather-tool"]
    assert tool_rows and all(r["tool_calls"] and r["finish_reason"] == "tool_calls" for r in tool_rows)
    assert all(r["batch_id"] and r["passed"] for r in tool_rows)


def test_simulate_polls_its_batches_often_and_refuses_batches_of_a_simulator_that_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break27 m11: polled every 60 s, `--simulate --mode batch` took minutes for batches the
    # simulator finishes in ~4 s; and a resume with a fresh simulator polled batches it never
    # knew until three 404s in a row ended them.
    job = write_job(tmp_path, SMALL_JOB)
    out = tmp_path / "out.jsonl"
    started = time.monotonic()
    # Batches of about a second (the simulator's default is 4 s): still done by the second poll
    # only if polls come every second, not every 60 s.
    quick = [f"--sim=batch_{phase}_s=0.3" for phase in ("validating", "in_progress", "finalizing")]
    code, _, err = call_cli(job, "--simulate", *quick, "--mode", "batch", "-o", out, "-q")
    assert code == ExitCode.OK and len(read_rows(out)) == 20, err
    assert time.monotonic() - started < 45  # a bound, not a measure: the first poll came at 60 s
    cut = tmp_path / "cut.jsonl"
    # Batches that run a minute, cut by a deadline that comes at the first pause before a poll.
    deadline = deadline_at_first_wait(monkeypatch)
    code, _, err = call_cli(
        job, "--simulate", "--sim", "batch_in_progress_s=60", "--mode", "batch", "-o", cut, "-q", "--deadline", deadline
    )
    assert code == ExitCode.SUBMITTED, err
    before = {p.name: p.read_bytes() for p in tmp_path.glob("cut.*")}
    code, out_text, err = call_cli(job, "--simulate", "--mode", "batch", "-o", cut, "-q", "--resume")
    assert code == ExitCode.USAGE and out_text == "" and len(err.strip().splitlines()) == 1
    assert "lists batches an earlier run submitted to its own simulator, which is gone" in err
    assert {p.name: p.read_bytes() for p in tmp_path.glob("cut.*")} == before  # nothing written or sent


async def test_a_key_lost_at_one_collection_is_not_read_again_at_each_next_one(
    tmp_path: Path, batch_sim: Simulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # verify45 N3: once /key failed after a collection, every later collection read it again,
    # each read with its retries: 42 failed reads, a 5 s run took 61 s.
    from batchrun import OpenRouterClient, Transient

    reads: list[bool] = []
    answer = OpenRouterClient.key_info

    async def key_info(self: OpenRouterClient) -> Any:
        down = len([r for r in reads if r]) > 0 or len(reads) >= 2  # the start's read, then one more
        reads.append(down)
        if down:
            raise Transient("server_error", "/key: down", 500)
        return await answer(self)

    monkeypatch.setattr(OpenRouterClient, "key_info", key_info)
    job = batch_job(write_job(tmp_path, THREE_MODELS), budget_usd=1.0, max_attempts=2)
    report = await run(job, batch_sim, tmp_path / "o.jsonl", clock)
    assert report.summary["batches"]["collected"] == 3 and report.summary["total"]["ok"] > 0
    # Lost at one read (its two attempts), then read once more at the end of the run only.
    assert reads.count(True) <= 2 * 2, reads
