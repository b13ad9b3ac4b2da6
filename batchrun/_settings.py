"""The job's `run:` and `endpoint:` sections: every run setting and its one default.

The defaults live here only. The retry policy (_retry), the HTTP client (_client) and the
worker pool (_worker_pool) take theirs from `DEFAULTS`, so a new setting is one edit here
(plus its schema entry and README line).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"


@dataclass(frozen=True)
class Endpoint:
    base_url: str = DEFAULT_BASE_URL
    api_key_env: str = "OPENROUTER_API_KEY"
    management_key_env: str = "OPENROUTER_MANAGEMENT_KEY"
    app_url: str | None = None
    app_title: str | None = None


@dataclass(frozen=True)
class RunSettings:
    """`run:` of the job, after defaults; the CLI overrides fields with `dataclasses.replace`."""

    concurrency: int = 16
    timeout_s: float = 60.0
    connect_timeout_s: float = 10.0
    max_response_bytes: int = 4 * 1024 * 1024  # an answer is kilobytes; a few MiB is generous
    output: str | None = None
    max_attempts: int = 6
    max_elapsed_s: float = 600.0
    max_wait_s: float = 120.0
    deadline_s: float | None = None
    grace_s: float = 10.0
    budget_usd: float | None = None
    budget_margin_usd: float = 0.0
    cost_margin: float = 0.1
    allow_unknown_prices: bool = False
    key_refresh_requests: int = 500
    key_refresh_s: float = 60.0
    pass_threshold: float | dict[str, Any] | None = None
    max_error_rate: float = 0.0
    isolated_key: bool = False
    key_expiry_s: float = 6 * 3600.0
    progress_every_s: float = 30.0
    cache: bool | dict[str, Any] | None = None  # the response cache: off unless asked (see _cache_session)
    mode: str = "sync"  # or "batch": OpenRouter's Batch API (README: "Batch mode")
    batch_poll_s: float = 60.0
    batch_max_requests: int = 10_000
    batch_multimodal: str = "sync"  # rows with non-text parts: run in sync mode, or "refuse" at validate
    batch_retry: str = "batch"  # --retry-errors of failed/expired items: a new batch, or "sync"
    stream: bool = False  # streaming mode; README "Streaming" says why it is not the default


def run_settings(raw: dict[str, Any]) -> RunSettings:
    """The job's `run:` section (validated by the schema) over the defaults."""
    known = {f.name for f in fields(RunSettings)}
    return replace(RunSettings(), **{k: v for k, v in raw.items() if k in known})


DEFAULTS = RunSettings()
