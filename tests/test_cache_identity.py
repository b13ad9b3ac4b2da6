"""A cache file is written, migrated or deleted only once it is positively batchrun's
(_cache_file): another program's `responses.sqlite3` in a `--cache` folder is never
changed, by a run or by `cache clear | prune | stats` (issue 16, outsider's findings 3, 4)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from batchrun import ExitCode
from batchrun._cache import FILE_NAME, cache_files
from batchrun._cache_file import APPLICATION_ID
from batchrun._results import final_records
from batchrun.simulator import Simulator

from .conftest import SMALL_JOB, call_cli, write_job

pytestmark = pytest.mark.usefixtures("api_key_env")


def foreign_database(folder: Path, *, with_meta: bool) -> str:
    """Another program's database of the same name; returns a digest of its folder."""
    folder.mkdir(exist_ok=True)
    db = sqlite3.connect(folder / FILE_NAME)
    if with_meta:
        db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.execute("CREATE TABLE invoices (n INTEGER)")
    db.execute("INSERT INTO invoices VALUES (42)")
    db.commit()
    db.close()
    return digest(folder)


def digest(folder: Path) -> str:
    files = sorted(p for p in folder.iterdir())
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()


@pytest.mark.parametrize("with_meta", [True, False])
def test_a_run_never_changes_another_programs_database(tmp_path: Path, sim: Simulator, with_meta: bool) -> None:
    job, cache = write_job(tmp_path, SMALL_JOB), tmp_path / "cache"
    before = foreign_database(cache, with_meta=with_meta)
    code, _, err = call_cli(job, "--base-url", sim.base_url, "-o", tmp_path / "a.jsonl", f"--cache={cache}", "-q")
    assert code == 0 and sim.stats.chat_requests == 20
    assert err == (
        f"batchrun: warning: response cache off for this run: {cache / FILE_NAME}: not a batchrun cache "
        "(another program's SQLite database); batchrun leaves it alone\n"
    )
    assert digest(cache) == before  # not a byte changed, no WAL file beside it
    assert all("cached" not in r for r in final_records(tmp_path / "a.jsonl"))  # as a run without a cache
    code, text, _ = call_cli("plan", job, "--base-url", sim.base_url, f"--cache={cache}")
    assert code == 0 and digest(cache) == before


@pytest.mark.parametrize("with_meta", [True, False])
@pytest.mark.parametrize(
    "command", [("clear",), ("clear", "--model", "openai/gpt-4o-mini"), ("prune", "--older-than", "1s"), ("stats",)]
)
def test_cache_commands_refuse_another_programs_database(
    tmp_path: Path, with_meta: bool, command: tuple[str, ...]
) -> None:
    cache = tmp_path / "cache"
    before = foreign_database(cache, with_meta=with_meta)
    code, text, err = call_cli("cache", *command, "--dir", cache)
    assert (code, text) == (2, "")
    assert err == (
        f"batchrun: {cache / FILE_NAME}: not a batchrun cache (another program's SQLite database); "
        "batchrun leaves it alone\n"
    )
    assert digest(cache) == before
    with sqlite3.connect(cache / FILE_NAME) as db:
        assert db.execute("SELECT n FROM invoices").fetchall() == [(42,)]


def test_cache_upkeep_under_quiet_prints_only_a_failure(tmp_path: Path, sim: Simulator) -> None:
    # out-102 F13: `cache prune --older-than 30d` in cron mailed "pruned 0 entries" every night.
    job, cache = write_job(tmp_path, SMALL_JOB), tmp_path / "cache"
    assert call_cli(job, "--base-url", sim.base_url, "-o", tmp_path / "a.jsonl", f"--cache={cache}")[0] == 0
    assert call_cli("cache", "prune", "--older-than", "30d", "--dir", cache, "--quiet") == (0, "", "")
    assert call_cli("cache", "prune", "--older-than", "30d", "--dir", tmp_path / "none", "-q") == (0, "", "")
    assert call_cli("cache", "clear", "--model", "openai/gpt-4o-mini", "--dir", cache, "-q") == (0, "", "")
    assert "openai/gpt-4o-mini" not in call_cli("cache", "stats", "--dir", cache)[1]  # it did clear
    (cache / FILE_NAME).write_bytes(b"my notes\n")
    code, out, err = call_cli("cache", "clear", "--dir", cache, "--quiet")
    assert code == 2 and out == "" and "not a batchrun cache" in err


def test_entries_stored_ahead_of_the_clock_are_said_as_such(tmp_path: Path, sim: Simulator) -> None:
    # out-103 F10: a job without ttl_s: `explain` said "expired ... older than run.cache.ttl_s",
    # and `prune` counted them as "stored over 3650d ago".
    job, cache = write_job(tmp_path, SMALL_JOB), tmp_path / "cache"
    assert call_cli(job, "--base-url", sim.base_url, "-o", tmp_path / "a.jsonl", f"--cache={cache}")[0] == 0
    with sqlite3.connect(cache / FILE_NAME) as db:
        db.execute("UPDATE entries SET created_at = created_at + 86400 WHERE model = 'openai/gpt-4o-mini'")
    code, text, _ = call_cli("cache", "explain", job, "--dir", cache, "--base-url", sim.base_url, "--prompt", "sum")
    assert code == 0 and "stored ahead of this clock: its age is unknown" in text and "ttl_s" not in text, text
    # out-105 F5: with a ttl_s too.
    timed = write_job(tmp_path, SMALL_JOB.replace("run: {", "run: {cache: {ttl_s: 3600}, "), "timed.yaml")
    code, text, _ = call_cli("cache", "explain", timed, "--dir", cache, "--base-url", sim.base_url, "--prompt", "sum")
    assert code == 0 and "stored ahead of this clock: its age is unknown" in text and "ttl_s" not in text, text
    code, text, _ = call_cli("cache", "prune", "--older-than", "3650d", "--dir", cache)
    assert text == "pruned 0 entr(y/ies) stored over 3650d ago, and 10 stored ahead of this clock (their age unknown)\n"


def test_a_file_that_is_not_sqlite_is_never_removed(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / FILE_NAME).write_bytes(b"my notes, not a database\n" * 10)
    code, _, err = call_cli("cache", "clear", "--dir", cache)
    assert code == 2 and "not a batchrun cache (not an SQLite database)" in err and len(err.splitlines()) == 1
    assert (cache / FILE_NAME).read_bytes() == b"my notes, not a database\n" * 10


def test_a_new_or_empty_file_becomes_the_cache_and_says_so_in_its_header(tmp_path: Path, sim: Simulator) -> None:
    job, cache = write_job(tmp_path, SMALL_JOB), tmp_path / "cache"
    cache.mkdir()
    (cache / FILE_NAME).touch()  # empty: nothing to lose
    assert call_cli(job, "--base-url", sim.base_url, "-o", tmp_path / "a.jsonl", f"--cache={cache}")[0] == 0
    header = (cache / FILE_NAME).read_bytes()[:100]
    assert int.from_bytes(header[68:72], "big") == APPLICATION_ID  # in the main file, not only the WAL
    with sqlite3.connect(cache / FILE_NAME) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
        marker = db.execute("SELECT value FROM meta WHERE name = 'application'").fetchone()
        assert marker == ("batchrun response cache",)
        assert db.execute("SELECT count(*) FROM entries").fetchone() == (20,)


def test_a_broken_batchrun_cache_is_removed_by_clear(tmp_path: Path, sim: Simulator) -> None:
    job, cache = write_job(tmp_path, SMALL_JOB), tmp_path / "cache"
    assert call_cli(job, "--base-url", sim.base_url, "-o", tmp_path / "a.jsonl", f"--cache={cache}")[0] == 0
    with sqlite3.connect(cache / FILE_NAME) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = (cache / FILE_NAME).read_bytes()
    (cache / FILE_NAME).write_bytes(data[:100] + b"\xff" * (len(data) - 100))  # ours by its header, unreadable
    code, _, err = call_cli(job, "--base-url", sim.base_url, "-o", tmp_path / "b.jsonl", f"--cache={cache}", "-q")
    assert code == 0 and err.startswith("batchrun: warning: response cache off for this run:")
    assert call_cli("cache", "stats", "--dir", cache)[0] == 2
    code, text, _ = call_cli("cache", "clear", "--dir", cache)
    assert code == 0 and text.startswith("removed ")
    assert not any(p.exists() for p in cache_files(cache))


FIRST_FORMAT = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE entries (id INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE, row_id TEXT NOT NULL,
    group_id TEXT NOT NULL, model TEXT NOT NULL, repeat INTEGER NOT NULL, base_url TEXT NOT NULL,
    body BLOB NOT NULL, answer BLOB NOT NULL, cost REAL, created_at REAL NOT NULL);
CREATE TABLE runs (finished_at REAL NOT NULL, job TEXT NOT NULL, hits INTEGER NOT NULL,
    misses INTEGER NOT NULL, stored INTEGER NOT NULL, saved_usd REAL NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
"""


def test_a_cache_of_the_first_format_is_migrated_and_keeps_its_answers(tmp_path: Path, sim: Simulator) -> None:
    job, new, old = write_job(tmp_path, SMALL_JOB), tmp_path / "new", tmp_path / "old"
    assert call_cli(job, "--base-url", sim.base_url, "-o", tmp_path / "a.jsonl", f"--cache={new}")[0] == 0
    old.mkdir()
    with sqlite3.connect(old / FILE_NAME) as db:  # as the first cache format wrote it: no application id
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(FIRST_FORMAT)
        db.execute("ATTACH ? AS new", (str(new / FILE_NAME),))
        columns = "key, row_id, group_id, model, repeat, base_url, body, answer, cost, created_at"
        db.execute(f"INSERT INTO entries ({columns}) SELECT {columns} FROM new.entries")  # noqa: S608
    code, _, err = call_cli(job, "--base-url", sim.base_url, "-o", tmp_path / "b.jsonl", f"--cache={old}")
    assert (code, err) == (0, "")
    assert sim.stats.chat_requests == 20 and all(r["cached"] for r in final_records(tmp_path / "b.jsonl"))
    with sqlite3.connect(old / FILE_NAME) as db:
        assert db.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
        assert db.execute("SELECT count(*) FROM entries WHERE reply_bytes IS NULL").fetchone() == (0,)


def test_a_first_format_cache_with_a_number_for_an_answer_is_migrated_that_entry_a_miss(
    tmp_path: Path, sim: Simulator
) -> None:
    # break63 F2: SQLite let a BLOB column hold 12345; the migration's len() of it was a
    # TypeError traceback in every run, plan and cache command, `cache clear` included.
    job, old = write_job(tmp_path, SMALL_JOB), tmp_path / "old"
    old.mkdir()
    with sqlite3.connect(old / FILE_NAME) as db:
        db.executescript(FIRST_FORMAT)
        db.execute(
            "INSERT INTO entries (key, row_id, group_id, model, repeat, base_url, body, answer, cost, created_at) "
            "VALUES (x'00', 'r', 'g', 'm', 0, 'u', x'7b7d', 12345, 0.1, 1.0)"
        )
    code, _, err = call_cli(job, "--base-url", sim.base_url, "-o", tmp_path / "a.jsonl", f"--cache={old}")
    assert (code, err) == (0, "") and sim.stats.chat_requests == 20
    code, text, err = call_cli("cache", "stats", "--dir", old)
    assert code == 0 and "Traceback" not in err, err


def test_a_fifo_in_place_of_the_cache_file_is_refused_without_hanging(tmp_path: Path, sim: Simulator) -> None:
    job, cache = write_job(tmp_path, SMALL_JOB), tmp_path / "cache"
    cache.mkdir()
    os.mkfifo(cache / FILE_NAME)  # reading it would wait for a writer forever
    code, _, err = call_cli("cache", "clear", "--dir", cache)
    assert code == 2 and "not a batchrun cache (not a regular file)" in err
    code, _, err = call_cli(job, "--base-url", sim.base_url, "-o", tmp_path / "a.jsonl", f"--cache={cache}", "-q")
    assert code == 0 and "not a regular file" in err and stat.S_ISFIFO((cache / FILE_NAME).stat().st_mode)


@pytest.mark.parametrize("target", ["empty", "missing", "hard link"])
def test_a_link_in_place_of_the_cache_file_never_makes_its_target_the_cache(
    tmp_path: Path, sim: Simulator, target: str
) -> None:
    # break40 F4: an empty or missing file elsewhere, named through a link, became an SQLite cache.
    job, cache, victim = write_job(tmp_path, SMALL_JOB), tmp_path / "cache", tmp_path / "elsewhere.conf"
    cache.mkdir()
    if target != "missing":
        victim.write_bytes(b"")
    if target == "hard link":
        (cache / FILE_NAME).hardlink_to(victim)
    else:
        (cache / FILE_NAME).symlink_to(victim)
    code, _, err = call_cli(job, "--base-url", sim.base_url, "-o", tmp_path / "a.jsonl", f"--cache={cache}", "-q")
    assert code == 0 and "not a batchrun cache (a link to a file that is none)" in err
    assert (victim.read_bytes() == b"") if target != "missing" else not victim.exists()
    # out-145 F5: the upkeep commands said "nothing stored there yet", exit 0, of a dangling link.
    for action in (["stats"], ["prune", "--older-than", "1d"], ["clear"]):
        code, _, err = call_cli("cache", *action, "--dir", cache)
        assert code == ExitCode.USAGE and "not a batchrun cache (a link to a file that is none)" in err, action
    assert (victim.read_bytes() == b"") if target != "missing" else not victim.exists()
