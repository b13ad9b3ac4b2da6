"""The response cache's storage: one SQLite file (stdlib sqlite3, WAL) of ok answers.

The key of an entry is a hash of the endpoint's base URL, the repeat index and the
request fingerprint (`Request.fingerprint`, the hash of the exact body sent: model,
messages and every param, temperature and seed included). The body itself is stored
beside the answer and compared byte for byte on every lookup, so a hit is always the
exact same request, and `cache explain` can show what differs from the nearest entry.
The API key travels in a header, never in the body: it is in no key and no entry.

Why SQLite in WAL mode: several runs and shards on one machine share the file (readers
never block the writer; writers wait `busy_timeout_s` for each other), and a commit is
atomic, so a kill -9 at any point leaves the last committed state. Every statement runs
in autocommit mode: one INSERT is one transaction. With `synchronous=NORMAL`, a commit
in WAL mode does not fsync; an OS crash can lose the last answers stored (they are then
asked again) but never corrupts the file.

Every sqlite3 failure leaves this module as a CacheError; the run's side (_cache_session)
turns that into a warning and "no cache", never a failed run. A file is written (or
deleted) only once _cache_file has identified it as batchrun's cache.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from ._cache_file import (
    BUSY_TIMEOUT_S,
    FIRST_FORMAT,
    NEW,
    TABLES,
    BrokenCache,
    NotOurCache,
    busy,
    corrupt,
    header_is_ours,
    identify,
    prepare,
    read_only_uri,
)
from ._cache_values import (
    ENTRY_COLUMNS,
    CachedAnswer,
    CacheEntry,
    CacheStats,
    EntryRow,
    Probe,
    RunStats,
    blob,
    cost_or_none,
    number_or_none,
    size_or_none,
)
from ._exceptions import CacheError
from ._formats import LAST_TIME

FILE_NAME = "responses.sqlite3"
_KEY_PREFIX = b"batchrun-cache/1\n"


def _answer(answer: Any, cost: Any, reply_bytes: Any) -> CachedAnswer | None:
    """An entry's answer columns as a stored answer, or None where they hold none."""
    stored = blob(answer)
    return None if stored is None else CachedAnswer.from_row(stored, cost_or_none(cost), size_or_none(reply_bytes))


def normalize_base_url(base_url: str) -> str:
    return base_url.rstrip("/")


@functools.lru_cache(maxsize=8)
def _endpoint_prefix(base_url: str) -> bytes:
    return _KEY_PREFIX + normalize_base_url(base_url).encode() + b"\n"


def cache_key(fingerprint: str, repeat: int, base_url: str) -> bytes:
    """The entry key: fingerprint of the exact body, repeat index, endpoint. Never a key.
    128 bits of SHA-256: the body itself is compared on every read anyway."""
    return hashlib.sha256(_endpoint_prefix(base_url) + f"{repeat}\n{fingerprint}".encode()).digest()[:16]


def cache_files(directory: Path) -> list[Path]:
    """The database and its WAL companions."""
    main = directory / FILE_NAME
    return [main, main.with_name(FILE_NAME + "-wal"), main.with_name(FILE_NAME + "-shm")]


class NoCache(CacheError):
    """The folder holds no cache file (yet): for the `cache` commands, an empty cache."""


Freshness = tuple[float, float]  # stored no earlier, no later than these times
_STORED_WITHIN = {False: " AND created_at BETWEEN ? AND ?", True: ""}
# Stored more than this ahead of the clock (a clock set ahead at the time, a year: break51 F9),
# an entry's age is unknown: never fresh, with a ttl_s or without one (out-100 F6: used without,
# the default), and pruned by any prune.
FUTURE_SLACK_S = 300.0


def freshness(ttl_s: float | None, now: float) -> Freshness:
    """The times an entry must have been stored between to be fresh under `ttl_s` (None: any age)."""
    return (-math.inf if ttl_s is None else now - ttl_s, now + FUTURE_SLACK_S)


class ResponseCache:
    """One connection to the cache file; every method raises CacheError, nothing else."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path
        self.read_only = False  # a folder this process cannot write: lookups only

    @classmethod
    def open(cls, directory: Path, *, create: bool = True, busy_timeout_s: float | None = None) -> ResponseCache:
        """Raises NoCache, NotOurCache (a file batchrun did not make: left untouched),
        BrokenCache or CacheError. A missing or empty file is made the cache when `create`."""
        if busy_timeout_s is None:
            busy_timeout_s = BUSY_TIMEOUT_S  # read here, not when the module loaded: tests shorten it
        path = directory / FILE_NAME
        if not create and not path.exists() and not path.is_symlink():  # a dangling link is said (out-145 F5)
            raise NoCache(f"{path}: no cache here yet")
        if directory.exists() and not directory.is_dir():
            raise CacheError(f"{directory}: not a folder")
        home = os.environ.get("HOME")
        if home and not Path(home).is_dir() and directory.is_relative_to(home):
            # A service account's HOME (/nonexistent) is not made, with the cache inside it, by a
            # run as root (break36): the cache stays off until run.cache.dir names a folder.
            raise CacheError(f"{directory}: its home folder {home} does not exist (set run.cache.dir)")
        try:
            # Never writable by others, whatever the umask: under umask 000 the folder was 0777, and
            # another user could put a cache of planted answers in it (break36 F5).
            directory.mkdir(parents=True, exist_ok=True, mode=0o755)
        except OSError as exc:
            raise CacheError(f"{directory}: cannot create the cache folder: {exc.strerror or exc}") from None
        writable = os.access(directory, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))
        kind = identify(path, immutable=not writable, busy_timeout_s=busy_timeout_s)
        if kind == NEW and not create:
            raise NoCache(f"{path}: no cache here yet")
        if not writable:
            if kind == FIRST_FORMAT:
                raise CacheError(f"{path}: a cache of an older batchrun, read-only here (it cannot be updated)")
            return cls._read_only(path)
        try:
            connection = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise CacheError(f"{path}: {exc}") from None
        cache = cls(connection, path)
        try:
            with cache._errors():
                prepare(connection, path, kind, busy_timeout_s)
        except CacheError:
            connection.close()
            raise
        return cache

    @classmethod
    def _read_only(cls, path: Path) -> ResponseCache:
        """A cache in a folder this process cannot write (a read-only mount, another user's
        folder): answers are read, none is stored (`read_only_uri`)."""
        try:
            connection = sqlite3.connect(read_only_uri(path), uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise CacheError(f"{path}: {exc}") from None
        cache = cls(connection, path)
        cache.read_only = True
        return cache

    @classmethod
    def empty(cls) -> ResponseCache:
        """A cache with nothing in it, in memory: what `explain` reads where none exists yet."""
        connection = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        for statement in TABLES:
            connection.execute(statement)
        return cls(connection, Path(":memory:"))

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """sqlite3 errors (corrupt file, locked past the busy timeout, disk full) as CacheError;
        a file SQLite finds corrupt (ours: it was identified on opening) as BrokenCache."""
        try:
            yield
        except sqlite3.Error as exc:
            # Locked past the busy timeout: say by whom it can be (break21 R22).
            hint = " (another process holds it, such as a run using this cache: try again when it has ended)"
            message = f"{self.path}: {exc}{hint if busy(exc) else ''}"
            raise (BrokenCache if corrupt(exc) else CacheError)(message) from None

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # closing a broken connection has nothing left to lose
            self._db.close()

    # -- the run's path -------------------------------------------------------------------
    def lookup(self, key: bytes, payload: bytes, fresh: Freshness | None) -> CachedAnswer | None:
        """The answer stored for exactly this body, unless stored outside `fresh` (`freshness`)."""
        with self._errors():
            row = self._db.execute(
                "SELECT body, answer, cost, reply_bytes FROM entries WHERE key = ?" + _STORED_WITHIN[fresh is None],
                (key, *(fresh or ())),
            ).fetchone()
        if row is None:
            return None
        body, answer, cost, reply_bytes = row
        return _answer(answer, cost, reply_bytes) if blob(body) == payload else None

    def probe_many(self, keys: list[bytes], fresh: Freshness | None) -> dict[bytes, Probe]:
        """What planning needs of each of these keys that is stored and fresh, in one query,
        without reading the answers."""
        marks = ",".join("?" * len(keys))
        with self._errors():
            rows = self._db.execute(
                f"SELECT key, body, answer, cost, reply_bytes FROM entries WHERE key IN ({marks})"  # noqa: S608 - marks only
                + _STORED_WITHIN[fresh is None],
                (*keys, *(fresh or ())),
            ).fetchall()
        return {
            bytes(key): Probe(blob(body) or b"", _answer(answer, cost, size)) for key, body, answer, cost, size in rows
        }

    def store_many(self, rows: list[EntryRow]) -> None:
        """One transaction for a batch: a commit per answer would cost more than the answer's
        own bookkeeping. Atomic: after a crash, all of a batch is there or none of it."""
        with self._errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    f"INSERT OR REPLACE INTO entries ({ENTRY_COLUMNS}) VALUES ({', '.join('?' * 13)})",  # noqa: S608 - constants
                    rows,
                )
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # the error that got here is the one to report
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def record_run(self, stats: RunStats) -> None:
        with self._errors():
            self._db.execute(
                "INSERT INTO runs (finished_at, job, hits, misses, stored, saved_usd) VALUES (?, ?, ?, ?, ?, ?)",
                (stats.finished_at, stats.job, stats.hits, stats.misses, stats.stored, stats.saved_usd),
            )

    # -- explain --------------------------------------------------------------------------
    def entries_of_groups(self, groups: set[str]) -> dict[str, list[CacheEntry]]:
        """Stored requests of these prompt rows (any model, any repeat), newest first, in one
        pass over the file: explain is rare, and an index would cost every store."""
        found: dict[str, list[CacheEntry]] = {}
        with self._errors():
            rows = self._db.execute(
                "SELECT group_id, key, row_id, model, repeat, base_url, body, cost, created_at FROM entries"
                " ORDER BY id DESC"
            )
            for group, key, row, model, repeat, base_url, body, cost, created_at in rows:
                if group not in groups:
                    continue
                try:
                    decoded = orjson.loads(blob(body) or b"")
                except orjson.JSONDecodeError:
                    continue
                typed = isinstance(row, str) and isinstance(model, str) and isinstance(base_url, str)
                if isinstance(decoded, dict) and typed and isinstance(repeat, int) and number_or_none(created_at):
                    entry = CacheEntry(blob(key) or b"", row, model, repeat, base_url, decoded, cost, created_at)
                    found.setdefault(group, []).append(entry)
        return found

    # -- maintenance ----------------------------------------------------------------------
    def stats(self, last_runs: int = 10) -> CacheStats:
        """Figures of the rows whose columns have their types: a value something else wrote
        (a text time, a text count) is left out, as a lookup leaves such an entry out."""
        number = "typeof({}) IN ('integer', 'real')"
        when = "typeof({0}) IN ('integer', 'real') AND {0} BETWEEN 0 AND " + repr(LAST_TIME)  # not 9e999 (R27)
        with self._errors():
            entries, oldest, newest = self._db.execute(
                f"SELECT count(*), min(CASE WHEN {when.format('created_at')} THEN created_at END),"  # noqa: S608
                f" max(CASE WHEN {when.format('created_at')} THEN created_at END) FROM entries"
            ).fetchone()
            models = dict(
                self._db.execute(
                    "SELECT CAST(model AS TEXT), count(*) FROM entries GROUP BY CAST(model AS TEXT) ORDER BY 1"
                )
            )
            typed = " AND ".join(
                [when.format("finished_at"), number.format("saved_usd"), "typeof(job) = 'text'"]
                + [f"typeof({name}) = 'integer'" for name in ("hits", "misses", "stored")]
            )
            runs = [
                RunStats(*row)
                for row in self._db.execute(
                    f"SELECT finished_at, job, hits, misses, stored, saved_usd FROM runs WHERE {typed}"  # noqa: S608
                    " ORDER BY finished_at DESC LIMIT ?",
                    (last_runs,),
                )
            ]
        size = sum(p.stat().st_size for p in cache_files(self.path.parent) if p.exists())
        return CacheStats(self.path, entries, size, models, oldest, newest, runs)

    def prune(self, older_than_s: float, now: float | None = None) -> int:
        return sum(self.prune_counts(older_than_s, now))

    def prune_counts(self, older_than_s: float, now: float | None = None) -> tuple[int, int]:
        """(stored longer ago than `older_than_s`, stored ahead of the clock or at no time) removed:
        the latter's age is unknown, and `prune` counted them as old (out-103 F10)."""
        now = time.time() if now is None else now
        with self._errors():
            ahead = self._db.execute("DELETE FROM entries WHERE created_at > ?", (now + FUTURE_SLACK_S,)).rowcount
            old = self._db.execute("DELETE FROM entries WHERE created_at < ?", (now - older_than_s,)).rowcount
        self._shrunk(int(old) + int(ahead))
        return int(old), int(ahead)

    def clear(self, model: str | None = None) -> int:
        with self._errors():
            if model is None:
                removed = self._db.execute("DELETE FROM entries").rowcount
                self._db.execute("DELETE FROM runs")
            else:
                removed = self._db.execute("DELETE FROM entries WHERE model = ?", (model,)).rowcount
        return self._shrunk(int(removed))

    def _shrunk(self, removed: int) -> int:
        """The file given back its free pages: deleted, an entry's pages were only reused, and a
        cache emptied of 100,000 entries stayed 81 MiB, saved by CI after every run (break52 F3).
        A run writing the cache meanwhile keeps it as it is until the next prune (best effort)."""
        with contextlib.suppress(sqlite3.Error):
            if removed:
                self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed


def remove_cache(directory: Path) -> list[Path]:
    """Delete the cache files outright: the way out of a corrupt cache. Only a file whose
    header names it batchrun's cache: never another program's file of the same name."""
    if not header_is_ours(directory / FILE_NAME):
        raise NotOurCache(f"{directory / FILE_NAME}: not a batchrun cache; batchrun does not delete it")
    removed = []
    for path in cache_files(directory):
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise CacheError(f"{path}: cannot remove: {exc.strerror or exc}") from None
    return removed
