"""A run's use of the response cache: a lookup before a row is budgeted and sent, a store
after an ok answer, counters for the summary and for `cache stats`.

The cache must never fail a run. Any CacheError (a corrupt file, a lock held past the busy
timeout, a full disk) turns the session off with one warning, and the run goes on as if
it had been started without a cache.

What is stored: ok answers with text or tool calls that ended as a whole answer does
(`finish_reason` `stop` or `tool_calls`). Never errors (they never reach `store`), empty
answers, answers of unknown cost, answers cut by moderation (`content_filter`) or saying no end,
or answers cut at `max_tokens` (`finish_reason: length`) unless the job says
`store_length: true`: a cut answer is usually a setting to fix, not an answer to keep.

What is a hit is decided by the run that reads, never by the one that stored (`usable`):
an entry whose reply was larger than this run's `max_response_bytes`, a cut answer when
this job does not say `store_length: true`, or an answer without a latency (collected in
batch mode) for a sync row with a latency check, is a miss: this run would not have
accepted, or could not grade, that answer as it arrives.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from ._cache import Freshness, ResponseCache, cache_key, freshness, normalize_base_url
from ._cache_hits import checked_hit, probe_of, whole_answer, why_not_a_hit
from ._cache_values import CachedAnswer, EntryRow, Probe, RunStats, encode_answer, saving
from ._client import ChatResult
from ._clock import Clock
from ._exceptions import CacheError
from ._matrix import Request, row_group_id
from ._row_cost import RowCharges
from ._scrub import Scrubber

APP_NAME = "batchrun"
# Answers are written in batches (one transaction each): at most this many, or this old.
# A kill -9 loses the batch in memory, never the file: those rows are simply asked again.
FLUSH_EVERY = 256
FLUSH_AFTER_S = 0.5
MISS_KEYS_KEPT = 4096  # rows between their lookup and their store: in flight, at most a few hundred
PROBE_CHUNK = 500  # keys per planning query (SQLite allows 999 parameters in old builds)


def default_cache_dir() -> Path:
    """The user's cache folder: $XDG_CACHE_HOME/batchrun (else ~/.cache/batchrun) on Linux,
    ~/Library/Caches/batchrun on macOS, %LOCALAPPDATA%\\batchrun\\Cache on Windows."""
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


@dataclass(frozen=True)
class CacheSettings:
    directory: Path
    ttl_s: float | None = None
    store_length: bool = False

    @classmethod
    def from_run(cls, raw: bool | dict[str, Any] | None) -> CacheSettings | None:
        """`run.cache` after the CLI's overrides: absent or false is off; true or a mapping is on,
        an empty one too (`cache: {}`, the defaults: read as off, every run paid in full: break63 F3)."""
        if raw is None or raw is False:
            return None
        options = raw if isinstance(raw, dict) else {}
        folder = options.get("dir")
        return cls(
            Path(os.path.expanduser(folder)) if folder else default_cache_dir(),  # `~nosuchuser` as typed
            options.get("ttl_s"),
            bool(options.get("store_length", False)),
        )


def storable(result: ChatResult, store_length: bool) -> bool:
    """Whether an ok answer may be kept: it has text or tool calls, and it ended as a whole
    answer does (`stop`, `tool_calls`), or was cut at max_tokens where that is allowed. A
    moderation cut (`content_filter`, the provider's, which may not come again) or an answer
    that says no end at all was replayed for ever as a good one (break63 F5)."""
    if not result.content.strip() and not result.tool_calls:
        return False
    return whole_answer(result.finish_reason, store_length)


class CacheSession:
    def __init__(
        self,
        store: ResponseCache,
        settings: CacheSettings,
        *,
        job_name: str,
        base_url: str,
        clock: Clock,
        warn: Callable[[str], None],
        max_reply_bytes: int | None = None,
        batch: bool = False,
    ) -> None:
        self._store: ResponseCache | None = store
        self.max_reply_bytes = max_reply_bytes  # this run's max_response_bytes
        self.scrub = Scrubber()  # the run's: set to its client's once there is one (_orchestration)
        self.batch = batch  # a batch-mode run: latency checks do not apply to its rows
        self.settings = settings
        self.job_name = job_name
        self.base_url = base_url
        self._stored_base_url = normalize_base_url(base_url)
        self.clock = clock
        self.warn = warn
        self.hits = 0
        self.misses = 0
        self.stored = 0
        self._stored_keys: set[bytes] = set()
        self.saved_usd = 0.0
        self._pending: list[EntryRow] = []
        self._pending_keys: set[bytes] = set()
        # The key of each row looked up and missed, for its store: one hash less per miss.
        # Rows that end in an error never take theirs: the memo is dropped when it grows.
        self._miss_keys: dict[str, bytes] = {}
        self._last_flush = clock.monotonic()
        # Keys planning found stored, once it has looked at every row (`planned`): the run
        # then asks the file only about those, and a miss costs no query at all.
        self._expected: set[bytes] | None = None
        self._planning: set[bytes] = set()

    @classmethod
    def open(
        cls,
        settings: CacheSettings,
        *,
        job_name: str,
        base_url: str,
        clock: Clock,
        warn: Callable[[str], None],
        busy_timeout_s: float | None = None,
        max_reply_bytes: int | None = None,
        batch: bool = False,
    ) -> CacheSession | None:
        """The session, or None (with a warning) when the cache cannot be used at all."""
        try:
            store = ResponseCache.open(settings.directory, busy_timeout_s=busy_timeout_s)
        except CacheError as exc:
            warn(f"warning: response cache off for this run: {exc}")
            return None
        if store.read_only:
            warn(f"warning: response cache {store.path} is read-only here: answers are read from it, none is stored")
        return cls(
            store,
            settings,
            job_name=job_name,
            base_url=base_url,
            clock=clock,
            warn=warn,
            max_reply_bytes=max_reply_bytes,
            batch=batch,
        )

    @property
    def active(self) -> bool:
        return self._store is not None

    def _off(self, error: CacheError) -> None:
        self.warn(f"warning: response cache off for the rest of this run: {error}")
        if self._store is not None:
            self._store.close()
        self._store = None

    def _fresh(self) -> Freshness | None:
        return freshness(self.settings.ttl_s, self.clock.time())

    def usable(self, request: Request, probe: Probe) -> bool:
        """Whether a stored entry may be this run's hit (see `why_not_a_hit`)."""
        if probe.body != request.payload:  # never a hit: the key matched, the body did not
            return False
        return why_not_a_hit(request, probe, self.max_reply_bytes, self.settings.store_length, self.batch) is None

    def peek(self, request: Request) -> CachedAnswer | None:
        """The stored answer (as first received) if this request is stored, else None; not counted."""
        return next(self.peek_all([request]))[1]

    def peek_all(self, requests: Iterable[Request]) -> Iterator[tuple[Request, CachedAnswer | None]]:
        """Each request with its stored answer (as first received: `cost`, what it first cost), or
        None when not stored; nothing is counted. Planning calls it for every row it will run, then `planned()`.
        The file is asked about PROBE_CHUNK rows at a time: one query per row would cost
        planning more than the rest of the cache's work on a miss."""
        source = iter(requests)
        while chunk := list(islice(source, PROBE_CHUNK)):
            found: dict[bytes, Probe] = {}
            keys = [cache_key(r.fingerprint, r.repeat, self.base_url) for r in chunk]
            if self._store is not None:
                try:
                    found = self._store.probe_many(keys, self._fresh())
                except CacheError as exc:
                    self._off(exc)
            for request, key in zip(chunk, keys, strict=True):
                stored = found.get(key)
                answer = stored.answer if stored is not None and self.usable(request, stored) else None
                if answer is None:
                    yield request, None
                    continue
                self._planning.add(key)
                yield request, answer

    def planned(self) -> None:
        """Every row to run has been peeked at: from now on, only those found are looked up."""
        self._expected, self._planning = self._planning, set()

    def may_hit(self, request: Request) -> bool:
        """Whether `lookup` may find this row (planning found it, or did not look); not counted."""
        if self._store is None:
            return False
        return self._expected is None or cache_key(request.fingerprint, request.repeat, self.base_url) in self._expected

    def lookup(self, request: Request, *, unplanned: bool = False) -> CachedAnswer | None:
        """The stored answer, counted as a hit, or None, counted as a miss. `unplanned`: a
        request planning could not peek at (a grader's, whose body holds the answer), so
        the file is asked whatever planning found."""
        if self._store is None:
            return None
        key = cache_key(request.fingerprint, request.repeat, self.base_url)
        if key in self._pending_keys:
            # Stored by this run and not yet written: a grader's request the same as one asked a
            # moment ago (a repeat's same answer) was paid again (out-150: 30 sent for 4 bodies).
            self.flush()
            if self._store is None:
                return None
        answer = None
        if unplanned or self._expected is None or key in self._expected:
            try:
                answer = self._store.lookup(key, request.payload, self._fresh())
            except CacheError as exc:
                self._off(exc)
                return None
            if answer is not None and not self.usable(request, probe_of(request, answer)):
                answer = None
            if answer is not None:
                answer = checked_hit(answer, self.scrub, self.max_reply_bytes)
        if answer is None:
            self.misses += 1
            if len(self._miss_keys) >= MISS_KEYS_KEPT:
                self._miss_keys.clear()
            self._miss_keys[request.id] = key
        else:
            self.hits += 1
            self.saved_usd += saving(answer.cost, answer.cost_status)[0]  # an estimate saves nothing known
        return answer

    def store(
        self,
        request: Request,
        result: ChatResult,
        latency_ms: float | None,
        generated_at: str,
        *,
        cost: float | None,
        cost_status: str | None,
    ) -> None:
        """Queue an ok answer with what it cost. An answer whose cost is unknown is not kept:
        a hit must say what it saved, and an unknown cost must never pass for free."""
        if self._store is None or self._store.read_only or not storable(result, self.settings.store_length):
            return
        if cost is None or cost_status == "unknown":
            return
        answer = encode_answer(
            result.generation_id,
            result.model,
            result.provider,
            result.content,
            result.finish_reason,
            result.native_finish_reason,
            result.usage,
            latency_ms,
            generated_at,
            result.refusal,
            result.reasoning,
            cost_status,
            result.tool_calls,
        )
        key = self._miss_keys.pop(request.id, None) or cache_key(request.fingerprint, request.repeat, self.base_url)
        self._pending_keys.add(key)
        self._pending.append(
            (
                key,
                request.id,
                row_group_id(self.job_name, request.prompt_id, request.vars),
                request.model,
                request.repeat,
                self._stored_base_url,
                request.payload,
                answer,
                cost,
                self.clock.time(),
                # A reply the client did not read (a test's answer) is as large as what is kept.
                len(answer) if result.reply_bytes is None else result.reply_bytes,
                result.finish_reason,
                latency_ms,
            )
        )
        if len(self._pending) >= FLUSH_EVERY or self.clock.monotonic() - self._last_flush >= FLUSH_AFTER_S:
            self.flush()

    def store_row(
        self, request: Request, result: ChatResult, latency_ms: float | None, finished_at: str, charges: RowCharges
    ) -> None:
        """`store` with the answering attempt's own cost: what a hit saves is that answer,
        not the retries it took to get it."""
        answered = charges.answer
        if answered is None or answered.above_worst:
            # A cost past the attempt's worst case is one the run did not believe: kept, every
            # hit said it saved it ("$10000 saved" of $5000 a reply claimed: break63 F4).
            return
        cost, status = answered.cost, answered.status
        if answered.is_byok and cost is not None:
            # A BYOK answer's cost is OpenRouter's fee; what it was charged, and what a hit saves,
            # has the provider's charge too, as its row's `spent` (break63 F6: a 20th of it).
            cost += answered.upstream_inference_cost or 0.0
        self.store(request, result, latency_ms, finished_at, cost=cost, cost_status=status)

    def flush(self) -> None:
        if self._store is None or not self._pending:
            return
        batch, self._pending = self._pending, []
        self._pending_keys.clear()
        self._last_flush = self.clock.monotonic()
        try:
            self._store.store_many(batch)
        except CacheError as exc:
            self._off(exc)
            return
        # Entries, not writes: a body stored twice (a grader's, the same for two repeats) is one.
        self._stored_keys.update(row[0] for row in batch)
        self.stored = len(self._stored_keys)

    def close(self) -> None:
        """Store what is pending, note this run's figures for `cache stats`, let go of the file."""
        self.flush()
        if self._store is None:
            return
        try:
            # A session that looked nothing up (`plan`, a resume with nothing left) is no run of
            # the cache's: `cache stats` showed plans among its last runs (break27 m12).
            if not self._store.read_only and (self.hits or self.misses or self.stored):
                self._store.record_run(
                    RunStats(self.clock.time(), self.job_name, self.hits, self.misses, self.stored, self.saved_usd)
                )
        except CacheError as exc:
            self.warn(f"warning: response cache: this run's figures were not recorded: {exc}")
        self._store.close()
        self._store = None
