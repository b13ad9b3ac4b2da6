"""The response cache's parts on their own: key, store, what is stored, explain's diffs, upkeep."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path
from typing import Any, cast

import pytest

from batchrun import load_job, matrix_requests
from batchrun._cache import FILE_NAME, ResponseCache, cache_key
from batchrun._cache_commands import CacheCommand, parse_duration, render_stats, run_cache_command
from batchrun._cache_explain import differences, explain, render_difference, render_explanations
from batchrun._cache_file import NEW, OURS, identify, prepare
from batchrun._cache_session import CacheSession, CacheSettings, default_cache_dir, storable
from batchrun._cache_values import CachedAnswer, CacheEntry, StoredEntry
from batchrun._client import ChatResult
from batchrun._exceptions import CacheError
from batchrun._matrix import Request

from .conftest import SMALL_JOB, FakeClock, write_job

STORED_AT = "2027-01-15T08:00:00.000Z"  # when an answer stored here arrived (a UTC time, as records write)

BASE = "https://openrouter.ai/api/v1"


def requests_of(folder: Path, text: str = SMALL_JOB) -> list[Request]:
    return list(matrix_requests(load_job(write_job(folder, text))))


def result(content: str = "Paris", finish_reason: str | None = "stop", cost: float | None = 0.002) -> ChatResult:
    usage = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11, "cost": cost}
    return ChatResult("gen-1", "openai/gpt-4o-mini", "OpenAI", content, finish_reason, finish_reason, usage)


def put(cache: CacheSession, request: Request, answer: ChatResult, latency_ms: float, at: str) -> None:
    """Store as the runner does for an answer whose cost was reported."""
    cache.store(request, answer, latency_ms, at, cost=answer.cost, cost_status="reported")


def session(folder: Path, clock: FakeClock, warnings: list[str], ttl_s: float | None = None) -> CacheSession:
    opened = CacheSession.open(
        CacheSettings(folder, ttl_s),
        job_name="small",
        base_url=BASE,
        clock=clock,
        warn=warnings.append,
    )
    assert opened is not None
    return opened


def test_the_key_is_body_repeat_and_base_url_and_nothing_else() -> None:
    key = cache_key("f" * 20, 0, BASE)
    assert cache_key("f" * 20, 0, BASE + "/") == key  # a trailing slash is the same endpoint
    others = [cache_key("e" * 20, 0, BASE), cache_key("f" * 20, 1, BASE), cache_key("f" * 20, 0, "http://x")]
    assert len({key, *others}) == 4


def test_distinct_requests_of_a_job_never_share_a_key(tmp_path: Path) -> None:
    requests = requests_of(tmp_path)
    keys = {cache_key(r.fingerprint, r.repeat, BASE) for r in requests}
    assert len(keys) == len(requests) == 20  # two models, two repeats: never one entry for both


def test_store_then_lookup_and_ttl(tmp_path: Path, clock: FakeClock) -> None:
    warnings: list[str] = []
    cache = session(tmp_path, clock, warnings, ttl_s=3600.0)
    request = requests_of(tmp_path)[0]
    assert cache.lookup(request) is None
    put(cache, request, result(), 812.5, "2027-01-15T08:00:00.000Z")
    assert cache.stored == 0  # queued: written in batches
    cache.flush()
    hit = cache.lookup(request)
    assert hit is not None and (hit.content, hit.cost, hit.latency_ms) == ("Paris", 0.002, 812.5)
    assert hit.generation_id == "gen-1" and hit.generated_at == "2027-01-15T08:00:00.000Z"
    assert (cache.hits, cache.misses, cache.stored, cache.saved_usd) == (1, 1, 1, 0.002)
    put(cache, request, result(), 812.5, "2027-01-15T08:00:01.000Z")  # the same body again (break43 F7)
    cache.flush()
    assert cache.stored == 1  # one entry, written twice: counted once
    clock.now += 3601
    assert cache.lookup(request) is None  # older than ttl_s
    assert warnings == []


def test_a_stored_body_that_differs_is_never_a_hit(tmp_path: Path) -> None:
    store = ResponseCache.open(tmp_path)
    request = requests_of(tmp_path)[0]
    key = cache_key(request.fingerprint, request.repeat, BASE)
    answer = CachedAnswer(None, None, None, "Paris", "stop", None, {}, 0.1, 1.0, STORED_AT, reply_bytes=300)
    for payload in (request.payload + b" ", request.payload):
        store.store_many([StoredEntry(key, request.id, "g", request.model, 0, BASE, payload, answer, 1.0).row()])
        assert store.probe_many([key], None)[key] == (payload, answer)
        cache = session(tmp_path / "s", FakeClock(), [])
        cache._store = store  # the session compares the stored body, as lookups do
        peeked = cache.peek(request)
        assert (peeked and peeked.cost) == (0.1 if payload == request.payload else None)
        if payload != request.payload:
            assert store.lookup(key, request.payload, None) is None  # a hash collision cannot give another answer
    assert store.lookup(key, request.payload, None) == answer


@pytest.mark.parametrize(
    ("content", "finish_reason", "store_length", "kept"),
    [
        ("Paris", "stop", False, True),
        ("Paris", "tool_calls", False, True),
        # break63 F5: OpenRouter's finish reasons are tool_calls, stop, length, content_filter and
        # error (api_reference/overview.mdx): a moderation cut, or no end said, is no whole answer.
        ("Par", "content_filter", False, False),
        ("Paris", None, False, False),
        ("Paris", None, True, False),
        ("", "stop", False, False),  # an empty answer
        ("  \n", "stop", False, False),
        ("The capital of Fr", "length", False, False),  # cut at max_tokens
        ("The capital of Fr", "length", True, True),  # ... unless the job keeps them
    ],
)
def test_what_is_stored(content: str, finish_reason: str | None, store_length: bool, kept: bool) -> None:
    assert storable(result(content, finish_reason), store_length) is kept


def test_a_corrupt_cache_file_is_a_warning_and_no_cache(tmp_path: Path, clock: FakeClock) -> None:
    (tmp_path / FILE_NAME).write_bytes(b"this is not a database" * 100)
    warnings: list[str] = []
    settings = CacheSettings(tmp_path)
    assert CacheSession.open(settings, job_name="j", base_url=BASE, clock=clock, warn=warnings.append) is None
    assert len(warnings) == 1 and warnings[0].startswith("warning: response cache off for this run:")
    assert "not a batchrun cache (not an SQLite database)" in warnings[0]


def test_a_cache_locked_past_the_busy_timeout_turns_itself_off(tmp_path: Path, clock: FakeClock) -> None:
    warnings: list[str] = []
    cache = CacheSession.open(
        CacheSettings(tmp_path), job_name="j", base_url=BASE, clock=clock, warn=warnings.append, busy_timeout_s=0.01
    )
    assert cache is not None
    request = requests_of(tmp_path)[0]
    holder = sqlite3.connect(tmp_path / FILE_NAME, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing, for longer than we wait
    try:
        put(cache, request, result(), 1.0, STORED_AT)
        cache.flush()
        assert not cache.active and cache.stored == 0
        assert warnings == [warnings[0]] and "database is locked (another process holds it" in warnings[0]
        assert cache.lookup(request) is None  # off: no more cache, and no error
        cache.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_an_unwritable_cache_folder_is_a_warning(tmp_path: Path, clock: FakeClock) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    warnings: list[str] = []
    settings = CacheSettings(blocker / "cache")
    assert CacheSession.open(settings, job_name="j", base_url=BASE, clock=clock, warn=warnings.append) is None
    assert "cannot create the cache folder" in warnings[0]


def test_settings_from_the_job_and_the_default_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "batchrun"
    assert CacheSettings.from_run(None) is None and CacheSettings.from_run(False) is None
    assert CacheSettings.from_run(True) == CacheSettings(tmp_path / "xdg" / "batchrun")
    assert CacheSettings.from_run({"dir": "c", "ttl_s": 60, "store_length": True}) == CacheSettings(Path("c"), 60, True)


# -- explain --------------------------------------------------------------------------------
EDITED = {
    "prompt text": ("What is {{a}} + 1?", "Compute {{a}} + 1."),
    "param temperature": ("params: {max_tokens: 32}", "params: {max_tokens: 32, temperature: 0.7}"),
    "param max_tokens": ("params: {max_tokens: 32}", "params: {max_tokens: 64}"),
    "message 1 (system)": ("defaults:\n", "defaults:\n  system: Be brief.\n"),
}


@pytest.mark.parametrize("field", sorted(EDITED))
def test_explain_names_the_changed_field(tmp_path: Path, field: str) -> None:
    before, after = EDITED[field]
    old = [r for r in requests_of(tmp_path) if r.prompt_id == "sum"][0]
    new = next(r for r in requests_of(tmp_path, SMALL_JOB.replace(before, after)) if r.id == old.id)
    entry = _entry(tmp_path, old)
    found = differences(entry, new, BASE)
    assert [d.field for d in found] == [field]
    shown = render_difference(found[0])
    assert shown.startswith(field + ": ")


def test_explain_shows_old_and_new_values_of_a_param(tmp_path: Path) -> None:
    job_text = SMALL_JOB.replace("params: {max_tokens: 32}", "params: {max_tokens: 32, seed: 1}")
    old = requests_of(tmp_path, job_text)[0]
    new = requests_of(tmp_path, job_text.replace("seed: 1", "seed: 2"))[0]
    [difference] = differences(_entry(tmp_path, old), new, BASE)
    assert render_difference(difference) == "param seed: 1 -> 2"
    [unset] = differences(_entry(tmp_path, old), requests_of(tmp_path)[0], BASE)
    assert render_difference(unset) == "param seed: 1 -> (unset)"


def test_explain_of_a_long_prompt_shows_where_it_changed(tmp_path: Path) -> None:
    long_text = "Think carefully about arithmetic. " * 10 + "What is {{a}} + 1?"
    old = [r for r in requests_of(tmp_path, SMALL_JOB.replace("What is {{a}} + 1?", long_text)) if r.prompt_id == "sum"]
    new = requests_of(tmp_path, SMALL_JOB.replace("What is {{a}} + 1?", long_text.replace("+ 1", "+ 2")))
    [difference] = differences(_entry(tmp_path, old[0]), next(r for r in new if r.id == old[0].id), BASE)
    shown = render_difference(difference)
    assert "+ 1?" in shown.split(" -> ")[0] and "+ 2?" in shown.split(" -> ")[1] and shown.count("...") == 2


def test_explain_against_a_stored_run(tmp_path: Path, clock: FakeClock) -> None:
    warnings: list[str] = []
    cache = session(tmp_path / "c", clock, warnings)
    for request in requests_of(tmp_path):
        if request.model == "openai/gpt-4o-mini" and request.repeat == 0:
            put(cache, request, result(), 10.0, "2027-01-15T08:00:00.000Z")
    cache.close()
    edited = load_job(write_job(tmp_path, SMALL_JOB.replace("What is {{a}} + 1?", "Compute {{a}} + 1.")))
    store = ResponseCache.open(tmp_path / "c")
    items = list(explain(edited, store, BASE))
    assert len(items) == 20
    by_kind: dict[str, list[str]] = {}
    for item in items:
        kinds = [d.field for d in item.differences] if item.status == "miss" and item.nearest else [item.status]
        by_kind.setdefault(",".join(kinds), []).append(item.request.id)
    # Stored: the first model's repeat 0. Its capital rows hit; every other row differs from
    # the nearest stored request of its prompt row in exactly the fields that changed.
    assert {k: len(v) for k, v in by_kind.items()} == {
        "hit": 3,
        "prompt text": 2,
        "repeat index": 3,
        "prompt text,repeat index": 2,
        "model": 3,
        "model,prompt text": 2,
        "model,repeat index": 3,
        "model,prompt text,repeat index": 2,
    }
    text, count = render_explanations(explain(edited, store, BASE, prompt="sum", model="openai/gpt-4o-mini"))
    assert count == 4 and 'prompt text: "What is 1 + 1?" -> "Compute 1 + 1."' in text
    assert text.splitlines()[-1] == "4 row(s): 0 hit(s), 4 miss(es) (4 changed, 0 expired, 0 not in the cache)"
    renamed = load_job(write_job(tmp_path, SMALL_JOB.replace("name: small", "name: other")))
    text, _ = render_explanations(explain(renamed, store, BASE, row=items[-1].request.id[:8]))
    assert "not in the cache" in text.splitlines()[0]


def _entry(folder: Path, request: Request) -> CacheEntry:
    store = ResponseCache.open(folder / "entries")
    key = cache_key(request.fingerprint, request.repeat, BASE)
    answer = CachedAnswer(None, None, None, "2", "stop", None, {}, 0.1, 1.0, STORED_AT)
    store.store_many(
        [StoredEntry(key, request.id, "g", request.model, request.repeat, BASE, request.payload, answer, 1.0).row()]
    )
    [entry] = [e for e in store.entries_of_groups({"g"})["g"] if e.key == key]
    store.close()
    return entry


# -- upkeep ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("12h", 43200), ("30d", 2592000), ("1d12h", 129600)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "d", "12x", "-1d", "1.5.2h", "ten days", "30", "1d12", "6M", "1d6M"]
)  # 6M: out-110 F4
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_stats_prune_and_clear(tmp_path: Path, clock: FakeClock) -> None:
    warnings: list[str] = []
    cache = session(tmp_path, clock, warnings)
    requests = requests_of(tmp_path)
    for request in requests[:10]:
        put(cache, request, result(), 1.0, STORED_AT)
    clock.now += 86400 * 3
    for request in requests[10:]:
        put(cache, request, result(), 1.0, STORED_AT)
    cache.flush()
    cache.lookup(requests[0])
    cache.close()
    store = ResponseCache.open(tmp_path)
    stats = store.stats()
    assert stats.entries == 20 and stats.models == {"google/gemini-2.0-flash-001": 10, "openai/gpt-4o-mini": 10}
    assert [(r.hits, r.misses, r.stored) for r in stats.runs] == [(1, 0, 20)]
    assert "hit rate 100.0% (1 hit(s), 0 miss(es)), 20 stored, $0.002000 saved" in render_stats(stats)
    assert store.prune(86400 * 2, now=clock.time()) == 10
    assert store.clear("openai/gpt-4o-mini") == 5
    assert store.stats().models == {"google/gemini-2.0-flash-001": 5}
    assert store.clear() == 5 and store.stats().entries == 0


@pytest.mark.parametrize("emptied_by", ["prune", "clear"])
def test_prune_and_clear_give_the_space_back(tmp_path: Path, clock: FakeClock, emptied_by: str) -> None:
    # break52 F3: a cache emptied of 100,000 entries stayed 81 MiB (its pages free, never given
    # back), and CI saved it after every run.
    cache = session(tmp_path, clock, [])
    for request in requests_of(tmp_path):
        put(cache, request, result("Paris " * 20_000), 1.0, STORED_AT)  # ~120 KB each
    cache.close()
    full = sum(p.stat().st_size for p in tmp_path.glob(f"{FILE_NAME}*"))
    store = ResponseCache.open(tmp_path)
    removed = store.prune(0, now=clock.time() + 1) if emptied_by == "prune" else store.clear()
    assert removed == 20 and store.stats().entries == 0
    store.close()
    assert full > 1_000_000 and (tmp_path / FILE_NAME).stat().st_size < full / 20


def test_an_entry_stored_while_the_clock_was_a_year_ahead_is_neither_fresh_nor_kept(
    tmp_path: Path, clock: FakeClock
) -> None:
    # break51 F9: stored under `faketime +365d`, its age was negative: fresh past any ttl_s, and
    # never older than any prune, until the clock caught up a year later.
    ahead = FakeClock()
    ahead.now = clock.now + 365 * 86400
    cache = session(tmp_path, ahead, [])
    [request, other] = requests_of(tmp_path)[:2]
    put(cache, request, result(), 1.0, STORED_AT)
    cache.close()
    for ttl in (None, 86400.0):  # without a ttl_s too: its age is not known (out-100 F6: used, no ttl_s the default)
        cache = session(tmp_path, clock, [], ttl_s=ttl)
        assert cache.lookup(request) is None
        cache.close()
    cache = session(tmp_path, clock, [])
    put(cache, other, result(), 1.0, STORED_AT)  # stored now: kept
    cache.close()
    store = ResponseCache.open(tmp_path)
    assert store.prune(3600, now=clock.time()) == 1 and store.stats().entries == 1
    store.close()


def test_commands_on_a_missing_cache_do_not_create_one(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="no cache here yet"):
        ResponseCache.open(tmp_path / "none", create=False)
    for action in ("stats", "prune", "clear"):
        text = run_cache_command(CacheCommand(action, tmp_path / "none", older_than="1d"))
        assert text == f"no cache in {tmp_path / 'none'}: nothing stored there yet"
    job = write_job(tmp_path, SMALL_JOB)
    text = run_cache_command(CacheCommand("explain", tmp_path / "none", job=job, prompt="sum"))
    assert text.splitlines()[-1] == "8 row(s): 0 hit(s), 8 miss(es) (0 changed, 0 expired, 8 not in the cache)"
    assert not (tmp_path / "none").exists()


def test_planning_then_lookups_ask_the_file_only_about_stored_rows(tmp_path: Path, clock: FakeClock) -> None:
    cache = session(tmp_path, clock, [])
    first, second = requests_of(tmp_path)[:2]
    put(cache, first, result(cost=0.25), 1.0, STORED_AT)
    cache.flush()
    peeked = cache.peek(first)
    assert peeked is not None and peeked.cost == 0.25 and cache.peek(second) is None
    cache.planned()
    put(cache, second, result(), 1.0, STORED_AT)  # stored after planning (another shard, say) ...
    cache.flush()
    assert cache.lookup(second) is None  # ... is a miss for this run, not a wrong answer
    hit = cache.lookup(first)
    assert hit is not None and (cache.hits, cache.misses) == (1, 1)


def test_batches_are_written_by_count_and_by_age(tmp_path: Path, clock: FakeClock) -> None:
    from batchrun._cache_session import FLUSH_AFTER_S, FLUSH_EVERY

    cache = session(tmp_path, clock, [])
    many = [r for r in requests_of(tmp_path, SMALL_JOB.replace("repeat: 2", f"repeat: {FLUSH_EVERY}"))]
    for request in many[: FLUSH_EVERY - 1]:
        put(cache, request, result(), 1.0, STORED_AT)
    assert cache.stored == 0
    put(cache, many[FLUSH_EVERY - 1], result(), 1.0, STORED_AT)
    assert cache.stored == FLUSH_EVERY
    put(cache, many[FLUSH_EVERY], result(), 1.0, STORED_AT)
    clock.now += FLUSH_AFTER_S
    put(cache, many[FLUSH_EVERY + 1], result(), 1.0, STORED_AT)
    assert cache.stored == FLUSH_EVERY + 2
    put(cache, many[FLUSH_EVERY + 2], result(), 1.0, STORED_AT)
    cache.close()  # the rest at the end
    assert ResponseCache.open(tmp_path).stats().entries == FLUSH_EVERY + 3


def test_planning_probes_in_chunks_and_finds_exactly_the_stored_rows(tmp_path: Path, clock: FakeClock) -> None:
    from batchrun._cache_session import PROBE_CHUNK

    cache = session(tmp_path, clock, [])
    many = requests_of(tmp_path, SMALL_JOB.replace("repeat: 2", "repeat: 120"))
    assert len(many) > 2 * PROBE_CHUNK  # three chunks
    stored = {r.id for r in many[::7]}
    for index, request in enumerate(many[::7]):
        put(cache, request, result(cost=index / 1000), 1.0, STORED_AT)
    cache.flush()
    found = {r.id: stored and stored.cost for r, stored in cache.peek_all(iter(many))}
    assert list(found) == [r.id for r in many]  # every row, in order
    assert {i for i, cost in found.items() if cost is not None} == stored
    assert [found[r.id] for r in many[::7]] == [i / 1000 for i in range(len(stored))]


def test_a_cache_folder_this_process_cannot_write_is_read_not_written(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = requests_of(tmp_path)[:2]
    cache = session(tmp_path / "c", clock, [])
    put(cache, first, result(), 1.0, STORED_AT)
    cache.close()
    # A read-only mount, or another user's folder (root's tests cannot make one with chmod).
    monkeypatch.setattr("batchrun._cache.os.access", lambda path, mode: False)
    warnings: list[str] = []
    cache = session(tmp_path / "c", clock, warnings)
    assert warnings == [
        f"warning: response cache {tmp_path / 'c' / FILE_NAME} is read-only here: answers are read from it, "
        "none is stored"
    ]
    assert [r for r, cost in cache.peek_all([first, second]) if cost is not None] == [first]
    cache.planned()
    assert cache.lookup(first) is not None and cache.lookup(second) is None
    put(cache, second, result(), 1.0, STORED_AT)
    cache.close()  # nothing written: no store, no run figures, no error
    assert len(warnings) == 1
    with sqlite3.connect(tmp_path / "c" / FILE_NAME) as db:
        assert db.execute("SELECT count(*) FROM entries").fetchone() == (1,)
        assert db.execute("SELECT count(*) FROM runs").fetchone() == (1,)  # the first session's only


def test_a_read_only_cache_reads_what_a_killed_writer_left_in_its_wal(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break30 m4: opened immutable, a read-only cache showed nothing a writer killed -9 had
    # committed since its last checkpoint (its WAL and index left beside it): paid again.
    first, second = requests_of(tmp_path)[:2]
    writer = session(tmp_path / "c", clock, [])
    put(writer, first, result(), 1.0, STORED_AT)
    writer.flush()  # committed to the WAL; the writer is not closed, as a kill leaves it
    wal = tmp_path / "c" / (FILE_NAME + "-wal")
    assert wal.stat().st_size > 0
    monkeypatch.setattr("batchrun._cache.os.access", lambda path, mode: False)
    warnings: list[str] = []
    reader = session(tmp_path / "c", clock, warnings)
    assert "read-only here" in warnings[0]
    assert [r for r, cost in reader.peek_all([first, second]) if cost is not None] == [first]
    reader.close()


class _LockedOnce:
    """A connection whose switch to WAL is answered "locked" at once, `times` times: what
    SQLite answers, without waiting its busy timeout, when two processes opening a new cache
    each hold what the other waits for."""

    def __init__(self, db: sqlite3.Connection, times: int) -> None:
        self.db, self.times, self.tries = db, times, 0

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "PRAGMA journal_mode=WAL":
            self.tries += 1
            if self.tries <= self.times:
                busy = sqlite3.OperationalError("database is locked")
                busy.sqlite_errorcode = sqlite3.SQLITE_BUSY
                raise busy
        return self.db.execute(sql, *args)


def test_a_lock_sqlite_answers_at_once_is_tried_again_within_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    db = sqlite3.connect(path, isolation_level=None)
    locked = _LockedOnce(db, times=2)
    prepare(cast(sqlite3.Connection, locked), path, NEW, busy_timeout_s=5.0)
    assert locked.tries == 3 and db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert identify(path) == OURS  # initialised once, though its transaction ran three times
    db.close()
    # Past the busy timeout it is an error like any lock (the run goes on without the cache).
    other = sqlite3.connect(tmp_path / "other.sqlite3", isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        prepare(cast(sqlite3.Connection, _LockedOnce(other, times=10**6)), tmp_path / "other.sqlite3", NEW, 0.05)
    other.close()


def test_a_new_cache_folder_is_writable_by_its_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    # break36 F5: under umask 000 the cache folder was 0777: another user could plant answers.
    old = os.umask(0)
    try:
        ResponseCache.open(tmp_path / "cache", create=True).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "cache").stat().st_mode) == 0o755


def test_a_cache_is_not_made_in_a_home_folder_that_does_not_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # break36: HOME=/nonexistent (a service account) and a run as root made /nonexistent/.cache/batchrun.
    home = tmp_path / "nonexistent"
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(CacheError, match="its home folder .* does not exist"):
        ResponseCache.open(home / ".cache" / "batchrun", create=True)
    assert not home.exists()
    ResponseCache.open(tmp_path / "elsewhere" / "cache", create=True).close()  # a folder outside it is made
