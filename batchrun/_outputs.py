"""Where results go: the default path, the summary beside it, finding a run to resume."""

from __future__ import annotations

import json
import time
from pathlib import Path

DEFAULT_PATTERN = "outputs/{name}/{timestamp}.jsonl"


def default_output(job_name: str, pattern: str | None, now: float) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return Path((pattern or DEFAULT_PATTERN).format(name=job_name, timestamp=stamp))


def summary_path(results: Path) -> Path:
    return results.with_name(results.stem + ".summary.json")


def latest_incomplete(job_name: str, pattern: str | None) -> Path | None:
    """The newest results file of the job whose summary is missing (a crash) or says incomplete."""
    folder = default_output(job_name, pattern, 0).parent
    if not folder.is_dir():
        return None
    for candidate in sorted(folder.glob("*.jsonl"), reverse=True):  # UTC stamps sort by time
        summary = summary_path(candidate)
        try:
            complete = json.loads(summary.read_text(encoding="utf-8")).get("complete") is True
        except (OSError, ValueError):
            complete = False
        if not complete:
            return candidate
    return None
