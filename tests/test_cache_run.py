"""The response cache in real runs: the CLI against the simulator on loopback, requests
counted where they arrive (the simulator), never inferred from our own records."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import batchrun._cache
from batchrun import ExitCode, RunOptions, Shard, load_job, matrix_requests, run_job
from batchrun._cache import FILE_NAME, cache_files
from batchrun._cache_session import FLUSH_EVERY
from batchrun._job import Job
from batchrun._results import final_records
from batchrun._run_control import RunControl
from batchrun.simulator import Simulator

from .conftest import (
    BIG_JOB,
    FAKE_KEY,
    SMALL_JOB,
    FakeClock,
    call_cli,
    child_env,
    cli,
    judged_small_job,
    read_rows,
    start,
    wait_for_lines,
    write_job,
)

ANSWER_FIELDS = ("content", "finish_reason", "response_model", "provider", "generation_id", "checks", "passed", "score")


pytestmark = pytest.mark.usefixtures("api_key_env")


def run(job: Path, sim: Simulator, out: Path, cache: Path, *extra: str) -> tuple[int, str, str]:
    return call_cli(job, "--base-url", sim.base_url, "-o", out, f"--cache={cache}", *extra)


def by_id(path: Path) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in final_records(path)}


def test_a_second_identical_run_sends_nothing_and_reproduces_every_row(tmp_path: Path, sim: Simulator) -> None:
    job, cache = write_job(tmp_path, SMALL_JOB), tmp_path / "cache"
    code, first_text, _ = run(job, sim, tmp_path / "a.jsonl", cache)
    assert code == 0 and sim.stats.chat_requests == 20
    assert "cache: 0 hit(s), 20 miss(es), $0.000000 saved" in first_text
    code, text, err = run(job, sim, tmp_path / "b.jsonl", cache)
    assert code == 0 and err == ""
    assert sim.stats.chat_requests == 20  # not one more request reached the server
    first, second = by_id(tmp_path / "a.jsonl"), by_id(tmp_path / "b.jsonl")
    assert first.keys() == second.keys() and len(second) == 20
    spent = sum(r["cost"] for r in first.values())
    for row_id, old in first.items():
        new = second[row_id]
        assert {f: new.get(f) for f in ANSWER_FIELDS} == {f: old.get(f) for f in ANSWER_FIELDS}
        assert (old["cached"], new["cached"], new["cost"], new["cost_saved"]) == (False, True, 0.0, old["cost"])
        assert new["generated_at"] == old["finished_at"] and new["attempts"] == 0
    assert any(r.get("passed") is not None for r in second.values())  # checks ran on the hits
    summary = json.loads((tmp_path / "b.summary.json").read_text())
    assert summary["cache"] == {"hits": 20, "misses": 0, "saved_usd": round(spent, 8)}
    assert summary["total"]["cost_usd"] == 0 and summary["spent_usd"] == 0
    assert f"cache: 20 hit(s), 0 miss(es), ${spent:.6f} saved" in text


MONEY = ("cost", "spent", "cost_held", "cost_known", "judge_cost", "judge_cost_known", "cost_saved")


def test_a_hit_and_a_fresh_row_have_one_shape(tmp_path: Path, sim: Simulator) -> None:
    # break56 F6: a hit had no service_tier (the README: null for a hit); a fully cached graded
    # row's judge_cost was the integer 0, a float everywhere else: typed readers split the column.
    job, cache = write_job(tmp_path, judged_small_job()), tmp_path / "cache"
    for out in ("a.jsonl", "b.jsonl"):
        assert run(job, sim, tmp_path / out, cache, "-q")[0] == ExitCode.OK
    fresh, hits = read_rows(tmp_path / "a.jsonl"), read_rows(tmp_path / "b.jsonl")
    of_hits = {r["id"]: set(r) - {"cost_saved", "cost_saved_status", "generated_at"} for r in hits}
    assert all(r["cached"] for r in hits) and {r["id"]: set(r) for r in fresh} == of_hits
    assert all(r["service_tier"] is None for r in hits)
    for row in fresh + hits:
        assert all(row.get(name) is None or type(row[name]) is float for name in MONEY), row


def test_report_job_grades_a_hit_on_what_its_answer_first_cost(tmp_path: Path, sim: Simulator) -> None:
    # break54 F3: re-graded on a hit's own cost of 0, every max_cost_usd passed: report --job, the
    # README's CI gate after a cached run, exited 0 with a green JUnit on a run that exited 3.
    text = SMALL_JOB.replace('checks: [{contains: "{{expect}}"}]', "checks: [{max_cost_usd: 0.0000000001}]")
    text = text.replace("run: {concurrency: 4,", "run: {pass_threshold: 0.9, concurrency: 4,")
    job, cache = write_job(tmp_path, text), tmp_path / "cache"
    assert run(job, sim, tmp_path / "a.jsonl", cache)[0] == ExitCode.QUALITY
    assert run(job, sim, tmp_path / "b.jsonl", cache)[0] == ExitCode.QUALITY
    assert all(r["cached"] for r in read_rows(tmp_path / "b.jsonl"))
    code, _, err = call_cli("report", tmp_path / "b.jsonl", "--job", job)
    assert code == ExitCode.QUALITY, err


def test_editing_one_prompt_resends_exactly_its_rows(tmp_path: Path, sim: Simulator) -> None:
    job, cache = write_job(tmp_path, SMALL_JOB), tmp_path / "cache"
    assert run(job, sim, tmp_path / "a.jsonl", cache)[0] == 0
    before = dict(sim.stats.by_row)
    write_job(tmp_path, SMALL_JOB.replace("What is {{a}} + 1?", "Compute {{a}} + 1."))
    assert run(job, sim, tmp_path / "b.jsonl", cache)[0] == 0
    resent = {row for row, count in sim.stats.by_row.items() if count > before.get(row, 0)}
    expected = {r.id for r in matrix_requests(load_job(job)) if r.prompt_id == "sum"}
    assert resent == expected and len(expected) == 8
    assert sim.stats.chat_requests == 28
    rows = by_id(tmp_path / "b.jsonl")
    assert {i for i, r in rows.items() if not r["cached"]} == expected


@pytest.mark.parametrize(
    "edit",
    [
        ("params: {max_tokens: 32}", "params: {max_tokens: 32, temperature: 0.9}"),  # temperature added
        ("params: {max_tokens: 32, seed: 1}", "params: {max_tokens: 32, seed: 2}"),  # seed changed
        ("params: {max_tokens: 32, temperature: 0}", "params: {max_tokens: 32, temperature: 0.0}"),  # 0 is not 0.0
    ],
)
def test_a_changed_temperature_or_seed_misses(tmp_path: Path, sim: Simulator, edit: tuple[str, str]) -> None:
    before, after = edit
    original = SMALL_JOB.replace("params: {max_tokens: 32}", before)
    job, cache = write_job(tmp_path, original), tmp_path / "cache"
    assert run(job, sim, tmp_path / "a.jsonl", cache)[0] == 0
    write_job(tmp_path, original.replace(before, after))
    code, text, _ = run(job, sim, tmp_path / "b.jsonl", cache)
    assert code == 0 and sim.stats.chat_requests == 40
    assert "cache: 0 hit(s), 20 miss(es)" in text


def test_repeats_are_cached_per_index(tmp_path: Path, sim: Simulator) -> None:
    once = SMALL_JOB.replace("repeat: 2", "repeat: 1")
    job, cache = write_job(tmp_path, once), tmp_path / "cache"
    assert run(job, sim, tmp_path / "a.jsonl", cache)[0] == 0 and sim.stats.chat_requests == 10
    write_job(tmp_path, SMALL_JOB)  # repeat: 2
    assert run(job, sim, tmp_path / "b.jsonl", cache)[0] == 0
    assert sim.stats.chat_requests == 20  # only repeat index 1 was sent
    rows = by_id(tmp_path / "b.jsonl")
    assert {r["repeat"] for r in rows.values() if r["cached"]} == {0}
    assert {r["repeat"] for r in rows.values() if not r["cached"]} == {1}
    assert run(job, sim, tmp_path / "c.jsonl", cache)[0] == 0 and sim.stats.chat_requests == 20
    third = by_id(tmp_path / "c.jsonl")
    generations = [r["generation_id"] for r in third.values()]
    assert len(set(generations)) == 20  # each repeat index kept its own answer


def test_two_models_never_share_an_entry(tmp_path: Path, sim: Simulator) -> None:
    one_model = SMALL_JOB.replace(", google/gemini-2.0-flash-001]", "]")
    job, cache = write_job(tmp_path, one_model), tmp_path / "cache"
    assert run(job, sim, tmp_path / "a.jsonl", cache)[0] == 0 and sim.stats.chat_requests == 10
    write_job(tmp_path, SMALL_JOB)
    assert run(job, sim, tmp_path / "b.jsonl", cache)[0] == 0
    assert sim.stats.chat_requests == 20  # every gemini row was sent
    rows = by_id(tmp_path / "b.jsonl")
    for row in rows.values():
        assert row["cached"] is (row["model"] == "openai/gpt-4o-mini")
        assert row["response_model"] == row["model"]
    with sqlite3.connect(cache / FILE_NAME) as db:
        stored = dict(db.execute("SELECT model, count(*) FROM entries GROUP BY model").fetchall())
    assert stored == {"openai/gpt-4o-mini": 10, "google/gemini-2.0-flash-001": 10}


def test_cache_explain_names_the_changed_field(tmp_path: Path, sim: Simulator) -> None:
    job, cache = write_job(tmp_path, SMALL_JOB), tmp_path / "cache"
    assert run(job, sim, tmp_path / "a.jsonl", cache)[0] == 0
    write_job(tmp_path, SMALL_JOB.replace("params: {max_tokens: 32}", "params: {max_tokens: 32, temperature: 0.7}"))
    code, text, _ = call_cli("cache", "explain", job, "--dir", cache, "--base-url", sim.base_url, "--prompt", "sum")
    assert code == 0
    lines = text.splitlines()
    assert len([line for line in lines if line.startswith("miss ")]) == 8
    assert lines.count("        param temperature: (unset) -> 0.7") == 8
    assert lines[-1] == "8 row(s): 0 hit(s), 8 miss(es) (8 changed, 0 expired, 0 not in the cache)"
    code, text, _ = call_cli("cache", "explain", job, "--dir", cache, "--prompt", "sum")  # another endpoint
    assert code == 0 and f'base URL: "{sim.base_url}" -> "https://openrouter.ai/api/v1"' in text
    code, _, err = call_cli("cache", "explain", job, "--dir", cache, "--prompt", "nope")
    assert code == 2 and "no row matches" in err


def test_hits_reserve_no_budget(tmp_path: Path, sim: Simulator) -> None:
    job, cache = write_job(tmp_path, SMALL_JOB), tmp_path / "cache"
    assert run(job, sim, tmp_path / "a.jsonl", cache)[0] == 0
    # Far below one request's worst case: without the cache this run stops for budget at once.
    code, _, _ = run(job, sim, tmp_path / "b.jsonl", cache, "--budget", "0.000001")
    assert code == 0 and sim.stats.chat_requests == 20
    assert all(r["status"] == "ok" and r["cached"] for r in final_records(tmp_path / "b.jsonl"))
    code, _, _ = call_cli(job, "--base-url", sim.base_url, "-o", tmp_path / "c.jsonl", "--budget", "0.000001")
    assert code == 5  # the same budget without the cache


def test_a_byok_hit_saves_what_its_answer_was_charged_with_the_providers_part(tmp_path: Path, sim: Simulator) -> None:
    # break63 F6: a BYOK answer's `cost` is OpenRouter's fee; its hit said it saved that alone,
    # a 20th of what the row spent (`spent`: the fee and the provider's charge).
    sim.config.byok = True
    job, cache = write_job(tmp_path, SMALL_JOB), tmp_path / "cache"
    assert run(job, sim, tmp_path / "a.jsonl", cache)[0] == 0
    assert run(job, sim, tmp_path / "b.jsonl", cache)[0] == 0
    first, second = by_id(tmp_path / "a.jsonl"), by_id(tmp_path / "b.jsonl")
    assert all(r["is_byok"] and r["upstream_inference_cost"] > 0 for r in first.values())
    assert {i: r["cost_saved"] for i, r in second.items()} == pytest.approx({i: r["spent"] for i, r in first.items()})


@pytest.mark.parametrize("kind", ["regex", "judge cached", "judge not cached"])
def test_after_a_budget_stop_the_rows_the_cache_answers_are_answered(tmp_path: Path, sim: Simulator, kind: str) -> None:
    # break63 F1: a budget stop wrote every row after it `skipped: budget`, hits too, though they
    # cost nothing: which hits survived hung on the matrix's order, and a resume with the budget
    # used up answered none. verify66 2, 3: a hit's graders in the cache were not asked after the
    # stop, and hits graded off the loop (a regex) were cut at the stop's grace (here 0).
    text = SMALL_JOB if kind == "regex" else judged_small_job()
    job = write_job(tmp_path, text.replace('checks: [{contains: "{{expect}}"}]', 'checks: [{regex: "{{expect}}"}]'))
    cache = tmp_path / "cache"
    assert run(job, sim, tmp_path / "half.jsonl", cache, "--shard", "1/2")[0] == 0
    in_cache = {r["id"] for r in final_records(tmp_path / "half.jsonl")}
    if kind == "judge not cached":  # the answers are hits, their graders' requests (an edited rubric) are not
        job.write_text(job.read_text().replace("Names {{expect}}.", "Says {{expect}}."))
    sent = sim.stats.chat_requests
    code, _, _ = run(job, sim, tmp_path / "a.jsonl", cache, "--budget", "0.000001", "--grace", "0")
    rows = by_id(tmp_path / "a.jsonl")
    assert code == ExitCode.BUDGET and len(rows) == 20 and sim.stats.chat_requests == sent
    assert {i for i, r in rows.items() if r["status"] == "ok"} == in_cache
    assert all(rows[i]["cached"] for i in in_cache)
    assert {r["reason"] for i, r in rows.items() if i not in in_cache} == {"budget"}
    checked = [rows[i] for i in in_cache if rows[i].get("checks")]
    assert checked
    if kind == "judge not cached":  # its graders would need money: undecided, for a resume to grade
        assert all(r["passed"] is None and "budget" in r["checks"][0]["error"] for r in checked)
    else:
        assert all(r["passed"] is not None for r in checked)


async def test_hits_give_the_loop_a_turn_so_a_deadline_or_a_signal_after_a_budget_stop_ends_them(
    tmp_path: Path, sim: Simulator
) -> None:
    # verify66 4: answering hits never awaited: one worker drained the matrix, and the deadline
    # (or a SIGTERM) came once every hit was written (60,000 hits: a deadline of 3 s at 7.8 s).
    # verify66 5: a signal after a budget stop was ignored: every hit answered, exit 5, not 7.
    def cached_in(folder: str) -> Job:
        return load_job(write_job(tmp_path, BIG_JOB.replace("run: {", f"run: {{cache: {{dir: {tmp_path / folder}}}, ")))

    options = RunOptions(api_key=FAKE_KEY, base_url=sim.base_url, output=tmp_path / "all.jsonl", clock=FakeClock())
    job = cached_in("whole")
    await run_job(job, options)
    rows = len(read_rows(tmp_path / "all.jsonl"))
    timed = replace(job, run=replace(job.run, deadline_s=1.0))  # on the fake clock: at the timer's first turns
    report = await run_job(timed, replace(options, output=tmp_path / "deadline.jsonl"))
    deadline = read_rows(tmp_path / "deadline.jsonl")
    assert report.summary["stop"] == "deadline" and 0 < sum(r["status"] == "ok" for r in deadline) < rows
    assert {r["reason"] for r in deadline if r["status"] == "skipped"} == {"deadline"}

    job = cached_in("half")
    await run_job(job, replace(options, output=tmp_path / "half.jsonl", shard=Shard(1, 2)))
    hits = len(read_rows(tmp_path / "half.jsonl"))
    control, written = RunControl(), list[dict[str, Any]]()

    def signal_at_the_fifth_hit(record: dict[str, Any]) -> None:
        """A SIGTERM once five hits were written after the budget's stop."""
        if written or record.get("reason") == "budget":
            written.append(record)
        if sum(1 for r in written if r.get("cached")) == 5:
            control.stop()

    budget = replace(job, run=replace(job.run, budget_usd=1e-9))  # a budget stop at the first miss
    report = await run_job(
        budget, replace(options, output=tmp_path / "signal.jsonl"), control, on_record=signal_at_the_fifth_hit
    )
    answered = [r for r in read_rows(tmp_path / "signal.jsonl") if r["status"] == "ok"]
    assert written and report.summary["stop"] == "interrupted" and 5 <= len(answered) < hits


def test_diff_and_history_say_when_a_run_was_replayed_from_the_cache(tmp_path: Path, sim: Simulator) -> None:
    # break63 F7: a run read whole from the cache, its first run's own answers, showed "no
    # change" and a cost drop in `diff` and `history`, not a word of the replay.
    job, cache, folder = write_job(tmp_path, SMALL_JOB), tmp_path / "cache", tmp_path / "runs"
    for name in ("1", "2"):
        assert run(job, sim, folder / f"{name}.jsonl", cache)[0] == 0
    code, text, _ = call_cli("diff", folder / "1.jsonl", folder / "2.jsonl", "--json")
    assert json.loads(text)["rows"]["cached_after"] == 20 == json.loads(text)["rows"]["replayed"]
    said = call_cli("diff", folder / "1.jsonl", folder / "2.jsonl")[1]
    assert "20 row(s) of the second run were answered from the response cache, 20 of them the first run's own" in said
    code, text, _ = call_cli("history", folder)
    assert code == 0 and "20 of 20 row(s) answered from the response cache" in text
    # A shard's first run has no run of its kind before it: marked all the same (verify66 10).
    assert run(job, sim, folder / "3.jsonl", cache, "--shard", "1/2")[0] == 0
    shard = len(read_rows(folder / "3.jsonl"))
    history = json.loads(call_cli("history", folder, "--json")[1])
    assert [m["what"] for m in history["markers"] if m["file"].endswith("3.jsonl")] == [
        f"{shard} of {shard} row(s) answered from the response cache"
    ]


def test_an_empty_cache_mapping_is_the_cache_on_with_its_defaults(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break63 F3: `cache: {}` passed `validate` and turned the cache off: every run paid in full.
    job = write_job(tmp_path, SMALL_JOB.replace("run: {", "run: {cache: {}, "))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for name in ("a", "b"):
        code, text, _ = call_cli(job, "--base-url", sim.base_url, "-o", tmp_path / f"{name}.jsonl")
        assert code == 0 and "cache: " in text
    assert sim.stats.chat_requests == 20 and all(r["cached"] for r in read_rows(tmp_path / "b.jsonl"))
    assert (tmp_path / "xdg" / "batchrun").is_dir()


def test_plan_shows_hits_and_what_is_left_to_pay(tmp_path: Path, sim: Simulator) -> None:
    job, cache = write_job(tmp_path, SMALL_JOB), tmp_path / "cache"
    assert run(job, sim, tmp_path / "a.jsonl", cache)[0] == 0
    write_job(tmp_path, SMALL_JOB.replace("What is {{a}} + 1?", "Compute {{a}} + 1."))
    code, text, _ = call_cli("plan", job, "--base-url", sim.base_url, f"--cache={cache}")
    assert code == 0
    [total] = [line for line in text.splitlines() if line.startswith("TOTAL")]
    assert total.split()[1:3] == ["20", "12"]
    assert "cache: 12 row(s) answered from it for free" in text and "the other 8 would cost at most $" in text
    code, text, _ = call_cli("plan", job, "--base-url", sim.base_url)
    assert code == 0 and "cache" not in text  # off unless asked
    # A plan is no run of the cache's: `cache stats` lists the one run (break27 m12: and each plan).
    code, text, _ = call_cli("cache", "stats", "--dir", cache)
    assert code == 0 and text.count(" hit(s), ") == 1, text


def test_plan_counts_no_grader_request_whose_verdict_of_a_cached_answer_is_stored(
    tmp_path: Path, sim: Simulator
) -> None:
    # out-148 F4: `plan --cache` counted every grader request, cached or not, and exited 5 "no
    # grader request fits" for a job whose run sent nothing and exited 0.
    job, cache = write_job(tmp_path, judged_small_job()), tmp_path / "cache"
    assert run(job, sim, tmp_path / "a.jsonl", cache, "-q")[0] == ExitCode.OK
    tiny = ("--budget", "0.000001")
    code, text, err = call_cli("plan", job, "--base-url", sim.base_url, f"--cache={cache}", *tiny)
    assert code == ExitCode.OK and not any(line.startswith("judging:") for line in text.splitlines()), text + err
    chats = sim.stats.chat_requests
    assert run(job, sim, tmp_path / "b.jsonl", cache, "-q", *tiny)[0] == ExitCode.OK
    assert sim.stats.chat_requests == chats  # as planned: nothing sent
    # A rubric edited: its graders are due again, each priced with the cached answer it grades.
    write_job(tmp_path, judged_small_job().replace("judge: '", "judge: 'Strictly: "))
    code, text, err = call_cli("plan", job, "--base-url", sim.base_url, f"--cache={cache}", *tiny)
    judging = [line for line in text.splitlines() if line.startswith("judging:")]
    assert code == ExitCode.BUDGET and judging and "no request of" in err, text + err


def test_errors_empty_and_cut_answers_are_not_stored(tmp_path: Path, sim: Simulator) -> None:
    job, cache = write_job(tmp_path, SMALL_JOB.replace("max_tokens: 32", "max_tokens: 1")), tmp_path / "cache"
    sim.config.faults["400"] = 0.5
    run(job, sim, tmp_path / "a.jsonl", cache)
    first = by_id(tmp_path / "a.jsonl")
    assert {r["status"] for r in first.values()} == {"ok", "error"}
    cut = {i for i, r in first.items() if r["status"] == "ok" and r["finish_reason"] == "length"}
    assert cut  # max_tokens 1: the simulator cuts the longer answers
    sim.config.faults.clear()
    sent_before = dict(sim.stats.by_row)
    run(job, sim, tmp_path / "b.jsonl", cache)
    resent = {row for row, count in sim.stats.by_row.items() if count > sent_before.get(row, 0)}
    assert resent == {i for i, r in first.items() if r["status"] == "error"} | cut


def test_corrupt_cache_warns_and_runs_normally(tmp_path: Path, sim: Simulator) -> None:
    job, cache = write_job(tmp_path, SMALL_JOB), tmp_path / "cache"
    cache.mkdir()
    (cache / FILE_NAME).write_bytes(b"\x00garbage, not SQLite" * 500)
    code, _, err = run(job, sim, tmp_path / "a.jsonl", cache, "-q")
    assert code == 0 and sim.stats.chat_requests == 20
    assert err.startswith("batchrun: warning: response cache off for this run: ") and "not an SQLite database" in err
    assert len(err.splitlines()) == 1
    assert all("cached" not in r for r in read_rows(tmp_path / "a.jsonl"))  # as a run without a cache
    code, text, _ = call_cli("cache", "stats", "--dir", cache)
    assert code == 2
    # Not identified as batchrun's: `clear` does not delete it (test_cache_identity); by hand, then.
    code, text, _ = call_cli("cache", "clear", "--dir", cache)
    assert code == 2 and (cache / FILE_NAME).exists()
    (cache / FILE_NAME).unlink()
    assert run(job, sim, tmp_path / "b.jsonl", cache)[0] == 0 and (cache / FILE_NAME).exists()


def test_a_truncated_cache_file_warns_and_runs_normally(tmp_path: Path, sim: Simulator) -> None:
    job, cache = write_job(tmp_path, SMALL_JOB), tmp_path / "cache"
    assert run(job, sim, tmp_path / "a.jsonl", cache)[0] == 0
    data = (cache / FILE_NAME).read_bytes()
    for path in cache_files(cache)[1:]:
        path.unlink(missing_ok=True)
    (cache / FILE_NAME).write_bytes(data[:4096] + b"\xff" * (len(data) - 4096))  # pages past the first broken
    code, _, err = run(job, sim, tmp_path / "b.jsonl", cache, "-q")
    assert code == 0 and "warning: response cache off" in err
    assert sim.stats.chat_requests == 40 and len(list(final_records(tmp_path / "b.jsonl"))) == 20
    code, text, _ = call_cli("cache", "clear", "--dir", cache)  # ours by its header: clear removes it
    assert code == 0 and text.startswith("removed 1 cache file(s)")


def test_the_api_key_is_never_in_the_cache(tmp_path: Path, sim: Simulator) -> None:
    job, cache = write_job(tmp_path, SMALL_JOB), tmp_path / "cache"
    assert run(job, sim, tmp_path / "a.jsonl", cache)[0] == 0
    for path in cache_files(cache):
        if path.exists():
            assert FAKE_KEY.encode() not in path.read_bytes()
    # ... nor in the key: another key reads the same entries.
    code, _, _ = call_cli(job, "--base-url", sim.base_url, "-o", tmp_path / "b.jsonl", f"--cache={cache}")
    assert code == 0 and sim.stats.chat_requests == 20


def test_shards_share_one_cache(tmp_path: Path, sim: Simulator) -> None:
    job, cache = write_job(tmp_path, SMALL_JOB), tmp_path / "cache"
    for shard in (1, 2):
        assert run(job, sim, tmp_path / f"s{shard}.jsonl", cache, "--shard", f"{shard}/2")[0] == 0
    assert sim.stats.chat_requests == 20
    code, text, _ = run(job, sim, tmp_path / "all.jsonl", cache)
    assert code == 0 and sim.stats.chat_requests == 20 and "cache: 20 hit(s)" in text


def test_simulated_runs_share_entries_across_ports_not_across_settings(tmp_path: Path) -> None:
    job, cache = write_job(tmp_path, SMALL_JOB), tmp_path / "cache"
    for name in ("a", "b"):
        code, text, _ = call_cli(job, "--simulate", "-o", tmp_path / f"{name}.jsonl", f"--cache={cache}")
        assert code == 0
    assert "cache: 20 hit(s), 0 miss(es)" in text
    # break40 F7: a run with other --sim settings (answers always wrong) was replayed into the
    # next plain --simulate run, and its answers into it.
    wrong = ["--sim", "accuracy.openai/gpt-4o-mini=0", "--sim", "accuracy.google/gemini-2.0-flash-001=0"]
    for name in ("c", "d"):
        code, text, _ = call_cli(job, "--simulate", *wrong, "-o", tmp_path / f"{name}.jsonl", f"--cache={cache}")
    assert code == ExitCode.OK and "cache: 20 hit(s), 0 miss(es)" in text  # the same settings share
    assert all(r["passed"] is not True for r in read_rows(tmp_path / "c.jsonl") if r["prompt_id"] == "capital")
    code, text, _ = call_cli(job, "--simulate", "-o", tmp_path / "e.jsonl", f"--cache={cache}")
    assert code == ExitCode.OK and "cache: 20 hit(s), 0 miss(es)" in text
    assert all(r["passed"] for r in read_rows(tmp_path / "e.jsonl") if r["prompt_id"] == "capital")
    # break43 F3: `=0 =1` was taken as its last value, and must not share `=1 =0`'s entries; a key
    # given twice with two values is refused now, in either order, before the cache is opened.
    both = ("accuracy.openai/gpt-4o-mini=0", "accuracy.openai/gpt-4o-mini=1")
    for name, order in (("f", both), ("g", both[::-1])):
        sims = [arg for value in order for arg in ("--sim", value)]
        code, _, err = call_cli(job, "--simulate", *sims, "-o", tmp_path / f"{name}.jsonl", f"--cache={cache}")
        assert code == ExitCode.USAGE and "given twice" in err and not (tmp_path / f"{name}.jsonl").exists()
    sims = ["--sim", both[0]]  # settings of their own: none of c's entries is theirs
    code, text, _ = call_cli(job, "--simulate", *sims, "-o", tmp_path / "g.jsonl", f"--cache={cache}")
    assert code == ExitCode.OK and "cache: 20 hit(s)" not in text
    # break43 F8: `cache explain` takes the run's --sim settings, and finds its entries.
    code, text, _ = call_cli("cache", "explain", job, "--simulate", *sims, "--dir", cache)
    assert code == ExitCode.OK and "20 hit(s)" in text, text
    code, _, err = call_cli("cache", "explain", job, "--simulate", "--sim", "accuracy.nope/model=0", "--dir", cache)
    assert code == ExitCode.USAGE and "is not a model of the simulator" in err  # as a run says it
    mini = [
        r for r in read_rows(tmp_path / "g.jsonl") if r["model"] == "openai/gpt-4o-mini" and r["prompt_id"] == "capital"
    ]
    assert mini and all(r["passed"] is not True for r in mini)  # its own settings' answers, not f's
    # verify46 N6: `price.X` and `private.X` both set X's price, the later one holding; the name
    # is the settings in effect, so the two orders differ, and a setting left at its default
    # (seed=0) is the plain simulator's.
    prices = ("price.openai/gpt-4o-mini=1,2", "private.openai/gpt-4o-mini=100,200")
    settings: tuple[tuple[str, tuple[str, ...]], ...] = (("h", prices), ("i", prices[::-1]), ("j", ("seed=0",)))
    for name, given in settings:
        sims = [arg for value in given for arg in ("--sim", value)]
        code, text, _ = call_cli(job, "--simulate", *sims, "-o", tmp_path / f"{name}.jsonl", f"--cache={cache}")
        assert code == ExitCode.OK and ("cache: 20 hit(s), 0 miss(es)" in text) == (name == "j"), (name, text)


def test_kill_9_during_a_cached_run_then_resume_is_clean(tmp_path: Path, sim: Simulator) -> None:
    sim.config.latency_ms = 20
    job, cache = write_job(tmp_path, BIG_JOB), tmp_path / "cache"
    expected = {r.id for r in matrix_requests(load_job(job))}
    out = tmp_path / "k.jsonl"
    env = child_env(OPENROUTER_API_KEY=FAKE_KEY)
    process = start(job, "--base-url", sim.base_url, "-o", out, "-q", f"--cache={cache}", env=env)
    wait_for_lines(out, 40, process)
    process.kill()
    process.wait()
    # The rows written (a reader also shows the attempts in flight at the kill, as crashed).
    written = {r["id"] for r in final_records(out) if r["reason"] != "crashed"}
    sent_before = dict(sim.stats.by_row)
    assert 40 <= len(written) < len(expected)
    sim.config.latency_ms = 0  # the resume is not killed: no reason to wait
    resumed = cli(job, "--base-url", sim.base_url, "-o", out, "-q", "--resume", f"--cache={cache}", env=env)
    assert resumed.returncode == 0 and resumed.stderr == ""
    rows = list(final_records(out))
    assert sorted(r["id"] for r in rows) == sorted(expected) and all(r["status"] == "ok" for r in rows)
    for row_id in written:  # no request sent again for a row already written
        assert sim.stats.by_row[row_id] == sent_before[row_id]
    assert all(count <= 2 for count in sim.stats.by_row.values())  # at most the ones cut off in flight
    summary = json.loads((tmp_path / "k.summary.json").read_text())
    # The cache's figures count this run's rows: the ones the kill left to do.
    assert summary["cache"]["hits"] + summary["cache"]["misses"] == len(expected - written)
    with sqlite3.connect(cache / FILE_NAME) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        (entries,) = db.execute("SELECT count(*) FROM entries").fetchone()
    # The kill lost at most the batch in memory; everything committed is whole and is used.
    assert len(expected) - FLUSH_EVERY < entries <= len(expected)
    sent = sim.stats.chat_requests
    again = cli(job, "--base-url", sim.base_url, "-o", tmp_path / "again.jsonl", "-q", f"--cache={cache}", env=env)
    assert again.returncode == 0 and again.stderr == ""
    assert sim.stats.chat_requests - sent == len(expected) - entries


def test_streamed_answers_are_stored_whole_and_shared_with_plain_runs(tmp_path: Path, sim: Simulator) -> None:
    sim.config.stream_padding = 5
    job, cache = write_job(tmp_path, SMALL_JOB), tmp_path / "cache"
    sim.config.faults["midstream"] = 0.3  # these rows end in an error event: never stored
    run(job, sim, tmp_path / "a.jsonl", cache, "--stream", "--max-attempts", "1")
    first = by_id(tmp_path / "a.jsonl")
    broken = {i for i, r in first.items() if r["status"] == "error"}
    assert broken and {first[i]["reason"] for i in broken} == {"upstream_error"}
    assert all(r["ttft_ms"] is not None for r in first.values() if r["status"] == "ok")
    sim.config.faults.clear()
    sent = dict(sim.stats.by_row)
    code, _, _ = run(job, sim, tmp_path / "b.jsonl", cache)  # not streamed: the same request body
    assert code == 0
    assert {row for row, n in sim.stats.by_row.items() if n > sent.get(row, 0)} == broken
    second = by_id(tmp_path / "b.jsonl")
    for row_id, old in first.items():
        if row_id not in broken:  # the final streamed text, as the streamed record had it
            new = second[row_id]
            assert new["cached"] and new["content"] == old["content"] and new["content"].endswith("more")
            assert new["ttft_ms"] is None and new["latency_ms"] == old["latency_ms"]


def test_a_locked_cache_degrades_to_no_cache_with_a_warning(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batchrun._cache, "BUSY_TIMEOUT_S", 0.05)  # not the 2 s a run waits for a lock
    job, cache = write_job(tmp_path, SMALL_JOB), tmp_path / "cache"
    assert run(job, sim, tmp_path / "a.jsonl", cache)[0] == 0
    holder = sqlite3.connect(cache / FILE_NAME, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")  # another process holds the file past the busy timeout
        code, _, err = run(job, sim, tmp_path / "b.jsonl", cache, "-q")
    finally:
        holder.close()
    assert code == 0 and len(err.splitlines()) == 1
    assert err.startswith("batchrun: warning: response cache off") and "locked" in err
    rows = list(final_records(tmp_path / "b.jsonl"))
    assert len(rows) == 20 and all(r["status"] == "ok" for r in rows)
    assert sim.stats.chat_requests == 40  # a normal run: every row sent


def test_misread_cache_options_are_one_line_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = write_job(tmp_path, SMALL_JOB)
    hint = "is a file, not a cache folder: put --cache after JOB.yaml, or write --cache=DIR"
    argvs: list[list[str | Path]] = [["--cache", job, "--simulate"], ["run", "--cache", job, "--simulate"]]
    for argv in argvs:
        code, _, err = call_cli(*argv)
        assert code == 2 and err == f"batchrun: error: argument --cache: {job} {hint}\n"
    code, _, err = call_cli(job, "--simulate", "--cache", "--no-cache")
    assert code == 2 and err == "batchrun: error: argument --no-cache: not allowed with argument --cache\n"
    code, _, err = call_cli(job, "--simulate", f"--cache={job}")
    assert code == 2 and hint in err
    for action in (["stats"], ["clear"], ["prune", "--older-than", "1d"]):
        code, _, err = call_cli("cache", *action, "--dir", job)
        assert code == 2 and err == f"batchrun: {job}: not a folder (the cache is a folder holding {FILE_NAME})\n"
    assert job.read_text() == textwrap.dedent(SMALL_JOB).lstrip("\n")  # nothing touched it
    assert list(tmp_path.iterdir()) == [job]  # no results, no cache made
    # `--older-than 30` meant 30 seconds: a cache kept for 30 days emptied. A unit is required.
    cache = tmp_path / "cache"
    assert call_cli(job, "--simulate", "-o", tmp_path / "a.jsonl", f"--cache={cache}")[0] == 0
    code, _, err = call_cli("cache", "prune", "--older-than", "30", "--dir", cache)
    assert code == 2 and err == (
        "batchrun: --older-than: not a duration: '30' (give a unit: e.g. 90s, 15m, 12h, 30d, 2w)\n"
    )
    with sqlite3.connect(cache / FILE_NAME) as db:
        assert db.execute("SELECT count(*) FROM entries").fetchone() == (20,)


def test_a_bad_ttl_names_its_field(tmp_path: Path) -> None:
    for value, message in (
        ("1e300", "'1e300' reads as text in YAML 1.1 (an exponent needs a dot and a sign): write 1.0e+300"),
        ("0", "less than or equal to the minimum"),
    ):
        job = write_job(tmp_path, SMALL_JOB.replace("run: {", f"run: {{cache: {{ttl_s: {value}}}, "))
        code, _, err = call_cli("validate", job)
        assert code == 2 and "at $.run.cache.ttl_s " in err and message in err


def test_two_runs_at_once_share_one_cache(tmp_path: Path, sim: Simulator) -> None:
    job, cache = write_job(tmp_path, BIG_JOB), tmp_path / "cache"
    env = child_env(OPENROUTER_API_KEY=FAKE_KEY)
    argv = ("--base-url", sim.base_url, "-q", f"--cache={cache}")
    runs = [start(job, *argv, "-o", tmp_path / f"{name}.jsonl", env=env) for name in ("a", "b")]
    for process in runs:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0 and err == ""
    rows = len(list(matrix_requests(load_job(job))))
    with sqlite3.connect(cache / FILE_NAME) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*), count(DISTINCT key) FROM entries").fetchone() == (rows, rows)
        assert db.execute("SELECT count(*) FROM runs").fetchone() == (2,)
    code, text, _ = run(job, sim, tmp_path / "c.jsonl", cache)
    assert code == 0 and f"cache: {rows} hit(s), 0 miss(es)" in text


def test_the_summarys_cache_figures_count_this_runs_rows_only(tmp_path: Path, sim: Simulator) -> None:
    """Hits, misses and savings describe the requests of this run, never rows an earlier
    run left in a resumed file."""
    job, cache, out = (
        write_job(tmp_path, SMALL_JOB.replace("max_attempts: 8", "max_attempts: 1")),
        tmp_path / "c",
        tmp_path / "a.jsonl",
    )
    sim.config.faults["500"] = 0.4
    run(job, sim, out, cache)
    first = by_id(out)
    failed = {i for i, r in first.items() if r["status"] == "error"}
    assert failed and len(failed) < 20
    sim.config.faults.clear()
    code, text, _ = run(job, sim, out, cache, "--resume", "--retry-errors")
    assert code == 0 and sim.stats.chat_requests == 20 + len(failed)
    summary = json.loads((tmp_path / "a.summary.json").read_text())
    assert summary["cache"] == {"hits": 0, "misses": len(failed), "saved_usd": 0.0}
    assert f"cache: 0 hit(s), {len(failed)} miss(es), $0.000000 saved" in text
    code, text, _ = run(job, sim, out, cache, "--resume")  # complete: nothing is looked up or sent
    assert code == 0 and sim.stats.chat_requests == 20 + len(failed)
    assert "cache" not in json.loads((tmp_path / "a.summary.json").read_text()) and "cache:" not in text


def test_a_resume_counts_the_rows_it_regrades_as_neither_hits_nor_misses_and_a_hit_stays_one(
    tmp_path: Path, sim: Simulator
) -> None:
    # verify66 9: a resume said "40 miss(es)" for 36 rows sent (its re-graded rows counted),
    # and a re-graded hit was written again without `cached` or `cost_saved`.
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"a": i}) + "\n" for i in range(12)))
    text = """
name: rg
defaults: {params: {temperature: 0, max_tokens: 16}}
judge: {model: JUDGE}
models: [openai/gpt-4o-mini]
prompts: [{id: p, text: "Say {{a}}.", dataset: d.jsonl, checks: [{judge: "The answer is a number."}]}]
run: {concurrency: 1}
"""
    cache = tmp_path / "c"
    first = write_job(tmp_path, text.replace("JUDGE", "openai/gpt-4o-mini"), "first.yaml")
    assert run(first, sim, tmp_path / "a.jsonl", cache, "-q")[0] == ExitCode.OK
    # Another grader: the rows are hits, their graders are not, and a budget stop cuts them.
    job, out = (
        write_job(tmp_path, text.replace("JUDGE", "anthropic/claude-3.5-haiku"), "second.yaml"),
        tmp_path / "b.jsonl",
    )
    assert run(job, sim, out, cache, "-q", "--budget", "0.00002")[0] == ExitCode.BUDGET
    kept = {i: r for i, r in by_id(out).items() if r["status"] == "ok" and r["passed"] is None}
    assert kept and all(r["cached"] is True and r["cost_saved"] > 0 for r in kept.values())
    sent = {i for i, r in by_id(out).items() if r["status"] == "skipped"}
    code, printed, _ = run(job, sim, out, cache, "--resume", "--budget", "1")
    assert code == ExitCode.OK, printed
    final = by_id(out)
    for i, before in kept.items():  # graded now, still the hit it was
        assert final[i]["passed"] is not None
        assert (final[i]["cached"], final[i]["cost_saved"]) == (True, before["cost_saved"])
    summary = json.loads((tmp_path / "b.summary.json").read_text())
    hits = sum(final[i]["cached"] is True for i in sent)
    assert summary.get("cache", {}).get("hits", 0) + summary.get("cache", {}).get("misses", 0) == len(sent)
    assert summary.get("cache", {}).get("hits", 0) == hits


def test_a_cache_entry_holding_the_environments_key_is_scrubbed_under_simulate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # out-145 F2: hits were scrubbed of the client's key, the simulator's under --simulate: an
    # entry edited to hold $OPENROUTER_API_KEY put it whole into the results (the terminal hid it).
    monkeypatch.setenv("OPENROUTER_API_KEY", FAKE_KEY)
    job, cache, out = write_job(tmp_path, SMALL_JOB), tmp_path / "cache", tmp_path / "b.jsonl"
    assert call_cli(job, "--simulate", "-q", f"--cache={cache}", "-o", tmp_path / "a.jsonl")[0] == ExitCode.OK
    with sqlite3.connect(cache / FILE_NAME) as db:
        for rowid, answer in db.execute("SELECT rowid, answer FROM entries").fetchall():
            edited = json.loads(answer) | {"content": f"the key is {FAKE_KEY}", "provider": FAKE_KEY}
            db.execute("UPDATE entries SET answer = ? WHERE rowid = ?", (json.dumps(edited).encode(), rowid))
    code, _, err = call_cli(job, "--simulate", "-q", f"--cache={cache}", "-o", out)
    assert code in (ExitCode.OK, ExitCode.QUALITY, ExitCode.ERRORS), err
    rows = read_rows(out)
    assert len(rows) == 20 and all(row["cached"] for row in rows)
    assert FAKE_KEY not in out.read_text() and "the key is [key]" in out.read_text()


def test_a_grader_request_asked_a_moment_ago_in_the_same_run_is_a_hit(tmp_path: Path, sim: Simulator) -> None:
    # out-150: at concurrency 1 a run sent 30 grader requests for 4 bodies: what it stored waits
    # up to FLUSH_AFTER_S to be written, and a lookup asked only the file.
    job = write_job(tmp_path, judged_small_job(run="run: {concurrency: 1}"))
    code, _, err = run(job, sim, tmp_path / "a.jsonl", tmp_path / "cache", "-q")
    assert code == ExitCode.OK, err
    judged = [r for r in final_records(tmp_path / "a.jsonl") if r["prompt_id"] == "capital"]
    bodies = {(r["vars"]["country"], r["content"]) for r in judged}  # what a grader is asked: question, answer
    assert len(judged) == 12 and len(bodies) < len(judged)
    assert sim.stats.chat_requests == 20 + len(bodies)
    assert all(r["checks"][0]["pass"] is (r["content"] == r["vars"]["expect"]) for r in judged)


def test_a_grader_request_asked_while_the_same_one_is_in_flight_waits_for_its_verdict(
    tmp_path: Path, sim: Simulator
) -> None:
    # Every row at once, each answer a while in coming: rows giving the same answer to the same
    # question ask their grader the same thing at the same moment. Both were sent and paid; now
    # the second waits for the first's verdict and is a hit.
    sim.config.latency_ms = 20
    job = write_job(tmp_path, judged_small_job(run="run: {concurrency: 20}"))
    code, _, err = run(job, sim, tmp_path / "a.jsonl", tmp_path / "cache", "-q")
    assert code == ExitCode.OK, err
    judged = [r for r in final_records(tmp_path / "a.jsonl") if r["prompt_id"] == "capital"]
    bodies = {(r["vars"]["country"], r["content"]) for r in judged}
    assert len(judged) == 12 and len(bodies) < len(judged)
    assert sim.stats.chat_requests == 20 + len(bodies)
    verdicts = [r["checks"][0]["judge"]["graders"][0] for r in judged]
    assert sum(v.get("cached") is True for v in verdicts) == len(judged) - len(bodies)
    assert all(v["cost"] == 0 for v in verdicts if v.get("cached")) and all(
        v["cost"] > 0 for v in verdicts if not v.get("cached")
    )
    assert all(r["checks"][0]["pass"] is (r["content"] == r["vars"]["expect"]) for r in judged)


def test_a_grader_request_waiting_on_one_that_gave_no_verdict_is_sent_itself(tmp_path: Path, sim: Simulator) -> None:
    # The grader answers prose, never a verdict: nothing is stored, so each request that waited
    # for an identical one in flight asks the grader itself, and none waits for ever.
    sim.config.latency_ms = 20
    sim.config.judge_unparseable = 1.0
    job = write_job(tmp_path, judged_small_job(run="run: {concurrency: 20}"))
    code, _, err = run(job, sim, tmp_path / "a.jsonl", tmp_path / "cache", "-q")
    judged = [r for r in final_records(tmp_path / "a.jsonl") if r["prompt_id"] == "capital"]
    assert code == ExitCode.ERRORS, err
    assert len(judged) == 12 and sim.stats.chat_requests == 20 + 12
    verdicts = [r["checks"][0]["judge"]["graders"][0] for r in judged]
    assert all("error" in v and not v.get("cached") and v["cost"] > 0 for v in verdicts)
