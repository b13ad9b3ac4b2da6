"""The library side of `batchrun cache stats | prune | clear`: durations and the stats text."""

from __future__ import annotations

import re

from ._cache import CacheStats, utc_seconds

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")


def parse_duration(text: str) -> float:
    """`90s`, `15m`, `12h`, `30d`, `2w`, or a number of seconds; combinations like `1d12h` too."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 12h, 30d, 2w)")
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
