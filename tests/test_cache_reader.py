"""The run that reads the cache decides what is a hit, not the run that stored it: its
response-size cap, its `store_length`, its checks (latency included); and a hit reproduces
the answer whole, tool calls included, with every check's verdict (issue 16, outsider's
findings 1, 2 and 6; 5 is in test_batch_mode)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchrun._results import final_records
from batchrun.simulator import Simulator

from .conftest import TOOLS_JOB, call_cli, read_rows, write_job
from .hostile import HostileServer, RawRequest, chat_payload, json_answer

pytestmark = pytest.mark.usefixtures("api_key_env")


def by_id(path: Path) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in final_records(path)}


BIG_JOB = """
name: big-answers
defaults:
  params: {max_tokens: 16}
models: [openai/gpt-4o-mini]
prompts:
  - id: essay
    text: "Write about {{topic}}."
    vars: [{topic: small}, {topic: large}]
    checks: [{contains: "word"}]
run: {concurrency: 1, timeout_s: 10, max_attempts: 1}
"""


def big_or_small(request: RawRequest) -> bytes:
    """A 20,000-byte answer for `large`, a short one for `small`."""
    words = "word " * (4000 if b"large" in request.body else 2)
    return json_answer(200, chat_payload(words.strip()))


def test_a_hit_obeys_the_reading_runs_response_size_cap(tmp_path: Path) -> None:
    job, cache = write_job(tmp_path, BIG_JOB), tmp_path / "cache"
    server = HostileServer(chat=big_or_small)
    with server.running():
        base = server.base_url

        def sent() -> int:
            return len([r for r in server.requests if r.path.endswith("/chat/completions")])

        assert call_cli(job, "--base-url", base, "-o", tmp_path / "a.jsonl", f"--cache={cache}")[0] == 0
        assert sent() == 2
        code, _, _ = call_cli(
            job, "--base-url", base, "-o", tmp_path / "b.jsonl", f"--cache={cache}", "--max-response-bytes", "10000"
        )
        assert sent() == 3  # the large answer was asked again: stored under the default cap, over this one
        rows = {r["vars"]["topic"]: r for r in read_rows(tmp_path / "b.jsonl")}
        assert (rows["small"]["status"], rows["small"]["cached"]) == ("ok", True)
        large = rows["large"]
        assert (large["status"], large["reason"], large["cached"]) == ("error", "response_too_large", False)
        assert code == 1  # as the same run without a cache would end
        # A cap it fits: a hit again; planning counts by the job's cap too.
        code, text, _ = call_cli("plan", job, "--base-url", base, f"--cache={cache}")
        assert "cache: 2 row(s) answered from it for free" in text
        write_job(tmp_path, BIG_JOB.replace("max_attempts: 1}", "max_attempts: 1, max_response_bytes: 10000}"))
        code, text, _ = call_cli("plan", job, "--base-url", base, f"--cache={cache}")
        assert "cache: 1 row(s) answered from it for free" in text
        code, text, _ = call_cli("cache", "explain", job, "--dir", cache, "--base-url", base)
        [line] = [line for line in text.splitlines() if "large" in line]
        assert line.startswith("miss ") and "not used: its reply was 20" in line
        assert line.endswith("bytes, over this job's max_response_bytes 10000")
        assert text.splitlines()[-1] == (
            "2 row(s): 1 hit(s), 1 miss(es) (0 changed, 0 expired, 1 not usable by this job, 0 not in the cache)"
        )
        code, _, _ = call_cli(
            job, "--base-url", base, "-o", tmp_path / "c.jsonl", f"--cache={cache}", "--max-response-bytes", "30000"
        )
        assert code == 0 and sent() == 3
        assert all(r["cached"] for r in read_rows(tmp_path / "c.jsonl"))


CUT_JOB = """
name: cut
defaults:
  params: {max_tokens: 1}
models: [openai/gpt-4o-mini]
prompts:
  - id: capital
    text: "Capital of {{country}}?"
    vars: [{country: France}, {country: Japan}, {country: Italy}]
run: {concurrency: 2, timeout_s: 5, cache: {store_length: true}}
"""


def test_a_cut_answer_is_a_hit_only_for_a_job_that_stores_cut_answers(tmp_path: Path, sim: Simulator) -> None:
    job, cache = write_job(tmp_path, CUT_JOB), tmp_path / "cache"
    base = ("--base-url", sim.base_url, f"--cache={cache}")
    assert call_cli(job, *base, "-o", tmp_path / "a.jsonl")[0] == 0
    first = by_id(tmp_path / "a.jsonl")
    cut = {i for i, r in first.items() if r["finish_reason"] == "length"}
    assert cut and sim.stats.chat_requests == 3
    # The same job without store_length: a cut answer is not one it keeps, so not one it reads.
    write_job(tmp_path, CUT_JOB.replace(", cache: {store_length: true}", ""))
    code, text, _ = call_cli("plan", job, *base)
    assert f"cache: {3 - len(cut)} row(s) answered from it for free" in text or not (3 - len(cut))
    assert call_cli(job, *base, "-o", tmp_path / "b.jsonl")[0] == 0
    second = by_id(tmp_path / "b.jsonl")
    assert {i for i, r in second.items() if not r["cached"]} == cut
    assert sim.stats.chat_requests == 3 + len(cut)
    write_job(tmp_path, CUT_JOB)  # store_length again: the stored cut answers are hits
    assert call_cli(job, *base, "-o", tmp_path / "c.jsonl")[0] == 0
    assert all(r["cached"] for r in read_rows(tmp_path / "c.jsonl"))


def test_answers_with_tool_calls_are_cached_and_reproduced(tmp_path: Path, sim: Simulator) -> None:
    job, cache = write_job(tmp_path, TOOLS_JOB), tmp_path / "cache"
    base = ("--base-url", sim.base_url, f"--cache={cache}")
    assert call_cli(job, *base, "-o", tmp_path / "a.jsonl")[0] == 0
    assert call_cli(job, *base, "-o", tmp_path / "b.jsonl")[0] == 0
    assert sim.stats.chat_requests == 3  # the second run sent nothing
    first, second = by_id(tmp_path / "a.jsonl"), by_id(tmp_path / "b.jsonl")
    assert any(r["tool_calls"] for r in first.values())
    for row_id, old in first.items():
        new = second[row_id]
        assert new["cached"] is True
        fields = ("content", "tool_calls", "finish_reason", "checks", "passed")
        assert {f: new[f] for f in fields} == {f: old[f] for f in fields}
    # tool_choice is part of the body sent, so of the key: changing it misses.
    write_job(tmp_path, TOOLS_JOB.replace("tool_choice: auto", "tool_choice: required"))
    assert call_cli(job, *base, "-o", tmp_path / "c.jsonl")[0] == 0
    third = read_rows(tmp_path / "c.jsonl")
    assert sorted(r["cached"] for r in third) == [False, False, True] and sim.stats.chat_requests == 5
    summary = json.loads((tmp_path / "c.summary.json").read_text())
    assert summary["cache"] == {"hits": 1, "misses": 2, "saved_usd": summary["cache"]["saved_usd"]}
