"""A run's use of the response cache: a lookup before a row is budgeted and sent, a store
after an ok answer, counters for the summary and for `cache stats`.

The cache must never fail a run. Any CacheError (a corrupt file, a lock held past the busy
timeout, a full disk) turns the session off with one warning, and the run goes on as if
it had been started without a cache.

What is stored: ok answers with text. Never errors (they never reach `store`), empty
answers, or answers cut at `max_tokens` (`finish_reason: length`) unless the job says
`store_length: true`: a cut answer is usually a setting to fix, not an answer to keep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._cache import CachedAnswer, ResponseCache, RunStats, cache_key
from ._client import ChatResult
from ._clock import Clock
from ._exceptions import CacheError
from ._matrix import Request, row_group_id

APP_NAME = "batchrun"


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
        """`run.cache` after the CLI's overrides: absent or false is off; true or a mapping is on."""
        if not raw:
            return None
        options = raw if isinstance(raw, dict) else {}
        folder = options.get("dir")
        return cls(
            Path(folder).expanduser() if folder else default_cache_dir(),
            options.get("ttl_s"),
            bool(options.get("store_length", False)),
        )


def storable(result: ChatResult, store_length: bool) -> bool:
    """Whether an ok answer may be kept: it has text, and was not cut short unless allowed."""
    if not result.content.strip():
        return False
    return store_length or result.finish_reason != "length"


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
    ) -> None:
        self._store: ResponseCache | None = store
        self.settings = settings
        self.job_name = job_name
        self.base_url = base_url
        self.clock = clock
        self.warn = warn
        self.hits = 0
        self.misses = 0
        self.stored = 0
        self.saved_usd = 0.0

    @classmethod
    def open(
        cls,
        settings: CacheSettings,
        *,
        job_name: str,
        base_url: str,
        clock: Clock,
        warn: Callable[[str], None],
        busy_timeout_s: float = 2.0,
    ) -> CacheSession | None:
        """The session, or None (with a warning) when the cache cannot be used at all."""
        try:
            store = ResponseCache.open(settings.directory, busy_timeout_s=busy_timeout_s)
        except CacheError as exc:
            warn(f"warning: response cache off for this run: {exc}")
            return None
        return cls(store, settings, job_name=job_name, base_url=base_url, clock=clock, warn=warn)

    @property
    def active(self) -> bool:
        return self._store is not None

    def _off(self, error: CacheError) -> None:
        self.warn(f"warning: response cache off for the rest of this run: {error}")
        if self._store is not None:
            self._store.close()
        self._store = None

    def _fresh_after(self) -> float | None:
        ttl = self.settings.ttl_s
        return None if ttl is None else self.clock.time() - ttl

    def peek(self, request: Request) -> CachedAnswer | None:
        """The stored answer for this request, without counting it (for plan and pre-flight)."""
        if self._store is None:
            return None
        try:
            return self._store.lookup(
                cache_key(request.fingerprint, request.repeat, self.base_url), request.payload, self._fresh_after()
            )
        except CacheError as exc:
            self._off(exc)
            return None

    def lookup(self, request: Request) -> CachedAnswer | None:
        answer = self.peek(request)
        if answer is not None:
            self.hits += 1
            self.saved_usd += answer.cost or 0.0
        elif self._store is not None:
            self.misses += 1
        return answer

    def store(self, request: Request, result: ChatResult, latency_ms: float | None, generated_at: str) -> None:
        if self._store is None or not storable(result, self.settings.store_length):
            return
        answer = CachedAnswer(
            result.generation_id,
            result.model,
            result.provider,
            result.content,
            result.finish_reason,
            result.native_finish_reason,
            result.usage,
            result.cost,
            latency_ms,
            generated_at,
        )
        try:
            self._store.store(
                cache_key(request.fingerprint, request.repeat, self.base_url),
                row_id=request.id,
                group_id=row_group_id(self.job_name, request.prompt_id, request.vars),
                model=request.model,
                repeat=request.repeat,
                base_url=self.base_url,
                payload=request.payload,
                answer=answer,
                created_at=self.clock.time(),
            )
        except CacheError as exc:
            self._off(exc)
            return
        self.stored += 1

    def close(self) -> None:
        """Note this run's figures for `cache stats`, then let go of the file."""
        if self._store is None:
            return
        try:
            self._store.record_run(
                RunStats(self.clock.time(), self.job_name, self.hits, self.misses, self.stored, self.saved_usd)
            )
        except CacheError as exc:
            self.warn(f"warning: response cache: this run's figures were not recorded: {exc}")
        self._store.close()
        self._store = None
