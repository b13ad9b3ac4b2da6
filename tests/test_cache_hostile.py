"""The response cache against a server that lies (tests/hostile.py, raw sockets on loopback):
only ok answers with text and a known cost are stored; nothing a second run reads back
was an error, an empty answer, a reply over the size cap, or an answer of unknown cost;
no key reaches the cache file; and a hit says what the original answer cost and how sure
that figure is (`cost_saved_status`)."""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchrun._cache import FILE_NAME, cache_files

from .conftest import FAKE_KEY, call_cli, read_rows, write_job
from .hostile import HostileServer, RawRequest, chat_payload, http, json_answer

JOB = """
name: hostile-cache
defaults:
  params: {max_tokens: 16}
models: [openai/gpt-4o-mini]
prompts:
  - id: capital
    text: "Capital of {{country}}?"
    vars: [{country: France}, {country: Japan}, {country: Italy}, {country: Spain}, {country: Peru},
           {country: Chile}, {country: Kenya}]
    checks: [{contains: "a"}]
run: {concurrency: 2, timeout_s: 10, max_attempts: 1, grace_s: 1}
"""
NO_COST = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}


def lying(request: RawRequest) -> bytes:
    """One lie per country; Chile and Kenya answer properly (Kenya echoes the key)."""
    text = request.body.decode()
    error = {"code": 502, "message": "Provider returned error", "metadata": {"error_type": "provider_unavailable"}}
    if "France" in text:  # an error inside a 200 (errors-and-debugging.mdx)
        return json_answer(200, {"id": "gen-x", "error": error, "choices": None})
    if "Japan" in text:  # an empty answer that says it is finished
        return json_answer(200, chat_payload(""))
    if "Italy" in text:  # over --max-response-bytes
        return http(200, b'{"id": "gen-big", "pad": "' + b"x" * 200_000 + b'"}', {"Content-Type": "application/json"})
    if "Spain" in text:  # no cost and no token counts, and /generation knows nothing: unknown
        return json_answer(200, chat_payload("Madrid", usage={}))
    if "Peru" in text:  # tokens but no cost: an estimate (an upper bound)
        return json_answer(200, chat_payload("Lima", usage=NO_COST))
    if "Kenya" in text:
        return json_answer(200, chat_payload(f"Nairobi, and your key is {FAKE_KEY}"))
    return json_answer(200, chat_payload("Santiago"))


def countries(server: HostileServer, since: int = 0) -> list[str]:
    sent = [r for r in server.requests if r.path.endswith("/chat/completions")][since:]
    names = ("France", "Japan", "Italy", "Spain", "Peru", "Chile", "Kenya")
    return sorted(next(c for c in names if c in r.body.decode()) for r in sent)


def by_country(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["vars"]["country"]: r for r in rows}


pytestmark = pytest.mark.usefixtures("api_key_env")


def test_a_lying_server_leaves_only_good_answers_of_known_cost_in_the_cache(tmp_path: Path) -> None:
    job, cache = write_job(tmp_path, JOB), tmp_path / "cache"
    server = HostileServer(chat=lying)
    with server.running():
        args = ("--base-url", server.base_url, f"--cache={cache}", "--max-response-bytes", "65536")
        call_cli(job, "-o", tmp_path / "a.jsonl", *args)
        first = by_country(read_rows(tmp_path / "a.jsonl"))
        sent = len(countries(server))
        code, _, err = call_cli(job, "-o", tmp_path / "b.jsonl", *args)
        second = by_country(read_rows(tmp_path / "b.jsonl"))
        resent = countries(server, sent)
    assert "Traceback" not in err
    assert {c: (r["status"], r.get("reason")) for c, r in first.items() if r["status"] != "ok"} == {
        "France": ("error", "upstream_error"),
        "Italy": ("error", "response_too_large"),
    }
    assert (first["Japan"]["content"], first["Spain"]["cost_status"], first["Peru"]["cost_status"]) == (
        "",
        "unknown",
        "estimated",
    )
    # Everything but the two good answers and the estimate is asked again.
    assert resent == ["France", "Italy", "Japan", "Spain"]
    hits = {c for c, r in second.items() if r.get("cached")}
    assert hits == {"Chile", "Kenya", "Peru"}
    for country in hits:
        old, new = first[country], second[country]
        assert (new["cost"], new["cost_status"], new["cost_saved"]) == (0.0, None, old["cost"])
        assert new["cost_saved_status"] == old["cost_status"] and new["content"] == old["content"]
        assert new["passed"] == old["passed"] and new["generation_id"] == old["generation_id"]
    assert second["Peru"]["cost_saved_status"] == "estimated"
    assert "sk-or-v1" not in second["Kenya"]["content"]  # scrubbed before it was stored
    with sqlite3.connect(cache / FILE_NAME) as db:
        assert db.execute("SELECT count(*) FROM entries").fetchone() == (3,)
    for path in cache_files(cache):
        if path.exists():
            data = path.read_bytes()
            assert FAKE_KEY.encode() not in data and FAKE_KEY[9:25].encode() not in data


@contextlib.contextmanager
def _edited_cache(
    folder: Path, edits: list[str]
) -> Iterator[tuple[Path, Path, HostileServer, tuple[str, ...], list[int]]]:
    """The job run once into a new cache against an honest server (running for the block), then
    the cache's first entries edited, one SQL SET clause each, as something other than batchrun
    could: (job, cache, server, the run's options, the entries' ids in order)."""
    job, cache = write_job(folder, JOB), folder / "cache"
    server = HostileServer(chat=lambda request: json_answer(200, chat_payload("Santiago, Lima")))
    with server.running():
        args = ("--base-url", server.base_url, f"--cache={cache}")
        assert call_cli(job, "-o", folder / "a.jsonl", *args)[0] == 0
        with sqlite3.connect(cache / FILE_NAME) as db:
            ids = [row[0] for row in db.execute("SELECT id FROM entries ORDER BY id")]
            for row_id, edit in zip(ids, edits, strict=False):
                db.execute(f"UPDATE entries SET {edit} WHERE id = ?", (row_id,))  # noqa: S608 - the test's own
        yield job, cache, server, args, ids


def test_a_cache_file_edited_to_lie_gives_misses_never_a_crash(tmp_path: Path) -> None:
    """Our file by its header, but its rows hold what no batchrun wrote: a cost that is text,
    negative or absurd, a size that is text, a latency that is text, tool calls that are
    numbers, an answer that is not JSON. Each such entry is a miss (asked again) or a hit
    with the bad field dropped; the run never fails and no row ends in an internal error."""
    edits = [
        "cost = 'abc'",
        "cost = -5",
        "cost = 1e308",
        "reply_bytes = 'big'",
        "answer = CAST(json_set(answer, '$.tool_calls', json('[1, 2]')) AS TEXT)",
        "answer = x'00ff'",
        "latency_ms = 'slow', answer = CAST(json_set(answer, '$.latency_ms', 'slow') AS TEXT)",
    ]
    with _edited_cache(tmp_path, edits) as (job, cache, server, args, ids):
        with sqlite3.connect(cache / FILE_NAME) as db:
            # A stored time that is no number is an age unknown, as one ahead of the clock (out-100 F6): a miss.
            db.execute("UPDATE entries SET created_at = 'yesterday' WHERE id = ?", (ids[0],))
            db.execute("UPDATE runs SET finished_at = 'noon', hits = 'many'")
        sent = len(server.chat_rows())
        code, _, err = call_cli(job, "-o", tmp_path / "b.jsonl", *args)
        resent = len(server.chat_rows()) - sent
        stats = call_cli("cache", "stats", "--dir", cache)
    assert (code, err) == (0, "")
    rows = read_rows(tmp_path / "b.jsonl")
    assert {r["status"] for r in rows} == {"ok"}
    assert resent == 6  # every entry but the one whose only fault is its latency
    [hit] = [r for r in rows if r["cached"]]
    assert hit["latency_ms"] is None and hit["passed"] is True
    assert stats[0] == 0 and "entries: 7," in stats[1] and "Traceback" not in stats[2]


def test_an_entry_whose_cost_status_no_batchrun_wrote_is_a_miss(tmp_path: Path) -> None:
    # out-184 F6: `cost_status: "bogus"` was copied into the hit's record as its cost_saved_status.
    edit = "answer = CAST(json_set(answer, '$.cost_status', 'bogus') AS TEXT)"
    with _edited_cache(tmp_path, [edit]) as (job, _, server, args, _):
        sent = len(server.chat_rows())
        code, _, err = call_cli(job, "-o", tmp_path / "b.jsonl", *args)
        resent = len(server.chat_rows()) - sent
    rows = read_rows(tmp_path / "b.jsonl")
    assert (code, err, resent) == (0, "", 1)
    assert "bogus" not in {r.get("cost_saved_status") for r in rows}


def test_an_entry_of_an_answer_that_did_not_end_whole_is_a_miss(tmp_path: Path) -> None:
    # break63 F5: entries an earlier version stored, a moderation cut and an answer that said no
    # end, were replayed as good answers; the run that reads decides, and asks them again.
    edits = [
        "finish_reason = 'content_filter', "
        "answer = CAST(json_set(answer, '$.finish_reason', 'content_filter') AS TEXT)",
        "finish_reason = NULL, answer = CAST(json_set(answer, '$.finish_reason', json('null')) AS TEXT)",
    ]
    with _edited_cache(tmp_path, edits) as (job, cache, server, args, ids):
        sent = len(server.chat_rows())
        code, _, err = call_cli(job, "-o", tmp_path / "b.jsonl", *args)
        resent = len(server.chat_rows()) - sent
    assert (code, err, resent) == (0, "", 2)
    assert sum(not r["cached"] for r in read_rows(tmp_path / "b.jsonl")) == 2


def test_an_answer_whose_cost_passed_its_worst_case_is_not_kept(tmp_path: Path) -> None:
    # break63 F4: a reply claiming $5000 (past its worst case, flagged by the run) was stored, and
    # every later hit said "$10000 saved"; a cost the run did not believe is not kept.
    job, cache = write_job(tmp_path, JOB), tmp_path / "cache"
    costs = [5000.0]
    server = HostileServer(chat=lambda r: json_answer(200, chat_payload("Paris", usage={**NO_COST, "cost": costs[0]})))
    with server.running():
        args = ("--base-url", server.base_url, f"--cache={cache}")
        call_cli(job, "-o", tmp_path / "a.jsonl", *args)
        assert all(r["status"] == "ok" for r in read_rows(tmp_path / "a.jsonl"))
        costs[0] = 1e-5  # honest now
        code, text, _ = call_cli(job, "-o", tmp_path / "b.jsonl", *args)
    assert code == 0 and len(server.chat_rows()) == 14 and not any(r["cached"] for r in read_rows(tmp_path / "b.jsonl"))
    assert "cache: 0 hit(s), 7 miss(es), $0.000000 saved" in text


def test_times_that_are_no_time_are_left_out_of_the_stats(tmp_path: Path) -> None:
    # break21 R27: a created_at or finished_at of 9e999 (SQLite keeps Infinity) was a traceback.
    job, cache = write_job(tmp_path, JOB), tmp_path / "cache"
    server = HostileServer(chat=lambda request: json_answer(200, chat_payload("Santiago, Lima")))
    with server.running():
        assert call_cli(job, "-o", tmp_path / "a.jsonl", "--base-url", server.base_url, f"--cache={cache}")[0] == 0
    with sqlite3.connect(cache / FILE_NAME) as db:
        first = db.execute("SELECT min(id) FROM entries").fetchone()[0]
        db.execute("UPDATE entries SET created_at = 9e999 WHERE id = ?", (first,))
        db.execute("UPDATE runs SET finished_at = -9e999")
    code, out, err = call_cli("cache", "stats", "--dir", cache)
    assert (code, err) == (0, "") and "entries: 7," in out and "no run has used this cache yet" in out


IMAGE_JOB = """
name: gone-hits
defaults:
  params: {max_tokens: 16}
models: [openai/gpt-4o-mini]
prompts:
  - id: text
    text: "Capital of {{country}}?"
    vars: [{country: France}]
  - id: picture
    messages:
      - role: user
        content:
          - {type: text, text: "What is in picture {{n}}?"}
          - {type: image_url, image_url: {url: "https://example.org/{{n}}.png"}}
    vars: [{n: 1}, {n: 2}, {n: 3}]
run: {concurrency: 1, timeout_s: 10, max_attempts: 1, grace_s: 1}
"""


def test_a_planned_hit_of_unknown_worst_case_gone_at_dispatch_is_not_sent_under_a_limit(tmp_path: Path) -> None:
    # break14h H2: a row whose worst case is unknown (an image by URL) passes pre-flight under a
    # limit as a planned cache hit; its entry gone when it was due (ttl_s passed mid-run, a
    # `cache clear` or prune by another process), it was sent reserving $0: $0.97 on $0.50.
    job, cache = write_job(tmp_path, IMAGE_JOB), tmp_path / "cache"
    clear_at: list[int] = []

    def answer(request: RawRequest) -> bytes:
        if clear_at and len(server.chat_rows()) == clear_at[0]:  # another process clears the cache
            with sqlite3.connect(cache / FILE_NAME) as db:
                db.execute("DELETE FROM entries")
        return json_answer(200, chat_payload("A cat"))

    server = HostileServer(chat=answer)
    with server.running():
        args = ("--base-url", server.base_url, f"--cache={cache}")
        assert call_cli(job, "-o", tmp_path / "a.jsonl", *args)[0] == 0  # no limit: allowed
        # The same pictures (cached) after new text rows (not): the cache is cleared meanwhile.
        job = write_job(tmp_path, IMAGE_JOB.replace("{country: France}", "{country: Japan}, {country: Peru}"))
        clear_at.append(len(server.chat_rows()) + 1)
        first_sent = len(server.chat_rows())
        code, out, err = call_cli(job, "-o", tmp_path / "b.jsonl", *args, "--budget", "0.5")
        sent = [r.body.decode() for r in server.requests if r.path.endswith("/chat/completions")][first_sent:]
    assert "Traceback" not in err
    assert sent and not any("in picture" in body for body in sent)  # no unbounded request went out
    assert code == 5 and "worst case is not known" in out
    rows = {r["id"]: r for r in read_rows(tmp_path / "b.jsonl")}
    assert [r["status"] for r in rows.values() if r["prompt_id"] == "picture"] == ["skipped"] * 3


def test_a_hit_is_read_as_a_reply_is_scrubbed_and_bounded(tmp_path: Path) -> None:
    """break22 M3: an entry edited to hold the run's key (in its content and its generation
    id) wrote the key into the results, and one with 100 tool calls of 200 KB a 20 MB record.
    A hit is read as a reply: scrubbed, its generation id only an id, its tool calls at most
    32, and an answer larger than the run's reply cap is a miss."""
    job, cache = write_job(tmp_path, JOB), tmp_path / "cache"
    server = HostileServer(chat=lambda request: json_answer(200, chat_payload("Santiago, Lima")))
    calls = [{"id": f"c{i}", "name": "f", "arguments": "{}"} for i in range(40)]
    huge = [{"id": f"c{i}", "name": "f", "arguments": "A" * 200_000} for i in range(100)]
    with server.running():
        args = ("--base-url", server.base_url, f"--cache={cache}")
        assert call_cli(job, "-o", tmp_path / "a.jsonl", *args)[0] == 0
        with sqlite3.connect(cache / FILE_NAME) as db:
            ids = [row[0] for row in db.execute("SELECT id FROM entries ORDER BY id")]
            set_answer = "UPDATE entries SET answer = CAST(json_set(answer, ?, json(?)) AS TEXT) WHERE id = ?"
            db.execute(set_answer, ("$.content", json.dumps(f"the key is {FAKE_KEY}"), ids[0]))
            db.execute(set_answer, ("$.generation_id", json.dumps(FAKE_KEY), ids[0]))
            db.execute(set_answer, ("$.tool_calls", json.dumps(calls), ids[1]))
            db.execute(set_answer, ("$.tool_calls", json.dumps(huge), ids[2]))
            db.execute(set_answer, ("$.generated_at", json.dumps(FAKE_KEY), ids[3]))  # verify22 N2
        sent = len(server.chat_rows())
        code, _, err = call_cli(job, "-o", tmp_path / "b.jsonl", *args)
        resent = len(server.chat_rows()) - sent
    assert (code, err) == (0, "")
    text = (tmp_path / "b.jsonl").read_text()
    assert FAKE_KEY not in text and FAKE_KEY[9:25] not in text
    assert resent == 2  # the answer over the reply cap, and the one whose time is no time
    rows = read_rows(tmp_path / "b.jsonl")
    assert sorted(len(r["tool_calls"] or []) for r in rows if r["cached"]) == [0] * 4 + [32]
    assert max(len(line) for line in text.splitlines()) < 100_000


def test_planning_counts_as_hits_exactly_the_entries_the_run_takes(tmp_path: Path) -> None:
    """break43 F5: planning read an entry's columns but not its answer, so an entry whose
    answer is no answer (not JSON, a list, empty text, usage that is text, a time that is no
    time) counted as a hit in `plan` and in the pre-flight worst case, and the run then sent
    the row. Planning, the run and `cache explain` now judge an entry alike."""
    edits = [
        "answer = CAST('{not json' AS BLOB)",
        "answer = CAST('[1, 2]' AS BLOB)",
        "answer = CAST(json_set(answer, '$.content', '') AS TEXT)",
        "answer = CAST(json_set(answer, '$.usage', 'lots') AS TEXT)",
        "answer = CAST(json_set(answer, '$.generated_at', 'noon') AS TEXT)",
    ]
    with _edited_cache(tmp_path, edits) as (job, cache, server, args, _):
        plan = call_cli("plan", job, *args)
        explained = call_cli("cache", "explain", job, "--base-url", server.base_url, "--dir", cache)
        sent = len(server.chat_rows())
        code, _, err = call_cli(job, "-o", tmp_path / "b.jsonl", *args)
        resent = len(server.chat_rows()) - sent
    assert (code, err) == (0, "")
    assert resent == 5
    assert sum(r["cached"] for r in read_rows(tmp_path / "b.jsonl")) == 2
    assert plan[0] == 0 and re.search(r"^openai/gpt-4o-mini +7 +2 ", plan[1], re.M), plan[1]
    assert explained[0] == 0 and explained[1].count("stored (") == 5, explained[1]
    assert explained[1].count("\nhit ") + explained[1].startswith("hit ") == 2


GRADED_JOB = """
name: hostile-cache-graded
defaults:
  params: {max_tokens: 16}
judge: {model: openai/gpt-4o-mini}
models: [openai/gpt-4o-mini]
prompts:
  - id: capital
    text: "Capital of {{country}}?"
    vars: [{country: France}, {country: France, note: again}, {country: France, note: thrice}]
    checks: [{judge: 'Names the capital.'}]
run: {concurrency: 1, timeout_s: 10, max_attempts: 1, grace_s: 1}
"""
GRADER_TOKENS = {"prompt_tokens": 1000, "completion_tokens": 20, "total_tokens": 1020}  # as many as it was sent


def test_what_a_hit_of_only_estimated_cost_saved_is_said_as_a_bound_not_counted(tmp_path: Path) -> None:
    # out-160 F4: grader replies with no cost (/generation knowing none) are costed `estimated`, an
    # upper bound; the same run's hits of them carried it as `cost_saved` with no status, and
    # `cache stats` summed it as saved (9x what the server had billed).
    def chat(request: RawRequest) -> bytes:
        if "response_format" in request.json():  # a grader: a verdict, no cost
            return json_answer(200, chat_payload('{"pass": true, "score": 1, "reason": "ok"}', usage=GRADER_TOKENS))
        return json_answer(200, chat_payload("Paris"))

    job, cache = write_job(tmp_path, GRADED_JOB), tmp_path / "cache"
    server = HostileServer(chat=chat)
    with server.running():
        code, text, err = call_cli(job, "-o", tmp_path / "a.jsonl", "--base-url", server.base_url, f"--cache={cache}")
    assert code == 0, err
    graders = [r["checks"][0]["judge"]["graders"][0] for r in read_rows(tmp_path / "a.jsonl")]
    hits = [g for g in graders if g.get("cached")]
    assert len(hits) == 2 and graders[0]["cost_status"] == "estimated"
    assert {(g["cost_saved"], g["cost_saved_status"]) for g in hits} == {(graders[0]["cost"], "estimated")}
    code, stats, _ = call_cli("cache", "stats", "--dir", cache)
    assert code == 0 and "2 hit(s)" in stats and "$0.000000 saved" in stats, stats
    # A row's hit of an estimated answer: its summary says the bound apart from what was saved.
    PERU = JOB.replace("{country: France}, {country: Japan}, {country: Italy}, {country: Spain}, ", "")
    peru = write_job(tmp_path, PERU, "peru.yaml")
    with server.running():
        server.chat = lying
        for out in ("p1.jsonl", "p2.jsonl"):
            code, text, err = call_cli(peru, "-o", tmp_path / out, "--base-url", server.base_url, f"--cache={cache}")
    rows = by_country(read_rows(tmp_path / "p2.jsonl"))
    assert {c for c, r in rows.items() if r["cached"]} == {"Peru", "Chile", "Kenya"}
    summary = json.loads((tmp_path / "p2.summary.json").read_text())["cache"]
    known = rows["Chile"]["cost_saved"] + rows["Kenya"]["cost_saved"]
    assert summary == {
        "hits": 3,
        "misses": 0,
        "saved_usd": pytest.approx(known),
        "saved_estimated_usd": rows["Peru"]["cost_saved"],
    }
    assert f"up to ${rows['Peru']['cost_saved']:.6f} more (hits whose cost was only estimated)" in text, text
