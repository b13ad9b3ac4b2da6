"""The library side of `batchrun cache explain | stats | prune | clear`: each returns its text."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from ._cache import FILE_NAME, NoCache, ResponseCache, freshness, remove_cache
from ._cache_explain import explain, render_explanations
from ._cache_file import BrokenCache
from ._cache_session import CacheSettings, default_cache_dir
from ._cache_values import CacheStats
from ._exceptions import ConfigError
from ._formats import utc_seconds
from ._job import load_job

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")  # a unit is required: parse_duration


def parse_duration(text: str) -> float:
    """`90s`, `15m`, `12h`, `30d`, `2w`; combinations like `1d12h` too. Every number needs its
    unit: `--older-than 30` read as seconds would empty a cache meant to keep 30 days."""
    if "M" in text:
        # Months to ISO 8601, Java and `date`: read as minutes, `6M` emptied a cache (out-110 F4).
        raise ValueError(f"not a duration: {text!r} (M is no unit here: m is minutes; for months give days, e.g. 180d)")
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact or any(not unit for _, unit in parts):
        raise ValueError(f"not a duration: {text!r} (give a unit: e.g. 90s, 15m, 12h, 30d, 2w)")
    return sum(float(number) * _UNITS[unit or "s"] for number, unit in parts)


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def render_stats(stats: CacheStats) -> str:
    lines = [f"cache {stats.path}", f"entries: {stats.entries}, size {_size(stats.size_bytes)}"]
    if stats.oldest is not None and stats.newest is not None:
        lines.append(f"stored between {utc_seconds(stats.oldest)} and {utc_seconds(stats.newest)}")
    for model, count in stats.models.items():
        lines.append(f"  {model}: {count}")
    if stats.runs:
        lines.append("last runs:")
        for run in stats.runs:
            looked_up = run.hits + run.misses
            rate = f"{run.hits / looked_up * 100:.1f}%" if looked_up else "-"
            lines.append(
                f"  {utc_seconds(run.finished_at)}  {run.job}: hit rate {rate} ({run.hits} hit(s), "
                f"{run.misses} miss(es)), {run.stored} stored, ${run.saved_usd:.6f} saved"
            )
    else:
        lines.append("no run has used this cache yet")
    return "\n".join(lines)


@dataclass(frozen=True)
class CacheCommand:
    action: str  # explain, stats, prune, clear
    folder: Path | None = None
    job: Path | None = None
    row: str | None = None
    prompt: str | None = None
    model: str | None = None
    base_url: str | None = None  # explain: the endpoint as the run names it, if not the job's
    older_than: str | None = None


def run_cache_command(command: CacheCommand) -> str:
    """Raises CacheError (no cache there, corrupt, locked) or ConfigError (bad input)."""
    settings = None
    older_than = 0.0
    if command.action == "prune":
        # Read first, cache or none: `--older-than 30` passed on a machine without a cache and
        # failed once one existed, in a cron line written there (break23 F9).
        try:
            older_than = parse_duration(command.older_than or "")
        except ValueError as exc:
            raise ConfigError(f"--older-than: {exc}") from None
    if command.action == "explain":
        assert command.job is not None  # the parser requires it
        job = load_job(command.job)
        settings = CacheSettings.from_run(True if job.run.cache is None or job.run.cache is False else job.run.cache)
    folder = command.folder or (settings.directory if settings else None) or default_cache_dir()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder (the cache is a folder holding {FILE_NAME})")
    missing = ""
    try:
        store = ResponseCache.open(folder, create=False)
    except NoCache:
        if command.action != "explain":
            return f"no cache in {folder}: nothing stored there yet"
        store = ResponseCache.empty()  # every row: never stored
        missing = f"no cache in {folder}: nothing stored there yet\n"  # said once (verify21 V17)
    except BrokenCache as exc:
        if command.action != "clear" or command.model is not None:
            raise
        return _remove_broken(folder, exc)
    try:
        if command.action == "explain":
            ttl = settings.ttl_s if settings else None
            text, count = render_explanations(
                explain(
                    job,
                    store,
                    command.base_url or job.endpoint.base_url,
                    row=command.row,
                    prompt=command.prompt,
                    model=command.model,
                    fresh=freshness(ttl, time.time()),
                    store_length=settings.store_length if settings else False,
                )
            )
            if count == 0:
                raise ConfigError(f"{command.job}: no row matches the selection")
            return missing + text
        if command.action == "stats":
            return render_stats(store.stats())
        if command.action == "prune":
            old, ahead = store.prune_counts(older_than)
            unknown = f", and {ahead} stored ahead of this clock (their age unknown)" if ahead else ""
            return f"pruned {old} entr(y/ies) stored over {command.older_than} ago{unknown}"
        which = "" if command.model is None else f" of {command.model}"
        try:
            return f"cleared {store.clear(command.model)} entr(y/ies){which} from {store.path}"
        except BrokenCache as exc:
            if command.model is not None:
                raise
            store.close()
            return _remove_broken(folder, exc)
    finally:
        store.close()


def _remove_broken(folder: Path, error: BrokenCache) -> str:
    """A corrupt cache (ours by its header) cannot be emptied from inside: clearing it
    removes its files. Another program's file is never removed (NotOurCache)."""
    return f"removed {len(remove_cache(folder))} cache file(s) in {folder} ({error})"
