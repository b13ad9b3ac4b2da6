"""Which file is the response cache: a file is written, migrated or deleted only once it
is positively batchrun's.

A `--cache DIR` can name a folder that already holds another program's
`responses.sqlite3`. Opening SQLite in read-write mode and running `CREATE TABLE IF NOT
EXISTS` would add our tables to it and switch it to WAL; `cache clear` would delete it. So
every open first looks at the file through a read-only connection and decides:

- missing or empty (0 bytes): NEW, ours to initialise;
- `PRAGMA application_id` is APPLICATION_ID: OURS (`user_version` is the schema version);
- application id 0 with exactly the tables and columns of the first cache format (which
  set no application id), and `meta.schema_version` '1': FIRST_FORMAT, migrated in place;
- anything else: NotOurCache, and the file is left as it is (no write, no delete).

A file whose SQLite header carries our application id but which SQLite cannot read (pages
past the first broken) is a BrokenCache: `cache clear` may remove it, nothing else.
"""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random

from ._exceptions import CacheError

APPLICATION_ID = 0x62526361  # "bRca": batchrun's response cache, in the SQLite header (offset 68)
SCHEMA_VERSION = 2  # PRAGMA user_version
SQLITE_MAGIC = b"SQLite format 3\x00"

NEW, OURS, FIRST_FORMAT = "new", "ours", "first format"

TABLES = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,    -- in order of storing: appends touch few pages
    key BLOB NOT NULL UNIQUE,  -- 16 bytes, see cache_key; the one index on the hot path
    row_id TEXT NOT NULL,      -- the row's stable id, for `explain`: same row, other request
    group_id TEXT NOT NULL,    -- job, prompt and vars without model and repeat, for `explain`
                               -- (not indexed: each index costs every store; explain scans)
    model TEXT NOT NULL,
    repeat INTEGER NOT NULL,
    base_url TEXT NOT NULL,
    body BLOB NOT NULL,        -- the exact request body sent
    answer BLOB NOT NULL,      -- JSON: the answer's fields, as the record had them
    cost REAL,
    created_at REAL NOT NULL,
    -- What decides, for the run that reads it, whether an entry may be a hit (and that
    -- planning reads without the answer): the reply's size against the reader's
    -- max_response_bytes, a cut answer against its store_length, no latency (batch)
    -- against its latency checks.
    reply_bytes INTEGER,
    finish_reason TEXT,
    latency_ms REAL
)""",
    """CREATE TABLE IF NOT EXISTS runs (
    finished_at REAL NOT NULL,
    job TEXT NOT NULL,
    hits INTEGER NOT NULL,
    misses INTEGER NOT NULL,
    stored INTEGER NOT NULL,
    saved_usd REAL NOT NULL
)""",
)

_FIRST_FORMAT = {
    "meta": ["name", "value"],
    "entries": [
        "id", "key", "row_id", "group_id", "model", "repeat", "base_url", "body", "answer", "cost", "created_at"
    ],
    "runs": ["finished_at", "job", "hits", "misses", "stored", "saved_usd"],
}  # fmt: skip


class NotOurCache(CacheError):
    """A file batchrun did not make: never written, migrated or deleted."""


class BrokenCache(CacheError):
    """Batchrun's cache by its header, but SQLite cannot read it: only `cache clear` removes it."""


def _header(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            return file.read(100)
    except OSError as exc:
        raise CacheError(f"{path}: cannot read: {exc.strerror or exc}") from None


def header_is_ours(path: Path) -> bool:
    """The file's first page names it batchrun's cache, whatever state the rest is in."""
    header = _header(path)
    return header.startswith(SQLITE_MAGIC) and int.from_bytes(header[68:72], "big") == APPLICATION_ID


def corrupt(error: sqlite3.Error) -> bool:
    """SQLITE_CORRUPT or SQLITE_NOTADB: the file's bytes are wrong. Locks, a full disk and
    I/O errors are OperationalError, a subclass: those are not the file's fault."""
    return type(error) is sqlite3.DatabaseError


def _tables(db: sqlite3.Connection) -> dict[str, list[str]]:
    names = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {name: [col[1] for col in db.execute(f"PRAGMA table_info({name!r})")] for name in names}


# How long a writer waits for another process's write lock before the cache is called locked
# (and the run goes on without it): one value for every connection the cache opens.
BUSY_TIMEOUT_S = 2.0


def read_only_uri(path: Path) -> str:
    """How a cache this process cannot write is opened. `immutable` (no WAL index is made beside
    it) unless a writer killed -9 left its WAL and its index: then only they hold what it had
    committed since its last checkpoint, which SQLite reads from a read-only folder too (break30
    m4: 12 answers invisible, paid again)."""
    wal, index = (path.with_name(path.name + suffix) for suffix in ("-wal", "-shm"))
    try:
        left = wal.stat().st_size > 0 and index.is_file()
    except OSError:
        left = False
    return f"{path.resolve().as_uri()}?mode=ro" + ("" if left else "&immutable=1")


def identify(path: Path, *, immutable: bool = False, busy_timeout_s: float = BUSY_TIMEOUT_S) -> str:
    """NEW, OURS or FIRST_FORMAT; raises NotOurCache, BrokenCache or CacheError (locked).
    Reads only: the connection is read-only, and nothing is created for a file not ours."""
    try:
        found = path.stat()
    except FileNotFoundError:
        found = None
    except OSError as exc:
        raise CacheError(f"{path}: {exc.strerror or exc}") from None
    if found is not None and not stat.S_ISREG(found.st_mode):  # a folder, a FIFO (whose reading would block)
        raise NotOurCache(f"{path}: not a batchrun cache (not a regular file); batchrun leaves it alone")
    if found is None or found.st_size == 0:
        if path.is_symlink() or (found is not None and found.st_nlink > 1):
            # A new cache is made only as a file of its own: through a link (a restored CI cache,
            # a shared folder), a missing or empty file elsewhere became it (break40 F4; a hard
            # link too: verify40).
            raise NotOurCache(f"{path}: not a batchrun cache (a link to a file that is none); batchrun leaves it alone")
        return NEW
    header = _header(path)
    if not header.startswith(SQLITE_MAGIC):
        raise NotOurCache(f"{path}: not a batchrun cache (not an SQLite database); batchrun leaves it alone")
    uri = read_only_uri(path) if immutable else f"{path.resolve().as_uri()}?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=busy_timeout_s, isolation_level=None)
        try:
            (app,) = db.execute("PRAGMA application_id").fetchone()
            if app == APPLICATION_ID:
                (version,) = db.execute("PRAGMA user_version").fetchone()
                if version != SCHEMA_VERSION:
                    raise CacheError(f"{path}: cache format {version}, this batchrun reads {SCHEMA_VERSION}")
                return OURS
            if app == 0 and _tables(db) == _FIRST_FORMAT:
                row = db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
                if row == ("1",):
                    return FIRST_FORMAT
        finally:
            db.close()
    except sqlite3.Error as exc:
        if int.from_bytes(header[68:72], "big") == APPLICATION_ID:
            raise (BrokenCache if corrupt(exc) else CacheError)(f"{path}: {exc}") from None
        raise NotOurCache(f"{path}: not a batchrun cache ({exc}); batchrun leaves it alone") from None
    raise NotOurCache(f"{path}: not a batchrun cache (another program's SQLite database); batchrun leaves it alone")


def busy(exc: BaseException) -> bool:
    """SQLite's "locked": another connection holds what this one needs."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.OperationalError) and code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


def prepare(db: sqlite3.Connection, path: Path, kind: str, busy_timeout_s: float) -> None:
    """Make the file the cache (or migrate it) and switch it to WAL, tried again for up to
    `busy_timeout_s` while SQLite answers "locked". Two runs opening a new cache at once can
    each hold what the other waits for (one's switch to WAL against the other's initialising
    transaction): SQLite then answers "locked" at once, without its busy timeout, and a run
    went on without the cache (2 in 300 rounds of three processes opening one new cache)."""
    retrying = Retrying(
        retry=retry_if_exception(busy),
        stop=stop_after_delay(busy_timeout_s),
        wait=wait_random(0.005, 0.05),
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            if kind == NEW:
                initialise(db, path)
            elif kind == FIRST_FORMAT:
                migrate_first_format(db)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")


def initialise(db: sqlite3.Connection, path: Path) -> None:
    """Make a new (missing or empty) file the cache. In one transaction, before WAL is on,
    so the application id is in the main file's header at once; a second process that
    initialises at the same time finds it done."""
    db.execute("BEGIN IMMEDIATE")
    try:
        (app,) = db.execute("PRAGMA application_id").fetchone()
        if app != APPLICATION_ID:
            if db.execute("SELECT count(*) FROM sqlite_master").fetchone() != (0,):
                raise NotOurCache(f"{path}: not a batchrun cache (written meanwhile by another program)")
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            for statement in TABLES:
                db.execute(statement)
            db.execute("INSERT INTO meta (name, value) VALUES ('application', 'batchrun response cache')")
            db.execute("INSERT INTO meta (name, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def migrate_first_format(db: sqlite3.Connection) -> None:
    """The first format's file, in place: three columns, filled from each stored answer (a
    reply's size was not kept: the stored answer's own size stands in, a lower bound)."""
    import orjson

    db.execute("BEGIN IMMEDIATE")
    try:
        (app,) = db.execute("PRAGMA application_id").fetchone()
        if app != APPLICATION_ID:  # not migrated meanwhile by another process
            for column in ("reply_bytes INTEGER", "finish_reason TEXT", "latency_ms REAL"):
                db.execute(f"ALTER TABLE entries ADD COLUMN {column}")
            updates = []
            for row_id, answer in db.execute("SELECT id, answer FROM entries").fetchall():
                # A cell SQLite let hold another type (a number in the BLOB column) is read as
                # no answer, its entry a miss: a TypeError here was a traceback in every run,
                # plan and cache command, `cache clear` too (break63 F2).
                stored = answer if isinstance(answer, (bytes, str)) else b""
                try:
                    data = orjson.loads(stored)
                except orjson.JSONDecodeError:
                    data = {}
                data = data if isinstance(data, dict) else {}
                reason, latency = data.get("finish_reason"), data.get("latency_ms")
                updates.append(
                    (
                        len(stored),
                        reason if isinstance(reason, str) else None,
                        latency if isinstance(latency, (int, float)) else None,
                        row_id,
                    )
                )
            db.executemany(
                "UPDATE entries SET reply_bytes = ?, finish_reason = ?, latency_ms = ? WHERE id = ?", updates
            )
            db.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(SCHEMA_VERSION),))
            db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('application', 'batchrun response cache')")
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
